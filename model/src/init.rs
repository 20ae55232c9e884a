//! Seeded, deterministic initialization of a fresh model's `VarMap`, following transformers'
//! `LlamaPreTrainedModel._init_weights`: normal(0, `initializer_range`) for every matrix, ones for
//! `RMSNorm` weights.
//!
//! candle's CPU generator cannot be seeded (`set_seed` errors), so values come from `SplitMix64`
//! (Steele et al. 2014) and the Box–Muller transform. Each parameter gets its own stream, seeded by
//! the run's seed and the parameter's name, so adding a layer does not change the others.

use std::sync::PoisonError;

use candle_core::Tensor;
use candle_nn::VarMap;

use crate::error::Result;

/// Overwrites every `Var` in `varmap`: ones for names ending in `norm.weight`, otherwise
/// normal(0, `initializer_range`).
pub fn initialize(varmap: &VarMap, seed: u64, initializer_range: f64) -> Result<()> {
    let vars = varmap.data().lock().unwrap_or_else(PoisonError::into_inner);
    for (name, var) in &*vars {
        let count = var.elem_count();
        let values: Vec<f32> = if name.ends_with("norm.weight") {
            vec![1.0; count]
        } else {
            let mut generator = SplitMix64::new(seed ^ fnv1a(name.as_bytes()));
            (0..count)
                .map(|_| (generator.normal() * initializer_range) as f32)
                .collect()
        };
        let value = Tensor::from_vec(values, var.shape(), var.device())?.to_dtype(var.dtype())?;
        var.set(&value)?;
    }
    Ok(())
}

/// FNV-1a, to turn a parameter name into a stream seed.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `SplitMix64` (Steele et al. 2014): the per-parameter stream here, and the seeder of
/// [`crate::sampling::Xoshiro256`].
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1]: 53 random bits, shifted off zero so the logarithm below is finite.
    pub(crate) fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// A standard normal draw (Box–Muller, cosine branch).
    pub(crate) fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_draws_have_the_right_moments() {
        let mut generator = SplitMix64::new(7);
        let draws: Vec<f64> = (0..100_000).map(|_| generator.normal()).collect();
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        let variance = draws.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / draws.len() as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((variance - 1.0).abs() < 0.02, "variance {variance}");
    }
}

//! `RMSNorm` (Zhang & Sennrich 2019) as transformers' `LlamaRMSNorm` computes it: in f32,
//! `x * rsqrt(mean(x²) + eps)`, cast back to the input dtype, then times the weight.
//! The computation is [`crate::ops::rms_norm`] (reference and fused, both with a backward: candle's
//! `RmsNorm::forward` and `ops::rms_norm` have none, `shared/research/candle.md` §1.1).

use candle_core::Tensor;
use candle_nn::{Init, VarBuilder};

use crate::error::Result;
use crate::ops::{Kernels, rms_norm};

/// A root-mean-square norm over the last dimension with a learned per-channel scale.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    /// Loads `{vb}.weight` of shape `(size,)`; a fresh one starts at ones.
    pub fn new(vb: &VarBuilder, size: usize, eps: f64) -> Result<Self> {
        let weight = vb.get_with_hints(size, "weight", Init::Const(1.0))?;
        Ok(Self { weight, eps })
    }

    /// The per-channel scale, `(size,)`.
    #[must_use]
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// Replaces the weight by `f(weight)` (detached, or cast).
    pub(crate) fn map(&mut self, f: &dyn Fn(&Tensor) -> Result<Tensor>) -> Result<()> {
        self.weight = f(&self.weight)?;
        Ok(())
    }

    /// Normalizes `x` of shape `(..., size)` with the fused op.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, Kernels::Fused)
    }

    /// Normalizes `x` of shape `(..., size)` with the chosen implementation
    /// ([`crate::ops::rms_norm`]).
    pub fn forward_with(&self, x: &Tensor, kernels: Kernels) -> Result<Tensor> {
        rms_norm::rms_norm(x, &self.weight, self.eps, kernels)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    #[test]
    fn matches_the_formula_by_hand() {
        // x = [3, 4]: mean(x²) = 12.5, rms = 3.5355; weight [1, 2] → [0.8485, 2.2627].
        let weight = Tensor::new(&[1.0f32, 2.0], &Device::Cpu).unwrap();
        let norm = RmsNorm { weight, eps: 0.0 };
        let x = Tensor::new(&[[3.0f32, 4.0]], &Device::Cpu).unwrap();
        let y: Vec<Vec<f32>> = norm.forward(&x).unwrap().to_vec2().unwrap();
        assert!((y[0][0] - 0.848_528).abs() < 1e-5 && (y[0][1] - 2.262_742).abs() < 1e-5);
    }
}

//! Rotary position embeddings (`RoFormer`, Su et al. 2021) with Llama 3.1's frequency scaling.
//!
//! Follows transformers' Llama: `compute_default_rope_parameters` and `_compute_llama3_parameters`
//! for the inverse frequencies (reproduced operation by operation in f32, including torch's
//! `scalar / tensor == tensor.reciprocal() * scalar`), `LlamaRotaryEmbedding.forward` for the
//! cos/sin tables (`cat(freqs, freqs)`, gathered by explicit position ids so packed documents
//! restart at 0) and `apply_rotary_pos_emb` with `rotate_half` (the half-split convention, not the
//! interleaved one; the rotation itself is [`crate::ops::rope`]). The tables are computed once per
//! device and dtype and cached; a forward gathers its positions' rows.

use std::f32::consts::PI;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, DeviceLocation, Tensor};

use crate::config::{Llama3RopeScaling, LlamaConfig};
use crate::error::{ModelError, Result};
use crate::positions::Positions;

/// The inverse frequencies of one head's rotary embedding, and the cos/sin tables built from them
/// once per device and dtype (shared by the clones of a model).
#[derive(Debug, Clone)]
pub struct RotaryEmbedding {
    inverse_frequencies: Vec<f32>,
    /// `(positions, head_dim)` cos and sin for positions `0..len`, per device and dtype; grown
    /// (rebuilt longer) when a forward needs a later position. A forward gathers its rows by
    /// position id on the device instead of computing and uploading a table per token.
    cache: Arc<Mutex<Vec<CachedTable>>>,
}

impl PartialEq for RotaryEmbedding {
    fn eq(&self, other: &Self) -> bool {
        self.inverse_frequencies == other.inverse_frequencies
    }
}

/// cos/sin of every position below `cos.dim(0)`, on one device in one dtype.
#[derive(Debug)]
struct CachedTable {
    location: DeviceLocation,
    dtype: DType,
    /// `(positions, head_dim)` each.
    cos: Tensor,
    sin: Tensor,
}

/// cos and sin for every token, `(batch, 1, seq, head_dim)` each, in the activations' dtype.
#[derive(Debug, Clone)]
pub struct RopeTables {
    cos: Tensor,
    sin: Tensor,
}

impl RopeTables {
    /// `(batch, 1, seq, head_dim)`: cos of each token's angles.
    #[must_use]
    pub fn cos(&self) -> &Tensor {
        &self.cos
    }

    /// `(batch, 1, seq, head_dim)`: sin of each token's angles.
    #[must_use]
    pub fn sin(&self) -> &Tensor {
        &self.sin
    }
}

/// Positions a cached table covers at least: most forwards never grow it.
const MIN_CACHED_POSITIONS: usize = 2048;

impl RotaryEmbedding {
    /// The frequencies for `config.head_dim`, scaled when `config.rope_scaling` is set.
    #[must_use]
    pub fn new(config: &LlamaConfig) -> Self {
        let dim = config.head_dim as f32;
        let base = config.rope_theta as f32;
        let default: Vec<f32> = (0..config.head_dim)
            .step_by(2)
            .map(|i| 1.0 / base.powf(i as f32 / dim))
            .collect();
        let inverse_frequencies = match config.rope_scaling {
            None => default,
            Some(scaling) => default
                .into_iter()
                .map(|f| llama3_scaled(f, scaling))
                .collect(),
        };
        Self {
            inverse_frequencies,
            cache: Arc::default(),
        }
    }

    /// One value per pair of channels: `head_dim / 2` of them.
    #[must_use]
    pub fn inverse_frequencies(&self) -> &[f32] {
        &self.inverse_frequencies
    }

    /// cos/sin of `position * inverse_frequency` for every token of `positions`.
    pub fn tables(
        &self,
        positions: &Positions,
        dtype: DType,
        device: &Device,
    ) -> Result<RopeTables> {
        self.tables_for_ids(
            positions.position_ids(),
            (positions.batch_size(), positions.sequence_length()),
            dtype,
            device,
        )
    }

    /// cos/sin for explicit `position_ids`, `(batch * seq)` row-major for a `(batch, seq)` batch:
    /// what a forward over new tokens after a KV cache needs. The rows are gathered from the
    /// cached table, so the values are exactly those of the table built per token before.
    pub fn tables_for_ids(
        &self,
        position_ids: &[u32],
        (batch, seq): (usize, usize),
        dtype: DType,
        device: &Device,
    ) -> Result<RopeTables> {
        let needed = position_ids.iter().max().map_or(0, |&p| p as usize + 1);
        let (cos, sin) = self.cached(needed, dtype, device)?;
        let ids = Tensor::new(position_ids, device)?;
        // (positions, head_dim) gathered -> (batch * seq, head_dim) -> (batch, 1, seq, head_dim):
        // one table shared by all heads.
        let shape = (batch, 1, seq, 2 * self.inverse_frequencies.len());
        Ok(RopeTables {
            cos: cos.index_select(&ids, 0)?.reshape(shape)?,
            sin: sin.index_select(&ids, 0)?.reshape(shape)?,
        })
    }

    /// The cached `(positions, head_dim)` tables on `device` in `dtype` covering `needed`
    /// positions, built (or rebuilt longer) when missing.
    fn cached(&self, needed: usize, dtype: DType, device: &Device) -> Result<(Tensor, Tensor)> {
        let location = device.location();
        let mut cache = self
            .cache
            .lock()
            .map_err(|_| ModelError::Generation("the RoPE table cache was poisoned".to_owned()))?;
        if let Some(table) = cache.iter().find(|t| {
            t.location == location && t.dtype == dtype && t.cos.dim(0).is_ok_and(|n| n >= needed)
        }) {
            return Ok((table.cos.clone(), table.sin.clone()));
        }
        let length = needed.max(MIN_CACHED_POSITIONS).next_power_of_two();
        let half = self.inverse_frequencies.len();
        let mut cos = Vec::with_capacity(length * 2 * half);
        let mut sin = Vec::with_capacity(length * 2 * half);
        for position in 0..length as u32 {
            let angles = self.inverse_frequencies.iter().map(|f| position as f32 * f);
            let (c, s): (Vec<f32>, Vec<f32>) = angles.map(|a| (a.cos(), a.sin())).unzip();
            // emb = cat(freqs, freqs): both halves of a head use the same angles.
            cos.extend_from_slice(&c);
            cos.extend_from_slice(&c);
            sin.extend_from_slice(&s);
            sin.extend_from_slice(&s);
        }
        let table = |values: Vec<f32>| -> Result<Tensor> {
            Ok(Tensor::from_vec(values, (length, 2 * half), device)?.to_dtype(dtype)?)
        };
        let (cos, sin) = (table(cos)?, table(sin)?);
        cache.retain(|t| !(t.location == location && t.dtype == dtype));
        cache.push(CachedTable {
            location,
            dtype,
            cos: cos.clone(),
            sin: sin.clone(),
        });
        Ok((cos, sin))
    }
}

/// `_compute_llama3_parameters` for one inverse frequency, in transformers' f32 operation order.
fn llama3_scaled(inverse_frequency: f32, scaling: Llama3RopeScaling) -> f32 {
    let factor = scaling.factor as f32;
    let low = scaling.low_freq_factor as f32;
    let old_context = scaling.original_max_position_embeddings as f32;
    let low_freq_wavelen =
        (scaling.original_max_position_embeddings as f64 / scaling.low_freq_factor) as f32;
    let high_freq_wavelen =
        (scaling.original_max_position_embeddings as f64 / scaling.high_freq_factor) as f32;
    let wavelen = inverse_frequency.recip() * (2.0 * PI);
    let llama = if wavelen > low_freq_wavelen {
        inverse_frequency / factor
    } else {
        inverse_frequency
    };
    let smooth = (wavelen.recip() * old_context - low)
        / ((scaling.high_freq_factor - scaling.low_freq_factor) as f32);
    let smoothed = (1.0 - smooth) * llama / factor + smooth * llama;
    // ~(wavelen < high) * ~(wavelen > low); no NaN can occur here.
    if wavelen >= high_freq_wavelen && wavelen <= low_freq_wavelen {
        smoothed
    } else {
        llama
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_scaling_keeps_high_divides_low_and_blends_between() {
        let mut config = LlamaConfig::tiny(16);
        config.head_dim = 16;
        config.rope_theta = 10_000.0;
        let plain = RotaryEmbedding::new(&config);
        config.rope_scaling = Some(Llama3RopeScaling {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 64,
        });
        let scaled = RotaryEmbedding::new(&config);
        let (plain, scaled) = (plain.inverse_frequencies(), scaled.inverse_frequencies());
        // Wavelength 2π < 16: unchanged.
        assert!((plain[0] - scaled[0]).abs() < f32::EPSILON);
        // Wavelength 2π·10000^(3/8) ≈ 199 > 64: divided by 8.
        assert!((plain[3] / 8.0 - scaled[3]).abs() < f32::EPSILON);
        // Wavelength 2π·10000^(1/8) ≈ 19.9 between 16 and 64: smoothed between the two.
        assert!(scaled[1] < plain[1] && scaled[1] > plain[1] / 8.0);
    }
}

//! Rotary position embeddings (`RoFormer`, Su et al. 2021) with Llama 3.1's frequency scaling.
//!
//! Follows transformers' Llama: `compute_default_rope_parameters` and `_compute_llama3_parameters`
//! for the inverse frequencies (reproduced operation by operation in f32, including torch's
//! `scalar / tensor == tensor.reciprocal() * scalar`), `LlamaRotaryEmbedding.forward` for the
//! cos/sin tables (`cat(freqs, freqs)`, gathered by explicit position ids so packed documents
//! restart at 0) and `apply_rotary_pos_emb` with `rotate_half` (the half-split convention, not the
//! interleaved one). Only differentiable ops are used: candle's `rotary_emb::rope` has no backward
//! (`shared/research/candle.md` §1.1).

use std::f32::consts::PI;

use candle_core::{D, DType, Device, Tensor};

use crate::config::{Llama3RopeScaling, LlamaConfig};
use crate::error::Result;
use crate::positions::Positions;

/// The inverse frequencies of one head's rotary embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct RotaryEmbedding {
    inverse_frequencies: Vec<f32>,
}

/// cos and sin for every token, `(batch, 1, seq, head_dim)` each, in the activations' dtype.
#[derive(Debug, Clone)]
pub struct RopeTables {
    cos: Tensor,
    sin: Tensor,
}

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
    /// what a forward over new tokens after a KV cache needs.
    pub fn tables_for_ids(
        &self,
        position_ids: &[u32],
        (batch, seq): (usize, usize),
        dtype: DType,
        device: &Device,
    ) -> Result<RopeTables> {
        let half = self.inverse_frequencies.len();
        let tokens = position_ids.len();
        let mut cos = Vec::with_capacity(tokens * 2 * half);
        let mut sin = Vec::with_capacity(tokens * 2 * half);
        for &position in position_ids {
            let angles = self.inverse_frequencies.iter().map(|f| position as f32 * f);
            let (c, s): (Vec<f32>, Vec<f32>) = angles.map(|a| (a.cos(), a.sin())).unzip();
            // emb = cat(freqs, freqs): both halves of a head use the same angles.
            cos.extend_from_slice(&c);
            cos.extend_from_slice(&c);
            sin.extend_from_slice(&s);
            sin.extend_from_slice(&s);
        }
        // (batch * seq * head_dim) -> (batch, 1, seq, head_dim): one table shared by all heads.
        let shape = (batch, 1, seq, 2 * half);
        let table = |values: Vec<f32>| -> Result<Tensor> {
            Ok(Tensor::from_vec(values, shape, device)?.to_dtype(dtype)?)
        };
        Ok(RopeTables {
            cos: table(cos)?,
            sin: table(sin)?,
        })
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

/// `x * cos + rotate_half(x) * sin` for `x` of shape `(batch, heads, seq, head_dim)`.
pub fn apply_rotary(x: &Tensor, tables: &RopeTables) -> Result<Tensor> {
    let rotated = rotate_half(x)?;
    Ok((x.broadcast_mul(&tables.cos)? + rotated.broadcast_mul(&tables.sin)?)?)
}

/// `cat(-x2, x1)` over the last dimension, where `x1`, `x2` are its two halves.
fn rotate_half(x: &Tensor) -> Result<Tensor> {
    let half = x.dim(D::Minus1)? / 2;
    let first = x.narrow(D::Minus1, 0, half)?;
    let second = x.narrow(D::Minus1, half, half)?;
    Ok(Tensor::cat(&[&second.neg()?, &first], D::Minus1)?)
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

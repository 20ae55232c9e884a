//! The two parameter kinds besides norms: bias-free linear maps and the token embedding, stored
//! under their HF names (`{vb}.weight`, shape `(out, in)` and `(vocab, hidden)`).
//!
//! A fresh `VarMap` gets transformers' `_init_weights` distribution, normal(0, 0.02), instead of
//! candle's defaults (Kaiming for linear, N(0, 1) for embeddings; `shared/research/candle.md`
//! §1.3); [`crate::init::initialize`] then redraws everything from a seed.

use candle_nn::{Embedding, Init, Linear, VarBuilder};

use crate::error::Result;

/// transformers' default `initializer_range`.
pub const INITIALIZER_RANGE: f64 = 0.02;

const NORMAL: Init = Init::Randn {
    mean: 0.0,
    stdev: INITIALIZER_RANGE,
};

/// `{vb}.weight` of shape `(out_features, in_features)`, no bias.
pub fn linear_no_bias(vb: &VarBuilder, in_features: usize, out_features: usize) -> Result<Linear> {
    let weight = vb.get_with_hints((out_features, in_features), "weight", NORMAL)?;
    Ok(Linear::new(weight, None))
}

/// `{vb}.weight` of shape `(vocab_size, hidden_size)`.
pub fn embedding(vb: &VarBuilder, vocab_size: usize, hidden_size: usize) -> Result<Embedding> {
    let weight = vb.get_with_hints((vocab_size, hidden_size), "weight", NORMAL)?;
    Ok(Embedding::new(weight, hidden_size))
}

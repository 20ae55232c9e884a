//! The two parameter kinds besides norms: bias-free linear maps and the token embedding, stored
//! under their HF names (`{vb}.weight`, shape `(out, in)` and `(vocab, hidden)`). The projections
//! of attention and MLP are [`Projection`]s, which may carry a `LoRA` adapter ([`crate::lora`]).
//!
//! A fresh `VarMap` gets transformers' `_init_weights` distribution, normal(0, 0.02), instead of
//! candle's defaults (Kaiming for linear, N(0, 1) for embeddings; `shared/research/candle.md`
//! §1.3); [`crate::init::initialize`] then redraws everything from a seed.

use candle_core::{Module, Tensor};
use candle_nn::{Embedding, Init, Linear, VarBuilder};

use crate::error::Result;
use crate::lora::LoraAdapter;

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

/// `{vb}.weight` as a [`Projection`] without adapter.
pub fn projection(vb: &VarBuilder, in_features: usize, out_features: usize) -> Result<Projection> {
    Ok(Projection {
        base: linear_no_bias(vb, in_features, out_features)?,
        adapter: None,
    })
}

/// A bias-free linear map `x Wᵀ`, plus `scale · dropout(x) Aᵀ Bᵀ` when a `LoRA` adapter is attached.
#[derive(Debug, Clone)]
pub struct Projection {
    base: Linear,
    adapter: Option<LoraAdapter>,
}

impl Projection {
    /// `(..., in) -> (..., out)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let base = self.base.forward(x)?;
        match &self.adapter {
            None => Ok(base),
            Some(adapter) => Ok((base + adapter.forward(x)?)?),
        }
    }

    /// The base weight `W`, `(out, in)`.
    #[must_use]
    pub fn weight(&self) -> &Tensor {
        self.base.weight()
    }

    /// The weight of the same map without adapter: `W + scale · B A`, or `W` without one.
    pub fn merged_weight(&self) -> Result<Tensor> {
        match &self.adapter {
            None => Ok(self.weight().clone()),
            Some(adapter) => Ok((self.weight() + adapter.delta_weight()?)?),
        }
    }

    /// The attached adapter, if any.
    #[must_use]
    pub fn adapter(&self) -> Option<&LoraAdapter> {
        self.adapter.as_ref()
    }

    /// Attaches `adapter`, replacing any previous one.
    pub(crate) fn set_adapter(&mut self, adapter: LoraAdapter) {
        self.adapter = Some(adapter);
    }

    pub(crate) fn adapter_mut(&mut self) -> Option<&mut LoraAdapter> {
        self.adapter.as_mut()
    }

    /// Replaces the base weight by `f(W)`, and the adapter's matrices too when `adapter` is set.
    pub(crate) fn map(
        &mut self,
        f: &dyn Fn(&Tensor) -> Result<Tensor>,
        adapter: bool,
    ) -> Result<()> {
        self.base = Linear::new(f(self.base.weight())?, None);
        if let (true, Some(lora)) = (adapter, &mut self.adapter) {
            lora.map(f)?;
        }
        Ok(())
    }
}

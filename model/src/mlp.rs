//! The `SwiGLU` feed-forward block (Shazeer 2020) of transformers' `LlamaMLP`:
//! `down_proj(silu(gate_proj(x)) * up_proj(x))`, no biases.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use crate::config::LlamaConfig;
use crate::error::Result;
use crate::linear::{Projection, projection};
use crate::ops::{Kernels, swiglu};

/// `model.layers.{i}.mlp`.
#[expect(
    clippy::struct_field_names,
    reason = "the fields are named as the HF weights: gate_proj, up_proj, down_proj"
)]
#[derive(Debug, Clone)]
pub struct Mlp {
    gate_proj: Projection,
    up_proj: Projection,
    down_proj: Projection,
}

impl Mlp {
    /// Loads `{vb}.{gate,up,down}_proj.weight`.
    pub fn new(vb: &VarBuilder, config: &LlamaConfig) -> Result<Self> {
        let (hidden, intermediate) = (config.hidden_size, config.intermediate_size);
        Ok(Self {
            gate_proj: projection(&vb.pp("gate_proj"), hidden, intermediate)?,
            up_proj: projection(&vb.pp("up_proj"), hidden, intermediate)?,
            down_proj: projection(&vb.pp("down_proj"), intermediate, hidden)?,
        })
    }

    /// `(batch, seq, hidden) -> (batch, seq, hidden)` with the fused activation.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, Kernels::Fused)
    }

    /// `(batch, seq, hidden) -> (batch, seq, hidden)`, the activation by `kernels`
    /// ([`crate::ops::swiglu`]).
    pub fn forward_with(&self, x: &Tensor, kernels: Kernels) -> Result<Tensor> {
        let gate = self.gate_proj.forward(x)?;
        let up = self.up_proj.forward(x)?;
        self.down_proj
            .forward(&swiglu::swiglu(&gate, &up, kernels)?)
    }

    /// The projections by their HF module names, `gate_proj`, `up_proj`, `down_proj`.
    pub(crate) fn projections_mut(&mut self) -> [(&'static str, &mut Projection); 3] {
        [
            ("gate_proj", &mut self.gate_proj),
            ("up_proj", &mut self.up_proj),
            ("down_proj", &mut self.down_proj),
        ]
    }

    /// The projections by their HF module names.
    pub(crate) fn projections(&self) -> [(&'static str, &Projection); 3] {
        [
            ("gate_proj", &self.gate_proj),
            ("up_proj", &self.up_proj),
            ("down_proj", &self.down_proj),
        ]
    }
}

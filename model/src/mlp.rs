//! The `SwiGLU` feed-forward block (Shazeer 2020) of transformers' `LlamaMLP`:
//! `down_proj(silu(gate_proj(x)) * up_proj(x))`, no biases.

use candle_core::{Module, Tensor};
use candle_nn::{Linear, VarBuilder};

use crate::config::LlamaConfig;
use crate::error::Result;
use crate::linear::linear_no_bias;

/// `model.layers.{i}.mlp`.
#[expect(
    clippy::struct_field_names,
    reason = "the fields are named as the HF weights: gate_proj, up_proj, down_proj"
)]
#[derive(Debug, Clone)]
pub struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    /// Loads `{vb}.{gate,up,down}_proj.weight`.
    pub fn new(vb: &VarBuilder, config: &LlamaConfig) -> Result<Self> {
        let (hidden, intermediate) = (config.hidden_size, config.intermediate_size);
        Ok(Self {
            gate_proj: linear_no_bias(&vb.pp("gate_proj"), hidden, intermediate)?,
            up_proj: linear_no_bias(&vb.pp("up_proj"), hidden, intermediate)?,
            down_proj: linear_no_bias(&vb.pp("down_proj"), intermediate, hidden)?,
        })
    }

    /// `(batch, seq, hidden) -> (batch, seq, hidden)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate = self.gate_proj.forward(x)?.silu()?;
        let up = self.up_proj.forward(x)?;
        Ok(self.down_proj.forward(&(gate * up)?)?)
    }
}

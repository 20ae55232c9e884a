//! One pre-norm Llama block, transformers' `LlamaDecoderLayer`:
//! `h = x + self_attn(input_layernorm(x))`, `out = h + mlp(post_attention_layernorm(h))`.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use crate::attention::Attention;
use crate::config::LlamaConfig;
use crate::error::Result;
use crate::mlp::Mlp;
use crate::norm::RmsNorm;
use crate::rope::RopeTables;

/// `model.layers.{i}`.
#[derive(Debug, Clone)]
pub struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

impl DecoderLayer {
    /// Loads `{vb}.{input_layernorm,self_attn,post_attention_layernorm,mlp}`.
    pub fn new(vb: &VarBuilder, config: &LlamaConfig) -> Result<Self> {
        let (hidden, eps) = (config.hidden_size, config.rms_norm_eps);
        Ok(Self {
            input_layernorm: RmsNorm::new(&vb.pp("input_layernorm"), hidden, eps)?,
            self_attn: Attention::new(&vb.pp("self_attn"), config)?,
            post_attention_layernorm: RmsNorm::new(
                &vb.pp("post_attention_layernorm"),
                hidden,
                eps,
            )?,
            mlp: Mlp::new(&vb.pp("mlp"), config)?,
        })
    }

    /// `(batch, seq, hidden) -> (batch, seq, hidden)`.
    pub fn forward(
        &self,
        x: &Tensor,
        rope: &RopeTables,
        attention_bias: &Tensor,
    ) -> Result<Tensor> {
        let attended =
            self.self_attn
                .forward(&self.input_layernorm.forward(x)?, rope, attention_bias)?;
        let x = (x + attended)?;
        let transformed = self
            .mlp
            .forward(&self.post_attention_layernorm.forward(&x)?)?;
        Ok((x + transformed)?)
    }
}

//! One pre-norm Llama block, transformers' `LlamaDecoderLayer`:
//! `h = x + self_attn(input_layernorm(x))`, `out = h + mlp(post_attention_layernorm(h))`.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use crate::attention::Attention;
use crate::config::LlamaConfig;
use crate::error::Result;
use crate::kv_cache::LayerCache;
use crate::linear::Projection;
use crate::mlp::Mlp;
use crate::norm::RmsNorm;
use crate::ops::Kernels;
use crate::ops::attention::AttentionLayout;
use crate::rope::RopeTables;

/// What every layer of one forward shares: the tokens' rotary tables, which keys each query sees,
/// and which implementation of the ops runs.
#[derive(Debug, Clone, Copy)]
pub struct LayerInputs<'a> {
    /// cos/sin of every new token, `(batch, 1, seq, head_dim)`.
    pub rope: &'a RopeTables,
    /// The documents of every key slot (the new tokens are the last ones).
    pub layout: &'a AttentionLayout,
    /// Reference or fused ops.
    pub kernels: Kernels,
}

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

    /// `(batch, seq, hidden) -> (batch, seq, hidden)`; with a cache, over new tokens after the
    /// layer's cached keys and values ([`Attention::forward`]).
    pub fn forward(
        &self,
        x: &Tensor,
        inputs: &LayerInputs<'_>,
        cache: Option<&mut LayerCache>,
    ) -> Result<Tensor> {
        let normalized = self.input_layernorm.forward_with(x, inputs.kernels)?;
        let attended = self.self_attn.forward(&normalized, inputs, cache)?;
        let x = (x + attended)?;
        let normalized = self
            .post_attention_layernorm
            .forward_with(&x, inputs.kernels)?;
        let transformed = self.mlp.forward_with(&normalized, inputs.kernels)?;
        Ok((x + transformed)?)
    }

    /// Every projection with its name inside the layer (`self_attn.q_proj`, `mlp.up_proj`, …).
    pub(crate) fn projections_mut(&mut self) -> Vec<(String, &mut Projection)> {
        let attention = self.self_attn.projections_mut().into_iter();
        let mlp = self.mlp.projections_mut().into_iter();
        attention
            .map(|(name, p)| (format!("self_attn.{name}"), p))
            .chain(mlp.map(|(name, p)| (format!("mlp.{name}"), p)))
            .collect()
    }

    /// Every parameter of the layer by its name inside the layer, adapters merged.
    pub(crate) fn merged_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let attention = self.self_attn.projections().into_iter();
        let mlp = self.mlp.projections().into_iter();
        let mut tensors = vec![
            (
                "input_layernorm.weight".to_owned(),
                self.input_layernorm.weight().clone(),
            ),
            (
                "post_attention_layernorm.weight".to_owned(),
                self.post_attention_layernorm.weight().clone(),
            ),
        ];
        for (name, projection) in attention
            .map(|(name, p)| (format!("self_attn.{name}"), p))
            .chain(mlp.map(|(name, p)| (format!("mlp.{name}"), p)))
        {
            tensors.push((format!("{name}.weight"), projection.merged_weight()?));
        }
        Ok(tensors)
    }

    /// Replaces every parameter by `f(parameter)`; adapters too when `adapters` is set.
    pub(crate) fn map(
        &mut self,
        f: &dyn Fn(&Tensor) -> Result<Tensor>,
        adapters: bool,
    ) -> Result<()> {
        self.input_layernorm.map(f)?;
        self.post_attention_layernorm.map(f)?;
        for (_, projection) in self.projections_mut() {
            projection.map(f, adapters)?;
        }
        Ok(())
    }
}

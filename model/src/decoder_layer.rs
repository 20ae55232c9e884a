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
        self.forward_with_cache(x, rope, attention_bias, None)
    }

    /// [`Self::forward`] over new tokens after a layer's cached keys and values
    /// ([`Attention::forward_with_cache`]).
    pub fn forward_with_cache(
        &self,
        x: &Tensor,
        rope: &RopeTables,
        attention_bias: &Tensor,
        cache: Option<&mut LayerCache>,
    ) -> Result<Tensor> {
        let attended = self.self_attn.forward_with_cache(
            &self.input_layernorm.forward(x)?,
            rope,
            attention_bias,
            cache,
        )?;
        let x = (x + attended)?;
        let transformed = self
            .mlp
            .forward(&self.post_attention_layernorm.forward(&x)?)?;
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

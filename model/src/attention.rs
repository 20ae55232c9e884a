//! Grouped-query self-attention (Ainslie et al. 2023) as transformers' `LlamaAttention`:
//! bias-free q/k/v/o projections, `RoPE` on queries and keys, each key/value head shared by
//! `num_attention_heads / num_key_value_heads` consecutive query heads, scores scaled by
//! `head_dim^-0.5`, which keys a query sees given by an [`AttentionLayout`], softmax in f32.
//! The rotation and the attention itself are ops of [`crate::ops`] (reference or fused).

use candle_core::Tensor;
use candle_nn::VarBuilder;

use crate::config::LlamaConfig;
use crate::decoder_layer::LayerInputs;
use crate::error::Result;
use crate::kv_cache::LayerCache;
use crate::linear::{Projection, projection};
use crate::ops;

/// `model.layers.{i}.self_attn`.
#[derive(Debug, Clone)]
pub struct Attention {
    q_proj: Projection,
    k_proj: Projection,
    v_proj: Projection,
    o_proj: Projection,
    num_attention_heads: usize,
    num_key_value_heads: usize,
    head_dim: usize,
}

impl Attention {
    /// Loads `{vb}.{q,k,v,o}_proj.weight`.
    pub fn new(vb: &VarBuilder, config: &LlamaConfig) -> Result<Self> {
        let hidden = config.hidden_size;
        let query_width = config.num_attention_heads * config.head_dim;
        let key_value_width = config.num_key_value_heads * config.head_dim;
        Ok(Self {
            q_proj: projection(&vb.pp("q_proj"), hidden, query_width)?,
            k_proj: projection(&vb.pp("k_proj"), hidden, key_value_width)?,
            v_proj: projection(&vb.pp("v_proj"), hidden, key_value_width)?,
            o_proj: projection(&vb.pp("o_proj"), query_width, hidden)?,
            num_attention_heads: config.num_attention_heads,
            num_key_value_heads: config.num_key_value_heads,
            head_dim: config.head_dim,
        })
    }

    /// `x`: `(batch, seq, hidden)`, the queries being the last `seq` key slots of
    /// `inputs.layout`. With a cache, the new keys and values are appended to it first and the
    /// queries attend to every cached slot too. Returns `(batch, seq, hidden)`.
    pub fn forward(
        &self,
        x: &Tensor,
        inputs: &LayerInputs<'_>,
        cache: Option<&mut LayerCache>,
    ) -> Result<Tensor> {
        let (batch, seq, _) = x.dims3()?;
        let heads = |projection: &Projection, count: usize| -> Result<Tensor> {
            // (batch, seq, count * head_dim) -> (batch, seq, count, head_dim)
            //   -> (batch, count, seq, head_dim)
            Ok(projection
                .forward(x)?
                .reshape((batch, seq, count, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let rotary =
            |x: &Tensor| ops::rope::rotary(x, inputs.rope.cos(), inputs.rope.sin(), inputs.kernels);
        let query = rotary(&heads(&self.q_proj, self.num_attention_heads)?)?;
        let key = rotary(&heads(&self.k_proj, self.num_key_value_heads)?)?;
        let value = heads(&self.v_proj, self.num_key_value_heads)?;
        // With a cache: (batch, kv_heads, seq, head_dim) -> (batch, kv_heads, cached + seq, head_dim)
        let (key, value) = match cache {
            None => (key, value),
            Some(cache) => cache.append(&key, &value)?,
        };
        // (batch, heads, seq, head_dim), key/value heads shared without being repeated in memory
        let context =
            ops::attention::attention(&query, &key, &value, inputs.layout, inputs.kernels)?;
        // (batch, heads, seq, head_dim) -> (batch, seq, heads, head_dim) -> (batch, seq, heads * head_dim)
        let context = context.transpose(1, 2)?.reshape((
            batch,
            seq,
            self.num_attention_heads * self.head_dim,
        ))?;
        self.o_proj.forward(&context)
    }

    /// The projections by their HF module names, `q_proj` … `o_proj`.
    pub(crate) fn projections_mut(&mut self) -> [(&'static str, &mut Projection); 4] {
        [
            ("q_proj", &mut self.q_proj),
            ("k_proj", &mut self.k_proj),
            ("v_proj", &mut self.v_proj),
            ("o_proj", &mut self.o_proj),
        ]
    }

    /// The projections by their HF module names.
    pub(crate) fn projections(&self) -> [(&'static str, &Projection); 4] {
        [
            ("q_proj", &self.q_proj),
            ("k_proj", &self.k_proj),
            ("v_proj", &self.v_proj),
            ("o_proj", &self.o_proj),
        ]
    }
}

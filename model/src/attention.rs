//! Grouped-query self-attention (Ainslie et al. 2023) as transformers' `LlamaAttention` with the
//! eager kernel: bias-free q/k/v/o projections, `RoPE` on queries and keys, each key/value head
//! shared by `num_attention_heads / num_key_value_heads` consecutive query heads (`repeat_kv`),
//! scores scaled by `head_dim^-0.5`, an additive bias from [`crate::positions::Positions`], softmax
//! in f32.
//!
//! Uses `candle_nn::ops::softmax` over `D::Minus1`, which has a backward; `softmax_last_dim` does
//! not (`shared/research/candle.md` §1.1).

use candle_core::{D, DType, Tensor};
use candle_nn::VarBuilder;

use crate::config::LlamaConfig;
use crate::error::Result;
use crate::kv_cache::LayerCache;
use crate::linear::{Projection, projection};
use crate::rope::{RopeTables, apply_rotary};

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

    /// `x`: `(batch, seq, hidden)`; `attention_bias`: `(batch, 1, seq, seq)` f32 of 0 / -inf.
    /// Returns `(batch, seq, hidden)`.
    pub fn forward(
        &self,
        x: &Tensor,
        rope: &RopeTables,
        attention_bias: &Tensor,
    ) -> Result<Tensor> {
        self.forward_with_cache(x, rope, attention_bias, None)
    }

    /// [`Self::forward`] for `seq` new tokens after the `cached` slots of `cache`: their keys and
    /// values are appended to it and the queries attend to every slot. `attention_bias`: `(batch,
    /// 1, seq, cached + seq)`; without a cache, `cached` is 0.
    pub fn forward_with_cache(
        &self,
        x: &Tensor,
        rope: &RopeTables,
        attention_bias: &Tensor,
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
        let query = apply_rotary(&heads(&self.q_proj, self.num_attention_heads)?, rope)?;
        let key = apply_rotary(&heads(&self.k_proj, self.num_key_value_heads)?, rope)?;
        let value = heads(&self.v_proj, self.num_key_value_heads)?;
        // With a cache: (batch, kv_heads, seq, head_dim) -> (batch, kv_heads, cached + seq, head_dim)
        let (key, value) = match cache {
            None => (key, value),
            Some(cache) => cache.append(&key, &value)?,
        };
        let key = self.repeat_key_value(&key)?;
        let value = self.repeat_key_value(&value)?;

        let scale = (self.head_dim as f64).powf(-0.5);
        // (batch, heads, seq, head_dim) x (batch, heads, head_dim, keys) -> (batch, heads, seq, keys)
        let scores = (query.matmul(&key.t()?)? * scale)?;
        let scores = scores.to_dtype(DType::F32)?.broadcast_add(attention_bias)?;
        let probabilities = candle_nn::ops::softmax(&scores, D::Minus1)?.to_dtype(value.dtype())?;
        // (batch, heads, seq, keys) x (batch, heads, keys, head_dim) -> (batch, heads, seq, head_dim)
        let context = probabilities.matmul(&value)?;
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

    /// transformers' `repeat_kv`: key/value head `h` serves query heads `h * groups .. (h + 1) *
    /// groups`.
    fn repeat_key_value(&self, x: &Tensor) -> Result<Tensor> {
        let groups = self.num_attention_heads / self.num_key_value_heads;
        if groups == 1 {
            return Ok(x.clone());
        }
        let (batch, key_value_heads, seq, head_dim) = x.dims4()?;
        // (batch, kv_heads, seq, head_dim) -> (batch, kv_heads, groups, seq, head_dim)
        //   -> (batch, kv_heads * groups, seq, head_dim)
        Ok(x.unsqueeze(2)?
            .broadcast_as((batch, key_value_heads, groups, seq, head_dim))?
            .contiguous()?
            .reshape((batch, key_value_heads * groups, seq, head_dim))?)
    }
}

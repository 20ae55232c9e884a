//! The Llama 3 decoder, transformers' `LlamaForCausalLM`: token embedding, decoder layers, final
//! `RMSNorm`, and an `lm_head` that is its own matrix or the embedding (`tie_word_embeddings`).
//!
//! Unlike candle-transformers' llama, which returns only the last position's logits and cuts the
//! gradient in three places (`shared/research/candle.md` §1.7), [`Llama::forward`] returns the
//! logits of every position and the final hidden states (the reward head reads them), and every
//! op on the way has a backward. Parameters come from a [`VarBuilder`]: over a `VarMap` they are
//! trainable `Var`s, over loaded tensors they are frozen.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, Linear, VarBuilder, VarMap};

use crate::config::LlamaConfig;
use crate::decoder_layer::DecoderLayer;
use crate::error::{ModelError, Result};
use crate::init::initialize;
use crate::linear::{INITIALIZER_RANGE, embedding, linear_no_bias};
use crate::norm::RmsNorm;
use crate::positions::Positions;
use crate::rope::RotaryEmbedding;

/// A Llama causal language model.
#[derive(Debug, Clone)]
pub struct Llama {
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Linear,
    rotary_embedding: RotaryEmbedding,
    config: LlamaConfig,
}

/// What one forward pass returns.
#[derive(Debug, Clone)]
pub struct ForwardOutput {
    /// `(batch, seq, vocab)`: next-token logits at every position.
    pub logits: Tensor,
    /// `(batch, seq, hidden)`: the residual stream after the final norm, the input of `lm_head`.
    pub hidden_states: Tensor,
}

impl Llama {
    /// Builds the model from the parameters under their HF names in `vb`
    /// (`model.embed_tokens.weight`, `model.layers.{i}...`, `model.norm.weight`, `lm_head.weight`).
    pub fn new(vb: &VarBuilder, config: &LlamaConfig) -> Result<Self> {
        let model = vb.pp("model");
        let embed_tokens = embedding(
            &model.pp("embed_tokens"),
            config.vocab_size,
            config.hidden_size,
        )?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| DecoderLayer::new(&model.pp(format!("layers.{i}")), config))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::new(&model.pp("norm"), config.hidden_size, config.rms_norm_eps)?;
        let lm_head = if config.tie_word_embeddings {
            Linear::new(embed_tokens.embeddings().clone(), None)
        } else {
            linear_no_bias(&vb.pp("lm_head"), config.hidden_size, config.vocab_size)?
        };
        Ok(Self {
            embed_tokens,
            layers,
            norm,
            lm_head,
            rotary_embedding: RotaryEmbedding::new(config),
            config: config.clone(),
        })
    }

    /// A fresh trainable model: f32 `Var`s in a new `VarMap`, drawn from `seed` as transformers
    /// initializes (normal(0, 0.02) for matrices, ones for norms). Same seed, same weights.
    pub fn from_scratch(
        config: &LlamaConfig,
        seed: u64,
        device: &Device,
    ) -> Result<(Self, VarMap)> {
        let varmap = VarMap::new();
        let model = Self::new(
            &VarBuilder::from_varmap(&varmap, DType::F32, device),
            config,
        )?;
        initialize(&varmap, seed, INITIALIZER_RANGE)?;
        Ok((model, varmap))
    }

    /// The config the model was built from.
    #[must_use]
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The final hidden states, `(batch, seq, hidden)`, without the vocabulary projection.
    /// `input_ids`: `(batch, seq)` u32, laid out as `positions` describes.
    pub fn hidden_states(&self, input_ids: &Tensor, positions: &Positions) -> Result<Tensor> {
        let (batch, seq) = input_ids.dims2()?;
        if (batch, seq) != (positions.batch_size(), positions.sequence_length()) {
            return Err(ModelError::Positions(format!(
                "input_ids are ({batch}, {seq}) but positions describe ({}, {})",
                positions.batch_size(),
                positions.sequence_length()
            )));
        }
        let device = input_ids.device();
        let mut x = self.embed_tokens.forward(input_ids)?;
        let rope = self.rotary_embedding.tables(positions, x.dtype(), device)?;
        let attention_bias = positions.attention_bias(device)?;
        for layer in &self.layers {
            x = layer.forward(&x, &rope, &attention_bias)?;
        }
        self.norm.forward(&x)
    }

    /// Logits at every position and the final hidden states.
    pub fn forward(&self, input_ids: &Tensor, positions: &Positions) -> Result<ForwardOutput> {
        let hidden_states = self.hidden_states(input_ids, positions)?;
        let logits = self.lm_head.forward(&hidden_states)?;
        Ok(ForwardOutput {
            logits,
            hidden_states,
        })
    }

    /// Every parameter's HF name and shape for `config`, in name order (`lm_head.weight` only when
    /// untied). Checkpoint loading checks files against this list.
    #[must_use]
    pub fn parameter_shapes(config: &LlamaConfig) -> Vec<(String, Vec<usize>)> {
        let hidden = config.hidden_size;
        let query = config.num_attention_heads * config.head_dim;
        let key_value = config.num_key_value_heads * config.head_dim;
        let intermediate = config.intermediate_size;
        let mut shapes = vec![
            (
                "model.embed_tokens.weight".to_owned(),
                vec![config.vocab_size, hidden],
            ),
            ("model.norm.weight".to_owned(), vec![hidden]),
        ];
        if !config.tie_word_embeddings {
            shapes.push(("lm_head.weight".to_owned(), vec![config.vocab_size, hidden]));
        }
        for i in 0..config.num_hidden_layers {
            let layer = |name: &str, shape: Vec<usize>| (format!("model.layers.{i}.{name}"), shape);
            shapes.extend([
                layer("input_layernorm.weight", vec![hidden]),
                layer("post_attention_layernorm.weight", vec![hidden]),
                layer("self_attn.q_proj.weight", vec![query, hidden]),
                layer("self_attn.k_proj.weight", vec![key_value, hidden]),
                layer("self_attn.v_proj.weight", vec![key_value, hidden]),
                layer("self_attn.o_proj.weight", vec![hidden, query]),
                layer("mlp.gate_proj.weight", vec![intermediate, hidden]),
                layer("mlp.up_proj.weight", vec![intermediate, hidden]),
                layer("mlp.down_proj.weight", vec![hidden, intermediate]),
            ]);
        }
        shapes.sort();
        shapes
    }
}

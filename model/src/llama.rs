//! The Llama 3 decoder, transformers' `LlamaForCausalLM`: token embedding, decoder layers, final
//! `RMSNorm`, and an `lm_head` that is its own matrix or the embedding (`tie_word_embeddings`).
//!
//! Unlike candle-transformers' llama, which returns only the last position's logits and cuts the
//! gradient in three places (`shared/research/candle.md` §1.7), [`Llama::forward`] returns the
//! logits of every position and the final hidden states (the reward head reads them), and every
//! op on the way has a backward. Parameters come from a [`VarBuilder`]: over a `VarMap` they are
//! trainable `Var`s, over loaded tensors they are frozen.

use std::collections::HashMap;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, Linear, VarBuilder, VarMap};

use crate::config::LlamaConfig;
use crate::decoder_layer::{DecoderLayer, LayerInputs};
use crate::error::{ModelError, Result};
use crate::init::initialize;
use crate::kv_cache::KvCache;
use crate::linear::Projection;
use crate::linear::{INITIALIZER_RANGE, embedding, linear_no_bias};
use crate::norm::RmsNorm;
use crate::ops::Kernels;
use crate::positions::Positions;
use crate::rope::RotaryEmbedding;

/// A Llama causal language model.
#[derive(Debug, Clone)]
pub struct Llama {
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    /// `None` for a trunk ([`Llama::trunk`]): a reward model reads the hidden states instead.
    lm_head: Option<Linear>,
    rotary_embedding: RotaryEmbedding,
    config: LlamaConfig,
    /// See [`Llama::set_compute_dtype`].
    compute_dtype: Option<DType>,
    /// See [`Llama::set_kernels`].
    kernels: Kernels,
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
        let mut llama = Self::trunk(vb, config)?;
        llama.lm_head = Some(if config.tie_word_embeddings {
            Linear::new(llama.embed_tokens.embeddings().clone(), None)
        } else {
            linear_no_bias(&vb.pp("lm_head"), config.hidden_size, config.vocab_size)?
        });
        Ok(llama)
    }

    /// The decoder without `lm_head` (the `model.*` parameters only): the trunk transformers'
    /// `LlamaForSequenceClassification` puts its `score` head on. [`Llama::hidden_states`] works;
    /// [`Llama::forward`] is an error, as there are no logits to compute.
    pub fn trunk(vb: &VarBuilder, config: &LlamaConfig) -> Result<Self> {
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
        Ok(Self {
            embed_tokens,
            layers,
            norm,
            lm_head: None,
            rotary_embedding: RotaryEmbedding::new(config),
            config: config.clone(),
            compute_dtype: None,
            kernels: Kernels::default(),
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

    /// The device the parameters live on.
    #[must_use]
    pub fn device(&self) -> Device {
        self.embed_tokens.embeddings().device().clone()
    }

    /// The final hidden states, `(batch, seq, hidden)`, without the vocabulary projection.
    /// `input_ids`: `(batch, seq)` u32, laid out as `positions` describes.
    pub fn hidden_states(&self, input_ids: &Tensor, positions: &Positions) -> Result<Tensor> {
        if let Some(cast) = self.in_compute_dtype()? {
            return cast.hidden_states(input_ids, positions);
        }
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
        let layout = positions.attention_layout()?;
        let inputs = LayerInputs {
            rope: &rope,
            layout: &layout,
            kernels: self.kernels,
        };
        for layer in &self.layers {
            x = layer.forward(&x, &inputs, None)?;
        }
        self.norm.forward_with(&x, self.kernels)
    }

    /// Logits at every position and the final hidden states.
    pub fn forward(&self, input_ids: &Tensor, positions: &Positions) -> Result<ForwardOutput> {
        if let Some(cast) = self.in_compute_dtype()? {
            let output = cast.forward(input_ids, positions)?;
            return Ok(ForwardOutput {
                logits: output.logits.to_dtype(DType::F32)?,
                hidden_states: output.hidden_states,
            });
        }
        let hidden_states = self.hidden_states(input_ids, positions)?;
        let logits = self.lm_head()?.forward(&hidden_states)?;
        Ok(ForwardOutput {
            logits,
            hidden_states,
        })
    }

    /// Logits and final hidden states of `input_ids` `(batch, new)` placed after the tokens already
    /// in `cache`, whose layers receive the new keys and values: positions continue from each row's
    /// cached length ([`KvCache`] documents the left-padded layout). An empty cache makes this the
    /// prefill of left-padded prompts.
    pub fn forward_with_cache(
        &self,
        input_ids: &Tensor,
        cache: &mut KvCache,
    ) -> Result<ForwardOutput> {
        if let Some(cast) = self.in_compute_dtype()? {
            let output = cast.forward_with_cache(input_ids, cache)?;
            return Ok(ForwardOutput {
                logits: output.logits.to_dtype(DType::F32)?,
                hidden_states: output.hidden_states,
            });
        }
        let (batch, new) = input_ids.dims2()?;
        if batch != cache.batch_size() || cache.num_layers() != self.layers.len() {
            return Err(ModelError::Generation(format!(
                "input_ids have {batch} rows for a KV cache of {} rows and {} layers (the model \
                 has {})",
                cache.batch_size(),
                cache.num_layers(),
                self.layers.len()
            )));
        }
        let device = input_ids.device();
        let mut x = self.embed_tokens.forward(input_ids)?;
        let rope = self.rotary_embedding.tables_for_ids(
            &cache.position_ids(new),
            (batch, new),
            x.dtype(),
            device,
        )?;
        let layout = cache.attention_layout(new)?;
        let inputs = LayerInputs {
            rope: &rope,
            layout: &layout,
            kernels: self.kernels,
        };
        for (index, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x, &inputs, Some(cache.layer_mut(index)))?;
        }
        cache.advance(new);
        let hidden_states = self.norm.forward_with(&x, self.kernels)?;
        let logits = self.lm_head()?.forward(&hidden_states)?;
        Ok(ForwardOutput {
            logits,
            hidden_states,
        })
    }

    /// The vocabulary projection; an error for a trunk.
    fn lm_head(&self) -> Result<&Linear> {
        self.lm_head.as_ref().ok_or(ModelError::NoLanguageModelHead)
    }

    /// The `lm_head` weight `(vocab, hidden)` (the embedding when tied), for losses that project
    /// the final hidden states themselves in chunks ([`crate::ops::linear_cross_entropy`]) instead
    /// of taking full logits. An error for a trunk.
    pub fn lm_head_weight(&self) -> Result<&Tensor> {
        Ok(self.lm_head()?.weight())
    }

    /// Every projection of every layer by its HF module name (`model.layers.{i}.self_attn.q_proj`).
    pub(crate) fn projections_mut(&mut self) -> Vec<(String, &mut Projection)> {
        self.layers
            .iter_mut()
            .enumerate()
            .flat_map(|(i, layer)| {
                layer
                    .projections_mut()
                    .into_iter()
                    .map(move |(name, p)| (format!("model.layers.{i}.{name}"), p))
            })
            .collect()
    }

    /// Cuts every base parameter from the gradient graph (storage stays shared), so that only
    /// adapters train: what [`crate::lora::apply_lora`] does first.
    pub fn freeze(&mut self) -> Result<()> {
        self.map_parameters(&|tensor| Ok(tensor.detach()), false)
    }

    /// Computes in `dtype` (e.g. bf16). Frozen parameters (plain tensors: a loaded model for
    /// inference, the DPO reference, a `LoRA` base) are cast here, once, and live in `dtype` from
    /// now on. Trainable parameters (`Var`s, f32 masters) stay as they are and each forward casts
    /// them with `to_dtype`, which has a backward, so the gradients reach the masters in their
    /// dtype. Logits come back in f32 (as transformers' `logits.float()`); hidden states stay in
    /// `dtype`. `None`: the parameters' dtype.
    pub fn set_compute_dtype(&mut self, dtype: Option<DType>) -> Result<()> {
        self.compute_dtype = dtype;
        if let Some(dtype) = dtype {
            self.map_parameters(
                &|tensor| {
                    if tensor.is_variable() {
                        Ok(tensor.clone())
                    } else {
                        Ok(tensor.to_dtype(dtype)?)
                    }
                },
                true,
            )?;
        }
        Ok(())
    }

    /// Chooses the implementation of the ops every forward runs: [`Kernels::Fused`] (the default)
    /// or [`Kernels::Reference`], the composed candle ops the fused ones are tested against.
    pub fn set_kernels(&mut self, kernels: Kernels) {
        self.kernels = kernels;
    }

    /// The implementation of the ops this model runs.
    #[must_use]
    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// This model with its parameters in `compute_dtype` for one forward: a clone of tensor
    /// handles in which only the trainable parameters are actually cast (frozen ones were cast
    /// once by [`Llama::set_compute_dtype`], and `to_dtype` to a tensor's own dtype is a handle
    /// clone); `None` without a compute dtype.
    fn in_compute_dtype(&self) -> Result<Option<Self>> {
        match self.compute_dtype {
            Some(dtype) => {
                let mut cast = self.clone();
                cast.compute_dtype = None;
                cast.map_parameters(&|tensor| Ok(tensor.to_dtype(dtype)?), true)?;
                Ok(Some(cast))
            }
            None => Ok(None),
        }
    }

    /// Replaces every parameter by `f(parameter)`; `LoRA` adapters too when `adapters` is set.
    fn map_parameters(
        &mut self,
        f: &dyn Fn(&Tensor) -> Result<Tensor>,
        adapters: bool,
    ) -> Result<()> {
        let embeddings = f(self.embed_tokens.embeddings())?;
        self.lm_head = match &self.lm_head {
            None => None,
            Some(_) if self.config.tie_word_embeddings => {
                Some(Linear::new(embeddings.clone(), None))
            }
            Some(lm_head) => Some(Linear::new(f(lm_head.weight())?, None)),
        };
        self.embed_tokens = Embedding::new(embeddings, self.config.hidden_size);
        self.norm.map(f)?;
        for layer in &mut self.layers {
            layer.map(f, adapters)?;
        }
        Ok(())
    }

    /// Every parameter by HF name, as [`Llama::parameter_shapes`] lists them, with `LoRA` adapters
    /// merged into their base weights (`W + scale · B A`): a plain checkpoint for [`crate::save`].
    pub fn merged_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let mut tensors = HashMap::from([
            (
                "model.embed_tokens.weight".to_owned(),
                self.embed_tokens.embeddings().clone(),
            ),
            ("model.norm.weight".to_owned(), self.norm.weight().clone()),
        ]);
        if let Some(lm_head) = self
            .lm_head
            .as_ref()
            .filter(|_| !self.config.tie_word_embeddings)
        {
            tensors.insert("lm_head.weight".to_owned(), lm_head.weight().clone());
        }
        for (i, layer) in self.layers.iter().enumerate() {
            for (name, tensor) in layer.merged_tensors()? {
                tensors.insert(format!("model.layers.{i}.{name}"), tensor);
            }
        }
        Ok(tensors)
    }

    /// Every parameter's HF name and shape for `config`, in name order (`lm_head.weight` only when
    /// untied). Checkpoint loading checks files against this list.
    #[must_use]
    pub fn parameter_shapes(config: &LlamaConfig) -> Vec<(String, Vec<usize>)> {
        let mut shapes = Self::trunk_parameter_shapes(config);
        if !config.tie_word_embeddings {
            shapes.push((
                "lm_head.weight".to_owned(),
                vec![config.vocab_size, config.hidden_size],
            ));
            shapes.sort();
        }
        shapes
    }

    /// The parameters of [`Llama::trunk`]: every `model.*` one, no `lm_head.weight`, in name order.
    #[must_use]
    pub fn trunk_parameter_shapes(config: &LlamaConfig) -> Vec<(String, Vec<usize>)> {
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

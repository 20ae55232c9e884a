//! The Llama config: Hugging Face `config.json` in both of its layouts, resolved into
//! [`LlamaConfig`], and written back in the classic layout that every transformers version loads.
//!
//! Layouts (see `shared/research/reference-env.md`): released Llama 3.x checkpoints carry
//! `rope_theta` plus `rope_scaling` (`rope_type` or the older `type`); transformers 5 writes
//! `rope_parameters` holding `rope_theta`, `rope_type` and the scaling fields. The llama3 scaling
//! fields are those of transformers' `_compute_llama3_parameters`.

use std::path::Path;

use serde_json::{Value, json};

use crate::error::{ModelError, Result};
use crate::hf_config::{HfConfig, resolve};

/// Llama 3.1's `RoPE` frequency scaling (`rope_type: "llama3"`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Llama3RopeScaling {
    /// Divisor of the low frequencies (8 in Llama 3.1).
    pub factor: f64,
    /// Wavelengths above `original_max_position_embeddings / low_freq_factor` are divided.
    pub low_freq_factor: f64,
    /// Wavelengths below `original_max_position_embeddings / high_freq_factor` are kept.
    pub high_freq_factor: f64,
    /// The context length of pretraining before the long-context stage (8192 in Llama 3.1).
    pub original_max_position_embeddings: usize,
}

/// A resolved Llama config: every default applied, every field checked.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// Number of token ids.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the `SwiGLU` MLP.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Number of query heads.
    pub num_attention_heads: usize,
    /// Number of key/value heads (grouped-query attention); divides `num_attention_heads`.
    pub num_key_value_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Epsilon inside the `RMSNorm` square root.
    pub rms_norm_eps: f64,
    /// The longest context the model is meant for.
    pub max_position_embeddings: usize,
    /// Whether `lm_head` reuses `model.embed_tokens.weight`.
    pub tie_word_embeddings: bool,
    /// The begin-of-text id.
    pub bos_token_id: Option<u32>,
    /// The end ids (`eos_token_id`, an int or a list in the JSON).
    pub eos_token_ids: Vec<u32>,
    /// The `RoPE` base.
    pub rope_theta: f64,
    /// Llama 3.1 frequency scaling, `None` for plain `RoPE`.
    pub rope_scaling: Option<Llama3RopeScaling>,
    /// The dtype the weights were saved in (`torch_dtype` / `dtype`), as transformers spells it.
    pub torch_dtype: Option<String>,
}

impl LlamaConfig {
    /// Reads and resolves a `config.json`.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&text, path)
    }

    /// Resolves the text of a `config.json`; `path` only names the file in errors.
    pub fn from_json(text: &str, path: &Path) -> Result<Self> {
        let raw: HfConfig = serde_json::from_str(text).map_err(|source| ModelError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        resolve(raw, path)
    }

    /// A config small enough for unit tests and smoke runs (4 heads over 2 key/value heads).
    #[must_use]
    pub fn tiny(vocab_size: usize) -> Self {
        Self {
            vocab_size,
            hidden_size: 32,
            intermediate_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: 8,
            rms_norm_eps: 1e-5,
            max_position_embeddings: 512,
            tie_word_embeddings: false,
            bos_token_id: None,
            eos_token_ids: Vec::new(),
            rope_theta: 500_000.0,
            rope_scaling: None,
            torch_dtype: None,
        }
    }

    /// The config as a classic-layout `config.json` that transformers 4 and 5 both load.
    #[must_use]
    pub fn to_hf_json(&self) -> Value {
        let eos = match self.eos_token_ids.as_slice() {
            [] => Value::Null,
            [one] => json!(one),
            many => json!(many),
        };
        let rope_scaling = self.rope_scaling.map_or(Value::Null, |scaling| {
            json!({
                "rope_type": "llama3",
                "factor": scaling.factor,
                "low_freq_factor": scaling.low_freq_factor,
                "high_freq_factor": scaling.high_freq_factor,
                "original_max_position_embeddings": scaling.original_max_position_embeddings,
            })
        });
        json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "attention_bias": false,
            "mlp_bias": false,
            "rms_norm_eps": self.rms_norm_eps,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": eos,
            "rope_theta": self.rope_theta,
            "rope_scaling": rope_scaling,
            "torch_dtype": self.torch_dtype,
        })
    }

    /// Writes [`Self::to_hf_json`] to `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(&self.to_hf_json()).map_err(|source| {
            ModelError::Json {
                path: path.to_path_buf(),
                source,
            }
        })?;
        std::fs::write(path, text + "\n").map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}

//! A Hugging Face `config.json` as written, and its resolution into [`LlamaConfig`]: the defaults of
//! transformers' `LlamaConfig.__init__`, the two `RoPE` layouts (classic `rope_theta` +
//! `rope_scaling`, transformers-5 `rope_parameters`), and checks that reject what herd's Llama does
//! not implement (biases, activations other than `SiLU`, `RoPE` types other than default and llama3).

use std::path::Path;

use serde::Deserialize;

use crate::config::{Llama3RopeScaling, LlamaConfig};
use crate::error::{ModelError, Result};

/// transformers' `LlamaConfig` defaults for fields a `config.json` may omit.
const DEFAULT_RMS_NORM_EPS: f64 = 1e-6;
const DEFAULT_MAX_POSITION_EMBEDDINGS: usize = 2048;
const DEFAULT_ROPE_THETA: f64 = 10_000.0;

#[derive(Debug, Deserialize)]
pub(crate) struct HfConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f64>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    bos_token_id: Option<u32>,
    eos_token_id: Option<TokenIds>,
    rope_theta: Option<f64>,
    rope_scaling: Option<RopeParameters>,
    rope_parameters: Option<RopeParameters>,
    torch_dtype: Option<String>,
    dtype: Option<String>,
    hidden_act: Option<String>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

#[derive(Debug, Deserialize)]
struct RopeParameters {
    rope_type: Option<String>,
    #[serde(rename = "type")]
    legacy_type: Option<String>,
    rope_theta: Option<f64>,
    factor: Option<f64>,
    low_freq_factor: Option<f64>,
    high_freq_factor: Option<f64>,
    original_max_position_embeddings: Option<usize>,
}

fn invalid(path: &Path, field: &str, message: String) -> ModelError {
    ModelError::Config {
        path: path.to_path_buf(),
        field: field.to_owned(),
        message,
    }
}

pub(crate) fn resolve(raw: HfConfig, path: &Path) -> Result<LlamaConfig> {
    if let Some(act) = raw.hidden_act.as_deref().filter(|act| *act != "silu") {
        return Err(invalid(
            path,
            "hidden_act",
            format!("`{act}`: herd's Llama uses silu"),
        ));
    }
    for (field, value) in [
        ("attention_bias", raw.attention_bias),
        ("mlp_bias", raw.mlp_bias),
    ] {
        if value == Some(true) {
            return Err(invalid(
                path,
                field,
                "true: herd's Llama has no biases".to_owned(),
            ));
        }
    }
    let heads = raw.num_attention_heads;
    let key_value_heads = raw.num_key_value_heads.unwrap_or(heads);
    if heads == 0 || key_value_heads == 0 || !heads.is_multiple_of(key_value_heads) {
        return Err(invalid(
            path,
            "num_key_value_heads",
            format!("{key_value_heads} does not divide num_attention_heads {heads}"),
        ));
    }
    let head_dim = match raw.head_dim {
        Some(head_dim) => head_dim,
        None if raw.hidden_size.is_multiple_of(heads) => raw.hidden_size / heads,
        None => {
            return Err(invalid(
                path,
                "hidden_size",
                format!("{} is not a multiple of {heads} heads", raw.hidden_size),
            ));
        }
    };
    if !head_dim.is_multiple_of(2) {
        return Err(invalid(
            path,
            "head_dim",
            format!("{head_dim} is odd; RoPE needs pairs"),
        ));
    }
    let (rope_theta, rope_scaling) = resolve_rope(&raw, path)?;
    Ok(LlamaConfig {
        vocab_size: raw.vocab_size,
        hidden_size: raw.hidden_size,
        intermediate_size: raw.intermediate_size,
        num_hidden_layers: raw.num_hidden_layers,
        num_attention_heads: heads,
        num_key_value_heads: key_value_heads,
        head_dim,
        rms_norm_eps: raw.rms_norm_eps.unwrap_or(DEFAULT_RMS_NORM_EPS),
        max_position_embeddings: raw
            .max_position_embeddings
            .unwrap_or(DEFAULT_MAX_POSITION_EMBEDDINGS),
        tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
        bos_token_id: raw.bos_token_id,
        eos_token_ids: match raw.eos_token_id {
            None => Vec::new(),
            Some(TokenIds::One(id)) => vec![id],
            Some(TokenIds::Many(ids)) => ids,
        },
        rope_theta,
        rope_scaling,
        torch_dtype: raw.torch_dtype.or(raw.dtype),
    })
}

/// The `RoPE` base and scaling from either layout; `rope_parameters` wins when both are present,
/// as in transformers 5.
fn resolve_rope(raw: &HfConfig, path: &Path) -> Result<(f64, Option<Llama3RopeScaling>)> {
    let (parameters, field) = match (&raw.rope_parameters, &raw.rope_scaling) {
        (Some(parameters), _) => (Some(parameters), "rope_parameters"),
        (None, scaling) => (scaling.as_ref(), "rope_scaling"),
    };
    let rope_theta = parameters
        .and_then(|p| p.rope_theta)
        .or(raw.rope_theta)
        .unwrap_or(DEFAULT_ROPE_THETA);
    let Some(parameters) = parameters else {
        return Ok((rope_theta, None));
    };
    let rope_type = parameters
        .rope_type
        .as_deref()
        .or(parameters.legacy_type.as_deref())
        .unwrap_or("default");
    match rope_type {
        "default" => Ok((rope_theta, None)),
        "llama3" => {
            let number = |value: Option<f64>, name: &str| {
                value.ok_or_else(|| invalid(path, &format!("{field}.{name}"), "missing".to_owned()))
            };
            let scaling = Llama3RopeScaling {
                factor: number(parameters.factor, "factor")?,
                low_freq_factor: number(parameters.low_freq_factor, "low_freq_factor")?,
                high_freq_factor: number(parameters.high_freq_factor, "high_freq_factor")?,
                original_max_position_embeddings: parameters
                    .original_max_position_embeddings
                    .ok_or_else(|| {
                        let name = format!("{field}.original_max_position_embeddings");
                        invalid(path, &name, "missing".to_owned())
                    })?,
            };
            if scaling.high_freq_factor <= scaling.low_freq_factor {
                return Err(invalid(
                    path,
                    &format!("{field}.high_freq_factor"),
                    format!(
                        "{} must exceed low_freq_factor {}",
                        scaling.high_freq_factor, scaling.low_freq_factor
                    ),
                ));
            }
            Ok((rope_theta, Some(scaling)))
        }
        other => Err(invalid(
            path,
            &format!("{field}.rope_type"),
            format!("`{other}` is not supported; herd implements `default` and `llama3`"),
        )),
    }
}

//! `herd export`: an HF checkpoint directory that transformers, vLLM and candle load unchanged —
//! `config.json`, `model.safetensors` (f32 or bf16), `generation_config.json` (Llama 3.1's three stop
//! tokens), `tokenizer.json`, and a `tokenizer_config.json` whose `chat_template` renders every
//! conversation exactly as herd's renderer does (`datasets::chat_template`).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use datasets::chat_template::tokenizer_config;
use datasets::tokenizer::Llama3Tokenizer;
use model::{Checkpoint, SaveOptions, save};
use serde::Serialize;

use crate::error::{Result, TrainingError};

/// What was exported.
#[derive(Debug, Clone, Serialize)]
pub struct ExportSummary {
    /// The output directory.
    pub directory: PathBuf,
    /// Parameters written.
    pub parameters: usize,
    /// The weights' dtype.
    pub dtype: String,
}

/// Exports the HF checkpoint directory `checkpoint` (e.g. a stage's `final/`) to `out`, in `dtype`.
/// The checkpoint must hold its `tokenizer.json`.
pub fn export(checkpoint: &Path, out: &Path, dtype: DType) -> Result<ExportSummary> {
    let tokenizer_path = checkpoint.join("tokenizer.json");
    if !tokenizer_path.is_file() {
        return Err(TrainingError::InvalidValue {
            field: "checkpoint",
            value: checkpoint.display().to_string(),
            reason: "has no tokenizer.json: an export must carry its tokenizer",
        });
    }
    let loaded = Checkpoint::load(checkpoint, DType::F32, &Device::Cpu).map_err(|error| {
        TrainingError::InvalidValue {
            field: "checkpoint",
            value: format!("{}: {error}", checkpoint.display()),
            reason: "cannot be loaded as an HF Llama checkpoint",
        }
    })?;
    let tokenizer = Llama3Tokenizer::from_file(&tokenizer_path).map_err(|error| {
        TrainingError::InvalidValue {
            field: "tokenizer",
            value: format!("{}: {error}", tokenizer_path.display()),
            reason: "cannot be loaded",
        }
    })?;
    let options = SaveOptions {
        dtype,
        ..SaveOptions::default()
    };
    save(out, &loaded.config, &loaded.tensors, &options).map_err(|error| {
        TrainingError::InvalidValue {
            field: "out",
            value: format!("{}: {error}", out.display()),
            reason: "cannot write the checkpoint",
        }
    })?;
    let write_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TrainingError::Io { path, source }
    };
    std::fs::copy(&tokenizer_path, out.join("tokenizer.json"))
        .map_err(write_error(&out.join("tokenizer.json")))?;
    let config_path = out.join("tokenizer_config.json");
    let config = tokenizer_config(&tokenizer, loaded.config.max_position_embeddings);
    let text = serde_json::to_string_pretty(&config).unwrap_or_default();
    std::fs::write(&config_path, text + "\n").map_err(write_error(&config_path))?;
    let parameters = loaded
        .tensors
        .values()
        .map(candle_core::Tensor::elem_count)
        .sum();
    Ok(ExportSummary {
        directory: out.to_path_buf(),
        parameters,
        dtype: format!("{dtype:?}").to_lowercase(),
    })
}

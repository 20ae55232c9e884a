//! The one error type of the crate: every message names the file, field or tensor and the value
//! that was wrong, so a bad checkpoint is diagnosed from the message alone.

use std::path::PathBuf;

/// Everything that can go wrong while reading configs and checkpoints or running the model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A JSON file did not parse.
    #[error("{}: invalid JSON: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// What serde said (it names line and column).
        source: serde_json::Error,
    },
    /// A config field holds a value herd cannot use.
    #[error("{}: field `{field}`: {message}", path.display())]
    Config {
        /// The config file.
        path: PathBuf,
        /// The field, as spelled in the JSON.
        field: String,
        /// What is wrong with its value.
        message: String,
    },
    /// A tensor the model needs is not in the checkpoint.
    #[error("{}: tensor `{name}` (shape {expected:?}) is missing", directory.display())]
    MissingTensor {
        /// The checkpoint directory.
        directory: PathBuf,
        /// The tensor's HF name.
        name: String,
        /// The shape the model expects.
        expected: Vec<usize>,
    },
    /// The checkpoint holds a tensor the model does not have.
    #[error("{}: unexpected tensor `{name}` (shape {found:?}) is not a parameter of this model", file.display())]
    UnexpectedTensor {
        /// The safetensors file holding it.
        file: PathBuf,
        /// The tensor's name.
        name: String,
        /// Its shape.
        found: Vec<usize>,
    },
    /// A tensor has the wrong shape for the config.
    #[error("{}: tensor `{name}` has shape {found:?}, expected {expected:?}", file.display())]
    TensorShape {
        /// The safetensors file holding it.
        file: PathBuf,
        /// The tensor's name.
        name: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A tensor is stored in a dtype herd does not read as weights.
    #[error("{}: tensor `{name}` is {dtype:?}; weights must be f32, bf16 or f16", file.display())]
    TensorDtype {
        /// The safetensors file holding it.
        file: PathBuf,
        /// The tensor's name.
        name: String,
        /// Its dtype.
        dtype: candle_core::DType,
    },
    /// A safetensors file could not be read or written.
    #[error("{}: {source}", file.display())]
    Safetensors {
        /// The file.
        file: PathBuf,
        /// What candle or safetensors said.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Position ids, attention masks or document boundaries that do not describe the batch.
    #[error("positions: {0}")]
    Positions(String),
    /// A generation request or KV cache operation that cannot be carried out.
    #[error("generation: {0}")]
    Generation(String),
    /// Logits were asked of a trunk built without `lm_head` ([`crate::Llama::trunk`]).
    #[error("this model is a trunk without lm_head (e.g. a reward model's): it has no logits")]
    NoLanguageModelHead,
    /// A `LoRA` configuration that does not fit the model.
    #[error("lora: {0}")]
    Lora(String),
    /// A tensor operation failed (a shape bug, or the device).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, ModelError>;

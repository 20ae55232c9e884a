//! The one error type of the training toolbox. Every message names the file, tensor or value
//! at fault, so a failed resume or a bad average says what to look at without a debugger.

use std::path::PathBuf;

/// What can go wrong while optimising, checkpointing, logging or averaging.
#[derive(Debug, thiserror::Error)]
pub enum TrainingError {
    /// A tensor operation failed; `context` says which step of which routine.
    #[error("{context}: {source}")]
    Tensor {
        /// What was being computed, e.g. "`AdamW` update of `model.norm.weight`".
        context: String,
        /// The candle error.
        #[source]
        source: candle_core::Error,
    },
    /// Reading or writing a file or directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file (or one line of a JSONL file) did not parse or could not be written.
    #[error("{path}{}: {source}", line.map(|line| format!(" line {line}")).unwrap_or_default())]
    Json {
        /// The file.
        path: PathBuf,
        /// The 1-based line, for JSONL files.
        line: Option<usize>,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A safetensors file lacks a tensor that the model or optimizer needs.
    #[error("{path}: no tensor named {tensor}")]
    MissingTensor {
        /// The safetensors file.
        path: PathBuf,
        /// The tensor that is missing.
        tensor: String,
    },
    /// A tensor's shape, dtype or presence differs between two things that must agree
    /// (a checkpoint and the live model, or two checkpoints being averaged).
    #[error("tensor {tensor} in {path}: {reason}")]
    TensorMismatch {
        /// The file where the disagreement was found.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// What differs, with both values.
        reason: String,
    },
    /// A gradient store has no gradient for a parameter that must have one.
    #[error("no gradient for parameter {name}")]
    MissingGradient {
        /// The parameter.
        name: String,
    },
    /// A configuration or argument value is out of its domain.
    #[error("{field} = {value}: {reason}")]
    InvalidValue {
        /// The field or argument.
        field: &'static str,
        /// Its value, as written.
        value: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// A `[training]` setting is out of its domain (owned reason, for messages with values in).
    #[error("config `{field}` = {value}: {reason}")]
    InvalidSetting {
        /// The setting, e.g. `training.steps`.
        field: &'static str,
        /// Its value, as written.
        value: String,
        /// Why it is rejected.
        reason: String,
    },
    /// Saved optimizer state does not fit the optimizer it is restored into.
    #[error("{path}: {reason}")]
    IncompatibleState {
        /// The state file.
        path: PathBuf,
        /// What differs.
        reason: String,
    },
}

impl TrainingError {
    /// Wraps a candle error with what was being done, for `map_err`.
    pub(crate) fn tensor(context: impl Into<String>) -> impl FnOnce(candle_core::Error) -> Self {
        let context = context.into();
        move |source| Self::Tensor { context, source }
    }

    /// Wraps an I/O error with its path, for `map_err`.
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }

    /// Wraps a JSON error with its path, for `map_err`.
    pub(crate) fn json(path: impl Into<PathBuf>) -> impl FnOnce(serde_json::Error) -> Self {
        let path = path.into();
        move |source| Self::Json {
            path,
            line: None,
            source,
        }
    }
}

/// The toolbox's result type.
pub type Result<T> = std::result::Result<T, TrainingError>;

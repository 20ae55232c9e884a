//! The one error type of the pretraining stage. Messages name the config field, file or tensor
//! and the value at fault; errors of the toolbox, the model and the tokenizer pass through with
//! their own messages (which name their files).

use std::path::PathBuf;

/// Everything that can stop a pretraining run.
#[derive(Debug, thiserror::Error)]
pub enum PretrainError {
    /// A config value is out of its domain (found after parsing, by [`crate::PretrainConfig::validate`]).
    #[error("config `{field}` = {value}: {reason}")]
    InvalidConfig {
        /// The dotted key, e.g. `training.batch_size`.
        field: &'static str,
        /// Its value.
        value: String,
        /// Why it is rejected.
        reason: String,
    },
    /// A corpus file cannot be used.
    #[error("{}: {reason}", path.display())]
    Corpus {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file did not parse or could not be written.
    #[error("{}: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A tensor operation failed; `context` says which.
    #[error("{context}: {source}")]
    Tensor {
        /// What was being computed.
        context: String,
        /// The candle error.
        #[source]
        source: candle_core::Error,
    },
    /// Loading the config failed.
    #[error(transparent)]
    Config(#[from] training::ConfigError),
    /// The optimizer, a checkpoint, the metrics log or the plot failed.
    #[error(transparent)]
    Training(#[from] training::TrainingError),
    /// Building, loading or saving the model failed.
    #[error(transparent)]
    Model(#[from] model::ModelError),
    /// Loading the tokenizer or encoding text failed.
    #[error(transparent)]
    Tokenizer(#[from] datasets::tokenizer::TokenizerError),
}

impl PretrainError {
    /// Wraps an I/O error with its path, for `map_err`.
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }

    /// Wraps a candle error with what was being done, for `map_err`.
    pub(crate) fn tensor(context: impl Into<String>) -> impl FnOnce(candle_core::Error) -> Self {
        let context = context.into();
        move |source| Self::Tensor { context, source }
    }
}

/// The stage's result type.
pub type Result<T> = std::result::Result<T, PretrainError>;

//! Why a reward-model run, load or scoring stopped.

use std::path::PathBuf;

/// A reward-model error, naming the file, line, field or tensor at fault.
#[derive(Debug, thiserror::Error)]
pub enum RewardError {
    /// A setting is out of range.
    #[error("config: {0}")]
    Config(String),
    /// A data file could not be read or a line could not be used (`file:line: ...`).
    #[error("data: {0}")]
    Data(String),
    /// A reward-model directory is not a one-label `LlamaForSequenceClassification`.
    #[error("{}: field `{field}`: {message}", path.display())]
    Checkpoint {
        /// The `config.json`.
        path: PathBuf,
        /// The field, as spelled in the JSON.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Token ids that cannot be scored (empty, or outside the vocabulary).
    #[error("sequence {index}: {message}")]
    Sequence {
        /// Index of the sequence in the call.
        index: usize,
        /// What is wrong with it.
        message: String,
    },
    /// The tokenizer failed.
    #[error(transparent)]
    Tokenizer(#[from] datasets::tokenizer::TokenizerError),
    /// The model failed (checkpoint loading, forward).
    #[error(transparent)]
    Model(#[from] model::ModelError),
    /// The training toolbox failed (optimizer, checkpoints, metrics).
    #[error(transparent)]
    Training(#[from] training::TrainingError),
    /// A tensor operation failed.
    #[error("tensor: {0}")]
    Tensor(#[from] candle_core::Error),
}

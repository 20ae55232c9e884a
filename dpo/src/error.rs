//! Why a DPO run stopped.

/// A DPO error, naming the file, line, setting or tensor at fault.
#[derive(Debug, thiserror::Error)]
pub enum DpoError {
    /// A setting is out of range.
    #[error("config: {0}")]
    Config(String),
    /// A data file could not be read or a line could not be used (`file:line: ...`).
    #[error("data: {0}")]
    Data(String),
    /// The reference log-prob cache could not be read or written (names the file).
    #[error("reference log-probs {path}: {message}")]
    ReferenceCache {
        /// The cache file.
        path: std::path::PathBuf,
        /// What went wrong.
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

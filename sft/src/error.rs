//! Why an SFT run stopped.

/// An SFT error, naming the file, line or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum SftError {
    /// A setting is out of range.
    #[error("config: {0}")]
    Config(String),
    /// A data file could not be read or a line could not be used.
    #[error("data: {0}")]
    Data(String),
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

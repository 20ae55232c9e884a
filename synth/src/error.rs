//! Why generation stopped.

/// A generation error, naming the file and line at fault.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// An input line cannot be used (`file:line: reason`).
    #[error("{0}")]
    Input(String),
    /// The model failed.
    #[error(transparent)]
    Model(#[from] model::ModelError),
    /// The tokenizer failed.
    #[error(transparent)]
    Tokenizer(#[from] datasets::tokenizer::TokenizerError),
    /// Writing the output failed.
    #[error("writing output: {0}")]
    Io(#[from] std::io::Error),
}

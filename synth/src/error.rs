//! Why generation or rejection sampling stopped.

/// A generation error, naming the file and line (or the config field) at fault.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// An input line cannot be used (`file:line: reason`).
    #[error("{0}")]
    Input(String),
    /// A config value is out of range or inconsistent with another.
    #[error("config field `{field}`: {message}")]
    Config {
        /// The config key.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A file in the output directory cannot be used (`file:line: reason`).
    #[error("{0}")]
    Output(String),
    /// The model failed.
    #[error(transparent)]
    Model(#[from] model::ModelError),
    /// The reward model failed to load or score.
    #[error(transparent)]
    Reward(#[from] reward::RewardError),
    /// The device could not be opened.
    #[error(transparent)]
    Training(#[from] training::TrainingError),
    /// The tokenizer failed.
    #[error(transparent)]
    Tokenizer(#[from] datasets::tokenizer::TokenizerError),
    /// Writing the output failed.
    #[error("writing output: {0}")]
    Io(#[from] std::io::Error),
}

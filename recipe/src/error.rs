//! Why a round or the demo stopped: the failing stage's own error, with the stage named.

use std::path::PathBuf;

/// A round or demo error.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    /// A setting is out of range or inconsistent.
    #[error("config: {0}")]
    Config(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A stage failed; `stage` names it (e.g. "reward model", "DPO").
    #[error("{stage}: {message}")]
    Stage {
        /// The stage.
        stage: &'static str,
        /// The stage's error.
        message: String,
    },
}

impl RecipeError {
    /// Wraps an I/O error with its path, for `map_err`.
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }

    /// Wraps a stage's error with the stage's name, for `map_err`.
    pub(crate) fn stage<E: std::fmt::Display>(stage: &'static str) -> impl FnOnce(E) -> Self {
        move |error| Self::Stage {
            stage,
            message: error.to_string(),
        }
    }
}

//! What the store can refuse, and why. The web layer maps each kind to one HTTP status.

/// A store operation's failure; every message names the field, id or value at fault.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Bad input (400).
    #[error("{0}")]
    Invalid(String),
    /// Not there, or not the caller's (404: the two are not told apart, so ids cannot be probed).
    #[error("{0}")]
    NotFound(String),
    /// A lost lease or a conflicting retry (409).
    #[error("{0}")]
    Conflict(String),
    /// The caller's role does not allow it (403).
    #[error("{0}")]
    Forbidden(String),
    /// The database cannot be reached right now; the client should retry (503).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Any other database failure (500; logged, not shown).
    #[error("database error: {0}")]
    Database(sqlx::Error),
}

impl StoreError {
    /// Whether a unique constraint refused the write (a race lost; the caller retries).
    #[must_use]
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, StoreError::Database(sqlx::Error::Database(error))
            if error.kind() == sqlx::error::ErrorKind::UniqueViolation)
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> StoreError {
        if is_transient(&error) {
            StoreError::Unavailable(error.to_string())
        } else {
            StoreError::Database(error)
        }
    }
}

/// Errors that a retry after reconnecting can cure: the server went away, restarted or is
/// starting (SQLSTATE class 08 connection exceptions, 57P01–57P03 shutdown / cannot connect now).
fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_)
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(database) => database.code().is_some_and(|code| {
            code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03")
        }),
        _ => false,
    }
}

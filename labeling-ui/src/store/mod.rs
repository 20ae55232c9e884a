//! Every query the app runs, grouped by resource. Each function takes the time as `now_ms`, so
//! tests can move the clock (lease expiry) without sleeping, and scopes its query by the caller:
//! an annotator's id is part of every WHERE clause that touches leases, drafts or annotations.

pub mod assignment;
pub mod audit;
pub mod items;
pub mod projects;
pub mod reports;
pub mod sessions;
pub mod users;

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::error::StoreError;

/// Reads a column, naming it in the error.
pub(crate) fn column<'r, T>(row: &'r AnyRow, name: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get(name).map_err(StoreError::from)
}

/// Random bytes as lowercase hex (tokens, lease tokens).
pub(crate) fn random_hex(bytes: usize) -> Result<String, StoreError> {
    let mut buffer = vec![0_u8; bytes];
    getrandom::fill(&mut buffer)
        .map_err(|error| StoreError::Unavailable(format!("random source: {error}")))?;
    Ok(hex::encode(buffer))
}

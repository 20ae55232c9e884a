//! The append-only audit log: who did what, when (logins, imports, claims, submissions, skips,
//! user and project changes). A trigger in both schemas refuses UPDATE and DELETE on the table.

use serde_json::Value;
use sqlx::AnyConnection;

use crate::db::Database;
use crate::error::StoreError;

/// One entry to append.
#[derive(Debug, Clone)]
pub struct AuditEntry<'a> {
    /// The user acting, if any (a failed login has none).
    pub actor_id: Option<i64>,
    /// What happened: `login`, `login_failed`, `import`, `claim`, `submit`, `skip`, …
    pub action: &'a str,
    /// The project, if the action belongs to one.
    pub project_id: Option<i64>,
    /// What it happened to (`slot:12`, `user:alice`, …).
    pub subject: String,
    /// Details as JSON.
    pub detail: Value,
}

/// Appends `entry` inside the caller's transaction (so the log and the change commit together).
pub async fn append(
    connection: &mut AnyConnection,
    entry: &AuditEntry<'_>,
    now_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_log (at_ms, actor_id, action, project_id, subject, detail_json) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(now_ms)
    .bind(entry.actor_id)
    .bind(entry.action)
    .bind(entry.project_id)
    .bind(&entry.subject)
    .bind(entry.detail.to_string())
    .execute(connection)
    .await?;
    Ok(())
}

impl Database {
    /// Appends `entry` on its own (for events that change nothing else: logins, imports).
    pub async fn audit(&self, entry: &AuditEntry<'_>, now_ms: i64) -> Result<(), StoreError> {
        let mut connection = self.pool().acquire().await?;
        append(&mut connection, entry, now_ms).await
    }
}

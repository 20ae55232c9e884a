//! Server-side sessions. The browser holds a random token in an HttpOnly cookie; the table holds
//! the token's keyed hash (so a copy of the table cannot be replayed) and the session's CSRF token.
//! Revocation is deleting the row; a role change or deactivation revokes the user's sessions.

use super::column;
use super::users::{Role, User};
use crate::db::Database;
use crate::error::StoreError;

/// A live session.
#[derive(Debug, Clone)]
pub struct Session {
    /// Who.
    pub user: User,
    /// The token every state-changing request must echo.
    pub csrf_token: String,
}

impl Database {
    /// Stores a new session.
    pub async fn create_session(
        &self,
        token_hash: &str,
        user_id: i64,
        csrf_token: &str,
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sessions (token_hash, user_id, csrf_token, created_ms, expires_ms) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash)
        .bind(user_id)
        .bind(csrf_token)
        .bind(now_ms)
        .bind(expires_ms)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The session for a token hash, if it exists, has not expired and its user is active.
    pub async fn session(
        &self,
        token_hash: &str,
        now_ms: i64,
    ) -> Result<Option<Session>, StoreError> {
        let row = sqlx::query(
            "SELECT u.id, u.username, u.role, s.csrf_token FROM sessions s \
             JOIN users u ON u.id = s.user_id \
             WHERE s.token_hash = $1 AND s.expires_ms > $2 AND u.active = 1",
        )
        .bind(token_hash)
        .bind(now_ms)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| {
            Ok(Session {
                user: User {
                    id: column(&row, "id")?,
                    username: column(&row, "username")?,
                    role: Role::parse(&column::<String>(&row, "role")?)?,
                },
                csrf_token: column(&row, "csrf_token")?,
            })
        })
        .transpose()
    }

    /// Ends a session.
    pub async fn delete_session(&self, token_hash: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}

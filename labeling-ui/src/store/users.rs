//! Accounts: created by an admin (the first with `herd label create-admin`), passwords hashed with
//! Argon2id (the `argon2` crate's defaults: m = 19 MiB, t = 2, p = 1, OWASP's minimum).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Argon2, password_hash::rand_core::OsRng};
use serde_json::json;

use super::audit::{AuditEntry, append};
use super::column;
use crate::db::Database;
use crate::error::StoreError;

/// A user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Creates projects and users, imports, sees every annotation, exports.
    Admin,
    /// Claims and submits their own work, nothing else.
    Annotator,
}

impl Role {
    /// The stored spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Annotator => "annotator",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(text: &str) -> Result<Role, StoreError> {
        match text {
            "admin" => Ok(Role::Admin),
            "annotator" => Ok(Role::Annotator),
            other => Err(StoreError::Invalid(format!(
                "role: expected admin or annotator, got {other:?}"
            ))),
        }
    }
}

/// A signed-in user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Row id.
    pub id: i64,
    /// Login name (shown escaped everywhere: it is user-controlled text).
    pub username: String,
    /// Role.
    pub role: Role,
}

/// Hashes a password with Argon2id and a random salt (CPU-heavy: call from a blocking thread).
pub fn hash_password(password: &str) -> Result<String, StoreError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| StoreError::Invalid(format!("password: {error}")))
}

/// A fixed hash verified against when the username does not exist, so a login takes as long
/// for unknown users as for known ones (no user enumeration by timing).
pub const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$L2rNNQvuGbyXGQrWUX0eByp9WDKbsqLXwRzYw8gfn3I";

/// Whether `password` matches `hash` (CPU-heavy: call from a blocking thread).
#[must_use]
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// Checks a new username: 1–64 characters, no control characters or surrounding spaces.
pub fn validate_username(username: &str) -> Result<(), StoreError> {
    let count = username.chars().count();
    if count == 0 || count > 64 {
        return Err(StoreError::Invalid(format!(
            "username: 1 to 64 characters, got {count}"
        )));
    }
    if username.chars().any(char::is_control) || username.trim() != username {
        return Err(StoreError::Invalid(
            "username: no control characters or surrounding spaces".into(),
        ));
    }
    Ok(())
}

/// Checks a new password: at least 8 characters, at most 1024 bytes.
pub fn validate_password(password: &str) -> Result<(), StoreError> {
    if password.chars().count() < 8 || password.len() > 1024 {
        return Err(StoreError::Invalid(
            "password: 8 characters or more (and at most 1024 bytes)".into(),
        ));
    }
    Ok(())
}

impl Database {
    /// Creates a user from an already-computed hash; a taken username is a conflict.
    pub async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        role: Role,
        actor_id: Option<i64>,
        now_ms: i64,
    ) -> Result<User, StoreError> {
        validate_username(username)?;
        let mut transaction = self.pool().begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO users (username, password_hash, role, created_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (username) DO NOTHING RETURNING id",
        )
        .bind(username)
        .bind(password_hash)
        .bind(role.as_str())
        .bind(now_ms)
        .fetch_optional(&mut *transaction)
        .await?;
        let Some(row) = inserted else {
            return Err(StoreError::Conflict(format!(
                "username {username:?} is taken"
            )));
        };
        let id: i64 = column(&row, "id")?;
        append(
            &mut transaction,
            &AuditEntry {
                actor_id,
                action: "create_user",
                project_id: None,
                subject: format!("user:{id}"),
                detail: json!({"username": username, "role": role.as_str()}),
            },
            now_ms,
        )
        .await?;
        transaction.commit().await?;
        Ok(User {
            id,
            username: username.to_string(),
            role,
        })
    }

    /// The active user and password hash for a login name.
    pub async fn user_for_login(
        &self,
        username: &str,
    ) -> Result<Option<(User, String)>, StoreError> {
        let row = sqlx::query(
            "SELECT id, username, role, password_hash FROM users WHERE username = $1 AND active = 1",
        )
        .bind(username)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| {
            Ok((
                User {
                    id: column(&row, "id")?,
                    username: column(&row, "username")?,
                    role: Role::parse(&column::<String>(&row, "role")?)?,
                },
                column(&row, "password_hash")?,
            ))
        })
        .transpose()
    }

    /// Every user, oldest first.
    pub async fn users(&self) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query("SELECT id, username, role FROM users ORDER BY id")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|row| {
                Ok(User {
                    id: column(row, "id")?,
                    username: column(row, "username")?,
                    role: Role::parse(&column::<String>(row, "role")?)?,
                })
            })
            .collect()
    }

    /// Whether any admin exists (the first is made with `herd label create-admin`).
    pub async fn has_admin(&self) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users WHERE role = 'admin'")
            .fetch_one(self.pool())
            .await?;
        Ok(column::<i64>(&row, "n")? > 0)
    }
}

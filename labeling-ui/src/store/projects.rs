//! Projects: a set of items, the overlap k (annotations wanted per item), the lease length and
//! the guidelines shown beside every task.

use serde_json::json;

use super::audit::{AuditEntry, append};
use super::column;
use crate::db::Database;
use crate::error::StoreError;

/// A project's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    /// Row id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Markdown guidelines (rendered sanitized).
    pub guidelines: String,
    /// Annotations wanted per item.
    pub overlap: i64,
    /// How long a claimed item stays reserved without a heartbeat.
    pub lease_seconds: i64,
}

/// A new project's settings.
#[derive(Debug, Clone)]
pub struct NewProject<'a> {
    /// Unique name (1–200 characters).
    pub name: &'a str,
    /// Annotations wanted per item (1–50).
    pub overlap: i64,
    /// Lease length in seconds (10 s – 1 day).
    pub lease_seconds: i64,
    /// Markdown guidelines.
    pub guidelines: &'a str,
}

fn project_from_row(row: &sqlx::any::AnyRow) -> Result<Project, StoreError> {
    Ok(Project {
        id: column(row, "id")?,
        name: column(row, "name")?,
        guidelines: column(row, "guidelines")?,
        overlap: column(row, "overlap")?,
        lease_seconds: column(row, "lease_seconds")?,
    })
}

impl Database {
    /// Creates a project; a taken name is a conflict.
    pub async fn create_project(
        &self,
        project: &NewProject<'_>,
        actor_id: Option<i64>,
        now_ms: i64,
    ) -> Result<Project, StoreError> {
        let name = project.name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(StoreError::Invalid("name: 1 to 200 characters".into()));
        }
        if !(1..=50).contains(&project.overlap) {
            return Err(StoreError::Invalid(format!(
                "overlap: 1 to 50 annotations per item, got {}",
                project.overlap
            )));
        }
        if !(10..=86_400).contains(&project.lease_seconds) {
            return Err(StoreError::Invalid(format!(
                "lease_seconds: 10 to 86400, got {}",
                project.lease_seconds
            )));
        }
        let mut transaction = self.pool().begin().await?;
        let row = sqlx::query(
            "INSERT INTO projects (name, guidelines, overlap, lease_seconds, created_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING \
             RETURNING id, name, guidelines, overlap, lease_seconds",
        )
        .bind(name)
        .bind(project.guidelines)
        .bind(project.overlap)
        .bind(project.lease_seconds)
        .bind(now_ms)
        .fetch_optional(&mut *transaction)
        .await?;
        let Some(row) = row else {
            return Err(StoreError::Conflict(format!("project {name:?} exists")));
        };
        let created = project_from_row(&row)?;
        append(
            &mut transaction,
            &AuditEntry {
                actor_id,
                action: "create_project",
                project_id: Some(created.id),
                subject: format!("project:{}", created.id),
                detail: json!({"name": name, "overlap": project.overlap, "lease_seconds": project.lease_seconds}),
            },
            now_ms,
        )
        .await?;
        transaction.commit().await?;
        Ok(created)
    }

    /// A project by id.
    pub async fn project(&self, id: i64) -> Result<Project, StoreError> {
        let row = sqlx::query(
            "SELECT id, name, guidelines, overlap, lease_seconds FROM projects WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref()
            .map(project_from_row)
            .transpose()?
            .ok_or_else(|| StoreError::NotFound(format!("project {id}")))
    }

    /// A project by name.
    pub async fn project_by_name(&self, name: &str) -> Result<Option<Project>, StoreError> {
        let row = sqlx::query(
            "SELECT id, name, guidelines, overlap, lease_seconds FROM projects WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(project_from_row).transpose()
    }

    /// Every project, oldest first.
    pub async fn projects(&self) -> Result<Vec<Project>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, guidelines, overlap, lease_seconds FROM projects ORDER BY id",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(project_from_row).collect()
    }

    /// Replaces the guidelines.
    pub async fn set_guidelines(
        &self,
        project_id: i64,
        guidelines: &str,
        actor_id: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut transaction = self.pool().begin().await?;
        let updated = sqlx::query("UPDATE projects SET guidelines = $1 WHERE id = $2")
            .bind(guidelines)
            .bind(project_id)
            .execute(&mut *transaction)
            .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("project {project_id}")));
        }
        append(
            &mut transaction,
            &AuditEntry {
                actor_id: Some(actor_id),
                action: "set_guidelines",
                project_id: Some(project_id),
                subject: format!("project:{project_id}"),
                detail: json!({"length": guidelines.len()}),
            },
            now_ms,
        )
        .await?;
        transaction.commit().await?;
        Ok(())
    }
}

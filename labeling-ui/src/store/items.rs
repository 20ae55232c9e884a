//! Importing items: each new item gets its candidates and k open slots in one transaction per
//! batch. An item whose external id the project already has is skipped, so re-importing a file
//! adds nothing.

use serde_json::{Value, json};

use super::audit::AuditEntry;
use super::column;
use crate::db::{Backend, Database};
use crate::error::StoreError;
use crate::import::ImportItem;

/// What an import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImportSummary {
    /// Items added.
    pub added: usize,
    /// Items the project already had (same id or same content).
    pub already_present: usize,
}

/// An item's stored content.
#[derive(Debug, Clone)]
pub struct StoredItem {
    /// Row id.
    pub id: i64,
    /// The import id.
    pub external_id: String,
    /// The prompt messages as JSON.
    pub prompt: Value,
    /// `(candidate id, content)` in import order.
    pub candidates: Vec<(i64, String)>,
}

impl Database {
    /// Adds `items` to the project (batched transactions of 500 items).
    pub async fn import_items(
        &self,
        project_id: i64,
        items: &[ImportItem],
        actor_id: Option<i64>,
        source: &str,
        now_ms: i64,
    ) -> Result<ImportSummary, StoreError> {
        let project = self.project(project_id).await?;
        let mut summary = ImportSummary::default();
        for batch in items.chunks(500) {
            let mut transaction = self.pool().begin().await?;
            for item in batch {
                let prompt = Value::Array(
                    item.prompt
                        .messages()
                        .iter()
                        .map(datasets::message::Message::to_json)
                        .collect(),
                );
                let inserted = sqlx::query(
                    "INSERT INTO items (project_id, external_id, prompt_json, created_ms) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (project_id, external_id) DO NOTHING \
                     RETURNING id",
                )
                .bind(project_id)
                .bind(&item.external_id)
                .bind(prompt.to_string())
                .bind(now_ms)
                .fetch_optional(&mut *transaction)
                .await?;
                let Some(row) = inserted else {
                    summary.already_present += 1;
                    continue;
                };
                let item_id: i64 = column(&row, "id")?;
                // One statement for the candidates and one for the slots (multi-row VALUES):
                // an import is a few round trips per item, not one per row.
                let placeholders = (0..item.responses.len())
                    .map(|row| {
                        let base = row * 6;
                        format!(
                            "(${}, ${}, ${}, ${}, ${}, ${})",
                            base + 1,
                            base + 2,
                            base + 3,
                            base + 4,
                            base + 5,
                            base + 6
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                let insert_candidates = format!(
                    "INSERT INTO candidates (item_id, position, external_id, content, model, round) \
                     VALUES {placeholders}"
                );
                let mut query = sqlx::query(&insert_candidates);
                for (position, response) in item.responses.iter().enumerate() {
                    query = query
                        .bind(item_id)
                        .bind(i64::try_from(position).unwrap_or(i64::MAX))
                        .bind(response.id.as_deref())
                        .bind(&response.content)
                        .bind(response.model.as_deref())
                        .bind(response.round);
                }
                query.execute(&mut *transaction).await?;
                let slot_rows = (0..project.overlap)
                    .map(|slot_no| format!("($1, $2, {slot_no}, 'open')"))
                    .collect::<Vec<_>>()
                    .join(", ");
                sqlx::query(&format!(
                    "INSERT INTO slots (project_id, item_id, slot_no, state) VALUES {slot_rows}"
                ))
                .bind(project_id)
                .bind(item_id)
                .execute(&mut *transaction)
                .await?;
                summary.added += 1;
            }
            transaction.commit().await?;
        }
        self.forget_project_counts(project_id);
        if self.backend() == Backend::Postgres && summary.added > 0 {
            // Fresh planner statistics: without them the claim query right after a big import
            // scans every slot (507 ms per claim at 60k slots, 0.37 ms after ANALYZE).
            sqlx::query("ANALYZE slots, items, candidates, item_annotators")
                .execute(self.pool())
                .await?;
        }
        self.audit(
            &AuditEntry {
                actor_id,
                action: "import",
                project_id: Some(project_id),
                subject: format!("project:{project_id}"),
                detail: json!({"source": source, "added": summary.added, "already_present": summary.already_present}),
            },
            now_ms,
        )
        .await?;
        Ok(summary)
    }

    /// An item with its candidates (ids in import order).
    pub async fn item(&self, item_id: i64) -> Result<StoredItem, StoreError> {
        let row = sqlx::query("SELECT id, external_id, prompt_json FROM items WHERE id = $1")
            .bind(item_id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("item {item_id}")))?;
        let prompt_json: String = column(&row, "prompt_json")?;
        let prompt = serde_json::from_str(&prompt_json)
            .map_err(|error| StoreError::Invalid(format!("item {item_id} prompt_json: {error}")))?;
        let candidates =
            sqlx::query("SELECT id, content FROM candidates WHERE item_id = $1 ORDER BY position")
                .bind(item_id)
                .fetch_all(self.pool())
                .await?
                .iter()
                .map(|row| Ok((column(row, "id")?, column(row, "content")?)))
                .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(StoredItem {
            id: item_id,
            external_id: column(&row, "external_id")?,
            prompt,
            candidates,
        })
    }
}

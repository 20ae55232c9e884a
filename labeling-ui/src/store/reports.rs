//! What researchers read: project counts, throughput per annotator, and the stored annotations
//! (in id order, a page at a time) for agreement statistics and export.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;

use super::column;
use crate::db::Database;
use crate::error::StoreError;
use crate::judgment::Judgment;

/// Counts for one project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct ProjectCounts {
    /// Items imported.
    pub items: i64,
    /// Slots (items × k).
    pub slots: i64,
    /// Slots with an annotation.
    pub submitted: i64,
    /// Slots leased right now.
    pub leased: i64,
    /// Annotations stored, including over-quota ones.
    pub annotations: i64,
    /// Annotations submitted after their lease expired.
    pub late: i64,
    /// Annotations beyond k (the slot had been taken by someone else).
    pub over_quota: i64,
    /// Skips.
    pub skips: i64,
}

/// One annotator's throughput in a project.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Throughput {
    /// Login name.
    pub username: String,
    /// Annotations submitted.
    pub submitted: i64,
    /// Items skipped.
    pub skipped: i64,
    /// Median time on task, seconds.
    pub median_seconds: f64,
    /// Submissions per hour between their first and last submission.
    pub per_hour: Option<f64>,
}

/// One stored annotation with what export and agreement need.
#[derive(Debug, Clone)]
pub struct StoredAnnotation {
    /// Row id (pages are keyed on it).
    pub id: i64,
    /// The item's row id.
    pub item_id: i64,
    /// The item's import id.
    pub item_external_id: String,
    /// The annotator's row id.
    pub annotator_id: i64,
    /// The annotator's login name.
    pub annotator: String,
    /// The judgment.
    pub judgment: Judgment,
    /// Submitted after the lease expired.
    pub late: bool,
    /// Beyond k.
    pub over_quota: bool,
}

impl Database {
    /// The project's counts.
    pub async fn project_counts(
        &self,
        project_id: i64,
        now_ms: i64,
    ) -> Result<ProjectCounts, StoreError> {
        let row = sqlx::query(
            "SELECT \
               (SELECT COUNT(*) FROM items WHERE project_id = $1) AS items, \
               (SELECT COUNT(*) FROM slots WHERE project_id = $1) AS slots, \
               (SELECT COUNT(*) FROM slots WHERE project_id = $1 AND state = 'submitted') AS submitted, \
               (SELECT COUNT(*) FROM slots WHERE project_id = $1 AND state = 'leased' AND lease_expires_ms > $2) AS leased, \
               (SELECT COUNT(*) FROM annotations WHERE project_id = $1) AS annotations, \
               (SELECT COUNT(*) FROM annotations WHERE project_id = $1 AND late = 1) AS late, \
               (SELECT COUNT(*) FROM annotations WHERE project_id = $1 AND over_quota = 1) AS over_quota, \
               (SELECT COUNT(*) FROM skips WHERE project_id = $1) AS skips",
        )
        .bind(project_id)
        .bind(now_ms)
        .fetch_one(self.pool())
        .await?;
        Ok(ProjectCounts {
            items: column(&row, "items")?,
            slots: column(&row, "slots")?,
            submitted: column(&row, "submitted")?,
            leased: column(&row, "leased")?,
            annotations: column(&row, "annotations")?,
            late: column(&row, "late")?,
            over_quota: column(&row, "over_quota")?,
            skips: column(&row, "skips")?,
        })
    }

    /// Throughput per annotator, busiest first.
    pub async fn throughput(&self, project_id: i64) -> Result<Vec<Throughput>, StoreError> {
        let rows = sqlx::query(
            "SELECT u.username, a.time_spent_ms, a.created_ms FROM annotations a \
             JOIN users u ON u.id = a.annotator_id WHERE a.project_id = $1 ORDER BY a.id",
        )
        .bind(project_id)
        .fetch_all(self.pool())
        .await?;
        let mut per_user: HashMap<String, Vec<(i64, i64)>> = HashMap::new();
        for row in &rows {
            per_user
                .entry(column(row, "username")?)
                .or_default()
                .push((column(row, "time_spent_ms")?, column(row, "created_ms")?));
        }
        let skip_rows = sqlx::query(
            "SELECT u.username, COUNT(*) AS n FROM skips s JOIN users u ON u.id = s.annotator_id \
             WHERE s.project_id = $1 GROUP BY u.username",
        )
        .bind(project_id)
        .fetch_all(self.pool())
        .await?;
        let mut skips: HashMap<String, i64> = HashMap::new();
        for row in &skip_rows {
            skips.insert(column(row, "username")?, column(row, "n")?);
        }
        let mut names: Vec<String> = per_user.keys().chain(skips.keys()).cloned().collect();
        names.sort();
        names.dedup();
        let mut result: Vec<Throughput> = names
            .into_iter()
            .map(|username| {
                let entries = per_user.get(&username).cloned().unwrap_or_default();
                let mut times: Vec<i64> = entries.iter().map(|(spent, _)| *spent).collect();
                times.sort_unstable();
                let median_seconds = if times.is_empty() {
                    0.0
                } else if times.len() % 2 == 1 {
                    times[times.len() / 2] as f64 / 1000.0
                } else {
                    (times[times.len() / 2 - 1] + times[times.len() / 2]) as f64 / 2000.0
                };
                let first = entries.iter().map(|(_, at)| *at).min();
                let last = entries.iter().map(|(_, at)| *at).max();
                let per_hour = match (first, last) {
                    (Some(first), Some(last)) if last > first && entries.len() > 1 => {
                        Some((entries.len() - 1) as f64 * 3_600_000.0 / (last - first) as f64)
                    }
                    _ => None,
                };
                Throughput {
                    skipped: skips.get(&username).copied().unwrap_or(0),
                    submitted: i64::try_from(entries.len()).unwrap_or(i64::MAX),
                    username,
                    median_seconds,
                    per_hour,
                }
            })
            .collect();
        result.sort_by(|a, b| {
            b.submitted
                .cmp(&a.submitted)
                .then(a.username.cmp(&b.username))
        });
        Ok(result)
    }

    /// Up to `limit` annotations of the project with ids above `after_id`, in id order.
    pub async fn annotations_page(
        &self,
        project_id: i64,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<StoredAnnotation>, StoreError> {
        let rows = sqlx::query(
            "SELECT a.id, a.item_id, i.external_id, a.annotator_id, u.username, a.judgment_json, \
             a.late, a.over_quota FROM annotations a \
             JOIN items i ON i.id = a.item_id JOIN users u ON u.id = a.annotator_id \
             WHERE a.project_id = $1 AND a.id > $2 ORDER BY a.id LIMIT $3",
        )
        .bind(project_id)
        .bind(after_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let id: i64 = column(row, "id")?;
                let text: String = column(row, "judgment_json")?;
                let judgment: Judgment = serde_json::from_str(&text).map_err(|error| {
                    StoreError::Invalid(format!("annotation {id} judgment_json: {error}"))
                })?;
                Ok(StoredAnnotation {
                    id,
                    item_id: column(row, "item_id")?,
                    item_external_id: column(row, "external_id")?,
                    annotator_id: column(row, "annotator_id")?,
                    annotator: column(row, "username")?,
                    judgment,
                    late: column::<i64>(row, "late")? != 0,
                    over_quota: column::<i64>(row, "over_quota")? != 0,
                })
            })
            .collect()
    }

    /// Every annotation of the project (for the agreement statistics).
    pub async fn all_annotations(
        &self,
        project_id: i64,
    ) -> Result<Vec<StoredAnnotation>, StoreError> {
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let page = self.annotations_page(project_id, after, 5000).await?;
            let Some(last) = page.last() else { break };
            after = last.id;
            all.extend(page);
        }
        Ok(all)
    }

    /// The audit log's newest entries (admin page).
    pub async fn recent_audit(
        &self,
        limit: i64,
    ) -> Result<Vec<(i64, String, String, Value)>, StoreError> {
        let rows = sqlx::query(
            "SELECT at_ms, action, subject, detail_json FROM audit_log ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let detail: String = column(row, "detail_json")?;
                Ok((
                    column(row, "at_ms")?,
                    column(row, "action")?,
                    column(row, "subject")?,
                    serde_json::from_str(&detail).unwrap_or(Value::String(detail)),
                ))
            })
            .collect()
    }
}

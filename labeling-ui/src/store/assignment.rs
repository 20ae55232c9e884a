//! Assignment: claiming the next item, keeping the lease alive, drafts, skipping and submitting.
//!
//! The design follows shared/research/labeling.md §4: a project wants k annotations per item, so
//! each item has k slot rows. A claim is one short transaction that picks the lowest claimable
//! slot with `FOR UPDATE SKIP LOCKED` (concurrent claimers move past each other instead of
//! queueing) and records a lease with an expiry in the row — no lock outlives the transaction, so
//! nothing is held while a person reads. Expired leases are claimable again (lazy expiry, no
//! reaper). Constraints, not code paths, keep the invariants: one live lease per annotator and
//! project (a second tab gets the same lease), an annotator is given an item at most once
//! (`item_annotators`), one annotation per annotator and item, one per slot. A lost race surfaces
//! as a unique violation and the claim simply runs again.
//!
//! Submissions are idempotent on a client-generated `submission_id`: the same id and body return
//! the stored result, the same id with another body is a conflict. A submission after the lease
//! expired is kept and flagged `late`; if someone else has taken the slot meanwhile it is kept as
//! an extra annotation flagged `over_quota` — never dropped.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::AnyConnection;

use super::audit::{AuditEntry, append};
use super::{column, random_hex};
use crate::db::Database;
use crate::error::StoreError;
use crate::judgment::Judgment;

/// A live lease on one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The slot.
    pub slot_id: i64,
    /// The item.
    pub item_id: i64,
    /// Proves the lease in heartbeats, drafts, skips and submissions.
    pub lease_token: String,
    /// When the lease ends without a heartbeat.
    pub lease_expires_ms: i64,
    /// Candidate ids in the order this annotator sees them.
    pub display_order: Vec<i64>,
}

/// The answer to "give me the next item".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// A slot, new or the annotator's live one.
    Assigned(Lease),
    /// Nothing this annotator may take remains.
    Done,
    /// Work remains but other transactions hold it right now; retry shortly.
    Wait,
}

/// A submission from the annotation page.
#[derive(Debug, Clone)]
pub struct Submission {
    /// The lease the page holds.
    pub lease_token: String,
    /// Client-generated, stable across retries.
    pub submission_id: String,
    /// The ranking, strengths, flags and edit.
    pub judgment: Judgment,
    /// Time the page was visible, as the page measured it.
    pub time_spent_ms: i64,
}

/// What a submission became.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Submitted {
    /// The annotation's row id.
    pub annotation_id: i64,
    /// Submitted after the lease expired.
    pub late: bool,
    /// Someone else had the slot by then: kept as an extra annotation beyond k.
    pub over_quota: bool,
}

/// Counts for the progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Progress {
    /// Annotations this annotator has submitted in the project.
    pub submitted_by_me: i64,
    /// Slots submitted in the project.
    pub project_submitted: i64,
    /// Slots in the project (items × k).
    pub project_required: i64,
}

const CLAIM_ATTEMPTS: usize = 8;
const MAX_DRAFT_BYTES: usize = 256 * 1024;

impl Database {
    /// The annotator's live lease in the project, or a new one; see the module header.
    pub async fn claim(
        &self,
        project_id: i64,
        annotator_id: i64,
        now_ms: i64,
    ) -> Result<Claim, StoreError> {
        let project = self.project(project_id).await?;
        let lease_ms = project.lease_seconds * 1000;
        for _ in 0..CLAIM_ATTEMPTS {
            match self
                .try_claim(project_id, annotator_id, lease_ms, now_ms)
                .await
            {
                Err(error) if error.is_unique_violation() => {}
                other => return other,
            }
        }
        Ok(Claim::Wait)
    }

    async fn try_claim(
        &self,
        project_id: i64,
        annotator_id: i64,
        lease_ms: i64,
        now_ms: i64,
    ) -> Result<Claim, StoreError> {
        let mut transaction = self.pool().begin().await?;
        if let Some(lease) = live_lease(&mut transaction, project_id, annotator_id, now_ms).await? {
            transaction.commit().await?;
            return Ok(Claim::Assigned(lease));
        }
        // The annotator's own expired leases go back to the pool (they keep their
        // item_annotators row, so the item is not offered to them again).
        sqlx::query(
            "UPDATE slots SET state = 'open', annotator_id = NULL, lease_token = NULL, \
             leased_ms = NULL, lease_expires_ms = NULL \
             WHERE project_id = $1 AND annotator_id = $2 AND state = 'leased' \
             AND lease_expires_ms <= $3",
        )
        .bind(project_id)
        .bind(annotator_id)
        .bind(now_ms)
        .execute(&mut *transaction)
        .await?;
        let claimable = "s.project_id = $1 \
             AND (s.state = 'open' OR (s.state = 'leased' AND s.lease_expires_ms <= $3)) \
             AND NOT EXISTS (SELECT 1 FROM item_annotators a \
                             WHERE a.item_id = s.item_id AND a.annotator_id = $2)";
        let picked = sqlx::query(&format!(
            "SELECT s.id, s.item_id FROM slots s WHERE {claimable} ORDER BY s.id LIMIT 1 {}",
            self.skip_locked()
        ))
        .bind(project_id)
        .bind(annotator_id)
        .bind(now_ms)
        .fetch_optional(&mut *transaction)
        .await?;
        let Some(row) = picked else {
            // Nothing claimable now: is everything done for this annotator, or held by others —
            // a live lease, which comes back if it expires or is skipped, or a concurrent
            // transaction? Then tell the client to come back rather than "no more tasks"
            // (README: "wait" = work exists but others hold it).
            let held = sqlx::query(
                "SELECT COUNT(*) AS n FROM slots s WHERE s.project_id = $1 \
                 AND s.state <> 'submitted' \
                 AND NOT EXISTS (SELECT 1 FROM item_annotators a \
                                 WHERE a.item_id = s.item_id AND a.annotator_id = $2)",
            )
            .bind(project_id)
            .bind(annotator_id)
            .fetch_one(&mut *transaction)
            .await?;
            if column::<i64>(&held, "n")? > 0 {
                transaction.commit().await?;
                return Ok(Claim::Wait);
            }
            // Another tab of this annotator may have committed a lease since this transaction's
            // first look (Postgres reads each statement's own snapshot): that lease is the answer.
            let lease = live_lease(&mut transaction, project_id, annotator_id, now_ms).await?;
            transaction.commit().await?;
            return Ok(lease.map_or(Claim::Done, Claim::Assigned));
        };
        let slot_id: i64 = column(&row, "id")?;
        let item_id: i64 = column(&row, "item_id")?;
        let mut display_order = candidate_ids(&mut transaction, item_id).await?;
        shuffle(&mut display_order)?;
        sqlx::query(
            "INSERT INTO item_annotators (item_id, annotator_id, first_ms, display_order) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(item_id)
        .bind(annotator_id)
        .bind(now_ms)
        .bind(json!(display_order).to_string())
        .execute(&mut *transaction)
        .await?;
        let lease_token = random_hex(16)?;
        let lease_expires_ms = now_ms + lease_ms;
        sqlx::query(
            "UPDATE slots SET state = 'leased', annotator_id = $1, lease_token = $2, \
             leased_ms = $3, lease_expires_ms = $4 WHERE id = $5",
        )
        .bind(annotator_id)
        .bind(&lease_token)
        .bind(now_ms)
        .bind(lease_expires_ms)
        .bind(slot_id)
        .execute(&mut *transaction)
        .await?;
        append(
            &mut transaction,
            &AuditEntry {
                actor_id: Some(annotator_id),
                action: "claim",
                project_id: Some(project_id),
                subject: format!("slot:{slot_id}"),
                detail: json!({"item_id": item_id, "lease_expires_ms": lease_expires_ms}),
            },
            now_ms,
        )
        .await?;
        transaction.commit().await?;
        Ok(Claim::Assigned(Lease {
            slot_id,
            item_id,
            lease_token,
            lease_expires_ms,
            display_order,
        }))
    }

    /// Extends the annotator's lease; a lease that was lost (taken by someone else after it
    /// expired, or never theirs) is a conflict.
    pub async fn heartbeat(
        &self,
        slot_id: i64,
        annotator_id: i64,
        lease_token: &str,
        now_ms: i64,
    ) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "UPDATE slots SET lease_expires_ms = $1 + \
               (SELECT p.lease_seconds * 1000 FROM projects p WHERE p.id = slots.project_id) \
             WHERE id = $2 AND annotator_id = $3 AND lease_token = $4 AND state = 'leased' \
             RETURNING lease_expires_ms",
        )
        .bind(now_ms)
        .bind(slot_id)
        .bind(annotator_id)
        .bind(lease_token)
        .fetch_optional(self.pool())
        .await?;
        match row {
            Some(row) => column(&row, "lease_expires_ms"),
            None => Err(lease_lost(slot_id)),
        }
    }

    /// Saves the page's draft for the leased item (any JSON up to 256 KiB).
    pub async fn save_draft(
        &self,
        slot_id: i64,
        annotator_id: i64,
        lease_token: &str,
        draft: &Value,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let text = draft.to_string();
        if text.len() > MAX_DRAFT_BYTES {
            return Err(StoreError::Invalid(format!(
                "draft: {} bytes, the limit is {MAX_DRAFT_BYTES}",
                text.len()
            )));
        }
        let mut transaction = self.pool().begin().await?;
        let item = sqlx::query(
            "SELECT item_id FROM slots WHERE id = $1 AND annotator_id = $2 AND lease_token = $3 \
             AND state = 'leased'",
        )
        .bind(slot_id)
        .bind(annotator_id)
        .bind(lease_token)
        .fetch_optional(&mut *transaction)
        .await?
        .ok_or_else(|| lease_lost(slot_id))?;
        let item_id: i64 = column(&item, "item_id")?;
        sqlx::query(
            "INSERT INTO drafts (item_id, annotator_id, draft_json, updated_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (item_id, annotator_id) DO UPDATE SET draft_json = $3, updated_ms = $4",
        )
        .bind(item_id)
        .bind(annotator_id)
        .bind(text)
        .bind(now_ms)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(())
    }

    /// The annotator's saved draft for an item, if any.
    pub async fn draft(
        &self,
        item_id: i64,
        annotator_id: i64,
    ) -> Result<Option<Value>, StoreError> {
        let row =
            sqlx::query("SELECT draft_json FROM drafts WHERE item_id = $1 AND annotator_id = $2")
                .bind(item_id)
                .bind(annotator_id)
                .fetch_optional(self.pool())
                .await?;
        row.map(|row| {
            let text: String = column(&row, "draft_json")?;
            serde_json::from_str(&text)
                .map_err(|error| StoreError::Invalid(format!("stored draft: {error}")))
        })
        .transpose()
    }

    /// Gives the leased item back with a reason; it returns to the pool for others (never to
    /// this annotator).
    pub async fn skip(
        &self,
        slot_id: i64,
        annotator_id: i64,
        lease_token: &str,
        reason: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let reason = reason.trim();
        if reason.is_empty() || reason.chars().count() > 1000 {
            return Err(StoreError::Invalid("reason: 1 to 1000 characters".into()));
        }
        let mut transaction = self.pool().begin().await?;
        let row = sqlx::query(&format!(
            "SELECT project_id, item_id FROM slots WHERE id = $1 AND annotator_id = $2 \
             AND lease_token = $3 AND state = 'leased' {}",
            self.for_update()
        ))
        .bind(slot_id)
        .bind(annotator_id)
        .bind(lease_token)
        .fetch_optional(&mut *transaction)
        .await?
        .ok_or_else(|| lease_lost(slot_id))?;
        let project_id: i64 = column(&row, "project_id")?;
        let item_id: i64 = column(&row, "item_id")?;
        sqlx::query(
            "UPDATE slots SET state = 'open', annotator_id = NULL, lease_token = NULL, \
             leased_ms = NULL, lease_expires_ms = NULL WHERE id = $1",
        )
        .bind(slot_id)
        .execute(&mut *transaction)
        .await?;
        sqlx::query(
            "INSERT INTO skips (project_id, item_id, annotator_id, reason, created_ms) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(project_id)
        .bind(item_id)
        .bind(annotator_id)
        .bind(reason)
        .bind(now_ms)
        .execute(&mut *transaction)
        .await?;
        sqlx::query("DELETE FROM drafts WHERE item_id = $1 AND annotator_id = $2")
            .bind(item_id)
            .bind(annotator_id)
            .execute(&mut *transaction)
            .await?;
        append(
            &mut transaction,
            &AuditEntry {
                actor_id: Some(annotator_id),
                action: "skip",
                project_id: Some(project_id),
                subject: format!("slot:{slot_id}"),
                detail: json!({"item_id": item_id, "reason": reason}),
            },
            now_ms,
        )
        .await?;
        transaction.commit().await?;
        Ok(())
    }

    /// Stores a judgment; see the module header for retries, late and over-quota submissions.
    pub async fn submit(
        &self,
        slot_id: i64,
        annotator_id: i64,
        submission: &Submission,
        now_ms: i64,
    ) -> Result<Submitted, StoreError> {
        let id = submission.submission_id.trim();
        if id.is_empty() || id.len() > 100 {
            return Err(StoreError::Invalid(
                "submission_id: 1 to 100 characters".into(),
            ));
        }
        if !(0..=7 * 24 * 3_600_000).contains(&submission.time_spent_ms) {
            return Err(StoreError::Invalid(format!(
                "time_spent_ms: 0 to one week, got {}",
                submission.time_spent_ms
            )));
        }
        // Two racing copies of one submission: the loser hits the unique submission_id and, on
        // the second pass, finds the winner's row.
        match self
            .try_submit(slot_id, annotator_id, submission, now_ms)
            .await
        {
            Err(error) if error.is_unique_violation() => {
                self.try_submit(slot_id, annotator_id, submission, now_ms)
                    .await
            }
            other => other,
        }
    }

    #[expect(
        clippy::too_many_lines,
        reason = "one transaction, read top to bottom: replay, ownership, validation, write"
    )]
    async fn try_submit(
        &self,
        slot_id: i64,
        annotator_id: i64,
        submission: &Submission,
        now_ms: i64,
    ) -> Result<Submitted, StoreError> {
        let judgment_json = serde_json::to_string(&submission.judgment)
            .map_err(|error| StoreError::Invalid(format!("judgment: {error}")))?;
        let request_hash = hex::encode(Sha256::digest(
            format!("{slot_id}\n{judgment_json}").as_bytes(),
        ));
        let mut transaction = self.pool().begin().await?;
        // The slot's row lock comes first: racing copies of one submission queue here, and each
        // later copy then finds the first one's row below and answers as it did.
        let slot = sqlx::query(&format!(
            "SELECT project_id, item_id, state, annotator_id, lease_token, lease_expires_ms \
             FROM slots WHERE id = $1 {}",
            self.for_update()
        ))
        .bind(slot_id)
        .fetch_optional(&mut *transaction)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("slot {slot_id}")))?;
        if let Some(existing) = sqlx::query(
            "SELECT id, annotator_id, request_hash, late, over_quota FROM annotations \
             WHERE submission_id = $1",
        )
        .bind(&submission.submission_id)
        .fetch_optional(&mut *transaction)
        .await?
        {
            transaction.commit().await?;
            if column::<i64>(&existing, "annotator_id")? != annotator_id {
                return Err(StoreError::Conflict(
                    "submission_id: already used; generate a new one".into(),
                ));
            }
            if column::<String>(&existing, "request_hash")? != request_hash {
                return Err(StoreError::Conflict(
                    "submission_id: already used for a different answer".into(),
                ));
            }
            return Ok(Submitted {
                annotation_id: column(&existing, "id")?,
                late: column::<i64>(&existing, "late")? != 0,
                over_quota: column::<i64>(&existing, "over_quota")? != 0,
            });
        }
        let project_id: i64 = column(&slot, "project_id")?;
        let item_id: i64 = column(&slot, "item_id")?;
        let state: String = column(&slot, "state")?;
        let holder: Option<i64> = column(&slot, "annotator_id")?;
        let token: Option<String> = column(&slot, "lease_token")?;
        let expires: Option<i64> = column(&slot, "lease_expires_ms")?;
        // Only an item that was given to this annotator can be submitted (no writing into
        // other people's work by guessing slot ids).
        let given = sqlx::query(
            "SELECT display_order FROM item_annotators WHERE item_id = $1 AND annotator_id = $2",
        )
        .bind(item_id)
        .bind(annotator_id)
        .fetch_optional(&mut *transaction)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("slot {slot_id}")))?;
        let display_order: String = column(&given, "display_order")?;
        if let Some(previous) = sqlx::query(
            "SELECT submission_id FROM annotations WHERE item_id = $1 AND annotator_id = $2",
        )
        .bind(item_id)
        .bind(annotator_id)
        .fetch_optional(&mut *transaction)
        .await?
        {
            let previous: String = column(&previous, "submission_id")?;
            return Err(StoreError::Conflict(format!(
                "this item is already submitted (submission_id {previous})"
            )));
        }
        let candidates = candidate_ids(&mut transaction, item_id).await?;
        submission
            .judgment
            .validate(&candidates)
            .map_err(StoreError::Invalid)?;
        let holds_lease = holder == Some(annotator_id)
            && state == "leased"
            && token.as_deref() == Some(submission.lease_token.as_str());
        if !holds_lease
            && let Some(own) = sqlx::query(
                "SELECT id FROM slots WHERE item_id = $1 AND annotator_id = $2 AND state = 'leased'",
            )
            .bind(item_id)
            .bind(annotator_id)
            .fetch_optional(&mut *transaction)
            .await?
        {
            // The annotator holds another slot of this item: the answer belongs there.
            let own: i64 = column(&own, "id")?;
            return Err(StoreError::Conflict(format!(
                "slot {slot_id} is not your lease; submit to your slot {own}"
            )));
        }
        let (late, over_quota, annotation_slot) = if holds_lease {
            (
                expires.is_some_and(|expires| now_ms > expires),
                false,
                Some(slot_id),
            )
        } else if state == "open" {
            // The lease expired and went back to the pool, but nobody took it: the slot is
            // still free, so this (late) answer fills it.
            (true, false, Some(slot_id))
        } else {
            (true, true, None)
        };
        if annotation_slot.is_some() {
            sqlx::query(
                "UPDATE slots SET state = 'submitted', annotator_id = $1, lease_token = NULL, \
                 lease_expires_ms = NULL WHERE id = $2",
            )
            .bind(annotator_id)
            .bind(slot_id)
            .execute(&mut *transaction)
            .await?;
            sqlx::query("UPDATE items SET submitted_count = submitted_count + 1 WHERE id = $1")
                .bind(item_id)
                .execute(&mut *transaction)
                .await?;
        }
        let inserted = sqlx::query(
            "INSERT INTO annotations (submission_id, request_hash, project_id, item_id, slot_id, \
             annotator_id, judgment_json, display_order, time_spent_ms, late, over_quota, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
        )
        .bind(&submission.submission_id)
        .bind(&request_hash)
        .bind(project_id)
        .bind(item_id)
        .bind(annotation_slot)
        .bind(annotator_id)
        .bind(&judgment_json)
        .bind(&display_order)
        .bind(submission.time_spent_ms)
        .bind(i64::from(late))
        .bind(i64::from(over_quota))
        .bind(now_ms)
        .fetch_one(&mut *transaction)
        .await?;
        let annotation_id: i64 = column(&inserted, "id")?;
        sqlx::query("DELETE FROM drafts WHERE item_id = $1 AND annotator_id = $2")
            .bind(item_id)
            .bind(annotator_id)
            .execute(&mut *transaction)
            .await?;
        append(
            &mut transaction,
            &AuditEntry {
                actor_id: Some(annotator_id),
                action: "submit",
                project_id: Some(project_id),
                subject: format!("slot:{slot_id}"),
                detail: json!({"annotation_id": annotation_id, "item_id": item_id,
                               "late": late, "over_quota": over_quota}),
            },
            now_ms,
        )
        .await?;
        transaction.commit().await?;
        if annotation_slot.is_some() {
            self.count_submitted_slot(project_id);
        }
        Ok(Submitted {
            annotation_id,
            late,
            over_quota,
        })
    }

    /// The progress line's counts; the project-wide ones may be up to a second old.
    pub async fn progress(
        &self,
        project_id: i64,
        annotator_id: i64,
        now_ms: i64,
    ) -> Result<Progress, StoreError> {
        let mine = sqlx::query(
            "SELECT COUNT(*) AS n FROM annotations WHERE project_id = $1 AND annotator_id = $2",
        )
        .bind(project_id)
        .bind(annotator_id)
        .fetch_one(self.pool())
        .await?;
        let (project_submitted, project_required) = if let Some(counts) =
            self.cached_project_counts(project_id, now_ms)
        {
            counts
        } else {
            let row = sqlx::query(
                    "SELECT \
                       (SELECT COUNT(*) FROM slots WHERE project_id = $1 AND state = 'submitted') AS submitted, \
                       (SELECT COUNT(*) FROM slots WHERE project_id = $1) AS required",
                )
                .bind(project_id)
                .fetch_one(self.pool())
                .await?;
            let counts = (column(&row, "submitted")?, column(&row, "required")?);
            self.remember_project_counts(project_id, now_ms, counts);
            counts
        };
        Ok(Progress {
            submitted_by_me: column(&mine, "n")?,
            project_submitted,
            project_required,
        })
    }
}

async fn live_lease(
    connection: &mut AnyConnection,
    project_id: i64,
    annotator_id: i64,
    now_ms: i64,
) -> Result<Option<Lease>, StoreError> {
    let row = sqlx::query(
        "SELECT s.id, s.item_id, s.lease_token, s.lease_expires_ms, a.display_order \
         FROM slots s JOIN item_annotators a ON a.item_id = s.item_id AND a.annotator_id = s.annotator_id \
         WHERE s.project_id = $1 AND s.annotator_id = $2 AND s.state = 'leased' \
         AND s.lease_expires_ms > $3 LIMIT 1",
    )
    .bind(project_id)
    .bind(annotator_id)
    .bind(now_ms)
    .fetch_optional(&mut *connection)
    .await?;
    row.map(|row| {
        let order: String = column(&row, "display_order")?;
        Ok(Lease {
            slot_id: column(&row, "id")?,
            item_id: column(&row, "item_id")?,
            lease_token: column(&row, "lease_token")?,
            lease_expires_ms: column(&row, "lease_expires_ms")?,
            display_order: serde_json::from_str(&order)
                .map_err(|error| StoreError::Invalid(format!("stored display_order: {error}")))?,
        })
    })
    .transpose()
}

async fn candidate_ids(
    connection: &mut AnyConnection,
    item_id: i64,
) -> Result<Vec<i64>, StoreError> {
    sqlx::query("SELECT id FROM candidates WHERE item_id = $1 ORDER BY position")
        .bind(item_id)
        .fetch_all(&mut *connection)
        .await?
        .iter()
        .map(|row| column(row, "id"))
        .collect()
}

/// Fisher–Yates with the OS random source: each annotator sees the candidates in their own
/// random order, so position bias averages out (and is measurable from the stored order).
fn shuffle(ids: &mut [i64]) -> Result<(), StoreError> {
    for index in (1..ids.len()).rev() {
        let mut bytes = [0_u8; 8];
        getrandom::fill(&mut bytes)
            .map_err(|error| StoreError::Unavailable(format!("random source: {error}")))?;
        let pick = (u64::from_le_bytes(bytes) % (index as u64 + 1)) as usize;
        ids.swap(index, pick);
    }
    Ok(())
}

fn lease_lost(slot_id: i64) -> StoreError {
    StoreError::Conflict(format!(
        "slot {slot_id}: the lease is no longer yours (it expired and was taken, or was never \
         yours); your work is kept on the page and can still be submitted"
    ))
}

impl Database {
    /// The project a slot belongs to.
    pub async fn slot_project(&self, slot_id: i64) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT project_id FROM slots WHERE id = $1")
            .bind(slot_id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("slot {slot_id}")))?;
        column(&row, "project_id")
    }
}

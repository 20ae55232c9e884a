//! The annotation page's JSON API (contract in README.md). Every handler scopes its queries by
//! the signed-in annotator: a slot, draft or annotation of someone else's answers 404 or 409.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::ApiUser;
use super::{AppError, AppState};
use crate::judgment::{Edit, Judgment, PairStrength};
use crate::markdown::render_markdown;
use crate::store::assignment::{Claim, Submission};

/// `POST /api/projects/{id}/claim`.
pub async fn claim(
    State(state): State<AppState>,
    ApiUser(session): ApiUser,
    Path(project_id): Path<i64>,
) -> Result<Json<Value>, AppError> {
    let user_id = session.user.id;
    let claim = state
        .db
        .claim(project_id, user_id, state.clock.now_ms())
        .await?;
    let progress = state
        .db
        .progress(project_id, user_id, state.clock.now_ms())
        .await?;
    let lease = match claim {
        Claim::Done => return Ok(Json(json!({"status": "done", "progress": progress}))),
        Claim::Wait => return Ok(Json(json!({"status": "wait", "progress": progress}))),
        Claim::Assigned(lease) => lease,
    };
    let item = state.db.item(lease.item_id).await?;
    let project = state.db.project(project_id).await?;
    let draft = state.db.draft(lease.item_id, user_id).await?;
    let prompt: Vec<Value> = item
        .prompt
        .as_array()
        .map(|messages| {
            messages
                .iter()
                .map(|message| {
                    let content = message
                        .get("content")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    json!({
                        "role": message.get("role").cloned().unwrap_or(Value::Null),
                        "content": content,
                        "html": render_markdown(content),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let candidates: Vec<Value> = lease
        .display_order
        .iter()
        .filter_map(|id| {
            item.candidates
                .iter()
                .find(|(candidate, _)| candidate == id)
                .map(|(candidate, content)| {
                    json!({"id": candidate, "content": content, "html": render_markdown(content)})
                })
        })
        .collect();
    Ok(Json(json!({
        "status": "assigned",
        "task": {
            "slot_id": lease.slot_id,
            "lease_token": lease.lease_token,
            "lease_expires_ms": lease.lease_expires_ms,
            "item": {"id": item.external_id, "prompt": prompt},
            "candidates": candidates,
            "guidelines_html": render_markdown(&project.guidelines),
            "draft": draft,
        },
        "progress": progress,
    })))
}

/// `GET /api/projects/{id}/progress`.
pub async fn progress(
    State(state): State<AppState>,
    ApiUser(session): ApiUser,
    Path(project_id): Path<i64>,
) -> Result<Json<Value>, AppError> {
    state.db.project(project_id).await?;
    let progress = state
        .db
        .progress(project_id, session.user.id, state.clock.now_ms())
        .await?;
    Ok(Json(json!(progress)))
}

/// A body carrying only the lease token.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseBody {
    lease_token: String,
}

/// `POST /api/slots/{id}/heartbeat`.
pub async fn heartbeat(
    State(state): State<AppState>,
    ApiUser(session): ApiUser,
    Path(slot_id): Path<i64>,
    body: Result<Json<LeaseBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, AppError> {
    let Json(body) = body.map_err(|rejection| json_error(&rejection))?;
    // A slot that does not exist is 404 (README), not a lost lease.
    state.db.slot_project(slot_id).await?;
    let expires = state
        .db
        .heartbeat(
            slot_id,
            session.user.id,
            &body.lease_token,
            state.clock.now_ms(),
        )
        .await?;
    Ok(Json(json!({"lease_expires_ms": expires})))
}

/// `PUT /api/slots/{id}/draft` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DraftBody {
    lease_token: String,
    draft: Value,
}

/// `PUT /api/slots/{id}/draft`.
pub async fn save_draft(
    State(state): State<AppState>,
    ApiUser(session): ApiUser,
    Path(slot_id): Path<i64>,
    body: Result<Json<DraftBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, AppError> {
    let Json(body) = body.map_err(|rejection| json_error(&rejection))?;
    state.db.slot_project(slot_id).await?;
    state
        .db
        .save_draft(
            slot_id,
            session.user.id,
            &body.lease_token,
            &body.draft,
            state.clock.now_ms(),
        )
        .await?;
    Ok(Json(json!({"saved": true})))
}

/// `POST /api/slots/{id}/submit` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitBody {
    lease_token: String,
    submission_id: String,
    #[serde(default)]
    ranking: Vec<i64>,
    #[serde(default)]
    strengths: Vec<PairStrength>,
    #[serde(default)]
    all_bad: bool,
    #[serde(default)]
    not_rankable: bool,
    #[serde(default)]
    edited: Option<Edit>,
    #[serde(default)]
    time_spent_ms: i64,
}

/// `POST /api/slots/{id}/submit`.
pub async fn submit(
    State(state): State<AppState>,
    ApiUser(session): ApiUser,
    Path(slot_id): Path<i64>,
    body: Result<Json<SubmitBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, AppError> {
    let Json(body) = body.map_err(|rejection| json_error(&rejection))?;
    let submission = Submission {
        lease_token: body.lease_token,
        submission_id: body.submission_id,
        judgment: Judgment {
            ranking: body.ranking,
            strengths: body.strengths,
            all_bad: body.all_bad,
            not_rankable: body.not_rankable,
            edited: body.edited,
        },
        time_spent_ms: body.time_spent_ms,
    };
    let submitted = state
        .db
        .submit(slot_id, session.user.id, &submission, state.clock.now_ms())
        .await?;
    let project_id = state.db.slot_project(slot_id).await?;
    let progress = state
        .db
        .progress(project_id, session.user.id, state.clock.now_ms())
        .await?;
    Ok(Json(json!({
        "annotation_id": submitted.annotation_id,
        "late": submitted.late,
        "over_quota": submitted.over_quota,
        "progress": progress,
    })))
}

/// `POST /api/slots/{id}/skip` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkipBody {
    lease_token: String,
    reason: String,
}

/// `POST /api/slots/{id}/skip`.
pub async fn skip(
    State(state): State<AppState>,
    ApiUser(session): ApiUser,
    Path(slot_id): Path<i64>,
    body: Result<Json<SkipBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, AppError> {
    let Json(body) = body.map_err(|rejection| json_error(&rejection))?;
    let project_id = state.db.slot_project(slot_id).await?;
    state
        .db
        .skip(
            slot_id,
            session.user.id,
            &body.lease_token,
            &body.reason,
            state.clock.now_ms(),
        )
        .await?;
    let progress = state
        .db
        .progress(project_id, session.user.id, state.clock.now_ms())
        .await?;
    Ok(Json(json!({"skipped": true, "progress": progress})))
}

/// A body that is not the expected JSON: 400 naming the problem (413 when too large).
fn json_error(rejection: &axum::extract::rejection::JsonRejection) -> AppError {
    let status = rejection.status();
    let status = if status == StatusCode::PAYLOAD_TOO_LARGE {
        status
    } else {
        StatusCode::BAD_REQUEST
    };
    AppError::new(status, rejection.body_text())
}

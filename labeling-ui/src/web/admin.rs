//! Researcher (admin) pages: projects and users, a project's progress, throughput per annotator,
//! agreement and consensus, import by upload, guidelines, and the export download.

use std::collections::BTreeMap;

use axum::extract::{Form, Multipart, Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use datasets::records::Strength;
use maud::html;
use serde::Deserialize;

use super::auth::Admin;
use super::pages::layout;
use super::{AppError, AppState};
use crate::agreement::{RankedJudgment, agreement_report, consensus_ranking};
use crate::export::ExportFilter;
use crate::import::parse_file;
use crate::judgment::Judgment;
use crate::project_export::export_project;
use crate::store::projects::NewProject;
use crate::store::users::{Role, hash_password, validate_password};

/// `GET /admin`.
pub async fn overview(
    State(state): State<AppState>,
    Admin(admin): Admin,
) -> Result<Html<String>, AppError> {
    let now = state.clock.now_ms();
    let mut projects = Vec::new();
    for project in state.db.projects().await? {
        let counts = state.db.project_counts(project.id, now).await?;
        projects.push((project, counts));
    }
    let users = state.db.users().await?;
    let audit = state.db.recent_audit(20).await?;
    let csrf = admin.0.csrf_token.clone();
    Ok(layout(
        "Admin",
        Some(&admin.0),
        None,
        html! {
            h1 { "Projects" }
            table #admin-projects {
                thead { tr { th { "Project" } th { "Items" } th { "k" } th { "Submitted" } th { "Leased now" } th { "Skips" } } }
                tbody {
                    @for (project, counts) in &projects {
                        tr {
                            td { a href=(format!("/admin/projects/{}", project.id)) { (project.name) } }
                            td { (counts.items) } td { (project.overlap) }
                            td { (counts.submitted) " / " (counts.slots) } td { (counts.leased) } td { (counts.skips) }
                        }
                    }
                }
            }
            h2 { "New project" }
            form method="post" action="/admin/projects" #create-project {
                input type="hidden" name="csrf" value=(csrf);
                label { "Name " input type="text" name="name" required; }
                label { "Annotations per item (k) " input type="number" name="overlap" value="3" min="1" max="50"; }
                label { "Lease (seconds) " input type="number" name="lease_seconds" value="900" min="10" max="86400"; }
                label { "Guidelines (markdown) " textarea name="guidelines" rows="4" {} }
                button type="submit" { "Create" }
            }
            h2 { "Users" }
            table #users {
                thead { tr { th { "Username" } th { "Role" } } }
                tbody { @for user in &users { tr { td { (user.username) } td { (user.role.as_str()) } } } }
            }
            form method="post" action="/admin/users" #create-user {
                input type="hidden" name="csrf" value=(csrf);
                label { "Username " input type="text" name="username" required; }
                label { "Password " input type="password" name="password" required minlength="8"; }
                label { "Role " select name="role" { option value="annotator" { "annotator" } option value="admin" { "admin" } } }
                button type="submit" { "Create user" }
            }
            h2 { "Recent activity" }
            table #audit {
                tbody {
                    @for (at, action, subject, detail) in &audit {
                        tr { td { (at) } td { (action) } td { (subject) } td { code { (detail.to_string()) } } }
                    }
                }
            }
        },
    ))
}

/// The create-project form.
#[derive(Debug, Deserialize)]
pub struct ProjectForm {
    // Defaulted so that a missing token is refused as a CSRF failure (403), not a form error.
    #[serde(default)]
    csrf: String,
    name: String,
    overlap: i64,
    lease_seconds: i64,
    #[serde(default)]
    guidelines: String,
}

/// `POST /admin/projects`.
pub async fn create_project(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Form(form): Form<ProjectForm>,
) -> Result<Redirect, AppError> {
    admin.check_csrf(&form.csrf)?;
    let project = state
        .db
        .create_project(
            &NewProject {
                name: &form.name,
                overlap: form.overlap,
                lease_seconds: form.lease_seconds,
                guidelines: &form.guidelines,
            },
            Some(admin.0.user.id),
            state.clock.now_ms(),
        )
        .await?;
    Ok(Redirect::to(&format!("/admin/projects/{}", project.id)))
}

/// The create-user form.
#[derive(Debug, Deserialize)]
pub struct UserForm {
    // Defaulted so that a missing token is refused as a CSRF failure (403), not a form error.
    #[serde(default)]
    csrf: String,
    username: String,
    password: String,
    role: String,
}

/// `POST /admin/users`.
pub async fn create_user(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Form(form): Form<UserForm>,
) -> Result<Redirect, AppError> {
    admin.check_csrf(&form.csrf)?;
    let role = Role::parse(&form.role)?;
    validate_password(&form.password)?;
    let password = form.password.clone();
    let hash = tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|error| AppError::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()))??;
    state
        .db
        .create_user(
            &form.username,
            &hash,
            role,
            Some(admin.0.user.id),
            state.clock.now_ms(),
        )
        .await?;
    Ok(Redirect::to("/admin"))
}

/// `GET /admin/projects/{id}`.
#[expect(clippy::too_many_lines, reason = "one page, laid out top to bottom")]
pub async fn project(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(project_id): Path<i64>,
) -> Result<Html<String>, AppError> {
    let project = state.db.project(project_id).await?;
    let counts = state
        .db
        .project_counts(project_id, state.clock.now_ms())
        .await?;
    let throughput = state.db.throughput(project_id).await?;
    let annotations = state.db.all_annotations(project_id).await?;
    let ranked: Vec<RankedJudgment> = annotations
        .iter()
        .filter(|annotation| !annotation.judgment.not_rankable)
        .map(|annotation| RankedJudgment {
            item: annotation.item_id,
            annotator: annotation.annotator_id,
            judgment: annotation.judgment.clone(),
        })
        .collect();
    let report = agreement_report(&ranked);
    let mut per_item: BTreeMap<i64, (String, Vec<&Judgment>)> = BTreeMap::new();
    for annotation in &annotations {
        if annotation.judgment.not_rankable {
            continue;
        }
        per_item
            .entry(annotation.item_id)
            .or_insert_with(|| (annotation.item_external_id.clone(), Vec::new()))
            .1
            .push(&annotation.judgment);
    }
    let names: BTreeMap<i64, String> = annotations
        .iter()
        .map(|annotation| (annotation.annotator_id, annotation.annotator.clone()))
        .collect();
    let format_option =
        |value: Option<f64>| value.map_or_else(|| "–".to_string(), |value| format!("{value:.3}"));
    let csrf = admin.0.csrf_token.clone();
    Ok(layout(
        &project.name,
        Some(&admin.0),
        None,
        html! {
            h1 { (project.name) }
            p { "k = " (project.overlap) " annotations per item · lease " (project.lease_seconds) " s" }
            h2 { "Progress" }
            table #progress-table {
                tbody {
                    tr { th { "Items" } td #count-items { (counts.items) } }
                    tr { th { "Slots submitted" } td #count-submitted { (counts.submitted) " / " (counts.slots) } }
                    tr { th { "Leased now" } td { (counts.leased) } }
                    tr { th { "Annotations" } td #count-annotations { (counts.annotations) } }
                    tr { th { "Late" } td { (counts.late) } }
                    tr { th { "Over quota" } td { (counts.over_quota) } }
                    tr { th { "Skips" } td { (counts.skips) } }
                }
            }
            h2 { "Annotators" }
            table #throughput {
                thead { tr { th { "Annotator" } th { "Submitted" } th { "Skipped" } th { "Median s/item" } th { "Per hour" } } }
                tbody {
                    @for row in &throughput {
                        tr { td { (row.username) } td { (row.submitted) } td { (row.skipped) }
                             td { (format!("{:.1}", row.median_seconds)) } td { (format_option(row.per_hour)) } }
                    }
                }
            }
            h2 { "Agreement" }
            table #agreement {
                tbody {
                    tr { th { "Pairwise agreement" } td #pairwise-agreement { (format_option(report.pairwise_agreement)) } td { (report.pairwise_comparisons) " comparisons" } }
                    tr { th { "Krippendorff's α (ordinal, signed strength)" } td #alpha-ordinal { (format_option(report.krippendorff_alpha_ordinal)) } td {} }
                    tr { th { "Krippendorff's α (interval)" } td { (format_option(report.krippendorff_alpha_interval)) } td {} }
                    tr { th { "Kendall's τ-b between rankings" } td #kendall-tau { (format_option(report.kendall_tau)) } td { (report.kendall_pairs) " pairs" } }
                }
            }
            @if !report.per_annotator.is_empty() {
                table #annotator-agreement {
                    thead { tr { th { "Annotator" } th { "Units" } th { "Agreement with consensus" } } }
                    tbody {
                        @for row in &report.per_annotator {
                            tr { td { (names.get(&row.annotator).cloned().unwrap_or_default()) } td { (row.judged_units) } td { (format_option(row.agreement_with_consensus)) } }
                        }
                    }
                }
            }
            h2 { "Consensus per item" }
            p { "Ranked pairs over every annotator's ranking (first 200 items)." }
            table #consensus {
                thead { tr { th { "Item" } th { "Annotations" } th { "Consensus (candidate ids, best first)" } } }
                tbody {
                    @for (external_id, judgments) in per_item.values().take(200) {
                        tr { td { (external_id) } td { (judgments.len()) }
                             td { (consensus_ranking(judgments).iter().map(ToString::to_string).collect::<Vec<_>>().join(" > ")) } }
                    }
                }
            }
            h2 { "Import" }
            form method="post" action=(format!("/admin/projects/{project_id}/import")) enctype="multipart/form-data" #import-form {
                input type="hidden" name="csrf" value=(csrf);
                input type="file" name="file" accept=".jsonl,.json,application/x-ndjson" required;
                button type="submit" { "Upload JSONL" }
            }
            h2 { "Guidelines" }
            form method="post" action=(format!("/admin/projects/{project_id}/guidelines")) #guidelines-form {
                input type="hidden" name="csrf" value=(csrf);
                textarea name="guidelines" rows="8" { (project.guidelines) }
                button type="submit" { "Save guidelines" }
            }
            h2 { "Export" }
            form method="get" action=(format!("/admin/projects/{project_id}/export.jsonl")) #export-form {
                @for level in Strength::ALL {
                    label {
                        input type="checkbox" name="strength" value=(level.as_str())
                            checked[matches!(level, Strength::SignificantlyBetter | Strength::Better)];
                        " " (level.as_str().replace('_', " "))
                    }
                }
                label { input type="checkbox" name="include_all_bad" value="1"; " include all-bad judgments" }
                button type="submit" #export { "Download preference JSONL" }
            }
        },
    ))
}

/// The guidelines form.
#[derive(Debug, Deserialize)]
pub struct GuidelinesForm {
    // Defaulted so that a missing token is refused as a CSRF failure (403), not a form error.
    #[serde(default)]
    csrf: String,
    guidelines: String,
}

/// `POST /admin/projects/{id}/guidelines`.
pub async fn set_guidelines(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(project_id): Path<i64>,
    Form(form): Form<GuidelinesForm>,
) -> Result<Redirect, AppError> {
    admin.check_csrf(&form.csrf)?;
    state
        .db
        .set_guidelines(
            project_id,
            &form.guidelines,
            admin.0.user.id,
            state.clock.now_ms(),
        )
        .await?;
    Ok(Redirect::to(&format!("/admin/projects/{project_id}")))
}

/// `POST /admin/projects/{id}/import` (multipart: `csrf`, `file`).
pub async fn import(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(project_id): Path<i64>,
    mut multipart: Multipart,
) -> Result<Response, AppError> {
    let mut csrf = None;
    let mut file = None;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|error| AppError::new(StatusCode::BAD_REQUEST, error.body_text()))?
    {
        let name = field.name().unwrap_or_default().to_string();
        let file_name = field.file_name().unwrap_or("upload").to_string();
        let text = field
            .text()
            .await
            .map_err(|error| AppError::new(error.status(), error.body_text()))?;
        match name.as_str() {
            "csrf" => csrf = Some(text),
            "file" => file = Some((file_name, text)),
            _ => {}
        }
    }
    admin.check_csrf(csrf.as_deref().unwrap_or_default())?;
    let Some((file_name, text)) = file else {
        return Err(AppError::new(StatusCode::BAD_REQUEST, "file: missing"));
    };
    let items = parse_file(&text, &file_name)
        .map_err(|errors| AppError::new(StatusCode::BAD_REQUEST, errors))?;
    let summary = state
        .db
        .import_items(
            project_id,
            &items,
            Some(admin.0.user.id),
            &file_name,
            state.clock.now_ms(),
        )
        .await?;
    Ok(layout(
        "Imported",
        Some(&admin.0),
        None,
        html! {
            h1 { "Imported" }
            p #import-summary { (summary.added) " items added, " (summary.already_present) " already present." }
            a href=(format!("/admin/projects/{project_id}")) { "Back to the project" }
        },
    )
    .into_response())
}

/// `GET /admin/projects/{id}/export.jsonl` query.
#[derive(Debug, Deserialize)]
pub struct ExportQuery {
    /// Comma-separated or repeated strength levels; none = all four.
    #[serde(default)]
    strength: Vec<String>,
    #[serde(default)]
    include_all_bad: Option<String>,
    #[serde(default)]
    include_over_quota: Option<String>,
}

/// `GET /admin/projects/{id}/export.jsonl`.
pub async fn export(
    State(state): State<AppState>,
    Admin(_admin): Admin,
    Path(project_id): Path<i64>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<Response, AppError> {
    let query: ExportQuery = parse_export_query(query.as_deref().unwrap_or_default())?;
    let filter = ExportFilter::from_strengths(
        query.strength.iter().map(String::as_str),
        query.include_all_bad.is_some(),
    )
    .map_err(|message| AppError::new(StatusCode::BAD_REQUEST, message))?;
    let mut body = String::new();
    export_project(
        &state.db,
        project_id,
        &filter,
        query.include_over_quota.is_some(),
        |line| {
            body.push_str(&line);
            body.push('\n');
            Ok(())
        },
    )
    .await?;
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson; charset=utf-8"),
    );
    if let Ok(value) = HeaderValue::from_str(&format!(
        "attachment; filename=\"project-{project_id}-preferences.jsonl\""
    )) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// Repeated `strength=` keys, which `serde_urlencoded` cannot collect into a list.
fn parse_export_query(query: &str) -> Result<ExportQuery, AppError> {
    let pairs: Vec<(String, String)> = serde_urlencoded_pairs(query)?;
    let mut result = ExportQuery {
        strength: Vec::new(),
        include_all_bad: None,
        include_over_quota: None,
    };
    for (key, value) in pairs {
        match key.as_str() {
            "strength" => result.strength.push(value),
            "include_all_bad" => result.include_all_bad = Some(value),
            "include_over_quota" => result.include_over_quota = Some(value),
            other => {
                return Err(AppError::new(
                    StatusCode::BAD_REQUEST,
                    format!("unknown query parameter {other:?}"),
                ));
            }
        }
    }
    Ok(result)
}

fn serde_urlencoded_pairs(query: &str) -> Result<Vec<(String, String)>, AppError> {
    let Query(pairs): Query<Vec<(String, String)>> = Query::try_from_uri(
        &format!("/?{query}")
            .parse()
            .map_err(|_| AppError::new(StatusCode::BAD_REQUEST, "malformed query"))?,
    )
    .map_err(|error| AppError::new(StatusCode::BAD_REQUEST, error.body_text()))?;
    Ok(pairs)
}

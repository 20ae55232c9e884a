//! Server-rendered pages (maud escapes every interpolation, so user and model text is inert) and
//! the embedded static files. Pages carry no inline script: behaviour lives in `static/*.js`,
//! which the Content-Security-Policy allows from this origin only.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, html};

use super::auth::CurrentUser;
use super::{AppError, AppState};
use crate::store::sessions::Session;
use crate::store::users::Role;

/// A full page around `body`; with a session, the header shows the user and a logout button and
/// the page carries the CSRF token in `<meta name="csrf-token">`.
#[expect(
    clippy::needless_pass_by_value,
    reason = "callers build the markup inline"
)]
pub fn layout(
    title: &str,
    session: Option<&Session>,
    script: Option<&str>,
    body: Markup,
) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    @if let Some(session) = session {
                        meta name="csrf-token" content=(session.csrf_token);
                    }
                    title { (title) " · herd label" }
                    link rel="stylesheet" href="/static/style.css";
                    @if let Some(script) = script {
                        script src=(format!("/static/{script}")) defer {}
                    }
                }
                body {
                    header.top {
                        a href="/" { "herd label" }
                        @if let Some(session) = session {
                            nav {
                                a href="/projects" { "Projects" }
                                @if session.user.role == Role::Admin { " " a href="/admin" { "Admin" } }
                                " "
                                span #whoami { (session.user.username) }
                                form method="post" action="/logout" .inline {
                                    input type="hidden" name="csrf" value=(session.csrf_token);
                                    button type="submit" #logout { "Sign out" }
                                }
                            }
                        }
                    }
                    main { (body) }
                }
            }
        }
        .into_string(),
    )
}

/// A page with one message.
pub fn message_page(title: &str, text: &str) -> Html<String> {
    layout(title, None, None, html! { h1 { (title) } p { (text) } })
}

/// `GET /`.
pub async fn home(user: CurrentUser) -> Redirect {
    match user.0.user.role {
        Role::Admin => Redirect::to("/admin"),
        Role::Annotator => Redirect::to("/projects"),
    }
}

/// `GET /projects`: every project with its progress.
pub async fn projects(
    State(state): State<AppState>,
    user: CurrentUser,
) -> Result<Html<String>, AppError> {
    let mut rows = Vec::new();
    for project in state.db.projects().await? {
        let progress = state
            .db
            .progress(project.id, user.0.user.id, state.clock.now_ms())
            .await?;
        rows.push((project, progress));
    }
    Ok(layout(
        "Projects",
        Some(&user.0),
        None,
        html! {
            h1 { "Projects" }
            @if rows.is_empty() { p { "No projects yet." } }
            table #projects {
                thead { tr { th { "Project" } th { "Yours" } th { "Done" } th {} } }
                tbody {
                    @for (project, progress) in &rows {
                        tr {
                            td { (project.name) }
                            td { (progress.submitted_by_me) }
                            td { (progress.project_submitted) " / " (progress.project_required) }
                            td { a.button href=(format!("/projects/{}/annotate", project.id)) { "Annotate" } }
                        }
                    }
                }
            }
        },
    ))
}

/// `GET /projects/{id}/annotate`: the shell `static/annotate.js` fills in.
pub async fn annotate(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(project_id): Path<i64>,
) -> Result<Html<String>, AppError> {
    let project = state.db.project(project_id).await?;
    Ok(layout(
        &project.name,
        Some(&user.0),
        Some("annotate.js"),
        html! {
            h1 #project-name { (project.name) }
            div #annotate data-project-id=(project.id) {}
        },
    ))
}

/// `GET /static/{file}`: a fixed, embedded set — no file system paths, so no traversal.
pub async fn static_file(Path(file): Path<String>) -> Response {
    let (body, content_type) = match file.as_str() {
        "annotate.js" => (
            include_str!("../../static/annotate.js"),
            "text/javascript; charset=utf-8",
        ),
        "style.css" => (
            include_str!("../../static/style.css"),
            "text/css; charset=utf-8",
        ),
        _ => return (StatusCode::NOT_FOUND, "not found").into_response(),
    };
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

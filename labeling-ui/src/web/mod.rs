//! The HTTP side: `app(state)` builds the router (the test seam: handler tests call
//! `app(state).oneshot(request)`), [`AppError`] turns store errors into statuses with clean
//! messages, and every response gets the security headers (a strict Content-Security-Policy with
//! no inline script, no framing, no sniffing).

pub mod admin;
pub mod api;
pub mod auth;
pub mod pages;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::json;

use crate::db::Database;
use crate::error::StoreError;

/// The Content-Security-Policy of every response: scripts and styles only from this origin, no
/// inline script (so injected markup cannot run), no plugins, no framing, no form posts elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Largest JSON body (submissions with an edited response fit easily).
pub const JSON_BODY_LIMIT: usize = 1024 * 1024;
/// Largest import upload.
pub const UPLOAD_BODY_LIMIT: usize = 64 * 1024 * 1024;

/// The clock the handlers read; tests move it forward to expire leases without sleeping.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    /// Milliseconds since the Unix epoch, plus any test offset.
    #[must_use]
    pub fn now_ms(&self) -> i64 {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as i64);
        since_epoch + self.offset_ms.load(Ordering::Relaxed)
    }

    /// Moves the clock forward (tests).
    pub fn advance_ms(&self, milliseconds: i64) {
        self.offset_ms.fetch_add(milliseconds, Ordering::Relaxed);
    }
}

/// Settings of the web layer.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Key for hashing session tokens (at least 32 bytes).
    pub secret: Vec<u8>,
    /// Mark cookies `Secure` (serve behind HTTPS).
    pub secure_cookies: bool,
    /// Session lifetime.
    pub session_hours: i64,
    /// Failed logins allowed per username (and 4× per client address) per window.
    pub login_attempts: u32,
    /// The login rate-limit window.
    pub login_window_seconds: i64,
}

impl WebConfig {
    /// Defaults around a secret.
    #[must_use]
    pub fn new(secret: Vec<u8>) -> WebConfig {
        WebConfig {
            secret,
            secure_cookies: false,
            session_hours: 12,
            login_attempts: 5,
            login_window_seconds: 300,
        }
    }
}

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The database.
    pub db: Database,
    /// Web settings.
    pub config: Arc<WebConfig>,
    /// The clock.
    pub clock: Clock,
    /// Failed-login counters.
    pub login_limiter: Arc<auth::LoginLimiter>,
}

impl AppState {
    /// State over a database.
    #[must_use]
    pub fn new(db: Database, config: WebConfig) -> AppState {
        AppState {
            db,
            config: Arc::new(config),
            clock: Clock::default(),
            login_limiter: Arc::new(auth::LoginLimiter::default()),
        }
    }
}

/// The whole app.
pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/projects/{id}/claim", post(api::claim))
        .route("/api/projects/{id}/progress", get(api::progress))
        .route("/api/slots/{id}/heartbeat", post(api::heartbeat))
        .route("/api/slots/{id}/draft", put(api::save_draft))
        .route("/api/slots/{id}/submit", post(api::submit))
        .route("/api/slots/{id}/skip", post(api::skip))
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT));
    let upload = Router::new()
        .route("/admin/projects/{id}/import", post(admin::import))
        .layer(DefaultBodyLimit::max(UPLOAD_BODY_LIMIT));
    let pages = Router::new()
        .route("/", get(pages::home))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/projects", get(pages::projects))
        .route("/projects/{id}/annotate", get(pages::annotate))
        .route("/admin", get(admin::overview))
        .route("/admin/projects", post(admin::create_project))
        .route("/admin/projects/{id}", get(admin::project))
        .route(
            "/admin/projects/{id}/guidelines",
            post(admin::set_guidelines),
        )
        .route("/admin/projects/{id}/export.jsonl", get(admin::export))
        .route("/admin/users", post(admin::create_user))
        .route("/static/{file}", get(pages::static_file))
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT));
    Router::new()
        .merge(api)
        .merge(upload)
        .merge(pages)
        .layer(middleware::from_fn(auth::same_origin_writes))
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // `same-origin`, not `no-referrer`: under `no-referrer` a browser sends `Origin: null` on
    // form posts (Fetch §3.1, "append a request `Origin` header"), which `same_origin_writes`
    // refuses, so no one could sign in. Other sites still get no referrer.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// A handler's failure: a status and a message safe to show. Internal errors are logged to
/// standard error and shown as a generic message.
#[derive(Debug)]
pub struct AppError {
    status: StatusCode,
    message: String,
}

impl AppError {
    /// An error with a status and a message.
    #[must_use]
    pub fn new(status: StatusCode, message: impl Into<String>) -> AppError {
        AppError {
            status,
            message: message.into(),
        }
    }
}

impl From<StoreError> for AppError {
    fn from(error: StoreError) -> AppError {
        let status = match &error {
            StoreError::Invalid(_) => StatusCode::BAD_REQUEST,
            StoreError::NotFound(_) => StatusCode::NOT_FOUND,
            StoreError::Conflict(_) => StatusCode::CONFLICT,
            StoreError::Forbidden(_) => StatusCode::FORBIDDEN,
            StoreError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            StoreError::Database(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = match &error {
            StoreError::Database(_) => {
                eprintln!("herd label: {error}");
                "internal error".to_string()
            }
            StoreError::Unavailable(_) => {
                eprintln!("herd label: {error}");
                "the database is unavailable; retry shortly".to_string()
            }
            _ => error.to_string(),
        };
        AppError { status, message }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, axum::Json(json!({"error": self.message}))).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

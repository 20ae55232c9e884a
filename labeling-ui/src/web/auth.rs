//! Sign-in, sessions and request checks.
//!
//! - Sessions are server-side rows; the cookie (`HttpOnly`, `SameSite=Lax`, `Secure` behind
//!   HTTPS) holds a random token and the table its HMAC under the server secret.
//! - CSRF: every state-changing request must echo the session's token (form field `csrf` or
//!   header `X-CSRF-Token`); the login form uses a double-submit cookie. On top, writes whose
//!   `Origin` is another site, or that a browser marks `Sec-Fetch-Site: cross-site`, are refused.
//! - Login is rate-limited per username and per client address; unknown users cost the same
//!   Argon2id verification as known ones.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use axum::extract::{ConnectInfo, Form, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;

use super::pages::{layout, message_page};
use super::{AppError, AppState};
use crate::store::audit::AuditEntry;
use crate::store::random_hex;
use crate::store::sessions::Session;
use crate::store::users::{DUMMY_HASH, Role, verify_password};

/// The session cookie.
pub const SESSION_COOKIE: &str = "herd_session";
/// The login form's double-submit cookie.
pub const LOGIN_CSRF_COOKIE: &str = "herd_login_csrf";

/// Failed-login counters per key (`user:NAME`, `ip:ADDRESS`) in fixed windows.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<String, (u32, i64)>>,
}

impl LoginLimiter {
    fn is_limited(&self, key: &str, limit: u32, window_ms: i64, now_ms: i64) -> bool {
        let failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        failures
            .get(key)
            .is_some_and(|(count, start)| now_ms - start < window_ms && *count >= limit)
    }

    fn record_failure(&self, key: String, window_ms: i64, now_ms: i64) {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = failures.entry(key).or_insert((0, now_ms));
        if now_ms - entry.1 >= window_ms {
            *entry = (0, now_ms);
        }
        entry.0 += 1;
    }

    fn clear(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
    }
}

/// The cookie value named `name`, if the request has one.
#[must_use]
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_string())
}

/// The keyed hash stored for a session token.
#[must_use]
pub fn token_hash(secret: &[u8], token: &str) -> String {
    // HMAC takes keys of any length, so the fallback is never taken; it keeps the function total.
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(secret) else {
        use sha2::Digest;
        return hex::encode(Sha256::digest([secret, token.as_bytes()].concat()));
    };
    mac.update(token.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn constant_time_equal(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0_u8, |difference, (x, y)| difference | (x ^ y))
            == 0
}

async fn session_of(state: &AppState, headers: &HeaderMap) -> Result<Option<Session>, AppError> {
    let Some(token) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let hash = token_hash(&state.config.secret, &token);
    Ok(state.db.session(&hash, state.clock.now_ms()).await?)
}

/// A signed-in user of a page route (redirected to `/login` otherwise).
#[derive(Debug, Clone)]
pub struct CurrentUser(pub Session);

impl CurrentUser {
    /// Refuses a form post whose `csrf` field is not the session's token.
    pub fn check_csrf(&self, submitted: &str) -> Result<(), AppError> {
        if constant_time_equal(submitted, &self.0.csrf_token) {
            Ok(())
        } else {
            Err(AppError::new(
                StatusCode::FORBIDDEN,
                "missing or wrong CSRF token; reload the page",
            ))
        }
    }
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match session_of(state, &parts.headers).await {
            Ok(Some(session)) => Ok(CurrentUser(session)),
            Ok(None) => Err(Redirect::to("/login").into_response()),
            Err(error) => Err(error.into_response()),
        }
    }
}

/// A signed-in admin (403 for anyone else).
#[derive(Debug, Clone)]
pub struct Admin(pub CurrentUser);

impl FromRequestParts<AppState> for Admin {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let user = CurrentUser::from_request_parts(parts, state).await?;
        if user.0.user.role == Role::Admin {
            Ok(Admin(user))
        } else {
            Err((
                StatusCode::FORBIDDEN,
                message_page("Not allowed", "This page is for admins."),
            )
                .into_response())
        }
    }
}

/// A signed-in user of a JSON route: 401 without a session, 403 when a write lacks the
/// `X-CSRF-Token` header.
#[derive(Debug, Clone)]
pub struct ApiUser(pub Session);

impl FromRequestParts<AppState> for ApiUser {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let session = session_of(state, &parts.headers)
            .await?
            .ok_or_else(|| AppError::new(StatusCode::UNAUTHORIZED, "not signed in"))?;
        if !matches!(parts.method, Method::GET | Method::HEAD) {
            let sent = parts
                .headers
                .get("x-csrf-token")
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default();
            if !constant_time_equal(sent, &session.csrf_token) {
                return Err(AppError::new(
                    StatusCode::FORBIDDEN,
                    "missing or wrong X-CSRF-Token header",
                ));
            }
        }
        Ok(ApiUser(session))
    }
}

/// Refuses state-changing requests that a browser says come from another site.
pub async fn same_origin_writes(request: Request, next: Next) -> Response {
    if !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        let headers = request.headers();
        let host = headers
            .get(header::HOST)
            .and_then(|value| value.to_str().ok());
        let origin_host = headers
            .get(header::ORIGIN)
            .and_then(|value| value.to_str().ok())
            .map(|origin| origin.split_once("://").map_or(origin, |(_, rest)| rest));
        let cross_site = headers
            .get("sec-fetch-site")
            .is_some_and(|value| value.as_bytes() == b"cross-site");
        let foreign_origin = matches!((origin_host, host), (Some(origin), Some(host)) if origin != host)
            || origin_host == Some("null");
        if cross_site || foreign_origin {
            return AppError::new(StatusCode::FORBIDDEN, "cross-site request refused")
                .into_response();
        }
    }
    next.run(request).await
}

fn client_address(parts_extensions: &axum::http::Extensions) -> Option<IpAddr> {
    parts_extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip())
}

fn session_cookie(
    state: &AppState,
    name: &str,
    value: &str,
    path: &str,
    max_age: i64,
) -> HeaderValue {
    let secure = if state.config.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    let same_site = if name == LOGIN_CSRF_COOKIE {
        "Strict"
    } else {
        "Lax"
    };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite={same_site}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("herd_invalid=1"))
}

/// `GET /login`.
pub async fn login_page(State(state): State<AppState>) -> Result<Response, AppError> {
    let token = random_hex(16)?;
    let mut response = login_form(&token, None).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(&state, LOGIN_CSRF_COOKIE, &token, "/login", 3600),
    );
    Ok(response)
}

fn login_form(csrf: &str, error: Option<&str>) -> Html<String> {
    layout(
        "Sign in",
        None,
        None,
        maud::html! {
            h1 { "Sign in" }
            @if let Some(error) = error { p.error role="alert" { (error) } }
            form method="post" action="/login" id="login-form" {
                input type="hidden" name="csrf" value=(csrf);
                label { "Username " input type="text" name="username" id="username" autocomplete="username" required; }
                label { "Password " input type="password" name="password" id="password" autocomplete="current-password" required; }
                button type="submit" id="sign-in" { "Sign in" }
            }
        },
    )
}

/// The login form.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
    #[serde(default)]
    csrf: String,
}

/// `POST /login`.
#[expect(
    clippy::too_many_lines,
    reason = "the sign-in steps in order: CSRF, rate limit, verify, session"
)]
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    request_extensions: axum::http::Extensions,
    Form(form): Form<LoginForm>,
) -> Result<Response, AppError> {
    let now = state.clock.now_ms();
    let expected = cookie(&headers, LOGIN_CSRF_COOKIE).unwrap_or_default();
    if expected.is_empty() || !constant_time_equal(&expected, &form.csrf) {
        return Ok((
            StatusCode::FORBIDDEN,
            login_form(
                &expected,
                Some("The sign-in form expired; reload the page and try again."),
            ),
        )
            .into_response());
    }
    let window_ms = state.config.login_window_seconds * 1000;
    let user_key = format!("user:{}", form.username);
    let address_key = client_address(&request_extensions).map(|address| format!("ip:{address}"));
    let limit = state.config.login_attempts;
    if state
        .login_limiter
        .is_limited(&user_key, limit, window_ms, now)
        || address_key.as_ref().is_some_and(|key| {
            state
                .login_limiter
                .is_limited(key, limit * 4, window_ms, now)
        })
    {
        let mut response = (
            StatusCode::TOO_MANY_REQUESTS,
            login_form(
                &expected,
                Some("Too many failed sign-ins; wait a few minutes."),
            ),
        )
            .into_response();
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(state.config.login_window_seconds),
        );
        return Ok(response);
    }
    let found = state.db.user_for_login(&form.username).await?;
    let hash = found
        .as_ref()
        .map_or_else(|| DUMMY_HASH.to_string(), |(_, hash)| hash.clone());
    let password = form.password.clone();
    let matches = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .unwrap_or(false);
    let user = match found {
        Some((user, _)) if matches => user,
        _ => {
            state.login_limiter.record_failure(user_key, window_ms, now);
            if let Some(key) = address_key {
                state.login_limiter.record_failure(key, window_ms, now);
            }
            state
                .db
                .audit(
                    &AuditEntry {
                        actor_id: None,
                        action: "login_failed",
                        project_id: None,
                        subject: format!(
                            "username:{}",
                            form.username.chars().take(64).collect::<String>()
                        ),
                        detail: json!({}),
                    },
                    now,
                )
                .await?;
            return Ok((
                StatusCode::UNAUTHORIZED,
                login_form(&expected, Some("Wrong username or password.")),
            )
                .into_response());
        }
    };
    state.login_limiter.clear(&user_key);
    let token = random_hex(32)?;
    let csrf = random_hex(32)?;
    let max_age = state.config.session_hours * 3600;
    state
        .db
        .create_session(
            &token_hash(&state.config.secret, &token),
            user.id,
            &csrf,
            now,
            now + max_age * 1000,
        )
        .await?;
    state
        .db
        .audit(
            &AuditEntry {
                actor_id: Some(user.id),
                action: "login",
                project_id: None,
                subject: format!("user:{}", user.id),
                detail: json!({}),
            },
            now,
        )
        .await?;
    let mut response = Redirect::to("/").into_response();
    let headers = response.headers_mut();
    headers.append(
        header::SET_COOKIE,
        session_cookie(&state, SESSION_COOKIE, &token, "/", max_age),
    );
    headers.append(
        header::SET_COOKIE,
        session_cookie(&state, LOGIN_CSRF_COOKIE, "", "/login", 0),
    );
    Ok(response)
}

/// The logout form.
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /logout`: deletes the session row, so the cookie is dead even if someone kept a copy.
pub async fn logout(
    State(state): State<AppState>,
    user: CurrentUser,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, AppError> {
    user.check_csrf(&form.csrf)?;
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        state
            .db
            .delete_session(&token_hash(&state.config.secret, &token))
            .await?;
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(&state, SESSION_COOKIE, "", "/", 0),
    );
    Ok(response)
}

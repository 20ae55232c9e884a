//! Test support: a fresh database per test (a new Postgres database on the local server, or a
//! SQLite file in a temporary directory), users, and a cookie-carrying client that drives the
//! router in-process (`app(state).oneshot`).

#![allow(dead_code, reason = "each test binary uses a different part")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test support: a failure is the test failing"
)]

use std::sync::atomic::{AtomicU32, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use labeling::db::{Database, sqlite_url};
use labeling::import::parse_file;
use labeling::store::projects::{NewProject, Project};
use labeling::store::users::{Role, User, hash_password};
use labeling::web::{AppState, WebConfig};
use serde_json::Value;
use tower::ServiceExt;

/// Which back-end a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

pub const BACKENDS: [Backend; 2] = [Backend::Postgres, Backend::Sqlite];

/// The server the Postgres tests create their databases on.
pub fn postgres_admin_url() -> String {
    std::env::var("HERD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A database that disappears with the value.
pub struct TestDatabase {
    pub url: String,
    pub db: Database,
    name: Option<String>,
    _directory: Option<tempfile::TempDir>,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestDatabase {
    pub async fn new(backend: Backend) -> TestDatabase {
        match backend {
            Backend::Sqlite => {
                let directory = tempfile::tempdir().unwrap();
                let url = sqlite_url(&directory.path().join("labeling.sqlite"));
                let db = Database::connect(&url).await.unwrap();
                TestDatabase {
                    url,
                    db,
                    name: None,
                    _directory: Some(directory),
                }
            }
            Backend::Postgres => {
                let name = format!(
                    "herd_test_{}_{}_{}",
                    std::process::id(),
                    COUNTER.fetch_add(1, Ordering::Relaxed),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .subsec_nanos()
                );
                admin_execute(&format!("CREATE DATABASE {name}")).await;
                let base = postgres_admin_url();
                let url = format!("{}/{name}", base.rsplit_once('/').unwrap().0);
                let db = Database::connect(&url).await.unwrap();
                TestDatabase {
                    url,
                    db,
                    name: Some(name),
                    _directory: None,
                }
            }
        }
    }
}

async fn admin_execute(sql: &str) {
    use sqlx::Connection;
    let mut connection = sqlx::PgConnection::connect(&postgres_admin_url())
        .await
        .expect("Postgres at 127.0.0.1:5432 (set HERD_TEST_POSTGRES_URL to use another)");
    sqlx::query(sql).execute(&mut connection).await.unwrap();
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some(name) = self.name.take() {
            // Drop runs inside or outside a runtime; a thread with its own runtime works in both.
            // The pool is not closed first: closing waits for connections that only the test's
            // (now blocked) runtime could hand back. `WITH (FORCE)` ends them instead.
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    admin_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
                });
            })
            .join();
        }
    }
}

pub const PASSWORD: &str = "correct horse battery";

pub async fn user(db: &Database, name: &str, role: Role) -> User {
    let hash = hash_password(PASSWORD).unwrap();
    db.create_user(name, &hash, role, None, 0).await.unwrap()
}

pub fn secret() -> Vec<u8> {
    b"0123456789abcdef0123456789abcdef-test-secret".to_vec()
}

pub fn state(db: &Database) -> AppState {
    AppState::new(db.clone(), WebConfig::new(secret()))
}

pub async fn project(
    db: &Database,
    name: &str,
    overlap: i64,
    items: usize,
    candidates: usize,
) -> Project {
    let project = db
        .create_project(
            &NewProject {
                name,
                overlap,
                lease_seconds: 600,
                guidelines: "Rank by **correctness**.",
            },
            None,
            0,
        )
        .await
        .unwrap();
    db.import_items(
        project.id,
        &parse_file(&import_lines(items, candidates), "items.jsonl").unwrap(),
        None,
        "test",
        0,
    )
    .await
    .unwrap();
    project
}

/// `items` import lines, each with `candidates` responses.
pub fn import_lines(items: usize, candidates: usize) -> String {
    (0..items)
        .map(|item| {
            let responses: Vec<Value> = (0..candidates)
                .map(|candidate| serde_json::json!({"content": format!("answer {candidate} to {item}"), "model": "tiny", "round": 1}))
                .collect();
            serde_json::json!({"id": format!("item-{item}"), "prompt": [{"role": "user", "content": format!("question {item}?")}], "responses": responses}).to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A browser-like client over the in-process router: keeps the session cookie and the CSRF token.
#[derive(Clone)]
pub struct Client {
    pub router: Router,
    pub cookie: Option<String>,
    pub csrf: Option<String>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|error| panic!("{error}: {}", self.body))
    }
}

impl Client {
    pub fn new(router: Router) -> Client {
        Client {
            router,
            cookie: None,
            csrf: None,
        }
    }

    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    pub fn builder(&self, method: &str, uri: &str) -> axum::http::request::Builder {
        let mut builder = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, "localhost");
        if let Some(cookie) = &self.cookie {
            builder = builder.header(header::COOKIE, cookie.clone());
        }
        builder
    }

    pub async fn get(&self, uri: &str) -> Reply {
        self.send(self.builder("GET", uri).body(Body::empty()).unwrap())
            .await
    }

    /// A JSON write with the session's CSRF header.
    pub async fn json(&self, method: &str, uri: &str, body: &Value) -> Reply {
        let mut builder = self
            .builder(method, uri)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(csrf) = &self.csrf {
            builder = builder.header("x-csrf-token", csrf.clone());
        }
        self.send(builder.body(Body::from(body.to_string())).unwrap())
            .await
    }

    /// A form post; `fields` are sent as given (add `csrf` yourself).
    pub async fn form(&self, uri: &str, fields: &[(&str, &str)]) -> Reply {
        let body = fields
            .iter()
            .map(|(key, value)| format!("{}={}", urlencode(key), urlencode(value)))
            .collect::<Vec<_>>()
            .join("&");
        self.send(
            self.builder("POST", uri)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(body))
                .unwrap(),
        )
        .await
    }

    /// Signs in through the login form; panics unless it succeeds.
    pub async fn login(router: &Router, username: &str, password: &str) -> Client {
        let mut client = Client::new(router.clone());
        let reply = client.try_login(username, password).await;
        assert_eq!(
            reply.status,
            StatusCode::SEE_OTHER,
            "login failed: {}",
            reply.body
        );
        let session = reply
            .headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .find(|value| value.starts_with("herd_session="))
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        client.cookie = Some(session);
        let page = client.get("/projects").await;
        client.csrf = Some(meta_csrf(&page.body));
        client
    }

    pub async fn try_login(&self, username: &str, password: &str) -> Reply {
        let page = self.get("/login").await;
        let login_cookie = page
            .headers
            .get(header::SET_COOKIE)
            .unwrap()
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let token = login_cookie.split_once('=').unwrap().1.to_string();
        let with_cookie = Client {
            router: self.router.clone(),
            cookie: Some(login_cookie),
            csrf: None,
        };
        with_cookie
            .form(
                "/login",
                &[
                    ("username", username),
                    ("password", password),
                    ("csrf", &token),
                ],
            )
            .await
    }
}

pub fn meta_csrf(html: &str) -> String {
    let start = html
        .find("name=\"csrf-token\" content=\"")
        .expect("csrf meta tag")
        + 27;
    html[start..].split('"').next().unwrap().to_string()
}

pub fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// Claims and returns the task JSON (panics unless assigned).
pub async fn claim(client: &Client, project_id: i64) -> Value {
    let reply = client
        .json(
            "POST",
            &format!("/api/projects/{project_id}/claim"),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["status"], "assigned", "{body}");
    body["task"].clone()
}

/// A valid submission for a task: candidates in display order, all "better".
pub fn answer(task: &Value, submission_id: &str) -> Value {
    let ranking: Vec<i64> = task["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_i64().unwrap())
        .collect();
    let strengths: Vec<&str> = (1..ranking.len()).map(|_| "better").collect();
    serde_json::json!({
        "lease_token": task["lease_token"], "submission_id": submission_id,
        "ranking": ranking, "strengths": strengths, "all_bad": false, "not_rankable": false,
        "edited": null, "time_spent_ms": 1234
    })
}

/// The first column of the first row, as an integer (`COUNT(*)` and friends).
pub async fn integer(db: &Database, sql: &str, binds: &[i64]) -> i64 {
    use sqlx::Row;
    let mut query = sqlx::query(sql);
    for bind in binds {
        query = query.bind(*bind);
    }
    let row = query.fetch_one(db.pool()).await.unwrap();
    row.try_get::<i64, _>(0).unwrap()
}

/// A multipart upload of `text` as the import file, with `csrf` as the form's token.
pub async fn upload(client: &Client, project_id: i64, csrf: &str, text: &str) -> Reply {
    let boundary = "herd-test-boundary-7d1f";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"items.jsonl\"\r\n\
         Content-Type: application/x-ndjson\r\n\r\n{text}\r\n--{boundary}--\r\n"
    );
    let request = client
        .builder("POST", &format!("/admin/projects/{project_id}/import"))
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        );
    client.send(request.body(Body::from(body)).unwrap()).await
}

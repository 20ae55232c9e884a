//! The security checklist of shared/research/labeling.md §3.3, through the router, on Postgres and
//! SQLite: payloads shown as text on every page and sanitized in the claim JSON, the security
//! headers on every response, the access-control matrix (unauthenticated, annotator, another
//! annotator's slot, nonexistent ids), CSRF and cross-site writes, sessions, the login rate limit,
//! the server secret, and static files.
//!
//! Every reply these tests read passes through [`assert_security_headers`].
//!
//! The tests run on a multi-threaded runtime: `TestDatabase`'s `Drop` blocks the test's thread
//! while it closes the pool, and the pool waits for connections whose return-to-pool tasks are
//! queued on the test's runtime. On a current-thread runtime those tasks may never run: these
//! files hung at the end of Postgres iterations under CPU load; worker threads run them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a panic is the test failing, with its message"
)]

mod common;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{
    BACKENDS, Client, PASSWORD, Reply, TestDatabase, answer, integer, meta_csrf, project, secret,
    state, upload, user,
};
use labeling::db::Database;
use labeling::serve::{SecretSource, secret_bytes};
use labeling::store::users::Role;
use labeling::web::{AppState, WebConfig, app};
use serde_json::{Value, json};
use sqlx::Row;

/// The payloads of the checklist: script tags, event handlers, `javascript:` links, SVG, and
/// breaking out of an attribute or a script block.
const PAYLOADS: [&str; 6] = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "[x](javascript:alert(1))",
    "<svg onload=alert(1)>",
    "\"><script>alert(1)</script>",
    "</script><script>alert(1)</script>",
];

/// An id no row has.
const MISSING: i64 = 987_654;

/// The headers every response must carry: a CSP that allows script from this origin only and
/// forbids framing, no MIME sniffing, no framing.
fn assert_security_headers(reply: &Reply, what: &str) {
    let header = |name: &str| {
        reply
            .headers
            .get(name)
            .unwrap_or_else(|| panic!("{what} ({}): no {name} header", reply.status))
            .to_str()
            .unwrap()
            .to_string()
    };
    let policy = header("content-security-policy");
    let directives: Vec<&str> = policy.split(';').map(str::trim).collect();
    assert!(
        directives.contains(&"script-src 'self'"),
        "{what}: {policy}"
    );
    assert!(
        directives.contains(&"frame-ancestors 'none'"),
        "{what}: {policy}"
    );
    assert!(
        directives.contains(&"object-src 'none'"),
        "{what}: {policy}"
    );
    assert!(
        !policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"),
        "{what}: {policy}"
    );
    assert_eq!(header("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(header("x-frame-options"), "DENY", "{what}");
}

/// `GET uri`, headers checked.
async fn get(client: &Client, uri: &str) -> Reply {
    let reply = client.get(uri).await;
    assert_security_headers(&reply, uri);
    reply
}

/// A JSON write with the client's CSRF header, headers checked.
async fn write_json(client: &Client, method: &str, uri: &str, body: &Value) -> Reply {
    let reply = client.json(method, uri, body).await;
    assert_security_headers(&reply, uri);
    reply
}

/// A form post, headers checked.
async fn post_form(client: &Client, uri: &str, fields: &[(&str, &str)]) -> Reply {
    let reply = client.form(uri, fields).await;
    assert_security_headers(&reply, uri);
    reply
}

/// A request with extra headers (Origin, Sec-Fetch-Site, a CSRF header of our choice), carrying
/// the client's session cookie.
async fn send(
    client: &Client,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    content_type: &str,
    body: String,
) -> Reply {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, "localhost")
        .header(header::CONTENT_TYPE, content_type);
    if let Some(cookie) = &client.cookie {
        request = request.header(header::COOKIE, cookie.clone());
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let reply = client.send(request.body(Body::from(body)).unwrap()).await;
    assert_security_headers(&reply, uri);
    reply
}

/// A form body, URL-encoded.
fn form_body(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(key, value)| format!("{}={}", common::urlencode(key), common::urlencode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Row counts of the tables a refused request must not touch.
async fn table_counts(db: &Database) -> Vec<(&'static str, i64)> {
    let mut counts = Vec::new();
    for table in [
        "users",
        "projects",
        "items",
        "slots",
        "annotations",
        "drafts",
        "skips",
        "sessions",
    ] {
        counts.push((
            table,
            integer(db, &format!("SELECT COUNT(*) FROM {table}"), &[]).await,
        ));
    }
    counts
}

/// A slot's lease columns and the stored drafts: what another annotator must not change.
async fn slot_and_drafts(
    db: &Database,
    slot: i64,
) -> (
    String,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Vec<String>,
) {
    let row = sqlx::query(
        "SELECT state, annotator_id, lease_token, lease_expires_ms FROM slots WHERE id = $1",
    )
    .bind(slot)
    .fetch_one(db.pool())
    .await
    .unwrap();
    let drafts = sqlx::query("SELECT draft_json FROM drafts ORDER BY annotator_id")
        .fetch_all(db.pool())
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get::<String, _>("draft_json").unwrap())
        .collect();
    (
        row.try_get("state").unwrap(),
        row.try_get("annotator_id").unwrap(),
        row.try_get("lease_token").unwrap(),
        row.try_get("lease_expires_ms").unwrap(),
        drafts,
    )
}

/// `text` as maud writes it into a page.
fn escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Every start tag of `html`: its name and attributes, values decoded. The pages (maud) and the
/// markdown renderer escape `<`, `>` and `"` in text and attribute values, so every raw `<`
/// starts a tag and every value ends at the next `"`.
fn start_tags(html: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut tags = Vec::new();
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        let close = after
            .find('>')
            .unwrap_or_else(|| panic!("unclosed tag in {html}"));
        let inner = &after[..close];
        rest = &after[close + 1..];
        if inner.starts_with('/') || inner.starts_with('!') {
            continue;
        }
        let inner = inner.trim_end_matches('/').trim_end();
        let name_end = inner.find(char::is_whitespace).unwrap_or(inner.len());
        let name = inner[..name_end].to_ascii_lowercase();
        let mut attributes = Vec::new();
        let mut cursor = inner[name_end..].trim_start();
        while !cursor.is_empty() {
            let end = cursor.find(['=', ' ', '\n', '\t']).unwrap_or(cursor.len());
            let attribute = cursor[..end].to_ascii_lowercase();
            cursor = &cursor[end..];
            let mut value = String::new();
            if let Some(quoted) = cursor.strip_prefix("=\"") {
                let end = quoted
                    .find('"')
                    .unwrap_or_else(|| panic!("unterminated attribute value in <{inner}>"));
                value = quoted[..end]
                    .replace("&quot;", "\"")
                    .replace("&#39;", "'")
                    .replace("&lt;", "<")
                    .replace("&gt;", ">")
                    .replace("&amp;", "&");
                cursor = &quoted[end + 1..];
            } else {
                assert!(
                    !cursor.starts_with('='),
                    "unquoted attribute value in <{inner}>"
                );
            }
            attributes.push((attribute, value));
            cursor = cursor.trim_start();
        }
        tags.push((name, attributes));
    }
    tags
}

/// Asserts that `html` can neither run script nor load anything: no injected tag, no event
/// handler, no `javascript:`/`data:` URL. The page's own `<script src="/static/annotate.js">`
/// is allowed when `own_script` is set.
fn assert_inert(html: &str, own_script: bool, what: &str) {
    let lower = html.to_ascii_lowercase();
    for raw in [
        "<script>alert",
        "<img",
        "<svg",
        "<iframe",
        "<object",
        "<embed",
    ] {
        assert!(!lower.contains(raw), "{what}: raw {raw} in {html}");
    }
    for (name, attributes) in start_tags(html) {
        if name == "script" {
            assert!(
                own_script && attributes.contains(&("src".into(), "/static/annotate.js".into())),
                "{what}: <script {attributes:?}> in {html}"
            );
        }
        assert!(
            ![
                "img", "svg", "iframe", "object", "embed", "style", "base", "math"
            ]
            .contains(&name.as_str()),
            "{what}: <{name}> in {html}"
        );
        for (attribute, value) in &attributes {
            assert!(
                !attribute.starts_with("on"),
                "{what}: <{name} {attribute}=…> in {html}"
            );
            assert_ne!(attribute, "style", "{what}: <{name} style> in {html}");
            if ["href", "src", "action", "formaction", "data", "srcdoc"]
                .contains(&attribute.as_str())
            {
                let squashed: String = value
                    .chars()
                    .filter(|c| !c.is_ascii_control() && !c.is_ascii_whitespace())
                    .collect::<String>()
                    .to_ascii_lowercase();
                for scheme in ["javascript:", "data:", "vbscript:"] {
                    assert!(
                        !squashed.contains(scheme),
                        "{what}: <{name} {attribute}={value:?}> in {html}"
                    );
                }
            }
        }
    }
}

/// Signs in through the form and returns the client with the login reply (for its cookies).
async fn login_with_reply(router: &Router, username: &str) -> (Client, Reply) {
    let reply = Client::new(router.clone())
        .try_login(username, PASSWORD)
        .await;
    assert_security_headers(&reply, "POST /login");
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "login: {}", reply.body);
    let session = set_cookie(&reply, "herd_session=");
    let pair = session.split(';').next().unwrap().to_string();
    let mut client = Client::new(router.clone());
    client.cookie = Some(pair);
    let page = get(&client, "/projects").await;
    client.csrf = Some(meta_csrf(&page.body));
    (client, reply)
}

/// The `Set-Cookie` value that starts with `prefix`.
fn set_cookie(reply: &Reply, prefix: &str) -> String {
    reply
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|value| value.to_str().unwrap().to_string())
        .find(|value| value.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} cookie in {:?}", reply.headers))
}

fn location(reply: &Reply) -> &str {
    reply
        .headers
        .get(header::LOCATION)
        .map_or("", |value| value.to_str().unwrap())
}

fn assert_redirect_to_login(reply: &Reply, what: &str) {
    assert!(
        reply.status.is_redirection() && location(reply) == "/login",
        "{what}: {} {:?} {}",
        reply.status,
        reply.headers.get(header::LOCATION),
        reply.body
    );
}

fn assert_not_found_or_conflict(reply: &Reply, what: &str) {
    assert!(
        matches!(reply.status, StatusCode::NOT_FOUND | StatusCode::CONFLICT),
        "{what}: {} {}",
        reply.status,
        reply.body
    );
}

/// Asserts the status, showing the body when it differs.
fn expect_status(reply: &Reply, status: StatusCode, what: &str) {
    assert_eq!(reply.status, status, "{what}: {}", reply.body);
}

/// Seeds one payload through the admin forms: a project named by it with guidelines that are
/// it (set through the guidelines form), an uploaded item whose id, prompt and a candidate are it
/// plus a plain item, and a user named by it. Returns the project id.
async fn seed_payload(db: &Database, admin: &Client, index: usize, payload: &str) -> i64 {
    let csrf = admin.csrf.clone().unwrap();
    let fields = [
        ("csrf", csrf.as_str()),
        ("name", payload),
        ("overlap", "1"),
        ("lease_seconds", "600"),
        ("guidelines", "none yet"),
    ];
    let created = post_form(admin, "/admin/projects", &fields).await;
    expect_status(&created, StatusCode::SEE_OTHER, "create project");
    let id: i64 = location(&created)
        .rsplit('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let uri = format!("/admin/projects/{id}/guidelines");
    let guidelines = post_form(admin, &uri, &[("csrf", &csrf), ("guidelines", payload)]).await;
    expect_status(&guidelines, StatusCode::SEE_OTHER, "guidelines");
    assert_eq!(db.project(id).await.unwrap().guidelines, payload);
    let text = format!(
        "{}\n{}\n",
        json!({"id": payload, "prompt": [{"role": "user", "content": payload}],
               "responses": [{"content": payload}, {"content": format!("second: {payload}")}]}),
        json!({"id": format!("plain-{index}"), "prompt": [{"role": "user", "content": "plain?"}],
               "responses": [{"content": "one"}, {"content": "two"}]}),
    );
    let imported = upload(admin, id, &csrf, &text).await;
    expect_status(&imported, StatusCode::OK, "import");
    assert_inert(&imported.body, false, "import summary");
    let fields = [
        ("csrf", csrf.as_str()),
        ("username", payload),
        ("password", PASSWORD),
        ("role", "annotator"),
    ];
    let made = post_form(admin, "/admin/users", &fields).await;
    expect_status(&made, StatusCode::SEE_OTHER, "create user");
    id
}

/// The user named by `payload` annotates the project named by it: the claim JSON's raw
/// `content` carries the payload as text and every `html` field is inert; an edit that is the
/// payload is submitted, the second item skipped with the payload as the reason; the annotator's
/// pages show the payload as escaped text only.
async fn annotate_payload(router: &Router, payload: &str, id: i64) {
    let annotator = Client::login(router, payload, PASSWORD).await;
    let claim_uri = format!("/api/projects/{id}/claim");
    let claimed = write_json(&annotator, "POST", &claim_uri, &json!({})).await;
    expect_status(&claimed, StatusCode::OK, "claim");
    let task = claimed.json()["task"].clone();
    assert_eq!(task["item"]["id"], payload);
    assert_eq!(task["item"]["prompt"][0]["content"], payload);
    let prompt_html = task["item"]["prompt"][0]["html"].as_str().unwrap();
    assert_inert(prompt_html, false, "prompt html");
    let guidelines_html = task["guidelines_html"].as_str().unwrap();
    assert_inert(guidelines_html, false, "guidelines html");
    let candidates = task["candidates"].as_array().unwrap();
    assert!(
        candidates
            .iter()
            .any(|candidate| candidate["content"] == payload),
        "{task}"
    );
    for candidate in candidates {
        assert_inert(candidate["html"].as_str().unwrap(), false, "candidate html");
    }
    // The edit is the payload, on the candidate that is not (so the export keeps the edit).
    let mut ranking: Vec<&Value> = candidates.iter().collect();
    ranking.sort_by_key(|candidate| candidate["content"] == payload);
    let body = json!({
        "lease_token": task["lease_token"], "submission_id": format!("xss-{id}"),
        "ranking": ranking.iter().map(|candidate| candidate["id"].clone()).collect::<Vec<_>>(),
        "strengths": ["better"], "edited": {"candidate_id": ranking[0]["id"], "content": payload},
        "time_spent_ms": 1000
    });
    let submit_uri = format!("/api/slots/{}/submit", task["slot_id"]);
    let submitted = write_json(&annotator, "POST", &submit_uri, &body).await;
    expect_status(&submitted, StatusCode::OK, "submit");
    let next = write_json(&annotator, "POST", &claim_uri, &json!({})).await;
    let next = next.json()["task"].clone();
    let skip_uri = format!("/api/slots/{}/skip", next["slot_id"]);
    let reason = json!({"lease_token": next["lease_token"], "reason": payload});
    let skipped = write_json(&annotator, "POST", &skip_uri, &reason).await;
    expect_status(&skipped, StatusCode::OK, "skip");
    for uri in ["/projects".to_string(), format!("/projects/{id}/annotate")] {
        let page = get(&annotator, &uri).await;
        expect_status(&page, StatusCode::OK, &uri);
        assert_inert(&page.body, true, &uri);
        // On the page (project name, signed-in user) as escaped text.
        assert!(
            page.body.contains(&escaped(payload)),
            "{uri}: {}",
            page.body
        );
    }
}

/// The admin's pages show the payload only as escaped text; the edited response leaves only in
/// the export, as JSON lines in an attachment, never as HTML.
async fn check_admin_views(admin: &Client, overview: &Reply, payload: &str, id: i64) {
    // Project name and username, at least.
    let shown = overview.body.matches(&escaped(payload)).count();
    assert!(shown >= 2, "/admin: {payload} shown {shown} times");
    let uri = format!("/admin/projects/{id}");
    let page = get(admin, &uri).await;
    expect_status(&page, StatusCode::OK, &uri);
    assert_inert(&page.body, false, &uri);
    // Name (title, heading), guidelines (textarea), annotator, item id.
    let shown = page.body.matches(&escaped(payload)).count();
    assert!(
        shown >= 4,
        "{uri}: {payload} shown {shown} times: {}",
        page.body
    );
    let export = get(admin, &format!("/admin/projects/{id}/export.jsonl")).await;
    expect_status(&export, StatusCode::OK, "export");
    let content_type = export.headers[header::CONTENT_TYPE].to_str().unwrap();
    assert!(
        content_type.starts_with("application/x-ndjson"),
        "{content_type}"
    );
    let disposition = export.headers[header::CONTENT_DISPOSITION]
        .to_str()
        .unwrap();
    assert!(disposition.starts_with("attachment"), "{disposition}");
    let record: Value = serde_json::from_str(export.body.lines().next().unwrap()).unwrap();
    assert_eq!(record["edited"][0]["content"], payload, "{record}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_are_text_on_every_page_and_sanitized_in_the_claim() {
    for backend in BACKENDS {
        let database = TestDatabase::new(backend).await;
        let db = &database.db;
        user(db, "admin", Role::Admin).await;
        let router = app(state(db));
        let admin = Client::login(&router, "admin", PASSWORD).await;
        let mut projects = Vec::new();
        for (index, payload) in PAYLOADS.iter().enumerate() {
            projects.push((*payload, seed_payload(db, &admin, index, payload).await));
        }
        for &(payload, id) in &projects {
            annotate_payload(&router, payload, id).await;
        }
        let listed = get(&admin, "/projects").await;
        assert_inert(&listed.body, false, "/projects");
        let overview = get(&admin, "/admin").await;
        expect_status(&overview, StatusCode::OK, "/admin");
        assert_inert(&overview.body, false, "/admin");
        for &(payload, id) in &projects {
            assert!(
                listed.body.contains(&escaped(payload)),
                "{backend:?}: {payload} not listed"
            );
            check_admin_views(&admin, &overview, payload, id).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_the_security_headers() {
    for backend in BACKENDS {
        let database = TestDatabase::new(backend).await;
        let router = app(state(&database.db));
        let anonymous = Client::new(router);
        // A page, a redirect, a JSON error, a static file, a 404 of the router's fallback, a 405.
        for uri in [
            "/login",
            "/",
            "/api/projects/1/progress",
            "/static/annotate.js",
            "/nowhere",
        ] {
            let reply = get(&anonymous, uri).await;
            assert_ne!(
                reply.status,
                StatusCode::INTERNAL_SERVER_ERROR,
                "{backend:?} {uri}"
            );
        }
        let refused = write_json(&anonymous, "POST", "/api/projects/1/claim", &json!({})).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{backend:?}");
        let wrong_method = send(
            &anonymous,
            "DELETE",
            "/login",
            &[],
            "text/plain",
            String::new(),
        )
        .await;
        assert_eq!(
            wrong_method.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{backend:?}"
        );
    }
}

/// A plain import line (not a payload).
fn plain_line(id: &str) -> String {
    json!({"id": id, "prompt": [{"role": "user", "content": "q"}],
           "responses": [{"content": "a"}, {"content": "b"}]})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_requests_get_401_or_the_login_page_and_change_nothing() {
    for backend in BACKENDS {
        let database = TestDatabase::new(backend).await;
        let db = &database.db;
        let id = project(db, "open", 1, 1, 2).await.id;
        let anonymous = Client::new(app(state(db)));
        let before = table_counts(db).await;
        for (method, uri) in [
            ("POST", format!("/api/projects/{id}/claim")),
            ("POST", "/api/slots/1/heartbeat".to_string()),
            ("PUT", "/api/slots/1/draft".to_string()),
            ("POST", "/api/slots/1/submit".to_string()),
            ("POST", "/api/slots/1/skip".to_string()),
        ] {
            let reply = write_json(&anonymous, method, &uri, &json!({"lease_token": "x"})).await;
            expect_status(
                &reply,
                StatusCode::UNAUTHORIZED,
                &format!("{backend:?} {uri}"),
            );
            assert!(reply.json()["error"].is_string(), "{}", reply.body);
        }
        let progress = get(&anonymous, &format!("/api/projects/{id}/progress")).await;
        expect_status(&progress, StatusCode::UNAUTHORIZED, "progress");
        for uri in [
            "/".to_string(),
            "/projects".to_string(),
            format!("/projects/{id}/annotate"),
            "/admin".to_string(),
            format!("/admin/projects/{id}"),
            format!("/admin/projects/{id}/export.jsonl"),
        ] {
            assert_redirect_to_login(&get(&anonymous, &uri).await, &uri);
        }
        let forms: [(String, &[(&str, &str)]); 4] = [
            (
                "/admin/projects".into(),
                &[
                    ("name", "sneaky"),
                    ("overlap", "1"),
                    ("lease_seconds", "60"),
                ],
            ),
            (
                "/admin/users".into(),
                &[
                    ("username", "sneaky"),
                    ("password", PASSWORD),
                    ("role", "admin"),
                ],
            ),
            (
                format!("/admin/projects/{id}/guidelines"),
                &[("guidelines", "sneaky")],
            ),
            ("/logout".into(), &[]),
        ];
        for (uri, fields) in forms {
            assert_redirect_to_login(&post_form(&anonymous, &uri, fields).await, &uri);
        }
        assert_redirect_to_login(
            &upload(&anonymous, id, "", &plain_line("sneaky")).await,
            "import",
        );
        assert_eq!(table_counts(db).await, before, "{backend:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotators_are_refused_on_admin_routes_and_nothing_changes() {
    for backend in BACKENDS {
        let database = TestDatabase::new(backend).await;
        let db = &database.db;
        user(db, "alice", Role::Annotator).await;
        let id = project(db, "guarded", 1, 1, 2).await.id;
        let alice = Client::login(&app(state(db)), "alice", PASSWORD).await;
        let csrf = alice.csrf.clone().unwrap();
        let before = table_counts(db).await;
        for uri in [
            "/admin".to_string(),
            format!("/admin/projects/{id}"),
            format!("/admin/projects/{id}/export.jsonl"),
        ] {
            expect_status(&get(&alice, &uri).await, StatusCode::FORBIDDEN, &uri);
        }
        // With alice's own, valid CSRF token: the role is what refuses them.
        let forms: [(String, &[(&str, &str)]); 3] = [
            (
                "/admin/projects".into(),
                &[("name", "mine"), ("overlap", "1"), ("lease_seconds", "60")],
            ),
            (
                "/admin/users".into(),
                &[
                    ("username", "eve"),
                    ("password", PASSWORD),
                    ("role", "admin"),
                ],
            ),
            (
                format!("/admin/projects/{id}/guidelines"),
                &[("guidelines", "replaced")],
            ),
        ];
        for (uri, fields) in forms {
            let mut fields = fields.to_vec();
            fields.push(("csrf", &csrf));
            let reply = post_form(&alice, &uri, &fields).await;
            expect_status(&reply, StatusCode::FORBIDDEN, &format!("{backend:?} {uri}"));
        }
        let reply = upload(&alice, id, &csrf, &plain_line("mine")).await;
        expect_status(
            &reply,
            StatusCode::FORBIDDEN,
            &format!("{backend:?} import"),
        );
        assert_eq!(table_counts(db).await, before, "{backend:?}");
        let guidelines = db.project(id).await.unwrap().guidelines;
        assert_eq!(guidelines, "Rank by **correctness**.", "{backend:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_annotator_cannot_touch_another_annotators_slot_or_read_her_submission() {
    for backend in BACKENDS {
        let database = TestDatabase::new(backend).await;
        let db = &database.db;
        user(db, "alice", Role::Annotator).await;
        user(db, "bob", Role::Annotator).await;
        let id = project(db, "shared", 1, 2, 2).await.id;
        let pair = project(db, "pair", 2, 1, 2).await.id;
        let router = app(state(db));
        let alice = Client::login(&router, "alice", PASSWORD).await;
        let bob = Client::login(&router, "bob", PASSWORD).await;

        // bob on alice's slot (another item): 404 or 409 with his own lease token or hers, and
        // her lease, her draft and every table stay as they were.
        let alice_task = common::claim(&alice, id).await;
        let alice_slot = alice_task["slot_id"].as_i64().unwrap();
        let draft = json!({"lease_token": alice_task["lease_token"], "draft": {"note": "alice's"}});
        let saved = write_json(
            &alice,
            "PUT",
            &format!("/api/slots/{alice_slot}/draft"),
            &draft,
        )
        .await;
        expect_status(&saved, StatusCode::OK, "alice's draft");
        let bob_task = common::claim(&bob, id).await;
        assert_ne!(bob_task["item"]["id"], alice_task["item"]["id"]);
        let alice_before = slot_and_drafts(db, alice_slot).await;
        let counts_before = table_counts(db).await;
        for token in [&bob_task["lease_token"], &alice_task["lease_token"]] {
            let mut submission = answer(&alice_task, "bob-on-alice");
            submission["lease_token"] = token.clone();
            for (method, path, body) in [
                ("POST", "heartbeat", json!({"lease_token": token})),
                (
                    "PUT",
                    "draft",
                    json!({"lease_token": token, "draft": {"note": "bob's"}}),
                ),
                (
                    "POST",
                    "skip",
                    json!({"lease_token": token, "reason": "bob skips alice"}),
                ),
                ("POST", "submit", submission),
            ] {
                let uri = format!("/api/slots/{alice_slot}/{path}");
                let reply = write_json(&bob, method, &uri, &body).await;
                assert_not_found_or_conflict(&reply, &format!("{backend:?} bob {path}"));
            }
        }
        assert_eq!(
            slot_and_drafts(db, alice_slot).await,
            alice_before,
            "{backend:?}"
        );
        assert_eq!(table_counts(db).await, counts_before, "{backend:?}");

        // bob cannot read alice's result through her submission_id: not with his own answer on
        // his slot, not by replaying her request on hers.
        let alice_body = answer(&alice_task, "alice-answer");
        let alice_uri = format!("/api/slots/{alice_slot}/submit");
        let stored = write_json(&alice, "POST", &alice_uri, &alice_body).await;
        expect_status(&stored, StatusCode::OK, "alice submits");
        let bob_uri = format!("/api/slots/{}/submit", bob_task["slot_id"]);
        let reused = write_json(&bob, "POST", &bob_uri, &answer(&bob_task, "alice-answer")).await;
        let replayed = write_json(&bob, "POST", &alice_uri, &alice_body).await;
        for reply in [&reused, &replayed] {
            assert_not_found_or_conflict(reply, &format!("{backend:?} bob reuses alice's id"));
            assert!(
                !reply.body.contains("annotation_id"),
                "{backend:?}: {}",
                reply.body
            );
        }
        let own = write_json(&bob, "POST", &bob_uri, &answer(&bob_task, "bob-answer")).await;
        expect_status(&own, StatusCode::OK, "bob's own submission");
        let sql = "SELECT COUNT(*) FROM annotations WHERE project_id = $1";
        assert_eq!(integer(db, sql, &[id]).await, 2, "{backend:?}");

        // The same item, k = 2: bob was given it too (on the other slot), so an answer he sends
        // to alice's slot is refused with 409 naming his own slot; alice's slot, lease and
        // answer stay hers.
        let alice_pair = common::claim(&alice, pair).await;
        let bob_pair = common::claim(&bob, pair).await;
        assert_eq!(alice_pair["item"]["id"], bob_pair["item"]["id"]);
        let pair_uri = format!("/api/slots/{}/submit", alice_pair["slot_id"]);
        let alice_pair_slot = alice_pair["slot_id"].as_i64().unwrap();
        let before = slot_and_drafts(db, alice_pair_slot).await;
        let crossed = write_json(&bob, "POST", &pair_uri, &answer(&bob_pair, "bob-crossed")).await;
        expect_status(
            &crossed,
            StatusCode::CONFLICT,
            "bob submits to alice's slot",
        );
        assert!(
            crossed.body.contains("submit to your slot"),
            "{}",
            crossed.body
        );
        assert_eq!(
            slot_and_drafts(db, alice_pair_slot).await,
            before,
            "{backend:?}"
        );
        let alice_submits =
            write_json(&alice, "POST", &pair_uri, &answer(&alice_pair, "a-pair")).await;
        expect_status(&alice_submits, StatusCode::OK, "alice submits the pair");
        assert_eq!(alice_submits.json()["over_quota"], false, "{backend:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonexistent_ids_are_404() {
    for backend in BACKENDS {
        let database = TestDatabase::new(backend).await;
        let db = &database.db;
        user(db, "admin", Role::Admin).await;
        let id = project(db, "real", 1, 1, 2).await.id;
        let router = app(state(db));
        let admin = Client::login(&router, "admin", PASSWORD).await;
        let csrf = admin.csrf.clone().unwrap();
        // A real lease, so that only the id is wrong.
        let task = common::claim(&admin, id).await;
        let token = &task["lease_token"];
        for (method, uri, body) in [
            ("POST", format!("/api/projects/{MISSING}/claim"), json!({})),
            (
                "POST",
                format!("/api/slots/{MISSING}/heartbeat"),
                json!({"lease_token": token}),
            ),
            (
                "PUT",
                format!("/api/slots/{MISSING}/draft"),
                json!({"lease_token": token, "draft": {}}),
            ),
            (
                "POST",
                format!("/api/slots/{MISSING}/skip"),
                json!({"lease_token": token, "reason": "r"}),
            ),
            (
                "POST",
                format!("/api/slots/{MISSING}/submit"),
                answer(&task, "missing-slot"),
            ),
        ] {
            let reply = write_json(&admin, method, &uri, &body).await;
            expect_status(&reply, StatusCode::NOT_FOUND, &format!("{backend:?} {uri}"));
        }
        for uri in [
            format!("/api/projects/{MISSING}/progress"),
            format!("/projects/{MISSING}/annotate"),
            format!("/admin/projects/{MISSING}"),
            format!("/admin/projects/{MISSING}/export.jsonl"),
        ] {
            let reply = get(&admin, &uri).await;
            expect_status(&reply, StatusCode::NOT_FOUND, &format!("{backend:?} {uri}"));
        }
        let uri = format!("/admin/projects/{MISSING}/guidelines");
        let reply = post_form(&admin, &uri, &[("csrf", &csrf), ("guidelines", "x")]).await;
        expect_status(&reply, StatusCode::NOT_FOUND, &format!("{backend:?} {uri}"));
        let reply = upload(&admin, MISSING, &csrf, &plain_line("lost")).await;
        expect_status(
            &reply,
            StatusCode::NOT_FOUND,
            &format!("{backend:?} import"),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_writes_need_the_csrf_header() {
    for backend in BACKENDS {
        let database = TestDatabase::new(backend).await;
        let db = &database.db;
        user(db, "admin", Role::Admin).await;
        let id = project(db, "csrf", 1, 1, 2).await.id;
        let admin = Client::login(&app(state(db)), "admin", PASSWORD).await;
        let csrf = admin.csrf.clone().unwrap();
        let without = Client {
            csrf: None,
            ..admin.clone()
        };
        let wrong = Client {
            csrf: Some("0".repeat(csrf.len())),
            ..admin.clone()
        };

        let claim_uri = format!("/api/projects/{id}/claim");
        for client in [&without, &wrong] {
            let reply = write_json(client, "POST", &claim_uri, &json!({})).await;
            expect_status(&reply, StatusCode::FORBIDDEN, &format!("{backend:?} claim"));
        }
        let leased = "SELECT COUNT(*) FROM slots WHERE project_id = $1 AND state = 'leased'";
        assert_eq!(integer(db, leased, &[id]).await, 0, "{backend:?}");
        // Reads need no token.
        let progress = get(&without, &format!("/api/projects/{id}/progress")).await;
        expect_status(&progress, StatusCode::OK, "progress");

        let task = common::claim(&admin, id).await;
        let slot = task["slot_id"].as_i64().unwrap();
        let tables = table_counts(db).await;
        let lease = slot_and_drafts(db, slot).await;
        let token = &task["lease_token"];
        for client in [&without, &wrong] {
            for (method, path, body) in [
                ("POST", "heartbeat", json!({"lease_token": token})),
                (
                    "PUT",
                    "draft",
                    json!({"lease_token": token, "draft": {"a": 1}}),
                ),
                ("POST", "skip", json!({"lease_token": token, "reason": "r"})),
                ("POST", "submit", answer(&task, "csrf-less")),
            ] {
                let uri = format!("/api/slots/{slot}/{path}");
                let reply = write_json(client, method, &uri, &body).await;
                expect_status(
                    &reply,
                    StatusCode::FORBIDDEN,
                    &format!("{backend:?} {path}"),
                );
            }
        }
        assert_eq!(table_counts(db).await, tables, "{backend:?}");
        assert_eq!(slot_and_drafts(db, slot).await, lease, "{backend:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_posts_need_the_csrf_field() {
    for backend in BACKENDS {
        let database = TestDatabase::new(backend).await;
        let db = &database.db;
        user(db, "admin", Role::Admin).await;
        let id = project(db, "csrf", 1, 1, 2).await.id;
        let admin = Client::login(&app(state(db)), "admin", PASSWORD).await;
        let wrong = "0".repeat(admin.csrf.as_ref().unwrap().len());
        let before = table_counts(db).await;
        let forms: [(String, &[(&str, &str)]); 4] = [
            (
                "/admin/projects".into(),
                &[
                    ("name", "forged"),
                    ("overlap", "1"),
                    ("lease_seconds", "60"),
                ],
            ),
            (
                "/admin/users".into(),
                &[
                    ("username", "forged"),
                    ("password", PASSWORD),
                    ("role", "admin"),
                ],
            ),
            (
                format!("/admin/projects/{id}/guidelines"),
                &[("guidelines", "forged")],
            ),
            ("/logout".into(), &[]),
        ];
        for (uri, fields) in &forms {
            for token in [None, Some(wrong.as_str())] {
                let mut fields = fields.to_vec();
                fields.extend(token.map(|token| ("csrf", token)));
                let reply = post_form(&admin, uri, &fields).await;
                let what = format!("{backend:?} {uri} csrf={token:?}");
                expect_status(&reply, StatusCode::FORBIDDEN, &what);
            }
        }
        for token in ["", wrong.as_str()] {
            let reply = upload(&admin, id, token, &plain_line("forged")).await;
            expect_status(
                &reply,
                StatusCode::FORBIDDEN,
                &format!("{backend:?} import"),
            );
        }
        assert_eq!(table_counts(db).await, before, "{backend:?}");
        let guidelines = db.project(id).await.unwrap().guidelines;
        assert_eq!(guidelines, "Rank by **correctness**.", "{backend:?}");
        // The refused logouts left the session alive.
        expect_status(
            &get(&admin, "/projects").await,
            StatusCode::OK,
            "still signed in",
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_writes_are_refused() {
    const FORM: &str = "application/x-www-form-urlencoded";
    for backend in BACKENDS {
        let database = TestDatabase::new(backend).await;
        let db = &database.db;
        user(db, "admin", Role::Admin).await;
        let id = project(db, "origin", 1, 1, 2).await.id;
        let router = app(state(db));
        let admin = Client::login(&router, "admin", PASSWORD).await;
        let csrf = admin.csrf.clone().unwrap();
        let claim_uri = format!("/api/projects/{id}/claim");
        // A login that would go through: the login cookie and the form field match.
        let login_page = get(&Client::new(router.clone()), "/login").await;
        let login_cookie = set_cookie(&login_page, "herd_login_csrf=");
        let login_cookie = login_cookie.split(';').next().unwrap().to_string();
        let login_token = login_cookie.split_once('=').unwrap().1.to_string();
        let login_client = Client {
            cookie: Some(login_cookie),
            ..Client::new(router.clone())
        };
        let login_fields = form_body(&[
            ("username", "admin"),
            ("password", PASSWORD),
            ("csrf", &login_token),
        ]);
        let project_fields = form_body(&[
            ("csrf", &csrf),
            ("name", "cross"),
            ("overlap", "1"),
            ("lease_seconds", "60"),
        ]);
        let before = table_counts(db).await;

        // With the right tokens, a foreign Origin or Sec-Fetch-Site: cross-site → 403.
        let cross_site: [&[(&str, &str)]; 4] = [
            &[("origin", "https://evil.example")],
            &[("origin", "null")],
            &[("sec-fetch-site", "cross-site")],
            &[
                ("origin", "http://localhost"),
                ("sec-fetch-site", "cross-site"),
            ],
        ];
        for headers in cross_site {
            let what = format!("{backend:?} {headers:?}");
            let mut with_token = vec![("x-csrf-token", csrf.as_str())];
            with_token.extend_from_slice(headers);
            let json_body = "{}".to_string();
            let reply = send(
                &admin,
                "POST",
                &claim_uri,
                &with_token,
                "application/json",
                json_body,
            )
            .await;
            expect_status(&reply, StatusCode::FORBIDDEN, &what);
            let reply = send(
                &admin,
                "POST",
                "/admin/projects",
                headers,
                FORM,
                project_fields.clone(),
            )
            .await;
            expect_status(&reply, StatusCode::FORBIDDEN, &what);
            let reply = send(
                &login_client,
                "POST",
                "/login",
                headers,
                FORM,
                login_fields.clone(),
            )
            .await;
            expect_status(&reply, StatusCode::FORBIDDEN, &what);
        }
        assert_eq!(table_counts(db).await, before, "{backend:?}");
        // The same site is let through.
        let same_site = [
            ("x-csrf-token", csrf.as_str()),
            ("origin", "http://localhost"),
            ("sec-fetch-site", "same-origin"),
        ];
        let reply = send(
            &admin,
            "POST",
            &claim_uri,
            &same_site,
            "application/json",
            "{}".into(),
        )
        .await;
        expect_status(&reply, StatusCode::OK, "same-site claim");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_needs_its_csrf_cookie() {
    const FORM: &str = "application/x-www-form-urlencoded";
    for backend in BACKENDS {
        let database = TestDatabase::new(backend).await;
        let db = &database.db;
        user(db, "admin", Role::Admin).await;
        let router = app(state(db));
        // Login without the login CSRF cookie, or with a field that does not match it → 403,
        // though the password is right.
        let fields = form_body(&[
            ("username", "admin"),
            ("password", PASSWORD),
            ("csrf", "abc"),
        ]);
        let anonymous = Client::new(router.clone());
        let no_cookie = send(&anonymous, "POST", "/login", &[], FORM, fields.clone()).await;
        expect_status(
            &no_cookie,
            StatusCode::FORBIDDEN,
            "login without its cookie",
        );
        let mismatched = Client {
            cookie: Some("herd_login_csrf=abd".into()),
            ..anonymous
        };
        let reply = send(&mismatched, "POST", "/login", &[], FORM, fields).await;
        expect_status(
            &reply,
            StatusCode::FORBIDDEN,
            "login with a mismatched field",
        );
        let sessions = integer(db, "SELECT COUNT(*) FROM sessions", &[]).await;
        assert_eq!(sessions, 0, "{backend:?}");
        // With the cookie and a matching field it goes through.
        let matching = Client {
            cookie: Some("herd_login_csrf=abc".into()),
            ..Client::new(router.clone())
        };
        let reply = send(
            &matching,
            "POST",
            "/login",
            &[],
            FORM,
            form_body(&[
                ("username", "admin"),
                ("password", PASSWORD),
                ("csrf", "abc"),
            ]),
        )
        .await;
        expect_status(&reply, StatusCode::SEE_OTHER, "login with its cookie");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_cookies_are_http_only_and_logout_ends_the_session_on_the_server() {
    for backend in BACKENDS {
        let database = TestDatabase::new(backend).await;
        let db = &database.db;
        let alice_user = user(db, "alice", Role::Annotator).await;
        let project = project(db, "sessions", 1, 1, 2).await;
        let router = app(state(db));

        let login_page = get(&Client::new(router.clone()), "/login").await;
        let login_cookie = set_cookie(&login_page, "herd_login_csrf=");
        for attribute in ["HttpOnly", "SameSite="] {
            assert!(
                login_cookie.contains(attribute),
                "{backend:?}: {login_cookie}"
            );
        }
        let (alice, reply) = login_with_reply(&router, "alice").await;
        let session_cookie = set_cookie(&reply, "herd_session=");
        assert!(
            session_cookie.contains("HttpOnly"),
            "{backend:?}: {session_cookie}"
        );
        assert!(
            session_cookie.contains("SameSite=Lax") || session_cookie.contains("SameSite=Strict"),
            "{backend:?}: {session_cookie}"
        );
        assert!(
            !session_cookie.contains("Secure"),
            "{backend:?}: Secure only behind HTTPS"
        );

        // The table holds the token's keyed hash, never the token.
        let token = alice
            .cookie
            .as_ref()
            .unwrap()
            .split_once('=')
            .unwrap()
            .1
            .to_string();
        assert!(token.len() >= 32, "{backend:?}: {token}");
        let rows = sqlx::query("SELECT token_hash FROM sessions WHERE user_id = $1")
            .bind(alice_user.id)
            .fetch_all(db.pool())
            .await
            .unwrap();
        assert_eq!(rows.len(), 1, "{backend:?}");
        let stored: String = rows[0].try_get("token_hash").unwrap();
        assert!(
            !stored.contains(&token),
            "{backend:?}: the raw token is stored"
        );
        assert_eq!(
            stored,
            labeling::web::auth::token_hash(&secret(), &token),
            "{backend:?}"
        );

        // Logout deletes the row: the old cookie is dead.
        let csrf = alice.csrf.clone().unwrap();
        let out = post_form(&alice, "/logout", &[("csrf", &csrf)]).await;
        assert_redirect_to_login(&out, "logout");
        let cleared = set_cookie(&out, "herd_session=");
        assert!(cleared.contains("Max-Age=0"), "{backend:?}: {cleared}");
        assert_eq!(
            integer(db, "SELECT COUNT(*) FROM sessions", &[]).await,
            0,
            "{backend:?}"
        );
        assert_redirect_to_login(&get(&alice, "/projects").await, "old cookie");
        let api = write_json(
            &alice,
            "POST",
            &format!("/api/projects/{}/claim", project.id),
            &json!({}),
        )
        .await;
        assert_eq!(api.status, StatusCode::UNAUTHORIZED, "{backend:?}");

        // Behind HTTPS the cookie is Secure; a session ends after `session_hours`.
        let mut config = WebConfig::new(secret());
        config.secure_cookies = true;
        let secure_state = AppState::new(db.clone(), config);
        let clock = secure_state.clock.clone();
        let hours = secure_state.config.session_hours;
        let secure_router = app(secure_state);
        let (secure, reply) = login_with_reply(&secure_router, "alice").await;
        assert!(
            set_cookie(&reply, "herd_session=").contains("Secure"),
            "{backend:?}"
        );
        clock.advance_ms(hours * 3_600_000 - 60_000);
        assert_eq!(
            get(&secure, "/projects").await.status,
            StatusCode::OK,
            "{backend:?}"
        );
        clock.advance_ms(120_000);
        assert_redirect_to_login(&get(&secure, "/projects").await, "expired session");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_wrong_passwords_are_rate_limited_until_the_window_passes() {
    for backend in BACKENDS {
        let database = TestDatabase::new(backend).await;
        let db = &database.db;
        user(db, "alice", Role::Annotator).await;
        let state = state(db);
        let clock = state.clock.clone();
        let attempts = state.config.login_attempts;
        let window_seconds = state.config.login_window_seconds;
        assert_eq!(attempts, 5, "the documented default");
        let router = app(state);
        let client = Client::new(router.clone());

        // An unknown user is an ordinary failure (and costs a verification, not measured here).
        let unknown = client.try_login("nobody", PASSWORD).await;
        assert_security_headers(&unknown, "login");
        assert_eq!(unknown.status, StatusCode::UNAUTHORIZED, "{backend:?}");
        for attempt in 1..=attempts {
            let reply = client.try_login("alice", "wrong password").await;
            assert_eq!(
                reply.status,
                StatusCode::UNAUTHORIZED,
                "{backend:?} attempt {attempt}"
            );
        }
        for password in ["wrong password", PASSWORD] {
            let limited = client.try_login("alice", password).await;
            assert_security_headers(&limited, "login");
            assert_eq!(
                limited.status,
                StatusCode::TOO_MANY_REQUESTS,
                "{backend:?} {password}"
            );
            let retry_after: i64 = limited.headers[header::RETRY_AFTER]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(
                retry_after > 0 && retry_after <= window_seconds,
                "{backend:?}: {retry_after}"
            );
            assert!(
                limited
                    .headers
                    .get(header::SET_COOKIE)
                    .is_none_or(|value| !value.to_str().unwrap().starts_with("herd_session="))
            );
        }
        assert_eq!(
            integer(db, "SELECT COUNT(*) FROM sessions", &[]).await,
            0,
            "{backend:?}"
        );
        // Another username is not limited by alice's failures.
        assert_eq!(
            client.try_login("nobody", PASSWORD).await.status,
            StatusCode::UNAUTHORIZED
        );
        // The window counts from the first failure (a few real seconds ago at most).
        clock.advance_ms(window_seconds * 1000 - 30_000);
        let still = client.try_login("alice", PASSWORD).await;
        assert_eq!(still.status, StatusCode::TOO_MANY_REQUESTS, "{backend:?}");
        clock.advance_ms(60_000);
        let through = client.try_login("alice", PASSWORD).await;
        assert_eq!(
            through.status,
            StatusCode::SEE_OTHER,
            "{backend:?}: {}",
            through.body
        );
    }
}

#[test]
fn the_server_refuses_a_missing_short_or_low_entropy_secret() {
    // No database is involved: `secret_bytes` decides before the server starts.
    let refused = [
        ("missing", SecretSource::Missing),
        ("short", SecretSource::Given(b"0123456789abcdef".to_vec())),
        ("31 bytes", SecretSource::Given((0..31).collect())),
        ("one byte repeated", SecretSource::Given(vec![b'a'; 64])),
        ("two bytes repeated", SecretSource::Given(b"ab".repeat(32))),
    ];
    for (what, source) in refused {
        let message = secret_bytes(source).expect_err(what).to_string();
        assert!(message.contains("openssl rand"), "{what}: {message}");
    }
    let mut random = vec![0_u8; 32];
    getrandom::fill(&mut random).unwrap();
    let accepted = secret_bytes(SecretSource::Given(random.clone())).unwrap();
    assert_eq!(accepted, random);
    let hex = secret_bytes(SecretSource::Given(
        b"9f86d081884c7d659a2feaa0c55ad015".to_vec(),
    ))
    .unwrap();
    assert_eq!(hex.len(), 32);
    let first = secret_bytes(SecretSource::DevRandom).unwrap();
    let second = secret_bytes(SecretSource::DevRandom).unwrap();
    assert!(first.len() >= 32, "{}", first.len());
    assert_ne!(first, second, "a dev secret is drawn per process");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_files_are_a_fixed_set() {
    for backend in BACKENDS {
        let database = TestDatabase::new(backend).await;
        let anonymous = Client::new(app(state(&database.db)));
        for uri in [
            "/static/../Cargo.toml",
            "/static/%2e%2e%2fCargo.toml",
            "/static/%2E%2E/Cargo.toml",
            "/static/..%2fsrc%2flib.rs",
            "/static/unknown.js",
            "/static/",
            "/static/annotate.js/",
        ] {
            let reply = get(&anonymous, uri).await;
            assert_eq!(reply.status, StatusCode::NOT_FOUND, "{backend:?} {uri}");
            assert!(
                !reply.body.contains("[package]") && !reply.body.contains("pub mod"),
                "{uri}"
            );
        }
        let script = get(&anonymous, "/static/annotate.js").await;
        assert_eq!(script.status, StatusCode::OK, "{backend:?}");
        let content_type = script.headers[header::CONTENT_TYPE].to_str().unwrap();
        assert!(
            content_type.starts_with("text/javascript"),
            "{content_type}"
        );
    }
}

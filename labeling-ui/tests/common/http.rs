//! Support for tests and benchmarks that drive the app over real HTTP: the server bound to
//! `127.0.0.1:0` in a tokio task, annotators as `reqwest` clients with a cookie store that sign in
//! through the login form, the claim → submit loop an annotation page runs (with skips, resent
//! submissions and retries), and the database-side checks that nothing was lost or duplicated
//! (shared/research/labeling.md §4.3).
//!
//! Declared with `#[path = "common/http.rs"] mod http;` by the files that use it; it depends on
//! nothing in `common/mod.rs`, so the load benchmark can include it too.

#![allow(
    dead_code,
    reason = "each test binary and the benchmark use a different part"
)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test support: a failure is the test failing"
)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use labeling::db::Database;
use labeling::import::parse_file;
use labeling::serve::serve;
use labeling::store::projects::{NewProject, Project};
use labeling::store::users::{Role, hash_password};
use labeling::web::WebConfig;
use serde_json::{Value, json};
use sqlx::Row;

/// The password of every annotator these tests create.
pub const PASSWORD: &str = "correct horse battery";

/// How long a client keeps retrying one request through failures before it declares that the
/// app does not recover.
const GIVE_UP_AFTER: Duration = Duration::from_mins(1);

/// A server on a real socket; dropping it stops the server task.
#[derive(Debug)]
pub struct Server {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `database` on a free port of 127.0.0.1 and returns once it listens.
pub async fn start_server(database: Database) -> Server {
    let (bound, address) = tokio::sync::oneshot::channel::<SocketAddr>();
    let secret = b"0123456789abcdef0123456789abcdef-http-test-secret".to_vec();
    let task = tokio::spawn(async move {
        serve(
            database,
            WebConfig::new(secret),
            SocketAddr::from(([127, 0, 0, 1], 0)),
            move |address| {
                let _ = bound.send(address);
            },
        )
        .await
        .expect("server");
    });
    let address = address.await.expect("the server binds");
    Server {
        base: format!("http://{address}"),
        task,
    }
}

/// Creates `count` annotators `{prefix}-{index}` sharing one password hash (one Argon2 run, not
/// `count`), and returns their names.
pub async fn create_annotators(database: &Database, prefix: &str, count: usize) -> Vec<String> {
    let hash = hash_password(PASSWORD).unwrap();
    let mut names = Vec::with_capacity(count);
    for index in 0..count {
        let name = format!("{prefix}-{index:03}");
        database
            .create_user(&name, &hash, Role::Annotator, None, 0)
            .await
            .unwrap();
        names.push(name);
    }
    names
}

/// A project wanting `overlap` annotations per item with `items` items of 2, 3 or 4 candidates,
/// imported through the store in batches of 1000.
pub async fn create_project(
    database: &Database,
    name: &str,
    overlap: i64,
    items: usize,
) -> Project {
    let project = database
        .create_project(
            &NewProject {
                name,
                overlap,
                lease_seconds: 600,
                guidelines: "Rank by **correctness**, then helpfulness.",
            },
            None,
            0,
        )
        .await
        .unwrap();
    for start in (0..items).step_by(1000) {
        let lines: Vec<String> = (start..items.min(start + 1000))
            .map(|item| {
                let responses: Vec<Value> = (0..2 + item % 3)
                    .map(|candidate| {
                        json!({"content": format!("answer {candidate} to question {item}"),
                               "model": "tiny", "round": 1})
                    })
                    .collect();
                json!({"id": format!("item-{item}"),
                       "prompt": [{"role": "user", "content": format!("question {item}?")}],
                       "responses": responses})
                .to_string()
            })
            .collect();
        let parsed = parse_file(&lines.join("\n"), "items.jsonl").unwrap();
        database
            .import_items(project.id, &parsed, None, "http test", 0)
            .await
            .unwrap();
    }
    project
}

/// A small deterministic random source (splitmix64), one per annotator, so a failing run can be
/// told apart from another by its seed and the workload needs no extra dependency.
#[derive(Debug, Clone)]
pub struct Dice(u64);

impl Dice {
    /// A source seeded with `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Dice {
        Dice(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = self.0;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^ (mixed >> 31)
    }

    /// True with probability `probability`.
    pub fn chance(&mut self, probability: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1_u64 << 53) as f64) < probability
    }

    /// A number in `0..bound`.
    pub fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound as u64) as usize
    }
}

/// How a simulated annotator behaves.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Chance that an accepted submission is sent once more (a double click, a retry after a
    /// lost response): it must return the same annotation.
    pub resend_probability: f64,
    /// Chance that a task is skipped with a reason instead of ranked.
    pub skip_probability: f64,
    /// Treat connection errors and 5xx answers as retryable (resend the same request, the same
    /// `submission_id`); otherwise the first one fails the test.
    pub retry_failures: bool,
    /// Stop at this instant even if work remains (the benchmark); `None` runs until "done".
    pub deadline: Option<Instant>,
}

/// One submission the server answered 200 to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Who submitted.
    pub annotator: String,
    /// The client-generated id.
    pub submission_id: String,
    /// The annotation the server said it stored.
    pub annotation_id: i64,
    /// The slot submitted to.
    pub slot_id: i64,
}

/// What one or more annotators saw.
#[derive(Debug, Default)]
pub struct Record {
    /// Submissions answered 200 (each once, however often it was sent).
    pub accepted: Vec<Accepted>,
    /// Skips the server acknowledged.
    pub skipped: usize,
    /// Accepted submissions sent a second time on purpose.
    pub resent: usize,
    /// "wait" answers to a claim.
    pub waits: usize,
    /// Connection errors and 5xx answers, retried.
    pub failures: usize,
    /// The distinct failures (`route: message`), with counts.
    pub failure_kinds: BTreeMap<String, usize>,
    /// Requests sent (every attempt).
    pub requests: usize,
    /// Latency of each answered claim.
    pub claim_latency: Vec<Duration>,
    /// Latency of each answered submission (first sends only).
    pub submit_latency: Vec<Duration>,
}

impl Record {
    /// Adds another annotator's record to this one.
    pub fn merge(&mut self, other: Record) {
        self.accepted.extend(other.accepted);
        self.skipped += other.skipped;
        self.resent += other.resent;
        self.waits += other.waits;
        self.failures += other.failures;
        for (kind, count) in other.failure_kinds {
            *self.failure_kinds.entry(kind).or_default() += count;
        }
        self.requests += other.requests;
        self.claim_latency.extend(other.claim_latency);
        self.submit_latency.extend(other.submit_latency);
    }
}

/// An answered request.
#[derive(Debug)]
pub struct Reply {
    /// The status (never 5xx: those are retried or fail the test).
    pub status: u16,
    /// The JSON body.
    pub body: Value,
    /// Whether an earlier attempt of this request failed (its effect may have landed).
    pub retried: bool,
    /// Time of the answered attempt.
    pub latency: Duration,
}

/// A signed-in annotator: a cookie-keeping client and the session's CSRF token.
#[derive(Debug, Clone)]
pub struct Annotator {
    /// The username.
    pub username: String,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    client: reqwest::Client,
    csrf: String,
}

impl Annotator {
    /// Signs in like a browser: `GET /login` sets the `herd_login_csrf` cookie, the form posts the
    /// same value back, and the session's CSRF token is read from `<meta name="csrf-token">` on
    /// `GET /projects`.
    pub async fn login(base: &str, username: &str, password: &str) -> Annotator {
        let client = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let page = client.get(format!("{base}/login")).send().await.unwrap();
        assert_eq!(page.status(), 200, "GET /login");
        let login_csrf = page
            .cookies()
            .find(|cookie| cookie.name() == "herd_login_csrf")
            .expect("GET /login sets herd_login_csrf")
            .value()
            .to_string();
        let signed_in = client
            .post(format!("{base}/login"))
            .form(&[
                ("username", username),
                ("password", password),
                ("csrf", &login_csrf),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(signed_in.status(), 303, "POST /login as {username}");
        let projects = client.get(format!("{base}/projects")).send().await.unwrap();
        assert_eq!(projects.status(), 200, "GET /projects as {username}");
        let html = projects.text().await.unwrap();
        let marker = "name=\"csrf-token\" content=\"";
        let start = html.find(marker).expect("csrf-token meta tag") + marker.len();
        let csrf = html[start..].split('"').next().unwrap().to_string();
        Annotator {
            username: username.to_string(),
            base: base.to_string(),
            client,
            csrf,
        }
    }

    /// Posts JSON with the CSRF header. Connection errors and 5xx answers are retried with the
    /// same body when `plan.retry_failures`, for up to a minute; otherwise they fail the test.
    pub async fn post(&self, path: &str, body: &Value, plan: &Plan, record: &mut Record) -> Reply {
        let url = format!("{}{path}", self.base);
        let mut first_failure: Option<Instant> = None;
        let mut pause = Duration::from_millis(20);
        loop {
            let started = Instant::now();
            record.requests += 1;
            let failure = match self
                .client
                .post(&url)
                .header("x-csrf-token", &self.csrf)
                .json(body)
                .send()
                .await
            {
                Ok(response) => {
                    let status = response.status().as_u16();
                    match response.text().await {
                        Ok(text) if status < 500 => {
                            let body = serde_json::from_str(&text).unwrap_or_else(|error| {
                                panic!("POST {path} → {status}, not JSON ({error}): {text}")
                            });
                            return Reply {
                                status,
                                body,
                                retried: first_failure.is_some(),
                                latency: started.elapsed(),
                            };
                        }
                        Ok(text) => format!("{status} {text}"),
                        Err(error) => format!("{status}, body unreadable: {error}"),
                    }
                }
                Err(error) => format!("connection: {error}"),
            };
            assert!(
                plan.retry_failures,
                "{} POST {path}: {failure}",
                self.username
            );
            let since = *first_failure.get_or_insert_with(Instant::now);
            assert!(
                since.elapsed() < GIVE_UP_AFTER,
                "{} POST {path}: still failing after {GIVE_UP_AFTER:?}, the app did not recover: \
                 {failure}",
                self.username
            );
            record.failures += 1;
            let route = path.rsplit('/').next().unwrap_or(path);
            *record
                .failure_kinds
                .entry(format!("{route}: {failure}"))
                .or_default() += 1;
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// Claims, submits and skips until the server says "done" (or the plan's deadline passes);
    /// `seed` picks the rankings, skips and resends.
    pub async fn annotate(&self, project_id: i64, plan: Plan, seed: u64) -> Record {
        let mut record = Record::default();
        let mut dice = Dice::new(seed);
        let mut submitted = 0_usize;
        let mut waits_in_a_row = 0_usize;
        loop {
            if plan
                .deadline
                .is_some_and(|deadline| Instant::now() >= deadline)
            {
                return record;
            }
            let claim = self
                .post(
                    &format!("/api/projects/{project_id}/claim"),
                    &json!({}),
                    &plan,
                    &mut record,
                )
                .await;
            assert_eq!(claim.status, 200, "{} claim: {}", self.username, claim.body);
            record.claim_latency.push(claim.latency);
            match claim.body["status"].as_str() {
                Some("done") => return record,
                Some("wait") => {
                    record.waits += 1;
                    waits_in_a_row += 1;
                    assert!(
                        waits_in_a_row < 5000,
                        "{}: told to wait 5000 times in a row",
                        self.username
                    );
                    tokio::time::sleep(Duration::from_millis(2 + dice.below(10) as u64)).await;
                    continue;
                }
                Some("assigned") => waits_in_a_row = 0,
                _ => panic!("{} claim: unexpected answer {}", self.username, claim.body),
            }
            let task = &claim.body["task"];
            let slot_id = task["slot_id"].as_i64().unwrap();
            if dice.chance(plan.skip_probability) {
                self.skip(slot_id, task, &plan, &mut record).await;
                continue;
            }
            submitted += 1;
            let submission_id = format!(
                "{}-{submitted}-{:08x}",
                self.username,
                dice.next_u64() as u32
            );
            let body = random_answer(task, &submission_id, &mut dice);
            let path = format!("/api/slots/{slot_id}/submit");
            let reply = self.post(&path, &body, &plan, &mut record).await;
            assert_eq!(
                reply.status, 200,
                "{} submit: {}",
                self.username, reply.body
            );
            assert_eq!(reply.body["late"], false, "{}", reply.body);
            assert_eq!(reply.body["over_quota"], false, "{}", reply.body);
            record.submit_latency.push(reply.latency);
            let annotation_id = reply.body["annotation_id"].as_i64().unwrap();
            if dice.chance(plan.resend_probability) {
                record.resent += 1;
                let again = self.post(&path, &body, &plan, &mut record).await;
                assert_eq!(
                    again.status, 200,
                    "{} resubmit: {}",
                    self.username, again.body
                );
                assert_eq!(
                    again.body["annotation_id"], annotation_id,
                    "{}: the same submission twice must be one annotation",
                    self.username
                );
            }
            record.accepted.push(Accepted {
                annotator: self.username.clone(),
                submission_id,
                annotation_id,
                slot_id,
            });
        }
    }

    async fn skip(&self, slot_id: i64, task: &Value, plan: &Plan, record: &mut Record) {
        let body = json!({"lease_token": task["lease_token"], "reason": "prompt is ambiguous"});
        let reply = self
            .post(&format!("/api/slots/{slot_id}/skip"), &body, plan, record)
            .await;
        // A retried skip whose first attempt landed finds the lease gone: that is a skip too.
        assert!(
            reply.status == 200 || (reply.retried && reply.status == 409),
            "{} skip: {} {}",
            self.username,
            reply.status,
            reply.body
        );
        record.skipped += 1;
    }
}

/// Signs every name in concurrently (the server's Argon2 checks run on its blocking threads).
pub async fn login_all(base: &str, names: &[String]) -> Vec<Annotator> {
    let tasks: Vec<_> = names
        .iter()
        .map(|name| {
            let base = base.to_string();
            let name = name.clone();
            tokio::spawn(async move { Annotator::login(&base, &name, PASSWORD).await })
        })
        .collect();
    let mut annotators = Vec::with_capacity(tasks.len());
    for task in tasks {
        annotators.push(task.await.expect("a login panicked"));
    }
    annotators
}

/// A valid submission for `task`: a random ranking of its candidates, random strengths,
/// occasionally "all bad".
pub fn random_answer(task: &Value, submission_id: &str, dice: &mut Dice) -> Value {
    let mut ranking: Vec<i64> = task["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|candidate| candidate["id"].as_i64().unwrap())
        .collect();
    for index in (1..ranking.len()).rev() {
        ranking.swap(index, dice.below(index + 1));
    }
    let levels = [
        "significantly_better",
        "better",
        "slightly_better",
        "marginally_better",
        "tie",
    ];
    let strengths: Vec<&str> = (1..ranking.len())
        .map(|_| levels[dice.below(levels.len())])
        .collect();
    json!({
        "lease_token": task["lease_token"], "submission_id": submission_id,
        "ranking": ranking, "strengths": strengths, "all_bad": dice.chance(0.05),
        "not_rankable": false, "edited": null, "time_spent_ms": 1000 + dice.below(60_000),
    })
}

/// Runs every annotator's loop concurrently (one tokio task each) and merges what they saw.
pub async fn annotate_all(annotators: &[Annotator], project_id: i64, plans: &[Plan]) -> Record {
    let tasks: Vec<_> = annotators
        .iter()
        .zip(plans)
        .enumerate()
        .map(|(index, (annotator, plan))| {
            let annotator = annotator.clone();
            let plan = *plan;
            tokio::spawn(
                async move { annotator.annotate(project_id, plan, index as u64 + 1).await },
            )
        })
        .collect();
    let mut record = Record::default();
    for task in tasks {
        record.merge(task.await.expect("an annotator's loop panicked"));
    }
    record
}

async fn count(database: &Database, sql: &str, project_id: i64) -> i64 {
    sqlx::query(sql)
        .bind(project_id)
        .fetch_one(database.pool())
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"))
        .try_get("n")
        .unwrap()
}

/// Asserts from the database itself, after every annotator said "done":
/// - every item has exactly `overlap` submitted slots, `overlap` annotations within quota, and a
///   matching `submitted_count`; no annotation is late or over quota (leases never expired);
/// - no annotator has two annotations for one item, or an annotation for an item they skipped;
/// - every submitted slot has the annotation of the annotator it names;
/// - the annotations are exactly the submissions answered 200, each once, with the id the client
///   was given (nothing lost, nothing duplicated);
/// - no lease is left; the skips are the acknowledged ones;
/// - the audit log has one `submit` entry per annotation and one `skip` entry per skip.
pub async fn assert_complete_and_consistent(
    database: &Database,
    project_id: i64,
    overlap: i64,
    record: &Record,
) {
    let items = assert_every_item_has_k(database, project_id, overlap).await;
    assert_no_broken_invariant(database, project_id).await;
    let annotation_ids = assert_stored_exactly_the_accepted(database, project_id, record).await;
    assert_eq!(
        annotation_ids.len(),
        items * usize::try_from(overlap).unwrap(),
        "annotations"
    );
    assert_audited(database, project_id, &annotation_ids, record.skipped).await;
}

/// Each item's slots, submitted slots, `submitted_count` and in-quota annotations are `overlap`;
/// returns the number of items.
async fn assert_every_item_has_k(database: &Database, project_id: i64, overlap: i64) -> usize {
    let items = sqlx::query(
        "SELECT i.external_id, i.submitted_count, \
           (SELECT COUNT(*) FROM slots s WHERE s.item_id = i.id) AS slots, \
           (SELECT COUNT(*) FROM slots s WHERE s.item_id = i.id AND s.state = 'submitted') AS submitted, \
           (SELECT COUNT(*) FROM annotations a WHERE a.item_id = i.id AND a.over_quota = 0) AS annotations \
         FROM items i WHERE i.project_id = $1",
    )
    .bind(project_id)
    .fetch_all(database.pool())
    .await
    .unwrap();
    assert!(!items.is_empty());
    for item in &items {
        let name: String = item.try_get("external_id").unwrap();
        for column in ["submitted_count", "slots", "submitted", "annotations"] {
            let value: i64 = item.try_get(column).unwrap();
            assert_eq!(value, overlap, "item {name}: {column}");
        }
    }
    items.len()
}

/// Rows that must not exist.
async fn assert_no_broken_invariant(database: &Database, project_id: i64) {
    let checks = [
        (
            "annotations late or over quota",
            "SELECT COUNT(*) AS n FROM annotations WHERE project_id = $1 AND (late <> 0 OR over_quota <> 0)",
        ),
        (
            "(item, annotator) pairs with two annotations",
            "SELECT COUNT(*) AS n FROM (SELECT item_id, annotator_id FROM annotations \
             WHERE project_id = $1 GROUP BY item_id, annotator_id HAVING COUNT(*) > 1) AS twice",
        ),
        (
            "slots with two annotations",
            "SELECT COUNT(*) AS n FROM (SELECT slot_id FROM annotations WHERE project_id = $1 \
             AND slot_id IS NOT NULL GROUP BY slot_id HAVING COUNT(*) > 1) AS twice",
        ),
        (
            "submitted slots without their annotator's annotation",
            "SELECT COUNT(*) AS n FROM slots s WHERE s.project_id = $1 AND s.state = 'submitted' \
             AND NOT EXISTS (SELECT 1 FROM annotations a WHERE a.slot_id = s.id \
                             AND a.annotator_id = s.annotator_id)",
        ),
        (
            "annotations of skipped items",
            "SELECT COUNT(*) AS n FROM skips k JOIN annotations a \
             ON a.item_id = k.item_id AND a.annotator_id = k.annotator_id WHERE k.project_id = $1",
        ),
        (
            "leases left",
            "SELECT COUNT(*) AS n FROM slots WHERE project_id = $1 AND state = 'leased'",
        ),
    ];
    for (what, sql) in checks {
        assert_eq!(count(database, sql, project_id).await, 0, "{what}");
    }
}

/// The stored annotations are exactly the accepted submissions, each with the annotation id,
/// slot and annotator the client was told; returns the annotation ids, sorted.
async fn assert_stored_exactly_the_accepted(
    database: &Database,
    project_id: i64,
    record: &Record,
) -> Vec<i64> {
    let stored: HashMap<String, (i64, Option<i64>, String)> = sqlx::query(
        "SELECT a.id, a.submission_id, a.slot_id, u.username FROM annotations a \
         JOIN users u ON u.id = a.annotator_id WHERE a.project_id = $1",
    )
    .bind(project_id)
    .fetch_all(database.pool())
    .await
    .unwrap()
    .iter()
    .map(|row| {
        (
            row.try_get("submission_id").unwrap(),
            (
                row.try_get("id").unwrap(),
                row.try_get("slot_id").unwrap(),
                row.try_get("username").unwrap(),
            ),
        )
    })
    .collect();
    let mut accepted_ids = HashMap::new();
    for accepted in &record.accepted {
        assert!(
            accepted_ids
                .insert(accepted.submission_id.clone(), accepted.annotation_id)
                .is_none(),
            "{}: accepted twice by the client loop",
            accepted.submission_id
        );
        let (annotation_id, slot_id, annotator) = stored
            .get(&accepted.submission_id)
            .unwrap_or_else(|| panic!("{}: answered 200 but not stored", accepted.submission_id));
        assert_eq!(
            *annotation_id, accepted.annotation_id,
            "{}",
            accepted.submission_id
        );
        assert_eq!(
            *slot_id,
            Some(accepted.slot_id),
            "{}",
            accepted.submission_id
        );
        assert_eq!(*annotator, accepted.annotator, "{}", accepted.submission_id);
    }
    let unacknowledged: Vec<&String> = stored
        .keys()
        .filter(|submission_id| !accepted_ids.contains_key(*submission_id))
        .collect();
    assert!(
        unacknowledged.is_empty(),
        "stored but never answered 200: {unacknowledged:?}"
    );
    let mut annotation_ids: Vec<i64> = stored.values().map(|(id, _, _)| *id).collect();
    annotation_ids.sort_unstable();
    annotation_ids
}

/// One `submit` audit entry per annotation (by id), and the skips stored, acknowledged and
/// audited agree.
async fn assert_audited(
    database: &Database,
    project_id: i64,
    annotation_ids: &[i64],
    skipped: usize,
) {
    let mut audited: Vec<i64> = sqlx::query(
        "SELECT detail_json FROM audit_log WHERE action = 'submit' AND project_id = $1",
    )
    .bind(project_id)
    .fetch_all(database.pool())
    .await
    .unwrap()
    .iter()
    .map(|row| {
        let detail: String = row.try_get("detail_json").unwrap();
        serde_json::from_str::<Value>(&detail).unwrap()["annotation_id"]
            .as_i64()
            .unwrap()
    })
    .collect();
    audited.sort_unstable();
    assert_eq!(audited, annotation_ids, "one audit entry per annotation");
    let skips = count(
        database,
        "SELECT COUNT(*) AS n FROM skips WHERE project_id = $1",
        project_id,
    )
    .await;
    assert_eq!(
        skips,
        i64::try_from(skipped).unwrap(),
        "skips stored vs acknowledged"
    );
    let skip_entries = count(
        database,
        "SELECT COUNT(*) AS n FROM audit_log WHERE action = 'skip' AND project_id = $1",
        project_id,
    )
    .await;
    assert_eq!(skip_entries, skips, "one audit entry per skip");
}

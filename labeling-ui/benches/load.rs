//! Load benchmark of the labeling server: N annotators, each a keep-alive HTTP client, loop
//! claim → submit against a real server on a fresh Postgres database for a fixed time; reports
//! submissions/s, requests/s and the p50/p99/max latency of claim and submit, then a markdown
//! table row (date, machine) for the README.
//!
//! ```text
//! cargo bench -p herd-labeling --bench load -- --annotators 50 --seconds 15
//! ```
//! Options (or the environment variables in brackets): `--annotators N` [`HERD_BENCH_ANNOTATORS`,
//! 50], `--seconds S` [`HERD_BENCH_SECONDS`, 15], `--items N` [20000, k = 3], `--sqlite` (the
//! embedded back-end instead), `--analyze` (run Postgres' `ANALYZE` after the import, as
//! autovacuum would within about a minute), `--explain` (print `EXPLAIN ANALYZE` of the hot queries on the
//! loaded tables before the database is dropped). The Postgres server is the tests' one
//! (`HERD_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`).
//!
//! Client, server and Postgres share the machine, so the figures are for the whole system on it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark: a failure ends the run with its message"
)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/http.rs"]
mod http;

use std::time::{Duration, Instant};

use common::{Backend, TestDatabase};
use http::{Plan, annotate_all, create_annotators, create_project, login_all, start_server};
use sqlx::Row;

#[derive(Debug)]
struct Options {
    annotators: usize,
    seconds: u64,
    items: usize,
    backend: Backend,
    explain: bool,
    analyze: bool,
}

impl Options {
    fn parse() -> Options {
        let number = |name: &str, default: u64| {
            std::env::var(name).ok().map_or(default, |value| {
                value.parse().unwrap_or_else(|_| panic!("{name}={value}"))
            })
        };
        let mut options = Options {
            annotators: number("HERD_BENCH_ANNOTATORS", 50) as usize,
            seconds: number("HERD_BENCH_SECONDS", 15),
            items: 20_000,
            backend: Backend::Postgres,
            explain: false,
            analyze: false,
        };
        let mut arguments = std::env::args().skip(1);
        while let Some(argument) = arguments.next() {
            let mut value = |name: &str| -> u64 {
                let text = arguments
                    .next()
                    .unwrap_or_else(|| panic!("{name} needs a value"));
                text.parse()
                    .unwrap_or_else(|_| panic!("{name} {text}: not a number"))
            };
            match argument.as_str() {
                "--annotators" => options.annotators = value("--annotators") as usize,
                "--seconds" => options.seconds = value("--seconds"),
                "--items" => options.items = value("--items") as usize,
                "--sqlite" => options.backend = Backend::Sqlite,
                "--explain" => options.explain = true,
                "--analyze" => options.analyze = true,
                // `cargo bench` adds `--bench`; a filter argument may follow.
                _ => {}
            }
        }
        options
    }
}

/// The `fraction` quantile (nearest rank) of sorted durations, in milliseconds.
fn quantile_ms(sorted: &[Duration], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1000.0
}

fn latency_summary(latencies: &mut [Duration]) -> String {
    latencies.sort_unstable();
    format!(
        "{:.1} / {:.1} / {:.1}",
        quantile_ms(latencies, 0.5),
        quantile_ms(latencies, 0.99),
        quantile_ms(latencies, 1.0)
    )
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string());
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".to_string());
    format!("{cores} cores, {model}, load average {load} before the run")
}

fn today() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .ok()
        .map_or_else(
            || "unknown date".to_string(),
            |output| String::from_utf8_lossy(&output.stdout).trim().to_string(),
        )
}

/// `EXPLAIN ANALYZE` of the claim's pick, the progress line and the live-lease lookup for the
/// first annotator, in a transaction that is rolled back (the pick locks a row).
async fn explain(database: &labeling::db::Database, project_id: i64, annotator_id: i64) {
    let now_ms = labeling::web::Clock::default().now_ms();
    let queries = [
        (
            "claim: pick a slot",
            "SELECT s.id, s.item_id FROM slots s WHERE s.project_id = $1 \
             AND (s.state = 'open' OR (s.state = 'leased' AND s.lease_expires_ms <= $3)) \
             AND NOT EXISTS (SELECT 1 FROM item_annotators a \
                             WHERE a.item_id = s.item_id AND a.annotator_id = $2) \
             ORDER BY s.id LIMIT 1 FOR UPDATE SKIP LOCKED",
        ),
        (
            "progress (every claim and submit)",
            "SELECT \
               (SELECT COUNT(*) FROM annotations WHERE project_id = $1 AND annotator_id = $2) AS mine, \
               (SELECT COUNT(*) FROM slots WHERE project_id = $1 AND state = 'submitted') AS submitted, \
               (SELECT COUNT(*) FROM slots WHERE project_id = $1) AS required \
             WHERE $3 > 0",
        ),
        (
            "claim: live lease",
            "SELECT s.id, s.item_id, s.lease_token, s.lease_expires_ms, a.display_order \
             FROM slots s JOIN item_annotators a ON a.item_id = s.item_id AND a.annotator_id = s.annotator_id \
             WHERE s.project_id = $1 AND s.annotator_id = $2 AND s.state = 'leased' \
             AND s.lease_expires_ms > $3 LIMIT 1",
        ),
    ];
    let mut transaction = database.pool().begin().await.unwrap();
    for (what, sql) in queries {
        let rows = sqlx::query(&format!("EXPLAIN (ANALYZE, BUFFERS) {sql}"))
            .bind(project_id)
            .bind(annotator_id)
            .bind(now_ms)
            .fetch_all(&mut *transaction)
            .await
            .unwrap();
        println!("\n-- {what}");
        for row in rows {
            let line: String = row.try_get(0).unwrap();
            println!("{line}");
        }
    }
    transaction.rollback().await.unwrap();
}

async fn run(options: Options) {
    eprintln!("{options:?}");
    let database = TestDatabase::new(options.backend).await;
    let db = &database.db;
    let started = Instant::now();
    let project = create_project(db, "load", 3, options.items).await;
    eprintln!(
        "imported {} items (k = 3) in {:.1?}",
        options.items,
        started.elapsed()
    );
    if options.analyze && options.backend == Backend::Postgres {
        sqlx::query("ANALYZE").execute(db.pool()).await.unwrap();
    }
    let names = create_annotators(db, "annotator", options.annotators).await;
    let server = start_server(db.clone()).await;
    let annotators = login_all(&server.base, &names).await;
    eprintln!(
        "{} annotators signed in; running {} s",
        annotators.len(),
        options.seconds
    );
    let machine = machine();
    let started = Instant::now();
    let plan = Plan {
        resend_probability: 0.0,
        skip_probability: 0.0,
        retry_failures: false,
        deadline: Some(started + Duration::from_secs(options.seconds)),
    };
    let mut record = annotate_all(&annotators, project.id, &vec![plan; annotators.len()]).await;
    let elapsed = started.elapsed().as_secs_f64();
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM annotations WHERE project_id = $1")
        .bind(project.id)
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(
        stored,
        i64::try_from(record.accepted.len()).unwrap(),
        "annotations stored vs answered 200"
    );
    let submissions_per_second = record.accepted.len() as f64 / elapsed;
    let requests_per_second = record.requests as f64 / elapsed;
    let claim = latency_summary(&mut record.claim_latency);
    let submit = latency_summary(&mut record.submit_latency);
    println!(
        "{} submissions, {} requests in {elapsed:.1} s ({} waits)",
        record.accepted.len(),
        record.requests,
        record.waits
    );
    println!(
        "\n| date | machine | back-end | annotators | submissions/s | requests/s | \
         claim p50 / p99 / max ms | submit p50 / p99 / max ms |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {:?} | {} | {submissions_per_second:.0} | {requests_per_second:.0} | {claim} | {submit} |",
        today(),
        machine,
        options.backend,
        options.annotators
    );
    if options.explain && options.backend == Backend::Postgres {
        let annotator_id: i64 = sqlx::query_scalar("SELECT id FROM users WHERE username = $1")
            .bind(&names[0])
            .fetch_one(db.pool())
            .await
            .unwrap();
        explain(db, project.id, annotator_id).await;
    }
    drop(server);
}

fn main() {
    let options = Options::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(options));
}

//! The database goes away under load and comes back: 50 annotators loop claim → submit through a
//! real server on Postgres, and in the middle the Postgres server itself is restarted
//! (`pg_ctlcluster … restart`). Clients treat connection errors and 5xx answers as retryable and
//! resend the same request (the same `submission_id`); the server's pool reconnects
//! (`test_before_acquire`). Afterwards nothing may be lost or duplicated, and some requests must
//! have failed — otherwise the restart missed the workload and the test proved nothing.
//!
//! One test in its own binary: `cargo test` runs test binaries one after another, so no other test
//! of this crate is using the server while it restarts (anything else connected to it at the time,
//! such as another `cargo test` run in parallel, sees its connections cut). It needs the local
//! cluster under /etc/postgresql and the right to restart it (root, as here and in CI).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code outside #[test] fns: a failure is the test failing"
)]

mod common;
#[path = "common/http.rs"]
mod http;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Backend, TestDatabase};
use http::{
    Plan, annotate_all, assert_complete_and_consistent, create_annotators, create_project,
    login_all, start_server,
};

const ANNOTATORS: usize = 50;
const ITEMS: usize = 400;
const OVERLAP: i64 = 3;
/// Restart once this many annotations are stored (a quarter of the project).
const RESTART_AFTER: i64 = 300;

/// The local cluster `VERSION/main`; dropping it starts the cluster again, so a test that fails
/// between stop and start does not leave Postgres down.
struct Cluster {
    version: String,
}

impl Cluster {
    fn find() -> Cluster {
        let versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
            .expect("/etc/postgresql: this test restarts the local Postgres cluster")
            .filter_map(Result::ok)
            .filter(|entry| entry.path().join("main").is_dir())
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            versions.len(),
            1,
            "one cluster VERSION/main under /etc/postgresql: {versions:?}"
        );
        Cluster {
            version: versions[0].clone(),
        }
    }

    fn control(&self, action: &str) -> std::process::Output {
        Command::new("pg_ctlcluster")
            .args(["--skip-systemctl-redirect", &self.version, "main", action])
            .output()
            .expect("pg_ctlcluster")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // "already running" (exit status 2) is the usual case.
        let _ = self.control("start");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restart_under_load_loses_and_duplicates_nothing() {
    let database = TestDatabase::new(Backend::Postgres).await;
    let cluster = Cluster::find();
    let db = &database.db;
    let project = create_project(db, "restart", OVERLAP, ITEMS).await;
    let names = create_annotators(db, "annotator", ANNOTATORS).await;
    let server = start_server(db.clone()).await;
    let annotators = login_all(&server.base, &names).await;
    let plans: Vec<Plan> = (0..ANNOTATORS)
        .map(|index| Plan {
            resend_probability: 0.05,
            skip_probability: if index % 10 == 0 { 0.1 } else { 0.0 },
            retry_failures: true,
            deadline: None,
        })
        .collect();
    let started = Instant::now();
    let workload = {
        let annotators = annotators.clone();
        let plans = plans.clone();
        let project_id = project.id;
        tokio::spawn(async move { annotate_all(&annotators, project_id, &plans).await })
    };
    loop {
        let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM annotations")
            .fetch_one(db.pool())
            .await
            .unwrap();
        if stored >= RESTART_AFTER {
            break;
        }
        assert!(
            !workload.is_finished(),
            "the workload ended before the restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let restart_at = started.elapsed();
    let restarted = tokio::task::spawn_blocking(move || {
        let output = cluster.control("restart");
        (cluster, output)
    })
    .await
    .unwrap();
    let (_cluster, output) = restarted;
    assert!(
        output.status.success(),
        "pg_ctlcluster restart: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let restarted_at = started.elapsed();
    let record = workload.await.expect("an annotator's loop panicked");
    eprintln!(
        "restart from {restart_at:.1?} to {restarted_at:.1?}; done at {:.1?}: {} submissions \
         ({} resent), {} skips, {} requests, {} failed and retried: {:#?}",
        started.elapsed(),
        record.accepted.len(),
        record.resent,
        record.skipped,
        record.requests,
        record.failures,
        record.failure_kinds
    );
    assert!(
        record.failures > 0,
        "no request failed: the restart did not hit the workload"
    );
    assert_complete_and_consistent(db, project.id, OVERLAP, &record).await;
}

//! Many annotators at once, through a real server and real HTTP clients, on both back-ends
//! (shared/research/labeling.md §4.3, cases 1 and 2): 60 annotators loop claim → submit (some
//! skip, some resend a submission) until the project is done, then the database itself must show
//! every item annotated exactly k times, nothing lost, nothing doubled, no lease left, and an
//! audit entry for every write. Also: five tabs of one annotator claiming at once get one lease,
//! and two races that are still open on Postgres (ignored until fixed; run with `--ignored`): five
//! copies of one submission racing each other, and five tabs claiming the last items.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code outside #[test] fns: a failure is the test failing"
)]

mod common;
#[path = "common/http.rs"]
mod http;

use common::{BACKENDS, Backend, TestDatabase};
use http::{
    Annotator, PASSWORD, Plan, Record, annotate_all, assert_complete_and_consistent,
    create_annotators, create_project, login_all, random_answer, start_server,
};
use serde_json::{Value, json};

const ANNOTATORS: usize = 60;
const ITEMS: usize = 200;
const OVERLAP: i64 = 3;

async fn many_annotators_fill_every_item_exactly_k_times(backend: Backend) {
    let database = TestDatabase::new(backend).await;
    let db = &database.db;
    let project = create_project(db, "crowd", OVERLAP, ITEMS).await;
    let names = create_annotators(db, "annotator", ANNOTATORS).await;
    let server = start_server(db.clone()).await;
    let annotators = login_all(&server.base, &names).await;
    // Every tenth annotator skips a fifth of their tasks; everyone resends a tenth of their
    // submissions (double clicks, retries after a lost answer).
    let plans: Vec<Plan> = (0..ANNOTATORS)
        .map(|index| Plan {
            resend_probability: 0.1,
            skip_probability: if index % 10 == 0 { 0.2 } else { 0.0 },
            retry_failures: false,
            deadline: None,
        })
        .collect();
    let started = std::time::Instant::now();
    let record: Record = annotate_all(&annotators, project.id, &plans).await;
    eprintln!(
        "{backend:?}: {} submissions ({} resent), {} skips, {} waits, {} requests in {:.1?}",
        record.accepted.len(),
        record.resent,
        record.skipped,
        record.waits,
        record.requests,
        started.elapsed()
    );
    assert!(
        record.resent > 0 && record.skipped > 0,
        "the workload exercised resends and skips"
    );
    assert_complete_and_consistent(db, project.id, OVERLAP, &record).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_annotators_on_postgres_fill_every_item_exactly_k_times() {
    many_annotators_fill_every_item_exactly_k_times(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_annotators_on_sqlite_fill_every_item_exactly_k_times() {
    many_annotators_fill_every_item_exactly_k_times(Backend::Sqlite).await;
}

/// Sends the same request from `copies` concurrent tasks of one session and returns the answers.
async fn at_once(annotator: &Annotator, path: &str, body: &Value, copies: usize) -> Vec<Value> {
    let plan = Plan {
        resend_probability: 0.0,
        skip_probability: 0.0,
        retry_failures: false,
        deadline: None,
    };
    let tasks: Vec<_> = (0..copies)
        .map(|_| {
            let annotator = annotator.clone();
            let path = path.to_string();
            let body = body.clone();
            tokio::spawn(async move {
                let reply = annotator
                    .post(&path, &body, &plan, &mut Record::default())
                    .await;
                assert_eq!(reply.status, 200, "{path}: {}", reply.body);
                reply.body
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

/// On both back-ends, one annotator with five tabs and a project of `items` items (k = 2), in
/// rounds: five tabs claim at once (a tab told "wait" asks again, as the page does); all must get
/// the same slot and lease token, and only one slot may be leased; then `copies` copies of the
/// answer race, and all must get the same annotation. Stops after `rounds` rounds, or when every
/// tab hears "done" — which must be exactly when every item is annotated.
async fn five_tabs(items: usize, rounds: usize, copies: usize) {
    for backend in BACKENDS {
        let database = TestDatabase::new(backend).await;
        let db = &database.db;
        let project = create_project(db, "tabs", 2, items).await;
        let names = create_annotators(db, "tabs", 1).await;
        let server = start_server(db.clone()).await;
        let annotator = Annotator::login(&server.base, &names[0], PASSWORD).await;
        let claim_path = format!("/api/projects/{}/claim", project.id);
        let mut dice = http::Dice::new(7);
        let mut round = 0;
        while round < rounds {
            let mut claims = at_once(&annotator, &claim_path, &json!({}), 5).await;
            for claim in &mut claims {
                for _ in 0..1000 {
                    if claim["status"] != "wait" {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    *claim = at_once(&annotator, &claim_path, &json!({}), 1)
                        .await
                        .remove(0);
                }
            }
            if claims.iter().all(|claim| claim["status"] == "done") {
                break;
            }
            let task = &claims[0]["task"];
            for claim in &claims {
                assert_eq!(
                    claim["status"], "assigned",
                    "{backend:?} round {round}: {claim}"
                );
                assert_eq!(
                    claim["task"]["slot_id"], task["slot_id"],
                    "{backend:?} round {round}"
                );
                assert_eq!(
                    claim["task"]["lease_token"], task["lease_token"],
                    "{backend:?} round {round}"
                );
            }
            let leases: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM slots WHERE project_id = $1 AND state = 'leased'",
            )
            .bind(project.id)
            .fetch_one(db.pool())
            .await
            .unwrap();
            assert_eq!(leases, 1, "{backend:?} round {round}: no second slot taken");
            let slot_id = task["slot_id"].as_i64().unwrap();
            let body = random_answer(task, &format!("tab-{round}"), &mut dice);
            let submit_path = format!("/api/slots/{slot_id}/submit");
            let answers = at_once(&annotator, &submit_path, &body, copies).await;
            for answer in &answers {
                assert_eq!(
                    answer["annotation_id"], answers[0]["annotation_id"],
                    "{backend:?} round {round}: one annotation for {copies} copies"
                );
            }
            round += 1;
        }
        assert_eq!(round, rounds.min(items), "{backend:?}: rounds until done");
        let (annotations, given): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM annotations WHERE project_id = $1), \
                    (SELECT COUNT(*) FROM item_annotators a JOIN items i ON i.id = a.item_id \
                     WHERE i.project_id = $1)",
        )
        .bind(project.id)
        .fetch_one(db.pool())
        .await
        .unwrap();
        let rounds_done = i64::try_from(round).unwrap();
        assert_eq!(
            (annotations, given),
            (rounds_done, rounds_done),
            "{backend:?}: every item given was annotated once"
        );
    }
}

/// §4.3 case 2: a refresh or a second tab gets the same live lease, and no second slot is taken
/// (in the middle of a project, where unlocked slots are plenty).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_tabs_claiming_at_once_get_one_lease() {
    five_tabs(200, 20, 1).await;
}

/// The same at the end of a project, when fewer unlocked slots remain than tabs claim: a tab must
/// get the live lease (or "wait"), never "done" while another tab holds the last item.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_tabs_claiming_the_last_items_never_hear_done_while_one_holds_a_lease() {
    five_tabs(10, usize::MAX, 1).await;
}

/// A double click in five tabs: five copies of one submission (same id, same body) racing each
/// other must all get the one stored annotation (README: "the same `submission_id` with the same
/// body returns the same answer").
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_racing_copies_of_one_submission_store_one_annotation() {
    five_tabs(200, 20, 5).await;
}

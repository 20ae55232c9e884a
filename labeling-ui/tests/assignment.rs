//! Assignment through the router, on Postgres and SQLite: lease expiry and late submissions,
//! "never the same item twice", skips, wait versus done, progress counts, drafts, submission
//! validation, the admin export and upload import, and the append-only audit log.
//!
//! Leases expire by moving the app's clock (`state.clock.advance_ms`), never by sleeping. The
//! projects come from `common::project`, whose leases last 600 s.
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

use axum::http::{StatusCode, header};
use common::{
    BACKENDS, Client, PASSWORD, Reply, TestDatabase, answer, claim, import_lines, integer, project,
    state, upload, user,
};
use datasets::records::{PreferenceRecord, Record, Strength};
use labeling::db::Database;
use labeling::store::users::Role;
use labeling::web::app;
use serde_json::{Value, json};
use sqlx::Row;

/// One lease past the 600 s of `common::project`.
const PAST_THE_LEASE_MS: i64 = 600 * 1000 + 1;

/// The whole claim answer (`status`, `task`, `progress`).
async fn claim_reply(client: &Client, project_id: i64) -> Value {
    let reply = client
        .json(
            "POST",
            &format!("/api/projects/{project_id}/claim"),
            &json!({}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.json()
}

/// `(submitted_by_me, project_submitted, project_required)` of a PROGRESS object.
fn progress(body: &Value) -> (i64, i64, i64) {
    let progress = &body["progress"];
    (
        progress["submitted_by_me"].as_i64().unwrap(),
        progress["project_submitted"].as_i64().unwrap(),
        progress["project_required"].as_i64().unwrap(),
    )
}

fn slot_of(task: &Value) -> i64 {
    task["slot_id"].as_i64().unwrap()
}

fn candidate_ids(task: &Value) -> Vec<i64> {
    task["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|candidate| candidate["id"].as_i64().unwrap())
        .collect()
}

async fn submit(client: &Client, slot: i64, body: &Value) -> Reply {
    client
        .json("POST", &format!("/api/slots/{slot}/submit"), body)
        .await
}

async fn heartbeat(client: &Client, slot: i64, lease_token: &Value) -> Reply {
    client
        .json(
            "POST",
            &format!("/api/slots/{slot}/heartbeat"),
            &json!({"lease_token": lease_token}),
        )
        .await
}

/// A slot's lease columns.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SlotRow {
    state: String,
    annotator_id: Option<i64>,
    lease_token: Option<String>,
}

async fn slot_row(db: &Database, slot: i64) -> SlotRow {
    let row = sqlx::query("SELECT state, annotator_id, lease_token FROM slots WHERE id = $1")
        .bind(slot)
        .fetch_one(db.pool())
        .await
        .unwrap();
    SlotRow {
        state: row.try_get("state").unwrap(),
        annotator_id: row.try_get("annotator_id").unwrap(),
        lease_token: row.try_get("lease_token").unwrap(),
    }
}

/// The stored draft of an annotator for an item, if any.
async fn stored_draft(db: &Database, annotator_id: i64) -> Option<Value> {
    sqlx::query("SELECT draft_json FROM drafts WHERE annotator_id = $1")
        .bind(annotator_id)
        .fetch_optional(db.pool())
        .await
        .unwrap()
        .map(|row| serde_json::from_str(&row.try_get::<String, _>("draft_json").unwrap()).unwrap())
}

/// The error message of a JSON error reply.
fn error_message(reply: &Reply) -> String {
    reply.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_goes_to_the_next_claimer_and_the_late_answer_is_kept_over_quota() {
    for backend in BACKENDS {
        let database = TestDatabase::new(backend).await;
        let db = &database.db;
        let alice_user = user(db, "alice", Role::Annotator).await;
        let bob_user = user(db, "bob", Role::Annotator).await;
        let project = project(db, "expiry", 1, 1, 2).await;
        let state = state(db);
        let clock = state.clock.clone();
        let router = app(state);
        let alice = Client::login(&router, "alice", PASSWORD).await;
        let bob = Client::login(&router, "bob", PASSWORD).await;

        let alice_task = claim(&alice, project.id).await;
        let slot = slot_of(&alice_task);
        clock.advance_ms(PAST_THE_LEASE_MS);
        let bob_task = claim(&bob, project.id).await;
        assert_eq!(
            slot_of(&bob_task),
            slot,
            "{backend:?}: bob gets the expired slot"
        );
        assert_eq!(
            bob_task["item"]["id"], alice_task["item"]["id"],
            "{backend:?}"
        );
        assert_ne!(
            bob_task["lease_token"], alice_task["lease_token"],
            "{backend:?}"
        );

        let lost = heartbeat(&alice, slot, &alice_task["lease_token"]).await;
        assert_eq!(
            lost.status,
            StatusCode::CONFLICT,
            "{backend:?}: {}",
            lost.body
        );
        let kept = heartbeat(&bob, slot, &bob_task["lease_token"]).await;
        assert_eq!(kept.status, StatusCode::OK, "{backend:?}: {}", kept.body);

        let late = submit(&alice, slot, &answer(&alice_task, "alice-late")).await;
        assert_eq!(late.status, StatusCode::OK, "{backend:?}: {}", late.body);
        let late = late.json();
        assert_eq!(late["late"], true, "{backend:?}: {late}");
        assert_eq!(late["over_quota"], true, "{backend:?}: {late}");
        // The slot is still bob's: the extra answer did not fill it.
        assert_eq!(slot_row(db, slot).await.state, "leased", "{backend:?}");
        assert_eq!(progress(&late), (1, 0, 1), "{backend:?}: {late}");

        let on_time = submit(&bob, slot, &answer(&bob_task, "bob-on-time")).await;
        assert_eq!(
            on_time.status,
            StatusCode::OK,
            "{backend:?}: {}",
            on_time.body
        );
        let on_time = on_time.json();
        assert_eq!(on_time["late"], false, "{backend:?}: {on_time}");
        assert_eq!(on_time["over_quota"], false, "{backend:?}: {on_time}");
        assert_eq!(progress(&on_time), (1, 1, 1), "{backend:?}: {on_time}");

        // Both answers are stored; the item counts k = 1 submitted, filled by bob.
        let filled = slot_row(db, slot).await;
        assert_eq!(filled.state, "submitted", "{backend:?}");
        assert_eq!(filled.annotator_id, Some(bob_user.id), "{backend:?}");
        let sql = "SELECT COUNT(*) FROM annotations WHERE project_id = $1";
        assert_eq!(integer(db, sql, &[project.id]).await, 2, "{backend:?}");
        let sql = "SELECT COUNT(*) FROM annotations WHERE annotator_id = $1 AND over_quota = 1 \
                   AND late = 1 AND slot_id IS NULL";
        assert_eq!(integer(db, sql, &[alice_user.id]).await, 1, "{backend:?}");
        let sql = "SELECT submitted_count FROM items WHERE project_id = $1";
        assert_eq!(integer(db, sql, &[project.id]).await, 1, "{backend:?}");
        // Nothing is left for either of them.
        assert_eq!(
            claim_reply(&alice, project.id).await["status"],
            "done",
            "{backend:?}"
        );
        assert_eq!(
            claim_reply(&bob, project.id).await["status"],
            "done",
            "{backend:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_nobody_took_is_filled_by_the_late_answer() {
    for backend in BACKENDS {
        let database = TestDatabase::new(backend).await;
        let db = &database.db;
        let alice_user = user(db, "alice", Role::Annotator).await;
        // `kept`: the lease expires and stays in the row. `released`: alice claims again after
        // it expired, which hands her expired lease back to the pool (the slot is open).
        let kept = project(db, "kept", 1, 1, 2).await;
        let released = project(db, "released", 1, 1, 2).await;
        let state = state(db);
        let clock = state.clock.clone();
        let router = app(state);
        let alice = Client::login(&router, "alice", PASSWORD).await;

        let kept_task = claim(&alice, kept.id).await;
        let released_task = claim(&alice, released.id).await;
        clock.advance_ms(PAST_THE_LEASE_MS);
        let again = claim_reply(&alice, released.id).await;
        assert_eq!(
            again["status"], "done",
            "{backend:?}: never the same item twice: {again}"
        );
        assert_eq!(
            slot_row(db, slot_of(&released_task)).await.state,
            "open",
            "{backend:?}"
        );

        for (project, task) in [(&kept, &kept_task), (&released, &released_task)] {
            let slot = slot_of(task);
            let reply = submit(&alice, slot, &answer(task, &format!("late-{}", project.id))).await;
            assert_eq!(reply.status, StatusCode::OK, "{backend:?}: {}", reply.body);
            let body = reply.json();
            assert_eq!(body["late"], true, "{backend:?} {}: {body}", project.name);
            assert_eq!(
                body["over_quota"], false,
                "{backend:?} {}: {body}",
                project.name
            );
            assert_eq!(
                progress(&body),
                (1, 1, 1),
                "{backend:?} {}: {body}",
                project.name
            );
            let row = slot_row(db, slot).await;
            assert_eq!(row.state, "submitted", "{backend:?} {}", project.name);
            assert_eq!(row.annotator_id, Some(alice_user.id), "{backend:?}");
            let sql = "SELECT COUNT(*) FROM annotations WHERE slot_id = $1 AND late = 1 \
                       AND over_quota = 0";
            assert_eq!(
                integer(db, sql, &[slot]).await,
                1,
                "{backend:?} {}",
                project.name
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_tell_wait_from_done_count_progress_and_never_repeat_an_item() {
    for backend in BACKENDS {
        let database = TestDatabase::new(backend).await;
        let db = &database.db;
        user(db, "alice", Role::Annotator).await;
        user(db, "bob", Role::Annotator).await;
        let single = project(db, "single", 1, 1, 2).await;
        let double = project(db, "double", 2, 1, 2).await;
        let state = state(db);
        let clock = state.clock.clone();
        let router = app(state);
        let alice = Client::login(&router, "alice", PASSWORD).await;
        let bob = Client::login(&router, "bob", PASSWORD).await;

        // k = 2, one item: alice gets it once; after her submission she is done and bob gets
        // the same item on the other slot.
        let first = claim_reply(&alice, double.id).await;
        assert_eq!(first["status"], "assigned", "{backend:?}");
        assert_eq!(progress(&first), (0, 0, 2), "{backend:?}: {first}");
        let task = &first["task"];
        let submitted = submit(&alice, slot_of(task), &answer(task, "double-alice")).await;
        assert_eq!(
            submitted.status,
            StatusCode::OK,
            "{backend:?}: {}",
            submitted.body
        );
        assert_eq!(progress(&submitted.json()), (1, 1, 2), "{backend:?}");
        let after = claim_reply(&alice, double.id).await;
        assert_eq!(after["status"], "done", "{backend:?}: {after}");
        assert_eq!(progress(&after), (1, 1, 2), "{backend:?}: {after}");
        let bob_first = claim_reply(&bob, double.id).await;
        assert_eq!(bob_first["status"], "assigned", "{backend:?}: {bob_first}");
        assert_eq!(progress(&bob_first), (0, 1, 2), "{backend:?}: {bob_first}");
        assert_eq!(
            bob_first["task"]["item"]["id"], task["item"]["id"],
            "{backend:?}"
        );
        assert_ne!(slot_of(&bob_first["task"]), slot_of(task), "{backend:?}");

        // k = 1, one item held by alice: bob is told to wait (work exists, someone else holds
        // it, and it comes back if her lease runs out), not that he is done.
        let held = claim(&alice, single.id).await;
        let waiting = claim_reply(&bob, single.id).await;
        assert_eq!(waiting["status"], "wait", "{backend:?}: {waiting}");
        assert!(waiting.get("task").is_none(), "{backend:?}: {waiting}");
        assert_eq!(progress(&waiting), (0, 0, 1), "{backend:?}: {waiting}");
        // Her lease runs out: bob gets the slot, and then alice is done (never the same item).
        clock.advance_ms(PAST_THE_LEASE_MS);
        let taken = claim(&bob, single.id).await;
        assert_eq!(slot_of(&taken), slot_of(&held), "{backend:?}");
        let alice_now = claim_reply(&alice, single.id).await;
        assert_eq!(alice_now["status"], "done", "{backend:?}: {alice_now}");
        let bob_submitted = submit(&bob, slot_of(&taken), &answer(&taken, "single-bob")).await;
        assert_eq!(
            bob_submitted.status,
            StatusCode::OK,
            "{}",
            bob_submitted.body
        );
        assert_eq!(progress(&bob_submitted.json()), (1, 1, 1), "{backend:?}");
        let bob_done = claim_reply(&bob, single.id).await;
        assert_eq!(bob_done["status"], "done", "{backend:?}: {bob_done}");
        assert_eq!(progress(&bob_done), (1, 1, 1), "{backend:?}: {bob_done}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[expect(clippy::too_many_lines, reason = "one skip story, step by step")]
async fn a_skipped_item_goes_to_someone_else_never_back_and_needs_a_reason() {
    for backend in BACKENDS {
        let database = TestDatabase::new(backend).await;
        let db = &database.db;
        let alice_user = user(db, "alice", Role::Annotator).await;
        user(db, "bob", Role::Annotator).await;
        let project = project(db, "skips", 1, 1, 2).await;
        let router = app(state(db));
        let alice = Client::login(&router, "alice", PASSWORD).await;
        let bob = Client::login(&router, "bob", PASSWORD).await;

        let task = claim(&alice, project.id).await;
        let slot = slot_of(&task);
        let skip_uri = format!("/api/slots/{slot}/skip");
        for reason in ["", "   "] {
            let refused = alice
                .json(
                    "POST",
                    &skip_uri,
                    &json!({"lease_token": task["lease_token"], "reason": reason}),
                )
                .await;
            assert_eq!(
                refused.status,
                StatusCode::BAD_REQUEST,
                "{backend:?}: {}",
                refused.body
            );
            assert!(
                error_message(&refused).contains("reason"),
                "{}",
                refused.body
            );
        }
        let missing = alice
            .json(
                "POST",
                &skip_uri,
                &json!({"lease_token": task["lease_token"]}),
            )
            .await;
        assert_eq!(
            missing.status,
            StatusCode::BAD_REQUEST,
            "{backend:?}: {}",
            missing.body
        );
        assert_eq!(
            slot_row(db, slot).await.annotator_id,
            Some(alice_user.id),
            "{backend:?}"
        );
        let sql = "SELECT COUNT(*) FROM skips WHERE project_id = $1";
        assert_eq!(integer(db, sql, &[project.id]).await, 0, "{backend:?}");

        let skipped = alice
            .json(
                "POST",
                &skip_uri,
                &json!({"lease_token": task["lease_token"], "reason": "the prompt is cut off"}),
            )
            .await;
        assert_eq!(
            skipped.status,
            StatusCode::OK,
            "{backend:?}: {}",
            skipped.body
        );
        let skipped = skipped.json();
        assert_eq!(skipped["skipped"], true, "{backend:?}: {skipped}");
        assert_eq!(progress(&skipped), (0, 0, 1), "{backend:?}: {skipped}");
        assert_eq!(slot_row(db, slot).await.state, "open", "{backend:?}");
        let row = sqlx::query("SELECT annotator_id, reason FROM skips WHERE project_id = $1")
            .bind(project.id)
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(
            row.try_get::<i64, _>("annotator_id").unwrap(),
            alice_user.id
        );
        assert_eq!(
            row.try_get::<String, _>("reason").unwrap(),
            "the prompt is cut off"
        );

        // Never back to the skipper; bob gets it.
        let again = claim_reply(&alice, project.id).await;
        assert_eq!(again["status"], "done", "{backend:?}: {again}");
        let bob_task = claim(&bob, project.id).await;
        assert_eq!(slot_of(&bob_task), slot, "{backend:?}");
        assert_eq!(bob_task["item"]["id"], task["item"]["id"], "{backend:?}");
        // The old lease token is dead for alice.
        let stale = alice
            .json(
                "POST",
                &skip_uri,
                &json!({"lease_token": task["lease_token"], "reason": "again"}),
            )
            .await;
        assert_eq!(
            stale.status,
            StatusCode::CONFLICT,
            "{backend:?}: {}",
            stale.body
        );
        let again = claim_reply(&alice, project.id).await;
        assert_eq!(again["status"], "done", "{backend:?}: {again}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[expect(clippy::too_many_lines, reason = "one draft story, step by step")]
async fn drafts_come_back_on_refresh_stay_with_their_owner_and_have_a_size_limit() {
    for backend in BACKENDS {
        let database = TestDatabase::new(backend).await;
        let db = &database.db;
        let alice_user = user(db, "alice", Role::Annotator).await;
        let bob_user = user(db, "bob", Role::Annotator).await;
        let project = project(db, "drafts", 2, 1, 3).await;
        let router = app(state(db));
        let alice = Client::login(&router, "alice", PASSWORD).await;
        let bob = Client::login(&router, "bob", PASSWORD).await;

        let task = claim(&alice, project.id).await;
        assert_eq!(task["draft"], Value::Null, "{backend:?}");
        let slot = slot_of(&task);
        let draft_uri = format!("/api/slots/{slot}/draft");
        let draft =
            json!({"ranking": candidate_ids(&task), "note": "halfway", "nested": {"a": [1, 2]}});
        let saved = alice
            .json(
                "PUT",
                &draft_uri,
                &json!({"lease_token": task["lease_token"], "draft": draft}),
            )
            .await;
        assert_eq!(saved.status, StatusCode::OK, "{backend:?}: {}", saved.body);
        assert_eq!(saved.json(), json!({"saved": true}), "{backend:?}");
        let refreshed = claim(&alice, project.id).await;
        assert_eq!(slot_of(&refreshed), slot, "{backend:?}");
        assert_eq!(refreshed["draft"], draft, "{backend:?}");

        // bob, holding the other slot of the same item, cannot write into alice's slot, with
        // his own lease token or with hers.
        let bob_task = claim(&bob, project.id).await;
        assert_ne!(slot_of(&bob_task), slot);
        for token in [&bob_task["lease_token"], &task["lease_token"]] {
            let refused = bob
                .json(
                    "PUT",
                    &draft_uri,
                    &json!({"lease_token": token, "draft": {"note": "bob was here"}}),
                )
                .await;
            assert!(
                matches!(refused.status, StatusCode::NOT_FOUND | StatusCode::CONFLICT),
                "{backend:?}: {} {}",
                refused.status,
                refused.body
            );
        }
        assert_eq!(stored_draft(db, bob_user.id).await, None, "{backend:?}");
        assert_eq!(
            stored_draft(db, alice_user.id).await,
            Some(draft.clone()),
            "{backend:?}"
        );

        // Over 256 KiB (but under the 1 MiB body limit): 400 naming the draft; over 1 MiB: 413.
        // Neither replaces the stored draft.
        let big = json!({"note": "x".repeat(300 * 1024)});
        let too_big = alice
            .json(
                "PUT",
                &draft_uri,
                &json!({"lease_token": task["lease_token"], "draft": big}),
            )
            .await;
        assert_eq!(
            too_big.status,
            StatusCode::BAD_REQUEST,
            "{backend:?}: {}",
            too_big.body
        );
        assert!(
            error_message(&too_big).contains("draft"),
            "{}",
            too_big.body
        );
        let huge = json!({"note": "x".repeat(1100 * 1024)});
        let too_large = alice
            .json(
                "PUT",
                &draft_uri,
                &json!({"lease_token": task["lease_token"], "draft": huge}),
            )
            .await;
        assert_eq!(
            too_large.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{backend:?}"
        );
        assert_eq!(
            stored_draft(db, alice_user.id).await,
            Some(draft.clone()),
            "{backend:?}"
        );

        // Submitting clears the draft.
        let submitted = submit(&alice, slot, &answer(&task, "drafts-alice")).await;
        assert_eq!(
            submitted.status,
            StatusCode::OK,
            "{backend:?}: {}",
            submitted.body
        );
        assert_eq!(stored_draft(db, alice_user.id).await, None, "{backend:?}");
        // A draft after the lease is gone: 409.
        let gone = alice
            .json(
                "PUT",
                &draft_uri,
                &json!({"lease_token": task["lease_token"], "draft": {}}),
            )
            .await;
        assert_eq!(
            gone.status,
            StatusCode::CONFLICT,
            "{backend:?}: {}",
            gone.body
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_submissions_are_refused_naming_the_field() {
    for backend in BACKENDS {
        let database = TestDatabase::new(backend).await;
        let db = &database.db;
        let alice_user = user(db, "alice", Role::Annotator).await;
        let project = project(db, "validation", 1, 1, 3).await;
        let router = app(state(db));
        let alice = Client::login(&router, "alice", PASSWORD).await;
        let task = claim(&alice, project.id).await;
        let slot = slot_of(&task);
        let ids = candidate_ids(&task);
        let (a, b, c) = (ids[0], ids[1], ids[2]);
        let valid = answer(&task, "validation-1");
        let with = |changes: Value| {
            let mut body = valid.clone();
            for (key, value) in changes.as_object().unwrap() {
                body[key] = value.clone();
            }
            body
        };
        let cases = [
            (with(json!({"ranking": [a, a, b]})), "ranking"),
            (with(json!({"ranking": [a, b]})), "ranking"),
            (with(json!({"ranking": [a, b, c + 1000]})), "ranking"),
            (with(json!({"ranking": []})), "ranking"),
            (with(json!({"strengths": ["better"]})), "strengths"),
            (
                with(json!({"strengths": ["better", "tie", "tie"]})),
                "strengths",
            ),
            (
                with(json!({"strengths": ["better", "much_better"]})),
                "much_better",
            ),
            (
                with(json!({"edited": {"candidate_id": b, "content": "edited"}})),
                "edited",
            ),
            (
                with(json!({"edited": {"candidate_id": a, "content": "  "}})),
                "edited",
            ),
            (
                with(json!({"edited": {"candidate_id": a, "content": "x", "extra": 1}})),
                "extra",
            ),
            (with(json!({"not_rankable": true})), "not_rankable"),
            (with(json!({"unexpected": 1})), "unexpected"),
            (with(json!({"submission_id": ""})), "submission_id"),
            (with(json!({"time_spent_ms": -5})), "time_spent_ms"),
            (with(json!({"ranking": "a, b, c"})), "ranking"),
        ];
        for (body, field) in &cases {
            let reply = submit(&alice, slot, body).await;
            assert_eq!(
                reply.status,
                StatusCode::BAD_REQUEST,
                "{backend:?} {field}: {}",
                reply.body
            );
            assert!(
                error_message(&reply).contains(field),
                "{backend:?} {field}: {}",
                reply.body
            );
        }
        let huge = with(json!({"edited": {"candidate_id": a, "content": "x".repeat(1100 * 1024)}}));
        let too_large = submit(&alice, slot, &huge).await;
        assert_eq!(
            too_large.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{backend:?}"
        );

        // Nothing stored, the lease still alice's; then a valid answer (not rankable) goes in.
        let sql = "SELECT COUNT(*) FROM annotations WHERE project_id = $1";
        assert_eq!(integer(db, sql, &[project.id]).await, 0, "{backend:?}");
        let row = slot_row(db, slot).await;
        assert_eq!(
            (row.state.as_str(), row.annotator_id),
            ("leased", Some(alice_user.id))
        );
        let not_rankable = json!({
            "lease_token": task["lease_token"], "submission_id": "validation-2",
            "not_rankable": true, "time_spent_ms": 10
        });
        let accepted = submit(&alice, slot, &not_rankable).await;
        assert_eq!(
            accepted.status,
            StatusCode::OK,
            "{backend:?}: {}",
            accepted.body
        );
        assert_eq!(integer(db, sql, &[project.id]).await, 1, "{backend:?}");
    }
}

/// The export lines as preference records.
fn preferences(reply: &Reply) -> Vec<PreferenceRecord> {
    reply
        .body
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line).unwrap();
            match Record::from_json(&value) {
                Ok(Record::Preference(record)) => record,
                other => panic!("not a preference record: {other:?} from {line}"),
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[expect(
    clippy::too_many_lines,
    reason = "submissions, then every export filter, then the upload twice"
)]
async fn the_admin_export_filters_by_strength_and_the_upload_import_is_idempotent() {
    for backend in BACKENDS {
        let database = TestDatabase::new(backend).await;
        let db = &database.db;
        user(db, "admin", Role::Admin).await;
        user(db, "alice", Role::Annotator).await;
        user(db, "bob", Role::Annotator).await;
        let project = project(db, "export", 2, 1, 3).await;
        let router = app(state(db));
        let admin = Client::login(&router, "admin", PASSWORD).await;
        let alice = Client::login(&router, "alice", PASSWORD).await;
        let bob = Client::login(&router, "bob", PASSWORD).await;

        // alice: x ≫ y = z with an edit of x → (x, y) and (x, z), both significantly better, the
        // edit on the first; the tie (y, z) gives nothing. bob: p > q >~ r → three records.
        let alice_task = claim(&alice, project.id).await;
        let x = candidate_ids(&alice_task)[0];
        let x_content = alice_task["candidates"][0]["content"]
            .as_str()
            .unwrap()
            .to_string();
        let mut alice_answer = answer(&alice_task, "export-alice");
        alice_answer["strengths"] = json!(["significantly_better", "tie"]);
        alice_answer["edited"] = json!({"candidate_id": x, "content": "an edited answer"});
        let reply = submit(&alice, slot_of(&alice_task), &alice_answer).await;
        assert_eq!(reply.status, StatusCode::OK, "{backend:?}: {}", reply.body);
        let bob_task = claim(&bob, project.id).await;
        let mut bob_answer = answer(&bob_task, "export-bob");
        bob_answer["strengths"] = json!(["better", "slightly_better"]);
        let reply = submit(&bob, slot_of(&bob_task), &bob_answer).await;
        assert_eq!(reply.status, StatusCode::OK, "{backend:?}: {}", reply.body);

        let export_uri = format!("/admin/projects/{}/export.jsonl", project.id);
        let everything = admin.get(&export_uri).await;
        assert_eq!(
            everything.status,
            StatusCode::OK,
            "{backend:?}: {}",
            everything.body
        );
        let content_type = everything.headers[header::CONTENT_TYPE].to_str().unwrap();
        assert!(
            content_type.starts_with("application/x-ndjson"),
            "{content_type}"
        );
        let records = preferences(&everything);
        let levels: Vec<(String, Strength)> = records
            .iter()
            .map(|record| {
                (
                    record.annotator_id.clone().unwrap(),
                    record.strength.unwrap(),
                )
            })
            .collect();
        let count = |who: &str, level: Strength| {
            levels
                .iter()
                .filter(|(annotator, found)| annotator == who && *found == level)
                .count()
        };
        assert_eq!(records.len(), 5, "{backend:?}: {levels:?}");
        assert_eq!(
            count("alice", Strength::SignificantlyBetter),
            2,
            "{backend:?}: {levels:?}"
        );
        assert_eq!(count("bob", Strength::Better), 2, "{backend:?}: {levels:?}");
        assert_eq!(
            count("bob", Strength::SlightlyBetter),
            1,
            "{backend:?}: {levels:?}"
        );
        let edited: Vec<&PreferenceRecord> = records
            .iter()
            .filter(|record| record.edited.is_some())
            .collect();
        assert_eq!(edited.len(), 1, "{backend:?}");
        assert_eq!(
            edited[0].edited.as_ref().unwrap()[0].content,
            "an edited answer"
        );
        assert_eq!(edited[0].chosen[0].content, x_content, "{backend:?}");
        assert_eq!(
            edited[0].annotator_id.as_deref(),
            Some("alice"),
            "{backend:?}"
        );
        assert!(
            records
                .iter()
                .all(|record| record.item_id.as_deref() == Some("item-0"))
        );

        for query in [
            "?strength=significantly_better&strength=better",
            "?strength=significantly_better,better",
        ] {
            let filtered = admin.get(&format!("{export_uri}{query}")).await;
            assert_eq!(
                filtered.status,
                StatusCode::OK,
                "{backend:?}: {}",
                filtered.body
            );
            let kept = preferences(&filtered);
            assert_eq!(kept.len(), 4, "{backend:?} {query}");
            assert!(
                kept.iter().all(|record| matches!(
                    record.strength,
                    Some(Strength::SignificantlyBetter | Strength::Better)
                )),
                "{backend:?} {query}: {}",
                filtered.body
            );
        }
        let slight = admin
            .get(&format!("{export_uri}?strength=slightly_better"))
            .await;
        assert_eq!(
            preferences(&slight).len(),
            1,
            "{backend:?}: {}",
            slight.body
        );
        let bogus = admin.get(&format!("{export_uri}?strength=bogus")).await;
        assert_eq!(
            bogus.status,
            StatusCode::BAD_REQUEST,
            "{backend:?}: {}",
            bogus.body
        );

        // Upload: item-0 is already there, two lines are new; the same file again adds nothing.
        let text = format!(
            "{}\n{}\n{}\n",
            import_lines(1, 3),
            json!({"id": "upload-a", "prompt": [{"role": "user", "content": "new a?"}],
                   "responses": [{"content": "one"}, {"content": "two"}]}),
            json!({"id": "upload-b", "prompt": [{"role": "user", "content": "new b?"}],
                   "responses": [{"content": "three"}, {"content": "four"}]}),
        );
        let csrf = admin.csrf.clone().unwrap();
        let first = upload(&admin, project.id, &csrf, &text).await;
        assert_eq!(first.status, StatusCode::OK, "{backend:?}: {}", first.body);
        assert!(
            first.body.contains("2 items added, 1 already present"),
            "{}",
            first.body
        );
        let items = "SELECT COUNT(*) FROM items WHERE project_id = $1";
        let slots = "SELECT COUNT(*) FROM slots WHERE project_id = $1";
        assert_eq!(integer(db, items, &[project.id]).await, 3, "{backend:?}");
        assert_eq!(integer(db, slots, &[project.id]).await, 6, "{backend:?}");
        let again = upload(&admin, project.id, &csrf, &text).await;
        assert_eq!(again.status, StatusCode::OK, "{backend:?}: {}", again.body);
        assert!(
            again.body.contains("0 items added, 3 already present"),
            "{}",
            again.body
        );
        assert_eq!(integer(db, items, &[project.id]).await, 3, "{backend:?}");
        assert_eq!(integer(db, slots, &[project.id]).await, 6, "{backend:?}");
        // A broken line is refused as a whole, naming the line.
        let broken = upload(&admin, project.id, &csrf, "{\"prompt\": 5}\n").await;
        assert_eq!(
            broken.status,
            StatusCode::BAD_REQUEST,
            "{backend:?}: {}",
            broken.body
        );
        assert_eq!(integer(db, items, &[project.id]).await, 3, "{backend:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_records_each_action_and_refuses_changes() {
    for backend in BACKENDS {
        let database = TestDatabase::new(backend).await;
        let db = &database.db;
        let alice_user = user(db, "alice", Role::Annotator).await;
        let project = project(db, "audit", 1, 2, 2).await;
        let router = app(state(db));
        let wrong = Client::new(router.clone())
            .try_login("alice", "not the password")
            .await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{backend:?}");
        let alice = Client::login(&router, "alice", PASSWORD).await;
        let first = claim(&alice, project.id).await;
        let reply = submit(&alice, slot_of(&first), &answer(&first, "audit-1")).await;
        assert_eq!(reply.status, StatusCode::OK, "{backend:?}: {}", reply.body);
        let second = claim(&alice, project.id).await;
        let reply = alice
            .json(
                "POST",
                &format!("/api/slots/{}/skip", slot_of(&second)),
                &json!({"lease_token": second["lease_token"], "reason": "not sure"}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{backend:?}: {}", reply.body);

        let rows =
            sqlx::query("SELECT action, actor_id, project_id, subject FROM audit_log ORDER BY id")
                .fetch_all(db.pool())
                .await
                .unwrap();
        let entries: Vec<(String, Option<i64>, Option<i64>, String)> = rows
            .iter()
            .map(|row| {
                (
                    row.try_get("action").unwrap(),
                    row.try_get("actor_id").unwrap(),
                    row.try_get("project_id").unwrap(),
                    row.try_get("subject").unwrap(),
                )
            })
            .collect();
        let find = |action: &str| {
            entries
                .iter()
                .filter(|entry| entry.0 == action)
                .collect::<Vec<_>>()
        };
        assert_eq!(find("login_failed").len(), 1, "{backend:?}: {entries:?}");
        assert_eq!(find("login_failed")[0].1, None, "{backend:?}");
        assert_eq!(find("login").len(), 1, "{backend:?}: {entries:?}");
        assert_eq!(find("login")[0].1, Some(alice_user.id), "{backend:?}");
        for (action, count) in [("claim", 2), ("submit", 1), ("skip", 1)] {
            let found = find(action);
            assert_eq!(found.len(), count, "{backend:?} {action}: {entries:?}");
            for entry in found {
                assert_eq!(entry.1, Some(alice_user.id), "{backend:?} {action}");
                assert_eq!(entry.2, Some(project.id), "{backend:?} {action}");
                assert!(
                    entry.3.starts_with("slot:"),
                    "{backend:?} {action}: {}",
                    entry.3
                );
            }
        }

        // Append-only on both back-ends: UPDATE and DELETE fail, and change nothing.
        let before = integer(db, "SELECT COUNT(*) FROM audit_log", &[]).await;
        for statement in [
            "UPDATE audit_log SET action = 'tampered'",
            "UPDATE audit_log SET detail_json = '{}' WHERE action = 'login'",
            "DELETE FROM audit_log",
            "DELETE FROM audit_log WHERE action = 'login_failed'",
        ] {
            let result = sqlx::query(statement).execute(db.pool()).await;
            assert!(result.is_err(), "{backend:?}: {statement} went through");
        }
        assert_eq!(
            integer(db, "SELECT COUNT(*) FROM audit_log", &[]).await,
            before
        );
        let sql = "SELECT COUNT(*) FROM audit_log WHERE action = 'tampered'";
        assert_eq!(integer(db, sql, &[]).await, 0, "{backend:?}");
        // Appending still works.
        let appended = sqlx::query(
            "INSERT INTO audit_log (at_ms, actor_id, action, project_id, subject, detail_json) \
             VALUES (1, NULL, 'test', NULL, 'test', '{}')",
        )
        .execute(db.pool())
        .await;
        assert!(appended.is_ok(), "{backend:?}: {appended:?}");
    }
}

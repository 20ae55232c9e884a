//! Handler tests through the router against a real Postgres (a fresh database per test) and
//! SQLite: the same assertions on both back-ends.

mod common;

use axum::http::StatusCode;
use common::{BACKENDS, Client, PASSWORD, TestDatabase, answer, claim, project, state, user};
use labeling::store::users::Role;
use labeling::web::app;
use serde_json::json;

#[tokio::test]
async fn claim_submit_and_retry_on_both_backends() {
    for backend in BACKENDS {
        let database = TestDatabase::new(backend).await;
        let db = &database.db;
        user(db, "alice", Role::Annotator).await;
        let project = project(db, "p", 2, 3, 3).await;
        let router = app(state(db));
        let alice = Client::login(&router, "alice", PASSWORD).await;
        let task = claim(&alice, project.id).await;
        // A refresh or a second tab gets the same lease.
        let again = claim(&alice, project.id).await;
        assert_eq!(task["slot_id"], again["slot_id"], "{backend:?}");
        assert_eq!(task["lease_token"], again["lease_token"], "{backend:?}");
        assert_eq!(task["candidates"].as_array().unwrap().len(), 3);
        let slot = task["slot_id"].as_i64().unwrap();
        let body = answer(&task, "sub-1");
        let first = alice
            .json("POST", &format!("/api/slots/{slot}/submit"), &body)
            .await;
        assert_eq!(first.status, StatusCode::OK, "{backend:?} {}", first.body);
        // The same submission again: same answer.
        let retry = alice
            .json("POST", &format!("/api/slots/{slot}/submit"), &body)
            .await;
        assert_eq!(retry.status, StatusCode::OK, "{}", retry.body);
        assert_eq!(retry.json()["annotation_id"], first.json()["annotation_id"]);
        // The same id with a different body: 409.
        let mut changed = body.clone();
        changed["strengths"] = json!(["tie", "tie"]);
        let conflict = alice
            .json("POST", &format!("/api/slots/{slot}/submit"), &changed)
            .await;
        assert_eq!(conflict.status, StatusCode::CONFLICT, "{}", conflict.body);
        // Next claim: a different item.
        let next = claim(&alice, project.id).await;
        assert_ne!(next["item"]["id"], task["item"]["id"]);
    }
}

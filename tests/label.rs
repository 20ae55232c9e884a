//! `herd label` end to end through the binary, on the embedded SQLite default (no database
//! configured): create an admin, import twice (the second adds nothing), annotate through the
//! store, export, and check that `herd data validate` accepts the export as it is; `serve` refuses
//! to start without a secret and serves the login page in dev mode.

#![expect(clippy::unwrap_used, reason = "test helpers stop at the first failure")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use labeling::db::{Database, default_sqlite_path, sqlite_url};
use labeling::judgment::{Edit, Judgment, PairStrength};
use labeling::store::assignment::{Claim, Submission};
use labeling::store::users::{Role, hash_password};

fn herd(data_dir: &Path, arguments: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_herd"))
        .args(arguments)
        .env("HERD_DATA_DIR", data_dir)
        .env_remove("DATABASE_URL")
        .env_remove("HERD_LABEL_SECRET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

const ITEMS: &str = r#"{"id": "q1", "prompt": [{"role": "user", "content": "What is 2+2?"}], "responses": [{"content": "4", "model": "policy", "round": 1}, {"content": "5", "model": "policy", "round": 1}, {"content": "22", "model": "policy", "round": 1}]}
{"id": "q2", "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}], "responses": [{"content": "Paris."}, {"content": "Lyon."}]}
"#;

#[test]
#[expect(clippy::too_many_lines, reason = "one story, told in order")]
fn import_annotate_export_validate_through_the_binary() {
    let data = tempfile::tempdir().unwrap();
    let items = data.path().join("items.jsonl");
    std::fs::write(&items, ITEMS).unwrap();

    let created = herd(
        data.path(),
        &["label", "create-admin", "--username", "admin"],
        "correct horse battery\n",
    );
    assert!(created.status.success(), "{}", text(&created));
    let short = herd(
        data.path(),
        &["label", "create-admin", "--username", "other"],
        "short\n",
    );
    assert!(!short.status.success());
    assert!(text(&short).contains("password"), "{}", text(&short));

    let items_arg = items.to_str().unwrap();
    let first = herd(
        data.path(),
        &[
            "label",
            "import",
            "--project",
            "round1",
            "--overlap",
            "2",
            items_arg,
        ],
        "",
    );
    assert!(first.status.success(), "{}", text(&first));
    assert!(
        text(&first).contains("2 items added, 0 already present"),
        "{}",
        text(&first)
    );
    let again = herd(
        data.path(),
        &["label", "import", "--project", "round1", items_arg],
        "",
    );
    assert!(
        text(&again).contains("0 items added, 2 already present"),
        "{}",
        text(&again)
    );

    let bad = data.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"prompt\": [{\"role\": \"user\", \"content\": \"x\"}], \"responses\": [{\"content\": \"only one\"}]}\n").unwrap();
    let refused = herd(
        data.path(),
        &[
            "label",
            "import",
            "--project",
            "round1",
            bad.to_str().unwrap(),
        ],
        "",
    );
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("bad.jsonl:1: responses"),
        "{}",
        text(&refused)
    );

    // Two annotators judge every item through the store (the browser path is tested in
    // labeling-ui/tests/browser.rs); the binary's database is the embedded SQLite file.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let url = sqlite_url(&data.path().join("labeling.sqlite"));
        let db = Database::connect(&url).await.unwrap();
        let project = db.project_by_name("round1").await.unwrap().unwrap();
        for name in ["ann", "bea"] {
            let user = db
                .create_user(
                    name,
                    &hash_password("correct horse battery").unwrap(),
                    Role::Annotator,
                    None,
                    0,
                )
                .await
                .unwrap();
            let mut count = 0;
            while let Claim::Assigned(lease) = db.claim(project.id, user.id, 1_000).await.unwrap() {
                let item = db.item(lease.item_id).await.unwrap();
                // Rank candidates in import order (the first is the right answer).
                let ranking: Vec<i64> = item.candidates.iter().map(|(id, _)| *id).collect();
                let strengths =
                    vec![
                        PairStrength::Level(datasets::records::Strength::SignificantlyBetter);
                        ranking.len() - 1
                    ];
                let edited = (name == "ann").then(|| Edit {
                    candidate_id: ranking[0],
                    content: format!("{} (checked)", item.candidates[0].1),
                });
                let submission = Submission {
                    lease_token: lease.lease_token.clone(),
                    submission_id: format!("{name}-{}", lease.slot_id),
                    judgment: Judgment {
                        ranking,
                        strengths,
                        all_bad: false,
                        not_rankable: false,
                        edited,
                    },
                    time_spent_ms: 5_000,
                };
                db.submit(lease.slot_id, user.id, &submission, 2_000)
                    .await
                    .unwrap();
                count += 1;
            }
            assert_eq!(count, 2, "{name} judges both items once");
        }
        db.close().await;
    });

    let out = data.path().join("prefs.jsonl");
    let exported = herd(
        data.path(),
        &[
            "label",
            "export",
            "--project",
            "round1",
            "--out",
            out.to_str().unwrap(),
        ],
        "",
    );
    assert!(exported.status.success(), "{}", text(&exported));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    // q1: 3 candidates → 3 pairs; q2: 1 pair; two annotators each.
    assert_eq!(lines.len(), 8, "{lines:?}");
    assert!(
        lines
            .iter()
            .all(|line| line["strength"] == "significantly_better" && line["margin"] == 1.0)
    );
    let edited = lines
        .iter()
        .filter(|line| line.get("edited").is_some_and(|edit| !edit.is_null()))
        .count();
    assert_eq!(edited, 2, "ann's edit rides on one record per item");
    assert!(
        lines
            .iter()
            .any(|line| line["chosen"][0]["content"] == "4"
                && line["rejected"][0]["content"] == "22")
    );

    let validated = Command::new(env!("CARGO_BIN_EXE_herd"))
        .args(["data", "validate", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        validated.status.success(),
        "herd data validate refused the export: {}",
        text(&validated)
    );

    let filtered = herd(
        data.path(),
        &[
            "label",
            "export",
            "--project",
            "round1",
            "--out",
            "-",
            "--strength",
            "slightly_better",
        ],
        "",
    );
    assert!(filtered.status.success());
    assert!(
        String::from_utf8_lossy(&filtered.stdout).trim().is_empty(),
        "no slightly-better pairs"
    );
}

#[test]
fn serve_needs_a_secret_outside_dev_mode_and_serves_the_login_page() {
    let data = tempfile::tempdir().unwrap();
    let refused = herd(
        data.path(),
        &["label", "serve", "--bind", "127.0.0.1:0"],
        "",
    );
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("HERD_LABEL_SECRET"),
        "{}",
        text(&refused)
    );

    let mut server = Command::new(env!("CARGO_BIN_EXE_herd"))
        .args(["label", "serve", "--bind", "127.0.0.1:0", "--dev"])
        .env("HERD_DATA_DIR", data.path())
        .env_remove("DATABASE_URL")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(server.stderr.take().unwrap());
    let mut address = None;
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 {
        if let Some(rest) = line.split("serving on http://").nth(1) {
            address = Some(rest.split('/').next().unwrap().to_string());
            break;
        }
        line.clear();
    }
    let address = address.expect("the server prints its address");
    let mut stream = TcpStream::connect(&address).unwrap();
    write!(
        stream,
        "GET /login HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains("content-security-policy: default-src 'self'"),
        "{response}"
    );
    assert!(response.contains("id=\"login-form\""), "{response}");
    assert!(default_sqlite_path().ends_with("labeling.sqlite"));
    assert!(
        data.path().join("labeling.sqlite").exists(),
        "the embedded SQLite file is in HERD_DATA_DIR"
    );
}

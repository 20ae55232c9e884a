//! Browser tests: the whole annotation flow in headless Chromium, driven over WebDriver, against the
//! real server (`labeling::serve::serve` on a free port) and a real database — once on SQLite,
//! once on Postgres.
//!
//! One flow per back-end, in the order a person works: sign in through the form, open the project,
//! check that model markdown renders (a fenced code block as `<pre><code>`) and that an XSS payload
//! stays text; rank with the keyboard alone (`3`, ↑ ↑, Shift+1, `2`, Shift+2), then by dragging a
//! card's handle with pointer actions; edit the best response (`E`); reload and find the draft
//! restored; submit with Ctrl+Enter and read the judgment back from the database; skip the next item
//! with a reason; sign in as the researcher, read the annotation count, and download the export
//! through the page's own button. Every page is checked for Content-Security-Policy violations
//! (a `securitypolicyviolation` listener and ChromeDriver's console log) and uncaught exceptions.
//!
//! Needs `apt-get install chromium chromium-driver`; without them the tests fail and say so.
//! A screenshot of the annotation page lands in `target/browser-annotate-<backend>.png`.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers as well as tests: a failure is the test failing"
)]

mod common;
#[path = "common/webdriver.rs"]
mod webdriver;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use common::{Backend, PASSWORD, TestDatabase, secret, user};
use datasets::records::Record;
use labeling::db::Database;
use labeling::import::parse_file;
use labeling::store::projects::{NewProject, Project};
use labeling::store::users::Role;
use labeling::web::WebConfig;
use serde_json::{Value, json};
use webdriver::{Browser, keys};

/// A response with a fenced code block.
fn code_response(item: usize) -> String {
    format!("Use a loop (item {item}):\n\n```rust\nfn main() {{\n    println!(\"hi\");\n}}\n```\n")
}

/// A response that would run script if the page trusted it.
fn hostile_response(item: usize) -> String {
    format!(
        "Look <img src=x onerror=\"window.__xss=1\"> and [x](javascript:window.__xss=1) (item {item})."
    )
}

fn plain_response(item: usize) -> String {
    format!("A **plain** answer to item {item}.")
}

const EDITED: &str = "An edited answer, better than every response.";
const SKIP_REASON: &str = "I cannot judge Rust code";

/// A k=2 project of three items, each with the three responses above.
async fn seed(db: &Database) -> Project {
    let project = db
        .create_project(
            &NewProject {
                name: "browser",
                overlap: 2,
                lease_seconds: 600,
                guidelines: "Rank by **correctness**.",
            },
            None,
            0,
        )
        .await
        .unwrap();
    let lines: Vec<String> = (0..3)
        .map(|item| {
            json!({
                "id": format!("item-{item}"),
                "prompt": [{"role": "user", "content": format!("How do I print in **Rust**? ({item})")}],
                "responses": [
                    {"content": code_response(item), "model": "tiny", "round": 1},
                    {"content": hostile_response(item), "model": "tiny", "round": 1},
                    {"content": plain_response(item), "model": "tiny", "round": 1},
                ],
            })
            .to_string()
        })
        .collect();
    db.import_items(
        project.id,
        &parse_file(&lines.join("\n"), "items.jsonl").unwrap(),
        None,
        "test",
        0,
    )
    .await
    .unwrap();
    user(db, "annotator", Role::Annotator).await;
    user(db, "researcher", Role::Admin).await;
    project
}

/// Serves the app on a free port; returns its base URL. The server lives as long as the runtime.
async fn start_server(db: &Database) -> String {
    let (sender, receiver) = tokio::sync::oneshot::channel::<SocketAddr>();
    let database = db.clone();
    tokio::spawn(async move {
        labeling::serve::serve(
            database,
            WebConfig::new(secret()),
            "127.0.0.1:0".parse().unwrap(),
            move |address| {
                let _ = sender.send(address);
            },
        )
        .await
        .unwrap();
    });
    format!("http://{}", receiver.await.unwrap())
}

/// Collects CSP violations of the current page in `window.__csp` (call after each navigation).
async fn watch_csp(browser: &Browser) {
    browser
        .execute(
            "window.__csp = window.__csp || []; \
             document.addEventListener('securitypolicyviolation', (e) => \
               window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));",
            &[],
        )
        .await;
}

/// Fails on any CSP violation or uncaught exception since the last check: the page's listener,
/// and ChromeDriver's console log (which also holds violations from before the listener existed).
async fn assert_clean_console(browser: &Browser, page: &str) {
    let violations = browser.execute("return window.__csp || [];", &[]).await;
    assert_eq!(violations, json!([]), "CSP violations on {page}");
    let problems: Vec<_> = browser
        .console_log()
        .await
        .into_iter()
        .filter(|(level, source, message)| {
            source == "security"
                || message.contains("Content Security Policy")
                || (level == "SEVERE" && source == "javascript")
        })
        .collect();
    assert!(
        problems.is_empty(),
        "console errors on {page}: {problems:#?}"
    );
}

async fn sign_in(browser: &Browser, base: &str, username: &str, lands_on: &str) {
    browser.goto(&format!("{base}/login")).await;
    browser.find("#username").await.send_keys(username).await;
    browser.find("#password").await.send_keys(PASSWORD).await;
    browser.find("#sign-in").await.click().await;
    browser
        .wait_until(
            &format!("{username} to land on {lands_on} after signing in"),
            &format!("location.pathname === '{lands_on}'"),
        )
        .await;
    watch_csp(browser).await;
}

/// The candidate ids in the order the page shows them (best first).
async fn shown_order(browser: &Browser) -> Vec<i64> {
    let order = browser
        .execute(
            "return Array.from(document.querySelectorAll('#candidates > li.candidate'), \
               (li) => Number(li.dataset.candidateId));",
            &[],
        )
        .await;
    serde_json::from_value(order).unwrap()
}

async fn strengths_shown(browser: &Browser) -> Vec<String> {
    let values = browser
        .execute(
            "return Array.from(document.querySelectorAll('select.strength'), (s) => s.value);",
            &[],
        )
        .await;
    serde_json::from_value(values).unwrap()
}

async fn wait_for_task(browser: &Browser) -> i64 {
    browser
        .wait_until(
            "a task on the annotation page",
            "document.querySelector('#annotate[data-state=task]')",
        )
        .await;
    let slot = browser
        .find("#annotate")
        .await
        .attribute("data-slot-id")
        .await;
    slot.unwrap().parse().unwrap()
}

fn screenshot_path(backend: Backend) -> PathBuf {
    // CARGO_TARGET_TMPDIR is target/tmp; the picture goes beside it.
    let target = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    target.join(format!(
        "browser-annotate-{}.png",
        format!("{backend:?}").to_lowercase()
    ))
}

async fn rows(db: &Database, query: &str, project_id: i64) -> Vec<String> {
    sqlx::query_scalar::<_, String>(query)
        .bind(project_id)
        .fetch_all(db.pool())
        .await
        .unwrap()
}

#[expect(clippy::too_many_lines, reason = "one flow, read top to bottom")]
async fn annotation_flow(backend: Backend) {
    let started = Instant::now();
    let browser = Browser::start().await;
    let database = TestDatabase::new(backend).await;
    let db = &database.db;
    let project = seed(db).await;
    let base = start_server(db).await;

    // 1. Sign in through the form, follow "Annotate" from the project list.
    sign_in(&browser, &base, "annotator", "/projects").await;
    browser.wait_for_link("Annotate").await.click().await;
    watch_csp(&browser).await;
    let first_slot = wait_for_task(&browser).await;
    let prompt = browser
        .wait_for_text("#prompt li.turn[data-role=user]", "How do I print in")
        .await;
    assert!(
        !prompt.contains("**"),
        "the prompt's markdown is rendered: {prompt:?}"
    );
    browser
        .find("#prompt li.turn[data-role=user] .turn-content strong")
        .await;
    let candidates: Vec<(i64, String)> = serde_json::from_value(
        browser
            .execute(
                "return Array.from(document.querySelectorAll('#candidates > li.candidate'), \
                   (li) => [Number(li.dataset.candidateId), li.querySelector('.candidate-raw').textContent]);",
                &[],
            )
            .await,
    )
    .unwrap();
    assert_eq!(candidates.len(), 3, "{candidates:?}");
    let id_of = |prefix: &str| {
        candidates
            .iter()
            .find(|(_, content)| content.starts_with(prefix))
            .unwrap_or_else(|| panic!("no candidate starts with {prefix:?}: {candidates:?}"))
            .0
    };
    let (code_id, hostile_id, plain_id) = (
        id_of("Use a loop"),
        id_of("Look <img"),
        id_of("A **plain**"),
    );
    // The fenced block is a real code block; the hostile markup is text, not elements.
    let code = browser
        .find(&format!("#candidate-{code_id} .candidate-body pre > code"))
        .await;
    assert!(code.text().await.contains("println!(\"hi\");"));
    assert_eq!(
        code.attribute("class").await.as_deref(),
        Some("language-rust")
    );
    let emphasis = browser
        .find(&format!("#candidate-{plain_id} .candidate-body strong"))
        .await;
    assert_eq!(emphasis.text().await, "plain");
    let hostile_body = browser
        .find(&format!("#candidate-{hostile_id} .candidate-body"))
        .await;
    let hostile_text = hostile_body.text().await;
    assert!(
        hostile_text.contains("<img src=x onerror=") && hostile_text.contains("javascript:"),
        "the payload is shown as text: {hostile_text:?}"
    );
    let live = browser
        .execute(
            "return document.querySelectorAll('#candidates img, #candidates [onerror], \
               #candidates a[href^=\"javascript\"], #prompt img').length;",
            &[],
        )
        .await;
    assert_eq!(live, json!(0), "no element came out of the payload");
    // Toggling the raw text of the hostile card puts the payload on screen both ways.
    let toggle = browser
        .find(&format!("#candidate-{hostile_id} button.toggle-raw"))
        .await;
    toggle.click().await;
    assert_eq!(
        browser
            .find(&format!("#candidate-{hostile_id} .candidate-raw"))
            .await
            .property("hidden")
            .await,
        json!(false)
    );
    toggle.click().await;
    assert_clean_console(&browser, "the annotation page").await;

    // 2. Rank with the keyboard alone: `3` selects the third card, ↑ ↑ moves it to the top.
    let initial = shown_order(&browser).await;
    browser.press(&[], "3").await;
    browser
        .wait_until(
            "the third card to be selected and focused",
            &format!(
                "document.activeElement && document.activeElement.id === 'candidate-{}' \
                 && document.activeElement.classList.contains('selected')",
                initial[2]
            ),
        )
        .await;
    browser.press(&[], keys::ARROW_UP).await;
    browser.press(&[], keys::ARROW_UP).await;
    let by_keyboard = vec![initial[2], initial[0], initial[1]];
    assert_eq!(shown_order(&browser).await, by_keyboard, "after 3 ↑ ↑");
    assert_eq!(
        browser
            .find(&format!("#candidate-{}", initial[2]))
            .await
            .attribute("data-position")
            .await
            .as_deref(),
        Some("1")
    );
    // Shift+1 on the top card: gap 0 is "significantly better"; `2` then Shift+2: gap 1 "better".
    browser.press(&[keys::SHIFT], "1").await;
    browser.press(&[], "2").await;
    browser.press(&[keys::SHIFT], "2").await;
    assert_eq!(
        strengths_shown(&browser).await,
        ["significantly_better", "better"],
        "after Shift+1, 2, Shift+2"
    );

    // 3. Rank by dragging the bottom card's handle above the top card.
    let handle = browser
        .find(&format!("#candidate-{} .drag-handle", by_keyboard[2]))
        .await;
    browser
        .execute(
            "document.querySelector('#candidates').scrollIntoView({block: 'start'});",
            &[],
        )
        .await;
    let points = browser
        .execute(
            "const h = arguments[0].getBoundingClientRect(); \
             const top = document.querySelector('#candidates > li.candidate .card').getBoundingClientRect(); \
             return [h.left + h.width / 2, h.top + h.height / 2, top.top + 4, window.innerHeight];",
            &[handle.to_json()],
        )
        .await;
    let point = |index: usize| points[index].as_f64().unwrap();
    assert!(
        point(1) < point(3) - 50.0,
        "the bottom handle is inside the window for the drag: {points}"
    );
    browser
        .drag((point(0), point(1)), (point(0), point(2)), 8)
        .await;
    let dragged = vec![by_keyboard[2], by_keyboard[0], by_keyboard[1]];
    assert_eq!(shown_order(&browser).await, dragged, "after the drag");
    assert_eq!(
        strengths_shown(&browser).await,
        ["significantly_better", "better"],
        "strengths stay with their ranks"
    );
    let best = dragged[0];

    // 4. Edit the best response: `E` opens the editor on it.
    browser.press(&[], "e").await;
    browser
        .wait_until(
            "the editor to open with the text box focused",
            "!document.querySelector('#editor').hidden \
             && document.activeElement === document.querySelector('#edited-text')",
        )
        .await;
    let best_content = &candidates.iter().find(|(id, _)| *id == best).unwrap().1;
    let edited_text = browser.find("#edited-text").await;
    assert_eq!(edited_text.property("value").await, json!(best_content));
    edited_text.clear().await;
    edited_text.send_keys(EDITED).await;
    browser
        .wait_until(
            "the edit to count as changed",
            "document.querySelector('#edit-changed').dataset.changed === 'true'",
        )
        .await;
    browser.press(&[], keys::ESCAPE).await;

    // 5. The draft survives a reload: wait for the server's copy, then reload.
    browser
        .wait_until(
            "the draft to be saved on the server",
            "document.querySelector('#draft-status[data-state=saved]')",
        )
        .await;
    let server_drafts = rows(db, "SELECT draft_json FROM drafts WHERE item_id IN (SELECT id FROM items WHERE project_id = $1)", project.id).await;
    assert_eq!(server_drafts.len(), 1, "{server_drafts:?}");
    let draft: Value = serde_json::from_str(&server_drafts[0]).unwrap();
    assert_eq!(draft["ranking"], json!(dragged), "{draft}");
    assert_eq!(draft["edit"]["content"], EDITED, "{draft}");
    let screenshot = screenshot_path(backend);
    browser.screenshot(&screenshot).await;
    assert_clean_console(&browser, "the annotation page after ranking").await;
    browser.refresh().await;
    watch_csp(&browser).await;
    assert_eq!(
        wait_for_task(&browser).await,
        first_slot,
        "the same lease after a reload"
    );
    assert_eq!(
        shown_order(&browser).await,
        dragged,
        "order after the reload"
    );
    assert_eq!(
        strengths_shown(&browser).await,
        ["significantly_better", "better"],
        "strengths after the reload"
    );
    assert_eq!(
        browser.find("#editor").await.property("hidden").await,
        json!(false)
    );
    assert_eq!(
        browser.find("#edited-text").await.property("value").await,
        json!(EDITED),
        "the edit after the reload"
    );

    // 6. Submit with Ctrl+Enter: progress counts it and the next task loads.
    browser.press(&[keys::CONTROL], keys::ENTER).await;
    let progress = browser
        .wait_for_text("#progress", "1 submitted by you")
        .await;
    assert_eq!(progress, "1 submitted by you · 1 of 6 in this project");
    let second_slot = wait_for_task(&browser).await;
    assert_ne!(second_slot, first_slot, "the next task loaded");
    let judgments = rows(
        db,
        "SELECT judgment_json FROM annotations WHERE project_id = $1",
        project.id,
    )
    .await;
    assert_eq!(judgments.len(), 1, "{judgments:?}");
    let judgment: Value = serde_json::from_str(&judgments[0]).unwrap();
    assert_eq!(judgment["ranking"], json!(dragged), "{judgment}");
    assert_eq!(
        judgment["strengths"],
        json!(["significantly_better", "better"]),
        "{judgment}"
    );
    assert_eq!(
        judgment["edited"],
        json!({"candidate_id": best, "content": EDITED}),
        "{judgment}"
    );
    assert_eq!(judgment["all_bad"], json!(false), "{judgment}");
    assert_eq!(judgment["not_rankable"], json!(false), "{judgment}");

    // 7. Skip the next item with a reason.
    browser
        .find("#skip-reason")
        .await
        .send_keys(SKIP_REASON)
        .await;
    browser.find("#skip").await.click().await;
    browser.wait_for_text("#message", "Skipped.").await;
    browser
        .wait_until(
            "the item after the skip",
            &format!(
                "['task', 'done'].includes(document.querySelector('#annotate').dataset.state) \
                 && document.querySelector('#annotate').dataset.slotId !== '{second_slot}'"
            ),
        )
        .await;
    let skips = rows(
        db,
        "SELECT reason FROM skips WHERE project_id = $1",
        project.id,
    )
    .await;
    assert_eq!(skips, [SKIP_REASON]);
    // After all that interaction the payload never ran.
    assert_eq!(
        browser.execute("return typeof window.__xss;", &[]).await,
        json!("undefined")
    );
    assert_clean_console(&browser, "the annotation page after submit and skip").await;

    // 8. Sign out; the researcher sees the count and downloads the export.
    browser.find("#logout").await.click().await;
    browser
        .wait_until(
            "the login page after signing out",
            "location.pathname === '/login'",
        )
        .await;
    sign_in(&browser, &base, "researcher", "/admin").await;
    browser
        .goto(&format!("{base}/admin/projects/{}", project.id))
        .await;
    watch_csp(&browser).await;
    assert_eq!(browser.find("#count-annotations").await.text().await, "1");
    browser.find("#export").await.click().await;
    let export = browser
        .wait_for_download(&format!("project-{}-preferences.jsonl", project.id))
        .await;
    // The page's own fetch of the same URL (with the session cookie) gives the same lines.
    let fetched = browser
        .execute_async(
            "const done = arguments[arguments.length - 1]; \
             fetch(arguments[0], {credentials: 'same-origin'}) \
               .then((r) => r.text()).then(done, (e) => done('fetch failed: ' + e));",
            &[json!(format!(
                "/admin/projects/{}/export.jsonl",
                project.id
            ))],
        )
        .await;
    assert_eq!(fetched, json!(export), "the download is the export");
    let records: Vec<_> = export
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line).unwrap();
            match Record::from_json(&value) {
                Ok(Record::Preference(record)) => record,
                other => panic!("not a preference record: {other:?}\n{line}"),
            }
        })
        .collect();
    // Three candidates ranked with two non-tie steps: every pair, (0,1), (0,2), (1,2).
    assert_eq!(records.len(), 3, "{export}");
    let content = |id: i64| candidates.iter().find(|(c, _)| *c == id).unwrap().1.clone();
    let pairs: Vec<(String, String)> = records
        .iter()
        .map(|record| {
            (
                record.chosen[0].content.clone(),
                record.rejected[0].content.clone(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        [
            (content(dragged[0]), content(dragged[1])),
            (content(dragged[0]), content(dragged[2])),
            (content(dragged[1]), content(dragged[2])),
        ]
    );
    let edits: Vec<_> = records
        .iter()
        .filter_map(|record| record.edited.as_ref())
        .collect();
    assert_eq!(edits.len(), 1, "the edit rides on one record: {export}");
    assert_eq!(edits[0][0].content, EDITED);
    assert_clean_console(&browser, "the admin project page").await;
    browser.quit().await;
    eprintln!(
        "{backend:?} browser flow: {:.1} s; screenshot at {}",
        started.elapsed().as_secs_f64(),
        screenshot.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotate_rank_edit_submit_skip_and_export_on_sqlite() {
    annotation_flow(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotate_rank_edit_submit_skip_and_export_on_postgres() {
    annotation_flow(Backend::Postgres).await;
}

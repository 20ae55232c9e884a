//! A minimal W3C WebDriver client (<https://www.w3.org/TR/webdriver2/>) over reqwest, enough for
//! the browser tests: ChromeDriver started on a free port as a child process, one headless
//! Chromium session with a fresh profile and download folder, navigation, elements by CSS
//! selector, scripts, keyboard and pointer actions, screenshots and the browser's console log.
//!
//! Every failure panics with the command and the selector it was about: in a test a panic is the
//! test failing, and the message is what the reader needs. Dropping the [`Browser`] ends the
//! session and kills ChromeDriver, also when a test panics half-way.

#![allow(dead_code, reason = "a toolbox: each test uses part of it")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test support: a failure is the test failing"
)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

/// The key WebDriver uses for an element reference in JSON.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long the wait helpers poll before they fail.
pub const WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);

/// Key codes of the WebDriver spec's table of normalized keys (used in keyboard actions).
pub mod keys {
    pub const ENTER: &str = "\u{E007}";
    pub const SHIFT: &str = "\u{E008}";
    pub const CONTROL: &str = "\u{E009}";
    pub const ESCAPE: &str = "\u{E00C}";
    pub const ARROW_UP: &str = "\u{E013}";
    pub const ARROW_DOWN: &str = "\u{E015}";
}

const INSTALL_HINT: &str = "browser tests need Chromium and ChromeDriver: \
    `apt-get install chromium chromium-driver` (or set HERD_CHROMIUM and HERD_CHROMEDRIVER)";

fn program(variable: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(variable).map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(
        path.is_file(),
        "{} not found; {INSTALL_HINT}",
        path.display()
    );
    path
}

/// ChromeDriver as a child process on a free local port; killed on drop.
#[derive(Debug)]
struct Chromedriver {
    child: Child,
    port: u16,
}

impl Chromedriver {
    fn start(binary: &Path) -> Chromedriver {
        // Port 0 picks a free port; ChromeDriver binds it a moment later.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = Command::new(binary);
        command.arg(format!("--port={port}"));
        // HERD_CHROMEDRIVER_LOG=FILE keeps ChromeDriver's verbose log, for debugging a test.
        if let Some(log) = std::env::var_os("HERD_CHROMEDRIVER_LOG") {
            command
                .arg(format!("--log-path={}", log.to_string_lossy()))
                .arg("--verbose");
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("starting {}: {error}; {INSTALL_HINT}", binary.display())
            });
        Chromedriver { child, port }
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The error a WebDriver command answered with.
#[derive(Debug)]
pub struct WebDriverError {
    pub error: String,
    pub message: String,
}

/// One headless Chromium session. Fields drop in order: the session is deleted (in `Drop`), then
/// ChromeDriver is killed, then the profile and download folders are removed.
#[derive(Debug)]
pub struct Browser {
    http: reqwest::Client,
    session: String,
    /// Whether the session still needs deleting.
    open: bool,
    driver: Chromedriver,
    _profile: tempfile::TempDir,
    downloads: tempfile::TempDir,
}

impl Browser {
    /// Starts ChromeDriver and a headless Chromium with a fresh profile. Panics with the install
    /// command when either program is missing.
    pub async fn start() -> Browser {
        let chromium = program("HERD_CHROMIUM", "/usr/bin/chromium");
        let chromedriver = program("HERD_CHROMEDRIVER", "/usr/bin/chromedriver");
        let driver = Chromedriver::start(&chromedriver);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_mins(1))
            .build()
            .unwrap();
        let status_url = format!("http://127.0.0.1:{}/status", driver.port);
        let started = Instant::now();
        loop {
            let ready = match http.get(&status_url).send().await {
                Ok(response) => response
                    .json::<Value>()
                    .await
                    .is_ok_and(|body| body["value"]["ready"] == true),
                Err(_) => false,
            };
            if ready {
                break;
            }
            assert!(
                started.elapsed() < WAIT,
                "ChromeDriver did not answer on port {} within {WAIT:?}",
                driver.port
            );
            tokio::time::sleep(POLL).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let downloads = tempfile::tempdir().unwrap();
        // The flags this machine needs (/work/.library/env/machines/rust-svc.md): no sandbox as
        // root, no GPU, and nothing that phones home (the network is closed).
        let arguments = [
            "--headless=new".to_string(),
            "--no-sandbox".to_string(),
            "--disable-gpu".to_string(),
            "--disable-dev-shm-usage".to_string(),
            "--disable-quic".to_string(),
            "--no-first-run".to_string(),
            "--disable-background-networking".to_string(),
            "--disable-component-update".to_string(),
            "--disable-sync".to_string(),
            format!("--user-data-dir={}", profile.path().display()),
            "--window-size=1280,1000".to_string(),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": chromium,
                "args": arguments,
                "prefs": {
                    "download.default_directory": downloads.path(),
                    "download.prompt_for_download": false,
                },
            },
        }}});
        let response = http
            .post(format!("http://127.0.0.1:{}/session", driver.port))
            .json(&capabilities)
            .send()
            .await
            .unwrap_or_else(|error| panic!("new session: {error}"));
        let body: Value = response.json().await.unwrap();
        let Some(session) = body["value"]["sessionId"].as_str() else {
            panic!("new session failed ({INSTALL_HINT}): {body}");
        };
        Browser {
            http,
            session: session.to_string(),
            open: true,
            driver,
            _profile: profile,
            downloads,
        }
    }

    /// Where downloads land.
    pub fn downloads(&self) -> &Path {
        self.downloads.path()
    }

    /// Sends one command; `Err` carries WebDriver's error code and message.
    pub async fn try_command(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, WebDriverError> {
        let url = format!(
            "http://127.0.0.1:{}/session/{}{path}",
            self.driver.port, self.session
        );
        let mut request = self.http.request(method.clone(), &url);
        if let Some(body) = body {
            request = request.json(&body);
        } else if method == Method::POST {
            request = request.json(&json!({}));
        }
        let response = request.send().await.map_err(|error| WebDriverError {
            error: "transport".into(),
            message: error.to_string(),
        })?;
        let status = response.status();
        let mut body: Value = response.json().await.map_err(|error| WebDriverError {
            error: "transport".into(),
            message: format!("HTTP {status}, body not JSON: {error}"),
        })?;
        let value = body["value"].take();
        if status.is_success() {
            Ok(value)
        } else {
            Err(WebDriverError {
                error: value["error"].as_str().unwrap_or("unknown").to_string(),
                message: value["message"].as_str().unwrap_or_default().to_string(),
            })
        }
    }

    /// Sends one command; panics naming `what` when WebDriver answers with an error.
    pub async fn command(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        what: &str,
    ) -> Value {
        match self.try_command(method, path, body).await {
            Ok(value) => value,
            Err(error) => panic!("WebDriver {what}: {}: {}", error.error, error.message),
        }
    }

    /// Opens `url` and waits for its load event.
    pub async fn goto(&self, url: &str) {
        self.command(
            Method::POST,
            "/url",
            Some(json!({"url": url})),
            &format!("navigate to {url}"),
        )
        .await;
    }

    /// Reloads the page.
    pub async fn refresh(&self) {
        self.command(Method::POST, "/refresh", None, "refresh")
            .await;
    }

    /// The page's address.
    pub async fn url(&self) -> String {
        let value = self.command(Method::GET, "/url", None, "get url").await;
        value.as_str().unwrap_or_default().to_string()
    }

    async fn try_find_using(&self, using: &str, value: &str) -> Option<Element<'_>> {
        let found = self
            .try_command(
                Method::POST,
                "/element",
                Some(json!({"using": using, "value": value})),
            )
            .await;
        match found {
            Ok(reference) => Some(Element {
                browser: self,
                id: reference[ELEMENT_KEY]
                    .as_str()
                    .unwrap_or_else(|| panic!("{reference}"))
                    .to_string(),
                description: value.to_string(),
            }),
            Err(error) if error.error == "no such element" => None,
            Err(error) => panic!(
                "WebDriver find `{value}` ({using}): {}: {}",
                error.error, error.message
            ),
        }
    }

    /// The first element matching `css`, if there is one now.
    pub async fn try_find(&self, css: &str) -> Option<Element<'_>> {
        self.try_find_using("css selector", css).await
    }

    /// The first element matching `css`; panics naming the selector when there is none.
    pub async fn find(&self, css: &str) -> Element<'_> {
        match self.try_find(css).await {
            Some(element) => element,
            None => panic!("no element matches `{css}` on {}", self.url().await),
        }
    }

    /// Every element matching `css`, in document order.
    pub async fn find_all(&self, css: &str) -> Vec<Element<'_>> {
        let found = self
            .command(
                Method::POST,
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
                &format!("find elements `{css}`"),
            )
            .await;
        found
            .as_array()
            .unwrap()
            .iter()
            .map(|reference| Element {
                browser: self,
                id: reference[ELEMENT_KEY]
                    .as_str()
                    .unwrap_or_else(|| panic!("{reference}"))
                    .to_string(),
                description: css.to_string(),
            })
            .collect()
    }

    /// Waits until an element matches `css` and returns it.
    pub async fn wait_for(&self, css: &str) -> Element<'_> {
        let started = Instant::now();
        loop {
            if let Some(element) = self.try_find(css).await {
                return element;
            }
            assert!(
                started.elapsed() < WAIT,
                "timed out after {WAIT:?} waiting for an element matching `{css}` on {}",
                self.url().await
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the link with exactly this text exists and returns it.
    pub async fn wait_for_link(&self, text: &str) -> Element<'_> {
        let started = Instant::now();
        loop {
            if let Some(element) = self.try_find_using("link text", text).await {
                return element;
            }
            assert!(
                started.elapsed() < WAIT,
                "timed out after {WAIT:?} waiting for a link \"{text}\" on {}",
                self.url().await
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the JavaScript expression `condition` is truthy; panics with `description` and
    /// the expression when it is not within [`WAIT`].
    pub async fn wait_until(&self, description: &str, condition: &str) {
        let script = format!("return Boolean({condition});");
        let started = Instant::now();
        loop {
            if self.execute(&script, &[]).await == Value::Bool(true) {
                return;
            }
            assert!(
                started.elapsed() < WAIT,
                "timed out after {WAIT:?} waiting for {description} (`{condition}`) on {}",
                self.url().await
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the text of the element matching `css` contains `needle`; returns the text.
    pub async fn wait_for_text(&self, css: &str, needle: &str) -> String {
        let started = Instant::now();
        let mut last = String::new();
        loop {
            if let Some(element) = self.try_find(css).await
                && let Ok(text) = element.try_text().await
            {
                if text.contains(needle) {
                    return text;
                }
                last = text;
            }
            assert!(
                started.elapsed() < WAIT,
                "timed out after {WAIT:?} waiting for `{css}` to contain {needle:?} (it says {last:?})"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Runs `script` (a function body; `arguments` are `args`) and returns what it returns.
    pub async fn execute(&self, script: &str, args: &[Value]) -> Value {
        self.command(
            Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
            &format!("execute script `{script}`"),
        )
        .await
    }

    /// Runs `script` asynchronously: it finishes by calling `arguments[arguments.length - 1]`.
    pub async fn execute_async(&self, script: &str, args: &[Value]) -> Value {
        self.command(
            Method::POST,
            "/execute/async",
            Some(json!({"script": script, "args": args})),
            &format!("execute async script `{script}`"),
        )
        .await
    }

    /// Performs W3C input `actions` (a list of input sources), then releases every key and button.
    pub async fn perform(&self, actions: Value) {
        self.command(
            Method::POST,
            "/actions",
            Some(json!({"actions": actions})),
            "perform actions",
        )
        .await;
        self.command(Method::DELETE, "/actions", None, "release actions")
            .await;
    }

    /// Presses `key` (a character or a [`keys`] code) while holding `modifiers`, on whatever has
    /// focus.
    pub async fn press(&self, modifiers: &[&str], key: &str) {
        let mut steps = Vec::new();
        for modifier in modifiers {
            steps.push(json!({"type": "keyDown", "value": modifier}));
        }
        steps.push(json!({"type": "keyDown", "value": key}));
        steps.push(json!({"type": "keyUp", "value": key}));
        for modifier in modifiers.iter().rev() {
            steps.push(json!({"type": "keyUp", "value": modifier}));
        }
        self.perform(json!([{"type": "key", "id": "keyboard", "actions": steps}]))
            .await;
    }

    /// A mouse drag from one viewport point to another: move, press, `steps` moves, release.
    pub async fn drag(&self, from: (f64, f64), to: (f64, f64), steps: u32) {
        let point = |x: f64, y: f64, duration: u32| {
            json!({"type": "pointerMove", "origin": "viewport", "duration": duration,
                   "x": x.round() as i64, "y": y.round() as i64})
        };
        let mut actions = vec![
            point(from.0, from.1, 0),
            json!({"type": "pointerDown", "button": 0}),
        ];
        for step in 1..=steps {
            let fraction = f64::from(step) / f64::from(steps);
            actions.push(point(
                from.0 + (to.0 - from.0) * fraction,
                from.1 + (to.1 - from.1) * fraction,
                30,
            ));
        }
        actions.push(json!({"type": "pointerUp", "button": 0}));
        self.perform(json!([{"type": "pointer", "id": "mouse",
            "parameters": {"pointerType": "mouse"}, "actions": actions}]))
            .await;
    }

    /// Saves a PNG of the whole page: scrolled to the top, the window grown to the page's height
    /// for the shot, then put back.
    pub async fn screenshot(&self, path: &Path) {
        let sizes = self
            .execute(
                "window.scrollTo(0, 0); \
                 return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight];",
                &[],
            )
            .await;
        let height = sizes[0].as_f64().unwrap_or(1000.0) + sizes[1].as_f64().unwrap_or(0.0);
        let rect = self
            .command(Method::GET, "/window/rect", None, "get window rect")
            .await;
        self.command(
            Method::POST,
            "/window/rect",
            Some(json!({"width": rect["width"], "height": height.max(600.0).round() as i64})),
            "set window rect",
        )
        .await;
        let encoded = self
            .command(Method::GET, "/screenshot", None, "screenshot")
            .await;
        self.command(
            Method::POST,
            "/window/rect",
            Some(json!({"width": rect["width"], "height": rect["height"]})),
            "restore window rect",
        )
        .await;
        std::fs::write(path, decode_base64(encoded.as_str().unwrap()))
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    }

    /// The browser console entries since the last call (ChromeDriver's `se/log`, not W3C):
    /// `(level, source, message)`.
    pub async fn console_log(&self) -> Vec<(String, String, String)> {
        let entries = self
            .command(
                Method::POST,
                "/se/log",
                Some(json!({"type": "browser"})),
                "read the browser log",
            )
            .await;
        entries
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|entry| {
                        let field =
                            |name: &str| entry[name].as_str().unwrap_or_default().to_string();
                        (field("level"), field("source"), field("message"))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until a finished download named `name` is in [`Browser::downloads`]; returns its text.
    pub async fn wait_for_download(&self, name: &str) -> String {
        let path = self.downloads().join(name);
        let started = Instant::now();
        loop {
            // Chromium reserves NAME as an empty file at once, writes `NAME.crdownload` (or
            // `Unconfirmed N.crdownload`, through a `.org.chromium.*` temporary), and renames it over
            // NAME when the download is complete: done means NAME is there and neither is left.
            let present: Vec<String> = std::fs::read_dir(self.downloads())
                .unwrap()
                .filter_map(|entry| {
                    entry
                        .ok()
                        .map(|entry| entry.file_name().to_string_lossy().into_owned())
                })
                .collect();
            let in_progress = present
                .iter()
                .any(|file| file.ends_with(".crdownload") || file.starts_with(".org.chromium."));
            if path.is_file() && !in_progress {
                return std::fs::read_to_string(&path).unwrap();
            }
            assert!(
                started.elapsed() < WAIT,
                "timed out after {WAIT:?} waiting for the download {name} (the folder holds {present:?})"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Ends the session (what `Drop` does too, but awaited).
    pub async fn quit(mut self) {
        let _ = self.try_command(Method::DELETE, "", None).await;
        self.open = false;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        // Drop cannot await, and may run while a test unwinds: a plain blocking HTTP request ends
        // the session so that Chromium exits before ChromeDriver is killed.
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.driver.port)) else {
            return;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let request = format!(
            "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.session, self.driver.port
        );
        if stream.write_all(request.as_bytes()).is_ok() {
            // The answer comes once Chromium has closed; ChromeDriver may keep the connection
            // open after it, so read its first bytes only.
            let mut reply = [0_u8; 64];
            let _ = stream.read(&mut reply);
        }
    }
}

/// An element of the page, found by `description` (its selector).
#[derive(Debug, Clone)]
pub struct Element<'a> {
    browser: &'a Browser,
    id: String,
    description: String,
}

impl Element<'_> {
    /// The reference to pass as a script argument.
    pub fn to_json(&self) -> Value {
        json!({ELEMENT_KEY: self.id})
    }

    async fn command(&self, method: Method, path: &str, body: Option<Value>, what: &str) -> Value {
        self.browser
            .command(
                method,
                &format!("/element/{}{path}", self.id),
                body,
                &format!("{what} `{}`", self.description),
            )
            .await
    }

    /// Clicks the element's centre (scrolled into view).
    pub async fn click(&self) {
        self.command(Method::POST, "/click", None, "click").await;
    }

    /// Types `text` into the element.
    pub async fn send_keys(&self, text: &str) {
        self.command(
            Method::POST,
            "/value",
            Some(json!({"text": text})),
            "send keys to",
        )
        .await;
    }

    /// Empties a text box.
    pub async fn clear(&self) {
        self.command(Method::POST, "/clear", None, "clear").await;
    }

    async fn try_text(&self) -> Result<String, WebDriverError> {
        let value = self
            .browser
            .try_command(Method::GET, &format!("/element/{}/text", self.id), None)
            .await?;
        Ok(value.as_str().unwrap_or_default().to_string())
    }

    /// The rendered text.
    pub async fn text(&self) -> String {
        let value = self.command(Method::GET, "/text", None, "text of").await;
        value.as_str().unwrap_or_default().to_string()
    }

    /// An HTML attribute (`None` when absent).
    pub async fn attribute(&self, name: &str) -> Option<String> {
        let value = self
            .command(
                Method::GET,
                &format!("/attribute/{name}"),
                None,
                "attribute of",
            )
            .await;
        value.as_str().map(str::to_string)
    }

    /// A DOM property (`value`, `checked`, `hidden`, …).
    pub async fn property(&self, name: &str) -> Value {
        self.command(
            Method::GET,
            &format!("/property/{name}"),
            None,
            "property of",
        )
        .await
    }

    /// The centre of the element in viewport coordinates (scrolled into view first).
    pub async fn center(&self) -> (f64, f64) {
        let rect = self
            .browser
            .execute(
                "const e = arguments[0]; e.scrollIntoView({block: 'center'}); \
                 const r = e.getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2];",
                &[self.to_json()],
            )
            .await;
        (rect[0].as_f64().unwrap(), rect[1].as_f64().unwrap())
    }
}

/// Standard base64 (RFC 4648 §4) to bytes: the screenshot endpoint's encoding.
fn decode_base64(text: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(text.len() / 4 * 3);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for symbol in text.bytes() {
        let value = match symbol {
            b'A'..=b'Z' => symbol - b'A',
            b'a'..=b'z' => symbol - b'a' + 26,
            b'0'..=b'9' => symbol - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\r' | b'\n' => continue,
            other => panic!("not base64: byte {other}"),
        };
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            bytes.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    bytes
}

//! A real browser for the console's tests: headless Chromium driven by `chromedriver` through
//! the W3C WebDriver protocol (plain HTTP and JSON, so no client crate is needed).
//!
//! [`Browser::start`] finds `chromedriver` and `chromium` on `PATH` (Debian: `apt-get install
//! chromium chromium-driver`; `.ci/run` installs them). Without them the test prints `SKIPPED`,
//! or panics when `CI` is set. Only one browser runs at a time in a test binary ([`ONE`]): two
//! cores do not carry more.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{Semaphore, SemaphorePermit};

/// One browser at a time.
static ONE: Semaphore = Semaphore::const_new(1);

/// The WebDriver name of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    url: String,
    session: String,
    http: reqwest::Client,
    _turn: SemaphorePermit<'static>,
}

/// What a WebDriver command answered with an error.
#[derive(Debug)]
pub struct DriverError {
    pub error: String,
    pub message: String,
}

fn found(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Browser {
    /// A headless Chromium, 1280×900, or `None` (SKIPPED printed) where there is none.
    pub async fn start() -> Option<Browser> {
        let chromium = ["chromium", "chromium-browser", "google-chrome"]
            .into_iter()
            .find(|p| found(p));
        let (Some(chromium), true) = (chromium, found("chromedriver")) else {
            return super::skip_or_panic(
                "chromedriver and chromium are not installed (apt-get install chromium chromium-driver)",
            );
        };
        let turn = ONE
            .acquire()
            .await
            .expect("the browser semaphore is never closed");
        let port = super::free_port();
        let http = super::worker::http_client();
        let driver = spawn_driver(port);
        let url = format!("http://127.0.0.1:{port}");
        wait_ready(&http, &url).await;
        let session = new_session(&http, &url, chromium).await;
        Some(Browser {
            driver,
            url,
            session,
            http,
            _turn: turn,
        })
    }

    /// One command; its `value`, or the driver's error.
    pub async fn try_cmd(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> Result<Value, DriverError> {
        let url = format!("{}/session/{}{path}", self.url, self.session);
        let mut req = self.http.request(method.clone(), url);
        if method != reqwest::Method::GET {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let resp = req.send().await.expect("chromedriver answers");
        let ok = resp.status().is_success();
        let answer = json_of(resp).await;
        let value = answer["value"].clone();
        if ok {
            return Ok(value);
        }
        Err(DriverError {
            error: value["error"].as_str().unwrap_or_default().to_string(),
            message: value["message"].as_str().unwrap_or_default().to_string(),
        })
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        match self.try_cmd(method, path, body).await {
            Ok(v) => v,
            Err(e) => panic!("WebDriver {path}: {} {}", e.error, e.message),
        }
    }

    pub async fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await;
    }

    /// The elements `css` selects, now.
    pub async fn find_all(&self, css: &str) -> Vec<String> {
        let body = json!({ "using": "css selector", "value": css });
        match self.try_cmd(reqwest::Method::POST, "/elements", body).await {
            Ok(Value::Array(all)) => all
                .iter()
                .filter_map(|e| e[ELEMENT].as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The first element `css` selects, waiting up to 10 s for it.
    pub async fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(e) = self.find_all(css).await.into_iter().next() {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no element {css} on the page:\n{}",
                self.text().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn click(&self, element: &str) {
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            json!({}),
        )
        .await;
    }

    /// Clear the field, then type `text` into it.
    pub async fn type_into(&self, element: &str, text: &str) {
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{element}/clear"),
            json!({}),
        )
        .await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    /// The window's size in CSS pixels (as a laptop's 1280×900, or a phone's 390×844).
    pub async fn resize(&self, width: u32, height: u32) {
        let rect = json!({ "width": width, "height": height });
        self.cmd(reqwest::Method::POST, "/window/rect", rect).await;
    }

    /// Press Enter on `element` (focused first), as a keyboard user does.
    pub async fn press_enter(&self, element: &str) {
        let keys = json!({ "text": "\u{E007}" });
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            keys,
        )
        .await;
    }

    /// What the page leaves unnamed for assistive technology: fields without a label and
    /// buttons without text (one line each).
    pub async fn unlabelled(&self) -> Vec<String> {
        let script = "return Array.from(document.querySelectorAll('input,select,textarea'))\
            .filter(e => e.type !== 'hidden' && e.labels.length === 0 && !e.getAttribute('aria-label'))\
            .map(e => 'field ' + e.outerHTML)\
            .concat(Array.from(document.querySelectorAll('button'))\
            .filter(b => !b.textContent.trim()).map(b => 'button ' + b.outerHTML));";
        match self.run(script).await {
            Value::Array(all) => all.iter().map(|v| v.to_string()).collect(),
            other => panic!("unlabelled: {other}"),
        }
    }

    /// `script` run in the page (`return …` gives a value).
    pub async fn run(&self, script: &str) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        )
        .await
    }

    /// What the page says (its visible text).
    pub async fn text(&self) -> String {
        match self
            .try_cmd(reqwest::Method::POST, "/execute/sync", json!({ "script": "return document.body ? document.body.innerText : ''", "args": [] }))
            .await
        {
            Ok(v) => v.as_str().unwrap_or_default().to_string(),
            Err(e) => format!("(no text: {} {})", e.error, e.message),
        }
    }

    /// The text of the confirmation the page asks (waiting up to 10 s for it), after it was
    /// accepted.
    pub async fn accept_confirmation(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(v) = self
                .try_cmd(reqwest::Method::GET, "/alert/text", json!({}))
                .await
            {
                self.cmd(reqwest::Method::POST, "/alert/accept", json!({}))
                    .await;
                return v.as_str().unwrap_or_default().to_string();
            }
            assert!(
                Instant::now() < deadline,
                "the page asked nothing:\n{}",
                self.text().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits up to 10 s for the page at a URL holding `part` to have loaded.
    pub async fn wait_url(&self, part: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let at = self
                .run("return document.readyState === 'complete' ? document.URL : ''")
                .await;
            if at.as_str().is_some_and(|u| u.contains(part)) {
                return;
            }
            assert!(Instant::now() < deadline, "no page at {part:?}; at {at}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits up to `within` for the page's text to hold `what` (reloading it each second when
    /// `reload`); the text then.
    pub async fn wait_text(&self, what: &str, within: Duration, reload: bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let text = self.text().await;
            if text.contains(what) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "the page never said {what:?}; it says:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(if reload { 1000 } else { 100 })).await;
            if reload {
                self.cmd(reqwest::Method::POST, "/refresh", json!({})).await;
            }
        }
    }

    /// A PNG of the page's viewport, written to `target/console-screenshots/<name>.png` (whole
    /// page height: the window grows to fit first); its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let height = self
            .run("return Math.max(document.body.scrollHeight, 600)")
            .await
            .as_u64()
            .unwrap_or(900)
            .min(4000);
        let now = self
            .cmd(reqwest::Method::GET, "/window/rect", json!({}))
            .await;
        let rect = json!({ "width": now["width"], "height": height + 120 });
        self.cmd(reqwest::Method::POST, "/window/rect", rect).await;
        let png = self
            .cmd(reqwest::Method::GET, "/screenshot", json!({}))
            .await;
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("a screenshot"))
            .expect("base64 PNG");
        assert!(bytes.starts_with(b"\x89PNG"), "a PNG");
        let dir = screenshots_dir();
        std::fs::create_dir_all(&dir).expect("create the screenshots folder");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, bytes).expect("write the screenshot");
        eprintln!("screenshot: {}", path.display());
        path
    }
}

/// `target/console-screenshots` (under `CARGO_TARGET_DIR` when set).
pub fn screenshots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("console-screenshots")
}

fn spawn_driver(port: u16) -> Child {
    use std::os::unix::process::CommandExt;
    Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: dropping the browser ends chromedriver and every Chromium.
        .process_group(0)
        .spawn()
        .expect("start chromedriver")
}

async fn wait_ready(http: &reqwest::Client, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = http.get(format!("{url}/status")).send().await {
            let status = json_of(r).await;
            if status["value"]["ready"] == true {
                return;
            }
        }
        assert!(Instant::now() < deadline, "chromedriver never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn new_session(http: &reqwest::Client, url: &str, chromium: &str) -> String {
    let binary = Command::new("sh")
        .args(["-c", &format!("command -v {chromium}")])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .expect("where chromium is");
    let caps = json!({ "capabilities": { "alwaysMatch": {
        "browserName": "chrome",
        "unhandledPromptBehavior": "ignore",
        "goog:chromeOptions": {
            "binary": binary,
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1280,900", "--no-first-run", "--disable-extensions"]
        }
    }}});
    let resp = http
        .post(format!("{url}/session"))
        .header("content-type", "application/json")
        .body(caps.to_string())
        .send()
        .await
        .expect("chromedriver answers");
    let answer = json_of(resp).await;
    match answer["value"]["sessionId"].as_str() {
        Some(id) => id.to_string(),
        None => panic!("no browser session: {answer}"),
    }
}

/// A response's JSON body (`Null` when it is not JSON).
async fn json_of(resp: reqwest::Response) -> Value {
    let bytes = resp.bytes().await.unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The group chromedriver leads: it and every Chromium it started.
        let group = -(self.driver.id() as i32);
        // SAFETY: kill(2) with a process group id and a signal number; no memory is shared.
        unsafe {
            libc::kill(group, libc::SIGKILL);
        }
        let _ = self.driver.wait();
    }
}

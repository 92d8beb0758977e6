//! A small W3C WebDriver client for the console tests: Debian's `chromium`
//! driven headless through `chromedriver` (package `chromium-driver`), which
//! `scripts/test.sh` installs when missing. Only the commands the tests use.

use std::{
    os::unix::process::CommandExt,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use base64::Engine;
use serde_json::{Value, json};

/// The key W3C WebDriver names element references by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long a condition may take to hold before the test fails. Generous: it
/// bounds a broken run, a passing run returns as soon as the condition holds.
pub const WAIT: Duration = Duration::from_secs(30);

/// A headless Chromium, its driver and one WebDriver session; both processes are
/// ended on drop.
pub struct Browser {
    driver: Child,
    base: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

fn program(env: &str, name: &str) -> String {
    if let Ok(path) = std::env::var(env) {
        return path;
    }
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file());
    match found {
        Some(path) => path.display().to_string(),
        None => panic!(
            "{name} is not installed: the console tests drive a real headless browser. \
             Install Debian's chromium and chromium-driver (scripts/test.sh does), or set {env}"
        ),
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().unwrap().port()
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a window of the given size.
    pub async fn start(width: u32, height: u32) -> Self {
        let driver_path = program("CHROMEDRIVER", "chromedriver");
        let chromium = program("CHROMIUM", "chromium");
        let port = free_port();
        // In a process group of its own, so that its Chromium can be ended with it.
        let driver = Command::new(&driver_path)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut browser = Self {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            _profile: profile,
        };
        // The driver answers its status once it listens.
        let deadline = Instant::now() + WAIT;
        loop {
            let ready = browser
                .http
                .get(format!("{}/status", browser.base))
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success());
            if ready.is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let capabilities = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium,
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        "--no-first-run", "--disable-extensions", "--disable-background-networking",
                        format!("--window-size={width},{height}"),
                        format!("--user-data-dir={}", browser._profile.path().display()),
                    ],
                },
                "goog:loggingPrefs": { "browser": "ALL" },
            }}
        });
        let answer = browser.call("POST", "/session", capabilities).await;
        let id = answer["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {answer}"))
            .to_string();
        browser.base = format!("{}/session/{id}", browser.base);
        browser
    }

    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body),
        };
        let response = request.send().await.expect("the driver answers");
        let status = response.status();
        let value: Value = response.json().await.expect("the driver answers JSON");
        assert!(
            status.is_success(),
            "WebDriver {method} {path} failed ({status}): {}",
            value["value"]["message"]
        );
        value["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.call("POST", "/url", json!({ "url": url })).await;
    }

    /// The elements matching a CSS selector now (none is not an error).
    pub async fn find_all(&self, css: &str) -> Vec<Element<'_>> {
        let found = self
            .call(
                "POST",
                "/elements",
                json!({ "using": "css selector", "value": css }),
            )
            .await;
        found
            .as_array()
            .unwrap()
            .iter()
            .map(|e| Element {
                browser: self,
                id: e[ELEMENT].as_str().unwrap().to_string(),
            })
            .collect()
    }

    /// Waits until an element matches `css`, and returns the first.
    pub async fn wait_for(&self, css: &str) -> Element<'_> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(element) = self.find_all(css).await.into_iter().next() {
                return element;
            }
            if Instant::now() > deadline {
                let text = self.text("body").await;
                panic!("nothing matched {css} within {WAIT:?}; the page says: {text}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the text of the first element matching `css` contains `needle`.
    pub async fn wait_for_text(&self, css: &str, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let mut last = String::new();
            if let Some(element) = self.find_all(css).await.into_iter().next() {
                last = element.text().await;
                if last.contains(needle) {
                    return last;
                }
            }
            if Instant::now() > deadline {
                panic!("{css} did not come to contain {needle:?} within {WAIT:?}; it says: {last}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The visible text of the first element matching `css` ("" if none).
    pub async fn text(&self, css: &str) -> String {
        match self.find_all(css).await.into_iter().next() {
            Some(element) => element.text().await,
            None => String::new(),
        }
    }

    /// The page's DOM as markup.
    pub async fn source(&self) -> String {
        self.call("GET", "/source", Value::Null)
            .await
            .as_str()
            .unwrap()
            .to_string()
    }

    pub async fn run(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        )
        .await
    }

    /// The browser's cookies for the current page, as WebDriver reports them.
    pub async fn cookies(&self) -> Vec<Value> {
        self.call("GET", "/cookie", Value::Null)
            .await
            .as_array()
            .unwrap()
            .clone()
    }

    /// Messages the page logged to its console (errors, CSP violations).
    pub async fn console_log(&self) -> Vec<Value> {
        self.call("POST", "/se/log", json!({ "type": "browser" }))
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub async fn resize(&self, width: u32, height: u32) {
        self.call(
            "POST",
            "/window/rect",
            json!({ "width": width, "height": height }),
        )
        .await;
    }

    /// Saves a PNG of the viewport under `target/console/<name>.png`.
    pub async fn screenshot(&self, name: &str) {
        let data = self.call("GET", "/screenshot", Value::Null).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap())
            .expect("a base64 screenshot");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console");
        std::fs::create_dir_all(&dir).expect("target/console");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("screenshot written");
    }
}

impl Browser {
    /// Ends the session, which closes its Chromium.
    pub async fn quit(self) {
        let _ = self.http.delete(&self.base).send().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The driver and every Chromium process it started (a failed test does
        // not reach `quit`).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// One element of the page.
pub struct Element<'a> {
    browser: &'a Browser,
    id: String,
}

impl Element<'_> {
    pub async fn click(&self) {
        self.browser
            .call("POST", &format!("/element/{}/click", self.id), json!({}))
            .await;
    }

    /// Types `text` into the element (`\u{E007}` is the Enter key).
    pub async fn type_text(&self, text: &str) {
        self.browser
            .call(
                "POST",
                &format!("/element/{}/value", self.id),
                json!({ "text": text }),
            )
            .await;
    }

    pub async fn clear(&self) {
        self.browser
            .call("POST", &format!("/element/{}/clear", self.id), json!({}))
            .await;
    }

    pub async fn text(&self) -> String {
        self.browser
            .call("GET", &format!("/element/{}/text", self.id), Value::Null)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

//! A WebDriver client for the browser test: the dozen W3C WebDriver commands it uses, over
//! the HTTP client already in the tree, driving Debian's `chromedriver` and headless
//! `chromium`. (The WebDriver crates pull in a URL and Unicode stack that every developer
//! would compile for one ignored test.)

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};
use serving_testkit::wait_until;

/// The key of an element reference in W3C WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
pub const ENTER: &str = "\u{E007}";
pub const TAB: &str = "\u{E004}";

/// A chromedriver process and one headless Chromium session; both end on drop.
pub struct Browser {
    driver: Child,
    base: String,
    agent: ureq::Agent,
    session: String,
    _profile: tempfile::TempDir,
}

/// A page element found by a CSS selector.
#[derive(Clone)]
pub struct Element {
    id: String,
}

fn program(env: &str, default: &str) -> PathBuf {
    std::env::var_os(env).map_or_else(|| PathBuf::from(default), PathBuf::from)
}

impl Browser {
    /// Starts chromedriver (`CHROMEDRIVER`, default `chromedriver`) on `port` and a headless
    /// Chromium (`CHROMIUM`, default `/usr/bin/chromium`) with a fresh profile.
    pub fn start(port: u16) -> Self {
        let driver = Command::new(program("CHROMEDRIVER", "chromedriver"))
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver: apt-get install chromium chromium-driver");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let base = format!("http://127.0.0.1:{port}");
        wait_until("chromedriver ready", Duration::from_secs(20), || {
            agent
                .get(format!("{base}/status"))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_to_vec().ok())
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .filter(|s| s["value"]["ready"] == true)
        });
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut browser = Self {
            driver,
            base,
            agent,
            session: String::new(),
            _profile: profile,
        };
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
            &format!("--user-data-dir={}", browser._profile.path().display()),
        ];
        let chromium = program("CHROMIUM", "/usr/bin/chromium");
        let answer = browser.command(
            "POST",
            "/session",
            json!({ "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": { "binary": chromium, "args": args },
            } } }),
        );
        browser.session = answer["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"))
            .to_owned();
        browser
    }

    fn command(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let sent = match method {
            "GET" => self.agent.get(&url).call(),
            "DELETE" => self.agent.delete(&url).call(),
            _ => self
                .agent
                .post(&url)
                .header("content-type", "application/json")
                .send(body.to_string().as_bytes()),
        };
        let mut answer = sent.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = answer.status().as_u16();
        let bytes = answer
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let value: Value =
            serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert!(
            (200..300).contains(&status),
            "{method} {path} {body}: {status} {}",
            value["value"]["message"]
        );
        value["value"].clone()
    }

    fn session_command(&self, method: &str, path: &str, body: Value) -> Value {
        self.command(method, &format!("/session/{}{path}", self.session), body)
    }

    pub fn goto(&self, url: &str) {
        self.session_command("POST", "/url", json!({ "url": url }));
    }

    pub fn url(&self) -> String {
        self.session_command("GET", "/url", json!({}))
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its value.
    pub fn run(&self, script: &str, args: Value) -> Value {
        self.session_command(
            "POST",
            "/execute/sync",
            json!({ "script": script, "args": args }),
        )
    }

    pub fn find(&self, selector: &str) -> Element {
        let found = self.session_command(
            "POST",
            "/element",
            json!({ "using": "css selector", "value": selector }),
        );
        Element {
            id: found[ELEMENT]
                .as_str()
                .unwrap_or_else(|| panic!("no element {selector}"))
                .to_owned(),
        }
    }

    pub fn exists(&self, selector: &str) -> bool {
        let found = self.session_command(
            "POST",
            "/elements",
            json!({ "using": "css selector", "value": selector }),
        );
        found.as_array().is_some_and(|a| !a.is_empty())
    }

    pub fn text(&self, element: &Element) -> String {
        self.session_command("GET", &format!("/element/{}/text", element.id), json!({}))
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn attribute(&self, element: &Element, name: &str) -> Option<String> {
        self.session_command(
            "GET",
            &format!("/element/{}/attribute/{name}", element.id),
            json!({}),
        )
        .as_str()
        .map(str::to_owned)
    }

    pub fn click(&self, element: &Element) {
        self.session_command("POST", &format!("/element/{}/click", element.id), json!({}));
    }

    pub fn clear(&self, element: &Element) {
        self.session_command("POST", &format!("/element/{}/clear", element.id), json!({}));
    }

    /// Types `text` into the element, key by key (special keys as WebDriver codes).
    pub fn type_into(&self, element: &Element, text: &str) {
        self.session_command(
            "POST",
            &format!("/element/{}/value", element.id),
            json!({ "text": text }),
        );
    }

    /// Presses and releases a key on whatever has the focus.
    pub fn press(&self, key: &str) {
        self.session_command(
            "POST",
            "/actions",
            json!({ "actions": [{ "type": "key", "id": "keyboard", "actions": [
                { "type": "keyDown", "value": key }, { "type": "keyUp", "value": key }
            ] }] }),
        );
    }

    /// Waits until `script` returns true; a hang guard, not a timing assertion.
    pub fn wait_for(&self, what: &str, script: &str) {
        wait_until(what, Duration::from_secs(30), || {
            (self.run(script, json!([])) == Value::Bool(true)).then_some(())
        });
    }

    /// Saves a PNG of the whole page (the window grown to its height) to `path`.
    pub fn screenshot(&self, path: &Path) {
        let height = self
            .run("return document.documentElement.scrollHeight;", json!([]))
            .as_u64()
            .unwrap_or(900)
            .clamp(600, 8000);
        self.session_command(
            "POST",
            "/window/rect",
            json!({ "width": 1280, "height": height + 140 }),
        );
        let png = self.session_command("GET", "/screenshot", json!({}));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("a base64 PNG"))
            .expect("valid base64");
        std::fs::write(path, bytes).expect("write the screenshot");
        self.session_command(
            "POST",
            "/window/rect",
            json!({ "width": 1280, "height": 900 }),
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self
                .agent
                .delete(format!("{}/session/{}", self.base, self.session))
                .call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

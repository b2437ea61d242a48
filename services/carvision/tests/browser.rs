//! The CarVision Dashboard in a real headless Chromium, against the real binary on real
//! sockets: every page loads with nothing from elsewhere, a filter changes the charts, the
//! predictor prices a listing as the API does, a bad value is named beside its field, and the
//! keyboard reaches the content. A screenshot of each page lands in
//! `target/xtask/screenshots/` for a person to look at.
//!
//! Needs Debian's `chromium` and `chromium-driver`; run it with
//! `cargo test -p carvision --test browser -- --ignored`.

mod webdriver;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use serde_json::{json, Value};
use serving_testkit::{free_port, serve_command, wait_until};
use webdriver::{Browser, ENTER, TAB};

const BINARY: &str = env!("CARGO_BIN_EXE_carvision");

/// `carvision serve` with its dashboard, stopped with SIGTERM on drop.
struct Server {
    child: Child,
    api: String,
    dashboard: String,
}

impl Server {
    fn start(model_dir: &Path) -> Self {
        let (api_port, dashboard_port) = (free_port(), free_port());
        let child = serve_command(Path::new(BINARY), api_port, model_dir)
            .args(["--dashboard-port", &dashboard_port.to_string()])
            .spawn()
            .expect("spawn carvision serve");
        let server = Self {
            child,
            api: format!("http://127.0.0.1:{api_port}"),
            dashboard: format!("http://127.0.0.1:{dashboard_port}"),
        };
        let health = format!("{}/health", server.dashboard);
        wait_until("the dashboard healthy", Duration::from_secs(60), || {
            (get_json(&health).0 == 200).then_some(())
        });
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

fn get_json(url: &str) -> (u16, Value) {
    match agent().get(url).call() {
        Ok(mut r) => (
            r.status().as_u16(),
            r.body_mut()
                .read_to_vec()
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or(Value::Null),
        ),
        Err(_) => (0, Value::Null),
    }
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("xtask/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(args: &[&str]) {
    let out = Command::new(BINARY).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
}

/// The number in a "Showing 1,234 of ..." or "$12,345" text.
fn leading_number(text: &str) -> f64 {
    let digits: String = text
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit() || *c == ',')
        .filter(|c| *c != ',')
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no number in {text:?}"))
}

#[test]
#[ignore = "drives headless Chromium (apt-get install chromium chromium-driver): cargo test -p carvision --test browser -- --ignored"]
fn the_dashboard_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("vehicles_us.csv");
    let model_dir = dir.path().join("model");
    run(&[
        "generate-data",
        "--rows",
        "20000",
        "--out",
        data.to_str().unwrap(),
    ]);
    run(&[
        "train",
        "--data-path",
        data.to_str().unwrap(),
        "--model-dir",
        model_dir.to_str().unwrap(),
    ]);
    let server = Server::start(&model_dir);
    let browser = Browser::start(free_port());
    let shots = screenshots();
    let base = &server.dashboard;

    // Every page loads, named by its heading, and fetches nothing from anywhere else.
    for (path, heading, shot) in [
        ("/", "Market overview", "overview.png"),
        ("/market", "Market", "market.png"),
        ("/model", "The served model", "model.png"),
        ("/predict", "Price predictor", "predictor.png"),
    ] {
        browser.goto(&format!("{base}{path}"));
        assert_eq!(browser.text(&browser.find("h1")), heading, "{path}");
        let elsewhere = browser.run(
            "return performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith(location.origin));",
            json!([]),
        );
        assert_eq!(elsewhere, json!([]), "{path} fetched from elsewhere");
        let styled = browser.run(
            "return getComputedStyle(document.querySelector('header.top')).display;",
            json!([]),
        );
        assert_eq!(styled, "flex", "{path}: the stylesheet did not apply");
        assert!(
            browser.exists("figure svg[role=img]") || path == "/predict",
            "{path}"
        );
        browser.screenshot(&shots.join(shot));
    }

    // Market: a filter changes every chart, and the view is in the address.
    browser.goto(&format!("{base}/market"));
    let showing = |b: &Browser| leading_number(&b.text(&b.find("#matching")));
    let all = showing(&browser);
    let charts = [
        "median-by-year-chart-title",
        "depreciation-chart-title",
        "mileage-chart-title",
        "condition-chart-title",
    ];
    let before: Vec<String> = charts
        .iter()
        .map(|c| {
            browser
                .run(
                    "return document.getElementById(arguments[0]).closest('svg').outerHTML;",
                    json!([c]),
                )
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let min_price = browser.find("#min_price");
    browser.clear(&min_price);
    browser.type_into(&min_price, "15000");
    browser.click(&browser.find(r#"input[name=brand][value=ford]"#));
    browser.click(&browser.find("form.filters button[type=submit]"));
    browser.wait_for(
        "the filtered market",
        "return location.search.includes('min_price=15000') && document.readyState === 'complete';",
    );
    let url = browser.url();
    assert!(
        url.contains("min_price=15000") && url.contains("brand=ford"),
        "{url}"
    );
    let filtered = showing(&browser);
    assert!(filtered > 0.0 && filtered < all, "{filtered} of {all}");
    for (c, old) in charts.iter().zip(&before) {
        let new = browser
            .run(
                "return document.getElementById(arguments[0]).closest('svg').outerHTML;",
                json!([c]),
            )
            .as_str()
            .unwrap()
            .to_owned();
        assert_ne!(&new, old, "{c} did not change with the filter");
    }
    assert_eq!(
        browser
            .attribute(&browser.find(r#"input[name=brand][value=ford]"#), "checked")
            .as_deref(),
        Some("true")
    );
    browser.screenshot(&shots.join("market-filtered.png"));
    // The address alone gives the same view.
    browser.goto(&url);
    assert_eq!(showing(&browser), filtered);

    // Predictor: fill the form, submit it with the keyboard, find the API's price.
    browser.goto(&format!("{base}/predict"));
    let fill = |selector: &str, text: &str| {
        let field = browser.find(selector);
        browser.clear(&field);
        browser.type_into(&field, text);
    };
    fill("#model_year", "2012");
    fill("#model", "honda civic");
    browser.click(&browser.find(r#"#condition option[value="good"]"#));
    browser.click(&browser.find(r#"#type option[value="sedan"]"#));
    browser.click(&browser.find(r#"#drive option[value="fwd"]"#));
    fill("#cylinders", "4");
    fill("#odometer", "90000");
    browser.type_into(&browser.find("#odometer"), ENTER);
    browser.wait_for(
        "a price",
        "return !!document.getElementById('predicted-price');",
    );
    let price = browser.find("#predicted-price");
    let text = browser.text(&price);
    assert!(text.starts_with('$'), "{text}");
    let shown: f64 = browser
        .attribute(&price, "data-value")
        .unwrap()
        .parse()
        .unwrap();
    let listing = json!({
        "model_year": 2012, "model": "honda civic", "condition": "good", "cylinders": 4,
        "fuel": "gas", "odometer": 90000, "transmission": "automatic", "type": "sedan",
        "paint_color": "white", "drive": "fwd"
    });
    let mut asked = agent()
        .post(format!("{}/predict", server.api))
        .header("content-type", "application/json")
        .send(listing.to_string().as_bytes())
        .unwrap();
    let answer: Value = serde_json::from_slice(&asked.body_mut().read_to_vec().unwrap()).unwrap();
    assert_eq!(
        shown,
        answer["prediction"].as_f64().unwrap(),
        "the API's price"
    );
    assert!(browser.exists("#explanation svg[role=img]"));
    assert!(browser.exists("#similar svg[role=img]"));
    browser.screenshot(&shots.join("predictor-price.png"));

    // A bad value: the message sits beside its field, and the form keeps what was typed.
    fill("#model_year", "1800");
    browser.click(&browser.find("form.predictor button[type=submit]"));
    browser.wait_for(
        "the message",
        "return !!document.getElementById('model_year-error');",
    );
    let message = browser.text(&browser.find("#model_year-error"));
    assert!(message.contains("must be between 1900 and"), "{message}");
    let beside = browser.run(
        "const e = document.getElementById('model_year-error'); const i = document.getElementById('model_year'); \
         return e.parentElement === i.parentElement && i.getAttribute('aria-invalid') === 'true' \
             && i.getAttribute('aria-describedby').includes('model_year-error');",
        json!([]),
    );
    assert_eq!(beside, true);
    assert_eq!(
        browser.run("return document.getElementById('model').value;", json!([])),
        "honda civic"
    );
    assert!(!browser.exists("#predicted-price"));
    browser.screenshot(&shots.join("predictor-error.png"));

    // The keyboard: the first Tab reaches the skip link, which moves to the content; the
    // next reach the navigation.
    browser.goto(&format!("{base}/"));
    browser.press(TAB);
    let focused = || {
        browser.run(
            "return document.activeElement.textContent.trim();",
            json!([]),
        )
    };
    assert_eq!(focused(), "Skip to the content");
    browser.press(ENTER);
    assert_eq!(
        browser.run("return document.activeElement.id;", json!([])),
        "main"
    );
    browser.goto(&format!("{base}/"));
    for _ in 0..3 {
        browser.press(TAB);
    }
    assert_eq!(focused(), "Market");
    browser.press(ENTER);
    browser.wait_for("the market page", "return location.pathname === '/market';");
    // Every form control has a label.
    browser.goto(&format!("{base}/predict"));
    let unlabelled = browser.run(
        "return [...document.querySelectorAll('input, select')].filter(e => e.labels.length === 0).map(e => e.name);",
        json!([]),
    );
    assert_eq!(unlabelled, json!([]));
    println!("screenshots in {}", shots.display());
}

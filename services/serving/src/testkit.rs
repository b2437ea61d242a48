//! The behaviour every service must show, as one reusable test suite. Each service's tests call
//! these with its own bad inputs, so a new service is covered by writing one short test file.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::artifact::{self, Artifact, FORMAT_VERSION};
use crate::http::{router, AppState, MAX_BATCH};
use crate::Service;

/// Sends one request to the router in-process; returns the status and the body (JSON when it
/// parses, else a string).
pub async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: Option<String>,
) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, Body::from))
        .expect("a valid request");
    let response = app
        .clone()
        .oneshot(request)
        .await
        .expect("the router is infallible");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value)
}

/// Generates `rows` of synthetic data and trains on it into `dir`; returns the metrics.
pub fn train_into<S: Service>(dir: &Path, rows: usize, seed: u64) -> Value {
    let data = dir.join("data.csv");
    let mut file = std::fs::File::create(&data).expect("create data file");
    S::generate_data(rows, seed, &mut file).expect("generate data");
    let (model, metrics) = S::train(&data, seed).expect("training succeeds on generated data");
    let artifact = Artifact {
        service: S::NAME.into(),
        format_version: FORMAT_VERSION,
        seed,
        model,
    };
    artifact::save(&dir.join("model"), &artifact, &metrics).expect("save model");
    metrics
}

/// A router serving a model trained on `rows` generated rows.
pub fn trained_router<S: Service>(rows: usize) -> (tempfile::TempDir, axum::Router) {
    let dir = tempfile::tempdir().expect("tempdir");
    train_into::<S>(dir.path(), rows, 7);
    let model = artifact::load::<S::Model>(&dir.path().join("model"), S::NAME)
        .expect("load")
        .expect("a model");
    (dir, router(AppState::<S>::new(Some(model))))
}

fn example<S: Service>() -> Value {
    serde_json::to_value(S::example_request()).expect("the example serializes")
}

fn merged(mut base: Value, patch: &Value) -> Value {
    for (k, v) in patch.as_object().expect("a patch is an object") {
        base[k] = v.clone();
    }
    base
}

async fn expect_invalid(app: &axum::Router, uri: &str, body: String, field: Option<&str>) {
    let (status, answer) = call(app, "POST", uri, Some(body.clone())).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{uri} {body} -> {answer}"
    );
    assert_eq!(answer["error"], "invalid_request", "{answer}");
    assert!(
        answer["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{answer}"
    );
    if let Some(field) = field {
        assert_eq!(answer["field"], field, "{uri} {body} -> {answer}");
    }
}

/// Every endpoint of `S`, the good path and every kind of bad input. `bad_fields` are
/// (field, patch) pairs: applying the patch to the example request must give a 422 naming
/// that field (out-of-range values, wrong types, unknown categories).
pub async fn conformance<S: Service>(bad_fields: &[(&str, Value)]) {
    let (_dir, app) = trained_router::<S>(1500);

    let (status, health) = call(&app, "GET", "/health", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["version"], "1.0.0");
    assert_eq!(health["model_loaded"], true);

    let (status, root) = call(&app, "GET", "/", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(root["name"], S::TITLE);
    assert_eq!(root["links"]["health"], "/health");

    let (status, spec) = call(&app, "GET", "/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    for path in ["/health", "/predict", "/predict_batch", "/metrics"] {
        assert!(spec["paths"][path].is_object(), "openapi lacks {path}");
    }
    let request_schema =
        &spec["components"]["schemas"][<S::Request as utoipa::ToSchema>::name().as_ref()];
    for field in example::<S>().as_object().expect("an object").keys() {
        assert!(
            request_schema["properties"][field].is_object(),
            "openapi lacks request field {field}"
        );
    }

    let (status, prediction) =
        call(&app, "POST", "/predict", Some(example::<S>().to_string())).await;
    assert_eq!(status, StatusCode::OK, "{prediction}");
    assert!(prediction.is_object());

    let two = json!({ "items": [example::<S>(), example::<S>()] }).to_string();
    let (status, batch) = call(&app, "POST", "/predict_batch", Some(two)).await;
    assert_eq!(status, StatusCode::OK, "{batch}");
    assert_eq!(batch["count"], 2);
    assert_eq!(batch["predictions"][0], batch["predictions"][1]);

    // Bad input of every kind: 422, naming the field where there is one.
    expect_invalid(&app, "/predict", "{not json".into(), None).await;
    expect_invalid(&app, "/predict", String::new(), None).await;
    expect_invalid(&app, "/predict", "[]".into(), None).await;
    let unknown = merged(example::<S>(), &json!({"surprise": 1}));
    expect_invalid(&app, "/predict", unknown.to_string(), Some("surprise")).await;
    for (field, patch) in bad_fields {
        let body = merged(example::<S>(), patch).to_string();
        expect_invalid(&app, "/predict", body.clone(), Some(field)).await;
        let batch = json!({ "items": [example::<S>(), merged(example::<S>(), patch)] }).to_string();
        expect_invalid(
            &app,
            "/predict_batch",
            batch,
            Some(&format!("items[1].{field}")),
        )
        .await;
    }
    for field in example::<S>().as_object().expect("an object").keys() {
        let mut body = example::<S>();
        body.as_object_mut().expect("an object").remove(field);
        let (status, answer) = call(&app, "POST", "/predict", Some(body.to_string())).await;
        // A field may be optional; if it is not, the error names it.
        if status != StatusCode::OK {
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
            assert_eq!(answer["field"], field.as_str(), "{answer}");
        }
    }
    expect_invalid(
        &app,
        "/predict_batch",
        json!({"items": []}).to_string(),
        Some("items"),
    )
    .await;
    let too_many = json!({ "items": vec![example::<S>(); MAX_BATCH + 1] }).to_string();
    expect_invalid(&app, "/predict_batch", too_many, Some("items")).await;
    let full = json!({ "items": vec![example::<S>(); MAX_BATCH] }).to_string();
    assert_eq!(
        call(&app, "POST", "/predict_batch", Some(full)).await.0,
        StatusCode::OK
    );

    let (status, _) = call(&app, "GET", "/no-such-page", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, metrics) = call(&app, "GET", "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    let text = metrics.as_str().expect("metrics are text");
    let prefix = S::NAME;
    assert!(
        text.contains(&format!(
            "{prefix}_requests_total{{method=\"POST\",endpoint=\"/predict\",status=\"200\"}}"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{prefix}_requests_total{{method=\"POST\",endpoint=\"/predict\",status=\"422\"}}"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("{prefix}_request_duration_seconds_bucket{{")),
        "{text}"
    );
}

/// Without a model the service still answers: health is 503 and unhealthy, predictions 503.
pub async fn without_model<S: Service>() {
    let app = router(AppState::<S>::new(None));
    let (status, health) = call(&app, "GET", "/health", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(health["status"], "unhealthy");
    assert_eq!(health["model_loaded"], false);
    let (status, answer) = call(&app, "POST", "/predict", Some(example::<S>().to_string())).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer["error"], "model_not_loaded");
}

/// The same seed and data give byte-identical models and identical metrics.
pub fn training_is_deterministic<S: Service>() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let strip = |mut m: Value| {
        m.as_object_mut().unwrap().remove("training_seconds");
        m
    };
    let (ma, mb) = (
        strip(train_into::<S>(a.path(), 1200, 3)),
        strip(train_into::<S>(b.path(), 1200, 3)),
    );
    assert_eq!(ma, mb);
    let model = |d: &Path| std::fs::read(d.join("model").join(artifact::MODEL_FILE)).unwrap();
    assert!(
        model(a.path()) == model(b.path()),
        "same seed, different model bytes"
    );
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The real binary: `serve` on a socket, `healthcheck` against it, then SIGTERM stops it cleanly.
pub fn serve_and_healthcheck(binary: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.csv");
    let model_dir = dir.path().join("model");
    let run = |args: &[&str]| {
        Command::new(binary)
            .args(args)
            .output()
            .expect("run the service binary")
    };
    let generated = run(&[
        "generate-data",
        "--rows",
        "800",
        "--out",
        data.to_str().unwrap(),
    ]);
    assert!(generated.status.success(), "{generated:?}");

    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/health");
    let serve = || {
        Command::new(binary)
            .args([
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--model-dir",
                model_dir.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut server = serve();
    let healthcheck = || run(&["healthcheck", "--url", &url, "--timeout", "2"]);
    // No model yet: the server answers, but is not healthy.
    let deadline = Instant::now() + Duration::from_secs(10);
    while crate::healthcheck::get(&url, Duration::from_secs(1)).is_err() {
        assert!(Instant::now() < deadline, "serve never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!healthcheck().status.success(), "healthy without a model");
    let _ = server.kill();
    let _ = server.wait();

    let trained = run(&[
        "train",
        "--data-path",
        data.to_str().unwrap(),
        "--model-dir",
        model_dir.to_str().unwrap(),
    ]);
    assert!(trained.status.success(), "{trained:?}");
    let mut server = serve();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let check = healthcheck();
        if check.status.success() {
            let body: Value = serde_json::from_slice(&check.stdout).unwrap();
            assert_eq!(body["status"], "healthy");
            break;
        }
        assert!(Instant::now() < deadline, "never healthy: {check:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // SIGTERM (what `docker stop` sends) ends it promptly and cleanly.
    let term = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let stopped = Instant::now();
    let status = server.wait().unwrap();
    assert!(status.success(), "exit after SIGTERM: {status:?}");
    assert!(stopped.elapsed() < Duration::from_secs(5));
}

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

use crate::api::MAX_BATCH;
use crate::artifact::{self, Artifact, FORMAT_VERSION};
use crate::http::{router, AppState};
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

/// Generates `rows` of synthetic data and trains on it into `dir` (the model in `dir/model`,
/// with the dashboard's data, as `train` stores them); returns the metrics.
pub fn train_into<S: Service>(dir: &Path, rows: usize, seed: u64) -> Value {
    use crate::dashboard::Dashboard;
    let data = dir.join("data.csv");
    let mut file = std::fs::File::create(&data).expect("create data file");
    S::generate_data(rows, seed, &mut file).expect("generate data");
    drop(file);
    let (model, mut metrics) = S::train(&data, seed).expect("training succeeds on generated data");
    metrics["data_file"] = "data.csv".into();
    let files = S::Dashboard::version_files(&data).expect("the dashboard's data");
    let artifact = Artifact {
        service: S::MANIFEST.name.into(),
        format_version: FORMAT_VERSION,
        seed,
        features: S::FEATURES.iter().map(|f| f.to_string()).collect(),
        model,
    };
    artifact::save(&dir.join("model"), &artifact, &metrics, &files).expect("save model");
    metrics
}

/// A router serving a model trained on `rows` generated rows.
pub fn trained_router<S: Service>(rows: usize) -> (tempfile::TempDir, axum::Router) {
    let dir = tempfile::tempdir().expect("tempdir");
    train_into::<S>(dir.path(), rows, 7);
    let model = crate::model::load::<S>(&dir.path().join("model"))
        .expect("load")
        .expect("a model");
    (dir, router(AppState::<S>::new(Some(model))))
}

/// A model trained on `rows` generated rows with its dashboard prepared: the dashboard's
/// router and the API's, sharing the model as `serve --dashboard-port` does.
pub fn trained_dashboard<S: Service>(
    rows: usize,
) -> (tempfile::TempDir, axum::Router, axum::Router) {
    let dir = tempfile::tempdir().expect("tempdir");
    train_into::<S>(dir.path(), rows, 7);
    let model = crate::model::load::<S>(&dir.path().join("model"))
        .expect("load")
        .expect("a model");
    let state = AppState::<S>::with_dashboard(Some(model));
    (dir, crate::dashboard::router(state.clone()), router(state))
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
    assert!(
        health["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{health}"
    );
    let version = health["model_version"]
        .as_str()
        .expect("a model version")
        .to_owned();

    let (status, root) = call(&app, "GET", "/", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(root["links"]["health"], "/health");
    // The old API's keys.
    assert_eq!(root["version"], "1.0.0");
    assert_eq!(root["docs"], "/docs");
    assert_eq!(root["health"], "/health");
    assert!(root["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(root["model_version"], version.as_str());

    // Interactive docs, served from the binary.
    let (status, page) = call(&app, "GET", "/docs/", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.as_str().is_some_and(|p| p.contains("swagger")),
        "{page}"
    );
    let (status, script) = call(&app, "GET", "/docs/swagger-ui-bundle.js", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(script.as_str().is_some_and(|s| s.len() > 100_000));
    let (status, config) = call(&app, "GET", "/docs/swagger-initializer.js", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        config.as_str().is_some_and(|c| c.contains("/openapi.json")),
        "{config}"
    );
    let (status, _) = call(&app, "GET", "/redoc", None).await;
    assert!(status.is_redirection());

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
    assert!(
        batch["batch_id"].as_str().is_some_and(|id| id.len() == 36),
        "{batch}"
    );
    assert!(batch["processing_time_seconds"]
        .as_f64()
        .is_some_and(|t| t >= 0.0));
    let batch_schema = &spec["components"]["schemas"]["BatchRequest"]["properties"]["items"];
    assert_eq!(batch_schema["minItems"], 1);
    assert_eq!(batch_schema["maxItems"], MAX_BATCH);

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

    // Every error has the JSON body, whoever raises it.
    let error_kinds = [
        (
            "GET",
            "/no-such-page",
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "DELETE",
            "/predict",
            None,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            "POST",
            "/predict",
            Some(format!("[{}0]", "0,".repeat(600_000))),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ];
    for (method, uri, body, status, kind) in error_kinds {
        let (got, answer) = call(&app, method, uri, body).await;
        assert_eq!(got, status, "{method} {uri}: {answer}");
        assert_eq!(answer["error"], kind, "{method} {uri}: {answer}");
        assert!(answer["message"].is_string(), "{answer}");
    }
    let huge_header = Request::builder()
        .uri("/health")
        .header("x-padding", "x".repeat(20_000))
        .body(Body::empty())
        .expect("a request");
    let response = app.clone().oneshot(huge_header).await.expect("infallible");
    assert_eq!(
        response.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );

    // A huge bad value is quoted short.
    let field = example::<S>()
        .as_object()
        .expect("an object")
        .keys()
        .next()
        .expect("a field")
        .clone();
    let long = merged(
        example::<S>(),
        &json!({ field.clone(): "z".repeat(500_000) }),
    );
    let (status, answer) = call(&app, "POST", "/predict", Some(long.to_string())).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(answer["field"], field.as_str());
    assert!(answer.to_string().len() < 400, "{answer}");

    // Strange methods and paths share one label each: no request adds a series.
    for i in 0..50 {
        let method = format!("M{i}X");
        call(&app, &method, &format!("/random/{i}"), None).await;
        call(&app, &method, "/predict", None).await;
    }

    let (status, metrics) = call(&app, "GET", "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    let text = metrics.as_str().expect("metrics are text");
    let prefix = S::MANIFEST.name;
    assert!(!text.contains("M1X") && !text.contains("/random"), "{text}");
    assert!(
        text.contains(&format!(
            "{prefix}_requests_total{{method=\"other\",endpoint=\"other\",status=\"404\"}} 50"
        )),
        "{text}"
    );
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
    let model = |d: &Path| {
        std::fs::read(
            d.join("model")
                .join(artifact::CURRENT_LINK)
                .join(artifact::MODEL_FILE),
        )
        .unwrap()
    };
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
    let serve = || spawn_serve(binary, port, &model_dir, &[]);
    let mut server = serve();
    // No --url: the default follows PORT, as the container's HEALTHCHECK relies on.
    let healthcheck = || {
        Command::new(binary)
            .args(["healthcheck", "--timeout", "2"])
            .env("PORT", port.to_string())
            .output()
            .expect("run the service binary")
    };
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
    let status = server.wait().unwrap();
    assert!(status.success(), "exit after SIGTERM: {status:?}");
}

/// The title served at `/` and in the OpenAPI document is the one in the crate's service.toml
/// on disk (`manifest_dir` is the crate's folder), the stack's single source of truth.
pub async fn title_is_the_service_tomls<S: Service>(manifest_dir: &Path) {
    let text = std::fs::read_to_string(manifest_dir.join("service.toml")).expect("service.toml");
    let file: toml::Table = toml::from_str(&text).expect("service.toml parses");
    let title = file["title"].as_str().expect("a title");
    let app = router(AppState::<S>::new(None));
    let (_, root) = call(&app, "GET", "/", None).await;
    assert_eq!(root["name"], title);
    let (_, spec) = call(&app, "GET", "/openapi.json", None).await;
    assert_eq!(spec["info"]["title"], title);
    let (_, health) = call(&app, "GET", "/health", None).await;
    assert_eq!(health["service"], S::MANIFEST.name);
    assert_eq!(
        manifest_dir.file_name().and_then(|n| n.to_str()),
        Some(S::MANIFEST.name),
        "the crate is named after its folder"
    );
}

/// Every file under `dir` with its contents (symlinks as their targets), sorted.
pub fn snapshot(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)
            .expect("a readable directory")
            .flatten()
        {
            let kind = e.file_type().expect("a file type");
            if kind.is_symlink() {
                let target = std::fs::read_link(e.path()).expect("a link");
                out.push((e.path(), target.into_os_string().into_encoded_bytes()));
            } else if kind.is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path(), std::fs::read(e.path()).expect("a readable file")));
            }
        }
    }
    out.sort();
    out
}

fn train_with(binary: &Path, data: &Path, model_dir: &Path, seed: u64) -> std::process::Output {
    Command::new(binary)
        .args(["train", "--data-path"])
        .arg(data)
        .arg("--model-dir")
        .arg(model_dir)
        .args(["--seed", &seed.to_string()])
        .output()
        .expect("run the service binary")
}

/// Training on data that cannot give a meaningful model fails with a clear error and leaves
/// the served model byte-identical. `more_bad` adds the service's own cases (name, CSV text,
/// a phrase the error must contain), e.g. a single class; 1, 2 and 10 rows are always tried.
pub fn degenerate_data_is_refused<S: Service>(binary: &Path, more_bad: &[(&str, String, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("good.csv");
    let mut file = std::fs::File::create(&data).unwrap();
    S::generate_data(1000, 5, &mut file).unwrap();
    let model_dir = dir.path().join("model");
    let trained = train_with(binary, &data, &model_dir, 5);
    assert!(trained.status.success(), "{trained:?}");
    let before = snapshot(&model_dir);

    let good = std::fs::read_to_string(&data).unwrap();
    let lines: Vec<&str> = good.lines().collect();
    let mut cases: Vec<(String, String, &str)> = [1, 2, 10]
        .iter()
        .map(|&n| {
            (
                format!("{n} rows"),
                lines[..=n].join("\n") + "\n",
                "at least",
            )
        })
        .collect();
    cases.extend(
        more_bad
            .iter()
            .map(|(n, t, p)| (n.to_string(), t.clone(), *p)),
    );
    for (name, text, phrase) in cases {
        let bad = dir.path().join("bad.csv");
        std::fs::write(&bad, text).unwrap();
        let output = train_with(binary, &bad, &model_dir, 5);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{name}: trained on it: {stderr}");
        assert!(stderr.contains(phrase), "{name}: {stderr}");
        assert!(stderr.contains("untouched"), "{name}: {stderr}");
        assert!(
            snapshot(&model_dir) == before,
            "{name}: the model directory changed"
        );
    }
}

fn spawn_serve(binary: &Path, port: u16, model_dir: &Path, extra: &[&str]) -> std::process::Child {
    Command::new(binary)
        .args([
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--model-dir",
        ])
        .arg(model_dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn serve")
}

fn health_of(port: u16) -> Option<(u16, Value)> {
    let url = format!("http://127.0.0.1:{port}/health");
    let (status, body) = crate::healthcheck::get(&url, Duration::from_secs(2)).ok()?;
    Some((status, serde_json::from_str(&body).ok()?))
}

/// Polls `/health` until `done` holds; a hang guard, not a timing assertion.
fn wait_for_health(port: u16, what: &str, done: impl Fn(u16, &Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((status, health)) = health_of(port) {
            if done(status, &health) {
                return health;
            }
        }
        assert!(
            Instant::now() < deadline,
            "never saw {what}: {:?}",
            health_of(port)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(child: &std::process::Child, name: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(sent.success());
}

/// Publishes the served model with `edit` applied to its booster as a new version, as a
/// corrupted or hostile model file would arrive.
fn publish_edited_model(model_dir: &Path, edit: impl Fn(&mut Value)) {
    let stored = artifact::read_current(model_dir).unwrap().unwrap();
    let mut artifact: Artifact<Value> = serde_json::from_slice(&stored.model_bytes).unwrap();
    edit(&mut artifact.model["booster"]["trees"][0]["nodes"]);
    artifact::save(model_dir, &artifact, &json!({"edited": true}), &[]).unwrap();
}

/// SIGHUP swaps in a newly trained model without a restart; a lying model (an index out of
/// range, a cycle) is refused and the old one keeps serving; `/health` tells the outcome.
/// A service that starts on a lying model stays unhealthy.
pub fn reload_on_sighup<S: Service>(binary: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.csv");
    let mut file = std::fs::File::create(&data).unwrap();
    S::generate_data(1000, 9, &mut file).unwrap();
    let model_dir = dir.path().join("model");
    assert!(train_with(binary, &data, &model_dir, 1).status.success());
    let port = free_port();
    let mut server = spawn_serve(binary, port, &model_dir, &[]);
    let first = wait_for_health(port, "healthy", |s, _| s == 200);
    assert_eq!(first["last_reload"]["status"], "loaded", "{first}");
    let v1 = first["model_version"].as_str().unwrap().to_owned();

    assert!(train_with(binary, &data, &model_dir, 2).status.success());
    signal(&server, "HUP");
    let second = wait_for_health(port, "the new model", |_, h| {
        h["model_version"] != v1.as_str()
    });
    assert_eq!(second["last_reload"]["status"], "loaded", "{second}");
    let v2 = second["model_version"].as_str().unwrap().to_owned();
    let metrics: Value = serde_json::from_slice(
        &std::fs::read(model_dir.join("current").join(artifact::METRICS_FILE)).unwrap(),
    )
    .unwrap();
    assert_eq!(
        metrics["model_version"],
        v2.as_str(),
        "the served version is its metrics'"
    );

    type Edit = dyn Fn(&mut Value);
    let lies: [(&str, &Edit); 2] = [
        ("out of range", &|nodes: &mut Value| {
            nodes[0]["left_child"] = json!(100_000)
        }),
        ("reached twice", &|nodes: &mut Value| {
            nodes[0]["right_child"] = json!(0)
        }),
    ];
    for (reason, edit) in lies {
        publish_edited_model(&model_dir, edit);
        signal(&server, "HUP");
        let refused = wait_for_health(port, "a refusal", |_, h| {
            h["last_reload"]["status"] == "refused"
                && h["last_reload"]["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains(reason))
        });
        assert_eq!(refused["model_version"], v2.as_str(), "{refused}");
        assert_eq!(refused["status"], "healthy");
        let url = format!("http://127.0.0.1:{port}/health");
        assert_eq!(
            crate::healthcheck::get(&url, Duration::from_secs(2))
                .unwrap()
                .0,
            200
        );
        // Put the good model back for the next lie.
        assert!(train_with(binary, &data, &model_dir, 2).status.success());
    }
    signal(&server, "TERM");
    assert!(server.wait().unwrap().success());

    // Starting on a lying model: up, but unhealthy, and saying why.
    publish_edited_model(&model_dir, |nodes| nodes[0]["left_child"] = json!(0));
    let mut server = spawn_serve(binary, port, &model_dir, &[]);
    let health = wait_for_health(port, "unhealthy", |s, _| s == 503);
    assert_eq!(health["model_loaded"], false);
    assert_eq!(health["last_reload"]["status"], "refused", "{health}");
    let _ = server.kill();
    let _ = server.wait();
}

/// Under a slowloris (many connections, each sending a header line now and then) `/health`
/// still answers; SIGTERM with a half-sent request pending still ends the process, within the
/// shutdown deadline rather than when the client gives up.
pub fn slowloris_and_sigterm<S: Service>(binary: &Path, connections: usize) {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Timeouts far beyond the test's span: only the shutdown deadline can end it in time.
    let mut server = spawn_serve(
        binary,
        port,
        &dir.path().join("model"),
        &[
            "--header-read-timeout",
            "300s",
            "--idle-timeout",
            "300s",
            "--shutdown-timeout",
            "1s",
        ],
    );
    wait_for_health(port, "an answer", |s, _| s == 503);
    let mut held = Vec::new();
    for _ in 0..connections {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n")
            .unwrap();
        held.push(c);
    }
    let asked = Instant::now();
    let (status, _) = health_of(port).expect("/health answers under a slowloris");
    eprintln!(
        "/health under {connections} slowloris connections: {:?}",
        asked.elapsed()
    );
    assert_eq!(status, 503, "no model, so 503, but an answer");
    let mut half = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    half.write_all(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"a\":")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    signal(&server, "TERM");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = server.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "still running after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    drop((held, half));
}

fn page(port: u16, path: &str) -> (u16, String) {
    let url = format!("http://127.0.0.1:{port}{path}");
    crate::healthcheck::get(&url, Duration::from_secs(5)).expect("the dashboard answers")
}

/// `serve --dashboard-port`: the dashboard answers on its own port beside the API, shows the
/// served model, and after a new training and SIGHUP shows the new one; SIGTERM stops both.
/// The API must not answer on the dashboard's port, nor the dashboard on the API's.
pub fn dashboard_follows_the_model<S: Service>(binary: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.csv");
    let mut file = std::fs::File::create(&data).unwrap();
    S::generate_data(1500, 4, &mut file).unwrap();
    drop(file);
    let model_dir = dir.path().join("model");
    assert!(train_with(binary, &data, &model_dir, 1).status.success());
    let (port, dashboard) = (free_port(), free_port());
    let mut server = spawn_serve(
        binary,
        port,
        &model_dir,
        &["--dashboard-port", &dashboard.to_string()],
    );
    let first = wait_for_health(dashboard, "the dashboard healthy", |s, _| s == 200);
    assert_eq!(first["status"], "healthy", "{first}");
    let v1 = first["model_version"].as_str().unwrap().to_owned();
    let (status, overview) = page(dashboard, "/");
    assert_eq!(status, 200);
    assert!(
        overview.contains(&v1),
        "the overview names the served model"
    );
    let (status, _) = page(port, "/health");
    assert_eq!(status, 200, "the API answers beside it");
    let (status, _) = page(dashboard, "/predict_batch");
    assert_eq!(
        status, 404,
        "the API's routes are not on the dashboard's port"
    );

    assert!(train_with(binary, &data, &model_dir, 2).status.success());
    signal(&server, "HUP");
    let second = wait_for_health(dashboard, "the new model on the dashboard", |s, h| {
        s == 200 && h["model_version"] != v1.as_str()
    });
    let v2 = second["model_version"].as_str().unwrap();
    let (_, overview) = page(dashboard, "/");
    assert!(
        overview.contains(v2) && !overview.contains(&v1),
        "the overview is the new model's"
    );
    let (_, api) = health_of(port).unwrap();
    assert_eq!(api["model_version"], v2, "the API serves the same model");
    signal(&server, "TERM");
    assert!(server.wait().unwrap().success());
}

/// `serve --dashboard-port` of a service without a dashboard fails at once, saying so; so
/// does a dashboard port equal to the API's.
pub fn dashboard_port_is_refused<S: Service>(binary: &Path) {
    use crate::dashboard::Dashboard;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let serve = |dashboard_port: u16| {
        Command::new(binary)
            .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--dashboard-port",
                &dashboard_port.to_string(),
                "--model-dir",
            ])
            .arg(dir.path())
            .output()
            .expect("run the service binary")
    };
    let out = serve(port);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    if S::Dashboard::ENABLED {
        assert!(stderr.contains("a port of its own"), "{stderr}");
    } else {
        assert!(stderr.contains("has no dashboard"), "{stderr}");
        let out = serve(free_port());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(
            stderr.contains(&format!("{} has no dashboard", S::MANIFEST.name)),
            "{stderr}"
        );
        // From the environment too, as a container would set it.
        let out = Command::new(binary)
            .args(["serve", "--port", &port.to_string(), "--model-dir"])
            .arg(dir.path())
            .env("DASHBOARD_PORT", free_port().to_string())
            .output()
            .expect("run the service binary");
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("DASHBOARD_PORT"));
    }
}

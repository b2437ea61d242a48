//! The API every service must serve, driven in-process through its router: one reusable
//! suite that each service's tests call with its own bad inputs, and the helpers to train a
//! model for it.

use std::path::Path;

use serde_json::{json, Value};
use serving::api::MAX_BATCH;
use serving::artifact::{self, Artifact, FORMAT_VERSION};
use serving::axum::body::Body;
use serving::axum::http::{Request, StatusCode};
use serving::axum::Router;
use serving::dashboard::Dashboard;
use serving::http::{router, AppState};
use serving::Service;
use tower::ServiceExt;

/// Largest body [`call`] reads.
const MAX_BODY: usize = 64 << 20;

/// Sends one request to the router in-process; returns the status and the body (JSON when it
/// parses, else a string).
pub async fn call(
    app: &Router,
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
    let bytes = serving::axum::body::to_bytes(response.into_body(), MAX_BODY)
        .await
        .expect("a body");
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value)
}

/// Generates `rows` of synthetic data and trains on it into `dir` (the model in `dir/model`,
/// with the dashboard's data, as `train` stores them); returns the metrics.
pub fn train_into<S: Service>(dir: &Path, rows: usize, seed: u64) -> Value {
    let data = dir.join("data.csv");
    let mut file = std::fs::File::create(&data).expect("create data file");
    S::generate_data(rows, seed, &mut file).expect("generate data");
    drop(file);
    let (model, mut metrics) = S::train(&data, seed).expect("training succeeds on generated data");
    metrics["data_file"] = "data.csv".into();
    let mut files = S::Dashboard::version_files(&data).expect("the dashboard's data");
    files.extend(
        serving::drift::version_file(&data, &S::example_request(), |r| S::validate(r).is_ok())
            .expect("the drift profile"),
    );
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
pub fn trained_router<S: Service>(rows: usize) -> (tempfile::TempDir, Router) {
    let dir = tempfile::tempdir().expect("tempdir");
    train_into::<S>(dir.path(), rows, 7);
    let model = serving::model::load::<S>(&dir.path().join("model"))
        .expect("load")
        .expect("a model");
    (dir, router(AppState::<S>::new(Some(model))))
}

/// A model trained on `rows` generated rows with its dashboard prepared: the dashboard's
/// router and the API's, sharing the model as `serve --dashboard-port` does.
pub fn trained_dashboard<S: Service>(rows: usize) -> (tempfile::TempDir, Router, Router) {
    let dir = tempfile::tempdir().expect("tempdir");
    train_into::<S>(dir.path(), rows, 7);
    let model = serving::model::load::<S>(&dir.path().join("model"))
        .expect("load")
        .expect("a model");
    let state = AppState::<S>::with_dashboard(Some(model));
    (
        dir,
        serving::dashboard::router(state.clone()),
        router(state),
    )
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

async fn expect_invalid(app: &Router, uri: &str, body: String, field: Option<&str>) {
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

    // Interactive docs, served from the binary: the page itself at each of the old API's
    // paths (no redirect, as FastAPI answers), its files found under /docs/.
    for path in ["/docs", "/docs/", "/redoc"] {
        let (status, page) = call(&app, "GET", path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(
            page.as_str()
                .is_some_and(|p| p.contains("swagger") && p.contains(r#"<base href="/docs/">"#)),
            "{path}: {page}"
        );
    }
    let (status, script) = call(&app, "GET", "/docs/swagger-ui-bundle.js", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(script.as_str().is_some_and(|s| s.len() > 100_000));
    let (status, config) = call(&app, "GET", "/docs/swagger-initializer.js", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        config.as_str().is_some_and(|c| c.contains("/openapi.json")),
        "{config}"
    );
    let (status, missing) = call(&app, "GET", "/docs/no-such-file.js", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(missing["error"], "not_found", "{missing}");

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

//! The HTTP API every service exposes: `/`, `/health`, `/metrics`, `/openapi.json`, `/docs`,
//! `/predict` and `/predict_batch`. Every error, whatever its status and whoever raised it (a
//! handler, the router, a panic), answers the same JSON [`ErrorBody`]; bad input is a 422
//! naming the field; a missing model is a 503; nothing panics on user input.

mod limits;
mod metrics;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::BodyExt;
use rand::Rng;
use tower::ServiceBuilder;

use crate::api::{now, BatchResponse, ErrorBody, Health, Links, Root, API_VERSION};
use crate::drift::{DriftReport, Thresholds};
use crate::error::{error_response, ApiError};
use crate::json::{self, BatchSeed};
use crate::loaded::Loaded;
use crate::model::ModelSlot;
use crate::service::{DashboardView, PageSource, PredictionMeta, Service};
use crate::validation::FieldError;

pub use crate::api::MAX_BATCH;
pub use limits::RequestLimits;
// For the dashboard's router, which shares the API's limits and metrics.
pub(crate) use limits::{bounds, refuse_large_head, BodyBudget};
pub(crate) use metrics::{Metrics, DASHBOARD_ENDPOINT};

/// Shared state of a running service.
pub struct AppState<S: Service> {
    pub model: ModelSlot<S>,
    started: Instant,
    metrics: Metrics,
    openapi: String,
    title: String,
    limits: RequestLimits,
    /// Memory held by request bodies still arriving in pieces, all connections together.
    body_budget: BodyBudget,
    /// Whether predictions are counted for `/drift` (`serve --drift-counting`).
    drift_counting: AtomicBool,
}

impl<S: Service> AppState<S> {
    /// A service with a fixed model (or none), never reloaded: for tests.
    pub fn new(model: Option<Loaded<S::Model>>) -> Arc<Self> {
        Self::with_slot(ModelSlot::fixed(model, false), RequestLimits::default())
    }

    /// Like [`AppState::new`], with the model's dashboard prepared: for tests.
    pub fn with_dashboard(model: Option<Loaded<S::Model>>) -> Arc<Self> {
        Self::with_slot(ModelSlot::fixed(model, true), RequestLimits::default())
    }

    /// A service that loads its model from `dir` and reloads it on request; with
    /// `dashboard`, each model's dashboard is prepared with it.
    pub fn from_dir(dir: std::path::PathBuf, limits: RequestLimits, dashboard: bool) -> Arc<Self> {
        Self::with_slot(ModelSlot::from_dir(dir, dashboard), limits)
    }

    pub(crate) fn limits(&self) -> RequestLimits {
        self.limits
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn with_slot(model: ModelSlot<S>, limits: RequestLimits) -> Arc<Self> {
        let title = S::MANIFEST
            .title()
            .unwrap_or_else(|e| panic!("the service.toml embedded at build time: {e:#}"));
        Arc::new(Self {
            model,
            started: Instant::now(),
            metrics: Metrics::new(S::MANIFEST.name),
            openapi: crate::openapi::document::<S>(&title),
            title,
            limits,
            body_budget: BodyBudget::new(limits.buffered_body_bytes),
            drift_counting: AtomicBool::new(true),
        })
    }

    /// Turns counting the rows predicted on for `/drift` on or off (on by default).
    pub fn set_drift_counting(&self, on: bool) {
        self.drift_counting.store(on, Ordering::Relaxed);
    }
}

/// Builds the service's router around `state`.
pub fn router<S: Service>(state: Arc<AppState<S>>) -> Router {
    let routes = Router::new()
        .route("/", get(root::<S>))
        .route("/health", get(health::<S>))
        .route("/metrics", get(metrics::<S>))
        .route("/openapi.json", get(openapi::<S>))
        // The page itself at /docs, as FastAPI answers, not a redirect to /docs/; no ReDoc
        // can be had without the network: its old clients get the same page.
        .route("/docs", get(docs_page))
        .route("/docs/", get(docs_page))
        .route("/redoc", get(docs_page))
        .route("/docs/{*rest}", get(docs_file))
        .route("/drift", get(drift::<S>))
        .route("/predict", post(predict::<S>))
        .route("/predict_batch", post(predict_batch::<S>))
        .fallback(not_found);
    // One layer for the whole stack: each `Router::layer` boxes every route once more.
    let stack = ServiceBuilder::new()
        .layer(middleware::from_fn_with_state(state.clone(), frame::<S>))
        .layer(bounds(state.limits, error_response));
    routes.layer(stack).with_state(state)
}

/// The outermost step of every request to the API (one middleware, not three, on the hot
/// path): it is counted and timed under its route and final status, its head bounded, and
/// any error it ends in answers JSON, whoever made it (axum's own 405 is empty, for one).
async fn frame<S: Service>(
    State(state): State<Arc<AppState<S>>>,
    request: Request,
    next: Next,
) -> Response {
    let endpoint = metrics::endpoint_of(&request);
    let method = request.method().clone();
    let answer = async {
        if let Some(refused) =
            refuse_large_head(state.limits.header_bytes, &request, error_response)
        {
            return refused;
        }
        as_json_error(next.run(request).await).await
    };
    state.metrics.observe(&method, endpoint, answer).await
}

/// Swagger UI's files (its script, styles and the initializer that names `/openapi.json`),
/// served from the binary.
fn swagger_file(path: &str) -> Option<utoipa_swagger_ui::SwaggerFile<'static>> {
    static CONFIG: std::sync::OnceLock<Arc<utoipa_swagger_ui::Config<'static>>> =
        std::sync::OnceLock::new();
    let config = CONFIG.get_or_init(|| Arc::new(utoipa_swagger_ui::Config::from("/openapi.json")));
    utoipa_swagger_ui::serve(path, config.clone())
        .ok()
        .flatten()
}

/// Swagger UI's page, its files found under `/docs/` from whichever path it is served at.
async fn docs_page() -> Response {
    let Some(page) = swagger_file("index.html") else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let page = String::from_utf8_lossy(&page.bytes).replacen(
        "<head>",
        "<head>\n    <base href=\"/docs/\">",
        1,
    );
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response()
}

async fn docs_file(
    axum::extract::Path(file): axum::extract::Path<String>,
    method: Method,
    uri: axum::http::Uri,
) -> Response {
    match swagger_file(&file) {
        Some(found) => (
            [(header::CONTENT_TYPE, found.content_type)],
            found.bytes.into_owned(),
        )
            .into_response(),
        None => not_found(method, uri).await,
    }
}

fn error_kind(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_request",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal_error",
        _ => "error",
    }
}

/// An error response that is not JSON yet becomes one, keeping its status and headers.
async fn as_json_error(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = match http_body_util::Limited::new(body, 4096).collect().await {
        Ok(collected) => String::from_utf8_lossy(&collected.to_bytes())
            .trim()
            .to_owned(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        json::shorten_quoted(&text)
    };
    let body = serde_json::to_vec(&ErrorBody::new(error_kind(status), message)).unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(body))
}

async fn not_found(method: Method, uri: axum::http::Uri) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        ErrorBody::new(
            "not_found",
            format!(
                "no route for {method} {}; see /docs or /openapi.json",
                json::shorten_quoted(&format!("`{}`", uri.path())).trim_matches('`')
            ),
        ),
    )
}

async fn health<S: Service>(State(state): State<Arc<AppState<S>>>) -> (StatusCode, Json<Health>) {
    let model = state.model.get();
    let loaded = model.is_some();
    let body = Health {
        status: if loaded { "healthy" } else { "unhealthy" }.into(),
        version: API_VERSION.into(),
        model_loaded: loaded,
        service: S::MANIFEST.name.into(),
        timestamp: now(),
        uptime_seconds: state.started.elapsed().as_secs_f64(),
        model: model.map(|m| m.info.clone()).unwrap_or_default(),
        last_reload: state.model.last_reload(),
    };
    let status = if loaded {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

async fn root<S: Service>(State(state): State<Arc<AppState<S>>>) -> Json<Root> {
    let model = state.model.get();
    Json(Root {
        message: format!("{}: {}", state.title, S::DESCRIPTION),
        name: state.title.clone(),
        service: S::MANIFEST.name.into(),
        version: API_VERSION.into(),
        description: S::DESCRIPTION.into(),
        model_loaded: model.is_some(),
        model: model.map(|m| m.info.clone()).unwrap_or_default(),
        last_reload: state.model.last_reload(),
        docs: "/docs".into(),
        health: "/health".into(),
        links: Links {
            health: "/health".into(),
            predict: "/predict".into(),
            predict_batch: "/predict_batch".into(),
            metrics: "/metrics".into(),
            openapi: "/openapi.json".into(),
            docs: "/docs".into(),
        },
    })
}

async fn metrics<S: Service>(State(state): State<Arc<AppState<S>>>) -> Response {
    let drift = state.model.get().and_then(|m| m.drift.clone());
    let text = match state.metrics.encode(drift.as_deref()) {
        Ok(text) => text,
        Err(e) => {
            return ApiError::Internal(format!("cannot encode the metrics: {e}")).into_response()
        }
    };
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// `GET /drift`: the rows predicted on since the model was loaded, per feature, against the
/// training data's profile stored with the model.
async fn drift<S: Service>(
    State(state): State<Arc<AppState<S>>>,
) -> Result<Json<DriftReport>, ApiError> {
    let model = state.model.get().ok_or(ApiError::ModelNotLoaded)?;
    let mut report = DriftReport {
        service: S::MANIFEST.name.into(),
        model_version: Some(model.version.clone()),
        verdict: "no_reference".into(),
        reason: None,
        rows: 0,
        thresholds: Thresholds::default(),
        reference_rows: None,
        features: Vec::new(),
    };
    if !state.drift_counting.load(Ordering::Relaxed) {
        report.verdict = "off".into();
        report.reason =
            Some("this process counts no rows for drift (`serve --drift-counting false`)".into());
        return Ok(Json(report));
    }
    match &model.drift {
        Some(monitor) => {
            report.rows = monitor.rows();
            report.reference_rows = Some(monitor.profile().rows);
            (report.verdict, report.features) = monitor.report();
            if report.verdict == "insufficient_data" {
                report.reason = Some(format!(
                    "{} of the {} rows a verdict needs were predicted on since model version {} was loaded",
                    report.rows, report.thresholds.min_rows, model.version
                ));
            }
        }
        None => {
            report.reason = Some(format!(
                "model version {} has no reference profile ({}): it was trained by an older build; retrain it to measure drift",
                model.version,
                crate::drift::PROFILE_FILE
            ));
        }
    }
    Ok(Json(report))
}

async fn openapi<S: Service>(State(state): State<Arc<AppState<S>>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi.clone(),
    )
        .into_response()
}

/// Reads the body within the size and time limits, and within the budget of memory all
/// bodies still arriving may hold together.
async fn read_body<S: Service>(state: &AppState<S>, request: Request) -> Result<Bytes, ApiError> {
    let limits = &state.limits;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limits.body_bytes) {
        return Err(ApiError::PayloadTooLarge(limits.body_bytes));
    }
    let collect = collect_body(request.into_body(), limits.body_bytes, &state.body_budget);
    match tokio::time::timeout(limits.body_timeout, collect).await {
        Err(_) => Err(ApiError::BodyTimeout(limits.body_timeout)),
        Ok(result) => result,
    }
}

/// The body's bytes. A body that arrives in one piece (nearly every request) is that piece,
/// neither copied nor counted. One that arrives in pieces is copied into one buffer as it
/// comes: each piece is a slice of the connection's read buffer and would otherwise keep all
/// of it alive (a client sending a byte at a time pinned kilobytes per byte). The buffer
/// counts against `budget`; past it the request is refused with a 503 before memory runs out.
async fn collect_body(
    mut body: Body,
    limit: usize,
    budget: &BodyBudget,
) -> Result<Bytes, ApiError> {
    let mut first: Option<Bytes> = None;
    let mut buffer: Vec<u8> = Vec::new();
    let mut held = budget.hold();
    let mut length = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::BodyUnreadable(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        length += data.len();
        if length > limit {
            return Err(ApiError::PayloadTooLarge(limit));
        }
        if first.is_none() && buffer.is_empty() {
            first = Some(data);
            continue;
        }
        if buffer.capacity() < length {
            // Room for what came so far, doubling as it grows, never past the limit.
            let capacity = length.max(buffer.capacity() * 2).max(4096).min(limit);
            held.grow(capacity - buffer.capacity())?;
            buffer.reserve_exact(capacity - buffer.len());
        }
        if let Some(first) = first.take() {
            buffer.extend_from_slice(&first);
        }
        buffer.extend_from_slice(&data);
    }
    Ok(match first {
        Some(only) => only,
        None => Bytes::from(buffer),
    })
}

fn prediction_meta<S: Service>(model: &Loaded<S::Model>) -> PredictionMeta {
    PredictionMeta {
        model_version: model.version.clone(),
        timestamp: now(),
    }
}

/// Runs `model` on `requests`, insisting on one answer per request.
fn predict_checked<S: Service>(
    state: &AppState<S>,
    model: &Loaded<S::Model>,
    requests: &[S::Request],
) -> Result<Vec<S::Response>, ApiError> {
    let responses = S::predict(&model.model, requests, &prediction_meta::<S>(model));
    if responses.len() != requests.len() {
        tracing::error!(
            requests = requests.len(),
            answers = responses.len(),
            model_version = %model.version,
            "the model gave the wrong number of answers"
        );
        return Err(ApiError::Internal(format!(
            "the model gave {} answers for {} requests",
            responses.len(),
            requests.len()
        )));
    }
    for response in &responses {
        if let Some(label) = S::prediction_label(response) {
            state.metrics.count_prediction(label);
        }
    }
    if let Some(monitor) = model
        .drift
        .as_ref()
        .filter(|_| state.drift_counting.load(Ordering::Relaxed))
    {
        for request in requests {
            monitor.observe(request);
        }
    }
    Ok(responses)
}

/// What `POST /predict` does with a body: parse it, validate it, and predict with `model`.
/// The dashboard's predictions go through here too.
pub(crate) fn predict_body<S: Service>(
    state: &AppState<S>,
    model: Option<&Loaded<S::Model>>,
    body: &[u8],
) -> Result<S::Response, ApiError> {
    let item: S::Request = json::parse(body)?;
    predict_item(state, model, &item)
}

/// One parsed request, validated and predicted as `POST /predict` does after parsing.
pub(crate) fn predict_item<S: Service>(
    state: &AppState<S>,
    model: Option<&Loaded<S::Model>>,
    item: &S::Request,
) -> Result<S::Response, ApiError> {
    S::validate(item).map_err(ApiError::Invalid)?;
    let model = model.ok_or(ApiError::ModelNotLoaded)?;
    predict_checked(state, model, std::slice::from_ref(item))?
        .pop()
        .ok_or_else(|| ApiError::Internal("the model gave no answer".into()))
}

async fn predict<S: Service>(
    State(state): State<Arc<AppState<S>>>,
    request: Request,
) -> Result<JsonAnswer<S::Response>, ApiError> {
    let body = read_body(&state, request).await?;
    predict_body(&state, state.model.get().as_deref(), &body).map(JsonAnswer)
}

async fn predict_batch<S: Service>(
    State(state): State<Arc<AppState<S>>>,
    request: Request,
) -> Result<JsonAnswer<BatchResponse<S::Response>>, ApiError> {
    let started = Instant::now();
    let body = read_body(&state, request).await?;
    let items: Vec<S::Request> = json::parse_seed(&body, BatchSeed::new(S::BATCH_ALIAS))?;
    for (i, item) in items.iter().enumerate() {
        S::validate(item).map_err(|e| {
            ApiError::Invalid(FieldError {
                field: format!("items[{i}].{}", e.field),
                reason: e.reason,
            })
        })?;
    }
    let model = state.model.get().ok_or(ApiError::ModelNotLoaded)?;
    let predictions = predict_checked(&state, &model, &items)?;
    let count = predictions.len();
    Ok(JsonAnswer(BatchResponse {
        predictions,
        count,
        batch_id: batch_id(),
        processing_time_seconds: started.elapsed().as_secs_f64(),
        total: S::BATCH_ALIAS
            .map(|alias| serde_json::Map::from_iter([(format!("total_{alias}"), count.into())])),
    }))
}

/// A prediction's JSON answer, written into a buffer that fits it at once (axum's `Json`
/// starts at 128 bytes and grows, copying, on every answer of a few hundred).
struct JsonAnswer<T>(T);

impl<T: serde::Serialize> IntoResponse for JsonAnswer<T> {
    fn into_response(self) -> Response {
        let mut bytes = Vec::with_capacity(1024);
        match serde_json::to_writer(&mut bytes, &self.0) {
            Ok(()) => (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                bytes,
            )
                .into_response(),
            Err(e) => ApiError::Internal(format!("cannot write the answer: {e}")).into_response(),
        }
    }
}

/// A random identifier in the UUID v4 format the old API used.
fn batch_id() -> String {
    let bits: u128 = rand::thread_rng().gen();
    // Version 4 and the RFC 4122 variant in their places; the other 122 bits random.
    let bits = (bits & !(0xf << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// The dashboard's pages read the served model and predict through the API's state.
impl<S: Service> PageSource<S> for AppState<S> {
    fn view(&self) -> Result<DashboardView<S>, String> {
        self.model.dashboard()
    }

    fn predict(
        &self,
        model: &Loaded<S::Model>,
        item: &S::Request,
    ) -> Result<S::Response, ApiError> {
        predict_item(self, Some(model), item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_ids_look_like_uuid_v4_and_differ() {
        let (a, b) = (batch_id(), batch_id());
        assert_ne!(a, b);
        let parts: Vec<&str> = a.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'), "{a}");
        assert!("89ab".contains(&parts[3][..1]), "{a}");
    }
}

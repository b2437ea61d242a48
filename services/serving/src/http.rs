//! The HTTP API every service exposes: `/`, `/health`, `/metrics`, `/openapi.json`, `/docs`,
//! `/predict` and `/predict_batch`. Every error, whatever its status and whoever raised it (a
//! handler, the router, a panic), answers the same JSON [`ErrorBody`]; bad input is a 422
//! naming the field; a missing model is a 503; nothing panics on user input.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::FutureExt;
use http_body_util::BodyExt;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::api::{BatchResponse, ErrorBody, Health, Links, Root};
use crate::json::{self, BatchSeed, BodyError};
use crate::model::{Loaded, ModelSlot};
use crate::{FieldError, PredictionMeta, Service, API_VERSION};

pub use crate::api::MAX_BATCH;

/// Limits on each request, enforced by the router (the connection limits are in `server`).
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// Largest body accepted: a 1000-item batch, pretty-printed, fits with room to spare.
    pub body_bytes: usize,
    /// Time to receive the whole body once the headers are in.
    pub body_timeout: Duration,
    /// Time for the whole request, from its headers to the answer.
    pub request_timeout: Duration,
    /// Most bytes of request line and headers together.
    pub header_bytes: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            body_bytes: 1 << 20,
            body_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            header_bytes: 16 << 10,
        }
    }
}

/// Shared state of a running service.
pub struct AppState<S: Service> {
    pub model: ModelSlot<S>,
    started: Instant,
    metrics: Metrics,
    openapi: String,
    title: String,
    limits: RequestLimits,
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
        })
    }
}

type Labels = Vec<(&'static str, &'static str)>;

struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    duration: Family<Labels, Histogram>,
    predictions: Family<Labels, Counter>,
}

impl Metrics {
    fn new(prefix: &str) -> Self {
        let mut registry = Registry::with_prefix(prefix);
        let requests = Family::<Labels, Counter>::default();
        // 0.1 ms to about 3 s.
        let duration = Family::<Labels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.0001, 2.5, 12))) as fn() -> Histogram,
        );
        let predictions = Family::<Labels, Counter>::default();
        registry.register("requests", "HTTP requests served", requests.clone());
        registry.register_with_unit(
            "request_duration",
            "HTTP request latency",
            Unit::Seconds,
            duration.clone(),
        );
        registry.register("predictions", "Predictions made", predictions.clone());
        Self {
            registry,
            requests,
            duration,
            predictions,
        }
    }
}

/// Builds the service's router around `state`.
pub fn router<S: Service>(state: Arc<AppState<S>>) -> Router {
    let docs: Router<Arc<AppState<S>>> = utoipa_swagger_ui::SwaggerUi::new("/docs")
        .config(utoipa_swagger_ui::Config::from("/openapi.json"))
        .into();
    Router::new()
        .route("/", get(root::<S>))
        .route("/health", get(health::<S>))
        .route("/metrics", get(metrics::<S>))
        .route("/openapi.json", get(openapi::<S>))
        // No ReDoc can be had without the network: its old clients land on Swagger UI.
        .route("/redoc", get(|| async { Redirect::to("/docs/") }))
        .route("/predict", post(predict::<S>))
        .route("/predict_batch", post(predict_batch::<S>))
        .merge(docs)
        .fallback(not_found)
        // The outermost layer runs first: `track` sees the final status of everything.
        .layer(middleware::from_fn_with_state(state.clone(), guard::<S>))
        .layer(middleware::from_fn_with_state(state.clone(), track::<S>))
        .with_state(state)
}

/// A label value from a fixed set, so no request can add a metric series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

const ENDPOINTS: &[&str] = &[
    "/",
    "/health",
    "/metrics",
    "/openapi.json",
    "/predict",
    "/predict_batch",
    "/docs",
    "/docs/",
    "/docs/{*rest}",
    "/redoc",
];

fn endpoint_label(path: Option<&MatchedPath>) -> &'static str {
    path.and_then(|p| ENDPOINTS.iter().find(|e| **e == p.as_str()))
        .copied()
        .unwrap_or("other")
}

fn status_label(status: StatusCode) -> &'static str {
    // Status codes are a bounded set; leak-free static strings for the common ones.
    match status.as_u16() {
        200 => "200",
        301..=308 => "3xx",
        400 => "400",
        404 => "404",
        405 => "405",
        408 => "408",
        413 => "413",
        422 => "422",
        431 => "431",
        500 => "500",
        503 => "503",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}

async fn track<S: Service>(
    State(state): State<Arc<AppState<S>>>,
    request: Request,
    next: Next,
) -> Response {
    let endpoint = endpoint_label(request.extensions().get::<MatchedPath>());
    timed(&state, endpoint, request, next).await
}

/// The dashboard's requests, all under one endpoint label.
pub(crate) async fn track_dashboard<S: Service>(
    State(state): State<Arc<AppState<S>>>,
    request: Request,
    next: Next,
) -> Response {
    timed(&state, DASHBOARD_ENDPOINT, request, next).await
}

/// The endpoint label of every request to the dashboard's port.
const DASHBOARD_ENDPOINT: &str = "dashboard";

async fn timed<S: Service>(
    state: &AppState<S>,
    endpoint: &'static str,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = status_label(response.status());
    state
        .metrics
        .duration
        .get_or_create(&vec![("method", method), ("endpoint", endpoint)])
        .observe(elapsed.as_secs_f64());
    state
        .metrics
        .requests
        .get_or_create(&vec![
            ("method", method),
            ("endpoint", endpoint),
            ("status", status),
        ])
        .inc();
    tracing::debug!(
        method,
        endpoint,
        status,
        micros = elapsed.as_micros() as u64,
        "request"
    );
    response
}

/// Bounds each request (header size, total time), turns a panic into a 500, and gives every
/// error response the JSON body, whoever made it (axum's 405 is empty, for one).
async fn guard<S: Service>(
    State(state): State<Arc<AppState<S>>>,
    request: Request,
    next: Next,
) -> Response {
    match bounded(state.limits, request, next, error_response).await {
        Ok(response) => as_json_error(response).await,
        Err(response) => response,
    }
}

/// Runs a request within `limits`: `Err` is the answer (made by `render`) when the headers
/// are too large, the request takes too long, or its handler panics.
pub(crate) async fn bounded(
    limits: RequestLimits,
    request: Request,
    next: Next,
    render: fn(StatusCode, ErrorBody) -> Response,
) -> Result<Response, Response> {
    let header_bytes = request.uri().to_string().len()
        + request
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>();
    if header_bytes > limits.header_bytes {
        return Err(render(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorBody::new(
                "headers_too_large",
                format!(
                    "the request line and headers take {header_bytes} bytes; at most {} are accepted",
                    limits.header_bytes
                ),
            ),
        ));
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let run = AssertUnwindSafe(next.run(request)).catch_unwind();
    match tokio::time::timeout(limits.request_timeout, run).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(panic)) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(%method, path, panic = what, "a handler panicked");
            Err(render(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorBody::new(
                    "internal_error",
                    "the service failed on this request; it is logged",
                ),
            ))
        }
        Err(_) => {
            tracing::warn!(%method, path, seconds = limits.request_timeout.as_secs_f64(), "request timed out");
            let mut response = render(
                StatusCode::REQUEST_TIMEOUT,
                ErrorBody::new(
                    "timeout",
                    format!(
                        "the request took longer than {} s",
                        limits.request_timeout.as_secs_f64()
                    ),
                ),
            );
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            Err(response)
        }
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

fn error_response(status: StatusCode, body: ErrorBody) -> Response {
    (status, Json(body)).into_response()
}

/// Everything a handler can fail with.
#[derive(Debug)]
pub enum ApiError {
    Invalid(FieldError),
    /// The body is not parseable JSON at all.
    Malformed(String),
    ModelNotLoaded,
    PayloadTooLarge(usize),
    BodyTimeout(Duration),
    BodyUnreadable(String),
    /// Our fault, not the client's; logged where it happens.
    Internal(String),
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        match e.field {
            Some(field) => ApiError::Invalid(FieldError {
                field,
                reason: e.message,
            }),
            None => ApiError::Malformed(e.message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            ApiError::Invalid(e) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorBody {
                    error: "invalid_request".into(),
                    field: Some(e.field),
                    message: e.reason,
                },
            ),
            ApiError::Malformed(message) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorBody::new("invalid_request", message),
            ),
            ApiError::ModelNotLoaded => (
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorBody::new(
                    "model_not_loaded",
                    "no model is loaded: train one (`train --model-dir DIR`), then send the service SIGHUP",
                ),
            ),
            ApiError::PayloadTooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorBody::new(
                    "payload_too_large",
                    format!("the body is larger than {limit} bytes"),
                ),
            ),
            ApiError::BodyTimeout(limit) => (
                StatusCode::REQUEST_TIMEOUT,
                ErrorBody::new(
                    "timeout",
                    format!("the body did not arrive within {} s", limit.as_secs_f64()),
                ),
            ),
            ApiError::BodyUnreadable(message) => (
                StatusCode::BAD_REQUEST,
                ErrorBody::new("bad_request", format!("cannot read the body: {message}")),
            ),
            ApiError::Internal(message) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorBody::new("internal_error", message),
            ),
        };
        error_response(status, body)
    }
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
        timestamp: crate::model::now(),
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
    let mut text = String::new();
    if let Err(e) = encode(&mut text, &state.metrics.registry) {
        return ApiError::Internal(format!("cannot encode the metrics: {e}")).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn openapi<S: Service>(State(state): State<Arc<AppState<S>>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi.clone(),
    )
        .into_response()
}

/// Reads the body within the size and time limits.
async fn read_body(limits: &RequestLimits, request: Request) -> Result<Bytes, ApiError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limits.body_bytes) {
        return Err(ApiError::PayloadTooLarge(limits.body_bytes));
    }
    let limited = http_body_util::Limited::new(request.into_body(), limits.body_bytes);
    match tokio::time::timeout(limits.body_timeout, limited.collect()).await {
        Err(_) => Err(ApiError::BodyTimeout(limits.body_timeout)),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::PayloadTooLarge(limits.body_bytes))
        }
        Ok(Err(e)) => Err(ApiError::BodyUnreadable(e.to_string())),
    }
}

fn prediction_meta<S: Service>(model: &Loaded<S::Model>) -> PredictionMeta {
    PredictionMeta {
        model_version: model.version.clone(),
        timestamp: crate::model::now(),
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
        if let Some((key, value)) = S::prediction_label(response) {
            state
                .metrics
                .predictions
                .get_or_create(&vec![(key, value)])
                .inc();
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
) -> Result<Json<S::Response>, ApiError> {
    let body = read_body(&state.limits, request).await?;
    predict_body(&state, state.model.get().as_deref(), &body).map(Json)
}

async fn predict_batch<S: Service>(
    State(state): State<Arc<AppState<S>>>,
    request: Request,
) -> Result<Json<BatchResponse<S::Response>>, ApiError> {
    let started = Instant::now();
    let body = read_body(&state.limits, request).await?;
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
    Ok(Json(BatchResponse {
        predictions,
        count,
        batch_id: batch_id(),
        processing_time_seconds: started.elapsed().as_secs_f64(),
        total: S::BATCH_ALIAS
            .map(|alias| serde_json::Map::from_iter([(format!("total_{alias}"), count.into())])),
    }))
}

/// A random identifier in the UUID v4 format the old API used.
fn batch_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // Each RandomState is freshly keyed from the OS's randomness.
    let word = || {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.finish()
    };
    let (a, b) = (word(), word());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0x0fff,
        0x8000 | (b >> 48) & 0x3fff,
        b & 0xffff_ffff_ffff
    )
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
    }

    #[test]
    fn labels_come_from_a_fixed_set() {
        assert_eq!(method_label(&Method::from_bytes(b"FOO").unwrap()), "other");
        assert_eq!(method_label(&Method::POST), "POST");
        assert_eq!(endpoint_label(None), "other");
        assert_eq!(status_label(StatusCode::IM_A_TEAPOT), "4xx");
    }
}

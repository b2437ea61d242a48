//! The HTTP API every service exposes: `/`, `/health`, `/metrics`, `/openapi.json`,
//! `/predict` and `/predict_batch`. Bad input is always a 422 naming the field; a missing
//! model is always a 503; nothing panics on user input.

use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::artifact::Loaded;
use crate::{FieldError, PredictionMeta, Service, API_VERSION};

/// Most items one `/predict_batch` call may carry.
pub const MAX_BATCH: usize = 1000;

/// Shared state of a running service.
pub struct AppState<S: Service> {
    /// Swappable so a retrained model can replace the old one without a restart.
    model: RwLock<Option<Arc<Loaded<S::Model>>>>,
    started: Instant,
    metrics: Metrics,
    openapi: String,
}

impl<S: Service> AppState<S> {
    pub fn new(model: Option<Loaded<S::Model>>) -> Arc<Self> {
        Arc::new(Self {
            model: RwLock::new(model.map(Arc::new)),
            started: Instant::now(),
            metrics: Metrics::new(S::NAME),
            openapi: crate::openapi::document::<S>(),
        })
    }

    fn model(&self) -> Option<Arc<Loaded<S::Model>>> {
        self.model.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

type Labels = Vec<(&'static str, String)>;

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
    Router::new()
        .route("/", get(root::<S>))
        .route("/health", get(health::<S>))
        .route("/metrics", get(metrics::<S>))
        .route("/openapi.json", get(openapi::<S>))
        .route("/predict", post(predict::<S>))
        .route("/predict_batch", post(predict_batch::<S>))
        .route_layer(middleware::from_fn_with_state(state.clone(), track::<S>))
        .fallback(not_found)
        .with_state(state)
}

async fn track<S: Service>(
    State(state): State<Arc<AppState<S>>>,
    path: MatchedPath,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let endpoint = path.as_str().to_owned();
    let status = response.status();
    state
        .metrics
        .duration
        .get_or_create(&vec![
            ("method", method.to_string()),
            ("endpoint", endpoint.clone()),
        ])
        .observe(elapsed.as_secs_f64());
    state
        .metrics
        .requests
        .get_or_create(&vec![
            ("method", method.to_string()),
            ("endpoint", endpoint.clone()),
            ("status", status.as_u16().to_string()),
        ])
        .inc();
    tracing::debug!(%method, endpoint, status = status.as_u16(), micros = elapsed.as_micros() as u64, "request");
    response
}

/// The stable JSON body of every error.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Machine-readable kind: `invalid_request`, `model_not_loaded`, `not_found`.
    pub error: String,
    /// The offending request field, as a path (`Age`, `items[3].Age`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
}

/// Everything a handler can fail with.
#[derive(Debug)]
pub enum ApiError {
    Invalid(FieldError),
    /// The body is not parseable JSON at all.
    Malformed(String),
    ModelNotLoaded,
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
                ErrorBody {
                    error: "invalid_request".into(),
                    field: None,
                    message,
                },
            ),
            ApiError::ModelNotLoaded => (
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorBody {
                    error: "model_not_loaded".into(),
                    field: None,
                    message: "no model is loaded: train one (`train --model-dir DIR`) and restart the service".into(),
                },
            ),
        };
        (status, Json(body)).into_response()
    }
}

async fn not_found(method: Method, uri: axum::http::Uri) -> Response {
    let body = ErrorBody {
        error: "not_found".into(),
        field: None,
        message: format!("no route for {method} {}; see /openapi.json", uri.path()),
    };
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

/// `/health`: never claims health without a model.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `healthy` or `unhealthy`.
    pub status: String,
    pub version: String,
    pub model_loaded: bool,
    pub service: String,
    pub model_version: Option<String>,
    pub uptime_seconds: f64,
}

async fn health<S: Service>(State(state): State<Arc<AppState<S>>>) -> (StatusCode, Json<Health>) {
    let model = state.model();
    let loaded = model.is_some();
    let body = Health {
        status: if loaded { "healthy" } else { "unhealthy" }.into(),
        version: API_VERSION.into(),
        model_loaded: loaded,
        service: S::NAME.into(),
        model_version: model.map(|m| m.version.clone()),
        uptime_seconds: state.started.elapsed().as_secs_f64(),
    };
    let status = if loaded {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

async fn root<S: Service>() -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "name": S::TITLE,
        "service": S::NAME,
        "version": API_VERSION,
        "description": S::DESCRIPTION,
        "links": {
            "health": "/health",
            "predict": "/predict",
            "predict_batch": "/predict_batch",
            "metrics": "/metrics",
            "openapi": "/openapi.json",
        },
    }))
}

async fn metrics<S: Service>(State(state): State<Arc<AppState<S>>>) -> Response {
    let mut text = String::new();
    if encode(&mut text, &state.metrics.registry).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
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

/// Parses a JSON body, naming the field at fault on failure.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: Result<T, _> = serde_path_to_error::deserialize(&mut de);
    if value.is_ok() {
        de.end()
            .map_err(|e| ApiError::Malformed(format!("the body is not valid JSON: {e}")))?;
    }
    value.map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::Malformed(format!("the body is not valid JSON: {inner}"));
        }
        // serde reports a missing field at its parent; name the field itself.
        let message = inner.to_string();
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next());
        let field = match (missing, path.as_str()) {
            (Some(name), ".") => name.to_owned(),
            (Some(name), parent) => format!("{parent}.{name}"),
            (None, ".") => "(body)".to_owned(),
            (None, p) => p.to_owned(),
        };
        let reason = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_owned();
        ApiError::Invalid(FieldError { field, reason })
    })
}

fn prediction_meta<S: Service>(model: &Loaded<S::Model>) -> PredictionMeta {
    PredictionMeta {
        model_version: model.version.clone(),
        timestamp: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
    }
}

fn count_predictions<S: Service>(state: &AppState<S>, responses: &[S::Response]) {
    for response in responses {
        if let Some((key, value)) = S::prediction_label(response) {
            state
                .metrics
                .predictions
                .get_or_create(&vec![(key, value.to_owned())])
                .inc();
        }
    }
}

async fn predict<S: Service>(
    State(state): State<Arc<AppState<S>>>,
    body: Bytes,
) -> Result<Json<S::Response>, ApiError> {
    let request: S::Request = parse(&body)?;
    S::validate(&request).map_err(ApiError::Invalid)?;
    let model = state.model().ok_or(ApiError::ModelNotLoaded)?;
    let mut responses = S::predict(
        &model.model,
        std::slice::from_ref(&request),
        &prediction_meta::<S>(&model),
    );
    count_predictions(&state, &responses);
    Ok(Json(responses.remove(0)))
}

/// The body of `/predict_batch`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest<T> {
    /// 1 to 1000 items.
    pub items: Vec<T>,
}

#[derive(Serialize, ToSchema)]
pub struct BatchResponse<T> {
    pub predictions: Vec<T>,
    pub count: usize,
}

async fn predict_batch<S: Service>(
    State(state): State<Arc<AppState<S>>>,
    body: Bytes,
) -> Result<Json<BatchResponse<S::Response>>, ApiError> {
    let batch: BatchRequest<S::Request> = parse(&body)?;
    if batch.items.is_empty() || batch.items.len() > MAX_BATCH {
        return Err(ApiError::Invalid(FieldError::new(
            "items",
            format!(
                "must hold 1 to {MAX_BATCH} items, got {}",
                batch.items.len()
            ),
        )));
    }
    for (i, item) in batch.items.iter().enumerate() {
        S::validate(item).map_err(|e| {
            ApiError::Invalid(FieldError {
                field: format!("items[{i}].{}", e.field),
                reason: e.reason,
            })
        })?;
    }
    let model = state.model().ok_or(ApiError::ModelNotLoaded)?;
    let predictions = S::predict(&model.model, &batch.items, &prediction_meta::<S>(&model));
    count_predictions(&state, &predictions);
    Ok(Json(BatchResponse {
        count: predictions.len(),
        predictions,
    }))
}

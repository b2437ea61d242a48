//! The JSON shapes of the HTTP API that are not the service's own: errors, health, the root
//! page and the batch envelope. Both the handlers (`http`) and the OpenAPI document
//! (`openapi`) use them, so they live here rather than in either.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The API version reported by `/health` and `/`.
pub const API_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The time now as the API writes it: UTC, RFC 3339, in milliseconds.
pub fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Most items one `/predict_batch` call may carry.
pub const MAX_BATCH: usize = 1000;

/// The stable JSON body of every error, whatever the status.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Machine-readable kind: `invalid_request`, `model_not_loaded`, `not_found`,
    /// `method_not_allowed`, `payload_too_large`, `headers_too_large`, `timeout`,
    /// `overloaded`, `internal_error`, ...
    pub error: String,
    /// The offending request field, as a path (`Age`, `items[3].Age`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
}

impl ErrorBody {
    pub fn new(error: &str, message: impl Into<String>) -> Self {
        Self {
            error: error.to_owned(),
            field: None,
            message: message.into(),
        }
    }
}

/// The outcome of the last attempt to load a new model (at start or on SIGHUP).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LastReload {
    /// `loaded`, `unchanged` (the same model again), `refused` or `absent` (no model found).
    pub status: String,
    /// Why a model was refused or absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The version the attempt found, if it got that far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    /// UTC, RFC 3339.
    pub at: String,
}

/// Where the served model came from, as far as its metrics say.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ModelInfo {
    pub model_version: Option<String>,
    /// The registered model's name in MLflow (e.g. `BankChurn-Classifier`), when registered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry_model: Option<String>,
    /// The model registry's version of this model, when it was registered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry_version: Option<String>,
    /// The registry alias this model was served under (e.g. `champion`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry_alias: Option<String>,
}

/// `/health`: never claims health without a model. The first three keys are the old API's.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `healthy` or `unhealthy`.
    pub status: String,
    pub version: String,
    pub model_loaded: bool,
    pub service: String,
    /// UTC, RFC 3339.
    pub timestamp: String,
    pub uptime_seconds: f64,
    #[serde(flatten)]
    pub model: ModelInfo,
    pub last_reload: Option<LastReload>,
}

/// Links on the root page.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Links {
    pub health: String,
    pub predict: String,
    pub predict_batch: String,
    pub metrics: String,
    pub openapi: String,
    pub docs: String,
}

/// `/`: what this service is. `message`, `version`, `docs` and `health` are the old API's keys.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Root {
    pub message: String,
    pub name: String,
    pub service: String,
    pub version: String,
    pub description: String,
    pub model_loaded: bool,
    #[serde(flatten)]
    pub model: ModelInfo,
    pub last_reload: Option<LastReload>,
    pub docs: String,
    pub health: String,
    pub links: Links,
}

/// The answer of `/predict_batch`. `batch_id`, `processing_time_seconds` and
/// `total_<items>` (e.g. `total_customers`) are the old API's keys.
#[derive(Debug, Serialize)]
pub struct BatchResponse<T> {
    pub predictions: Vec<T>,
    pub count: usize,
    pub batch_id: String,
    pub processing_time_seconds: f64,
    #[serde(flatten)]
    pub total: Option<serde_json::Map<String, serde_json::Value>>,
}

//! The serving library every model service is built on.
//!
//! A service implements [`Service`] (its data generator, its training, its request and response
//! types and how it predicts) and calls [`main`]; everything else — the command line, the HTTP
//! API with health, metrics and OpenAPI, artifact I/O, logging and graceful shutdown — lives
//! here, so the services cannot drift apart.
//!
//! # The model directory
//!
//! `train --model-dir DIR` never changes a model in place. Each trained model gets its own
//! directory, and one symlink says which is served:
//!
//! ```text
//! DIR/versions/<model_version>/model.json     the model
//! DIR/versions/<model_version>/metrics.json   its metrics; `model_version` matches the folder
//! DIR/current -> versions/<model_version>     relative symlink: what `serve` loads
//! DIR/.staging-*                              a version being written (removed on failure)
//! ```
//!
//! A version is written in a dot-named staging directory inside DIR and renamed into
//! `versions/`; then `current` is replaced atomically (a new symlink renamed over it). So the
//! model and its metrics change together or not at all, whatever interrupts training. The
//! last 3 versions are kept. A service with a dashboard stores the dashboard's data in each
//! version too ([`dashboard`]), so the pages always describe the model they sit beside. `serve` only reads DIR (it may be mounted read-only), loads
//! `DIR/current/model.json`, validates it fully, and on SIGHUP loads it again and swaps it in
//! without a restart; a model that fails validation is refused and the old one keeps serving.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;
use utoipa::ToSchema;

pub mod api;
pub mod artifact;
mod cli;
pub mod dashboard;
mod floor;
mod healthcheck;
pub mod http;
pub mod json;
mod manifest;
#[cfg(feature = "testkit")]
pub mod mlflow_testkit;
pub mod model;
mod openapi;
pub mod server;
pub mod synth;
pub mod table;
mod telemetry;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod tracking;
pub mod train;

/// The web framework, for services' dashboard pages (the same version the library serves).
pub use axum;
/// The MLflow REST client, from the MLflow service's own crate.
pub use mlflow;

pub use cli::main;
pub use http::{router, AppState};
pub use manifest::Manifest;

/// The API version reported by `/health` and `/`.
pub const API_VERSION: &str = env!("CARGO_PKG_VERSION");

/// One model service: its data, its model and its prediction API.
pub trait Service: Sized + Send + Sync + 'static {
    /// Name and title, from the crate's `service.toml`: `const MANIFEST: Manifest =
    /// serving::service_manifest!();`
    const MANIFEST: Manifest;
    const DESCRIPTION: &'static str;
    /// The model's input features, in order: recorded in every model file and checked when
    /// one is loaded.
    const FEATURES: &'static [&'static str];
    /// Another name `/predict_batch` accepts for its `items` list (an old client's,
    /// e.g. `customers`); the answer then also carries `total_<name>`.
    const BATCH_ALIAS: Option<&'static str> = None;
    /// Rows `generate-data` writes by default: the size of the public file.
    const DEFAULT_ROWS: usize;
    /// The model's name in the MLflow model registry, e.g. "BankChurn-Classifier".
    const REGISTERED_MODEL: &'static str;
    /// What `train --promote` requires of the held-out metrics before it moves the `champion`
    /// alias; the command line can change each threshold.
    const PROMOTION_GATES: &'static [tracking::Gate];

    /// The trained model as stored inside `model.json`.
    type Model: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// One item to predict, as posted to `/predict`.
    type Request: DeserializeOwned + Serialize + ToSchema + Send + 'static;
    type Response: Serialize + ToSchema + Send + 'static;
    /// The web pages served beside the API with `serve --dashboard-port`, and the data `train`
    /// stores for them in each model version; [`dashboard::NoDashboard`] for none.
    type Dashboard: dashboard::Dashboard<Self>;

    /// Writes a synthetic CSV with exactly the public dataset's columns.
    fn generate_data(rows: usize, seed: u64, out: &mut dyn std::io::Write) -> anyhow::Result<()>;

    /// Trains on the CSV at `data` and returns the model and its held-out metrics.
    fn train(data: &Path, seed: u64) -> anyhow::Result<(Self::Model, serde_json::Value)>;

    /// Checks that a model read from disk can be served: every index in range, trees acyclic,
    /// the objective and feature count this service predicts with (see
    /// [`train::check_booster`]). Runs before a model is served; the library then also makes
    /// a canary prediction on [`Service::example_request`].
    fn check_model(model: &Self::Model) -> anyhow::Result<()>;

    /// Checks ranges and allowed values beyond what the types already enforce.
    fn validate(request: &Self::Request) -> Result<(), FieldError>;

    /// One response per request, in order. A response holds no `null` and no non-finite
    /// number (the canary check relies on it).
    fn predict(
        model: &Self::Model,
        requests: &[Self::Request],
        meta: &PredictionMeta,
    ) -> Vec<Self::Response>;

    /// The label `<service>_predictions_total` counts a response under, if any.
    fn prediction_label(_response: &Self::Response) -> Option<(&'static str, &'static str)> {
        None
    }

    /// Constraints between request fields that the derived schema cannot state (e.g. two
    /// fields that must agree), merged into the request's schema in `/openapi.json`.
    fn request_schema_extras() -> Option<serde_json::Value> {
        None
    }

    /// A valid request, used in the OpenAPI document, by tests, and as the canary every
    /// loaded model must answer.
    fn example_request() -> Self::Request;
}

/// Facts about the model and the moment, attached to every prediction.
pub struct PredictionMeta {
    pub model_version: String,
    /// UTC, RFC 3339.
    pub timestamp: String,
}

/// A request field that failed validation, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: &str, reason: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Checks `min <= value <= max`, naming the field otherwise.
pub fn check_range(field: &str, value: f64, min: f64, max: f64) -> Result<(), FieldError> {
    if !value.is_finite() {
        return Err(FieldError::new(
            field,
            format!("must be a finite number, got {value}"),
        ));
    }
    if value < min || value > max {
        return Err(FieldError::new(
            field,
            format!("must be between {min} and {max}, got {value}"),
        ));
    }
    Ok(())
}

/// Checks `value >= 0` and finite.
pub fn check_non_negative(field: &str, value: f64) -> Result<(), FieldError> {
    check_range(field, value, 0.0, f64::MAX)
        .map_err(|_| FieldError::new(field, format!("must be a finite number >= 0, got {value}")))
}

/// Checks that `value` is one of `allowed`.
pub fn check_one_of(field: &str, value: &str, allowed: &[&str]) -> Result<(), FieldError> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!(
                "must be one of {}, got {}",
                allowed.join(" | "),
                json::quote(value)
            ),
        ))
    }
}

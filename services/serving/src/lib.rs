//! The serving library every model service is built on.
//!
//! A service implements [`Service`] (its data generator, its training, its request and response
//! types and how it predicts) and calls [`main`]; everything else — the command line, the HTTP
//! API with health, metrics and OpenAPI, artifact I/O, logging and graceful shutdown — lives
//! here, so the services cannot drift apart.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;
use utoipa::ToSchema;

pub mod artifact;
mod cli;
mod healthcheck;
pub mod http;
#[cfg(feature = "testkit")]
pub mod mlflow_testkit;
mod openapi;
pub mod synth;
pub mod table;
mod telemetry;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod tracking;
pub mod train;

/// The MLflow REST client, from the MLflow service's own crate.
pub use mlflow;

pub use cli::main;
pub use http::{router, AppState};

/// The API version reported by `/health` and `/`.
pub const API_VERSION: &str = env!("CARGO_PKG_VERSION");

/// One model service: its data, its model and its prediction API.
pub trait Service: Send + Sync + 'static {
    /// Short lowercase name: the binary, the metric prefix, the model's owner.
    const NAME: &'static str;
    /// Human title, e.g. "BankChurn API".
    const TITLE: &'static str;
    const DESCRIPTION: &'static str;
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

    /// Writes a synthetic CSV with exactly the public dataset's columns.
    fn generate_data(rows: usize, seed: u64, out: &mut dyn std::io::Write) -> anyhow::Result<()>;

    /// Trains on the CSV at `data` and returns the model and its held-out metrics.
    fn train(data: &Path, seed: u64) -> anyhow::Result<(Self::Model, serde_json::Value)>;

    /// Checks ranges and allowed values beyond what the types already enforce.
    fn validate(request: &Self::Request) -> Result<(), FieldError>;

    fn predict(
        model: &Self::Model,
        requests: &[Self::Request],
        meta: &PredictionMeta,
    ) -> Vec<Self::Response>;

    /// The label `<service>_predictions_total` counts a response under, if any.
    fn prediction_label(_response: &Self::Response) -> Option<(&'static str, &'static str)> {
        None
    }

    /// A valid request, used in the OpenAPI document and by tests.
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
            format!("must be one of {}, got {value:?}", allowed.join(" | ")),
        ))
    }
}

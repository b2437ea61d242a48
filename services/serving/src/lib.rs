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
//! version too ([`dashboard`]), so the pages always describe the model they sit beside. `serve`
//! only reads DIR (it may be mounted read-only), loads
//! `DIR/current/model.json`, validates it fully, and on SIGHUP loads it again and swaps it in
//! without a restart; a model that fails validation is refused and the old one keeps serving.
//!
//! # The modules, in layers
//!
//! A module imports only from its own layer's earlier entries or from layers above it in
//! this list, never in a circle:
//! 1. wire and disk: [`api`] (the JSON shapes, timestamps), [`json`] (parsing bodies),
//!    [`artifact`] (the model directory), the manifest, [`promotion`] (the gates),
//!    [`validation`], [`error`] (each failure's JSON answer), [`loaded`] (a validated model);
//!    beside them the training helpers ([`train`], [`table`], [`synth`]);
//! 2. [`service`]: what a service implements, [`Service`] and [`service::Dashboard`];
//! 3. running one: [`model`] (loading, validating and swapping models), [`http`] (the API),
//!    [`dashboard`] (the pages' router and helpers), [`server`] (connections), [`tracking`]
//!    (MLflow);
//! 4. the command line, which puts them together.

pub mod api;
pub mod artifact;
mod cli;
pub mod dashboard;
pub mod drift;
pub mod error;
mod floor;
mod healthcheck;
pub mod http;
pub mod json;
pub mod loaded;
mod manifest;
pub mod model;
mod openapi;
pub mod promotion;
pub mod provenance;
pub mod server;
pub mod service;
pub mod synth;
pub mod table;
mod telemetry;
pub mod tracking;
pub mod train;
pub mod validation;

/// The web framework, for services' dashboard pages (the same version the library serves).
pub use axum;
/// The MLflow REST client `train` records with (its types appear in [`tracking`]).
pub use mlflow_client;

pub use api::API_VERSION;
pub use cli::main;
pub use http::{router, AppState};
pub use manifest::Manifest;
pub use service::{PredictionMeta, Service};
pub use validation::{check_non_negative, check_one_of, check_range, FieldError};

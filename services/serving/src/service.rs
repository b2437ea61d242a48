//! What a service implements: [`Service`], its data, model and prediction API, and
//! [`Dashboard`], the web pages it may serve beside the API (see [`crate::dashboard`]). Both
//! sit below everything that runs them (the model slot, the HTTP API, the dashboard's router),
//! so those import this module and never each other.

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use serde::de::DeserializeOwned;
use serde::Serialize;
use utoipa::ToSchema;

use crate::artifact::VersionFile;
use crate::error::ApiError;
use crate::loaded::Loaded;
use crate::manifest::Manifest;
use crate::promotion::Gate;
use crate::validation::FieldError;

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
    const PROMOTION_GATES: &'static [Gate];

    /// The trained model as stored inside `model.json`.
    type Model: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// One item to predict, as posted to `/predict`.
    type Request: DeserializeOwned + Serialize + ToSchema + Send + 'static;
    type Response: Serialize + ToSchema + Send + 'static;
    /// The web pages served beside the API with `serve --dashboard-port`, and the data `train`
    /// stores for them in each model version; [`NoDashboard`] for none.
    type Dashboard: Dashboard<Self>;

    /// Writes a synthetic CSV with exactly the public dataset's columns.
    fn generate_data(rows: usize, seed: u64, out: &mut dyn std::io::Write) -> anyhow::Result<()>;

    /// Trains on the CSV at `data` and returns the model and its held-out metrics.
    fn train(data: &Path, seed: u64) -> anyhow::Result<(Self::Model, serde_json::Value)>;

    /// Checks that a model read from disk can be served: every index in range, trees acyclic,
    /// the objective and feature count this service predicts with (see
    /// [`crate::train::check_booster`]). Runs before a model is served; the library then also makes
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

/// The web pages of a service; see [`crate::dashboard`].
pub trait Dashboard<S: Service>: Sized + Send + Sync + 'static {
    /// False only for [`NoDashboard`]: `serve --dashboard-port` is then refused.
    const ENABLED: bool = true;
    /// Its name on every page, e.g. "CarVision Dashboard".
    const TITLE: &'static str;
    /// The pages in the navigation bar, as (path, label), the overview (`/`) first.
    const PAGES: &'static [(&'static str, &'static str)];

    /// Files `train` stores in each new model version, made from the training data (the
    /// file `train --data-path` names), e.g. the rows the pages are drawn from.
    fn version_files(training_data: &Path) -> anyhow::Result<Vec<VersionFile>>;

    /// Prepares the pages of a model that was just loaded and validated: reads its version
    /// files ([`Loaded::read_version_file`]) and computes what the pages need. Blocking.
    fn load(model: &Loaded<S::Model>) -> anyhow::Result<Self>;

    /// The pages. Each gets the model and its dashboard from [`crate::dashboard::view`].
    fn routes() -> Router<Pages<S>>;
}

/// The dashboard of a service that has none.
pub enum NoDashboard {}

impl<S: Service> Dashboard<S> for NoDashboard {
    const ENABLED: bool = false;
    const TITLE: &'static str = "";
    const PAGES: &'static [(&'static str, &'static str)] = &[];

    fn version_files(_: &Path) -> anyhow::Result<Vec<VersionFile>> {
        Ok(Vec::new())
    }

    fn load(_: &Loaded<S::Model>) -> anyhow::Result<Self> {
        anyhow::bail!("{} has no dashboard", S::MANIFEST.name)
    }

    fn routes() -> Router<Pages<S>> {
        Router::new()
    }
}

/// The served model with its dashboard: always of the same model version.
pub struct DashboardView<S: Service> {
    pub model: Arc<Loaded<S::Model>>,
    pub dashboard: Arc<S::Dashboard>,
}

/// What a dashboard's pages can ask of the service they belong to. It is the state of the
/// routes [`Dashboard::routes`] returns ([`Pages`]), so the pages depend on this and not on
/// the service's state type.
pub trait PageSource<S: Service>: Send + Sync + 'static {
    /// The served model and its dashboard, or why they cannot be shown.
    fn view(&self) -> Result<DashboardView<S>, String>;

    /// Validates `item` and predicts it with `model` exactly as `POST /predict` does,
    /// prediction counting included.
    fn predict(&self, model: &Loaded<S::Model>, item: &S::Request)
        -> Result<S::Response, ApiError>;
}

/// The state of a dashboard's page handlers: `State(pages): State<Pages<S>>`.
pub type Pages<S> = Arc<dyn PageSource<S>>;

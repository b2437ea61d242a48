//! The served model: loaded from the model directory, validated in full before it is served,
//! and swapped atomically on reload. A model that fails validation is refused and never
//! reaches a request: the service stays unhealthy, or keeps the model it had.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result};

use crate::api::{now, LastReload, ModelInfo};
use crate::artifact::{self, Artifact, FORMAT_VERSION};
use crate::drift;
use crate::loaded::Loaded;
use crate::service::{Dashboard, DashboardView, PredictionMeta, Service};

/// Loads the current model of `dir` and validates it for service `S`; `Ok(None)` when none
/// was trained yet. Never writes to `dir`.
pub fn load<S: Service>(dir: &Path) -> Result<Option<Loaded<S::Model>>> {
    let Some(stored) = artifact::read_current(dir)? else {
        return Ok(None);
    };
    let path = stored.path.clone();
    validate::<S>(stored)
        .with_context(|| format!("{} refused", path.display()))
        .map(Some)
}

fn validate<S: Service>(stored: artifact::Stored) -> Result<Loaded<S::Model>> {
    let name = S::MANIFEST.name;
    let artifact: Artifact<S::Model> = serde_json::from_slice(&stored.model_bytes)
        .with_context(|| format!("not a valid {name} model"))?;
    anyhow::ensure!(
        artifact.service == name,
        "it holds a {} model, not a {name} model",
        artifact.service
    );
    anyhow::ensure!(
        artifact.format_version == FORMAT_VERSION,
        "it has artifact format {}, this build reads format {FORMAT_VERSION}: retrain the model",
        artifact.format_version
    );
    anyhow::ensure!(
        artifact.features == S::FEATURES,
        "it was trained on features {:?}, this service predicts from {:?}",
        artifact.features,
        S::FEATURES
    );
    S::check_model(&artifact.model)?;
    canary::<S>(&artifact.model, &stored.version)?;
    let drift = drift_monitor::<S>(&stored)?;
    let text = |key: &str| match &stored.metrics[key] {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    Ok(Loaded {
        model: artifact.model,
        seed: artifact.seed,
        info: ModelInfo {
            model_version: Some(stored.version.clone()),
            registry_model: text("registry_model"),
            registry_version: text("registry_version"),
            registry_alias: text("registry_alias"),
        },
        version: stored.version,
        path: stored.path,
        metrics: stored.metrics,
        drift,
    })
}

/// The drift counters of a stored model, from the reference profile stored with it; `None`
/// for a model trained before profiles were (it still serves, and `/drift` says why).
fn drift_monitor<S: Service>(stored: &artifact::Stored) -> Result<Option<Arc<drift::Monitor>>> {
    if stored.metrics[artifact::VERSION_FILES_KEY]
        .get(drift::PROFILE_FILE)
        .is_none()
    {
        return Ok(None);
    }
    let version_dir = stored.path.parent().unwrap_or(Path::new("."));
    let bytes = artifact::read_version_file(version_dir, &stored.metrics, drift::PROFILE_FILE)?;
    let profile: drift::Profile = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a drift profile", drift::PROFILE_FILE))?;
    profile.check(&S::example_request())?;
    Ok(Some(Arc::new(drift::Monitor::new(profile))))
}

/// One prediction on the example request must work and give finite numbers.
fn canary<S: Service>(model: &S::Model, version: &str) -> Result<()> {
    let meta = PredictionMeta {
        model_version: version.to_owned(),
        timestamp: now(),
    };
    let example = [S::example_request()];
    let responses = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        S::predict(model, &example, &meta)
    }))
    .map_err(|_| anyhow::anyhow!("the canary prediction on the example request panicked"))?;
    anyhow::ensure!(
        responses.len() == 1,
        "the canary prediction gave {} answers for one request",
        responses.len()
    );
    // serde_json writes NaN and infinities as null.
    let value = serde_json::to_value(&responses[0])?;
    if let Some(path) = first_null(&value, String::new()) {
        anyhow::bail!("the canary prediction on the example request is not finite at `{path}`");
    }
    Ok(())
}

fn first_null(value: &serde_json::Value, path: String) -> Option<String> {
    match value {
        serde_json::Value::Null => Some(path),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| first_null(v, format!("{path}[{i}]"))),
        serde_json::Value::Object(map) => map.iter().find_map(|(k, v)| {
            let key = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            first_null(v, key)
        }),
        _ => None,
    }
}

/// The model being served and the outcome of the last attempt to load one; with the
/// dashboard on, also the dashboard of that model, swapped with it as one.
pub struct ModelSlot<S: Service> {
    served: RwLock<Served<S>>,
    last_reload: RwLock<Option<LastReload>>,
    /// Where reloads read from; `None` for a fixed model (tests).
    dir: Option<PathBuf>,
    /// Whether each model's dashboard is prepared when it is loaded.
    dashboard: bool,
}

struct Served<S: Service> {
    model: Option<Arc<Loaded<S::Model>>>,
    /// The dashboard of `model`, or why it cannot be shown; `None` with the dashboard off or
    /// no model.
    dashboard: Option<Result<Arc<S::Dashboard>, String>>,
}

impl<S: Service> ModelSlot<S> {
    /// A slot holding `model`, never reloaded; with `dashboard`, its dashboard is prepared now.
    pub fn fixed(model: Option<Loaded<S::Model>>, dashboard: bool) -> Self {
        let model = model.map(Arc::new);
        let prepared = model
            .as_ref()
            .filter(|_| dashboard)
            .map(|m| prepare_dashboard::<S>(m));
        Self {
            served: RwLock::new(Served {
                model,
                dashboard: prepared,
            }),
            last_reload: RwLock::new(None),
            dir: None,
            dashboard,
        }
    }

    /// A slot that loads from `dir` now and on every [`ModelSlot::reload`]; with `dashboard`,
    /// each model's dashboard is prepared as it is loaded.
    pub fn from_dir(dir: PathBuf, dashboard: bool) -> Self {
        let slot = Self {
            served: RwLock::new(Served {
                model: None,
                dashboard: None,
            }),
            last_reload: RwLock::new(None),
            dir: Some(dir),
            dashboard,
        };
        slot.reload();
        slot
    }

    pub fn get(&self) -> Option<Arc<Loaded<S::Model>>> {
        self.served
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .model
            .clone()
    }

    /// The served model and its dashboard, or why the dashboard cannot be shown.
    pub fn dashboard(&self) -> Result<DashboardView<S>, String> {
        let served = self.served.read().unwrap_or_else(|e| e.into_inner());
        let Some(model) = served.model.clone() else {
            return Err(match self.last_reload().and_then(|r| r.reason) {
                Some(reason) => format!("no model is loaded: {reason}"),
                None => "no model is loaded: train one (`train --model-dir DIR`), then send the service SIGHUP".into(),
            });
        };
        match &served.dashboard {
            Some(Ok(dashboard)) => Ok(DashboardView {
                model,
                dashboard: dashboard.clone(),
            }),
            Some(Err(reason)) => Err(reason.clone()),
            None => Err("the dashboard is off in this process (serve --dashboard-port)".into()),
        }
    }

    pub fn last_reload(&self) -> Option<LastReload> {
        self.last_reload
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the model directory again and swaps in its model if it is valid; a refused or
    /// absent model leaves the served one in place. With the dashboard on, the new model's
    /// dashboard is prepared first and swapped in with it. Blocking: reads and validates the
    /// files.
    pub fn reload(&self) -> LastReload {
        let Some(dir) = &self.dir else {
            return self.record(
                "refused",
                Some("this service has no model directory".into()),
                None,
            );
        };
        let started = std::time::Instant::now();
        let outcome = match load::<S>(dir) {
            Ok(Some(mut model)) => {
                let version = model.version.clone();
                let served = self.get().filter(|m| m.version == version);
                let unchanged = served.is_some();
                // The same version goes on counting where it was; another starts from zero
                // against its own profile.
                if let Some(served) = served {
                    model.drift = served.drift.clone();
                }
                let model = Arc::new(model);
                // The same version is the same folder of files: its prepared dashboard stands
                // (reading and scoring its data again is the costly part of a reload).
                let prepared = unchanged
                    .then(|| {
                        let served = self.served.read().unwrap_or_else(|e| e.into_inner());
                        served.dashboard.clone().filter(|d| d.is_ok())
                    })
                    .flatten();
                let dashboard = self
                    .dashboard
                    .then(|| prepared.unwrap_or_else(|| prepare_dashboard::<S>(&model)));
                *self.served.write().unwrap_or_else(|e| e.into_inner()) = Served {
                    model: Some(model),
                    dashboard,
                };
                let status = if unchanged { "unchanged" } else { "loaded" };
                tracing::info!(model_version = %version, status, millis = started.elapsed().as_millis() as u64, model_dir = %dir.display(), "model loaded");
                self.record(status, None, Some(version))
            }
            Ok(None) => {
                let reason = format!(
                    "no model in {}: train one (`train --model-dir DIR`), then send SIGHUP",
                    dir.display()
                );
                tracing::warn!(%reason, serving_old_model = self.get().is_some(), "no model found");
                self.record("absent", Some(reason), None)
            }
            Err(e) => {
                let reason = format!("{e:#}");
                tracing::error!(%reason, serving_old_model = self.get().is_some(), "model refused");
                self.record("refused", Some(reason), None)
            }
        };
        outcome
    }

    fn record(&self, status: &str, reason: Option<String>, version: Option<String>) -> LastReload {
        let outcome = LastReload {
            status: status.into(),
            reason,
            model_version: version,
            at: now(),
        };
        *self.last_reload.write().unwrap_or_else(|e| e.into_inner()) = Some(outcome.clone());
        outcome
    }
}

/// Prepares the dashboard of `model`; a failure (or a panic) becomes the reason it cannot be
/// shown, logged, while the API keeps serving the model.
fn prepare_dashboard<S: Service>(model: &Loaded<S::Model>) -> Result<Arc<S::Dashboard>, String> {
    let started = std::time::Instant::now();
    let prepared =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| S::Dashboard::load(model)))
            .unwrap_or_else(|_| Err(anyhow::anyhow!("preparing it panicked")));
    match prepared {
        Ok(dashboard) => {
            tracing::info!(model_version = %model.version, millis = started.elapsed().as_millis() as u64, "dashboard prepared");
            Ok(Arc::new(dashboard))
        }
        Err(e) => {
            let reason = format!(
                "the dashboard cannot show model version {}: {e:#}",
                model.version
            );
            tracing::error!(%reason, "dashboard not prepared");
            Err(reason)
        }
    }
}

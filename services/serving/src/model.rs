//! The served model: loaded from the model directory, validated in full before it is served,
//! and swapped atomically on reload. A model that fails validation is refused and never
//! reaches a request: the service stays unhealthy, or keeps the model it had.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use anyhow::{Context, Result};

use crate::api::{LastReload, ModelInfo};
use crate::artifact::{self, Artifact, FORMAT_VERSION};
use crate::{PredictionMeta, Service};

/// A validated model, with where it came from.
pub struct Loaded<M> {
    pub model: M,
    pub version: String,
    pub path: PathBuf,
    pub info: ModelInfo,
}

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
    let text = |key: &str| match &stored.metrics[key] {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    Ok(Loaded {
        model: artifact.model,
        info: ModelInfo {
            model_version: Some(stored.version.clone()),
            registry_model: text("registry_model"),
            registry_version: text("registry_version"),
            registry_alias: text("registry_alias"),
        },
        version: stored.version,
        path: stored.path,
    })
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

pub(crate) fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// The model being served and the outcome of the last attempt to load one.
pub struct ModelSlot<S: Service> {
    served: RwLock<Option<Arc<Loaded<S::Model>>>>,
    last_reload: RwLock<Option<LastReload>>,
    /// Where reloads read from; `None` for a fixed model (tests).
    dir: Option<PathBuf>,
}

impl<S: Service> ModelSlot<S> {
    /// A slot holding `model`, never reloaded.
    pub fn fixed(model: Option<Loaded<S::Model>>) -> Self {
        Self {
            served: RwLock::new(model.map(Arc::new)),
            last_reload: RwLock::new(None),
            dir: None,
        }
    }

    /// A slot that loads from `dir` now and on every [`ModelSlot::reload`].
    pub fn from_dir(dir: PathBuf) -> Self {
        let slot = Self {
            served: RwLock::new(None),
            last_reload: RwLock::new(None),
            dir: Some(dir),
        };
        slot.reload();
        slot
    }

    pub fn get(&self) -> Option<Arc<Loaded<S::Model>>> {
        self.served
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn last_reload(&self) -> Option<LastReload> {
        self.last_reload
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the model directory again and swaps in its model if it is valid; a refused or
    /// absent model leaves the served one in place. Blocking: reads and validates the file.
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
            Ok(Some(model)) => {
                let version = model.version.clone();
                let unchanged = self.get().is_some_and(|m| m.version == version);
                *self.served.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(model));
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

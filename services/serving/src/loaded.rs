//! A model that passed validation and is ready to serve, with where it came from.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;

use crate::api::ModelInfo;
use crate::artifact;
use crate::drift::{Monitor, Profile};

/// A validated model, with where it came from.
pub struct Loaded<M> {
    pub model: M,
    pub version: String,
    /// The model file, inside its version directory.
    pub path: PathBuf,
    pub info: ModelInfo,
    /// The seed it was trained with (of the split and the booster).
    pub seed: u64,
    /// Its `metrics.json`.
    pub metrics: serde_json::Value,
    /// The live traffic counted against its training data's profile; `None` for a model
    /// trained before profiles were stored.
    pub drift: Option<Arc<Monitor>>,
}

impl<M> Loaded<M> {
    /// A model that was never on disk: for tests.
    pub fn in_memory(model: M, version: &str) -> Self {
        Self {
            model,
            version: version.to_owned(),
            path: PathBuf::from(artifact::MODEL_FILE),
            info: ModelInfo {
                model_version: Some(version.to_owned()),
                ..ModelInfo::default()
            },
            seed: 0,
            metrics: serde_json::json!({ "model_version": version }),
            drift: None,
        }
    }

    /// The same model, counting its traffic against `profile`: for tests.
    pub fn with_drift_profile(mut self, profile: Profile) -> Self {
        self.drift = Some(Arc::new(Monitor::new(profile)));
        self
    }

    /// Reads a file `train` stored in this model's version beside it (see
    /// [`artifact::VersionFile`]), checking it is the one stored with this model.
    pub fn read_version_file(&self, name: &str) -> Result<Vec<u8>> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        artifact::read_version_file(dir, &self.metrics, name)
    }
}

//! The JSON shapes of MLflow's REST API (as MLflow 3 writes and reads them), and MLflow's
//! limits on a `runs/log-batch` request.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// MLflow's limits on one `runs/log-batch` request.
pub const MAX_BATCH_METRICS: usize = 1000;
pub const MAX_BATCH_PARAMS: usize = 100;
pub const MAX_BATCH_TAGS: usize = 100;
pub const MAX_BATCH_ENTRIES: usize = 1000;

/// Milliseconds since the Unix epoch, as MLflow stamps runs and metrics.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub key: String,
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    #[serde(default)]
    pub step: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Param {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

impl Param {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }
}

impl Tag {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Experiment {
    pub experiment_id: String,
    pub name: String,
    #[serde(default)]
    pub artifact_location: String,
    #[serde(default)]
    pub lifecycle_stage: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunStatus {
    Running,
    Scheduled,
    Finished,
    Failed,
    Killed,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RunInfo {
    pub run_id: String,
    pub experiment_id: String,
    #[serde(default)]
    pub run_name: String,
    pub status: RunStatus,
    /// Where the run's artifacts live, e.g. `mlflow-artifacts:/1/<run_id>/artifacts`.
    pub artifact_uri: String,
    #[serde(default)]
    pub start_time: Option<i64>,
    #[serde(default)]
    pub end_time: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RunData {
    #[serde(default)]
    pub metrics: Vec<Metric>,
    #[serde(default)]
    pub params: Vec<Param>,
    #[serde(default)]
    pub tags: Vec<Tag>,
}

impl RunData {
    pub fn metric(&self, key: &str) -> Option<f64> {
        self.metrics.iter().find(|m| m.key == key).map(|m| m.value)
    }

    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|p| p.key == key)
            .map(|p| p.value.as_str())
    }

    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|t| t.key == key)
            .map(|t| t.value.as_str())
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Run {
    pub info: RunInfo,
    #[serde(default)]
    pub data: RunData,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FileInfo {
    pub path: String,
    #[serde(default)]
    pub is_dir: bool,
    #[serde(default)]
    pub file_size: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ModelVersionStatus {
    PendingRegistration,
    FailedRegistration,
    Ready,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ModelVersion {
    pub name: String,
    pub version: String,
    pub source: String,
    #[serde(default)]
    pub run_id: String,
    pub status: ModelVersionStatus,
    #[serde(default)]
    pub status_message: Option<String>,
    #[serde(default)]
    pub tags: Vec<Tag>,
    #[serde(default)]
    pub aliases: Vec<String>,
}

impl ModelVersion {
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|t| t.key == key)
            .map(|t| t.value.as_str())
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Alias {
    pub alias: String,
    pub version: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RegisteredModel {
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<Alias>,
}

impl RegisteredModel {
    /// The version `alias` points at, if it is set.
    pub fn alias(&self, alias: &str) -> Option<&str> {
        self.aliases
            .iter()
            .find(|a| a.alias == alias)
            .map(|a| a.version.as_str())
    }
}

/// One `runs/log-batch` request's worth of entries.
#[derive(Debug, Default, PartialEq, Serialize)]
pub struct LogBatch<'a> {
    pub metrics: &'a [Metric],
    pub params: &'a [Param],
    pub tags: &'a [Tag],
}

/// Splits entries into requests within MLflow's limits: at most 1000 metrics, 100 params and
/// 100 tags, and 1000 entries in all, per request.
pub fn log_batches<'a>(
    metrics: &'a [Metric],
    params: &'a [Param],
    tags: &'a [Tag],
) -> Vec<LogBatch<'a>> {
    let (mut metrics, mut params, mut tags) = (metrics, params, tags);
    let mut batches = Vec::new();
    while !(metrics.is_empty() && params.is_empty() && tags.is_empty()) {
        let p = params.len().min(MAX_BATCH_PARAMS);
        let t = tags.len().min(MAX_BATCH_TAGS);
        let m = metrics
            .len()
            .min(MAX_BATCH_METRICS)
            .min(MAX_BATCH_ENTRIES - p - t);
        batches.push(LogBatch {
            metrics: &metrics[..m],
            params: &params[..p],
            tags: &tags[..t],
        });
        (metrics, params, tags) = (&metrics[m..], &params[p..], &tags[t..]);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn log_batches_respect_every_limit_and_keep_every_entry() {
        let metrics: Vec<Metric> = (0..2500)
            .map(|i| Metric {
                key: format!("m{i}"),
                value: i as f64,
                timestamp: 0,
                step: 0,
            })
            .collect();
        let params: Vec<Param> = (0..250).map(|i| Param::new(format!("p{i}"), "v")).collect();
        let tags: Vec<Tag> = (0..130).map(|i| Tag::new(format!("t{i}"), "v")).collect();
        let batches = log_batches(&metrics, &params, &tags);
        for b in &batches {
            assert!(b.metrics.len() <= MAX_BATCH_METRICS);
            assert!(b.params.len() <= MAX_BATCH_PARAMS);
            assert!(b.tags.len() <= MAX_BATCH_TAGS);
            assert!(b.metrics.len() + b.params.len() + b.tags.len() <= MAX_BATCH_ENTRIES);
        }
        let all_metrics: Vec<&Metric> = batches.iter().flat_map(|b| b.metrics).collect();
        assert_eq!(all_metrics, metrics.iter().collect::<Vec<_>>());
        let all_params: Vec<&Param> = batches.iter().flat_map(|b| b.params).collect();
        assert_eq!(all_params, params.iter().collect::<Vec<_>>());
        assert_eq!(batches.iter().map(|b| b.tags.len()).sum::<usize>(), 130);
        // 2500 metrics, 250 params, 130 tags: params bound it to three requests of 100 params.
        assert_eq!(batches.len(), 3);

        assert!(log_batches(&[], &[], &[]).is_empty());
        assert_eq!(log_batches(&metrics[..3], &[], &[]).len(), 1);
    }

    #[test]
    fn a_log_batch_serializes_as_mlflow_reads_it() {
        let metrics = [Metric {
            key: "f1".into(),
            value: 0.5,
            timestamp: 1_700_000_000_000,
            step: 0,
        }];
        let params = [Param::new("seed", "42")];
        let batch = &log_batches(&metrics, &params, &[])[0];
        assert_eq!(
            serde_json::to_value(batch).unwrap(),
            json!({
                "metrics": [{"key": "f1", "value": 0.5, "timestamp": 1_700_000_000_000i64, "step": 0}],
                "params": [{"key": "seed", "value": "42"}],
                "tags": [],
            })
        );
    }

    #[test]
    fn reads_runs_and_model_versions_as_mlflow_3_writes_them() {
        // Trimmed from the answers of an MLflow 3.17.2 server.
        let run: Run = serde_json::from_value(json!({
            "info": {
                "run_uuid": "5471", "experiment_id": "1", "run_name": "r1", "user_id": "",
                "status": "FINISHED", "start_time": 1_700_000_000_000i64, "end_time": 1_700_000_001_000i64,
                "artifact_uri": "mlflow-artifacts:/1/5471/artifacts", "lifecycle_stage": "active",
                "run_id": "5471"
            },
            "data": {
                "metrics": [{"key": "f1", "value": 0.5, "timestamp": 1, "step": 0}],
                "params": [{"key": "seed", "value": "42"}],
                "tags": [{"key": "mlflow.runName", "value": "r1"}]
            },
            "inputs": {}, "outputs": {}
        }))
        .unwrap();
        assert_eq!(run.info.status, RunStatus::Finished);
        assert_eq!(run.data.metric("f1"), Some(0.5));
        assert_eq!(run.data.param("seed"), Some("42"));
        assert_eq!(run.data.tag("mlflow.runName"), Some("r1"));

        let version: ModelVersion = serde_json::from_value(json!({
            "name": "BankChurn-Classifier", "version": "1", "creation_timestamp": 1,
            "last_updated_timestamp": 1, "current_stage": "None", "description": "",
            "source": "runs:/5471/model", "run_id": "5471", "status": "READY",
            "tags": [{"key": "gates", "value": "passed"}], "run_link": "", "aliases": ["champion"]
        }))
        .unwrap();
        assert_eq!(version.status, ModelVersionStatus::Ready);
        assert_eq!(version.aliases, ["champion"]);
        assert_eq!(version.tag("gates"), Some("passed"));

        let model: RegisteredModel = serde_json::from_value(json!({
            "name": "BankChurn-Classifier", "latest_versions": [],
            "aliases": [{"alias": "champion", "version": "1"}]
        }))
        .unwrap();
        assert_eq!(model.alias("champion"), Some("1"));
        assert_eq!(model.alias("challenger"), None);
    }
}

//! What `train` records in MLflow: one experiment per service, one run per training, and on
//! request a new version in the model registry, promoted to `champion` through gates.
//!
//! A run holds, from `metrics.json`: as params the hyperparameters, the seed, the row count and
//! every non-numeric field; as metrics every other numeric field (nested ones as `baseline.r2`);
//! as tags the git revision when known, the data file's SHA-256, the serving version and the
//! local model version; and as artifacts `model/model.json` and `model/metrics.json`.
//!
//! Nothing is left half done: the version is created only once its artifacts are uploaded, the
//! alias moves only once the version is READY and every gate passed, and a run that fails on
//! the way is marked FAILED when the server still answers.
//!
//! [`Tracking::connect`] runs before training, so an absent server fails fast;
//! [`Tracking::record`] takes the model once it is written aside and before it is served.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::promotion::{Gate, GateCheck, GateKind, CHAMPION_ALIAS};
use crate::service::Service;
use mlflow_client::{Client, ClientOptions, Metric, Param, RunStatus, Tag};

/// How long a new model version may stay PENDING_REGISTRATION.
const READY_LIMIT: Duration = Duration::from_secs(60);

/// The `train` options about MLflow.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "MLflow")]
pub struct TrackingArgs {
    /// Log the run to this MLflow tracking server, e.g. http://127.0.0.1:5000.
    #[arg(long, env = "MLFLOW_TRACKING_URI", value_name = "URL")]
    pub mlflow_uri: Option<String>,
    /// Train without MLflow, even when MLFLOW_TRACKING_URI is set.
    #[arg(long)]
    pub no_mlflow: bool,
    /// Also register the model as a new version in MLflow's model registry.
    #[arg(long, conflicts_with = "no_mlflow")]
    pub register_model: bool,
    /// Register, then move the `champion` alias to the new version if every promotion gate
    /// passes; otherwise exit non-zero and keep serving the previous model.
    #[arg(long, conflicts_with = "no_mlflow")]
    pub promote: bool,
    /// Promotion gate: the lowest F1 on the held-out rows.
    #[arg(long, requires = "promote", value_name = "F1")]
    pub min_f1: Option<f64>,
    /// Promotion gate: the lowest ROC AUC.
    #[arg(long, requires = "promote", value_name = "AUC")]
    pub min_auc: Option<f64>,
    /// Promotion gate: the lowest R².
    #[arg(long, requires = "promote", value_name = "R2")]
    pub min_r2: Option<f64>,
    /// Promotion gate: the highest RMSE.
    #[arg(long, requires = "promote", value_name = "RMSE")]
    pub max_rmse: Option<f64>,
    /// Promotion gate: the lowest accuracy.
    #[arg(long, requires = "promote", value_name = "ACCURACY")]
    pub min_accuracy: Option<f64>,
    /// The code's git revision, recorded with the run (containers have no git).
    #[arg(long, env = "GIT_COMMIT", value_name = "REV")]
    pub git_revision: Option<String>,
    /// Seconds one call to MLflow may take.
    #[arg(
        long,
        env = "MLFLOW_HTTP_REQUEST_TIMEOUT",
        default_value_t = 30,
        value_name = "SECONDS"
    )]
    pub mlflow_timeout: u64,
}

impl TrackingArgs {
    /// The service's gates with the thresholds given on the command line put in their place.
    pub fn gates(&self, defaults: &[Gate]) -> Vec<Gate> {
        let mut gates = defaults.to_vec();
        let given = [
            (GateKind::MinF1, self.min_f1),
            (GateKind::MinAuc, self.min_auc),
            (GateKind::MinR2, self.min_r2),
            (GateKind::MaxRmse, self.max_rmse),
            (GateKind::MinAccuracy, self.min_accuracy),
        ];
        for (kind, threshold) in given {
            let Some(threshold) = threshold else { continue };
            match gates.iter_mut().find(|g| g.kind == kind) {
                Some(gate) => gate.threshold = threshold,
                None => gates.push(Gate::new(kind, threshold)),
            }
        }
        gates
    }

    /// The MLflow server to use, if any: `None` with `--no-mlflow` or without a URI.
    fn tracking_uri(&self) -> Option<&str> {
        if self.no_mlflow {
            return None;
        }
        self.mlflow_uri.as_deref().filter(|u| !u.trim().is_empty())
    }
}

/// What to record, decided before training.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The experiment, named after the service.
    pub experiment: String,
    /// Where to register a new version, if at all.
    pub registered_model: Option<String>,
    /// Move `champion` to the new version when every gate passes.
    pub promote: bool,
    pub gates: Vec<Gate>,
    pub git_revision: Option<String>,
}

/// A checked connection to MLflow and what to record there.
#[derive(Debug)]
pub struct Tracking {
    client: Client,
    experiment_id: String,
    plan: Plan,
}

/// A model written aside but not yet served: exactly the bytes that will be served.
#[derive(Debug, Clone, Copy)]
pub struct StagedModel<'a> {
    /// `model.json`.
    pub model_json: &'a [u8],
    /// `metrics.json` with its `model_version`.
    pub metrics: &'a Value,
    /// The training data, fingerprinted into the run's tags.
    pub data_path: &'a Path,
}

/// What [`Tracking::record`] did.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub experiment_id: String,
    pub run_id: String,
    /// Where the run's artifacts are, e.g. `mlflow-artifacts:/1/<run_id>/artifacts`.
    pub artifact_uri: String,
    pub registration: Option<Registration>,
}

/// A new version in the model registry.
#[derive(Debug, Clone)]
pub struct Registration {
    pub model: String,
    pub version: String,
    /// Every gate, checked; empty without `--promote`.
    pub gates: Vec<GateCheck>,
    /// The alias moved to this version: `Some("champion")` once promoted.
    pub alias: Option<String>,
    /// The version `champion` pointed at before, when promotion was refused.
    pub previous_champion: Option<String>,
}

impl Outcome {
    /// Gates that failed, refusing promotion.
    pub fn failed_gates(&self) -> Vec<GateCheck> {
        self.registration
            .iter()
            .flat_map(|r| r.gates.iter().filter(|g| !g.passed).copied())
            .collect()
    }

    /// Adds what the service reports about its model's provenance to `metrics.json`:
    /// `mlflow_run_id`, `registry_model`, `registry_version` and `registry_alias`.
    pub fn record_in(&self, metrics: &mut Value) {
        metrics["mlflow_run_id"] = self.run_id.clone().into();
        metrics["mlflow_experiment_id"] = self.experiment_id.clone().into();
        if let Some(r) = &self.registration {
            metrics["registry_model"] = r.model.clone().into();
            metrics["registry_version"] = r.version.clone().into();
            metrics["registry_alias"] = r.alias.clone().into();
        }
    }

    /// An error naming every failed gate when promotion was refused.
    pub fn ensure_promoted(&self) -> Result<()> {
        let failed = self.failed_gates();
        let Some(r) = &self.registration else {
            return Ok(());
        };
        if failed.is_empty() {
            return Ok(());
        }
        let failed: Vec<String> = failed.iter().map(ToString::to_string).collect();
        let champion = match &r.previous_champion {
            Some(v) => format!("which stays on version {v}"),
            None => "which no version holds yet".to_owned(),
        };
        bail!(
            "promotion refused: {}; {} version {} is registered without the {CHAMPION_ALIAS} \
             alias, {champion}",
            failed.join(", "),
            r.model,
            r.version,
        )
    }
}

impl Tracking {
    /// Reads the `train` options for service `S`. When MLflow is on, checks the server answers
    /// and finds or creates the experiment, so that nothing is trained for a tracking that
    /// cannot happen. `None` when MLflow is off.
    pub fn from_args<S: Service>(args: &TrackingArgs) -> Result<Option<Self>> {
        let Some(uri) = args.tracking_uri() else {
            if (args.register_model || args.promote) && !args.no_mlflow {
                bail!(
                    "--register-model and --promote need an MLflow server: pass --mlflow-uri URL \
                     or set MLFLOW_TRACKING_URI"
                );
            }
            return Ok(None);
        };
        let options = ClientOptions {
            timeout: Duration::from_secs(args.mlflow_timeout.max(1)),
            ..ClientOptions::default()
        };
        let client = Client::new(uri, options)?;
        let promote = args.promote;
        let plan = Plan {
            experiment: S::MANIFEST.name.to_owned(),
            registered_model: (args.register_model || promote)
                .then(|| S::REGISTERED_MODEL.to_owned()),
            promote,
            gates: if promote {
                args.gates(S::PROMOTION_GATES)
            } else {
                Vec::new()
            },
            git_revision: args.git_revision.clone().filter(|r| !r.trim().is_empty()),
        };
        Self::connect(client, plan).map(Some)
    }

    /// Checks the server answers and finds or creates the plan's experiment.
    pub fn connect(client: Client, plan: Plan) -> Result<Self> {
        let uri = client.tracking_uri().to_owned();
        client.health().map_err(|e| {
            anyhow::anyhow!(
                "MLflow at {uri} is not answering ({e}): start it, point --mlflow-uri or \
                 MLFLOW_TRACKING_URI at it, or pass --no-mlflow to train without it"
            )
        })?;
        // MLflow 3's UI opens an experiment of this kind on its runs, not on GenAI traces.
        let kind = Tag::new("mlflow.experimentKind", "custom_model_development");
        let experiment_id = client
            .get_or_create_experiment(&plan.experiment, &[kind])
            .with_context(|| {
                format!(
                    "MLflow at {uri} answers, but its experiment {:?} cannot be used \
                     (pass --no-mlflow to train without it)",
                    plan.experiment
                )
            })?;
        Ok(Self {
            client,
            experiment_id,
            plan,
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn experiment_id(&self) -> &str {
        &self.experiment_id
    }

    /// Logs a run for `model`, uploads its files and, as planned, registers and promotes it.
    ///
    /// A gate that fails is not an error here: the outcome says so (see
    /// [`Outcome::ensure_promoted`]). Any other failure is, and the run is then marked FAILED
    /// when the server still answers.
    pub fn record(&self, model: &StagedModel) -> Result<Outcome> {
        let started = std::time::Instant::now();
        let metrics = model.metrics;
        for gate in &self.plan.gates {
            if metrics[gate.kind.metric()].as_f64().is_none() {
                bail!(
                    "{} does not apply to {}: its metrics have no {}",
                    gate.kind.flag(),
                    self.plan.experiment,
                    gate.kind.metric()
                );
            }
        }
        let gates: Vec<GateCheck> = self.plan.gates.iter().map(|g| g.check(metrics)).collect();
        let data_sha256 = crate::artifact::file_sha256(model.data_path)?;
        let local_version = metrics["model_version"].as_str().unwrap_or("unknown");
        let (params, logged_metrics) = params_and_metrics(metrics);
        let tags = self.run_tags(model, &data_sha256, local_version, &gates);

        let run_name = format!("{}-{local_version}", self.plan.experiment);
        let run = self
            .client
            .create_run(&self.experiment_id, &run_name, &[])
            .context("cannot start an MLflow run; nothing was recorded")?;
        tracing::info!(run_id = %run.run_id, experiment = %self.plan.experiment, "MLflow run started");

        let result = self.fill_run(
            &run.run_id,
            &run.artifact_uri,
            model,
            (&logged_metrics, &params, &tags),
            &gates,
        );
        let registration = match result {
            Ok(registration) => registration,
            Err(failure) => {
                let marked = match self.client.update_run(&run.run_id, RunStatus::Failed) {
                    Ok(_) => "the run is marked FAILED".to_owned(),
                    Err(e) => format!("the run could not be marked FAILED ({e})"),
                };
                return Err(failure.context(format!(
                    "MLflow run {} in experiment {:?} failed; {marked}",
                    run.run_id, self.plan.experiment
                )));
            }
        };
        // Everything asked for is done; a run left RUNNING is cosmetic and must not undo it.
        if let Err(e) = self.client.update_run(&run.run_id, RunStatus::Finished) {
            tracing::warn!(run_id = %run.run_id, error = %e, "cannot mark the MLflow run FINISHED");
        }
        tracing::info!(run_id = %run.run_id, seconds = started.elapsed().as_secs_f64(), "recorded in MLflow");
        Ok(Outcome {
            experiment_id: self.experiment_id.clone(),
            run_id: run.run_id,
            artifact_uri: run.artifact_uri,
            registration,
        })
    }

    fn run_tags(
        &self,
        model: &StagedModel,
        data_sha256: &str,
        local_version: &str,
        gates: &[GateCheck],
    ) -> Vec<Tag> {
        let mut tags = vec![
            Tag::new("service", &self.plan.experiment),
            Tag::new("mlflow.source.name", &self.plan.experiment),
            Tag::new("serving_version", crate::api::API_VERSION),
            Tag::new("model_version", local_version),
            Tag::new("data_sha256", data_sha256),
        ];
        if let Some(name) = model.data_path.file_name() {
            tags.push(Tag::new("data_file", name.to_string_lossy()));
        }
        if let Some(revision) = &self.plan.git_revision {
            // The tag MLflow's UI shows as the run's source version.
            tags.push(Tag::new("mlflow.source.git.commit", revision.trim()));
        }
        if self.plan.promote {
            tags.push(Tag::new("promotion_gates", gates_summary(gates)));
        }
        tags
    }

    /// Everything after the run exists: logs, uploads, registers, promotes.
    fn fill_run(
        &self,
        run_id: &str,
        artifact_uri: &str,
        model: &StagedModel,
        (metrics, params, tags): (&[Metric], &[Param], &[Tag]),
        gates: &[GateCheck],
    ) -> Result<Option<Registration>> {
        let client = &self.client;
        client.log_batch(run_id, metrics, params, tags)?;
        client.upload_artifact(artifact_uri, "model/model.json", model.model_json)?;
        let metrics_json = serde_json::to_vec_pretty(model.metrics)?;
        client.upload_artifact(artifact_uri, "model/metrics.json", &metrics_json)?;

        let Some(name) = &self.plan.registered_model else {
            return Ok(None);
        };
        client.create_registered_model(name)?;
        let mut version_tags = vec![Tag::new("service", &self.plan.experiment)];
        if self.plan.promote {
            version_tags.push(Tag::new("promotion_gates", gates_summary(gates)));
        }
        let source = format!("runs:/{run_id}/model");
        let version = client.create_model_version(name, &source, run_id, &version_tags)?;
        tracing::info!(model = %name, version = %version.version, "registered in MLflow");
        client
            .wait_until_ready(name, &version.version, READY_LIMIT)
            .with_context(|| {
                format!(
                    "{name} version {} was registered but is not ready; it was not promoted",
                    version.version
                )
            })?;

        let mut registration = Registration {
            model: name.clone(),
            version: version.version.clone(),
            gates: gates.to_vec(),
            alias: None,
            previous_champion: None,
        };
        if !self.plan.promote {
            return Ok(Some(registration));
        }
        if gates.iter().all(|g| g.passed) {
            client
                .set_registered_model_alias(name, CHAMPION_ALIAS, &version.version)
                .with_context(|| {
                    format!(
                        "{name} version {} is registered and passed every gate, but the \
                         {CHAMPION_ALIAS} alias could not be moved to it",
                        version.version
                    )
                })?;
            tracing::info!(model = %name, version = %version.version, alias = CHAMPION_ALIAS, "promoted");
            registration.alias = Some(CHAMPION_ALIAS.to_owned());
        } else {
            registration.previous_champion = client
                .get_registered_model(name)?
                .and_then(|m| m.alias(CHAMPION_ALIAS).map(str::to_owned));
        }
        Ok(Some(registration))
    }
}

fn gates_summary(gates: &[GateCheck]) -> String {
    if gates.is_empty() {
        return "none".to_owned();
    }
    gates
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Fields of `metrics.json` that are neither params nor metrics: they are tags, or belong to
/// the registry.
const NOT_LOGGED: &[&str] = &[
    "service",
    "model_version",
    "mlflow_run_id",
    "mlflow_experiment_id",
    "registry_model",
    "registry_version",
    "registry_alias",
];

/// Splits `metrics.json` into MLflow params and metrics (see the module documentation).
pub fn params_and_metrics(metrics: &Value) -> (Vec<Param>, Vec<Metric>) {
    let timestamp = mlflow_client::now_millis();
    let mut params = Vec::new();
    let mut logged = Vec::new();
    let Some(fields) = metrics.as_object() else {
        return (params, logged);
    };
    for (key, value) in fields {
        if NOT_LOGGED.contains(&key.as_str()) {
            continue;
        }
        match (key.as_str(), value) {
            // The hyperparameters, under their own names.
            ("params", Value::Object(hyper)) => {
                for (name, v) in hyper {
                    flatten(name, v, &mut |k, v| {
                        params.push(Param::new(k, param_text(v)))
                    });
                }
            }
            ("seed", v) => params.push(Param::new("seed", param_text(v))),
            (key, v) => flatten(key, v, &mut |k, v| match v.as_f64() {
                Some(number) if v.is_number() => {
                    if k == "rows" {
                        params.push(Param::new(k, param_text(v)));
                    }
                    logged.push(Metric {
                        key: k.to_owned(),
                        value: number,
                        timestamp,
                        step: 0,
                    });
                }
                _ => params.push(Param::new(k, param_text(v))),
            }),
        }
    }
    (params, logged)
}

/// Calls `leaf` for every non-object value under `value`, with dotted keys; nulls are skipped.
fn flatten(key: &str, value: &Value, leaf: &mut dyn FnMut(&str, &Value)) {
    match value {
        Value::Object(fields) => {
            for (k, v) in fields {
                flatten(&format!("{key}.{k}"), v, leaf);
            }
        }
        Value::Null => {}
        v => leaf(key, v),
    }
}

fn param_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metrics_json_splits_into_params_and_metrics() {
        let metrics = json!({
            "model": "gradient boosting (forust-ml)",
            "params": {"iterations": 200, "learning_rate": 0.1},
            "rows": 10000,
            "test_rows": 2000,
            "f1": 0.57,
            "price_band": [500.0, 100000.0],
            "baseline": {"strategy": "median price", "r2": -0.09},
            "service": "bankchurn",
            "seed": 42,
            "data_path": "data/Churn_Modelling.csv",
            "model_version": "3f2a9c1b0d4e",
            "registry_version": "2",
            "missing": null,
        });
        let (params, logged) = params_and_metrics(&metrics);
        let params: Vec<(&str, &str)> = params
            .iter()
            .map(|p| (p.key.as_str(), p.value.as_str()))
            .collect();
        let logged: Vec<(&str, f64)> = logged.iter().map(|m| (m.key.as_str(), m.value)).collect();
        for expected in [
            ("iterations", "200"),
            ("learning_rate", "0.1"),
            ("seed", "42"),
            ("rows", "10000"),
            ("model", "gradient boosting (forust-ml)"),
            ("price_band", "[500.0,100000.0]"),
            ("baseline.strategy", "median price"),
            ("data_path", "data/Churn_Modelling.csv"),
        ] {
            assert!(params.contains(&expected), "{expected:?} not in {params:?}");
        }
        for expected in [
            ("rows", 10000.0),
            ("test_rows", 2000.0),
            ("f1", 0.57),
            ("baseline.r2", -0.09),
        ] {
            assert!(logged.contains(&expected), "{expected:?} not in {logged:?}");
        }
        assert_eq!(params.len(), 8, "{params:?}");
        assert_eq!(logged.len(), 4, "{logged:?}");
    }

    #[test]
    fn command_line_thresholds_replace_the_service_defaults_or_add_gates() {
        let defaults = [
            Gate::new(GateKind::MinF1, 0.5),
            Gate::new(GateKind::MinAuc, 0.75),
        ];
        let args = TrackingArgs {
            min_auc: Some(0.99),
            min_accuracy: Some(0.8),
            ..TrackingArgs::default()
        };
        assert_eq!(
            args.gates(&defaults),
            [
                Gate::new(GateKind::MinF1, 0.5),
                Gate::new(GateKind::MinAuc, 0.99),
                Gate::new(GateKind::MinAccuracy, 0.8),
            ]
        );
    }

    #[test]
    fn a_refused_promotion_names_the_gate_and_where_the_champion_stays() {
        let metrics = json!({"f1": 0.57, "roc_auc": 0.83});
        let outcome = Outcome {
            experiment_id: "1".into(),
            run_id: "abc".into(),
            artifact_uri: "mlflow-artifacts:/1/abc/artifacts".into(),
            registration: Some(Registration {
                model: "BankChurn-Classifier".into(),
                version: "3".into(),
                gates: vec![
                    Gate::new(GateKind::MinF1, 0.5).check(&metrics),
                    Gate::new(GateKind::MinAuc, 0.99).check(&metrics),
                ],
                alias: None,
                previous_champion: Some("2".into()),
            }),
        };
        let err = outcome.ensure_promoted().unwrap_err().to_string();
        assert_eq!(
            err,
            "promotion refused: --min-auc 0.99: roc_auc 0.8300 failed; BankChurn-Classifier \
             version 3 is registered without the champion alias, which stays on version 2"
        );
        let mut local = json!({"f1": 0.57});
        outcome.record_in(&mut local);
        assert_eq!(local["registry_version"], "3");
        assert_eq!(local["registry_alias"], Value::Null);
        assert_eq!(local["mlflow_run_id"], "abc");
    }

    #[test]
    fn no_mlflow_wins_over_a_tracking_uri_and_a_blank_uri_is_none() {
        let uri = |mlflow_uri: &str, no_mlflow| {
            TrackingArgs {
                mlflow_uri: Some(mlflow_uri.into()),
                no_mlflow,
                ..TrackingArgs::default()
            }
            .tracking_uri()
            .map(str::to_owned)
        };
        assert_eq!(
            uri("http://127.0.0.1:5000", false).as_deref(),
            Some("http://127.0.0.1:5000")
        );
        assert_eq!(uri("http://127.0.0.1:5000", true), None);
        assert_eq!(uri("  ", false), None);
    }
}

//! `cargo xtask retrain SERVICE`: the runbook's retraining step. Train where the service runs
//! (a one-off container of its own image on docker, a process on the local runtime), track
//! and register the run in MLflow, then swap the new model into the running service with no
//! downtime (SIGHUP: it validates the model and keeps serving the old one if it refuses it).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::ctx::Ctx;
use crate::runtime::training::{self, Tracking};
use crate::runtime::Runtime;
use crate::stack::Kind;
use crate::util::drift::Report;
use crate::util::{http, table};

/// Retrain an API's model, register it, and swap it into the running service.
///
/// Arguments after `--` go to the service's `train` as they are, e.g. gates:
/// `cargo xtask retrain bankchurn --promote -- --min-f1 0.6`.
#[derive(clap::Args, Debug)]
pub struct Retrain {
    /// The API, as `cargo xtask status` lists it.
    pub service: String,
    /// The CSV to train on [default: the service's dataset in the stack's data/ folder].
    #[arg(long, value_name = "CSV")]
    pub data_path: Option<PathBuf>,
    /// Register the model as a new version in MLflow's model registry.
    #[arg(long)]
    pub register_model: bool,
    /// Register it and move the `champion` alias to it when every promotion gate passes;
    /// a failed gate keeps the served model and exits non-zero.
    #[arg(long)]
    pub promote: bool,
    /// Seed of the train/test split and of the booster: another seed gives another model.
    #[arg(long, default_value_t = training::DEFAULT_SEED)]
    pub seed: u64,
    /// Train without MLflow (nothing tracked, nothing registered).
    #[arg(long, conflicts_with_all = ["register_model", "promote"])]
    pub no_mlflow: bool,
    /// Retrain only when the service's `/drift` says `drifted` (exit 0 without training
    /// otherwise); the report is printed either way.
    #[arg(long)]
    pub if_drifted: bool,
    /// The API's base URL when it is not this machine's stack (a deployed API): where
    /// `--if-drifted` asks for drift, and whose `/health` names the champion it serves.
    #[arg(long, value_name = "URL")]
    pub api_url: Option<String>,
    /// Track in this MLflow server instead of the stack's (e.g. a shared tracking server on
    /// the local runtime; the docker runtime trains inside the stack's network).
    #[arg(long, value_name = "URL", conflicts_with = "no_mlflow")]
    pub tracking_uri: Option<String>,
    /// Seconds the running service gets to load the new model.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub timeout: u64,
    /// Passed to `train` as they are.
    #[arg(last = true, value_name = "TRAIN ARGS")]
    pub train_args: Vec<String>,
}

/// Why `path` (shown as `shown`) cannot be the training data, if it cannot: missing, or not a
/// regular file (a folder, a device, a pipe), said as what it is.
pub fn data_file_problem(path: &std::path::Path, shown: &str) -> Option<String> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(format!(
            "no data file at {shown}: pass --data-path, or run `cargo xtask demo` to generate the synthetic one"
        )),
        Err(e) => Some(format!("cannot read the data file {shown}: {e}")),
        Ok(meta) if meta.is_file() => None,
        Ok(meta) if meta.is_dir() => Some(format!(
            "{shown} is a folder, not a data file: pass the CSV file itself (--data-path {shown}/FILE.csv)"
        )),
        Ok(meta) => Some(format!(
            "{shown} is {}, not a data file: pass a CSV file",
            crate::util::archive::describe_type(&meta.file_type())
        )),
    }
}

impl Retrain {
    pub fn run(self, ctx: &Ctx, runtime: &mut dyn Runtime) -> Result<()> {
        let service = ctx.stack.get(&self.service)?;
        if service.kind != Kind::Api {
            bail!("{} has no model to retrain; the APIs do", service.name);
        }
        let data = self
            .data_path
            .clone()
            .unwrap_or_else(|| ctx.data_path(service));
        if !ctx.dry_run() {
            if let Some(problem) = data_file_problem(&data, &ctx.show(&data)) {
                bail!("{problem}");
            }
        }
        if self.if_drifted && !self.drifted(ctx, service)? {
            return Ok(());
        }
        let tracking = self.tracking(ctx, runtime)?;
        let before = training::served_metrics(ctx, service);
        let champion = self.champion(ctx, service, &tracking, before.as_ref());
        ctx.reporter
            .run_task(
                format!("train {} on {}", service.name, ctx.show(&data)),
                |_| runtime.train(ctx, service, &data, self.seed, &tracking, &self.train_args),
            )
            .map_err(|e| {
                e.context(format!(
                    "retraining {} failed; the served model and the registry are as they were",
                    service.name
                ))
            })?;
        if ctx.dry_run() {
            ctx.runner.plan(format!(
                "send SIGHUP to {} and wait until its /health serves the new version",
                service.name
            ));
            return Ok(());
        }
        let after = training::served_metrics(ctx, service)
            .context("training finished but wrote no metrics.json")?;
        let comparison = compare(&after, champion.as_ref());
        println!("{}", table::text(&COMPARISON, &comparison));
        ctx.reporter.summary(&format!(
            "## {}: the candidate against the champion\n\n{}\n{}\n",
            service.name,
            table::markdown(&COMPARISON, &comparison),
            promotion(&after)
        ));
        let version = after["model_version"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let asked_at = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        if !runtime.reload(ctx, service)? {
            ctx.reporter.info(format!(
                "{} is not running: it serves model {version} from its next start",
                service.name
            ));
            return Ok(());
        }
        training::wait_for_model(ctx, service, &version, &asked_at, self.timeout)?;
        println!("{}", summary(&service.name, before.as_ref(), &after));
        Ok(())
    }

    /// The champion's metrics before training: those of the registry version the API serves
    /// (its `/health` says which), from MLflow; else the served model's own.
    fn champion(
        &self,
        ctx: &Ctx,
        service: &crate::stack::Service,
        tracking: &Tracking,
        served: Option<&Value>,
    ) -> Option<Value> {
        if ctx.dry_run() {
            return None;
        }
        let health_url = match &self.api_url {
            Some(base) => format!("{}{}", base.trim_end_matches('/'), service.health_path),
            None => ctx.health_url(service),
        };
        let health = http::get(&health_url, Duration::from_secs(5))
            .ok()
            .and_then(|a| a.json());
        let registered = health.as_ref().and_then(|h| {
            Some((
                h["registry_model"].as_str()?,
                h["registry_version"].as_str()?,
            ))
        });
        if let (Some((model, version)), Tracking::On { uri, .. }) = (registered, tracking) {
            match training::registered_metrics(uri, model, version) {
                Ok(metrics) => return Some(metrics),
                Err(e) => ctx.reporter.warn(format!("{e:#}")),
            }
        }
        served.cloned()
    }

    /// Whether the service's `/drift` says it drifted; prints its report.
    fn drifted(&self, ctx: &Ctx, service: &crate::stack::Service) -> Result<bool> {
        let url = match &self.api_url {
            Some(base) => format!("{}/drift", base.trim_end_matches('/')),
            None => ctx.url(service, "/drift"),
        };
        ctx.runner
            .plan(format!("GET {url}: retrain only if it says `drifted`"));
        if ctx.dry_run() {
            return Ok(true);
        }
        let report = Report::fetch(&service.name, &url, None)
            .context("--if-drifted needs the service's drift report")?;
        println!("{}\n", report.text());
        ctx.reporter
            .summary(&format!("## Data drift\n\n{}\n", report.markdown()));
        if !report.drifted() {
            ctx.reporter.info(format!(
                "{} has not drifted ({}): nothing retrained",
                service.name,
                report.verdict()
            ));
        }
        Ok(report.drifted())
    }

    /// MLflow tracks the run whenever it answers; registering needs it.
    fn tracking(&self, ctx: &Ctx, runtime: &dyn Runtime) -> Result<Tracking> {
        if self.no_mlflow {
            return Ok(Tracking::Off);
        }
        if let Some(uri) = &self.tracking_uri {
            let uri = uri.trim_end_matches('/');
            let health = format!("{uri}/health");
            if !ctx.dry_run() && !http::healthy(&health, Duration::from_secs(10)) {
                bail!("MLflow does not answer at {health}: check --tracking-uri");
            }
            return Ok(Tracking::On {
                uri: uri.to_owned(),
                register: self.register_model,
                promote: self.promote,
            });
        }
        let mlflow = ctx.stack.mlflow();
        let answers = ctx.dry_run()
            || runtime.state(ctx, mlflow)?.running
                && http::healthy(&ctx.health_url(mlflow), Duration::from_secs(3));
        if answers {
            return Ok(Tracking::On {
                uri: ctx.url(mlflow, ""),
                register: self.register_model,
                promote: self.promote,
            });
        }
        if self.register_model || self.promote {
            bail!(
                "MLflow does not answer at {}: start it (`cargo xtask up`) to register the model",
                ctx.health_url(mlflow)
            );
        }
        ctx.reporter.info(format!(
            "MLflow does not answer at {}: training without tracking",
            ctx.health_url(mlflow)
        ));
        Ok(Tracking::Off)
    }
}

const COMPARISON: [&str; 3] = ["metric", "candidate", "champion"];

/// The candidate's held-out metrics beside the champion's, the numbers both have or the
/// candidate has.
fn compare(candidate: &Value, champion: Option<&Value>) -> Vec<Vec<String>> {
    let Some(metrics) = candidate.as_object() else {
        return Vec::new();
    };
    metrics
        .iter()
        .filter_map(|(key, value)| {
            let value = value.as_f64()?;
            if matches!(key.as_str(), "seed" | "training_seconds" | "rows")
                || key.ends_with("_rows")
            {
                return None;
            }
            let theirs = champion
                .and_then(|c| c[key].as_f64())
                .map_or_else(|| "-".to_owned(), |x| format!("{x:.4}"));
            Some(vec![key.clone(), format!("{value:.4}"), theirs])
        })
        .collect()
}

/// Whether the candidate became the champion, as its metrics record it.
fn promotion(after: &Value) -> String {
    match (
        after["registry_model"].as_str(),
        after["registry_version"].as_str(),
        after["registry_alias"].as_str(),
    ) {
        (Some(model), Some(version), Some(alias)) => {
            format!("Promoted: {model} v{version} holds `{alias}` and is served.")
        }
        (Some(model), Some(version), None) => {
            format!("Registered {model} v{version}, not promoted.")
        }
        _ => "Not registered.".to_owned(),
    }
}

/// `bankchurn: model 3f2a… -> 9c1e… (BankChurn-Classifier v3 @champion)`.
fn summary(name: &str, before: Option<&Value>, after: &Value) -> String {
    let version = |m: &Value| m["model_version"].as_str().unwrap_or("?").to_owned();
    let old = before.map_or_else(|| "none".to_owned(), version);
    let registry = match (
        after["registry_model"].as_str(),
        after["registry_version"].as_str(),
    ) {
        (Some(model), Some(v)) => {
            let alias = after["registry_alias"]
                .as_str()
                .map(|a| format!(" @{a}"))
                .unwrap_or_default();
            format!(" ({model} v{v}{alias})")
        }
        _ => String::new(),
    };
    format!(
        "{name}: serving model {} (was {old}){registry}",
        version(after)
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::data_file_problem;

    #[test]
    fn a_folder_or_a_device_is_named_for_what_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let said = |p: &std::path::Path| data_file_problem(p, &p.display().to_string());
        let folder = said(dir.path()).unwrap();
        assert!(folder.contains("is a folder, not a data file"), "{folder}");
        let device = said(std::path::Path::new("/dev/zero")).unwrap();
        assert!(
            device.contains("is a character device, not a data file"),
            "{device}"
        );
        let missing = said(&dir.path().join("absent.csv")).unwrap();
        assert!(missing.starts_with("no data file at"), "{missing}");
        let csv = dir.path().join("data.csv");
        std::fs::write(&csv, "a,b\n1,2\n").unwrap();
        assert_eq!(said(&csv), None);
    }

    #[test]
    fn the_summary_names_old_and_new_and_the_registry() {
        let after = json!({"model_version": "9c1e", "registry_model": "M", "registry_version": "3", "registry_alias": "champion"});
        assert_eq!(
            super::summary("api", Some(&json!({"model_version": "3f2a"})), &after),
            "api: serving model 9c1e (was 3f2a) (M v3 @champion)"
        );
        assert_eq!(
            super::summary("api", None, &json!({"model_version": "9c1e"})),
            "api: serving model 9c1e (was none)"
        );
    }
}

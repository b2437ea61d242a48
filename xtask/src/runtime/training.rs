//! Training a service's model with the service's own `train` (on the host, or in a one-off
//! container of its image on the docker runtime), tracked in MLflow when it runs, and reading
//! back what a model directory serves.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::build::{binaries, images};
use crate::ctx::Ctx;
use crate::runner::Step;
use crate::stack::Service;
use crate::util::{http, poll};

/// The seed the stack's models are trained with unless told otherwise.
pub const DEFAULT_SEED: u64 = 42;

/// How a training run reaches MLflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tracking {
    /// `--no-mlflow`, even when the caller's environment sets `MLFLOW_TRACKING_URI`.
    Off,
    /// Logged as a run; with `register` a new registry version, with `promote` the
    /// `champion` alias when the gates pass.
    On {
        uri: String,
        register: bool,
        promote: bool,
    },
}

/// The arguments of `SERVICE train` (paths as the training process sees them), followed by
/// `extra` (e.g. gate flags).
pub fn train_args(
    data: &Path,
    model_dir: &Path,
    seed: u64,
    tracking: &Tracking,
    extra: &[String],
) -> Vec<String> {
    let mut args = vec![
        "train".to_owned(),
        "--seed".to_owned(),
        seed.to_string(),
        "--data-path".to_owned(),
        data.to_string_lossy().into_owned(),
        "--model-dir".to_owned(),
        model_dir.to_string_lossy().into_owned(),
    ];
    match tracking {
        Tracking::Off => args.push("--no-mlflow".to_owned()),
        Tracking::On {
            uri,
            register,
            promote,
        } => {
            args.extend(["--mlflow-uri".to_owned(), uri.clone()]);
            if *promote {
                args.push("--promote".to_owned());
            } else if *register {
                args.push("--register-model".to_owned());
            }
        }
    }
    args.extend(extra.iter().cloned());
    args
}

/// The checkout's commit, recorded with each training run (containers have no git).
pub fn git_commit(ctx: &Ctx) -> String {
    images::commit(ctx)
}

/// `SERVICE generate-data` on the host: the synthetic dataset, with the default seed.
/// Generates `service`'s default dataset in `dir` and trains a model on it there, untracked,
/// with the default seed: a model to measure or test against, not one to serve in the stack.
/// The data file and the model directory.
pub fn train_throwaway(ctx: &Ctx, service: &Service, dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let data = dir.join("data.csv");
    let models = dir.join("model");
    ctx.runner.run(&generate_data_step(ctx, service, &data))?;
    ctx.runner.run(&host_train_step(
        ctx,
        service,
        &data,
        &models,
        DEFAULT_SEED,
        &Tracking::Off,
        &[],
    ))?;
    Ok((data, models))
}

pub fn generate_data_step(ctx: &Ctx, service: &Service, out: &Path) -> Step {
    Step::new(binaries::path(ctx, service).to_string_lossy())
        .args([
            "generate-data",
            "--seed",
            &DEFAULT_SEED.to_string(),
            "--out",
        ])
        .arg(out)
}

/// `SERVICE train` on the host, with the commit it records.
pub fn host_train_step(
    ctx: &Ctx,
    service: &Service,
    data: &Path,
    model_dir: &Path,
    seed: u64,
    tracking: &Tracking,
    extra: &[String],
) -> Step {
    Step::new(binaries::path(ctx, service).to_string_lossy())
        .args(train_args(data, model_dir, seed, tracking, extra))
        .env("GIT_COMMIT", git_commit(ctx))
}

/// The served version's `metrics.json`, if a model was trained.
pub fn served_metrics(ctx: &Ctx, service: &Service) -> Option<Value> {
    let bytes = std::fs::read(ctx.model_file(service).with_file_name("metrics.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Whether MLflow at `uri` still holds the registry version the served model's metrics name
/// (it does not after `mlflow reset`, or when the model was trained without MLflow).
pub fn is_registered(uri: &str, metrics: &Value) -> Result<bool> {
    let (Some(model), Some(version)) = (
        metrics["registry_model"].as_str(),
        metrics["registry_version"].as_str(),
    ) else {
        return Ok(false);
    };
    let client = mlflow_at(uri)?;
    match client.get_model_version(model, version) {
        Ok(_) => Ok(true),
        Err(e) if e.error_code() == Some("RESOURCE_DOES_NOT_EXIST") => Ok(false),
        Err(e) => {
            Err(e).with_context(|| format!("cannot ask MLflow at {uri} about {model} v{version}"))
        }
    }
}

/// A client of MLflow at `uri` that waits 10 s at most for an answer.
fn mlflow_at(uri: &str) -> Result<mlflow_client::Client> {
    Ok(mlflow_client::Client::new(
        uri,
        mlflow_client::ClientOptions {
            timeout: Duration::from_secs(10),
            ..Default::default()
        },
    )?)
}

/// The metrics MLflow at `uri` holds for the run of `model` version `version` in its
/// registry (e.g. the champion a running API serves, as its `/health` names it).
pub fn registered_metrics(uri: &str, model: &str, version: &str) -> Result<Value> {
    let client = mlflow_at(uri)?;
    let found = client
        .get_model_version(model, version)
        .and_then(|v| client.get_run(&v.run_id))
        .with_context(|| format!("cannot read {model} v{version}'s run from MLflow at {uri}"))?;
    Ok(found
        .data
        .metrics
        .iter()
        .map(|m| (m.key.clone(), Value::from(m.value)))
        .collect::<serde_json::Map<_, _>>()
        .into())
}

/// Waits until the service's last reload, since `asked_at` (RFC 3339 with milliseconds,
/// as the service writes it), serves `version`, or refused the new model.
pub fn wait_for_model(
    ctx: &Ctx,
    service: &Service,
    version: &str,
    asked_at: &str,
    timeout: u64,
) -> Result<()> {
    let url = ctx.health_url(service);
    let outcome = poll::until(
        Duration::from_secs(timeout),
        Duration::from_millis(50),
        || {
            let health = http::get(&url, Duration::from_secs(2)).ok()?.json()?;
            let reload = &health["last_reload"];
            if reload["at"].as_str().is_none() && health["model_version"] == version {
                // A process started since (a swarm replaces its tasks) loaded it at start.
                return Some(Ok(()));
            }
            if reload["at"].as_str().is_none_or(|at| at < asked_at) {
                return None; // the signal has not been handled yet
            }
            match reload["status"].as_str() {
                Some("loaded" | "unchanged") if health["model_version"] == version => Some(Ok(())),
                Some("refused" | "absent") => Some(Err(reload["reason"]
                    .as_str()
                    .unwrap_or("no reason given")
                    .to_owned())),
                _ => None,
            }
        },
    );
    match outcome {
        Some(Ok(())) => Ok(()),
        Some(Err(reason)) => bail!(
            "{} refused the new model {version} and keeps serving the old one: {reason}",
            service.name
        ),
        None => bail!(
            "{} did not load model {version} within {timeout}s; see `cargo xtask logs {}`",
            service.name,
            service.name
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracking_decides_the_mlflow_flags() {
        let args = |t: &Tracking| train_args(Path::new("d.csv"), Path::new("m"), 7, t, &[]);
        assert!(args(&Tracking::Off).ends_with(&["--no-mlflow".to_owned()]));
        let promote = Tracking::On {
            uri: "http://mlflow:5000".into(),
            register: true,
            promote: true,
        };
        assert_eq!(
            args(&promote)[7..],
            ["--mlflow-uri", "http://mlflow:5000", "--promote"]
        );
        let extra = train_args(
            Path::new("d.csv"),
            Path::new("m"),
            7,
            &Tracking::Off,
            &["--min-f1".into(), "0.6".into()],
        );
        assert!(extra.ends_with(&["--min-f1".to_owned(), "0.6".to_owned()]));
    }
}

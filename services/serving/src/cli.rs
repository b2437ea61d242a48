//! The command line every service binary shares: `generate-data`, `train`, `serve`,
//! `healthcheck`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::artifact::{self, Artifact, FORMAT_VERSION};
use crate::tracking::{StagedModel, Tracking, TrackingArgs};
use crate::{http, Service};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a synthetic CSV with exactly the public dataset's columns, deterministic from the seed.
    GenerateData {
        /// Rows to write [default: the size of the public file]
        #[arg(long)]
        rows: Option<usize>,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Where to write the CSV (parent folders are created).
        #[arg(long)]
        out: PathBuf,
    },
    /// Train on a CSV (synthetic or the real public file), evaluate on a held-out 20%, and
    /// write model.json and metrics.json atomically into the model directory.
    Train {
        #[arg(long)]
        data_path: PathBuf,
        #[arg(long, env = "MODEL_DIR")]
        model_dir: PathBuf,
        /// Seed of the train/test split and of the booster.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[command(flatten)]
        tracking: TrackingArgs,
    },
    /// Serve the HTTP API. Starts and answers even without a model (health then says 503).
    Serve {
        #[arg(long, env = "PORT", default_value_t = 8000)]
        port: u16,
        #[arg(long, env = "HOST", default_value = "0.0.0.0")]
        host: std::net::IpAddr,
        #[arg(long, env = "MODEL_DIR", default_value = "models")]
        model_dir: PathBuf,
    },
    /// Exit 0 only if the service at URL answers healthy (the container HEALTHCHECK).
    Healthcheck {
        #[arg(long, default_value = "http://127.0.0.1:8000/health")]
        url: String,
        /// Seconds to wait for an answer.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
}

/// The `main` of every service binary.
pub fn main<S: Service>() -> ExitCode {
    crate::telemetry::init();
    let command = Cli::command()
        .name(S::NAME)
        .about(format!("{}: {}", S::TITLE, S::DESCRIPTION))
        .version(crate::API_VERSION)
        .mut_subcommand("train", |train| {
            train.mut_arg("promote", |a| {
                a.help(crate::tracking::promote_help(S::PROMOTION_GATES))
            })
        });
    let cli = match Cli::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match run::<S>(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run<S: Service>(command: Command) -> Result<()> {
    match command {
        Command::GenerateData { rows, seed, out } => {
            generate::<S>(rows.unwrap_or(S::DEFAULT_ROWS), seed, &out)
        }
        Command::Train {
            data_path,
            model_dir,
            seed,
            tracking,
        } => train::<S>(&data_path, &model_dir, seed, &tracking),
        Command::Serve {
            port,
            host,
            model_dir,
        } => serve::<S>(SocketAddr::new(host, port), &model_dir),
        Command::Healthcheck { url, timeout } => {
            crate::healthcheck::check(&url, Duration::from_secs(timeout))
        }
    }
}

fn generate<S: Service>(rows: usize, seed: u64, out: &Path) -> Result<()> {
    anyhow::ensure!(rows > 0, "--rows must be at least 1");
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    artifact::set_readable(tmp.as_file())?;
    {
        let mut writer = std::io::BufWriter::new(tmp.as_file_mut());
        S::generate_data(rows, seed, &mut writer)?;
        std::io::Write::flush(&mut writer)?;
    }
    tmp.persist(out)
        .with_context(|| format!("cannot write {}", out.display()))?;
    tracing::info!(rows, seed, out = %out.display(), "generated synthetic data");
    Ok(())
}

fn train<S: Service>(
    data: &Path,
    model_dir: &Path,
    seed: u64,
    tracking: &TrackingArgs,
) -> Result<()> {
    // Before training, so that an absent MLflow fails fast.
    let tracking = Tracking::from_args::<S>(tracking)?;
    let started = Instant::now();
    let (model, mut metrics) = S::train(data, seed).with_context(|| {
        format!(
            "training {} on {} failed; the previous model is untouched",
            S::NAME,
            data.display()
        )
    })?;
    metrics["service"] = S::NAME.into();
    metrics["seed"] = seed.into();
    metrics["data_path"] = data.display().to_string().into();
    metrics["training_seconds"] = started.elapsed().as_secs_f64().into();
    let artifact = Artifact {
        service: S::NAME.to_owned(),
        format_version: FORMAT_VERSION,
        seed,
        model,
    };
    // MLflow: recorded before the model is saved (saving is what activates it), so a failed
    // tracking or a refused promotion leaves the served model as it was.
    if let Some(tracking) = &tracking {
        let unchanged = || format!("the model in {} is unchanged", model_dir.display());
        let model_json = serde_json::to_vec(&artifact)?;
        metrics["model_version"] = artifact::fingerprint(&model_json).into();
        let staged = StagedModel {
            model_json: &model_json,
            metrics: &metrics,
            data_path: data,
        };
        let outcome = tracking
            .record(&staged)
            .with_context(|| format!("tracking in MLflow failed; {}", unchanged()))?;
        outcome
            .ensure_promoted()
            .map_err(|e| anyhow::anyhow!("{e}; {}", unchanged()))?;
        outcome.record_in(&mut metrics);
    }
    let version = artifact::save(model_dir, &artifact, &metrics)?;
    metrics["model_version"] = version.clone().into();
    tracing::info!(model_version = %version, model_dir = %model_dir.display(), seconds = started.elapsed().as_secs_f64(), "trained");
    println!("{}", serde_json::to_string_pretty(&metrics)?);
    Ok(())
}

fn serve<S: Service>(addr: SocketAddr, model_dir: &Path) -> Result<()> {
    let started = Instant::now();
    let model = artifact::load::<S::Model>(model_dir, S::NAME)?;
    match &model {
        Some(m) => {
            tracing::info!(model_version = %m.version, path = %m.path.display(), millis = started.elapsed().as_millis() as u64, "model loaded")
        }
        None => {
            tracing::warn!(model_dir = %model_dir.display(), "no model found: serving, but /health answers 503 until one is trained and the service restarted")
        }
    }
    let app = http::router(http::AppState::<S>::new(model));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!(
                "cannot listen on {addr}: is another process using port {}?",
                addr.port()
            )
        })?;
        tracing::info!(%addr, service = S::NAME, "listening");
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("server error")?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// Resolves on SIGTERM (docker stop) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}

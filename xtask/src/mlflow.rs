//! The MLflow tracking server on the host: a Python virtual environment the toolkit creates
//! under its cache on first use, with the version pinned in `services/mlflow/service.toml`.

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::ctx::Ctx;
use crate::runner::Step;
use crate::stack::Service;

/// Marks a virtual environment whose install finished: a half-installed one is rebuilt.
const COMPLETE_MARKER: &str = ".xtask-complete";

pub fn version(ctx: &Ctx) -> String {
    let mlflow = ctx.stack.mlflow();
    mlflow
        .mlflow
        .as_ref()
        .map(|m| m.version.clone())
        .unwrap_or_default()
}

pub fn venv_dir(ctx: &Ctx) -> PathBuf {
    ctx.cache_dir.join(format!("mlflow-{}", version(ctx)))
}

pub fn executable(ctx: &Ctx) -> PathBuf {
    venv_dir(ctx).join("bin").join("mlflow")
}

/// The Python interpreter to build the environment with.
pub fn python() -> Option<PathBuf> {
    which::which("python3").ok()
}

/// Checks Python can make virtual environments; explains what to do if not.
pub fn check_python(ctx: &Ctx) -> Result<String> {
    let missing = "Python 3 is needed to run MLflow on the local runtime: install python3 \
                   (with its venv module), or pass --no-mlflow to run the APIs without it";
    let Some(python) = python() else {
        bail!("{missing}")
    };
    let output = ctx.runner.query(
        &Step::new(python.to_string_lossy())
            .args(["-c", "import sys, venv; print(sys.version.split()[0])"]),
    )?;
    if !output.status.success() {
        bail!("{missing} ({} cannot import venv)", python.display());
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

pub fn is_installed(ctx: &Ctx) -> bool {
    venv_dir(ctx).join(COMPLETE_MARKER).is_file()
}

/// Creates the virtual environment and installs MLflow into it, unless already done.
pub fn ensure_installed(ctx: &Ctx) -> Result<()> {
    if is_installed(ctx) {
        return Ok(());
    }
    if !ctx.dry_run() {
        check_python(ctx)?;
    }
    let dir = venv_dir(ctx);
    let task = ctx.reporter.task(format!(
        "install MLflow {} into {} (first run only, about a minute)",
        version(ctx),
        ctx.show(&dir)
    ));
    let result = (|| {
        if dir.exists() && !ctx.dry_run() {
            std::fs::remove_dir_all(&dir)?;
        }
        ctx.runner
            .run(&Step::new("python3").args(["-m", "venv"]).arg(&dir))?;
        task.set_message("pip install");
        ctx.runner.run(
            &Step::new(dir.join("bin/pip").to_string_lossy())
                .args([
                    "install",
                    "--disable-pip-version-check",
                    "--no-input",
                    "--progress-bar",
                    "off",
                ])
                .arg(format!("mlflow=={}", version(ctx))),
        )?;
        ctx.runner
            .plan(format!("touch {}", dir.join(COMPLETE_MARKER).display()));
        if !ctx.dry_run() {
            std::fs::write(dir.join(COMPLETE_MARKER), version(ctx))?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => task.done(""),
        Err(ref e) => task.fail(format!("{e:#}")),
    }
    result
}

/// The server command: SQLite in `mlruns/mlflow.db`, artifacts under `mlruns/artifacts`, one
/// worker and no job runner (measured: 5 s and 0.5 GB instead of 9-16 s and 1.9 GB).
pub fn server_step(ctx: &Ctx, service: &Service) -> Step {
    let mlruns = ctx.mlruns_dir();
    Step::new(executable(ctx).to_string_lossy())
        .args(["server", "--host", "127.0.0.1", "--port"])
        .arg(ctx.host_port(service).to_string())
        .arg("--backend-store-uri")
        .arg(format!("sqlite:///{}", mlruns.join("mlflow.db").display()))
        .arg("--artifacts-destination")
        .arg(mlruns.join("artifacts"))
        .args(["--workers", "1"])
        .env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        .cwd(&mlruns)
}

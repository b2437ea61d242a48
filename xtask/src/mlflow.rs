//! The MLflow tracking server on the host: a Python virtual environment the toolkit creates
//! under its cache on first use, with the version pinned in `services/mlflow/service.toml`.

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::ctx::Ctx;
use crate::runner::Step;
use crate::stack::Service;

/// Marks a virtual environment whose install finished: a half-installed one is rebuilt.
const COMPLETE_MARKER: &str = ".xtask-complete";

pub fn version(ctx: &Ctx) -> &str {
    ctx.stack.mlflow_version()
}

pub fn venv_dir(ctx: &Ctx) -> PathBuf {
    ctx.cache_dir.join(format!("mlflow-{}", version(ctx)))
}

pub fn executable(ctx: &Ctx) -> PathBuf {
    venv_dir(ctx).join("bin").join("mlflow")
}

/// Checks Python can make virtual environments; explains what to do if not.
pub fn check_python(ctx: &Ctx) -> Result<String> {
    let missing = "Python 3 is needed to run MLflow on the local runtime: install python3 \
                   (with its venv module), or pass --no-mlflow to run the APIs without it";
    let Ok(python) = which::which("python3") else {
        bail!("{missing}")
    };
    let check = Step::new(python.to_string_lossy())
        .args(["-c", "import sys, venv; print(sys.version.split()[0])"]);
    match ctx.runner.query_stdout(&check) {
        Some(version) => Ok(version),
        None => bail!("{missing} ({} cannot import venv)", python.display()),
    }
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
    let title = format!(
        "install MLflow {} into {} (first run only, about a minute)",
        version(ctx),
        ctx.show(&dir)
    );
    ctx.reporter.run_task(title, |task| {
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
    })
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

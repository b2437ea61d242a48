//! The MLflow tracking server on the host: the Python virtual environment the local runtime
//! runs it from, created under the toolkit's cache on first use with the version pinned in
//! `services/mlflow/service.toml`, and its store in `mlruns/`. Its command line is the
//! stack's ([`crate::stack::mlflow_command`]), shared with the compose file.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::ctx::Ctx;
use crate::runner::Step;
use crate::stack::mlflow_backend::{Backend, POSTGRES_DRIVER};
use crate::stack::mlflow_command::{server_args, ServerSettings, LAUNCHER, SERVER_ENV, STORE_FILE};
use crate::stack::Service;

/// Marks a virtual environment whose install finished: a half-installed one is rebuilt.
const COMPLETE_MARKER: &str = ".xtask-complete";

pub fn version(ctx: &Ctx) -> &str {
    ctx.stack.mlflow_version()
}

pub fn venv_dir(ctx: &Ctx) -> PathBuf {
    ctx.cache_dir.join(format!("mlflow-{}", version(ctx)))
}

/// Checks Python can make virtual environments; explains what to do if not. Returns the
/// Python version, the machine and the platform (`3.11 x86_64 linux`).
pub fn check_python(ctx: &Ctx) -> Result<String> {
    let missing = "Python 3 is needed to run MLflow on the local runtime: install python3 \
                   (with its venv module), or pass --no-mlflow to run the APIs without it";
    let Ok(python) = which::which("python3") else {
        bail!("{missing}")
    };
    let check = Step::new(python.to_string_lossy()).args([
        "-c",
        "import sys, venv, platform; print('%d.%d' % sys.version_info[:2], platform.machine(), sys.platform)",
    ]);
    match ctx.runner.query_stdout(&check) {
        Some(found) => Ok(found),
        None => bail!("{missing} ({} cannot import venv)", python.display()),
    }
}

/// Installed, and from the lock as it is now: a lock that changed (a new MLflow, PostgreSQL's
/// driver added) makes the environment again.
pub fn is_installed(ctx: &Ctx) -> bool {
    let installed = std::fs::read_to_string(venv_dir(ctx).join(COMPLETE_MARKER)).ok();
    let lock = std::fs::read_to_string(lock_path(ctx)).ok();
    installed.is_some_and(|text| lock.as_ref() == Some(&text) || text == unlocked(ctx).join("\n"))
}

fn lock_path(ctx: &Ctx) -> PathBuf {
    ctx.stack.mlflow().dir.join("requirements.lock")
}

/// Without the lock: MLflow at its pinned version and PostgreSQL's driver, their
/// dependencies resolved by pip.
fn unlocked(ctx: &Ctx) -> Vec<String> {
    vec![
        format!("mlflow=={}", version(ctx)),
        POSTGRES_DRIVER.to_owned(),
    ]
}

/// What pip installs, and what the marker records of it: the hashed lock where it was made
/// for this Python (CPython 3.11 on Linux x86_64, like the image), else the pinned version
/// and whatever its dependencies resolve to, said out loud.
fn requirements(ctx: &Ctx, python: &str) -> (Vec<String>, String) {
    let lock = lock_path(ctx);
    if python == "3.11 x86_64 linux" {
        if let Ok(text) = std::fs::read_to_string(&lock) {
            let args = vec![
                "--require-hashes".into(),
                "--no-deps".into(),
                "-r".into(),
                lock.to_string_lossy().into_owned(),
            ];
            return (args, text);
        }
    }
    ctx.reporter.info(format!(
        "requirements.lock is for CPython 3.11 on Linux x86_64, this is {python}: installing \
         mlflow=={} with unlocked dependencies",
        version(ctx)
    ));
    let requirements = unlocked(ctx);
    let recorded = requirements.join("\n");
    (requirements, recorded)
}

/// Creates the virtual environment and installs MLflow into it, unless already done.
pub fn ensure_installed(ctx: &Ctx) -> Result<()> {
    if is_installed(ctx) {
        return Ok(());
    }
    let python = if ctx.dry_run() {
        "3.11 x86_64 linux".to_owned()
    } else {
        check_python(ctx)?
    };
    let dir = venv_dir(ctx);
    let title = format!(
        "install MLflow {} into {} (first run only, about a minute)",
        version(ctx),
        ctx.show(&dir)
    );
    ctx.reporter.run_task(title, |task| {
        ctx.runner.remove_path(&dir)?;
        ctx.runner
            .run(&Step::new("python3").args(["-m", "venv"]).arg(&dir))?;
        task.set_message("pip install");
        let (args, installed) = requirements(ctx, &python);
        ctx.runner.run(&pip_install(&dir).args(args))?;
        ctx.runner.write_file(&dir.join(COMPLETE_MARKER), installed)
    })
}

/// The store of this stack on the host.
pub fn store_path(ctx: &Ctx) -> PathBuf {
    ctx.mlruns_dir().join(STORE_FILE)
}

/// The local server: on loopback at the service's host port, the store in `mlruns/`.
pub fn server_step(ctx: &Ctx, service: &Service) -> Step {
    let mlruns = ctx.mlruns_dir();
    let args = server_args(&ServerSettings {
        host: "127.0.0.1".into(),
        port: ctx.host_port(service),
        backend_store_uri: backend_store_uri(ctx),
        artifacts: mlruns.join("artifacts").to_string_lossy().into_owned(),
        allowed_hosts: None,
    });
    let python = venv_dir(ctx).join("bin").join("python");
    let mut step = Step::new(python.to_string_lossy())
        .arg(service.dir.join(LAUNCHER))
        .args(args)
        .cwd(&mlruns);
    for (key, value) in SERVER_ENV {
        step = step.env(key, value);
    }
    for (key, value) in ctx
        .mlflow_backend
        .postgres()
        .map(|pg| pg.env())
        .unwrap_or_default()
    {
        step = step.env(key, &value);
    }
    step
}

/// `--backend-store-uri` for the local server: the SQLite file in `mlruns/`, or the
/// PostgreSQL URI without its password.
pub fn backend_store_uri(ctx: &Ctx) -> String {
    match &ctx.mlflow_backend {
        Backend::Sqlite => format!("sqlite:///{}", store_path(ctx).display()),
        Backend::Postgres(pg) => pg.uri.clone(),
    }
}

/// `pip install` of the virtual environment `venv`, quiet and without questions; the
/// requirements follow.
fn pip_install(venv: &Path) -> Step {
    Step::new(venv.join("bin/pip").to_string_lossy()).args([
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "--progress-bar",
        "off",
    ])
}

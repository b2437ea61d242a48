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

pub fn is_installed(ctx: &Ctx) -> bool {
    venv_dir(ctx).join(COMPLETE_MARKER).is_file()
}

/// What pip installs: the hashed lock where it was made for this Python (CPython 3.11 on
/// Linux x86_64, like the image), else the pinned version and whatever its dependencies
/// resolve to, said out loud.
fn requirements(ctx: &Ctx, python: &str) -> Vec<String> {
    let lock = ctx.stack.mlflow().dir.join("requirements.lock");
    if python == "3.11 x86_64 linux" && lock.is_file() {
        return vec![
            "--require-hashes".into(),
            "--no-deps".into(),
            "-r".into(),
            lock.to_string_lossy().into_owned(),
        ];
    }
    ctx.reporter.info(format!(
        "requirements.lock is for CPython 3.11 on Linux x86_64, this is {python}: installing \
         mlflow=={} with unlocked dependencies",
        version(ctx)
    ));
    vec![format!("mlflow=={}", version(ctx))]
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
        ctx.runner
            .run(&pip_install(&dir).args(requirements(ctx, &python)))?;
        ctx.runner
            .write_file(&dir.join(COMPLETE_MARKER), version(ctx))
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

/// Marks a virtual environment that has PostgreSQL's driver too.
const DRIVER_MARKER: &str = ".xtask-postgres-driver";

/// Installs PostgreSQL's driver into the virtual environment when MLflow runs on PostgreSQL
/// (the SQLite store needs none): by hash on the lock's platform.
pub fn ensure_driver(ctx: &Ctx) -> Result<()> {
    let dir = venv_dir(ctx);
    if ctx.mlflow_backend.postgres().is_none() || dir.join(DRIVER_MARKER).is_file() {
        return Ok(());
    }
    let python = if ctx.dry_run() {
        "3.11 x86_64 linux".to_owned()
    } else {
        check_python(ctx)?
    };
    let names: Vec<&str> = POSTGRES_DRIVER.iter().map(|(name, _)| *name).collect();
    let requirement = if python == "3.11 x86_64 linux" {
        let lock = dir.join("postgres-driver.lock");
        let hashed: String = POSTGRES_DRIVER
            .iter()
            .map(|(name, sha256)| format!("{name} --hash=sha256:{sha256}\n"))
            .collect();
        ctx.runner.write_file(&lock, hashed)?;
        vec![
            "--require-hashes".to_owned(),
            "--no-deps".to_owned(),
            "-r".to_owned(),
            lock.to_string_lossy().into_owned(),
        ]
    } else {
        names.iter().map(|name| name.to_string()).collect()
    };
    ctx.reporter.run_task(
        format!(
            "install PostgreSQL's driver ({}) into {}",
            names.join(", "),
            ctx.show(&dir)
        ),
        |_| {
            ctx.runner.run(&pip_install(&dir).args(requirement))?;
            ctx.runner
                .write_file(&dir.join(DRIVER_MARKER), names.join("\n"))
        },
    )
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

//! Bringing the stack up and waiting for it: build what is missing, train missing models,
//! start what is not running and healthy, and wait until every service answers healthy on its
//! published port. `demo`, `up` and `restart` are made of these.

use std::time::Duration;

use anyhow::{bail, Result};

use crate::build::binaries;
use crate::ctx::Ctx;
use crate::progress::Task;
use crate::runner::Step;
use crate::runtime::Runtime;
use crate::stack::{Kind, Service};
use crate::{http, mlflow, poll, ports};

/// The options of every command that brings the stack up.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct UpOptions {
    /// Run the APIs without the MLflow server (e.g. when Python is not installed).
    #[arg(long)]
    pub no_mlflow: bool,
    /// Seconds each service gets to become healthy.
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    pub timeout: u64,
}

/// The services `up` manages under these options, MLflow first.
pub fn selected<'a>(ctx: &'a Ctx, options: &UpOptions) -> Vec<&'a Service> {
    ctx.stack
        .services
        .iter()
        .filter(|s| !(options.no_mlflow && s.kind == Kind::Mlflow))
        .collect()
}

/// Generates a synthetic dataset and trains a model for each API that lacks one.
pub fn ensure_models(ctx: &Ctx, apis: &[&Service]) -> Result<()> {
    for api in apis {
        if ctx.model_file(api).is_file() {
            continue;
        }
        let data = ctx.data_path(api);
        let model_dir = ctx.model_dir(api);
        let binary = binaries::path(ctx, api).to_string_lossy().into_owned();
        ctx.reporter
            .run_task(format!("train {}", api.name), |task| {
                if !data.is_file() {
                    task.set_message("generating synthetic data");
                    ctx.runner.run(
                        &Step::new(&binary)
                            .args(["generate-data", "--seed", "42", "--out"])
                            .arg(&data),
                    )?;
                }
                task.set_message("training");
                ctx.runner.run(
                    &Step::new(&binary)
                        .args(["train", "--seed", "42", "--data-path"])
                        .arg(&data)
                        .arg("--model-dir")
                        .arg(&model_dir),
                )?;
                task.note(format!("model in {}", ctx.show(&model_dir)));
                Ok(())
            })
            .map_err(|e| e.context(format!("cannot train a model for {}", api.name)))?;
    }
    Ok(())
}

/// Builds, trains what is missing, starts what is not running and healthy, and waits.
/// On failure (or Ctrl-C) it stops what it started and names the service with its log tail.
pub fn bring_up(ctx: &Ctx, runtime: &mut dyn Runtime, options: &UpOptions) -> Result<()> {
    let services = selected(ctx, options);
    let apis: Vec<&Service> = services.iter().copied().filter(|s| s.is_api()).collect();
    check_ports(ctx, runtime, &services)?;
    runtime.build(ctx, &services)?;
    ensure_models(ctx, &apis)?;

    let new_store = !mlflow::store_path(ctx).exists();
    let mut started: Vec<&Service> = Vec::new();
    let result = start_all(ctx, runtime, &services, &mut started)
        .and_then(|()| wait_healthy(ctx, runtime, &services, options.timeout));
    if let Err(e) = result {
        if !started.is_empty() {
            ctx.reporter.info("stopping what this run started");
            for service in started.iter().rev() {
                match runtime.stop(ctx, service) {
                    Ok(_) if service.kind == Kind::Mlflow && new_store => {
                        discard_store(ctx)?;
                    }
                    Ok(_) => {}
                    Err(stop_error) => ctx
                        .reporter
                        .warn(format!("cannot stop {}: {stop_error:#}", service.name)),
                }
            }
        }
        return Err(e);
    }
    Ok(())
}

/// Removes the MLflow store this run created. MLflow builds its schema in steps on its first
/// start; stopped midway (Ctrl-C, a failed start) it leaves a store it refuses ever after as
/// out of date. Nothing can have been logged to it yet: the stack never came up.
fn discard_store(ctx: &Ctx) -> Result<()> {
    let store = mlflow::store_path(ctx);
    let name = mlflow::STORE_FILE;
    // SQLite's journal and write-ahead files sit beside it: `mlflow.db-journal`, `-wal`, `-shm`.
    let files: Vec<std::path::PathBuf> = std::fs::read_dir(ctx.mlruns_dir())
        .map(|dir| {
            dir.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(name))
                })
                .collect()
        })
        .unwrap_or_default();
    for file in &files {
        ctx.runner.remove_path(file)?;
    }
    if !files.is_empty() {
        ctx.reporter.info(format!(
            "removed the MLflow store this run had begun ({}): a first start stopped midway leaves it half made",
            ctx.show(&store)
        ));
    }
    Ok(())
}

/// Fails, naming every holder, when a port a service needs is taken by something that is not
/// that service: checked before anything is built or started, so a stranger on the last port
/// costs seconds and leaves nothing half started.
fn check_ports(ctx: &Ctx, runtime: &dyn Runtime, services: &[&Service]) -> Result<()> {
    if ctx.dry_run() {
        return Ok(());
    }
    let mut taken = Vec::new();
    for &service in services {
        let port = ctx.host_port(service);
        if ports::in_use(port) && !runtime.state(ctx, service)?.running {
            taken.push(format!(
                "for {}, {}",
                service.name,
                ports::describe(ctx, port)
            ));
        }
    }
    if !taken.is_empty() {
        bail!(
            "cannot start the stack: {}. Nothing was started. Stop that process, or run this stack on other ports with --port-offset",
            taken.join("; ")
        );
    }
    Ok(())
}

fn start_all<'a>(
    ctx: &Ctx,
    runtime: &mut dyn Runtime,
    services: &[&'a Service],
    started: &mut Vec<&'a Service>,
) -> Result<()> {
    for &service in services {
        let state = runtime.state(ctx, service)?;
        if state.running {
            let healthy = http::healthy(&ctx.health_url(service), Duration::from_secs(2));
            let stale = runtime.is_stale(ctx, service);
            if healthy && !stale {
                ctx.reporter
                    .info(format!("{} is already running and healthy", service.name));
                continue;
            }
            if state.health.as_deref() == Some("starting") && !stale {
                // Still inside its start period: wait for it rather than restart it.
                ctx.reporter
                    .info(format!("{} is already starting", service.name));
                continue;
            }
            let why = if healthy {
                "its binary or model changed"
            } else {
                "it is not healthy"
            };
            ctx.reporter
                .info(format!("restarting {}: {why}", service.name));
            runtime.stop(ctx, service)?;
        }
        let port = ctx.host_port(service);
        if !ctx.dry_run() && ports::in_use(port) {
            bail!(
                "cannot start {}: {}. Stop that process, or run this stack on other ports with --port-offset",
                service.name,
                ports::describe(ctx, port)
            );
        }
        runtime.start(ctx, service)?;
        started.push(service);
    }
    Ok(())
}

/// Ctrl-C (or SIGTERM) arrived: what this run started has been stopped. Exits with 130.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted; stopped what this run had started")
    }
}

impl std::error::Error for Interrupted {}

/// How often a service is probed while it starts: the APIs are healthy milliseconds after
/// their process starts.
const PROBE_EVERY: Duration = Duration::from_millis(40);

/// Polls every service's health URL through its published port until all answer healthy,
/// one exits, or time runs out. Docker's own healthcheck is not waited for: it only runs
/// every few seconds.
pub fn wait_healthy(
    ctx: &Ctx,
    runtime: &mut dyn Runtime,
    services: &[&Service],
    timeout_secs: u64,
) -> Result<()> {
    if ctx.dry_run() {
        for s in services {
            ctx.runner.plan(format!(
                "wait until {} answers healthy (timeout {timeout_secs}s)",
                ctx.health_url(s)
            ));
        }
        return Ok(());
    }
    let mut pending: Vec<(&Service, Task, String)> = services
        .iter()
        .map(|s| {
            let task = ctx
                .reporter
                .task(format!("{} healthy at {}", s.name, ctx.health_url(s)));
            (*s, task, "it never answered".to_owned())
        })
        .collect();
    let finished = poll::until(Duration::from_secs(timeout_secs), PROBE_EVERY, || {
        if ctx.is_interrupted() {
            return Some(Err(Interrupted.into()));
        }
        let mut still = Vec::new();
        for (service, task, last) in pending.drain(..) {
            let answer = http::get(&ctx.health_url(service), Duration::from_secs(1));
            match &answer {
                Ok(a) if http::is_healthy(a) => {
                    task.done("");
                    continue;
                }
                Ok(a) => task.set_message(format!("answered {}", a.status)),
                Err(_) => {}
            }
            let refused = answer.as_ref().ok().and_then(refused_model);
            if let Some(why) = runtime.exited(ctx, service).or(refused) {
                return Some(Err(failed_to_start(ctx, runtime, service, task, &why)));
            }
            let last = match answer {
                Ok(a) => format!("it last answered {}: {}", a.status, a.body.trim()),
                Err(_) => last,
            };
            still.push((service, task, last));
        }
        pending = still;
        pending.is_empty().then_some(Ok(()))
    });
    match finished {
        Some(result) => result,
        None => {
            let (service, task, last) = pending.remove(0);
            let why = format!("not healthy after {timeout_secs}s; {last}");
            Err(failed_to_start(ctx, runtime, service, task, &why))
        }
    }
}

/// Why the service refused its model, when its health answer says so: it will not become
/// healthy by waiting.
fn refused_model(answer: &http::Answer) -> Option<String> {
    let health = answer.json()?;
    let reload = health.get("last_reload")?;
    (reload["status"] == "refused").then(|| {
        format!(
            "it refused its model: {}",
            reload["reason"].as_str().unwrap_or("no reason given")
        )
    })
}

fn failed_to_start(
    ctx: &Ctx,
    runtime: &dyn Runtime,
    service: &Service,
    task: Task,
    why: &str,
) -> anyhow::Error {
    task.fail(why);
    let log = runtime.log_tail(ctx, service, 50);
    ctx.reporter
        .error(&format!("{} failed to start", service.name), why);
    anyhow::anyhow!(
        "{} did not become healthy: {why}\n--- last 50 lines of its log ---\n{log}\n---\nSee `cargo xtask logs {}` and `cargo xtask doctor`.",
        service.name,
        service.name
    )
}

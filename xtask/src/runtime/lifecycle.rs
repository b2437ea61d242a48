//! Bringing the stack up and waiting for it: build what is missing, train missing models,
//! start what is not running and healthy, and wait until every service answers healthy on its
//! published port. `demo`, `up` and `restart` are made of these.

use std::time::Duration;

use anyhow::{bail, Result};

use crate::ctx::Ctx;
use crate::runtime::training::{self, Tracking, DEFAULT_SEED};
use crate::runtime::Runtime;
use crate::runtime::{mlflow_server, mlflow_store, ports};
use crate::stack::mlflow_command;
use crate::stack::{Endpoint, Kind, Service};
use crate::util::progress::Task;
use crate::util::{http, poll};

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

/// Why an API needs training now: no model yet, or (with MLflow) its model is not in the
/// registry, e.g. after `mlflow reset`. `None` when it is ready.
fn needs_training(ctx: &Ctx, api: &Service, mlflow: Option<&str>) -> Result<Option<&'static str>> {
    let Some(metrics) =
        training::served_metrics(ctx, api).filter(|_| ctx.model_file(api).is_file())
    else {
        return Ok(Some("no model yet"));
    };
    match mlflow {
        Some(uri) if !ctx.dry_run() && !training::is_registered(uri, &metrics)? => {
            Ok(Some("its model is not registered in MLflow"))
        }
        _ => Ok(None),
    }
}

/// Generates a synthetic dataset and trains a model for each API that lacks one; with
/// MLflow (`mlflow` is its URL) every run is tracked and the model registered and promoted,
/// so a new user finds each model's `champion` there.
pub fn ensure_models(ctx: &Ctx, apis: &[&Service], mlflow: Option<&str>) -> Result<()> {
    let tracking = match mlflow {
        Some(uri) => Tracking::On {
            uri: uri.to_owned(),
            register: true,
            promote: true,
        },
        None => Tracking::Off,
    };
    for api in apis {
        let Some(why) = needs_training(ctx, api, mlflow)? else {
            continue;
        };
        let data = ctx.data_path(api);
        let model_dir = ctx.model_dir(api);
        ctx.reporter
            .run_task(format!("train {} ({why})", api.name), |task| {
                if !data.is_file() {
                    task.set_message("generating synthetic data");
                    ctx.runner
                        .run(&training::generate_data_step(ctx, api, &data))?;
                }
                task.set_message("training");
                ctx.runner.run(&training::host_train_step(
                    ctx,
                    api,
                    &data,
                    &model_dir,
                    DEFAULT_SEED,
                    &tracking,
                    &[],
                ))?;
                task.note(format!("model in {}", ctx.show(&model_dir)));
                Ok(())
            })
            .map_err(|e| e.context(format!("cannot train a model for {}", api.name)))?;
    }
    Ok(())
}

/// Builds, trains what is missing, starts what is not running and healthy, and waits.
/// MLflow comes first, so the models trained meanwhile are tracked and registered in it: it
/// starts as soon as its own image or environment is built, while the APIs' release build goes
/// on beside it (minutes on a fresh clone), so it is healthy by the time they are built.
/// On failure (or Ctrl-C) it stops what it started and names the service with its log tail.
pub fn bring_up(ctx: &Ctx, runtime: &mut dyn Runtime, options: &UpOptions) -> Result<()> {
    let services = selected(ctx, options);
    let (trackers, apis): (Vec<&Service>, Vec<&Service>) = services
        .iter()
        .copied()
        .partition(|s| s.kind == Kind::Mlflow);
    check_ports(ctx, runtime, &services)?;
    if !trackers.is_empty() {
        mlflow_store::check_before_start(ctx)?;
    }
    let artifacts = runtime.artifacts(ctx)?;

    // A store MLflow has not finished building yet: see `discard_store`.
    // A PostgreSQL database is the user's: never discarded.
    let mut unfinished_store =
        ctx.mlflow_backend.postgres().is_none() && !mlflow_server::store_path(ctx).exists();
    let mut started: Vec<&Service> = Vec::new();
    let result = (|| {
        let (trackers_up, apis_built) = ctx.both(
            || -> Result<()> {
                artifacts.build(ctx, &trackers)?;
                start_all(ctx, runtime, &trackers, &mut started)?;
                wait_healthy(ctx, runtime, &trackers, options.timeout)?;
                unfinished_store = false;
                Ok(())
            },
            || artifacts.build(ctx, &apis),
        );
        if let (Err(tracker_error), Err(_)) = (&trackers_up, &apis_built) {
            // Both are said: the build's as this command's error, MLflow's here.
            ctx.reporter.warn(format!("{tracker_error:#}"));
        }
        apis_built?;
        trackers_up?;
        let mlflow = trackers.first().map(|m| ctx.url(m, ""));
        ensure_models(ctx, &apis, mlflow.as_deref())?;
        start_all(ctx, runtime, &apis, &mut started)?;
        wait_healthy(ctx, runtime, &apis, options.timeout)
    })();
    if let Err(e) = result {
        if !started.is_empty() {
            ctx.reporter.info("stopping what this run started");
            for service in started.iter().rev() {
                match runtime.stop(ctx, service) {
                    Ok(_) if service.kind == Kind::Mlflow && unfinished_store => {
                        discard_store(ctx)?;
                    }
                    Ok(_) => {}
                    Err(stop_error) => ctx
                        .reporter
                        .warn(format!("cannot stop {}: {stop_error:#}", service.name)),
                }
            }
            // With nothing of the stack left running, what the services shared (compose's
            // network) goes too, as after `down`; a stack that was partly up keeps it.
            let none_running = ctx
                .stack
                .services
                .iter()
                .all(|s| runtime.state(ctx, s).is_ok_and(|state| !state.running));
            if none_running {
                if let Err(shared_error) = runtime.stop_shared(ctx) {
                    ctx.reporter.warn(format!(
                        "cannot remove what the stack's services share: {shared_error:#}"
                    ));
                }
            }
        }
        return Err(e);
    }
    remember_mlflow_choice(ctx, runtime, options)
}

/// Marks a stack brought up without MLflow on purpose (`--no-mlflow`), so `doctor` does not
/// take MLflow's absence for a fault; bringing MLflow up or `down` removes the mark.
fn without_mlflow_marker(ctx: &Ctx) -> std::path::PathBuf {
    ctx.state_dir().join("without-mlflow")
}

/// Whether the stack was last brought up with `--no-mlflow`.
pub fn runs_without_mlflow(ctx: &Ctx) -> bool {
    without_mlflow_marker(ctx).is_file()
}

fn remember_mlflow_choice(ctx: &Ctx, runtime: &dyn Runtime, options: &UpOptions) -> Result<()> {
    // Left out, not merely left alone: `up --no-mlflow` beside a running MLflow marks nothing.
    let mlflow_left_out = || {
        runtime
            .state(ctx, ctx.stack.mlflow())
            .is_ok_and(|state| !state.running)
    };
    if options.no_mlflow && mlflow_left_out() {
        ctx.runner
            .write_file(&without_mlflow_marker(ctx), "brought up with --no-mlflow\n")
    } else {
        forget_mlflow_choice(ctx)
    }
}

/// Removes the `--no-mlflow` mark (the stack goes down, or MLflow comes up).
pub fn forget_mlflow_choice(ctx: &Ctx) -> Result<()> {
    let marker = without_mlflow_marker(ctx);
    if marker.exists() {
        ctx.runner.remove_path(&marker)?;
    }
    Ok(())
}

/// Removes the MLflow store this run created before MLflow ever answered. MLflow builds its
/// schema in steps on its first start; stopped midway (Ctrl-C, a failed start) it leaves a
/// store it refuses ever after as out of date. Nothing can have been logged to it yet.
fn discard_store(ctx: &Ctx) -> Result<()> {
    let store = mlflow_server::store_path(ctx);
    let name = mlflow_command::STORE_FILE;
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
        let ours = runtime.state(ctx, service)?.running;
        for endpoint in service.endpoints() {
            let port = ctx.endpoint_port(&endpoint);
            if !ours && ports::in_use(port) {
                taken.push(format!(
                    "for {}, {}",
                    service.label(&endpoint),
                    ports::describe(ctx, port)
                ));
            }
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
            let healthy = service
                .endpoints()
                .iter()
                .all(|e| http::healthy(&ctx.endpoint_health_url(e), Duration::from_secs(2)));
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
                "its binary or model changed, or it runs another build"
            } else {
                "it is not healthy"
            };
            ctx.reporter
                .info(format!("restarting {}: {why}", service.name));
            runtime.stop(ctx, service)?;
        }
        for endpoint in service.endpoints() {
            let port = ctx.endpoint_port(&endpoint);
            if !ctx.dry_run() && ports::in_use(port) {
                bail!(
                    "cannot start {}: {}. Stop that process, or run this stack on other ports with --port-offset",
                    service.label(&endpoint),
                    ports::describe(ctx, port)
                );
            }
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
/// How often the runtime is asked whether a service that does not answer has exited (on
/// docker an inspection costs a process: not at every probe).
const EXIT_CHECK_EVERY: Duration = Duration::from_millis(500);

/// Polls every service's health URL through its published port until all answer healthy,
/// one exits, or time runs out. Docker's own healthcheck is not waited for: it only runs
/// every few seconds.
pub fn wait_healthy(
    ctx: &Ctx,
    runtime: &mut dyn Runtime,
    services: &[&Service],
    timeout_secs: u64,
) -> Result<()> {
    let endpoints: Vec<(&Service, Endpoint)> = services
        .iter()
        .flat_map(|s| s.endpoints().into_iter().map(move |e| (*s, e)))
        .collect();
    if ctx.dry_run() {
        for (_, e) in &endpoints {
            ctx.runner.plan(format!(
                "wait until {} answers healthy (timeout {timeout_secs}s)",
                ctx.endpoint_health_url(e)
            ));
        }
        return Ok(());
    }
    let mut pending: Vec<(&Service, Endpoint, Task, String)> = endpoints
        .into_iter()
        .map(|(s, e)| {
            let task = ctx.reporter.task(format!(
                "{} healthy at {}",
                s.label(&e),
                ctx.endpoint_health_url(&e)
            ));
            (s, e, task, "it never answered".to_owned())
        })
        .collect();
    let mut last_exit_check = std::time::Instant::now();
    let finished = poll::until(Duration::from_secs(timeout_secs), PROBE_EVERY, || {
        let check_exits = last_exit_check.elapsed() >= EXIT_CHECK_EVERY;
        if check_exits {
            last_exit_check = std::time::Instant::now();
        }
        if ctx.is_interrupted() {
            return Some(Err(Interrupted.into()));
        }
        let mut still = Vec::new();
        for (service, endpoint, task, last) in pending.drain(..) {
            let answer = http::get(&ctx.endpoint_health_url(&endpoint), Duration::from_secs(1));
            match &answer {
                Ok(a) if http::is_healthy(a) => {
                    task.done("");
                    continue;
                }
                Ok(a) => task.set_message(format!("answered {}", a.status)),
                Err(_) => {}
            }
            let refused = answer.as_ref().ok().and_then(refused_model);
            let exited = || check_exits.then(|| runtime.exited(ctx, service)).flatten();
            if let Some(why) = refused.or_else(exited) {
                if interrupted_meanwhile(ctx, &why) {
                    task.fail("interrupted");
                    return Some(Err(Interrupted.into()));
                }
                return Some(Err(failed_to_start(ctx, runtime, service, task, &why)));
            }
            let last = match answer {
                Ok(a) => format!("it last answered {}: {}", a.status, a.body.trim()),
                Err(_) => last,
            };
            still.push((service, endpoint, task, last));
        }
        pending = still;
        pending.is_empty().then_some(Ok(()))
    });
    match finished {
        Some(result) => result,
        None => {
            let (service, _, task, last) = pending.remove(0);
            let why = format!("not healthy after {timeout_secs}s; {last}");
            Err(failed_to_start(ctx, runtime, service, task, &why))
        }
    }
}

/// Whether a service that stopped while it started was stopped by this run's interruption: a
/// Ctrl-C or SIGTERM that reached the service too (a terminal's hang-up, a shutdown, a
/// `kill` of the whole session). Its signal may come a moment before ours: a service stopped
/// by a signal from outside waits that moment for it.
fn interrupted_meanwhile(ctx: &Ctx, why: &str) -> bool {
    const GRACE: Duration = Duration::from_millis(500);
    ctx.is_interrupted()
        || (why.contains("from outside the toolkit")
            && poll::until(GRACE, Duration::from_millis(20), || {
                ctx.is_interrupted().then_some(())
            })
            .is_some())
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

//! `cargo xtask up`: build what is missing, train missing models, start the stack and wait
//! until every service is healthy. `demo` and `restart` reuse this orchestration.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::ctx::Ctx;
use crate::progress::Task;
use crate::runner::Step;
use crate::runtime::Runtime;
use crate::stack::{Kind, Service};
use crate::{binaries, http, ports};

/// Start the stack and wait until it is healthy (already healthy services are reused).
#[derive(clap::Args, Debug)]
pub struct Up {
    #[command(flatten)]
    pub options: UpOptions,
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct UpOptions {
    /// Run the APIs without the MLflow server (e.g. when Python is not installed).
    #[arg(long)]
    pub no_mlflow: bool,
    /// Seconds each service gets to become healthy.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

impl Up {
    pub fn run(self, ctx: &Ctx, runtime: &mut dyn Runtime) -> Result<()> {
        bring_up(ctx, runtime, &self.options)?;
        Ok(())
    }
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
        let data = ctx.data_path(api);
        let model_dir = ctx.model_dir(api);
        if model_dir.join("model.json").is_file() {
            continue;
        }
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
    runtime.build(ctx, &services)?;
    ensure_models(ctx, &apis)?;

    let mut started: Vec<&Service> = Vec::new();
    let result = start_all(ctx, runtime, &services, &mut started)
        .and_then(|()| wait_healthy(ctx, runtime, &services, options.timeout));
    if let Err(e) = result {
        if !started.is_empty() {
            ctx.reporter.info("stopping what this run started");
            for service in started.iter().rev() {
                if let Err(stop_error) = runtime.stop(ctx, service) {
                    ctx.reporter
                        .warn(format!("cannot stop {}: {stop_error:#}", service.name));
                }
            }
        }
        return Err(e);
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

/// Polls every service's health until all answer healthy, one fails, or time runs out.
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
    let timeout = Duration::from_secs(timeout_secs);
    let started = Instant::now();
    let mut pending: Vec<(&Service, Task)> = services
        .iter()
        .map(|s| {
            (
                *s,
                ctx.reporter
                    .task(format!("{} healthy at {}", s.name, ctx.health_url(s))),
            )
        })
        .collect();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for (service, task) in pending {
            let answer = http::get(&ctx.health_url(service), Duration::from_secs(2));
            // Ready when it answers healthy and the runtime (docker's healthcheck) agrees; the
            // runtime is only asked once the service itself answers healthy.
            let answers_healthy = answer.as_ref().is_ok_and(http::is_healthy);
            let runtime_health = if answers_healthy {
                runtime.state(ctx, service).ok().and_then(|s| s.health)
            } else {
                None
            };
            if answers_healthy && runtime_health.as_deref().is_none_or(|h| h == "healthy") {
                task.done("");
                continue;
            }
            if ctx.is_interrupted() {
                task.fail("interrupted");
                return Err(Interrupted.into());
            }
            let failure = if let Some(why) = runtime.exited(ctx, service) {
                Some(why)
            } else if started.elapsed() > timeout {
                let last = match &answer {
                    Ok(a) => format!("it last answered {}: {}", a.status, a.body.trim()),
                    Err(e) => format!("it never answered ({e:#})"),
                };
                Some(format!("not healthy after {timeout_secs}s; {last}"))
            } else {
                None
            };
            match failure {
                Some(why) => {
                    task.fail(&why);
                    let log = runtime.log_tail(ctx, service, 50);
                    ctx.reporter
                        .error(&format!("{} failed to start", service.name), &why);
                    bail!(
                        "{} did not become healthy: {why}\n--- last 50 lines of its log ---\n{log}\n---\nSee `cargo xtask logs {}` and `cargo xtask doctor`.",
                        service.name,
                        service.name
                    );
                }
                None => {
                    match (&answer, &runtime_health) {
                        (Ok(a), Some(h)) => {
                            task.set_message(format!("answered {}, container {h}", a.status))
                        }
                        (Ok(a), None) => task.set_message(format!("answered {}", a.status)),
                        _ => {}
                    }
                    still.push((service, task));
                }
            }
        }
        pending = still;
        if !pending.is_empty() {
            std::thread::sleep(Duration::from_millis(150));
        }
    }
    Ok(())
}

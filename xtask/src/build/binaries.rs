//! The service binaries: built once for the whole workspace, in release mode (or, for `dev`,
//! the `dev-loop` profile: release without LTO, incremental). On Linux they are statically
//! linked, so the very same files run on the host and in `FROM scratch` images.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Result};

use crate::ctx::Ctx;
use crate::runner::{tail, Background, Step};
use crate::stack::Service;
use crate::util::{http, poll};

/// The Cargo profile the APIs are built with (`Cargo.toml`'s `[profile.*]`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Profile {
    /// Thin LTO: what `up`, `demo`, the images and every other command run.
    #[default]
    Release,
    /// Release without LTO, in many codegen units, incremental: what `dev` builds and runs,
    /// a one-line change rebuilt in seconds.
    DevLoop,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Self::Release => "release",
            Self::DevLoop => "dev-loop",
        }
    }
}

/// The target triple of the static build, when there is one.
fn static_target() -> Option<String> {
    cfg!(all(target_os = "linux", target_env = "gnu"))
        .then(|| format!("{}-unknown-linux-gnu", std::env::consts::ARCH))
}

fn target_dir(ctx: &Ctx) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| ctx.root.join("target"), PathBuf::from)
}

/// The API's binary of the profile this command builds and runs (`ctx.build`).
pub fn path(ctx: &Ctx, service: &Service) -> PathBuf {
    path_of(ctx, service, ctx.build)
}

/// The API's binary as `profile` builds it.
pub fn path_of(ctx: &Ctx, service: &Service, profile: Profile) -> PathBuf {
    let mut dir = target_dir(ctx);
    if let Some(target) = static_target() {
        dir.push(target);
    }
    dir.join(profile.name()).join(&service.name)
}

/// `SERVICE serve` on loopback at `port`, with the model in `model_dir`.
pub fn serve_step(ctx: &Ctx, service: &Service, port: u16, model_dir: &Path) -> Step {
    serve_step_of(ctx, service, ctx.build, port, model_dir)
}

/// [`serve_step`] with the binary `profile` builds.
pub fn serve_step_of(
    ctx: &Ctx,
    service: &Service,
    profile: Profile,
    port: u16,
    model_dir: &Path,
) -> Step {
    Step::new(path_of(ctx, service, profile).to_string_lossy())
        .args([
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--model-dir",
        ])
        .arg(model_dir)
}

/// Serves the model in `model_dir` on a free loopback port, logging to `log`, and waits until
/// it answers healthy: the server and its base URL (`None` under `--dry-run`). A server that
/// never becomes healthy is stopped, and the error shows its log's last lines.
pub fn serve_on_free_port(
    ctx: &Ctx,
    service: &Service,
    model_dir: &Path,
    log: &Path,
) -> Result<Option<(Background, String)>> {
    spawn_on_free_port(ctx, &service.name, &service.health_path, log, |port| {
        serve_step(ctx, service, port, model_dir).env("LOG_FORMAT", "json")
    })
}

/// Starts the server `step_at(port)` describes on a free loopback port, logging to `log`, and
/// waits until `health_path` answers 200: the server and its base URL (`None` under
/// `--dry-run`). One that never does is stopped, and the error shows its log's last lines.
pub fn spawn_on_free_port(
    ctx: &Ctx,
    what: &str,
    health_path: &str,
    log: &Path,
    step_at: impl FnOnce(u16) -> Step,
) -> Result<Option<(Background, String)>> {
    ctx.runner
        .plan("serve on a free port (0 below, PORT after it)");
    let port = if ctx.dry_run() {
        0
    } else {
        // A port nothing listens on now, chosen by the system.
        std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port()
    };
    let Some(child) = ctx.runner.spawn_service(&step_at(port), log)? else {
        return Ok(None);
    };
    let base = format!("http://127.0.0.1:{port}");
    let health = format!("{base}{health_path}");
    let up = poll::until(Duration::from_secs(30), Duration::from_millis(20), || {
        http::healthy(&health, Duration::from_secs(1)).then_some(())
    });
    if up.is_none() {
        let _ = ctx
            .runner
            .stop_group(child.pid(), Duration::from_secs(5), Some(&child));
        bail!(
            "{what} never became healthy at {base}; its log:\n{}",
            tail(&std::fs::read_to_string(log).unwrap_or_default(), 30)
        );
    }
    Ok(Some((child, base)))
}

/// Checks the model in `model_dir` as `service` itself does when it loads one (at start and
/// on SIGHUP): serves it on a free loopback port (its dashboard too, where it has one, which
/// prepares its pages from the model) until `/health` answers, and stops it. A refused model
/// is an error carrying the service's own reason. Nothing is written to `model_dir`.
pub fn check_model(ctx: &Ctx, service: &Service, model_dir: &Path, log: &Path) -> Result<()> {
    let free_port = || -> Result<u16> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port())
    };
    let port = if ctx.dry_run() { 0 } else { free_port()? };
    let mut step = serve_step(ctx, service, port, model_dir).env("LOG_FORMAT", "json");
    if service.dashboard.is_some() {
        let dashboard = if ctx.dry_run() { 0 } else { free_port()? };
        step = step.args(["--dashboard-port", &dashboard.to_string()]);
    }
    let Some(child) = ctx.runner.spawn_service(&step, log)? else {
        return Ok(());
    };
    let health = format!("http://127.0.0.1:{port}{}", service.health_path);
    let answer = poll::until(Duration::from_secs(30), Duration::from_millis(20), || {
        if let Some(why) = child.exited() {
            return Some(Err(anyhow::anyhow!(why)));
        }
        http::get(&health, Duration::from_secs(1)).ok().map(Ok)
    });
    let _ = ctx
        .runner
        .stop_group(child.pid(), Duration::from_secs(5), Some(&child));
    let log_tail = || tail(&std::fs::read_to_string(log).unwrap_or_default(), 20);
    match answer {
        Some(Ok(answer)) if http::is_healthy(&answer) => Ok(()),
        Some(Ok(answer)) => {
            let reason = answer
                .json()
                .and_then(|v| v["last_reload"]["reason"].as_str().map(str::to_owned))
                .unwrap_or(answer.body);
            bail!("{} refuses the model: {reason}", service.name)
        }
        Some(Err(e)) => bail!(
            "{} could not check the model: {e:#}; its log:\n{}",
            service.name,
            log_tail()
        ),
        None => bail!(
            "{} did not answer within 30 s while checking the model; its log:\n{}",
            service.name,
            log_tail()
        ),
    }
}

fn build_step(ctx: &Ctx, services: &[&Service]) -> Step {
    let mut step = Step::new("cargo").arg("build");
    step = match ctx.build {
        Profile::Release => step.arg("--release"),
        profile => step.args(["--profile", profile.name()]),
    };
    step = step.arg("--locked");
    for service in services {
        step = step.args(["--package", &service.name]);
    }
    if let Some(target) = static_target() {
        // With an explicit --target the flag reaches only the binaries, not build scripts or
        // proc macros (which cannot be static).
        step = step
            .args(["--target", &target])
            .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static");
    }
    step.cwd(&ctx.root)
}

/// Builds the binaries of `services` (cargo skips what is up to date).
pub fn build(ctx: &Ctx, services: &[&Service]) -> Result<()> {
    if services.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
    ctx.reporter.run_task(
        format!("build {} ({})", names.join(", "), ctx.build.name()),
        |_| ctx.runner.run(&build_step(ctx, services)),
    )?;
    Ok(())
}

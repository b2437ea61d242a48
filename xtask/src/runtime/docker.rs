//! The docker runtime: the images of `cargo xtask images`, run as the compose project of
//! `compose/docker-compose.demo.yml` with either front-end (the v2 plugin or docker-compose
//! 1.29). Containers are removed before they are created again (1.29 can crash recreating
//! them); readiness is probed on the published ports (see `lifecycle`), not with compose's
//! `--wait`. Retraining runs in a one-off container of the service's own image.

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use serde_json::Value;

use super::{Artifacts, Candidate, Instance, Kind, Runtime, ServiceState, SQLITE_BACKUP};
use crate::build::engine;
use crate::build::images;
use crate::ctx::Ctx;
use crate::runner::Step;
use crate::runtime::training::{self, Tracking};
use crate::stack::compose_file::{self, MLRUNS as MLRUNS_IN_CONTAINER};
use crate::stack::mlflow_command;
use crate::stack::{Kind as ServiceKind, Service, STOP_GRACE_SECONDS};
use crate::util::{http, poll};

/// The containers run as an unprivileged user: it must be able to write `dir` (MLflow's
/// store, or a model directory while a one-off container trains into it).
pub fn writable_by_containers(ctx: &Ctx, dir: &Path) -> Result<()> {
    ctx.runner.create_dir(dir)?;
    if rustix::process::geteuid().is_root() {
        ctx.runner
            .run(&Step::new("chown").args(["-R", compose_file::USER]).arg(dir))?;
    } else {
        // Not root: open the folders to the container's user instead.
        ctx.runner
            .run(&Step::new("chmod").args(["-R", "a+rwX"]).arg(dir))?;
    }
    Ok(())
}

/// Where a one-off training container runs: the service's image, on the stack's network.
pub struct TrainingContainer<'a> {
    pub service: &'a Service,
    pub image: &'a str,
    pub network: &'a str,
}

/// Trains `container.service`'s model on `data` in a one-off container of its image, the data
/// mounted read-only and the model directory its only writable mount; MLflow is reached by its
/// name on the stack's network.
pub fn train_in_container(
    ctx: &Ctx,
    container: &TrainingContainer,
    data: &Path,
    seed: u64,
    tracking: &Tracking,
    extra: &[String],
) -> Result<()> {
    let service = container.service;
    let model_dir = ctx.model_dir(service);
    writable_by_containers(ctx, &model_dir)?;
    let file_name = data
        .file_name()
        .with_context(|| format!("{} is not a file", data.display()))?;
    let in_container = Path::new("/data").join(file_name);
    // Inside the stack's network MLflow has another address than from the host.
    let (tracking, network) = match tracking {
        Tracking::On {
            register, promote, ..
        } => (
            Tracking::On {
                uri: compose_file::mlflow_in_network(ctx.stack.mlflow()),
                register: *register,
                promote: *promote,
            },
            container.network.to_owned(),
        ),
        Tracking::Off => (Tracking::Off, "none".to_owned()),
    };
    let args = training::train_args(&in_container, Path::new("/models"), seed, &tracking, extra);
    let mount =
        |from: &Path, to: &Path, mode: &str| format!("{}:{}{mode}", from.display(), to.display());
    let data =
        std::fs::canonicalize(data).with_context(|| format!("cannot read {}", data.display()))?;
    ctx.runner.run(
        &Step::new("docker")
            .args([
                "run",
                "--rm",
                "--network",
                &network,
                "--user",
                compose_file::USER,
            ])
            .args(["--read-only", "--cap-drop", "ALL"])
            .args([
                "--security-opt",
                "no-new-privileges:true",
                "--tmpfs",
                "/tmp",
            ])
            .args(["--volume", &mount(&data, &in_container, ":ro")])
            .args(["--volume", &mount(&model_dir, Path::new("/models"), "")])
            .args([
                "--env",
                &format!("GIT_COMMIT={}", training::git_commit(ctx)),
            ])
            .args(["--env", "LOG_FORMAT=json"])
            .arg(container.image)
            .args(args),
    )?;
    Ok(())
}

/// How long the new container gets to answer healthy on the service's ports in a hand-over.
const HAND_OVER_TIMEOUT: Duration = Duration::from_secs(60);

/// What `docker inspect` says of `container`, if it exists.
fn inspect(ctx: &Ctx, container: &str) -> Option<Value> {
    let text = ctx
        .runner
        .query_stdout(&Step::new("docker").args(["inspect", container]))?;
    let all: Value = serde_json::from_str(&text).ok()?;
    all.get(0).cloned()
}

/// Why `container` has stopped, if it has.
pub(super) fn container_exited(ctx: &Ctx, container: &str) -> Option<String> {
    let info = inspect(ctx, container)?;
    let state = &info["State"];
    match state["Status"].as_str()? {
        status @ ("exited" | "dead" | "restarting") => Some(format!(
            "the container is {status} (exit code {})",
            state["ExitCode"]
        )),
        _ => None,
    }
}

/// The last `lines` lines `container` logged.
pub(super) fn container_log_tail(ctx: &Ctx, container: &str, lines: usize) -> String {
    let step = Step::new("docker").args(["logs", "--tail", &lines.to_string(), container]);
    super::log_text(ctx, &step)
}

/// Removes `container`, running or not, with its anonymous volumes.
pub(super) fn remove_container(ctx: &Ctx, container: &str) -> Result<()> {
    ctx.runner
        .run(&Step::new("docker").args(["rm", "--force", "--volumes", container]))?;
    Ok(())
}

pub struct Docker {
    /// `docker compose` or `docker-compose`, found when first needed: `status` and `restart`
    /// never run compose, and the lookup costs a process.
    compose: OnceLock<Result<Vec<String>, String>>,
    engine: String,
}

/// Parses docker's `2026-11-26T07:49:01.123456789Z`; `None` for its zero time (year 1).
fn parse_time(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(text).ok()
}

impl Docker {
    /// Finds the engine, or says why none answers.
    pub fn detect(ctx: &Ctx) -> Result<Self> {
        Ok(Self {
            compose: OnceLock::new(),
            engine: engine::version(ctx)?,
        })
    }

    pub fn describe(&self) -> String {
        match self.compose.get() {
            Some(Ok(command)) => {
                format!("Docker Engine {} with {}", self.engine, command.join(" "))
            }
            _ => format!("Docker Engine {}", self.engine),
        }
    }

    /// The compose front-end, or what is missing.
    fn frontend(&self, ctx: &Ctx) -> Result<&[String]> {
        let found = self.compose.get_or_init(|| {
            engine::compose_frontend(ctx).map_err(|e| {
                format!(
                    "Docker Engine {} answers, but there is no compose front-end: {e:#}",
                    self.engine
                )
            })
        });
        match found {
            Ok(command) => Ok(command),
            Err(why) => anyhow::bail!("{why}"),
        }
    }

    fn compose(&self, ctx: &Ctx, args: &[&str]) -> Result<Step> {
        let frontend = self.frontend(ctx)?;
        let mut step = Step::new(&frontend[0])
            .args(&frontend[1..])
            .args(["-p", &ctx.project(), "-f"])
            .arg(ctx.root.join(compose_file::FILE))
            .args(args)
            .env("XTASK_STACK_DIR", &ctx.stack_dir)
            .cwd(&ctx.root);
        for (service, endpoint) in ctx.stack.endpoints() {
            step = step.env(
                &compose_file::port_variable(service, &endpoint),
                ctx.endpoint_port(&endpoint).to_string(),
            );
        }
        if ctx.stack_name.is_some() {
            step = step.env(compose_file::SUFFIX_VARIABLE, ctx.name_suffix());
        }
        if let Some(pg) = ctx.mlflow_backend.postgres() {
            // The URI and password reach compose through its environment, never the file.
            step = step.env(
                compose_file::BACKEND_STORE_VARIABLE,
                pg.uri_from_containers(),
            );
            for (key, value) in pg.env() {
                step = step.env(key, value);
            }
        }
        Ok(step)
    }

    /// The image the service's container runs (its ID), if it has a container.
    fn running_image(&self, ctx: &Ctx, service: &Service) -> Option<String> {
        let info = inspect(ctx, &ctx.container(service))?;
        info["Image"].as_str().map(str::to_owned)
    }

    /// Points the service's image tags back at the image its container runs, after a new
    /// version built under them was refused, and removes the refused image.
    fn restore_image(&self, ctx: &Ctx, service: &Service) {
        if let Some(running) = self.running_image(ctx, service) {
            Self::point_tags_at(ctx, service, &running);
        }
    }

    /// Points the service's image tags at `image`, and removes the image they named, when
    /// nothing else uses it.
    fn point_tags_at(ctx: &Ctx, service: &Service, image: &str) {
        let refused = engine::image_inspect(ctx, &service.versioned_image(), "{{.Id}}");
        if refused.as_deref() == Some(image) {
            return;
        }
        let revision = images::revision(ctx);
        for tag in [
            service.versioned_image(),
            format!("{}:{}", service.image(), revision.tag),
        ] {
            if let Err(e) = ctx
                .runner
                .run(&Step::new("docker").args(["tag", image, &tag]))
            {
                ctx.reporter
                    .warn(format!("{tag} still names the refused build: {e:#}"));
            }
        }
        if let Some(refused) = refused {
            images::remove_replaced(ctx, service, &refused);
        }
    }

    /// Starts the service's container from the image its tag names and waits until every
    /// endpoint answers healthy; on failure, why, with the container's last lines.
    fn start_live(&mut self, ctx: &Ctx, service: &Service) -> Result<(), String> {
        self.start(ctx, service).map_err(|e| format!("{e:#}"))?;
        let endpoints = service.endpoints();
        let healthy = poll::until(HAND_OVER_TIMEOUT, Duration::from_millis(10), || {
            if let Some(why) = self.exited(ctx, service) {
                return Some(Err(why));
            }
            endpoints
                .iter()
                .all(|e| {
                    let url = format!("http://127.0.0.1:{}{}", ctx.endpoint_port(e), e.health_path);
                    http::healthy(&url, Duration::from_secs(1))
                })
                .then_some(Ok(()))
        });
        let why = match healthy {
            Some(Ok(())) => return Ok(()),
            Some(Err(why)) => why,
            None => format!("it was not healthy within {HAND_OVER_TIMEOUT:?}"),
        };
        Err(format!(
            "{why}; its log:\n{}",
            self.log_tail(ctx, service, 15)
        ))
    }

    /// The container a candidate of `service` runs in: `bankchurn-api-candidate`.
    fn candidate_container(ctx: &Ctx, service: &Service) -> String {
        format!("{}-candidate", ctx.container(service))
    }

    /// Runs the service's image as built now in a one-off container of the compose service
    /// (its network, environment, volumes and limits) publishing each endpoint on a spare
    /// loopback port.
    fn run_candidate(&self, ctx: &Ctx, service: &Service) -> Result<Candidate> {
        let name = Self::candidate_container(ctx, service);
        if inspect(ctx, &name).is_some() {
            remove_container(ctx, &name)?;
        }
        let mut ports = Vec::new();
        let mut publish = Vec::new();
        for endpoint in service.endpoints() {
            // A port nothing listens on now, chosen by the system.
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            ports.push((endpoint.role, port));
            publish.push(format!("127.0.0.1:{port}:{}", endpoint.container_port));
        }
        let mut args = vec!["run", "--detach", "-T", "--no-deps", "--name", &name];
        for p in &publish {
            args.extend(["--publish", p]);
        }
        args.push(&service.name);
        ctx.runner.run(&self.compose(ctx, &args)?)?;
        Ok(Candidate {
            instance: Instance::Container { name },
            ports,
        })
    }

    fn remove(&self, ctx: &Ctx, service: &Service) -> Result<()> {
        remove_container(ctx, &ctx.container(service))
    }
}

impl Runtime for Docker {
    fn kind(&self) -> Kind {
        Kind::Docker
    }

    fn preflight(&self, ctx: &Ctx, services: &[&Service]) -> Result<()> {
        self.frontend(ctx)?;
        images::preflight(ctx, services, true)
            .map_err(|e| anyhow::anyhow!("Docker Engine {} answers, but {e:#}", self.engine))
    }

    fn artifacts(&self, _ctx: &Ctx) -> Result<Artifacts> {
        Ok(Artifacts::Images)
    }

    fn start(&mut self, ctx: &Ctx, service: &Service) -> Result<()> {
        if service.kind == ServiceKind::Mlflow {
            ctx.runner.create_dir(&ctx.mlruns_dir().join("artifacts"))?;
            writable_by_containers(ctx, &ctx.mlruns_dir())?;
        }
        // Removing first keeps docker-compose 1.29 from recreating (and crashing on) it.
        if inspect(ctx, &ctx.container(service)).is_some() {
            self.remove(ctx, service)?;
        }
        ctx.runner.run(&self.compose(
            ctx,
            &["up", "--detach", "--no-deps", "--no-build", &service.name],
        )?)?;
        Ok(())
    }

    fn exited(&mut self, ctx: &Ctx, service: &Service) -> Option<String> {
        container_exited(ctx, &ctx.container(service))
    }

    fn stop(&mut self, ctx: &Ctx, service: &Service) -> Result<bool> {
        if inspect(ctx, &ctx.container(service)).is_none() {
            return Ok(false);
        }
        ctx.runner.run(&Step::new("docker").args([
            "stop",
            "--time",
            &STOP_GRACE_SECONDS.to_string(),
            &ctx.container(service),
        ]))?;
        self.remove(ctx, service)?;
        Ok(true)
    }

    fn stop_shared(&mut self, ctx: &Ctx) -> Result<()> {
        ctx.runner
            .run(&self.compose(ctx, &["down", "--remove-orphans"])?)?;
        Ok(())
    }

    fn restart(&mut self, ctx: &Ctx, service: &Service) -> Result<()> {
        if inspect(ctx, &ctx.container(service)).is_none() {
            return self.start(ctx, service);
        }
        ctx.runner.run(&Step::new("docker").args([
            "restart",
            "--time",
            &STOP_GRACE_SECONDS.to_string(),
            &ctx.container(service),
        ]))?;
        Ok(())
    }

    fn state(&self, ctx: &Ctx, service: &Service) -> Result<ServiceState> {
        let Some(info) = inspect(ctx, &ctx.container(service)) else {
            return Ok(ServiceState::default());
        };
        let state = &info["State"];
        let mut ports = Vec::new();
        if let Some(map) = info["NetworkSettings"]["Ports"].as_object() {
            for (inner, bindings) in map {
                for b in bindings.as_array().into_iter().flatten() {
                    ports.push(format!(
                        "{}:{}->{inner}",
                        b["HostIp"].as_str().unwrap_or(""),
                        b["HostPort"].as_str().unwrap_or("")
                    ));
                }
            }
        }
        let health = &state["Health"];
        Ok(ServiceState {
            running: state["Running"] == true,
            since: state["StartedAt"].as_str().and_then(parse_time),
            id: info["Id"].as_str().unwrap_or("").chars().take(12).collect(),
            ports: ports.join(", "),
            health: health["Status"].as_str().map(str::to_owned),
            health_log: health["Log"]
                .as_array()
                .and_then(|l| l.last())
                .and_then(|l| l["Output"].as_str())
                .map(|s| s.trim().to_owned()),
        })
    }

    fn reload(&self, ctx: &Ctx, service: &Service) -> Result<bool> {
        if !self.state(ctx, service)?.running {
            return Ok(false);
        }
        // Not `docker kill --signal HUP`: Docker 20.10 then counts the container as stopped by
        // hand, and its restart policy no longer brings it back after a crash.
        ctx.runner.run(&Step::new("docker").args([
            "exec",
            &ctx.container(service),
            compose_file::API_BINARY,
            "reload",
        ]))?;
        Ok(true)
    }

    fn train(
        &mut self,
        ctx: &Ctx,
        service: &Service,
        data: &Path,
        seed: u64,
        tracking: &Tracking,
        extra: &[String],
    ) -> Result<()> {
        if !engine::image_exists(ctx, &service.versioned_image()) {
            images::build(ctx, &[service])?;
        }
        train_in_container(
            ctx,
            &TrainingContainer {
                service,
                image: &service.versioned_image(),
                network: &ctx.network(),
            },
            data,
            seed,
            tracking,
            extra,
        )
    }

    fn backup_database(&self, ctx: &Ctx, dest: &Path) -> Result<bool> {
        let mlflow = ctx.stack.mlflow();
        if !self.state(ctx, mlflow)?.running {
            return Ok(false);
        }
        let name = dest
            .strip_prefix(ctx.mlruns_dir())
            .context("the database copy must go inside mlruns/")?;
        let inside = Path::new(MLRUNS_IN_CONTAINER).join(name);
        ctx.runner.run(
            &Step::new("docker")
                .args(["exec", &ctx.container(mlflow)])
                .arg(format!("{}/bin/python", compose_file::MLFLOW_VENV))
                .args(["-c", SQLITE_BACKUP])
                .arg(format!(
                    "{MLRUNS_IN_CONTAINER}/{}",
                    mlflow_command::STORE_FILE
                ))
                .arg(inside),
        )?;
        Ok(true)
    }

    fn mlflow_python(&mut self, ctx: &Ctx) -> Result<(Step, String)> {
        let mlflow = ctx.stack.mlflow();
        if !engine::image_exists(ctx, &mlflow.versioned_image()) {
            images::build(ctx, &[mlflow])?;
        }
        let mlruns = ctx.mlruns_dir();
        writable_by_containers(ctx, &mlruns)?;
        let step = Step::new("docker")
            .args([
                "run",
                "--rm",
                "--network",
                "none",
                "--user",
                compose_file::USER,
            ])
            .args([
                "--volume",
                &format!("{}:{MLRUNS_IN_CONTAINER}", mlruns.display()),
            ])
            .args([
                "--entrypoint",
                &format!("{}/bin/python", compose_file::MLFLOW_VENV),
            ])
            .arg(mlflow.versioned_image());
        let store = format!("{MLRUNS_IN_CONTAINER}/{}", mlflow_command::STORE_FILE);
        Ok((step, store))
    }

    fn is_stale(&self, ctx: &Ctx, service: &Service) -> bool {
        let Some(info) = inspect(ctx, &ctx.container(service)) else {
            return false;
        };
        let image_changed = engine::image_inspect(ctx, &service.versioned_image(), "{{.Id}}")
            .is_some_and(|id| info["Image"].as_str() != Some(id.as_str()));
        let started = info["State"]["StartedAt"].as_str().and_then(parse_time);
        let model_changed = service.is_api()
            && std::fs::metadata(ctx.model_file(service))
                .and_then(|m| m.modified())
                .is_ok_and(|m| started.is_some_and(|s| m > s));
        image_changed || model_changed
    }

    fn swaps_candidates(&self) -> bool {
        true
    }

    /// Packages the binary `dev` has just built into the service's image (its tags move to
    /// it; the running container keeps the image it was started from) and runs it beside the
    /// service's container.
    fn start_candidate(&mut self, ctx: &Ctx, service: &Service) -> Result<Candidate> {
        images::package(ctx, service)?;
        self.run_candidate(ctx, service).inspect_err(|_| {
            let name = Self::candidate_container(ctx, service);
            let _ = remove_container(ctx, &name);
            self.restore_image(ctx, service);
        })
    }

    fn end_candidate(
        &mut self,
        ctx: &Ctx,
        service: &Service,
        candidate: Candidate,
        passed: bool,
    ) -> Result<()> {
        let stopped = candidate.stop(ctx);
        if !passed {
            self.restore_image(ctx, service);
        }
        stopped
    }

    /// Replaces the service's container with one of its image as built now: the old one
    /// drains its requests and stops, then compose starts the new one on the same ports.
    /// Ports published by docker cannot be shared, so the gap lasts from the old one's exit
    /// to the new one's first answer.
    ///
    /// A new container that fails there (the candidate passed, but the live one need not)
    /// gives the port back to the previous version: the tags go back to its image and it
    /// starts again, so a failed swap costs a longer gap, not the service.
    fn hand_over(&mut self, ctx: &Ctx, service: &Service) -> Result<()> {
        let previous = self.running_image(ctx, service);
        self.stop(ctx, service)?;
        let why = match self.start_live(ctx, service) {
            Ok(()) => {
                if let Some(previous) = previous {
                    images::remove_replaced(ctx, service, &previous);
                }
                return Ok(());
            }
            Err(why) => why,
        };
        let name = &service.name;
        let Some(previous) = previous else {
            anyhow::bail!(
                "the new container of {name} failed after the old one stopped, and there is no \
                 previous image to go back to: {why}"
            );
        };
        // The failed container goes first, so nothing holds the refused image.
        if let Err(e) = self.remove(ctx, service) {
            ctx.reporter.warn(format!("{e:#}"));
        }
        Self::point_tags_at(ctx, service, &previous);
        match self.start_live(ctx, service) {
            Ok(()) => anyhow::bail!(
                "the new container of {name} failed after the old one stopped, so the previous \
                 version serves again: {why}"
            ),
            Err(again) => anyhow::bail!(
                "the new container of {name} failed after the old one stopped ({why}), and the \
                 previous version did not start again either: {again}\n`cargo xtask restart \
                 {name}` starts it once the cause is fixed"
            ),
        }
    }

    fn log_tail(&self, ctx: &Ctx, service: &Service, lines: usize) -> String {
        container_log_tail(ctx, &ctx.container(service), lines)
    }

    fn logs(
        &self,
        ctx: &Ctx,
        services: &[&Service],
        follow: bool,
        tail: Option<usize>,
    ) -> Result<()> {
        let tail = tail.map(|n| n.to_string());
        let mut args = vec!["logs", "--no-color"];
        if follow {
            args.push("--follow");
        }
        if let Some(n) = &tail {
            args.extend(["--tail", n]);
        }
        args.extend(services.iter().map(|s| s.name.as_str()));
        ctx.runner.run_attached(&self.compose(ctx, &args)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_timestamps() {
        let t = parse_time("2026-11-26T07:49:01.5Z").unwrap();
        let secs = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert_eq!(secs, 1_795_679_341.5);
        assert!(parse_time("0001-01-01T00:00:00Z").is_none());
    }
}

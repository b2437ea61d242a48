//! The docker runtime: the images of `cargo xtask images`, run as the compose project of
//! `compose/docker-compose.demo.yml` with either front-end (the v2 plugin or docker-compose
//! 1.29). Containers are removed before they are created again (1.29 can crash recreating
//! them), and health is read from `docker inspect`, not from compose's `--wait`.

use std::time::SystemTime;

use anyhow::Result;
use serde_json::Value;

use super::{Kind, Runtime, ServiceState};
use crate::build::images;
use crate::compose_file::{self, PROJECT};
use crate::ctx::Ctx;
use crate::engine;
use crate::runner::Step;
use crate::stack::{Kind as ServiceKind, Service, STOP_GRACE_SECONDS};

pub struct Docker {
    /// `docker compose` or `docker-compose`.
    compose: Vec<String>,
    engine: String,
}

/// Parses docker's `2026-11-26T07:49:01.123456789Z`; `None` for its zero time (year 1).
fn parse_time(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(text).ok()
}

impl Docker {
    /// Finds the engine and a compose front-end, or says what is missing.
    pub fn detect(ctx: &Ctx) -> Result<Self> {
        let engine = engine::version(ctx)?;
        let compose = engine::compose_frontend(ctx).map_err(|e| {
            e.context(format!(
                "Docker Engine {engine} answers, but there is no compose front-end"
            ))
        })?;
        Ok(Self { compose, engine })
    }

    pub fn describe(&self) -> String {
        format!(
            "Docker Engine {} with {}",
            self.engine,
            self.compose.join(" ")
        )
    }

    fn compose(&self, ctx: &Ctx, args: &[&str]) -> Step {
        let mut step = Step::new(&self.compose[0])
            .args(&self.compose[1..])
            .args(["-p", PROJECT, "-f"])
            .arg(ctx.root.join(compose_file::FILE))
            .args(args)
            .env("XTASK_STACK_DIR", &ctx.stack_dir)
            .cwd(&ctx.root);
        for service in &ctx.stack.services {
            step = step.env(
                &compose_file::port_variable(service),
                ctx.host_port(service).to_string(),
            );
        }
        step
    }

    fn inspect(&self, ctx: &Ctx, container: &str) -> Option<Value> {
        let text = ctx
            .runner
            .query_stdout(&Step::new("docker").args(["inspect", container]))?;
        let all: Value = serde_json::from_str(&text).ok()?;
        all.get(0).cloned()
    }

    /// The containers run as an unprivileged user: MLflow must be able to write its store.
    fn prepare_mlruns(&self, ctx: &Ctx) -> Result<()> {
        let mlruns = ctx.mlruns_dir();
        ctx.runner.create_dir(&mlruns.join("artifacts"))?;
        if rustix::process::geteuid().is_root() {
            ctx.runner.run(
                &Step::new("chown")
                    .args(["-R", compose_file::USER])
                    .arg(&mlruns),
            )?;
        } else {
            // Not root: open the folders to the container's user instead.
            ctx.runner
                .run(&Step::new("chmod").args(["-R", "a+rwX"]).arg(&mlruns))?;
        }
        Ok(())
    }

    fn remove(&self, ctx: &Ctx, service: &Service) -> Result<()> {
        ctx.runner.run(&Step::new("docker").args([
            "rm",
            "--force",
            "--volumes",
            &service.container,
        ]))?;
        Ok(())
    }
}

impl Runtime for Docker {
    fn kind(&self) -> Kind {
        Kind::Docker
    }

    fn preflight(&self, ctx: &Ctx, services: &[&Service]) -> Result<()> {
        images::preflight(ctx, services, true)
            .map_err(|e| e.context(format!("Docker Engine {} answers, but", self.engine)))
    }

    fn build(&mut self, ctx: &Ctx, services: &[&Service]) -> Result<()> {
        images::build(ctx, services).map(|_| ())
    }

    fn start(&mut self, ctx: &Ctx, service: &Service) -> Result<()> {
        if service.kind == ServiceKind::Mlflow {
            self.prepare_mlruns(ctx)?;
        }
        // Removing first keeps docker-compose 1.29 from recreating (and crashing on) it.
        if self.inspect(ctx, &service.container).is_some() {
            self.remove(ctx, service)?;
        }
        ctx.runner.run(&self.compose(
            ctx,
            &["up", "--detach", "--no-deps", "--no-build", &service.name],
        ))?;
        Ok(())
    }

    fn exited(&mut self, ctx: &Ctx, service: &Service) -> Option<String> {
        let info = self.inspect(ctx, &service.container)?;
        let state = &info["State"];
        match state["Status"].as_str()? {
            status @ ("exited" | "dead" | "restarting") => Some(format!(
                "the container is {status} (exit code {})",
                state["ExitCode"]
            )),
            _ => None,
        }
    }

    fn stop(&mut self, ctx: &Ctx, service: &Service) -> Result<bool> {
        if self.inspect(ctx, &service.container).is_none() {
            return Ok(false);
        }
        ctx.runner.run(&Step::new("docker").args([
            "stop",
            "--time",
            &STOP_GRACE_SECONDS.to_string(),
            &service.container,
        ]))?;
        self.remove(ctx, service)?;
        Ok(true)
    }

    fn stop_shared(&mut self, ctx: &Ctx) -> Result<()> {
        ctx.runner
            .run(&self.compose(ctx, &["down", "--remove-orphans"]))?;
        Ok(())
    }

    fn restart(&mut self, ctx: &Ctx, service: &Service) -> Result<()> {
        if self.inspect(ctx, &service.container).is_none() {
            return self.start(ctx, service);
        }
        ctx.runner.run(&Step::new("docker").args([
            "restart",
            "--time",
            &STOP_GRACE_SECONDS.to_string(),
            &service.container,
        ]))?;
        Ok(())
    }

    fn state(&self, ctx: &Ctx, service: &Service) -> Result<ServiceState> {
        let Some(info) = self.inspect(ctx, &service.container) else {
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

    fn is_stale(&self, ctx: &Ctx, service: &Service) -> bool {
        let Some(info) = self.inspect(ctx, &service.container) else {
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

    fn log_tail(&self, ctx: &Ctx, service: &Service, lines: usize) -> String {
        let step =
            Step::new("docker").args(["logs", "--tail", &lines.to_string(), &service.container]);
        match ctx.runner.query(&step) {
            Ok(out) => format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => format!("(no logs: {e:#})"),
        }
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
        ctx.runner.run_attached(&self.compose(ctx, &args))
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

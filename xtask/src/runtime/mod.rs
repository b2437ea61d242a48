//! Where the stack runs: host processes (`local`) or containers (`docker`). Commands talk to a
//! [`Runtime`]; health, smoke and the orchestration in `up` are the same for both.

use std::time::SystemTime;

use anyhow::Result;
use clap::ValueEnum;

use crate::ctx::Ctx;
use crate::stack::Service;

pub mod docker;
pub mod local;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Choice {
    /// Docker when an engine answers, else local processes.
    Auto,
    Docker,
    Local,
}

/// What a runtime knows about one service.
#[derive(Debug, Clone, Default)]
pub struct ServiceState {
    pub running: bool,
    pub since: Option<SystemTime>,
    /// A pid or a container id.
    pub id: String,
    /// How it is published, e.g. `127.0.0.1:8001` or `127.0.0.1:8001->8000/tcp`.
    pub ports: String,
    /// The runtime's own health verdict (docker's healthcheck), where it has one.
    pub health: Option<String>,
    /// The output of the last health check, where the runtime keeps it.
    pub health_log: Option<String>,
}

pub trait Runtime {
    fn name(&self) -> &'static str;
    /// Makes what `services` run from: binaries, virtual environments, images.
    fn build(&mut self, ctx: &Ctx, services: &[&Service]) -> Result<()>;
    /// Starts one service without waiting for it to be healthy.
    fn start(&mut self, ctx: &Ctx, service: &Service) -> Result<()>;
    /// Why the service has stopped already, if it has (checked while waiting for health).
    fn exited(&mut self, ctx: &Ctx, service: &Service) -> Option<String>;
    /// Restarts one service in place (the runbook's `docker restart`), without waiting.
    fn restart(&mut self, ctx: &Ctx, service: &Service) -> Result<()> {
        self.stop(ctx, service)?;
        self.start(ctx, service)
    }
    /// Stops one service; `Ok(false)` if it was not running.
    fn stop(&mut self, ctx: &Ctx, service: &Service) -> Result<bool>;
    /// Cleans up what the whole stack shares (a network), after every service stopped.
    fn stop_shared(&mut self, _ctx: &Ctx) -> Result<()> {
        Ok(())
    }
    fn state(&self, ctx: &Ctx, service: &Service) -> Result<ServiceState>;
    /// Whether a running service predates what it runs from, and must restart to pick it up.
    fn is_stale(&self, ctx: &Ctx, service: &Service) -> bool;
    fn log_tail(&self, ctx: &Ctx, service: &Service, lines: usize) -> String;
    fn logs(
        &self,
        ctx: &Ctx,
        services: &[&Service],
        follow: bool,
        tail: Option<usize>,
    ) -> Result<()>;
}

/// Picks the runtime, saying which and why.
pub fn select(ctx: &Ctx, choice: Choice) -> Result<Box<dyn Runtime>> {
    match choice {
        Choice::Local => Ok(Box::new(local::Local::default())),
        Choice::Docker => {
            let docker = docker::Docker::detect(ctx).map_err(|e| {
                e.context(
                    "--runtime docker needs a Docker engine; `--runtime local` runs without one",
                )
            })?;
            ctx.reporter
                .detail(format!("runtime: docker ({})", docker.describe()));
            Ok(Box::new(docker))
        }
        Choice::Auto => {
            let local = local::Local::default();
            if ctx
                .stack
                .services
                .iter()
                .any(|s| local.state(ctx, s).is_ok_and(|st| st.running))
            {
                ctx.reporter
                    .info("runtime: local (a local stack is running; --runtime docker to choose)");
                return Ok(Box::new(local));
            }
            match docker::Docker::detect(ctx) {
                Ok(docker) => {
                    ctx.reporter.info(format!(
                        "runtime: docker ({}; --runtime local to choose)",
                        docker.describe()
                    ));
                    Ok(Box::new(docker))
                }
                Err(why) => {
                    ctx.reporter.info(format!("runtime: local ({why:#})"));
                    Ok(Box::new(local))
                }
            }
        }
    }
}

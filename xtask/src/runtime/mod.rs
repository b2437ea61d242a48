//! Where the stack runs: host processes (`local`) or containers (`docker`). Commands talk to a
//! [`Runtime`]; what is the same on both sits beside them: bringing the stack up (`lifecycle`),
//! status, health and smoke checks (`observe`), port holders (`ports`), training
//! (`training`), the MLflow server on the host (`mlflow_server`) and its store's schema
//! (`mlflow_store`).

use std::path::Path;
use std::time::SystemTime;

use anyhow::Result;
use clap::ValueEnum;

use crate::ctx::Ctx;
use crate::runner::Step;
use crate::runtime::training::Tracking;
use crate::stack::Service;

pub mod docker;
pub mod lifecycle;
pub mod local;
pub mod mlflow_server;
pub mod mlflow_store;
pub mod observe;
pub mod ports;
pub mod swarm;
pub mod training;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Choice {
    /// Docker when an engine answers and the images can be built, else local processes.
    Auto,
    Docker,
    Local,
    /// A Docker Swarm stack, on the manager DOCKER_HOST names (`cargo xtask deploy swarm`
    /// puts it there; never chosen by `auto`).
    Swarm,
}

/// Which runtime a [`Runtime`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Local,
    Docker,
    Swarm,
}

/// What the command will do with the runtime: decides which prerequisites are checked before
/// anything long starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Build and start these services (`demo`, `up`, `restart`).
    Run,
    /// Look at or stop what runs (`status`, `logs`, `down`, `doctor`).
    Inspect,
}

/// SQLite's online backup API, from Python's standard library: `SCRIPT SOURCE DEST`.
pub const SQLITE_BACKUP: &str = "import sqlite3, sys\n\
src = sqlite3.connect(f'file:{sys.argv[1]}?mode=ro', uri=True)\n\
dst = sqlite3.connect(sys.argv[2])\n\
src.backup(dst)\n\
dst.close()\n\
src.close()\n";

/// What a log command (`docker logs`, `docker service logs`) printed on both its streams,
/// or why it could not run: a log tail shown beside a failure.
fn log_text(ctx: &Ctx, step: &Step) -> String {
    match ctx.runner.query(step) {
        Ok(out) => format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => format!("(no logs: {e:#})"),
    }
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

/// A new version of an API serving on spare ports beside the running one.
pub struct Candidate {
    pub instance: Instance,
    /// The spare port of each endpoint, by role (`None`: the API's own).
    pub ports: Vec<(Option<&'static str>, u16)>,
}

/// What runs a [`Candidate`]: a process on the host, or a container beside the service's.
pub enum Instance {
    Process {
        child: Box<crate::runner::Background>,
        log: std::path::PathBuf,
    },
    Container {
        name: String,
    },
}

impl Candidate {
    pub fn port(&self, endpoint: &crate::stack::Endpoint) -> u16 {
        self.ports
            .iter()
            .find(|(role, _)| *role == endpoint.role)
            .map_or(0, |(_, port)| *port)
    }

    /// Why the candidate has stopped already, if it has.
    pub fn exited(&self, ctx: &Ctx) -> Option<String> {
        match &self.instance {
            Instance::Process { child, .. } => child.exited(),
            Instance::Container { name } => docker::container_exited(ctx, name),
        }
    }

    /// The last `lines` lines of the candidate's log.
    pub fn log_tail(&self, ctx: &Ctx, lines: usize) -> String {
        match &self.instance {
            Instance::Process { log, .. } => {
                crate::runner::tail(&std::fs::read_to_string(log).unwrap_or_default(), lines)
            }
            Instance::Container { name } => docker::container_log_tail(ctx, name, lines),
        }
    }

    /// Stops the candidate and removes what it ran in (its container).
    pub fn stop(&self, ctx: &Ctx) -> Result<()> {
        match &self.instance {
            Instance::Process { child, .. } => {
                ctx.runner.stop_group(
                    child.pid(),
                    std::time::Duration::from_secs(5),
                    Some(child),
                )?;
            }
            Instance::Container { name } => docker::remove_container(ctx, name)?,
        }
        Ok(())
    }
}

/// What a runtime's services run from. A value of its own rather than a method taking the
/// runtime, so that one part is built on a thread beside the runtime starting another part that
/// is ready: MLflow starts while the APIs' release build goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Artifacts {
    /// The APIs' binaries and MLflow's virtual environment, on the host.
    Host,
    /// The container images (the APIs' from their binaries).
    Images,
    /// Released images by digest, which a swarm runs: nothing is built here.
    Released,
}

impl Artifacts {
    /// Makes what `services` run from.
    pub fn build(self, ctx: &Ctx, services: &[&Service]) -> Result<()> {
        if services.is_empty() {
            return Ok(());
        }
        match self {
            Self::Host => local::build(ctx, services),
            Self::Images => crate::build::images::build(ctx, services).map(|_| ()),
            Self::Released => Ok(()),
        }
    }
}

pub trait Runtime {
    fn kind(&self) -> Kind;
    fn name(&self) -> &'static str {
        match self.kind() {
            Kind::Local => "local",
            Kind::Docker => "docker",
            Kind::Swarm => "swarm",
        }
    }
    /// Checks, in seconds, that everything building and starting `services` needs is here;
    /// says what is missing and how to get it.
    fn preflight(&self, ctx: &Ctx, services: &[&Service]) -> Result<()>;
    /// What the services run from: binaries, virtual environments, images; an error when this
    /// runtime cannot have them (a swarm with no stack deployed).
    fn artifacts(&self, ctx: &Ctx) -> Result<Artifacts>;
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
    /// Asks a running API to load its model again (SIGHUP); `Ok(false)` if it is not running.
    fn reload(&self, ctx: &Ctx, service: &Service) -> Result<bool>;
    /// Trains the service's model on `data` (a file on the host) where the service runs: a
    /// host process, or a one-off container of its image with the data mounted read-only and
    /// the model directory its only writable mount. `tracking` names MLflow as the host
    /// reaches it; `extra` goes to `train` as it is (e.g. gate flags).
    fn train(
        &mut self,
        ctx: &Ctx,
        service: &Service,
        data: &Path,
        seed: u64,
        tracking: &Tracking,
        extra: &[String],
    ) -> Result<()>;
    /// Copies MLflow's SQLite database to `dest` (inside the stack's `mlruns/`) while the
    /// server runs, through SQLite's online backup in the server's own Python: a consistent
    /// copy. `Ok(false)` when MLflow is not running (a plain copy is then consistent).
    fn backup_database(&self, ctx: &Ctx, dest: &Path) -> Result<bool>;
    /// MLflow's Python as a one-off process beside the stack's store, never the server: the
    /// managed virtual environment on the host, or a container of MLflow's image with
    /// `mlruns/` mounted and no network. Returns it with the store's path as it sees it.
    /// Builds what it runs from if missing.
    fn mlflow_python(&mut self, ctx: &Ctx) -> Result<(Step, String)>;
    /// Whether a running service predates what it runs from, and must restart to pick it up.
    fn is_stale(&self, ctx: &Ctx, service: &Service) -> bool;
    fn log_tail(&self, ctx: &Ctx, service: &Service, lines: usize) -> String;
    /// Whether [`Runtime::start_candidate`] and [`Runtime::hand_over`] work here: what `dev`
    /// needs.
    fn swaps_candidates(&self) -> bool {
        false
    }
    /// Starts the API's binary as built now beside the running version, on spare ports, for
    /// `dev` to check before [`Runtime::hand_over`] puts it live.
    fn start_candidate(&mut self, _ctx: &Ctx, service: &Service) -> Result<Candidate> {
        anyhow::bail!(
            "the {} runtime cannot run a new version of {} beside the old one yet: use --runtime local or docker",
            self.name(),
            service.name
        )
    }
    /// Stops a candidate once checked; `passed` says whether [`Runtime::hand_over`] follows.
    /// One that failed leaves everything as it was before [`Runtime::start_candidate`].
    fn end_candidate(
        &mut self,
        ctx: &Ctx,
        _service: &Service,
        candidate: Candidate,
        _passed: bool,
    ) -> Result<()> {
        candidate.stop(ctx)
    }
    /// Puts the API's binary as built now on the service's ports in place of the running
    /// version, with the shortest gap the runtime allows, the old version draining its
    /// requests. On failure the old version keeps serving.
    fn hand_over(&mut self, _ctx: &Ctx, service: &Service) -> Result<()> {
        anyhow::bail!(
            "the {} runtime cannot swap {} in place yet: use --runtime local or docker",
            self.name(),
            service.name
        )
    }
    /// A table of every task, where a service runs as several (a swarm): `status` prints it
    /// under the services'.
    fn tasks_table(&self, _ctx: &Ctx) -> Option<String> {
        None
    }
    fn logs(
        &self,
        ctx: &Ctx,
        services: &[&Service],
        follow: bool,
        tail: Option<usize>,
    ) -> Result<()>;
}

/// Picks the runtime, saying which and why. For [`Purpose::Run`], the prerequisites of
/// building and starting `services` are checked first: `auto` falls back to the local runtime
/// when the container path cannot be completed, an explicit `docker` fails right away.
pub fn select(
    ctx: &Ctx,
    choice: Choice,
    purpose: Purpose,
    services: &[&Service],
) -> Result<Box<dyn Runtime>> {
    let local = || -> Result<Box<dyn Runtime>> {
        let local = local::Local::default();
        if purpose == Purpose::Run {
            local.preflight(ctx, services)?;
        }
        Ok(Box::new(local))
    };
    if let (Some(pg), Choice::Swarm) = (ctx.mlflow_backend.postgres(), choice) {
        pg.check_reachable_by_every_node()?;
    }
    match choice {
        Choice::Local => local(),
        Choice::Docker => {
            let docker = docker::Docker::detect(ctx).map_err(|e| {
                e.context(
                    "--runtime docker needs a Docker engine; `--runtime local` runs without one",
                )
            })?;
            if purpose == Purpose::Run {
                docker.preflight(ctx, services)?;
            }
            ctx.reporter
                .detail(format!("runtime: docker ({})", docker.describe()));
            Ok(Box::new(docker))
        }
        Choice::Swarm => {
            let swarm = swarm::Swarm::detect(ctx)?;
            ctx.reporter.detail(format!(
                "runtime: swarm (stack {} on Docker Engine {})",
                swarm.stack, swarm.engine
            ));
            Ok(Box::new(swarm))
        }
        Choice::Auto => {
            if local::Local::default().any_running(ctx) {
                ctx.reporter
                    .info("runtime: local (a local stack is running; --runtime docker to choose)");
                return local();
            }
            let docker = match docker::Docker::detect(ctx) {
                Ok(docker) => docker,
                Err(why) => {
                    ctx.reporter.info(format!("runtime: local ({why:#})"));
                    return local();
                }
            };
            if purpose == Purpose::Run {
                if let Err(why) = docker.preflight(ctx, services) {
                    ctx.reporter.info(format!(
                        "runtime: local, not docker: {why:#}. To run containers, fix that and pass --runtime docker"
                    ));
                    return local();
                }
            }
            ctx.reporter.info(format!(
                "runtime: docker ({}; --runtime local to choose)",
                docker.describe()
            ));
            Ok(Box::new(docker))
        }
    }
}

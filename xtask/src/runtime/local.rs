//! The local runtime: each service a host process in its own process group, with a pid file and
//! a log file under the stack's `.xtask/` directory.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};

use rustix::process::Signal;

use super::{Artifacts, Candidate, Instance, Kind, Runtime, ServiceState, SQLITE_BACKUP};
use crate::build::binaries::{self, Profile};
use crate::ctx::Ctx;
use crate::runner::{tail, Background, Step, Stopped};
use crate::runtime::mlflow_server;
use crate::runtime::training::{self, Tracking};
use crate::stack::{Endpoint, Kind as ServiceKind, Service, STOP_GRACE_SECONDS};
use crate::util::poll;

/// How often `logs -f` looks at the logs' lengths, and how long it waits at most before it
/// reads them anyway.
const FOLLOW_EVERY: Duration = Duration::from_millis(200);
const FOLLOW_WAKE_UP: Duration = Duration::from_secs(60);

/// How long a service gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(STOP_GRACE_SECONDS);

#[derive(Default)]
pub struct Local {
    /// Children started by this invocation, so an early exit is noticed (and reaped).
    children: HashMap<String, Background>,
}

/// What a pid file records.
struct PidFile {
    pid: u32,
    program: String,
    written: SystemTime,
}

fn pid_path(ctx: &Ctx, service: &Service) -> PathBuf {
    ctx.state_dir()
        .join("run")
        .join(format!("{}.pid", service.name))
}

fn read_pid_file(path: &Path) -> Option<PidFile> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    let pid = lines.next()?.trim().parse().ok()?;
    let program = lines.next().unwrap_or_default().to_owned();
    let written = std::fs::metadata(path).and_then(|m| m.modified()).ok()?;
    Some(PidFile {
        pid,
        program,
        written,
    })
}

/// Builds what `services` run from on the host: the APIs' binaries, and MLflow's virtual
/// environment (`bring_up` builds the two beside each other).
pub fn build(ctx: &Ctx, services: &[&Service]) -> Result<()> {
    let apis: Vec<&Service> = services.iter().copied().filter(|s| s.is_api()).collect();
    binaries::build(ctx, &apis)?;
    if services.iter().any(|s| s.kind == ServiceKind::Mlflow) {
        mlflow_server::ensure_installed(ctx)?;
    }
    Ok(())
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Local {
    fn running(&self, ctx: &Ctx, service: &Service) -> Option<PidFile> {
        read_pid_file(&pid_path(ctx, service))
            .filter(|p| ctx.runner.running(p.pid, &p.program).is_some())
    }

    /// Whether any service of the stack runs as a local process.
    pub fn any_running(&self, ctx: &Ctx) -> bool {
        ctx.stack
            .services
            .iter()
            .any(|s| self.running(ctx, s).is_some())
    }

    /// The service on its own ports, an API from the binary `profile` builds.
    fn start_step(ctx: &Ctx, service: &Service, profile: Profile) -> Step {
        match service.kind {
            ServiceKind::Mlflow => mlflow_server::server_step(ctx, service),
            ServiceKind::Api => Self::api_step(ctx, service, profile, &|e| ctx.endpoint_port(e)),
        }
    }

    /// An API serving on `port_of` each endpoint. Its ports are bound with SO_REUSEPORT, so
    /// `dev` can start the next version on them before this one lets go.
    fn api_step(
        ctx: &Ctx,
        service: &Service,
        profile: Profile,
        port_of: &dyn Fn(&Endpoint) -> u16,
    ) -> Step {
        let endpoints = service.endpoints();
        let mut step = binaries::serve_step_of(
            ctx,
            service,
            profile,
            port_of(&endpoints[0]),
            &ctx.model_dir(service),
        )
        .arg("--reuse-port")
        .env("MLFLOW_TRACKING_URI", ctx.url(ctx.stack.mlflow(), ""))
        .cwd(&ctx.stack_dir);
        for endpoint in endpoints.iter().filter(|e| e.role.is_some()) {
            step = step.args([
                format!("--{}-port", endpoint.role.unwrap_or_default()),
                port_of(endpoint).to_string(),
            ]);
        }
        step
    }

    /// The profile of the build a running API serves from.
    fn build_of(&self, ctx: &Ctx, service: &Service, running: &PidFile) -> Option<Profile> {
        if !service.is_api() {
            return None;
        }
        [Profile::Release, Profile::DevLoop].into_iter().find(|p| {
            binaries::path_of(ctx, service, *p).to_string_lossy() == running.program.as_str()
        })
    }

    /// The profile of the build a running API serves from, if it is not this command's: `dev`
    /// runs the dev-loop build, every other command the release one.
    fn other_build(&self, ctx: &Ctx, service: &Service) -> Option<Profile> {
        let running = self.running(ctx, service)?;
        self.build_of(ctx, service, &running)
            .filter(|p| *p != ctx.build)
    }

    fn start_with(&mut self, ctx: &Ctx, service: &Service, profile: Profile) -> Result<()> {
        let step = Self::start_step(ctx, service, profile);
        if service.kind == ServiceKind::Mlflow {
            ctx.runner.create_dir(&ctx.mlruns_dir())?;
        }
        let log = ctx.log_path(service);
        let Some(child) = ctx.runner.spawn_service(&step, &log)? else {
            return Ok(());
        };
        let pid = child.pid();
        let pid_file = pid_path(ctx, service);
        std::fs::create_dir_all(pid_file.parent().expect("pid files live in a folder"))?;
        std::fs::write(&pid_file, format!("{pid}\n{}\n", step.program))
            .with_context(|| format!("cannot write {}", pid_file.display()))?;
        self.children.insert(service.name.clone(), child);
        Ok(())
    }
}

/// How long a new version gets to listen on the service's ports during a hand-over.
const HAND_OVER_TIMEOUT: Duration = Duration::from_secs(30);

impl Runtime for Local {
    fn kind(&self) -> Kind {
        Kind::Local
    }

    fn preflight(&self, ctx: &Ctx, services: &[&Service]) -> Result<()> {
        if services.iter().any(|s| s.kind == ServiceKind::Mlflow)
            && !mlflow_server::is_installed(ctx)
        {
            mlflow_server::check_python(ctx)?;
        }
        Ok(())
    }

    fn artifacts(&self, _ctx: &Ctx) -> Result<Artifacts> {
        Ok(Artifacts::Host)
    }

    fn start(&mut self, ctx: &Ctx, service: &Service) -> Result<()> {
        self.start_with(ctx, service, ctx.build)
    }

    /// As `docker restart` restarts the same image: an API keeps the build it ran (the
    /// dev-loop one `dev` put live stays until `up` puts the release build back), and says so.
    fn restart(&mut self, ctx: &Ctx, service: &Service) -> Result<()> {
        let build = self.other_build(ctx, service);
        self.stop(ctx, service)?;
        match build {
            Some(profile) => {
                ctx.reporter.info(format!(
                    "{} restarts on the {} build it ran (`cargo xtask up` puts the {} build back)",
                    service.name,
                    profile.name(),
                    ctx.build.name()
                ));
                self.start_with(ctx, service, profile)
            }
            None => self.start(ctx, service),
        }
    }

    fn exited(&mut self, _ctx: &Ctx, service: &Service) -> Option<String> {
        self.children.get(&service.name)?.exited()
    }

    fn stop(&mut self, ctx: &Ctx, service: &Service) -> Result<bool> {
        let path = pid_path(ctx, service);
        let Some(pid_file) = read_pid_file(&path) else {
            return Ok(false);
        };
        // The service leads its own process group: stopping the group reaches its children.
        let pgid = pid_file.pid;
        let child = self.children.remove(&service.name);
        let alive = ctx.runner.running(pgid, &pid_file.program).is_some() || child.is_some();
        ctx.runner
            .plan(format!("kill -TERM -{pgid}  # {}", service.name));
        if ctx.dry_run() {
            return Ok(alive);
        }
        if alive && ctx.runner.stop_group(pgid, STOP_GRACE, child.as_ref())? == Stopped::Killed {
            ctx.reporter.warn(format!(
                "{} ignored SIGTERM for {STOP_GRACE:?}: killed it",
                service.name
            ));
        }
        ctx.runner.remove_path(&path)?;
        Ok(alive)
    }

    fn state(&self, ctx: &Ctx, service: &Service) -> Result<ServiceState> {
        Ok(match self.running(ctx, service) {
            Some(p) => ServiceState {
                running: true,
                since: Some(p.written),
                id: match self.build_of(ctx, service, &p) {
                    Some(profile) => format!("pid {} ({} build)", p.pid, profile.name()),
                    None => format!("pid {}", p.pid),
                },
                ports: service
                    .endpoints()
                    .iter()
                    .map(|e| format!("127.0.0.1:{}", ctx.endpoint_port(e)))
                    .collect::<Vec<_>>()
                    .join(", "),
                ..ServiceState::default()
            },
            None => ServiceState::default(),
        })
    }

    fn reload(&self, ctx: &Ctx, service: &Service) -> Result<bool> {
        let Some(p) = self.running(ctx, service) else {
            return Ok(false);
        };
        ctx.runner
            .plan(format!("kill -HUP {}  # {}", p.pid, service.name));
        if !ctx.dry_run() {
            ctx.runner.signal_group(p.pid, Signal::HUP)?;
        }
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
        let model_dir = ctx.model_dir(service);
        ctx.runner.run(&training::host_train_step(
            ctx, service, data, &model_dir, seed, tracking, extra,
        ))?;
        Ok(())
    }

    fn backup_database(&self, ctx: &Ctx, dest: &Path) -> Result<bool> {
        if self.running(ctx, ctx.stack.mlflow()).is_none() {
            return Ok(false);
        }
        let python = mlflow_server::venv_dir(ctx).join("bin/python");
        ctx.runner.run(
            &Step::new(python.to_string_lossy())
                .args(["-c", SQLITE_BACKUP])
                .arg(mlflow_server::store_path(ctx))
                .arg(dest),
        )?;
        Ok(true)
    }

    fn mlflow_python(&mut self, ctx: &Ctx) -> Result<(Step, String)> {
        mlflow_server::ensure_installed(ctx)?;
        let python = mlflow_server::venv_dir(ctx).join("bin/python");
        let step = Step::new(python.to_string_lossy()).cwd(ctx.mlruns_dir());
        let store = mlflow_server::store_path(ctx)
            .to_string_lossy()
            .into_owned();
        Ok((step, store))
    }

    fn is_stale(&self, ctx: &Ctx, service: &Service) -> bool {
        let Some(p) = self.running(ctx, service) else {
            return false;
        };
        // The other build (`dev`'s or the release one): `up` puts the release build back.
        if self.other_build(ctx, service).is_some() {
            return true;
        }
        let inputs = match service.kind {
            ServiceKind::Mlflow => vec![],
            ServiceKind::Api => vec![binaries::path(ctx, service), ctx.model_file(service)],
        };
        inputs
            .iter()
            .any(|f| modified(f).is_some_and(|m| m > p.written))
    }

    fn swaps_candidates(&self) -> bool {
        true
    }

    fn start_candidate(&mut self, ctx: &Ctx, service: &Service) -> Result<Candidate> {
        let mut ports = Vec::new();
        for endpoint in service.endpoints() {
            // A port nothing listens on now, chosen by the system.
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            ports.push((endpoint.role, port));
        }
        let port_of = |e: &Endpoint| {
            ports
                .iter()
                .find(|(role, _)| *role == e.role)
                .map_or(0, |(_, p)| *p)
        };
        let step = Self::api_step(ctx, service, ctx.build, &port_of).env("LOG_FORMAT", "json");
        let log = ctx
            .state_dir()
            .join("logs")
            .join(format!("{}.candidate.log", service.name));
        // A fresh log per candidate: its tail explains this candidate's failure only.
        let _ = std::fs::remove_file(&log);
        let child = ctx
            .runner
            .spawn_service(&step, &log)?
            .context("a candidate cannot be started under --dry-run")?;
        Ok(Candidate {
            instance: Instance::Process {
                child: Box::new(child),
                log,
            },
            ports,
        })
    }

    fn hand_over(&mut self, ctx: &Ctx, service: &Service) -> Result<()> {
        let path = pid_path(ctx, service);
        let old = read_pid_file(&path).filter(|p| ctx.runner.running(p.pid, &p.program).is_some());
        let step = Self::start_step(ctx, service, ctx.build);
        let log = ctx.log_path(service);
        let Some(new) = ctx.runner.spawn_service(&step, &log)? else {
            return Ok(());
        };
        // Live once it holds every one of the service's ports beside the old version.
        let ports: Vec<u16> = service
            .endpoints()
            .iter()
            .map(|e| ctx.endpoint_port(e))
            .collect();
        let listening = poll::until(HAND_OVER_TIMEOUT, Duration::from_millis(10), || {
            if let Some(why) = new.exited() {
                return Some(Err(why));
            }
            let holds = |port: &u16| {
                crate::runtime::ports::holders(&ctx.runner, *port)
                    .iter()
                    .any(|h| h.pid == new.pid())
            };
            ports.iter().all(holds).then_some(Ok(()))
        });
        let failure = match listening {
            Some(Ok(())) => None,
            Some(Err(why)) => Some(why),
            None => Some(format!(
                "it did not listen on port(s) {ports:?} within {HAND_OVER_TIMEOUT:?}"
            )),
        };
        if let Some(why) = failure {
            let _ = ctx.runner.stop_group(new.pid(), STOP_GRACE, Some(&new));
            let log_text = std::fs::read(&log).unwrap_or_default();
            anyhow::bail!(
                "the new version of {} could not take over its ports ({why}); the old one was \
                 started without SO_REUSEPORT if its log says the address is in use: `cargo xtask \
                 restart {}` once. Its log:\n{}",
                service.name,
                service.name,
                tail(&String::from_utf8_lossy(&log_text), 15)
            );
        }
        std::fs::write(&path, format!("{}\n{}\n", new.pid(), step.program))
            .with_context(|| format!("cannot write {}", path.display()))?;
        let old_child = self.children.insert(service.name.clone(), new);
        // The old version stops accepting and finishes its in-flight requests; the kernel
        // sends every new connection to the new one meanwhile.
        if let Some(old) = old {
            ctx.runner
                .stop_group(old.pid, STOP_GRACE, old_child.as_ref())?;
        }
        Ok(())
    }

    fn log_tail(&self, ctx: &Ctx, service: &Service, lines: usize) -> String {
        let text = std::fs::read(ctx.log_path(service)).unwrap_or_default();
        tail(&String::from_utf8_lossy(&text), lines)
    }

    fn logs(
        &self,
        ctx: &Ctx,
        services: &[&Service],
        follow: bool,
        lines: Option<usize>,
    ) -> Result<()> {
        let prefix = |s: &Service| {
            if services.len() > 1 {
                format!("{:<10}| ", s.name)
            } else {
                String::new()
            }
        };
        let mut offsets = Vec::new();
        for service in services {
            let path = ctx.log_path(service);
            let bytes = std::fs::read(&path).unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes);
            let shown = match lines {
                Some(n) => tail(&text, n),
                None => text.trim_end().to_owned(),
            };
            for line in shown.lines() {
                println!("{}{line}", prefix(service));
            }
            // Offsets count bytes: a lossy decoding may change the length.
            offsets.push((service, path, bytes.len() as u64));
        }
        if !follow {
            return Ok(());
        }
        // As `tail -f`: wait until a log's length changes (or Ctrl-C), then print its new whole
        // lines; a partial line waits for the rest.
        let length = |path: &Path| std::fs::metadata(path).map_or(0, |m| m.len());
        let mut seen: Vec<u64> = offsets.iter().map(|(_, _, offset)| *offset).collect();
        loop {
            poll::until(FOLLOW_WAKE_UP, FOLLOW_EVERY, || {
                let changed = offsets
                    .iter()
                    .zip(&seen)
                    .any(|((_, path, _), seen)| length(path) != *seen);
                (changed || ctx.is_interrupted()).then_some(())
            });
            if ctx.is_interrupted() {
                return Ok(());
            }
            for ((service, path, offset), seen) in offsets.iter_mut().zip(&mut seen) {
                *seen = length(path);
                let Ok(mut file) = std::fs::File::open(&*path) else {
                    continue;
                };
                let len = file.metadata().map_or(0, |m| m.len());
                if len < *offset {
                    *offset = 0; // the log was truncated or replaced
                }
                if len > *offset {
                    file.seek(SeekFrom::Start(*offset))?;
                    let mut new = Vec::new();
                    file.read_to_end(&mut new)?;
                    let complete = new.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                    for line in String::from_utf8_lossy(&new[..complete]).lines() {
                        println!("{}{line}", prefix(service));
                    }
                    *offset += complete as u64;
                }
            }
        }
    }
}

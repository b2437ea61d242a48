//! The swarm runtime: the stack as a Docker Swarm stack (`docker stack deploy` of the file
//! `stack::stack_file` writes), on the manager `DOCKER_HOST` names. Services are
//! `STACK_SERVICE` (`ml-mlops_bankchurn`), each with its tasks; a task is healthy when the
//! swarm calls it running (with a healthcheck, a task is only running once it passed it).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Result};
use serde_json::Value;

use super::docker::{writable_by_containers, TrainingContainer};
use super::training::Tracking;
use super::{Artifacts, Kind, Runtime, ServiceState};
use crate::build::engine;
use crate::ctx::Ctx;
use crate::runner::Step;
use crate::stack::stack_file::{self, MLFLOW_STORE_LABEL};
use crate::stack::Service;
use crate::stack::{compose_file, mlflow_command};
use crate::util::{poll, table};

/// A swarm manager, found through the docker client's usual settings (`DOCKER_HOST`).
pub struct Swarm {
    pub engine: String,
    /// The stack's name: `ml-mlops`, or `ml-mlops-NAME` for a named stack.
    pub stack: String,
    /// Set once [`Runtime::start`] deployed the stack file again: the services that deploy
    /// created are starting already and need no update of their own.
    redeployed: bool,
}

/// Where `deploy swarm` writes the stack file it deploys.
pub fn stack_file_path(ctx: &Ctx) -> PathBuf {
    ctx.state_dir().join("swarm").join("stack.yml")
}

/// One task of a service, as `docker service ps` shows it.
#[derive(Debug, Clone)]
pub struct Task {
    pub id: String,
    /// `bankchurn.2`.
    pub name: String,
    pub node: String,
    pub desired: String,
    /// `Running 5 seconds ago`, `Starting 2 seconds ago`, `Failed 1 second ago`.
    pub current: String,
    pub error: String,
    pub ports: String,
}

impl Task {
    pub fn is_running(&self) -> bool {
        self.current.starts_with("Running")
    }

    pub fn is_wanted(&self) -> bool {
        self.desired == "Running"
    }
}

/// How one service's rollout stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    /// Every wanted task runs (and passed its healthcheck), no update is under way.
    Converged,
    /// Still on its way: how many of how many tasks run.
    Pending { running: usize, wanted: u64 },
    /// The update failed and the swarm rolled (or is rolling) it back: its message.
    RolledBack(String),
}

fn docker(args: &[&str]) -> Step {
    Step::new("docker").args(args)
}

impl Swarm {
    /// The manager, or why the engine is not one.
    pub fn detect(ctx: &Ctx) -> Result<Self> {
        let engine = engine::version(ctx)?;
        let state = ctx
            .runner
            .query_stdout(&docker(&[
                "info",
                "--format",
                "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}",
            ]))
            .unwrap_or_default();
        match state.as_str() {
            "active true" => {}
            "active false" => bail!(
                "Docker Engine {engine} is a swarm worker: point DOCKER_HOST at a manager (`docker node ls` works there)"
            ),
            _ => bail!(
                "Docker Engine {engine} is not part of a swarm ({state}): make one with `docker swarm init --advertise-addr ADDRESS` on an engine of its own (not one other work shares), or point DOCKER_HOST at a manager"
            ),
        }
        Ok(Self {
            engine,
            stack: ctx.project(),
            redeployed: false,
        })
    }

    /// What a dry run plans against: no engine is asked.
    pub fn planned(ctx: &Ctx) -> Self {
        Self {
            engine: "(not asked under --dry-run)".into(),
            stack: ctx.project(),
            redeployed: false,
        }
    }

    pub fn service_name(&self, service: &Service) -> String {
        stack_file::service_name(&self.stack, service)
    }

    /// Labels this manager's node as the one holding MLflow's store, unless a node has the
    /// label already (the store stays where it was first put).
    pub fn ensure_mlflow_node(&self, ctx: &Ctx) -> Result<()> {
        let filter = format!("node.label={MLFLOW_STORE_LABEL}=true");
        let labelled = ctx
            .runner
            .query_stdout(&docker(&["node", "ls", "--quiet", "--filter", &filter]))
            .unwrap_or_default();
        if !labelled.is_empty() && !ctx.dry_run() {
            return Ok(());
        }
        let this_node = ctx
            .runner
            .query_stdout(&docker(&["info", "--format", "{{.Swarm.NodeID}}"]))
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| "<this node>".into());
        ctx.runner.run(&docker(&[
            "node",
            "update",
            "--label-add",
            &format!("{MLFLOW_STORE_LABEL}=true"),
            &this_node,
        ]))?;
        Ok(())
    }

    /// The address of the node labelled as holding MLflow's store, as the swarm knows it
    /// (`docker node inspect`: what the node advertised when it joined); `None` when no node
    /// is labelled or the swarm does not answer.
    pub fn mlflow_node_address(&self, ctx: &Ctx) -> Option<String> {
        let filter = format!("node.label={MLFLOW_STORE_LABEL}=true");
        ctx.runner
            .query_stdout(&docker(&["node", "ls", "--quiet", "--filter", &filter]))
            .and_then(|ids| ids.lines().next().map(str::to_owned))
            .and_then(|node| {
                ctx.runner.query_stdout(&docker(&[
                    "node",
                    "inspect",
                    "--format",
                    "{{.Status.Addr}} {{if .ManagerStatus}}{{.ManagerStatus.Addr}}{{end}}",
                    &node,
                ]))
            })
            .and_then(|text| {
                // A manager listening on every address may say 0.0.0.0: its address for the
                // other managers (HOST:PORT) says where it is.
                let mut words = text.split_whitespace();
                let node = words.next()?.to_owned();
                let manager = words
                    .next()
                    .and_then(|a| a.rsplit_once(':'))
                    .map(|(h, _)| h);
                match (node.as_str(), manager) {
                    ("0.0.0.0", Some(manager)) => Some(manager.to_owned()),
                    _ => Some(node),
                }
            })
    }

    /// `docker stack deploy`: creates the stack, or updates what changed. Images are pinned
    /// by digest already, so the client asks no registry (`--resolve-image never`).
    ///
    /// On PostgreSQL the client fills the stack file's `${PGPASSWORD:-}` in from this step's
    /// environment (masked in plans and logs), so the password is never on disk.
    pub fn deploy(&self, ctx: &Ctx, file: &Path) -> Result<()> {
        let mut step = docker(&["stack", "deploy", "--prune", "--with-registry-auth"])
            .args(["--resolve-image", "never", "--compose-file"])
            .arg(file)
            .arg(&self.stack);
        for (key, value) in ctx.mlflow_backend.postgres().iter().flat_map(|pg| pg.env()) {
            step = step.env(key, value);
        }
        ctx.runner.run(&step)?;
        Ok(())
    }

    /// The stack file `deploy swarm` wrote last, when there is one: what brings back the
    /// services `down` or `restore` removed, exactly as they were deployed.
    fn deployed_file(&self, ctx: &Ctx) -> Option<PathBuf> {
        let file = stack_file_path(ctx);
        file.is_file().then_some(file)
    }

    /// The stack's services that exist, by their swarm names.
    pub fn existing_services(&self, ctx: &Ctx) -> Vec<String> {
        let filter = format!("label=com.docker.stack.namespace={}", self.stack);
        ctx.runner
            .query_stdout(&docker(&[
                "service",
                "ls",
                "--filter",
                &filter,
                "--format",
                "{{.Name}}",
            ]))
            .map(|t| t.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// `docker service inspect` of one service; `None` when it does not exist.
    pub fn inspect(&self, ctx: &Ctx, service: &Service) -> Option<Value> {
        let text = ctx.runner.query_stdout(&docker(&[
            "service",
            "inspect",
            &self.service_name(service),
        ]))?;
        serde_json::from_str::<Value>(&text).ok()?.get(0).cloned()
    }

    /// The service's tasks, newest first (as `docker service ps` lists them).
    pub fn tasks(&self, ctx: &Ctx, service: &Service) -> Vec<Task> {
        let Some(text) = ctx.runner.query_stdout(&docker(&[
            "service",
            "ps",
            "--no-trunc",
            "--format",
            "{{json .}}",
            &self.service_name(service),
        ])) else {
            return Vec::new();
        };
        text.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .map(|t| {
                let field = |k: &str| t[k].as_str().unwrap_or("").trim().to_owned();
                Task {
                    id: field("ID"),
                    // Earlier tasks of a slot are listed as ` \_ name.1`.
                    name: field("Name").trim_start_matches("\\_").trim().to_owned(),
                    node: field("Node"),
                    desired: field("DesiredState"),
                    current: field("CurrentState"),
                    error: field("Error"),
                    ports: field("Ports"),
                }
            })
            .collect()
    }

    /// Where the service's rollout stands. `previous_update` is when the update before this
    /// deployment started: its outcome (perhaps a rollback) is not this one's.
    pub fn rollout(&self, ctx: &Ctx, service: &Service, previous_update: Option<&str>) -> Rollout {
        let Some(info) = self.inspect(ctx, service) else {
            return Rollout::Pending {
                running: 0,
                wanted: 0,
            };
        };
        let update = &info["UpdateStatus"];
        let ours = update["StartedAt"].as_str() != previous_update;
        let state = if ours {
            update["State"].as_str().unwrap_or("")
        } else {
            ""
        };
        if state.starts_with("rollback") || state == "paused" {
            let message = update["Message"].as_str().unwrap_or(state).to_owned();
            return Rollout::RolledBack(format!("{state}: {message}"));
        }
        let wanted = info["Spec"]["Mode"]["Replicated"]["Replicas"]
            .as_u64()
            .unwrap_or(1);
        let tasks = self.tasks(ctx, service);
        let current: Vec<&Task> = tasks.iter().filter(|t| t.is_wanted()).collect();
        let running = current.iter().filter(|t| t.is_running()).count();
        let updating = state == "updating";
        if !updating && running as u64 == wanted && current.len() as u64 == wanted {
            Rollout::Converged
        } else {
            Rollout::Pending { running, wanted }
        }
    }

    /// The addresses of the nodes that run a task of the service (each node's advertised
    /// address; this node's own as its loopback, which MLflow accepts as a host name), without
    /// repeats.
    pub fn task_addresses(&self, ctx: &Ctx, service: &Service) -> Vec<String> {
        let this_node =
            ctx.runner
                .query_stdout(&docker(&["info", "--format", "{{.Swarm.NodeAddr}}"]));
        let mut addresses = Vec::new();
        for task in self.tasks(ctx, service) {
            if !(task.is_wanted() && task.is_running()) {
                continue;
            }
            let node =
                ctx.runner
                    .query_stdout(&docker(&["inspect", "--format", "{{.NodeID}}", &task.id]));
            let address = node.and_then(|node| {
                ctx.runner.query_stdout(&docker(&[
                    "node",
                    "inspect",
                    "--format",
                    "{{.Status.Addr}}",
                    &node,
                ]))
            });
            let address = address.map(|a| {
                if Some(&a) == this_node.as_ref() {
                    "127.0.0.1".to_owned()
                } else {
                    a
                }
            });
            if let Some(address) = address.filter(|a| !addresses.contains(a)) {
                addresses.push(address);
            }
        }
        addresses
    }

    /// The errors of the service's latest failed tasks, for a report.
    pub fn task_errors(&self, ctx: &Ctx, service: &Service) -> String {
        let errors: Vec<String> = self
            .tasks(ctx, service)
            .iter()
            .filter(|t| !t.error.is_empty())
            .take(3)
            .map(|t| format!("{} on {}: {} ({})", t.name, t.node, t.error, t.current))
            .collect();
        if errors.is_empty() {
            "no task reported an error".into()
        } else {
            errors.join("; ")
        }
    }

    /// The stack's containers on this node (tasks still stopping included).
    fn containers(&self, ctx: &Ctx) -> Vec<String> {
        let filter = format!("label=com.docker.stack.namespace={}", self.stack);
        ctx.runner
            .query_stdout(&docker(&["ps", "--all", "--quiet", "--filter", &filter]))
            .map(|t| t.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    fn network_exists(&self, ctx: &Ctx, network: &str) -> bool {
        ctx.runner
            .query_stdout(&docker(&["network", "ls", "--format", "{{.Name}}"]))
            .is_some_and(|names| names.lines().any(|n| n == network))
    }

    /// `docker stack rm`, then waits until its services, its containers on this node and its
    /// network are gone (the swarm removes them in the background: ports stay held and a new
    /// deploy meanwhile would find them half gone). `Ok(false)` when nothing was there.
    pub fn remove(&self, ctx: &Ctx, network: &str) -> Result<bool> {
        let present = !self.existing_services(ctx).is_empty() || self.network_exists(ctx, network);
        if present || ctx.dry_run() {
            ctx.runner.run(&docker(&["stack", "rm", &self.stack]))?;
        }
        if ctx.dry_run() {
            return Ok(true);
        }
        let gone = poll::until(Duration::from_secs(120), Duration::from_millis(250), || {
            (self.existing_services(ctx).is_empty()
                && self.containers(ctx).is_empty()
                && !self.network_exists(ctx, network))
            .then_some(())
        });
        if gone.is_none() {
            bail!(
                "stack {} was removed, but its services, containers or network {network} are still there after 120 s: see `docker stack ps {}` and `docker ps --all`",
                self.stack,
                self.stack
            );
        }
        Ok(present)
    }
}

impl Swarm {
    /// The image the service's tasks run (by digest), as deployed.
    fn deployed_image(&self, ctx: &Ctx, service: &Service) -> Option<String> {
        let info = self.inspect(ctx, service)?;
        let image = info["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"].as_str()?;
        Some(image.to_owned())
    }

    fn not_deployed(&self, service: &Service) -> anyhow::Error {
        anyhow::anyhow!(
            "{} is not deployed in stack {}: deploy the stack with `cargo xtask deploy swarm --release RECORD`",
            service.name,
            self.stack
        )
    }

    /// `docker service update --force`: replaces the tasks one at a time (as `update_config`
    /// says), and waits until that is done or rolled back.
    fn roll(&self, ctx: &Ctx, service: &Service) -> Result<()> {
        if self.inspect(ctx, service).is_none() && !ctx.dry_run() {
            return Err(self.not_deployed(service));
        }
        ctx.runner
            .run(&docker(&["service", "update", "--force", "--quiet"]).arg(self.service_name(service)))
            .map(|_| ())
            .map_err(|e| {
                e.context(format!(
                    "replacing the tasks of {} failed (the swarm rolls a failed update back): see `cargo xtask --runtime swarm logs {}`",
                    self.service_name(service),
                    service.name
                ))
            })
    }

    /// One row per task for `status`: slot, node, state, error.
    fn task_rows(&self, ctx: &Ctx) -> Vec<Vec<String>> {
        let mut rows = Vec::new();
        for service in &ctx.stack.services {
            for task in self.tasks(ctx, service).iter().filter(|t| t.is_wanted()) {
                rows.push(vec![
                    task.name.clone(),
                    task.id.chars().take(12).collect(),
                    task.node.clone(),
                    task.current.clone(),
                    task.ports.clone(),
                    task.error.clone(),
                ]);
            }
        }
        rows
    }
}

impl Runtime for Swarm {
    fn kind(&self) -> Kind {
        Kind::Swarm
    }

    fn preflight(&self, _ctx: &Ctx, _services: &[&Service]) -> Result<()> {
        Ok(())
    }

    /// Nothing to build: the services come back from the stack file `deploy swarm` wrote (as
    /// `restore` needs), and without one there is nothing to start from.
    fn artifacts(&self, ctx: &Ctx) -> Result<Artifacts> {
        if self.deployed_file(ctx).is_some() || ctx.dry_run() {
            return Ok(Artifacts::Released);
        }
        bail!(
            "a swarm runs released images by digest, not images built here: `cargo xtask release --registry HOST[:PORT]`, then `cargo xtask deploy swarm --release RECORD`"
        )
    }

    /// A deployed service's tasks replaced; a removed one (after `restore` stopped it)
    /// deployed again from the stack file, which brings back every removed service at once.
    fn start(&mut self, ctx: &Ctx, service: &Service) -> Result<()> {
        if service.kind == crate::stack::Kind::Mlflow {
            // A restored store and its artifacts belong to whoever restored them: MLflow's
            // user must write there, as `deploy swarm` made sure.
            ctx.runner.create_dir(&ctx.mlruns_dir().join("artifacts"))?;
            writable_by_containers(ctx, &ctx.mlruns_dir())?;
        }
        if self.inspect(ctx, service).is_some() || ctx.dry_run() {
            if self.redeployed {
                return Ok(());
            }
            return self.roll(ctx, service);
        }
        let file = self
            .deployed_file(ctx)
            .ok_or_else(|| self.not_deployed(service))?;
        self.deploy(ctx, &file)?;
        self.redeployed = true;
        Ok(())
    }

    fn exited(&mut self, ctx: &Ctx, service: &Service) -> Option<String> {
        let tasks = self.tasks(ctx, service);
        let wanted: Vec<&Task> = tasks.iter().filter(|t| t.is_wanted()).collect();
        wanted.is_empty().then(|| {
            format!(
                "the swarm runs no task of it ({})",
                self.task_errors(ctx, service)
            )
        })
    }

    fn restart(&mut self, ctx: &Ctx, service: &Service) -> Result<()> {
        self.roll(ctx, service)
    }

    fn stop(&mut self, ctx: &Ctx, service: &Service) -> Result<bool> {
        if self.inspect(ctx, service).is_none() {
            return Ok(false);
        }
        let name = self.service_name(service);
        ctx.runner.run(&docker(&["service", "rm"]).arg(&name))?;
        // The swarm stops the tasks in the background: until their containers on this node
        // are gone they hold the ports (and the store) a start after this would need.
        let filter = format!("label=com.docker.swarm.service.name={name}");
        let gone = poll::until(Duration::from_secs(60), Duration::from_millis(250), || {
            ctx.runner
                .query_stdout(&docker(&["ps", "--quiet", "--filter", &filter]))
                .is_some_and(|ids| ids.trim().is_empty())
                .then_some(())
        });
        if gone.is_none() {
            bail!("{name} was removed, but its containers on this node still run after 60 s: see `docker ps`");
        }
        Ok(true)
    }

    fn stop_shared(&mut self, ctx: &Ctx) -> Result<()> {
        self.remove(ctx, &ctx.network()).map(|_| ())
    }

    fn state(&self, ctx: &Ctx, service: &Service) -> Result<ServiceState> {
        let Some(info) = self.inspect(ctx, service) else {
            return Ok(ServiceState::default());
        };
        let tasks = self.tasks(ctx, service);
        let wanted = info["Spec"]["Mode"]["Replicated"]["Replicas"]
            .as_u64()
            .unwrap_or(1);
        let running = tasks
            .iter()
            .filter(|t| t.is_wanted() && t.is_running())
            .count();
        let ports: Vec<String> = info["Endpoint"]["Ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                format!(
                    "*:{}->{}/{} ({})",
                    p["PublishedPort"],
                    p["TargetPort"],
                    p["Protocol"].as_str().unwrap_or("tcp"),
                    p["PublishMode"].as_str().unwrap_or("")
                )
            })
            .collect();
        Ok(ServiceState {
            running: running > 0,
            since: info["UpdatedAt"]
                .as_str()
                .and_then(|t| humantime::parse_rfc3339(t).ok()),
            id: info["ID"].as_str().unwrap_or("").chars().take(12).collect(),
            ports: ports.join(", "),
            // A task runs only once it passed its healthcheck.
            health: Some(if running as u64 == wanted {
                "healthy".to_owned()
            } else {
                format!("{running} of {wanted} tasks healthy")
            }),
            health_log: None,
        })
    }

    fn reload(&self, ctx: &Ctx, service: &Service) -> Result<bool> {
        if self.inspect(ctx, service).is_none() {
            return Ok(false);
        }
        // Tasks live on other nodes, out of `docker exec`'s reach: replace them, one at a
        // time, and the new ones load the new model.
        self.roll(ctx, service)?;
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
        let image = self
            .deployed_image(ctx, service)
            .ok_or_else(|| self.not_deployed(service))?;
        // The stack's overlay network is attachable: the one-off container on this manager
        // reaches MLflow by its name, as the tasks do.
        super::docker::train_in_container(
            ctx,
            &TrainingContainer {
                service,
                image: &image,
                network: &ctx.network(),
            },
            data,
            seed,
            tracking,
            extra,
        )
    }

    fn backup_database(&self, _ctx: &Ctx, _dest: &Path) -> Result<bool> {
        bail!(
            "backing MLflow's store up while it runs in a swarm is not supported yet: stop it (`cargo xtask --runtime swarm down`), then `cargo xtask backup` copies the store"
        )
    }

    fn tasks_table(&self, ctx: &Ctx) -> Option<String> {
        let rows = self.task_rows(ctx);
        (!rows.is_empty())
            .then(|| table::text(&["TASK", "ID", "NODE", "STATE", "PORTS", "ERROR"], &rows))
    }

    fn mlflow_python(&mut self, ctx: &Ctx) -> Result<(Step, String)> {
        let mlflow = ctx.stack.mlflow();
        let image = self
            .deployed_image(ctx, mlflow)
            .ok_or_else(|| self.not_deployed(mlflow))?;
        let inside = compose_file::MLRUNS;
        let step = docker(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--user",
            compose_file::USER,
        ])
        .args([
            "--volume",
            &format!("{}:{inside}", ctx.mlruns_dir().display()),
        ])
        .args([
            "--entrypoint",
            &format!("{}/bin/python", compose_file::MLFLOW_VENV),
        ])
        .arg(image);
        Ok((step, format!("{inside}/{}", mlflow_command::STORE_FILE)))
    }

    fn is_stale(&self, _ctx: &Ctx, _service: &Service) -> bool {
        false
    }

    fn log_tail(&self, ctx: &Ctx, service: &Service, lines: usize) -> String {
        let step = docker(&["service", "logs", "--tail", &lines.to_string()])
            .arg(self.service_name(service));
        super::log_text(ctx, &step)
    }

    fn logs(
        &self,
        ctx: &Ctx,
        services: &[&Service],
        follow: bool,
        tail: Option<usize>,
    ) -> Result<()> {
        let services: Vec<&Service> = if services.is_empty() {
            ctx.stack.services.iter().collect()
        } else {
            services.to_vec()
        };
        if follow && services.len() > 1 {
            bail!("on a swarm, `logs -f` follows one service: name it (`cargo xtask --runtime swarm logs -f bankchurn`)");
        }
        for service in services {
            let mut step = docker(&["service", "logs", "--no-trunc"]);
            if follow {
                step = step.arg("--follow");
            }
            if let Some(n) = tail {
                step = step.args(["--tail", &n.to_string()]);
            }
            ctx.runner
                .run_attached(&step.arg(self.service_name(service)))?;
        }
        Ok(())
    }
}

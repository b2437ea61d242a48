//! `cargo xtask deploy swarm`: the stack file from the single source, with the digests of a
//! release record, deployed with `docker stack deploy`; then every task healthy and the smoke
//! checks through the published ports.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::build::registry::Registry;
use crate::build::release_record::Record;
use crate::ctx::Ctx;
use crate::runtime::docker::writable_by_containers;
use crate::runtime::lifecycle;
use crate::runtime::observe;
use crate::runtime::swarm::{stack_file_path, Rollout, Swarm};
use crate::stack::stack_file::{self, Publishing, Settings, MLFLOW_STORE_LABEL};
use crate::stack::Service;
use crate::util::{http, poll};

/// Deploy the stack to a Docker Swarm: the images of a release, by digest.
///
/// Writes the stack file (from the service.toml files, as the compose file) to
/// .xtask/swarm/stack.yml in the stack directory, runs `docker stack deploy` on the manager
/// DOCKER_HOST names, waits until every task runs and passed its healthcheck, then runs the
/// smoke checks through the published ports. Deploying again rolls each changed service one
/// task at a time; an update whose new tasks never become healthy is rolled back by the
/// swarm, and this command says so and fails. Models missing in the stack directory are
/// trained first; every node must see the stack directory at the same path (it holds the
/// models and MLflow's store).
#[derive(clap::Args, Debug)]
pub struct DeploySwarm {
    /// The release record whose digests to deploy (`cargo xtask release` writes
    /// target/xtask/reports/release-TAG.json).
    #[arg(long, value_name = "RECORD")]
    pub release: PathBuf,
    /// The registry as the nodes reach it, when not at the address the record names (the
    /// digests stay the record's): HOST[:PORT][/NAMESPACE].
    #[arg(long, value_name = "HOST[:PORT][/NAMESPACE]", value_parser = parse_registry)]
    pub registry: Option<Registry>,
    /// Tasks per API (MLflow runs one).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub replicas: u32,
    /// How services are reached: `vip-ingress` (the routing mesh; real clusters) or
    /// `dnsrr-host` (kernels without IPVS, like this project's CI machines: each API's tasks
    /// listen on their node's host network, sharing its ports, and update with no gap).
    #[arg(long, value_enum, default_value = "vip-ingress")]
    pub publishing: Publishing,
    /// Seconds to wait for every task to be healthy (or an update to finish).
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

fn parse_registry(text: &str) -> Result<Registry, String> {
    Registry::parse(text).map_err(|e| format!("{e:#}"))
}

/// Every service's image reference from the record, on `registry` when given.
fn images(
    ctx: &Ctx,
    record: &Path,
    registry: Option<&Registry>,
) -> Result<BTreeMap<String, String>> {
    let (record, recorded) = Record::load(record)?;
    let mut images = BTreeMap::new();
    let mut missing = Vec::new();
    for service in &ctx.stack.services {
        match recorded.images.iter().find(|r| r.service == service.name) {
            Some(image) => {
                let reference = match registry {
                    Some(registry) => {
                        format!("{}@{}", registry.repository(&service.image()), image.digest)
                    }
                    None => image.reference.clone(),
                };
                images.insert(service.name.clone(), reference);
            }
            None => missing.push(service.name.as_str()),
        }
    }
    if !missing.is_empty() {
        bail!(
            "{} holds no image of {}: release the whole stack (`cargo xtask release --registry ...` with no service named)",
            record.display(),
            missing.join(", ")
        );
    }
    Ok(images)
}

/// The version `current` names in the API's model directory.
fn model_version(ctx: &Ctx, api: &Service) -> Option<String> {
    let target = std::fs::read_link(ctx.model_dir(api).join("current")).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

impl DeploySwarm {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let images = images(ctx, &self.release, self.registry.as_ref())?;
        let swarm = if ctx.dry_run() {
            Swarm::planned(ctx)
        } else {
            Swarm::detect(ctx)?
        };
        let apis: Vec<&Service> = ctx.stack.apis().collect();
        // The tasks serve the models of the stack directory: train those missing, untracked
        // (MLflow is not up yet; `cargo xtask retrain` registers later ones).
        lifecycle::ensure_models(ctx, &apis, None)?;
        writable_by_containers(ctx, &ctx.mlruns_dir().join("artifacts"))?;
        writable_by_containers(ctx, &ctx.mlruns_dir())?;

        swarm.ensure_mlflow_node(ctx)?;
        // Only APIs on their nodes' host network address MLflow by its node.
        let mlflow_node = match swarm.mlflow_node_address(ctx) {
            Some(address) => address,
            None if ctx.dry_run() || matches!(self.publishing, Publishing::VipIngress) => {
                "<address of the node holding MLflow's store>".to_owned()
            }
            None => bail!(
                "cannot tell the address of the node labelled to hold MLflow's store \
                 (`docker node ls --filter node.label={MLFLOW_STORE_LABEL}=true`): with \
                 --publishing dnsrr-host the APIs reach MLflow there; check the swarm answers \
                 and the label is on one node"
            ),
        };
        let settings = Settings {
            stack_dir: ctx.stack_dir.clone(),
            port_offset: ctx.port_offset,
            name_suffix: ctx.name_suffix(),
            replicas: self.replicas,
            publishing: self.publishing,
            images,
            model_versions: apis
                .iter()
                .filter_map(|a| Some((a.name.clone(), model_version(ctx, a)?)))
                .collect(),
            mlflow_node,
            // Every node reaches it at this address (a loopback one was refused).
            postgres_uri: ctx.mlflow_backend.postgres().map(|pg| pg.uri.clone()),
        };
        let text = stack_file::render(&ctx.stack, &settings, &swarm.stack);
        let file = stack_file_path(ctx);
        ctx.runner.create_dir(file.parent().expect("a folder"))?;
        ctx.runner.write_file(&file, &text)?;
        if ctx.dry_run() {
            print!("{text}");
        }

        // An update that went before (and perhaps was rolled back) is not this one's.
        let before: BTreeMap<String, String> = ctx
            .stack
            .services
            .iter()
            .filter_map(|s| {
                let info = swarm.inspect(ctx, s)?;
                Some((
                    s.name.clone(),
                    info["UpdateStatus"]["StartedAt"].as_str()?.to_owned(),
                ))
            })
            .collect();
        let started = Instant::now();
        swarm.deploy(ctx, &file)?;
        if ctx.dry_run() {
            ctx.runner.plan(format!(
                "wait until every task of stack {} runs healthy (timeout {}s)",
                swarm.stack, self.timeout
            ));
            observe::run_checks(ctx, &ctx.stack.services.iter().collect::<Vec<_>>());
            return Ok(());
        }
        wait_converged(ctx, &swarm, &before, self.timeout)?;
        let converged = started.elapsed();
        let services: Vec<&Service> = ctx.stack.services.iter().collect();
        // Behind the routing mesh every port answers here; published on the tasks' nodes,
        // each service is checked where its tasks run.
        let hosts = |service: &Service| match self.publishing {
            Publishing::VipIngress => vec!["127.0.0.1".to_owned()],
            Publishing::DnsrrHost => swarm.task_addresses(ctx, service),
        };
        wait_published(ctx, &hosts)?;
        let checks = observe::run_checks_on(ctx, &services, &hosts);
        let failed = observe::failed(&checks);
        if !failed.is_empty() {
            bail!(
                "stack {} runs, but {} of {} smoke checks failed: {}. See `cargo xtask --runtime swarm logs`",
                swarm.stack,
                failed.len(),
                checks.len(),
                failed.join("; ")
            );
        }
        ctx.reporter.info(format!(
            "stack {} deployed: every task healthy {:.1}s after `docker stack deploy`, smoke checks passed {:.1}s after it ({} task(s) per API, {})",
            swarm.stack,
            converged.as_secs_f64(),
            started.elapsed().as_secs_f64(),
            self.replicas,
            match self.publishing {
                Publishing::VipIngress => "VIPs and the routing mesh",
                Publishing::DnsrrHost => "DNS round robin, ports on each task's node",
            }
        ));
        Ok(())
    }
}

/// Waits until every service's tasks run healthy and no update is under way; fails when one
/// rolled back (saying so) or time runs out (with the tasks' errors).
fn wait_converged(
    ctx: &Ctx,
    swarm: &Swarm,
    before: &BTreeMap<String, String>,
    timeout: u64,
) -> Result<()> {
    let mut pending: Vec<(&Service, crate::util::progress::Task)> = ctx
        .stack
        .services
        .iter()
        .map(|s| {
            (
                s,
                ctx.reporter
                    .task(format!("{} tasks healthy", swarm.service_name(s))),
            )
        })
        .collect();
    let mut failure = None;
    let done = poll::until(
        Duration::from_secs(timeout),
        Duration::from_millis(500),
        || {
            if ctx.is_interrupted() {
                failure = Some(anyhow::anyhow!(lifecycle::Interrupted));
                return Some(());
            }
            let mut still = Vec::new();
            for (service, task) in pending.drain(..) {
                let previous = before.get(&service.name).map(String::as_str);
                match swarm.rollout(ctx, service, previous) {
                    Rollout::Converged => task.done(""),
                    Rollout::Pending { running, wanted } => {
                        task.set_message(format!("{running}/{wanted} running"));
                        still.push((service, task));
                    }
                    Rollout::RolledBack(why) => {
                        if why.starts_with("rollback_started") {
                            task.set_message("rolling back");
                            still.push((service, task));
                            continue;
                        }
                        task.fail("rolled back");
                        failure = Some(anyhow::anyhow!(
                        "the update of {} failed and the swarm rolled it back to the previous version ({why}); its tasks: {}. See `cargo xtask --runtime swarm logs {}`",
                        swarm.service_name(service),
                        swarm.task_errors(ctx, service),
                        service.name
                    ));
                    }
                }
            }
            pending = still;
            (pending.is_empty() || failure.is_some()).then_some(())
        },
    );
    if let Some(e) = failure {
        return Err(e);
    }
    if done.is_none() {
        let names: Vec<String> = pending
            .iter()
            .map(|(s, _)| format!("{} ({})", swarm.service_name(s), swarm.task_errors(ctx, s)))
            .collect();
        bail!(
            "not every task was healthy after {timeout}s: {}. See `docker stack ps {}` and `cargo xtask --runtime swarm logs`",
            names.join("; "),
            swarm.stack
        );
    }
    Ok(())
}

/// Waits until every endpoint answers healthy through its published port (the routing mesh
/// may take a moment to route to a task the swarm already calls running).
fn wait_published(ctx: &Ctx, hosts: &dyn Fn(&Service) -> Vec<String>) -> Result<()> {
    for (service, endpoint) in ctx.stack.endpoints() {
        for host in hosts(service) {
            let url = format!(
                "http://{host}:{}{}",
                ctx.endpoint_port(&endpoint),
                endpoint.health_path
            );
            let healthy = poll::until(Duration::from_secs(30), Duration::from_millis(200), || {
                http::healthy(&url, Duration::from_secs(2)).then_some(())
            });
            if healthy.is_none() {
                bail!(
                    "{} runs healthy in the swarm, but {url} does not answer healthy: can this machine reach that node, and is the port free there?",
                    service.label(&endpoint)
                );
            }
        }
    }
    Ok(())
}

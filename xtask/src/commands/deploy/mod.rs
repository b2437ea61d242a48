//! `cargo xtask deploy TARGET`: the stack past one machine, on an orchestrator, from the same
//! `service.toml` files as the compose file and with the images a release pushed, by digest.
//! One module per target.

pub mod k8s;
pub mod swarm;

use anyhow::Result;

use crate::ctx::Ctx;

/// Deploy the stack past one machine: a Docker Swarm, or Kubernetes manifests rendered,
/// validated and applied.
#[derive(clap::Args, Debug)]
pub struct Deploy {
    #[command(subcommand)]
    pub target: Target,
}

#[derive(clap::Subcommand, Debug)]
pub enum Target {
    Swarm(swarm::DeploySwarm),
    K8s(k8s::K8s),
}

impl Deploy {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        if let (Some(pg), Target::Swarm(_)) = (ctx.mlflow_backend.postgres(), &self.target) {
            pg.check_reachable_by_every_node()?;
        }
        match self.target {
            Target::Swarm(command) => command.run(ctx),
            Target::K8s(command) => command.run(ctx),
        }
    }
}

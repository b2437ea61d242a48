//! `cargo xtask deploy TARGET`: the stack on an orchestrator, from the same `service.toml`
//! files as the compose file. One module per target.

pub mod k8s;

use anyhow::Result;

use crate::ctx::Ctx;

/// Deploy the stack past one machine: render, validate and apply Kubernetes manifests.
#[derive(clap::Args, Debug)]
pub struct Deploy {
    #[command(subcommand)]
    pub target: Target,
}

#[derive(clap::Subcommand, Debug)]
pub enum Target {
    K8s(k8s::K8s),
}

impl Deploy {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        match self.target {
            Target::K8s(command) => command.run(ctx),
        }
    }
}

//! `cargo xtask deploy`: the stack past one machine, from the same `service.toml` files, with
//! the images a release pushed, by digest.

use anyhow::Result;

use crate::ctx::Ctx;

pub mod swarm;

/// Deploy the released images to an orchestrator.
#[derive(clap::Args, Debug)]
pub struct Deploy {
    #[command(subcommand)]
    pub target: Target,
}

#[derive(clap::Subcommand, Debug)]
pub enum Target {
    Swarm(swarm::DeploySwarm),
}

impl Deploy {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        match self.target {
            Target::Swarm(cmd) => cmd.run(ctx),
        }
    }
}

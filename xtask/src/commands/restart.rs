//! `cargo xtask restart SERVICE`: the old `docker restart bankchurn-api`, waiting for health.

use anyhow::Result;

use crate::ctx::Ctx;
use crate::runtime::lifecycle;
use crate::runtime::Runtime;

/// Restart one service and wait until it is healthy again.
#[derive(clap::Args, Debug)]
pub struct Restart {
    /// Service or container name, as `cargo xtask status` lists them.
    pub service: String,
    /// Seconds to wait for health.
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    pub timeout: u64,
}

impl Restart {
    pub fn run(self, ctx: &Ctx, runtime: &mut dyn Runtime) -> Result<()> {
        let service = ctx.stack.get(&self.service)?;
        runtime.restart(ctx, service)?;
        lifecycle::wait_healthy(ctx, runtime, &[service], self.timeout)
    }
}

//! `cargo xtask restart SERVICE`: the old `docker restart bankchurn-api`, waiting for health.

use anyhow::Result;

use crate::ctx::Ctx;
use crate::runtime::Runtime;
use crate::up;

/// Restart one service and wait until it is healthy again.
#[derive(clap::Args, Debug)]
pub struct Restart {
    /// Service or container name, e.g. `bankchurn` or `bankchurn-api`.
    pub service: String,
    /// Seconds to wait for health.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

impl Restart {
    pub fn run(self, ctx: &Ctx, runtime: &mut dyn Runtime) -> Result<()> {
        let service = ctx.stack.get(&self.service)?;
        runtime.restart(ctx, service)?;
        up::wait_healthy(ctx, runtime, &[service], self.timeout)
    }
}

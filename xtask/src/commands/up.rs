//! `cargo xtask up`: build what is missing, train missing models, start the stack and wait
//! until every service is healthy.

use anyhow::Result;

use crate::ctx::Ctx;
use crate::runtime::lifecycle::{self, UpOptions};
use crate::runtime::Runtime;

/// Start the stack and wait until it is healthy (already healthy services are reused).
#[derive(clap::Args, Debug)]
pub struct Up {
    #[command(flatten)]
    pub options: UpOptions,
}

impl Up {
    pub fn run(self, ctx: &Ctx, runtime: &mut dyn Runtime) -> Result<()> {
        lifecycle::bring_up(ctx, runtime, &self.options)
    }
}

//! `cargo xtask logs [SERVICE] [-f] [--tail N]`.

use anyhow::Result;

use crate::ctx::Ctx;
use crate::runtime::Runtime;

/// Show the logs of one service, or of all prefixed by name.
#[derive(clap::Args, Debug)]
pub struct Logs {
    /// Service or container name (default: all).
    pub service: Option<String>,
    /// Keep printing new lines until Ctrl-C.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines of each log.
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
}

impl Logs {
    pub fn run(self, ctx: &Ctx, runtime: &dyn Runtime) -> Result<()> {
        let names: Vec<String> = self.service.into_iter().collect();
        let services = ctx.stack.select(&names)?;
        runtime.logs(ctx, &services, self.follow, self.tail)
    }
}

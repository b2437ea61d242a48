//! `cargo xtask down`: stop every service of the stack, MLflow included, and free the ports.

use anyhow::{bail, Result};

use crate::ctx::Ctx;
use crate::ports;
use crate::runtime::Runtime;

/// Stop the whole stack (data in mlruns/ and models/ is kept).
#[derive(clap::Args, Debug)]
pub struct Down {}

impl Down {
    pub fn run(self, ctx: &Ctx, runtime: &mut dyn Runtime) -> Result<()> {
        // APIs first, MLflow last: the reverse of the start order.
        let mut stopped = Vec::new();
        for service in ctx.stack.services.iter().rev() {
            if runtime.stop(ctx, service)? {
                stopped.push(service.name.as_str());
            }
        }
        runtime.stop_shared(ctx)?;
        if ctx.dry_run() {
            return Ok(());
        }
        if stopped.is_empty() {
            ctx.reporter.info("nothing was running");
        } else {
            stopped.reverse();
            ctx.reporter.info(format!("stopped {}", stopped.join(", ")));
        }
        let held: Vec<String> = ctx
            .stack
            .services
            .iter()
            .map(|s| ctx.host_port(s))
            .filter(|&p| ports::in_use(p))
            .map(ports::describe_holders)
            .collect();
        if !held.is_empty() {
            bail!(
                "the stack is down, but ports are still in use: {}. Those processes were not started by this toolkit",
                held.join("; ")
            );
        }
        Ok(())
    }
}

//! `cargo xtask down`: stop every service of the stack, MLflow included, and free the ports.

use anyhow::{bail, Result};

use crate::ctx::Ctx;
use crate::ports;
use crate::runtime::Runtime;

/// Stop the whole stack; mlruns/ (the MLflow store) and models/ are kept.
#[derive(clap::Args, Debug)]
pub struct Down {
    /// Also delete the MLflow store (mlruns/) and the trained models (models/).
    #[arg(long)]
    pub volumes: bool,
    /// Do not ask before deleting (needed with --volumes when there is no terminal).
    #[arg(long, requires = "volumes")]
    pub yes: bool,
}

/// Asks on the terminal; without one, only `--yes` consents.
fn confirmed(question: &str) -> Result<bool> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        bail!("{question}: refusing without a terminal to ask on; pass --yes to confirm");
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

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
        if self.volumes {
            self.delete_data(ctx)?;
        }
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
            .map(|p| ports::describe(ctx, p))
            .collect();
        if !held.is_empty() {
            bail!(
                "the stack is down, but ports are still in use: {}. Those processes were not started by this toolkit",
                held.join("; ")
            );
        }
        Ok(())
    }

    fn delete_data(&self, ctx: &Ctx) -> Result<()> {
        let dirs = [ctx.mlruns_dir(), ctx.stack_dir.join("models")];
        let present: Vec<_> = dirs.iter().filter(|d| d.exists()).collect();
        for dir in &present {
            ctx.runner.plan(format!("rm -rf {}", dir.display()));
        }
        if ctx.dry_run() || present.is_empty() {
            return Ok(());
        }
        let shown: Vec<String> = present.iter().map(|d| ctx.show(d)).collect();
        let question = format!(
            "delete {} (the MLflow store and the trained models)",
            shown.join(" and ")
        );
        if !self.yes && !confirmed(&question)? {
            bail!("nothing deleted");
        }
        for dir in present {
            std::fs::remove_dir_all(dir)
                .map_err(|e| anyhow::anyhow!("cannot delete {}: {e}", dir.display()))?;
        }
        ctx.reporter.info(format!("deleted {}", shown.join(", ")));
        Ok(())
    }
}

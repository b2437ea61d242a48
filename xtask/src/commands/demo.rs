//! `cargo xtask demo`: the old `make docker-demo`. Build, train what is missing, start the
//! stack, wait for health, run the smoke checks, print where everything is. Run it twice and
//! the second run reuses what is built and healthy.

use anyhow::{bail, Result};

use crate::ctx::Ctx;
use crate::runtime::lifecycle::{self, UpOptions};
use crate::runtime::observe;
use crate::runtime::Runtime;

/// Build, train, start and verify the whole stack, then leave it running.
#[derive(clap::Args, Debug)]
pub struct Demo {
    #[command(flatten)]
    pub options: UpOptions,
}

impl Demo {
    pub fn run(self, ctx: &Ctx, runtime: &mut dyn Runtime) -> Result<()> {
        lifecycle::bring_up(ctx, runtime, &self.options)?;
        let services = lifecycle::selected(ctx, &self.options);
        let checks = observe::run_checks(ctx, &services);
        if ctx.dry_run() {
            return Ok(());
        }
        let rows = observe::rows(ctx, runtime)?;
        println!("\n{}", observe::render(&rows));
        ctx.reporter.summary(&format!(
            "### Demo stack ({} runtime)\n\n{}\n{}",
            runtime.name(),
            observe::markdown(&rows),
            observe::summary(&checks)
        ));
        let failed = observe::failed(&checks);
        if !failed.is_empty() {
            bail!(
                "the stack is up but smoke checks failed: {}. Inspect with `cargo xtask logs`, stop with `cargo xtask down`",
                failed.join("; ")
            );
        }
        println!("\nThe stack is running. Try `cargo xtask status`, `cargo xtask logs -f`; stop it with `cargo xtask down`.");
        Ok(())
    }
}

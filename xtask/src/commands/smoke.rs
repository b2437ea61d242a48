//! `cargo xtask smoke`: health of every service and one real prediction per API, with the
//! answer checked field by field against `[smoke]` in the service's `service.toml`.

use anyhow::{bail, Result};

use crate::ctx::Ctx;
use crate::runtime::observe;

/// Check health and one real prediction per API; one line per failed check.
#[derive(clap::Args, Debug)]
pub struct Smoke {
    /// Only these services (default: all).
    pub services: Vec<String>,
}

impl Smoke {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let services = ctx.stack.select(&self.services)?;
        let checks = observe::run_checks(ctx, &services);
        ctx.reporter.summary(&format!(
            "### Smoke checks\n\n{}",
            observe::summary(&checks)
        ));
        let failed = observe::failed(&checks);
        if !failed.is_empty() {
            bail!(
                "{} of {} smoke checks failed: {}. Is the stack up (`cargo xtask status`)?",
                failed.len(),
                checks.len(),
                failed.join("; ")
            );
        }
        Ok(())
    }
}

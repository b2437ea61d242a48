//! `cargo xtask status`: the runbook's `docker ps` table, for either runtime.

use anyhow::Result;

use crate::ctx::Ctx;
use crate::runtime::observe;
use crate::runtime::Runtime;

/// Show each service: state, health and ports.
#[derive(clap::Args, Debug)]
pub struct Status {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl Status {
    pub fn run(self, ctx: &Ctx, runtime: &dyn Runtime) -> Result<()> {
        let rows = observe::rows(ctx, runtime)?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&rows)?);
        } else {
            println!("{}", observe::render(&rows));
            if let Some(tasks) = runtime.tasks_table(ctx) {
                println!("\n{tasks}");
            }
        }
        Ok(())
    }
}

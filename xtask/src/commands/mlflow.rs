//! `cargo xtask mlflow ...`: the MLflow server's runbook steps.

use std::path::PathBuf;

use anyhow::Result;

use crate::ctx::Ctx;
use crate::runtime::Runtime;
use crate::runtime::{lifecycle, mlflow_server};
use crate::util::archive;

/// Operate the MLflow tracking server.
#[derive(clap::Args, Debug)]
pub struct Mlflow {
    #[command(subcommand)]
    pub command: MlflowCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum MlflowCommand {
    Reset(Reset),
}

/// Start MLflow over with an empty store: the runbook's `rm mlruns/mlflow.db`, done safely.
/// The database and artifacts are copied to mlruns/backups/<time>/ first.
#[derive(clap::Args, Debug)]
pub struct Reset {
    /// Do not ask (needed without a terminal).
    #[arg(long)]
    pub yes: bool,
    /// Seconds MLflow gets to become healthy again.
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    pub timeout: u64,
}

impl Mlflow {
    pub fn run(self, ctx: &Ctx, runtime: &mut dyn Runtime) -> Result<()> {
        match self.command {
            MlflowCommand::Reset(reset) => reset.run(ctx, runtime),
        }
    }
}

impl Reset {
    fn run(self, ctx: &Ctx, runtime: &mut dyn Runtime) -> Result<()> {
        let mlruns = ctx.mlruns_dir();
        let store: Vec<PathBuf> = [mlflow_server::store_path(ctx), mlruns.join("artifacts")]
            .into_iter()
            .filter(|p| p.exists() || ctx.dry_run())
            .collect();
        let backup = mlruns.join("backups").join(archive::stamp());
        let shown: Vec<String> = store.iter().map(|p| ctx.show(p)).collect();
        if !ctx.dry_run() {
            ctx.reporter.confirm(
                &format!(
                    "delete every MLflow experiment, run, artifact and registered model ({}; a copy goes to {})",
                    if shown.is_empty() { "the store is empty".to_owned() } else { shown.join(" and ") },
                    ctx.show(&backup)
                ),
                self.yes,
            )?;
        }
        let mlflow = ctx.stack.mlflow();
        let was_running = runtime.stop(ctx, mlflow)?;
        ctx.runner.create_dir(&backup)?;
        for path in &store {
            let name = path.file_name().expect("store paths have names");
            ctx.runner.rename(path, &backup.join(name))?;
        }
        runtime.start(ctx, mlflow)?;
        lifecycle::wait_healthy(ctx, runtime, &[mlflow], self.timeout)?;
        if !ctx.dry_run() {
            ctx.reporter.info(format!(
                "MLflow {} with an empty store; the old one is in {}. `cargo xtask demo` registers the models again",
                if was_running { "restarted" } else { "started" },
                ctx.show(&backup)
            ));
        }
        Ok(())
    }
}

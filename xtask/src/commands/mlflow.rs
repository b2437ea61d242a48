//! `cargo xtask mlflow ...`: the MLflow server's runbook steps.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::ctx::Ctx;
use crate::runtime::Runtime;
use crate::runtime::{lifecycle, mlflow_server, mlflow_store};
use crate::stack::mlflow_command;
use crate::util::archive;
use crate::util::sqlite::Database;

/// Operate the MLflow tracking server.
#[derive(clap::Args, Debug)]
pub struct Mlflow {
    #[command(subcommand)]
    pub command: MlflowCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum MlflowCommand {
    Reset(Reset),
    Upgrade(Upgrade),
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
            MlflowCommand::Upgrade(upgrade) => upgrade.run(ctx, runtime),
        }
    }
}

impl Reset {
    fn run(self, ctx: &Ctx, runtime: &mut dyn Runtime) -> Result<()> {
        if let Some(pg) = ctx.mlflow_backend.postgres() {
            bail!(
                "`mlflow reset` empties the SQLite store; a PostgreSQL database ({}) is not this \
                 toolkit's to drop: `cargo xtask backup` it, drop and create it again with your \
                 own tools (dropdb, createdb), then `cargo xtask up`. Nothing was changed.",
                pg.shown()
            );
        }
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

/// Move a store an older MLflow made to the pinned MLflow's schema (the runbook's "Database
/// Migrations"): a copy of the store goes to mlruns/backups/ first, `mlflow db upgrade` runs
/// with the pinned MLflow (its virtual environment, or a one-off container of its image), the
/// server must start on the result and show every experiment, run, registered model, version
/// and alias the old store had; otherwise the copy is put back. `up` and `demo` refuse an
/// older store and point here; nothing upgrades a store silently.
#[derive(clap::Args, Debug)]
pub struct Upgrade {
    /// Seconds MLflow gets to become healthy on the upgraded store.
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    pub timeout: u64,
}

impl Upgrade {
    fn run(self, ctx: &Ctx, runtime: &mut dyn Runtime) -> Result<()> {
        let started = Instant::now();
        if let Some(pg) = ctx.mlflow_backend.postgres() {
            bail!(
                "`mlflow upgrade` migrates the SQLite store; on PostgreSQL ({}) back it up with \
                 `cargo xtask backup`, then run MLflow {}'s own `mlflow db upgrade` on that \
                 database. Nothing was changed.",
                pg.shown(),
                ctx.stack.mlflow_version()
            );
        }
        let store = mlflow_server::store_path(ctx);
        if !store.exists() && !ctx.dry_run() {
            println!(
                "no MLflow store at {}: nothing to upgrade (MLflow makes a new one at its schema)",
                ctx.show(&store)
            );
            return Ok(());
        }
        let found = if ctx.dry_run() {
            None
        } else {
            Database::open(&store)?.schema_revision()?
        };
        let (python, inside) = runtime.mlflow_python(ctx)?;
        let migrations = mlflow_store::migrations(ctx, &python)?;
        let head = migrations.head.clone().expect("checked: one head");
        let version = ctx.stack.mlflow_version();
        match &found {
            Some(found) if *found == head => {
                println!(
                    "{} is at schema revision {head} already, MLflow {version}'s: nothing to do",
                    ctx.show(&store)
                );
                return Ok(());
            }
            Some(found) if !migrations.revisions.contains(found) => bail!(
                "{} is at schema revision {found}, which MLflow {version}'s migrations do not \
                 know: a newer MLflow made it. Pin that version in services/mlflow/service.toml, \
                 or restore a backup this version made. Nothing was changed.",
                ctx.show(&store)
            ),
            None if !ctx.dry_run() => bail!(
                "{} has no schema revision: MLflow never finished making it, so there is \
                 nothing to migrate. Nothing was changed; `cargo xtask mlflow reset` starts \
                 over with an empty store.",
                ctx.show(&store)
            ),
            _ => {}
        }
        let mlflow = ctx.stack.mlflow();
        let before = if ctx.dry_run() {
            mlflow_store::Counts::new()
        } else {
            mlflow_store::count_in_file(&Database::open(&store)?)?
        };
        let was_running = runtime.stop(ctx, mlflow)?;
        let copy = ctx
            .mlruns_dir()
            .join("backups")
            .join(format!("before-upgrade-{}", archive::stamp()))
            .join(mlflow_command::STORE_FILE);
        ctx.runner
            .create_dir(copy.parent().expect("the copy is in a folder"))?;
        ctx.runner.copy_file(&store, &copy)?;
        let upgraded = (|| -> Result<mlflow_store::Counts> {
            ctx.runner
                .run(&python.args(mlflow_command::upgrade_args(&inside)))?;
            runtime.start(ctx, mlflow)?;
            lifecycle::wait_healthy(ctx, runtime, &[mlflow], self.timeout)?;
            if ctx.dry_run() {
                return Ok(before.clone());
            }
            let now = Database::open(&store)?.schema_revision()?;
            if now.as_deref() != Some(head.as_str()) {
                bail!("the store is at revision {now:?} after the upgrade, not {head}");
            }
            mlflow_store::count_through_api(&ctx.url(mlflow, ""))
        })();
        let outcome = match upgraded {
            Ok(after) if after == before => Ok(after),
            Ok(after) => Err(anyhow::anyhow!(
                "the upgraded store shows {}, the old one held {}",
                mlflow_store::describe(&after),
                mlflow_store::describe(&before)
            )),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(after) => {
                if !was_running {
                    runtime.stop(ctx, mlflow)?;
                }
                if !ctx.dry_run() {
                    println!(
                        "{} upgraded from schema revision {} to {head} (MLflow {version}) in {:.1}s; \
                         the server started on it and shows all of {}. The old store is in {}",
                        ctx.show(&store),
                        found.as_deref().unwrap_or("?"),
                        started.elapsed().as_secs_f64(),
                        mlflow_store::describe(&after),
                        ctx.show(&copy)
                    );
                }
                Ok(())
            }
            Err(failed) => {
                runtime.stop(ctx, mlflow).ok();
                ctx.runner.copy_file(&copy, &store).with_context(|| {
                    format!(
                        "the upgrade failed ({failed:#}) and the old store could not be put \
                             back: it is in {}",
                        ctx.show(&copy)
                    )
                })?;
                Err(failed.context(format!(
                    "the upgrade of {} failed; the old store is back as it was (a copy stays in \
                     {}), and MLflow is stopped. `cargo xtask doctor` and `cargo xtask logs \
                     mlflow` show why",
                    ctx.show(&store),
                    ctx.show(&copy)
                )))
            }
        }
    }
}

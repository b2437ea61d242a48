//! `cargo xtask backup [--out FILE]`: disaster recovery's first half. One archive holds a
//! consistent copy of MLflow's database (SQLite's online backup while the server runs), its
//! artifacts and the served models, with a manifest of SHA-256 checksums.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;

use crate::ctx::Ctx;
use crate::runtime::mlflow_server;
use crate::runtime::Runtime;
use crate::stack::mlflow_backend::Postgres;
use crate::util::archive::{self, Source};
use crate::util::postgres;

/// Back up the MLflow store and the models into one verifiable archive.
#[derive(clap::Args, Debug)]
pub struct Backup {
    /// Where to write the archive [default: backups/ml-mlops-<time>.tar.gz in the stack
    /// directory].
    /// A new file in an existing folder; an existing file is replaced only with `--force`,
    /// and anything else (a device, a folder, a link) never.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Replace the regular file at `--out` if there is one.
    #[arg(long, requires = "out")]
    pub force: bool,
}

/// Names in the model folders that belong to an unfinished training, not to a model.
pub const STAGING_PREFIX: &str = ".staging-";

impl Backup {
    pub fn run(self, ctx: &Ctx, runtime: &dyn Runtime) -> Result<()> {
        let started = Instant::now();
        let now = archive::stamp();
        let default_dir = ctx.stack_dir.join("backups");
        let out = self
            .out
            .clone()
            .unwrap_or_else(|| default_dir.join(format!("ml-mlops-{now}.tar.gz")));
        let mlruns = ctx.mlruns_dir();
        if let Some(pg) = ctx.mlflow_backend.postgres() {
            return self.run_on_postgres(ctx, pg, started, &now, out, &default_dir);
        }
        let database = mlflow_server::store_path(ctx);
        // A consistent copy beside the database, archived under the database's name.
        let snapshot = mlruns.join(format!(".backup-{now}.db"));
        ctx.runner.plan(format!(
            "copy {} consistently to {}",
            database.display(),
            snapshot.display()
        ));
        ctx.runner.plan(format!(
            "archive it, {}/artifacts and {}/models into {}",
            mlruns.display(),
            ctx.stack_dir.display(),
            out.display()
        ));
        if ctx.dry_run() {
            return Ok(());
        }
        if self.out.is_none() {
            ctx.runner.create_dir(&default_dir)?;
        }
        // Before the database is copied: a refused destination costs nothing.
        archive::check_destination(&out, self.force)?;
        // Exactly what a restore accepts (archive::check_layout): the database, the
        // artifacts, and each API's model folder, which must hold a served model.
        if !database.is_file() {
            anyhow::bail!(
                "no MLflow store at {}: a backup holds MLflow's store and every model; bring the stack up with MLflow (`cargo xtask up`) first",
                ctx.show(&database)
            );
        }
        check_models(ctx)?;
        let online = runtime.backup_database(ctx, &snapshot)?;
        // MLflow stopped: nothing writes the file, so a plain copy is consistent.
        let disk = if online {
            snapshot.clone()
        } else {
            database.clone()
        };
        let sources = sources(ctx, archive::DATABASE, disk);
        let result = self.write(ctx, &out, sources);
        if online {
            std::fs::remove_file(&snapshot).ok();
        }
        report(ctx, &out, &result?, started)
    }

    /// A PostgreSQL store: `pg_dump` (consistent while MLflow runs) into the archive in place
    /// of `mlflow.db`; the manifest says `postgresql`, and only such a stack restores it.
    fn run_on_postgres(
        self,
        ctx: &Ctx,
        pg: &Postgres,
        started: Instant,
        now: &str,
        out: PathBuf,
        default_dir: &Path,
    ) -> Result<()> {
        let dump = ctx.mlruns_dir().join(format!(".backup-{now}.pgdump"));
        ctx.runner.plan(format!(
            "pg_dump {} to {}, and archive it with {}/artifacts and {}/models into {}",
            pg.shown(),
            dump.display(),
            ctx.mlruns_dir().display(),
            ctx.stack_dir.display(),
            out.display()
        ));
        if ctx.dry_run() {
            return Ok(());
        }
        if self.out.is_none() {
            ctx.runner.create_dir(default_dir)?;
        }
        archive::check_destination(&out, self.force)?;
        check_models(ctx)?;
        ctx.runner.create_dir(&ctx.mlruns_dir())?;
        // The dump goes once archived, and also when pg_dump fails part-way.
        let result = postgres::dump(ctx, pg, &dump)
            .and_then(|()| self.write(ctx, &out, sources(ctx, archive::PG_DUMP, dump.clone())));
        std::fs::remove_file(&dump).ok();
        report(ctx, &out, &result?, started)
    }

    fn write(&self, ctx: &Ctx, out: &Path, sources: Vec<Source>) -> Result<archive::Manifest> {
        let created = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let apis: Vec<&str> = ctx.stack.apis().map(|api| api.name.as_str()).collect();
        archive::write(out, &sources, STAGING_PREFIX, &created, self.force, &apis)
    }
}

/// What an archive holds: the store (at `database` in the archive, from `disk`), MLflow's
/// artifacts and each API's models.
fn sources(ctx: &Ctx, database: &str, disk: PathBuf) -> Vec<Source> {
    let mut sources = vec![Source {
        archive_path: database.into(),
        disk_path: disk,
    }];
    let artifacts = ctx.stack_dir.join(archive::ARTIFACTS);
    if artifacts.exists() {
        sources.push(Source {
            archive_path: archive::ARTIFACTS.into(),
            disk_path: artifacts,
        });
    }
    for api in ctx.stack.apis() {
        sources.push(Source {
            archive_path: format!("{}/{}", archive::MODELS, api.name),
            disk_path: ctx.model_dir(api),
        });
    }
    sources
}

/// Each API's model folder must hold a served model: a restore accepts nothing less.
fn check_models(ctx: &Ctx) -> Result<()> {
    let unserved: Vec<&str> = ctx
        .stack
        .apis()
        .filter(|api| std::fs::symlink_metadata(ctx.model_dir(api).join(archive::CURRENT)).is_err())
        .map(|api| api.name.as_str())
        .collect();
    if !unserved.is_empty() {
        anyhow::bail!(
                "no model to back up for {} in {}: a backup holds every API's model; train them (`cargo xtask up`) first",
                unserved.join(", "),
                ctx.show(&ctx.stack_dir.join(archive::MODELS))
            );
    }
    Ok(())
}

fn report(ctx: &Ctx, out: &Path, manifest: &archive::Manifest, started: Instant) -> Result<()> {
    let (size, sha256) = archive::hash_file(out)?;
    println!(
            "{}: {} files and {} links ({:.1} MB of data, {:.1} MB archived) in {:.1}s\nSHA-256 {sha256}\nRestore with `cargo xtask restore {}`",
            ctx.show(out),
            manifest.files.len(),
            manifest.links.len(),
            manifest.bytes() as f64 / 1e6,
            size as f64 / 1e6,
            started.elapsed().as_secs_f64(),
            ctx.show(out)
        );
    Ok(())
}

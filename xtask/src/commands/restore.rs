//! `cargo xtask restore FILE`: disaster recovery's second half. The whole archive is read and
//! verified before anything is touched: every checksum, exactly a backup's set of files, a
//! database holding MLflow's tables, and each model accepted by its own service. Then the
//! stack stops, the MLflow store and the models are put back (what was there is kept aside in
//! mlruns/backups/, the last few kept), and the stack comes up healthy; if it cannot, the
//! previous store and models go back and the stack comes up on them.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::build::binaries;
use crate::ctx::Ctx;
use crate::runtime::lifecycle::{self, UpOptions};
use crate::runtime::Runtime;
use crate::util::{archive, postgres, sqlite};

/// Restore a backup made by `cargo xtask backup`, and bring the stack up healthy.
#[derive(clap::Args, Debug)]
pub struct Restore {
    /// The archive.
    pub archive: PathBuf,
    /// Do not ask before replacing the current store and models (needed without a terminal).
    #[arg(long)]
    pub yes: bool,
    #[command(flatten)]
    pub options: UpOptions,
}

/// Tables every MLflow store has (MLflow 2 and 3): a database without them is not one.
pub const MLFLOW_TABLES: [&str; 8] = [
    "alembic_version",
    "experiments",
    "runs",
    "metrics",
    "params",
    "tags",
    "registered_models",
    "model_versions",
];

/// Checks that `database` is a sound SQLite file holding MLflow's tables.
pub fn check_database(database: &Path) -> Result<()> {
    let opened = sqlite::Database::open(database)?;
    let problems = opened.problems()?;
    if !problems.is_empty() {
        anyhow::bail!(
            "{} is damaged: SQLite's check found {}",
            database.display(),
            problems.join("; ")
        );
    }
    let tables = opened.table_names()?;
    let missing: Vec<&str> = MLFLOW_TABLES
        .into_iter()
        .filter(|t| !tables.iter().any(|have| have == t))
        .collect();
    if !missing.is_empty() {
        anyhow::bail!(
            "{} is a SQLite database but not MLflow's: it has no table {}",
            database.display(),
            missing.join(", ")
        );
    }
    Ok(())
}

impl Restore {
    /// The staged archive's database and models, checked as MLflow and the services would.
    fn check_contents(ctx: &Ctx, staging: &Path) -> Result<()> {
        if ctx.mlflow_backend.postgres().is_some() {
            postgres::check_dump(ctx, &staging.join(archive::PG_DUMP), &MLFLOW_TABLES)?;
        } else {
            check_database(&staging.join(archive::DATABASE))?;
        }
        let apis: Vec<_> = ctx.stack.apis().collect();
        binaries::build(ctx, &apis)?;
        for api in apis {
            let log = staging.join(format!(".check-{}.log", api.name));
            binaries::check_model(
                ctx,
                api,
                &staging.join(archive::MODELS).join(&api.name),
                &log,
            )?;
            std::fs::remove_file(&log).ok();
        }
        Ok(())
    }

    pub fn run(self, ctx: &Ctx, runtime: &mut dyn Runtime) -> Result<()> {
        let started = Instant::now();
        let now = archive::stamp();
        let staging = ctx.state_dir().join(format!("restore-{now}"));
        ctx.runner.plan(format!(
            "verify {} into {}, and check its database and models",
            self.archive.display(),
            staging.display()
        ));
        let manifest = if ctx.dry_run() {
            None
        } else {
            std::fs::create_dir_all(&staging)?;
            let apis: Vec<&str> = ctx.stack.apis().map(|api| api.name.as_str()).collect();
            let backend = ctx.mlflow_backend.kind();
            let verified = archive::extract_verified(&self.archive, &staging, &apis, backend)
                .and_then(|manifest| Self::check_contents(ctx, &staging).map(|()| manifest));
            if verified.is_err() {
                std::fs::remove_dir_all(&staging).ok();
            }
            Some(verified.map_err(|e| e.context("nothing was changed"))?)
        };
        let backups = ctx.mlruns_dir().join("backups");
        let kept = backups.join(format!("before-restore-{now}"));
        if let Some(manifest) = &manifest {
            let confirmed = ctx.reporter.confirm(
                &format!(
                    "replace the MLflow store and the models with the backup of {} ({} files); the current ones go to {}",
                    manifest.created,
                    manifest.files.len(),
                    ctx.show(&kept)
                ),
                self.yes,
            );
            if let Err(e) = confirmed {
                std::fs::remove_dir_all(&staging).ok();
                return Err(e);
            }
        }
        // Stop what uses the data, APIs first.
        for service in ctx.stack.services.iter().rev() {
            runtime.stop(ctx, service)?;
        }
        set_aside(ctx, &kept, Dump::MustSucceed).with_context(|| {
            format!(
                "setting the current store and models aside failed, with the stack stopped: what was moved is in {}, the rest in place; nothing was restored. Move it back, then `cargo xtask up`",
                ctx.show(&kept)
            )
        })?;
        put_in_place(ctx, &staging).with_context(|| {
            format!(
                "moving the restored store and models into place failed, with the stack stopped: the previous ones are in {}, the verified backup in {}. Move the previous ones back (a PostgreSQL store: `pg_restore --clean` the {} there), then `cargo xtask up`",
                ctx.show(&kept),
                ctx.show(&staging),
                archive::PG_DUMP
            )
        })?;
        if let Err(e) = ctx.runner.remove_path(&staging) {
            ctx.reporter.warn(format!("{e:#}"));
        }
        if let Err(failed) = lifecycle::bring_up(ctx, runtime, &self.options) {
            return Err(self.roll_back(ctx, runtime, &kept, &backups, &now, failed));
        }
        if !ctx.dry_run() {
            // The restore is done: a copy that cannot be pruned is worth a warning, not a failure.
            let pruned = prune(&backups, KEEP_COPIES).unwrap_or_else(|e| {
                ctx.reporter.warn(format!("{e:#}"));
                Pruned::default()
            });
            println!(
                "restored {} and brought the stack up healthy in {:.1}s; what was there before is in {}{}",
                self.archive.display(),
                started.elapsed().as_secs_f64(),
                ctx.show(&kept),
                pruned.describe(ctx, &backups)
            );
        }
        Ok(())
    }

    /// After the restored store failed to come up: stops what runs, sets the restored store
    /// aside, puts the previous one back and brings the stack up on it. The error says all.
    fn roll_back(
        &self,
        ctx: &Ctx,
        runtime: &mut dyn Runtime,
        kept: &Path,
        backups: &Path,
        now: &str,
        failed: anyhow::Error,
    ) -> anyhow::Error {
        let refused = backups.join(format!("failed-restore-{now}"));
        ctx.reporter.warn(format!(
            "the stack did not come up on the restored store: {failed:#}; putting the previous store and models back"
        ));
        let back = (|| -> Result<()> {
            for service in ctx.stack.services.iter().rev() {
                runtime.stop(ctx, service)?;
            }
            // The refused store is in the user's archive: its dump is only a convenience.
            set_aside(ctx, &refused, Dump::BestEffort)?;
            put_in_place(ctx, kept)
        })();
        let context = match back {
            Err(e) => format!(
                "restoring {} failed, and putting the previous store and models back failed too ({e:#}); they are in {} (the restored ones in {})",
                self.archive.display(),
                ctx.show(kept),
                ctx.show(&refused)
            ),
            Ok(()) => {
                if let Err(e) = ctx.runner.remove_path(kept) {
                    ctx.reporter.warn(format!("{e:#}"));
                }
                match lifecycle::bring_up(ctx, runtime, &self.options) {
                    Ok(()) => format!(
                        "restoring {} failed, so the previous MLflow store and models are back and the stack is up on them; the restored ones are in {}",
                        self.archive.display(),
                        ctx.show(&refused)
                    ),
                    Err(e) => format!(
                        "restoring {} failed; the previous MLflow store and models are back in place, but the stack did not come up on them either ({e:#}); the restored ones are in {}. `cargo xtask doctor` says what is wrong",
                        self.archive.display(),
                        ctx.show(&refused)
                    ),
                }
            }
        };
        let pruned = match prune(backups, KEEP_COPIES) {
            Ok(pruned) => pruned.describe(ctx, backups),
            Err(e) => {
                ctx.reporter.warn(format!("{e:#}"));
                String::new()
            }
        };
        failed.context(format!("{context}{pruned}"))
    }
}

/// How many copies of what restores replaced (and of restored stores that failed to come
/// up) are kept in mlruns/backups/: each is a whole store and its models.
pub const KEEP_COPIES: usize = 3;

/// What [`prune`] removed.
#[derive(Debug, Default, PartialEq)]
pub struct Pruned {
    pub removed: Vec<String>,
}

impl Pruned {
    fn describe(&self, ctx: &Ctx, backups: &Path) -> String {
        if self.removed.is_empty() {
            String::new()
        } else {
            format!(
                " (the last {KEEP_COPIES} such copies are kept in {}; removed the {} older: {})",
                ctx.show(backups),
                self.removed.len(),
                self.removed.join(", ")
            )
        }
    }
}

/// Removes all but the newest `keep` `before-restore-*` folders in `backups`, and all but the
/// newest `keep` `failed-restore-*` ones (their names sort by time).
pub fn prune(backups: &Path, keep: usize) -> Result<Pruned> {
    let mut pruned = Pruned::default();
    let Ok(entries) = std::fs::read_dir(backups) else {
        return Ok(pruned);
    };
    let names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for prefix in ["before-restore-", "failed-restore-"] {
        let mut copies: Vec<&String> = names.iter().filter(|n| n.starts_with(prefix)).collect();
        copies.sort();
        let old = copies.len().saturating_sub(keep);
        for name in &copies[..old] {
            std::fs::remove_dir_all(backups.join(name))
                .with_context(|| format!("cannot remove {}", backups.join(name).display()))?;
            pruned.removed.push((*name).clone());
        }
    }
    Ok(pruned)
}

/// Whether setting a PostgreSQL store aside stops when its dump fails.
#[derive(Clone, Copy)]
enum Dump {
    MustSucceed,
    /// A failed dump is a warning.
    BestEffort,
}

/// Moves what a backup holds from the stack directory to under `to`, in the archive's
/// layout: the SQLite store, artifacts and models; a PostgreSQL store is dumped there first.
fn set_aside(ctx: &Ctx, to: &Path, dump_policy: Dump) -> Result<()> {
    let files: &[&str] = match ctx.mlflow_backend.postgres() {
        Some(pg) => {
            let dump = to.join(archive::PG_DUMP);
            ctx.runner
                .create_dir(dump.parent().expect("a joined path has a parent"))?;
            match (postgres::dump(ctx, pg, &dump), dump_policy) {
                (Ok(()), _) => {}
                (Err(e), Dump::MustSucceed) => return Err(e),
                (Err(e), Dump::BestEffort) => ctx.reporter.warn(format!(
                    "the database could not be dumped to {}: {e:#}",
                    ctx.show(&dump)
                )),
            }
            &archive::CONTENTS_BESIDE_POSTGRES
        }
        None => &archive::CONTENTS,
    };
    swap(ctx, files, &ctx.stack_dir, to)
}

/// Puts what [`set_aside`] (or a verified archive) left under `from` back in the stack
/// directory; a PostgreSQL store first, in one transaction, from its dump.
fn put_in_place(ctx: &Ctx, from: &Path) -> Result<()> {
    let files: &[&str] = match ctx.mlflow_backend.postgres() {
        Some(pg) => {
            postgres::restore(ctx, pg, &from.join(archive::PG_DUMP))?;
            &archive::CONTENTS_BESIDE_POSTGRES
        }
        None => &archive::CONTENTS,
    };
    swap(ctx, files, from, &ctx.stack_dir)
}

/// Moves each of `relative` from under `from` to under `to`.
fn swap(ctx: &Ctx, relative: &[&str], from: &Path, to: &Path) -> Result<()> {
    for relative in relative {
        ctx.runner
            .rename(&from.join(relative), &to.join(relative))
            .with_context(|| format!("cannot move {relative}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_newest_copies_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let backups = dir.path();
        for name in [
            "before-restore-20261101T000000Z",
            "before-restore-20261103T000000Z",
            "before-restore-20261102T000000Z",
            "before-restore-20261104T000000Z",
            "before-restore-20261105T000000Z",
            "failed-restore-20261101T000000Z",
            "20261101T000000Z",
        ] {
            std::fs::create_dir_all(backups.join(name).join("models")).unwrap();
        }
        // A file with the prefix is not a copy.
        std::fs::write(backups.join("before-restore-notes"), b"x").unwrap();
        let pruned = prune(backups, 3).unwrap();
        assert_eq!(
            pruned.removed,
            [
                "before-restore-20261101T000000Z",
                "before-restore-20261102T000000Z"
            ]
        );
        let mut left: Vec<String> = std::fs::read_dir(backups)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "20261101T000000Z",
                "before-restore-20261103T000000Z",
                "before-restore-20261104T000000Z",
                "before-restore-20261105T000000Z",
                "before-restore-notes",
                "failed-restore-20261101T000000Z"
            ]
        );
        assert_eq!(
            prune(&backups.join("absent"), 3).unwrap(),
            Pruned::default()
        );
    }

    #[test]
    fn a_database_without_mlflows_tables_is_refused() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mlflow-schema.db");
        check_database(&fixture).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let not_sqlite = dir.path().join("mlflow.db");
        std::fs::write(&not_sqlite, b"this is not a database").unwrap();
        let err = format!("{:#}", check_database(&not_sqlite).unwrap_err());
        assert!(err.contains("is not a readable SQLite database"), "{err}");
    }
}

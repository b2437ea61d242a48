//! MLflow's PostgreSQL store, backed up and put back with PostgreSQL's own tools: `pg_dump
//! --format=custom` (consistent while MLflow writes), `pg_restore --list` to check a dump is
//! MLflow's before anything is touched, and `pg_restore --single-transaction` so a restore
//! that fails leaves the database as it was.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::ctx::Ctx;
use crate::runner::Step;
use crate::stack::mlflow_backend::Postgres;

/// PostgreSQL's program `name`: the newest Debian-installed version's (`/usr/lib/postgresql/N/
/// bin`; a dump needs tools at least as new as the server), else the one on `PATH`.
pub fn tool(name: &str) -> Result<PathBuf> {
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let path = e.path().join("bin").join(name);
            path.is_file().then_some((version, path))
        })
        .max_by_key(|(version, _)| *version)
        .map(|(_, path)| path);
    newest.or_else(|| which::which(name).ok()).with_context(|| {
        format!(
            "{name} is needed to back up and restore MLflow's PostgreSQL store: install \
             PostgreSQL's client tools (Debian: postgresql-client)"
        )
    })
}

fn step(ctx: &Ctx, pg: &Postgres, name: &str) -> Result<Step> {
    let program = if ctx.dry_run() {
        PathBuf::from(name)
    } else {
        tool(name)?
    };
    let mut step = Step::new(program.to_string_lossy());
    for (key, value) in pg.env() {
        step = step.env(key, value);
    }
    Ok(step)
}

/// Dumps the database into `dest` (custom format: compressed, restorable table by table).
pub fn dump(ctx: &Ctx, pg: &Postgres, dest: &Path) -> Result<()> {
    ctx.runner
        .run(
            &step(ctx, pg, "pg_dump")?
                .args(["--format=custom", "--no-owner", "--no-privileges", "--file"])
                .arg(dest)
                .arg(format!("--dbname={}", pg.uri)),
        )
        .with_context(|| format!("cannot dump MLflow's store {}", pg.shown()))?;
    Ok(())
}

/// Checks that `dump` is a PostgreSQL dump holding every table in `tables`.
pub fn check_dump(ctx: &Ctx, dump: &Path, tables: &[&str]) -> Result<()> {
    let listed = ctx.runner.query(
        &Step::new(tool("pg_restore")?.to_string_lossy())
            .arg("--list")
            .arg(dump),
    )?;
    if !listed.status.success() {
        bail!(
            "{} is not a PostgreSQL dump pg_restore can read: {}",
            dump.display(),
            crate::runner::tail(&String::from_utf8_lossy(&listed.stderr), 5)
        );
    }
    let text = String::from_utf8_lossy(&listed.stdout);
    // `215; 1259 16385 TABLE public experiments mlflow`
    let has_table = |table: &str| {
        text.lines().any(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            words.windows(3).any(|w| w[0] == "TABLE" && w[2] == table)
        })
    };
    let missing: Vec<&str> = tables.iter().copied().filter(|t| !has_table(t)).collect();
    if !missing.is_empty() {
        bail!(
            "{} is a PostgreSQL dump but not of MLflow's store: it has no table {}",
            dump.display(),
            missing.join(", ")
        );
    }
    Ok(())
}

/// Replaces what the dump holds in the database, all or nothing.
pub fn restore(ctx: &Ctx, pg: &Postgres, dump: &Path) -> Result<()> {
    ctx.runner
        .run(
            &step(ctx, pg, "pg_restore")?
                .args([
                    "--clean",
                    "--if-exists",
                    "--no-owner",
                    "--no-privileges",
                    "--single-transaction",
                    "--exit-on-error",
                ])
                .arg(format!("--dbname={}", pg.uri))
                .arg(dump),
        )
        .with_context(|| {
            format!(
                "cannot restore {} into {} (in one transaction: the database is as it was)",
                dump.display(),
                pg.shown()
            )
        })?;
    Ok(())
}

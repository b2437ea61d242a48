//! `cargo xtask restore FILE`: disaster recovery's second half. The whole archive is read and
//! verified (every checksum, nothing missing or added) before anything is touched; then the
//! stack stops, the MLflow store and the models are put back (what was there is kept aside in
//! mlruns/backups/), and the stack comes up healthy.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;

use crate::ctx::Ctx;
use crate::runtime::lifecycle::{self, UpOptions};
use crate::runtime::Runtime;
use crate::util::archive;

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

impl Restore {
    pub fn run(self, ctx: &Ctx, runtime: &mut dyn Runtime) -> Result<()> {
        let started = Instant::now();
        let now = archive::stamp();
        let staging = ctx.state_dir().join(format!("restore-{now}"));
        ctx.runner.plan(format!(
            "verify {} into {}",
            self.archive.display(),
            staging.display()
        ));
        let manifest = if ctx.dry_run() {
            None
        } else {
            std::fs::create_dir_all(&staging)?;
            let apis: Vec<&str> = ctx.stack.apis().map(|api| api.name.as_str()).collect();
            let verified = archive::extract_verified(&self.archive, &staging, &apis);
            if verified.is_err() {
                std::fs::remove_dir_all(&staging).ok();
            }
            Some(verified.map_err(|e| e.context("nothing was changed"))?)
        };
        let kept = ctx
            .mlruns_dir()
            .join("backups")
            .join(format!("before-restore-{now}"));
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
        for relative in archive::CONTENTS {
            let current = ctx.stack_dir.join(relative);
            let restored = staging.join(relative);
            ctx.runner.rename(&current, &kept.join(relative))?;
            ctx.runner.rename(&restored, &current)?;
        }
        ctx.runner.remove_path(&staging)?;
        lifecycle::bring_up(ctx, runtime, &self.options)?;
        if !ctx.dry_run() {
            println!(
                "restored {} and brought the stack up healthy in {:.1}s; what was there before is in {}",
                self.archive.display(),
                started.elapsed().as_secs_f64(),
                ctx.show(&kept)
            );
        }
        Ok(())
    }
}

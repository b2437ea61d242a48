//! `cargo xtask tools`: the pinned external tools, what is installed, and where.

use anyhow::{bail, Result};

use crate::ctx::Ctx;
use crate::deps::tools::{self, Status};
use crate::util::table;

/// Show the pinned external tools (cargo-deny, Trivy, the linters) and where they live.
///
/// Each one's pinned version (xtask/tools.toml), the version found, and where. They install
/// themselves into the cache on first use; `--install` installs every missing one now.
#[derive(clap::Args, Debug)]
pub struct Tools {
    /// Install every missing tool now (as CI does before it runs the scans).
    #[arg(long)]
    pub install: bool,
}

fn row(ctx: &Ctx, status: &Status) -> Vec<String> {
    let tool = &status.tool;
    let (found, place) = match (&status.usable, &status.cached) {
        (Some(path), _) => (tool.version.clone(), ctx.show(path)),
        (None, Some((path, version))) => (
            version.clone().unwrap_or_else(|| "does not run".into()),
            ctx.show(path),
        ),
        (None, None) => ("-".into(), "-".into()),
    };
    let verdict = match (&status.usable, &status.cached) {
        (Some(path), _) if Some(path) != status.cached.as_ref().map(|(p, _)| p) => {
            "✓ (PATH copy of the pinned version)".to_owned()
        }
        (Some(_), _) => "✓".to_owned(),
        (None, Some(_)) => "✗ not the pinned version: `cargo xtask tools --install`".to_owned(),
        (None, None) => format!("missing: installs on first use ({})", tool.first_install),
    };
    vec![
        tool.name.clone(),
        tool.version.clone(),
        found,
        place,
        verdict,
        tool.purpose.clone(),
    ]
}

impl Tools {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let all = tools::all()?;
        if self.install {
            let missing: Vec<&tools::Tool> = all
                .iter()
                .filter(|t| !tools::status(ctx, t).is_usable())
                .collect();
            if missing.is_empty() {
                ctx.reporter.info("every pinned tool is installed");
            } else {
                tools::install(ctx, &missing)?;
            }
            if ctx.dry_run() {
                return Ok(());
            }
        }
        let statuses: Vec<Status> = all.iter().map(|t| tools::status(ctx, t)).collect();
        let rows: Vec<Vec<String>> = statuses.iter().map(|s| row(ctx, s)).collect();
        println!(
            "{}",
            table::text(
                &["TOOL", "PINNED", "FOUND", "WHERE", "STATUS", "USED FOR"],
                &rows
            )
        );
        for note in statuses.iter().filter_map(Status::ignored_on_path) {
            println!("{note}");
        }
        println!(
            "pins: xtask/tools.toml; cache: {}",
            ctx.show(&ctx.cache_dir)
        );
        if self.install {
            let broken: Vec<&str> = statuses
                .iter()
                .filter(|s| !s.is_usable())
                .map(|s| s.tool.name.as_str())
                .collect();
            if !broken.is_empty() {
                bail!("not installed at the pinned version: {}", broken.join(", "));
            }
        }
        Ok(())
    }
}

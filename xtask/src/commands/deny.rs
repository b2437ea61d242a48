//! `cargo xtask deny`: cargo-deny with deny.toml (licences, bans, sources, advisories).

use std::path::PathBuf;

use anyhow::Result;

use crate::ctx::Ctx;
use crate::scanners::findings::{self, Policy};
use crate::scanners::{cargo_deny, reports_dir};

/// Check the Rust dependencies against deny.toml: licences, bans, sources and RustSec
/// advisories.
///
/// Where the advisory database cannot be fetched, the local copy is used; with none,
/// advisories are not checked and the report says so (that fails only with
/// --require-advisories).
#[derive(clap::Args, Debug)]
pub struct Deny {
    /// Fail when advisories cannot be checked (no advisory database).
    #[arg(long)]
    pub require_advisories: bool,
    /// Do not try to update the advisory database: use the local copy, if any.
    #[arg(long)]
    pub offline: bool,
    /// The policy file [default: deny.toml at the root]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The workspace to check [default: the root's Cargo.toml]
    #[arg(long, value_name = "FILE")]
    pub manifest_path: Option<PathBuf>,
}

impl Deny {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let mut options = cargo_deny::Options::for_workspace(ctx);
        options.offline = self.offline;
        options.require_advisories = self.require_advisories;
        if let Some(config) = self.config {
            options.config = std::path::absolute(config)?;
        }
        if let Some(manifest) = self.manifest_path {
            options.manifest = std::path::absolute(manifest)?;
        }
        let policy = Policy::load(&ctx.root)?;
        let result = ctx
            .reporter
            .run_task("cargo-deny", |_| cargo_deny::scan(ctx, &options))?;
        if ctx.dry_run() {
            return Ok(());
        }
        let sarif = reports_dir(ctx).join("sarif/cargo-deny.sarif");
        ctx.runner.write_file(
            &sarif,
            serde_json::to_string_pretty(&cargo_deny::sarif(&result))?,
        )?;
        let findings_table = crate::util::table::text(
            &["SEVERITY", "CHECK/ID", "CRATE", "WHAT", "WHERE"],
            &result
                .findings
                .iter()
                .map(|f| {
                    vec![
                        f.severity.name().to_owned(),
                        f.id.clone(),
                        f.subject.clone(),
                        f.title.clone(),
                        f.location
                            .as_ref()
                            .map(|l| l.to_string())
                            .unwrap_or_default(),
                    ]
                })
                .collect::<Vec<_>>(),
        );
        if !result.findings.is_empty() {
            println!("{findings_table}\n");
        }
        println!("{}\n", cargo_deny::checks_line(&result));
        findings::report(
            ctx,
            "cargo xtask deny",
            &[result],
            &policy,
            "Fix the findings above, or accept one in deny.toml with a reason",
        )
    }
}

//! `cargo xtask sbom`: CycloneDX SBOMs of the stack's images and of the workspace.

use anyhow::{bail, Result};

use crate::build::engine;
use crate::ctx::Ctx;
use crate::runner::Step;
use crate::scanners::trivy::{SbomInput, Trivy};
use crate::scanners::{archived_image, image_input, remove_image_input, reports_dir};

/// Write a CycloneDX SBOM for each of the stack's images and one for the workspace, into
/// target/xtask/reports/sbom/.
#[derive(clap::Args, Debug)]
pub struct Sbom {
    /// Only the workspace's SBOM: leave the images out.
    #[arg(long)]
    pub skip_images: bool,
}

impl Sbom {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let trivy = Trivy::prepare(ctx, false)?;
        let dir = reports_dir(ctx).join("sbom");
        let mut written = Vec::new();
        if !self.skip_images {
            let missing: Vec<String> = ctx
                .stack
                .services
                .iter()
                .map(|s| s.versioned_image())
                .filter(|image| !ctx.dry_run() && !engine::image_exists(ctx, image))
                .collect();
            if !missing.is_empty() {
                bail!(
                    "{} not built: run `cargo xtask images` first (or pass --skip-images)",
                    missing.join(", ")
                );
            }
            let archives = ctx.root.join("target/xtask/images");
            ctx.runner.create_dir(&archives)?;
            for service in &ctx.stack.services {
                let image = service.versioned_image();
                let out = dir.join(format!("{}.cdx.json", service.name));
                ctx.reporter.run_task(format!("SBOM of {image}"), |_| {
                    let tar = archives.join(format!("{}.sbom.tar", service.name));
                    ctx.runner.run(
                        &Step::new("docker")
                            .args(["save", "--output"])
                            .arg(&tar)
                            .arg(&image),
                    )?;
                    let result = (|| {
                        let held = if ctx.dry_run() {
                            None
                        } else {
                            Some(archived_image(ctx, &tar)?)
                        };
                        let input = image_input(ctx, &tar, held.as_ref())?;
                        let result = trivy.sbom(ctx, SbomInput::Image(&input), &out);
                        remove_image_input(ctx, &input)?;
                        result
                    })();
                    ctx.runner.remove_path(&tar)?;
                    result
                })?;
                written.push(out);
            }
        }
        let out = dir.join("workspace.cdx.json");
        ctx.reporter.run_task("SBOM of the workspace", |_| {
            trivy.sbom(ctx, SbomInput::Dir(&ctx.root), &out)
        })?;
        written.push(out);
        if !ctx.dry_run() {
            for path in &written {
                println!("{}", ctx.show(path));
            }
        }
        Ok(())
    }
}

//! `cargo xtask images [SERVICE...]`: build the stack's container images, with no registry
//! needed (see `build::images`).

use anyhow::Result;

use crate::build::engine;
use crate::build::images;
use crate::ctx::Ctx;
use crate::util::table;

/// Build the images (all by default), tagged with the version and the git revision.
#[derive(clap::Args, Debug)]
pub struct Images {
    /// Only these services.
    pub services: Vec<String>,
}

impl Images {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let services = ctx.stack.select(&self.services)?;
        let engine =
            engine::version(ctx).map_err(|e| e.context("building images needs a Docker engine"))?;
        ctx.reporter.detail(format!("Docker Engine {engine}"));
        images::preflight(ctx, &services, true)?;
        let revision = images::build(ctx, &services)?;
        if ctx.dry_run() {
            return Ok(());
        }
        let rows: Vec<Vec<String>> = services
            .iter()
            .map(|s| {
                vec![
                    s.image(),
                    format!("{}, {}", env!("CARGO_PKG_VERSION"), revision.tag),
                    images::size_of(ctx, &s.versioned_image()),
                ]
            })
            .collect();
        println!("{}", table::text(&["IMAGE", "TAGS", "SIZE"], &rows));
        Ok(())
    }
}

//! `cargo xtask down`: stop every service of the stack, MLflow included, and free the ports;
//! optionally delete the data and the images the toolkit built.

use anyhow::{bail, Context, Result};

use crate::build::engine;
use crate::build::images;
use crate::ctx::Ctx;
use crate::runner::Step;
use crate::runtime::lifecycle;
use crate::runtime::ports;
use crate::runtime::Runtime;
use crate::stack::compose_file;

/// Stop the whole stack; mlruns/ (the MLflow store) and models/ are kept unless asked.
#[derive(clap::Args, Debug)]
pub struct Down {
    /// Also delete the MLflow store (mlruns/) and the trained models (models/).
    #[arg(long)]
    pub volumes: bool,
    /// Also remove every image the toolkit built (`ml-mlops/*`, the bootstrapped Python base
    /// included) and the leftovers of their builds.
    #[arg(long)]
    pub images: bool,
    /// Do not ask before deleting (needed with --volumes or --images without a terminal).
    #[arg(long)]
    pub yes: bool,
}

impl Down {
    pub fn run(self, ctx: &Ctx, runtime: &mut dyn Runtime) -> Result<()> {
        // APIs first, MLflow last: the reverse of the start order.
        let mut stopped = Vec::new();
        for service in ctx.stack.services.iter().rev() {
            if runtime.stop(ctx, service)? {
                stopped.push(service.name.as_str());
            }
        }
        runtime.stop_shared(ctx)?;
        lifecycle::forget_mlflow_choice(ctx)?;
        if self.volumes {
            self.delete_data(ctx)?;
        }
        if self.images {
            self.delete_images(ctx)?;
        }
        if ctx.dry_run() {
            return Ok(());
        }
        if stopped.is_empty() {
            ctx.reporter.info("nothing was running");
        } else {
            stopped.reverse();
            ctx.reporter.info(format!("stopped {}", stopped.join(", ")));
        }
        let held: Vec<String> = ctx
            .stack
            .endpoints()
            .map(|(_, e)| ctx.endpoint_port(&e))
            .filter(|&p| ports::in_use(p))
            .map(|p| ports::describe(ctx, p))
            .collect();
        if !held.is_empty() {
            bail!(
                "the stack is down, but ports are still in use: {}. Those processes were not started by this toolkit",
                held.join("; ")
            );
        }
        Ok(())
    }

    fn delete_data(&self, ctx: &Ctx) -> Result<()> {
        let dirs = [ctx.mlruns_dir(), ctx.stack_dir.join("models")];
        let present: Vec<_> = dirs.iter().filter(|d| d.exists()).collect();
        if present.is_empty() {
            return Ok(());
        }
        let shown: Vec<String> = present.iter().map(|d| ctx.show(d)).collect();
        let question = format!(
            "delete {} (the MLflow store and the trained models)",
            shown.join(" and ")
        );
        if !ctx.dry_run() {
            ctx.reporter.confirm(&question, self.yes)?;
        }
        for dir in present {
            ctx.runner.remove_path(dir)?;
        }
        if !ctx.dry_run() {
            ctx.reporter.info(format!("deleted {}", shown.join(", ")));
        }
        Ok(())
    }

    fn delete_images(&self, ctx: &Ctx) -> Result<()> {
        if let Err(why) = engine::version(ctx) {
            ctx.reporter.info(format!("no images to remove: {why:#}"));
            return Ok(());
        }
        // The images are shared by every stack on this engine: not while another one runs.
        let others = other_stacks_running(ctx)?;
        if !others.is_empty() {
            bail!(
                "the images were kept: the compose project(s) {} of other stacks run from them. \
                 Take those down first (`cargo xtask --port-offset N down` for each), then \
                 `down --images` again",
                others.join(", ")
            );
        }
        let built = images::built_by_us(ctx);
        if !built.is_empty() && !ctx.dry_run() {
            ctx.reporter.confirm(
                &format!(
                    "remove the images {} (rebuilding them takes minutes)",
                    built.join(", ")
                ),
                self.yes,
            )?;
        }
        images::remove(ctx, &built)?;
        if !ctx.dry_run() && !built.is_empty() {
            ctx.reporter.info(format!("removed {}", built.join(", ")));
        }
        Ok(())
    }
}

/// The compose projects of the toolkit's other stacks (`ml-mlops`, `ml-mlops-NAME`) that have
/// a running container on this engine. An engine that cannot say is an error: the images are
/// removed only when no other stack is known to run from them.
fn other_stacks_running(ctx: &Ctx) -> Result<Vec<String>> {
    let step = Step::new("docker").args([
        "ps",
        "--filter",
        "label=com.docker.compose.project",
        "--format",
        "{{.Label \"com.docker.compose.project\"}}",
    ]);
    let ours = ctx.project();
    let mut projects: Vec<String> = ctx
        .runner
        .query_stdout(&step)
        .context("the images were kept: cannot list the engine's running containers to tell whether another stack runs from them")?
        .lines()
        .filter(|p| {
            *p != ours
                && (*p == compose_file::PROJECT
                    || p.starts_with(&format!("{}-", compose_file::PROJECT)))
        })
        .map(str::to_owned)
        .collect();
    projects.sort();
    projects.dedup();
    Ok(projects)
}

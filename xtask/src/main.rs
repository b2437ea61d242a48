//! `cargo xtask`: build, run, check and ship the ML serving stack.
//!
//! Parse, build a context, run one command. Each command lives in `commands/`, in the module
//! of its name; beside it are the parts commands share:
//! - `ctx`: what every command gets: paths, the stack, the runner, the reporter;
//! - `stack/`: the stack's description: the `service.toml` files and the compose file;
//! - `runtime/`: where the stack runs (local processes, containers) and its lifecycle;
//! - `build/`: building and shipping: binaries, images, the Docker engine, registries;
//! - `scanners/`: checking: the scanners, their findings, SARIF, the workflows;
//! - `deps/`: dependencies: the pinned tools and the lock files;
//! - `runner/`: the only place that starts processes;
//! - `util/`: small shared pieces: progress, tables, HTTP, polling, the backup archive.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use commands as cmd;
use runtime::{lifecycle, Purpose};

mod build;
mod commands;
mod ctx;
mod deps;
mod runner;
mod runtime;
mod scanners;
mod stack;
mod util;

/// The task runner of the ML serving stack: BankChurn, CarVision and TelecomAI APIs plus an
/// MLflow tracking server.
///
/// Start with `cargo xtask demo`. Every command exits non-zero on failure and says what to do.
#[derive(Parser, Debug)]
#[command(name = "cargo xtask", version, max_term_width = 100)]
pub struct Cli {
    /// Print every step (program, arguments, directory, environment) and run nothing.
    #[arg(long, global = true)]
    dry_run: bool,
    /// More output: the commands run, their timings.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Less output: only results and errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Where the stack runs: `auto` picks docker when an engine answers and the images can be
    /// built, else local. Docker uses the compose plugin, else docker-compose 1.29
    /// (`XTASK_COMPOSE=plugin|legacy` chooses).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "auto",
        env = "XTASK_RUNTIME"
    )]
    runtime: runtime::Choice,
    /// Added to every service's host port: runs a second stack beside the first.
    #[arg(
        long,
        global = true,
        default_value_t = 0,
        env = "XTASK_PORT_OFFSET",
        value_name = "N"
    )]
    port_offset: u16,
    /// Names a second stack: its compose project, containers and network get `-NAME`, and it
    /// keeps its data, models, MLflow store and state in .xtask/stacks/NAME/ [default: the port
    /// offset when there is one, else the default stack]
    #[arg(long, global = true, env = "XTASK_STACK", value_name = "NAME")]
    stack: Option<String>,
    /// Holds data/, models/, mlruns/ and the pids and logs in .xtask/ [default: the repository;
    /// .xtask/stacks/NAME in it for a named stack]
    #[arg(long, global = true, env = "XTASK_STACK_DIR", value_name = "DIR")]
    stack_dir: Option<PathBuf>,
    /// Where downloaded tools (the MLflow environment, its wheels, the bootstrapped base) are
    /// cached [default: ~/.cache/ml-mlops-xtask]
    #[arg(long, global = true, env = "XTASK_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Where MLflow keeps runs and models: `sqlite` (mlruns/mlflow.db, the demo's store) or
    /// a postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE URI for a stack past one machine.
    /// The password is passed in PGPASSWORD and shown as *** [default: sqlite]
    #[arg(
        long,
        global = true,
        env = "XTASK_MLFLOW_BACKEND",
        value_name = "URI",
        hide_env_values = true
    )]
    mlflow_backend: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    Demo(cmd::demo::Demo),
    Up(cmd::up::Up),
    Down(cmd::down::Down),
    Restart(cmd::restart::Restart),
    Dev(cmd::dev::Dev),
    Status(cmd::status::Status),
    Health(cmd::health::Health),
    Smoke(cmd::smoke::Smoke),
    Logs(cmd::logs::Logs),
    Doctor(cmd::doctor::Doctor),
    Retrain(cmd::retrain::Retrain),
    Drift(cmd::drift::Drift),
    Mlflow(cmd::mlflow::Mlflow),
    Backup(cmd::backup::Backup),
    Restore(cmd::restore::Restore),
    Images(cmd::images::Images),
    Bench(cmd::bench::Bench),
    Compose(cmd::compose::Compose),
    Ci(cmd::ci::Ci),
    Tools(cmd::tools::Tools),
    Deny(cmd::deny::Deny),
    Scan(cmd::scan::Scan),
    Sbom(cmd::sbom::Sbom),
    LintWorkflows(cmd::lint_workflows::LintWorkflows),
    FuzzApi(cmd::fuzz_api::FuzzApi),
    UpgradeDeps(cmd::upgrade_deps::UpgradeDeps),
    Release(cmd::release::Release),
    Deploy(cmd::deploy::Deploy),
    VerifyRelease(cmd::verify_release::VerifyRelease),
    Completions(cmd::completions::Completions),
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let ctx = ctx::Ctx::new(ctx::Options {
        dry_run: cli.dry_run,
        verbosity: if cli.quiet { -1 } else { cli.verbose as i8 },
        port_offset: cli.port_offset,
        stack_name: cli.stack,
        stack_dir: cli.stack_dir,
        cache_dir: cli.cache_dir,
        // `dev` runs the builds made for it (seconds, not minutes); the rest the release ones.
        build: if matches!(cli.command, Command::Dev(_)) {
            build::binaries::Profile::DevLoop
        } else {
            build::binaries::Profile::Release
        },
        mlflow_backend: cli.mlflow_backend,
    })?;
    let ctx = &ctx;
    // Commands that change the stack hold its lock until they end: two never run on one stack
    // at once (the second waits, saying for whom).
    let _stack_lock = match cli.command {
        Command::Demo(_)
        | Command::Up(_)
        | Command::Down(_)
        | Command::Restart(_)
        | Command::Retrain(_)
        | Command::Mlflow(_)
        | Command::Backup(_)
        | Command::Restore(_)
        | Command::Deploy(_) => ctx.lock_stack()?,
        _ => None,
    };
    let choice = cli.runtime;
    let inspect = || runtime::select(ctx, choice, Purpose::Inspect, &[]);
    let to_run =
        |services: Vec<&stack::Service>| runtime::select(ctx, choice, Purpose::Run, &services);
    match cli.command {
        Command::Demo(cmd) => {
            let services = lifecycle::selected(ctx, &cmd.options);
            cmd.run(ctx, to_run(services)?.as_mut())
        }
        Command::Up(cmd) => {
            let services = lifecycle::selected(ctx, &cmd.options);
            cmd.run(ctx, to_run(services)?.as_mut())
        }
        Command::Restart(cmd) => cmd.run(ctx, inspect()?.as_mut()),
        // Takes the stack's lock itself: while bringing it up and during each swap, not
        // while it waits for changes.
        Command::Dev(cmd) => {
            let services = lifecycle::selected(ctx, &cmd.options);
            cmd.run(ctx, to_run(services)?.as_mut())
        }
        Command::Down(cmd) => cmd.run(ctx, inspect()?.as_mut()),
        Command::Status(cmd) => cmd.run(ctx, inspect()?.as_ref()),
        Command::Logs(cmd) => cmd.run(ctx, inspect()?.as_ref()),
        Command::Doctor(cmd) => cmd.run(ctx, inspect()?.as_ref()),
        Command::Retrain(cmd) => cmd.run(ctx, inspect()?.as_mut()),
        Command::Mlflow(cmd) => {
            let mlflow = vec![ctx.stack.mlflow()];
            cmd.run(ctx, to_run(mlflow)?.as_mut())
        }
        Command::Backup(cmd) => cmd.run(ctx, inspect()?.as_ref()),
        Command::Restore(cmd) => {
            let services = lifecycle::selected(ctx, &cmd.options);
            cmd.run(ctx, to_run(services)?.as_mut())
        }
        Command::Health(cmd) => cmd.run(ctx),
        Command::Drift(cmd) => cmd.run(ctx),
        Command::Smoke(cmd) => cmd.run(ctx),
        Command::Images(cmd) => cmd.run(ctx),
        Command::Bench(cmd) => cmd.run(ctx),
        Command::Compose(cmd) => cmd.run(ctx),
        Command::Ci(cmd) => cmd.run(ctx),
        Command::Completions(cmd) => cmd.run(Cli::command()),
        Command::Tools(cmd) => cmd.run(ctx),
        Command::Deny(cmd) => cmd.run(ctx),
        Command::Scan(cmd) => cmd.run(ctx),
        Command::Sbom(cmd) => cmd.run(ctx),
        Command::LintWorkflows(cmd) => cmd.run(ctx, &Cli::command()),
        Command::FuzzApi(cmd) => cmd.run(ctx),
        Command::UpgradeDeps(cmd) => cmd.run(ctx),
        Command::Release(cmd) => cmd.run(ctx),
        Command::Deploy(cmd) => cmd.run(ctx),
        Command::VerifyRelease(cmd) => cmd.run(ctx),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<lifecycle::Interrupted>() => {
            eprintln!("{e}");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::CommandFactory;

    use crate::scanners::workflows::{check_step, run_steps};

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn the_readme_shows_every_command() {
        let readme =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
                .unwrap();
        let missing: Vec<String> = super::Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_owned())
            .filter(|name| !readme.contains(&format!("`cargo xtask {name}")))
            .collect();
        assert!(missing.is_empty(), "the README does not show {missing:?}");
    }

    /// The workflows call only commands and flags the toolkit has: a renamed flag or a
    /// command that does not exist fails here, not in a scheduled run weeks later.
    #[test]
    fn every_workflow_command_parses_with_the_real_command_line() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let steps = run_steps(root).unwrap();
        let cli = super::Cli::command();
        assert!(
            steps.iter().any(|s| s.script.contains("cargo xtask ci")),
            "no workflow runs `cargo xtask ci`"
        );
        let problems: Vec<String> = steps
            .iter()
            .flat_map(|s| {
                check_step(s, &cli).into_iter().map(move |p| {
                    format!("{}:{} (job {}): {p}", s.file, s.line.unwrap_or(0), s.job)
                })
            })
            .collect();
        assert!(
            problems.is_empty(),
            "workflow steps the toolkit cannot run:\n{}",
            problems.join("\n")
        );
    }
}

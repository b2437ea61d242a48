//! `cargo xtask ci`: the whole pipeline as a plan of named steps, the same here, in `.ci/run`
//! and in the GitHub workflows. Each step is one or more command lines (cargo, or this
//! toolkit's own commands run as children); the plan is printed by `--dry-run`, every step is
//! timed, and the summary says which failed and how to run just that step again.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::ctx::Ctx;
use crate::runner::Step;
use crate::{engine, report};

/// Run the CI pipeline: lints, tests, images, scans, the demo on containers, the end-to-end
/// suites. `--steps` picks some (`cargo xtask ci --list` names them).
#[derive(clap::Args, Debug)]
pub struct Ci {
    /// Go on after a failed step, and report every failure at the end.
    #[arg(long)]
    pub keep_going: bool,
    /// Only these steps, comma-separated, in pipeline order.
    #[arg(long, value_delimiter = ',', value_name = "STEP,...")]
    pub steps: Vec<String>,
    /// All steps but these, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "STEP,...",
        conflicts_with = "steps"
    )]
    pub skip: Vec<String>,
    /// List the steps and what each runs, then exit.
    #[arg(long)]
    pub list: bool,
}

/// One named part of the pipeline.
struct PipelineStep {
    name: &'static str,
    about: &'static str,
    commands: Vec<Step>,
    /// Runs even after an earlier step failed (it cleans up).
    always: bool,
    /// Skipped, saying so, where no Docker engine answers.
    needs_docker: bool,
}

/// `cargo ARGS...` in the workspace.
fn cargo(ctx: &Ctx, args: &[&str]) -> Step {
    Step::new("cargo").args(args).cwd(&ctx.root)
}

/// This toolkit's own command `ARGS...`, run as a child with the same global options.
fn xtask(ctx: &Ctx, args: &[&str]) -> Step {
    let exe = std::env::current_exe()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "xtask".into());
    Step::new(exe)
        .args(ctx.global_args())
        .args(args)
        .cwd(&ctx.root)
        // The pipeline opens one log group per step; the children must not open their own.
        .env("XTASK_IN_PIPELINE", "1")
}

/// The end-to-end suite in `xtask/tests/NAME.rs`; what passing tests printed (their
/// `MEASURED:` lines) is shown too.
fn e2e(ctx: &Ctx, name: &str) -> Step {
    cargo(
        ctx,
        &[
            "test",
            "--locked",
            "-p",
            "xtask",
            "--test",
            name,
            "--",
            "--ignored",
            "--test-threads",
            "1",
            "--show-output",
        ],
    )
}

fn pipeline(ctx: &Ctx, docker: bool) -> Vec<PipelineStep> {
    let step = |name, about, commands| PipelineStep {
        name,
        about,
        commands,
        always: false,
        needs_docker: false,
    };
    let docker_step = |name, about, commands| PipelineStep {
        needs_docker: true,
        ..step(name, about, commands)
    };
    vec![
        step("fmt", "formatting", vec![cargo(ctx, &["fmt", "--all", "--check"])]),
        step(
            "clippy",
            "lints, warnings as errors",
            vec![cargo(
                ctx,
                &["clippy", "--workspace", "--all-targets", "--locked", "--", "-D", "warnings"],
            )],
        ),
        step(
            "test",
            "the README's test command",
            vec![cargo(ctx, &["test", "--workspace", "--locked"])],
        ),
        step(
            "add-a-service",
            "a copy of the workspace with a fourth API folder builds",
            vec![cargo(
                ctx,
                &[
                    "test", "--locked", "-p", "xtask", "--test", "add_a_service", "--",
                    "--ignored",
                ],
            )],
        ),
        step(
            "compose",
            "the compose file matches the service.toml files",
            vec![xtask(ctx, &["compose", "--check"])],
        ),
        step(
            "lint-workflows",
            "the GitHub workflows: actionlint, zizmor, schema, commands",
            vec![xtask(ctx, &["lint-workflows"])],
        ),
        step("deny", "licences, bans, sources, advisories", vec![xtask(ctx, &["deny"])]),
        docker_step("images", "build the container images", vec![xtask(ctx, &["images"])]),
        docker_step(
            "scan",
            "Trivy and hadolint on the images, the repository and the Dockerfiles",
            vec![xtask(ctx, &["scan"])],
        ),
        docker_step(
            "demo",
            "the demo on containers, then the smoke checks",
            vec![
                xtask(ctx, &["--runtime", "docker", "demo"]),
                xtask(ctx, &["--runtime", "docker", "smoke"]),
            ],
        ),
        PipelineStep {
            name: "down",
            about: "stop the demo stack",
            commands: vec![xtask(ctx, &["--runtime", "docker", "down"])],
            always: true,
            needs_docker: true,
        },
        step(
            "e2e",
            "the end-to-end suites: local runtime, MLflow, upgrades, containers (each compose front-end here), a fresh engine, the scanners, a release to a local registry",
            e2e_suites(ctx, docker),
        ),
    ]
}

/// The end-to-end suites: the docker ones only where an engine answers, the container suite
/// under every compose front-end installed.
fn e2e_suites(ctx: &Ctx, docker: bool) -> Vec<Step> {
    let mut suites = vec![
        e2e(ctx, "e2e_local"),
        e2e(ctx, "e2e_mlflow"),
        e2e(ctx, "upgrade_deps"),
    ];
    if docker {
        // Images are built from a clean state once; the stack runs under each front-end.
        suites.push(e2e(ctx, "e2e_docker").args(["--skip", "demo_retrain"]));
        for frontend in compose_frontends(ctx) {
            suites.push(
                e2e(ctx, "e2e_docker")
                    .args(["--exact", "demo_retrain_crash_recovery_restart_and_down"])
                    .env("XTASK_COMPOSE", frontend),
            );
        }
        suites.push(e2e(ctx, "e2e_fresh_machine"));
        suites.push(e2e(ctx, "scans"));
        suites.push(e2e(ctx, "release"));
    }
    suites
}

/// The compose front-ends installed here (`plugin`, `legacy`): the docker suite runs under
/// each, since users have either.
fn compose_frontends(ctx: &Ctx) -> Vec<&'static str> {
    let plugin = ctx
        .runner
        .query_stdout(&Step::new("docker").args(["compose", "version", "--short"]))
        .is_some();
    let legacy = which::which("docker-compose").is_ok();
    let found: Vec<&str> = [("plugin", plugin), ("legacy", legacy)]
        .into_iter()
        .filter_map(|(name, here)| here.then_some(name))
        .collect();
    for (name, here) in [("the compose plugin", plugin), ("docker-compose", legacy)] {
        if !here {
            ctx.reporter.info(format!(
                "{name} is not installed: the docker suite will not run under it"
            ));
        }
    }
    found
}

impl Ci {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let engine = engine::version(ctx);
        if let Err(why) = &engine {
            ctx.reporter
                .warn(format!("{why:#}: the steps that need Docker are skipped"));
        }
        let all = pipeline(ctx, engine.is_ok());
        let names: Vec<&str> = all.iter().map(|s| s.name).collect();
        for wanted in self.steps.iter().chain(&self.skip) {
            if !names.contains(&wanted.as_str()) {
                bail!(
                    "no step named {wanted:?}; the steps are {}",
                    names.join(", ")
                );
            }
        }
        if self.list {
            for step in &all {
                println!("{:<16} {}", step.name, step.about);
                for command in &step.commands {
                    println!("{:<16}   $ {}", "", command.display(&ctx.runner.aliases));
                }
            }
            return Ok(());
        }
        let chosen: Vec<&PipelineStep> = all
            .iter()
            .filter(|s| {
                let named = self.steps.is_empty() || self.steps.iter().any(|n| n == s.name);
                named && !self.skip.iter().any(|n| n == s.name)
            })
            .collect();

        let mut results: Vec<(&str, Outcome)> = Vec::new();
        let mut failed = false;
        for step in chosen {
            if step.needs_docker && engine.is_err() {
                results.push((step.name, Outcome::Skipped("no Docker engine answers")));
                continue;
            }
            if failed && !self.keep_going && !step.always {
                results.push((step.name, Outcome::Skipped("an earlier step failed")));
                continue;
            }
            let outcome = run_step(ctx, step);
            failed |= matches!(outcome, Outcome::Failed(..));
            results.push((step.name, outcome));
        }
        if ctx.dry_run() {
            return Ok(());
        }
        let rows: Vec<Vec<String>> = results
            .iter()
            .map(|(name, outcome)| vec![name.to_string(), outcome.to_string()])
            .collect();
        eprintln!("\n{}", report::table(&["STEP", "RESULT"], &rows));
        ctx.reporter.summary(&format!(
            "### Pipeline\n\n{}",
            report::markdown(&["step", "result"], &rows)
        ));
        let failures: Vec<&str> = results
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Failed(..)))
            .map(|(name, _)| *name)
            .collect();
        if !failures.is_empty() {
            bail!(
                "{} failed; run one again with `cargo xtask ci --steps {}`",
                failures.join(", "),
                failures.join(",")
            );
        }
        Ok(())
    }
}

enum Outcome {
    Passed(Duration),
    Failed(Duration, String),
    Skipped(&'static str),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Passed(t) => write!(f, "passed in {:.1}s", t.as_secs_f64()),
            Outcome::Failed(t, why) => write!(f, "FAILED after {:.1}s: {why}", t.as_secs_f64()),
            Outcome::Skipped(why) => write!(f, "skipped: {why}"),
        }
    }
}

fn run_step(ctx: &Ctx, step: &PipelineStep) -> Outcome {
    let started = Instant::now();
    let group = ctx.reporter.group(format!("{}: {}", step.name, step.about));
    let result = step
        .commands
        .iter()
        .try_for_each(|command| ctx.runner.run_attached(command));
    let elapsed = started.elapsed();
    drop(group);
    match result {
        Ok(()) => Outcome::Passed(elapsed),
        Err(e) => {
            let why = format!("{e:#}");
            ctx.reporter.error(&format!("ci step {}", step.name), &why);
            Outcome::Failed(elapsed, why)
        }
    }
}

//! `cargo xtask ci`: the whole pipeline as a plan of named steps, the same here, in `.ci/run`
//! and in the GitHub workflows. Each step is one or more command lines (cargo, or this
//! toolkit's own commands run as children); the plan is printed by `--dry-run`, every step is
//! timed, and the summary says which failed and how to run just that step again. What each
//! step reads is declared in `ci/inputs.rs` (`--changed` skips what is unchanged; a step not
//! declared there always runs).

mod changed;
mod fingerprint;
mod inputs;
mod ledger;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::build::engine;
use crate::ctx::Ctx;
use crate::runner::Step;
use crate::util::table;

/// Run the CI pipeline: lints, tests, images, scans, the demo on containers, the end-to-end
/// suites. `--steps` picks some (`cargo xtask ci --list` names them).
#[derive(clap::Args, Debug)]
pub struct Ci {
    /// Go on after a failed step, and report every failure at the end.
    #[arg(long)]
    pub keep_going: bool,
    /// Only these steps, comma-separated, in pipeline order; a group's name (`e2e`,
    /// `e2e-docker`) stands for all its steps.
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
    /// Fail when one of these steps (comma-separated; a group's name, or `all`) was skipped,
    /// as a whole or any test in it: what this machine can run must have run.
    #[arg(long, value_delimiter = ',', value_name = "STEP,...")]
    pub require: Vec<String>,
    /// List the steps and what each runs, then exit.
    #[arg(long)]
    pub list: bool,
    /// With `--list`: as JSON (each step's name, group, whether it needs Docker, its
    /// commands), for the workflows' job matrix.
    #[arg(long, requires = "list")]
    pub json: bool,
    /// Skip each step whose declared inputs (files, pinned tools, the engine, the images...)
    /// are those of its last pass, saying so; `--explain STEP` shows them. Without it, every
    /// step runs.
    #[arg(long)]
    pub changed: bool,
    /// With `--changed`: run N of the skipped steps anyway, chosen at random, and fail naming
    /// the undeclared input when one of them fails.
    #[arg(long, value_name = "N", env = "XTASK_CI_VERIFY_SKIPS")]
    pub verify_skips: Option<usize>,
    /// Print a step's declared inputs, their values, and which changed since its last pass;
    /// run nothing.
    #[arg(long, value_name = "STEP", conflicts_with_all = ["list", "history"])]
    pub explain: Option<String>,
    /// Show the ledger of past runs: every step's trend, or one step's runs and their
    /// `MEASURED:` lines.
    #[arg(long, value_name = "STEP", num_args = 0..=1, conflicts_with = "list")]
    pub history: Option<Option<String>>,
}

/// The groups of steps, in pipeline order: each runs as one job of the CI workflow (`cargo
/// xtask ci --steps GROUP`), and `lint-workflows` checks the workflow's matrix names them all.
pub const GROUPS: &[(&str, &str)] = &[
    (
        "checks",
        "formatting, lints, workflows, licences and the scanners' own suite",
    ),
    (
        "tests",
        "the unit and integration tests, the fuzzing of the APIs, the upgrades",
    ),
    (
        "containers",
        "the images, their scan, the stack in containers and the release",
    ),
    (
        "host",
        "the local runtime, MLflow, the dashboard and the fault campaign",
    ),
];

/// The environment variable naming the file each test that skips appends its line to
/// (`xtask/tests/common`'s `skip`).
const SKIP_LOG_ENV: &str = "XTASK_SKIP_LOG";
/// The first word of such a line.
const SKIP_MARK: &str = "XTASK-TEST-SKIPPED";
/// How the suites' measurements begin; the ledger keeps those lines.
const MEASURED_MARK: &str = "MEASURED:";

/// One named part of the pipeline.
struct PipelineStep {
    name: String,
    /// One of [`GROUPS`].
    group: &'static str,
    about: String,
    commands: Vec<Step>,
    /// Runs even after an earlier step failed (it cleans up).
    always: bool,
    /// Skipped, saying so, where no Docker engine answers.
    needs_docker: bool,
    /// Programs the step needs beyond the toolkit's own (system packages): skipped, saying
    /// which to install, where one is missing.
    needs: &'static [&'static str],
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

/// The ignored (slow) tests of `PACKAGE/tests/NAME.rs`, one at a time; what passing tests
/// printed (their `MEASURED:` lines) is shown too.
fn ignored_tests(ctx: &Ctx, package: &str, name: &str) -> Step {
    ignored_tests_matching(ctx, package, name, &[])
}

/// The ignored tests of `PACKAGE/tests/NAME.rs`, with libtest's `FILTER...` arguments.
fn ignored_tests_matching(ctx: &Ctx, package: &str, name: &str, filter: &[&str]) -> Step {
    cargo(
        ctx,
        &[
            "test",
            "--locked",
            "-p",
            package,
            "--test",
            name,
            "--",
            "--ignored",
            "--test-threads",
            "1",
            "--show-output",
        ],
    )
    .args(filter)
}

/// The group a step belongs to (by its name; see [`GROUPS`]). A step missing here stops the
/// pipeline from being built at all, so no step is ever left out of the CI matrix.
fn group_of(step: &str) -> &'static str {
    match step {
        "fmt" | "clippy" | "lint-workflows" | "deny" | "e2e-scans" | "e2e-k8s" => "checks",
        "test" | "add-a-service" | "fuzz-api" | "e2e-upgrades" => "tests",
        "e2e-local" | "e2e-dev" | "e2e-mlflow" | "e2e-drift" | "e2e-dashboard" | "e2e-faults" => {
            "host"
        }
        "images"
        | "scan"
        | "demo"
        | "down"
        | "e2e-docker-images"
        | "e2e-fresh-machine"
        | "e2e-release"
        | "e2e-swarm"
        | "e2e-engine-containerd" => "containers",
        docker if docker.starts_with("e2e-docker-") => "containers",
        _ => panic!("the pipeline step {step} has no group: add it to ci::group_of"),
    }
}

/// The end-to-end suite in `xtask/tests/NAME.rs`.
fn e2e(ctx: &Ctx, name: &str) -> Step {
    ignored_tests(ctx, "xtask", name)
}

fn pipeline(ctx: &Ctx, docker: bool) -> Vec<PipelineStep> {
    let step = |name: &str, about: &str, commands| PipelineStep {
        name: name.to_owned(),
        group: group_of(name),
        about: about.to_owned(),
        commands,
        always: false,
        needs_docker: false,
        needs: &[],
    };
    let docker_step = |name: &str, about: &str, commands| PipelineStep {
        needs_docker: true,
        ..step(name, about, commands)
    };
    let mut steps = vec![
        step(
            "fmt",
            "formatting",
            vec![cargo(ctx, &["fmt", "--all", "--check"])],
        ),
        step(
            "clippy",
            "lints, warnings as errors",
            vec![cargo(
                ctx,
                &[
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--locked",
                    "--",
                    "-D",
                    "warnings",
                ],
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
            vec![e2e(ctx, "add_a_service")],
        ),
        step(
            "lint-workflows",
            "the GitHub workflows: actionlint, zizmor, schema, commands",
            vec![xtask(ctx, &["lint-workflows"])],
        ),
        step(
            "deny",
            "licences, bans, sources, advisories",
            vec![xtask(ctx, &["deny"])],
        ),
        step(
            "fuzz-api",
            "Schemathesis against each API, valid and invalid requests, 2,000 cases each",
            vec![xtask(
                ctx,
                &[
                    "fuzz-api",
                    "--max-examples",
                    FUZZ_MAX_EXAMPLES,
                    "--min-cases",
                    "2000",
                ],
            )],
        ),
        docker_step(
            "images",
            "build the container images",
            vec![xtask(ctx, &["images"])],
        ),
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
            always: true,
            ..docker_step(
                "down",
                "stop the demo stack",
                vec![xtask(ctx, &["--runtime", "docker", "down"])],
            )
        },
        step(
            "e2e-local",
            "the local runtime end to end",
            vec![e2e(ctx, "e2e_local")],
        ),
        step(
            "e2e-dev",
            "`dev` on the local runtime (no request fails on Linux) and on docker (the swaps' \
             failed requests counted): edits go live, broken ones keep the old version",
            vec![e2e(ctx, "dev_loop")],
        ),
        step(
            "e2e-mlflow",
            "tracking, registry, retrain under load, backup, reset, restore; each service's \
             training against a real server",
            // The toolkit's suite first: it installs MLflow, which the services' suites use.
            std::iter::once(e2e(ctx, "e2e_mlflow"))
                .chain(["bankchurn", "carvision", "telecom"].map(|service| {
                    ignored_tests(ctx, service, "mlflow").env("XTASK_CACHE_DIR", &ctx.cache_dir)
                }))
                .collect(),
        ),
        step(
            "e2e-drift",
            "drifted traffic detected by `drift`; `retrain --if-drifted` registers, promotes and \
             swaps in a model under that traffic",
            vec![e2e(ctx, "e2e_drift")],
        ),
        PipelineStep {
            // Debian's packages `chromium` and `chromium-driver`.
            needs: &["chromium", "chromedriver"],
            ..step(
                "e2e-dashboard",
                "the CarVision Dashboard in headless Chromium",
                vec![ignored_tests(ctx, "carvision", "browser")],
            )
        },
        step(
            "e2e-upgrades",
            "upgrade-deps on fixture workspaces, rolled back on failure",
            vec![e2e(ctx, "upgrade_deps")],
        ),
        docker_step(
            "e2e-docker-images",
            "every image built from a clean state, nothing left dangling",
            vec![ignored_tests_matching(
                ctx,
                "xtask",
                "e2e_docker",
                &["--skip", "demo_retrain"],
            )],
        ),
    ];
    if docker {
        // Users have either compose front-end: the stack runs under each one installed.
        for frontend in compose_frontends(ctx) {
            steps.push(docker_step(
                &format!("e2e-docker-{frontend}"),
                &format!(
                    "the stack in containers, with {}",
                    if frontend == "plugin" {
                        "the docker compose plugin"
                    } else {
                        "docker-compose 1.x"
                    }
                ),
                vec![ignored_tests_matching(
                    ctx,
                    "xtask",
                    "e2e_docker",
                    &["--exact", "demo_retrain_crash_recovery_restart_and_down"],
                )
                .env("XTASK_COMPOSE", frontend)],
            ));
        }
    }
    steps.extend([
        docker_step(
            "e2e-fresh-machine",
            "a clean engine without debootstrap: demo falls back, docker fails fast",
            vec![e2e(ctx, "e2e_fresh_machine")],
        ),
        PipelineStep {
            // kubectl builds the kustomization (no cluster): GitHub's runners have it.
            needs: &["kubectl"],
            ..step(
                "e2e-k8s",
                "the Kubernetes manifests offline: kubectl kustomize, kubernetes-validate \
                 --strict per claimed version, trivy config; planted faults are caught",
                vec![e2e(ctx, "k8s_manifests")],
            )
        },
        // Not a docker step: its two image cases skip themselves where Docker is missing.
        step(
            "e2e-scans",
            "the scanners on planted findings, with the real tools",
            vec![e2e(ctx, "scans")],
        ),
        docker_step(
            "e2e-release",
            "build, scan and push to a registry on this machine",
            vec![ignored_tests_matching(
                ctx,
                "xtask",
                "release",
                &["--skip", CONTAINERD_RELEASE_TEST],
            )],
        ),
        // Needs root (its tests skip, saying so, without it): the engine runs in a network
        // namespace of its own, from Debian trixie's packages cached by the tests.
        docker_step(
            "e2e-engine-containerd",
            "images, scan, demo, down --images and release on a second engine like GitHub's \
             (Docker 26, containerd image store, BuildKit)",
            vec![
                e2e(ctx, "e2e_engine"),
                ignored_tests_matching(
                    ctx,
                    "xtask",
                    "release",
                    &["--exact", CONTAINERD_RELEASE_TEST],
                ),
            ],
        ),
        PipelineStep {
            // Debian's package `docker-registry`: the registry the nodes pull from.
            needs: &["docker-registry"],
            ..docker_step(
                "e2e-swarm",
                "deploy swarm from pushed digests to a swarm in a network namespace of its own: \
                 healthy, smoke, a killed task replaced, MLflow on PostgreSQL backed up and \
                 restored, everything removed",
                vec![e2e(ctx, "e2e_swarm")],
            )
        },
        // Not a docker step: its local campaign runs anywhere, the docker one skips itself.
        step(
            "e2e-faults",
            "the fault campaign: kill -9 under load, slowloris, bad models, MLflow down, full disk",
            vec![e2e(ctx, "e2e_faults")],
        ),
    ]);
    steps
}

/// The release test on the containerd image store: run with the second engine's suite, not
/// by `e2e-release`.
const CONTAINERD_RELEASE_TEST: &str =
    "release_on_the_containerd_store_pushes_exactly_the_scanned_image";

/// Schemathesis' cases per operation and phase in CI: at least 2,000 cases per API (measured:
/// 2,358 to 2,580, positive and negative together; 95-115 s for the three APIs).
const FUZZ_MAX_EXAMPLES: &str = "550";

/// Whether `selector` (from `--steps`, `--skip` or `--require`) names `step`: its name, a
/// name it starts with (`e2e-docker` for `e2e-docker-plugin`), or its group.
fn selects(selector: &str, step: &str) -> bool {
    step == selector
        || step.starts_with(&format!("{selector}-"))
        || group_of(step) == selector
        || selector == "all"
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
        let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
        let named = self.steps.iter().chain(&self.skip).chain(&self.require);
        for wanted in named.chain(&self.explain) {
            if !names.iter().any(|n| selects(wanted, n)) {
                bail!(
                    "no step or group named {wanted:?}; the steps are {}, the groups {}",
                    names.join(", "),
                    GROUPS
                        .iter()
                        .map(|(g, _)| *g)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        if let Some(step) = &self.history {
            return changed::history(ctx, step.as_deref());
        }
        if let Some(wanted) = &self.explain {
            for step in all.iter().filter(|s| selects(wanted, &s.name)) {
                changed::explain(ctx, &step.name, &step.about, &commands_of(ctx, step))?;
            }
            return Ok(());
        }
        if self.list && self.json {
            let steps: Vec<serde_json::Value> = all
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "name": s.name,
                        "group": s.group,
                        "about": s.about,
                        "needs_docker": s.needs_docker,
                        "commands": s.commands.iter()
                            .map(|c| c.display(&ctx.runner.aliases))
                            .collect::<Vec<_>>(),
                    })
                })
                .collect();
            let groups: Vec<serde_json::Value> = GROUPS
                .iter()
                .map(|(name, about)| serde_json::json!({"name": name, "about": about}))
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "groups": groups,
                    "steps": steps,
                }))?
            );
            return Ok(());
        }
        if self.list {
            for step in &all {
                println!("{:<20} [{}] {}", step.name, step.group, step.about);
                for command in &step.commands {
                    println!("{:<20}   $ {}", "", command.display(&ctx.runner.aliases));
                }
            }
            return Ok(());
        }
        let chosen: Vec<&PipelineStep> = all
            .iter()
            .filter(|s| {
                let named = self.steps.is_empty() || self.steps.iter().any(|n| selects(n, &s.name));
                named && !self.skip.iter().any(|n| selects(n, &s.name))
            })
            .collect();

        // Not a clap requirement: the variable reaches the pipeline's children and their tests,
        // which may run `ci` without `--changed`.
        if self.verify_skips.unwrap_or(0) > 0 && !self.changed {
            ctx.reporter
                .info("without --changed nothing is skipped: --verify-skips has no skip to prove");
        }
        // Every run is remembered (fingerprints, outcomes, the ledger); `--changed` reads it.
        let mut memory = match changed::Memory::open(ctx) {
            _ if ctx.dry_run() && !self.changed => None,
            Ok(memory) => Some(memory),
            Err(e) if self.changed => {
                return Err(e.context("`--changed` fingerprints the repository with git"))
            }
            Err(e) => {
                ctx.reporter
                    .warn(format!("{e:#}: this run's outcomes are not remembered"));
                None
            }
        };
        let mut unchanged = HashMap::new();
        if let Some(memory) = memory.as_mut() {
            for step in &chosen {
                let skip = memory.check(ctx, &step.name, &commands_of(ctx, step))?;
                if let Some(skip) = skip.filter(|_| self.changed) {
                    unchanged.insert(step.name.as_str(), skip);
                }
            }
            ctx.reporter.info(memory.timing(chosen.len()));
        }
        // The skips to prove by running them anyway.
        let verify: Vec<&str> =
            fastrand::choose_multiple(unchanged.keys().copied(), self.verify_skips.unwrap_or(0));
        let mut measured: HashMap<&str, Vec<String>> = HashMap::new();
        let mut test_failures: Vec<(&str, Vec<String>)> = Vec::new();
        let mut results: Vec<(&str, Outcome)> = Vec::new();
        let mut failed = false;
        for step in chosen {
            if step.needs_docker && engine.is_err() {
                results.push((
                    &step.name,
                    Outcome::Skipped("no Docker engine answers".into()),
                ));
                continue;
            }
            let missing: Vec<&str> = step
                .needs
                .iter()
                .copied()
                .filter(|program| which::which(program).is_err())
                .collect();
            if !missing.is_empty() {
                let why = format!("{} not installed", missing.join(" and "));
                ctx.reporter
                    .warn(format!("ci step {}: skipped, {why}", step.name));
                results.push((&step.name, Outcome::Skipped(why)));
                continue;
            }
            if failed && !self.keep_going && !step.always {
                results.push((
                    &step.name,
                    Outcome::Skipped("an earlier step failed".into()),
                ));
                continue;
            }
            // A clean-up step runs whenever a step before it ran: it may have left something.
            let cleans_up = step.always && !measured.is_empty();
            let skip = unchanged.get(step.name.as_str()).filter(|_| !cleans_up);
            if let Some(skip) = skip.filter(|_| !verify.contains(&step.name.as_str())) {
                ctx.runner
                    .plan(format!("skip {}: {}", step.name, skip.reason()));
                results.push((&step.name, Outcome::Unchanged(skip.reason())));
                continue;
            }
            let (mut outcome, lines, panics) = run_step(ctx, step)?;
            measured.insert(&step.name, lines);
            if matches!(outcome, Outcome::Failed(..)) && !panics.is_empty() {
                test_failures.push((&step.name, panics));
            }
            if let (Some(skip), Outcome::Failed(_, why, _)) = (skip, &mut outcome) {
                let undeclared = memory
                    .as_ref()
                    .map(|m| m.undeclared_changes(&step.name, &skip.pass))
                    .unwrap_or_default();
                *why = changed::wrong_skip(&step.name, skip, &undeclared, why);
                ctx.reporter
                    .error(&format!("ci --verify-skips: {}", step.name), why);
            }
            failed |= matches!(outcome, Outcome::Failed(..));
            results.push((&step.name, outcome));
        }
        if ctx.dry_run() {
            return Ok(());
        }
        if ctx.is_interrupted() && memory.take().is_some() {
            // An interrupted command may look as if it passed: nothing of this run is kept.
            ctx.reporter
                .warn("interrupted: this run's outcomes are not remembered");
        }
        if let Some(memory) = memory.as_mut() {
            for (name, outcome) in &results {
                let step = step_named(&all, name);
                memory.record(
                    ctx,
                    name,
                    &commands_of(ctx, step),
                    outcome,
                    measured.remove(name).unwrap_or_default(),
                    verify.contains(name),
                )?;
            }
            memory.finish(ctx)?;
        }
        let rows: Vec<Vec<String>> = results
            .iter()
            .map(|(name, outcome)| {
                let required = self.require.iter().any(|r| selects(r, name));
                let mut row = outcome.row(name, required);
                if verify.contains(name) && matches!(outcome, Outcome::Passed(..)) {
                    row[1].push_str(" (a skip, verified)");
                }
                row
            })
            .collect();
        let headers = ["STEP", "RESULT", "TIME", "TESTS SKIPPED (WHY)"];
        eprintln!("\n{}", table::text(&headers, &rows));
        // The step summary also holds each time against the median of the earlier runs.
        let summary_rows: Vec<Vec<String>> = rows
            .iter()
            .map(|row| {
                let trend = memory
                    .as_ref()
                    .map_or_else(|| "-".into(), |m| m.trend(&row[0]));
                if trend.contains("FLAKY") {
                    ctx.reporter.warn(format!("ci step {}: {trend}", row[0]));
                }
                row.iter().cloned().chain([trend]).collect()
            })
            .collect();
        let summary_headers = [&headers[..], &["AGAINST EARLIER RUNS"]].concat();
        ctx.reporter.summary(&format!(
            "### Pipeline\n\n{}",
            table::markdown(&summary_headers, &summary_rows)
        ));
        let failures: Vec<&str> = results
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Failed(..)))
            .map(|(name, _)| *name)
            .collect();
        let required_skips: Vec<&str> = results
            .iter()
            .filter(|(name, o)| o.skipped_any() && self.require.iter().any(|r| selects(r, name)))
            .map(|(name, _)| *name)
            .collect();
        // Where a failed test said why, again at the end of the log, where CI shows it.
        for (step, panics) in &test_failures {
            eprintln!("\nwhy {step} failed:");
            for line in panics.iter().flat_map(|panic| panic.lines()) {
                eprintln!("  {line}");
            }
        }
        match (failures.is_empty(), required_skips.is_empty()) {
            (true, true) => Ok(()),
            (false, _) => bail!(
                "{} failed{}; run one again with `cargo xtask ci --steps {}`",
                failures.join(", "),
                if required_skips.is_empty() {
                    String::new()
                } else {
                    format!(", and {} skipped (required)", required_skips.join(", "))
                },
                failures.join(",")
            ),
            (true, false) => bail!(
                "{} skipped, as a whole or some of their tests, although required (`--require`): \
                 the table says why; install what they need, or run them where it is",
                required_skips.join(", ")
            ),
        }
    }
}

/// How a step ended; the tests that skipped themselves in it are listed with their reasons
/// (`test: why`).
enum Outcome {
    Passed(Duration, Vec<String>),
    Failed(Duration, String, Vec<String>),
    Skipped(String),
    /// Not run: its inputs are those of its last pass (`--changed`), as the reason says.
    Unchanged(String),
}

impl Outcome {
    /// Whether the step, or any test in it, did not run.
    fn skipped_any(&self) -> bool {
        match self {
            Outcome::Skipped(_) => true,
            Outcome::Unchanged(_) => false,
            Outcome::Passed(_, tests) | Outcome::Failed(_, _, tests) => !tests.is_empty(),
        }
    }

    /// The step's row of the table: step, result, time, the skipped tests and why.
    fn row(&self, name: &str, required: bool) -> Vec<String> {
        let mark = if required && self.skipped_any() {
            " (REQUIRED)"
        } else {
            ""
        };
        let (result, time, skipped) = match self {
            Outcome::Passed(t, tests) if tests.is_empty() => ("passed".to_owned(), Some(t), None),
            Outcome::Passed(t, tests) => (
                format!("passed, {} test(s) skipped{mark}", tests.len()),
                Some(t),
                Some(tests.join("; ")),
            ),
            Outcome::Failed(t, why, tests) => (
                format!("FAILED: {why}"),
                Some(t),
                (!tests.is_empty()).then(|| tests.join("; ")),
            ),
            Outcome::Skipped(why) => (format!("skipped{mark}: {why}"), None, None),
            Outcome::Unchanged(why) => (format!("skipped: {why}"), None, None),
        };
        vec![
            name.to_owned(),
            result,
            time.map_or_else(|| "-".into(), |t| format!("{:.1}s", t.as_secs_f64())),
            skipped.unwrap_or_else(|| "-".into()),
        ]
    }
}

/// The skipped tests a step's skip log names (`test: why`), from the lines
/// `XTASK-TEST-SKIPPED test: why`.
fn skipped_tests(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|line| line.strip_prefix(SKIP_MARK))
        .map(|rest| rest.trim().to_owned())
        .collect()
}

/// The step's command lines, as `--list` shows them: part of its fingerprint.
fn commands_of(ctx: &Ctx, step: &PipelineStep) -> Vec<String> {
    step.commands
        .iter()
        .map(|c| c.display(&ctx.runner.aliases))
        .collect()
}

fn step_named<'a>(all: &'a [PipelineStep], name: &str) -> &'a PipelineStep {
    all.iter()
        .find(|s| s.name == name)
        .expect("a result is for a step of the pipeline")
}

/// Runs the step's commands; hands back how it ended, the `MEASURED:` lines its suites
/// printed, and the first lines of each panic they reported (a failed test's why).
fn run_step(ctx: &Ctx, step: &PipelineStep) -> Result<(Outcome, Vec<String>, Vec<String>)> {
    let log = ctx
        .root
        .join("target/xtask/ci")
        .join(format!("{}.skipped", step.name));
    ctx.runner.create_dir(log.parent().expect("a parent"))?;
    ctx.runner.remove_path(&log)?;
    let started = Instant::now();
    let group = ctx.reporter.group(format!("{}: {}", step.name, step.about));
    let mut measured = Vec::new();
    let mut panics = PanicExcerpts::default();
    let result = step.commands.iter().try_for_each(|command| {
        let (result, lines) =
            ctx.runner
                .run_attached_keeping(&command.clone().env(SKIP_LOG_ENV, &log), |line| {
                    panics.read(line);
                    line.starts_with(MEASURED_MARK)
                });
        measured.extend(lines);
        result
    });
    let elapsed = started.elapsed();
    drop(group);
    let skipped = skipped_tests(&std::fs::read_to_string(&log).unwrap_or_default());
    for test in &skipped {
        ctx.reporter
            .warn(format!("ci step {}: test skipped, {test}", step.name));
    }
    let outcome = match result {
        Ok(()) => Outcome::Passed(elapsed, skipped),
        Err(e) => {
            let why = format!("{e:#}");
            ctx.reporter.error(&format!("ci step {}", step.name), &why);
            Outcome::Failed(elapsed, why, skipped)
        }
    };
    Ok((outcome, measured, panics.excerpts))
}

/// The first lines of the panics a test run prints (`thread 'name' panicked at file:line:`
/// and the message under it, less the toolkit's timestamped progress lines it may quote), at
/// most [`PanicExcerpts::MOST`] of them. Not those in the output of tests that passed, which
/// `--show-output` lists under `successes:`.
#[derive(Default)]
struct PanicExcerpts {
    excerpts: Vec<String>,
    /// Lines still to take into the last excerpt.
    taking: usize,
    in_successes: bool,
}

/// A line of the toolkit's progress, `[20:51:38] ▶ …`: the step, not why it failed.
fn is_progress(line: &str) -> bool {
    let bytes = line.as_bytes();
    bytes.len() > 10 && bytes[0] == b'[' && bytes[3] == b':' && bytes[9] == b']'
}

impl PanicExcerpts {
    const MOST: usize = 3;
    /// Enough for an error and the lines of a log it quotes that say why.
    const LINES: usize = 40;

    fn read(&mut self, line: &str) {
        match line {
            "successes:" => self.in_successes = true,
            "failures:" => self.in_successes = false,
            _ => {}
        }
        // What libtest prints after a panic's message, or between tests' outputs.
        let ends = [
            "stack backtrace:",
            "note: ",
            "---- ",
            "failures:",
            "successes:",
        ]
        .iter()
        .any(|mark| line.starts_with(mark));
        if self.taking > 0 {
            if ends {
                self.taking = 0;
            } else if !line.trim().is_empty() && !is_progress(line) {
                let excerpt = self.excerpts.last_mut().expect("an excerpt is open");
                excerpt.push('\n');
                excerpt.push_str(line);
                self.taking -= 1;
            }
        } else if !self.in_successes
            && line.starts_with("thread '")
            && line.contains(" panicked at ")
            && self.excerpts.len() < Self::MOST
        {
            self.excerpts.push(line.to_owned());
            self.taking = Self::LINES;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{group_of, selects, skipped_tests, Outcome, PanicExcerpts, GROUPS};

    #[test]
    fn the_panics_of_failed_tests_are_kept_without_progress_up_to_their_backtrace() {
        let output = "\
running 2 tests
test a ... ok
test b ... FAILED

successes:

---- a stdout ----
thread 'a' panicked at xtask/tests/faults.rs:1:1:
a panic the test caught

failures:

---- b stdout ----
$ xtask up
thread 'b' (6178) panicked at xtask/tests/e2e_docker.rs:433:5:
up on PostgreSQL failed:
[20:51:39] ▶ mlflow healthy at http://127.0.0.1:17169/health
error: MLflow did not become healthy

FATAL:  no pg_hba.conf entry for host
stack backtrace:
   0: __rustc::rust_begin_unwind

test result: FAILED. 1 passed; 1 failed
";
        let mut panics = PanicExcerpts::default();
        for line in output.lines() {
            panics.read(line);
        }
        assert_eq!(
            panics.excerpts,
            [
                "thread 'b' (6178) panicked at xtask/tests/e2e_docker.rs:433:5:\n\
              up on PostgreSQL failed:\n\
              error: MLflow did not become healthy\n\
              FATAL:  no pg_hba.conf entry for host"
            ]
        );
        // Long messages are cut, and so is the count of panics.
        let mut panics = PanicExcerpts::default();
        for _ in 0..5 {
            panics.read("thread 't' panicked at a.rs:1:1:");
            for i in 0..60 {
                panics.read(&format!("line {i}"));
            }
            panics.read("note: run with `RUST_BACKTRACE=1`");
        }
        assert_eq!(panics.excerpts.len(), PanicExcerpts::MOST);
        assert_eq!(panics.excerpts[0].lines().count(), 1 + PanicExcerpts::LINES);
    }

    #[test]
    fn a_group_selects_its_steps() {
        assert!(selects("e2e", "e2e-docker-plugin"));
        assert!(selects("e2e-docker", "e2e-docker-plugin"));
        assert!(selects("fmt", "fmt"));
        assert!(!selects("e2e-dock", "e2e-docker-plugin"));
        assert!(!selects("e2e", "test"));
        assert!(selects("containers", "e2e-docker-plugin"));
        assert!(selects("host", "e2e-mlflow"));
        assert!(!selects("host", "e2e-docker-plugin"));
        assert!(selects("all", "fmt"));
    }

    #[test]
    fn every_group_a_step_can_have_is_listed() {
        for step in ["fmt", "test", "e2e-mlflow", "images", "e2e-docker-plugin"] {
            assert!(GROUPS.iter().any(|(g, _)| *g == group_of(step)), "{step}");
        }
    }

    #[test]
    #[should_panic(expected = "has no group")]
    fn a_step_without_a_group_is_refused() {
        group_of("e2e-new-suite");
    }

    #[test]
    fn a_skipped_test_is_counted_and_shown_with_its_reason() {
        let log = "XTASK-TEST-SKIPPED release_pushes: docker-registry is not installed\n\
                   something else\n";
        let tests = skipped_tests(log);
        assert_eq!(tests, ["release_pushes: docker-registry is not installed"]);
        let outcome = Outcome::Passed(Duration::from_secs(3), tests);
        assert!(outcome.skipped_any());
        let row = outcome.row("e2e-release", true);
        assert_eq!(row[1], "passed, 1 test(s) skipped (REQUIRED)");
        assert_eq!(row[3], "release_pushes: docker-registry is not installed");
        assert!(!Outcome::Passed(Duration::ZERO, vec![]).skipped_any());
        assert!(Outcome::Skipped("no Docker engine answers".into()).skipped_any());
    }
}

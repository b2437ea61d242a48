//! `cargo xtask lint-workflows`: the GitHub Actions workflows, checked four ways.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::ctx::Ctx;
use crate::runner::Step;
use crate::scanners::findings::{self, Finding, Location, Policy, ScanResult, Severity};
use crate::scanners::workflows;

/// Lint the GitHub Actions workflows: actionlint, zizmor, GitHub's schema, xtask commands.
///
/// actionlint; zizmor's security audit (no finding at medium or above, offline); GitHub's
/// workflow schema (check-jsonschema); every `cargo xtask` command a workflow runs must
/// parse with this toolkit's command line; the CI matrix names the pipeline's groups; and
/// every job that runs the toolkit keeps its reports when it fails.
#[derive(clap::Args, Debug)]
pub struct LintWorkflows {}

const TARGET: &str = ".github/workflows";

fn relative(files: &[PathBuf], root: &Path) -> Vec<String> {
    files
        .iter()
        .map(|f| {
            f.strip_prefix(root)
                .unwrap_or(f)
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

/// Runs a linter; `None` under `--dry-run`. Exit codes above `worst_ok` are failures to run.
fn lint(ctx: &Ctx, step: Step, worst_ok: i32) -> Result<Option<String>> {
    let Some(out) = ctx.runner.run_unchecked(&step)? else {
        return Ok(None);
    };
    let code = out.status.code().unwrap_or(-1);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if code < 0 || (code > worst_ok && stdout.trim().is_empty()) {
        bail!(
            "`{}` failed ({}): {}",
            step.program,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(Some(stdout))
}

fn actionlint(ctx: &Ctx, tool: &Path, files: &[String]) -> Result<ScanResult> {
    let mut result = ScanResult::new(TARGET, "actionlint");
    // shellcheck and pyflakes would come from PATH, unpinned: every `run:` is a cargo xtask
    // command anyway, which the last check parses.
    let step = Step::new(tool.to_string_lossy())
        .args([
            "-no-color",
            "-shellcheck=",
            "-pyflakes=",
            "-format",
            "{{json .}}",
        ])
        .args(files)
        .cwd(&ctx.root);
    let Some(json) = lint(ctx, step, 1)? else {
        return Ok(result);
    };
    let errors: Vec<Value> = serde_json::from_str(json.trim()).context("actionlint's JSON")?;
    result.findings = errors
        .iter()
        .map(|e| {
            let file = e["filepath"].as_str().unwrap_or(TARGET);
            Finding {
                id: format!("actionlint/{}", e["kind"].as_str().unwrap_or("error")),
                severity: Severity::High,
                title: e["message"].as_str().unwrap_or("").to_owned(),
                subject: file.to_owned(),
                help: None,
                location: Some(Location::new(
                    &ctx.root,
                    &ctx.root.join(file),
                    e["line"].as_u64().map(|l| l as u32),
                )),
            }
        })
        .collect();
    Ok(result)
}

fn zizmor(ctx: &Ctx, tool: &Path, files: &[String]) -> Result<ScanResult> {
    let mut result = ScanResult::new(TARGET, "zizmor");
    // Under GitHub Actions with a token (GH_TOKEN), zizmor runs its online audits too
    // (impostor commits, tags behind pinned SHAs, known-vulnerable actions); elsewhere GitHub's
    // API is out of reach, so it runs --offline and the report says what was not checked.
    let online = std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true")
        && std::env::var("GH_TOKEN").is_ok_and(|t| !t.is_empty());
    let step = Step::new(tool.to_string_lossy())
        .args(if online { &[][..] } else { &["--offline"][..] })
        .args(["--min-severity", "medium", "--format", "json"])
        .args(files)
        .cwd(&ctx.root);
    // zizmor exits 10 + the worst severity when it finds something.
    let Some(json) = lint(ctx, step, 14)? else {
        return Ok(result);
    };
    let found: Vec<Value> = serde_json::from_str(json.trim()).context("zizmor's JSON")?;
    result.findings = found
        .iter()
        .map(|f| {
            let location = &f["locations"][0];
            let file = location["symbolic"]["key"]["Local"]["verbatim_path"]
                .as_str()
                .unwrap_or(TARGET);
            let line = location["concrete"]["location"]["start_point"]["row"]
                .as_u64()
                .map(|r| r as u32 + 1);
            Finding {
                id: format!("zizmor/{}", f["ident"].as_str().unwrap_or("finding")),
                severity: Severity::parse(
                    f["determinations"]["severity"]
                        .as_str()
                        .unwrap_or("unknown"),
                ),
                title: format!(
                    "{}: {}",
                    f["desc"].as_str().unwrap_or(""),
                    location["symbolic"]["annotation"].as_str().unwrap_or("")
                ),
                subject: file.to_owned(),
                help: f["url"].as_str().map(str::to_owned),
                location: Some(Location::new(&ctx.root, &ctx.root.join(file), line)),
            }
        })
        .collect();
    if !online {
        result.notes.push(
            "online audits (impostor commits, stale tag comments) not run: --offline \
             (they run under GitHub Actions with GH_TOKEN set)"
                .into(),
        );
    }
    Ok(result)
}

fn schema(ctx: &Ctx, tool: &Path, files: &[String]) -> Result<ScanResult> {
    let mut result = ScanResult::new(TARGET, "check-jsonschema");
    let step = Step::new(tool.to_string_lossy())
        .args([
            "--builtin-schema",
            "vendor.github-workflows",
            "--output-format",
            "json",
        ])
        .args(files)
        .cwd(&ctx.root);
    let Some(json) = lint(ctx, step, 1)? else {
        return Ok(result);
    };
    let report: Value = serde_json::from_str(json.trim()).context("check-jsonschema's JSON")?;
    let errors = report["errors"].as_array().into_iter().flatten();
    let parse_errors = report["parse_errors"].as_array().into_iter().flatten();
    result.findings = errors
        .chain(parse_errors)
        .map(|e| {
            let file = e["filename"].as_str().unwrap_or(TARGET);
            let message = e["best_deep_match"]["message"]
                .as_str()
                .or(e["message"].as_str())
                .unwrap_or("does not match GitHub's workflow schema");
            Finding {
                id: "schema".into(),
                severity: Severity::High,
                title: format!("{}: {message}", e["path"].as_str().unwrap_or("$")),
                subject: file.to_owned(),
                help: None,
                location: Some(Location::new(&ctx.root, &ctx.root.join(file), None)),
            }
        })
        .collect();
    Ok(result)
}

fn xtask_commands(ctx: &Ctx, cli: &clap::Command) -> Result<ScanResult> {
    let mut result = ScanResult::new(TARGET, "cargo xtask commands");
    for step in workflows::run_steps(&ctx.root)? {
        for problem in workflows::check_step(&step, cli) {
            result.findings.push(Finding {
                id: "xtask-command".into(),
                severity: Severity::High,
                title: problem,
                subject: format!("job {}", step.job),
                help: Some("call only commands and flags `cargo xtask --help` lists".into()),
                location: Some(Location::new(
                    &ctx.root,
                    &ctx.root.join(&step.file),
                    step.line,
                )),
            });
        }
    }
    Ok(result)
}

/// The workflow whose matrix runs the pipeline, one job per group.
const CI_WORKFLOW: &str = "ci.yml";

/// The CI workflow's matrix covers the pipeline: its `group` values are exactly the groups
/// `cargo xtask ci --list --json` names, so no step is left out of CI and no job runs nothing.
fn matrix_covers_pipeline(ctx: &Ctx) -> Result<ScanResult> {
    let mut result = ScanResult::new(TARGET, "ci matrix = pipeline groups");
    let exe = std::env::current_exe().context("the toolkit's own executable")?;
    let listed = ctx.runner.query(
        &Step::new(exe.to_string_lossy())
            .args(["ci", "--list", "--json"])
            .cwd(&ctx.root),
    )?;
    if !listed.status.success() {
        bail!(
            "`cargo xtask ci --list --json` failed: {}",
            String::from_utf8_lossy(&listed.stderr).trim()
        );
    }
    let plan: Value =
        serde_json::from_slice(&listed.stdout).context("`cargo xtask ci --list --json`")?;
    let groups: Vec<&str> = plan["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| g["name"].as_str())
        .collect();
    let file = format!("{TARGET}/{CI_WORKFLOW}");
    let matrices = workflows::matrix_values(&ctx.root, CI_WORKFLOW, "group")?;
    let mut problems = Vec::new();
    if matrices.is_empty() {
        problems.push(format!(
            "no job of {file} has a `group` matrix: the pipeline's groups ({}) run nowhere",
            groups.join(", ")
        ));
    }
    for (job, values) in &matrices {
        for missing in groups.iter().filter(|g| !values.iter().any(|v| v == *g)) {
            problems.push(format!(
                "job {job}: the pipeline's group `{missing}` is not in the matrix, so its steps never run in CI"
            ));
        }
        for unknown in values.iter().filter(|v| !groups.contains(&v.as_str())) {
            problems.push(format!(
                "job {job}: `{unknown}` in the matrix is no group of the pipeline (`cargo xtask ci --list`)"
            ));
        }
    }
    result.findings = problems
        .into_iter()
        .map(|title| Finding {
            id: "ci-matrix".into(),
            severity: Severity::High,
            title,
            subject: file.clone(),
            help: Some("list every group of `cargo xtask ci --list` in the matrix".into()),
            location: Some(Location::new(&ctx.root, &ctx.root.join(&file), None)),
        })
        .collect();
    Ok(result)
}

/// Every job that runs the toolkit uploads its reports (`target/xtask/reports/`) when it
/// fails, so a red run can be read without running it again.
fn reports_kept(ctx: &Ctx) -> Result<ScanResult> {
    let mut result = ScanResult::new(TARGET, "reports kept on failure");
    result.findings = workflows::jobs_without_kept_reports(&ctx.root)?
        .into_iter()
        .map(|job| Finding {
            id: "reports-kept".into(),
            severity: Severity::High,
            title: format!("job {job} runs `cargo xtask` but keeps no reports when it fails"),
            subject: job,
            help: Some(
                "add an actions/upload-artifact step with `if: ${{ failure() }}` and the \
                 paths target/xtask/reports/ and the stacks' logs"
                    .into(),
            ),
            location: None,
        })
        .collect();
    Ok(result)
}

/// Runs one check as a task; an error becomes a failed row, and the other checks still run.
fn check(ctx: &Ctx, name: &str, work: impl FnOnce() -> Result<ScanResult>) -> ScanResult {
    let task = ctx.reporter.task(format!("{name}: {TARGET}"));
    match work() {
        Ok(result) => {
            task.done(format!("{} findings", result.findings.len()));
            result
        }
        Err(e) => {
            task.fail("error");
            ScanResult::failed(TARGET, name, format!("{e:#}"))
        }
    }
}

impl LintWorkflows {
    /// `cli` is the toolkit's command line, which every `cargo xtask` in a workflow must parse
    /// with.
    pub fn run(self, ctx: &Ctx, cli: &clap::Command) -> Result<()> {
        let paths = crate::deps::tools::ensure(ctx, &["actionlint", "zizmor", "check-jsonschema"])?;
        let files = relative(&workflows::files(&ctx.root)?, &ctx.root);
        if files.is_empty() {
            bail!("no workflow under {TARGET}");
        }
        let results = vec![
            check(ctx, "actionlint", || actionlint(ctx, &paths[0], &files)),
            check(ctx, "zizmor", || zizmor(ctx, &paths[1], &files)),
            check(ctx, "check-jsonschema", || schema(ctx, &paths[2], &files)),
            check(ctx, "cargo xtask commands", || xtask_commands(ctx, cli)),
            check(ctx, "ci matrix", || matrix_covers_pipeline(ctx)),
            check(ctx, "reports kept", || reports_kept(ctx)),
        ];
        if ctx.dry_run() {
            return Ok(());
        }
        // Every finding a linter reports (zizmor's from medium up) fails.
        let policy = Policy {
            failing: Severity::DESCENDING.into_iter().collect(),
        };
        findings::report(
            ctx,
            "cargo xtask lint-workflows",
            &results,
            &policy,
            "Fix the workflows: each finding names its file and line",
        )
    }
}

//! `cargo xtask fuzz-api`: Schemathesis against each API's own OpenAPI document. Positive
//! cases (requests the document allows: each must get a documented answer) and negative ones
//! (requests it forbids: each must be rejected with a 4xx), with every check on. Any 5xx, any
//! answer that breaks the document, fails; the table says how many cases each API got.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::build::binaries;
use crate::ctx::Ctx;
use crate::deps::tools;
use crate::runner::{tail, Background, Step};
use crate::runtime::training;
use crate::stack::Service;
use crate::util::{http, table};

/// Fuzz every API over HTTP with Schemathesis, from its /openapi.json: valid and invalid
/// requests, every check; fails on any 5xx or answer that breaks the document.
///
/// Each API gets a model trained in a temporary folder and a server of its own on a free port
/// (or, with `--running`, the stack that runs). Generation is seeded: the same seed and
/// numbers give the same cases. Reports go to target/xtask/reports/fuzz/.
#[derive(clap::Args, Debug)]
pub struct FuzzApi {
    /// Only this API (repeat for more) [default: every API]
    #[arg(long = "service", value_name = "NAME")]
    pub services: Vec<String>,
    /// Most cases Schemathesis generates per API operation and phase (its --max-examples);
    /// the two predict operations carry nearly all of them.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub max_examples: u32,
    /// Fail unless every API got at least this many cases, its modes together.
    #[arg(long, value_name = "N")]
    pub min_cases: Option<u64>,
    /// Which requests to generate: `positive` (allowed by the document), `negative`
    /// (forbidden by it), or `all`: both, one run each.
    #[arg(long, value_enum, default_value = "all")]
    pub mode: Mode,
    /// The generation's seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Fuzz the services of the running stack instead of fresh servers.
    #[arg(long)]
    pub running: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Positive,
    Negative,
    All,
}

impl Mode {
    fn runs(self) -> &'static [&'static str] {
        match self {
            Mode::Positive => &["positive"],
            Mode::Negative => &["negative"],
            Mode::All => &["positive", "negative"],
        }
    }
}

/// What Schemathesis' JSON report says of a run (the parts the table needs).
#[derive(Debug, Deserialize)]
struct RunReport {
    exit_code: i32,
    test_cases: TestCases,
    #[serde(default)]
    failures: Vec<FailureKind>,
    #[serde(default)]
    errors: Vec<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct TestCases {
    generated: u64,
    unique_failures: u64,
}

#[derive(Debug, Deserialize)]
struct FailureKind {
    code: String,
    title: String,
    count: u64,
    #[serde(default)]
    operations: Vec<String>,
}

/// Server errors: a 5xx, also on a request with an undeclared content type.
const SERVER_ERROR_CODES: [&str; 2] = ["ST101", "ST102"];

impl RunReport {
    fn server_errors(&self) -> u64 {
        self.failures
            .iter()
            .filter(|f| SERVER_ERROR_CODES.contains(&f.code.as_str()))
            .map(|f| f.count)
            .sum()
    }

    fn failure_count(&self) -> u64 {
        self.failures.iter().map(|f| f.count).sum::<u64>() + self.errors.len() as u64
    }

    fn describe_failures(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .failures
            .iter()
            .map(|f| {
                format!(
                    "{} {} ×{} on {}",
                    f.code,
                    f.title,
                    f.count,
                    f.operations.join(", ")
                )
            })
            .collect();
        lines.extend(self.errors.iter().map(|e| format!("error: {e}")));
        lines
    }
}

/// One Schemathesis run's outcome.
struct Outcome {
    service: String,
    mode: &'static str,
    report: RunReport,
    took: Duration,
    dir: PathBuf,
    /// Schemathesis' own output, for the failures it explains (with curl lines).
    output: String,
}

impl FuzzApi {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let apis: Vec<&Service> = if self.services.is_empty() {
            ctx.stack.apis().collect()
        } else {
            self.services
                .iter()
                .map(|name| {
                    let service = ctx.stack.get(name)?;
                    anyhow::ensure!(service.is_api(), "{name} is not a model API");
                    Ok(service)
                })
                .collect::<Result<_>>()?
        };
        let schemathesis = tools::path(ctx, "schemathesis")?;
        if !self.running {
            binaries::build(ctx, &apis)?;
        }
        let reports = ctx.root.join("target/xtask/reports/fuzz");
        let mut outcomes = Vec::new();
        for api in &apis {
            outcomes.extend(self.fuzz(ctx, api, &schemathesis, &reports)?);
        }
        if ctx.dry_run() {
            return Ok(());
        }
        self.judge(ctx, &outcomes)
    }

    /// Serves `api` (unless the stack's is used) and runs each mode against it.
    fn fuzz(
        &self,
        ctx: &Ctx,
        api: &Service,
        schemathesis: &Path,
        reports: &Path,
    ) -> Result<Vec<Outcome>> {
        if self.running {
            let base = ctx.url(api, "");
            if !ctx.dry_run() && !http::healthy(&ctx.health_url(api), Duration::from_secs(2)) {
                bail!(
                    "{} is not running and healthy at {base}: start the stack (`cargo xtask up`) or drop --running",
                    api.name
                );
            }
            return self.modes(ctx, api, &base, schemathesis, reports);
        }
        let work = tempfile::tempdir()?;
        let server = serve_fresh(ctx, api, work.path())?;
        let Some((child, base, log)) = server else {
            // Dry run: the plan of the server is printed; show the runs against it.
            return self.modes(ctx, api, "http://127.0.0.1:PORT", schemathesis, reports);
        };
        let outcomes = self.modes(ctx, api, &base, schemathesis, reports);
        let died = child.exited();
        ctx.runner
            .stop_group(child.pid(), Duration::from_secs(5), Some(&child))?;
        if let Some(why) = died {
            bail!(
                "{} died while fuzzed: {why}; its log:\n{}",
                api.name,
                tail(&std::fs::read_to_string(&log).unwrap_or_default(), 30)
            );
        }
        let outcomes = outcomes?;
        // A panic or a crash shows in the server's log, whatever the answers were.
        let logged = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = logged.lines().find(|l| l.contains("panicked")) {
            bail!("{} panicked while fuzzed: {line}", api.name);
        }
        Ok(outcomes)
    }

    fn modes(
        &self,
        ctx: &Ctx,
        api: &Service,
        base: &str,
        schemathesis: &Path,
        reports: &Path,
    ) -> Result<Vec<Outcome>> {
        self.mode
            .runs()
            .iter()
            .map(|mode| {
                let dir = reports.join(format!("{}-{mode}", api.name));
                let step = self.step(schemathesis, base, mode, &dir);
                let title = format!(
                    "schemathesis: {} {mode}, up to {} cases per operation",
                    api.name, self.max_examples
                );
                // A fresh folder: the report read back is this run's.
                ctx.runner.remove_path(&dir)?;
                ctx.runner.create_dir(&dir)?;
                let started = Instant::now();
                let output = ctx
                    .reporter
                    .run_task(title, |_| ctx.runner.run_unchecked(&step))?;
                let took = started.elapsed();
                let Some(output) = output else {
                    return Ok(None);
                };
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
                let report = read_report(&dir).with_context(|| {
                    format!(
                        "schemathesis wrote no report for {} ({}); its last lines:\n{}",
                        api.name,
                        output.status,
                        tail(&text, 30)
                    )
                })?;
                Ok(Some(Outcome {
                    service: api.name.clone(),
                    mode,
                    report,
                    took,
                    dir,
                    output: text,
                }))
            })
            .filter_map(Result::transpose)
            .collect()
    }

    /// `schemathesis run` of one mode, every check on, reports into `dir`.
    fn step(&self, schemathesis: &Path, base: &str, mode: &str, dir: &Path) -> Step {
        Step::new(schemathesis.to_string_lossy())
            .args(["run", &format!("{base}/openapi.json")])
            .args(["--checks", "all", "--mode", mode])
            .args(["--max-examples", &self.max_examples.to_string()])
            .args(["--seed", &self.seed.to_string()])
            // No example database: a run depends on its seed alone, not on earlier runs.
            .args(["--generation-database", "none"])
            // Every failing case, not only the first of each operation.
            .arg("--continue-on-failure")
            .args(["--workers", "1", "--request-timeout", "10"])
            .args(["--report", "json,junit", "--report-dir"])
            .arg(dir)
            .args(["--no-color", "--output-truncate", "true"])
            // Hypothesis keeps its files in the working directory.
            .cwd(dir)
    }

    /// Prints the table, then fails on any failure or too few cases, saying how to reproduce.
    fn judge(&self, ctx: &Ctx, outcomes: &[Outcome]) -> Result<()> {
        let rows: Vec<Vec<String>> = outcomes
            .iter()
            .map(|o| {
                vec![
                    o.service.clone(),
                    o.mode.to_owned(),
                    o.report.test_cases.generated.to_string(),
                    o.report.failure_count().to_string(),
                    o.report.server_errors().to_string(),
                    format!("{:.1}s", o.took.as_secs_f64()),
                ]
            })
            .collect();
        let headers = ["SERVICE", "MODE", "CASES", "FAILURES", "5XX", "TIME"];
        println!("{}", table::text(&headers, &rows));
        ctx.reporter.summary(&format!(
            "### Schemathesis (seed {}, up to {} cases per operation)\n\n{}",
            self.seed,
            self.max_examples,
            table::markdown(&headers, &rows)
        ));
        let mut problems = Vec::new();
        for o in outcomes {
            let reproduce = format!(
                "cargo xtask fuzz-api --service {} --mode {} --max-examples {} --seed {}",
                o.service, o.mode, self.max_examples, self.seed
            );
            let failed = o.report.failure_count() > 0
                || o.report.test_cases.unique_failures > 0
                || o.report.exit_code != 0;
            if failed {
                let lines = o.report.describe_failures();
                eprintln!(
                    "\n{} {}: Schemathesis' account of the failures:\n{}",
                    o.service,
                    o.mode,
                    failure_section(&o.output)
                );
                ctx.reporter.error(
                    &format!("fuzz-api {} {}", o.service, o.mode),
                    &lines.join("; "),
                );
                problems.push(format!(
                    "{} {}: {} (reports in {}; reproduce: `{reproduce}`, or a single case with the curl line above)",
                    o.service,
                    o.mode,
                    if lines.is_empty() {
                        format!("Schemathesis exited {}", o.report.exit_code)
                    } else {
                        lines.join("; ")
                    },
                    ctx.show(&o.dir)
                ));
            }
        }
        let mut totals: Vec<(&str, u64)> = Vec::new();
        for o in outcomes {
            match totals.iter_mut().find(|(name, _)| *name == o.service) {
                Some((_, cases)) => *cases += o.report.test_cases.generated,
                None => totals.push((&o.service, o.report.test_cases.generated)),
            }
        }
        let shown: Vec<String> = totals.iter().map(|(n, c)| format!("{n} {c}")).collect();
        println!("cases per API: {}", shown.join(", "));
        if let Some(min) = self.min_cases {
            for (name, cases) in &totals {
                if *cases < min {
                    problems.push(format!(
                        "{name}: {cases} cases, fewer than --min-cases {min}: raise --max-examples"
                    ));
                }
            }
        }
        if !problems.is_empty() {
            bail!("API fuzzing failed:\n  {}", problems.join("\n  "));
        }
        Ok(())
    }
}

/// The `FAILURES` part of Schemathesis' output: each failing case with its curl line.
fn failure_section(output: &str) -> String {
    let start = output
        .find("FAILURES")
        .map_or(0, |i| output[..i].rfind('\n').map_or(0, |n| n + 1));
    let end = output[start..]
        .find("SUMMARY")
        .and_then(|i| output[..start + i].rfind('\n'))
        .unwrap_or(output.len());
    tail(&output[start..end], 200)
}

/// The JSON report Schemathesis wrote into `dir` (the newest, should there be several).
fn read_report(dir: &Path) -> Result<RunReport> {
    let newest = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "json")
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("json-"))
        })
        .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .context("no json-*.json report")?;
    let text = std::fs::read_to_string(&newest)?;
    serde_json::from_str(&text).with_context(|| format!("cannot read {}", newest.display()))
}

/// Generates data, trains a model and serves it on a free port, in `dir`: the server, its base
/// URL and its log. `None` under `--dry-run`.
fn serve_fresh(
    ctx: &Ctx,
    api: &Service,
    dir: &Path,
) -> Result<Option<(Background, String, PathBuf)>> {
    let (_, models) = ctx
        .reporter
        .run_task(format!("train {} for fuzzing", api.name), |_| {
            training::train_throwaway(ctx, api, dir)
        })?;
    let log = dir.join("serve.log");
    let served = binaries::serve_on_free_port(ctx, api, &models, &log)?;
    Ok(served.map(|(child, base)| (child, base, log)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_schemathesis_json_report() {
        let report: RunReport = serde_json::from_str(
            r#"{"schemathesis_version": "4.32.5", "exit_code": 1,
                "test_cases": {"generated": 78, "with_failures": 2, "unique_failures": 2,
                               "without_checks": 0, "errored": 0},
                "failures": [
                  {"type": "ServerError", "code": "ST101", "title": "Server error",
                   "severity": "critical", "count": 1, "operations": ["POST /predict"]},
                  {"type": "RejectedPositiveData", "code": "ST202",
                   "title": "Schema-valid request rejected", "severity": "medium", "count": 1,
                   "operations": ["POST /predict_batch"]}],
                "errors": []}"#,
        )
        .unwrap();
        assert_eq!(report.test_cases.generated, 78);
        assert_eq!(report.server_errors(), 1);
        assert_eq!(report.failure_count(), 2);
        assert_eq!(
            report.describe_failures(),
            [
                "ST101 Server error ×1 on POST /predict",
                "ST202 Schema-valid request rejected ×1 on POST /predict_batch"
            ]
        );
    }

    #[test]
    fn the_failure_section_is_cut_from_the_output() {
        let output = "phases\n===== FAILURES =====\n___ POST /predict ___\ncurl -X POST ...\n===== SUMMARY =====\nrest\n";
        assert_eq!(
            failure_section(output),
            "===== FAILURES =====\n___ POST /predict ___\ncurl -X POST ..."
        );
    }
}

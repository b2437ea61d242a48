//! `cargo xtask ci --changed`, `--explain`, `--verify-skips` and `--history`: the pipeline's
//! memory of its runs. [`Memory`] fingerprints the steps at the start of a run, says which are
//! unchanged since their last pass, records every outcome, and names the undeclared input
//! when a skip proves wrong.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::fingerprint::{changes, describe, Facts, Fingerprint, Snapshot, FILE};
use super::inputs::{glob_matches, inputs_of, Fact};
use super::ledger::{self, Entry, Pass};
use super::Outcome;
use crate::ctx::Ctx;
use crate::util::table;

/// Where the declarations live, for messages.
const DECLARATIONS: &str = "xtask/src/commands/ci/inputs.rs";

pub struct Memory {
    snapshot: Snapshot,
    facts: Facts,
    pub run: String,
    pub history: Vec<Entry>,
    entries: Vec<Entry>,
    host: BTreeMap<String, String>,
    /// The fingerprints taken at the start, by step.
    fingerprints: BTreeMap<String, Fingerprint>,
    /// How long fingerprinting the steps took (files and facts).
    pub took: Duration,
    /// Whether the run's outcomes are being recorded (its steps are over).
    recording: bool,
}

/// Why a step need not run: its inputs are those of its last pass.
pub struct Unchanged {
    pub pass: Pass,
}

impl Unchanged {
    pub fn reason(&self) -> String {
        format!(
            "inputs unchanged since run {} at commit {}",
            self.pass.run, self.pass.commit
        )
    }
}

impl Memory {
    pub fn open(ctx: &Ctx) -> Result<Self> {
        let snapshot = Snapshot::take(ctx)?;
        Ok(Self {
            took: snapshot.took,
            snapshot,
            facts: Facts::default(),
            run: ledger::run_name(),
            history: ledger::read_history(&ctx.root),
            entries: Vec::new(),
            host: ledger::host_facts(),
            fingerprints: BTreeMap::new(),
            recording: false,
        })
    }

    /// How long fingerprinting took, in words.
    pub fn timing(&self, steps: usize) -> String {
        format!(
            "fingerprinted {steps} step(s) in {} ms: the repository's {} files in {} ms (git), \
             the machine's facts in {} ms",
            self.took.as_millis(),
            self.snapshot.files.len(),
            self.snapshot.took.as_millis(),
            self.facts.took.as_millis()
        )
    }

    /// The step's fingerprint now; `None` for a step that declares no inputs.
    pub fn fingerprint(
        &mut self,
        ctx: &Ctx,
        step: &str,
        commands: &[String],
    ) -> Result<Option<Fingerprint>> {
        let inputs = inputs_of(step);
        if !inputs.declared() {
            return Ok(None);
        }
        let started = Instant::now();
        let fingerprint = Fingerprint::of(ctx, &inputs, commands, &self.snapshot, &mut self.facts)?;
        self.took += started.elapsed();
        Ok(Some(fingerprint))
    }

    /// Fingerprints `step` as the run starts, and says whether it is unchanged since its last
    /// pass.
    pub fn check(
        &mut self,
        ctx: &Ctx,
        step: &str,
        commands: &[String],
    ) -> Result<Option<Unchanged>> {
        let Some(fingerprint) = self.fingerprint(ctx, step, commands)? else {
            return Ok(None);
        };
        let unchanged = ledger::last_pass(&ctx.root, step)
            .filter(|pass| pass.fingerprint == fingerprint.digest)
            .map(|pass| Unchanged { pass });
        self.fingerprints.insert(step.to_owned(), fingerprint);
        Ok(unchanged)
    }

    /// What changed since `pass` that `step` does not declare: the files of the repository and
    /// the facts measured in both runs.
    pub fn undeclared_changes(&self, step: &str, pass: &Pass) -> Vec<String> {
        let inputs = inputs_of(step);
        let declared_file = |path: &str| inputs.globs().any(|glob| glob_matches(glob, path));
        let mut found: Vec<String> = changes(&pass.tree, &self.snapshot.files)
            .into_iter()
            .filter(|(path, _, _)| !declared_file(path))
            .map(|(path, before, after)| describe(&format!("{FILE}{path}"), before, after))
            .collect();
        let declared_facts: Vec<String> = inputs.facts.iter().map(|f| f.name()).collect();
        let now = self.facts.all();
        for (name, before) in &pass.facts {
            if let Some(after) = now.get(name) {
                if after != before && !declared_facts.contains(name) {
                    found.push(describe(&format!("fact {name}"), Some(before), Some(after)));
                }
            }
        }
        found
    }

    /// Records how `step` ended: its last pass is kept (on a pass, with the input values
    /// measured again, since the step may have built what it declares, its images) or
    /// forgotten (on a failure), and a line goes to the ledger.
    pub fn record(
        &mut self,
        ctx: &Ctx,
        step: &str,
        commands: &[String],
        outcome: &Outcome,
        measured: Vec<String>,
        verified: bool,
    ) -> Result<()> {
        let (outcome, reason, took) = match outcome {
            Outcome::Passed(took, tests) => ("passed", tests.join("; "), Some(*took)),
            Outcome::Failed(took, why, _) => ("failed", why.clone(), Some(*took)),
            Outcome::Skipped(why) | Outcome::Unchanged(why) => ("skipped", why.clone(), None),
        };
        if !self.recording {
            // The steps may have built or removed images: the passes record them as they are.
            self.facts.forget(Fact::Images);
            self.recording = true;
        }
        // The ledger keeps the inputs the step started from: a pass and a failure on the same
        // ones make it flaky.
        let fingerprint = self.fingerprints.get(step).map(|f| f.digest.clone());
        match outcome {
            // A pass with tests that skipped themselves is not remembered: skipping it later as
            // unchanged would hide those skips from `--require`.
            "passed" if !reason.is_empty() => ledger::forget_pass(&ctx.root, step)?,
            "passed" => {
                if let Some(after) = self.fingerprint(ctx, step, commands)? {
                    ledger::record_pass(
                        &ctx.root,
                        step,
                        &Pass {
                            run: self.run.clone(),
                            commit: self.snapshot.commit.clone(),
                            finished: ledger::now(),
                            fingerprint: after.digest.clone(),
                            inputs: after.inputs,
                            tree: self.snapshot.files.clone(),
                            facts: self.facts.all(),
                        },
                    )?;
                }
            }
            "failed" => ledger::forget_pass(&ctx.root, step)?,
            _ => {}
        }
        self.entries.push(Entry {
            run: self.run.clone(),
            time: ledger::now(),
            commit: self.snapshot.commit.clone(),
            step: step.to_owned(),
            outcome: outcome.to_owned(),
            reason,
            seconds: took.map(|t| (t.as_secs_f64() * 10.0).round() / 10.0),
            fingerprint: fingerprint.unwrap_or_default(),
            verified,
            host: self.host_with_facts(),
            measured,
        });
        Ok(())
    }

    /// The machine, with what the run measured of it that does not change by the hour (the
    /// engine, the toolchain, Python): a trend can then be read against them.
    fn host_with_facts(&self) -> BTreeMap<String, String> {
        let mut host = self.host.clone();
        for (name, value) in self.facts.all() {
            if !matches!(name.as_str(), "image IDs" | "day" | "trivy database") {
                host.insert(name, value);
            }
        }
        host
    }

    /// Appends this run's lines to the ledger.
    pub fn finish(&self, ctx: &Ctx) -> Result<()> {
        ledger::append_history(&ctx.root, &self.entries)
    }

    /// The extra column of the step summary: the time against the median of earlier runs,
    /// and a flaky mark for a pass on a fingerprint that failed before.
    pub fn trend(&self, step: &str) -> String {
        let Some(entry) = self.entries.iter().rev().find(|e| e.step == step) else {
            return "-".into();
        };
        let mut text = match entry.seconds {
            Some(seconds) if entry.outcome != "skipped" => {
                ledger::against_median(seconds, ledger::median_seconds(&self.history, step))
            }
            _ => "-".into(),
        };
        if entry.outcome == "passed" && !entry.fingerprint.is_empty() {
            if let Some(failed) = ledger::failed_on(&self.history, step, &entry.fingerprint) {
                text.push_str(&format!(
                    "; FLAKY: failed on these same inputs in run {}",
                    failed.run
                ));
            }
        }
        text
    }
}

/// `--explain STEP`: the step's declared inputs, their values now, and what changed since
/// its last pass.
pub fn explain(ctx: &Ctx, step: &str, about: &str, commands: &[String]) -> Result<()> {
    println!("{step}: {about}");
    let inputs = inputs_of(step);
    if !inputs.declared() {
        println!(
            "  declares no inputs: never skipped by `--changed` (declare what it reads in \
             {DECLARATIONS})"
        );
        return Ok(());
    }
    let mut memory = Memory::open(ctx)?;
    let files_took = memory.snapshot.took;
    let started = Instant::now();
    let Some(now) = memory.fingerprint(ctx, step, commands)? else {
        unreachable!("a declared step has a fingerprint")
    };
    let took = started.elapsed();
    println!("  inputs:");
    for glob in inputs.globs() {
        let count = memory
            .snapshot
            .files
            .keys()
            .filter(|path| glob_matches(glob, path))
            .count();
        println!("    files {glob}: {count} file(s)");
    }
    for (name, value) in now.inputs.iter().filter(|(n, _)| !n.starts_with(FILE)) {
        let value = value.lines().collect::<Vec<_>>().join(" / ");
        println!("    {name}: {value}");
    }
    println!(
        "  fingerprint {} (the repository's files read in {} ms, this step's inputs in {} ms)",
        now.short(),
        files_took.as_millis(),
        took.as_millis()
    );
    match ledger::last_pass(&ctx.root, step) {
        None => println!(
            "  no pass recorded in {}: `--changed` runs it",
            ledger::state_dir(&ctx.root).display()
        ),
        Some(pass) if pass.fingerprint == now.digest => println!(
            "  unchanged since its last pass (run {} at commit {}): `--changed` skips it",
            pass.run, pass.commit
        ),
        Some(pass) => {
            println!(
                "  changed since its last pass (run {} at commit {}, fingerprint {}): `--changed` runs it",
                pass.run,
                pass.commit,
                &pass.fingerprint[..12.min(pass.fingerprint.len())]
            );
            let found = changes(&pass.inputs, &now.inputs);
            for (name, before, after) in found.iter().take(30) {
                println!("    {}", describe(name, *before, *after));
            }
            if found.len() > 30 {
                println!("    ... and {} more", found.len() - 30);
            }
        }
    }
    Ok(())
}

/// `--history [STEP]`: every step's trend, or one step's runs.
pub fn history(ctx: &Ctx, step: Option<&str>) -> Result<()> {
    let history = ledger::read_history(&ctx.root);
    if history.is_empty() {
        println!(
            "no runs recorded yet in {}",
            ledger::history_file(&ctx.root).display()
        );
        return Ok(());
    }
    let flaky = ledger::flaky(&history);
    match step {
        Some(step) => {
            let rows: Vec<Vec<String>> = history
                .iter()
                .filter(|e| e.step == step)
                .map(|e| {
                    let mut outcome = e.outcome.clone();
                    if e.verified {
                        outcome.push_str(" (verifying a skip)");
                    }
                    if flaky.contains(&(e.step.as_str(), e.run.as_str())) {
                        outcome.push_str(" FLAKY");
                    }
                    if !e.reason.is_empty() {
                        outcome.push_str(&format!(": {}", e.reason));
                    }
                    vec![
                        e.time.clone(),
                        e.commit.clone(),
                        e.seconds.map_or_else(|| "-".into(), |s| format!("{s:.1}s")),
                        e.fingerprint.get(..12).unwrap_or("-").to_owned(),
                        outcome,
                        if e.measured.is_empty() {
                            "-".into()
                        } else {
                            e.measured.join("\n")
                        },
                    ]
                })
                .collect();
            let headers = [
                "TIME",
                "COMMIT",
                "TOOK",
                "FINGERPRINT",
                "OUTCOME",
                "MEASURED",
            ];
            println!("{}", table::text(&headers, &rows));
        }
        None => {
            let mut steps: Vec<&str> = history.iter().map(|e| e.step.as_str()).collect();
            steps.dedup();
            let mut seen = Vec::new();
            steps.retain(|s| {
                let new = !seen.contains(s);
                seen.push(s);
                new
            });
            let rows: Vec<Vec<String>> = steps
                .iter()
                .map(|step| {
                    let of = |outcome: &str| {
                        history
                            .iter()
                            .filter(|e| e.step == *step && e.outcome == outcome)
                            .count()
                    };
                    let recent: Vec<String> = history
                        .iter()
                        .filter(|e| e.step == *step && e.outcome == "passed")
                        .rev()
                        .take(5)
                        .filter_map(|e| e.seconds.map(|s| format!("{s:.1}")))
                        .collect();
                    let flaky_runs = flaky.iter().filter(|(s, _)| s == step).count();
                    vec![
                        (*step).to_owned(),
                        of("passed").to_string(),
                        of("failed").to_string(),
                        of("skipped").to_string(),
                        ledger::median_seconds(&history, step)
                            .map_or_else(|| "-".into(), |(m, _)| format!("{m:.1}s")),
                        if recent.is_empty() {
                            "-".into()
                        } else {
                            recent.join(", ")
                        },
                        if flaky_runs == 0 {
                            "-".into()
                        } else {
                            format!("{flaky_runs} time(s)")
                        },
                    ]
                })
                .collect();
            let headers = [
                "STEP",
                "PASSED",
                "FAILED",
                "SKIPPED",
                "MEDIAN",
                "LAST PASSES (S, NEWEST FIRST)",
                "FLAKY",
            ];
            println!("{}", table::text(&headers, &rows));
        }
    }
    Ok(())
}

/// Why a step whose skip was verified failed: the skip was wrong, and the inputs it does not
/// declare that changed since its last pass are the suspects.
pub fn wrong_skip(step: &str, skip: &Unchanged, undeclared: &[String], why: &str) -> String {
    let suspects = if undeclared.is_empty() {
        "no undeclared file of the repository and no measured fact changed since that pass: it \
         depends on something the pipeline does not see (the network, the clock), or it is flaky"
            .to_owned()
    } else {
        let mut shown: Vec<&str> = undeclared.iter().take(10).map(String::as_str).collect();
        let more = undeclared.len().saturating_sub(shown.len());
        let more_text = format!("and {more} more");
        if more > 0 {
            shown.push(&more_text);
        }
        format!(
            "undeclared input(s) changed since that pass: {}; declare what {step} reads in \
             {DECLARATIONS}",
            shown.join(", ")
        )
    };
    format!(
        "WRONG SKIP: {} and would have been skipped, but it fails when run; {suspects}. The \
         failure: {why}",
        skip.reason()
    )
}

//! What the pipeline remembers between runs, under `target/xtask/`:
//! - `ci-state/STEP.json`: the step's last pass (its fingerprint, the values of its inputs,
//!   and the whole repository's file IDs, to name an undeclared input when a skip proves
//!   wrong). A failure removes it, so a failed step never counts as unchanged.
//! - `ci-history.jsonl`: one line per step and run, whatever the outcome: the ledger that
//!   `--history` and the step summary's medians and flaky marks read.
//!
//! The CI workflow restores and saves both with actions/cache.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The ledger keeps this many lines; older runs fall off.
const HISTORY_LINES: usize = 5000;
/// The medians read this many of a step's last passing runs.
const MEDIAN_RUNS: usize = 20;

pub fn state_dir(root: &Path) -> PathBuf {
    root.join("target/xtask/ci-state")
}

pub fn history_file(root: &Path) -> PathBuf {
    root.join("target/xtask/ci-history.jsonl")
}

/// A step's last pass.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Pass {
    pub run: String,
    pub commit: String,
    pub finished: String,
    pub fingerprint: String,
    /// The declared inputs' values (see `fingerprint::Fingerprint`).
    pub inputs: BTreeMap<String, String>,
    /// Every file of the repository then, path to blob ID.
    pub tree: BTreeMap<String, String>,
    /// Every fact the run measured, declared by the step or not.
    pub facts: BTreeMap<String, String>,
}

fn pass_file(root: &Path, step: &str) -> PathBuf {
    state_dir(root).join(format!("{step}.json"))
}

pub fn last_pass(root: &Path, step: &str) -> Option<Pass> {
    let text = std::fs::read_to_string(pass_file(root, step)).ok()?;
    serde_json::from_str(&text).ok()
}

pub fn record_pass(root: &Path, step: &str, pass: &Pass) -> Result<()> {
    let file = pass_file(root, step);
    std::fs::create_dir_all(state_dir(root))?;
    let temporary = file.with_extension("json.new");
    std::fs::write(&temporary, serde_json::to_vec(pass)?)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, &file).with_context(|| format!("cannot write {}", file.display()))
}

pub fn forget_pass(root: &Path, step: &str) -> Result<()> {
    match std::fs::remove_file(pass_file(root, step)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {step}'s pass from the ci state"))
        }
        _ => Ok(()),
    }
}

/// One line of the ledger.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Entry {
    pub run: String,
    pub time: String,
    pub commit: String,
    pub step: String,
    /// `passed`, `failed` or `skipped`.
    pub outcome: String,
    /// Why it failed or was skipped; for a pass, the tests that skipped themselves.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub fingerprint: String,
    /// Run although its inputs were unchanged, by `--verify-skips`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verified: bool,
    #[serde(default)]
    pub host: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measured: Vec<String>,
}

/// The machine a run ran on.
pub fn host_facts() -> BTreeMap<String, String> {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into());
    let mut host = BTreeMap::from([
        ("hostname".to_owned(), hostname.trim().to_owned()),
        (
            "os".to_owned(),
            format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
        ),
        (
            "cpus".to_owned(),
            std::thread::available_parallelism().map_or_else(|_| "?".into(), |n| n.to_string()),
        ),
    ]);
    if let Ok(runner) = std::env::var("RUNNER_NAME") {
        host.insert("github runner".into(), runner);
    }
    host
}

/// A run's name: GitHub's run and attempt under Actions, else its start time.
pub fn run_name() -> String {
    match (
        std::env::var("GITHUB_RUN_ID"),
        std::env::var("GITHUB_RUN_ATTEMPT"),
    ) {
        (Ok(id), Ok(attempt)) => format!("github-{id}.{attempt}"),
        (Ok(id), _) => format!("github-{id}"),
        _ => now(),
    }
}

pub fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

pub fn read_history(root: &Path) -> Vec<Entry> {
    std::fs::read_to_string(history_file(root))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// Appends the run's entries, keeping the last [`HISTORY_LINES`].
pub fn append_history(root: &Path, entries: &[Entry]) -> Result<()> {
    let file = history_file(root);
    std::fs::create_dir_all(file.parent().expect("a parent"))?;
    let existing = std::fs::read_to_string(&file).unwrap_or_default();
    let kept = existing.lines().count() + entries.len();
    if kept > HISTORY_LINES {
        let lines: Vec<&str> = existing.lines().collect();
        let keep_from = (kept - HISTORY_LINES).min(lines.len());
        let mut text = lines[keep_from..].join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        std::fs::write(&file, text)?;
    }
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file)
        .with_context(|| format!("cannot open {}", file.display()))?;
    for entry in entries {
        writeln!(out, "{}", serde_json::to_string(entry)?)?;
    }
    Ok(())
}

/// The median duration of a step's last passing runs, and how many there were.
pub fn median_seconds(history: &[Entry], step: &str) -> Option<(f64, usize)> {
    let mut times: Vec<f64> = history
        .iter()
        .rev()
        .filter(|e| e.step == step && e.outcome == "passed")
        .filter_map(|e| e.seconds)
        .take(MEDIAN_RUNS)
        .collect();
    if times.is_empty() {
        return None;
    }
    times.sort_by(f64::total_cmp);
    let middle = times.len() / 2;
    let median = if times.len().is_multiple_of(2) {
        (times[middle - 1] + times[middle]) / 2.0
    } else {
        times[middle]
    };
    Some((median, times.len()))
}

/// The run in which `step` failed on the fingerprint `fingerprint`, when it did: a later pass
/// on the same inputs makes the step flaky.
pub fn failed_on<'a>(history: &'a [Entry], step: &str, fingerprint: &str) -> Option<&'a Entry> {
    history
        .iter()
        .rev()
        .find(|e| e.step == step && e.outcome == "failed" && e.fingerprint == fingerprint)
}

/// The steps that failed and later passed on one fingerprint, with the run of the pass.
pub fn flaky(history: &[Entry]) -> Vec<(&str, &str)> {
    let mut found: Vec<(&str, &str)> = Vec::new();
    for (i, entry) in history.iter().enumerate() {
        if entry.outcome != "passed" || entry.fingerprint.is_empty() {
            continue;
        }
        let failed_before = history[..i].iter().any(|e| {
            e.step == entry.step && e.outcome == "failed" && e.fingerprint == entry.fingerprint
        });
        if failed_before {
            found.push((&entry.step, &entry.run));
        }
    }
    found
}

/// `41.0s` against the median: `median 38.2s of 12 runs, +7%`.
pub fn against_median(seconds: f64, median: Option<(f64, usize)>) -> String {
    match median {
        None => "no earlier passing run".into(),
        Some((median, runs)) => {
            let change = if median > 0.0 {
                format!(", {:+.0}%", (seconds - median) / median * 100.0)
            } else {
                String::new()
            };
            format!("median {median:.1}s of {runs} run(s){change}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(run: &str, step: &str, outcome: &str, seconds: f64, fingerprint: &str) -> Entry {
        Entry {
            run: run.into(),
            time: String::new(),
            commit: "abc".into(),
            step: step.into(),
            outcome: outcome.into(),
            reason: String::new(),
            seconds: Some(seconds),
            fingerprint: fingerprint.into(),
            verified: false,
            host: BTreeMap::new(),
            measured: Vec::new(),
        }
    }

    #[test]
    fn the_median_reads_passing_runs_only() {
        let history = [
            entry("1", "fmt", "passed", 1.0, "f"),
            entry("2", "fmt", "failed", 100.0, "f"),
            entry("3", "fmt", "passed", 3.0, "f"),
            entry("4", "test", "passed", 50.0, "t"),
            entry("5", "fmt", "passed", 2.0, "f"),
        ];
        assert_eq!(median_seconds(&history, "fmt"), Some((2.0, 3)));
        assert_eq!(median_seconds(&history, "clippy"), None);
        assert_eq!(
            against_median(3.0, Some((2.0, 3))),
            "median 2.0s of 3 run(s), +50%"
        );
    }

    #[test]
    fn a_pass_after_a_failure_on_the_same_inputs_is_flaky() {
        let history = [
            entry("1", "e2e-local", "failed", 1.0, "same"),
            entry("2", "e2e-local", "passed", 1.0, "same"),
            entry("3", "fmt", "failed", 1.0, "a"),
            entry("4", "fmt", "passed", 1.0, "b"),
        ];
        assert_eq!(flaky(&history), [("e2e-local", "2")]);
        assert!(failed_on(&history, "e2e-local", "same").is_some());
        assert!(failed_on(&history, "fmt", "b").is_none());
    }

    #[test]
    fn the_ledger_appends_and_keeps_its_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let entries: Vec<Entry> = (0..3)
            .map(|i| entry(&i.to_string(), "fmt", "passed", 1.0, "f"))
            .collect();
        append_history(dir.path(), &entries).unwrap();
        append_history(dir.path(), &entries[..1]).unwrap();
        let read = read_history(dir.path());
        assert_eq!(read.len(), 4);
        assert_eq!(read[3], entries[0]);
    }
}

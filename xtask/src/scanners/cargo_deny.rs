//! cargo-deny on a workspace, with `deny.toml`: licences, bans, sources and RustSec
//! advisories.
//!
//! cargo-deny 0.20 takes its global flags (`--offline`, `--format`, `--config`) before
//! `check`, writes JSON lines to stderr ending with a summary, and exits with a bitset of the
//! checks that failed (advisories 1, bans 2, licences 4, sources 8). A fatal error also exits
//! 1 and writes no summary: that is how the two are told apart.
//!
//! The advisory database is a git clone of RustSec's. Where it cannot be fetched, a local copy
//! is used if there is one; with none, the other checks still run and the result says plainly
//! that advisories were not checked, and why.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::Deserialize;

use super::findings::{Finding, Location, ScanResult, Severity, Skipped};
use crate::ctx::Ctx;
use crate::runner::Step;

pub const SCANNER: &str = "cargo-deny";

#[derive(Debug, Clone)]
pub struct Options {
    /// The policy: deny.toml at the root unless a test says otherwise.
    pub config: PathBuf,
    /// The workspace's Cargo.toml.
    pub manifest: PathBuf,
    /// Do not try to update the advisory database (use the local copy, if any).
    pub offline: bool,
    /// Advisories not checked fails the result.
    pub require_advisories: bool,
}

impl Options {
    pub fn for_workspace(ctx: &Ctx) -> Self {
        Self {
            config: ctx.root.join("deny.toml"),
            manifest: ctx.root.join("Cargo.toml"),
            offline: false,
            require_advisories: false,
        }
    }
}

/// One line of cargo-deny's JSON output.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", content = "fields", rename_all = "lowercase")]
enum Line {
    Diagnostic(Diagnostic),
    Summary(BTreeMap<String, Counts>),
    Log(Log),
}

#[derive(Debug, Deserialize)]
struct Counts {
    errors: usize,
}

#[derive(Debug, Deserialize)]
struct Log {
    level: String,
    message: String,
}

#[derive(Debug, Deserialize)]
pub struct Diagnostic {
    severity: String,
    code: Option<String>,
    message: String,
    #[serde(default)]
    labels: Vec<Label>,
    #[serde(default)]
    graphs: Vec<Graph>,
    #[serde(default)]
    notes: Vec<String>,
    advisory: Option<Advisory>,
}

#[derive(Debug, Deserialize)]
struct Label {
    line: Option<u32>,
    #[serde(default)]
    span: String,
}

#[derive(Debug, Deserialize)]
struct Graph {
    #[serde(rename = "Krate")]
    krate: Krate,
}

#[derive(Debug, Deserialize, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Krate {
    name: String,
    version: String,
}

#[derive(Debug, Deserialize)]
struct Advisory {
    id: String,
    title: Option<String>,
}

/// What one cargo-deny run said.
#[derive(Debug, Default)]
pub struct Output {
    pub diagnostics: Vec<Diagnostic>,
    /// Errors per check (`advisories`, `bans`, `licenses`, `sources`), when the run finished.
    pub summary: Option<BTreeMap<String, usize>>,
    /// The error log lines: why a run without a summary stopped.
    pub errors: Vec<String>,
}

pub fn parse(stderr: &str) -> Output {
    let mut out = Output::default();
    for line in stderr.lines().filter(|l| l.starts_with('{')) {
        match serde_json::from_str::<Line>(line) {
            Ok(Line::Diagnostic(d)) => out.diagnostics.push(d),
            Ok(Line::Summary(checks)) => {
                out.summary = Some(checks.into_iter().map(|(k, c)| (k, c.errors)).collect())
            }
            Ok(Line::Log(log)) if log.level == "ERROR" => out.errors.push(log.message),
            Ok(Line::Log(_)) | Err(_) => {}
        }
    }
    out
}

impl Output {
    /// A fatal error: no summary.
    fn fatal(&self) -> Option<String> {
        if self.summary.is_some() {
            return None;
        }
        Some(
            self.errors
                .last()
                .map(|e| e.trim().to_owned())
                .unwrap_or_else(|| "cargo-deny stopped without a summary".into()),
        )
    }
}

/// Where each of the workspace's own crates (members and path dependencies inside it) has its
/// manifest: findings about them point there.
fn local_manifests(ctx: &Ctx, manifest: &Path) -> BTreeMap<String, PathBuf> {
    let step = Step::new("cargo")
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .arg("--manifest-path")
        .arg(manifest);
    let Some(json) = ctx.runner.query_stdout(&step) else {
        return BTreeMap::new();
    };
    let Ok(meta) = serde_json::from_str::<serde_json::Value>(&json) else {
        return BTreeMap::new();
    };
    meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some((
                p["name"].as_str()?.to_owned(),
                PathBuf::from(p["manifest_path"].as_str()?),
            ))
        })
        .collect()
}

/// The line of `name = "krate"` followed by `version = "v"` in a Cargo.lock.
fn lock_line(lock: &str, krate: &Krate) -> Option<u32> {
    let lines: Vec<&str> = lock.lines().collect();
    let name = format!("name = \"{}\"", krate.name);
    let version = format!("version = \"{}\"", krate.version);
    lines
        .windows(2)
        .position(|w| w[0] == name && w[1] == version)
        .map(|i| i as u32 + 1)
}

/// Which check a diagnostic code belongs to, for the table.
fn check_of(code: &str) -> &'static str {
    match code {
        "vulnerability"
        | "notice"
        | "unmaintained"
        | "unsound"
        | "yanked"
        | "index-failure"
        | "advisory-not-detected"
        | "unknown-advisory" => "advisories",
        "rejected"
        | "accepted"
        | "unlicensed"
        | "skipped-private-workspace-crate"
        | "license-not-encountered"
        | "license-exception-not-encountered"
        | "missing-clarification-file"
        | "parse-error"
        | "empty-license-field"
        | "no-license-field"
        | "gather-failure" => "licenses",
        "git-source-underspecified"
        | "allowed-source"
        | "allowed-by-organization"
        | "source-not-allowed"
        | "unmatched-source"
        | "unmatched-organization" => "sources",
        _ => "bans",
    }
}

struct Locator<'a> {
    root: &'a Path,
    config: &'a Path,
    lock_path: PathBuf,
    lock: String,
    locals: BTreeMap<String, PathBuf>,
}

impl Locator<'_> {
    fn locate(&self, d: &Diagnostic) -> Option<Location> {
        let label_line = d.labels.first().and_then(|l| l.line);
        let Some(graph) = d.graphs.first() else {
            // About the policy itself (an allowance or a skip that matched nothing).
            return Some(Location::new(self.root, self.config, label_line));
        };
        let krate = &graph.krate;
        let in_lock = matches!(
            d.code.as_deref(),
            Some("duplicate" | "vulnerability" | "notice" | "unmaintained" | "unsound" | "yanked")
        );
        match self.locals.get(&krate.name) {
            Some(manifest) if !in_lock => Some(Location::new(self.root, manifest, label_line)),
            _ => lock_line(&self.lock, krate)
                .map(|line| Location::new(self.root, &self.lock_path, Some(line))),
        }
    }
}

fn to_finding(d: &Diagnostic, locator: &Locator) -> Option<Finding> {
    // Errors fail the check; warnings are shown. Notes and helps are commentary.
    let severity = match d.severity.as_str() {
        "error" | "bug" => Severity::High,
        "warning" => Severity::Medium,
        _ => return None,
    };
    let code = d.code.clone().unwrap_or_else(|| "cargo-deny".into());
    let subject = match d.graphs.first() {
        Some(g) => format!("{} {}", g.krate.name, g.krate.version),
        None => "deny.toml".into(),
    };
    let (id, title) = match &d.advisory {
        Some(a) => (
            a.id.clone(),
            a.title.clone().unwrap_or_else(|| d.message.clone()),
        ),
        None => {
            // The offending text (a licence, a `*`) says more than the generic message.
            let span = d
                .labels
                .iter()
                .map(|l| l.span.trim())
                .find(|s| !s.is_empty() && !s.contains('\n') && *s != "true");
            let title = match span {
                Some(span) if d.message.len() < 80 => format!("{}: {span}", d.message),
                _ => d.message.clone(),
            };
            (code.clone(), title)
        }
    };
    let help = d
        .notes
        .iter()
        .find(|n| n.starts_with("Solution:"))
        .cloned()
        .or_else(|| d.advisory.as_ref().map(|_| "no patched version yet".into()));
    Some(Finding {
        id: format!("{}/{}", check_of(&code), id),
        severity,
        title,
        subject,
        help,
        location: locator.locate(d),
    })
}

fn base_step(tool: &Path, options: &Options) -> Step {
    Step::new(tool.to_string_lossy())
        .args(["--format", "json", "--color", "never", "--config"])
        .arg(&options.config)
        .arg("--manifest-path")
        .arg(&options.manifest)
}

/// Runs cargo-deny as `options` say; the result is ready for the summary table.
pub fn scan(ctx: &Ctx, options: &Options) -> Result<ScanResult> {
    let tool = crate::deps::tools::path(ctx, "cargo-deny")?;
    let lock = options.manifest.with_file_name("Cargo.lock");
    let target = format!(
        "Rust dependencies ({})",
        lock.strip_prefix(&ctx.root).unwrap_or(&lock).display()
    );
    let mut result = ScanResult::new(&target, SCANNER);
    let run = |step: Step| -> Result<Option<(Output, i32)>> {
        Ok(ctx.runner.run_unchecked(&step)?.map(|out| {
            let code = out.status.code().unwrap_or(-1);
            (parse(&String::from_utf8_lossy(&out.stderr)), code)
        }))
    };

    // Online: cargo-deny updates the advisory database itself, then checks.
    ctx.runner.plan(
        "if the advisory database cannot be updated: the same check --frozen, on the local \
         copy; with no local copy: `check bans licenses sources`, advisories not checked",
    );
    let mut update_error = None;
    if !options.offline {
        match run(base_step(&tool, options).args(["--locked", "check"]))? {
            None => return Ok(result), // dry run
            Some((out, code)) => match out.fatal() {
                None => return finish(ctx, options, result, out, code),
                Some(error) => update_error = Some(error),
            },
        }
    }
    // Offline, with the local copy of the database if there is one.
    let Some((out, code)) = run(base_step(&tool, options).args(["--frozen", "check"]))? else {
        return Ok(result);
    };
    let fetch_failure = update_error
        .as_deref()
        .map(short_reason)
        .unwrap_or_else(|| "--offline".into());
    match out.fatal() {
        None => {
            if update_error.is_some() {
                result.notes.push(format!(
                    "the advisory database could not be updated ({fetch_failure}): checked \
                     against the local copy"
                ));
            }
            finish(ctx, options, result, out, code)
        }
        Some(error) if is_missing_database(&error) => {
            // No database at all: every other check still runs.
            result.skipped.push(Skipped {
                what: "advisories".into(),
                why: format!(
                    "the RustSec advisory database could not be fetched ({fetch_failure}) and \
                     there is no local copy"
                ),
                required: options.require_advisories,
            });
            let Some((out, code)) = run(base_step(&tool, options)
                .args(["--frozen", "check", "bans", "licenses", "sources"]))?
            else {
                return Ok(result);
            };
            if let Some(error) = out.fatal() {
                bail!("cargo-deny failed: {error}");
            }
            finish(ctx, options, result, out, code)
        }
        Some(error) => bail!("cargo-deny failed: {error}"),
    }
}

fn is_missing_database(error: &str) -> bool {
    error.contains("advisory-db") || error.contains("advisory database")
}

/// The line that says why a fetch failed (`Could not resolve host: github.com`).
fn short_reason(error: &str) -> String {
    error
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with("fatal:") || l.contains("Could not resolve"))
        .unwrap_or_else(|| error.lines().next().unwrap_or(error))
        .trim_start_matches("fatal: ")
        .to_owned()
}

fn finish(
    ctx: &Ctx,
    options: &Options,
    mut result: ScanResult,
    out: Output,
    code: i32,
) -> Result<ScanResult> {
    let lock_path = options.manifest.with_file_name("Cargo.lock");
    let locator = Locator {
        root: &ctx.root,
        config: &options.config,
        lock: std::fs::read_to_string(&lock_path).unwrap_or_default(),
        lock_path,
        locals: local_manifests(ctx, &options.manifest),
    };
    result.findings = out
        .diagnostics
        .iter()
        .filter_map(|d| to_finding(d, &locator))
        .collect();
    let errors: usize = out.summary.iter().flat_map(|s| s.values()).sum();
    if code != 0 && errors == 0 {
        result.error = Some(format!(
            "cargo-deny exited with {code} but reported no error: run it by hand to see why"
        ));
    }
    Ok(result)
}

/// The summary's checks and their outcomes, for `cargo xtask deny`'s closing line.
pub fn checks_line(result: &ScanResult) -> String {
    let mut per_check: BTreeMap<&str, usize> = ["advisories", "bans", "licenses", "sources"]
        .into_iter()
        .map(|c| (c, 0))
        .collect();
    for f in result
        .findings
        .iter()
        .filter(|f| f.severity >= Severity::High)
    {
        let check = f.id.split('/').next().unwrap_or("bans");
        *per_check.entry(check).or_default() += 1;
    }
    per_check
        .iter()
        .map(|(check, errors)| {
            if result.skipped.iter().any(|s| s.what == *check) {
                format!("{check} NOT CHECKED")
            } else if *errors > 0 {
                format!("{check} FAILED ({errors})")
            } else {
                format!("{check} ok")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn sarif(result: &ScanResult) -> serde_json::Value {
    super::sarif::log(
        "cargo-deny",
        "https://github.com/EmbarkStudios/cargo-deny",
        &result.findings,
        "deny.toml",
    )
}

/// Reads the advisory fixture's id, for tests that plant it.
#[cfg(test)]
pub fn advisory_ids(out: &Output) -> Vec<String> {
    out.diagnostics
        .iter()
        .filter_map(|d| d.advisory.as_ref().map(|a| a.id.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines as cargo-deny 0.20.2 printed them for the fixture workspace.
    const FIXTURE_OUTPUT: &str = r#"{"fields":{"code":"wildcard","graphs":[{"Krate":{"name":"deny-violations","version":"0.1.0"}}],"labels":[{"column":11,"line":13,"message":"wildcard dependency","span":"*"}],"message":"found 1 wildcard dependency for crate 'deny-violations'. allow-wildcard-paths is enabled, but does not apply to public crates as crates.io disallows path dependencies.","severity":"error"},"type":"diagnostic"}
{"fields":{"code":"rejected","graphs":[{"Krate":{"name":"gpl-helper","version":"0.1.0"},"parents":[{"Krate":{"name":"deny-violations","version":"0.1.0"}}]}],"labels":[{"column":12,"line":5,"message":"","span":"GPL-3.0-only"},{"column":12,"line":5,"message":"rejected: license is not explicitly allowed","span":"GPL-3.0-only"}],"message":"failed to satisfy license requirements","notes":["GPL-3.0-only - GNU General Public License v3.0 only:","  - OSI approved","  - FSF Free/Libre"],"severity":"error"},"type":"diagnostic"}
{"fields":{"code":"license-not-encountered","labels":[{"column":6,"line":25,"message":"unmatched license allowance","span":"BSD-3-Clause"}],"message":"license was not encountered","severity":"warning"},"type":"diagnostic"}
{"fields":{"code":"vulnerability","graphs":[{"Krate":{"name":"humantime","version":"2.4.0"}}],"labels":[{"column":1,"line":53,"message":"security vulnerability detected","span":"humantime 2.4.0 registry+https://github.com/rust-lang/crates.io-index"}],"message":"Fixture advisory","advisory":{"id":"RUSTSEC-2099-0001","title":"Fixture advisory: durations that never finish parsing"},"notes":["ID: RUSTSEC-2099-0001","Solution: Upgrade to >=99.0.0"],"severity":"error"},"type":"diagnostic"}
{"fields":{"bans":{"errors":1,"helps":0,"notes":0,"warnings":0},"licenses":{"errors":1,"helps":2,"notes":0,"warnings":1},"sources":{"errors":0,"helps":0,"notes":0,"warnings":0}},"type":"summary"}
"#;

    #[test]
    fn json_lines_become_findings_and_a_summary() {
        let out = parse(FIXTURE_OUTPUT);
        assert_eq!(out.diagnostics.len(), 4);
        assert_eq!(out.summary.as_ref().unwrap()["bans"], 1);
        assert!(out.fatal().is_none());
        assert_eq!(advisory_ids(&out), ["RUSTSEC-2099-0001"]);

        let root = Path::new("/repo");
        let locator = Locator {
            root,
            config: Path::new("/repo/deny.toml"),
            lock_path: PathBuf::from("/repo/Cargo.lock"),
            lock: "[[package]]\nname = \"humantime\"\nversion = \"2.4.0\"\n".into(),
            locals: BTreeMap::from([
                (
                    "deny-violations".into(),
                    PathBuf::from("/repo/fx/Cargo.toml"),
                ),
                (
                    "gpl-helper".into(),
                    PathBuf::from("/repo/fx/gpl/Cargo.toml"),
                ),
            ]),
        };
        let findings: Vec<Finding> = out
            .diagnostics
            .iter()
            .filter_map(|d| to_finding(d, &locator))
            .collect();
        let summary: Vec<(String, Severity, String)> = findings
            .iter()
            .map(|f| {
                (
                    f.id.clone(),
                    f.severity,
                    f.location.as_ref().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "bans/wildcard".into(),
                    Severity::High,
                    "fx/Cargo.toml:13".into()
                ),
                (
                    "licenses/rejected".into(),
                    Severity::High,
                    "fx/gpl/Cargo.toml:5".into()
                ),
                (
                    "licenses/license-not-encountered".into(),
                    Severity::Medium,
                    "deny.toml:25".into()
                ),
                (
                    "advisories/RUSTSEC-2099-0001".into(),
                    Severity::High,
                    "Cargo.lock:2".into()
                ),
            ]
        );
        assert!(
            findings[1].title.contains("GPL-3.0-only"),
            "{}",
            findings[1].title
        );
        assert_eq!(
            findings[3].help.as_deref(),
            Some("Solution: Upgrade to >=99.0.0")
        );
    }

    #[test]
    fn a_run_without_summary_is_fatal_with_its_reason() {
        let out = parse(
            r#"{"fields":{"level":"ERROR","message":"failed to fetch database: failed to clone\nfatal: unable to access 'https://github.com/RustSec/advisory-db/': Could not resolve host: github.com\n","timestamp":"2026-11-27T11:18:32Z"},"type":"log"}"#,
        );
        let error = out.fatal().unwrap();
        assert!(is_missing_database(&error));
        assert_eq!(
            short_reason(&error),
            "unable to access 'https://github.com/RustSec/advisory-db/': Could not resolve host: github.com"
        );
    }
}

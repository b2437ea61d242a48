//! What every scanner reports, in one shape: findings with a severity and a place, grouped by
//! target and scanner. The summary table, the GitHub annotations and step summary, and the
//! SARIF files code scanning reads (`sarif`) are all made from these.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::ctx::Ctx;
use crate::util::table;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    Unknown,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// Highest first, as tables show them.
    pub const DESCENDING: [Severity; 5] = [
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low,
        Severity::Unknown,
    ];

    /// Trivy's names (`CRITICAL`, `high`); anything else is `Unknown`.
    pub fn parse(name: &str) -> Self {
        match name.to_ascii_uppercase().as_str() {
            "CRITICAL" => Self::Critical,
            "HIGH" => Self::High,
            "MEDIUM" => Self::Medium,
            "LOW" => Self::Low,
            _ => Self::Unknown,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Critical => "CRITICAL",
            Self::High => "HIGH",
            Self::Medium => "MEDIUM",
            Self::Low => "LOW",
            Self::Unknown => "UNKNOWN",
        }
    }
}

/// A place in the repository (or in the file a scanner was pointed at).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Location {
    /// Relative to the workspace root when inside it.
    pub file: String,
    pub line: Option<u32>,
}

impl Location {
    pub fn new(ctx_root: &Path, file: &Path, line: Option<u32>) -> Self {
        let file = file
            .strip_prefix(ctx_root)
            .unwrap_or(file)
            .to_string_lossy()
            .into_owned();
        Self { file, line }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}", self.file),
            None => f.write_str(&self.file),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    /// The rule or advisory: `CVE-2024-45491`, `DS-0002`, `github-pat`, `RUSTSEC-…`.
    pub id: String,
    pub severity: Severity,
    /// One line: what is wrong.
    pub title: String,
    /// What it is in: a package and version, a service, a crate.
    pub subject: String,
    /// What to do about it, when the scanner says.
    pub help: Option<String>,
    pub location: Option<Location>,
}

/// The outcome of one scanner on one target.
#[derive(Clone, Debug, Serialize)]
pub struct ScanResult {
    /// What was scanned: an image, the repository, a file.
    pub target: String,
    /// What scanned it: `trivy image`, `hadolint`, `cargo-deny`, `compose rule`.
    pub scanner: String,
    pub findings: Vec<Finding>,
    /// Findings an ignore entry hid (still in the JSON reports).
    pub suppressed: usize,
    /// The scanner could not run at all: the reason (fails the scan).
    pub error: Option<String>,
    /// A part that did not run for want of a database: said plainly, and failing only when
    /// that part was required (`--require-vuln-db`, `--require-advisories`).
    pub skipped: Vec<Skipped>,
    /// Anything else worth saying (a database that could not be updated, say).
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Skipped {
    pub what: String,
    pub why: String,
    pub required: bool,
}

impl ScanResult {
    pub fn new(target: impl Into<String>, scanner: impl Into<String>) -> Self {
        Self {
            target: target.into(),
            scanner: scanner.into(),
            findings: Vec::new(),
            suppressed: 0,
            error: None,
            skipped: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn failed(target: impl Into<String>, scanner: impl Into<String>, error: String) -> Self {
        let mut result = Self::new(target, scanner);
        result.error = Some(error);
        result
    }

    pub fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == severity)
            .count()
    }

    /// The findings the policy blocks on.
    pub fn blocking<'a>(&'a self, policy: &'a Policy) -> impl Iterator<Item = &'a Finding> {
        self.findings.iter().filter(|f| policy.blocks(f.severity))
    }

    pub fn passed(&self, policy: &Policy) -> bool {
        self.error.is_none()
            && self.blocking(policy).next().is_none()
            && !self.skipped.iter().any(|s| s.required)
    }

    /// The table's last column.
    fn verdict(&self, policy: &Policy) -> String {
        if let Some(error) = &self.error {
            return format!("✗ error: {}", first_line(error));
        }
        let blocking = self.blocking(policy).count();
        let mut words = vec![
            if blocking > 0 && policy.failing.len() == Severity::DESCENDING.len() {
                format!(
                    "✗ fail ({blocking} finding{})",
                    if blocking == 1 { "" } else { "s" }
                )
            } else if blocking > 0 {
                format!("✗ fail ({blocking} at {} or above)", policy.lowest_name())
            } else if self.skipped.iter().any(|s| s.required) {
                "✗ fail (required check skipped)".to_owned()
            } else {
                "✓ pass".to_owned()
            },
        ];
        if self.suppressed > 0 {
            words.push(format!("{} ignored", self.suppressed));
        }
        for skipped in &self.skipped {
            words.push(format!("{} not checked", skipped.what));
        }
        words.join("; ")
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// Which severities fail a scan: trivy.yaml's `severity` list, for every scanner alike.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub failing: BTreeSet<Severity>,
}

impl Policy {
    pub const FILE: &'static str = "trivy.yaml";

    /// Reads `severity:` from trivy.yaml at the workspace root.
    pub fn load(root: &Path) -> Result<Self> {
        let path = root.join(Self::FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("{} is invalid", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self> {
        let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(text)?;
        let names: Vec<String> = match yaml.get("severity") {
            Some(serde_yaml_ng::Value::Sequence(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            Some(serde_yaml_ng::Value::String(list)) => {
                list.split(',').map(|s| s.trim().to_owned()).collect()
            }
            _ => bail!("it needs a `severity:` list: the severities that fail a scan"),
        };
        let failing: BTreeSet<Severity> = names.iter().map(|n| Severity::parse(n)).collect();
        if failing.is_empty() {
            bail!("its `severity:` list is empty");
        }
        Ok(Self { failing })
    }

    pub fn blocks(&self, severity: Severity) -> bool {
        self.failing.contains(&severity)
    }

    fn lowest_name(&self) -> &'static str {
        self.failing
            .iter()
            .next()
            .copied()
            .unwrap_or(Severity::High)
            .name()
    }
}

const HEADERS: [&str; 8] = [
    "TARGET", "SCANNER", "CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN", "RESULT",
];

fn rows(results: &[ScanResult], policy: &Policy) -> Vec<Vec<String>> {
    results
        .iter()
        .map(|r| {
            let mut row = vec![r.target.clone(), r.scanner.clone()];
            row.extend(Severity::DESCENDING.iter().map(|s| {
                if r.error.is_some() {
                    "-".to_owned()
                } else {
                    r.count(*s).to_string()
                }
            }));
            row.push(r.verdict(policy));
            row
        })
        .collect()
}

/// The summary table: one row per target and scanner, counts by severity, pass or fail.
pub fn summary_table(results: &[ScanResult], policy: &Policy) -> String {
    table::text(&HEADERS, &rows(results, policy))
}

/// The blocking findings, one line each, with where and what to do.
pub fn blocking_details(results: &[ScanResult], policy: &Policy) -> String {
    let mut lines = Vec::new();
    for result in results {
        for f in result.blocking(policy) {
            let place = f
                .location
                .as_ref()
                .map(|l| format!(" at {l}"))
                .unwrap_or_default();
            let help = f
                .help
                .as_ref()
                .map(|h| format!(": {h}"))
                .unwrap_or_default();
            lines.push(format!(
                "{} {} {} in {} ({}, {}){place}{help}",
                f.severity.name(),
                f.id,
                f.title,
                f.subject,
                result.target,
                result.scanner
            ));
        }
    }
    lines.join("\n")
}

/// Prints the summary to stdout, annotates blocking findings under GitHub Actions and adds the
/// table to the step summary. Fails naming what failed, so the exit code is non-zero.
///
/// `next` says what to do when it fails.
pub fn report(
    ctx: &Ctx,
    title: &str,
    results: &[ScanResult],
    policy: &Policy,
    next: &str,
) -> Result<()> {
    println!("{}", summary_table(results, policy));
    let details = blocking_details(results, policy);
    if !details.is_empty() {
        if policy.failing.len() == Severity::DESCENDING.len() {
            println!("\nfindings:\n{details}");
        } else {
            println!(
                "\nfindings at {} or above:\n{details}",
                policy.lowest_name()
            );
        }
    }
    let mut notes: Vec<String> = Vec::new();
    for r in results {
        for s in &r.skipped {
            let consequence = if s.required {
                "required: this fails the scan"
            } else {
                "not required here"
            };
            notes.push(format!(
                "{} ({}): {} not checked: {} ({consequence})",
                r.target, r.scanner, s.what, s.why
            ));
        }
        notes.extend(
            r.notes
                .iter()
                .map(|n| format!("{} ({}): {n}", r.target, r.scanner)),
        );
        if let Some(error) = &r.error {
            notes.push(format!("{} ({}): {error}", r.target, r.scanner));
        }
    }
    if !notes.is_empty() {
        println!("\n{}", notes.join("\n"));
    }
    for r in results {
        for f in r.blocking(policy) {
            let location = f.location.as_ref();
            ctx.reporter.annotate(
                true,
                location.map(|l| l.file.as_str()),
                location.and_then(|l| l.line),
                &format!("{} {}", f.severity.name(), f.id),
                &format!("{} ({}; {}, {})", f.title, f.subject, r.target, r.scanner),
            );
        }
        if let Some(error) = &r.error {
            ctx.reporter.annotate(
                true,
                None,
                None,
                &format!("{} ({})", r.target, r.scanner),
                first_line(error),
            );
        }
    }
    let mut md = format!(
        "### {title}\n\n{}",
        table::markdown(&HEADERS, &rows(results, policy))
    );
    if !notes.is_empty() {
        md.push('\n');
        for note in &notes {
            md.push_str(&format!("- {note}\n"));
        }
    }
    ctx.reporter.summary(&md);
    match closing_line(title, results, policy, next) {
        Some(line) => bail!("{line}"),
        None => Ok(()),
    }
}

/// The error a failed run ends with, `None` when it passed. `next` (how to fix or accept
/// findings) is given only when findings are to blame: a target that could not be scanned at
/// all (an image not built, a tool that failed) is told apart, with its own next step.
pub fn closing_line(
    title: &str,
    results: &[ScanResult],
    policy: &Policy,
    next: &str,
) -> Option<String> {
    let name = |r: &ScanResult| format!("{} ({})", r.target, r.scanner);
    let failed: Vec<String> = results
        .iter()
        .filter(|r| !r.passed(policy))
        .map(name)
        .collect();
    if failed.is_empty() {
        return None;
    }
    let with_findings = results.iter().any(|r| r.blocking(policy).next().is_some());
    let not_scanned: Vec<String> = results
        .iter()
        .filter(|r| r.error.is_some())
        .map(name)
        .collect();
    let missing_database = results.iter().any(|r| r.skipped.iter().any(|s| s.required));
    let mut steps = Vec::new();
    if with_findings {
        steps.push(format!("{next}."));
    }
    if !not_scanned.is_empty() {
        steps.push(format!(
            "{} could not be scanned, which no finding caused: fix what the error above says \
             and run again.",
            not_scanned.join(", ")
        ));
    }
    if missing_database {
        steps.push(
            "A database this run requires could not be had (see above): run where it can be \
             downloaded."
                .to_owned(),
        );
    }
    Some(format!(
        "{title} failed: {}. {}",
        failed.join(", "),
        steps.join(" ")
    ))
}

/// A finding for tests: an upgradable package.
#[cfg(test)]
impl Finding {
    pub fn example(id: &str, severity: Severity) -> Self {
        Self {
            id: id.into(),
            severity,
            title: format!("{id} title"),
            subject: "pkg 1.0".into(),
            help: Some("upgrade to 1.1".into()),
            location: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_closing_line_advises_on_findings_only_when_findings_failed() {
        let policy = policy();
        let next = "Fix the findings above, or add them to .trivyignore.yaml";
        let not_built = ScanResult::failed(
            "api:1.0",
            "trivy image",
            "api:1.0 is not built: run `cargo xtask images` first".into(),
        );
        let mut found = ScanResult::new("repository", "trivy fs");
        found.findings.push(finding("CVE-1", Severity::High));
        let clean = ScanResult::new("compose.yml", "compose rule");

        let line =
            closing_line("scan", &[not_built.clone(), clean.clone()], &policy, next).unwrap();
        assert!(
            !line.contains("findings above") && !line.contains(".trivyignore"),
            "{line}"
        );
        assert!(
            line.contains("api:1.0 (trivy image) could not be scanned"),
            "{line}"
        );

        let line = closing_line("scan", &[found.clone(), not_built], &policy, next).unwrap();
        assert!(
            line.contains(next) && line.contains("could not be scanned"),
            "{line}"
        );

        let line = closing_line("scan", &[found, clean.clone()], &policy, next).unwrap();
        assert!(
            line.contains(next) && !line.contains("could not be scanned"),
            "{line}"
        );

        assert_eq!(closing_line("scan", &[clean], &policy, next), None);
    }

    fn finding(id: &str, severity: Severity) -> Finding {
        Finding::example(id, severity)
    }

    fn policy() -> Policy {
        Policy::parse("severity: [HIGH, CRITICAL]\n").unwrap()
    }

    #[test]
    fn the_policy_comes_from_trivy_yaml() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let policy = Policy::load(root).unwrap();
        assert_eq!(
            policy.failing,
            BTreeSet::from([Severity::High, Severity::Critical])
        );
        assert!(Policy::parse("severity: HIGH,CRITICAL\n")
            .unwrap()
            .blocks(Severity::High));
        assert!(Policy::parse("exit-code: 1\n").is_err());
    }

    #[test]
    fn only_findings_at_the_policy_severities_fail() {
        let policy = policy();
        let mut result = ScanResult::new("image", "trivy image");
        result.findings = vec![
            finding("LOW-1", Severity::Low),
            finding("MED-1", Severity::Medium),
        ];
        assert!(result.passed(&policy));
        result.findings.push(finding("CVE-1", Severity::High));
        assert!(!result.passed(&policy));
        let table = summary_table(&[result], &policy);
        let row = table.lines().nth(1).unwrap();
        assert!(row.starts_with("image"), "{table}");
        assert!(row.contains("✗ fail (1 at HIGH or above)"), "{table}");
    }

    #[test]
    fn a_skipped_part_fails_only_when_required() {
        let policy = policy();
        let mut result = ScanResult::new("repository", "trivy fs");
        result.skipped.push(Skipped {
            what: "vulnerabilities".into(),
            why: "no database".into(),
            required: false,
        });
        assert!(result.passed(&policy));
        assert!(result
            .verdict(&policy)
            .contains("vulnerabilities not checked"));
        result.skipped[0].required = true;
        assert!(!result.passed(&policy));
    }
}

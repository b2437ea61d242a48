//! Trivy: images (saved with `docker save`, scanned with `--input`: the OCI layout the archive
//! holds, see `oci_layout`), the repository (secrets, licences) and its configuration files
//! (Dockerfiles, manifests), with the policy in `trivy.yaml` and the ignores in
//! `.trivyignore.yaml`.
//!
//! The vulnerability database is downloaded once per run, before any scan; every scan then
//! runs with `--skip-db-update`. Where it cannot be downloaded, a local copy is used if there
//! is one, else vulnerabilities are not checked and the results say so. Misconfiguration
//! checks are the ones bundled with the pinned Trivy (`--skip-check-update`), so a scan gives
//! the same answer online and offline.
//!
//! Trivy instances sharing a cache directory lock each other out, so callers run them one at a
//! time.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_yaml_ng::Value as Yaml;

use super::findings::{Finding, Location, ScanResult, Severity, Skipped};
use crate::ctx::Ctx;
use crate::runner::Step;

pub const IGNORE_FILE: &str = ".trivyignore.yaml";
const ALL_SEVERITIES: &str = "UNKNOWN,LOW,MEDIUM,HIGH,CRITICAL";

/// The vulnerability database, as this run found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VulnDb {
    /// Downloaded or updated just now.
    Fresh,
    /// Could not be updated; an older local copy is used.
    Stale { why: String, updated: String },
    /// Could not be downloaded and there is no local copy: vulnerabilities are not checked.
    Missing { why: String },
}

pub struct Trivy {
    pub path: PathBuf,
    pub cache_dir: PathBuf,
    /// trivy.yaml: severities, skipped folders.
    pub config: PathBuf,
    pub ignore_file: PathBuf,
    pub vuln_db: VulnDb,
    /// `--require-vuln-db`: a missing database fails the results that needed it.
    pub require_vuln_db: bool,
    /// What the ignore file check had to say (expired entries).
    pub ignore_notes: Vec<String>,
}

impl Trivy {
    /// Installs Trivy if need be, checks the ignore file, and gets the vulnerability database.
    pub fn prepare(ctx: &Ctx, require_vuln_db: bool) -> Result<Self> {
        let mut trivy = Self::prepare_without_db(ctx)?;
        trivy.require_vuln_db = require_vuln_db;
        trivy.vuln_db = trivy.update_db(ctx)?;
        Ok(trivy)
    }

    /// As [`Trivy::prepare`], without the vulnerability database: for the secret scans alone.
    pub fn prepare_without_db(ctx: &Ctx) -> Result<Self> {
        let path = crate::deps::tools::path(ctx, "trivy")?;
        let ignore_file = ctx.root.join(IGNORE_FILE);
        let ignore_notes = check_ignore_file(&ignore_file, &today())?;
        let cache_dir = ctx.cache_dir.join("trivy");
        Ok(Self {
            path,
            cache_dir,
            config: ctx.root.join("trivy.yaml"),
            ignore_file,
            vuln_db: VulnDb::Missing {
                why: "not downloaded for this scan".into(),
            },
            require_vuln_db: false,
            ignore_notes,
        })
    }

    fn step(&self, subcommand: &str) -> Step {
        Step::new(self.path.to_string_lossy())
            .arg(subcommand)
            .arg("--cache-dir")
            .arg(&self.cache_dir)
    }

    fn update_db(&self, ctx: &Ctx) -> Result<VulnDb> {
        let step = self
            .step("image")
            .args(["--download-db-only", "--no-progress"]);
        let title = "Trivy vulnerability database";
        let task = ctx.reporter.task(title);
        let Some(out) = ctx.runner.run_unchecked(&step)? else {
            task.done("planned");
            return Ok(VulnDb::Fresh);
        };
        if out.status.success() {
            task.done("up to date");
            return Ok(VulnDb::Fresh);
        }
        let why = fatal_reason(&String::from_utf8_lossy(&out.stderr));
        let metadata = self.cache_dir.join("db/metadata.json");
        let state = match std::fs::read_to_string(&metadata) {
            Ok(text) => {
                let updated = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|m| m["UpdatedAt"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| "an unknown date".into());
                VulnDb::Stale { why, updated }
            }
            Err(_) => VulnDb::Missing { why },
        };
        match &state {
            VulnDb::Stale { updated, .. } => {
                task.done(format!("cannot update: using the copy of {updated}"))
            }
            _ => task.fail("cannot download: vulnerabilities will not be checked"),
        }
        Ok(state)
    }

    /// `--scanners` for a target: `vuln` only when there is a database.
    fn scanners(&self, others: &[&str]) -> String {
        let mut scanners: Vec<&str> = others.to_vec();
        if self.has_db() {
            scanners.insert(0, "vuln");
        }
        scanners.join(",")
    }

    fn has_db(&self) -> bool {
        !matches!(self.vuln_db, VulnDb::Missing { .. })
    }

    /// Notes and skips the database adds to a result that scans for vulnerabilities.
    fn record_db(&self, result: &mut ScanResult) {
        match &self.vuln_db {
            VulnDb::Fresh => {}
            VulnDb::Stale { why, updated } => result.notes.push(format!(
                "the vulnerability database could not be updated ({why}): checked against the \
                 copy of {updated}"
            )),
            VulnDb::Missing { why } => result.skipped.push(Skipped {
                what: "vulnerabilities".into(),
                why: format!("Trivy's vulnerability database could not be downloaded ({why})"),
                required: self.require_vuln_db,
            }),
        }
    }

    /// The arguments every scan shares: `config`, the ignore file, every severity, a JSON
    /// report at `json`.
    fn common(&self, step: Step, config: &Path, json: &Path) -> Step {
        step.arg("--config")
            .arg(config)
            .arg("--ignorefile")
            .arg(&self.ignore_file)
            .args(["--severity", ALL_SEVERITIES, "--exit-code", "0"])
            .args(["--format", "json", "--quiet", "--skip-check-update"])
            .arg("--output")
            .arg(json)
    }

    /// Runs a scan that writes its JSON report to `json`; fails on a Trivy error.
    fn run(&self, ctx: &Ctx, step: &Step, json: &Path) -> Result<Option<Report>> {
        if let Some(dir) = json.parent() {
            ctx.runner.create_dir(dir)?;
        }
        let Some(out) = ctx.runner.run_unchecked(step)? else {
            return Ok(None);
        };
        if !out.status.success() {
            bail!(
                "trivy failed ({}): {}",
                out.status,
                fatal_reason(&String::from_utf8_lossy(&out.stderr))
            );
        }
        let text = std::fs::read_to_string(json)
            .with_context(|| format!("trivy wrote no report to {}", json.display()))?;
        Ok(Some(serde_json::from_str(&text).with_context(|| {
            format!("{} is not a Trivy JSON report", json.display())
        })?))
    }

    /// `trivy image --input`: vulnerabilities (with a database) and secrets of a saved image.
    /// Fails when Trivy's report names another image configuration than `input`'s.
    pub fn image(
        &self,
        ctx: &Ctx,
        image: &str,
        input: &ImageInput,
        json: &Path,
    ) -> Result<ScanResult> {
        let mut result = ScanResult::new(image, "trivy image");
        let step = self
            .common(self.step("image"), &self.config, json)
            .arg("--input")
            .arg(input.argument())
            .args(["--scanners", &self.scanners(&["secret"])])
            .args([
                "--skip-db-update",
                "--skip-java-db-update",
                "--offline-scan",
            ])
            .arg("--show-suppressed");
        self.record_db(&mut result);
        if let Some(report) = self.run(ctx, &step, json)? {
            input.check(&report)?;
            report.into_result(&ctx.root, None, &mut result);
        }
        Ok(result)
    }

    /// `trivy fs DIR`: licences (and vulnerabilities of the lock files, with a database);
    /// secrets are [`Trivy::secrets`]'s. Paths in findings are relative to `dir`.
    pub fn fs(&self, ctx: &Ctx, dir: &Path, json: &Path) -> Result<ScanResult> {
        let mut result = ScanResult::new(ctx.show(dir), "trivy fs");
        let step = self
            .common(self.step("fs"), &self.config, json)
            .args(["--scanners", &self.scanners(&["license"])])
            .args([
                "--skip-db-update",
                "--skip-java-db-update",
                "--offline-scan",
            ])
            .arg("--show-suppressed")
            .arg(".")
            .cwd(dir);
        self.record_db(&mut result);
        if let Some(report) = self.run(ctx, &step, json)? {
            report.into_result(&ctx.root, Some(dir), &mut result);
        }
        Ok(result)
    }

    /// `trivy fs --scanners secret` on `tree`, a folder of files staged to be scanned whole
    /// (trivy.yaml's skipped folders do not apply), with the secret configuration
    /// `secret_config`. Paths in findings are relative to `tree`.
    pub fn secrets(
        &self,
        ctx: &Ctx,
        tree: &Path,
        target: &str,
        secret_config: &Path,
        json: &Path,
    ) -> Result<ScanResult> {
        let mut result = ScanResult::new(target, "trivy secrets");
        // Not trivy.yaml (nor the copy of it in `tree`, which Trivy would read from there).
        let config = tree.with_extension("trivy.yaml");
        ctx.runner.write_file(
            &config,
            "# The secret scan of staged files: nothing skipped.\nexit-code: 0\n",
        )?;
        let step = self
            .common(self.step("fs"), &config, json)
            .args(["--scanners", "secret", "--secret-config"])
            .arg(secret_config)
            .args(["--offline-scan", "--show-suppressed", "."])
            .cwd(tree);
        if let Some(report) = self.run(ctx, &step, json)? {
            report.into_result(tree, Some(tree), &mut result);
        }
        Ok(result)
    }

    /// `trivy config DIR`: misconfigurations of Dockerfiles and any manifests under `dir`.
    pub fn config(&self, ctx: &Ctx, dir: &Path, json: &Path) -> Result<ScanResult> {
        let mut result = ScanResult::new(ctx.show(dir), "trivy config");
        let step = self
            .common(self.step("config"), &self.config, json)
            .arg(".")
            .cwd(dir);
        if let Some(report) = self.run(ctx, &step, json)? {
            report.into_result(&ctx.root, Some(dir), &mut result);
        }
        Ok(result)
    }

    /// `trivy convert --format sarif`: the SARIF log of a JSON report, for code scanning.
    pub fn sarif(&self, ctx: &Ctx, json: &Path, sarif: &Path) -> Result<()> {
        // Run where no trivy.yaml is read: the SARIF keeps every severity.
        let dir = json.parent().unwrap_or(Path::new("."));
        if let Some(out_dir) = sarif.parent() {
            ctx.runner.create_dir(out_dir)?;
        }
        let step = Step::new(self.path.to_string_lossy())
            .args(["convert", "--format", "sarif", "--quiet", "--output"])
            .arg(sarif)
            .arg(json)
            .cwd(dir);
        ctx.runner.run(&step)?;
        Ok(())
    }

    /// A CycloneDX SBOM of an image archive or a directory.
    pub fn sbom(&self, ctx: &Ctx, input: SbomInput, out: &Path) -> Result<()> {
        if let Some(dir) = out.parent() {
            ctx.runner.create_dir(dir)?;
        }
        let step = match input {
            SbomInput::Image(input) => self.step("image").arg("--input").arg(input.argument()),
            SbomInput::Dir(dir) => self.step("fs").arg(".").cwd(dir),
        };
        let step = step
            .arg("--config")
            .arg(&self.config)
            .args(["--format", "cyclonedx", "--quiet", "--offline-scan"])
            .arg("--output")
            .arg(out);
        ctx.runner.run(&step)?;
        Ok(())
    }
}

pub enum SbomInput<'a> {
    Image(&'a ImageInput),
    Dir(&'a Path),
}

/// What `trivy image --input` reads of a saved image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInput {
    /// A `docker save` archive, or the OCI layout unpacked from one.
    pub path: PathBuf,
    /// In a layout, the digest of the manifest to scan: Trivy picks it from the layout's
    /// index by digest (`DIR@sha256:...`), and fails when the index has no such manifest.
    pub manifest: Option<String>,
    /// The digest of the configuration of the image meant to be scanned, when known (not
    /// under `--dry-run`): Trivy's report must name it as the image it scanned.
    pub config: Option<String>,
}

impl ImageInput {
    fn argument(&self) -> OsString {
        let mut argument = self.path.clone().into_os_string();
        if let Some(manifest) = &self.manifest {
            argument.push("@");
            argument.push(manifest);
        }
        argument
    }

    /// Fails when the report is of another image than the one meant.
    fn check(&self, report: &Report) -> Result<()> {
        let (Some(meant), scanned) = (&self.config, &report.metadata.image_id) else {
            return Ok(());
        };
        if scanned.as_deref() != Some(meant.as_str()) {
            bail!(
                "Trivy scanned image configuration {}, not {meant}, the saved image's",
                scanned.as_deref().unwrap_or("(none named)")
            );
        }
        Ok(())
    }
}

/// The reason a Trivy run stopped: its FATAL line without the timestamp.
fn fatal_reason(stderr: &str) -> String {
    // A network failure says it best ("dial tcp: lookup mirror.gcr.io ...: no such host"),
    // on a line of its own under the FATAL one.
    if let Some(i) = stderr.find("dial tcp") {
        return stderr[i..].lines().next().unwrap_or("").trim().to_owned();
    }
    let line = stderr
        .lines()
        .find(|l| l.contains("FATAL"))
        .or_else(|| stderr.lines().rev().find(|l| !l.trim().is_empty()))
        .unwrap_or("no output");
    line.split_once("Fatal error")
        .map_or(line, |(_, r)| r)
        .trim()
        .to_owned()
}

fn today() -> String {
    humantime::format_rfc3339(std::time::SystemTime::now()).to_string()[..10].to_owned()
}

/// Checks `.trivyignore.yaml`: every entry needs an `expired_at` date and a `statement` (why
/// it is safe to ignore). Returns a note for each expired entry: Trivy no longer applies it,
/// so its finding is back.
pub fn check_ignore_file(path: &Path, today: &str) -> Result<Vec<String>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(Vec::new());
    };
    let shown = path.file_name().map_or(path.display().to_string(), |n| {
        n.to_string_lossy().into_owned()
    });
    let doc: Yaml =
        serde_yaml_ng::from_str(&text).with_context(|| format!("{shown} is not valid YAML"))?;
    let mut notes = Vec::new();
    let Some(map) = doc.as_mapping() else {
        return Ok(notes);
    };
    for (kind, entries) in map {
        let kind = kind.as_str().unwrap_or("?");
        if ![
            "vulnerabilities",
            "misconfigurations",
            "secrets",
            "licenses",
        ]
        .contains(&kind)
        {
            bail!("{shown}: unknown section `{kind}` (vulnerabilities, misconfigurations, secrets or licenses)");
        }
        for entry in entries.as_sequence().into_iter().flatten() {
            let field = |k: &str| {
                entry.get(k).and_then(|v| match v {
                    Yaml::String(s) => Some(s.trim().to_owned()),
                    Yaml::Number(n) => Some(n.to_string()),
                    _ => None,
                })
            };
            let id = field("id").unwrap_or_else(|| "an entry".into());
            let Some(expires) = field("expired_at").filter(|d| is_date(d)) else {
                bail!("{shown}: {kind} {id} needs `expired_at: YYYY-MM-DD`: no finding is ignored forever");
            };
            if field("statement").is_none_or(|s| s.is_empty()) {
                bail!("{shown}: {kind} {id} needs a `statement`: why it is safe to ignore");
            }
            if expires.as_str() <= today {
                notes.push(format!(
                    "{shown}: {kind} {id} expired on {expires}: it no longer hides its finding \
                     (fix it, or renew the entry with a new date and reason)"
                ));
            }
        }
    }
    Ok(notes)
}

fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

/// Trivy's JSON report (schema version 2), the parts the summary needs.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Report {
    #[serde(default)]
    pub results: Vec<TargetResult>,
    #[serde(default)]
    pub metadata: Metadata,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Metadata {
    /// For an image: the digest of the configuration Trivy read.
    #[serde(rename = "ImageID")]
    pub image_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TargetResult {
    pub target: String,
    #[serde(default)]
    pub vulnerabilities: Vec<Vulnerability>,
    #[serde(default)]
    pub misconfigurations: Vec<Misconfiguration>,
    #[serde(default)]
    pub secrets: Vec<Secret>,
    #[serde(default)]
    pub licenses: Vec<License>,
    #[serde(default, rename = "ExperimentalModifiedFindings")]
    pub modified_findings: Vec<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Vulnerability {
    #[serde(rename = "VulnerabilityID")]
    pub vulnerability_id: String,
    pub pkg_name: String,
    #[serde(default)]
    pub installed_version: String,
    pub fixed_version: Option<String>,
    pub status: Option<String>,
    pub severity: String,
    pub title: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Misconfiguration {
    #[serde(rename = "ID")]
    pub id: String,
    pub title: String,
    #[serde(default)]
    pub message: String,
    pub resolution: Option<String>,
    pub severity: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub cause_metadata: CauseMetadata,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CauseMetadata {
    pub start_line: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Secret {
    #[serde(rename = "RuleID")]
    pub rule_id: String,
    pub title: String,
    pub severity: String,
    pub start_line: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct License {
    pub name: String,
    pub severity: String,
    #[serde(default)]
    pub category: String,
    #[serde(default)]
    pub pkg_name: String,
    #[serde(default)]
    pub file_path: String,
}

impl Report {
    /// The findings, located in the repository when the scan was of a directory in it.
    pub fn findings(&self, root: &Path, dir: Option<&Path>) -> Vec<Finding> {
        let place =
            |file: &str, line: Option<u32>| dir.map(|d| Location::new(root, &d.join(file), line));
        let mut findings = Vec::new();
        for r in &self.results {
            for v in &r.vulnerabilities {
                let help = match (&v.fixed_version, v.status.as_deref()) {
                    (Some(fixed), _) if !fixed.is_empty() => format!("upgrade to {fixed}"),
                    (_, Some(status)) => format!("no fixed version ({})", status.replace('_', " ")),
                    _ => "no fixed version".to_owned(),
                };
                findings.push(Finding {
                    id: v.vulnerability_id.clone(),
                    severity: Severity::parse(&v.severity),
                    title: v
                        .title
                        .clone()
                        .unwrap_or_else(|| v.vulnerability_id.clone()),
                    subject: format!("{} {} ({})", v.pkg_name, v.installed_version, r.target),
                    help: Some(help),
                    location: place(&r.target, None),
                });
            }
            for m in r.misconfigurations.iter().filter(|m| m.status == "FAIL") {
                findings.push(Finding {
                    id: m.id.clone(),
                    severity: Severity::parse(&m.severity),
                    title: if m.message.is_empty() {
                        m.title.clone()
                    } else {
                        format!("{}: {}", m.title, m.message)
                    },
                    subject: r.target.clone(),
                    help: m.resolution.clone(),
                    location: place(&r.target, m.cause_metadata.start_line),
                });
            }
            for s in &r.secrets {
                // Never the matched text: it is the secret.
                findings.push(Finding {
                    id: s.rule_id.clone(),
                    severity: Severity::parse(&s.severity),
                    title: s.title.clone(),
                    subject: r.target.clone(),
                    help: Some("remove it from the tree and rotate it: it is compromised".into()),
                    location: place(&r.target, s.start_line),
                });
            }
            for l in &r.licenses {
                let file = if l.file_path.is_empty() {
                    &r.target
                } else {
                    &l.file_path
                };
                findings.push(Finding {
                    id: format!("license/{}", l.name),
                    severity: Severity::parse(&l.severity),
                    title: format!("licence {} ({})", l.name, l.category),
                    subject: if l.pkg_name.is_empty() {
                        file.clone()
                    } else {
                        l.pkg_name.clone()
                    },
                    help: None,
                    location: place(file, None),
                });
            }
        }
        findings
    }

    pub fn suppressed(&self) -> usize {
        self.results.iter().map(|r| r.modified_findings.len()).sum()
    }

    fn into_result(self, root: &Path, dir: Option<&Path>, result: &mut ScanResult) {
        result.findings = self.findings(root, dir);
        result.suppressed = self.suppressed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    #[test]
    fn an_image_report_with_vulnerabilities_is_read_as_findings() {
        let text = std::fs::read_to_string(fixture("trivy/image-report.json")).unwrap();
        let report: Report = serde_json::from_str(&text).unwrap();
        let findings = report.findings(Path::new("/repo"), None);
        let summary: Vec<(&str, Severity, &str)> = findings
            .iter()
            .map(|f| (f.id.as_str(), f.severity, f.help.as_deref().unwrap()))
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "CVE-2024-45491",
                    Severity::Critical,
                    "upgrade to 2.5.0-1+deb12u1"
                ),
                (
                    "CVE-2023-45853",
                    Severity::High,
                    "no fixed version (will not fix)"
                ),
                (
                    "CVE-2024-2236",
                    Severity::Medium,
                    "no fixed version (affected)"
                ),
                (
                    "CVE-2011-3374",
                    Severity::Low,
                    "no fixed version (affected)"
                ),
                ("CVE-2024-6345", Severity::High, "upgrade to 70.0.0"),
            ]
        );
        assert_eq!(
            findings[4].subject, "setuptools 65.5.0 (Python)",
            "the package, its version and where Trivy found it"
        );
        assert!(findings.iter().all(|f| f.location.is_none()));

        let mut result = ScanResult::new("ml-mlops/mlflow:1.0.0", "trivy image");
        report.into_result(Path::new("/repo"), None, &mut result);
        let policy =
            crate::scanners::findings::Policy::parse("severity: [HIGH, CRITICAL]").unwrap();
        assert_eq!(result.blocking(&policy).count(), 3);
        assert!(!result.passed(&policy));
    }

    #[test]
    fn ignore_entries_need_a_date_and_a_reason_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(IGNORE_FILE);
        let write = |text: &str| std::fs::write(&file, text).unwrap();

        write("vulnerabilities:\n  - id: CVE-1\n    statement: not reachable\n");
        let error = check_ignore_file(&file, "2026-11-27")
            .unwrap_err()
            .to_string();
        assert!(error.contains("CVE-1 needs `expired_at"), "{error}");

        write("secrets:\n  - id: github-pat\n    expired_at: 2027-01-01\n");
        let error = check_ignore_file(&file, "2026-11-27")
            .unwrap_err()
            .to_string();
        assert!(error.contains("github-pat needs a `statement`"), "{error}");

        write(
            "misconfigurations:\n  - id: DS-0002\n    expired_at: 2026-01-31\n    statement: x\n\
             \x20 - id: DS-0026\n    expired_at: 2027-01-31\n    statement: y\n",
        );
        let notes = check_ignore_file(&file, "2026-11-27").unwrap();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].contains("DS-0002 expired on 2026-01-31"),
            "{notes:?}"
        );

        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        check_ignore_file(&root.join(IGNORE_FILE), &today()).unwrap();
    }

    #[test]
    fn a_layout_is_scanned_by_its_manifest_and_the_report_must_name_the_meant_image() {
        let config = "sha256:6bb13e2f3af56c8575f9a06fda34c8db7280c86c03b7547aa3a8a5fcaf444551";
        let manifest = "sha256:ec301d4a644c65a93d651c2b5edf3965b12f04e984ffce8bbb4ae1ee3f2504aa";
        let layout = ImageInput {
            path: PathBuf::from("/t/images/mlflow.oci"),
            manifest: Some(manifest.into()),
            config: Some(config.into()),
        };
        assert_eq!(
            layout.argument(),
            OsString::from(format!("/t/images/mlflow.oci@{manifest}"))
        );
        let archive = ImageInput {
            path: PathBuf::from("/t/images/mlflow.tar"),
            manifest: None,
            config: None,
        };
        assert_eq!(archive.argument(), OsString::from("/t/images/mlflow.tar"));

        let report = |image_id: &str| -> Report {
            serde_json::from_str(&format!(r#"{{"Metadata":{{"ImageID":"{image_id}"}}}}"#)).unwrap()
        };
        layout.check(&report(config)).unwrap();
        let error = layout.check(&report(manifest)).unwrap_err().to_string();
        assert!(error.contains(&format!("not {config}")), "{error}");
        // Nothing meant (a dry run): nothing to compare.
        archive.check(&report(manifest)).unwrap();
        // The fixture report names its image.
        let text = std::fs::read_to_string(fixture("trivy/image-report.json")).unwrap();
        let fixture_report: Report = serde_json::from_str(&text).unwrap();
        assert!(fixture_report.metadata.image_id.is_some());
    }

    #[test]
    fn fatal_lines_are_shortened_to_their_reason() {
        let stderr = "2026-11-27T11:11:22Z\tINFO\t[vulndb] Downloading artifact...\n\
            2026-11-27T11:11:22Z\tFATAL\tFatal error\trun error: init error: DB error: OCI repository error: 1 error occurred:\n\
            \t* Get \"https://mirror.gcr.io/v2/\": dial tcp: lookup mirror.gcr.io on 10.0.0.53:53: no such host\n";
        assert_eq!(
            fatal_reason(stderr),
            "dial tcp: lookup mirror.gcr.io on 10.0.0.53:53: no such host"
        );
        assert_eq!(
            fatal_reason("x\tFATAL\tFatal error\tflag error: unknown flag: --nope\n"),
            "flag error: unknown flag: --nope"
        );
    }
}

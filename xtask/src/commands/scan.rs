//! `cargo xtask scan`: every scanner on everything we ship, with one summary table.
//!
//! - Trivy on each of the stack's images (`docker save`, then `trivy image --input` on the OCI
//!   layout the archive holds, checked to be the image's);
//! - `trivy fs` on the repository (secrets, licences; vulnerabilities with a database);
//! - `trivy config` on the Dockerfiles and any manifests;
//! - hadolint on the Dockerfiles;
//! - our compose rule on `compose/*.yml` (Trivy does not read compose files);
//! - cargo-deny on the workspace.
//!
//! Three lanes run in parallel: Trivy (one instance at a time: instances sharing a cache lock
//! each other out), cargo-deny, and the linters. JSON and SARIF reports go to
//! `target/xtask/reports/`; the exit code is non-zero when any finding at a severity
//! trivy.yaml lists remains, a scanner fails, or a required database is missing.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::build::engine::{self, ImageStore};
use crate::ctx::Ctx;
use crate::scanners::findings::{self, Policy, ScanResult};
use crate::scanners::trivy::Trivy;
use crate::scanners::{
    archived_image, cargo_deny, compose_rule, hadolint, image_input, remove_image_input,
    reports_dir, sarif, save_image, secrets, skip_dirs,
};

/// Scan the images, the repository and the Rust dependencies: HIGH and CRITICAL fail.
///
/// Trivy on each of the stack's images, `trivy fs` (secrets, licences) and `trivy config` on
/// the repository, hadolint on the Dockerfiles, a hardening rule on the compose files, and
/// cargo-deny. Findings at the severities trivy.yaml lists (HIGH, CRITICAL) fail the scan;
/// JSON and SARIF reports go to target/xtask/reports/.
///
/// Trivy's vulnerability database and RustSec's advisory database come from the internet:
/// without them the rest still runs and the report says what was not checked.
#[derive(clap::Args, Debug)]
pub struct Scan {
    /// Fail when vulnerabilities cannot be checked (no Trivy vulnerability database).
    #[arg(long)]
    pub require_vuln_db: bool,
    /// Fail when advisories cannot be checked (no RustSec advisory database).
    #[arg(long)]
    pub require_advisories: bool,
    /// Leave the stack's images out (they are built by `cargo xtask images`).
    #[arg(long)]
    pub skip_images: bool,
    /// Also scan for secrets every file version these commits added or changed (`git
    /// rev-list` arguments: `origin/main..HEAD` for what a push adds, a tag for all it holds),
    /// so a key committed and deleted later is found.
    #[arg(long, value_name = "REVS")]
    pub history: Option<String>,
    /// Only the secret scans (the tracked files, and `--history`): no images, licences,
    /// linters or cargo-deny, and no vulnerability database.
    #[arg(long, conflicts_with = "images_only")]
    pub secrets_only: bool,
    /// Only Trivy on the stack's images (what `release` scans): not the repository, the
    /// linters or cargo-deny.
    #[arg(long, conflicts_with_all = ["skip_images", "history"])]
    pub images_only: bool,
}

/// Trivy's secret scanner on a copy of every tracked file and, with `history`, on every file
/// version those commits added or changed (`trivy-secrets.yaml` says what may be fake).
fn secret_lane(ctx: &Ctx, trivy: &Trivy, reports: &Path, history: Option<&str>) -> Vec<ScanResult> {
    let staging = ctx.root.join("target/xtask/secrets");
    let config_path = ctx.root.join(secrets::CONFIG);
    let mut results = Vec::new();
    let prepared = (|| -> Result<secrets::Config> {
        ctx.runner.remove_path(&staging)?;
        ctx.runner.create_dir(&staging)?;
        let tracked = secrets::tracked_files(&ctx.runner, &ctx.root)?;
        let config = secrets::Config::load(&config_path, &tracked)?;
        let tree = staging.join("tracked");
        ctx.runner.plan(format!(
            "link the {} tracked files into {}",
            tracked.len(),
            ctx.show(&tree)
        ));
        if !ctx.dry_run() {
            secrets::stage_files(&ctx.runner, &ctx.root, &tracked, &tree)?;
        }
        Ok(config)
    })();
    let config = match prepared {
        Ok(config) => config,
        Err(e) => {
            results.push(ScanResult::failed(
                "tracked files",
                "trivy secrets",
                format!("{e:#}"),
            ));
            return results;
        }
    };
    results.push(unit(ctx, "tracked files", "trivy secrets", || {
        let json = reports.join("json/trivy-secrets.json");
        let result = trivy.secrets(
            ctx,
            &staging.join("tracked"),
            "tracked files",
            &config_path,
            &json,
        )?;
        // For code scanning, as the other Trivy scans.
        trivy.sarif(ctx, &json, &reports.join("sarif/trivy-secrets.sarif"))?;
        Ok(result)
    }));
    if let Some(revs) = history {
        let target = format!("history {revs}");
        let mut notes = Vec::new();
        let mut result = unit(ctx, &target, "trivy secrets", || {
            let tree = staging.join("history");
            let commits = secrets::commits(&ctx.runner, &ctx.root, revs)?;
            ctx.runner.plan(format!(
                "write what each of the {} commits added or changed into {}",
                commits.len(),
                ctx.show(&tree)
            ));
            let files = if ctx.dry_run() {
                0
            } else {
                std::fs::create_dir_all(&tree)?;
                secrets::stage_history(&ctx.runner, &ctx.root, &commits, &tree)?
            };
            notes.push(secrets::describe_range(commits.len(), files));
            let history_config = staging.join("history-secrets.yaml");
            ctx.runner
                .write_file(&history_config, config.for_history())?;
            let mut result = trivy.secrets(
                ctx,
                &tree,
                &target,
                &history_config,
                &reports.join("json/trivy-secrets-history.json"),
            )?;
            for finding in &mut result.findings {
                let place = finding
                    .location
                    .as_ref()
                    .and_then(|l| secrets::split_commit(&l.file));
                if let (Some((commit, file)), Some(location)) = (place, finding.location.as_mut()) {
                    finding.subject = format!("{file} in commit {commit}");
                    location.file = file;
                }
                finding.help = Some(
                    "it is in the history even if deleted since: rotate it, and rewrite the \
                     commits before they are pushed"
                        .into(),
                );
            }
            Ok(result)
        });
        result.notes.extend(notes);
        results.push(result);
    }
    results
}

/// What to do about a secret found: the ignore file is for what is fake, never for a real one.
const SECRET_ADVICE: &str =
    "Remove each secret found and rotate it: it is compromised. A file that \
     holds a fake secret on purpose is allowed in trivy-secrets.yaml by its path, with the reason";

/// Runs one scanner as a task; an error becomes a failed row instead of stopping the rest.
fn unit(
    ctx: &Ctx,
    target: &str,
    scanner: &str,
    work: impl FnOnce() -> Result<ScanResult>,
) -> ScanResult {
    let task = ctx.reporter.task(format!("{scanner}: {target}"));
    match work() {
        Ok(result) => {
            let total = result.findings.len();
            task.done(format!(
                "{total} finding{}",
                if total == 1 { "" } else { "s" }
            ));
            result
        }
        Err(e) => {
            task.fail("error");
            ScanResult::failed(target, scanner, format!("{e:#}"))
        }
    }
}

struct Image {
    name: String,
    reference: String,
    /// The image id, or why it cannot be scanned.
    id: std::result::Result<String, String>,
}

fn images(ctx: &Ctx) -> Vec<Image> {
    let engine = engine::version(ctx).err().map(|e| e.to_string());
    ctx.stack
        .services
        .iter()
        .map(|s| {
            let reference = s.versioned_image();
            let id = match &engine {
                Some(why) => Err(format!("{why}: cannot read {reference}")),
                None => engine::image_inspect(ctx, &reference, "{{.Id}}").ok_or_else(|| {
                    format!(
                        "{reference} is not built: run `cargo xtask images` first (or pass \
                         --skip-images)"
                    )
                }),
            };
            Image {
                name: s.name.clone(),
                reference,
                id,
            }
        })
        .collect()
}

/// Trivy on each image: its archive saved, checked to hold the image, and scanned.
fn image_lane(ctx: &Ctx, trivy: &Trivy, images: &[Image], reports: &Path) -> Vec<ScanResult> {
    let mut results = Vec::new();
    let mut image_sarifs = Vec::new();
    let archives = ctx.root.join("target/xtask/images");
    // What an image ID is the digest of, so the archive is checked to hold the image.
    let store = if images.is_empty() {
        ImageStore::Classic
    } else {
        engine::image_store(ctx)
    };
    for image in images {
        let result = unit(ctx, &image.reference, "trivy image", || {
            let id = image.id.clone().map_err(anyhow::Error::msg)?;
            let tar = save_image(ctx, &image.reference, &id, &archives, &image.name)?;
            let held = if ctx.dry_run() {
                None
            } else {
                Some(archived_image(ctx, &tar)?)
            };
            if let Some(held) = held
                .as_ref()
                .filter(|h| h.id_on(store) != Some(id.as_str()))
            {
                anyhow::bail!(
                    "{} was saved as an archive of another image ({}): it changed while it was \
                     saved; scan again",
                    image.reference,
                    held.describe()
                );
            }
            let input = image_input(ctx, &tar, held.as_ref())?;
            let json = reports.join(format!("json/trivy-image-{}.json", image.name));
            let result = trivy.image(ctx, &image.reference, &input, &json);
            remove_image_input(ctx, &input)?;
            let result = result?;
            let sarif = reports.join(format!("sarif/trivy-image-{}.sarif", image.name));
            trivy.sarif(ctx, &json, &sarif)?;
            image_sarifs.push(sarif);
            Ok(result)
        });
        results.push(result);
    }
    if !ctx.dry_run() && !image_sarifs.is_empty() {
        let logs: Vec<serde_json::Value> = image_sarifs
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .filter_map(|t| serde_json::from_str(&t).ok())
            .collect();
        if let Some(merged) = sarif::merge(logs) {
            let _ = ctx.runner.write_file(
                &reports.join("sarif/trivy-image.sarif"),
                serde_json::to_string_pretty(&merged).unwrap_or_default(),
            );
        }
    }
    results
}

/// The Trivy lane: each image, then the repository and its configuration files.
fn trivy_lane(
    ctx: &Ctx,
    trivy: &Trivy,
    images: &[Image],
    reports: &Path,
    history: Option<&str>,
) -> Vec<ScanResult> {
    let mut results = image_lane(ctx, trivy, images, reports);
    let mut fs = unit(ctx, "repository", "trivy fs", || {
        let json = reports.join("json/trivy-fs.json");
        let result = trivy.fs(ctx, &ctx.root, &json)?;
        trivy.sarif(ctx, &json, &reports.join("sarif/trivy-fs.sarif"))?;
        Ok(result)
    });
    fs.target = "repository".into();
    fs.notes.extend(trivy.ignore_notes.iter().cloned());
    results.push(fs);
    results.extend(secret_lane(ctx, trivy, reports, history));
    let mut config = unit(ctx, "Dockerfiles and manifests", "trivy config", || {
        let json = reports.join("json/trivy-config.json");
        let result = trivy.config(ctx, &ctx.root, &json)?;
        trivy.sarif(ctx, &json, &reports.join("sarif/trivy-config.sarif"))?;
        Ok(result)
    });
    config.target = "Dockerfiles and manifests".into();
    results.push(config);
    results
}

/// The linters' lane: hadolint, then the compose rule on each compose file.
fn lint_lane(ctx: &Ctx, reports: &Path) -> Vec<ScanResult> {
    let mut results = Vec::new();
    let skip = skip_dirs(&ctx.root.join(Policy::FILE));
    let dockerfiles = hadolint::dockerfiles(&ctx.root, &skip);
    results.push(unit(ctx, "Dockerfiles", hadolint::SCANNER, || {
        hadolint::scan(
            ctx,
            &ctx.root,
            &dockerfiles,
            "Dockerfiles",
            &reports.join("sarif/hadolint.sarif"),
        )
    }));
    let compose_dir = ctx.root.join("compose");
    let mut compose_files: Vec<PathBuf> = std::fs::read_dir(&compose_dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    compose_files.retain(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"));
    compose_files.sort();
    let mut all = Vec::new();
    for file in &compose_files {
        let shown = ctx.show(file).trim_start_matches("$ROOT/").to_owned();
        ctx.runner
            .plan(format!("check {shown} against the compose hardening rule"));
        let result = unit(ctx, &shown, compose_rule::SCANNER, || {
            let mut result = ScanResult::new(&shown, compose_rule::SCANNER);
            result.findings = compose_rule::check_file(&ctx.root, file)?;
            Ok(result)
        });
        all.extend(result.findings.iter().cloned());
        results.push(result);
    }
    if !ctx.dry_run() {
        let log = sarif::log(
            "compose rule",
            "https://docs.docker.com/reference/compose-file/services/",
            &all,
            compose_files
                .first()
                .map(|f| ctx.show(f).trim_start_matches("$ROOT/").to_owned())
                .as_deref()
                .unwrap_or("compose"),
        );
        let _ = ctx.runner.write_file(
            &reports.join("sarif/compose.sarif"),
            serde_json::to_string_pretty(&log).unwrap_or_default(),
        );
    }
    results
}

fn deny_lane(ctx: &Ctx, reports: &Path, require_advisories: bool) -> ScanResult {
    let mut options = cargo_deny::Options::for_workspace(ctx);
    options.require_advisories = require_advisories;
    let result = unit(ctx, "Rust dependencies", cargo_deny::SCANNER, || {
        cargo_deny::scan(ctx, &options)
    });
    if !ctx.dry_run() {
        let _ = ctx.runner.write_file(
            &reports.join("sarif/cargo-deny.sarif"),
            serde_json::to_string_pretty(&cargo_deny::sarif(&result)).unwrap_or_default(),
        );
    }
    result
}

impl Scan {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let started = Instant::now();
        let policy = Policy::load(&ctx.root)?;
        let reports = reports_dir(ctx);
        if self.secrets_only {
            crate::deps::tools::ensure(ctx, &["trivy"])?;
            let trivy = Trivy::prepare_without_db(ctx)?;
            ctx.runner.remove_path(&reports.join("json"))?;
            ctx.runner.create_dir(&reports.join("json"))?;
            let results = secret_lane(ctx, &trivy, &reports, self.history.as_deref());
            if ctx.dry_run() {
                return Ok(());
            }
            return findings::report(
                ctx,
                "cargo xtask scan --secrets-only",
                &results,
                &policy,
                SECRET_ADVICE,
            );
        }
        if self.images_only {
            crate::deps::tools::ensure(ctx, &["trivy"])?;
            let images = images(ctx);
            let trivy = Trivy::prepare(ctx, self.require_vuln_db)?;
            for dir in ["json", "sarif"] {
                ctx.runner.remove_path(&reports.join(dir))?;
                ctx.runner.create_dir(&reports.join(dir))?;
            }
            let results = image_lane(ctx, &trivy, &images, &reports);
            if ctx.dry_run() {
                return Ok(());
            }
            return findings::report(
                ctx,
                "cargo xtask scan --images-only",
                &results,
                &policy,
                "Fix the findings above; to accept one for a while, add it to .trivyignore.yaml \
                 with an expiry date and a reason",
            );
        }
        // Every tool first, one install at a time; then the scans in parallel.
        crate::deps::tools::ensure(ctx, &["trivy", "hadolint", "cargo-deny"])?;
        let images = if self.skip_images {
            Vec::new()
        } else {
            images(ctx)
        };
        let trivy = Trivy::prepare(ctx, self.require_vuln_db)?;
        // Old reports would be taken for this run's.
        for dir in ["json", "sarif"] {
            ctx.runner.remove_path(&reports.join(dir))?;
            ctx.runner.create_dir(&reports.join(dir))?;
        }

        let (trivy_results, (lint_results, deny_result)) = ctx.both(
            || trivy_lane(ctx, &trivy, &images, &reports, self.history.as_deref()),
            || {
                ctx.both(
                    || lint_lane(ctx, &reports),
                    || deny_lane(ctx, &reports, self.require_advisories),
                )
            },
        );
        if ctx.dry_run() {
            return Ok(());
        }
        let mut results = trivy_results;
        results.extend(lint_results);
        results.push(deny_result);

        let summary = reports.join("summary.json");
        ctx.runner.write_file(
            &summary,
            serde_json::to_string_pretty(&results).context("cannot write the summary")?,
        )?;
        let outcome = findings::report(
            ctx,
            "cargo xtask scan",
            &results,
            &policy,
            "Fix the findings above; to accept one for a while, add it to .trivyignore.yaml \
             (Trivy) with an expiry date and a reason, or to deny.toml (cargo-deny) with a reason",
        );
        println!(
            "\nreports: {} (JSON, SARIF); scanned in {:.1} s",
            ctx.show(&reports),
            started.elapsed().as_secs_f64()
        );
        outcome
    }
}

//! `cargo xtask release`: build the images once, scan exactly what was built, push only what
//! passed, and check the registry holds what was pushed.
//!
//! Every image is known by its ID from the moment it is built: the archive Trivy scans is
//! checked to hold that ID (Trivy reads the OCI layout in it, each blob checked against its
//! digest, and must report the archive's image configuration), the registry tag is made from the ID (not from a local tag that
//! could move), and after the push the registry's manifest must carry the pushed digest and
//! the scanned image's configuration. What an ID is depends on the engine's image store (the
//! configuration's digest on the classic store, the manifest's on containerd's, GitHub's
//! default): the archive is read for both, and each is compared with its like. One image that
//! fails its scan stops the release before anything is pushed.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::build::engine::{self, ImageStore};
use crate::build::images;
use crate::build::registry::{self, Registry};
use crate::ctx::Ctx;
use crate::runner::Step;
use crate::scanners::findings::{self, Policy, ScanResult};
use crate::scanners::trivy::Trivy;
use crate::scanners::{
    archived_image, image_input, remove_image_input, reports_dir, save_image, ArchivedImage,
};
use crate::stack::Service;
use crate::util::table;

/// Build, scan and push the images to a registry; print and record their digests.
///
/// Builds the images once, scans exactly those image IDs with Trivy (HIGH and CRITICAL fail,
/// as in `scan`), and pushes only when every one passed: tagged from its ID as
/// HOST[/NAMESPACE]/ml-mlops/SERVICE:TAG. After the push the registry's digest for each tag
/// must be the pushed one. The digests are printed and written to
/// target/xtask/reports/release-TAG.json.
///
/// In two halves, as the release workflow runs it: `--scan-only` builds and scans and writes
/// what passed (target/xtask/reports/release-scanned.json, the image archives in
/// target/xtask/images/); `--from-scanned --registry ...` loads exactly those archives and
/// pushes them, building and scanning nothing.
#[derive(clap::Args, Debug)]
pub struct Release {
    /// Where to push: HOST[:PORT][/NAMESPACE], e.g. ghcr.io/my-org (lowercased: registries
    /// refuse capitals).
    #[arg(
        long,
        value_name = "HOST[:PORT][/NAMESPACE]",
        value_parser = parse_registry,
        required_unless_present = "scan_only"
    )]
    pub registry: Option<Registry>,
    /// Build and scan only; record what passed for `--from-scanned` and push nothing.
    #[arg(long, conflicts_with_all = ["registry", "from_scanned"])]
    pub scan_only: bool,
    /// Push what `--scan-only` recorded (its archives, loaded by ID), without building or
    /// scanning again.
    #[arg(long)]
    pub from_scanned: bool,
    /// The image tag [default: the workspace version]. A git tag's `v` is dropped (`v1.0.0`
    /// is `1.0.0`); it must be the workspace version, or that version with a `-suffix`.
    #[arg(long, value_name = "VERSION", value_parser = parse_tag)]
    pub tag: Option<String>,
    /// Fail when vulnerabilities cannot be checked (no Trivy vulnerability database).
    #[arg(long)]
    pub require_vuln_db: bool,
    /// Only these services (all by default).
    pub services: Vec<String>,
}

fn parse_registry(text: &str) -> Result<Registry, String> {
    Registry::parse(text).map_err(|e| format!("{e:#}"))
}

fn parse_tag(text: &str) -> Result<String, String> {
    let tag = match text.strip_prefix('v') {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => rest,
        _ => text,
    };
    registry::check_tag(tag).map_err(|e| format!("{e:#}"))?;
    Ok(tag.to_owned())
}

/// The version every image is built and labelled with.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// An image built for this release, known by its ID.
struct Candidate<'a> {
    service: &'a Service,
    id: String,
}

/// An image whose scan passed: only these are tagged and pushed.
struct Cleared<'a> {
    service: &'a Service,
    id: String,
    /// The digest of its configuration, read from the archive that was scanned.
    config: String,
}

#[derive(Serialize)]
struct Pushed {
    service: String,
    /// The ID on the engine that pushed it (see `image_store` in the record).
    image_id: String,
    /// The digest of its configuration, whichever the store.
    config: String,
    /// `HOST/NAMESPACE/ml-mlops/SERVICE:TAG`.
    tag: String,
    digest: String,
    /// `HOST/NAMESPACE/ml-mlops/SERVICE@sha256:...`: what to deploy.
    reference: String,
    push_seconds: f64,
}

#[derive(Serialize)]
struct Record<'a> {
    registry: String,
    /// The store of the engine that pushed: what `image_id` is the digest of.
    image_store: ImageStore,
    tag: &'a str,
    version: &'a str,
    images: &'a [Pushed],
    scans: serde_json::Value,
}

/// What `--scan-only` hands to `--from-scanned`: the images that passed, by ID, with the
/// archive each was scanned as.
#[derive(Serialize, serde::Deserialize)]
struct Scanned {
    tag: String,
    version: String,
    images: Vec<ScannedImage>,
    scans: serde_json::Value,
}

#[derive(Serialize, serde::Deserialize)]
struct ScannedImage {
    service: String,
    image_id: String,
    /// The digest of the scanned image's configuration, the same on both stores (absent in
    /// what older versions wrote).
    #[serde(default)]
    config: String,
    archive: PathBuf,
}

fn scanned_file(ctx: &Ctx) -> PathBuf {
    reports_dir(ctx).join("release-scanned.json")
}

/// Loads the archives `--scan-only` recorded and checks each holds the image that was
/// scanned: the recorded configuration, under the ID this engine's store gives it.
fn load_scanned<'a>(
    ctx: &Ctx,
    store: ImageStore,
    services: &[&'a Service],
    tag: &str,
) -> Result<(Vec<Cleared<'a>>, serde_json::Value)> {
    let file = scanned_file(ctx);
    let text = std::fs::read_to_string(&file).with_context(|| {
        format!(
            "cannot read {}: run `cargo xtask release --scan-only` first",
            ctx.show(&file)
        )
    })?;
    let scanned: Scanned = serde_json::from_str(&text)
        .with_context(|| format!("{} is not what --scan-only writes", ctx.show(&file)))?;
    if scanned.tag != tag {
        bail!(
            "{} was scanned for tag {}, not {tag}",
            ctx.show(&file),
            scanned.tag
        );
    }
    let mut cleared = Vec::new();
    for &service in services {
        let image = scanned
            .images
            .iter()
            .find(|i| i.service == service.name)
            .with_context(|| {
                format!(
                    "{} holds no scanned image of {}",
                    ctx.show(&file),
                    service.name
                )
            })?;
        let tar = ctx.root.join(&image.archive);
        ctx.runner.run(
            &Step::new("docker")
                .args(["load", "--quiet", "--input"])
                .arg(&tar),
        )?;
        if ctx.dry_run() {
            cleared.push(Cleared {
                service,
                id: image.image_id.clone(),
                config: image.config.clone(),
            });
            continue;
        }
        let held = archived_image(ctx, &tar)?;
        let scanned_config = Some(&image.config).filter(|c| !c.is_empty());
        if scanned_config.is_some_and(|c| *c != held.config) {
            bail!(
                "{} now holds image {}, not the scanned {}: run `--scan-only` again",
                image.archive.display(),
                held.describe(),
                image.config
            );
        }
        let Some(id) = held.id_on(store) else {
            bail!(
                "{} was written by an engine older than Docker 25 (no index.json): on {} its ID \
                 cannot be known before loading; scan and push with engines of one kind",
                image.archive.display(),
                store.id_meaning()
            );
        };
        // Without a recorded configuration (an older record), the recorded ID must match.
        if scanned_config.is_none() && id != image.image_id {
            bail!(
                "{} holds image {}, not the scanned {}",
                image.archive.display(),
                held.describe(),
                image.image_id
            );
        }
        if engine::image_inspect(ctx, id, "{{.Id}}").as_deref() != Some(id) {
            bail!(
                "{} did not load image {id}, the one that was scanned",
                image.archive.display()
            );
        }
        cleared.push(Cleared {
            service,
            id: id.to_owned(),
            config: held.config,
        });
    }
    Ok((cleared, scanned.scans))
}

fn short(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}

/// The ID each service's image has right after the build; from here on only the ID is used.
fn candidates<'a>(ctx: &Ctx, services: &[&'a Service]) -> Result<Vec<Candidate<'a>>> {
    services
        .iter()
        .map(|&service| {
            let reference = service.versioned_image();
            let id = match engine::image_inspect(ctx, &reference, "{{.Id}}") {
                Some(id) => id,
                None if ctx.dry_run() => format!("<the ID of {reference}>"),
                None => bail!("{reference} was not built"),
            };
            Ok(Candidate { service, id })
        })
        .collect()
}

/// Saves the image by ID and checks the archive holds exactly that image: the ID `store`
/// gives what the archive holds is the candidate's (an archive of `scan` is reused when it
/// is). `None` under `--dry-run`.
fn archive(
    ctx: &Ctx,
    store: ImageStore,
    candidate: &Candidate,
) -> Result<(PathBuf, Option<ArchivedImage>)> {
    let dir = ctx.root.join("target/xtask/images");
    let name = &candidate.service.name;
    let id = &candidate.id;
    let tar = save_image(ctx, id, id, &dir, name)?;
    if ctx.dry_run() {
        return Ok((tar, None));
    }
    if let Some(held) = archived_image(ctx, &tar)
        .ok()
        .filter(|held| held.id_on(store) == Some(id))
    {
        return Ok((tar, Some(held)));
    }
    // An archive saved under another ID (a tag that moved while `scan` saved it): again, by ID.
    ctx.runner
        .remove_path(&dir.join(format!("{name}.tar.id")))?;
    let tar = save_image(ctx, id, id, &dir, name)?;
    let held = archived_image(ctx, &tar)?;
    if held.id_on(store) != Some(id) {
        bail!(
            "`docker save {id}` wrote an archive of another image ({}); the engine keeps its \
             images in {}: this is an engine or toolkit fault, not a finding",
            held.describe(),
            store.id_meaning()
        );
    }
    Ok((tar, Some(held)))
}

/// Scans the candidate's archive; with the result, the configuration digest of what was
/// scanned (`None` when it could not be archived, and under `--dry-run`).
fn scan(
    ctx: &Ctx,
    store: ImageStore,
    trivy: &Trivy,
    candidate: &Candidate,
) -> (ScanResult, Option<String>) {
    let service = candidate.service;
    let target = format!("{} ({})", service.versioned_image(), short(&candidate.id));
    let task = ctx.reporter.task(format!("trivy image: {target}"));
    let json = reports_dir(ctx).join(format!("json/release-trivy-image-{}.json", service.name));
    let result = archive(ctx, store, candidate).and_then(|(tar, held)| {
        let input = image_input(ctx, &tar, held.as_ref())?;
        let result = trivy.image(ctx, &target, &input, &json);
        remove_image_input(ctx, &input)?;
        Ok((result?, held.map(|h| h.config)))
    });
    match result {
        Ok((result, config)) => {
            task.done(format!("{} findings", result.findings.len()));
            (result, config)
        }
        Err(e) => {
            task.fail("error");
            (
                ScanResult::failed(target, "trivy image", format!("{e:#}")),
                None,
            )
        }
    }
}

/// Scans every candidate; returns the ones cleared to push, or fails naming the rest.
fn clear<'a>(
    ctx: &Ctx,
    store: ImageStore,
    trivy: &Trivy,
    policy: &Policy,
    candidates: Vec<Candidate<'a>>,
) -> Result<(Vec<Cleared<'a>>, Vec<ScanResult>)> {
    let (results, configs): (Vec<ScanResult>, Vec<Option<String>>) = candidates
        .iter()
        .map(|c| scan(ctx, store, trivy, c))
        .unzip();
    if ctx.dry_run() {
        let cleared = candidates
            .into_iter()
            .map(|c| Cleared {
                config: format!("<the configuration of {}>", c.service.versioned_image()),
                service: c.service,
                id: c.id,
            })
            .collect();
        return Ok((cleared, results));
    }
    findings::report(
        ctx,
        "cargo xtask release: image scan",
        &results,
        policy,
        "Fix the findings above (or, for a while, add them to .trivyignore.yaml with an expiry \
         date and a reason)",
    )
    .context("refusing to push: nothing was pushed")?;
    let cleared = candidates
        .into_iter()
        .zip(results.iter().zip(configs))
        .map(|(c, (result, config))| {
            // `report` fails on any failed result; this keeps a failed one from being pushed
            // whatever becomes of it.
            let (true, Some(config)) = (result.passed(policy), config) else {
                bail!("{} did not pass its scan", c.service.versioned_image());
            };
            Ok(Cleared {
                service: c.service,
                id: c.id,
                config,
            })
        })
        .collect::<Result<_>>()?;
    Ok((cleared, results))
}

/// Tags the image from its ID, pushes it, and checks the registry holds what was pushed: the
/// scanned configuration, and on the containerd store the very manifest the ID names.
fn push(
    ctx: &Ctx,
    store: ImageStore,
    registry: &Registry,
    tag: &str,
    image: &Cleared,
) -> Result<Pushed> {
    let repository = registry.repository(&image.service.image());
    let target = format!("{repository}:{tag}");
    let started = Instant::now();
    ctx.runner
        .run(&Step::new("docker").args(["tag", &image.id, &target]))?;
    if !ctx.dry_run() {
        let tagged = engine::image_inspect(ctx, &target, "{{.Id}}");
        if tagged.as_ref() != Some(&image.id) {
            bail!(
                "{target} is {} right after tagging, not the scanned {}",
                tagged.as_deref().unwrap_or("absent"),
                image.id
            );
        }
    }
    let output = ctx
        .runner
        .run(&Step::new("docker").args(["push", &target]))?;
    let push_seconds = started.elapsed().as_secs_f64();
    let mut inspect = Step::new("docker").args(["manifest", "inspect", "--verbose"]);
    if registry.is_loopback() {
        inspect = inspect.arg("--insecure");
    }
    let inspect = inspect.arg(&target);
    if ctx.dry_run() {
        ctx.runner.run(&inspect)?;
        ctx.runner.plan(format!(
            "check the registry's digest of {target} is the pushed one, with the scanned \
             image's configuration"
        ));
        return Ok(Pushed {
            service: image.service.name.clone(),
            image_id: image.id.clone(),
            config: image.config.clone(),
            tag: target,
            digest: String::new(),
            reference: String::new(),
            push_seconds,
        });
    }
    let digest = registry::pushed_digest(&output)
        .with_context(|| format!("`docker push {target}` reported no digest:\n{output}"))?;
    let remote = ctx.runner.run(&inspect)?;
    let remote = registry::remote_manifest(&remote)
        .with_context(|| format!("cannot read the registry's manifest of {target}"))?;
    if remote.digest != digest {
        bail!(
            "the registry's digest for {target} is {}, not the pushed {digest}: something else \
             pushed to this tag",
            remote.digest
        );
    }
    if let Some(config) = remote.config.as_ref().filter(|c| **c != image.config) {
        bail!(
            "the registry's {target} has configuration {config}, not the scanned image's {}",
            image.config
        );
    }
    // On the containerd store the ID is the manifest's digest: the registry must serve that
    // very manifest.
    if store == ImageStore::Containerd && digest != image.id {
        bail!(
            "the registry's {target} is manifest {digest}, not the scanned image's {}",
            image.id
        );
    }
    Ok(Pushed {
        service: image.service.name.clone(),
        image_id: image.id.clone(),
        config: image.config.clone(),
        reference: format!("{repository}@{digest}"),
        tag: target,
        digest,
        push_seconds,
    })
}

impl Release {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let started = Instant::now();
        let tag = self.tag.clone().unwrap_or_else(|| VERSION.to_owned());
        if tag != VERSION && !tag.starts_with(&format!("{VERSION}-")) {
            bail!(
                "--tag {tag}: the images are built and labelled as version {VERSION} (the \
                 workspace version in Cargo.toml); release that, a `{VERSION}-suffix`, or bump \
                 the version first"
            );
        }
        let services = ctx.stack.select(&self.services)?;
        let registry_name = self.registry.as_ref().map_or_else(
            || "(scan only)".to_owned(),
            |r| r.repository("ml-mlops/SERVICE"),
        );
        let engine = engine::version(ctx)
            .map_err(|e| e.context("releasing images needs a Docker engine"))?;
        let store = engine::image_store(ctx);
        ctx.reporter.info(format!(
            "release {} as {}:{tag} (Docker Engine {engine}, {} image store)",
            services
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            registry_name,
            store.name(),
        ));

        let (cleared, scans) = if self.from_scanned {
            load_scanned(ctx, store, &services, &tag)?
        } else {
            // The scanner and its policy first: a missing one fails in seconds, not after a
            // build.
            let policy = Policy::load(&ctx.root)?;
            crate::deps::tools::ensure(ctx, &["trivy"])?;
            let trivy = Trivy::prepare(ctx, self.require_vuln_db)?;
            images::preflight(ctx, &services, true)?;
            images::build(ctx, &services)?;
            let candidates = candidates(ctx, &services)?;
            let (cleared, scans) = clear(ctx, store, &trivy, &policy, candidates)?;
            (
                cleared,
                serde_json::to_value(&scans).context("cannot record the scans")?,
            )
        };
        let Some(registry) = self.registry.as_ref().filter(|_| !self.scan_only) else {
            let dir = ctx.root.join("target/xtask/images");
            let scanned = Scanned {
                tag: tag.clone(),
                version: VERSION.to_owned(),
                images: cleared
                    .iter()
                    .map(|c| ScannedImage {
                        service: c.service.name.clone(),
                        image_id: c.id.clone(),
                        config: c.config.clone(),
                        // From the workspace root: the second half runs in another checkout.
                        archive: PathBuf::from(format!(
                            "target/xtask/images/{}.tar",
                            c.service.name
                        )),
                    })
                    .collect(),
                scans,
            };
            let file = scanned_file(ctx);
            ctx.runner.write_file(
                &file,
                serde_json::to_string_pretty(&scanned).context("cannot write what was scanned")?,
            )?;
            ctx.reporter.info(format!(
                "built and scanned, nothing pushed: {} and the archives in {} are what \
                 `cargo xtask release --from-scanned --registry ...` pushes",
                ctx.show(&file),
                ctx.show(&dir)
            ));
            return Ok(());
        };

        let mut pushed = Vec::new();
        for image in &cleared {
            let title = format!(
                "push {} as {}:{tag}",
                short(&image.id),
                registry.repository(&image.service.image())
            );
            let result = ctx
                .reporter
                .run_task(title, |_| push(ctx, store, registry, &tag, image));
            match result {
                Ok(p) => pushed.push(p),
                Err(e) if pushed.is_empty() => return Err(e.context("nothing was pushed")),
                Err(e) => {
                    let done: Vec<&str> = pushed.iter().map(|p| p.reference.as_str()).collect();
                    return Err(e.context(format!(
                        "the release is incomplete: already pushed {}",
                        done.join(", ")
                    )));
                }
            }
        }
        if ctx.dry_run() {
            return Ok(());
        }

        let record = Record {
            registry: registry.to_string(),
            image_store: store,
            tag: &tag,
            version: VERSION,
            images: &pushed,
            scans,
        };
        let file = reports_dir(ctx).join(format!("release-{tag}.json"));
        ctx.runner.write_file(
            &file,
            serde_json::to_string_pretty(&record).context("cannot write the release record")?,
        )?;
        let rows: Vec<Vec<String>> = pushed
            .iter()
            .map(|p| {
                vec![
                    p.service.clone(),
                    short(&p.image_id).to_owned(),
                    p.reference.clone(),
                    format!("{:.1} s", p.push_seconds),
                ]
            })
            .collect();
        let headers = ["SERVICE", "IMAGE ID", "PUSHED", "PUSH"];
        println!("\n{}", table::text(&headers, &rows));
        println!(
            "\ntag {tag}; every digest checked against the registry; record: {}; released in \
             {:.1} s",
            ctx.show(&file),
            started.elapsed().as_secs_f64()
        );
        ctx.reporter.summary(&format!(
            "### Release {tag}\n\n{}",
            table::markdown(&headers, &rows)
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_tags_lose_their_v_and_bad_tags_are_refused() {
        assert_eq!(parse_tag("v1.0.0").unwrap(), "1.0.0");
        assert_eq!(parse_tag("1.0.0-rc.1").unwrap(), "1.0.0-rc.1");
        assert_eq!(parse_tag("vnext").unwrap(), "vnext");
        assert!(parse_tag("1.0.0+build").is_err());
    }
}

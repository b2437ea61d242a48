//! `cargo xtask verify-release RECORD`: the registry still serves exactly what a release
//! recorded. For each image of the record (`target/xtask/reports/release-TAG.json`), the tag's
//! manifest digest must be the recorded digest, and the recorded `REPOSITORY@DIGEST` must still
//! resolve to the recorded image.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::build::registry::{self, Registry};
use crate::build::release_record::Record;
use crate::ctx::Ctx;
use crate::runner::Step;
use crate::util::table;

/// Check that the registry still serves exactly the digests a release recorded.
///
/// Reads the record `cargo xtask release` wrote and asks the registry for each tag and each
/// recorded digest; fails naming every image the registry no longer serves as recorded.
#[derive(clap::Args, Debug)]
pub struct VerifyRelease {
    /// The release record, e.g. target/xtask/reports/release-1.0.0.json, or the folder that
    /// holds exactly one (as the release workflow passes it).
    pub record: PathBuf,
    /// Under GitHub Actions: write each image's `SERVICE-name` (its repository) and
    /// `SERVICE-digest` to the step's outputs, for the attestation steps.
    #[arg(long)]
    pub github_output: bool,
    /// Write SHA256SUMS beside the record: the record's and every SBOM's (sbom/*.json there).
    #[arg(long)]
    pub checksums: bool,
}

/// One image of the record, every field present.
struct Recorded {
    service: String,
    /// The image's configuration digest: what the registry's manifest names, whichever image
    /// store the releasing engine had (records before it knew stores have only `image_id`,
    /// which was that digest).
    config: String,
    tag: String,
    digest: String,
    reference: String,
}

fn recorded(record: &Record) -> Result<Vec<Recorded>> {
    if record.images.is_empty() {
        bail!("the record lists no images: nothing was released");
    }
    record
        .images
        .iter()
        .map(|image| {
            let field = |name: &str, value: &str| {
                if value.is_empty() {
                    bail!("an image of the record has no `{name}`");
                }
                Ok(value.to_owned())
            };
            let config = if image.config.is_empty() {
                &image.image_id
            } else {
                &image.config
            };
            Ok(Recorded {
                service: field("service", &image.service)?,
                config: field("config", config)?,
                tag: field("tag", &image.tag)?,
                digest: field("digest", &image.digest)?,
                reference: field("reference", &image.reference)?,
            })
        })
        .collect()
}

/// What the registry says about `reference`, or why it could not say.
fn inspect(
    ctx: &Ctx,
    registry: &Registry,
    reference: &str,
) -> Result<registry::RemoteManifest, String> {
    let mut step = Step::new("docker").args(["manifest", "inspect", "--verbose"]);
    if registry.is_loopback() {
        step = step.arg("--insecure");
    }
    let output = ctx
        .runner
        .query(&step.arg(reference))
        .map_err(|e| format!("{e:#}"))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).trim().to_owned());
    }
    registry::remote_manifest(&String::from_utf8_lossy(&output.stdout))
        .map_err(|e| format!("{e:#}"))
}

/// What is wrong with one image in the registry, if anything.
fn check(ctx: &Ctx, registry: &Registry, image: &Recorded) -> Option<String> {
    let by_tag = match inspect(ctx, registry, &image.tag) {
        Ok(manifest) => manifest,
        Err(why) => return Some(format!("the registry does not serve {}: {why}", image.tag)),
    };
    if by_tag.digest != image.digest {
        return Some(format!(
            "{} is now {}, the record says {}: something was pushed over the tag",
            image.tag, by_tag.digest, image.digest
        ));
    }
    match inspect(ctx, registry, &image.reference) {
        Err(why) => Some(format!(
            "the registry does not serve {}: {why}",
            image.reference
        )),
        Ok(by_digest) => by_digest
            .config
            .filter(|config| *config != image.config)
            .map(|config| {
                format!(
                    "{} has configuration {config}, the record says {}",
                    image.reference, image.config
                )
            }),
    }
}

/// `SHA256SUMS` beside the record: the record and every SBOM in `sbom/` there, as
/// `sha256sum --check` reads them.
fn checksums(ctx: &Ctx, record: &Path) -> Result<PathBuf> {
    let dir = record.parent().unwrap_or(Path::new("."));
    let mut files = vec![record.to_owned()];
    if let Ok(entries) = std::fs::read_dir(dir.join("sbom")) {
        let mut sboms: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        sboms.sort();
        files.extend(sboms);
    }
    let mut text = String::new();
    for file in &files {
        let name = file.strip_prefix(dir).unwrap_or(file);
        text.push_str(&format!(
            "{}  {}\n",
            crate::util::archive::hash_file(file)?.1,
            name.display()
        ));
    }
    let out = dir.join("SHA256SUMS");
    ctx.runner.write_file(&out, text)?;
    Ok(out)
}

/// Appends `SERVICE-name` and `SERVICE-digest` of each image to `$GITHUB_OUTPUT`.
fn github_output(images: &[Recorded]) -> Result<()> {
    let path = std::env::var("GITHUB_OUTPUT")
        .context("--github-output: GITHUB_OUTPUT is not set (it is under GitHub Actions)")?;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .with_context(|| format!("cannot open {path}"))?;
    for image in images {
        let name = image
            .reference
            .split_once('@')
            .map_or(image.reference.as_str(), |(name, _)| name);
        writeln!(file, "{}-name={name}", image.service)?;
        writeln!(file, "{}-digest={}", image.service, image.digest)?;
    }
    Ok(())
}

impl VerifyRelease {
    pub fn run(mut self, ctx: &Ctx) -> Result<()> {
        let (path, record) = Record::load(&self.record)?;
        self.record = path;
        let registry = Registry::parse(&record.registry)?;
        let images = recorded(&record)?;
        let mut rows = Vec::new();
        let mut problems = Vec::new();
        for image in &images {
            let problem = if ctx.dry_run() {
                None
            } else {
                check(ctx, &registry, image)
            };
            rows.push(vec![
                image.service.clone(),
                image.reference.clone(),
                problem
                    .clone()
                    .map_or_else(|| "✓ served as recorded".into(), |p| format!("✗ {p}")),
            ]);
            problems.extend(problem);
        }
        let headers = ["SERVICE", "RECORDED", "REGISTRY"];
        println!("{}", table::text(&headers, &rows));
        ctx.reporter.summary(&format!(
            "### Release record {}\n\n{}",
            self.record.display(),
            table::markdown(&headers, &rows)
        ));
        if !problems.is_empty() {
            bail!(
                "the registry no longer serves what {} records:\n{}\nrelease again, or find who \
                 pushed to these tags",
                self.record.display(),
                problems.join("\n")
            );
        }
        if self.github_output {
            github_output(&images)?;
        }
        if self.checksums {
            let out = checksums(ctx, &self.record)?;
            ctx.reporter.info(format!("checksums: {}", ctx.show(&out)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(json: serde_json::Value) -> Record {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_record_without_digests_is_refused() {
        let without_digest = record(serde_json::json!({
            "registry": "127.0.0.1:5000", "tag": "1.0.0", "version": "1.0.0",
            "images": [{"service": "a", "image_id": "sha256:1", "tag": "t", "digest": "",
                        "reference": "r"}],
        }));
        let error = recorded(&without_digest).err().unwrap().to_string();
        assert!(error.contains("no `digest`"), "{error}");
        let empty = record(serde_json::json!({
            "registry": "x.io", "tag": "1.0.0", "version": "1.0.0", "images": [],
        }));
        assert!(recorded(&empty).is_err());
    }

    #[test]
    fn an_older_record_names_the_configuration_by_image_id() {
        let older = record(serde_json::json!({
            "registry": "x.io", "tag": "1.0.0", "version": "1.0.0",
            "images": [{"service": "a", "image_id": "sha256:1", "tag": "t", "digest": "d",
                        "reference": "r"}],
        }));
        assert_eq!(recorded(&older).unwrap()[0].config, "sha256:1");
    }
}

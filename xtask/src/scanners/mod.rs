//! Checking: the scanners `scan`, `deny`, `sbom` and `lint-workflows` run, each turning a
//! tool's report into findings of one shape (`findings`), written as tables and SARIF
//! (`sarif`); the workflows as the toolkit reads them (`workflows`); where reports go.

pub mod cargo_deny;
pub mod compose_rule;
pub mod findings;
pub mod hadolint;
pub mod sarif;
pub mod secrets;
pub mod trivy;
pub mod workflows;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::ctx::Ctx;
use crate::runner::Step;

/// JSON and SARIF reports and SBOMs: `target/xtask/reports/` (the workflows upload from here).
pub fn reports_dir(ctx: &Ctx) -> PathBuf {
    ctx.root.join("target/xtask/reports")
}

/// `image` saved as `DIR/NAME.tar` for Trivy, re-saved only when the image changed (the id it
/// was saved as is kept beside the archive).
pub fn save_image(ctx: &Ctx, image: &str, id: &str, dir: &Path, name: &str) -> Result<PathBuf> {
    let tar = dir.join(format!("{name}.tar"));
    let stamp = dir.join(format!("{name}.tar.id"));
    let current = std::fs::read_to_string(&stamp).unwrap_or_default();
    if current.trim() == id && tar.is_file() {
        return Ok(tar);
    }
    ctx.runner.create_dir(dir)?;
    ctx.runner.remove_path(&stamp)?;
    ctx.runner.run(
        &Step::new("docker")
            .args(["save", "--output"])
            .arg(&tar)
            .arg(image),
    )?;
    ctx.runner.write_file(&stamp, id)?;
    Ok(tar)
}

/// The id of the image a `docker save` archive holds, read from its own `manifest.json` (the
/// configuration's digest), so what is scanned is known by content, not by name.
pub fn archived_image_id(ctx: &Ctx, tar: &Path) -> Result<String> {
    let step = Step::new("tar").arg("-xOf").arg(tar).arg("manifest.json");
    let out = ctx.runner.query(&step)?;
    if !out.status.success() {
        anyhow::bail!(
            "{} has no manifest.json: {}",
            tar.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("{}: manifest.json is not JSON", tar.display()))?;
    let images = manifest.as_array().map_or(0, Vec::len);
    if images != 1 {
        anyhow::bail!("{} holds {images} images, not one", tar.display());
    }
    config_digest(manifest[0]["Config"].as_str().unwrap_or_default()).with_context(|| {
        format!(
            "{}: manifest.json names no image configuration",
            tar.display()
        )
    })
}

/// `sha256:HEX` from a `docker save` manifest's `Config`: `HEX.json` (Docker 20) or
/// `blobs/sha256/HEX` (the OCI layout of Docker 25 and later).
fn config_digest(config: &str) -> Option<String> {
    let hex = config.rsplit('/').next()?.trim_end_matches(".json");
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| format!("sha256:{hex}"))
}

/// Folders no scanner looks into: trivy.yaml's `scan.skip-dirs` (build output, test fixtures
/// that are wrong on purpose).
pub fn skip_dirs(trivy_yaml: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string(trivy_yaml) else {
        return Vec::new();
    };
    let Ok(doc) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&text) else {
        return Vec::new();
    };
    doc.get("scan")
        .and_then(|s| s.get("skip-dirs"))
        .and_then(|d| d.as_sequence())
        .into_iter()
        .flatten()
        .filter_map(|d| d.as_str().map(PathBuf::from))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_name_their_image_by_its_configuration_digest() {
        let hex = "af1cef5e781025483f11eeaf5914fa60e9ade77153286c15b6086ee49e946347";
        let id = format!("sha256:{hex}");
        assert_eq!(config_digest(&format!("{hex}.json")), Some(id.clone()));
        assert_eq!(config_digest(&format!("blobs/sha256/{hex}")), Some(id));
        assert_eq!(config_digest("config.json"), None);
    }

    #[test]
    fn build_output_and_fixtures_are_not_scanned() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let skipped = skip_dirs(&root.join("trivy.yaml"));
        assert!(skipped.contains(&PathBuf::from("target")));
        assert!(skipped.contains(&PathBuf::from("xtask/tests/fixtures")));
    }
}

//! Checking: the scanners `scan`, `deny`, `sbom` and `lint-workflows` run, each turning a
//! tool's report into findings of one shape (`findings`), written as tables and SARIF
//! (`sarif`); the workflows as the toolkit reads them (`workflows`); where reports go.

pub mod cargo_deny;
pub mod compose_rule;
pub mod findings;
pub mod hadolint;
pub mod oci_layout;
pub mod sarif;
pub mod secrets;
pub mod trivy;
pub mod workflows;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::build::engine::ImageStore;
use crate::ctx::Ctx;
use crate::runner::Step;
use crate::scanners::trivy::ImageInput;

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

/// The image a `docker save` archive holds, known by content, not by name: so what is scanned
/// can be checked to be the image that is pushed, on either image store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedImage {
    /// The digest of its configuration (`manifest.json`'s `Config`): the same on both stores.
    pub config: String,
    /// The digest of the manifest (or index) the archive's `index.json` names: the OCI layout
    /// Docker 25 and later write. `None` in Docker 20's archives.
    pub manifest: Option<String>,
}

impl ArchivedImage {
    /// The ID an engine with `store` gives this image: its configuration's digest on the
    /// classic store, its manifest's on containerd's.
    pub fn id_on(&self, store: ImageStore) -> Option<&str> {
        match store {
            ImageStore::Classic => Some(&self.config),
            ImageStore::Containerd => self.manifest.as_deref(),
        }
    }

    /// What the archive holds, for messages: both digests.
    pub fn describe(&self) -> String {
        match &self.manifest {
            Some(manifest) => format!("configuration {}, manifest {manifest}", self.config),
            None => format!("configuration {}", self.config),
        }
    }
}

/// Reads `manifest.json` (and `index.json`, where there is one) of a `docker save` archive.
pub fn archived_image(ctx: &Ctx, tar: &Path) -> Result<ArchivedImage> {
    let member = |name: &str| -> Result<Option<Vec<u8>>> {
        let out = ctx
            .runner
            .query(&Step::new("tar").arg("-xOf").arg(tar).arg(name))?;
        Ok(out.status.success().then_some(out.stdout))
    };
    let Some(manifest) = member("manifest.json")? else {
        anyhow::bail!("{} has no manifest.json", tar.display());
    };
    let index = member("index.json")?;
    parse_archive(&manifest, index.as_deref()).with_context(|| tar.display().to_string())
}

fn parse_archive(manifest_json: &[u8], index_json: Option<&[u8]>) -> Result<ArchivedImage> {
    let manifest: serde_json::Value =
        serde_json::from_slice(manifest_json).context("manifest.json is not JSON")?;
    let images = manifest.as_array().map_or(0, Vec::len);
    if images != 1 {
        anyhow::bail!("the archive holds {images} images, not one");
    }
    let config = config_digest(manifest[0]["Config"].as_str().unwrap_or_default())
        .context("manifest.json names no image configuration")?;
    let manifest = match index_json {
        None => None,
        Some(bytes) => {
            let index: serde_json::Value =
                serde_json::from_slice(bytes).context("index.json is not JSON")?;
            let entries = index["manifests"].as_array().map_or(0, Vec::len);
            if entries != 1 {
                anyhow::bail!("index.json names {entries} images, not one");
            }
            let digest = index["manifests"][0]["digest"]
                .as_str()
                .filter(|d| config_digest(d.trim_start_matches("sha256:")).is_some())
                .context("index.json names no digest")?;
            Some(digest.to_owned())
        }
    };
    Ok(ArchivedImage { config, manifest })
}

/// `sha256:HEX` from a `docker save` manifest's `Config`: `HEX.json` (Docker 20) or
/// `blobs/sha256/HEX` (the OCI layout of Docker 25 and later).
fn config_digest(config: &str) -> Option<String> {
    let hex = config.rsplit('/').next()?.trim_end_matches(".json");
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| format!("sha256:{hex}"))
}

/// What Trivy reads of the image saved as `tar`, which holds `held` (`None` under
/// `--dry-run`): the OCI layout the archive holds (Docker 25 and later), unpacked beside it
/// with every blob checked against its digest, and in it the manifest the archive's index
/// names; an archive without one (older engines, every layer uncompressed) as it is. Trivy
/// misreads the archive itself when its layers mix compressed and uncompressed ones, as on
/// the containerd image store (see `oci_layout`). [`remove_image_input`] removes the layout.
pub fn image_input(ctx: &Ctx, tar: &Path, held: Option<&ArchivedImage>) -> Result<ImageInput> {
    let layout = oci_layout::beside(tar);
    let manifest = match held {
        Some(held) => held.manifest.clone(),
        None => Some(format!("<the manifest {} names>", ctx.show(tar))),
    };
    let Some(manifest) = manifest else {
        return Ok(ImageInput {
            path: tar.to_owned(),
            manifest: None,
            config: held.map(|h| h.config.clone()),
        });
    };
    ctx.runner.plan(format!(
        "unpack the OCI layout of {} (Docker 25 and later write one) into {}, checking every \
         blob against its digest",
        ctx.show(tar),
        ctx.show(&layout)
    ));
    if !ctx.dry_run() {
        oci_layout::unpack(tar, &layout)?;
    }
    Ok(ImageInput {
        path: layout,
        manifest: Some(manifest),
        config: held.map(|h| h.config.clone()),
    })
}

/// Removes the layout [`image_input`] unpacked (the archive stays: `release --from-scanned`
/// loads it).
pub fn remove_image_input(ctx: &Ctx, input: &ImageInput) -> Result<()> {
    if input.manifest.is_some() {
        ctx.runner.remove_path(&input.path)?;
    }
    Ok(())
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
    fn an_archive_is_known_by_what_each_store_calls_its_image() {
        let config = "486bead287be86299cd985846c0b9f45f367e530caf324f2e645bdd7a85c1347";
        let manifest = "c3d41aadbcc18e72622910ceb2467f90ad95b1b710e44918d249fb498e3200a2";
        // As Docker 26 on the containerd store saves an image.
        let manifest_json = format!(r#"[{{"Config":"blobs/sha256/{config}","Layers":[]}}]"#);
        let index_json = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"digest":"sha256:{manifest}","size":497}}]}}"#
        );
        let archived =
            parse_archive(manifest_json.as_bytes(), Some(index_json.as_bytes())).unwrap();
        assert_eq!(archived.config, format!("sha256:{config}"));
        let config_id = format!("sha256:{config}");
        let manifest_id = format!("sha256:{manifest}");
        assert_eq!(
            archived.id_on(ImageStore::Classic),
            Some(config_id.as_str())
        );
        assert_eq!(
            archived.id_on(ImageStore::Containerd),
            Some(manifest_id.as_str())
        );
        // As Docker 20 saves one: no index, so no manifest digest.
        let old = parse_archive(
            format!(r#"[{{"Config":"{config}.json"}}]"#).as_bytes(),
            None,
        )
        .unwrap();
        assert_eq!(old.id_on(ImageStore::Classic), Some(config_id.as_str()));
        assert_eq!(old.id_on(ImageStore::Containerd), None);
        assert!(parse_archive(b"[]", None).is_err());
    }

    #[test]
    fn build_output_and_fixtures_are_not_scanned() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let skipped = skip_dirs(&root.join("trivy.yaml"));
        assert!(skipped.contains(&PathBuf::from("target")));
        assert!(skipped.contains(&PathBuf::from("xtask/tests/fixtures")));
    }
}

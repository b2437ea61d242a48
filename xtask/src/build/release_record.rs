//! The record `cargo xtask release` writes (`target/xtask/reports/release-TAG.json`): which
//! image of each service it pushed, by digest. `verify-release` checks a registry against it;
//! deployments run exactly its digests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::stack::Stack;

/// The parts of a record a deployment needs.
#[derive(Debug, Deserialize)]
pub struct Record {
    pub registry: String,
    pub tag: String,
    pub version: String,
    pub images: Vec<RecordedImage>,
}

#[derive(Debug, Deserialize)]
pub struct RecordedImage {
    pub service: String,
    /// `HOST/NAMESPACE/ml-mlops/SERVICE@sha256:...`.
    pub reference: String,
    pub digest: String,
    /// `HOST/NAMESPACE/ml-mlops/SERVICE:TAG`.
    #[serde(default)]
    pub tag: String,
    /// The digest of the image's configuration, whichever store pushed it.
    #[serde(default)]
    pub config: String,
    /// The ID on the engine that pushed it: records written before `config` have only this,
    /// and it was that digest.
    #[serde(default)]
    pub image_id: String,
}

/// `path` itself, or the one `release-VERSION.json` in the folder `path` (as the release
/// workflow hands its reports folder over).
pub fn locate(path: &Path) -> Result<PathBuf> {
    if !path.is_dir() {
        return Ok(path.to_owned());
    }
    let records: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with("release-") && n.ends_with(".json") && n != "release-scanned.json"
            })
        })
        .collect();
    match records.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "no release record (release-VERSION.json) in {}",
            path.display()
        ),
        _ => bail!(
            "{} holds {} release records: name one",
            path.display(),
            records.len()
        ),
    }
}

impl Record {
    /// Reads the record at `path` (a file, or the folder holding one).
    pub fn load(path: &Path) -> Result<(PathBuf, Self)> {
        let file = locate(path)?;
        let text = std::fs::read_to_string(&file).with_context(|| {
            format!(
                "cannot read the release record {}: `cargo xtask release` writes it",
                file.display()
            )
        })?;
        let record = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a release record", file.display()))?;
        Ok((file, record))
    }

    /// The pinned reference (`REPOSITORY@sha256:...`) of every service of `stack`; fails
    /// naming the services the record lacks, or whose reference is not by digest.
    pub fn references(&self, stack: &Stack) -> Result<BTreeMap<String, String>> {
        let mut references = BTreeMap::new();
        let mut missing = Vec::new();
        for service in &stack.services {
            let Some(image) = self.images.iter().find(|i| i.service == service.name) else {
                missing.push(service.name.as_str());
                continue;
            };
            let pinned = image
                .reference
                .split_once('@')
                .is_some_and(|(_, digest)| digest == image.digest && is_digest(digest));
            if !pinned {
                bail!(
                    "the record's image of {} is {:?}, not REPOSITORY@{}: release again",
                    service.name,
                    image.reference,
                    image.digest
                );
            }
            references.insert(service.name.clone(), image.reference.clone());
        }
        if !missing.is_empty() {
            bail!(
                "the release record has no image of {} (it holds {}): release every service \
                 (`cargo xtask release` without service names)",
                missing.join(", "),
                self.images
                    .iter()
                    .map(|i| i.service.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Ok(references)
    }
}

fn is_digest(text: &str) -> bool {
    text.strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack() -> Stack {
        Stack::load(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()).unwrap()
    }

    fn record(images: &[(&str, &str)]) -> Record {
        let digest = format!("sha256:{}", "a".repeat(64));
        Record {
            registry: "ghcr.io/org".into(),
            tag: "1.0.0".into(),
            version: "1.0.0".into(),
            images: images
                .iter()
                .map(|(service, reference)| RecordedImage {
                    service: service.to_string(),
                    reference: reference.replace("DIGEST", &digest),
                    digest: digest.clone(),
                    tag: String::new(),
                    config: String::new(),
                    image_id: String::new(),
                })
                .collect(),
        }
    }

    #[test]
    fn every_service_needs_an_image_by_digest() {
        let stack = stack();
        let all: Vec<(String, String)> = stack
            .services
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    format!("ghcr.io/org/ml-mlops/{}@DIGEST", s.name),
                )
            })
            .collect();
        let pairs: Vec<(&str, &str)> = all.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let references = record(&pairs).references(&stack).unwrap();
        assert_eq!(references.len(), stack.services.len());
        assert!(references["mlflow"].ends_with(&"a".repeat(64)));

        let error = record(&pairs[1..])
            .references(&stack)
            .unwrap_err()
            .to_string();
        assert!(error.contains("no image of mlflow"), "{error}");

        let mut by_tag = pairs.clone();
        by_tag[0].1 = "ghcr.io/org/ml-mlops/mlflow:1.0.0";
        let error = record(&by_tag).references(&stack).unwrap_err().to_string();
        assert!(error.contains("not REPOSITORY@sha256:"), "{error}");
    }
}

//! Model artifacts on disk: `model.json` (what `serve` loads) and `metrics.json` (what a human
//! or CI reads). Both are written to temporary files and renamed into place, so a failed or
//! interrupted run never leaves a half-written model behind.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub const MODEL_FILE: &str = "model.json";
pub const METRICS_FILE: &str = "metrics.json";
/// Bumped whenever the artifact layout changes incompatibly.
pub const FORMAT_VERSION: u32 = 1;

/// The envelope around a service's model.
#[derive(Serialize, Deserialize)]
pub struct Artifact<M> {
    pub service: String,
    pub format_version: u32,
    pub seed: u64,
    pub model: M,
}

/// A model read back from disk, with the version derived from its bytes.
pub struct Loaded<M> {
    pub model: M,
    pub version: String,
    pub path: PathBuf,
}

/// A short, stable fingerprint of the artifact bytes: the same training gives the same version.
pub fn fingerprint(bytes: &[u8]) -> String {
    // FNV-1a, 64 bit: stable across Rust releases, unlike `DefaultHasher`.
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")[..12].to_owned()
}

fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    tmp.write_all(bytes)?;
    // Temporary files are private (0600); a model is read by other users, e.g. a container's.
    set_readable(tmp.as_file())?;
    tmp.as_file().sync_all()?;
    let target = dir.join(name);
    tmp.persist(&target)
        .with_context(|| format!("cannot move the new {name} into {}", target.display()))?;
    Ok(())
}

/// Makes a new file readable by everyone (0644), as files normally are.
pub fn set_readable(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o644))
}

/// Saves the model and its metrics into `dir`, returning the model version.
pub fn save<M: Serialize>(
    dir: &Path,
    artifact: &Artifact<M>,
    metrics: &serde_json::Value,
) -> Result<String> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create model directory {}", dir.display()))?;
    let model_bytes = serde_json::to_vec(artifact)?;
    let version = fingerprint(&model_bytes);
    let mut metrics = metrics.clone();
    metrics["model_version"] = version.clone().into();
    write_atomically(dir, METRICS_FILE, &serde_json::to_vec_pretty(&metrics)?)?;
    // The model goes last: whoever sees the new model also finds its metrics.
    write_atomically(dir, MODEL_FILE, &model_bytes)?;
    Ok(version)
}

/// Loads the model from `dir`; `Ok(None)` when there is none yet.
pub fn load<M: DeserializeOwned>(dir: &Path, service: &str) -> Result<Option<Loaded<M>>> {
    let path = dir.join(MODEL_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let artifact: Artifact<M> = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a valid {service} model", path.display()))?;
    anyhow::ensure!(
        artifact.service == service,
        "{} holds a {} model, not a {service} model",
        path.display(),
        artifact.service
    );
    anyhow::ensure!(
        artifact.format_version == FORMAT_VERSION,
        "{} has artifact format {}, this build reads format {FORMAT_VERSION}: retrain the model",
        path.display(),
        artifact.format_version
    );
    Ok(Some(Loaded {
        model: artifact.model,
        version: fingerprint(&bytes),
        path,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_then_load_round_trips_and_versions_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let artifact = Artifact {
            service: "demo".into(),
            format_version: FORMAT_VERSION,
            seed: 1,
            model: vec![1.5, 2.5],
        };
        let v = save(dir.path(), &artifact, &serde_json::json!({"f1": 0.5})).unwrap();
        let loaded: Loaded<Vec<f64>> = load(dir.path(), "demo").unwrap().unwrap();
        assert_eq!(loaded.model, vec![1.5, 2.5]);
        assert_eq!(loaded.version, v);
        let metrics: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(METRICS_FILE)).unwrap()).unwrap();
        assert_eq!(metrics["model_version"], v.as_str());
        // No temporary files are left behind, and the files are readable by other users.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(MODEL_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
    }

    #[test]
    fn load_refuses_another_services_model() {
        let dir = tempfile::tempdir().unwrap();
        let artifact = Artifact {
            service: "other".into(),
            format_version: FORMAT_VERSION,
            seed: 1,
            model: 0,
        };
        save(dir.path(), &artifact, &serde_json::json!({})).unwrap();
        let err = load::<i32>(dir.path(), "demo").err().unwrap();
        assert!(err.to_string().contains("not a demo model"), "{err}");
        assert!(load::<i32>(&dir.path().join("absent"), "demo")
            .unwrap()
            .is_none());
    }
}

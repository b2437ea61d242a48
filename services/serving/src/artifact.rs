//! Model artifacts on disk, in the layout the crate docs describe: one directory per trained
//! version (`versions/<model_version>/` with `model.json` and `metrics.json`) and a `current`
//! symlink naming the served one. A version is staged in a dot-named directory, renamed into
//! place, and only then does `current` switch (a new symlink renamed over the old), so the
//! model and its metrics change together or not at all, whatever interrupts `train`.
//!
//! A version may hold more files beside the two (a dashboard's data, [`VersionFile`]): they
//! are staged and published with the model, and `metrics.json` records each one's SHA-256
//! under `version_files`, so a reader can tell that a file belongs to its model.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const MODEL_FILE: &str = "model.json";
pub const METRICS_FILE: &str = "metrics.json";
pub const VERSIONS_DIR: &str = "versions";
pub const CURRENT_LINK: &str = "current";
/// Everything `train` creates before it is complete starts with this (a dot-name).
pub const STAGING_PREFIX: &str = ".staging-";
/// Versions kept in `versions/`, the served one included.
pub const KEEP_VERSIONS: usize = 3;
/// Bumped whenever the artifact layout changes incompatibly.
pub const FORMAT_VERSION: u32 = 2;

/// The envelope around a service's model.
#[derive(Serialize, Deserialize)]
pub struct Artifact<M> {
    pub service: String,
    pub format_version: u32,
    pub seed: u64,
    /// The model's input features, in order.
    pub features: Vec<String>,
    pub model: M,
}

/// The key of `metrics.json` that maps each extra file of a version to its SHA-256.
pub const VERSION_FILES_KEY: &str = "version_files";

/// A file stored in a model version beside `model.json` and `metrics.json`.
#[derive(Debug, Clone)]
pub struct VersionFile {
    /// A plain file name (no folders), neither of the two the library writes.
    pub name: String,
    pub bytes: Vec<u8>,
}

impl VersionFile {
    pub fn new(name: impl Into<String>, bytes: Vec<u8>) -> Self {
        Self {
            name: name.into(),
            bytes,
        }
    }
}

/// `{name: sha256}` of `files`, as `metrics.json` records them under [`VERSION_FILES_KEY`].
pub fn describe_files(files: &[VersionFile]) -> serde_json::Value {
    files
        .iter()
        .map(|f| (f.name.clone(), sha256_hex(&f.bytes).into()))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn check_file_name(name: &str) -> Result<()> {
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && !name.contains(['/', '\\'])
        && name != MODEL_FILE
        && name != METRICS_FILE;
    anyhow::ensure!(
        plain,
        "{name:?} cannot be stored in a model version: a file needs a plain name other than {MODEL_FILE} and {METRICS_FILE}"
    );
    Ok(())
}

/// The SHA-256 of `bytes`, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// The SHA-256 of a file's contents, in hex, read in chunks.
pub fn file_sha256(path: &Path) -> Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 1 << 16];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// A model's version: a short fingerprint of its bytes, so the same training gives the same
/// version.
pub fn version_of(model_bytes: &[u8]) -> String {
    sha256_hex(model_bytes)[..12].to_owned()
}

/// Makes a new file readable by everyone (0644), as files normally are.
pub fn set_readable(file: &std::fs::File) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o644))
}

/// The steps of [`save`] that touch the disk; tests inject failures (a full disk) at each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Model,
    Metrics,
    Files,
    Publish,
    Link,
}

/// Saves the model, its metrics and `files` as a new version in `dir` and makes it the
/// current one; returns the model version. One training at a time per directory: a run
/// cleans up what an interrupted run left behind.
pub fn save<M: Serialize>(
    dir: &Path,
    artifact: &Artifact<M>,
    metrics: &serde_json::Value,
    files: &[VersionFile],
) -> Result<String> {
    save_with_faults(dir, artifact, metrics, files, &mut |_| Ok(()))
}

pub(crate) fn save_with_faults<M: Serialize>(
    dir: &Path,
    artifact: &Artifact<M>,
    metrics: &serde_json::Value,
    files: &[VersionFile],
    fault: &mut dyn FnMut(Step) -> io::Result<()>,
) -> Result<String> {
    save_steps(dir, artifact, metrics, files, fault).map_err(|e| explain_full_disk(e, dir))
}

/// A full disk is said in so many words, with the file system's free space and what to do:
/// the bare "No space left on device" names only a staging file that no longer exists.
fn explain_full_disk(error: anyhow::Error, dir: &Path) -> anyhow::Error {
    let full = error.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::StorageFull)
    });
    if !full {
        return error;
    }
    let space = disk_space(dir)
        .map(|(free, size)| format!(" ({} free of {})", bytes(free), bytes(size)))
        .unwrap_or_default();
    error.context(format!(
        "the disk holding {} is full{space}: free space there and train again; the served model and its files are unchanged",
        dir.display()
    ))
}

/// Free and total bytes of the file system holding `path`.
fn disk_space(path: &Path) -> Option<(u64, u64)> {
    let stat = rustix::fs::statvfs(path).ok()?;
    let block = stat.f_frsize.max(1);
    Some((
        stat.f_bavail.saturating_mul(block),
        stat.f_blocks.saturating_mul(block),
    ))
}

/// `512 B`, `1.5 KiB`, `2.0 MiB`, `3.2 GiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn save_steps<M: Serialize>(
    dir: &Path,
    artifact: &Artifact<M>,
    metrics: &serde_json::Value,
    files: &[VersionFile],
    fault: &mut dyn FnMut(Step) -> io::Result<()>,
) -> Result<String> {
    for file in files {
        check_file_name(&file.name)?;
    }
    let versions = dir.join(VERSIONS_DIR);
    std::fs::create_dir_all(&versions)
        .with_context(|| format!("cannot create model directory {}", versions.display()))?;
    remove_staging_leftovers(dir);

    let model_bytes = serde_json::to_vec(artifact)?;
    let version = version_of(&model_bytes);
    let mut metrics = metrics.clone();
    metrics["model_version"] = version.clone().into();
    if !files.is_empty() {
        metrics[VERSION_FILES_KEY] = describe_files(files);
    }

    // Removed on drop: every failure below leaves no staging directory behind.
    let staging = tempfile::Builder::new()
        .prefix(STAGING_PREFIX)
        .tempdir_in(dir)
        .with_context(|| format!("cannot create a staging directory in {}", dir.display()))?;
    let write =
        |name: &str, bytes: &[u8], step: Step, fault: &mut dyn FnMut(Step) -> io::Result<()>| {
            let path = staging.path().join(name);
            fault(step)
                .and_then(|()| write_file(&path, bytes))
                .with_context(|| format!("cannot write {}", path.display()))
        };
    write(MODEL_FILE, &model_bytes, Step::Model, fault)?;
    write(
        METRICS_FILE,
        &serde_json::to_vec_pretty(&metrics)?,
        Step::Metrics,
        fault,
    )?;
    for file in files {
        write(&file.name, &file.bytes, Step::Files, fault)?;
    }
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(staging.path(), std::fs::Permissions::from_mode(0o755))?;
    }

    let target = versions.join(&version);
    let existed = target.exists();
    fault(Step::Publish)
        .map_err(anyhow::Error::from)
        .and_then(|()| publish(staging.path(), &target, dir))
        .with_context(|| format!("cannot move the new model into {}", target.display()))?;
    sync_dir(&versions)?;
    if let Err(e) = fault(Step::Link)
        .map_err(anyhow::Error::from)
        .and_then(|()| point_current_at(dir, &version))
    {
        // Not served, so not kept: the directory is as it was before this run.
        if !existed {
            let _ = std::fs::remove_dir_all(&target);
        }
        return Err(e.context(format!(
            "cannot switch {} to the new model",
            dir.join(CURRENT_LINK).display()
        )));
    }
    prune_versions(dir, &version);
    Ok(version)
}

fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    set_readable(&file)?;
    file.sync_all()
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))
}

/// A fresh dot-name inside `dir` for a staging symlink or a directory on its way out.
fn staging_name(dir: &Path, what: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    dir.join(format!(
        "{STAGING_PREFIX}{what}-{}-{nanos}",
        std::process::id()
    ))
}

/// Renames the staged version into place. The same model trained again replaces its old
/// directory (the metrics may differ): the old one is moved aside first, since a directory
/// cannot be renamed over a non-empty one.
fn publish(staging: &Path, target: &Path, dir: &Path) -> Result<()> {
    match std::fs::rename(staging, target) {
        Ok(()) => Ok(()),
        Err(_) if target.is_dir() => {
            let old = staging_name(dir, "old");
            std::fs::rename(target, &old)?;
            std::fs::rename(staging, target)?;
            let _ = std::fs::remove_dir_all(&old);
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Replaces `dir/current` with a relative symlink to `versions/<version>`, atomically.
fn point_current_at(dir: &Path, version: &str) -> Result<()> {
    let link = staging_name(dir, "link");
    std::os::unix::fs::symlink(Path::new(VERSIONS_DIR).join(version), &link)?;
    if let Err(e) = std::fs::rename(&link, dir.join(CURRENT_LINK)) {
        let _ = std::fs::remove_file(&link);
        return Err(e.into());
    }
    sync_dir(dir)
}

/// Removes what an interrupted `train` (e.g. `kill -9`) left: staging directories and links.
fn remove_staging_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with(STAGING_PREFIX)
        {
            continue;
        }
        let path = entry.path();
        let removed = match entry.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
            _ => std::fs::remove_file(&path),
        };
        match removed {
            Ok(()) => {
                tracing::info!(path = %path.display(), "removed what an interrupted training left")
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a staging leftover")
            }
        }
    }
}

/// Keeps the served version and the newest others, [`KEEP_VERSIONS`] in all.
fn prune_versions(dir: &Path, served: &str) {
    let Ok(entries) = std::fs::read_dir(dir.join(VERSIONS_DIR)) else {
        return;
    };
    let mut others: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| e.file_name() != served)
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    others.sort_by_key(|(modified, _)| std::cmp::Reverse(*modified));
    for (_, path) in others.into_iter().skip(KEEP_VERSIONS - 1) {
        if let Err(e) = std::fs::remove_dir_all(&path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove an old model version");
        }
    }
}

/// The served version's files, read through one resolution of `current`, so the model and
/// its metrics always come from the same version.
pub struct Stored {
    pub model_bytes: Vec<u8>,
    pub metrics: serde_json::Value,
    pub version: String,
    /// The model file, through its version directory.
    pub path: PathBuf,
}

/// Reads the current version from `dir`; `Ok(None)` when nothing was trained there yet.
/// Only reads: `dir` may be mounted read-only.
pub fn read_current(dir: &Path) -> Result<Option<Stored>> {
    let link = dir.join(CURRENT_LINK);
    let target = match std::fs::read_link(&link) {
        Ok(target) => target,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            anyhow::ensure!(
                !dir.join(MODEL_FILE).exists(),
                "{} holds a model in an older layout (no `{CURRENT_LINK}` link): retrain it",
                dir.display()
            );
            return Ok(None);
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", link.display())),
    };
    let version_dir = dir.join(&target);
    let path = version_dir.join(MODEL_FILE);
    let model_bytes = std::fs::read(&path).with_context(|| {
        format!(
            "{} points to {}, which has no readable {MODEL_FILE}",
            link.display(),
            target.display()
        )
    })?;
    let metrics_path = version_dir.join(METRICS_FILE);
    let metrics: serde_json::Value = std::fs::read(&metrics_path)
        .map_err(anyhow::Error::from)
        .and_then(|b| Ok(serde_json::from_slice(&b)?))
        .with_context(|| format!("cannot read {}", metrics_path.display()))?;
    let version = version_of(&model_bytes);
    let folder = version_dir
        .file_name()
        .unwrap_or_default()
        .to_string_lossy();
    anyhow::ensure!(
        folder == version,
        "{} has version {version} but sits in folder {folder}: it was changed after training",
        path.display()
    );
    anyhow::ensure!(
        metrics["model_version"] == version.as_str(),
        "{} describes model {}, not {version}",
        metrics_path.display(),
        metrics["model_version"]
    );
    Ok(Some(Stored {
        model_bytes,
        metrics,
        version,
        path,
    }))
}

/// Reads the extra file `name` of the version in `version_dir` (whose `metrics.json` is
/// `metrics`), checking it is the very file `train` stored with that model.
pub fn read_version_file(
    version_dir: &Path,
    metrics: &serde_json::Value,
    name: &str,
) -> Result<Vec<u8>> {
    check_file_name(name)?;
    let path = version_dir.join(name);
    let Some(expected) = metrics[VERSION_FILES_KEY][name].as_str() else {
        anyhow::bail!(
            "model version {} has no {name}: it was trained by a build that did not store it; retrain the model",
            metrics["model_version"].as_str().unwrap_or("?")
        );
    };
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    anyhow::ensure!(
        sha256_hex(&bytes) == expected,
        "{} was changed after training: its SHA-256 is not the one {METRICS_FILE} records",
        path.display()
    );
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(model: Vec<f64>) -> Artifact<Vec<f64>> {
        Artifact {
            service: "demo".into(),
            format_version: FORMAT_VERSION,
            seed: 1,
            features: vec!["x".into()],
            model,
        }
    }

    /// Every file under `dir` with its contents, symlinks as their targets.
    fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_owned()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let t = e.file_type().unwrap();
                if t.is_symlink() {
                    let target = std::fs::read_link(e.path()).unwrap();
                    out.push((e.path(), target.into_os_string().into_encoded_bytes()));
                } else if t.is_dir() {
                    stack.push(e.path());
                } else {
                    out.push((e.path(), std::fs::read(e.path()).unwrap()));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn save_then_read_round_trips_in_the_versioned_layout() {
        let dir = tempfile::tempdir().unwrap();
        let v = save(
            dir.path(),
            &artifact(vec![1.5]),
            &serde_json::json!({"f1": 0.5}),
            &[],
        )
        .unwrap();
        let link = std::fs::read_link(dir.path().join(CURRENT_LINK)).unwrap();
        assert_eq!(link, Path::new(VERSIONS_DIR).join(&v), "a relative link");
        let stored = read_current(dir.path()).unwrap().unwrap();
        assert_eq!(stored.version, v);
        assert_eq!(stored.metrics["model_version"], v.as_str());
        assert_eq!(stored.metrics["f1"], 0.5);
        let back: Artifact<Vec<f64>> = serde_json::from_slice(&stored.model_bytes).unwrap();
        assert_eq!(back.model, vec![1.5]);
        // Nothing but `versions` and `current`, and files readable by other users.
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, [CURRENT_LINK, VERSIONS_DIR]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&stored.path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
    }

    #[test]
    fn keeps_the_last_three_versions_and_the_same_model_again_is_one_version() {
        let dir = tempfile::tempdir().unwrap();
        let mut versions = Vec::new();
        let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(100);
        for i in 0..5u8 {
            let version = save(
                dir.path(),
                &artifact(vec![f64::from(i)]),
                &serde_json::json!({}),
                &[],
            )
            .unwrap();
            // Modification times a second apart, as trainings a while apart would leave.
            std::fs::File::open(dir.path().join(VERSIONS_DIR).join(&version))
                .unwrap()
                .set_modified(long_ago + std::time::Duration::from_secs(i.into()))
                .unwrap();
            versions.push(version);
        }
        let again = save(
            dir.path(),
            &artifact(vec![4.0]),
            &serde_json::json!({"again": true}),
            &[],
        )
        .unwrap();
        assert_eq!(again, versions[4]);
        let mut kept: Vec<_> = std::fs::read_dir(dir.path().join(VERSIONS_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        kept.sort();
        let mut expected = versions[2..].to_vec();
        expected.sort();
        assert_eq!(kept, expected);
        assert_eq!(
            read_current(dir.path()).unwrap().unwrap().metrics["again"],
            true
        );
    }

    #[test]
    fn a_failure_at_any_step_leaves_the_old_model_and_no_staging_files() {
        for step in [
            Step::Model,
            Step::Metrics,
            Step::Files,
            Step::Publish,
            Step::Link,
        ] {
            let dir = tempfile::tempdir().unwrap();
            let old = save(
                dir.path(),
                &artifact(vec![1.0]),
                &serde_json::json!({"n": 1}),
                &[],
            )
            .unwrap();
            let before = snapshot(dir.path());
            let err = save_with_faults(
                dir.path(),
                &artifact(vec![2.0]),
                &serde_json::json!({"n": 2}),
                &[VersionFile::new("data.csv", b"a,b\n".to_vec())],
                &mut |at| {
                    if at == step {
                        Err(io::Error::from_raw_os_error(28)) // ENOSPC: the disk is full
                    } else {
                        Ok(())
                    }
                },
            )
            .unwrap_err();
            let message = format!("{err:#}");
            assert!(message.contains("No space left"), "{step:?}: {message}");
            assert!(
                message.starts_with(&format!(
                    "the disk holding {} is full (",
                    dir.path().display()
                )) && message.contains("the served model and its files are unchanged"),
                "{step:?}: {message}"
            );
            assert_eq!(
                snapshot(dir.path()),
                before,
                "{step:?} changed the model directory"
            );
            assert_eq!(read_current(dir.path()).unwrap().unwrap().version, old);
        }
    }

    #[test]
    fn sizes_read_as_binary_units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(2 << 20), "2.0 MiB");
        assert_eq!(bytes(1536), "1.5 KiB");
        let (free, size) = disk_space(Path::new("/")).unwrap();
        assert!(free <= size && size > 0);
    }

    #[test]
    fn leftovers_of_a_killed_training_are_removed_by_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join(".staging-abc123");
        std::fs::create_dir_all(&stale).unwrap();
        std::fs::write(stale.join(MODEL_FILE), vec![b'x'; 1000]).unwrap();
        std::os::unix::fs::symlink("versions/gone", dir.path().join(".staging-link-1-2")).unwrap();
        save(
            dir.path(),
            &artifact(vec![1.0]),
            &serde_json::json!({}),
            &[],
        )
        .unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
    }

    #[test]
    fn a_model_changed_after_training_or_mismatched_metrics_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let v = save(
            dir.path(),
            &artifact(vec![1.0]),
            &serde_json::json!({}),
            &[],
        )
        .unwrap();
        let version_dir = dir.path().join(VERSIONS_DIR).join(&v);
        std::fs::write(
            version_dir.join(METRICS_FILE),
            r#"{"model_version": "000000000000"}"#,
        )
        .unwrap();
        let err = read_current(dir.path()).err().unwrap();
        assert!(err.to_string().contains("not "), "{err}");
        std::fs::write(version_dir.join(MODEL_FILE), b"{}").unwrap();
        let err = read_current(dir.path()).err().unwrap();
        assert!(err.to_string().contains("changed after training"), "{err}");
    }

    #[test]
    fn extra_files_are_published_with_their_model_and_checked_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let data = VersionFile::new("data.csv", b"price\n9400\n".to_vec());
        let v = save(
            dir.path(),
            &artifact(vec![1.0]),
            &serde_json::json!({}),
            std::slice::from_ref(&data),
        )
        .unwrap();
        let stored = read_current(dir.path()).unwrap().unwrap();
        let version_dir = stored.path.parent().unwrap();
        assert_eq!(
            read_version_file(version_dir, &stored.metrics, "data.csv").unwrap(),
            data.bytes
        );
        assert_eq!(
            stored.metrics[VERSION_FILES_KEY]["data.csv"],
            sha256_hex(&data.bytes).as_str()
        );

        // A version without the file says so; an edited file is refused.
        let err = read_version_file(version_dir, &stored.metrics, "other.csv").unwrap_err();
        assert!(err.to_string().contains("retrain"), "{err}");
        std::fs::write(version_dir.join("data.csv"), b"price\n1\n").unwrap();
        let err = read_version_file(version_dir, &stored.metrics, "data.csv").unwrap_err();
        assert!(err.to_string().contains("changed after training"), "{err}");

        // A new model replaces the file with its own, and an old one keeps its file.
        let w = save(
            dir.path(),
            &artifact(vec![2.0]),
            &serde_json::json!({}),
            &[VersionFile::new("data.csv", b"price\n1\n".to_vec())],
        )
        .unwrap();
        assert_ne!(v, w);
        let stored = read_current(dir.path()).unwrap().unwrap();
        let bytes =
            read_version_file(stored.path.parent().unwrap(), &stored.metrics, "data.csv").unwrap();
        assert_eq!(bytes, b"price\n1\n");

        for bad in ["", ".hidden", "../x", "a/b", MODEL_FILE, METRICS_FILE] {
            let err = save(
                dir.path(),
                &artifact(vec![3.0]),
                &serde_json::json!({}),
                &[VersionFile::new(bad, Vec::new())],
            )
            .unwrap_err();
            assert!(err.to_string().contains("plain name"), "{bad}: {err}");
        }
    }

    #[test]
    fn nothing_trained_yet_and_the_old_layout() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_current(dir.path()).unwrap().is_none());
        assert!(read_current(&dir.path().join("absent")).unwrap().is_none());
        std::fs::write(dir.path().join(MODEL_FILE), b"{}").unwrap();
        let err = read_current(dir.path()).err().unwrap();
        assert!(err.to_string().contains("older layout"), "{err}");
    }

    #[test]
    fn sha256_of_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc.txt");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(
            file_sha256(&path).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}

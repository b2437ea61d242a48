//! The backup archive: a gzipped tar whose first entry, `manifest.json`, lists every file with
//! its size and SHA-256 and every symlink with its target. Reading verifies all of it into a
//! staging folder, so `restore` knows the archive is whole before it touches anything.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const MANIFEST: &str = "manifest.json";
/// Where the MLflow database stands in an archive (and in the stack directory).
pub const DATABASE: &str = "mlruns/mlflow.db";
/// Where a PostgreSQL store's dump (`pg_dump --format=custom`) stands in an archive.
pub const PG_DUMP: &str = "mlruns/mlflow.pgdump";
/// What a backup holds and a restore replaces, relative to the stack directory.
pub const CONTENTS: [&str; 3] = [DATABASE, ARTIFACTS, MODELS];
/// What a restore moves into place as files on a PostgreSQL store (the database itself is
/// replaced by `pg_restore`).
pub const CONTENTS_BESIDE_POSTGRES: [&str; 2] = [ARTIFACTS, MODELS];

/// The manifest's `backend` of archives made before it was written: SQLite's.
fn sqlite_backend() -> String {
    "sqlite".to_owned()
}
const FORMAT: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: u32,
    /// UTC, RFC 3339.
    pub created: String,
    pub toolkit_version: String,
    /// Which store the archive holds: `sqlite` (`mlruns/mlflow.db`) or `postgresql`
    /// (`mlruns/mlflow.pgdump`).
    #[serde(default = "sqlite_backend")]
    pub backend: String,
    pub files: Vec<FileEntry>,
    pub links: Vec<LinkEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileEntry {
    /// Relative to the stack directory, `/`-separated.
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LinkEntry {
    pub path: String,
    /// Relative to the link's folder (e.g. `current -> versions/3f2a9c1e0b4d`).
    pub target: String,
}

/// A timestamp for the names of backups and of what they set aside: `20261127T120000Z`.
pub fn stamp() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace(['-', ':'], "")
}

impl Manifest {
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// What goes into an archive: a file or a folder on disk, and its path in the archive.
pub struct Source {
    pub archive_path: String,
    pub disk_path: PathBuf,
}

/// Files and symlinks under `source`, skipping names that start with `skip_prefix` (staging
/// leftovers of an interrupted training).
fn collect(
    source: &Source,
    skip_prefix: &str,
    files: &mut Vec<(String, PathBuf)>,
    links: &mut Vec<LinkEntry>,
) -> Result<()> {
    let meta = std::fs::symlink_metadata(&source.disk_path)
        .with_context(|| format!("cannot read {}", source.disk_path.display()))?;
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(&source.disk_path)?;
        links.push(LinkEntry {
            path: source.archive_path.clone(),
            target: target.to_string_lossy().into_owned(),
        });
    } else if meta.is_dir() {
        let mut entries: Vec<_> =
            std::fs::read_dir(&source.disk_path)?.collect::<std::io::Result<_>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(skip_prefix) {
                continue;
            }
            let child = Source {
                archive_path: format!("{}/{name}", source.archive_path),
                disk_path: entry.path(),
            };
            collect(&child, skip_prefix, files, links)?;
        }
    } else {
        files.push((source.archive_path.clone(), source.disk_path.clone()));
    }
    Ok(())
}

/// Whether `out` may receive a new archive: nothing is there yet, in a folder that exists;
/// or, with `replace`, a regular file is there. Anything else (a device, a folder, a link, a
/// socket) is never replaced.
pub fn check_destination(out: &Path, replace: bool) -> Result<()> {
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        bail!(
            "{} is not an existing folder: create it, or write the archive elsewhere",
            dir.display()
        );
    }
    match std::fs::symlink_metadata(out) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot look at {}", out.display())),
        Ok(meta) if meta.file_type().is_file() => {
            if replace {
                Ok(())
            } else {
                bail!(
                    "{} exists: choose a new file name, or pass --force to replace it",
                    out.display()
                )
            }
        }
        Ok(meta) => bail!(
            "{} is {}, not a regular file: an archive never replaces it; choose a new file name",
            out.display(),
            describe_type(&meta.file_type())
        ),
    }
}

/// What kind of thing a path is, in words ("a folder", "a character device").
pub fn describe_type(kind: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_dir() {
        "a folder"
    } else if kind.is_symlink() {
        "a symbolic link"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_fifo() {
        "a named pipe"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_file() {
        "a regular file"
    } else {
        "a special file"
    }
}

/// Writes `out` (atomically: a failed backup leaves no half archive) from `sources`. `out`
/// must pass [`check_destination`] with `replace`; without `replace`, a file that appears
/// there meanwhile is not replaced either. What would not pass [`check_layout`] for `apis`
/// (a stray file in a model folder, say) is refused before anything is written: a backup
/// that restore would refuse is no backup.
pub fn write(
    out: &Path,
    sources: &[Source],
    skip_prefix: &str,
    created: &str,
    replace: bool,
    apis: &[&str],
) -> Result<Manifest> {
    write_archive(out, sources, skip_prefix, created, replace, Some(apis))
}

/// [`write`], checking the layout only with `apis` (tests write archives restore refuses).
fn write_archive(
    out: &Path,
    sources: &[Source],
    skip_prefix: &str,
    created: &str,
    replace: bool,
    apis: Option<&[&str]>,
) -> Result<Manifest> {
    check_destination(out, replace)?;
    let (mut files, mut links) = (Vec::new(), Vec::new());
    for source in sources {
        collect(source, skip_prefix, &mut files, &mut links)?;
    }
    let mut manifest = Manifest {
        format: FORMAT,
        created: created.to_owned(),
        toolkit_version: env!("CARGO_PKG_VERSION").to_owned(),
        backend: if sources.iter().any(|s| s.archive_path == PG_DUMP) {
            "postgresql".to_owned()
        } else {
            sqlite_backend()
        },
        files: Vec::new(),
        links,
    };
    if let Some(apis) = apis {
        let listed = Manifest {
            files: files
                .iter()
                .map(|(path, _)| FileEntry {
                    path: path.clone(),
                    size: 0,
                    sha256: String::new(),
                })
                .collect(),
            ..manifest.clone()
        };
        check_layout(&listed, apis).context(
            "the stack holds something a restore would refuse, so no backup was written; move it out of the stack's folders and back up again",
        )?;
    }
    for (path, disk) in &files {
        let (size, sha256) = hash_file(disk)?;
        manifest.files.push(FileEntry {
            path: path.clone(),
            size,
            sha256,
        });
    }
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".backup-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    {
        let gz = flate2::write::GzEncoder::new(tmp.as_file(), flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        tar.follow_symlinks(false);
        let manifest_bytes = serde_json::to_vec_pretty(&manifest)?;
        append_bytes(&mut tar, MANIFEST, &manifest_bytes)?;
        for ((path, disk), entry) in files.iter().zip(&manifest.files) {
            let mut file = std::fs::File::open(disk)?;
            let mut header = tar::Header::new_gnu();
            header.set_size(entry.size);
            header.set_mode(0o644);
            header.set_cksum();
            // The size hashed is the size written: a file that grows meanwhile is cut to it.
            tar.append_data(&mut header, path, (&mut file).take(entry.size))
                .with_context(|| format!("cannot archive {}", disk.display()))?;
        }
        for link in &manifest.links {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            header.set_mode(0o777);
            tar.append_link(&mut header, &link.path, &link.target)?;
        }
        tar.into_inner()?.finish()?;
    }
    tmp.as_file().sync_all()?;
    if replace {
        // Checked again just before: only a regular file is ever replaced.
        check_destination(out, replace)?;
        tmp.persist(out)
            .with_context(|| format!("cannot write {}", out.display()))?;
    } else {
        tmp.persist_noclobber(out)
            .with_context(|| format!("cannot write {} (nothing was replaced)", out.display()))?;
    }
    Ok(manifest)
}

fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, path: &str, bytes: &[u8]) -> Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, path, bytes)?;
    Ok(())
}

/// Size and SHA-256 of a file, read in chunks.
pub fn hash_file(path: &Path) -> Result<(u64, String)> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hasher = HashingWriter::new(std::io::sink());
    let size = std::io::copy(&mut file, &mut hasher)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok((size, hasher.hex()))
}

/// Hashes what passes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
        }
    }

    fn hex(self) -> String {
        format!("{:x}", self.hasher.finalize())
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A relative path of normal components only (no `..`, no root): where an entry may go.
fn safe_relative(path: &str) -> Result<PathBuf> {
    let p = Path::new(path);
    if path.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
        bail!("the archive names an unsafe path {path:?}");
    }
    Ok(p.to_owned())
}

/// Where the models of the APIs stand in an archive (and in the stack directory).
pub const MODELS: &str = "models";
/// Where MLflow's artifacts stand in an archive.
pub const ARTIFACTS: &str = "mlruns/artifacts";
/// The link in an API's model folder that names the served version.
pub const CURRENT: &str = "current";

/// Checks that `manifest` lists exactly what a backup of a stack whose APIs are `apis` holds:
/// the database and each API's `current` model link, and besides them only MLflow's artifacts
/// and those APIs' model versions. Says everything that is missing or too much.
pub fn check_layout(manifest: &Manifest, apis: &[&str]) -> Result<()> {
    let required_link = |api: &str| format!("{MODELS}/{api}/{CURRENT}");
    let database = match manifest.backend.as_str() {
        "postgresql" => PG_DUMP,
        "sqlite" => DATABASE,
        other => bail!("it holds a {other:?} store, which this toolkit does not know"),
    };
    let allowed = |path: &str, is_link: bool| {
        if path == database {
            return !is_link;
        }
        if path
            .strip_prefix(ARTIFACTS)
            .is_some_and(|rest| rest.starts_with('/'))
        {
            return true;
        }
        apis.iter().any(|api| {
            (is_link && path == required_link(api))
                || path
                    .strip_prefix(&format!("{MODELS}/{api}/versions/"))
                    .is_some_and(|rest| !rest.is_empty())
        })
    };
    let files: HashSet<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    let links: HashSet<&str> = manifest.links.iter().map(|l| l.path.as_str()).collect();
    let mut missing = Vec::new();
    if !files.contains(database) {
        missing.push(format!("MLflow's database ({database})"));
    }
    for api in apis {
        if !links.contains(required_link(api).as_str()) {
            missing.push(format!("{api}'s model ({})", required_link(api)));
        }
    }
    let mut extra: Vec<&str> = files
        .iter()
        .filter(|p| !allowed(p, false))
        .chain(links.iter().filter(|p| !allowed(p, true)))
        .copied()
        .collect();
    extra.sort_unstable();
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!("it lacks {}", missing.join(", ")));
    }
    if !extra.is_empty() {
        let shown = extra.len().min(5);
        problems.push(format!(
            "it holds {} path(s) a backup of this stack never writes: {}{}",
            extra.len(),
            extra[..shown].join(", "),
            if extra.len() > shown { ", ..." } else { "" }
        ));
    }
    if !problems.is_empty() {
        bail!(
            "not a whole backup of this stack (MLflow's store and the models of {}): {}",
            apis.join(", "),
            problems.join("; ")
        );
    }
    Ok(())
}

/// Reads `archive` into the empty folder `staging`, verifying every file against the
/// manifest (size and SHA-256), that nothing is missing or added, that every path stays
/// inside, and, before extracting anything, that the manifest lists exactly what a backup of
/// a stack with `apis` holds ([`check_layout`]). Any problem is an error; the caller deletes
/// `staging`.
/// The archive must hold a store of the `backend` kind (`sqlite`, `postgresql`).
pub fn extract_verified(
    archive: &Path,
    staging: &Path,
    apis: &[&str],
    backend: &str,
) -> Result<Manifest> {
    let file = std::fs::File::open(archive)
        .with_context(|| format!("cannot open {}", archive.display()))?;
    let corrupt =
        |e: std::io::Error| anyhow::anyhow!("{} is truncated or corrupt: {e}", archive.display());
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut entries = tar.entries().map_err(corrupt)?;
    let manifest: Manifest = {
        let mut first = entries
            .next()
            .context("the archive is empty")?
            .map_err(corrupt)?;
        let name = first
            .path()
            .map_err(corrupt)?
            .to_string_lossy()
            .into_owned();
        if name != MANIFEST {
            bail!(
                "{} is not a backup of this toolkit: it does not start with {MANIFEST}",
                archive.display()
            );
        }
        let mut text = Vec::new();
        first.read_to_end(&mut text).map_err(corrupt)?;
        serde_json::from_slice(&text)
            .with_context(|| format!("{}: its {MANIFEST} is not valid", archive.display()))?
    };
    if manifest.format != FORMAT {
        bail!(
            "{} has backup format {}; this toolkit reads format {FORMAT}",
            archive.display(),
            manifest.format
        );
    }
    if manifest.backend != backend {
        bail!(
            "{} holds a {} MLflow store, and this stack's MLflow runs on {backend}: restore it \
             into a stack on the same kind of store ({}), or back up this one instead",
            archive.display(),
            manifest.backend,
            if manifest.backend == "postgresql" {
                "--mlflow-backend postgresql://..."
            } else {
                "without --mlflow-backend"
            }
        );
    }
    check_layout(&manifest, apis).with_context(|| format!("{} is refused", archive.display()))?;
    // Looked up once per entry: an archive of MLflow's artifacts can hold many files.
    let files: HashMap<&str, &FileEntry> = manifest
        .files
        .iter()
        .map(|f| (f.path.as_str(), f))
        .collect();
    let links: HashMap<&str, &LinkEntry> = manifest
        .links
        .iter()
        .map(|l| (l.path.as_str(), l))
        .collect();
    let mut seen_files = HashSet::new();
    let mut seen_links = HashSet::new();
    for entry in entries {
        let mut entry = entry.map_err(corrupt)?;
        let name = entry
            .path()
            .map_err(corrupt)?
            .to_string_lossy()
            .into_owned();
        let relative = safe_relative(&name)?;
        let target = staging.join(&relative);
        std::fs::create_dir_all(target.parent().expect("a joined path has a parent"))?;
        match entry.header().entry_type() {
            tar::EntryType::Regular => {
                let expected = files
                    .get(name.as_str())
                    .with_context(|| format!("{name} is in the archive but not in its manifest"))?;
                let mut out = HashingWriter::new(std::fs::File::create(&target)?);
                let size = std::io::copy(&mut entry, &mut out).map_err(corrupt)?;
                let sha256 = out.hex();
                if size != expected.size || sha256 != expected.sha256 {
                    bail!(
                        "{name} does not match the manifest (size {size}, SHA-256 {sha256}; expected {} and {}): the archive was changed after it was written",
                        expected.size,
                        expected.sha256
                    );
                }
                seen_files.insert(name);
            }
            tar::EntryType::Symlink => {
                let link_target = entry
                    .link_name()
                    .map_err(corrupt)?
                    .context("a symlink without a target")?
                    .to_string_lossy()
                    .into_owned();
                let expected = links
                    .get(name.as_str())
                    .with_context(|| format!("{name} is in the archive but not in its manifest"))?;
                if expected.target != link_target {
                    bail!(
                        "{name} points to {link_target:?}, the manifest says {:?}",
                        expected.target
                    );
                }
                // The target stays inside the folder the link lives in.
                safe_relative(&link_target)?;
                std::os::unix::fs::symlink(&link_target, &target)?;
                seen_links.insert(name);
            }
            other => bail!("{name}: unexpected entry type {other:?} in the archive"),
        }
    }
    let missing: Vec<&str> = manifest
        .files
        .iter()
        .map(|f| f.path.as_str())
        .filter(|p| !seen_files.contains(*p))
        .chain(
            manifest
                .links
                .iter()
                .map(|l| l.path.as_str())
                .filter(|p| !seen_links.contains(*p)),
        )
        .collect();
    if !missing.is_empty() {
        bail!(
            "{} is incomplete: the manifest lists {} that the archive lacks",
            archive.display(),
            missing.join(", ")
        );
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder like a stack's: a database, artifacts, a versioned model with `current`.
    fn stack_like(root: &Path) {
        std::fs::create_dir_all(root.join("mlruns/artifacts/1/abc")).unwrap();
        std::fs::write(root.join("mlruns/mlflow.db"), b"SQLite format 3\0 pretend").unwrap();
        std::fs::write(root.join("mlruns/artifacts/1/abc/model.json"), b"{\"m\":1}").unwrap();
        std::fs::create_dir_all(root.join("models/api/versions/v1")).unwrap();
        std::fs::write(root.join("models/api/versions/v1/model.json"), b"{}").unwrap();
        std::os::unix::fs::symlink("versions/v1", root.join("models/api/current")).unwrap();
        std::fs::create_dir_all(root.join("models/api/.staging-x")).unwrap();
    }

    fn sources(root: &Path) -> Vec<Source> {
        ["mlruns/mlflow.db", "mlruns/artifacts", "models"]
            .iter()
            .map(|p| Source {
                archive_path: p.to_string(),
                disk_path: root.join(p),
            })
            .collect()
    }

    fn backup() -> (tempfile::TempDir, PathBuf, Manifest) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("stack");
        stack_like(&root);
        let out = dir.path().join("backup.tar.gz");
        let manifest = write(
            &out,
            &sources(&root),
            ".staging-",
            "2026-11-27T12:00:00Z",
            false,
            &["api"],
        )
        .unwrap();
        (dir, out, manifest)
    }

    #[test]
    fn a_backup_restore_would_refuse_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("stack");
        stack_like(&root);
        std::fs::write(root.join("models/api/notes.txt"), b"mine").unwrap();
        let out = dir.path().join("backup.tar.gz");
        let err = write(&out, &sources(&root), ".staging-", "now", false, &["api"]).unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.contains("no backup was written") && err.contains("models/api/notes.txt"),
            "{err}"
        );
        assert!(!out.exists());
    }

    #[test]
    fn a_backup_round_trips_files_links_and_checksums() {
        let (dir, out, manifest) = backup();
        let paths: Vec<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "mlruns/mlflow.db",
                "mlruns/artifacts/1/abc/model.json",
                "models/api/versions/v1/model.json"
            ]
        );
        assert_eq!(manifest.links[0].target, "versions/v1");
        let staging = dir.path().join("restored");
        std::fs::create_dir(&staging).unwrap();
        let read = extract_verified(&out, &staging, &["api"], "sqlite").unwrap();
        assert_eq!(read, manifest);
        assert_eq!(
            std::fs::read(staging.join("models/api/current/model.json")).unwrap(),
            b"{}"
        );
        assert!(!staging.join("models/api/.staging-x").exists());
    }

    #[test]
    fn an_archive_restores_only_onto_its_kind_of_store() {
        let (dir, sqlite_archive, manifest) = backup();
        assert_eq!(manifest.backend, "sqlite");
        let staging = dir.path().join("restored");
        std::fs::create_dir(&staging).unwrap();
        let err = format!(
            "{:#}",
            extract_verified(&sqlite_archive, &staging, &["api"], "postgresql").unwrap_err()
        );
        assert!(
            err.contains("holds a sqlite MLflow store") && err.contains("without --mlflow-backend"),
            "{err}"
        );
        // A PostgreSQL stack's backup: the dump in place of mlflow.db.
        let root = dir.path().join("stack");
        std::fs::rename(root.join(DATABASE), root.join(PG_DUMP)).unwrap();
        let mut postgres_sources = sources(&root);
        postgres_sources[0] = Source {
            archive_path: PG_DUMP.into(),
            disk_path: root.join(PG_DUMP),
        };
        let out = dir.path().join("postgres.tar.gz");
        let written = write(&out, &postgres_sources, ".staging-", "now", false, &["api"]).unwrap();
        assert_eq!(written.backend, "postgresql");
        let err = format!(
            "{:#}",
            extract_verified(&out, &staging, &["api"], "sqlite").unwrap_err()
        );
        assert!(
            err.contains("holds a postgresql MLflow store")
                && err.contains("--mlflow-backend postgresql://"),
            "{err}"
        );
        assert_eq!(
            extract_verified(&out, &staging, &["api"], "postgresql").unwrap(),
            written
        );
    }

    #[test]
    fn a_truncated_archive_is_refused() {
        let (dir, out, _) = backup();
        let bytes = std::fs::read(&out).unwrap();
        std::fs::write(&out, &bytes[..bytes.len() / 2]).unwrap();
        let staging = dir.path().join("restored");
        std::fs::create_dir(&staging).unwrap();
        let err = extract_verified(&out, &staging, &["api"], "sqlite")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("truncated or corrupt") || err.contains("incomplete"),
            "{err}"
        );
    }

    #[test]
    fn a_changed_file_is_refused_by_its_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("stack");
        stack_like(&root);
        let out = dir.path().join("backup.tar.gz");
        write_archive(&out, &sources(&root), ".staging-", "now", false, None).unwrap();
        // Rewrite the archive with one byte of one file changed but the manifest kept: a
        // tampered archive whose gzip and tar framing are valid.
        let staging = dir.path().join("first");
        std::fs::create_dir(&staging).unwrap();
        let manifest = extract_verified(&out, &staging, &["api"], "sqlite").unwrap();
        std::fs::write(
            staging.join("mlruns/mlflow.db"),
            b"SQLite format 3\0 pretenD",
        )
        .unwrap();
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&out).unwrap(),
            flate2::Compression::fast(),
        );
        let mut tar = tar::Builder::new(gz);
        append_bytes(&mut tar, MANIFEST, &serde_json::to_vec(&manifest).unwrap()).unwrap();
        for f in &manifest.files {
            append_bytes(
                &mut tar,
                &f.path,
                &std::fs::read(staging.join(&f.path)).unwrap(),
            )
            .unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap();
        let again = dir.path().join("second");
        std::fs::create_dir(&again).unwrap();
        let err = extract_verified(&out, &again, &["api"], "sqlite")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("mlruns/mlflow.db does not match the manifest"),
            "{err}"
        );
    }

    #[test]
    fn an_existing_file_is_replaced_only_when_asked() {
        let (dir, out, _) = backup();
        std::fs::write(&out, b"keep me").unwrap();
        let root = dir.path().join("stack");
        let err = write_archive(&out, &sources(&root), ".staging-", "now", false, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("exists") && err.contains("--force"), "{err}");
        assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
        write_archive(&out, &sources(&root), ".staging-", "now", true, None).unwrap();
        let staging = dir.path().join("restored");
        std::fs::create_dir(&staging).unwrap();
        extract_verified(&out, &staging, &["api"], "sqlite").unwrap();
    }

    #[test]
    fn what_is_not_a_regular_file_is_never_replaced() {
        use std::os::unix::fs::FileTypeExt;
        let (dir, _, _) = backup();
        let root = dir.path().join("stack");
        // A socket, a folder, a link and a device stand where the archive would go.
        let socket = dir.path().join("socket.tar.gz");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let folder = dir.path().join("folder.tar.gz");
        std::fs::create_dir(&folder).unwrap();
        let link = dir.path().join("link.tar.gz");
        std::fs::write(dir.path().join("target"), b"kept").unwrap();
        std::os::unix::fs::symlink("target", &link).unwrap();
        for (out, kind) in [
            (&socket, "a socket"),
            (&folder, "a folder"),
            (&link, "a symbolic link"),
            (&PathBuf::from("/dev/null"), "a character device"),
        ] {
            for replace in [false, true] {
                let err = write_archive(out, &sources(&root), ".staging-", "now", replace, None)
                    .unwrap_err()
                    .to_string();
                assert!(
                    err.contains(&format!("is {kind}, not a regular file")),
                    "{err}"
                );
            }
        }
        assert!(std::fs::symlink_metadata(&socket)
            .unwrap()
            .file_type()
            .is_socket());
        assert!(folder.is_dir());
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(dir.path().join("target")).unwrap(), b"kept");
        // No temporary file is left beside them.
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".backup-"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_missing_folder_is_not_created() {
        let (dir, _, _) = backup();
        let root = dir.path().join("stack");
        let out = dir.path().join("no/such/folder/backup.tar.gz");
        let err = write_archive(&out, &sources(&root), ".staging-", "now", true, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not an existing folder"), "{err}");
        assert!(!dir.path().join("no").exists());
    }

    /// The error of restoring an archive written from `sources` for the APIs `apis`.
    fn refusal(sources: &[Source], apis: &[&str]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("backup.tar.gz");
        write_archive(&out, sources, ".staging-", "now", false, None).unwrap();
        let staging = dir.path().join("restored");
        std::fs::create_dir(&staging).unwrap();
        let err = format!(
            "{:#}",
            extract_verified(&out, &staging, apis, "sqlite").unwrap_err()
        );
        // Refused before anything was extracted.
        assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0, "{err}");
        err
    }

    #[test]
    fn a_partial_archive_is_refused_before_anything_is_extracted() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("stack");
        stack_like(&root);
        let all = sources(&root);
        let without_database: Vec<Source> = sources(&root).into_iter().skip(1).collect();
        let err = refusal(&without_database, &["api"]);
        assert!(err.contains("it lacks MLflow's database"), "{err}");
        let without_models: Vec<Source> = sources(&root).into_iter().take(2).collect();
        let err = refusal(&without_models, &["api"]);
        assert!(
            err.contains("it lacks api's model (models/api/current)"),
            "{err}"
        );
        // A stack with a second API: the archive lacks its model.
        let err = refusal(&all, &["api", "other"]);
        assert!(err.contains("it lacks other's model"), "{err}");
        assert!(!err.contains("api's model"), "{err}");
    }

    #[test]
    fn an_over_full_archive_is_refused_before_anything_is_extracted() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("stack");
        stack_like(&root);
        std::fs::write(root.join("notes.txt"), b"x").unwrap();
        std::fs::write(root.join("mlruns/mlflow.db-journal"), b"x").unwrap();
        std::fs::create_dir_all(root.join("models/stranger/versions/v1")).unwrap();
        std::fs::write(root.join("models/stranger/versions/v1/model.json"), b"{}").unwrap();
        std::fs::write(root.join("models/api/loose.json"), b"{}").unwrap();
        let mut with_extra = sources(&root);
        for p in ["notes.txt", "mlruns/mlflow.db-journal"] {
            with_extra.push(Source {
                archive_path: p.into(),
                disk_path: root.join(p),
            });
        }
        let err = refusal(&with_extra, &["api"]);
        assert!(err.contains("it holds 4 path(s) a backup of this stack never writes: mlruns/mlflow.db-journal, models/api/loose.json, models/stranger/versions/v1/model.json, notes.txt"), "{err}");
        assert!(!err.contains("it lacks"), "{err}");
    }

    #[test]
    fn paths_that_escape_are_refused() {
        assert!(safe_relative("models/a/model.json").is_ok());
        assert!(safe_relative("../etc/passwd").is_err());
        assert!(safe_relative("/etc/passwd").is_err());
        assert!(safe_relative("models/../../x").is_err());
    }
}

//! The OCI image layout inside a `docker save` archive (Docker 25 and later), unpacked for
//! Trivy.
//!
//! Trivy opens a `docker save` archive as go-containerregistry's `tarball` does, which judges
//! from the first layer alone whether every layer is compressed. On the containerd image
//! store one archive can hold both: a base image loaded from an archive of the classic store
//! keeps its layer uncompressed as it was loaded, while BuildKit's layers above it are gzip.
//! Trivy then reads gzip as tar and stops ("archive/tar: invalid tar header"). Read as an OCI
//! layout, each layer is decompressed according to what it is. So the layout is unpacked as
//! it stands in the archive (its `oci-layout`, `index.json` and blobs) and every blob is
//! checked against its digest while it is written: what Trivy reads is the image the archive
//! holds, byte for byte.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// Unpacks the OCI layout of the archive `tar` into the new folder `into` (replacing what is
/// there); returns how many blobs it holds. Fails on a blob whose content is not its digest,
/// and on an archive without a layout, leaving no folder behind (it may hold gigabytes).
pub fn unpack(tar: &Path, into: &Path) -> Result<usize> {
    let unpacked = unpack_layout(tar, into);
    if unpacked.is_err() {
        let _ = std::fs::remove_dir_all(into);
    }
    unpacked
}

fn unpack_layout(tar: &Path, into: &Path) -> Result<usize> {
    let file = File::open(tar).with_context(|| format!("cannot open {}", tar.display()))?;
    if into.exists() {
        std::fs::remove_dir_all(into)
            .with_context(|| format!("cannot remove {}", into.display()))?;
    }
    let blobs_dir = into.join("blobs/sha256");
    std::fs::create_dir_all(&blobs_dir)
        .with_context(|| format!("cannot create {}", blobs_dir.display()))?;
    let mut archive = tar::Archive::new(BufReader::new(file));
    let mut blobs = 0;
    let mut found = [false; 2];
    for entry in archive
        .entries()
        .with_context(|| format!("{} is not a tar archive", tar.display()))?
    {
        let mut entry = entry.with_context(|| format!("cannot read {}", tar.display()))?;
        let name = member_name(&entry.path()?);
        let target = match name.as_str() {
            "oci-layout" | "index.json" => {
                found[usize::from(name == "index.json")] = true;
                None
            }
            _ => match name
                .strip_prefix("blobs/sha256/")
                .filter(|hex| is_sha256(hex))
            {
                Some(hex) => Some(hex.to_owned()),
                None => continue,
            },
        };
        if !entry.header().entry_type().is_file() {
            bail!("{name} in {} is not a regular file", tar.display());
        }
        let path = into.join(&name);
        let mut out =
            File::create(&path).with_context(|| format!("cannot write {}", path.display()))?;
        let digest = copy_hashed(&mut entry, &mut out)
            .with_context(|| format!("cannot unpack {name} from {}", tar.display()))?;
        if let Some(hex) = target {
            if digest != hex {
                bail!(
                    "blob sha256:{hex} in {} holds content of digest sha256:{digest}: the \
                     archive is damaged",
                    tar.display()
                );
            }
            blobs += 1;
        }
    }
    if found != [true, true] {
        bail!(
            "{} holds no OCI image layout (oci-layout and index.json): an engine older than \
             Docker 25 wrote it",
            tar.display()
        );
    }
    Ok(blobs)
}

/// An archive member's name without a leading `./`, `/`-separated.
fn member_name(path: &Path) -> String {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(part) => Some(part.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn is_sha256(hex: &str) -> bool {
    hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Copies `from` into `to`; the SHA-256 of what was copied, in lowercase hex.
fn copy_hashed(from: &mut impl Read, to: &mut impl Write) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 1 << 16];
    loop {
        let read = from.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        to.write_all(&buffer[..read])?;
    }
    to.flush()?;
    Ok(format!("{:x}", hasher.finalize()))
}

/// Where the layout of the archive `NAME.tar` is unpacked: `NAME.oci` beside it.
pub fn beside(tar: &Path) -> PathBuf {
    tar.with_extension("oci")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An archive with `members` (name, content), as `docker save` writes one.
    fn archive(dir: &Path, members: &[(&str, &[u8])]) -> PathBuf {
        let path = dir.join("image.tar");
        let mut builder = tar::Builder::new(File::create(&path).unwrap());
        for (name, content) in members {
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(0o444);
            header.set_cksum();
            builder.append_data(&mut header, name, *content).unwrap();
        }
        builder.finish().unwrap();
        path
    }

    fn sha256(content: &[u8]) -> String {
        format!("{:x}", Sha256::digest(content))
    }

    #[test]
    fn the_layout_is_unpacked_and_every_blob_checked_against_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let layer: &[u8] = b"a layer";
        let blob = format!("blobs/sha256/{}", sha256(layer));
        let tar = archive(
            dir.path(),
            &[
                ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
                ("index.json", br#"{"schemaVersion":2,"manifests":[]}"#),
                ("manifest.json", b"[]"),
                (&blob, layer),
            ],
        );
        let into = beside(&tar);
        assert_eq!(into, dir.path().join("image.oci"));
        std::fs::create_dir_all(into.join("stale")).unwrap();
        assert_eq!(unpack(&tar, &into).unwrap(), 1);
        assert_eq!(std::fs::read(into.join(&blob)).unwrap(), layer);
        assert!(into.join("index.json").is_file());
        assert!(into.join("oci-layout").is_file());
        assert!(
            !into.join("manifest.json").exists(),
            "not part of the layout"
        );
        assert!(!into.join("stale").exists(), "what was there is replaced");

        let forged = format!("blobs/sha256/{}", sha256(b"another layer"));
        let tar = archive(
            dir.path(),
            &[
                ("oci-layout", b"{}"),
                ("index.json", b"{}"),
                (&forged, layer),
            ],
        );
        let error = unpack(&tar, &into).unwrap_err().to_string();
        assert!(error.contains("the archive is damaged"), "{error}");
        assert!(!into.exists(), "a refused layout is left behind");
    }

    #[test]
    fn an_archive_of_an_engine_older_than_docker_25_has_no_layout() {
        let dir = tempfile::tempdir().unwrap();
        let tar = archive(dir.path(), &[("manifest.json", b"[]"), ("abc.json", b"{}")]);
        let error = unpack(&tar, &beside(&tar)).unwrap_err().to_string();
        assert!(error.contains("holds no OCI image layout"), "{error}");
    }
}

//! Where a model's training rows came from. `generate-data` leaves a note beside the file it
//! writes (`FILE.generated.json`: the seed, the row count and the file's SHA-256), and `train`
//! records the rows as generated only while the file still matches that note: the public file
//! copied over it, or any other edit, makes it a plain file again. The dashboard says so on
//! every page, so synthetic rows are never mistaken for the public dataset.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The metrics key holding [`Generated`] when the rows were generated.
pub const METRICS_KEY: &str = "data_generated";

/// How `generate-data` made a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generated {
    pub seed: u64,
    pub rows: usize,
    pub sha256: String,
}

/// The note beside `data`.
pub fn note_path(data: &Path) -> PathBuf {
    let mut name = data.file_name().unwrap_or_default().to_os_string();
    name.push(".generated.json");
    data.with_file_name(name)
}

/// Leaves the note for the file `generate-data` just wrote.
pub fn write_note(data: &Path, seed: u64, rows: usize) -> Result<()> {
    let note = Generated {
        seed,
        rows,
        sha256: crate::artifact::file_sha256(data)?,
    };
    let path = note_path(data);
    std::fs::write(&path, serde_json::to_vec_pretty(&note)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// How `data`, whose SHA-256 is `sha256`, was generated; `None` for any other file (no note,
/// an unreadable one, or a file changed since).
pub fn generated(data: &Path, sha256: &str) -> Option<Generated> {
    let note: Generated = serde_json::from_slice(&std::fs::read(note_path(data)).ok()?).ok()?;
    (note.sha256 == sha256).then_some(note)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_rows_are_known_until_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("cars.csv");
        std::fs::write(&data, "a,b\n1,2\n").unwrap();
        assert_eq!(note_path(&data), dir.path().join("cars.csv.generated.json"));
        let sha = |p: &Path| crate::artifact::file_sha256(p).unwrap();
        assert_eq!(generated(&data, &sha(&data)), None, "no note yet");

        write_note(&data, 42, 1).unwrap();
        let note = generated(&data, &sha(&data)).expect("the note matches");
        assert_eq!((note.seed, note.rows), (42, 1));

        // The public file copied over the generated one: a plain file again.
        std::fs::write(&data, "a,b\n3,4\n").unwrap();
        assert_eq!(generated(&data, &sha(&data)), None);
    }
}

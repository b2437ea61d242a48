//! Training onto a full disk (a 2 MiB tmpfs, so root only): a clear error, the old model's
//! files byte for byte as they were, no staging leftovers.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{self, current_version, snapshot, stderr};

/// Unmounts the test's tmpfs, whatever happened.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("--lazy").arg(&self.0).status();
    }
}

/// Training onto a full disk: a 2 MiB tmpfs as the model directory, one good model, the disk
/// filled, training again. A clear error; the old version and `current` byte for byte as they
/// were; no staging files left.
pub fn case() -> String {
    let binary = common::service_binary("telecom");
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("users_behavior.csv");
    let run = |args: &[&str], extra: &[&Path]| {
        Command::new(&binary)
            .args(args)
            .args(extra)
            .output()
            .unwrap()
    };
    assert!(run(&["generate-data", "--seed", "42", "--out"], &[&data])
        .status
        .success());
    let model_dir = work.path().join("models");
    std::fs::create_dir_all(&model_dir).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&model_dir)
        .status()
        .unwrap();
    assert!(mounted.success(), "cannot mount a tmpfs");
    let _mount = Mount(model_dir.clone());
    let train = |seed: &str| {
        Command::new(&binary)
            .args(["train", "--seed", seed, "--data-path"])
            .arg(&data)
            .arg("--model-dir")
            .arg(&model_dir)
            .arg("--no-mlflow")
            .output()
            .unwrap()
    };
    let first = train("42");
    assert!(
        first.status.success(),
        "the first training failed:\n{}",
        stderr(&first)
    );
    let before = snapshot(&model_dir);
    let served = current_version(&model_dir);
    // Fill what is left, then train a different model (another seed).
    let filler = model_dir.join("filler");
    {
        let mut file = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 << 10];
        while file.write_all(&block).is_ok() {}
        let _ = file.write_all(&[0u8; 512]);
        let _ = file.sync_all();
    }
    let free = fs_free(&model_dir);
    let second = train("7");
    let err = stderr(&second);
    assert!(
        !second.status.success(),
        "training onto a full disk succeeded"
    );
    let line = err
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_default()
        .to_owned();
    eprintln!("the refused training said: {line}");
    assert!(
        line.contains(&format!("the disk holding {} is full", model_dir.display()))
            && line.contains("No space left on device"),
        "the error does not name the full disk:\n{err}"
    );
    std::fs::remove_file(&filler).unwrap();
    let after = snapshot(&model_dir);
    let leftovers: Vec<&PathBuf> = after
        .keys()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    assert!(leftovers.is_empty(), "staging leftovers: {leftovers:?}");
    assert_eq!(after, before, "the model directory changed");
    assert_eq!(current_version(&model_dir), served);
    eprintln!("MEASURED: [host] full disk while training: refused with {free} bytes free; {} files byte-identical", after.len());
    format!(
        "refused ({free} B free), {} files identical, no leftovers",
        after.len()
    )
}

fn fs_free(path: &Path) -> u64 {
    let stat = rustix::fs::statvfs(path).unwrap();
    stat.f_bavail * stat.f_frsize
}

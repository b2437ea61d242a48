//! Advisory file locks (`flock`, released by the kernel when the holder exits, however it
//! exits): one per stack, taken by the commands that change it, and one per tools cache. A
//! command that has to wait says what for and who holds it; the holder writes its pid and
//! command line into the lock file.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};

use crate::util::poll;
use crate::util::progress::Reporter;

/// How often a waiting command tries the lock again.
const RETRY_EVERY: Duration = Duration::from_millis(100);
/// How long one round of waiting lasts before the interruption flag is looked at again (it
/// is looked at every retry as well).
const ROUND: Duration = Duration::from_secs(3600);

/// Held until dropped.
#[derive(Debug)]
pub struct Held {
    _file: File,
}

/// Who holds the lock at `path`, as the holder wrote it (`pid 123: cargo xtask down`).
pub fn holder(path: &Path) -> Option<String> {
    let mut text = String::new();
    File::open(path).ok()?.read_to_string(&mut text).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// This process as a holder: `pid 123: cargo xtask retrain bankchurn (since 06:40:01 UTC)`.
fn this_process() -> String {
    let mut args = std::env::args();
    let program = args.next().unwrap_or_default();
    let program = Path::new(&program)
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let program = if program == "xtask" {
        "cargo xtask".to_owned()
    } else {
        program
    };
    let line = std::iter::once(program)
        .chain(args)
        .collect::<Vec<_>>()
        .join(" ");
    let since = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    format!("pid {}: {line} (since {since})", std::process::id())
}

/// Takes the exclusive lock at `path` (created if missing), waiting while another process
/// holds it: says once that it waits for `what` and who holds it. `interrupted` stops the
/// wait (Ctrl-C), with an error that says nothing was done.
pub fn acquire(
    path: &Path,
    what: &str,
    reporter: &Reporter,
    interrupted: &dyn Fn() -> bool,
) -> Result<Held> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    let try_lock = |file: &File| match file.try_lock() {
        Ok(()) => Ok(true),
        Err(TryLockError::WouldBlock) => Ok(false),
        Err(TryLockError::Error(e)) => {
            Err(anyhow::Error::new(e).context(format!("cannot lock {}", path.display())))
        }
    };
    if !try_lock(&file)? {
        let who = holder(path).unwrap_or_else(|| "another process".to_owned());
        reporter.info(format!(
            "waiting for {what}: held by {who}; Ctrl-C gives up (the lock is {})",
            path.display()
        ));
        loop {
            let got = poll::until(ROUND, RETRY_EVERY, || {
                if interrupted() {
                    return Some(Ok(false));
                }
                match try_lock(&file) {
                    Ok(true) => Some(Ok(true)),
                    Ok(false) => None,
                    Err(e) => Some(Err(e)),
                }
            });
            match got {
                Some(Ok(true)) => break,
                Some(Ok(false)) => {
                    bail!("interrupted while waiting for {what} (held by {who}); nothing was done")
                }
                Some(Err(e)) => return Err(e),
                None => continue,
            }
        }
        reporter.info(format!("{what} is free: going on"));
    }
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    writeln!(file, "{}", this_process())?;
    file.flush()?;
    Ok(Held { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_waits_and_names_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/lock");
        let reporter = Reporter::new(-1);
        let first = acquire(&path, "the stack lock", &reporter, &|| false).unwrap();
        let who = holder(&path).unwrap();
        assert!(
            who.starts_with(&format!("pid {}: ", std::process::id())),
            "{who}"
        );
        // A second open file description of the same file conflicts, as another process would.
        let err = acquire(&path, "the stack lock", &reporter, &|| true)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("interrupted while waiting for the stack lock (held by pid"),
            "{err}"
        );
        drop(first);
        acquire(&path, "the stack lock", &reporter, &|| true).unwrap();
    }
}

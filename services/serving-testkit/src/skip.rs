//! Tests that cannot run on a machine say so in the line `cargo xtask ci` counts as skipped
//! (and in its skip log, when set), never passing silently.

use std::io::Write as _;

/// Says that the calling test cannot run here, and why. The test then returns: libtest
/// counts it as passed, the pipeline as skipped.
pub fn skip(reason: &str) {
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    let line = format!("XTASK-TEST-SKIPPED {test}: {reason}");
    println!("{line}");
    eprintln!("SKIPPED {test}: {reason}");
    if let Some(log) = std::env::var_os("XTASK_SKIP_LOG") {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("cannot open the skip log {log:?}: {e}"));
        writeln!(file, "{line}").expect("the skip log is writable");
    }
}

//! The Debian archive this machine's apt is set up with, read from its own sources (never a
//! fixed address): the MLflow base image is bootstrapped from it, and the tests fetch a newer
//! Docker engine from it (`tests/common` compiles this file too, so it uses nothing but std,
//! and its tests sit in `util/mod.rs`).

/// The first `.../debian` source in `/etc/apt/sources.list` or `sources.list.d` (one-line or
/// deb822 format), without a trailing slash; `XTASK_DEBIAN_MIRROR` overrides. `None` when
/// there is none.
pub fn debian_archive() -> Option<String> {
    if let Ok(mirror) = std::env::var("XTASK_DEBIAN_MIRROR") {
        return Some(mirror.trim_end_matches('/').to_owned());
    }
    let mut texts = vec![std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default()];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut files: Vec<_> = dir.flatten().map(|e| e.path()).collect();
        files.sort();
        texts.extend(files.iter().filter_map(|f| std::fs::read_to_string(f).ok()));
    }
    texts
        .iter()
        .flat_map(|t| t.lines())
        .find_map(|line| archive_of(line).map(|uri| uri.trim_end_matches('/').to_owned()))
}

/// The archive address a source line names, when it is a Debian archive.
pub fn archive_of(line: &str) -> Option<&str> {
    let line = line.trim();
    let uri = line.strip_prefix("URIs:").map(str::trim).or_else(|| {
        line.strip_prefix("deb ")
            .and_then(|r| r.split_whitespace().find(|w| w.starts_with("http")))
    })?;
    let uri = uri.split_whitespace().next()?;
    (uri.ends_with("/debian") || uri.ends_with("/debian/")).then_some(uri)
}

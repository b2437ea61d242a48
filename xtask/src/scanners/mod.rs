//! The scanners `scan`, `deny` and `sbom` run, each turning a tool's report into findings
//! (see `findings`), and where their reports go.

pub mod cargo_deny;
pub mod compose_rule;
pub mod hadolint;
pub mod trivy;

use std::path::{Path, PathBuf};

use crate::ctx::Ctx;

/// JSON and SARIF reports and SBOMs: `target/xtask/reports/` (the workflows upload from here).
pub fn reports_dir(ctx: &Ctx) -> PathBuf {
    ctx.root.join("target/xtask/reports")
}

/// Folders no scanner looks into: trivy.yaml's `scan.skip-dirs` (build output, test fixtures
/// that are wrong on purpose).
pub fn skip_dirs(trivy_yaml: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string(trivy_yaml) else {
        return Vec::new();
    };
    let Ok(doc) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&text) else {
        return Vec::new();
    };
    doc.get("scan")
        .and_then(|s| s.get("skip-dirs"))
        .and_then(|d| d.as_sequence())
        .into_iter()
        .flatten()
        .filter_map(|d| d.as_str().map(PathBuf::from))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_output_and_fixtures_are_not_scanned() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let skipped = skip_dirs(&root.join("trivy.yaml"));
        assert!(skipped.contains(&PathBuf::from("target")));
        assert!(skipped.contains(&PathBuf::from("xtask/tests/fixtures")));
    }
}

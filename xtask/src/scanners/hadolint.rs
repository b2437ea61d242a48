//! hadolint on the Dockerfiles: its levels map onto the scan's severities (error HIGH,
//! warning MEDIUM, info and style LOW), so one policy decides what fails.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::findings::{Finding, Location, ScanResult, Severity};
use crate::ctx::Ctx;
use crate::runner::Step;

pub const SCANNER: &str = "hadolint";

#[derive(Debug, Deserialize)]
struct Diagnostic {
    code: String,
    file: String,
    level: String,
    line: Option<u32>,
    message: String,
}

fn severity(level: &str) -> Severity {
    match level {
        "error" => Severity::High,
        "warning" => Severity::Medium,
        "info" | "style" => Severity::Low,
        _ => Severity::Unknown,
    }
}

/// Parses `hadolint --format json`; file paths are relative to `dir`.
pub fn parse(root: &Path, dir: &Path, json: &str) -> Result<Vec<Finding>> {
    let diagnostics: Vec<Diagnostic> =
        serde_json::from_str(json).context("hadolint's JSON output is unreadable")?;
    Ok(diagnostics
        .into_iter()
        .map(|d| Finding {
            help: Some(format!(
                "see https://github.com/hadolint/hadolint/wiki/{}",
                d.code
            )),
            id: d.code,
            severity: severity(&d.level),
            title: d.message,
            subject: d.file.clone(),
            location: Some(Location::new(root, &dir.join(&d.file), d.line)),
        })
        .collect())
}

/// Dockerfiles under `dir` (`Dockerfile`, `Dockerfile.*`, `*.Dockerfile`), relative to it,
/// leaving out folders whose name is in `skip` (build output, test fixtures).
pub fn dockerfiles(dir: &Path, skip: &[PathBuf]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(current) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let relative = path.strip_prefix(dir).unwrap_or(&path).to_owned();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                if !name.starts_with('.') && !skip.iter().any(|s| s == &relative) {
                    stack.push(path);
                }
            } else if name == "Dockerfile"
                || name.starts_with("Dockerfile.")
                || name.ends_with(".Dockerfile")
            {
                found.push(relative);
            }
        }
    }
    found.sort();
    found
}

/// Lints `files` (relative to `dir`); writes hadolint's SARIF log to `sarif`.
pub fn scan(
    ctx: &Ctx,
    dir: &Path,
    files: &[PathBuf],
    target: &str,
    sarif: &Path,
) -> Result<ScanResult> {
    let tool = crate::deps::tools::path(ctx, "hadolint")?;
    let mut result = ScanResult::new(target, SCANNER);
    if files.is_empty() {
        result.notes.push("no Dockerfile found".into());
        return Ok(result);
    }
    let step = |format: &str| {
        Step::new(tool.to_string_lossy())
            .args(["--no-fail", "--no-color", "--format", format])
            .args(files)
            .cwd(dir)
    };
    let Some(out) = ctx.runner.run_unchecked(&step("json"))? else {
        return Ok(result);
    };
    if !out.status.success() {
        bail!(
            "hadolint failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    result.findings = parse(&ctx.root, dir, &String::from_utf8_lossy(&out.stdout))?;
    if let Some(out) = ctx.runner.run_unchecked(&step("sarif"))? {
        ctx.runner.write_file(sarif, &out.stdout)?;
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_onto_severities_and_files_onto_the_repository() {
        let json = r#"[{"code":"DL3002","column":1,"file":"fixtures/Dockerfile","level":"warning","line":4,"message":"Last USER should not be root"},{"code":"DL3066","column":1,"file":"fixtures/Dockerfile","level":"info","line":4,"message":"Non-numeric user-id may not be resolvable by host system"}]"#;
        let findings = parse(Path::new("/repo"), Path::new("/repo/xtask"), json).unwrap();
        assert_eq!(findings.len(), 2);
        assert_eq!(findings[0].severity, Severity::Medium);
        assert_eq!(
            findings[0].location.as_ref().unwrap().to_string(),
            "xtask/fixtures/Dockerfile:4"
        );
        assert_eq!(findings[1].severity, Severity::Low);
    }

    #[test]
    fn the_repository_dockerfiles_are_found_and_fixtures_left_out() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let files = dockerfiles(
            root,
            &[
                PathBuf::from("target"),
                PathBuf::from("xtask/tests/fixtures"),
            ],
        );
        assert_eq!(
            files,
            [
                PathBuf::from("services/mlflow/Dockerfile"),
                PathBuf::from("services/serving/Dockerfile.api"),
            ]
        );
    }
}

//! `cargo xtask upgrade-deps` with the real tools on a workspace of the test's own
//! (`fixtures/upgrade-deps`, copied into a temporary folder, with MLflow's service.toml,
//! requirements.lock and the upgrade workflow from this repository): cargo, cargo-edit's
//! `cargo upgrade` and uv, against crates.io and PyPI. cargo-edit compiles on first use (2 to
//! 7 minutes), so these are ignored by default; `cargo xtask ci` runs them in its e2e step.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::{copy_dir, repo, stderr, stdout, xtask_in};

fn fixture(name: &str) -> PathBuf {
    repo().join("xtask/tests/fixtures/upgrade-deps").join(name)
}

/// The fixture workspace, with `overlay`'s files on top, MLflow's service from this repository
/// and its upgrade workflow.
fn workspace(overlay: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture("workspace"), dir.path());
    if let Some(overlay) = overlay {
        copy_dir(&fixture(overlay), dir.path());
    }
    let mlflow = dir.path().join("services/mlflow");
    std::fs::create_dir_all(&mlflow).unwrap();
    for file in ["service.toml", "requirements.lock"] {
        std::fs::copy(repo().join("services/mlflow").join(file), mlflow.join(file)).unwrap();
    }
    let workflows = dir.path().join(".github/workflows");
    std::fs::create_dir_all(&workflows).unwrap();
    std::fs::copy(
        repo().join(".github/workflows/upgrade.yml"),
        workflows.join("upgrade.yml"),
    )
    .unwrap();
    dir
}

/// Runs the real xtask binary in `dir`, the workspace it works on.
fn xtask(dir: &Path, args: &[&str]) -> Output {
    xtask_in(dir, args, &[])
}

/// Every manifest and lock file under `root` (build output aside), with its bytes.
fn manifests_and_locks(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(dir: &Path, root: &Path, found: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                if entry.file_name() != "target" {
                    walk(&path, root, found);
                }
            } else if ["Cargo.toml", "Cargo.lock", "requirements.lock"]
                .iter()
                .any(|name| entry.file_name() == *name)
            {
                let relative = path.strip_prefix(root).unwrap().to_owned();
                found.insert(relative, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut found = BTreeMap::new();
    walk(root, root, &mut found);
    found
}

/// The `| ecosystem | package | ...` row of `package`.
fn row<'a>(table: &'a str, ecosystem: &str, package: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.starts_with(&format!("| {ecosystem} | {package} |")))
        .unwrap_or_else(|| panic!("no row for {package}:\n{table}"))
}

fn cells(row: &str) -> Vec<&str> {
    row.trim_matches('|').split(" | ").map(str::trim).collect()
}

fn major(version: &str) -> u64 {
    version.split('.').next().unwrap().parse().unwrap()
}

fn minor(version: &str) -> u64 {
    version.split('.').nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_dry_run_prints_the_plan_and_changes_nothing() {
    let ws = workspace(None);
    let before = manifests_and_locks(ws.path());
    let output = xtask(ws.path(), &["--dry-run", "upgrade-deps", "--incompatible"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let plan = stdout(&output);
    for step in [
        "cargo-upgrade upgrade --incompatible",
        "$ cd $ROOT && cargo update",
        "uv pip compile",
        "--generate-hashes",
        "--python-version 3.11 --python-platform x86_64-unknown-linux-gnu",
        "$ cd $ROOT && cargo build --workspace --locked",
        "$ cd $ROOT && cargo test --workspace --locked",
    ] {
        assert!(plan.contains(step), "{step:?} is not planned:\n{plan}");
    }
    assert_eq!(
        manifests_and_locks(ws.path()),
        before,
        "a dry run changed files"
    );
    assert!(!ws.path().join("target").exists(), "a dry run built");

    let refused = xtask(ws.path(), &["upgrade-deps", "--incompatible", "--offline"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("cannot be used with"),
        "{}",
        stderr(&refused)
    );
}

#[test]
#[ignore = "runs cargo-edit, uv and cargo against crates.io and PyPI, and builds the fixture"]
fn upgrade_deps_raises_an_old_crate_and_prints_the_table_of_changes() {
    let ws = workspace(None);
    let lock_before =
        std::fs::read_to_string(ws.path().join("services/mlflow/requirements.lock")).unwrap();

    let output = xtask(ws.path(), &["upgrade-deps", "--incompatible"]);
    assert!(output.status.success(), "{}", stderr(&output));

    // stdout is the table alone: the workflow makes it the pull request's body.
    let table = stdout(&output);
    assert!(
        table.starts_with("| ecosystem | package | old | new | change |\n|---|"),
        "{table}"
    );
    assert!(table.lines().all(|l| l.starts_with('|')), "{table}");
    let bitflags = cells(row(&table, "Rust", "bitflags"));
    assert_eq!(bitflags[2], "1.3.2");
    assert!(major(bitflags[3]) >= 2, "{bitflags:?}");
    assert_eq!(bitflags[4], "major");
    let either = cells(row(&table, "Rust", "either"));
    assert_eq!(either[2], "1.15.0");
    assert!(minor(either[3]) > 15, "{either:?}");
    assert_eq!(either[4], "minor");

    // The requirement was raised across the major version, and the lock follows it.
    let manifest = std::fs::read_to_string(ws.path().join("services/app/Cargo.toml")).unwrap();
    let requirement = manifest
        .lines()
        .find(|l| l.starts_with("bitflags = "))
        .unwrap();
    assert!(requirement.starts_with("bitflags = \"2."), "{manifest}");
    let cargo_lock = std::fs::read_to_string(ws.path().join("Cargo.lock")).unwrap();
    assert!(
        cargo_lock.contains(&format!(
            "name = \"bitflags\"\nversion = \"{}\"",
            bitflags[3]
        )),
        "{cargo_lock}"
    );

    // MLflow's lock: same header, the pinned version, a hash on every line.
    let lock =
        std::fs::read_to_string(ws.path().join("services/mlflow/requirements.lock")).unwrap();
    let header = |text: &str| -> Vec<String> {
        text.lines()
            .take_while(|l| l.starts_with('#'))
            .map(str::to_owned)
            .collect()
    };
    assert!(!header(&lock).is_empty());
    assert_eq!(header(&lock), header(&lock_before));
    let service = std::fs::read_to_string(repo().join("services/mlflow/service.toml")).unwrap();
    let version = service
        .lines()
        .find_map(|l| l.strip_prefix("version = "))
        .unwrap()
        .trim_matches('"');
    assert!(lock
        .lines()
        .any(|l| l.starts_with(&format!("mlflow=={version} --hash=sha256:"))));
    assert!(lock
        .lines()
        .filter(|l| !l.starts_with('#'))
        .all(|l| l.contains(" --hash=sha256:")));
    // PostgreSQL's driver is locked with MLflow, for the image and the local environment.
    for driver in ["psycopg==", "psycopg-binary=="] {
        assert!(lock.lines().any(|l| l.starts_with(driver)), "{lock}");
    }
    for changed in table.lines().filter(|l| l.starts_with("| Python |")) {
        let c = cells(changed);
        if c[3] != "-" {
            assert!(lock.contains(&format!("{}=={} ", c[1], c[3])), "{changed}");
        }
    }

    // The actions pinned by commit, with their tags, on stderr: newer tags said unchecked.
    let log = stderr(&output);
    assert!(
        log.contains("peter-evans/create-pull-request") && log.contains("v8.1.1"),
        "{log}"
    );
    assert!(log.contains("Newer tags: NOT CHECKED"), "{log}");
}

#[test]
#[ignore = "runs cargo-edit, uv and cargo against crates.io and PyPI, and builds the fixture"]
fn a_failing_build_or_test_restores_every_manifest_and_lock_byte_for_byte() {
    let ws = workspace(Some("breaks"));
    let before = manifests_and_locks(ws.path());
    assert_eq!(before.len(), 5, "{:?}", before.keys());

    // Newer compatible releases: it builds, and its tests fail.
    let tests_fail = xtask(ws.path(), &["upgrade-deps"]);
    assert!(!tests_fail.status.success(), "the upgrade passed");
    let log = stderr(&tests_fail);
    assert!(
        log.contains("`cargo test --workspace` failed; restored as they were:"),
        "{log}"
    );
    assert!(log.contains("Cargo.lock"), "{log}");
    assert!(stdout(&tests_fail).is_empty(), "{}", stdout(&tests_fail));
    assert_eq!(manifests_and_locks(ws.path()), before);

    // Across bitflags' major version: the build fails.
    let build_fails = xtask(ws.path(), &["upgrade-deps", "--incompatible"]);
    assert!(!build_fails.status.success(), "the upgrade passed");
    let log = stderr(&build_fails);
    assert!(
        log.contains("`cargo build --workspace` failed; restored as they were:"),
        "{log}"
    );
    assert!(log.contains("services/app/Cargo.toml"), "{log}");
    assert!(
        log.contains("from_bits_unchecked"),
        "the compiler's error is shown:\n{log}"
    );
    assert_eq!(manifests_and_locks(ws.path()), before);
}

//! `cargo xtask ci --changed` on a copy of this workspace, with the real `fmt` step: a pass is
//! remembered and the rerun skips it, saying since when; a change to a declared input is
//! named and planned; and a planted input the step does not declare (a module rustfmt reaches through
//! `#[path]`, in a file no `*.rs` glob names) makes the skip wrong, which `--verify-skips`
//! catches, naming the file.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{stderr, stdout};

/// Where the undeclared input goes, and the module that includes it.
const PLANTED: &str = "services/telecom/generated/planted.inc";
const INCLUDER: &str = "services/telecom/src/lib.rs";

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args([
            "-c",
            "user.name=ci test",
            "-c",
            "user.email=ci@test.invalid",
        ])
        .args(args)
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(status.success(), "git {args:?} failed");
}

/// `cargo xtask ARGS` in `dir`, as `common::xtask_in` runs it, but without the CI workflow's
/// `XTASK_CI_VERIFY_SKIPS` (this test chooses when to verify).
fn xtask(dir: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
    command.env_remove("XTASK_CI_VERIFY_SKIPS");
    common::run_xtask(command, dir, args, &[])
}

fn ci(dir: &Path, args: &[&str]) -> Output {
    let mut all = vec!["ci", "--steps", "fmt"];
    all.extend_from_slice(args);
    xtask(dir, &all)
}

#[test]
fn a_skip_is_remembered_explained_and_verified_and_a_wrong_one_names_the_undeclared_input() {
    let rustfmt = Command::new("cargo").args(["fmt", "--version"]).output();
    if !rustfmt.is_ok_and(|out| out.status.success()) {
        return common::skip("rustfmt is not installed (rustup component add rustfmt)");
    }
    let workspace = common::workspace_copy();
    let dir = workspace.path();
    let includer = dir.join(INCLUDER);
    let mut lib = std::fs::read_to_string(&includer).unwrap();
    lib.push_str("\n#[path = \"../generated/planted.inc\"]\nmod planted;\n");
    std::fs::write(&includer, lib).unwrap();
    std::fs::create_dir_all(dir.join(PLANTED).parent().unwrap()).unwrap();
    std::fs::write(dir.join(PLANTED), "pub fn planted() -> u8 {\n    1\n}\n").unwrap();
    git(dir, &["init", "-q"]);
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "fixture"]);

    // A first run passes and is remembered; the second skips, saying since when.
    let first = ci(dir, &["--changed"]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(dir.join("target/xtask/ci-state/fmt.json").is_file());
    let second = ci(dir, &["--changed"]);
    assert!(second.status.success(), "{}", stderr(&second));
    let table = stderr(&second);
    assert!(
        table.contains("fmt    skipped: inputs unchanged since run ")
            && table.contains(" at commit "),
        "{table}"
    );
    // Without `--changed` it runs, as always.
    let always = ci(dir, &[]);
    assert!(always.status.success(), "{}", stderr(&always));
    assert!(
        stderr(&always).contains("fmt    passed"),
        "{}",
        stderr(&always)
    );

    // A declared input changes: `--explain` names it, and the step runs.
    let main = dir.join("services/telecom/src/main.rs");
    let original = std::fs::read_to_string(&main).unwrap();
    let mut text = original.clone();
    text.push_str("\n// A comment changes the file, and rustfmt keeps it.\n");
    std::fs::write(&main, text).unwrap();
    let explained = ci(dir, &["--explain", "fmt"]);
    assert!(explained.status.success(), "{}", stderr(&explained));
    let explanation = stdout(&explained);
    assert!(
        explanation.contains("changed since its last pass")
            && explanation.contains("file services/telecom/src/main.rs changed"),
        "{explanation}"
    );
    assert!(explanation.contains("files **/*.rs: "), "{explanation}");
    let plan = ci(dir, &["--changed", "--dry-run"]);
    assert!(
        stdout(&plan).contains("cargo fmt --all --check"),
        "{}",
        stdout(&plan)
    );
    // Back as it was: the fingerprint is that of the last pass again.
    std::fs::write(&main, original).unwrap();

    // The planted file is badly formatted now, but no declared input changed: `--changed`
    // skips the step, wrongly.
    std::fs::write(dir.join(PLANTED), "pub fn planted( ) -> u8 {1}\n").unwrap();
    let wrong = ci(dir, &["--changed"]);
    assert!(wrong.status.success(), "{}", stderr(&wrong));
    assert!(
        stderr(&wrong).contains("fmt    skipped: inputs unchanged since run"),
        "{}",
        stderr(&wrong)
    );
    let unchanged = stdout(&ci(dir, &["--explain", "fmt"]));
    assert!(
        unchanged.contains("unchanged since its last pass"),
        "{unchanged}"
    );

    // Verifying the skip runs the step, which fails, and names the undeclared input.
    let verified = ci(dir, &["--changed", "--verify-skips", "1"]);
    assert!(
        !verified.status.success(),
        "a wrong skip passed verification"
    );
    let err = stderr(&verified);
    assert!(err.contains("WRONG SKIP"), "{err}");
    assert!(
        err.contains(&format!(
            "undeclared input(s) changed since that pass: file {PLANTED} changed"
        )),
        "{err}"
    );
    // The failure forgets the pass: the next `--changed` runs the step instead of skipping it
    // again.
    assert!(!dir.join("target/xtask/ci-state/fmt.json").exists());

    // The ledger holds every run: the passes, the skips, and the failed verification.
    let history = xtask(dir, &["ci", "--history", "fmt"]);
    assert!(history.status.success(), "{}", stderr(&history));
    let ledger = std::fs::read_to_string(dir.join("target/xtask/ci-history.jsonl")).unwrap();
    let entries: Vec<serde_json::Value> = ledger
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let outcomes: Vec<&str> = entries
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        ["passed", "skipped", "passed", "skipped", "failed"],
        "{ledger}"
    );
    assert_eq!(entries[4]["verified"], true, "{ledger}");
    assert!(entries[0]["host"]["cpus"].is_string(), "{ledger}");
    assert!(
        stdout(&history).contains("(verifying a skip)"),
        "{}",
        stdout(&history)
    );
}

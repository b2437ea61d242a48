//! "Adding a service is adding a folder": a copy of the workspace gets a fourth API folder,
//! with nothing else edited, and every command that lists the stack includes it.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::{Path, PathBuf};

use common::{copy_dir, stderr, stdout, Stack};

const NAME: &str = "fraud";

/// A copy of this workspace's sources (tracked and new files, not `target/`) with the
/// fixture service added as `services/fraud`.
fn workspace_with_new_service() -> tempfile::TempDir {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let copy = tempfile::tempdir().unwrap();
    let listed = std::process::Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(root)
        .output()
        .unwrap();
    assert!(listed.status.success());
    for file in listed.stdout.split(|&b| b == 0).filter(|f| !f.is_empty()) {
        let relative = PathBuf::from(String::from_utf8_lossy(file).into_owned());
        let from = root.join(&relative);
        if !from.is_file() {
            continue; // deleted in the work tree
        }
        let to = copy.path().join(&relative);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&from, &to).unwrap();
    }
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/new_service");
    copy_dir(&fixture, &copy.path().join("services").join(NAME));
    copy
}

#[test]
fn a_new_folder_is_a_new_service_everywhere() {
    let workspace = workspace_with_new_service();
    let mut stack = Stack::new();
    stack.workspace = Some(workspace.path().to_owned());
    let run = |args: &[&str]| {
        let mut full = vec!["--runtime", "local"];
        full.extend_from_slice(args);
        stack.xtask(&full)
    };

    // The compose file is generated from the folders: stale until regenerated.
    let check = run(&["compose", "--check"]);
    assert!(!check.status.success(), "the old compose file passed");
    assert!(
        stderr(&check).contains(&format!("it lacks {NAME}")),
        "{}",
        stderr(&check)
    );
    assert!(run(&["compose"]).status.success());
    assert!(run(&["compose", "--check"]).status.success());
    let compose =
        std::fs::read_to_string(workspace.path().join("compose/docker-compose.demo.yml")).unwrap();
    assert!(compose.contains("container_name: fraud-api"), "{compose}");
    assert!(
        compose.contains("${FRAUD_HOST_PORT:-8004}:8080"),
        "{compose}"
    );
    assert!(compose.contains("PORT: '8080'"), "{compose}");

    // So are the Kubernetes manifests: the committed render lacks the new service's file.
    let check = run(&["deploy", "k8s", "--check"]);
    assert!(!check.status.success(), "the old manifests passed");
    assert!(
        stderr(&check).contains(&format!("{NAME}.yaml is missing")),
        "{}",
        stderr(&check)
    );
    assert!(run(&["deploy", "k8s", "--render", "deploy/k8s"])
        .status
        .success());
    assert!(run(&["deploy", "k8s", "--check"]).status.success());
    let manifests =
        std::fs::read_to_string(workspace.path().join("deploy/k8s/fraud.yaml")).unwrap();
    for expected in [
        "kind: Deployment\nmetadata:\n  name: fraud-api\n",
        "kind: Service\nmetadata:\n  name: fraud\n",
        "kind: PodDisruptionBudget\n",
        "kind: HorizontalPodAutoscaler\n",
        "containerPort: 8080\n",
        "image: ml-mlops/fraud:1.0.0\n",
        "- /data/transactions.csv\n",
    ] {
        assert!(
            manifests.contains(expected),
            "fraud.yaml lacks {expected:?}:\n{manifests}"
        );
    }
    let kustomization =
        std::fs::read_to_string(workspace.path().join("deploy/k8s/kustomization.yaml")).unwrap();
    assert!(kustomization.contains("- fraud.yaml\n"), "{kustomization}");

    let status = run(&["status", "--json"]);
    assert!(status.status.success(), "{}", stderr(&status));
    let rows: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(
        rows.as_array().unwrap().iter().any(|r| r["service"] == NAME
            && r["container"] == format!("fraud-api-{}", stack.port_offset)),
        "{rows}"
    );

    // Nothing runs: health and smoke fail, naming the new service among the others.
    let port = stack.port(8004);
    let health = run(&["health"]);
    assert!(!health.status.success());
    assert!(
        stdout(&health).contains(&format!("{NAME:<10} unreachable")),
        "{}",
        stdout(&health)
    );
    let smoke = run(&["smoke"]);
    assert!(
        stdout(&smoke).contains(&format!("✗ {NAME} GET /health")),
        "{}",
        stdout(&smoke)
    );
    assert!(
        stdout(&smoke).contains(&format!("✗ {NAME} POST /predict")),
        "{}",
        stdout(&smoke)
    );

    let demo = run(&["--dry-run", "demo", "--no-mlflow"]);
    assert!(demo.status.success(), "{}", stderr(&demo));
    let plan = stdout(&demo);
    for expected in [
        format!("--package {NAME}"),
        format!("release/{NAME} train"),
        format!("release/{NAME} serve --host 127.0.0.1 --port {port}"),
        format!("wait until http://127.0.0.1:{port}/health answers healthy"),
        format!("POST http://127.0.0.1:{port}/predict"),
    ] {
        assert!(
            plan.contains(&expected),
            "the demo plan lacks {expected:?}:\n{plan}"
        );
    }

    if common::docker_answers() {
        let images = run(&["--dry-run", "images", NAME]);
        assert!(images.status.success(), "{}", stderr(&images));
        assert!(
            // `docker build`, or `docker buildx build` where BuildKit's plugin is installed.
            stdout(&images)
                .lines()
                .any(|l| l.contains(" build ") && l.contains("--tag ml-mlops/fraud:1.0.0")),
            "{}",
            stdout(&images)
        );
    } else {
        common::skip("the images plan needs a Docker engine, and none answers");
    }
}

/// The new folder is a real service: it compiles against the serving library with nothing
/// else edited (the workspace picks it up from `services/*`). Slow: it type-checks the
/// serving library in the copy; `.ci/run` runs it.
#[test]
#[ignore = "type-checks a copy of the workspace; run by .ci/run"]
fn the_new_folder_compiles_as_a_workspace_crate() {
    let workspace = workspace_with_new_service();
    let shared_target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    let check = std::process::Command::new("cargo")
        // Not --offline: on a fresh machine some registry crates may not be downloaded yet.
        .args(["check", "--package", NAME])
        .current_dir(workspace.path())
        // This workspace's target: the registry crates are checked already, only the copy's
        // own crates (at other paths) are checked anew.
        .env("CARGO_TARGET_DIR", &shared_target)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

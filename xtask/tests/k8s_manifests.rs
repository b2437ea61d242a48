//! The Kubernetes manifests against the three offline validators, for real: `kubectl
//! kustomize` (no cluster needed), `kubernetes-validate --strict` for every Kubernetes version
//! the README claims, and `trivy config`. The rendered manifests pass; a field Kubernetes does
//! not know, and a privileged container, are each caught; a user's overlay builds on the base.
//! No cluster exists here: `--apply` is tested only as a plan (tests/cli.rs).
//!
//! Slow (the tools, six schema versions): the pipeline's `e2e-k8s` step runs it.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use common::{stderr, stdout, Stack};

/// The record of a release to ghcr.io/example, with made-up digests.
fn record() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/k8s/release-1.0.0.json")
}

/// Whether kubectl is here; says why the test skips when not.
fn kubectl_here() -> bool {
    if which_kubectl() {
        return true;
    }
    common::skip(
        "kubectl is not installed (it builds the kustomization, no cluster needed): install \
         kubectl 1.32 or later",
    );
    false
}

fn which_kubectl() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join("kubectl").is_file()))
}

/// Renders the stack with the record's digests into a temporary folder.
fn rendered(stack: &Stack) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = stack.xtask(&[
        "deploy",
        "k8s",
        "--release",
        record().to_str().unwrap(),
        "--render",
        dir.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    dir
}

/// `deploy k8s --manifests DIR --validate`, timed.
fn validate(stack: &Stack, dir: &Path) -> std::process::Output {
    let started = Instant::now();
    let out = stack.xtask(&[
        "deploy",
        "k8s",
        "--manifests",
        dir.to_str().unwrap(),
        "--validate",
    ]);
    eprintln!(
        "MEASURED: validating {} took {:.1}s",
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    out
}

/// Replaces `from` with `to` in a rendered file, once at least.
fn plant(file: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.contains(from), "{} has no {from:?}", file.display());
    std::fs::write(file, text.replacen(from, to, 1)).unwrap();
}

#[test]
#[ignore = "runs kubectl, kubernetes-validate and Trivy; the pipeline's e2e-k8s step"]
fn the_rendered_manifests_pass_the_three_validators() {
    if !kubectl_here() {
        return;
    }
    let stack = Stack::new();
    let started = Instant::now();
    let out = stack.xtask(&[
        "deploy",
        "k8s",
        "--release",
        record().to_str().unwrap(),
        "--validate",
    ]);
    eprintln!(
        "MEASURED: render and validate took {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let said = format!("{}{}", stdout(&out), stderr(&out));
    // The versions the README claims (a unit test holds the two together).
    for version in ["1.32", "1.33", "1.34", "1.35", "1.36", "1.37"] {
        assert!(
            said.contains(&format!("Kubernetes {version}.0: valid")),
            "{version} was not validated:\n{said}"
        );
    }
    let row = stdout(&out)
        .lines()
        .find(|l| l.contains("trivy config"))
        .unwrap_or_default()
        .to_owned();
    let counts: Vec<&str> = row.split_whitespace().collect();
    // TARGET SCANNER(2 words) CRITICAL HIGH ...
    assert_eq!(
        &counts[3..5],
        ["0", "0"],
        "HIGH or CRITICAL findings: {row}"
    );
    eprintln!("MEASURED: trivy config on the manifests: {row}");
}

#[test]
#[ignore = "runs kubectl and kubernetes-validate; the pipeline's e2e-k8s step"]
fn a_field_kubernetes_does_not_know_is_rejected() {
    if !kubectl_here() {
        return;
    }
    let stack = Stack::new();
    let dir = rendered(&stack);
    plant(
        &dir.path().join("telecom.yaml"),
        "        imagePullPolicy: IfNotPresent\n        env:",
        "        imagePullPolicy: IfNotPresent\n        bogus: true\n        env:",
    );
    let out = validate(&stack, dir.path());
    assert!(!out.status.success(), "a bogus field passed");
    let said = stderr(&out);
    assert!(
        said.contains("kubernetes-validate --strict rejects") && said.contains("bogus"),
        "{said}"
    );
}

#[test]
#[ignore = "runs kubectl, kubernetes-validate and Trivy; the pipeline's e2e-k8s step"]
fn a_privileged_container_fails_the_trivy_check() {
    if !kubectl_here() {
        return;
    }
    let stack = Stack::new();
    let dir = rendered(&stack);
    // Valid Kubernetes, but a container that may do anything on its node.
    plant(
        &dir.path().join("bankchurn.yaml"),
        "          allowPrivilegeEscalation: false\n          privileged: false",
        "          allowPrivilegeEscalation: true\n          privileged: true",
    );
    let out = validate(&stack, dir.path());
    assert!(!out.status.success(), "a privileged container passed");
    let said = stdout(&out);
    assert!(said.contains("✗ FAIL") || said.contains("HIGH"), "{said}");
    assert!(
        said.contains("privileged") || said.contains("Privilege"),
        "{said}"
    );
}

#[test]
#[ignore = "runs kubectl, kubernetes-validate and Trivy; the pipeline's e2e-k8s step"]
fn an_overlay_of_the_committed_base_builds_and_validates() {
    if !kubectl_here() {
        return;
    }
    let stack = Stack::new();
    // Kustomize takes a base by relative path only: the overlay lives in target/.
    let overlay = tempfile::tempdir_in(common::repo().join("target")).unwrap();
    let base = "../../deploy/k8s";
    std::fs::write(
        overlay.path().join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
             namespace: serving\nresources:\n- {}\n\
             images:\n- name: ml-mlops/telecom\n  newName: registry.example/ml/telecom\n  \
             digest: sha256:{}\n\
             patches:\n- target:\n    kind: PersistentVolumeClaim\n  patch: |-\n    \
             - op: replace\n      path: /spec/resources/requests/storage\n      value: 50Gi\n",
            base,
            "9".repeat(64)
        ),
    )
    .unwrap();
    let out = validate(&stack, overlay.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let built = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(overlay.path())
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", stderr(&built));
    let built = stdout(&built);
    assert!(built.contains("namespace: serving"), "{built}");
    assert!(
        built.contains(&format!(
            "image: registry.example/ml/telecom@sha256:{}",
            "9".repeat(64)
        )),
        "{built}"
    );
    assert!(built.contains("storage: 50Gi"), "{built}");
}

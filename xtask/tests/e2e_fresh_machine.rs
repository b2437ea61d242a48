//! The README's first command on a fresh machine: a Docker engine with no images, no registry,
//! and no debootstrap to make a Python base image. `demo` must still succeed (on the local
//! runtime, saying why), and an explicit `--runtime docker` must fail before building
//! anything. The clean engine is a second dockerd of the test's own, on its own socket and
//! data root, so the machine's engine and images are not touched.
//!
//! Slow and needs root: `.ci/run` runs it on purpose:
//! `cargo test -p xtask --test e2e_fresh_machine -- --ignored --test-threads 1`.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{stderr, stdout, Stack};

/// A dockerd with nothing in it, stopped and deleted on drop.
struct CleanEngine {
    dir: tempfile::TempDir,
    daemon: Child,
}

/// The test engine's own bridge: with `--bridge none` dockerd deletes `docker0`, the bridge
/// of the machine's engine, so it gets one of its own instead.
const BRIDGE: &str = "xtask-test-br0";

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl CleanEngine {
    fn start() -> Option<Self> {
        if !rustix::process::geteuid().is_root() || which::which("dockerd").is_err() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        ip(&["link", "delete", BRIDGE]);
        assert!(
            ip(&["link", "add", BRIDGE, "type", "bridge"])
                && ip(&["addr", "add", "10.253.253.1/24", "dev", BRIDGE]),
            "cannot create the test engine's bridge"
        );
        let config = dir.path().join("daemon.json");
        std::fs::write(&config, "{}").unwrap();
        let path = |name: &str| dir.path().join(name);
        let daemon = Command::new("dockerd")
            .arg("--data-root")
            .arg(path("data"))
            .arg("--exec-root")
            .arg(path("exec"))
            .arg("--pidfile")
            .arg(path("dockerd.pid"))
            .arg("--host")
            .arg(format!("unix://{}", path("docker.sock").display()))
            .arg("--config-file")
            .arg(&config)
            // Its own bridge, and no iptables rules: nothing of the machine's engine changes.
            .args(["--bridge", BRIDGE, "--iptables=false", "--ip-masq=false"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(path("dockerd.log")).unwrap())
            .spawn()
            .unwrap();
        let engine = Self { dir, daemon };
        common::wait_for(
            "the test's dockerd to answer",
            Duration::from_secs(30),
            Duration::from_millis(100),
            || engine.answers().then_some(()),
        );
        Some(engine)
    }

    fn host(&self) -> String {
        format!("unix://{}", self.dir.path().join("docker.sock").display())
    }

    fn answers(&self) -> bool {
        Command::new("docker")
            .args(["version", "--format", "{{.Server.Version}}"])
            .env("DOCKER_HOST", self.host())
            .output()
            .is_ok_and(|o| o.status.success())
    }
}

impl Drop for CleanEngine {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.daemon.id().to_string())
            .status();
        let _ = self.daemon.wait();
        ip(&["link", "delete", BRIDGE]);
    }
}

/// A folder of links to every program on PATH but `debootstrap`: this machine, without it.
fn path_without_debootstrap(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for folder in std::env::split_paths(&std::env::var_os("PATH").unwrap()) {
        for entry in std::fs::read_dir(&folder).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let link = bin.join(&name);
            if name != "debootstrap" && !link.exists() {
                let _ = std::os::unix::fs::symlink(entry.path(), link);
            }
        }
    }
    bin
}

#[test]
#[ignore = "end-to-end: needs root and dockerd, runs the local stack; run by .ci/run"]
fn on_a_fresh_engine_without_debootstrap_demo_falls_back_and_docker_fails_fast() {
    let Some(engine) = CleanEngine::start() else {
        common::skip("needs root and dockerd to start a clean engine");
        return;
    };
    let stack = Stack::new();
    let bin = path_without_debootstrap(stack.path());
    let env = [("DOCKER_HOST", PathBuf::from(engine.host())), ("PATH", bin)];
    let env: Vec<(&str, &Path)> = env.iter().map(|(k, v)| (*k, v.as_path())).collect();

    // Asked for containers: fails at once, saying what is missing, before any build.
    let docker = stack.xtask_with_env(&["--runtime", "docker", "demo"], &env);
    assert!(
        !docker.status.success(),
        "demo on docker passed without a base image"
    );
    let err = stderr(&docker);
    assert!(err.contains("debootstrap is not installed"), "{err}");
    assert!(err.contains("apt-get install debootstrap"), "{err}");
    assert!(
        !err.contains("(release)"),
        "it built before failing:\n{err}"
    );

    // The README's command: falls back to the local runtime, in one line, and succeeds.
    let demo = stack.xtask_with_env(&["demo"], &env);
    let err = stderr(&demo);
    assert!(
        demo.status.success(),
        "demo failed on a fresh engine:\n{err}"
    );
    let why = err
        .lines()
        .find(|l| l.contains("runtime: local, not docker"))
        .unwrap_or_else(|| panic!("demo did not say why it runs locally:\n{err}"));
    assert!(why.contains("debootstrap is not installed"), "{why}");
    assert!(why.contains("--runtime docker"), "{why}");
    assert!(stdout(&demo).contains("The stack is running"));

    let down = stack.xtask_with_env(&["down"], &env);
    assert!(down.status.success(), "{}", stderr(&down));
    // Nothing was built on the clean engine.
    let images = Command::new("docker")
        .args(["images", "--quiet"])
        .env("DOCKER_HOST", engine.host())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&images.stdout).trim(), "");
}

#[test]
#[ignore = "end-to-end: needs root and dockerd, builds images; run by .ci/run"]
fn down_images_removes_what_the_toolkit_built_and_only_with_consent() {
    let Some(engine) = CleanEngine::start() else {
        common::skip("needs root and dockerd to start a clean engine");
        return;
    };
    let stack = Stack::new();
    let host = PathBuf::from(engine.host());
    let env = [("DOCKER_HOST", host.as_path())];
    let docker_images = || {
        let out = Command::new("docker")
            .args(["images", "--all", "--format", "{{.Repository}}:{{.Tag}}"])
            .env("DOCKER_HOST", engine.host())
            .output()
            .unwrap();
        let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines.join("\n")
    };
    let images = stack.xtask_with_env(&["images", "bankchurn", "telecom"], &env);
    assert!(images.status.success(), "{}", stderr(&images));
    let built = docker_images();
    assert!(built.contains("ml-mlops/bankchurn:1.0.0"), "{built}");
    assert!(built.contains("ml-mlops/telecom:1.0.0"), "{built}");

    let refused = stack.xtask_with_env(&["down", "--images"], &env);
    assert!(!refused.status.success(), "removed images without consent");
    assert!(
        stderr(&refused).contains("pass --yes"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(docker_images(), built);

    let removed = stack.xtask_with_env(&["down", "--images", "--yes"], &env);
    assert!(removed.status.success(), "{}", stderr(&removed));
    assert_eq!(docker_images(), "", "images left behind");
}

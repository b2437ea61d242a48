//! The toolkit against a second Docker engine like GitHub's runners' (Docker with the
//! containerd image store and BuildKit), started by the tests beside this machine's own in a
//! network namespace of its own (`common::netns_engine`). Ignored by default (root, and
//! Debian trixie's engine fetched once into the toolkit's cache); the pipeline's
//! `e2e-engine-containerd` step runs them.
#![allow(clippy::disallowed_methods)]

mod common;

use std::process::Command;

use common::netns_engine::{mounts_under, processes_naming, Link, NetnsEngine, Options};
use common::{stderr, stdout};

#[test]
#[ignore = "needs root; fetches Debian trixie's Docker engine once into the toolkit's cache"]
fn a_second_engine_starts_builds_with_buildkit_and_is_removed_completely() {
    let link = Link::private(0);
    let Some(engine) = NetnsEngine::start_or_skip(Options::like_github().with_link(link)) else {
        return;
    };
    assert!(
        engine
            .driver_status()
            .contains("io.containerd.snapshotter.v1"),
        "{}",
        engine.driver_status()
    );
    let buildx = engine.docker(&["buildx", "version"]);
    assert!(buildx.status.success(), "{}", stderr(&buildx));

    let context = tempfile::tempdir().unwrap();
    std::fs::write(context.path().join("hello"), "hello\n").unwrap();
    std::fs::write(
        context.path().join("Dockerfile"),
        "FROM scratch\nCOPY hello /hello\n",
    )
    .unwrap();
    let built = engine
        .docker_command(&["buildx", "build", "--tag", "netns-probe:1", "--load"])
        .arg(context.path())
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", stderr(&built));
    let listed = engine.docker(&["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert_eq!(stdout(&listed).trim(), "netns-probe:1");
    // The machine's own engine knows nothing of it.
    let mine = common::docker(&["image", "inspect", "netns-probe:1"]);
    assert!(
        !mine.status.success(),
        "the image leaked to the machine's engine"
    );

    // The namespace and the host reach each other over the link.
    let listener = std::net::TcpListener::bind((link.host, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let reached = engine
        .command("bash")
        .args(["-c", &format!("echo > /dev/tcp/{}/{port}", link.host)])
        .status()
        .unwrap();
    assert!(
        reached.success(),
        "the host's end of the link is not reachable from the namespace"
    );

    let netns = engine.netns_path();
    let socket = engine.socket.clone();
    let dir = socket.parent().unwrap().to_owned();
    drop(engine);
    assert!(!netns.exists(), "{} is left", netns.display());
    assert!(!dir.exists(), "{} is left", dir.display());
    assert_eq!(mounts_under(&dir), Vec::<std::path::PathBuf>::new());
    assert_eq!(processes_naming(&dir.to_string_lossy()), Vec::<u32>::new());
    let links = Command::new("ip").args(["-o", "addr"]).output().unwrap();
    assert!(
        !stdout(&links).contains(&link.host.to_string()),
        "the host's end of the link is left"
    );
}

#[test]
#[ignore = "needs root"]
fn a_second_copy_of_the_machines_engine_runs_the_classic_store() {
    let Some(engine) = NetnsEngine::start_or_skip(Options::machine()) else {
        return;
    };
    let mine = common::docker_stdout(&["version", "--format", "{{.Server.Version}}"]);
    assert_eq!(engine.version, mine);
    assert!(
        !engine.driver_status().contains("io.containerd.snapshotter"),
        "{}",
        engine.driver_status()
    );
}

#[test]
#[ignore = "needs root"]
fn a_test_that_panics_still_removes_its_engine() {
    let (sender, receiver) = std::sync::mpsc::channel();
    let failing = std::thread::spawn(move || {
        let Some(engine) = NetnsEngine::start_or_skip(Options::like_github()) else {
            return;
        };
        sender
            .send((engine.netns_path(), engine.socket.clone()))
            .unwrap();
        panic!("a failing assertion with the engine running");
    });
    assert!(failing.join().is_err(), "the thread was meant to panic");
    let Ok((netns, socket)) = receiver.recv() else {
        return; // skipped, and said so
    };
    let dir = socket.parent().unwrap();
    assert!(!netns.exists(), "{} is left", netns.display());
    assert!(!dir.exists(), "{} is left", dir.display());
    assert_eq!(processes_naming(&dir.to_string_lossy()), Vec::<u32>::new());
}

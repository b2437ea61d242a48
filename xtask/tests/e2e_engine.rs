//! The toolkit against a second Docker engine like GitHub's runners' (Docker with the
//! containerd image store and BuildKit), started by the tests beside this machine's own in a
//! network namespace of its own (`common::netns_engine`). Ignored by default (root, and
//! Debian trixie's engine fetched once into the toolkit's cache); the pipeline's
//! `e2e-engine-containerd` step runs them.
#![allow(clippy::disallowed_methods)]

mod common;

use std::process::Command;
use std::time::Instant;

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

/// The Python base the MLflow image is built on, copied from this machine's engine when it
/// has one (the pipeline's `images` step made it), so the second engine does not bootstrap
/// it again; otherwise `images` bootstraps it there itself.
fn copy_python_base(engine: &NetnsEngine) {
    for base in ["python:3.11-slim", "ml-mlops/bookworm-python:local"] {
        if !common::docker(&["image", "inspect", base]).status.success() {
            continue;
        }
        let mut save = Command::new("docker")
            .args(["save", base])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let loaded = engine
            .docker_command(&["load", "--quiet"])
            .stdin(save.stdout.take().unwrap())
            .output()
            .unwrap();
        assert!(save.wait().unwrap().success(), "docker save {base} failed");
        assert!(loaded.status.success(), "{}", stderr(&loaded));
        return;
    }
}

/// The pipeline's container steps (`images`, `scan`, `demo` and `smoke`, `down --images`), on
/// an engine like GitHub's: containerd's image store, BuildKit. `images` and `scan` run over
/// the engine's socket from the host's network (PyPI, Trivy's downloads); the stack runs and
/// is checked inside the engine's namespace, where its published ports are.
#[test]
#[ignore = "needs root; builds the stack's images on a second engine (minutes)"]
fn the_stack_builds_runs_and_leaves_nothing_on_the_containerd_store() {
    let Some(engine) = NetnsEngine::start_or_skip(Options::like_github()) else {
        return;
    };
    let stack = common::Stack::new();
    let env: Vec<(&str, std::ffi::OsString)> = engine.env();
    let env: Vec<(&str, &std::path::Path)> = env
        .iter()
        .map(|(k, v)| (*k, std::path::Path::new(v)))
        .collect();
    let images_of = |filter: &str| {
        let mut args = vec!["images", "--quiet"];
        args.extend(["--filter", filter]);
        let out = engine.docker(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        let mut ids: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
        ids.sort();
        ids.dedup();
        ids
    };
    let timed = |what: &str, args: &[&str], inside: bool| {
        let started = Instant::now();
        let output = if inside {
            stack.xtask_on(&engine, args)
        } else {
            stack.xtask_with_env(args, &env)
        };
        eprintln!(
            "MEASURED: {what} on the containerd store in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        assert!(
            output.status.success(),
            "{what} failed:\n{}",
            stderr(&output)
        );
        output
    };

    copy_python_base(&engine);
    let built = timed("images", &["--verbose", "images"], false);
    let said = format!("{}{}", stdout(&built), stderr(&built));
    assert!(
        said.contains("docker buildx build --load"),
        "not built with BuildKit:\n{said}"
    );
    for image in ["mlflow", "bankchurn", "carvision", "telecom"] {
        let id = engine.docker(&[
            "image",
            "inspect",
            "--format",
            "{{.Id}}",
            &format!("ml-mlops/{image}:1.0.0"),
        ]);
        assert!(
            id.status.success(),
            "ml-mlops/{image}:1.0.0 is not on the second engine"
        );
    }
    assert_eq!(
        images_of("dangling=true"),
        Vec::<String>::new(),
        "the build left untagged images"
    );

    // Built again with nothing changed: every image is found up to date (the inputs label
    // survives BuildKit and the containerd store).
    let again = timed("images (unchanged)", &["images"], false);
    for image in ["mlflow", "bankchurn", "carvision", "telecom"] {
        assert!(
            stderr(&again).contains(&format!("image ml-mlops/{image}:1.0.0: up to date")),
            "{image} was rebuilt with unchanged inputs:\n{}",
            stderr(&again)
        );
    }

    // Every image scanned as saved on this store (the MLflow image's archive mixes an
    // uncompressed base layer, when the base was copied from the machine's engine, with
    // BuildKit's gzip layers). The repository's scans do not depend on the engine: `scan`'s
    // own step runs them.
    let scanned = timed("scan --images-only", &["scan", "--images-only"], false);
    let table = stdout(&scanned);
    for image in ["mlflow", "bankchurn", "carvision", "telecom"] {
        let reference = format!("ml-mlops/{image}:1.0.0");
        let row = table
            .lines()
            .find(|l| l.starts_with(&reference) && l.contains("trivy image"))
            .unwrap_or_else(|| panic!("no scan of {reference}:\n{table}"));
        assert!(row.contains("✓ pass"), "{row}\n{table}");
    }

    let demo = timed("demo", &["--runtime", "docker", "demo"], true);
    assert!(stdout(&demo).contains("healthy"), "{}", stdout(&demo));
    timed("smoke", &["--runtime", "docker", "smoke"], true);
    let containers = engine.docker(&["ps", "--quiet"]);
    assert_eq!(
        stdout(&containers).lines().count(),
        4,
        "{}",
        stdout(&containers)
    );
    timed(
        "down --images",
        &["--runtime", "docker", "down", "--images", "--yes"],
        true,
    );
    let left = engine.docker(&["ps", "--all", "--quiet"]);
    assert_eq!(stdout(&left).trim(), "", "containers are left");
    let images = engine.docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(
        !stdout(&images).contains("ml-mlops/"),
        "down --images left images:\n{}",
        stdout(&images)
    );
    assert_eq!(
        images_of("dangling=true"),
        Vec::<String>::new(),
        "down left untagged images"
    );
}

//! Fast tests of the task runner: plans under --dry-run, and doctor.

mod common;

use std::path::Path;

use common::{stderr, stdout, Stack};

/// Compares `actual` with a golden file. Locally a difference rewrites the file (review it with
/// `git diff`); under CI it fails.
fn ensure_golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    if expected == actual {
        return;
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{} is out of date; run `cargo test -p xtask --test cli` locally and commit the result.\n--- expected\n{expected}\n--- actual\n{actual}",
            path.display()
        );
    }
    std::fs::write(&path, actual).unwrap();
    panic!(
        "{} was out of date and has been updated: review and rerun",
        path.display()
    );
}

/// Plans are shown with placeholders instead of machine-specific paths and a fixed offset.
fn plan(args: &[&str]) -> String {
    let stack = Stack::new();
    let mut full = vec![
        "--dry-run",
        "--runtime",
        "local",
        "--port-offset",
        "0",
        "--cache-dir",
    ];
    let cache = stack.path().join("cache");
    full.push(cache.to_str().unwrap());
    full.extend_from_slice(args);
    let output = stack.xtask(&full);
    assert!(output.status.success(), "{}", stderr(&output));
    // The commit recorded with training runs changes with every commit, the time with
    // every run.
    without_stamps(&stdout(&output))
        .lines()
        .map(|line| match line.split_once("GIT_COMMIT=") {
            Some((before, after)) => {
                let rest = after.split_once(' ').map_or("", |(_, r)| r);
                format!("{before}GIT_COMMIT=<commit> {rest}\n")
            }
            None => format!("{line}\n"),
        })
        .collect()
}

/// `text` with each time stamp of the toolkit's folder names (`20261206T104111Z`) as `<time>`.
fn without_stamps(text: &str) -> String {
    let is_stamp = |s: &[u8]| {
        s.len() == 16
            && s[..8].iter().all(u8::is_ascii_digit)
            && s[8] == b'T'
            && s[9..15].iter().all(u8::is_ascii_digit)
            && s[15] == b'Z'
    };
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut at = 0;
    while at < bytes.len() {
        if bytes.get(at..at + 16).is_some_and(is_stamp) {
            out.push_str("<time>");
            at += 16;
        } else {
            let c = text[at..].chars().next().unwrap();
            out.push(c);
            at += c.len_utf8();
        }
    }
    out
}

#[test]
fn demo_plan_on_the_local_runtime() {
    ensure_golden("demo-local.txt", &plan(&["demo"]));
}

/// `dev` builds and serves the profile made for it, and `up` the release one.
#[test]
fn dev_builds_and_runs_the_dev_loop_profile_and_up_the_release_one() {
    let dev = plan(&["dev", "--no-mlflow"]);
    assert!(
        dev.contains("cargo build --profile dev-loop --locked"),
        "{dev}"
    );
    assert!(dev.contains("/dev-loop/bankchurn serve"), "{dev}");
    assert!(
        !dev.contains("--release") && !dev.contains("/release/"),
        "{dev}"
    );
    let up = plan(&["up", "--no-mlflow"]);
    assert!(up.contains("cargo build --release --locked"), "{up}");
    assert!(up.contains("/release/bankchurn serve"), "{up}");
    assert!(!up.contains("dev-loop"), "{up}");
}

#[test]
fn smoke_plan() {
    ensure_golden("smoke.txt", &plan(&["smoke"]));
}

/// The plan of a deployment to Kubernetes from a release record: render, apply, wait for each
/// rollout. No cluster is at hand, so this plan is all of `--apply` that is tested.
#[test]
fn deploy_k8s_apply_plan() {
    let record =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/k8s/release-1.0.0.json");
    ensure_golden(
        "deploy-k8s-apply.txt",
        &plan(&[
            "deploy",
            "k8s",
            "--release",
            record.to_str().unwrap(),
            "--apply",
            "--kubeconfig",
            "/home/user/.kube/config",
            "--context",
            "production",
            "--timeout",
            "10m",
        ]),
    );
}

/// The release workflow deploys only where a kubeconfig secret is set: without one the command
/// posts a notice and succeeds, having run nothing; asked to deploy without the skip, it fails.
#[test]
fn deploy_k8s_without_a_kubeconfig_is_skipped_with_a_notice() {
    let stack = Stack::new();
    let args = [
        "deploy",
        "k8s",
        "--apply",
        "--kubeconfig-env",
        "XTASK_TEST_NO_KUBECONFIG",
    ];
    let with_skip = [&args[..], &["--skip-without-kubeconfig"]].concat();
    let skipped = stack.xtask_with_env(&with_skip, &[("GITHUB_ACTIONS", Path::new("true"))]);
    assert!(skipped.status.success(), "{}", stderr(&skipped));
    assert!(
        stderr(&skipped).contains("::notice title=Kubernetes deploy skipped::"),
        "{}",
        stderr(&skipped)
    );
    assert!(
        !stdout(&skipped).contains("kubectl"),
        "{}",
        stdout(&skipped)
    );
    let refused = stack.xtask(&args);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("XTASK_TEST_NO_KUBECONFIG is empty or unset"),
        "{}",
        stderr(&refused)
    );
}

#[test]
fn mlflow_upgrade_plan() {
    ensure_golden("mlflow-upgrade.txt", &plan(&["mlflow", "upgrade"]));
}

#[test]
fn a_store_of_another_schema_stops_up_before_anything_starts_and_is_left_as_it_was() {
    let stack = Stack::new();
    let mlruns = stack.path().join("mlruns");
    std::fs::create_dir_all(&mlruns).unwrap();
    let store = mlruns.join("mlflow.db");
    let db = rusqlite::Connection::open(&store).unwrap();
    db.execute_batch(
        "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL);
         INSERT INTO alembic_version VALUES ('0123456789ab');",
    )
    .unwrap();
    drop(db);
    let before = std::fs::read(&store).unwrap();
    let output = stack.xtask(&["--runtime", "local", "up"]);
    assert!(
        !output.status.success(),
        "up went on with a store of another schema"
    );
    let err = stderr(&output);
    assert!(
        err.contains("at schema revision 0123456789ab")
            && err.contains("cargo xtask mlflow upgrade")
            && err.contains("Nothing was started"),
        "{err}"
    );
    assert_eq!(std::fs::read(&store).unwrap(), before);
    assert!(common::port_free(stack.port(5000)));
    assert!(stack.pid_files().is_empty(), "up started something");
}

#[test]
fn dry_run_starts_nothing_and_writes_nothing() {
    let stack = Stack::new();
    let output = stack.xtask(&["--dry-run", "--runtime", "local", "demo", "--no-mlflow"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        !stdout(&output).contains("mlflow server"),
        "--no-mlflow still plans MLflow"
    );
    let left: Vec<_> = std::fs::read_dir(stack.path()).unwrap().collect();
    assert!(left.is_empty(), "a dry run wrote {left:?}");
    assert!(common::port_free(stack.port(8001)));
}

#[test]
fn doctor_names_the_process_holding_a_port() {
    let stack = Stack::new();
    let port = stack.port(8002);
    let _listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let output = stack.xtask(&["--runtime", "local", "doctor"]);
    assert!(!output.status.success(), "doctor passed with a busy port");
    let report = stdout(&output);
    let line = report
        .lines()
        .find(|l| l.contains(&format!("carvision port {port}")))
        .unwrap_or_else(|| panic!("no line for the busy port:\n{report}"));
    assert!(line.starts_with('✗'), "{line}");
    assert!(
        line.contains(&format!("pid {}", std::process::id())),
        "{line}"
    );
    assert!(
        report.contains(&format!("kill {}", std::process::id())),
        "{report}"
    );
}

#[test]
fn a_stranger_on_a_port_stops_demo_before_anything_is_built_or_started() {
    let stack = Stack::new();
    let port = stack.port(8003);
    let _stranger = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let output = stack.xtask(&["--runtime", "local", "demo", "--no-mlflow"]);
    assert!(!output.status.success(), "demo ran beside a stranger");
    let err = stderr(&output);
    // The holder by its pid (its command line may be shortened in the message).
    assert!(
        err.contains(&format!("for telecom, port {port} is held by "))
            && err.contains(&format!("(pid {})", std::process::id())),
        "the holder is not named:\n{err}"
    );
    assert!(err.contains("Nothing was started"), "{err}");
    assert!(
        !err.contains("build "),
        "it built before checking the ports:\n{err}"
    );
    // Only the stack's lock file, which `demo` holds while it runs.
    let left = common::snapshot(stack.path());
    let lock = stack.path().join(".xtask/lock");
    assert!(
        left.keys().all(|path| *path == lock),
        "it wrote {:?}",
        left.keys()
    );
}

#[test]
fn unknown_services_are_named_with_the_choices() {
    let stack = Stack::new();
    let output = stack.xtask(&["--runtime", "local", "logs", "nosuch"]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains(
        "no service named \"nosuch\"; the stack has mlflow, bankchurn, carvision, telecom"
    ));
}

#[test]
fn down_volumes_deletes_data_only_when_confirmed() {
    let stack = Stack::new();
    let db = stack.path().join("mlruns/mlflow.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    std::fs::write(&db, "precious").unwrap();

    let refused = stack.xtask(&["--runtime", "local", "down", "--volumes"]);
    assert!(!refused.status.success(), "deleted data without asking");
    assert!(
        stderr(&refused).contains("pass --yes"),
        "{}",
        stderr(&refused)
    );
    assert!(db.is_file(), "data lost without confirmation");

    let confirmed = stack.xtask(&["--runtime", "local", "down", "--volumes", "--yes"]);
    assert!(confirmed.status.success(), "{}", stderr(&confirmed));
    assert!(!db.exists());
}

#[test]
fn under_github_actions_failures_are_annotated_and_summarized() {
    let stack = Stack::new();
    let summary = stack.path().join("summary.md");
    let output = stack.xtask_with_env(
        &["--runtime", "local", "smoke", "bankchurn"],
        &[
            ("GITHUB_ACTIONS", Path::new("true")),
            ("GITHUB_STEP_SUMMARY", &summary),
        ],
    );
    // Nothing is running on these ports: every check fails, each with an annotation.
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(
        err.contains("::error title=smoke: bankchurn GET /health::unreachable"),
        "{err}"
    );
    assert!(
        err.contains("::error title=smoke: bankchurn POST /predict::"),
        "{err}"
    );
    let md = std::fs::read_to_string(&summary).unwrap();
    assert!(
        md.contains("| bankchurn GET /health | ❌ unreachable"),
        "{md}"
    );
}

#[test]
fn a_required_step_that_skipped_fails_the_pipeline_and_the_summary_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("summary.md");
    // An engine that does not answer: the docker steps are skipped.
    let socket = format!("unix://{}", dir.path().join("no-docker.sock").display());
    let env = [
        ("DOCKER_HOST", Path::new(&socket)),
        ("GITHUB_ACTIONS", Path::new("true")),
        ("GITHUB_STEP_SUMMARY", summary.as_path()),
    ];
    let run = |args: &[&str]| common::xtask_in(&common::repo(), args, &env);

    let allowed = run(&["ci", "--steps", "images"]);
    assert!(allowed.status.success(), "{}", stderr(&allowed));

    let required = run(&["ci", "--steps", "images", "--require", "containers"]);
    assert!(!required.status.success());
    let err = stderr(&required);
    assert!(
        err.contains("images skipped, as a whole or some of their tests, although required"),
        "{err}"
    );
    let md = std::fs::read_to_string(&summary).unwrap();
    assert!(
        md.contains("| images | skipped: no Docker engine answers |"),
        "{md}"
    );
    assert!(
        md.contains("| images | skipped (REQUIRED): no Docker engine answers |"),
        "{md}"
    );
}

/// `--port-offset` makes a second stack: `down` plans the offset stack's compose project and
/// names only, never the default stack's (which it would take down), and the default stack's
/// plan keeps its names.
#[test]
fn down_with_a_port_offset_plans_only_the_offset_stacks_names() {
    if !common::docker_answers() {
        return common::skip("no Docker engine answers: the docker runtime's plan needs one");
    }
    let stack = Stack::new();
    let down = |offset: &str| {
        let output = stack.xtask(&[
            "--dry-run",
            "--runtime",
            "docker",
            "--port-offset",
            offset,
            "down",
        ]);
        assert!(output.status.success(), "{}", stderr(&output));
        stdout(&output)
    };
    let plan = down("100");
    assert!(
        plan.contains("XTASK_STACK_SUFFIX=-100 ") && plan.contains(" -p ml-mlops-100 -f "),
        "the offset stack's compose project is not planned:\n{plan}"
    );
    let words: Vec<&str> = plan.split_whitespace().collect();
    for name in [
        "ml-mlops",
        "mlflow-server",
        "bankchurn-api",
        "carvision-api",
        "telecom-api",
    ] {
        assert!(
            !words.contains(&name),
            "the offset stack's down plans the default stack's {name:?}:\n{plan}"
        );
    }
    // `status` of the offset stack names its own containers.
    let status = stack.xtask(&["--runtime", "docker", "--port-offset", "100", "status"]);
    let table = stdout(&status);
    for name in ["mlflow-server", "telecom-api"] {
        assert!(table.contains(&format!("{name}-100 ")), "{table}");
        assert!(!table.contains(&format!("{name} ")), "{table}");
    }
    let plan = down("0");
    assert!(
        plan.contains(" -p ml-mlops -f ") && !plan.contains("XTASK_STACK_SUFFIX"),
        "the default stack's names changed:\n{plan}"
    );
}

/// A release record as `cargo xtask release` writes it, for `services`, on `registry`.
fn release_record(dir: &Path, registry: &str, services: &[&str]) -> std::path::PathBuf {
    let images: Vec<serde_json::Value> = services
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let digest = format!("sha256:{i:064x}");
            serde_json::json!({
                "service": s,
                "image_id": format!("sha256:{:064x}", i + 10),
                "tag": format!("{registry}/ml-mlops/{s}:1.0.0"),
                "digest": digest,
                "reference": format!("{registry}/ml-mlops/{s}@{digest}"),
                "push_seconds": 1.0,
            })
        })
        .collect();
    let record = dir.join("release-1.0.0.json");
    let json = serde_json::json!({
        "registry": registry, "tag": "1.0.0", "version": "1.0.0", "images": images, "scans": {}
    });
    std::fs::write(&record, json.to_string()).unwrap();
    record
}

#[test]
fn deploy_swarm_plans_the_recorded_digests_on_the_registry_the_nodes_reach() {
    let stack = Stack::new();
    let record = release_record(
        stack.path(),
        "127.0.0.1:5000",
        &["mlflow", "bankchurn", "carvision", "telecom"],
    );
    let output = stack.xtask(&[
        "--dry-run",
        "deploy",
        "swarm",
        "--release",
        record.to_str().unwrap(),
        "--registry",
        "10.0.0.1:5000",
        "--publishing",
        "dnsrr-host",
        "--replicas",
        "1",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let plan = stdout(&output);
    assert!(plan.contains("docker stack deploy"), "{plan}");
    assert!(
        plan.contains(&format!(
            "image: 10.0.0.1:5000/ml-mlops/telecom@sha256:{:064x}",
            3
        )),
        "{plan}"
    );
    assert!(
        plan.contains("mode: host") && plan.contains("endpoint_mode: dnsrr"),
        "{plan}"
    );
    assert!(!plan.contains("127.0.0.1:5000/ml-mlops"), "{plan}");
    // Nothing was written: the stack file is shown, not kept.
    assert!(!stack.path().join(".xtask/swarm/stack.yml").exists());
}

#[test]
fn deploy_swarm_refuses_a_record_without_every_service() {
    let stack = Stack::new();
    let record = release_record(stack.path(), "127.0.0.1:5000", &["mlflow", "bankchurn"]);
    let output = stack.xtask(&[
        "--dry-run",
        "deploy",
        "swarm",
        "--release",
        record.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(
        err.contains("holds no image of carvision, telecom"),
        "{err}"
    );
}

//! End to end on the docker runtime, on this machine's engine: images from a clean state, the
//! demo to all healthy, the restart policy after a crash, a second stack beside the first, and
//! a down that leaves nothing; MLflow's container on a PostgreSQL cluster the test starts,
//! backed up and restored.
//! Slow, so `.ci/run` runs it on purpose:
//! `cargo test -p xtask --test e2e_docker -- --ignored --test-threads 1`.
#![allow(clippy::disallowed_methods)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::mlflow_api::Mlflow;
use common::postgres::{OnPostgres, PostgresCluster};
use common::{docker_stdout, health_json, stderr, stdout};

const CONTAINERS: [&str; 4] = [
    "mlflow-server",
    "bankchurn-api",
    "carvision-api",
    "telecom-api",
];

/// `359.2MiB`, `1.2GiB` in MiB.
fn mebibytes(text: &str) -> f64 {
    let text = text.trim();
    let (number, factor) = if let Some(n) = text.strip_suffix("GiB") {
        (n, 1024.0)
    } else if let Some(n) = text.strip_suffix("MiB") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("KiB") {
        (n, 1.0 / 1024.0)
    } else {
        (text, f64::NAN)
    };
    number
        .trim()
        .parse::<f64>()
        .map_or(f64::NAN, |n| n * factor)
}

/// The docker stack uses the published names and ports, so it runs in a stack directory of
/// its own but on the real ports (no offset).
fn xtask(stack: &common::Stack, args: &[&str]) -> std::process::Output {
    let mut full = vec!["--runtime", "docker", "--port-offset", "0"];
    full.extend_from_slice(args);
    stack.xtask(&full)
}

/// Takes the docker stack down when the test ends, passed or failed: its bind mounts live in
/// the test's temporary folder.
struct DownOnDrop<'a>(&'a common::Stack);

impl Drop for DownOnDrop<'_> {
    fn drop(&mut self) {
        xtask(self.0, &["down"]);
    }
}

/// Takes a second stack (on its own port offset) down when the test ends.
struct SecondDownOnDrop<'a>(&'a common::Stack);

impl Drop for SecondDownOnDrop<'_> {
    fn drop(&mut self) {
        self.0.xtask(&["--runtime", "docker", "down"]);
    }
}

#[test]
#[ignore = "end-to-end: builds the API images from a clean state; run by .ci/run"]
fn images_build_from_a_clean_state_and_leave_nothing_dangling() {
    let stack = common::Stack::new();
    // The API images from a clean state: every tag of theirs goes. MLflow's image is kept
    // (rebuilding it costs minutes of pip in every run): its inputs have not changed, so it
    // must be found up to date rather than rebuilt; the pipeline's `images` step builds it
    // where it is missing.
    for image in ["bankchurn", "carvision", "telecom"] {
        let tags = docker_stdout(&[
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}}",
            &format!("ml-mlops/{image}"),
        ]);
        for tag in tags.lines() {
            docker_stdout(&["rmi", "--force", tag]);
        }
        assert_eq!(
            docker_stdout(&["images", "--quiet", &format!("ml-mlops/{image}")]),
            "",
            "ml-mlops/{image} survived"
        );
    }
    let dangling = || {
        let mut ids: Vec<String> =
            docker_stdout(&["images", "--quiet", "--filter", "dangling=true"])
                .lines()
                .map(str::to_owned)
                .collect();
        ids.sort();
        ids
    };
    let dangling_before = dangling();
    let mlflow_before = docker_stdout(&["images", "--quiet", "ml-mlops/mlflow:1.0.0"]);
    let images = xtask(&stack, &["images"]);
    assert!(
        images.status.success(),
        "images failed:\n{}",
        stderr(&images)
    );
    if !mlflow_before.is_empty() {
        assert!(
            stderr(&images).contains("image ml-mlops/mlflow:1.0.0: up to date"),
            "MLflow's image was rebuilt with unchanged inputs:\n{}",
            stderr(&images)
        );
    }
    for image in [
        "ml-mlops/mlflow",
        "ml-mlops/bankchurn",
        "ml-mlops/carvision",
        "ml-mlops/telecom",
    ] {
        assert!(
            stdout(&images).contains(image),
            "the image table lacks {image}"
        );
    }
    let left: Vec<String> = dangling()
        .into_iter()
        .filter(|id| !dangling_before.contains(id))
        .collect();
    assert!(left.is_empty(), "the build left untagged images: {left:?}");
    let api_size: f64 = docker_stdout(&[
        "image",
        "inspect",
        "--format",
        "{{.Size}}",
        "ml-mlops/bankchurn:1.0.0",
    ])
    .parse()
    .unwrap();
    assert!(api_size < 30e6, "the API image is {api_size} bytes");
    let labels = docker_stdout(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Labels}}",
        "ml-mlops/bankchurn:1.0.0",
    ]);
    for key in ["source", "revision", "version", "created"] {
        assert!(
            labels.contains(&format!("org.opencontainers.image.{key}")),
            "{labels}"
        );
    }
}

/// The stack itself, under the compose front-end `XTASK_COMPOSE` chooses (the pipeline runs
/// this test under each one installed).
#[test]
#[ignore = "end-to-end: runs the stack in containers; run by .ci/run"]
fn demo_retrain_crash_recovery_restart_and_down() {
    let stack = common::Stack::new();
    let _down = DownOnDrop(&stack);
    let demo = xtask(&stack, &["demo"]);
    assert!(demo.status.success(), "demo failed:\n{}", stderr(&demo));
    let status = xtask(&stack, &["status"]);
    for name in CONTAINERS {
        let line = stdout(&status)
            .lines()
            .find(|l| l.starts_with(name))
            .map(str::to_owned);
        let line = line.unwrap_or_else(|| panic!("status lacks {name}:\n{}", stdout(&status)));
        assert!(line.contains("Up ") && line.contains("(healthy"), "{line}");
    }
    assert_eq!(
        docker_stdout(&[
            "network",
            "inspect",
            "--format",
            "{{.Name}}",
            "ml-mlops-network"
        ]),
        "ml-mlops-network"
    );
    assert!(xtask(&stack, &["smoke"]).status.success());

    // MLflow stays small: one worker, no job runner.
    let memory = docker_stdout(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.MemUsage}}",
        "mlflow-server",
    ]);
    let mib = mebibytes(memory.split('/').next().unwrap_or_default());
    eprintln!("MEASURED: mlflow-server uses {mib:.0} MiB after the demo registered its models");
    assert!(mib <= 400.0, "MLflow uses {memory}");

    // Retraining on docker: a one-off container of the service's image trains into the model
    // directory, and the running API swaps the new model in.
    let before = health_json(8001);
    assert_eq!(before["registry_alias"], "champion", "{before}");
    let retrain = xtask(
        &stack,
        &["retrain", "bankchurn", "--promote", "--seed", "7"],
    );
    assert!(retrain.status.success(), "{}", stderr(&retrain));
    let after = health_json(8001);
    assert_ne!(after["model_version"], before["model_version"]);
    assert_ne!(after["registry_version"], before["registry_version"]);
    assert_eq!(after["last_reload"]["status"], "loaded", "{after}");

    // A crash (the process killed from the host) is healed by `restart: unless-stopped`.
    let started = docker_stdout(&[
        "inspect",
        "--format",
        "{{.State.StartedAt}}",
        "bankchurn-api",
    ]);
    let pid = docker_stdout(&["inspect", "--format", "{{.State.Pid}}", "bankchurn-api"]);
    assert!(Command::new("kill")
        .args(["-9", &pid])
        .status()
        .unwrap()
        .success());
    common::wait_for(
        "bankchurn-api to come back healthy in a new run",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || {
            let now = docker_stdout(&[
                "inspect",
                "--format",
                "{{.State.StartedAt}} {{.State.Health.Status}}",
                "bankchurn-api",
            ]);
            (!now.starts_with(&started) && now.ends_with(" healthy")).then_some(())
        },
    );

    let started = Instant::now();
    let restart = xtask(&stack, &["restart", "carvision"]);
    let took = started.elapsed();
    assert!(restart.status.success(), "{}", stderr(&restart));
    eprintln!("MEASURED: `restart carvision` to healthy took {took:.2?}");

    // A second stack beside the first (the same images, another port offset): its own
    // compose project, containers, network and directory; each `down` leaves the other
    // healthy.
    let second = common::Stack::new();
    let _second_down = SecondDownOnDrop(&second);
    let suffix = format!("-{}", second.port_offset);
    let second_xtask = |args: &[&str]| {
        let mut full = vec!["--runtime", "docker"];
        full.extend_from_slice(args);
        second.xtask(&full)
    };
    let healthy = |port: u16| {
        let health = health_json(port);
        health["status"] == "healthy" && health["model_loaded"] == true
    };
    let first_healthy = || [8001, 8002, 8003].iter().all(|&p| healthy(p));
    let second_healthy = || [8001, 8002, 8003].iter().all(|&p| healthy(second.port(p)));
    let second_up = || {
        let up = second_xtask(&["up", "--no-mlflow"]);
        assert!(
            up.status.success(),
            "the second stack's up failed:\n{}",
            stderr(&up)
        );
        assert!(second_healthy());
    };
    let started = Instant::now();
    second_up();
    let status = stdout(&second_xtask(&["status"]));
    for name in &CONTAINERS[1..] {
        let line = status
            .lines()
            .find(|l| l.starts_with(&format!("{name}{suffix} ")));
        assert!(
            line.is_some_and(|l| l.contains("Up ")),
            "the second stack's status lacks {name}{suffix}:\n{status}"
        );
        assert!(
            !status.lines().any(|l| l.starts_with(&format!("{name} "))),
            "the second stack's status lists the first's {name}:\n{status}"
        );
    }
    let down = second_xtask(&["down"]);
    assert!(down.status.success(), "{}", stderr(&down));
    assert!(first_healthy(), "the second stack's down harmed the first");
    for name in CONTAINERS {
        assert_eq!(
            docker_stdout(&["inspect", "--format", "{{.State.Running}}", name]),
            "true",
            "the second stack's down stopped {name}"
        );
    }
    second_up();
    eprintln!(
        "MEASURED: a second docker stack up, status, down and up again took {:.2?}",
        started.elapsed()
    );

    let down = xtask(&stack, &["down"]);
    assert!(down.status.success(), "{}", stderr(&down));
    assert!(second_healthy(), "the first stack's down harmed the second");
    let down = second_xtask(&["down"]);
    assert!(down.status.success(), "{}", stderr(&down));
    for name in CONTAINERS {
        let name = format!("{name}{suffix}");
        assert_eq!(
            docker_stdout(&[
                "ps",
                "--all",
                "--quiet",
                "--filter",
                &format!("name=^{name}$")
            ]),
            "",
            "{name} left behind"
        );
    }
    let network = format!("ml-mlops-network{suffix}");
    assert_eq!(
        docker_stdout(&[
            "network",
            "ls",
            "--quiet",
            "--filter",
            &format!("name=^{network}$")
        ]),
        "",
        "{network} was left behind"
    );
    for name in CONTAINERS {
        assert_eq!(
            docker_stdout(&[
                "ps",
                "--all",
                "--quiet",
                "--filter",
                &format!("name=^{name}$")
            ]),
            "",
            "{name} left behind"
        );
    }
    assert_eq!(
        docker_stdout(&[
            "network",
            "ls",
            "--quiet",
            "--filter",
            "name=^ml-mlops-network$"
        ]),
        "",
        "the network was left behind"
    );
    assert!(
        stack.path().join("mlruns/mlflow.db").is_file(),
        "down must keep the MLflow store"
    );
}

/// The default bridge's gateway: where a container reaches this machine (`host-gateway`).
/// Docker 20.10 leaves it out of the network's IPAM config; it is then its subnet's first
/// address.
fn bridge_gateway() -> Option<String> {
    let text = docker_stdout(&[
        "network",
        "inspect",
        "bridge",
        "--format",
        "{{range .IPAM.Config}}{{.Gateway}} {{.Subnet}}{{end}}",
    ]);
    let mut words: Vec<&str> = text.split_whitespace().collect();
    let subnet = words.pop()?;
    match words.pop() {
        Some(gateway) => Some(gateway.to_owned()),
        None => {
            let network: std::net::Ipv4Addr = subnet.split('/').next()?.parse().ok()?;
            Some(std::net::Ipv4Addr::from(u32::from(network) + 1).to_string())
        }
    }
}

#[test]
#[ignore = "end-to-end: MLflow's container on a PostgreSQL cluster the test starts; run by .ci/run"]
fn mlflow_in_a_container_on_postgresql_registers_backs_up_and_restores() {
    if !common::docker_answers() {
        return common::skip("no Docker engine answers");
    }
    let Some(gateway) = bridge_gateway() else {
        return common::skip("the docker bridge has no IPv4 subnet to reach this machine by");
    };
    // Listening on loopback for the toolkit's pg_dump and pg_restore, and on the bridge's
    // gateway for MLflow's container, which reaches `127.0.0.1` in the URI as
    // host.docker.internal.
    let cluster = match PostgresCluster::start_listening(&[&gateway]) {
        Ok(cluster) => cluster,
        Err(why) => return common::skip(why),
    };
    let stack = common::Stack::new();
    let pg = OnPostgres {
        stack: &stack,
        cluster: &cluster,
        runtime: "docker",
    };
    struct Down<'a>(&'a OnPostgres<'a>);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            self.0.xtask(&["down"]);
        }
    }
    let _down = Down(&pg);

    let doctor = pg.xtask(&["doctor"]);
    pg.never_shows_the_password(&doctor);
    for check in ["mlflow database ", "mlflow database from containers"] {
        let line = stdout(&doctor)
            .lines()
            .find(|l| l.contains(check))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("doctor lacks {check}:\n{}", stdout(&doctor)));
        assert!(line.starts_with('✓'), "{line}");
    }

    let started = Instant::now();
    let up = pg.xtask(&["up"]);
    assert!(
        up.status.success(),
        "up on PostgreSQL failed:\n{}\nPostgreSQL's log:\n{}",
        stderr(&up),
        cluster.log()
    );
    eprintln!(
        "MEASURED: up on docker with MLflow on PostgreSQL (train and register three models) took {:.1?}",
        started.elapsed()
    );
    pg.never_shows_the_password(&up);
    let container = format!("mlflow-server-{}", stack.port_offset);
    let command = docker_stdout(&["inspect", "--format", "{{json .Args}}", &container]);
    assert!(
        command.contains(&format!(
            "postgresql://postgres@host.docker.internal:{}/mlflow",
            cluster.port
        )) && !command.contains("s3cret"),
        "{command}"
    );
    assert!(
        !stack.path().join("mlruns/mlflow.db").exists(),
        "MLflow made a SQLite store beside PostgreSQL"
    );
    let mlflow = Mlflow {
        url: format!("http://127.0.0.1:{}", stack.port(5000)),
    };
    let (versions, champions) = mlflow.registry();
    assert_eq!(champions.len(), 3, "champions: {champions:?}");
    let runs = mlflow.runs();
    assert!(runs.len() >= 3, "runs: {runs:?}");
    let registry = (versions, champions);

    let archive = stack.path().join("pg-backup.tar.gz");
    let backup = pg.xtask(&["backup", "--out", archive.to_str().unwrap()]);
    assert!(backup.status.success(), "{}", stderr(&backup));
    pg.never_shows_the_password(&backup);

    pg.lose_then_restore(&archive, &mlflow, &runs, &registry);
}

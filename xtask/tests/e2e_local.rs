//! End to end on the local runtime: real binaries, a real MLflow server, real sockets. Slow
//! (release build, MLflow install on first run), so `.ci/run` runs them on purpose:
//! `cargo test -p xtask --test e2e_local -- --ignored --test-threads 1`.

mod common;

use std::time::Duration;

use common::{stderr, stdout, Stack};

const PORTS: [u16; 4] = [5000, 8001, 8002, 8003];

#[test]
#[ignore = "end-to-end: builds release binaries and runs the stack; run by .ci/run"]
fn demo_then_status_health_smoke_and_down_leave_nothing_behind() {
    let stack = Stack::new();
    let demo = stack.xtask(&["--runtime", "local", "demo"]);
    assert!(demo.status.success(), "demo failed:\n{}", stderr(&demo));
    for name in [
        "mlflow-server",
        "bankchurn-api",
        "carvision-api",
        "telecom-api",
    ] {
        assert!(stdout(&demo).contains(name), "the demo table lacks {name}");
    }

    let status = stack.xtask(&["--runtime", "local", "status", "--json"]);
    assert!(status.status.success());
    let rows: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 4);
    for row in rows.as_array().unwrap() {
        assert_eq!(row["state"], "running", "{row}");
        assert_eq!(row["health"], "healthy", "{row}");
    }
    assert!(stack
        .xtask(&["--runtime", "local", "health"])
        .status
        .success());
    assert!(stack
        .xtask(&["--runtime", "local", "smoke"])
        .status
        .success());

    // Idempotent: a second demo reuses the healthy stack.
    let again = stack.xtask(&["--runtime", "local", "demo"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("bankchurn is already running and healthy"),
        "{}",
        stderr(&again)
    );

    let logs = stack.xtask(&["--runtime", "local", "logs", "--tail", "5"]);
    assert!(
        stdout(&logs).contains("bankchurn | "),
        "logs are not prefixed"
    );

    let pids = stack.pids();
    assert_eq!(pids.len(), 4);
    let down = stack.xtask(&["--runtime", "local", "down"]);
    assert!(down.status.success(), "{}", stderr(&down));
    stack.assert_stopped(&pids, &PORTS, "down");
    assert!(stack.pid_files().is_empty());
}

#[test]
#[ignore = "end-to-end: builds release binaries and runs the stack; run by .ci/run"]
fn a_service_that_cannot_start_fails_the_demo_with_its_log_and_stops_the_rest() {
    let stack = Stack::new();
    // A corrupt model where the served one goes: versions/<v>/ (named, as training names
    // it, after the SHA-256 of its bytes) and the `current` link.
    let model_dir = stack.path().join("models/carvision");
    common::publish_version(&model_dir, b"{ not a model", serde_json::json!({}));

    let demo = stack.xtask(&[
        "--runtime",
        "local",
        "demo",
        "--no-mlflow",
        "--timeout",
        "30",
    ]);
    assert!(!demo.status.success(), "demo passed with a broken model");
    let err = stderr(&demo);
    assert!(err.contains("carvision did not become healthy"), "{err}");
    assert!(err.contains("it refused its model"), "{err}");
    assert!(
        err.contains("not a valid carvision model"),
        "the reason or the log tail is missing:\n{err}"
    );
    stack.assert_stopped(&[], &[8001, 8002, 8003], "the failed demo");
    assert!(
        stack.pid_files().is_empty(),
        "pid files left: {:?}",
        stack.pid_files()
    );
}

#[test]
#[ignore = "end-to-end: builds release binaries and runs the stack; run by .ci/run"]
fn ctrl_c_during_up_stops_what_it_started() {
    let stack = Stack::new();
    let up = stack.spawn_xtask(&["--runtime", "local", "up"]);
    // MLflow starts first and takes seconds to answer: interrupt while `up` waits for it.
    common::wait_for(
        "up to start the services",
        Duration::from_secs(300),
        Duration::from_millis(50),
        || (!stack.pid_files().is_empty()).then_some(()),
    );
    let pids = stack.pids();
    common::interrupt(&up);
    let output = up.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    assert!(stderr(&output).contains("interrupted; stopped what this run had started"));
    stack.assert_stopped(&pids, &PORTS, "Ctrl-C");
}

/// A SIGTERM to everything (a shutdown, a `kill` of the session) reaches MLflow a moment
/// before `up`: that is an interruption, not MLflow failing to start.
#[test]
#[ignore = "end-to-end: builds release binaries and runs the stack; run by .ci/run"]
fn sigterm_to_everything_during_up_is_an_interruption_not_a_failure() {
    let stack = Stack::new();
    let up = stack.spawn_xtask(&["--runtime", "local", "up"]);
    common::wait_for(
        "up to start MLflow",
        Duration::from_secs(300),
        Duration::from_millis(50),
        || (!stack.pid_files().is_empty()).then_some(()),
    );
    let pids = stack.pids();
    for &pid in &pids {
        common::signal(-pid, "TERM");
    }
    common::signal(up.id() as i32, "TERM");
    let output = up.wait_with_output().unwrap();
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(130), "{err}");
    assert!(
        err.contains("interrupted; stopped what this run had started"),
        "{err}"
    );
    assert!(!err.contains("failed to start"), "{err}");
    stack.assert_stopped(&pids, &PORTS, "SIGTERM");
}

#[test]
#[ignore = "end-to-end: builds release binaries and runs the stack; run by .ci/run"]
fn doctor_takes_mlflow_left_out_on_purpose_for_a_choice_not_a_fault() {
    let stack = Stack::new();
    let marker = stack.path().join(".xtask/without-mlflow");
    let mlflow_line = |report: &str| -> String {
        let label = format!("mlflow port {}", stack.port(5000));
        report
            .lines()
            .find(|l| l.contains(&label))
            .unwrap_or_else(|| panic!("no line for {label}:\n{report}"))
            .to_owned()
    };

    let up = stack.xtask(&["--runtime", "local", "up", "--no-mlflow"]);
    assert!(up.status.success(), "{}", stderr(&up));
    assert!(marker.is_file(), "--no-mlflow is not remembered");
    let doctor = stack.xtask(&["--runtime", "local", "doctor"]);
    let line = mlflow_line(&stdout(&doctor));
    assert!(
        line.starts_with('!') && line.contains("brought up with --no-mlflow"),
        "{line}"
    );

    // MLflow brought up again: the choice is forgotten, and MLflow is checked as before.
    let up = stack.xtask(&["--runtime", "local", "up"]);
    assert!(up.status.success(), "{}", stderr(&up));
    assert!(
        !marker.exists(),
        "the --no-mlflow mark outlived MLflow's start"
    );
    let doctor = stack.xtask(&["--runtime", "local", "doctor"]);
    assert!(mlflow_line(&stdout(&doctor)).starts_with('✓'));

    // Beside a running MLflow, --no-mlflow leaves it alone: nothing is left out.
    let up = stack.xtask(&["--runtime", "local", "up", "--no-mlflow"]);
    assert!(up.status.success(), "{}", stderr(&up));
    assert!(!marker.exists(), "a running MLflow was marked as left out");

    let down = stack.xtask(&["--runtime", "local", "down"]);
    assert!(down.status.success(), "{}", stderr(&down));
    let up = stack.xtask(&["--runtime", "local", "up", "--no-mlflow"]);
    assert!(up.status.success(), "{}", stderr(&up));
    assert!(marker.is_file());
    let down = stack.xtask(&["--runtime", "local", "down"]);
    assert!(down.status.success(), "{}", stderr(&down));
    assert!(!marker.exists(), "down left the --no-mlflow mark");
}

/// `GET /health`'s served model version on `port`.
fn served_version(port: u16) -> String {
    common::health_json(port)["model_version"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Two stacks side by side (each its own port offset and directory): each lists only its own
/// services, each `down` leaves the other healthy. On one of them, commands that change it take
/// turns: a retrain waits while the stack's lock is held, saying for whom, and two retrains at
/// once both report the model that is served when they end.
#[test]
#[ignore = "end-to-end: builds release binaries and runs the stack; run by .ci/run"]
fn two_stacks_side_by_side_and_commands_on_one_stack_take_turns() {
    let (first, second) = (Stack::new(), Stack::new());
    let xtask = |stack: &Stack, args: &[&str]| {
        let mut full = vec!["--runtime", "local"];
        full.extend_from_slice(args);
        let output = stack.xtask(&full);
        assert!(
            output.status.success(),
            "{args:?} failed:\n{}",
            stderr(&output)
        );
        output
    };
    let healthy = |stack: &Stack| {
        [8001, 8002, 8003].iter().all(|&p| {
            let health = common::health_json(stack.port(p));
            health["status"] == "healthy" && health["model_loaded"] == true
        })
    };
    xtask(&first, &["up", "--no-mlflow"]);
    xtask(&second, &["up", "--no-mlflow"]);
    assert!(healthy(&first) && healthy(&second));
    for (stack, other) in [(&first, &second), (&second, &first)] {
        let status = xtask(stack, &["status", "--json"]);
        let rows: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
        let containers: Vec<&str> = rows
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["container"].as_str().unwrap())
            .collect();
        let suffix = format!("-{}", stack.port_offset);
        assert!(
            containers.iter().all(|c| c.ends_with(&suffix)),
            "{containers:?}"
        );
        let urls = stdout(&status);
        assert!(!urls.contains(&format!(":{}", other.port(8001))), "{urls}");
    }
    let second_pids = second.pids();
    xtask(&first, &["down"]);
    assert!(healthy(&second), "the first stack's down harmed the second");
    assert_eq!(second.pids(), second_pids);
    xtask(&first, &["up", "--no-mlflow"]);
    xtask(&second, &["down"]);
    assert!(healthy(&first), "the second stack's down harmed the first");

    // While something holds the first stack's lock, a retrain waits and names the holder.
    let port = first.port(8003);
    let before = served_version(port);
    let lock_path = first.path().join(".xtask/lock");
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .open(&lock_path)
        .unwrap();
    lock.lock().unwrap();
    std::fs::write(
        &lock_path,
        format!("pid {}: the test\n", std::process::id()),
    )
    .unwrap();
    let spawn = |seed: &str| {
        first.spawn_xtask_captured(&["--runtime", "local", "retrain", "telecom", "--seed", seed])
    };
    let mut waiting = spawn("11");
    let mut err = std::io::BufReader::new(waiting.stderr.take().unwrap());
    let said = common::wait_for(
        "the retrain to say it waits",
        Duration::from_secs(60),
        Duration::ZERO,
        || {
            let mut line = String::new();
            std::io::BufRead::read_line(&mut err, &mut line).unwrap();
            line.contains("waiting for").then_some(line)
        },
    );
    assert!(
        said.contains(&format!(
            "waiting for the lock of stack {}: held by pid {}: the test",
            first.port_offset,
            std::process::id()
        )),
        "{said}"
    );
    assert_eq!(served_version(port), before, "it retrained while waiting");
    drop(lock);
    let rest = std::io::read_to_string(err).unwrap();
    assert!(waiting.wait().unwrap().success(), "{rest}");
    assert!(rest.contains("is free: going on"), "{rest}");

    // Two at once: they take turns, and the last to finish serves the model it reports.
    let (mut a, mut b) = (spawn("12"), spawn("13"));
    let mut finished = Vec::new();
    common::wait_for(
        "both retrains to finish",
        Duration::from_secs(300),
        Duration::from_millis(20),
        || {
            for (name, child) in [("a", &mut a), ("b", &mut b)] {
                if !finished.iter().any(|(n, _)| *n == name) {
                    if let Some(status) = child.try_wait().unwrap() {
                        finished.push((name, status));
                    }
                }
            }
            (finished.len() == 2).then_some(())
        },
    );
    let outputs: Vec<(String, String)> = [a, b]
        .into_iter()
        .zip(["a", "b"])
        .map(|(child, name)| {
            let output = child.wait_with_output().unwrap();
            (name.to_owned(), stdout(&output) + &stderr(&output))
        })
        .collect();
    for (name, status) in &finished {
        let out = &outputs.iter().find(|(n, _)| n == name).unwrap().1;
        assert!(status.success(), "retrain {name} failed:\n{out}");
    }
    let last = &outputs.iter().find(|(n, _)| *n == finished[1].0).unwrap().1;
    let served = served_version(port);
    assert!(
        last.contains(&format!("telecom: serving model {served} ")),
        "the last retrain does not report the served model {served}:\n{last}"
    );
    xtask(&first, &["down"]);
}

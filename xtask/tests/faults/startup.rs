//! Faults before the stack is up: a stranger on a stack port before `demo`, Ctrl-C while `demo`
//! waits for the stack; and `demo` itself, which the later cases need.

use std::time::{Duration, Instant};

use crate::common::{self, docker_stdout, stderr, wait_for};
use crate::http::{health, is_healthy};
use crate::target::{service, stack_containers, Runtime, Target, APIS};

/// A stranger listens on a stack port: `demo` fails before building, training or starting
/// anything, and names the stranger.
pub fn stranger_on_a_port(target: &Target) -> String {
    let port = target.port("telecom");
    let stranger = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let started = Instant::now();
    let demo = target.xtask(&["demo"]);
    let took = started.elapsed();
    drop(stranger);
    let err = stderr(&demo);
    assert!(
        !demo.status.success(),
        "demo ran despite a stranger on port {port}"
    );
    let me = format!("(pid {})", std::process::id());
    assert!(
        err.contains(&format!("port {port} is held by")) && err.contains(&me),
        "the holder is not named:\n{err}"
    );
    // Its command line first (shortened past 100 characters), then its pid.
    let exe = std::env::current_exe().unwrap();
    let command: String = exe.to_string_lossy().chars().take(60).collect();
    assert!(
        err.contains(&format!("is held by {command}")),
        "the holder's command is not named:\n{err}"
    );
    assert!(err.contains("Nothing was started"), "{err}");
    assert!(
        !target.stack.path().join("models").exists(),
        "models were trained before the port check"
    );
    assert_eq!(
        target.leftovers(),
        Vec::<String>::new(),
        "something was started"
    );
    eprintln!(
        "MEASURED: [{}] demo refused a stranger on port {port} after {took:.2?}",
        target.name()
    );
    format!("refused in {:.2}s, holder named", took.as_secs_f64())
}

/// SIGINT while `demo` waits for the stack to become healthy: exit 130, nothing left.
pub fn ctrl_c_during_demo(target: &Target) -> String {
    let demo = target.spawn_xtask(&["demo"]);
    // MLflow starts first and takes seconds to build its store and answer: demo waits for it.
    let mlflow_started = || match target.runtime {
        Runtime::Docker => stack_containers().contains(&service("mlflow").container),
        Runtime::Local => !target.stack.pid_files().is_empty(),
    };
    wait_for(
        "demo to start MLflow",
        Duration::from_secs(600),
        Duration::from_millis(50),
        || mlflow_started().then_some(()),
    );
    let pids: Vec<i32> = match target.runtime {
        Runtime::Local => target.stack.pids(),
        Runtime::Docker => Vec::new(),
    };
    let interrupted = Instant::now();
    common::interrupt(&demo);
    let output = demo.wait_with_output().unwrap();
    let took = interrupted.elapsed();
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(130), "{err}");
    assert!(
        err.contains("interrupted; stopped what this run had started"),
        "{err}"
    );
    assert_eq!(
        target.leftovers(),
        Vec::<String>::new(),
        "left behind after Ctrl-C"
    );
    // MLflow may have been stopped while it built its store: a half-made one must not stay.
    let store = target.stack.path().join("mlruns/mlflow.db");
    assert!(
        !store.exists(),
        "the MLflow store this demo began is left half made"
    );
    for pid in pids {
        assert!(!common::pid_alive(pid), "pid {pid} survived Ctrl-C");
    }
    eprintln!(
        "MEASURED: [{}] Ctrl-C during demo: stopped everything in {took:.2?}",
        target.name()
    );
    let network = if target.runtime == Runtime::Docker {
        let left = docker_stdout(&[
            "network",
            "ls",
            "--quiet",
            "--filter",
            "name=^ml-mlops-network$",
        ]);
        assert!(left.is_empty(), "the stack's network is left after Ctrl-C");
        ", no network"
    } else {
        ""
    };
    format!(
        "exit 130, cleaned up in {:.2}s, 0 left{network}",
        took.as_secs_f64()
    )
}

pub fn demo(target: &Target) -> String {
    let started = Instant::now();
    let demo = target.xtask(&["demo"]);
    assert!(demo.status.success(), "demo failed:\n{}", stderr(&demo));
    for api in APIS {
        assert!(is_healthy(target.addr(api)), "{api} is not healthy");
    }
    assert!(
        health(target.addr("mlflow")).is_ok_and(|(s, _)| s == 200),
        "MLflow does not answer"
    );
    format!("all healthy in {:.1}s", started.elapsed().as_secs_f64())
}

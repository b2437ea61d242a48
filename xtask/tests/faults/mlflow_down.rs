//! MLflow stopped under running APIs: they keep predicting; `status` shows it stopped and
//! `doctor` fails naming it; `up` brings it back.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{self, docker_stdout, stderr, stdout, wait_for};
use crate::http::{health, is_healthy, predict_ok};
use crate::target::{service, Runtime, Target, APIS};

/// MLflow stopped under running APIs: they keep answering; `status` says MLflow is stopped and
/// `doctor` fails naming it; `up` brings it back.
pub fn case(target: &Target) -> String {
    let doctor = target.xtask(&["doctor"]);
    assert!(
        doctor.status.success(),
        "doctor fails with the whole stack up:\n{}",
        stdout(&doctor)
    );
    match target.runtime {
        Runtime::Docker => {
            docker_stdout(&["stop", "--time", "15", &service("mlflow").container]);
        }
        Runtime::Local => {
            let pid = target.pid("mlflow");
            common::signal(-pid, "TERM");
            wait_for(
                "MLflow to stop on SIGTERM",
                Duration::from_secs(20),
                Duration::from_millis(50),
                || (!common::pid_alive(pid)).then_some(()),
            );
        }
    }
    let mlflow = target.addr("mlflow");
    assert!(health(mlflow).is_err(), "MLflow still answers");
    let mut predictions = 0;
    for _ in 0..5 {
        for api in APIS {
            assert!(
                predict_ok(target.addr(api), api),
                "{api} stopped predicting without MLflow"
            );
            assert!(
                is_healthy(target.addr(api)),
                "{api} is unhealthy without MLflow"
            );
            predictions += 1;
        }
    }
    let status = target.xtask(&["status", "--json"]);
    assert!(status.status.success());
    let rows: Value = serde_json::from_slice(&status.stdout).unwrap();
    let row = |name: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["service"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(row("mlflow")["state"], "stopped", "{rows}");
    for api in APIS {
        assert_eq!(row(api)["health"], "healthy", "{rows}");
    }
    let doctor = target.xtask(&["doctor"]);
    let report = stdout(&doctor);
    assert!(
        !doctor.status.success(),
        "doctor passed with MLflow down:\n{report}"
    );
    let named = report
        .lines()
        .find(|l| l.starts_with("✗ mlflow"))
        .unwrap_or_else(|| panic!("doctor does not name MLflow:\n{report}"))
        .to_owned();
    let failed_checks = report.lines().filter(|l| l.starts_with('✗')).count();
    assert_eq!(
        failed_checks, 1,
        "doctor fails for more than MLflow:\n{report}"
    );
    let started = Instant::now();
    let up = target.xtask(&["up"]);
    assert!(
        up.status.success(),
        "up did not bring MLflow back:\n{}",
        stderr(&up)
    );
    let back = started.elapsed();
    assert!(
        health(mlflow).is_ok_and(|(s, _)| s == 200),
        "MLflow is not back"
    );
    eprintln!("MEASURED: [{}] MLflow down: {predictions} predictions answered 200; `up` brought it back in {back:.2?}", target.name());
    format!(
        "{predictions}/{predictions} predictions ok; status: stopped; doctor: `{}`; back in {:.1}s",
        named
            .trim_start_matches("✗ ")
            .split_whitespace()
            .take(6)
            .collect::<Vec<_>>()
            .join(" "),
        back.as_secs_f64()
    )
}

//! End to end, drift to a promoted model, on the local runtime with a real MLflow server: the
//! demo serves its models, traffic whose `Age` is 15 years older than the training data's
//! arrives, `drift` says so and exits 1, `retrain --if-drifted` on the new data registers and
//! promotes a model that the API swaps in under that traffic with no failed request, and
//! `drift` is then back to `insufficient_data` or `stable` against the new model's profile.
//!
//! Slow: `.ci/run` runs it on purpose:
//! `cargo test -p xtask --test e2e_drift -- --ignored --test-threads 1`.
#![allow(clippy::disallowed_methods)]

mod common;

use std::sync::Arc;

use common::traffic::Traffic;
use common::{health_json, stderr, stdout, Stack};
use serde_json::{Map, Value};

fn xtask(stack: &Stack, args: &[&str]) -> std::process::Output {
    let mut full = vec!["--runtime", "local"];
    full.extend_from_slice(args);
    stack.xtask(&full)
}

/// BankChurn's request fields, as the CSV names its columns.
const FIELDS: [&str; 10] = [
    "CreditScore",
    "Geography",
    "Gender",
    "Age",
    "Tenure",
    "Balance",
    "NumOfProducts",
    "HasCrCard",
    "IsActiveMember",
    "EstimatedSalary",
];
const TEXT_FIELDS: [&str; 2] = ["Geography", "Gender"];

/// The CSV at `path` as header and rows (the generated file quotes nothing).
fn read_csv(path: &std::path::Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let split = |line: &str| {
        line.split(',')
            .map(|c| c.trim().to_owned())
            .collect::<Vec<_>>()
    };
    let header = split(lines.next().unwrap());
    (header, lines.filter(|l| !l.is_empty()).map(split).collect())
}

/// Each row with every field given, as a `/predict` body.
fn requests(header: &[String], rows: &[Vec<String>]) -> Vec<String> {
    let column = |name: &str| header.iter().position(|h| h == name).unwrap();
    rows.iter()
        .filter_map(|row| {
            let mut item = Map::new();
            for field in FIELDS {
                let cell = &row[column(field)];
                if cell.is_empty() {
                    return None;
                }
                let value = if TEXT_FIELDS.contains(&field) {
                    Value::from(cell.as_str())
                } else {
                    Value::from(cell.parse::<f64>().unwrap())
                };
                item.insert(field.to_owned(), value);
            }
            Some(Value::Object(item).to_string())
        })
        .collect()
}

#[test]
#[ignore = "end-to-end: a real MLflow server and the local stack; run by .ci/run"]
fn drifted_traffic_is_detected_and_retrain_if_drifted_promotes_a_model_served_without_a_failure() {
    let stack = Stack::new();
    let demo = xtask(&stack, &["demo"]);
    assert!(demo.status.success(), "demo failed:\n{}", stderr(&demo));
    let api = stack.port(8001);

    // Nothing predicted yet: no verdict, and nothing to retrain.
    let quiet = xtask(&stack, &["drift", "bankchurn"]);
    assert!(quiet.status.success(), "{}", stderr(&quiet));
    assert!(
        stdout(&quiet).contains("bankchurn: insufficient_data"),
        "{}",
        stdout(&quiet)
    );
    let old_version = health_json(api)["model_version"]
        .as_str()
        .unwrap()
        .to_owned();
    let skipped = xtask(&stack, &["retrain", "bankchurn", "--if-drifted"]);
    assert!(skipped.status.success(), "{}", stderr(&skipped));
    assert!(
        stderr(&skipped).contains("nothing retrained"),
        "{}",
        stderr(&skipped)
    );
    assert_eq!(health_json(api)["model_version"], old_version.as_str());

    // New data: the customers are 15 years older (at most 100, as the API allows).
    let data = stack.path().join("data/bankchurn/Churn_Modelling.csv");
    let (header, mut rows) = read_csv(&data);
    let age = header.iter().position(|h| h == "Age").unwrap();
    for row in &mut rows {
        let older = (row[age].parse::<f64>().unwrap() + 15.0).min(100.0);
        row[age] = format!("{older}");
    }
    let drifted = stack.path().join("drifted.csv");
    let mut text = header.join(",") + "\n";
    for row in &rows {
        text.push_str(&(row.join(",") + "\n"));
    }
    std::fs::write(&drifted, text).unwrap();
    let bodies = Arc::new(requests(&header, &rows));
    assert!(bodies.len() > 1000, "{} requests", bodies.len());

    // That traffic, until well past the rows a verdict needs.
    let traffic = Traffic::start(format!("http://127.0.0.1:{api}/predict"), bodies, 4);
    traffic.wait_for_requests(1500);
    let measured = xtask(&stack, &["drift", "--json"]);
    assert_eq!(
        measured.status.code(),
        Some(1),
        "drift must exit 1:\n{}",
        stderr(&measured)
    );
    let reports: Vec<Value> = serde_json::from_slice(&measured.stdout).unwrap();
    let bankchurn = reports
        .iter()
        .find(|r| r["service"] == "bankchurn")
        .unwrap();
    assert_eq!(bankchurn["verdict"], "drifted", "{bankchurn}");
    let age_drift = bankchurn["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["feature"] == "Age")
        .unwrap();
    assert_eq!(age_drift["verdict"], "drifted", "{bankchurn}");
    eprintln!(
        "MEASURED: Age PSI under drifted traffic: {}",
        age_drift["psi"]
    );
    assert!(
        stderr(&measured).contains("drifted: bankchurn"),
        "{}",
        stderr(&measured)
    );
    let table = xtask(&stack, &["drift", "bankchurn"]);
    assert!(stdout(&table).contains("Age"), "{}", stdout(&table));

    // Retrain only because it drifted: registered, promoted and swapped in under the traffic.
    let retrain = xtask(
        &stack,
        &[
            "retrain",
            "bankchurn",
            "--if-drifted",
            "--data-path",
            drifted.to_str().unwrap(),
            "--register-model",
            "--promote",
        ],
    );
    traffic.wait_for_requests(200);
    let (sent, failed) = traffic.finish();
    assert!(retrain.status.success(), "{}", stderr(&retrain));
    eprintln!(
        "MEASURED: retrain --if-drifted under drifted traffic: {sent} requests, {failed} failed"
    );
    assert_eq!(failed, 0, "requests failed during the swap");
    let served = health_json(api);
    assert_ne!(served["model_version"], old_version.as_str(), "{served}");
    assert_eq!(served["registry_alias"], "champion", "{served}");
    let said = stdout(&retrain);
    assert!(
        said.contains("candidate") && said.contains("champion"),
        "{said}"
    );

    // Against the new model's profile, the same traffic is no drift.
    let after = xtask(&stack, &["drift", "bankchurn", "--json"]);
    assert!(
        after.status.success(),
        "{}\n{}",
        stdout(&after),
        stderr(&after)
    );
    let reports: Vec<Value> = serde_json::from_slice(&after.stdout).unwrap();
    assert!(
        ["insufficient_data", "stable"].contains(&reports[0]["verdict"].as_str().unwrap()),
        "{}",
        reports[0]
    );
    assert_eq!(reports[0]["model_version"], served["model_version"]);
}

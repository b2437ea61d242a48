use std::path::Path;

use bankchurn::BankChurn;
use serde_json::json;
use serving::Service;
use serving_testkit as testkit;

#[tokio::test]
async fn every_endpoint_and_every_kind_of_bad_input() {
    testkit::conformance::<BankChurn>(&[
        ("CreditScore", json!({"CreditScore": 299})),
        ("CreditScore", json!({"CreditScore": 851})),
        ("CreditScore", json!({"CreditScore": "high"})),
        ("Geography", json!({"Geography": "Italy"})),
        ("Gender", json!({"Gender": 1})),
        ("Age", json!({"Age": 17})),
        ("Age", json!({"Age": 101})),
        ("Tenure", json!({"Tenure": 10.5})),
        ("Balance", json!({"Balance": -0.01})),
        ("NumOfProducts", json!({"NumOfProducts": 5})),
        ("HasCrCard", json!({"HasCrCard": 2})),
        ("IsActiveMember", json!({"IsActiveMember": -1})),
        ("EstimatedSalary", json!({"EstimatedSalary": null})),
    ])
    .await;
}

#[tokio::test]
async fn a_prediction_is_consistent_and_explained_by_the_model() {
    let (_dir, app) = testkit::trained_router::<BankChurn>(3000);
    let (_, p) = testkit::call(
        &app,
        "POST",
        "/predict",
        Some(serde_json::to_string(&BankChurn::example_request()).unwrap()),
    )
    .await;
    let probability = p["churn_probability"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&probability));
    assert_eq!(p["churn_prediction"], u8::from(probability >= 0.5));
    let expected_risk = if probability < 0.3 {
        "LOW"
    } else if probability < 0.7 {
        "MEDIUM"
    } else {
        "HIGH"
    };
    assert_eq!(p["risk_level"], expected_risk);
    assert!((p["confidence"].as_f64().unwrap() - (probability - 0.5).abs() * 2.0).abs() < 1e-12);
    // The contributions come from the trees: with the base they add up to the probability.
    let contributions = p["feature_contributions"].as_object().unwrap();
    assert_eq!(contributions.len(), 10);
    let sum: f64 = contributions.values().map(|v| v.as_f64().unwrap()).sum();
    let base = p["base_probability"].as_f64().unwrap();
    assert!(
        (base + sum - probability).abs() < 1e-6,
        "{base} + {sum} != {probability}"
    );
    assert!(p["prediction_timestamp"].as_str().unwrap().ends_with('Z'));

    let (_, metrics) = testkit::call(&app, "GET", "/metrics", None).await;
    let line = format!("bankchurn_predictions_total{{risk_level=\"{expected_risk}\"}} 1");
    assert!(metrics.as_str().unwrap().contains(&line), "{metrics}");
}

#[tokio::test]
async fn without_a_model_health_and_predictions_say_503() {
    testkit::without_model::<BankChurn>().await;
}

#[test]
fn training_is_deterministic() {
    testkit::training_is_deterministic::<BankChurn>();
}

#[test]
fn the_model_learns_the_synthetic_signal() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = testkit::train_into::<BankChurn>(dir.path(), 10_000, 1);
    assert!(metrics["roc_auc"].as_f64().unwrap() > 0.78, "{metrics}");
    assert!(metrics["f1"].as_f64().unwrap() > 0.5, "{metrics}");
}

fn write(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("Churn_Modelling.csv");
    std::fs::write(&path, text).unwrap();
    path
}

const HEADER: &str = "RowNumber,CustomerId,Surname,CreditScore,Geography,Gender,Age,Tenure,Balance,NumOfProducts,HasCrCard,IsActiveMember,EstimatedSalary,Exited";

#[test]
fn loads_the_public_file_layout_crlf_blank_tenure_and_identifiers() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{HEADER}\r\n1,15634602,Hargrave,619,France,Female,42,2.0,0.0,1,1,1,101348.88,1\r\n2,15647311,Hill,608,Spain,Female,41,,83807.86,1,0,1,112542.58,0\r\n"
    );
    let (x, y) = bankchurn::load(&write(dir.path(), &text)).unwrap();
    assert_eq!(y, vec![1.0, 0.0]);
    assert_eq!(
        x.row(0),
        &[619.0, 0.0, 1.0, 42.0, 2.0, 0.0, 1.0, 1.0, 1.0, 101348.88]
    );
    assert!(x.row(1)[4].is_nan(), "a blank Tenure is missing, not zero");
}

#[test]
fn a_malformed_file_is_rejected_with_line_and_column_and_the_old_model_survives() {
    let dir = tempfile::tempdir().unwrap();
    testkit::train_into::<BankChurn>(dir.path(), 800, 1);
    let before = testkit::snapshot(&dir.path().join("model"));

    let mut text = std::fs::read_to_string(dir.path().join("data.csv")).unwrap();
    text.push_str("801,15600000,Doe,700,France,Male,forty,3.0,0.0,1,1,1,50000.0,0\r\n");
    let bad = write(dir.path(), &text);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_bankchurn"))
        .args([
            "train",
            "--data-path",
            bad.to_str().unwrap(),
            "--model-dir",
            dir.path().join("model").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("line 802, column `Age`: expected a number, found \"forty\""),
        "{stderr}"
    );
    assert!(
        testkit::snapshot(&dir.path().join("model")) == before,
        "the previous model was touched"
    );
}

#[tokio::test]
async fn the_title_is_the_service_tomls() {
    testkit::title_is_the_service_tomls::<BankChurn>(Path::new(env!("CARGO_MANIFEST_DIR"))).await;
}

#[test]
fn sighup_swaps_in_a_new_model_and_refuses_a_lying_one() {
    testkit::reload_on_sighup::<BankChurn>(Path::new(env!("CARGO_BIN_EXE_bankchurn")));
}

#[test]
fn health_answers_under_a_slowloris_and_sigterm_ends_a_half_sent_request() {
    testkit::slowloris_and_sigterm::<BankChurn>(Path::new(env!("CARGO_BIN_EXE_bankchurn")), 300);
}

#[test]
fn serve_answers_on_a_real_socket_and_healthcheck_agrees() {
    testkit::serve_and_healthcheck(Path::new(env!("CARGO_BIN_EXE_bankchurn")));
}

#[test]
fn copies_share_a_port_only_with_a_model_and_one_stopping_leaves_the_other() {
    testkit::shared_port_copies(Path::new(env!("CARGO_BIN_EXE_bankchurn")));
}

#[test]
fn degenerate_data_is_refused_and_the_model_left_as_it_was() {
    let mut one_class = format!("{HEADER}\r\n");
    for i in 0..500 {
        one_class.push_str(&format!(
            "{i},15634602,Hargrave,619,France,Female,42,2.0,0.0,1,1,1,101348.88,0\r\n"
        ));
    }
    testkit::degenerate_data_is_refused::<BankChurn>(
        Path::new(env!("CARGO_BIN_EXE_bankchurn")),
        &[("a single class", one_class, "every row has Exited = 0")],
        ("Age", "-5"),
    );
}

#[tokio::test]
async fn old_clients_batches_and_integers_written_as_floats_are_accepted() {
    let (_dir, app) = testkit::trained_router::<BankChurn>(1000);
    let customer = serde_json::to_value(BankChurn::example_request()).unwrap();
    let (status, old) = testkit::call(
        &app,
        "POST",
        "/predict_batch",
        Some(json!({"customers": [customer.clone(), customer.clone()]}).to_string()),
    )
    .await;
    assert_eq!(status, 200, "{old}");
    for key in [
        "predictions",
        "batch_id",
        "total_customers",
        "processing_time_seconds",
        "count",
    ] {
        assert!(!old[key].is_null(), "no {key}: {old}");
    }
    assert_eq!(old["total_customers"], 2);
    let (status, answer) = testkit::call(
        &app,
        "POST",
        "/predict_batch",
        Some(json!({"customers": [customer.clone()], "items": [customer.clone()]}).to_string()),
    )
    .await;
    assert_eq!(status, 422, "{answer}");

    let mut floats = customer.clone();
    floats["Age"] = json!(42.0);
    floats["NumOfProducts"] = json!(1.0);
    let (status, answer) = testkit::call(&app, "POST", "/predict", Some(floats.to_string())).await;
    assert_eq!(status, 200, "{answer}");
    floats["Age"] = json!(42.5);
    let (status, answer) = testkit::call(&app, "POST", "/predict", Some(floats.to_string())).await;
    assert_eq!(
        (status.as_u16(), answer["field"].as_str()),
        (422, Some("Age"))
    );
    let duplicate = customer.to_string().replacen('{', "{\"Age\": 30,", 1);
    let (status, answer) = testkit::call(&app, "POST", "/predict", Some(duplicate)).await;
    assert_eq!(
        (status.as_u16(), answer["field"].as_str()),
        (422, Some("Age")),
        "{answer}"
    );
}

#[test]
fn serve_refuses_a_dashboard_port_it_has_no_dashboard_for() {
    testkit::dashboard_port_is_refused::<BankChurn>(Path::new(env!("CARGO_BIN_EXE_bankchurn")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drift_is_stable_on_the_training_rows_and_drifted_on_age_plus_15_years() {
    testkit::drift_is_measured::<BankChurn>("Age", |age| (age + 15.0).min(100.0)).await;
}

#[tokio::test]
async fn a_model_without_a_drift_profile_serves_and_a_changed_profile_is_refused() {
    testkit::profiles_are_optional_but_checked::<BankChurn>().await;
}

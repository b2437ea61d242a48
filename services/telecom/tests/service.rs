use std::path::Path;

use serde_json::json;
use serving::{PredictionMeta, Service};
use serving_testkit as testkit;
use telecom::{Telecom, Usage};

#[tokio::test]
async fn every_endpoint_and_every_kind_of_bad_input() {
    testkit::conformance::<Telecom>(&[
        ("calls", json!({"calls": -1})),
        ("minutes", json!({"minutes": "long"})),
        ("messages", json!({"messages": -0.5})),
        ("mb_used", json!({"mb_used": null})),
    ])
    .await;
}

#[tokio::test]
async fn heavier_usage_means_a_higher_chance_of_ultra() {
    let (_dir, app) = testkit::trained_router::<Telecom>(3214);
    let ask = |usage: serde_json::Value| {
        let app = app.clone();
        async move {
            testkit::call(&app, "POST", "/predict", Some(usage.to_string()))
                .await
                .1
        }
    };
    let light = ask(json!({"calls": 20, "minutes": 150, "messages": 10, "mb_used": 8000})).await;
    let heavy = ask(json!({"calls": 130, "minutes": 950, "messages": 90, "mb_used": 35000})).await;
    let p = |v: &serde_json::Value| v["probability_is_ultra"].as_f64().unwrap();
    assert!(p(&heavy) > p(&light), "{light} vs {heavy}");
    assert_eq!(heavy["prediction"], 1);
    assert_eq!(light["prediction"], 0);
}

#[tokio::test]
async fn without_a_model_health_and_predictions_say_503() {
    testkit::without_model::<Telecom>().await;
}

#[test]
fn training_is_deterministic() {
    testkit::training_is_deterministic::<Telecom>();
}

#[test]
fn the_model_learns_the_synthetic_signal() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = testkit::train_into::<Telecom>(dir.path(), 3214, 1);
    assert!(metrics["accuracy"].as_f64().unwrap() > 0.76, "{metrics}");
    assert!(metrics["roc_auc"].as_f64().unwrap() > 0.75, "{metrics}");
}

#[test]
fn loads_floats_and_rejects_a_bad_target_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users_behavior.csv");
    std::fs::write(&path, "calls,minutes,messages,mb_used,is_ultra\n40.0,311.8999999999999,83.0,19915.42,0\n85.0,516.75,56.0,22696.96,1\n").unwrap();
    let (x, y) = telecom::load(&path).unwrap();
    assert_eq!(y, vec![0.0, 1.0]);
    assert_eq!(x.row(0), &[40.0, 311.8999999999999, 83.0, 19915.42]);

    std::fs::write(&path, "calls,minutes,messages,mb_used,is_ultra\n40.0,311.9,83.0,19915.42,0\n85.0,516.75,56.0,22696.96,2\n").unwrap();
    let err = telecom::load(&path).unwrap_err().to_string();
    assert!(
        err.ends_with("line 3, column `is_ultra`: expected 0 or 1, found 2"),
        "{err}"
    );
}

#[tokio::test]
async fn the_title_is_the_service_tomls() {
    testkit::title_is_the_service_tomls::<Telecom>(Path::new(env!("CARGO_MANIFEST_DIR"))).await;
}

#[test]
fn sighup_swaps_in_a_new_model_and_refuses_a_lying_one() {
    testkit::reload_on_sighup::<Telecom>(Path::new(env!("CARGO_BIN_EXE_telecom")));
}

#[test]
fn health_answers_under_a_slowloris_and_sigterm_ends_a_half_sent_request() {
    testkit::slowloris_and_sigterm::<Telecom>(Path::new(env!("CARGO_BIN_EXE_telecom")), 300);
}

#[test]
fn serve_answers_on_a_real_socket_and_healthcheck_agrees() {
    testkit::serve_and_healthcheck(Path::new(env!("CARGO_BIN_EXE_telecom")));
}

#[test]
fn degenerate_data_is_refused_and_the_model_left_as_it_was() {
    let mut one_class = String::from("calls,minutes,messages,mb_used,is_ultra\n");
    for i in 0..300 {
        one_class.push_str(&format!("{i}.0,311.9,83.0,19915.42,1\n"));
    }
    testkit::degenerate_data_is_refused::<Telecom>(
        Path::new(env!("CARGO_BIN_EXE_telecom")),
        &[("a single class", one_class, "every row has is_ultra = 1")],
        ("calls", "-3"),
    );
}

#[tokio::test]
async fn the_old_api_shape_gets_exactly_the_models_answer() {
    let (dir, app) = testkit::trained_router::<Telecom>(1000);
    let usage = json!({"calls": 85, "minutes": 516.75, "messages": 56, "mb_used": 22696.96});
    let (status, answer) = testkit::call(&app, "POST", "/predict", Some(usage.to_string())).await;
    assert_eq!(status, 200, "{answer}");

    // The same model, asked in-process: the answer over HTTP is exactly its answer.
    let served = serving::model::load::<Telecom>(&dir.path().join("model"))
        .unwrap()
        .expect("the trained model");
    let meta = PredictionMeta {
        model_version: served.version.clone(),
        timestamp: String::new(),
    };
    let request: Usage = serde_json::from_value(usage).unwrap();
    let expected = &Telecom::predict(&served.model, &[request], &meta)[0];
    assert_eq!(
        answer,
        json!({
            "prediction": expected.prediction,
            "probability_is_ultra": expected.probability_is_ultra,
            "model_version": served.version,
        })
    );
    assert_eq!(
        expected.prediction,
        u8::from(expected.probability_is_ultra >= 0.5)
    );
}

#[test]
fn serve_refuses_a_dashboard_port_it_has_no_dashboard_for() {
    testkit::dashboard_port_is_refused::<Telecom>(Path::new(env!("CARGO_BIN_EXE_telecom")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drift_is_stable_on_the_training_rows_and_drifted_on_calls_halved() {
    testkit::drift_is_measured::<Telecom>("calls", |calls| calls / 2.0).await;
}

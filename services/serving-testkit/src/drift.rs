//! Drift measured by the service itself, driven in-process through the router: the training
//! rows replayed give `stable` everywhere, the same rows with one feature shifted give
//! `drifted` on that feature only, and the counts stay exact under concurrent requests.

use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Value};
use serving::axum::http::StatusCode;
use serving::axum::Router;
use serving::http::{router, AppState};
use serving::Service;

use crate::api::{call, train_into};

/// Rows the model is trained on and then replayed: well above the verdict's minimum.
const ROWS: usize = 3000;
/// Requests in flight at once while replaying.
const CONCURRENCY: usize = 8;

/// Each row of the CSV at `data` that is a valid request of `S`, as a JSON object (the
/// library's reading, the very one its profile is made from).
pub fn requests_from_csv<S: Service>(data: &Path) -> Vec<Map<String, Value>> {
    let (_, rows) = serving::drift::requests_from_csv(data, &S::example_request())
        .expect("the data file reads");
    rows.filter_map(Result::ok)
        .filter(|request| S::validate(request).is_ok())
        .map(
            |request| match serde_json::to_value(request).expect("serializes") {
                Value::Object(fields) => fields,
                other => panic!("a request is an object: {other}"),
            },
        )
        .collect()
}

/// Posts every item to `/predict`, [`CONCURRENCY`] at a time; returns how many were
/// answered 200 (an item the API refuses with 422 is not counted, by the API either).
async fn replay(app: &Router, items: Vec<Map<String, Value>>) -> u64 {
    let items = Arc::new(items);
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|worker| {
            let (app, items) = (app.clone(), items.clone());
            tokio::spawn(async move {
                let mut answered = 0u64;
                for item in items.iter().skip(worker).step_by(CONCURRENCY) {
                    let body = serde_json::to_string(item).expect("serializes");
                    let (status, answer) = call(&app, "POST", "/predict", Some(body)).await;
                    match status {
                        StatusCode::OK => answered += 1,
                        StatusCode::UNPROCESSABLE_ENTITY => {}
                        other => panic!("/predict answered {other}: {answer}"),
                    }
                }
                answered
            })
        })
        .collect();
    let mut answered = 0;
    for task in tasks {
        answered += task.await.expect("a replay task");
    }
    answered
}

fn verdicts(report: &Value) -> Vec<(String, String, f64)> {
    report["features"]
        .as_array()
        .expect("features")
        .iter()
        .map(|f| {
            (
                f["feature"].as_str().unwrap().to_owned(),
                f["verdict"].as_str().unwrap().to_owned(),
                f["psi"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// Trains `S` on generated rows, then replays them twice against fresh loads of the model:
/// as they are (every feature `stable`), and with `shift` applied to the number in field
/// `feature` (that feature `drifted`, every other `stable`). Both replays run concurrently,
/// and the rows `/drift` and `/metrics` count are exactly the predictions answered.
pub async fn drift_is_measured<S: Service>(feature: &str, shift: fn(f64) -> f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    train_into::<S>(dir.path(), ROWS, 7);
    let items = requests_from_csv::<S>(&dir.path().join("data.csv"));
    let load = || {
        let model = serving::model::load::<S>(&dir.path().join("model"))
            .expect("load")
            .expect("a model");
        assert!(model.drift.is_some(), "the model was stored with a profile");
        router(AppState::<S>::new(Some(model)))
    };

    let app = load();
    let (_, before) = call(&app, "GET", "/drift", None).await;
    assert_eq!(before["verdict"], "insufficient_data", "{before}");
    assert_eq!(before["rows"], 0, "{before}");
    let sent = items.len();
    let answered = replay(&app, items.clone()).await;
    // A row with a blank required cell (BankChurn's public file leaves some `Tenure`
    // blank, and so does its generator) is no request: it was not profiled either.
    assert_eq!(answered as usize, sent, "every valid row answered");
    assert!(answered as usize >= ROWS * 3 / 4, "{answered} of {ROWS}");
    let (status, report) = call(&app, "GET", "/drift", None).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        report["rows"], answered,
        "every answered prediction counted once"
    );
    assert_eq!(report["thresholds"]["stable_below"], 0.1);
    assert_eq!(report["thresholds"]["drifted_above"], 0.25);
    assert!(
        verdicts(&report).iter().any(|(name, _, _)| name == feature),
        "{feature} is profiled: {report}"
    );
    for (name, verdict, psi) in verdicts(&report) {
        eprintln!(
            "MEASURED: {} replayed {name}: PSI {psi:.5}",
            S::MANIFEST.name
        );
        assert_eq!(verdict, "stable", "{name} (PSI {psi}) in {report}");
    }
    assert_eq!(report["verdict"], "stable", "{report}");
    let (_, metrics) = call(&app, "GET", "/metrics", None).await;
    let metrics = metrics.as_str().expect("text");
    assert!(
        metrics.contains(&format!("model_drift_rows {answered}\n")),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("model_feature_psi{{feature=\"{feature}\"}} ")),
        "{metrics}"
    );
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");

    let shifted: Vec<Map<String, Value>> = items
        .into_iter()
        .map(|mut item| {
            if let Some(x) = item.get(feature).and_then(Value::as_f64) {
                item[feature] = shift(x).into();
            }
            item
        })
        .collect();
    let app = load();
    let answered = replay(&app, shifted).await;
    assert!(answered as usize >= ROWS / 2, "{answered} of {ROWS}");
    let (_, report) = call(&app, "GET", "/drift", None).await;
    assert_eq!(report["rows"], answered);
    for (name, verdict, psi) in verdicts(&report) {
        eprintln!(
            "MEASURED: {} shifted {feature}, {name}: PSI {psi:.5}",
            S::MANIFEST.name
        );
        let expected = if name == feature { "drifted" } else { "stable" };
        assert_eq!(verdict, expected, "{name} (PSI {psi}) in {report}");
    }
    assert_eq!(report["verdict"], "drifted", "{report}");
}

/// A model stored without a profile (by an older build) still loads and serves, and `/drift`
/// says why it has no verdict; a profile changed after training makes the model refused.
pub async fn profiles_are_optional_but_checked<S: Service>() {
    let dir = tempfile::tempdir().expect("tempdir");
    train_into::<S>(dir.path(), 1200, 7);
    let models = dir.path().join("model");
    let version_dir = std::fs::canonicalize(models.join(serving::artifact::CURRENT_LINK))
        .expect("the current version");
    let profile = version_dir.join(serving::drift::PROFILE_FILE);
    let metrics_path = version_dir.join(serving::artifact::METRICS_FILE);
    let metrics = std::fs::read(&metrics_path).expect("metrics.json");

    let original = std::fs::read(&profile).expect("train stored a profile");
    std::fs::write(&profile, b"{}").expect("write");
    let refused = serving::model::load::<S>(&models).err().expect("refused");
    assert!(
        format!("{refused:#}").contains("changed after training"),
        "{refused:#}"
    );
    std::fs::write(&profile, original).expect("write");

    // As an older build stored it: no profile, none named in metrics.json.
    let mut older: Value = serde_json::from_slice(&metrics).expect("json");
    older[serving::artifact::VERSION_FILES_KEY]
        .as_object_mut()
        .expect("version files")
        .remove(serving::drift::PROFILE_FILE);
    std::fs::write(&metrics_path, older.to_string()).expect("write");
    std::fs::remove_file(&profile).expect("remove");
    let model = serving::model::load::<S>(&models)
        .expect("an older model loads")
        .expect("a model");
    assert!(model.drift.is_none());
    let app = router(AppState::<S>::new(Some(model)));
    let body = serde_json::to_string(&S::example_request()).expect("serializes");
    let (status, _) = call(&app, "POST", "/predict", Some(body)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, report) = call(&app, "GET", "/drift", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["verdict"], "no_reference", "{report}");
    assert!(
        report["reason"]
            .as_str()
            .is_some_and(|r| r.contains("retrain")),
        "{report}"
    );
    let (_, metrics) = call(&app, "GET", "/metrics", None).await;
    assert!(!metrics.as_str().unwrap().contains("model_feature_psi"));
}

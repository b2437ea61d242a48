use std::path::Path;

use carvision::CarVision;
use serde_json::json;
use serving_testkit as testkit;

#[tokio::test]
async fn every_endpoint_and_every_kind_of_bad_input() {
    testkit::conformance::<CarVision>(&[
        ("model_year", json!({"model_year": 1899})),
        ("model_year", json!({"model_year": 3000})),
        ("model", json!({"model": "  "})),
        ("model", json!({"model": "x".repeat(101)})),
        ("drive", json!({"drive": "awd"})),
        ("is_4wd", json!({"is_4wd": true, "drive": "fwd"})),
        ("is_4wd", json!({"is_4wd": [0, 0, 0]})),
        ("cylinders", json!({"cylinders": 6.5})),
        ("cylinders", json!({"cylinders": null})),
        ("condition", json!({"condition": "mint"})),
        ("cylinders", json!({"cylinders": 40})),
        ("fuel", json!({"fuel": "coal"})),
        ("odometer", json!({"odometer": -5})),
        ("transmission", json!({"transmission": 6})),
        ("type", json!({"type": "spaceship"})),
        ("paint_color", json!({"paint_color": "plaid"})),
        ("is_4wd", json!({"is_4wd": "yes"})),
        ("is_4wd", json!({"is_4wd": 2})),
    ])
    .await;
}

#[tokio::test]
async fn optional_fields_have_defaults_and_age_and_mileage_lower_the_price() {
    let (_dir, app) = testkit::trained_router::<CarVision>(20_000);
    let price = |listing: serde_json::Value| {
        let app = app.clone();
        async move {
            let (status, answer) =
                testkit::call(&app, "POST", "/predict", Some(listing.to_string())).await;
            assert_eq!(status, 200, "{answer}");
            answer["prediction"].as_f64().unwrap()
        }
    };
    let minimal = price(json!({"model_year": 2015, "model": "toyota camry"})).await;
    assert!(minimal > 0.0);
    let as_flag = price(json!({"model_year": 2015, "model": "jeep wrangler", "is_4wd": 1})).await;
    let as_bool =
        price(json!({"model_year": 2015, "model": "jeep wrangler", "is_4wd": true})).await;
    assert_eq!(as_flag, as_bool, "is_4wd: 1 and true mean the same");
    let newer = price(json!({"model_year": 2018, "model": "ford f-150", "odometer": 20000})).await;
    let older = price(json!({"model_year": 2005, "model": "ford f-150", "odometer": 190000})).await;
    assert!(newer > older * 1.5, "newer {newer} vs older {older}");
    let luxury =
        price(json!({"model_year": 2016, "model": "cadillac escalade", "type": "SUV"})).await;
    let compact =
        price(json!({"model_year": 2016, "model": "hyundai elantra", "type": "sedan"})).await;
    assert!(luxury > compact, "escalade {luxury} vs elantra {compact}");
}

#[tokio::test]
async fn without_a_model_health_and_predictions_say_503() {
    testkit::without_model::<CarVision>().await;
}

#[test]
fn training_is_deterministic() {
    testkit::training_is_deterministic::<CarVision>();
}

#[test]
fn the_model_beats_the_median_baseline_and_filters_outliers() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = testkit::train_into::<CarVision>(dir.path(), 20_000, 1);
    let r2 = metrics["r2"].as_f64().unwrap();
    assert!(r2 > 0.8, "{metrics}");
    assert!(
        metrics["rmse"].as_f64().unwrap() < 0.6 * metrics["baseline"]["rmse"].as_f64().unwrap(),
        "{metrics}"
    );
    assert!(
        metrics["rows_outside_price_band"].as_u64().unwrap() > 100,
        "{metrics}"
    );
}

#[test]
fn loads_blanks_and_rejects_an_unknown_condition_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vehicles_us.csv");
    let header = "price,model_year,model,condition,cylinders,fuel,odometer,transmission,type,paint_color,is_4wd,date_posted,days_listed";
    std::fs::write(&path, format!("{header}\n9400,2011.0,bmw x5,good,6.0,gas,145000.0,automatic,SUV,,1.0,2018-06-23,19\n25500,,ford f-150,good,6.0,gas,88705.0,automatic,pickup,white,,2018-10-19,50\n")).unwrap();
    let (_, prices) = carvision::load(&path).unwrap();
    assert_eq!(prices, vec![9400.0, 25500.0]);

    std::fs::write(
        &path,
        format!(
            "{header}\n9400,2011.0,bmw x5,mint,6.0,gas,145000.0,automatic,SUV,,1.0,2018-06-23,19\n"
        ),
    )
    .unwrap();
    let err = carvision::load(&path).err().unwrap().to_string();
    assert!(
        err.contains("line 2, column `condition`: expected one of"),
        "{err}"
    );
}

#[tokio::test]
async fn the_title_is_the_service_tomls() {
    testkit::title_is_the_service_tomls::<CarVision>(Path::new(env!("CARGO_MANIFEST_DIR"))).await;
}

#[test]
fn sighup_swaps_in_a_new_model_and_refuses_a_lying_one() {
    testkit::reload_on_sighup::<CarVision>(Path::new(env!("CARGO_BIN_EXE_carvision")));
}

#[test]
fn health_answers_under_a_slowloris_and_sigterm_ends_a_half_sent_request() {
    testkit::slowloris_and_sigterm::<CarVision>(Path::new(env!("CARGO_BIN_EXE_carvision")), 300);
}

#[test]
fn serve_answers_on_a_real_socket_and_healthcheck_agrees() {
    testkit::serve_and_healthcheck(Path::new(env!("CARGO_BIN_EXE_carvision")));
}

#[test]
fn degenerate_data_is_refused_and_the_model_left_as_it_was() {
    let header = "price,model_year,model,condition,cylinders,fuel,odometer,transmission,type,paint_color,is_4wd,date_posted,days_listed";
    let mut outliers = format!("{header}\n");
    for _ in 0..500 {
        outliers
            .push_str("1,2011.0,bmw x5,good,6.0,gas,145000.0,automatic,SUV,,1.0,2018-06-23,19\n");
    }
    testkit::degenerate_data_is_refused::<CarVision>(
        Path::new(env!("CARGO_BIN_EXE_carvision")),
        &[(
            "every price outside the band",
            outliers,
            "only 0 listings priced within",
        )],
        ("odometer", "-1"),
    );
}

#[tokio::test]
async fn the_old_api_shape_drive_and_defaults() {
    let (_dir, app) = testkit::trained_router::<CarVision>(5000);
    let ask = |listing: serde_json::Value| {
        let app = app.clone();
        async move { testkit::call(&app, "POST", "/predict", Some(listing.to_string())).await }
    };
    // The old API's request: required model_year and model, the rest with its defaults.
    let (status, minimal) = ask(json!({"model_year": 2015, "model": "ford f-150"})).await;
    assert_eq!(status, 200, "{minimal}");
    let (_, explicit) = ask(json!({
        "model_year": 2015, "model": "ford f-150", "condition": "good", "cylinders": 4,
        "fuel": "gas", "odometer": 0, "transmission": "automatic", "drive": "fwd",
        "type": "sedan", "paint_color": "white"
    }))
    .await;
    assert_eq!(
        minimal["prediction"], explicit["prediction"],
        "the defaults are the old API's"
    );
    let (_, by_drive) =
        ask(json!({"model_year": 2015, "model": "jeep wrangler", "drive": "4wd"})).await;
    let (_, by_flag) =
        ask(json!({"model_year": 2015, "model": "jeep wrangler", "is_4wd": 1})).await;
    let (_, both) =
        ask(json!({"model_year": 2015, "model": "jeep wrangler", "is_4wd": true, "drive": "4wd"}))
            .await;
    assert_eq!(by_drive["prediction"], by_flag["prediction"]);
    assert_eq!(by_drive["prediction"], both["prediction"]);
    let (status, answer) =
        ask(json!({"model_year": 2015.0, "model": "ford f-150", "cylinders": 6.0})).await;
    assert_eq!(status, 200, "integers may be written as 2015.0: {answer}");

    let (_, spec) = testkit::call(&app, "GET", "/openapi.json", None).await;
    let schemas = &spec["components"]["schemas"];
    let listing = &schemas["Listing"];
    assert_eq!(listing["required"], json!(["model_year", "model"]));
    assert_eq!(listing["properties"]["model_year"]["minimum"], 1900);
    assert!(
        listing["properties"]["model_year"]["maximum"]
            .as_i64()
            .unwrap()
            >= 2025
    );
    assert_eq!(schemas["Drive"]["enum"], json!(["fwd", "rwd", "4wd"]));
    assert_eq!(schemas["Condition"]["enum"][4], "like new");
    assert!(
        listing["properties"]["is_4wd"]["anyOf"].is_array(),
        "{listing}"
    );
}

#[tokio::test]
async fn a_million_zeros_in_a_flag_are_refused_while_parsing() {
    let (_dir, app) = testkit::trained_router::<CarVision>(1000);
    // Within the body limit; refused at the `[`, not after building a million values.
    let body = format!(
        r#"{{"model_year": 2015, "model": "ford f-150", "is_4wd": [{}0]}}"#,
        "0,".repeat(400_000)
    );
    let (status, answer) = testkit::call(&app, "POST", "/predict", Some(body)).await;
    assert_eq!(status, 422);
    assert_eq!(answer["field"], "is_4wd");
}

#[test]
fn the_dashboard_port_serves_the_model_the_api_serves_and_follows_a_reload() {
    testkit::dashboard_follows_the_model::<CarVision>(Path::new(env!("CARGO_BIN_EXE_carvision")));
}

#[test]
fn the_dashboard_needs_a_port_of_its_own() {
    testkit::dashboard_port_is_refused::<CarVision>(Path::new(env!("CARGO_BIN_EXE_carvision")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drift_is_stable_on_the_training_rows_and_drifted_on_odometer_doubled() {
    testkit::drift_is_measured::<CarVision>("odometer", |miles| miles * 2.0).await;
}

//! `train` with MLflow. The tests that start a real MLflow server are ignored by default; run
//! them with `cargo test -p bankchurn --test mlflow -- --ignored`.

use std::path::Path;
use std::time::{Duration, Instant};

use bankchurn::BankChurn;
use serde_json::Value;
use serving::artifact::{METRICS_FILE, MODEL_FILE};
use serving::mlflow_client::{ModelVersionStatus, RunStatus};
use serving::Service;
use serving_testkit::free_port;
use serving_testkit::mlflow::{
    generate_data, runs_of, served_file, served_metrics, succeed, tracked_training_is_promoted,
    train_command, Cut, MlflowServer, Outage,
};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_bankchurn"))
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn an_unreachable_mlflow_fails_before_training_unless_no_mlflow() {
    let dir = tempfile::tempdir().unwrap();
    let data = generate_data::<BankChurn>(dir.path(), 800, 1);
    let model_dir = dir.path().join("model");
    let url = format!("http://127.0.0.1:{}", free_port());

    let started = Instant::now();
    let refused = train_command(binary(), &data, &model_dir)
        .env("MLFLOW_TRACKING_URI", &url)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let message = stderr(&refused);
    assert!(
        message.contains(&format!("MLflow at {url} is not answering")),
        "{message}"
    );
    assert!(message.contains("--no-mlflow"), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(!model_dir.exists(), "a model was saved");

    // MLflow is checked first: a missing data file is not even looked at.
    let absent = train_command(binary(), &dir.path().join("absent.csv"), &model_dir)
        .args(["--mlflow-uri", &url])
        .output()
        .unwrap();
    assert!(
        stderr(&absent).contains("is not answering"),
        "{}",
        stderr(&absent)
    );

    // --no-mlflow trains without it, even with MLFLOW_TRACKING_URI set.
    succeed(
        train_command(binary(), &data, &model_dir)
            .env("MLFLOW_TRACKING_URI", &url)
            .arg("--no-mlflow"),
    );
    let metrics = served_metrics(&model_dir);
    assert!(metrics["f1"].is_number());
    assert!(metrics.get("mlflow_run_id").is_none(), "{metrics}");

    // Registering needs a server.
    let unregistered = train_command(binary(), &data, &model_dir)
        .arg("--register-model")
        .output()
        .unwrap();
    assert!(!unregistered.status.success());
    assert!(
        stderr(&unregistered).contains("need an MLflow server"),
        "{}",
        stderr(&unregistered)
    );
}

#[test]
#[ignore = "starts an MLflow server: `cargo xtask up` installs it"]
fn train_promote_logs_the_run_registers_and_promotes_the_model() {
    tracked_training_is_promoted::<BankChurn>(binary());
}

#[test]
#[ignore = "starts an MLflow server: `cargo xtask up` installs it"]
fn register_model_adds_versions_and_only_a_promotion_past_every_gate_moves_champion() {
    let server = MlflowServer::start();
    let client = server.client();
    let dir = tempfile::tempdir().unwrap();
    let data = generate_data::<BankChurn>(dir.path(), 10_000, 42);
    let model_dir = dir.path().join("model");
    let train = |args: &[&str]| {
        train_command(binary(), &data, &model_dir)
            .args(["--mlflow-uri", server.url()])
            .args(args)
            .output()
            .unwrap()
    };
    let name = BankChurn::REGISTERED_MODEL;
    let champion = || {
        client
            .get_registered_model(name)
            .unwrap()
            .and_then(|m| m.alias("champion").map(str::to_owned))
    };

    let registered = train(&["--register-model"]);
    assert!(registered.status.success(), "{}", stderr(&registered));
    assert_eq!(
        client.get_model_version(name, "1").unwrap().run_id.len(),
        32
    );
    assert_eq!(champion(), None);
    let local = served_metrics(&model_dir);
    assert_eq!(local["registry_version"], "1");
    assert_eq!(local["registry_alias"], Value::Null);

    let promoted = train(&["--promote"]);
    assert!(promoted.status.success(), "{}", stderr(&promoted));
    assert_eq!(champion().as_deref(), Some("2"));
    assert_eq!(served_metrics(&model_dir)["registry_alias"], "champion");

    let served_before = (
        std::fs::read(served_file(&model_dir, MODEL_FILE)).unwrap(),
        std::fs::read(served_file(&model_dir, METRICS_FILE)).unwrap(),
    );
    let refused = train(&["--promote", "--min-auc", "0.99"]);
    assert!(!refused.status.success());
    let message = stderr(&refused);
    assert!(
        message.contains("promotion refused: --min-auc 0.99: roc_auc 0."),
        "{message}"
    );
    assert!(
        message.contains(
            "BankChurn-Classifier version 3 is registered without the champion alias, which \
             stays on version 2"
        ),
        "{message}"
    );
    let third = client.get_model_version(name, "3").unwrap();
    assert_eq!(third.status, ModelVersionStatus::Ready);
    assert!(third.aliases.is_empty(), "{third:?}");
    assert!(
        third
            .tag("promotion_gates")
            .is_some_and(|g| g.contains("--min-auc 0.99: roc_auc") && g.contains("failed")),
        "{third:?}"
    );
    assert_eq!(champion().as_deref(), Some("2"));
    let served_after = (
        std::fs::read(served_file(&model_dir, MODEL_FILE)).unwrap(),
        std::fs::read(served_file(&model_dir, METRICS_FILE)).unwrap(),
    );
    assert!(served_after == served_before, "the served model changed");
    // The training itself went well: its run is complete.
    let refused_run = client.get_run(&third.run_id).unwrap();
    assert_eq!(refused_run.info.status, RunStatus::Finished);
}

#[test]
#[ignore = "starts an MLflow server: `cargo xtask up` installs it"]
fn mlflow_going_away_mid_training_fails_clearly_and_leaves_nothing_half_registered() {
    let server = MlflowServer::start();
    let client = server.client();
    let dir = tempfile::tempdir().unwrap();
    let data = generate_data::<BankChurn>(dir.path(), 3000, 42);
    let name = BankChurn::REGISTERED_MODEL;
    let versions = || client.search_model_versions(name).unwrap();

    // (where MLflow goes away, how, what the error names, the run's state afterwards)
    let cases = [
        (
            "mlflow-artifacts/artifacts/",
            Cut::DropRequest,
            "PUT /api/2.0/mlflow-artifacts/artifacts/",
            RunStatus::Failed,
        ),
        (
            "model-versions/create",
            Cut::Die,
            "POST /api/2.0/mlflow/model-versions/create",
            RunStatus::Running,
        ),
    ];
    for (i, (trigger, cut, call, run_status)) in cases.into_iter().enumerate() {
        let outage = Outage::new(server.url(), trigger, cut);
        let model_dir = dir.path().join(format!("model-{i}"));
        let output = train_command(binary(), &data, &model_dir)
            .args(["--promote", "--mlflow-uri", outage.url()])
            .output()
            .unwrap();
        assert!(outage.has_cut(), "{trigger}: {:?}", outage.requests());
        assert!(!output.status.success(), "{trigger}: succeeded");
        let message = stderr(&output);
        assert!(message.contains(call), "{trigger}: {message}");
        assert!(
            message.contains(&format!(
                "the model in {} is unchanged",
                model_dir.display()
            )),
            "{message}"
        );
        let marked = if run_status == RunStatus::Failed {
            "the run is marked FAILED"
        } else {
            "the run could not be marked FAILED"
        };
        assert!(message.contains(marked), "{trigger}: {message}");
        if cut == Cut::Die {
            // A dead server refuses connections: retried, then reported as such.
            assert!(message.contains("cannot connect"), "{message}");
        }
        assert!(!model_dir.exists(), "{trigger}: a model was saved");

        let run = &runs_of::<BankChurn>(&client)[0];
        assert_eq!(run.info.status, run_status, "{trigger}");
        assert!(versions().is_empty(), "{trigger}: {:?}", versions());
    }

    // Gone right after creating the version: the version is complete (its files were uploaded
    // first), but nothing promoted it, and the model is not served.
    let outage = Outage::new(server.url(), "model-versions/create", Cut::DieAfterActing);
    let model_dir = dir.path().join("model-last");
    let output = train_command(binary(), &data, &model_dir)
        .args(["--promote", "--mlflow-uri", outage.url()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(!model_dir.exists());
    let created = versions();
    assert_eq!(created.len(), 1, "{created:?}");
    let version = client.get_model_version(name, &created[0].version).unwrap();
    assert!(version.aliases.is_empty(), "{version:?}");
    let run = client.get_run(&version.run_id).unwrap();
    let files = client.list_artifacts(&run.info.run_id, "model").unwrap();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(client
        .get_registered_model(name)
        .unwrap()
        .unwrap()
        .aliases
        .is_empty());
}

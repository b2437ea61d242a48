//! `train` with MLflow, against a real server: ignored by default; run it with
//! `cargo test -p telecom --test mlflow -- --ignored`.

use std::path::Path;

use serving_testkit::mlflow::tracked_training_is_promoted;
use telecom::Telecom;

#[test]
#[ignore = "starts an MLflow server: `cargo xtask up` installs it"]
fn train_promote_logs_the_run_registers_and_promotes_the_model() {
    tracked_training_is_promoted::<Telecom>(Path::new(env!("CARGO_BIN_EXE_telecom")));
}

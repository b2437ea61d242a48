//! `train` with MLflow, against a real server: ignored by default; run it with
//! `cargo test -p carvision --test mlflow -- --ignored`.

use std::path::Path;

use carvision::CarVision;
use serving_testkit::mlflow::tracked_training_is_promoted;

#[test]
#[ignore = "starts an MLflow server: `cargo xtask up` installs it"]
fn train_promote_logs_the_run_registers_and_promotes_the_model() {
    tracked_training_is_promoted::<CarVision>(Path::new(env!("CARGO_BIN_EXE_carvision")));
}

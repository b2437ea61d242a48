//! End to end with a real MLflow server, on the local runtime: the demo registers every model,
//! `retrain` swaps a new one in under load with no failed request, a bad data file changes
//! nothing, and backup, reset and restore bring back the same runs and registered versions;
//! truncated and tampered archives are refused before anything is touched.
//!
//! Slow: `.ci/run` runs it on purpose:
//! `cargo test -p xtask --test e2e_mlflow -- --ignored --test-threads 1`.
#![allow(clippy::disallowed_methods)]

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::mlflow_api::Mlflow;
use common::postgres::{OnPostgres, PostgresCluster};
use common::traffic::Traffic;
use common::{health_json, snapshot, stderr, stdout, Stack};
use serde_json::{json, Value};

fn xtask(stack: &Stack, args: &[&str]) -> std::process::Output {
    let mut full = vec!["--runtime", "local"];
    full.extend_from_slice(args);
    stack.xtask(&full)
}

#[test]
#[ignore = "end-to-end: a real MLflow server and the local stack; run by .ci/run"]
fn tracked_models_retrain_without_downtime_and_survive_backup_reset_restore() {
    let stack = Stack::new();
    let demo = xtask(&stack, &["demo"]);
    assert!(demo.status.success(), "demo failed:\n{}", stderr(&demo));
    let mlflow = Mlflow {
        url: format!("http://127.0.0.1:{}", stack.port(5000)),
    };

    // The demo registered each model, with a champion, and the APIs say which they serve.
    let (versions, champions) = mlflow.registry();
    assert_eq!(champions.len(), 3, "champions: {champions:?}");
    assert!(versions.len() >= 3);
    let served = health_json(stack.port(8001));
    assert_eq!(served["registry_model"], "BankChurn-Classifier", "{served}");
    assert_eq!(served["registry_alias"], "champion", "{served}");
    let status = stdout(&xtask(&stack, &["status"]));
    assert!(status.contains("BankChurn-Classifier v"), "{status}");

    // Retrain under load: a new model (another seed), swapped in with no failed request.
    let old_version = served["model_version"].as_str().unwrap().to_owned();
    // BankChurn's smoke request.
    let body = json!({"CreditScore": 619, "Geography": "Germany", "Gender": "Female", "Age": 52,
        "Tenure": 2.0, "Balance": 125000.0, "NumOfProducts": 1, "HasCrCard": 1,
        "IsActiveMember": 0, "EstimatedSalary": 101348.88});
    let load = Traffic::start(
        format!("http://127.0.0.1:{}/predict", stack.port(8001)),
        Arc::new(vec![body.to_string()]),
        4,
    );
    load.wait_for_requests(100);
    let retrain = xtask(
        &stack,
        &["retrain", "bankchurn", "--promote", "--seed", "7"],
    );
    load.wait_for_requests(100);
    let (sent, failed) = load.finish();
    assert!(retrain.status.success(), "{}", stderr(&retrain));
    eprintln!("MEASURED: retrain swap under load: {sent} requests sent, {failed} failed");
    assert_eq!(failed, 0, "requests failed during the swap");
    let served = health_json(stack.port(8001));
    assert_ne!(served["model_version"], old_version.as_str());
    assert!(
        stdout(&retrain).contains(&format!("(was {old_version})")),
        "{}",
        stdout(&retrain)
    );
    let (_, champions_after) = mlflow.registry();
    assert_ne!(champions_after, champions, "the champion did not move");

    // A bad data file: refused; the served model and the registry as they were.
    let bad = stack.path().join("bad.csv");
    std::fs::write(&bad, "RowNumber,CustomerId\n1,2\n").unwrap();
    let model_dir = stack.path().join("models/bankchurn");
    let before = (snapshot(&model_dir), mlflow.registry());
    let refused = xtask(
        &stack,
        &[
            "retrain",
            "bankchurn",
            "--promote",
            "--data-path",
            bad.to_str().unwrap(),
        ],
    );
    assert!(!refused.status.success(), "retrain accepted a bad file");
    assert!(stderr(&refused).contains("the served model and the registry are as they were"));
    assert_eq!((snapshot(&model_dir), mlflow.registry()), before);

    // Backup, reset, restore: the same runs and registered versions, by id.
    let runs = mlflow.runs();
    let registry = mlflow.registry();
    let archive = stack.path().join("backup.tar.gz");
    let backup = xtask(&stack, &["backup", "--out", archive.to_str().unwrap()]);
    assert!(backup.status.success(), "{}", stderr(&backup));

    let reset = xtask(&stack, &["mlflow", "reset"]);
    assert!(!reset.status.success(), "reset without --yes");
    assert!(stderr(&reset).contains("pass --yes"));
    let reset = xtask(&stack, &["mlflow", "reset", "--yes"]);
    assert!(reset.status.success(), "{}", stderr(&reset));
    assert!(mlflow.runs().is_empty(), "reset kept runs");

    // A truncated and a tampered archive are refused, and nothing is touched.
    let bytes = std::fs::read(&archive).unwrap();
    let truncated = stack.path().join("truncated.tar.gz");
    std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let tampered = stack.path().join("tampered.tar.gz");
    let mut changed = bytes.clone();
    let middle = changed.len() / 2;
    changed[middle] ^= 0x01;
    std::fs::write(&tampered, &changed).unwrap();
    let untouched = (snapshot(&stack.path().join("mlruns")), snapshot(&model_dir));
    for bad in [&truncated, &tampered] {
        let refused = xtask(&stack, &["restore", bad.to_str().unwrap(), "--yes"]);
        assert!(!refused.status.success(), "restored {}", bad.display());
        assert!(
            stderr(&refused).contains("nothing was changed"),
            "{}",
            stderr(&refused)
        );
        assert_eq!(
            (snapshot(&stack.path().join("mlruns")), snapshot(&model_dir)),
            untouched,
            "{} changed the stack",
            bad.display()
        );
    }

    // Archives whose checksums are right but whose contents are not a whole, sound backup:
    // refused by their contents before anything is touched.
    let crafted = [
        ("a corrupt model", "bankchurn refuses the model"),
        (
            "a database that is not SQLite",
            "is not a readable SQLite database",
        ),
        ("no database", "it lacks MLflow's database"),
        (
            "an extra file",
            "a backup of this stack never writes: notes.txt",
        ),
    ];
    for (what, why) in crafted {
        let bad = stack.path().join("crafted.tar.gz");
        repack(&archive, &bad, |dir| match what {
            "a corrupt model" => {
                std::fs::write(dir.join("models/bankchurn/current/model.json"), b"{}").unwrap()
            }
            "a database that is not SQLite" => {
                std::fs::write(dir.join("mlruns/mlflow.db"), b"not a database").unwrap()
            }
            "no database" => std::fs::remove_file(dir.join("mlruns/mlflow.db")).unwrap(),
            _ => std::fs::write(dir.join("notes.txt"), b"x").unwrap(),
        });
        let refused = xtask(&stack, &["restore", bad.to_str().unwrap(), "--yes"]);
        assert!(!refused.status.success(), "restored {what}");
        let err = stderr(&refused);
        assert!(
            err.contains(why) && err.contains("nothing was changed"),
            "{what}: {err}"
        );
        assert_eq!(
            (snapshot(&stack.path().join("mlruns")), snapshot(&model_dir)),
            untouched,
            "{what} changed the stack"
        );
    }
    // The stack was never stopped: the model it served still answers.
    assert_eq!(
        health_json(stack.port(8001))["model_version"],
        served["model_version"]
    );

    let started = Instant::now();
    let restore = xtask(&stack, &["restore", archive.to_str().unwrap(), "--yes"]);
    let took = started.elapsed();
    assert!(restore.status.success(), "{}", stderr(&restore));
    eprintln!("MEASURED: restore to a healthy stack took {took:.1?}");
    assert_eq!(mlflow.runs(), runs, "the runs differ after restore");
    assert_eq!(
        mlflow.registry(),
        registry,
        "the registry differs after restore"
    );
    assert_eq!(
        health_json(stack.port(8001))["model_version"],
        served["model_version"]
    );

    // A sound archive the stack still cannot come up on (a store from a newer MLflow, whose
    // schema revision this one does not know): the previous store goes back and serves.
    let newer = stack.path().join("newer.tar.gz");
    repack(&archive, &newer, |dir| {
        let changed = std::process::Command::new("python3")
            .args([
                "-c",
                "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\nc.execute(\"UPDATE alembic_version SET version_num = 'ffffffffffff'\")\nc.commit()",
            ])
            .arg(dir.join("mlruns/mlflow.db"))
            .status()
            .unwrap();
        assert!(changed.success());
    });
    let started = Instant::now();
    let rolled_back = xtask(&stack, &["restore", newer.to_str().unwrap(), "--yes"]);
    eprintln!(
        "MEASURED: a restore that fails to come up and rolls back took {:.1?}",
        started.elapsed()
    );
    assert!(
        !rolled_back.status.success(),
        "restored a store MLflow cannot open"
    );
    assert!(
        stderr(&rolled_back)
            .contains("the previous MLflow store and models are back and the stack is up on them"),
        "{}",
        stderr(&rolled_back)
    );
    assert_eq!(mlflow.runs(), runs, "the runs differ after the rollback");
    assert_eq!(
        health_json(stack.port(8001))["model_version"],
        served["model_version"]
    );
    let backups: Vec<String> = std::fs::read_dir(stack.path().join("mlruns/backups"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        backups.iter().any(|n| n.starts_with("failed-restore-")),
        "{backups:?}"
    );

    let down = xtask(&stack, &["down"]);
    assert!(down.status.success(), "{}", stderr(&down));
}

/// Writes to `out` a copy of the backup `archive` whose files `edit` changed (in the folder
/// it is unpacked into), with its manifest rewritten to match: every checksum right, as a
/// careless or hostile hand would make it.
fn repack(archive: &std::path::Path, out: &std::path::Path, edit: impl FnOnce(&std::path::Path)) {
    use sha2::Digest;
    use std::path::{Path, PathBuf};
    let dir = tempfile::tempdir().unwrap();
    let file = std::fs::File::open(archive).unwrap();
    tar::Archive::new(flate2::read::GzDecoder::new(file))
        .unpack(dir.path())
        .unwrap();
    edit(dir.path());
    let manifest_path = dir.path().join("manifest.json");
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    std::fs::remove_file(&manifest_path).unwrap();
    fn walk(root: &Path, dir: &Path, files: &mut Vec<PathBuf>, links: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let kind = entry.file_type().unwrap();
            let relative = entry.path().strip_prefix(root).unwrap().to_owned();
            if kind.is_symlink() {
                links.push(relative);
            } else if kind.is_dir() {
                walk(root, &entry.path(), files, links);
            } else {
                files.push(relative);
            }
        }
    }
    let (mut files, mut links) = (Vec::new(), Vec::new());
    walk(dir.path(), dir.path(), &mut files, &mut links);
    manifest["files"] = files
        .iter()
        .map(|p| {
            let bytes = std::fs::read(dir.path().join(p)).unwrap();
            json!({
                "path": p.to_str().unwrap(),
                "size": bytes.len(),
                "sha256": format!("{:x}", sha2::Sha256::digest(&bytes)),
            })
        })
        .collect();
    manifest["links"] = links
        .iter()
        .map(|p| {
            let target = std::fs::read_link(dir.path().join(p)).unwrap();
            json!({"path": p.to_str().unwrap(), "target": target.to_str().unwrap()})
        })
        .collect();
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(out).unwrap(),
        flate2::Compression::fast(),
    );
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    let text = serde_json::to_vec(&manifest).unwrap();
    let mut header = tar::Header::new_gnu();
    header.set_size(text.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "manifest.json", &text[..])
        .unwrap();
    for p in files.iter().chain(&links) {
        tar.append_path_with_name(dir.path().join(p), p).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap();
}

/// The oldest MLflow with registered-model aliases (2.3), whose wheels install on the
/// Python 3.11 these machines have; its dependencies pinned as they last installed.
const OLD_MLFLOW: &str = "2.3.0";

/// A virtual environment with [`OLD_MLFLOW`], made once under the toolkit's cache.
fn old_mlflow_python() -> std::path::PathBuf {
    let cache = std::env::var_os("XTASK_CACHE_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| {
                    std::path::Path::new(&std::env::var_os("HOME").unwrap()).join(".cache")
                })
                .join("ml-mlops-xtask")
        });
    let venv = cache.join(format!("test-mlflow-{OLD_MLFLOW}"));
    let done = venv.join(".complete");
    if !done.is_file() {
        let _ = std::fs::remove_dir_all(&venv);
        let made = std::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .unwrap();
        assert!(made.success(), "python3 -m venv failed");
        let constraints = common::repo().join(format!(
            "xtask/tests/fixtures/mlflow-{OLD_MLFLOW}-constraints.txt"
        ));
        let installed = std::process::Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-input",
            ])
            .arg(format!("mlflow=={OLD_MLFLOW}"))
            .arg("-c")
            .arg(&constraints)
            .status()
            .unwrap();
        assert!(
            installed.success(),
            "pip install mlflow=={OLD_MLFLOW} failed"
        );
        std::fs::write(&done, OLD_MLFLOW).unwrap();
    }
    venv.join("bin/python")
}

/// What the old MLflow's own client writes into a new store: an experiment of three runs
/// with a param and five steps of a metric each, a registered model with a version per run,
/// and the alias `champion` on version 2.
const OLD_CLIENT_SCRIPT: &str = r#"
import sys
from mlflow.tracking import MlflowClient
uri = "sqlite:///" + sys.argv[1]
client = MlflowClient(tracking_uri=uri, registry_uri=uri)
experiment = client.create_experiment("made-by-mlflow-2", artifact_location=sys.argv[2])
runs = []
for seed in range(3):
    run = client.create_run(experiment)
    client.log_param(run.info.run_id, "seed", str(seed))
    for step in range(5):
        client.log_metric(run.info.run_id, "auc", 0.5 + seed / 10 + step / 100, step=step)
    client.set_terminated(run.info.run_id)
    runs.append(run.info.run_id)
client.create_registered_model("Old-Model")
for run_id in runs:
    client.create_model_version("Old-Model", "runs:/" + run_id + "/model", run_id)
client.set_registered_model_alias("Old-Model", "champion", "2")
"#;

#[test]
#[ignore = "end-to-end: an older MLflow from PyPI makes a store, the pinned one upgrades it; run by .ci/run"]
fn a_store_an_older_mlflow_made_is_refused_then_upgraded_with_everything_in_it() {
    let stack = Stack::new();
    let mlruns = stack.path().join("mlruns");
    std::fs::create_dir_all(mlruns.join("artifacts")).unwrap();
    let store = mlruns.join("mlflow.db");
    let made = std::process::Command::new(old_mlflow_python())
        .args(["-c", OLD_CLIENT_SCRIPT])
        .arg(&store)
        .arg(mlruns.join("artifacts"))
        .status()
        .unwrap();
    assert!(
        made.success(),
        "MLflow {OLD_MLFLOW} could not make its store"
    );

    // A store of another schema: `up` refuses it before starting anything, and says what to do.
    let before = std::fs::read(&store).unwrap();
    let refused = xtask(&stack, &["up", "--timeout", "60"]);
    assert!(
        !refused.status.success(),
        "up started MLflow on an old store"
    );
    let err = stderr(&refused);
    assert!(
        err.contains("cargo xtask mlflow upgrade") && err.contains("Nothing was started"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&store).unwrap(),
        before,
        "up changed the store"
    );

    let started = Instant::now();
    let upgrade = xtask(&stack, &["mlflow", "upgrade"]);
    eprintln!(
        "MEASURED: mlflow upgrade of a store MLflow {OLD_MLFLOW} made took {:.1?}",
        started.elapsed()
    );
    assert!(upgrade.status.success(), "{}", stderr(&upgrade));
    let said = stdout(&upgrade);
    // Two experiments: ours and the `Default` one every store has.
    assert!(
        said.contains("2 experiments, 3 runs, 1 registered models, 3 model versions, 1 aliases"),
        "{said}"
    );
    let copies: Vec<_> = std::fs::read_dir(mlruns.join("backups"))
        .unwrap()
        .map(|e| e.unwrap().path().join("mlflow.db"))
        .collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(
        std::fs::read(&copies[0]).unwrap(),
        before,
        "the copy is not the old store"
    );
    let again = xtask(&stack, &["mlflow", "upgrade"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stdout(&again).contains("nothing to do"),
        "{}",
        stdout(&again)
    );

    // The pinned MLflow serves what the old one wrote: runs, metric history, versions, alias.
    let up = xtask(&stack, &["up", "--timeout", "60"]);
    assert!(up.status.success(), "{}", stderr(&up));
    let mlflow = Mlflow {
        url: format!("http://127.0.0.1:{}", stack.port(5000)),
    };
    let experiment = mlflow.call(
        "GET",
        "experiments/get-by-name",
        json!({"experiment_name": "made-by-mlflow-2"}),
    );
    let id = experiment["experiment"]["experiment_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let runs = mlflow.call("POST", "runs/search", json!({"experiment_ids": [id]}));
    let runs = runs["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3, "{runs:?}");
    let run_id = runs[0]["info"]["run_id"].as_str().unwrap();
    let history = mlflow.call(
        "GET",
        "metrics/get-history",
        json!({"run_id": run_id, "metric_key": "auc"}),
    );
    assert_eq!(history["metrics"].as_array().unwrap().len(), 5, "{history}");
    let champion = mlflow.call(
        "GET",
        "registered-models/alias",
        json!({"name": "Old-Model", "alias": "champion"}),
    );
    assert_eq!(champion["model_version"]["version"], "2", "{champion}");

    // A store from a newer MLflow (a revision the pinned one does not know): refused, untouched.
    let down = xtask(&stack, &["down"]);
    assert!(down.status.success(), "{}", stderr(&down));
    let changed = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\nc.execute(\"UPDATE alembic_version SET version_num = 'ffffffffffff'\")\nc.commit()",
        ])
        .arg(&store)
        .status()
        .unwrap();
    assert!(changed.success());
    let newer = std::fs::read(&store).unwrap();
    let refused = xtask(&stack, &["mlflow", "upgrade"]);
    assert!(
        !refused.status.success(),
        "upgraded a store from a newer MLflow"
    );
    assert!(
        stderr(&refused).contains("a newer MLflow made it")
            && stderr(&refused).contains("Nothing was changed"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(std::fs::read(&store).unwrap(), newer);
}

#[test]
#[ignore = "end-to-end: MLflow on a PostgreSQL cluster the test starts, on the local stack; run by .ci/run"]
fn mlflow_on_postgresql_registers_backs_up_and_restores_after_the_database_is_dropped() {
    let cluster = match PostgresCluster::start() {
        Ok(cluster) => cluster,
        Err(why) => return common::skip(why),
    };
    let stack = Stack::new();
    let pg = OnPostgres {
        stack: &stack,
        cluster: &cluster,
        runtime: "local",
    };

    let plan = pg.xtask(&["--dry-run", "up"]);
    assert!(plan.status.success(), "{}", stderr(&plan));
    pg.never_shows_the_password(&plan);
    assert!(
        stdout(&plan).contains("PGPASSWORD='***'") || stderr(&plan).contains("PGPASSWORD='***'")
    );

    let started = Instant::now();
    let up = pg.xtask(&["-v", "up"]);
    assert!(
        up.status.success(),
        "up on PostgreSQL failed:\n{}",
        stderr(&up)
    );
    eprintln!(
        "MEASURED: up on PostgreSQL (train and register three models) took {:.1?}",
        started.elapsed()
    );
    pg.never_shows_the_password(&up);
    assert!(
        !stack.path().join("mlruns/mlflow.db").exists(),
        "MLflow made a SQLite store beside PostgreSQL"
    );
    let mlflow = Mlflow {
        url: format!("http://127.0.0.1:{}", stack.port(5000)),
    };
    let (versions, champions) = mlflow.registry();
    assert_eq!(champions.len(), 3, "champions: {champions:?}");
    let runs = mlflow.runs();
    let registry = (versions, champions);

    let archive = stack.path().join("pg-backup.tar.gz");
    let started = Instant::now();
    let backup = pg.xtask(&["backup", "--out", archive.to_str().unwrap()]);
    assert!(backup.status.success(), "{}", stderr(&backup));
    eprintln!(
        "MEASURED: backup of the PostgreSQL store took {:.1?}",
        started.elapsed()
    );
    pg.never_shows_the_password(&backup);

    // The SQLite stack refuses a PostgreSQL archive before touching anything (the unit tests of
    // util::archive refuse the reverse too).
    let refused = xtask(&stack, &["restore", archive.to_str().unwrap(), "--yes"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("holds a postgresql MLflow store")
            && stderr(&refused).contains("nothing was changed"),
        "{}",
        stderr(&refused)
    );
    let reset = pg.xtask(&["mlflow", "reset", "--yes"]);
    assert!(!reset.status.success());
    assert!(
        stderr(&reset).contains("not this toolkit's to drop"),
        "{}",
        stderr(&reset)
    );

    pg.lose_then_restore(&archive, &mlflow, &runs, &registry);

    // A sound archive the stack cannot come up on (its store at a schema revision a newer
    // MLflow made, which MLflow refuses): the previous database goes back and serves.
    let newer = stack.path().join("newer.tar.gz");
    repack(&archive, &newer, |dir| {
        let dump = dir.join("mlruns/mlflow.pgdump");
        let dump = dump.to_str().unwrap();
        cluster.client("createdb", &["scratch"]);
        cluster.client("pg_restore", &["--no-owner", "-d", "scratch", dump]);
        cluster.client(
            "psql",
            &[
                "-d",
                "scratch",
                "-c",
                "UPDATE alembic_version SET version_num = 'ffffffffffff'",
            ],
        );
        cluster.client("pg_dump", &["--format=custom", "-f", dump, "scratch"]);
        cluster.client("dropdb", &["scratch"]);
    });
    let started = Instant::now();
    let rolled_back = pg.xtask(&[
        "restore",
        newer.to_str().unwrap(),
        "--yes",
        "--timeout",
        "60",
    ]);
    eprintln!(
        "MEASURED: a PostgreSQL restore that fails to come up and rolls back took {:.1?}",
        started.elapsed()
    );
    assert!(
        !rolled_back.status.success(),
        "restored a store MLflow cannot open"
    );
    assert!(
        stderr(&rolled_back)
            .contains("the previous MLflow store and models are back and the stack is up on them"),
        "{}",
        stderr(&rolled_back)
    );
    pg.never_shows_the_password(&rolled_back);
    assert_eq!(mlflow.runs(), runs, "the runs differ after the rollback");
    assert_eq!(
        mlflow.registry(),
        registry,
        "the registry differs after the rollback"
    );

    let down = pg.xtask(&["down"]);
    assert!(down.status.success(), "{}", stderr(&down));
}

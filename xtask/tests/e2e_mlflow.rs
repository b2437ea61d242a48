//! End to end with a real MLflow server, on the local runtime: the demo registers every model,
//! `retrain` swaps a new one in under load with no failed request, a bad data file changes
//! nothing, and backup, reset and restore bring back the same runs and registered versions;
//! truncated and tampered archives are refused before anything is touched.
//!
//! Slow: `.ci/run` runs it on purpose:
//! `cargo test -p xtask --test e2e_mlflow -- --ignored --test-threads 1`.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{health_json, snapshot, stderr, stdout, Stack};
use serde_json::{json, Value};

/// The registered models of the demo.
const MODELS: [&str; 3] = [
    "BankChurn-Classifier",
    "CarVision-Regressor",
    "TelecomAI-Classifier",
];

struct Mlflow {
    url: String,
}

/// `(model, version, run id)` of every registered version, and `(model, version)` of each
/// model's champion.
type Registry = (
    BTreeSet<(String, String, String)>,
    BTreeSet<(String, String)>,
);

impl Mlflow {
    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let url = format!("{}/api/2.0/mlflow/{path}", self.url);
        let response = if method == "GET" {
            let query = body
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str().unwrap()));
            agent.get(&url).query_pairs(query).call()
        } else {
            agent
                .post(&url)
                .header("content-type", "application/json")
                .send(body.to_string())
        }
        .unwrap();
        let text = response.into_body().read_to_string().unwrap();
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Every run id of every experiment.
    fn runs(&self) -> BTreeSet<String> {
        let experiments = self.call("POST", "experiments/search", json!({"max_results": 100}));
        let ids: Vec<Value> = experiments["experiments"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e["experiment_id"].clone())
            .collect();
        let runs = self.call(
            "POST",
            "runs/search",
            json!({"experiment_ids": ids, "max_results": 1000}),
        );
        runs["runs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| r["info"]["run_id"].as_str().unwrap().to_owned())
            .collect()
    }

    fn registry(&self) -> Registry {
        let mut versions = BTreeSet::new();
        let mut champions = BTreeSet::new();
        for model in MODELS {
            let found = self.call(
                "GET",
                "model-versions/search",
                json!({"filter": format!("name='{model}'")}),
            );
            for v in found["model_versions"].as_array().into_iter().flatten() {
                versions.insert((
                    model.to_owned(),
                    v["version"].as_str().unwrap().to_owned(),
                    v["run_id"].as_str().unwrap().to_owned(),
                ));
            }
            let champion = self.call(
                "GET",
                "registered-models/alias",
                json!({"name": model, "alias": "champion"}),
            );
            if let Some(v) = champion["model_version"]["version"].as_str() {
                champions.insert((model.to_owned(), v.to_owned()));
            }
        }
        (versions, champions)
    }
}

fn xtask(stack: &Stack, args: &[&str]) -> std::process::Output {
    let mut full = vec!["--runtime", "local"];
    full.extend_from_slice(args);
    stack.xtask(&full)
}

/// Posts BankChurn's smoke request from `threads` clients until stopped; counts sent and
/// failed requests.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(url: String, threads: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let body =
            json!({"CreditScore": 619, "Geography": "Germany", "Gender": "Female", "Age": 52,
            "Tenure": 2.0, "Balance": 125000.0, "NumOfProducts": 1, "HasCrCard": 1,
            "IsActiveMember": 0, "EstimatedSalary": 101348.88})
            .to_string();
        let threads = (0..threads)
            .map(|_| {
                let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
                let (url, body) = (url.clone(), body.clone());
                std::thread::spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .build()
                        .into();
                    while !stop.load(Ordering::Relaxed) {
                        sent.fetch_add(1, Ordering::Relaxed);
                        let ok = agent
                            .post(&url)
                            .header("content-type", "application/json")
                            .send(body.as_str())
                            .is_ok_and(|r| r.status() == 200);
                        if !ok {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            sent,
            failed,
            threads,
        }
    }

    /// Waits until `count` more requests were sent than when called: the load runs before and
    /// after what it measures.
    fn wait_for_requests(&self, count: u64) {
        let goal = self.sent.load(Ordering::Relaxed) + count;
        common::wait_for(
            &format!("{count} more requests of the load"),
            Duration::from_secs(30),
            Duration::from_millis(5),
            || (self.sent.load(Ordering::Relaxed) >= goal).then_some(()),
        );
    }

    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        (
            self.sent.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
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
    let load = Load::start(format!("http://127.0.0.1:{}/predict", stack.port(8001)), 4);
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

//! MLflow for tests: a throwaway tracking server (the pinned version from the task runner's
//! virtual environment, on a free loopback port, its store in a temporary directory), a proxy
//! that makes it go away at a chosen request, and the check every service's tracked training
//! must pass.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use serving::artifact::{self, Artifact};
use serving::mlflow_client::{Client, ClientOptions, Run, RunStatus};
use serving::promotion::CHAMPION_ALIAS;
use serving::{PredictionMeta, Service};

use crate::net::{free_port, read_request, RawRequest};
use crate::wait::poll_until;

/// The MLflow version the stack pins, read from `services/mlflow/service.toml`.
pub fn pinned_version() -> &'static str {
    include_str!("../../mlflow/service.toml")
        .lines()
        .find_map(|line| {
            let (key, value) = line.split_once('=')?;
            (key.trim() == "version").then(|| value.trim().trim_matches('"'))
        })
        .expect("services/mlflow/service.toml pins a version")
}

/// `$MLFLOW_BIN`, else the `mlflow` of the virtual environment `cargo xtask` installs under
/// `$XTASK_CACHE_DIR` (default `~/.cache/ml-mlops-xtask`).
pub fn executable() -> PathBuf {
    if let Some(bin) = std::env::var_os("MLFLOW_BIN") {
        return bin.into();
    }
    let cache = std::env::var_os("XTASK_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/ml-mlops-xtask")
        });
    cache
        .join(format!("mlflow-{}", pinned_version()))
        .join("bin/mlflow")
}

/// A running `mlflow server`, stopped with everything it started when dropped.
pub struct MlflowServer {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

impl MlflowServer {
    /// Starts a server as `cargo xtask` does and waits until it answers `/health`. Panics,
    /// saying how to install MLflow, when there is none.
    pub fn start() -> Self {
        let mlflow = executable();
        assert!(
            mlflow.is_file(),
            "no MLflow at {}: `cargo xtask up` installs MLflow {} there, or set MLFLOW_BIN",
            mlflow.display(),
            pinned_version()
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log file");
        let child = Command::new(&mlflow)
            .args(["server", "--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--backend-store-uri")
            .arg(format!(
                "sqlite:///{}",
                dir.path().join("mlflow.db").display()
            ))
            .arg("--artifacts-destination")
            .arg(dir.path().join("artifacts"))
            .args(["--workers", "1"])
            .env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            // Its own process group: `mlflow server` starts uvicorn as a child; both must go.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", mlflow.display()));
        let mut server = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        };
        server.wait_until_healthy(Duration::from_secs(90));
        server
    }

    fn wait_until_healthy(&mut self, limit: Duration) {
        let client = self.client();
        let answered = poll_until(limit, || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("MLflow exited ({status}) before answering:\n{}", self.log());
            }
            client.health().ok()
        });
        assert!(
            answered.is_some(),
            "MLflow did not answer /health within {limit:?}:\n{}",
            self.log()
        );
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A client that does not retry: the server is up, or the test should fail.
    pub fn client(&self) -> Client {
        let options = ClientOptions {
            retries: 0,
            ..ClientOptions::default()
        };
        Client::new(&self.url, options).expect("a valid URL")
    }

    /// What the server printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Stops the server and every process it started.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let group = format!("-{}", self.child.id());
        let signal = |name: &str| {
            let _ = Command::new("kill")
                .args([name, "--", &group])
                .stderr(Stdio::null())
                .status();
        };
        signal("-TERM");
        // A server that ignores SIGTERM for 10 s is killed.
        if poll_until(Duration::from_secs(10), || {
            self.child.try_wait().ok().flatten()
        })
        .is_none()
        {
            signal("-KILL");
        }
        let _ = self.child.wait();
    }
}

impl Drop for MlflowServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How the server goes away at the chosen request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// The request is read, never forwarded, and its connection dropped; later requests get
    /// through again (a blip).
    DropRequest,
    /// The request is never forwarded and the server is gone from then on: connections are
    /// refused (the server was killed).
    Die,
    /// The request is forwarded and done, but the answer is lost and the server is gone from
    /// then on (killed right after it acted).
    DieAfterActing,
}

/// A proxy in front of an MLflow server that cuts it off at the first request whose path
/// contains a chosen text. Stops with the test process.
pub struct Outage {
    url: String,
    cut: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Outage {
    pub fn new(upstream: &str, trigger: &'static str, cut: Cut) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("an address");
        let upstream = upstream
            .strip_prefix("http://")
            .expect("an http upstream")
            .to_owned();
        let listening = Arc::new(Listening {
            addr,
            closing: AtomicBool::new(false),
            acceptor: Mutex::new(None),
        });
        let fired = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (fired2, seen2, listening2) = (fired.clone(), seen.clone(), listening.clone());
        let acceptor = std::thread::spawn(move || {
            for client in listener.incoming() {
                if listening2.closing.load(Ordering::SeqCst) {
                    // Dropping the listener is what makes the port refuse connections.
                    return;
                }
                let Ok(client) = client else { continue };
                let proxy = Proxied {
                    upstream: upstream.clone(),
                    trigger,
                    cut,
                    listening: listening2.clone(),
                    fired: fired2.clone(),
                    seen: seen2.clone(),
                };
                std::thread::spawn(move || proxy.serve(client));
            }
        });
        *listening.acceptor.lock().expect("not poisoned") = Some(acceptor);
        Self {
            url: format!("http://{addr}"),
            cut: fired,
            seen,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether the trigger request came.
    pub fn has_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }

    /// The request lines seen, in order.
    pub fn requests(&self) -> Vec<String> {
        self.seen.lock().expect("not poisoned").clone()
    }
}

/// The proxy's listening socket, owned by the thread accepting on it.
struct Listening {
    addr: std::net::SocketAddr,
    closing: AtomicBool,
    acceptor: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Listening {
    /// Stops listening, as a killed server would: once this returns, connections are refused.
    fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        // Wakes the acceptor from `accept`; it sees `closing` and drops the listener.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.lock().expect("not poisoned").take() {
            let _ = acceptor.join();
        }
    }
}

/// One connection through the proxy.
struct Proxied {
    upstream: String,
    trigger: &'static str,
    cut: Cut,
    listening: Arc<Listening>,
    fired: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Proxied {
    fn serve(self, mut client: TcpStream) {
        let Some(request) = read_request(&mut client) else {
            return;
        };
        let request_line = request.line().to_owned();
        self.seen
            .lock()
            .expect("not poisoned")
            .push(request_line.clone());
        let path = request_line.split_whitespace().nth(1).unwrap_or_default();
        let triggered = path.contains(self.trigger) && !self.fired.swap(true, Ordering::SeqCst);
        match (triggered, self.cut) {
            (true, Cut::DropRequest) => {}
            (true, Cut::Die) => self.listening.close(),
            (true, Cut::DieAfterActing) => {
                let _ = self.forward(&request);
                self.listening.close();
            }
            (false, _) => {
                if let Ok(answer) = self.forward(&request) {
                    let _ = client.write_all(&answer);
                }
            }
        }
        let _ = client.shutdown(Shutdown::Both);
    }

    /// Sends one request upstream on its own connection, asking it to close, and reads the
    /// whole answer.
    fn forward(&self, request: &RawRequest) -> std::io::Result<Vec<u8>> {
        let head = request
            .head
            .replacen("\r\n", "\r\nConnection: close\r\n", 1);
        let mut server = TcpStream::connect(&self.upstream)?;
        server.write_all(head.as_bytes())?;
        server.write_all(&request.body)?;
        let mut answer = Vec::new();
        server.read_to_end(&mut answer)?;
        Ok(answer)
    }
}

/// Writes `rows` of `S`'s synthetic data into `dir`; returns the file.
pub fn generate_data<S: Service>(dir: &Path, rows: usize, seed: u64) -> PathBuf {
    let data = dir.join("data.csv");
    let mut file = std::fs::File::create(&data).expect("create the data file");
    S::generate_data(rows, seed, &mut file).expect("generate data");
    data
}

/// `binary train` on `data` into `model_dir`, with none of the caller's MLflow settings.
pub fn train_command(binary: &Path, data: &Path, model_dir: &Path) -> Command {
    let mut command = Command::new(binary);
    command
        .args(["train", "--data-path"])
        .arg(data)
        .arg("--model-dir")
        .arg(model_dir)
        .env_remove("MLFLOW_TRACKING_URI")
        .env_remove("MLFLOW_HTTP_REQUEST_TIMEOUT")
        .env_remove("GIT_COMMIT");
    command
}

/// Runs a command; panics with its output unless it succeeds.
pub fn succeed(command: &mut Command) -> Output {
    let output = command.output().expect("run the service binary");
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A file of the model the service serves from `model_dir`.
pub fn served_file(model_dir: &Path, name: &str) -> PathBuf {
    model_dir.join(artifact::CURRENT_LINK).join(name)
}

/// The served model's `metrics.json`.
pub fn served_metrics(model_dir: &Path) -> Value {
    let path = served_file(model_dir, artifact::METRICS_FILE);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).expect("metrics.json is JSON")
}

/// The runs of `S`'s experiment, newest first.
pub fn runs_of<S: Service>(client: &Client) -> Vec<Run> {
    let experiment = client
        .get_experiment_by_name(S::MANIFEST.name)
        .expect("MLflow answers")
        .unwrap_or_else(|| panic!("no experiment {}", S::MANIFEST.name));
    client
        .search_runs(&[&experiment.experiment_id], "", 100)
        .expect("search runs")
}

/// Every number in `value`, under dotted keys.
fn numeric_fields(prefix: &str, value: &Value, out: &mut Vec<(String, f64)>) {
    match value {
        Value::Object(fields) => {
            for (k, v) in fields {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                numeric_fields(&key, v, out);
            }
        }
        Value::Number(n) => out.extend(n.as_f64().map(|v| (prefix.to_owned(), v))),
        _ => {}
    }
}

/// The JSON of `S`'s predictions for its example request.
fn example_predictions<S: Service>(model: &S::Model) -> Value {
    let meta = PredictionMeta {
        model_version: "test".into(),
        timestamp: "2026-01-01T00:00:00Z".into(),
    };
    serde_json::to_value(S::predict(model, &[S::example_request()], &meta))
        .expect("predictions serialize")
}

/// What every service's `train --promote` must do against a real MLflow: one FINISHED run in
/// the experiment named after the service with its metrics and files, a new registry version
/// holding `champion` with the default gates, the registry fields in the served
/// `metrics.json`, and a model in MLflow that predicts as the served one does.
pub fn tracked_training_is_promoted<S: Service>(binary: &Path) {
    let server = MlflowServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = generate_data::<S>(dir.path(), S::DEFAULT_ROWS, 42);
    let model_dir = dir.path().join("model");
    succeed(
        train_command(binary, &data, &model_dir)
            .args(["--promote", "--mlflow-uri", server.url()])
            .env("GIT_COMMIT", "0123abcd"),
    );

    let client = server.client();
    let runs = runs_of::<S>(&client);
    assert_eq!(runs.len(), 1, "{runs:?}");
    let run = &runs[0];
    assert_eq!(run.info.status, RunStatus::Finished);
    let local = served_metrics(&model_dir);
    let mut numeric = Vec::new();
    numeric_fields("", &local, &mut numeric);
    for (key, value) in &numeric {
        if key == "seed" || key.starts_with("params.") {
            continue;
        }
        assert_eq!(run.data.metric(key), Some(*value), "metric {key}");
    }
    for gate in S::PROMOTION_GATES {
        assert!(run.data.metric(gate.kind.metric()).is_some());
    }
    assert_eq!(run.data.param("seed"), Some("42"));
    assert_eq!(
        run.data.param("rows"),
        Some(local["rows"].to_string().as_str())
    );
    assert_eq!(run.data.tag("mlflow.source.git.commit"), Some("0123abcd"));
    assert_eq!(
        run.data.tag("data_sha256"),
        Some(artifact::file_sha256(&data).expect("hash").as_str())
    );
    assert_eq!(run.data.tag("serving_version"), Some(serving::API_VERSION));
    assert_eq!(
        run.data.tag("model_version"),
        local["model_version"].as_str()
    );
    let files = client
        .list_artifacts(&run.info.run_id, "model")
        .expect("list artifacts");
    let mut names: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["model/metrics.json", "model/model.json"]);

    let model = client
        .get_registered_model(S::REGISTERED_MODEL)
        .expect("MLflow answers")
        .expect("the model is registered");
    let champion = model
        .alias(CHAMPION_ALIAS)
        .expect("champion is set")
        .to_owned();
    let version = client
        .get_model_version(S::REGISTERED_MODEL, &champion)
        .expect("the champion version");
    assert_eq!(version.run_id, run.info.run_id);
    assert_eq!(local["registry_model"], S::REGISTERED_MODEL);
    assert_eq!(local["registry_version"], champion.as_str());
    assert_eq!(local["registry_alias"], CHAMPION_ALIAS);
    assert_eq!(local["mlflow_run_id"], run.info.run_id.as_str());

    let served = std::fs::read(served_file(&model_dir, artifact::MODEL_FILE)).expect("model");
    let tracked = client
        .download_artifact(&run.info.artifact_uri, "model/model.json")
        .expect("download model.json");
    assert!(tracked == served, "MLflow holds other model bytes");
    let tracked: Artifact<S::Model> = serde_json::from_slice(&tracked).expect("a model");
    let served = serving::model::load::<S>(&model_dir)
        .expect("load")
        .expect("a served model");
    assert_eq!(
        example_predictions::<S>(&tracked.model),
        example_predictions::<S>(&served.model)
    );
}

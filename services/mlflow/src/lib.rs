//! A blocking client for the REST API of an MLflow tracking server (measured against MLflow
//! 3.17): experiments, runs, artifacts through the server's artifact proxy, and the model
//! registry.
//!
//! Every call has a time limit, so nothing hangs. A call is retried, with a doubling wait, only
//! when no connection could be made at all: the server never saw the request, so even a
//! `runs/create` cannot happen twice. An answer, 4xx or 5xx included, is never retried; MLflow's
//! own `{"error_code", "message"}` reaches the caller as it is, with the call that failed.
//!
//! Only `http://` URIs: the stack's MLflow is plain HTTP on the machine or the compose network,
//! and a TLS stack would add its build time and size to every service binary.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// MLflow's limits on one `runs/log-batch` request.
pub const MAX_BATCH_METRICS: usize = 1000;
pub const MAX_BATCH_PARAMS: usize = 100;
pub const MAX_BATCH_TAGS: usize = 100;
pub const MAX_BATCH_ENTRIES: usize = 1000;

/// Largest answer read into memory: far above any model this project trains.
const MAX_ANSWER_BYTES: u64 = 1 << 30;

/// How long to wait and how often to try.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The limit on one whole call: connecting, sending and reading the answer.
    pub timeout: Duration,
    /// Tries after the first when no connection can be made.
    pub retries: u32,
    /// The wait before the first retry; it doubles for each further one.
    pub first_backoff: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        // Four connection attempts over about two seconds: enough to ride out a server that is
        // restarting, short enough that an absent one fails fast.
        Self {
            timeout: Duration::from_secs(30),
            retries: 3,
            first_backoff: Duration::from_millis(250),
        }
    }
}

/// Why a call to MLflow failed.
#[derive(Debug)]
pub enum Error {
    /// The tracking URI cannot be used.
    InvalidUri { uri: String, reason: String },
    /// MLflow answered with an error of its own.
    Api {
        call: String,
        status: u16,
        error_code: String,
        message: String,
    },
    /// The answer was not what MLflow gives: another server, or a proxy in between.
    Unexpected {
        call: String,
        status: u16,
        detail: String,
    },
    /// No connection could be made, on any attempt.
    Unreachable {
        call: String,
        attempts: u32,
        source: ureq::Error,
    },
    /// The connection failed or timed out once the request may already have been received.
    Transport { call: String, source: ureq::Error },
    /// A new model version did not become READY.
    NotReady {
        model: String,
        version: String,
        detail: String,
    },
}

impl Error {
    /// MLflow's `error_code`, e.g. `RESOURCE_DOES_NOT_EXIST`, when MLflow answered with one.
    pub fn error_code(&self) -> Option<&str> {
        match self {
            Self::Api { error_code, .. } => Some(error_code),
            _ => None,
        }
    }

    /// True when the server could not be reached at all.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable { .. })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidUri { uri, reason } => write!(f, "MLflow tracking URI {uri:?}: {reason}"),
            Self::Api {
                call,
                status,
                error_code,
                message,
            } => write!(
                f,
                "MLflow {call} failed (HTTP {status}): {error_code}: {message}"
            ),
            Self::Unexpected {
                call,
                status,
                detail,
            } => write!(
                f,
                "MLflow {call}: unexpected answer (HTTP {status}): {detail}"
            ),
            Self::Unreachable {
                call,
                attempts,
                source,
            } => write!(
                f,
                "MLflow {call}: cannot connect ({source}; {attempts} attempt{})",
                if *attempts == 1 { "" } else { "s" }
            ),
            Self::Transport { call, source } => write!(f, "MLflow {call}: {source}"),
            Self::NotReady {
                model,
                version,
                detail,
            } => write!(
                f,
                "MLflow model {model} version {version} is not READY: {detail}"
            ),
        }
    }
}

// The message already holds the transport error's text, so `source()` stays `None`: error
// chains would print it twice.
impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// True when `error` happened before any byte of the request could reach the server.
fn is_connect_error(error: &ureq::Error) -> bool {
    use std::io::ErrorKind;
    match error {
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => true,
        ureq::Error::Timeout(t) => matches!(t, ureq::Timeout::Connect | ureq::Timeout::Resolve),
        ureq::Error::Io(e) => matches!(
            e.kind(),
            ErrorKind::ConnectionRefused
                | ErrorKind::HostUnreachable
                | ErrorKind::NetworkUnreachable
                | ErrorKind::AddrNotAvailable
        ),
        _ => false,
    }
}

/// Milliseconds since the Unix epoch, as MLflow stamps runs and metrics.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub key: String,
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    #[serde(default)]
    pub step: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Param {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

impl Param {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }
}

impl Tag {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Experiment {
    pub experiment_id: String,
    pub name: String,
    #[serde(default)]
    pub artifact_location: String,
    #[serde(default)]
    pub lifecycle_stage: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunStatus {
    Running,
    Scheduled,
    Finished,
    Failed,
    Killed,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RunInfo {
    pub run_id: String,
    pub experiment_id: String,
    #[serde(default)]
    pub run_name: String,
    pub status: RunStatus,
    /// Where the run's artifacts live, e.g. `mlflow-artifacts:/1/<run_id>/artifacts`.
    pub artifact_uri: String,
    #[serde(default)]
    pub start_time: Option<i64>,
    #[serde(default)]
    pub end_time: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RunData {
    #[serde(default)]
    pub metrics: Vec<Metric>,
    #[serde(default)]
    pub params: Vec<Param>,
    #[serde(default)]
    pub tags: Vec<Tag>,
}

impl RunData {
    pub fn metric(&self, key: &str) -> Option<f64> {
        self.metrics.iter().find(|m| m.key == key).map(|m| m.value)
    }

    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|p| p.key == key)
            .map(|p| p.value.as_str())
    }

    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|t| t.key == key)
            .map(|t| t.value.as_str())
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Run {
    pub info: RunInfo,
    #[serde(default)]
    pub data: RunData,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FileInfo {
    pub path: String,
    #[serde(default)]
    pub is_dir: bool,
    #[serde(default)]
    pub file_size: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ModelVersionStatus {
    PendingRegistration,
    FailedRegistration,
    Ready,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ModelVersion {
    pub name: String,
    pub version: String,
    pub source: String,
    #[serde(default)]
    pub run_id: String,
    pub status: ModelVersionStatus,
    #[serde(default)]
    pub status_message: Option<String>,
    #[serde(default)]
    pub tags: Vec<Tag>,
    #[serde(default)]
    pub aliases: Vec<String>,
}

impl ModelVersion {
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|t| t.key == key)
            .map(|t| t.value.as_str())
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Alias {
    pub alias: String,
    pub version: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RegisteredModel {
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<Alias>,
}

impl RegisteredModel {
    /// The version `alias` points at, if it is set.
    pub fn alias(&self, alias: &str) -> Option<&str> {
        self.aliases
            .iter()
            .find(|a| a.alias == alias)
            .map(|a| a.version.as_str())
    }
}

/// One `runs/log-batch` request's worth of entries.
#[derive(Debug, Default, PartialEq, Serialize)]
pub struct LogBatch<'a> {
    pub metrics: &'a [Metric],
    pub params: &'a [Param],
    pub tags: &'a [Tag],
}

/// Splits entries into requests within MLflow's limits: at most 1000 metrics, 100 params and
/// 100 tags, and 1000 entries in all, per request.
pub fn log_batches<'a>(
    metrics: &'a [Metric],
    params: &'a [Param],
    tags: &'a [Tag],
) -> Vec<LogBatch<'a>> {
    let (mut metrics, mut params, mut tags) = (metrics, params, tags);
    let mut batches = Vec::new();
    while !(metrics.is_empty() && params.is_empty() && tags.is_empty()) {
        let p = params.len().min(MAX_BATCH_PARAMS);
        let t = tags.len().min(MAX_BATCH_TAGS);
        let m = metrics
            .len()
            .min(MAX_BATCH_METRICS)
            .min(MAX_BATCH_ENTRIES - p - t);
        batches.push(LogBatch {
            metrics: &metrics[..m],
            params: &params[..p],
            tags: &tags[..t],
        });
        (metrics, params, tags) = (&metrics[m..], &params[p..], &tags[t..]);
    }
    batches
}

/// The server-side path of `path` inside a run's artifacts: the run's `artifact_uri` without
/// its `mlflow-artifacts:` scheme (and authority, if any), each segment percent-encoded.
pub fn artifact_proxy_path(artifact_uri: &str, path: &str) -> Result<String> {
    let rest = artifact_uri
        .strip_prefix("mlflow-artifacts:")
        .ok_or_else(|| Error::InvalidUri {
            uri: artifact_uri.to_owned(),
            reason: "the run's artifacts are not served by the tracking server; start `mlflow \
                     server` with artifact serving (its default, with --artifacts-destination)"
                .to_owned(),
        })?;
    // `mlflow-artifacts://host:port/path` names a server; the path is what follows it.
    let rest = match rest.strip_prefix("//") {
        Some(authority_and_path) => authority_and_path
            .find('/')
            .map_or("", |i| &authority_and_path[i..]),
        None => rest,
    };
    let segments = rest
        .split('/')
        .chain(path.split('/'))
        .filter(|s| !s.is_empty());
    let mut out = String::new();
    for segment in segments {
        if segment == "." || segment == ".." {
            return Err(Error::InvalidUri {
                uri: format!("{artifact_uri}/{path}"),
                reason: "artifact paths cannot contain . or .. segments".to_owned(),
            });
        }
        if !out.is_empty() {
            out.push('/');
        }
        percent_encode_into(segment, &mut out);
    }
    Ok(out)
}

fn percent_encode_into(segment: &str, out: &mut String) {
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
}

/// Reads an MLflow error answer: `{"error_code": ..., "message": ...}`.
#[derive(Deserialize)]
struct ErrorAnswer {
    error_code: String,
    #[serde(default)]
    message: String,
}

fn error_from_answer(call: String, status: u16, body: &[u8]) -> Error {
    match serde_json::from_slice::<ErrorAnswer>(body) {
        Ok(answer) => Error::Api {
            call,
            status,
            error_code: answer.error_code,
            message: answer.message,
        },
        Err(_) => Error::Unexpected {
            call,
            status,
            detail: excerpt(body),
        },
    }
}

/// The start of a body, for error messages.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".to_owned();
    }
    match text.char_indices().nth(300) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_owned(),
    }
}

#[derive(Clone, Copy)]
enum Method {
    Get,
    Post,
    Put,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
        }
    }
}

/// A connection to one MLflow tracking server.
pub struct Client {
    base: String,
    agent: ureq::Agent,
    options: ClientOptions,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("tracking_uri", &self.base)
            .field("options", &self.options)
            .finish()
    }
}

impl Client {
    /// A client for the server at `tracking_uri`, e.g. `http://127.0.0.1:5000`. Makes no call.
    pub fn new(tracking_uri: &str, options: ClientOptions) -> Result<Self> {
        let base = parse_tracking_uri(tracking_uri)?;
        let config = ureq::Agent::config_builder()
            // 4xx and 5xx are answers to read, not transport errors.
            .http_status_as_error(false)
            .timeout_global(Some(options.timeout))
            .timeout_connect(Some(options.timeout.min(Duration::from_secs(5))))
            // A fresh connection per call: a pooled one the server has closed would fail in a
            // way that cannot be told apart from a lost request, and could not be retried.
            .max_idle_connections(0)
            .user_agent(concat!("ml-serving/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Self {
            base,
            agent: ureq::Agent::new_with_config(config),
            options,
        })
    }

    /// The server's base URL, without a trailing slash.
    pub fn tracking_uri(&self) -> &str {
        &self.base
    }

    /// Sends one request, retrying only when no connection could be made; returns the status
    /// and body of a 2xx answer.
    fn exchange(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<(&str, &[u8])>,
    ) -> Result<(u16, Vec<u8>)> {
        let url = format!("{}{path}", self.base);
        let call = format!("{} {path} at {}", method.as_str(), self.base);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sent = match method {
                Method::Get => {
                    let mut request = self.agent.get(&url);
                    for (k, v) in query {
                        request = request.query(*k, *v);
                    }
                    request.call()
                }
                Method::Post | Method::Put => {
                    let mut request = match method {
                        Method::Put => self.agent.put(&url),
                        _ => self.agent.post(&url),
                    };
                    for (k, v) in query {
                        request = request.query(*k, *v);
                    }
                    let (content_type, bytes) = body.unwrap_or(("application/json", b"{}"));
                    request.header("content-type", content_type).send(bytes)
                }
            };
            let mut answer = match sent {
                Ok(answer) => answer,
                Err(e) if is_connect_error(&e) => {
                    if attempt > self.options.retries {
                        return Err(Error::Unreachable {
                            call,
                            attempts: attempt,
                            source: e,
                        });
                    }
                    let wait = self.options.first_backoff * 2u32.pow(attempt - 1);
                    tracing::debug!(%call, attempt, ?wait, error = %e, "MLflow unreachable, retrying");
                    std::thread::sleep(wait);
                    continue;
                }
                Err(e) => return Err(Error::Transport { call, source: e }),
            };
            let status = answer.status().as_u16();
            let bytes = answer
                .body_mut()
                .with_config()
                .limit(MAX_ANSWER_BYTES)
                .read_to_vec()
                .map_err(|e| Error::Transport {
                    call: call.clone(),
                    source: e,
                })?;
            if !(200..300).contains(&status) {
                return Err(error_from_answer(call, status, &bytes));
            }
            return Ok((status, bytes));
        }
    }

    /// Calls an endpoint under `/api/2.0/mlflow/` and reads its JSON answer.
    fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        endpoint: &str,
        query: &[(&str, &str)],
        body: Option<&serde_json::Value>,
    ) -> Result<T> {
        let path = format!("/api/2.0/mlflow/{endpoint}");
        let encoded = body.map(|b| serde_json::to_vec(b).expect("JSON values always serialize"));
        let (status, bytes) = self.exchange(
            method,
            &path,
            query,
            encoded.as_deref().map(|b| ("application/json", b)),
        )?;
        // Some calls answer `{}` or nothing at all.
        let bytes: &[u8] = if bytes.is_empty() { b"{}" } else { &bytes };
        serde_json::from_slice(bytes).map_err(|e| Error::Unexpected {
            call: format!("{} {path} at {}", method.as_str(), self.base),
            status,
            detail: format!("{e} in {}", excerpt(bytes)),
        })
    }

    fn post<T: DeserializeOwned>(&self, endpoint: &str, body: serde_json::Value) -> Result<T> {
        self.call(Method::Post, endpoint, &[], Some(&body))
    }

    fn get<T: DeserializeOwned>(&self, endpoint: &str, query: &[(&str, &str)]) -> Result<T> {
        self.call(Method::Get, endpoint, query, None)
    }

    /// Succeeds when the server answers `GET /health`.
    pub fn health(&self) -> Result<()> {
        self.exchange(Method::Get, "/health", &[], None).map(drop)
    }

    pub fn get_experiment_by_name(&self, name: &str) -> Result<Option<Experiment>> {
        #[derive(Deserialize)]
        struct Answer {
            experiment: Experiment,
        }
        match self.get::<Answer>("experiments/get-by-name", &[("experiment_name", name)]) {
            Ok(a) => Ok(Some(a.experiment)),
            Err(e) if e.error_code() == Some("RESOURCE_DOES_NOT_EXIST") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates an experiment; returns its id.
    pub fn create_experiment(&self, name: &str, tags: &[Tag]) -> Result<String> {
        #[derive(Deserialize)]
        struct Answer {
            experiment_id: String,
        }
        let answer: Answer =
            self.post("experiments/create", json!({ "name": name, "tags": tags }))?;
        Ok(answer.experiment_id)
    }

    /// The id of the experiment called `name`, created with `tags` if there is none.
    pub fn get_or_create_experiment(&self, name: &str, tags: &[Tag]) -> Result<String> {
        if let Some(e) = self.get_experiment_by_name(name)? {
            return Ok(e.experiment_id);
        }
        match self.create_experiment(name, tags) {
            Ok(id) => Ok(id),
            // Another trainer created it in between.
            Err(e) if e.error_code() == Some("RESOURCE_ALREADY_EXISTS") => self
                .get_experiment_by_name(name)?
                .map(|e| e.experiment_id)
                .ok_or(e),
            Err(e) => Err(e),
        }
    }

    /// Starts a run (status RUNNING).
    pub fn create_run(&self, experiment_id: &str, run_name: &str, tags: &[Tag]) -> Result<RunInfo> {
        #[derive(Deserialize)]
        struct Answer {
            run: Run,
        }
        let answer: Answer = self.post(
            "runs/create",
            json!({
                "experiment_id": experiment_id,
                "run_name": run_name,
                "start_time": now_millis(),
                "tags": tags,
            }),
        )?;
        Ok(answer.run.info)
    }

    /// Logs metrics, params and tags, in as many requests as MLflow's limits need.
    pub fn log_batch(
        &self,
        run_id: &str,
        metrics: &[Metric],
        params: &[Param],
        tags: &[Tag],
    ) -> Result<()> {
        for batch in log_batches(metrics, params, tags) {
            let mut body = serde_json::to_value(&batch).expect("a batch serializes");
            body["run_id"] = run_id.into();
            self.post::<serde_json::Value>("runs/log-batch", body)?;
        }
        Ok(())
    }

    /// Ends (or otherwise changes the status of) a run.
    pub fn update_run(&self, run_id: &str, status: RunStatus) -> Result<RunInfo> {
        #[derive(Deserialize)]
        struct Answer {
            run_info: RunInfo,
        }
        let mut body = json!({ "run_id": run_id, "status": status });
        if status != RunStatus::Running {
            body["end_time"] = now_millis().into();
        }
        Ok(self.post::<Answer>("runs/update", body)?.run_info)
    }

    pub fn get_run(&self, run_id: &str) -> Result<Run> {
        #[derive(Deserialize)]
        struct Answer {
            run: Run,
        }
        Ok(self.get::<Answer>("runs/get", &[("run_id", run_id)])?.run)
    }

    /// Runs of the experiments matching `filter` (MLflow's search syntax; empty for all),
    /// newest first.
    pub fn search_runs(
        &self,
        experiment_ids: &[&str],
        filter: &str,
        max_results: u32,
    ) -> Result<Vec<Run>> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            runs: Vec<Run>,
        }
        let answer: Answer = self.post(
            "runs/search",
            json!({
                "experiment_ids": experiment_ids,
                "filter": filter,
                "max_results": max_results,
                "order_by": ["attributes.start_time DESC"],
            }),
        )?;
        Ok(answer.runs)
    }

    /// Uploads `bytes` as `path` (e.g. `model/model.json`) among the artifacts at
    /// `artifact_uri`, through the tracking server's artifact proxy.
    pub fn upload_artifact(&self, artifact_uri: &str, path: &str, bytes: &[u8]) -> Result<()> {
        let target = artifact_proxy_path(artifact_uri, path)?;
        self.exchange(
            Method::Put,
            &format!("/api/2.0/mlflow-artifacts/artifacts/{target}"),
            &[],
            Some(("application/octet-stream", bytes)),
        )
        .map(drop)
    }

    /// Downloads the artifact `path` under `artifact_uri`.
    pub fn download_artifact(&self, artifact_uri: &str, path: &str) -> Result<Vec<u8>> {
        let source = artifact_proxy_path(artifact_uri, path)?;
        let (_, bytes) = self.exchange(
            Method::Get,
            &format!("/api/2.0/mlflow-artifacts/artifacts/{source}"),
            &[],
            None,
        )?;
        Ok(bytes)
    }

    /// The artifacts of a run directly under `path` ("" for the top).
    pub fn list_artifacts(&self, run_id: &str, path: &str) -> Result<Vec<FileInfo>> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            files: Vec<FileInfo>,
        }
        let answer: Answer = self.get("artifacts/list", &[("run_id", run_id), ("path", path)])?;
        Ok(answer.files)
    }

    /// Creates a registered model; one that already exists is fine.
    pub fn create_registered_model(&self, name: &str) -> Result<()> {
        match self.post::<serde_json::Value>("registered-models/create", json!({ "name": name })) {
            Ok(_) => Ok(()),
            Err(e) if e.error_code() == Some("RESOURCE_ALREADY_EXISTS") => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub fn get_registered_model(&self, name: &str) -> Result<Option<RegisteredModel>> {
        #[derive(Deserialize)]
        struct Answer {
            registered_model: RegisteredModel,
        }
        match self.get::<Answer>("registered-models/get", &[("name", name)]) {
            Ok(a) => Ok(Some(a.registered_model)),
            Err(e) if e.error_code() == Some("RESOURCE_DOES_NOT_EXIST") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Registers a new version of `name` from `source` (`runs:/<run_id>/<path>` or an
    /// `mlflow-artifacts:` URI) produced by `run_id`.
    pub fn create_model_version(
        &self,
        name: &str,
        source: &str,
        run_id: &str,
        tags: &[Tag],
    ) -> Result<ModelVersion> {
        #[derive(Deserialize)]
        struct Answer {
            model_version: ModelVersion,
        }
        let body = json!({ "name": name, "source": source, "run_id": run_id, "tags": tags });
        Ok(self
            .post::<Answer>("model-versions/create", body)?
            .model_version)
    }

    pub fn get_model_version(&self, name: &str, version: &str) -> Result<ModelVersion> {
        #[derive(Deserialize)]
        struct Answer {
            model_version: ModelVersion,
        }
        Ok(self
            .get::<Answer>(
                "model-versions/get",
                &[("name", name), ("version", version)],
            )?
            .model_version)
    }

    /// Every version of the registered model `name`.
    pub fn search_model_versions(&self, name: &str) -> Result<Vec<ModelVersion>> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            model_versions: Vec<ModelVersion>,
        }
        let filter = format!("name='{}'", name.replace('\'', "\\'"));
        let answer: Answer = self.get(
            "model-versions/search",
            &[("filter", &filter), ("max_results", "1000")],
        )?;
        Ok(answer.model_versions)
    }

    /// Waits until a new version is READY; fails if its registration failed or `limit` passes.
    pub fn wait_until_ready(
        &self,
        name: &str,
        version: &str,
        limit: Duration,
    ) -> Result<ModelVersion> {
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(100);
        loop {
            let current = self.get_model_version(name, version)?;
            let not_ready = |detail: String| Error::NotReady {
                model: name.to_owned(),
                version: version.to_owned(),
                detail,
            };
            match current.status {
                ModelVersionStatus::Ready => return Ok(current),
                ModelVersionStatus::FailedRegistration => {
                    return Err(not_ready(format!(
                        "its registration failed: {}",
                        current.status_message.unwrap_or_default()
                    )))
                }
                ModelVersionStatus::PendingRegistration if started.elapsed() >= limit => {
                    return Err(not_ready(format!(
                        "still PENDING_REGISTRATION after {limit:?}"
                    )))
                }
                ModelVersionStatus::PendingRegistration => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Points `alias` (e.g. `champion`) of the registered model `name` at `version`.
    pub fn set_registered_model_alias(&self, name: &str, alias: &str, version: &str) -> Result<()> {
        self.post::<serde_json::Value>(
            "registered-models/alias",
            json!({ "name": name, "alias": alias, "version": version }),
        )
        .map(drop)
    }

    /// The version `alias` points at; MLflow answers INVALID_PARAMETER_VALUE when it is unset.
    pub fn get_model_version_by_alias(&self, name: &str, alias: &str) -> Result<ModelVersion> {
        #[derive(Deserialize)]
        struct Answer {
            model_version: ModelVersion,
        }
        Ok(self
            .get::<Answer>(
                "registered-models/alias",
                &[("name", name), ("alias", alias)],
            )?
            .model_version)
    }
}

/// Checks `uri` is an `http://` URL with a host; returns it without a trailing slash.
fn parse_tracking_uri(uri: &str) -> Result<String> {
    let invalid = |reason: &str| Error::InvalidUri {
        uri: uri.to_owned(),
        reason: reason.to_owned(),
    };
    let trimmed = uri.trim().trim_end_matches('/');
    if trimmed.starts_with("https://") {
        return Err(invalid(
            "https is not supported by the services (they carry no TLS stack); reach the server \
             over http://, e.g. on the compose network or through a tunnel",
        ));
    }
    let Some(rest) = trimmed.strip_prefix("http://") else {
        return Err(invalid(
            "expected an http:// URL of a tracking server, e.g. http://127.0.0.1:5000 \
             (file stores and databricks URIs are not supported)",
        ));
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || authority.starts_with(':') {
        return Err(invalid("no host"));
    }
    if rest.contains(['?', '#']) {
        return Err(invalid("a tracking URI takes no query or fragment"));
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    fn quick() -> ClientOptions {
        ClientOptions {
            timeout: Duration::from_secs(2),
            retries: 3,
            first_backoff: Duration::from_millis(20),
        }
    }

    /// A port nothing listens on.
    fn closed_port() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    /// Answers every request with `status` and `body`; counts the connections.
    fn answering(status: u16, body: &'static str) -> (String, Arc<AtomicU32>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicU32::new(0));
        let counter = connections.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                counter.fetch_add(1, Ordering::SeqCst);
                read_request(&mut stream);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        (url, connections)
    }

    /// Reads one request's head and its content-length body.
    fn read_request(stream: &mut std::net::TcpStream) -> String {
        let mut seen = Vec::new();
        let mut byte = [0u8; 1];
        while !seen.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).unwrap_or(0) == 0 {
                break;
            }
            seen.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&seen).into_owned();
        let length = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        let mut body = vec![0; length];
        let _ = stream.read_exact(&mut body);
        head + &String::from_utf8_lossy(&body)
    }

    #[test]
    fn log_batches_respect_every_limit_and_keep_every_entry() {
        let metrics: Vec<Metric> = (0..2500)
            .map(|i| Metric {
                key: format!("m{i}"),
                value: i as f64,
                timestamp: 0,
                step: 0,
            })
            .collect();
        let params: Vec<Param> = (0..250).map(|i| Param::new(format!("p{i}"), "v")).collect();
        let tags: Vec<Tag> = (0..130).map(|i| Tag::new(format!("t{i}"), "v")).collect();
        let batches = log_batches(&metrics, &params, &tags);
        for b in &batches {
            assert!(b.metrics.len() <= MAX_BATCH_METRICS);
            assert!(b.params.len() <= MAX_BATCH_PARAMS);
            assert!(b.tags.len() <= MAX_BATCH_TAGS);
            assert!(b.metrics.len() + b.params.len() + b.tags.len() <= MAX_BATCH_ENTRIES);
        }
        let all_metrics: Vec<&Metric> = batches.iter().flat_map(|b| b.metrics).collect();
        assert_eq!(all_metrics, metrics.iter().collect::<Vec<_>>());
        let all_params: Vec<&Param> = batches.iter().flat_map(|b| b.params).collect();
        assert_eq!(all_params, params.iter().collect::<Vec<_>>());
        assert_eq!(batches.iter().map(|b| b.tags.len()).sum::<usize>(), 130);
        // 2500 metrics, 250 params, 130 tags: params bound it to three requests of 100 params.
        assert_eq!(batches.len(), 3);

        assert!(log_batches(&[], &[], &[]).is_empty());
        assert_eq!(log_batches(&metrics[..3], &[], &[]).len(), 1);
    }

    #[test]
    fn a_log_batch_serializes_as_mlflow_reads_it() {
        let metrics = [Metric {
            key: "f1".into(),
            value: 0.5,
            timestamp: 1_700_000_000_000,
            step: 0,
        }];
        let params = [Param::new("seed", "42")];
        let batch = &log_batches(&metrics, &params, &[])[0];
        assert_eq!(
            serde_json::to_value(batch).unwrap(),
            json!({
                "metrics": [{"key": "f1", "value": 0.5, "timestamp": 1_700_000_000_000i64, "step": 0}],
                "params": [{"key": "seed", "value": "42"}],
                "tags": [],
            })
        );
    }

    #[test]
    fn reads_runs_and_model_versions_as_mlflow_3_writes_them() {
        // Trimmed from the answers of an MLflow 3.17.2 server.
        let run: Run = serde_json::from_value(json!({
            "info": {
                "run_uuid": "5471", "experiment_id": "1", "run_name": "r1", "user_id": "",
                "status": "FINISHED", "start_time": 1_700_000_000_000i64, "end_time": 1_700_000_001_000i64,
                "artifact_uri": "mlflow-artifacts:/1/5471/artifacts", "lifecycle_stage": "active",
                "run_id": "5471"
            },
            "data": {
                "metrics": [{"key": "f1", "value": 0.5, "timestamp": 1, "step": 0}],
                "params": [{"key": "seed", "value": "42"}],
                "tags": [{"key": "mlflow.runName", "value": "r1"}]
            },
            "inputs": {}, "outputs": {}
        }))
        .unwrap();
        assert_eq!(run.info.status, RunStatus::Finished);
        assert_eq!(run.data.metric("f1"), Some(0.5));
        assert_eq!(run.data.param("seed"), Some("42"));
        assert_eq!(run.data.tag("mlflow.runName"), Some("r1"));

        let version: ModelVersion = serde_json::from_value(json!({
            "name": "BankChurn-Classifier", "version": "1", "creation_timestamp": 1,
            "last_updated_timestamp": 1, "current_stage": "None", "description": "",
            "source": "runs:/5471/model", "run_id": "5471", "status": "READY",
            "tags": [{"key": "gates", "value": "passed"}], "run_link": "", "aliases": ["champion"]
        }))
        .unwrap();
        assert_eq!(version.status, ModelVersionStatus::Ready);
        assert_eq!(version.aliases, ["champion"]);
        assert_eq!(version.tag("gates"), Some("passed"));

        let model: RegisteredModel = serde_json::from_value(json!({
            "name": "BankChurn-Classifier", "latest_versions": [],
            "aliases": [{"alias": "champion", "version": "1"}]
        }))
        .unwrap();
        assert_eq!(model.alias("champion"), Some("1"));
        assert_eq!(model.alias("challenger"), None);
    }

    #[test]
    fn artifact_paths_drop_the_scheme_and_encode_segments() {
        assert_eq!(
            artifact_proxy_path("mlflow-artifacts:/1/abc/artifacts", "model/model.json").unwrap(),
            "1/abc/artifacts/model/model.json"
        );
        assert_eq!(
            artifact_proxy_path("mlflow-artifacts://mlflow:5000/1/abc/artifacts", "a b.json")
                .unwrap(),
            "1/abc/artifacts/a%20b.json"
        );
        let local = artifact_proxy_path("/srv/mlruns/1/abc/artifacts", "model.json").unwrap_err();
        assert!(
            local
                .to_string()
                .contains("not served by the tracking server"),
            "{local}"
        );
        assert!(artifact_proxy_path("mlflow-artifacts:/1/abc", "../x").is_err());
    }

    #[test]
    fn only_plain_http_tracking_uris_are_accepted() {
        let client = Client::new("http://127.0.0.1:5000/", ClientOptions::default()).unwrap();
        assert_eq!(client.tracking_uri(), "http://127.0.0.1:5000");
        let https =
            Client::new("https://mlflow.example.com", ClientOptions::default()).unwrap_err();
        assert!(
            https.to_string().contains("https is not supported"),
            "{https}"
        );
        for bad in [
            "127.0.0.1:5000",
            "file:///tmp/mlruns",
            "databricks",
            "http://",
            "http://:5000",
        ] {
            assert!(Client::new(bad, ClientOptions::default()).is_err(), "{bad}");
        }
    }

    #[test]
    fn mlflow_errors_reach_the_caller_as_they_are_with_the_call() {
        let (url, _) = answering(
            404,
            r#"{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Run 'x' not found"}"#,
        );
        let client = Client::new(&url, quick()).unwrap();
        let err = client.get_run("x").unwrap_err();
        assert_eq!(err.error_code(), Some("RESOURCE_DOES_NOT_EXIST"));
        let text = err.to_string();
        assert!(
            text.contains("GET /api/2.0/mlflow/runs/get at http://127.0.0.1:"),
            "{text}"
        );
        assert!(text.contains("HTTP 404"), "{text}");
        assert!(
            text.contains("RESOURCE_DOES_NOT_EXIST: Run 'x' not found"),
            "{text}"
        );

        let (url, _) = answering(502, "<html>Bad Gateway</html>");
        let err = Client::new(&url, quick())
            .unwrap()
            .get_run("x")
            .unwrap_err();
        assert!(
            matches!(err, Error::Unexpected { status: 502, .. }),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("<html>Bad Gateway</html>"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_experiment_is_none_and_an_existing_model_is_fine() {
        let (url, _) = answering(
            404,
            r#"{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Could not find experiment"}"#,
        );
        let client = Client::new(&url, quick()).unwrap();
        assert!(client
            .get_experiment_by_name("bankchurn")
            .unwrap()
            .is_none());

        let (url, _) = answering(
            400,
            r#"{"error_code": "RESOURCE_ALREADY_EXISTS", "message": "Registered Model (name=X) already exists."}"#,
        );
        let client = Client::new(&url, quick()).unwrap();
        client.create_registered_model("X").unwrap();
    }

    #[test]
    fn a_server_error_is_not_retried() {
        let (url, connections) = answering(
            500,
            r#"{"error_code": "INTERNAL_ERROR", "message": "database is locked"}"#,
        );
        let client = Client::new(&url, quick()).unwrap();
        let err = client.create_run("1", "r", &[]).unwrap_err();
        assert_eq!(err.error_code(), Some("INTERNAL_ERROR"));
        assert_eq!(connections.load(Ordering::SeqCst), 1, "a 500 was retried");
    }

    #[test]
    fn a_refused_connection_is_retried_then_reported() {
        let url = format!("http://127.0.0.1:{}", closed_port());
        let client = Client::new(&url, quick()).unwrap();
        let started = std::time::Instant::now();
        let err = client.health().unwrap_err();
        assert!(err.is_unreachable(), "{err:?}");
        assert!(
            matches!(err, Error::Unreachable { attempts: 4, .. }),
            "{err:?}"
        );
        // Waited 20 + 40 + 80 ms between the four attempts.
        assert!(started.elapsed() >= Duration::from_millis(140));
        assert!(err.to_string().contains(&url), "{err}");
    }

    #[test]
    fn a_server_that_comes_up_during_the_retries_is_reached() {
        let port = closed_port();
        let server = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
            let (mut stream, _) = listener.accept().unwrap();
            read_request(&mut stream);
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nOK")
                .unwrap();
        });
        let options = ClientOptions {
            first_backoff: Duration::from_millis(50),
            retries: 5,
            ..quick()
        };
        let client = Client::new(&format!("http://127.0.0.1:{port}"), options).unwrap();
        client.health().unwrap();
        server.join().unwrap();
    }

    #[test]
    fn a_silent_server_times_out_once_without_a_retry() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicU32::new(0));
        let counter = accepted.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                counter.fetch_add(1, Ordering::SeqCst);
                held.push(stream); // never answers
            }
        });
        let options = ClientOptions {
            timeout: Duration::from_millis(300),
            ..quick()
        };
        let client = Client::new(&url, options).unwrap();
        let started = std::time::Instant::now();
        let err = client.create_run("1", "r", &[]).unwrap_err();
        assert!(matches!(err, Error::Transport { .. }), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        // The request may have been received: creating the run again could duplicate it.
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn requests_carry_what_mlflow_expects() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = std::thread::spawn(move || {
            let mut requests = Vec::new();
            for _ in 0..2 {
                let (mut stream, _) = listener.accept().unwrap();
                requests.push(read_request(&mut stream));
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                    .unwrap();
            }
            requests
        });
        let client = Client::new(&url, quick()).unwrap();
        client
            .upload_artifact(
                "mlflow-artifacts:/3/r1/artifacts",
                "model/model.json",
                b"{\"a\":1}",
            )
            .unwrap();
        client
            .set_registered_model_alias("BankChurn-Classifier", "champion", "2")
            .unwrap();
        let requests = seen.join().unwrap();
        assert!(
            requests[0].starts_with(
                "PUT /api/2.0/mlflow-artifacts/artifacts/3/r1/artifacts/model/model.json HTTP/1.1"
            ),
            "{}",
            requests[0]
        );
        assert!(requests[0].ends_with("{\"a\":1}"), "{}", requests[0]);
        assert!(requests[1].starts_with("POST /api/2.0/mlflow/registered-models/alias HTTP/1.1"));
        let body: serde_json::Value =
            serde_json::from_str(requests[1].split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"name": "BankChurn-Classifier", "alias": "champion", "version": "2"})
        );
    }
}

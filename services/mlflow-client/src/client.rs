//! The client: one MLflow server's endpoints, each call bounded in time and retried only when
//! no connection could be made.

use std::fmt;
use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use crate::error::{error_from_answer, excerpt, is_connect_error, Error, Result};
use crate::wire::{
    log_batches, now_millis, Experiment, FileInfo, Metric, ModelVersion, ModelVersionStatus, Param,
    RegisteredModel, Run, RunInfo, RunStatus, Tag,
};

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
        out.extend(utf8_percent_encode(segment, SEGMENT));
    }
    Ok(out)
}
/// What stays as it is in a path segment: RFC 3986's unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

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

    /// Every experiment, deleted ones too, page by page.
    pub fn search_experiments(&self) -> Result<Vec<Experiment>> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            experiments: Vec<Experiment>,
            next_page_token: Option<String>,
        }
        every_page(|token| {
            let answer: Answer = self.post(
                "experiments/search",
                json!({ "max_results": 1000, "view_type": "ALL", "page_token": token }),
            )?;
            Ok((answer.experiments, answer.next_page_token))
        })
    }

    /// Every run of these experiments, deleted ones too, page by page.
    pub fn search_all_runs(&self, experiment_ids: &[&str]) -> Result<Vec<Run>> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            runs: Vec<Run>,
            next_page_token: Option<String>,
        }
        every_page(|token| {
            let answer: Answer = self.post(
                "runs/search",
                json!({
                    "experiment_ids": experiment_ids,
                    "max_results": 1000,
                    "run_view_type": "ALL",
                    "page_token": token,
                }),
            )?;
            Ok((answer.runs, answer.next_page_token))
        })
    }

    /// Every registered model, with its aliases, page by page.
    pub fn search_registered_models(&self) -> Result<Vec<RegisteredModel>> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            registered_models: Vec<RegisteredModel>,
            next_page_token: Option<String>,
        }
        every_page(|token| {
            let mut query = vec![("max_results", "1000")];
            if let Some(token) = token {
                query.push(("page_token", token));
            }
            let answer: Answer = self.get("registered-models/search", &query)?;
            Ok((answer.registered_models, answer.next_page_token))
        })
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

/// Calls `page` with each page's token (none for the first) until an answer has no
/// next one.
fn every_page<T>(
    mut page: impl FnMut(Option<&str>) -> Result<(Vec<T>, Option<String>)>,
) -> Result<Vec<T>> {
    let mut all = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let (items, next) = page(token.as_deref())?;
        all.extend(items);
        match next.filter(|t| !t.is_empty()) {
            Some(next) => token = Some(next),
            None => return Ok(all),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}

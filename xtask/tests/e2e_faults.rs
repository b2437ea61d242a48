//! The fault campaign: what the stack does when things go wrong, on the container runtime and
//! on the local one. Each case prints what it observed (numbers with a `MEASURED:` prefix) and
//! the campaign ends with a summary table; a failed case does not stop the others.
//!
//! - a stranger holding a stack port before `demo`: caught before anything starts, holder named;
//! - Ctrl-C during `demo`: no process or container of the stack left;
//! - a slowloris against an API: `/health` still answers within a second;
//! - `kill -9` of each API under load: only the requests in flight fail; back within 5 s
//!   (docker's restart policy) or after `up` (local);
//! - a corrupt and a cyclic model published and signalled (SIGHUP): refused, the old model
//!   kept; a service started on a corrupt model only answers 503 and stays up;
//! - MLflow stopped under running APIs: they keep answering; `status` and `doctor` say so;
//! - a full disk while training (a 2 MiB tmpfs, root only): a clear error, the old model's
//!   files byte for byte as they were, no staging leftovers.
//!
//! The docker campaign uses the stack's fixed container names and ports; the local one runs on
//! free ports beside anything else. Slow, so the `ci` pipeline runs them on purpose:
//! `cargo test -p xtask --test e2e_faults -- --ignored --test-threads 1 --nocapture`.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{copy_dir, docker_stdout, model_version, repo, snapshot, stderr, stdout, Stack};
use serde_json::{json, Value};

const APIS: [&str; 3] = ["bankchurn", "carvision", "telecom"];
/// Concurrent keep-alive clients of the load under which each API is killed.
const LOAD_CLIENTS: usize = 4;
/// The restart policy's promise.
const RECOVERY_BOUND: Duration = Duration::from_secs(5);
const SLOWLORIS_CONNECTIONS: usize = 1000;

// ---------------------------------------------------------------------------------------------
// The stack: services as `service.toml` describes them, on either runtime.

/// What the campaign needs of one service's `service.toml`.
struct ServiceInfo {
    container: String,
    host_port: u16,
    /// Every port it publishes: its own, and its dashboard's where it has one.
    ports: Vec<u16>,
    /// The smoke request: path and JSON body.
    smoke: Option<(String, Value)>,
}

fn service(name: &str) -> ServiceInfo {
    let path = repo().join("services").join(name).join("service.toml");
    let table: toml::Table = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let smoke = table.get("smoke").map(|smoke| {
        (
            smoke["path"].as_str().unwrap().to_owned(),
            serde_json::to_value(&smoke["request"]).unwrap(),
        )
    });
    let port = |t: &toml::Table| u16::try_from(t["host_port"].as_integer().unwrap()).unwrap();
    let host_port = port(&table);
    let ports = std::iter::once(host_port)
        .chain(table.get("dashboard").and_then(|d| d.as_table()).map(port))
        .collect();
    ServiceInfo {
        container: table["container"].as_str().unwrap().to_owned(),
        host_port,
        ports,
        smoke,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Runtime {
    Docker,
    Local,
}

/// One campaign's stack: a stack directory of its own, on the fixed ports (docker) or on
/// free ones (local).
struct Target {
    runtime: Runtime,
    stack: Stack,
}

impl Target {
    fn new(runtime: Runtime) -> Self {
        let mut stack = Stack::new();
        if runtime == Runtime::Docker {
            // The containers have fixed names, so their ports are the published ones.
            stack.port_offset = 0;
        }
        Self { runtime, stack }
    }

    fn name(&self) -> &'static str {
        match self.runtime {
            Runtime::Docker => "docker",
            Runtime::Local => "local",
        }
    }

    fn xtask(&self, args: &[&str]) -> Output {
        let mut full = vec!["--runtime", self.name()];
        full.extend_from_slice(args);
        self.stack.xtask(&full)
    }

    fn spawn_xtask(&self, args: &[&str]) -> Child {
        let mut full = vec!["--runtime", self.name()];
        full.extend_from_slice(args);
        self.stack.spawn_xtask(&full)
    }

    fn port(&self, name: &str) -> u16 {
        self.stack.port(service(name).host_port)
    }

    fn addr(&self, name: &str) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port(name)))
    }

    fn model_dir(&self, api: &str) -> PathBuf {
        self.stack.path().join("models").join(api)
    }

    /// The host pid of the service's main process.
    fn pid(&self, name: &str) -> i32 {
        match self.runtime {
            Runtime::Docker => docker_stdout(&[
                "inspect",
                "--format",
                "{{.State.Pid}}",
                &service(name).container,
            ])
            .parse()
            .unwrap(),
            Runtime::Local => {
                let file = self.stack.path().join(format!(".xtask/run/{name}.pid"));
                std::fs::read_to_string(&file)
                    .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
                    .lines()
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            }
        }
    }

    /// SIGHUP to the service: `docker kill --signal HUP`, or to the local pid.
    fn hangup(&self, name: &str) {
        match self.runtime {
            Runtime::Docker => {
                docker_stdout(&["kill", "--signal", "HUP", &service(name).container]);
            }
            Runtime::Local => signal(self.pid(name), "HUP"),
        }
    }

    /// Whether any container (docker) or process (local) of the stack is left.
    fn leftovers(&self) -> Vec<String> {
        match self.runtime {
            Runtime::Docker => stack_containers(),
            Runtime::Local => {
                let mut left: Vec<String> = self
                    .stack
                    .pids()
                    .into_iter()
                    .filter(|&pid| common::pid_alive(pid))
                    .map(|pid| format!("pid {pid}"))
                    .collect();
                for name in ["mlflow"].into_iter().chain(APIS) {
                    for base in service(name).ports {
                        let port = self.stack.port(base);
                        if !common::port_free(port) {
                            left.push(format!("port {port} ({name})"));
                        }
                    }
                }
                left
            }
        }
    }
}

/// Stops the stack whatever happened, so the campaign never leaves it running.
struct Teardown<'a>(&'a Target);

impl Drop for Teardown<'_> {
    fn drop(&mut self) {
        let down = self.0.xtask(&["down"]);
        if !down.status.success() {
            eprintln!("teardown: down failed:\n{}", stderr(&down));
        }
    }
}

/// The stack's containers that exist, running or not.
fn stack_containers() -> Vec<String> {
    ["mlflow"]
        .into_iter()
        .chain(APIS)
        .map(|name| service(name).container)
        .filter(|c| {
            !docker_stdout(&["ps", "--all", "--quiet", "--filter", &format!("name=^{c}$")])
                .is_empty()
        })
        .collect()
}

fn signal(pid: i32, name: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{name}"), "--", &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -{name} {pid} failed");
}

/// The release binary of a service, as `demo` builds it.
fn service_binary(name: &str) -> PathBuf {
    let target = repo().join("target");
    let triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    [
        target.join(triple).join("release").join(name),
        target.join("release").join(name),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .unwrap_or_else(|| panic!("no release binary of {name} under {}", target.display()))
}

// ---------------------------------------------------------------------------------------------
// HTTP from the outside, by hand: the load generator must know whether a request was sent
// before its connection broke, which a client library hides.

/// Reads one HTTP/1.1 response (status, body, whether the server closes the connection).
fn read_response(stream: &mut TcpStream) -> std::io::Result<(u16, Vec<u8>, bool)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(std::io::ErrorKind::InvalidData)?;
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
    };
    let length: usize = header("content-length:")
        .and_then(|v| v.parse().ok())
        .ok_or(std::io::ErrorKind::InvalidData)?;
    let closes = header("connection:").is_some_and(|v| v == "close");
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok((status, buf[head_end..head_end + length].to_vec(), closes))
}

fn request_bytes(method: &str, path: &str, body: Option<&Value>, close: bool) -> Vec<u8> {
    let body = body.map(Value::to_string).unwrap_or_default();
    let connection = if close { "close" } else { "keep-alive" };
    format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: {connection}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// One request on a fresh connection: status and JSON body.
fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> std::io::Result<(u16, Value)> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(&request_bytes(method, path, body, true))?;
    let (status, body, _) = read_response(&mut stream)?;
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

fn health(addr: SocketAddr) -> std::io::Result<(u16, Value)> {
    call(addr, "GET", "/health", None, Duration::from_secs(1))
}

fn is_healthy(addr: SocketAddr) -> bool {
    health(addr).is_ok_and(|(status, body)| status == 200 && body["status"] == "healthy")
}

/// Polls `/health` until `accept` says yes; panics with the last answer after `timeout`.
fn wait_health(
    addr: SocketAddr,
    what: &str,
    timeout: Duration,
    accept: impl Fn(u16, &Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match health(addr) {
            Ok((status, body)) if accept(status, &body) => return body,
            Ok((status, body)) => format!("{status} {body}"),
            Err(e) => e.to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "{addr}: no {what} within {timeout:?}; last: {last}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The smoke request of `api`, answered 200.
fn predict_ok(addr: SocketAddr, api: &str) -> bool {
    let (path, body) = service(api).smoke.unwrap();
    call(addr, "POST", &path, Some(&body), Duration::from_secs(5))
        .is_ok_and(|(status, _)| status == 200)
}

// ---------------------------------------------------------------------------------------------
// Load: keep-alive clients that record when each request was sent and how it ended.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Answered,
    /// An answer other than 200.
    Status(u16),
    /// The connection could not be made: nothing was sent.
    Refused,
    /// The connection broke while the request was being written.
    ResetBeforeSent,
    /// The request was sent; the connection broke before the whole answer came.
    DroppedAfterSent,
}

struct Event {
    /// When the request (or the connection attempt) started.
    at: Instant,
    outcome: Outcome,
}

struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<JoinHandle<Vec<Event>>>,
}

/// Whether the server closed a kept-alive connection while it sat idle: a client's pool
/// drops such a connection rather than send on it.
fn closed_by_peer(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    stream.set_nonblocking(true).ok();
    let closed = match stream.peek(&mut byte) {
        Ok(0) => true,
        Ok(_) => true, // bytes nobody asked for: do not reuse
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    stream.set_nonblocking(false).ok();
    closed
}

fn client(addr: SocketAddr, request: Vec<u8>, stop: Arc<AtomicBool>) -> Vec<Event> {
    let mut events = Vec::new();
    let mut connection: Option<TcpStream> = None;
    while !stop.load(Ordering::Relaxed) {
        if connection.as_ref().is_some_and(closed_by_peer) {
            connection = None;
        }
        let at = Instant::now();
        let stream = match &mut connection {
            Some(stream) => stream,
            None => match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                Ok(stream) => {
                    stream
                        .set_read_timeout(Some(Duration::from_secs(10)))
                        .unwrap();
                    stream.set_nodelay(true).unwrap();
                    connection.insert(stream)
                }
                Err(_) => {
                    events.push(Event {
                        at,
                        outcome: Outcome::Refused,
                    });
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        if stream.write_all(&request).is_err() {
            events.push(Event {
                at,
                outcome: Outcome::ResetBeforeSent,
            });
            connection = None;
            continue;
        }
        let outcome = match read_response(stream) {
            Ok((200, _, closes)) => {
                if closes {
                    connection = None;
                }
                Outcome::Answered
            }
            Ok((status, _, _)) => {
                connection = None;
                Outcome::Status(status)
            }
            Err(_) => {
                connection = None;
                Outcome::DroppedAfterSent
            }
        };
        events.push(Event { at, outcome });
    }
    events
}

impl Load {
    fn start(addr: SocketAddr, api: &str, clients: usize) -> Self {
        let (path, body) = service(api).smoke.unwrap();
        let request = request_bytes("POST", &path, Some(&body), false);
        let stop = Arc::new(AtomicBool::new(false));
        let clients = (0..clients)
            .map(|_| {
                let (request, stop) = (request.clone(), stop.clone());
                std::thread::spawn(move || client(addr, request, stop))
            })
            .collect();
        Self { stop, clients }
    }

    fn finish(self) -> Vec<Event> {
        self.stop.store(true, Ordering::Relaxed);
        self.clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect()
    }
}

/// The requests of a load, sorted by when they ran relative to a kill and the recovery.
#[derive(Debug, Default)]
struct KillTally {
    answered_before: usize,
    answered_after: usize,
    /// Sent before the kill, broken by it: the requests in flight.
    in_flight: usize,
    /// While the service was down: refused connections, or sent to an address with nothing
    /// behind it yet. A real client retries these.
    refused_while_down: usize,
    dropped_while_down: usize,
    /// Failures while the service was up (before the kill, after the first healthy answer).
    failed_while_up: Vec<String>,
}

fn tally(events: &[Event], killed: Instant, healthy: Instant) -> KillTally {
    let mut t = KillTally::default();
    for e in events {
        let before = e.at < killed;
        let after = e.at >= healthy;
        match e.outcome {
            Outcome::Answered if before => t.answered_before += 1,
            Outcome::Answered => t.answered_after += 1,
            Outcome::DroppedAfterSent if before => t.in_flight += 1,
            other if before || after => t.failed_while_up.push(format!(
                "{other:?} {} the kill",
                if before {
                    "before"
                } else {
                    "after recovery from"
                }
            )),
            Outcome::Refused | Outcome::ResetBeforeSent => t.refused_while_down += 1,
            Outcome::DroppedAfterSent | Outcome::Status(_) => t.dropped_while_down += 1,
        }
    }
    t
}

// ---------------------------------------------------------------------------------------------
// Slowloris: many connections, each trickling a header byte now and then.

struct SlowlorisReport {
    probes: usize,
    worst: Duration,
    median: Duration,
    failures: Vec<String>,
    /// Slow connections the server closed (its header deadline) and that were opened again.
    reopened: usize,
}

/// Holds `connections` half-sent requests open against `addr` for `span`, each sending one more
/// header byte every 2 s and reconnecting when the server closes it, while `/health` is asked
/// every 250 ms on a fresh connection.
fn slowloris(addr: SocketAddr, connections: usize, span: Duration) -> SlowlorisReport {
    const THREADS: usize = 8;
    let stop = Arc::new(AtomicBool::new(false));
    let open = move |_: usize| -> Option<TcpStream> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        s.set_write_timeout(Some(Duration::from_secs(1))).ok()?;
        s.write_all(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            .ok()?;
        Some(s)
    };
    let workers: Vec<JoinHandle<usize>> = (0..THREADS)
        .map(|t| {
            let stop = stop.clone();
            let share = connections / THREADS + usize::from(t < connections % THREADS);
            std::thread::spawn(move || {
                let mut held: Vec<Option<TcpStream>> = (0..share).map(open).collect();
                let mut reopened = 0;
                while !stop.load(Ordering::Relaxed) {
                    for slot in &mut held {
                        let alive = slot.as_mut().is_some_and(|s| s.write_all(b"a").is_ok());
                        if !alive {
                            *slot = open(0);
                            reopened += 1;
                        }
                    }
                    for _ in 0..20 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
                reopened
            })
        })
        .collect();
    // Let every slow connection open before measuring.
    std::thread::sleep(Duration::from_secs(2));
    let mut latencies = Vec::new();
    let mut failures = Vec::new();
    let until = Instant::now() + span;
    while Instant::now() < until {
        let asked = Instant::now();
        match health(addr) {
            Ok((200, _)) => latencies.push(asked.elapsed()),
            Ok((status, body)) => failures.push(format!("answered {status}: {body}")),
            Err(e) => failures.push(format!("no answer within 1 s: {e}")),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    stop.store(true, Ordering::Relaxed);
    let reopened = workers.into_iter().map(|w| w.join().unwrap()).sum();
    latencies.sort();
    SlowlorisReport {
        probes: latencies.len() + failures.len(),
        worst: latencies.last().copied().unwrap_or_default(),
        median: latencies
            .get(latencies.len() / 2)
            .copied()
            .unwrap_or_default(),
        failures,
        reopened,
    }
}

// ---------------------------------------------------------------------------------------------
// Models: a real one edited into a lie, published as a version the way `train` would.

/// The served model's version (the folder `current` names).
fn current_version(model_dir: &Path) -> String {
    std::fs::read_link(model_dir.join("current"))
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// Writes `model_json` as a version of its own (named by its fingerprint, with matching
/// metrics, so that only its content can be refused) and points `current` at it atomically.
fn publish_version(model_dir: &Path, model_json: &[u8]) -> String {
    let version = model_version(model_json);
    let served = model_dir.join("current");
    let mut metrics: Value =
        serde_json::from_slice(&std::fs::read(served.join("metrics.json")).unwrap()).unwrap();
    metrics["model_version"] = version.clone().into();
    let dir = model_dir.join("versions").join(&version);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.json"), model_json).unwrap();
    std::fs::write(dir.join("metrics.json"), metrics.to_string()).unwrap();
    point_current_at(model_dir, &version);
    version
}

fn point_current_at(model_dir: &Path, version: &str) {
    let link = model_dir.join(".fault-link");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(Path::new("versions").join(version), &link).unwrap();
    std::fs::rename(&link, model_dir.join("current")).unwrap();
}

/// The served model with the first split node of its first tree made its own child: a cycle
/// a tree walk would spin in forever.
fn cyclic_model(model_dir: &Path) -> (Vec<u8>, String) {
    let mut artifact: Value =
        serde_json::from_slice(&std::fs::read(model_dir.join("current/model.json")).unwrap())
            .unwrap();
    let nodes = find_nodes(&mut artifact["model"]).expect("a trained model has tree nodes");
    let (index, node) = nodes
        .iter_mut()
        .enumerate()
        .find(|(_, n)| n["is_leaf"] == false)
        .expect("a tree with a split");
    node["left_child"] = json!(index);
    (
        serde_json::to_vec(&artifact).unwrap(),
        format!("node {index} points to itself"),
    )
}

/// The first `nodes` array of the first tree, wherever the service keeps its booster.
fn find_nodes(value: &mut Value) -> Option<&mut Vec<Value>> {
    if value.get("trees").is_some_and(Value::is_array) {
        return value["trees"][0]["nodes"].as_array_mut();
    }
    match value {
        Value::Object(map) => map.values_mut().find_map(find_nodes),
        _ => None,
    }
}

/// The first half of the served model: what a copy cut short leaves.
fn truncated_model(model_dir: &Path) -> Vec<u8> {
    let bytes = std::fs::read(model_dir.join("current/model.json")).unwrap();
    bytes[..bytes.len() / 2].to_vec()
}

// ---------------------------------------------------------------------------------------------
// The campaign: cases run one after another, each recorded in the summary table.

struct Row {
    case: String,
    runtime: &'static str,
    observed: String,
    result: String,
}

struct Campaign {
    runtime: &'static str,
    rows: Vec<Row>,
}

impl Campaign {
    fn new(runtime: &'static str) -> Self {
        Self {
            runtime,
            rows: Vec::new(),
        }
    }

    /// Runs one case; its panic fails the case, not the campaign. Whether it passed.
    fn case(&mut self, name: &str, body: impl FnOnce() -> String) -> bool {
        eprintln!("\n=== case: {name} ({})", self.runtime);
        let started = Instant::now();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(body));
        let took = started.elapsed();
        let (observed, result) = match outcome {
            Ok(observed) => (observed, "PASSED".to_owned()),
            Err(panic) => {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                (
                    String::new(),
                    format!("FAILED: {}", why.lines().next().unwrap_or("")),
                )
            }
        };
        eprintln!(
            "=== {name} ({}): {result} in {took:.1?}; {observed}",
            self.runtime
        );
        let passed = result == "PASSED";
        self.rows.push(Row {
            case: name.to_owned(),
            runtime: self.runtime,
            observed,
            result,
        });
        passed
    }

    fn skip(&mut self, name: &str, why: &str) {
        eprintln!("SKIPPED: {name} ({}): {why}", self.runtime);
        self.rows.push(Row {
            case: name.to_owned(),
            runtime: self.runtime,
            observed: String::new(),
            result: format!("SKIPPED: {why}"),
        });
    }

    /// Prints the summary table, then fails if any case did.
    fn finish(self) {
        let header = ["CASE", "RUNTIME", "OBSERVED", "RESULT"];
        let cells: Vec<[String; 4]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    r.case.clone(),
                    r.runtime.to_owned(),
                    r.observed.clone(),
                    r.result.clone(),
                ]
            })
            .collect();
        let widths: Vec<usize> = (0..4)
            .map(|i| {
                cells
                    .iter()
                    .map(|c| c[i].chars().count())
                    .chain([header[i].len()])
                    .max()
                    .unwrap()
            })
            .collect();
        let line = |cols: [&str; 4]| {
            let padded: Vec<String> = cols
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            padded.join("  ").trim_end().to_owned()
        };
        let mut table = format!(
            "\nFault campaign summary ({})\n{}\n",
            self.runtime,
            line(header)
        );
        for c in &cells {
            table.push_str(&line([&c[0], &c[1], &c[2], &c[3]]));
            table.push('\n');
        }
        eprintln!("{table}");
        let failed: Vec<&str> = self
            .rows
            .iter()
            .filter(|r| r.result.starts_with("FAILED"))
            .map(|r| r.case.as_str())
            .collect();
        assert!(failed.is_empty(), "failed cases: {}", failed.join(", "));
    }
}

// ---------------------------------------------------------------------------------------------
// The cases, each for either runtime.

/// A stranger listens on a stack port: `demo` fails before building, training or starting
/// anything, and names the stranger.
fn stranger_on_a_port(target: &Target) -> String {
    let port = target.port("telecom");
    let stranger = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let started = Instant::now();
    let demo = target.xtask(&["demo"]);
    let took = started.elapsed();
    drop(stranger);
    let err = stderr(&demo);
    assert!(
        !demo.status.success(),
        "demo ran despite a stranger on port {port}"
    );
    let me = format!("(pid {})", std::process::id());
    assert!(
        err.contains(&format!("port {port} is held by")) && err.contains(&me),
        "the holder is not named:\n{err}"
    );
    // Its command line first (shortened past 100 characters), then its pid.
    let exe = std::env::current_exe().unwrap();
    let command: String = exe.to_string_lossy().chars().take(60).collect();
    assert!(
        err.contains(&format!("is held by {command}")),
        "the holder's command is not named:\n{err}"
    );
    assert!(err.contains("Nothing was started"), "{err}");
    assert!(
        !target.stack.path().join("models").exists(),
        "models were trained before the port check"
    );
    assert_eq!(
        target.leftovers(),
        Vec::<String>::new(),
        "something was started"
    );
    eprintln!(
        "MEASURED: [{}] demo refused a stranger on port {port} after {took:.2?}",
        target.name()
    );
    format!("refused in {:.2}s, holder named", took.as_secs_f64())
}

/// SIGINT while `demo` waits for the stack to become healthy: exit 130, nothing left.
fn ctrl_c_during_demo(target: &Target) -> String {
    let demo = target.spawn_xtask(&["demo"]);
    let deadline = Instant::now() + Duration::from_secs(600);
    // MLflow starts first and takes seconds to build its store and answer: demo waits for it.
    let mlflow_started = || match target.runtime {
        Runtime::Docker => stack_containers().contains(&service("mlflow").container),
        Runtime::Local => !target.stack.pid_files().is_empty(),
    };
    while !mlflow_started() {
        assert!(Instant::now() < deadline, "demo never started MLflow");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pids: Vec<i32> = match target.runtime {
        Runtime::Local => target.stack.pids(),
        Runtime::Docker => Vec::new(),
    };
    let interrupted = Instant::now();
    common::interrupt(&demo);
    let output = demo.wait_with_output().unwrap();
    let took = interrupted.elapsed();
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(130), "{err}");
    assert!(
        err.contains("interrupted; stopped what this run had started"),
        "{err}"
    );
    assert_eq!(
        target.leftovers(),
        Vec::<String>::new(),
        "left behind after Ctrl-C"
    );
    // MLflow may have been stopped while it built its store: a half-made one must not stay.
    let store = target.stack.path().join("mlruns/mlflow.db");
    assert!(
        !store.exists(),
        "the MLflow store this demo began is left half made"
    );
    for pid in pids {
        assert!(!common::pid_alive(pid), "pid {pid} survived Ctrl-C");
    }
    eprintln!(
        "MEASURED: [{}] Ctrl-C during demo: stopped everything in {took:.2?}",
        target.name()
    );
    let network = if target.runtime == Runtime::Docker {
        let left = docker_stdout(&[
            "network",
            "ls",
            "--quiet",
            "--filter",
            "name=^ml-mlops-network$",
        ]);
        assert!(left.is_empty(), "the stack's network is left after Ctrl-C");
        ", no network"
    } else {
        ""
    };
    format!(
        "exit 130, cleaned up in {:.2}s, 0 left{network}",
        took.as_secs_f64()
    )
}

fn demo(target: &Target) -> String {
    let started = Instant::now();
    let demo = target.xtask(&["demo"]);
    assert!(demo.status.success(), "demo failed:\n{}", stderr(&demo));
    for api in APIS {
        assert!(is_healthy(target.addr(api)), "{api} is not healthy");
    }
    assert!(
        health(target.addr("mlflow")).is_ok_and(|(s, _)| s == 200),
        "MLflow does not answer"
    );
    format!("all healthy in {:.1}s", started.elapsed().as_secs_f64())
}

fn slowloris_case(target: &Target, api: &str) -> String {
    let report = slowloris(
        target.addr(api),
        SLOWLORIS_CONNECTIONS,
        Duration::from_secs(12),
    );
    eprintln!(
        "MEASURED: [{}] /health of {api} under {SLOWLORIS_CONNECTIONS} slowloris connections: {} probes, median {:.1} ms, worst {:.1} ms; the server closed {} slow connections (reopened)",
        target.name(),
        report.probes,
        report.median.as_secs_f64() * 1e3,
        report.worst.as_secs_f64() * 1e3,
        report.reopened
    );
    assert!(
        report.failures.is_empty(),
        "/health failed under the slowloris: {:?}",
        report.failures
    );
    assert!(
        report.worst < Duration::from_secs(1),
        "/health took {:?}",
        report.worst
    );
    assert!(
        predict_ok(target.addr(api), api),
        "{api} does not predict after the slowloris"
    );
    format!(
        "{} conns; health worst {:.1} ms, median {:.1} ms over {} probes; {} cut by the server",
        SLOWLORIS_CONNECTIONS,
        report.worst.as_secs_f64() * 1e3,
        report.median.as_secs_f64() * 1e3,
        report.probes,
        report.reopened
    )
}

/// `kill -9` of an API's process under load. Docker's restart policy brings it back on its
/// own; locally `up` does.
fn kill_under_load(target: &Target, api: &str) -> String {
    let addr = target.addr(api);
    assert!(is_healthy(addr), "{api} is not healthy before the kill");
    let load = Load::start(addr, api, LOAD_CLIENTS);
    std::thread::sleep(Duration::from_secs(1));
    let pid = target.pid(api);
    let restarts_before = docker_restarts(target, api);
    // Signalled from here, not through a `kill` process: the instant is the kill's own.
    let killed = Instant::now();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap_or_else(|e| panic!("kill -9 {pid}: {e}"));
    // Locally nothing restarts it: `up` does, as an operator would.
    let up = (target.runtime == Runtime::Local).then(|| {
        std::thread::sleep(Duration::from_millis(100));
        target.spawn_xtask(&["up"])
    });
    let deadline = killed + Duration::from_secs(120);
    while !is_healthy(addr) {
        assert!(
            Instant::now() < deadline,
            "{api} did not come back after kill -9"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let healthy = Instant::now();
    let recovery = healthy - killed;
    std::thread::sleep(Duration::from_secs(1));
    let events = load.finish();
    if let Some(up) = up {
        let output = up.wait_with_output().unwrap();
        assert!(output.status.success(), "up failed:\n{}", stderr(&output));
    }
    let t = tally(&events, killed, healthy);
    let refused = t.refused_while_down + t.dropped_while_down;
    eprintln!(
        "MEASURED: [{}] kill -9 {api} under load ({LOAD_CLIENTS} clients): healthy again after {:.2} s; {} in flight failed, {} refused while down ({} refused, {} dropped by a dead backend); {} answered before, {} after",
        target.name(),
        recovery.as_secs_f64(),
        t.in_flight,
        refused,
        t.refused_while_down,
        t.dropped_while_down,
        t.answered_before,
        t.answered_after
    );
    assert!(
        t.answered_before > 0 && t.answered_after > 0,
        "the load did not run: {t:?}"
    );
    assert!(
        t.in_flight <= LOAD_CLIENTS,
        "{} requests in flight failed with {LOAD_CLIENTS} clients",
        t.in_flight
    );
    assert!(
        t.failed_while_up.is_empty(),
        "requests failed while {api} was up: {:?}",
        t.failed_while_up
    );
    assert_ne!(target.pid(api), pid, "the same process answers");
    let how = match target.runtime {
        Runtime::Docker => {
            assert!(
                docker_restarts(target, api) > restarts_before,
                "docker did not restart {api}"
            );
            assert!(
                recovery <= RECOVERY_BOUND,
                "{api} took {recovery:?} to be healthy again"
            );
            "restart policy"
        }
        Runtime::Local => "`up`",
    };
    format!(
        "back in {:.2}s ({how}); in-flight failed {}, refused {}",
        recovery.as_secs_f64(),
        t.in_flight,
        refused
    )
}

fn docker_restarts(target: &Target, api: &str) -> u64 {
    match target.runtime {
        Runtime::Docker => docker_stdout(&[
            "inspect",
            "--format",
            "{{.RestartCount}}",
            &service(api).container,
        ])
        .parse()
        .unwrap_or(0),
        Runtime::Local => 0,
    }
}

/// Puts the good model back as `current`, removes the bad versions and signals the service,
/// whatever the case did: the next case finds the stack serving.
struct Restore<'a> {
    target: &'a Target,
    api: &'a str,
    good: String,
    bad: Vec<String>,
}

impl<'a> Restore<'a> {
    fn new(target: &'a Target, api: &'a str) -> Self {
        let good = current_version(&target.model_dir(api));
        Self {
            target,
            api,
            good,
            bad: Vec::new(),
        }
    }
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        let model_dir = self.target.model_dir(self.api);
        point_current_at(&model_dir, &self.good);
        for bad in &self.bad {
            let _ = std::fs::remove_dir_all(model_dir.join("versions").join(bad));
        }
        self.target.hangup(self.api);
    }
}

/// A corrupt and a cyclic model published and signalled: refused with the reason, the old model
/// kept; the good one back and signalled again: served.
fn bad_models_on_reload(target: &Target, api: &str) -> String {
    let addr = target.addr(api);
    let model_dir = target.model_dir(api);
    let mut restore = Restore::new(target, api);
    let good = restore.good.clone();
    let before = wait_health(addr, "a healthy answer", Duration::from_secs(10), |s, _| {
        s == 200
    });
    assert_eq!(before["model_version"], good.as_str());
    let (cyclic, cycle) = cyclic_model(&model_dir);
    let lies = [
        (
            "corrupt (truncated) model",
            truncated_model(&model_dir),
            "not a valid",
        ),
        ("cyclic tree", cyclic, "reached twice"),
    ];
    let mut seen = Vec::new();
    for (what, bytes, reason) in lies {
        let bad = publish_version(&model_dir, &bytes);
        restore.bad.push(bad.clone());
        target.hangup(api);
        let refused = wait_health(addr, "a refusal", Duration::from_secs(10), |_, h| {
            h["last_reload"]["status"] == "refused"
                && h["last_reload"]["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains(&bad))
        });
        let why = refused["last_reload"]["reason"]
            .as_str()
            .unwrap()
            .to_owned();
        eprintln!("{api}: the {what} ({bad}) was refused: {why}");
        assert!(
            why.contains(reason),
            "refused, but not for the {what}: {why}"
        );
        assert_eq!(
            refused["model_version"],
            good.as_str(),
            "the old model is not served"
        );
        assert_eq!(refused["status"], "healthy");
        assert!(
            predict_ok(addr, api),
            "{api} stopped predicting after refusing the {what}"
        );
        seen.push(format!("{what} refused"));
        point_current_at(&model_dir, &good);
    }
    eprintln!("({cycle})");
    // The good model back, signalled: the same version again.
    drop(restore);
    let back = wait_health(
        addr,
        "the good model again",
        Duration::from_secs(10),
        |s, h| s == 200 && h["last_reload"]["status"] == "unchanged",
    );
    assert_eq!(back["model_version"], good.as_str());
    format!("{}; old model {good} kept", seen.join(", "))
}

/// A service started on a corrupt model only: up, answering 503 with the reason, not
/// crashing; the good model back and SIGHUP: healthy.
fn start_on_a_corrupt_model(target: &Target, api: &str) -> String {
    match target.runtime {
        Runtime::Docker => {
            let mut restore = Restore::new(target, api);
            let bad = publish_version(
                &target.model_dir(api),
                &truncated_model(&target.model_dir(api)),
            );
            restore.bad.push(bad.clone());
            let container = service(api).container;
            docker_stdout(&["restart", "--time", "10", &container]);
            let addr = target.addr(api);
            let answer = wait_health(addr, "a 503", Duration::from_secs(30), |s, _| s == 503);
            assert_eq!(answer["last_reload"]["status"], "refused", "{answer}");
            // Still the same container run a few health checks later: not crash-looping.
            let state = || {
                docker_stdout(&[
                    "inspect",
                    "--format",
                    "{{.State.Status}} restarts={{.RestartCount}} since={{.State.StartedAt}}",
                    &container,
                ])
            };
            let first = state();
            std::thread::sleep(Duration::from_secs(5));
            assert_eq!(state(), first, "the container did not stay up");
            assert!(first.starts_with("running "), "{first}");
            let (status, body) = health(addr).unwrap();
            assert_eq!(status, 503, "{body}");
            // The good model back and SIGHUP: served without a restart.
            drop(restore);
            wait_health(addr, "healthy again", Duration::from_secs(10), |s, _| {
                s == 200
            });
            format!("503, stayed up 5 s; corrupt {bad} refused; healthy after SIGHUP")
        }
        Runtime::Local => {
            // The service binary itself, on a model directory holding only a corrupt model.
            let dir = tempfile::tempdir().unwrap();
            let model_dir = dir.path().join("model");
            let good_dir = target.model_dir(api);
            let good = current_version(&good_dir);
            std::fs::create_dir_all(model_dir.join("versions")).unwrap();
            copy_dir(
                &good_dir.join("versions").join(&good),
                &model_dir.join("versions").join(&good),
            );
            point_current_at(&model_dir, &good);
            let bad = publish_version(&model_dir, &truncated_model(&model_dir));
            let port = free_port();
            let mut server = KillOnDrop(
                Command::new(service_binary(api))
                    .args([
                        "serve",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        &port.to_string(),
                        "--model-dir",
                    ])
                    .arg(&model_dir)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            );
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let answer = wait_health(addr, "a 503", Duration::from_secs(10), |s, _| s == 503);
            assert_eq!(answer["last_reload"]["status"], "refused", "{answer}");
            std::thread::sleep(Duration::from_secs(2));
            assert!(
                server.0.try_wait().unwrap().is_none(),
                "the service exited on a corrupt model"
            );
            let (path, body) = service(api).smoke.unwrap();
            let (status, error) =
                call(addr, "POST", &path, Some(&body), Duration::from_secs(2)).unwrap();
            assert_eq!(
                (status, error["error"].as_str()),
                (503, Some("model_not_loaded"))
            );
            point_current_at(&model_dir, &good);
            signal(server.0.id() as i32, "HUP");
            let healthy = wait_health(addr, "healthy", Duration::from_secs(10), |s, _| s == 200);
            assert_eq!(healthy["model_version"], good.as_str());
            format!(
                "503 model_not_loaded, still running; corrupt {bad} refused; healthy after SIGHUP"
            )
        }
    }
}

/// A child process killed when dropped, whatever the case's assertions did: the campaign
/// goes on after a failed case.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// MLflow stopped under running APIs: they keep answering; `status` says MLflow is stopped and
/// `doctor` fails naming it; `up` brings it back.
fn mlflow_stopped(target: &Target) -> String {
    let doctor = target.xtask(&["doctor"]);
    assert!(
        doctor.status.success(),
        "doctor fails with the whole stack up:\n{}",
        stdout(&doctor)
    );
    match target.runtime {
        Runtime::Docker => {
            docker_stdout(&["stop", "--time", "15", &service("mlflow").container]);
        }
        Runtime::Local => {
            let pid = target.pid("mlflow");
            signal(-pid, "TERM");
            let deadline = Instant::now() + Duration::from_secs(20);
            while common::pid_alive(pid) {
                assert!(Instant::now() < deadline, "MLflow ignored SIGTERM");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    let mlflow = target.addr("mlflow");
    assert!(health(mlflow).is_err(), "MLflow still answers");
    let mut predictions = 0;
    for _ in 0..5 {
        for api in APIS {
            assert!(
                predict_ok(target.addr(api), api),
                "{api} stopped predicting without MLflow"
            );
            assert!(
                is_healthy(target.addr(api)),
                "{api} is unhealthy without MLflow"
            );
            predictions += 1;
        }
    }
    let status = target.xtask(&["status", "--json"]);
    assert!(status.status.success());
    let rows: Value = serde_json::from_slice(&status.stdout).unwrap();
    let row = |name: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["service"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(row("mlflow")["state"], "stopped", "{rows}");
    for api in APIS {
        assert_eq!(row(api)["health"], "healthy", "{rows}");
    }
    let doctor = target.xtask(&["doctor"]);
    let report = stdout(&doctor);
    assert!(
        !doctor.status.success(),
        "doctor passed with MLflow down:\n{report}"
    );
    let named = report
        .lines()
        .find(|l| l.starts_with("✗ mlflow"))
        .unwrap_or_else(|| panic!("doctor does not name MLflow:\n{report}"))
        .to_owned();
    let failed_checks = report.lines().filter(|l| l.starts_with('✗')).count();
    assert_eq!(
        failed_checks, 1,
        "doctor fails for more than MLflow:\n{report}"
    );
    let started = Instant::now();
    let up = target.xtask(&["up"]);
    assert!(
        up.status.success(),
        "up did not bring MLflow back:\n{}",
        stderr(&up)
    );
    let back = started.elapsed();
    assert!(
        health(mlflow).is_ok_and(|(s, _)| s == 200),
        "MLflow is not back"
    );
    eprintln!("MEASURED: [{}] MLflow down: {predictions} predictions answered 200; `up` brought it back in {back:.2?}", target.name());
    format!(
        "{predictions}/{predictions} predictions ok; status: stopped; doctor: `{}`; back in {:.1}s",
        named
            .trim_start_matches("✗ ")
            .split_whitespace()
            .take(6)
            .collect::<Vec<_>>()
            .join(" "),
        back.as_secs_f64()
    )
}

/// Unmounts the test's tmpfs, whatever happened.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("--lazy").arg(&self.0).status();
    }
}

/// Training onto a full disk: a 2 MiB tmpfs as the model directory, one good model, the disk
/// filled, training again. A clear error; the old version and `current` byte for byte as they
/// were; no staging files left.
fn full_disk_while_training() -> String {
    let binary = service_binary("telecom");
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("users_behavior.csv");
    let run = |args: &[&str], extra: &[&Path]| {
        Command::new(&binary)
            .args(args)
            .args(extra)
            .output()
            .unwrap()
    };
    assert!(run(&["generate-data", "--seed", "42", "--out"], &[&data])
        .status
        .success());
    let model_dir = work.path().join("models");
    std::fs::create_dir_all(&model_dir).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&model_dir)
        .status()
        .unwrap();
    assert!(mounted.success(), "cannot mount a tmpfs");
    let _mount = Mount(model_dir.clone());
    let train = |seed: &str| {
        Command::new(&binary)
            .args(["train", "--seed", seed, "--data-path"])
            .arg(&data)
            .arg("--model-dir")
            .arg(&model_dir)
            .arg("--no-mlflow")
            .output()
            .unwrap()
    };
    let first = train("42");
    assert!(
        first.status.success(),
        "the first training failed:\n{}",
        stderr(&first)
    );
    let before = snapshot(&model_dir);
    let served = current_version(&model_dir);
    // Fill what is left, then train a different model (another seed).
    let filler = model_dir.join("filler");
    {
        let mut file = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 << 10];
        while file.write_all(&block).is_ok() {}
        let _ = file.write_all(&[0u8; 512]);
        let _ = file.sync_all();
    }
    let free = fs_free(&model_dir);
    let second = train("7");
    let err = stderr(&second);
    assert!(
        !second.status.success(),
        "training onto a full disk succeeded"
    );
    let line = err
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_default()
        .to_owned();
    eprintln!("the refused training said: {line}");
    assert!(
        line.contains(&format!("the disk holding {} is full", model_dir.display()))
            && line.contains("No space left on device"),
        "the error does not name the full disk:\n{err}"
    );
    std::fs::remove_file(&filler).unwrap();
    let after = snapshot(&model_dir);
    let leftovers: Vec<&PathBuf> = after
        .keys()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    assert!(leftovers.is_empty(), "staging leftovers: {leftovers:?}");
    assert_eq!(after, before, "the model directory changed");
    assert_eq!(current_version(&model_dir), served);
    eprintln!("MEASURED: [host] full disk while training: refused with {free} bytes free; {} files byte-identical", after.len());
    format!(
        "refused ({free} B free), {} files identical, no leftovers",
        after.len()
    )
}

fn fs_free(path: &Path) -> u64 {
    let stat = rustix::fs::statvfs(path).unwrap();
    stat.f_bavail * stat.f_frsize
}

// ---------------------------------------------------------------------------------------------
// The two campaigns.

#[test]
#[ignore = "end-to-end: runs the docker stack on its fixed ports and breaks it; run by the ci pipeline"]
fn fault_campaign_on_docker() {
    let mut campaign = Campaign::new("docker");
    if !common::docker_answers() {
        campaign.skip("every docker case", "no Docker engine answers");
        return campaign.finish();
    }
    let target = Target::new(Runtime::Docker);
    assert_eq!(
        stack_containers(),
        Vec::<String>::new(),
        "a docker stack is already running: stop it first (`cargo xtask --runtime docker down`)"
    );
    let _teardown = Teardown(&target);
    campaign.case("stranger holds a port before demo", || {
        stranger_on_a_port(&target)
    });
    campaign.case("Ctrl-C during demo", || ctrl_c_during_demo(&target));
    if campaign.case("demo", || demo(&target)) {
        run_stack_cases(&mut campaign, &target);
    }
    campaign.finish();
}

#[test]
#[ignore = "end-to-end: runs the local stack and breaks it; run by the ci pipeline"]
fn fault_campaign_on_the_local_runtime() {
    let mut campaign = Campaign::new("local");
    let target = Target::new(Runtime::Local);
    let _teardown = Teardown(&target);
    campaign.case("stranger holds a port before demo", || {
        stranger_on_a_port(&target)
    });
    campaign.case("Ctrl-C during demo", || ctrl_c_during_demo(&target));
    if campaign.case("demo", || demo(&target)) {
        run_stack_cases(&mut campaign, &target);
    }
    if rustix::process::geteuid().is_root() {
        campaign.case("full disk while training", full_disk_while_training);
    } else {
        campaign.skip("full disk while training", "mounting a tmpfs needs root");
    }
    campaign.finish();
}

/// The cases that need the stack up, in an order that leaves it up for the next.
fn run_stack_cases(campaign: &mut Campaign, target: &Target) {
    campaign.case("slowloris against bankchurn", || {
        slowloris_case(target, "bankchurn")
    });
    for api in APIS {
        campaign.case(&format!("kill -9 {api} under load"), || {
            kill_under_load(target, api)
        });
    }
    campaign.case("corrupt and cyclic model, SIGHUP", || {
        bad_models_on_reload(target, "telecom")
    });
    campaign.case("start on a corrupt model only", || {
        start_on_a_corrupt_model(target, "telecom")
    });
    campaign.case("MLflow stopped under the APIs", || mlflow_stopped(target));
}

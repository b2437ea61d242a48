//! The real service binary: `serve` on a socket (health, reload on SIGHUP, a slowloris, a
//! graceful SIGTERM, the dashboard's port), `healthcheck`, and `train` refusing bad data.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use serving::artifact::{self, Artifact};
use serving::dashboard::Dashboard;
use serving::Service;

use crate::net::{free_port, unread_by_server};
use crate::wait::wait_until;

/// Time a server gets to come up, answer or go away before a test gives up on it.
const PATIENCE: Duration = Duration::from_secs(30);

/// `BINARY serve --host 127.0.0.1 --port PORT --model-dir MODEL_DIR`, its output discarded;
/// add arguments before spawning it.
pub fn serve_command(binary: &Path, port: u16, model_dir: &Path) -> Command {
    let mut command = Command::new(binary);
    command
        .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
        .arg("--model-dir")
        .arg(model_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// `GET url`: the status and body, or `None` without an answer.
pub fn get(url: &str) -> Option<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut answer = agent.get(url).call().ok()?;
    let status = answer.status().as_u16();
    let body = answer
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .ok()?;
    Some((status, body))
}

/// Waits until `child` has exited, and how.
pub fn wait_for_exit(child: &mut Child, what: &str) -> std::process::ExitStatus {
    wait_until(what, PATIENCE, || {
        child.try_wait().expect("the child's status")
    })
}

/// The real binary: `serve` on a socket, `healthcheck` against it, then SIGTERM stops it cleanly.
pub fn serve_and_healthcheck(binary: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.csv");
    let model_dir = dir.path().join("model");
    generate_data(binary, &data);

    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/health");
    let serve = || spawn_serve(binary, port, &model_dir, &[]);
    let mut server = serve();
    // No --url: the default follows PORT, as the container's HEALTHCHECK relies on.
    let healthcheck = || {
        Command::new(binary)
            .args(["healthcheck", "--timeout", "2"])
            .env("PORT", port.to_string())
            .output()
            .expect("run the service binary")
    };
    // No model yet: the server answers, but is not healthy.
    wait_until("serve answering", PATIENCE, || get(&url));
    assert!(!healthcheck().status.success(), "healthy without a model");
    let _ = server.kill();
    let _ = server.wait();

    let trained = train_with(binary, &data, &model_dir, 42);
    assert!(trained.status.success(), "{trained:?}");
    let mut server = serve();
    let check = wait_until("healthcheck succeeding", PATIENCE, || {
        Some(healthcheck()).filter(|c| c.status.success())
    });
    let body: Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(body["status"], "healthy");
    // SIGTERM (what `docker stop` sends) ends it promptly and cleanly.
    let term = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = server.wait().unwrap();
    assert!(status.success(), "exit after SIGTERM: {status:?}");

    // SIGTERM as soon as the port accepts, while the model is still loading: the handler is
    // in place before the port is bound, so this is a clean stop too, not death by signal.
    let mut server = serve();
    wait_until_accepting(port);
    signal(&server, "TERM");
    let status = wait_for_exit(&mut server, "the server exiting after an early SIGTERM");
    assert!(status.success(), "exit after a SIGTERM at bind: {status:?}");

    // SIGHUP at the same moment asks for a reload, and must not end the server either.
    let mut server = serve();
    wait_until_accepting(port);
    signal(&server, "HUP");
    wait_until("serve answering after an early SIGHUP", PATIENCE, || {
        if let Some(status) = server.try_wait().expect("the child's status") {
            panic!("the server ended on a SIGHUP at bind: {status:?}");
        }
        get(&url)
    });
    signal(&server, "TERM");
    let status = wait_for_exit(&mut server, "the server exiting after SIGTERM");
    assert!(status.success(), "exit after SIGTERM: {status:?}");
}

/// `serve --shared-port`, as a swarm's tasks on their node's host network run: without a
/// model a copy exits and never listens; with one, two copies share the port, name
/// themselves in each answer, and one stopping leaves the other answering.
pub fn shared_port_copies(binary: &Path) {
    if !Path::new("/proc/net/tcp").is_file() {
        // Counting the listeners on the port reads the kernel's socket table there.
        return crate::skip("counts a port's listeners in /proc/net/tcp (Linux)");
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.csv");
    let model_dir = dir.path().join("model");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/health");

    let without = serve_command(binary, port, &model_dir)
        .arg("--shared-port")
        .stderr(Stdio::piped())
        .output()
        .expect("run the service binary");
    assert!(!without.status.success(), "served without a model");
    let why = String::from_utf8_lossy(&without.stderr);
    assert!(why.contains("no model loaded"), "{why}");
    assert!(get(&url).is_none(), "something answers on the port");

    generate_data(binary, &data);
    let trained = train_with(binary, &data, &model_dir, 42);
    assert!(trained.status.success(), "{trained:?}");

    let named = || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        let answer = agent.get(&url).call().ok()?;
        let instance = answer.headers().get("x-serving-instance")?;
        Some(instance.to_str().ok()?.to_owned())
    };
    let mut first = spawn_serve(binary, port, &model_dir, &["--shared-port"]);
    wait_until("the first copy answering", PATIENCE, named);
    // The second binds the same port beside the first, as a new task beside the old one.
    let mut second = spawn_serve(binary, port, &model_dir, &["--shared-port"]);
    wait_until("both copies listening", PATIENCE, || {
        if let Some(status) = second.try_wait().unwrap() {
            panic!("the second copy could not share the port: {status:?}");
        }
        (listeners_on(port) == 2).then_some(())
    });
    let healthcheck = Command::new(binary)
        .args(["healthcheck", "--timeout", "2", "--url", &url])
        .output()
        .expect("run the service binary");
    assert!(healthcheck.status.success(), "{healthcheck:?}");
    signal(&first, "TERM");
    let status = wait_for_exit(&mut first, "the first copy stopping");
    assert!(status.success(), "{status:?}");
    for _ in 0..20 {
        assert!(named().is_some(), "the second copy stopped answering");
    }
    signal(&second, "TERM");
    let status = wait_for_exit(&mut second, "the second copy stopping");
    assert!(status.success(), "{status:?}");
}

/// The sockets listening on `port` of 127.0.0.1, as /proc/net/tcp lists them (LISTEN is
/// state 0A).
fn listeners_on(port: u16) -> usize {
    let local = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"0A")
        })
        .count()
}

/// Returns as soon as a TCP connection to `port` on loopback is accepted by the kernel: the
/// moment the server has bound it, before it has answered anything. (Retrying at once, not at
/// [`wait_until`]'s interval, since a refused connection costs nothing and the moment matters.)
pub fn wait_until_accepting(port: u16) {
    let deadline = Instant::now() + PATIENCE;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "port {port} never accepted within {PATIENCE:?}"
        );
        std::thread::yield_now();
    }
}

/// Every file under `dir` with its contents (symlinks as their targets), sorted.
pub fn snapshot(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)
            .expect("a readable directory")
            .flatten()
        {
            let kind = e.file_type().expect("a file type");
            if kind.is_symlink() {
                let target = std::fs::read_link(e.path()).expect("a link");
                out.push((e.path(), target.into_os_string().into_encoded_bytes()));
            } else if kind.is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path(), std::fs::read(e.path()).expect("a readable file")));
            }
        }
    }
    out.sort();
    out
}

/// 800 synthetic rows of the service's data at `out`.
fn generate_data(binary: &Path, out: &Path) {
    let generated = Command::new(binary)
        .args(["generate-data", "--rows", "800", "--out"])
        .arg(out)
        .output()
        .expect("run the service binary");
    assert!(generated.status.success(), "{generated:?}");
}

fn train_with(binary: &Path, data: &Path, model_dir: &Path, seed: u64) -> Output {
    Command::new(binary)
        .args(["train", "--data-path"])
        .arg(data)
        .arg("--model-dir")
        .arg(model_dir)
        .args(["--seed", &seed.to_string()])
        .output()
        .expect("run the service binary")
}

/// Training on data that cannot give a meaningful model fails with a clear error and leaves
/// the served model byte-identical. `more_bad` adds the service's own cases (name, CSV text,
/// a phrase the error must contain), e.g. a single class; 1, 2 and 10 rows, a column named
/// twice, a directory and a device are always tried, and rows with `refused`'s column set to
/// its value, one the API refuses: one in ten is too many, one in a thousand is left out.
pub fn degenerate_data_is_refused<S: Service>(
    binary: &Path,
    more_bad: &[(&str, String, &str)],
    refused: (&str, &str),
) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("good.csv");
    let mut file = std::fs::File::create(&data).unwrap();
    S::generate_data(1000, 5, &mut file).unwrap();
    let model_dir = dir.path().join("model");
    let trained = train_with(binary, &data, &model_dir, 5);
    assert!(trained.status.success(), "{trained:?}");
    let before = snapshot(&model_dir);

    let good = std::fs::read_to_string(&data).unwrap();
    let lines: Vec<&str> = good.lines().collect();
    let mut cases: Vec<(String, String, &str)> = [1, 2, 10]
        .iter()
        .map(|&n| {
            (
                format!("{n} rows"),
                lines[..=n].join("\n") + "\n",
                "at least",
            )
        })
        .collect();
    cases.extend(
        more_bad
            .iter()
            .map(|(n, t, p)| (n.to_string(), t.clone(), *p)),
    );
    let header: Vec<&str> = lines[0].trim_end_matches('\r').split(',').collect();
    let mut twice = header.clone();
    *twice.last_mut().unwrap() = header[0];
    let mut renamed = lines.clone();
    let twice = twice.join(",");
    renamed[0] = &twice;
    cases.push((
        "a column named twice".into(),
        renamed.join("\n") + "\n",
        "appears twice",
    ));
    let at = header
        .iter()
        .position(|c| *c == refused.0)
        .expect("the refused column in the header");
    let with_refused = |every: usize| {
        let mut text = String::new();
        for (i, line) in lines.iter().enumerate() {
            if i > 0 && i % every == 0 {
                let mut cells: Vec<&str> = line.split(',').collect();
                cells[at] = refused.1;
                text.push_str(&cells.join(","));
            } else {
                text.push_str(line);
            }
            text.push('\n');
        }
        text
    };
    cases.push((
        "one row in ten the API refuses".into(),
        with_refused(10),
        "100 of 1000 rows (10.00%) hold values the API refuses",
    ));
    let bad = dir.path().join("bad.csv");
    for (name, text, phrase) in cases {
        std::fs::write(&bad, text).unwrap();
        check_refused(binary, &bad, &model_dir, &before, &name, phrase);
    }
    let paths = [
        (
            "a directory",
            dir.path().to_owned(),
            "is a directory, not a data file",
        ),
        (
            "a device",
            "/dev/zero".into(),
            "/dev/zero is a character device, not a data file",
        ),
    ];
    for (name, path, phrase) in paths {
        check_refused(binary, &path, &model_dir, &before, name, phrase);
    }

    // One row in a thousand: left out, said, and the rest trained on.
    std::fs::write(&bad, with_refused(1000)).unwrap();
    let output = train_with(binary, &bad, &dir.path().join("other-model"), 5);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("1 of 1000 rows (0.10%) hold values the API refuses")
            && stderr.contains("left out"),
        "{stderr}"
    );
}

fn check_refused(
    binary: &Path,
    data: &Path,
    model_dir: &Path,
    before: &[(std::path::PathBuf, Vec<u8>)],
    name: &str,
    phrase: &str,
) {
    let output = train_with(binary, data, model_dir, 5);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{name}: trained on it: {stderr}");
    assert!(stderr.contains(phrase), "{name}: {stderr}");
    assert!(stderr.contains("untouched"), "{name}: {stderr}");
    assert!(
        snapshot(model_dir) == before,
        "{name}: the model directory changed"
    );
}

fn spawn_serve(binary: &Path, port: u16, model_dir: &Path, extra: &[&str]) -> Child {
    serve_command(binary, port, model_dir)
        .args(extra)
        .spawn()
        .expect("spawn serve")
}

fn health_of(port: u16) -> Option<(u16, Value)> {
    let (status, body) = get(&format!("http://127.0.0.1:{port}/health"))?;
    Some((status, serde_json::from_str(&body).ok()?))
}

/// Polls `/health` until `done` holds.
fn wait_for_health(port: u16, what: &str, done: impl Fn(u16, &Value) -> bool) -> Value {
    wait_until(what, PATIENCE, || {
        health_of(port)
            .filter(|(status, health)| done(*status, health))
            .map(|(_, health)| health)
    })
}

fn signal(child: &Child, name: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(sent.success());
}

/// Publishes the served model with `edit` applied to its booster as a new version, as a
/// corrupted or hostile model file would arrive.
fn publish_edited_model(model_dir: &Path, edit: impl Fn(&mut Value)) {
    let stored = artifact::read_current(model_dir).unwrap().unwrap();
    let mut artifact: Artifact<Value> = serde_json::from_slice(&stored.model_bytes).unwrap();
    edit(&mut artifact.model["booster"]["trees"][0]["nodes"]);
    artifact::save(model_dir, &artifact, &json!({"edited": true}), &[]).unwrap();
}

/// SIGHUP swaps in a newly trained model without a restart; a lying model (an index out of
/// range, a cycle) is refused and the old one keeps serving; `/health` tells the outcome.
/// A service that starts on a lying model stays unhealthy.
pub fn reload_on_sighup<S: Service>(binary: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.csv");
    let mut file = std::fs::File::create(&data).unwrap();
    S::generate_data(1000, 9, &mut file).unwrap();
    let model_dir = dir.path().join("model");
    assert!(train_with(binary, &data, &model_dir, 1).status.success());
    let port = free_port();
    let mut server = spawn_serve(binary, port, &model_dir, &[]);
    let first = wait_for_health(port, "healthy", |s, _| s == 200);
    assert_eq!(first["last_reload"]["status"], "loaded", "{first}");
    let v1 = first["model_version"].as_str().unwrap().to_owned();

    // Other rows in the same file, as when the public file is copied over the generated one:
    // no longer the generated rows.
    let mut file = std::fs::File::create(&data).unwrap();
    S::generate_data(1500, 5, &mut file).unwrap();
    drop(file);
    assert!(train_with(binary, &data, &model_dir, 2).status.success());
    signal(&server, "HUP");
    let second = wait_for_health(port, "the new model", |_, h| {
        h["model_version"] != v1.as_str()
    });
    assert_eq!(second["last_reload"]["status"], "loaded", "{second}");
    let v2 = second["model_version"].as_str().unwrap().to_owned();
    let metrics: Value = serde_json::from_slice(
        &std::fs::read(model_dir.join("current").join(artifact::METRICS_FILE)).unwrap(),
    )
    .unwrap();
    assert_eq!(
        metrics["model_version"],
        v2.as_str(),
        "the served version is its metrics'"
    );

    type Edit = dyn Fn(&mut Value);
    let lies: [(&str, &Edit); 2] = [
        ("out of range", &|nodes: &mut Value| {
            nodes[0]["left_child"] = json!(100_000)
        }),
        ("reached twice", &|nodes: &mut Value| {
            nodes[0]["right_child"] = json!(0)
        }),
    ];
    for (reason, edit) in lies {
        publish_edited_model(&model_dir, edit);
        signal(&server, "HUP");
        let refused = wait_for_health(port, "a refusal", |_, h| {
            h["last_reload"]["status"] == "refused"
                && h["last_reload"]["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains(reason))
        });
        assert_eq!(refused["model_version"], v2.as_str(), "{refused}");
        assert_eq!(refused["status"], "healthy");
        assert_eq!(health_of(port).map(|(status, _)| status), Some(200));
        // Put the good model back for the next lie.
        assert!(train_with(binary, &data, &model_dir, 2).status.success());
    }
    signal(&server, "TERM");
    assert!(server.wait().unwrap().success());

    // Starting on a lying model: up, but unhealthy, and saying why.
    publish_edited_model(&model_dir, |nodes| nodes[0]["left_child"] = json!(0));
    let mut server = spawn_serve(binary, port, &model_dir, &[]);
    let health = wait_for_health(port, "unhealthy", |s, _| s == 503);
    assert_eq!(health["model_loaded"], false);
    assert_eq!(health["last_reload"]["status"], "refused", "{health}");
    let _ = server.kill();
    let _ = server.wait();
}

/// Under a slowloris (many connections, each sending a header line now and then) `/health`
/// still answers; SIGTERM with a half-sent request pending still ends the process, within the
/// shutdown deadline rather than when the client gives up.
pub fn slowloris_and_sigterm<S: Service>(binary: &Path, connections: usize) {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Timeouts far beyond the test's span: only the shutdown deadline can end it in time.
    let mut server = spawn_serve(
        binary,
        port,
        &dir.path().join("model"),
        &[
            "--header-read-timeout",
            "300s",
            "--idle-timeout",
            "300s",
            "--shutdown-timeout",
            "1s",
        ],
    );
    wait_for_health(port, "an answer", |s, _| s == 503);
    let mut held = Vec::new();
    for _ in 0..connections {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n")
            .unwrap();
        held.push(c);
    }
    let asked = Instant::now();
    let (status, _) = health_of(port).expect("/health answers under a slowloris");
    eprintln!(
        "/health under {connections} slowloris connections: {:?}",
        asked.elapsed()
    );
    assert_eq!(status, 503, "no model, so 503, but an answer");
    let mut half = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    half.write_all(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"a\":")
        .unwrap();
    // In flight: the server has read the head and the start of the body.
    wait_until("the server reading the half-sent request", PATIENCE, || {
        (unread_by_server(port, &half)? == 0).then_some(())
    });
    signal(&server, "TERM");
    let status = wait_for_exit(&mut server, "the server exiting after SIGTERM");
    assert!(status.success(), "{status:?}");
    drop((held, half));
}

fn page(port: u16, path: &str) -> (u16, String) {
    get(&format!("http://127.0.0.1:{port}{path}")).expect("an answer")
}

/// `serve --dashboard-port`: the dashboard answers on its own port beside the API, shows the
/// served model, and after a new training and SIGHUP shows the new one; SIGTERM stops both.
/// The API must not answer on the dashboard's port, nor the dashboard on the API's.
pub fn dashboard_follows_the_model<S: Service>(binary: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.csv");
    let generated = Command::new(binary)
        .args(["generate-data", "--rows", "1500", "--seed", "4", "--out"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(generated.status.success(), "{generated:?}");
    let model_dir = dir.path().join("model");
    assert!(train_with(binary, &data, &model_dir, 1).status.success());
    let (port, dashboard) = (free_port(), free_port());
    let mut server = spawn_serve(
        binary,
        port,
        &model_dir,
        &["--dashboard-port", &dashboard.to_string()],
    );
    let first = wait_for_health(dashboard, "the dashboard healthy", |s, _| s == 200);
    assert_eq!(first["status"], "healthy", "{first}");
    let v1 = first["model_version"].as_str().unwrap().to_owned();
    let (status, overview) = page(dashboard, "/");
    assert_eq!(status, 200);
    assert!(
        overview.contains(&v1),
        "the overview names the served model"
    );
    assert!(
        overview.contains("synthetic rows made by <code>generate-data</code> (seed 4)"),
        "the page says its rows were generated: {overview}"
    );
    let (status, _) = page(port, "/health");
    assert_eq!(status, 200, "the API answers beside it");
    let (status, _) = page(dashboard, "/predict_batch");
    assert_eq!(
        status, 404,
        "the API's routes are not on the dashboard's port"
    );

    // Other rows in the same file, as when the public file is copied over the generated one:
    // no longer the generated rows.
    let mut file = std::fs::File::create(&data).unwrap();
    S::generate_data(1500, 5, &mut file).unwrap();
    drop(file);
    assert!(train_with(binary, &data, &model_dir, 2).status.success());
    signal(&server, "HUP");
    let second = wait_for_health(dashboard, "the new model on the dashboard", |s, h| {
        s == 200 && h["model_version"] != v1.as_str()
    });
    let v2 = second["model_version"].as_str().unwrap();
    let (_, overview) = page(dashboard, "/");
    assert!(
        overview.contains(v2) && !overview.contains(&v1),
        "the overview is the new model's"
    );
    assert!(
        overview.contains("trained on <code>data.csv</code>") && !overview.contains("synthetic"),
        "a file that is not generate-data's is named as it is: {overview}"
    );
    let (_, api) = health_of(port).unwrap();
    assert_eq!(api["model_version"], v2, "the API serves the same model");
    signal(&server, "TERM");
    assert!(server.wait().unwrap().success());
}

/// `serve --dashboard-port` of a service without a dashboard fails at once, saying so; so
/// does a dashboard port equal to the API's.
pub fn dashboard_port_is_refused<S: Service>(binary: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let serve = |dashboard_port: u16| {
        serve_command(binary, port, dir.path())
            .args(["--dashboard-port", &dashboard_port.to_string()])
            .stderr(Stdio::piped())
            .output()
            .expect("run the service binary")
    };
    let out = serve(port);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    if S::Dashboard::ENABLED {
        assert!(stderr.contains("a port of its own"), "{stderr}");
    } else {
        assert!(stderr.contains("has no dashboard"), "{stderr}");
        let out = serve(free_port());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(
            stderr.contains(&format!("{} has no dashboard", S::MANIFEST.name)),
            "{stderr}"
        );
        // From the environment too, as a container would set it.
        let out = Command::new(binary)
            .args(["serve", "--port", &port.to_string(), "--model-dir"])
            .arg(dir.path())
            .env("DASHBOARD_PORT", free_port().to_string())
            .output()
            .expect("run the service binary");
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("DASHBOARD_PORT"));
    }
}

//! Helpers shared by the xtask integration tests: run the real `xtask` binary in an isolated
//! stack directory, on ports no other stack uses.
#![allow(dead_code, clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// The toolkit's own polling loop, so the tests wait the way it does.
#[path = "../../src/util/poll.rs"]
pub mod poll;

pub mod mlflow_api;
pub mod netns_engine;
pub mod postgres;
pub mod registry;
pub mod traffic;

/// Waits until `ready` answers `Some`, asking every `every`, and returns the answer; panics
/// naming `what` it waited for when `timeout` passes first.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    ready: impl FnMut() -> Option<T>,
) -> T {
    poll::until(timeout, every, ready)
        .unwrap_or_else(|| panic!("gave up waiting for {what} after {timeout:?}"))
}

pub struct Stack {
    pub dir: tempfile::TempDir,
    pub port_offset: u16,
    /// The workspace xtask works on (found from its current directory) when not this one.
    pub workspace: Option<PathBuf>,
}

/// The range the system takes clients' ports from: Linux's setting, else the IANA range
/// (macOS, the BSDs).
fn ephemeral_ports() -> std::ops::RangeInclusive<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut bounds = text.split_whitespace().map(|n| n.parse::<u16>().ok());
            Some(bounds.next()??..=bounds.next()??)
        })
        .unwrap_or(49_152..=65_535)
}

/// A port offset whose five ports (5000, 8001-8003 plus the dashboard's 8501) are all free.
/// Each call starts from a different place, so tests running in parallel in one process do not
/// pick the same offset (and race over its ports). The ports stay below the range clients'
/// ports come from: a client's port in TIME_WAIT (a load generator leaves thousands) keeps a
/// server from binding it for a minute, SO_REUSEADDR or not.
pub fn free_offset() -> u16 {
    static CALLS: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    const FIRST: u16 = 10_000;
    let ephemeral = ephemeral_ports();
    // The largest offset whose highest port (8501) lies below the client ports.
    let last = ephemeral.start().saturating_sub(8_502).max(FIRST + 1_000);
    let span = last - FIRST;
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let base = (std::process::id() % u32::from(span)) as u16;
    (0..400u16)
        .map(|i| {
            let step = u32::from(call) * 1_009 + u32::from(i) * 37;
            FIRST + ((u32::from(base) + step) % u32::from(span)) as u16
        })
        .find(|&offset| {
            [5000u16, 8001, 8002, 8003, 8501]
                .iter()
                .all(|p| std::net::TcpListener::bind(("127.0.0.1", p + offset)).is_ok())
        })
        .expect("some port offset is free")
}

impl Default for Stack {
    fn default() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            port_offset: free_offset(),
            workspace: None,
        }
    }
}

impl Stack {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn xtask(&self, args: &[&str]) -> Output {
        self.xtask_with_env(args, &[])
    }

    /// Runs xtask with extra environment variables (GitHub Actions' own, say).
    pub fn xtask_with_env(&self, args: &[&str], env: &[(&str, &Path)]) -> Output {
        let mut command = self.command(args);
        for (key, value) in env {
            command.env(key, value);
        }
        let output = command.output().unwrap();
        eprintln!(
            "$ xtask {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// Starts xtask in the background, its standard error captured.
    pub fn spawn_xtask(&self, args: &[&str]) -> Child {
        self.command(args).stderr(Stdio::piped()).spawn().unwrap()
    }

    /// Starts xtask in the background, both its outputs captured.
    pub fn spawn_xtask_captured(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Runs xtask inside a second engine's namespace, aimed at that engine.
    pub fn xtask_on(&self, engine: &netns_engine::NetnsEngine, args: &[&str]) -> Output {
        let mut command = engine.command(env!("CARGO_BIN_EXE_xtask"));
        self.aim(&mut command, args);
        let output = command.output().unwrap();
        eprintln!(
            "$ xtask {} (engine {})\n{}{}",
            args.join(" "),
            engine.version,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// The xtask binary aimed at this stack.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
        self.aim(&mut command, args);
        command
    }

    fn aim(&self, command: &mut Command, args: &[&str]) {
        command
            .args(args)
            .env("XTASK_STACK_DIR", self.dir.path())
            .env("XTASK_PORT_OFFSET", self.port_offset.to_string())
            .env_remove("GITHUB_ACTIONS")
            .env_remove("CARGO_TARGET_DIR");
        if let Some(workspace) = &self.workspace {
            command.current_dir(workspace);
        }
    }

    /// Asserts that none of `pids` lives on and every one of `ports` is free again.
    pub fn assert_stopped(&self, pids: &[i32], ports: &[u16], after: &str) {
        for &pid in pids {
            assert!(!pid_alive(pid), "pid {pid} survived {after}");
        }
        for &port in ports {
            let port = self.port(port);
            assert!(port_free(port), "port {port} still held after {after}");
        }
    }

    pub fn port(&self, base: u16) -> u16 {
        base + self.port_offset
    }

    pub fn pid_files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.dir.path().join(".xtask/run"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }
}

/// A test that fails half way must not leave its stack running: every process group the
/// local runtime recorded is killed when the stack directory goes.
impl Drop for Stack {
    fn drop(&mut self) {
        for pid in self.pids() {
            if pid_alive(pid) {
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{pid}")])
                    .status();
            }
        }
    }
}

impl Stack {
    /// The pids recorded in the local runtime's pid files.
    pub fn pids(&self) -> Vec<i32> {
        self.pid_files()
            .iter()
            .filter_map(|f| {
                std::fs::read_to_string(f)
                    .ok()?
                    .lines()
                    .next()?
                    .parse()
                    .ok()
            })
            .collect()
    }
}

/// The first word of the line by which a test says it did not run here; `cargo xtask ci` counts
/// these lines, so a skipped test is reported as skipped, not passed.
pub const SKIP_MARK: &str = "XTASK-TEST-SKIPPED";

/// The file `cargo xtask ci` names for each step: every skip is appended to it, so a step
/// counts its skipped tests whether or not libtest shows their output.
pub const SKIP_LOG_ENV: &str = "XTASK_SKIP_LOG";

/// Says that the calling test cannot run on this machine, and why (what to install, what it
/// needs). The test then returns: libtest counts it as passed, the pipeline as skipped.
pub fn skip(reason: impl std::fmt::Display) {
    use std::io::Write as _;
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    let line = format!("{SKIP_MARK} {test}: {reason}");
    println!("{line}");
    eprintln!("SKIPPED {test}: {reason}");
    if let Some(log) = std::env::var_os(SKIP_LOG_ENV) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("cannot open the skip log {log:?}: {e}"));
        writeln!(file, "{line}").expect("the skip log is writable");
    }
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Whether `pid` runs (a zombie does not, where /proc tells).
pub fn pid_alive(pid: i32) -> bool {
    if !Path::new("/proc/self").exists() {
        // No /proc (macOS): whether it could be signalled.
        return Command::new("kill")
            .args(["-0", &pid.to_string()])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    }
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'))
}

/// Sends SIGINT, as Ctrl-C at a terminal would.
pub fn interrupt(child: &Child) {
    signal(child.id() as i32, "INT");
}

/// `kill -NAME -- PID`: a negative `pid` signals the process group.
pub fn signal(pid: i32, name: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{name}"), "--", &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -{name} {pid} failed");
}

/// A loopback port nothing listens on (the moment it is asked).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Whether a Docker engine answers here.
pub fn docker_answers() -> bool {
    Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The repository the tests run from.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Runs the real xtask binary in `dir`, the workspace it works on (found from its current
/// directory), as outside GitHub Actions, with extra environment variables.
pub fn xtask_in(dir: &Path, args: &[&str], env: &[(&str, &Path)]) -> Output {
    run_xtask(Command::new(env!("CARGO_BIN_EXE_xtask")), dir, args, env)
}

/// As [`xtask_in`], with `command` running the xtask binary: the binary itself, or a wrapper
/// that runs it elsewhere (`netns_engine::NetnsEngine::command`).
pub fn run_xtask(mut command: Command, dir: &Path, args: &[&str], env: &[(&str, &Path)]) -> Output {
    command
        .args(args)
        .current_dir(dir)
        .env_remove("GITHUB_ACTIONS")
        .env_remove("GITHUB_STEP_SUMMARY")
        .env_remove("CARGO_TARGET_DIR");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().unwrap();
    eprintln!(
        "$ xtask {}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        stdout(&output),
        stderr(&output)
    );
    output
}

/// What `GET /health` on a local port answers, whatever its status (a 503 has a body too).
pub fn health_json(port: u16) -> serde_json::Value {
    let text = ureq::get(&format!("http://127.0.0.1:{port}/health"))
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Copies a folder and everything below it.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

pub fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().unwrap()
}

/// An image of one file (owned by a non-root user), `docker import`ed from a small tar;
/// removed when dropped.
pub struct FixtureImage(String);

impl FixtureImage {
    pub fn new(image: &str, file: &str, contents: &str) -> Self {
        let scratch = tempfile::tempdir().unwrap();
        let layer = scratch.path().join("layer");
        let path = layer.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents).unwrap();
        let tar = scratch.path().join("layer.tar");
        let packed = Command::new("tar")
            .arg("-C")
            .arg(&layer)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(packed.success());
        let imported = docker(&[
            "import",
            "--change",
            "USER 10001",
            tar.to_str().unwrap(),
            image,
        ]);
        assert!(imported.status.success(), "{}", stderr(&imported));
        Self(image.to_owned())
    }
}

impl Drop for FixtureImage {
    fn drop(&mut self) {
        docker(&["image", "rm", "--force", &self.0]);
    }
}

/// A GitHub personal access token's shape, made at run time so the repository holds none.
pub fn fake_github_token() -> String {
    let alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let body: String = (0..36)
        .map(|i| alphabet[(i * 7 + 3) % alphabet.len()] as char)
        .collect();
    format!("ghp_{body}")
}

/// Every file under `dir` (none where it is missing) with its bytes, links as their targets:
/// to prove nothing changed.
pub fn snapshot(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let kind = entry.file_type().unwrap();
            let path = entry.path();
            if kind.is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                files.insert(path, target.into_os_string().into_encoded_bytes());
            } else if kind.is_dir() {
                pending.push(path);
            } else {
                files.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// A model version's name as training gives it: the first 12 hex digits of the SHA-256 of
/// its `model.json`.
pub fn model_version(model_json: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(model_json))[..12].to_owned()
}

/// What `docker ARGS` printed, trimmed.
pub fn docker_stdout(args: &[&str]) -> String {
    stdout(&docker(args)).trim().to_owned()
}

/// The release binary of a service, as `demo` builds it (statically linked, under the target
/// triple, on Linux).
pub fn service_binary(name: &str) -> PathBuf {
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

/// `SERVICE serve` on loopback at `port` with the model in `model_dir`: the command line the
/// toolkit's local runtime runs (`build::binaries::serve_step`).
pub fn serve_command(service: &str, port: u16, model_dir: &Path) -> Command {
    let mut command = Command::new(service_binary(service));
    command
        .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
        .arg("--model-dir")
        .arg(model_dir);
    command
}

/// The served model's version: the folder the `current` link names.
pub fn current_version(model_dir: &Path) -> String {
    std::fs::read_link(model_dir.join("current"))
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// Writes `model_json` as a version of its own, as training would: named by its fingerprint,
/// with `metrics` (their `model_version` set to match), and points `current` at it.
pub fn publish_version(
    model_dir: &Path,
    model_json: &[u8],
    mut metrics: serde_json::Value,
) -> String {
    let version = model_version(model_json);
    metrics["model_version"] = version.clone().into();
    let dir = model_dir.join("versions").join(&version);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.json"), model_json).unwrap();
    std::fs::write(dir.join("metrics.json"), metrics.to_string()).unwrap();
    point_current_at(model_dir, &version);
    version
}

/// Points `current` at `version` in one step, as training does: a new link renamed over it.
pub fn point_current_at(model_dir: &Path, version: &str) {
    let link = model_dir.join(".test-link");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(Path::new("versions").join(version), &link).unwrap();
    std::fs::rename(&link, model_dir.join("current")).unwrap();
}

/// A copy of this workspace's sources: its tracked and new files, not `target/` (nor what is
/// deleted in the work tree).
pub fn workspace_copy() -> tempfile::TempDir {
    let root = repo();
    let copy = tempfile::tempdir().unwrap();
    let listed = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(listed.status.success());
    for file in listed.stdout.split(|&b| b == 0).filter(|f| !f.is_empty()) {
        let relative = PathBuf::from(String::from_utf8_lossy(file).into_owned());
        let from = root.join(&relative);
        if !from.is_file() {
            continue;
        }
        let to = copy.path().join(&relative);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&from, &to).unwrap();
    }
    copy
}

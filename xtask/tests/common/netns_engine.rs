//! A second Docker engine for the tests, beside the machine's own and sharing nothing with it:
//! its own network namespace, containerd, data root and socket, removed completely when
//! dropped (daemons stopped, mounts unmounted, namespace deleted), also when the test panics.
//!
//! It is either an engine like GitHub's runners' (Debian trixie's dockerd 26 and containerd
//! 1.7 with BuildKit's `docker-buildx`, fetched once from this machine's own Debian archive
//! into the toolkit's cache, with bookworm's runc, and the containerd image store) or a second
//! copy of the machine's own engine (a Swarm worker, say). A veth pair can link the namespace
//! to the host, so that the host reaches what listens in it (a registry, a Swarm manager).
//!
//! Commands meant for the engine run inside its namespace (`command`), so that they, the
//! engine and anything the test starts there (a registry on 127.0.0.1) see the same loopback.

use std::ffi::OsString;
use std::io::Read as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The Debian archive from this machine's apt sources, as the toolkit reads it.
#[path = "../../src/util/debian_archive.rs"]
mod debian_archive;

/// Which dockerd, containerd and client plugins run the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binaries {
    /// This machine's own (`/usr/sbin/dockerd`, `/usr/bin/containerd`: Debian bookworm's 20.10
    /// and 1.6); no BuildKit plugin.
    Machine,
    /// Debian trixie's dockerd 26 and containerd 1.7 with `docker-buildx`, cached under the
    /// toolkit's cache folder; runc is this machine's (trixie's needs a newer glibc).
    Trixie,
}

/// Where the engine keeps its images.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageStore {
    /// The graph drivers' store (overlay2): image IDs are config digests.
    Classic,
    /// containerd's snapshotters, the default of Docker 29 on GitHub's runners: image IDs are
    /// manifest (or index) digests. Needs [`Binaries::Trixie`].
    Containerd,
}

/// A veth pair between the host and the engine's namespace: `host` on the host's end,
/// `engine` on the namespace's, both in one `/prefix` network. The namespace has no other
/// route (no way out to the internet).
#[derive(Clone, Copy, Debug)]
pub struct Link {
    pub host: Ipv4Addr,
    pub engine: Ipv4Addr,
    pub prefix: u8,
}

impl Link {
    /// A /30 of its own in 10.213.0.0/16 for the `index`-th link of this process, so tests in
    /// parallel (and other processes, by their pid) do not share one.
    pub fn private(index: u16) -> Self {
        let block = ((std::process::id() as u16)
            .wrapping_mul(31)
            .wrapping_add(index))
            % 16_384;
        let base = u32::from(Ipv4Addr::new(10, 213, 0, 0)) + u32::from(block) * 4;
        Self {
            host: Ipv4Addr::from(base + 1),
            engine: Ipv4Addr::from(base + 2),
            prefix: 30,
        }
    }
}

/// What to start.
#[derive(Clone, Debug)]
pub struct Options {
    pub binaries: Binaries,
    pub image_store: ImageStore,
    /// A veth pair to the host; without one the namespace has its loopback only.
    pub link: Option<Link>,
    /// More `daemon.json` settings (merged over the store's own).
    pub daemon_config: serde_json::Map<String, serde_json::Value>,
}

impl Options {
    /// An engine like GitHub's: trixie's dockerd 26, the containerd image store, BuildKit.
    pub fn like_github() -> Self {
        Self {
            binaries: Binaries::Trixie,
            image_store: ImageStore::Containerd,
            link: None,
            daemon_config: serde_json::Map::new(),
        }
    }

    /// A second copy of this machine's engine (20.10, classic store).
    pub fn machine() -> Self {
        Self {
            binaries: Binaries::Machine,
            image_store: ImageStore::Classic,
            ..Self::like_github()
        }
    }

    pub fn with_link(mut self, link: Link) -> Self {
        self.link = Some(link);
        self
    }
}

/// A running engine in a namespace of its own; stopped and removed when dropped.
pub struct NetnsEngine {
    /// The namespace's name (`ip netns`): `/var/run/netns/NAME`.
    pub netns: String,
    pub options: Options,
    /// Its socket; `DOCKER_HOST=unix://SOCKET` aims a client at it.
    pub socket: PathBuf,
    /// A `DOCKER_CONFIG` for its clients: the BuildKit plugin of its binaries, and the compose
    /// plugin found on this machine.
    pub docker_config: PathBuf,
    /// What `docker info` says of it: `Server.Version`.
    pub version: String,
    host_veth: Option<String>,
    containerd: Option<Child>,
    dockerd: Option<Child>,
    /// Everything of its own: configs, data roots, logs. Short, for socket paths.
    dir: Option<tempfile::TempDir>,
}

/// Why the engine cannot run on this machine (the test then skips, saying so).
#[derive(Debug)]
pub struct Unavailable(pub String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn unavailable<T>(why: impl Into<String>) -> Result<T, Unavailable> {
    Err(Unavailable(why.into()))
}

/// Runs `command`, panicking with its output when it fails.
fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The toolkit's cache folder, as `xtask` finds it (`--cache-dir`, `XTASK_CACHE_DIR`).
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XTASK_CACHE_DIR") {
        return dir.into();
    }
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("ml-mlops-xtask")
}

/// The trixie packages of the engine like GitHub's.
const TRIXIE_PACKAGES: &[&str] = &["docker.io", "containerd", "docker-buildx"];

/// Trixie's engine unpacked under the cache (fetched once, under a lock): its root folder.
fn trixie_binaries() -> Result<PathBuf, Unavailable> {
    let home = cache_dir().join("docker-engine-trixie");
    let root = home.join("root");
    let done = home.join("packages");
    std::fs::create_dir_all(&home).unwrap();
    let lock = std::fs::File::create(home.join(".lock")).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
    if done.is_file() {
        return Ok(root);
    }
    for tool in ["apt-get", "dpkg-deb"] {
        if which::which(tool).is_err() {
            return unavailable(format!(
                "{tool} is not installed to fetch Debian trixie's engine"
            ));
        }
    }
    let Some(archive) = debian_archive::debian_archive() else {
        return unavailable(
            "no Debian archive in this machine's apt sources (or XTASK_DEBIAN_MIRROR) to fetch \
             trixie's engine from",
        );
    };
    let started = Instant::now();
    // A separate apt state (sources, lists, cache): the machine's own stays untouched.
    let apt = tempfile::tempdir_in(&home).unwrap();
    for sub in ["parts", "lists/partial", "cache/archives/partial", "debs"] {
        std::fs::create_dir_all(apt.path().join(sub)).unwrap();
    }
    std::fs::write(
        apt.path().join("parts/trixie.sources"),
        format!(
            "Types: deb\nURIs: {archive}\nSuites: trixie\nComponents: main\n\
             Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        ),
    )
    .unwrap();
    let apt_get = |args: &[&str]| {
        let mut command = Command::new("apt-get");
        command
            .current_dir(apt.path().join("debs"))
            .arg("-qq")
            .args(["-o", "Dir::Etc::SourceList=/dev/null"])
            .arg("-o")
            .arg(format!(
                "Dir::Etc::SourceParts={}",
                apt.path().join("parts").display()
            ))
            .arg("-o")
            .arg(format!(
                "Dir::State::Lists={}",
                apt.path().join("lists").display()
            ))
            .arg("-o")
            .arg(format!("Dir::Cache={}", apt.path().join("cache").display()))
            // The download runs as this user, not apt's sandbox user, into a private folder.
            .args(["-o", "APT::Sandbox::User=root"])
            .args(args);
        command.output().unwrap()
    };
    let update = apt_get(&["update"]);
    if !update.status.success() {
        return unavailable(format!(
            "cannot read Debian trixie's package lists from {archive}: {}",
            String::from_utf8_lossy(&update.stderr).trim()
        ));
    }
    let wanted: Vec<String> = TRIXIE_PACKAGES
        .iter()
        .map(|p| format!("{p}/trixie"))
        .collect();
    let mut args = vec!["download"];
    args.extend(wanted.iter().map(String::as_str));
    let download = apt_get(&args);
    if !download.status.success() {
        return unavailable(format!(
            "cannot download {} from Debian trixie: {}",
            TRIXIE_PACKAGES.join(", "),
            String::from_utf8_lossy(&download.stderr).trim()
        ));
    }
    let unpacked = home.join("root.partial");
    let _ = std::fs::remove_dir_all(&unpacked);
    let mut names = Vec::new();
    for deb in std::fs::read_dir(apt.path().join("debs"))
        .unwrap()
        .flatten()
    {
        run(Command::new("dpkg-deb")
            .arg("-x")
            .arg(deb.path())
            .arg(&unpacked));
        names.push(deb.file_name().to_string_lossy().into_owned());
    }
    // Trixie's runc (were it unpacked) needs a newer glibc than this machine's: the machine's
    // own runc, found on PATH, runs the containers.
    for runc in ["usr/sbin/runc", "usr/bin/runc"] {
        let _ = std::fs::remove_file(unpacked.join(runc));
    }
    let _ = std::fs::remove_dir_all(&root);
    std::fs::rename(&unpacked, &root).unwrap();
    names.sort();
    std::fs::write(&done, names.join("\n") + "\n").unwrap();
    eprintln!(
        "MEASURED: fetched and unpacked {} from Debian trixie in {:.1}s",
        names.join(", "),
        started.elapsed().as_secs_f64()
    );
    Ok(root)
}

/// Distinct names for the engines of this process (namespaces, veth ends: 15 bytes at most).
fn next_name() -> String {
    static STARTED: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!("xe{}n{n}", std::process::id())
}

/// Whether `name` (`xe<pid>n<n>`, or a folder `xe<pid>n<n>.XXXX`) is an engine's of a test
/// process that is gone.
fn owner_is_gone(name: &str) -> bool {
    name.strip_prefix("xe")
        .and_then(|rest| rest.split_once('n'))
        .and_then(|(pid, _)| pid.parse::<u32>().ok())
        .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
}

/// Removes what the engines of earlier test processes left when those were killed before
/// they could (a timeout, SIGKILL): their daemons and shims, mounts, folders and namespaces.
fn remove_stale_engines() {
    for entry in std::fs::read_dir("/tmp").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.contains('.') || !owner_is_gone(&name) {
            continue;
        }
        let dir = entry.path();
        for pid in processes_naming(&dir.to_string_lossy()) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        for mount in mounts_under(&dir) {
            let _ = Command::new("umount").arg("--lazy").arg(&mount).status();
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    for entry in std::fs::read_dir("/var/run/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if owner_is_gone(&name) {
            let _ = Command::new("ip").args(["netns", "delete", &name]).status();
        }
    }
}

impl NetnsEngine {
    /// Starts an engine, or says why it cannot run here (not root, a tool or the Debian
    /// archive missing). Panics when it should run but does not.
    pub fn start(options: Options) -> Result<Self, Unavailable> {
        if !rustix::process::geteuid().is_root() {
            return unavailable("a second Docker engine needs root (namespaces, mounts)");
        }
        for tool in ["ip", "nsenter"] {
            if which::which(tool).is_err() {
                return unavailable(format!("{tool} is not installed (iproute2, util-linux)"));
            }
        }
        let (dockerd, containerd, plugins, path) = match options.binaries {
            Binaries::Machine => {
                if options.image_store == ImageStore::Containerd {
                    panic!("the machine's dockerd 20.10 has no containerd image store");
                }
                let plugins = None;
                (
                    PathBuf::from("/usr/sbin/dockerd"),
                    PathBuf::from("/usr/bin/containerd"),
                    plugins,
                    std::env::var_os("PATH").unwrap_or_default(),
                )
            }
            Binaries::Trixie => {
                let root = trixie_binaries()?;
                let mut path = OsString::from(root.join("usr/sbin"));
                path.push(":");
                path.push(root.join("usr/bin"));
                path.push(":");
                path.push(std::env::var_os("PATH").unwrap_or_default());
                (
                    root.join("usr/sbin/dockerd"),
                    root.join("usr/bin/containerd"),
                    Some(root.join("usr/libexec/docker/cli-plugins")),
                    path,
                )
            }
        };
        for binary in [&dockerd, &containerd] {
            if !binary.is_file() {
                return unavailable(format!("{} is not installed", binary.display()));
            }
        }
        if which::which("runc").is_err() {
            return unavailable("runc is not installed (apt-get install runc)");
        }
        remove_stale_engines();
        let started = Instant::now();
        let name = next_name();
        // Under /tmp, short: unix socket paths have a limit of 107 bytes.
        let dir = tempfile::Builder::new()
            .prefix(&format!("{name}."))
            .tempdir_in("/tmp")
            .unwrap();
        let mut engine = Self {
            netns: name.clone(),
            options: options.clone(),
            socket: dir.path().join("docker.sock"),
            docker_config: dir.path().join("client"),
            version: String::new(),
            host_veth: None,
            containerd: None,
            dockerd: None,
            dir: Some(dir),
        };
        // From here on, a panic drops `engine`, which removes whatever was made so far.
        run(Command::new("ip").args(["netns", "add", &name]));
        run(Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]));
        if let Some(link) = options.link {
            engine.add_link(link);
        }
        engine.write_client_config(plugins.as_deref());
        let dir = engine.dir().to_owned();
        let containerd_socket = dir.join("containerd.sock");
        std::fs::write(
            dir.join("containerd.toml"),
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{socket}\"\n[ttrpc]\n  address = \"\"\n\
                 [debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n",
                root = dir.join("containerd/root").display(),
                state = dir.join("containerd/state").display(),
                socket = containerd_socket.display(),
            ),
        )
        .unwrap();
        let mut config = match options.image_store {
            ImageStore::Classic => serde_json::json!({"storage-driver": "overlay2"}),
            ImageStore::Containerd => serde_json::json!({
                "features": {"containerd-snapshotter": true},
                "storage-driver": "overlayfs",
            }),
        };
        config
            .as_object_mut()
            .unwrap()
            .extend(options.daemon_config.clone());
        std::fs::write(dir.join("daemon.json"), config.to_string()).unwrap();

        engine.containerd = Some(engine.spawn_daemon(
            &containerd,
            &path,
            "containerd.log",
            &[
                "--config".into(),
                dir.join("containerd.toml").into_os_string(),
            ],
        ));
        engine.wait_for("containerd", |_| containerd_socket.exists().then_some(()));
        let arg = |flag: &str, path: PathBuf| [OsString::from(flag), path.into_os_string()];
        let mut args: Vec<OsString> = Vec::new();
        args.extend(arg("--containerd", containerd_socket));
        args.extend(arg("--data-root", dir.join("data")));
        args.extend(arg("--exec-root", dir.join("exec")));
        args.extend(arg("--pidfile", dir.join("dockerd.pid")));
        args.extend(arg("--config-file", dir.join("daemon.json")));
        args.push("-H".into());
        args.push(format!("unix://{}", engine.socket.display()).into());
        engine.dockerd = Some(engine.spawn_daemon(&dockerd, &path, "dockerd.log", &args));
        engine.version = engine.wait_for("dockerd", |engine| {
            let out = engine
                .docker_command(&["version", "--format", "{{.Server.Version}}"])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        });
        let driver = engine.driver_status();
        let snapshotter = driver.contains("io.containerd.snapshotter");
        assert_eq!(
            snapshotter,
            options.image_store == ImageStore::Containerd,
            "the engine's image store is not the one asked for: {driver}"
        );
        eprintln!(
            "MEASURED: engine {} ({:?} store) started in namespace {name} in {:.1}s",
            engine.version,
            options.image_store,
            started.elapsed().as_secs_f64()
        );
        Ok(engine)
    }

    /// Starts the engine, or says SKIPPED with the reason and returns `None`.
    pub fn start_or_skip(options: Options) -> Option<Self> {
        match Self::start(options) {
            Ok(engine) => Some(engine),
            Err(why) => {
                super::skip(why);
                None
            }
        }
    }

    fn dir(&self) -> &Path {
        self.dir.as_ref().expect("the engine's folder").path()
    }

    /// The path of the namespace, for `nsenter --net=`.
    pub fn netns_path(&self) -> PathBuf {
        Path::new("/var/run/netns").join(&self.netns)
    }

    /// `DOCKER_HOST` for a client of this engine.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The environment aiming a docker client at this engine.
    pub fn env(&self) -> Vec<(&'static str, OsString)> {
        vec![
            ("DOCKER_HOST", self.docker_host().into()),
            ("DOCKER_CONFIG", self.docker_config.clone().into_os_string()),
        ]
    }

    /// `PROGRAM` run inside the engine's namespace, aimed at the engine. `nsenter --net`, not
    /// `ip netns exec`: the latter remounts /sys, and a dockerd started so finds no cgroups.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.netns_path().display()))
            .arg("--")
            .arg(program)
            .envs(self.env());
        command
    }

    /// The real xtask binary in `dir` (the workspace it works on), inside the namespace and
    /// aimed at this engine.
    pub fn xtask_in(&self, dir: &Path, args: &[&str]) -> Output {
        super::run_xtask(self.command(env!("CARGO_BIN_EXE_xtask")), dir, args, &[])
    }

    /// The real xtask binary in `dir`, aimed at this engine over its socket but run in the
    /// host's network (which the namespace has none of: downloads work, its loopback is not
    /// the engine's).
    pub fn xtask_outside(&self, dir: &Path, args: &[&str]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
        command.envs(self.env());
        super::run_xtask(command, dir, args, &[])
    }

    /// `docker ARGS` against this engine, inside its namespace.
    pub fn docker_command(&self, args: &[&str]) -> Command {
        let mut command = self.command("docker");
        command.args(args);
        command
    }

    /// `docker ARGS` against this engine; the output.
    pub fn docker(&self, args: &[&str]) -> Output {
        self.docker_command(args).output().unwrap()
    }

    /// `docker info`'s storage driver status, as JSON text (`[["driver-type", ...]]` on the
    /// containerd store).
    pub fn driver_status(&self) -> String {
        let out = self.docker(&["info", "--format", "{{json .DriverStatus}}"]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The end of a daemon's log, for failure messages.
    pub fn log_tail(&self, log: &str) -> String {
        let text = std::fs::read_to_string(self.dir().join(log)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn spawn_daemon(&self, binary: &Path, path: &OsString, log: &str, args: &[OsString]) -> Child {
        let log_file = std::fs::File::create(self.dir().join(log)).unwrap();
        Command::new("nsenter")
            .arg(format!("--net={}", self.netns_path().display()))
            .arg("--")
            .arg(binary)
            .args(args)
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()))
    }

    /// Polls `ready` until it answers, panicking with the daemon's log when the daemon exits
    /// or a minute passes.
    fn wait_for<T>(&mut self, daemon: &str, mut ready: impl FnMut(&Self) -> Option<T>) -> T {
        let log = format!("{daemon}.log");
        let mut exited = None;
        let answer =
            super::poll::until(Duration::from_secs(60), Duration::from_millis(100), || {
                if let Some(value) = ready(self) {
                    return Some(Some(value));
                }
                let child = if daemon == "dockerd" {
                    self.dockerd.as_mut()
                } else {
                    self.containerd.as_mut()
                };
                if let Some(status) = child.and_then(|c| c.try_wait().ok().flatten()) {
                    exited = Some(status);
                    return Some(None);
                }
                None
            });
        match answer.flatten() {
            Some(value) => value,
            None => panic!(
                "{daemon} of the second engine {} ({:?}):\n{}",
                exited.map_or_else(
                    || "did not answer within a minute".to_owned(),
                    |s| format!("exited ({s})")
                ),
                self.options.binaries,
                self.log_tail(&log)
            ),
        }
    }

    fn add_link(&mut self, link: Link) {
        let host_end = format!("{}h", self.netns);
        let engine_end = format!("{}e", self.netns);
        run(Command::new("ip").args([
            "link",
            "add",
            &host_end,
            "type",
            "veth",
            "peer",
            "name",
            &engine_end,
            "netns",
            &self.netns,
        ]));
        self.host_veth = Some(host_end.clone());
        let host = format!("{}/{}", link.host, link.prefix);
        let engine = format!("{}/{}", link.engine, link.prefix);
        run(Command::new("ip").args(["addr", "add", &host, "dev", &host_end]));
        run(Command::new("ip").args(["link", "set", &host_end, "up"]));
        let in_netns = |args: &[&str]| {
            run(Command::new("ip").args(["-n", &self.netns]).args(args));
        };
        in_netns(&["addr", "add", &engine, "dev", &engine_end]);
        in_netns(&["link", "set", &engine_end, "up"]);
        // No default route: what leaves the namespace for elsewhere fails at once ("network
        // is unreachable") instead of waiting for answers that never come (DNS, downloads).
    }

    /// The client's config folder: this engine's BuildKit plugin and the machine's compose
    /// plugin, so that `docker buildx` and `docker compose` answer for its clients.
    fn write_client_config(&self, plugins: Option<&Path>) {
        let dir = self.docker_config.join("cli-plugins");
        std::fs::create_dir_all(&dir).unwrap();
        let user_config = std::env::var_os("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker")));
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(plugins) = plugins {
            candidates.push(plugins.join("docker-buildx"));
        }
        if let Some(user) = user_config {
            candidates.push(user.join("cli-plugins/docker-compose"));
        }
        candidates.push("/usr/libexec/docker/cli-plugins/docker-compose".into());
        for plugin in candidates {
            let target = dir.join(plugin.file_name().unwrap());
            if plugin.is_file() && !target.exists() {
                std::os::unix::fs::symlink(&plugin, &target).unwrap();
            }
        }
    }

    /// Stops the engine and removes all it made; what could not be removed is printed.
    fn teardown(&mut self) {
        let started = Instant::now();
        if let Some(dockerd) = self.dockerd.take() {
            stop(dockerd, "dockerd");
        }
        if let Some(containerd) = self.containerd.take() {
            stop(containerd, "containerd");
        }
        let Some(dir) = self.dir.take() else {
            return;
        };
        // Container shims outlive containerd: end those started for this engine (their
        // command line names its containerd socket).
        let socket = dir.path().join("containerd.sock");
        for pid in processes_naming(&socket.to_string_lossy()) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        for mount in mounts_under(dir.path()) {
            let _ = Command::new("umount").arg("--lazy").arg(&mount).status();
        }
        if let Some(veth) = self.host_veth.take() {
            let _ = Command::new("ip").args(["link", "delete", &veth]).status();
        }
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.netns])
            .status();
        let left = mounts_under(dir.path());
        if !left.is_empty() {
            eprintln!("the second engine left mounts behind: {left:?}");
        }
        if let Err(e) = dir.close() {
            eprintln!("cannot remove the second engine's folder: {e}");
        }
        eprintln!(
            "MEASURED: second engine {} stopped and removed in {:.1}s",
            self.netns,
            started.elapsed().as_secs_f64()
        );
    }
}

impl Drop for NetnsEngine {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// SIGTERM, then SIGKILL after 30 s: dockerd stops its containers first.
fn stop(mut daemon: Child, what: &str) {
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let stopped = super::poll::until(Duration::from_secs(30), Duration::from_millis(50), || {
        daemon.try_wait().ok().flatten()
    });
    if stopped.is_none() {
        eprintln!("{what} of the second engine ignored SIGTERM for 30 s: killed");
        let _ = daemon.kill();
        let _ = daemon.wait();
    }
}

/// The mount points under `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open("/proc/self/mountinfo") {
        let _ = file.read_to_string(&mut text);
    }
    let mut mounts: Vec<PathBuf> = text
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|point| PathBuf::from(point.replace("\\040", " ")))
        .filter(|point| point.starts_with(dir))
        .collect();
    mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    mounts.dedup();
    mounts
}

/// The processes whose command line contains `needle`.
pub fn processes_naming(needle: &str) -> Vec<u32> {
    let Ok(proc_dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    proc_dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

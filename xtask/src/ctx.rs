//! What every command gets: where things live, the stack, the runner and the reporter.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Result;

use crate::build::binaries::Profile;
use crate::runner::{PathAliases, Runner};
use crate::stack::compose_file;
use crate::stack::mlflow_backend::Backend;
use crate::stack::{Endpoint, Service, Stack};
use crate::util::lock;
use crate::util::progress::Reporter;

pub struct Ctx {
    /// The workspace root.
    pub root: PathBuf,
    /// Where the running stack keeps its data: `data/`, `models/`, `mlruns/` and `.xtask/`
    /// (pids and logs). The workspace root unless `XTASK_STACK_DIR` says otherwise.
    pub stack_dir: PathBuf,
    /// Downloaded tools (the MLflow virtual environment), shared by every checkout.
    pub cache_dir: PathBuf,
    /// Added to every host port, to run a second stack beside the first (tests do).
    pub port_offset: u16,
    /// The stack's name: `None` for the default stack, else `--stack NAME` or the port
    /// offset. It names the compose project, the containers and the network of a second stack.
    pub stack_name: Option<String>,
    pub stack: Stack,
    /// Where MLflow keeps its runs and registry (`--mlflow-backend`).
    pub mlflow_backend: Backend,
    pub runner: Runner,
    pub reporter: Arc<Reporter>,
    /// Set by Ctrl-C (or SIGTERM): long waits stop and clean up.
    pub interrupted: Arc<AtomicBool>,
    /// The Cargo profile the APIs' binaries are built with and run from: `dev-loop` under
    /// `dev`, `release` everywhere else.
    pub build: Profile,
}

pub struct Options {
    pub dry_run: bool,
    pub verbosity: i8,
    pub port_offset: u16,
    pub stack_name: Option<String>,
    pub stack_dir: Option<PathBuf>,
    pub cache_dir: Option<PathBuf>,
    pub build: Profile,
    pub mlflow_backend: Option<String>,
}

/// A stack's name goes into a compose project, container and network names: lowercase
/// letters, digits and `-`, starting with a letter or digit, at most 32 characters.
pub fn check_stack_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 32
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        anyhow::bail!(
            "--stack {name:?} is not a valid stack name: use up to 32 lowercase letters, digits \
             and '-', starting with a letter or a digit (it names the compose project and the \
             containers)"
        );
    }
    Ok(())
}

/// The name of the stack these options choose: `--stack NAME`, else the port offset (`100`
/// for `--port-offset 100`), else `None`: the default stack. A named stack needs ports of its
/// own, and a number names only the stack of that offset.
pub fn stack_name(name: Option<String>, port_offset: u16) -> Result<Option<String>> {
    match name {
        Some(name) => {
            check_stack_name(&name)?;
            if port_offset == 0 {
                anyhow::bail!(
                    "--stack {name} needs --port-offset N (N > 0): a second stack needs ports of its own beside the default stack's"
                );
            }
            if name.bytes().all(|b| b.is_ascii_digit()) && name != port_offset.to_string() {
                anyhow::bail!(
                    "--stack {name} with --port-offset {port_offset}: a number names the stack of that port offset; give --port-offset {name}, or a name that is not a number"
                );
            }
            Ok(Some(name))
        }
        None if port_offset != 0 => Ok(Some(port_offset.to_string())),
        None => Ok(None),
    }
}

/// Where a named stack keeps its data, models, MLflow store and state unless `--stack-dir`
/// says otherwise: a folder of its own under the default stack's `.xtask/`, so a second stack
/// never opens the first one's SQLite store or serves its models.
pub fn named_stack_dir(root: &Path, name: &str) -> PathBuf {
    root.join(".xtask").join("stacks").join(name)
}

/// The workspace this toolkit works on: the nearest folder, from the current directory up,
/// that holds `xtask/Cargo.toml` and `services/` (as cargo finds its workspace); else the one
/// this binary was built from.
fn workspace_root() -> PathBuf {
    let is_root =
        |dir: &Path| dir.join("xtask/Cargo.toml").is_file() && dir.join("services").is_dir();
    std::env::current_dir()
        .ok()
        .and_then(|cwd| cwd.ancestors().find(|d| is_root(d)).map(Path::to_owned))
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .expect("xtask lives inside the workspace")
                .to_owned()
        })
}

fn default_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("ml-mlops-xtask")
}

impl Ctx {
    pub fn new(options: Options) -> Result<Self> {
        let root = workspace_root();
        let stack = Stack::load(&root)?;
        stack.check_port_offset(options.port_offset)?;
        let stack_name = stack_name(options.stack_name, options.port_offset)?;
        let mlflow_backend = Backend::parse(options.mlflow_backend.as_deref())?;
        let stack_dir = options.stack_dir.unwrap_or_else(|| match &stack_name {
            Some(name) => named_stack_dir(&root, name),
            None => root.clone(),
        });
        let cache_dir = options.cache_dir.unwrap_or_else(default_cache_dir);
        let reporter = Arc::new(Reporter::new(options.verbosity));
        let aliases = PathAliases(vec![
            (root.clone(), "$ROOT"),
            (stack_dir.clone(), "$STACK"),
            (cache_dir.clone(), "$CACHE"),
        ]);
        let runner = Runner {
            dry_run: options.dry_run,
            reporter: reporter.clone(),
            aliases,
        };
        let interrupted = Arc::new(AtomicBool::new(false));
        let flag = interrupted.clone();
        // Children run in their own process groups, so only we see Ctrl-C: stop what we
        // started instead of leaving it orphaned.
        let _ = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst));
        Ok(Self {
            stack,
            mlflow_backend,
            root,
            stack_dir,
            cache_dir,
            port_offset: options.port_offset,
            stack_name,
            runner,
            reporter,
            interrupted,
            build: options.build,
        })
    }

    pub fn dry_run(&self) -> bool {
        self.runner.dry_run
    }

    /// Runs `first` here and `second` on a thread of its own, at once; under `--dry-run` one
    /// after the other, so the plan reads in order. A panic in either goes on here.
    pub fn both<A, B: Send>(
        &self,
        first: impl FnOnce() -> A,
        second: impl FnOnce() -> B + Send,
    ) -> (A, B) {
        if self.dry_run() {
            let a = first();
            return (a, second());
        }
        std::thread::scope(|scope| {
            let second = scope.spawn(second);
            let a = first();
            let b = second
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (a, b)
        })
    }

    pub fn is_interrupted(&self) -> bool {
        self.interrupted.load(Ordering::SeqCst)
    }

    /// The service's port on the host, shifted by `--port-offset` (checked not to overflow
    /// when the context was made).
    pub fn host_port(&self, service: &Service) -> u16 {
        service.host_port + self.port_offset
    }

    /// An endpoint's port on the host, shifted by `--port-offset`.
    pub fn endpoint_port(&self, endpoint: &Endpoint) -> u16 {
        endpoint.host_port + self.port_offset
    }

    /// `http://127.0.0.1:PORT/PATH`: the stack is reached only through published host ports.
    pub fn url(&self, service: &Service, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.host_port(service))
    }

    pub fn health_url(&self, service: &Service) -> String {
        self.url(service, &service.health_path)
    }

    pub fn endpoint_url(&self, endpoint: &Endpoint, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.endpoint_port(endpoint))
    }

    pub fn endpoint_health_url(&self, endpoint: &Endpoint) -> String {
        self.endpoint_url(endpoint, &endpoint.health_path)
    }

    pub fn data_path(&self, service: &Service) -> PathBuf {
        let file = service.dataset.as_deref().unwrap_or("data.csv");
        self.stack_dir.join("data").join(&service.name).join(file)
    }

    pub fn model_dir(&self, service: &Service) -> PathBuf {
        self.stack_dir.join("models").join(&service.name)
    }

    /// The model file the service serves: `current` links to the served version's folder,
    /// beside `metrics.json` (the serving library's layout).
    pub fn model_file(&self, service: &Service) -> PathBuf {
        self.model_dir(service).join("current").join("model.json")
    }

    pub fn mlruns_dir(&self) -> PathBuf {
        self.stack_dir.join("mlruns")
    }

    /// `-NAME` for a named stack, empty for the default one: appended to the compose project,
    /// the container and the network names.
    pub fn name_suffix(&self) -> String {
        self.stack_name
            .as_deref()
            .map_or_else(String::new, |n| format!("-{n}"))
    }

    /// The compose project: `ml-mlops`, or `ml-mlops-NAME` for a named stack.
    pub fn project(&self) -> String {
        format!("{}{}", compose_file::PROJECT, self.name_suffix())
    }

    /// The service's container: `bankchurn-api`, or `bankchurn-api-NAME` for a named stack.
    pub fn container(&self, service: &Service) -> String {
        format!("{}{}", service.container, self.name_suffix())
    }

    /// The stack's network: `ml-mlops-network`, or `ml-mlops-network-NAME`.
    pub fn network(&self) -> String {
        format!("{}{}", compose_file::NETWORK, self.name_suffix())
    }

    /// How reports name this stack: `the default stack`, `stack 100`.
    pub fn stack_label(&self) -> String {
        match &self.stack_name {
            Some(name) => format!("stack {name}"),
            None => "the default stack".to_owned(),
        }
    }

    /// Takes the stack's lock (`.xtask/lock` in its stack directory) for a command that changes
    /// the stack: two such commands never run on one stack at once; the second waits, saying
    /// for whom. Held until dropped; none under `--dry-run`, which changes nothing.
    pub fn lock_stack(&self) -> Result<Option<lock::Held>> {
        if self.dry_run() {
            return Ok(None);
        }
        let interrupted = || self.is_interrupted();
        lock::acquire(
            &self.state_dir().join("lock"),
            &format!("the lock of {}", self.stack_label()),
            &self.reporter,
            &interrupted,
        )
        .map(Some)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.stack_dir.join(".xtask")
    }

    pub fn log_path(&self, service: &Service) -> PathBuf {
        self.state_dir()
            .join("logs")
            .join(format!("{}.log", service.name))
    }

    /// The global options that give a child `cargo xtask` this same context, where they
    /// differ from the defaults.
    pub fn global_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if self.stack_dir != self.root {
            args.extend(["--stack-dir".into(), self.stack_dir.display().to_string()]);
        }
        if self.cache_dir != default_cache_dir() {
            args.extend(["--cache-dir".into(), self.cache_dir.display().to_string()]);
        }
        if self.port_offset != 0 {
            args.extend(["--port-offset".into(), self.port_offset.to_string()]);
        }
        if let Some(name) = &self.stack_name {
            if *name != self.port_offset.to_string() {
                args.extend(["--stack".into(), name.clone()]);
            }
        }
        args
    }

    /// Shows a path with the `$ROOT`/`$STACK`/`$CACHE` placeholders.
    pub fn show(&self, path: &Path) -> String {
        self.runner.aliases.show(&path.to_string_lossy())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_offset_or_a_name_makes_a_second_stack_with_a_directory_of_its_own() {
        assert_eq!(stack_name(None, 0).unwrap(), None);
        assert_eq!(stack_name(None, 100).unwrap().as_deref(), Some("100"));
        assert_eq!(
            stack_name(Some("blue".into()), 100).unwrap().as_deref(),
            Some("blue")
        );
        for bad in ["", "Blue", "-x", "a b", "a/b", &"x".repeat(33)] {
            assert!(
                stack_name(Some(bad.into()), 100).is_err(),
                "{bad:?} accepted"
            );
        }
        // A name needs ports of its own; a number names only its own offset's stack.
        assert!(stack_name(Some("blue".into()), 0).is_err());
        assert!(stack_name(Some("100".into()), 200).is_err());
        assert_eq!(
            stack_name(Some("100".into()), 100).unwrap().as_deref(),
            Some("100")
        );
        assert_eq!(
            named_stack_dir(Path::new("/repo"), "100"),
            Path::new("/repo/.xtask/stacks/100")
        );
    }
}

//! `cargo xtask dev [SERVICE...]`: bring the stack up, then watch the APIs' sources and put
//! each change live in seconds, but only once the new version has passed the same health and
//! smoke checks as `demo`: a change that does not compile, or compiles and answers wrong,
//! leaves the working version serving.

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use notify_debouncer_mini::notify::RecursiveMode;

use crate::build::binaries;
use crate::ctx::Ctx;
use crate::runtime::lifecycle::{self, UpOptions};
use crate::runtime::training::{self, Tracking};
use crate::runtime::{observe, Candidate, Runtime};
use crate::stack::compose_file::{render, FILE as COMPOSE_FILE};
use crate::stack::{Service, Stack};
use crate::util::{http, poll};

/// The folder of the library every API is built on: a change there affects them all.
const SHARED_LIBRARY: &str = "services/serving";

/// Bring the stack up, then rebuild and swap in each API whose sources change, once the new
/// version passes its health and smoke checks.
///
/// Watches each API's crate folder (its code, `service.toml`) and the serving library
/// (which every API is built on, with the Dockerfile). A change is built, started beside the
/// running version on spare ports, checked there, and only then put on the service's ports.
/// Local runtime: with no gap, both versions listen with SO_REUSEPORT and the old one
/// drains. Docker: the new build is packaged into the service's image and run as a second
/// container; once it passes, the old container drains and compose starts the new image in
/// its place (a gap of about a second). A failed build or check keeps the old version
/// serving and shows why. Ctrl-C stops watching and leaves the stack running.
#[derive(clap::Args, Debug)]
pub struct Dev {
    /// The APIs to watch [default: all of them].
    pub services: Vec<String>,
    #[command(flatten)]
    pub options: UpOptions,
    /// Stop the stack (as `down`) when watching ends.
    #[arg(long)]
    pub down_on_exit: bool,
    /// Milliseconds of quiet after a change before it is built: an editor's save is often
    /// several writes.
    #[arg(long, default_value_t = 300, value_name = "MS")]
    pub debounce: u64,
}

impl Dev {
    pub fn run(self, ctx: &Ctx, runtime: &mut dyn Runtime) -> Result<()> {
        let watched: Vec<&Service> = ctx
            .stack
            .select(&self.services)?
            .into_iter()
            .filter(|s| s.is_api())
            .collect();
        anyhow::ensure!(
            !watched.is_empty(),
            "nothing to watch: name one or more APIs ({})",
            ctx.stack
                .apis()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        anyhow::ensure!(
            runtime.swaps_candidates(),
            "`dev` swaps new versions in on the local and docker runtimes, and this stack runs on {}: run `cargo xtask --runtime local dev` or `--runtime docker`",
            runtime.name()
        );
        {
            let _lock = ctx.lock_stack()?;
            lifecycle::bring_up(ctx, runtime, &self.options)?;
        }
        let folders = watched_folders(ctx, &watched);
        for folder in &folders {
            ctx.runner
                .plan(format!("watch {} for changes", folder.display()));
        }
        if ctx.dry_run() {
            ctx.runner.plan(
                "on a change: build the affected APIs, start each beside the running one on spare ports, check its health and smoke there, then hand its ports over",
            );
            return Ok(());
        }
        let watching = self.watch(ctx, runtime, &watched, &folders);
        if self.down_on_exit {
            ctx.reporter.info("stopping the stack (--down-on-exit)");
            let _lock = ctx.lock_stack()?;
            for service in ctx.stack.services.iter().rev() {
                runtime.stop(ctx, service)?;
            }
            runtime.stop_shared(ctx)?;
        } else if watching.is_ok() {
            ctx.reporter
                .info("stopped watching; the stack keeps running (`cargo xtask down` stops it)");
        }
        watching
    }

    fn watch(
        &self,
        ctx: &Ctx,
        runtime: &mut dyn Runtime,
        watched: &[&Service],
        folders: &[PathBuf],
    ) -> Result<()> {
        let (events, changes) = mpsc::channel();
        let mut debouncer =
            notify_debouncer_mini::new_debouncer(Duration::from_millis(self.debounce), events)
                .context("cannot watch files on this machine")?;
        for folder in folders {
            debouncer
                .watcher()
                .watch(folder, RecursiveMode::Recursive)
                .with_context(|| format!("cannot watch {}", folder.display()))?;
        }
        let mut sources = Sources::read(folders);
        let names: Vec<&str> = watched.iter().map(|s| s.name.as_str()).collect();
        ctx.reporter.info(format!(
            "watching {} for changes (Ctrl-C stops watching)",
            names.join(", ")
        ));
        loop {
            if ctx.is_interrupted() {
                return Ok(());
            }
            let batch = match changes.recv_timeout(Duration::from_millis(200)) {
                Ok(Ok(batch)) => batch,
                Ok(Err(e)) => {
                    ctx.reporter.warn(format!("watching files: {e}"));
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    anyhow::bail!("the file watcher stopped; run `cargo xtask dev` again")
                }
            };
            let seen = Instant::now();
            let paths: BTreeSet<PathBuf> = batch.into_iter().map(|e| e.path).collect();
            let mut affected: Vec<&Service> = Vec::new();
            let mut relevant = Vec::new();
            for path in paths.iter().filter(|p| sources.changed(p)) {
                let hit = affected_by(&ctx.root, watched, path);
                if !hit.is_empty() {
                    relevant.push(ctx.show(path));
                }
                for service in hit {
                    if !affected.iter().any(|s| s.name == service.name) {
                        affected.push(service);
                    }
                }
            }
            if affected.is_empty() {
                continue;
            }
            affected.sort_by(|a, b| a.name.cmp(&b.name));
            let shown = match relevant.len() {
                1 => relevant[0].clone(),
                n => format!("{} and {} more", relevant[0], n - 1),
            };
            let names: Vec<&str> = affected.iter().map(|s| s.name.as_str()).collect();
            println!("changed {shown} → {}", names.join(", "));
            let _lock = ctx.lock_stack()?;
            if paths.iter().any(|p| p.ends_with(SERVICE_FILE)) {
                regenerate_compose_file(ctx);
            }
            update(ctx, runtime, &affected, seen, self.options.timeout);
        }
    }
}

/// Each API's settings, from which the compose file is generated.
const SERVICE_FILE: &str = "service.toml";

/// Writes the compose file again from the `service.toml` files as they are now, as `cargo
/// xtask compose` does; says so in one line when it changed.
fn regenerate_compose_file(ctx: &Ctx) {
    let stack = match Stack::load(&ctx.root) {
        Ok(stack) => stack,
        Err(e) => {
            println!("kept {COMPOSE_FILE} as it was because a {SERVICE_FILE} does not read: {e:#}");
            return;
        }
    };
    let path = ctx.root.join(COMPOSE_FILE);
    let expected = render(&stack);
    if std::fs::read_to_string(&path).is_ok_and(|current| current == expected) {
        return;
    }
    match ctx.runner.write_file(&path, expected) {
        Ok(()) => println!(
            "regenerated {COMPOSE_FILE} (ports and names take effect at the next `cargo xtask dev` or `up`)"
        ),
        Err(e) => println!("could not regenerate {COMPOSE_FILE}: {e:#}"),
    }
}

/// What `dev` watches for `services`: each one's crate folder and the shared library's.
fn watched_folders(ctx: &Ctx, services: &[&Service]) -> Vec<PathBuf> {
    let mut folders = vec![ctx.root.join(SHARED_LIBRARY)];
    folders.extend(services.iter().map(|s| s.dir.clone()));
    folders
}

/// Whether `path` is an editor's scratch file, not a source: Vim's swap files and its write
/// probe `4913`, Emacs's lock and autosave files, backups ending in `~`, and the temporary
/// files editors write before renaming them over the original.
fn is_editor_temp(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return true;
    };
    name == "4913"
        || name.ends_with('~')
        || name.starts_with(".#")
        || (name.starts_with('#') && name.ends_with('#'))
        || [".swp", ".swo", ".swx", ".tmp", ".bak"]
            .iter()
            .any(|ext| name.ends_with(ext))
        || name.contains(".tmp.")
}

/// The services in `services` a change to `path` affects: all of them for the shared library,
/// else the one whose folder holds it; none for build output, git's files and editors'
/// scratch files.
fn affected_by<'a>(root: &Path, services: &[&'a Service], path: &Path) -> Vec<&'a Service> {
    let generated = path
        .components()
        .any(|c| matches!(c.as_os_str().to_str(), Some("target" | ".git")));
    if generated || is_editor_temp(path) {
        return Vec::new();
    }
    if path.starts_with(root.join(SHARED_LIBRARY)) {
        return services.to_vec();
    }
    services
        .iter()
        .copied()
        .filter(|s| path.starts_with(&s.dir))
        .collect()
}

/// The contents of the watched files as last seen, by a hash of each. The watcher reports
/// files being opened and read too (a build reads every source): only a file whose contents
/// changed, appeared or went away is a change.
struct Sources {
    hashes: HashMap<PathBuf, u64>,
}

fn content_hash(path: &Path) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    Some(hasher.finish())
}

impl Sources {
    /// Every file below `folders`, build output and git's files aside.
    fn read(folders: &[PathBuf]) -> Self {
        let mut hashes = HashMap::new();
        let mut pending: Vec<PathBuf> = folders.to_vec();
        while let Some(dir) = pending.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let skipped = matches!(entry.file_name().to_str(), Some("target" | ".git"));
                match entry.file_type() {
                    Ok(kind) if kind.is_dir() && !skipped => pending.push(path),
                    Ok(kind) if kind.is_file() => {
                        if let Some(hash) = content_hash(&path) {
                            hashes.insert(path, hash);
                        }
                    }
                    _ => {}
                }
            }
        }
        Self { hashes }
    }

    /// Whether `path`'s contents differ from when last seen (remembering them as they are).
    fn changed(&mut self, path: &Path) -> bool {
        if path.is_dir() {
            return false;
        }
        let now = content_hash(path);
        let before = match now {
            Some(hash) => self.hashes.insert(path.to_owned(), hash),
            None => self.hashes.remove(path),
        };
        before != now
    }
}

/// Builds `services` and swaps in each new version that passes its checks; says on one line
/// per event what happened. Never fails: whatever goes wrong keeps the old version serving.
fn update(
    ctx: &Ctx,
    runtime: &mut dyn Runtime,
    services: &[&Service],
    seen: Instant,
    timeout_secs: u64,
) {
    let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
    let started = Instant::now();
    if let Err(e) = binaries::build(ctx, services) {
        println!(
            "kept the old {} because the build failed:\n{e:#}",
            names.join(", ")
        );
        return;
    }
    println!(
        "built {} in {:.1} s",
        names.join(", "),
        started.elapsed().as_secs_f64()
    );
    for service in services {
        match swap(ctx, runtime, service, timeout_secs) {
            Ok(()) => {
                let live = seen.elapsed().as_secs_f64();
                println!(
                    "{} live ({live:.1} s after the change was seen)",
                    service.name
                );
                retrain_if_the_model_changed(ctx, runtime, service);
            }
            Err(why) => println!("kept the old {} because {why:#}", service.name),
        }
    }
}

/// Retrains `service` (as `cargo xtask retrain` does, and reloads it) when the build now live
/// trains another model than the one it serves: its training code changed. Whether it does is
/// asked of the build itself: it trains on the served model's data with its seed, untracked,
/// in a folder of its own, and the model's fingerprint (its version) is compared.
fn retrain_if_the_model_changed(ctx: &Ctx, runtime: &mut dyn Runtime, service: &Service) {
    let Some(served) = training::served_metrics(ctx, service) else {
        return;
    };
    let (Some(seed), Some(version), Some(data_sha)) = (
        served["seed"].as_u64(),
        served["model_version"].as_str(),
        served["data_sha256"].as_str(),
    ) else {
        return;
    };
    let data = ctx.data_path(service);
    let same_data = crate::util::archive::hash_file(&data).is_ok_and(|(_, sha)| sha == data_sha);
    if !same_data {
        println!(
            "{} not retrained: its model was trained on other data than {}",
            service.name,
            ctx.show(&data)
        );
        return;
    }
    let started = Instant::now();
    let trained = tempfile::tempdir()
        .map_err(anyhow::Error::from)
        .and_then(|dir| {
            let models = dir.path().join("model");
            ctx.runner.run(&training::host_train_step(
                ctx,
                service,
                &data,
                &models,
                seed,
                &Tracking::Off,
                &[],
            ))?;
            let metrics: serde_json::Value =
                serde_json::from_slice(&std::fs::read(models.join("current/metrics.json"))?)?;
            Ok(metrics["model_version"]
                .as_str()
                .unwrap_or_default()
                .to_owned())
        });
    match trained {
        Ok(probe) if probe == version => println!(
            "{} trains the same model: kept it (checked in {:.1} s)",
            service.name,
            started.elapsed().as_secs_f64()
        ),
        Ok(probe) => {
            println!(
                "{} trains another model now ({probe}, serving {version}): retraining",
                service.name
            );
            match retrain(ctx, runtime, service, &data, seed) {
                Ok(version) => println!("{} retrained: serving model {version}", service.name),
                Err(e) => println!("kept the old model of {} because {e:#}", service.name),
            }
        }
        Err(e) => println!(
            "kept the old model of {} because training with the new build failed: {e:#}",
            service.name
        ),
    }
}

/// Trains `service` where it runs, as `cargo xtask retrain SERVICE --seed SEED` does (tracked
/// in the stack's MLflow when it answers, not registered), and reloads it: the version served.
fn retrain(
    ctx: &Ctx,
    runtime: &mut dyn Runtime,
    service: &Service,
    data: &Path,
    seed: u64,
) -> Result<String> {
    let mlflow = ctx.stack.mlflow();
    let tracking = if runtime.state(ctx, mlflow)?.running
        && http::healthy(&ctx.health_url(mlflow), Duration::from_secs(3))
    {
        Tracking::On {
            uri: ctx.url(mlflow, ""),
            register: false,
            promote: false,
        }
    } else {
        Tracking::Off
    };
    runtime.train(ctx, service, data, seed, &tracking, &[])?;
    let version = training::served_metrics(ctx, service)
        .and_then(|m| m["model_version"].as_str().map(str::to_owned))
        .context("training finished but wrote no metrics.json")?;
    let asked_at = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    if runtime.reload(ctx, service)? {
        training::wait_for_model(ctx, service, &version, &asked_at, RELOAD_TIMEOUT_SECS)?;
    }
    Ok(version)
}

/// How long a service gets to load a retrained model.
const RELOAD_TIMEOUT_SECS: u64 = 30;

/// Starts `service`'s new build beside the running one, checks it, and hands its ports over.
fn swap(ctx: &Ctx, runtime: &mut dyn Runtime, service: &Service, timeout_secs: u64) -> Result<()> {
    let candidate = runtime.start_candidate(ctx, service)?;
    let checked = check_candidate(ctx, service, &candidate, timeout_secs);
    if let Err(e) = runtime.end_candidate(ctx, service, candidate, checked.is_ok()) {
        ctx.reporter.warn(format!(
            "stopping the new {} beside the old: {e:#}",
            service.name
        ));
    }
    checked?;
    println!("{} healthy and passed its smoke check", service.name);
    runtime.hand_over(ctx, service)
}

/// How long a new version that answers, but not healthy, gets to become healthy: the APIs
/// load their model in well under a second.
const UNHEALTHY_GRACE: Duration = Duration::from_secs(5);

/// Waits until the candidate answers healthy on every endpoint, then runs the smoke checks.
fn check_candidate(
    ctx: &Ctx,
    service: &Service,
    candidate: &Candidate,
    timeout_secs: u64,
) -> Result<()> {
    let endpoints = service.endpoints();
    let health_url = |e: &crate::stack::Endpoint| {
        format!("http://127.0.0.1:{}{}", candidate.port(e), e.health_path)
    };
    let log_tail = || candidate.log_tail(ctx, 15);
    let mut last = "it never answered".to_owned();
    // Answering, but not healthy: given a few seconds to finish loading, then refused.
    let mut answering_since: Option<Instant> = None;
    let answered = poll::until(
        Duration::from_secs(timeout_secs),
        Duration::from_millis(40),
        || {
            if let Some(why) = candidate.exited(ctx) {
                return Some(Err(format!("it exited ({why})")));
            }
            let mut all = true;
            for e in &endpoints {
                match http::get(&health_url(e), Duration::from_secs(1)) {
                    Ok(a) if http::is_healthy(&a) => {}
                    Ok(a) => {
                        last =
                            format!("{} answered {}: {}", health_url(e), a.status, a.body.trim());
                        answering_since.get_or_insert_with(Instant::now);
                        all = false;
                    }
                    Err(_) => all = false,
                }
            }
            if all {
                return Some(Ok(()));
            }
            answering_since
                .is_some_and(|since| since.elapsed() > UNHEALTHY_GRACE)
                .then(|| Err(format!("it is not healthy: {last}")))
        },
    );
    match answered {
        Some(Ok(())) => {}
        Some(Err(why)) => anyhow::bail!("the new version failed: {why}; its log:\n{}", log_tail()),
        None => anyhow::bail!(
            "the new version was not healthy within {timeout_secs} s: {last}; its log:\n{}",
            log_tail()
        ),
    }
    let reach = observe::Reach {
        host: observe::LOOPBACK,
        port_of: &|e| candidate.port(e),
    };
    let checks = observe::checks_at(&reach, service);
    let failed: Vec<String> = checks
        .iter()
        .filter_map(|c| {
            c.result
                .as_ref()
                .err()
                .map(|why| format!("{}: {why}", c.name))
        })
        .collect();
    anyhow::ensure!(
        failed.is_empty(),
        "the new version failed its checks: {}",
        failed.join("; ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::Stack;

    fn workspace() -> (PathBuf, Stack) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        (root.to_owned(), Stack::load(root).unwrap())
    }

    fn names(services: Vec<&Service>) -> Vec<&str> {
        services.into_iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn a_change_reaches_the_services_built_from_it() {
        let (root, stack) = workspace();
        let apis: Vec<&Service> = stack.apis().collect();
        let all = names(apis.clone());
        assert!(all.len() >= 3, "{all:?}");
        let at = |rel: &str| names(affected_by(&root, &apis, &root.join(rel)));
        assert_eq!(at("services/serving/src/server.rs"), all);
        assert_eq!(at("services/serving/Dockerfile.api"), all);
        assert_eq!(at("services/bankchurn/src/main.rs"), ["bankchurn"]);
        assert_eq!(at("services/bankchurn/service.toml"), ["bankchurn"]);
        assert_eq!(at("services/telecom/src/lib.rs"), ["telecom"]);
        assert!(at("services/mlflow/server.py").is_empty());
        assert!(at("README.md").is_empty());
        // Only the watched services: a change elsewhere is no one's.
        let bankchurn: Vec<&Service> = apis
            .iter()
            .copied()
            .filter(|s| s.name == "bankchurn")
            .collect();
        let only = |rel: &str| names(affected_by(&root, &bankchurn, &root.join(rel)));
        assert_eq!(only("services/serving/src/lib.rs"), ["bankchurn"]);
        assert!(only("services/telecom/src/lib.rs").is_empty());
    }

    #[test]
    fn only_files_whose_contents_changed_count() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        let lib = src.join("lib.rs");
        std::fs::write(&lib, "fn a() {}").unwrap();
        let mut sources = Sources::read(&[dir.path().to_owned()]);
        // Opened, read or saved unchanged: no change; nor is the folder itself.
        assert!(!sources.changed(&lib));
        std::fs::write(&lib, "fn a() {}").unwrap();
        assert!(!sources.changed(&lib));
        assert!(!sources.changed(&src));
        std::fs::write(&lib, "fn b() {}").unwrap();
        assert!(sources.changed(&lib));
        assert!(
            !sources.changed(&lib),
            "seen once, the new contents are remembered"
        );
        let new = src.join("new.rs");
        std::fs::write(&new, "").unwrap();
        assert!(sources.changed(&new));
        std::fs::remove_file(&new).unwrap();
        assert!(sources.changed(&new));
        assert!(!sources.changed(&new));
    }

    #[test]
    fn build_output_git_and_editor_scratch_files_are_ignored() {
        let (root, stack) = workspace();
        let apis: Vec<&Service> = stack.apis().collect();
        let at = |rel: &str| affected_by(&root, &apis, &root.join(rel)).len();
        for ignored in [
            "services/bankchurn/target/release/bankchurn",
            "services/serving/.git/index",
            "services/bankchurn/src/.main.rs.swp",
            "services/bankchurn/src/main.rs~",
            "services/bankchurn/src/.#main.rs",
            "services/bankchurn/src/#main.rs#",
            "services/bankchurn/src/4913",
            "services/bankchurn/src/main.rs.tmp.1234.5678",
        ] {
            assert_eq!(at(ignored), 0, "{ignored}");
        }
        assert_eq!(at("services/bankchurn/src/main.rs"), 1);
    }
}

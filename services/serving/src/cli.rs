//! The command line every service binary shares: `generate-data`, `train`, `serve`,
//! `healthcheck`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::api::API_VERSION;
use crate::artifact::{self, Artifact, FORMAT_VERSION};
use crate::http::{self, RequestLimits};
use crate::promotion::promote_help;
use crate::provenance;
use crate::server::{self, ConnectionLimits, PortSharing};
use crate::service::{Dashboard, Service};
use crate::tracking::{StagedModel, Tracking, TrackingArgs};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a synthetic CSV with exactly the public dataset's columns, deterministic from the seed.
    GenerateData {
        /// Rows to write [default: the size of the public file]
        #[arg(long)]
        rows: Option<usize>,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Where to write the CSV (parent folders are created).
        #[arg(long)]
        out: PathBuf,
    },
    /// Train on a CSV (synthetic or the real public file), evaluate on a held-out 20%, and
    /// publish the model with its metrics as a new version in the model directory:
    /// DIR/versions/<model_version>/{model.json,metrics.json}, with DIR/current pointing at it.
    /// Data that cannot give a meaningful model is refused and the served model left as it was.
    Train {
        #[arg(long)]
        data_path: PathBuf,
        #[arg(long, env = "MODEL_DIR")]
        model_dir: PathBuf,
        /// Seed of the train/test split and of the booster.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[command(flatten)]
        tracking: TrackingArgs,
    },
    /// Serve the HTTP API. Starts and answers even without a model (health then says 503).
    /// Loads DIR/current/model.json and never writes to DIR; SIGHUP loads it again and swaps
    /// it in if it passes validation (/health's `last_reload` tells the outcome); SIGTERM
    /// finishes in-flight requests, then exits within --shutdown-timeout.
    Serve {
        #[arg(long, env = "PORT", default_value_t = 8000)]
        port: u16,
        /// Also serve the service's dashboard on this port (same host, limits and shutdown);
        /// its /health says 200 once it can draw its pages. Only for a service with one.
        #[arg(long, env = "DASHBOARD_PORT")]
        dashboard_port: Option<u16>,
        #[arg(long, env = "HOST", default_value = "0.0.0.0")]
        host: std::net::IpAddr,
        #[arg(long, env = "MODEL_DIR", default_value = "models")]
        model_dir: PathBuf,
        /// Bind the ports with SO_REUSEPORT, so a new version can listen on them beside this
        /// one and take over with no gap (`cargo xtask dev`): on Linux the newest version to
        /// bind gets every new connection, and the old one drains. Off by default: a second copy
        /// started by mistake then fails to bind instead of silently sharing the port.
        #[arg(long, env = "REUSE_PORT")]
        reuse_port: bool,
        /// Share the ports with other copies of this service (SO_REUSEPORT, as `--reuse-port`),
        /// where the kernel hands each new connection to any copy listening: listen only once
        /// the model is loaded, exit if none loads (a copy that cannot answer must take no
        /// connection), and name this copy in an `x-serving-instance` header, so that its
        /// `healthcheck` tells its own answers from the others' (a swarm's tasks on their
        /// nodes' host network, updated start-first).
        #[arg(long, env = "SHARED_PORT")]
        shared_port: bool,
        /// Count the rows predicted on for `/drift` (a few atomic increments per row); `false`
        /// turns it off, and `/drift` then says so.
        #[arg(long, env = "DRIFT_COUNTING", default_value_t = true, action = clap::ArgAction::Set)]
        drift_counting: bool,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Exit 0 only if the service answers healthy (the container HEALTHCHECK).
    Healthcheck {
        /// [default: http://127.0.0.1:$PORT/health, PORT defaulting to 8000]
        #[arg(long)]
        url: Option<String>,
        /// Seconds to wait for an answer.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
    /// Ask the running server to load its model again (sends it SIGHUP). In a container,
    /// `docker exec CONTAINER /app reload`: on Docker 20.10, `docker kill --signal HUP` would
    /// also mark the container as stopped by hand and turn off its restart policy.
    Reload {
        /// The server's process id [default: 1, the server in its container].
        #[arg(long, default_value_t = 1)]
        pid: i32,
    },
    /// The floor `cargo xtask bench` measures `/predict` against: the same HTTP stack
    /// answering a constant JSON body of `--body-bytes` bytes, with no middleware and no model.
    #[command(hide = true)]
    ServeFloor {
        #[arg(long, default_value = "127.0.0.1")]
        host: std::net::IpAddr,
        #[arg(long)]
        port: u16,
        /// The size of the constant answer: that of the service's own `/predict` answer (at
        /// least 14, the smallest JSON body it pads).
        #[arg(long, value_parser = clap::value_parser!(u32).range(14..))]
        body_bytes: u32,
    },
}

/// Connection and request limits of `serve`; durations like `5s`, `500ms`, `1m`.
#[derive(clap::Args)]
struct LimitArgs {
    /// Time for a client to send a request's headers, counted from when the server waits for
    /// them (slowloris protection).
    #[arg(long, env = "HEADER_READ_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    header_read_timeout: Duration,
    /// Close a connection idle this long (no request in flight, no bytes arriving).
    #[arg(long, env = "IDLE_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
    /// Time for a request's whole body to arrive once its headers are in (then 408).
    #[arg(long, env = "BODY_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    body_timeout: Duration,
    /// Time for a whole request, headers to answer (then 408).
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    request_timeout: Duration,
    /// Most connections open at once (lowered to what the open-files limit allows); more get
    /// an immediate 503.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 4096)]
    max_connections: usize,
    /// Largest request body in bytes (then 413); a 1000-item batch needs about 300 KB.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// Most dashboard pages being drawn or waiting to be at once; more get a 503 page with
    /// Retry-After, so that a crowd on the dashboard waits in its own queue, briefly.
    #[arg(long, env = "DASHBOARD_MAX_IN_FLIGHT", default_value_t = 8)]
    dashboard_max_in_flight: usize,
    /// Most memory, in bytes, that request bodies still arriving in pieces may hold
    /// together (a slow client's body is buffered until complete); past it such a request
    /// gets a 503 with Retry-After. Keep it well under the container's memory limit.
    #[arg(long, env = "MAX_BUFFERED_BODY_BYTES", default_value_t = 64 << 20)]
    max_buffered_body_bytes: usize,
    /// After SIGTERM or Ctrl-C, time for in-flight requests to finish before exiting (keep
    /// it under the container's stop timeout, 10 s by default).
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "8s", value_parser = humantime::parse_duration)]
    shutdown_timeout: Duration,
}

impl LimitArgs {
    fn split(&self) -> (ConnectionLimits, RequestLimits) {
        (
            ConnectionLimits {
                header_read_timeout: self.header_read_timeout,
                idle_timeout: self.idle_timeout,
                max_connections: self.max_connections.max(1),
                shutdown_timeout: self.shutdown_timeout,
            },
            RequestLimits {
                body_bytes: self.max_body_bytes,
                body_timeout: self.body_timeout,
                request_timeout: self.request_timeout,
                buffered_body_bytes: self.max_buffered_body_bytes,
                dashboard_in_flight: self.dashboard_max_in_flight.max(1),
                ..RequestLimits::default()
            },
        )
    }
}

/// The healthcheck's URL when none is given: this container's own port.
fn default_health_url(port: Option<&str>) -> String {
    let port = port
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .unwrap_or("8000");
    format!("http://127.0.0.1:{port}/health")
}

/// The `main` of every service binary.
pub fn main<S: Service>() -> ExitCode {
    crate::telemetry::init();
    let title = match S::MANIFEST.title() {
        Ok(title) => title,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let command = Cli::command()
        .name(S::MANIFEST.name)
        .about(format!("{title}: {}", S::DESCRIPTION))
        .version(API_VERSION)
        .mut_subcommand("train", |train| {
            train.mut_arg("promote", |a| a.help(promote_help(S::PROMOTION_GATES)))
        });
    let cli = match Cli::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match run::<S>(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run<S: Service>(command: Command) -> Result<()> {
    match command {
        Command::GenerateData { rows, seed, out } => {
            generate::<S>(rows.unwrap_or(S::DEFAULT_ROWS), seed, &out)
        }
        Command::Train {
            data_path,
            model_dir,
            seed,
            tracking,
        } => train::<S>(&data_path, &model_dir, seed, &tracking),
        Command::Serve {
            port,
            dashboard_port,
            host,
            model_dir,
            reuse_port,
            shared_port,
            drift_counting,
            limits,
        } => {
            check_dashboard_port::<S>(port, dashboard_port)?;
            let (connections, requests) = limits.split();
            serve::<S>(
                Listen {
                    addr: SocketAddr::new(host, port),
                    dashboard_addr: dashboard_port.map(|p| SocketAddr::new(host, p)),
                    // Copies sharing a port take connections by the kernel's hash; a new
                    // version handed the port takes every new one.
                    sharing: if shared_port {
                        PortSharing::Spread
                    } else if reuse_port {
                        PortSharing::Newest
                    } else {
                        PortSharing::Exclusive
                    },
                    shared_port,
                },
                model_dir,
                drift_counting,
                connections,
                requests,
            )
        }
        Command::Healthcheck { url, timeout } => {
            let url =
                url.unwrap_or_else(|| default_health_url(std::env::var("PORT").ok().as_deref()));
            crate::healthcheck::check(&url, Duration::from_secs(timeout))
        }
        Command::Reload { pid } => {
            let process = rustix::process::Pid::from_raw(pid)
                .with_context(|| format!("{pid} is not a process id"))?;
            rustix::process::kill_process(process, rustix::process::Signal::HUP)
                .with_context(|| format!("cannot signal process {pid}"))?;
            println!("asked process {pid} to reload its model; its /health tells the outcome");
            Ok(())
        }
        Command::ServeFloor {
            host,
            port,
            body_bytes,
        } => crate::floor::serve(SocketAddr::new(host, port), body_bytes as usize),
    }
}

/// A dashboard port only for a service with a dashboard, and never the API's own port.
fn check_dashboard_port<S: Service>(port: u16, dashboard_port: Option<u16>) -> Result<()> {
    let Some(dashboard_port) = dashboard_port else {
        return Ok(());
    };
    anyhow::ensure!(
        S::Dashboard::ENABLED,
        "{} has no dashboard: drop --dashboard-port {dashboard_port} (or unset DASHBOARD_PORT)",
        S::MANIFEST.name
    );
    anyhow::ensure!(
        dashboard_port != port || port == 0,
        "--dashboard-port {dashboard_port} is the API's --port too: give the dashboard a port of its own"
    );
    Ok(())
}

fn generate<S: Service>(rows: usize, seed: u64, out: &Path) -> Result<()> {
    anyhow::ensure!(rows > 0, "--rows must be at least 1");
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    artifact::set_readable(tmp.as_file())?;
    {
        let mut writer = std::io::BufWriter::new(tmp.as_file_mut());
        S::generate_data(rows, seed, &mut writer)?;
        std::io::Write::flush(&mut writer)?;
    }
    tmp.persist(out)
        .with_context(|| format!("cannot write {}", out.display()))?;
    provenance::write_note(out, seed, rows)?;
    tracing::info!(rows, seed, out = %out.display(), "generated synthetic data");
    Ok(())
}

fn train<S: Service>(
    data: &Path,
    model_dir: &Path,
    seed: u64,
    tracking: &TrackingArgs,
) -> Result<()> {
    // Before training, so that an absent MLflow fails fast.
    let tracking = Tracking::from_args::<S>(tracking)?;
    let started = Instant::now();
    let name = S::MANIFEST.name;
    let (model, mut metrics) = S::train(data, seed).with_context(|| {
        format!(
            "training {name} on {} failed; the served model is untouched",
            data.display()
        )
    })?;
    // The data file by name and content, never by a path of the machine it was trained on.
    metrics["service"] = name.into();
    metrics["seed"] = seed.into();
    metrics["data_file"] = data
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .into();
    let data_sha256 = artifact::file_sha256(data)?;
    if let Some(generated) = provenance::generated(data, &data_sha256) {
        metrics[provenance::METRICS_KEY] = serde_json::to_value(generated)?;
    }
    metrics["data_sha256"] = data_sha256.into();
    // What the dashboard draws, stored in the version with the model it describes.
    let files = S::Dashboard::version_files(data).with_context(|| {
        format!(
            "preparing the dashboard's data from {} failed; the served model is untouched",
            data.display()
        )
    })?;
    // The training data's profile, which the served model's live traffic is compared with.
    let mut files = files;
    files.extend(crate::drift::version_file(
        data,
        &S::example_request(),
        |request| S::validate(request).is_ok(),
    )?);
    if !files.is_empty() {
        metrics[artifact::VERSION_FILES_KEY] = artifact::describe_files(&files);
    }
    metrics["training_seconds"] = started.elapsed().as_secs_f64().into();
    let artifact = Artifact {
        service: name.to_owned(),
        format_version: FORMAT_VERSION,
        seed,
        features: S::FEATURES.iter().map(|f| f.to_string()).collect(),
        model,
    };
    // MLflow: recorded before the model is saved (saving is what activates it), so a failed
    // tracking or a refused promotion leaves the served model as it was.
    if let Some(tracking) = &tracking {
        let unchanged = || format!("the model in {} is unchanged", model_dir.display());
        let model_json = serde_json::to_vec(&artifact)?;
        metrics["model_version"] = artifact::version_of(&model_json).into();
        let staged = StagedModel {
            model_json: &model_json,
            metrics: &metrics,
            data_path: data,
        };
        let outcome = tracking
            .record(&staged)
            .with_context(|| format!("tracking in MLflow failed; {}", unchanged()))?;
        outcome
            .ensure_promoted()
            .map_err(|e| anyhow::anyhow!("{e}; {}", unchanged()))?;
        outcome.record_in(&mut metrics);
    }
    let version = artifact::save(model_dir, &artifact, &metrics, &files)?;
    metrics["model_version"] = version.clone().into();
    tracing::info!(model_version = %version, model_dir = %model_dir.display(), seconds = started.elapsed().as_secs_f64(), "trained");
    println!("{}", serde_json::to_string_pretty(&metrics)?);
    Ok(())
}

/// Where `serve` listens.
struct Listen {
    addr: SocketAddr,
    dashboard_addr: Option<SocketAddr>,
    sharing: PortSharing,
    /// `serve --shared-port`.
    shared_port: bool,
}

fn serve<S: Service>(
    listen: Listen,
    model_dir: PathBuf,
    drift_counting: bool,
    connections: ConnectionLimits,
    requests: RequestLimits,
) -> Result<()> {
    use futures_util::FutureExt;
    let Listen {
        addr,
        dashboard_addr,
        sharing,
        shared_port,
    } = listen;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // The dashboard draws its pages on threads of its own: a page takes milliseconds of CPU,
    // and drawn on the API's threads, 64 clients of the dashboard held every /health and
    // /predict behind them for 100-360 ms.
    let dashboard_runtime = match dashboard_addr {
        Some(_) => Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .max_blocking_threads(DASHBOARD_THREADS)
                .thread_name("dashboard")
                .enable_all()
                .build()?,
        ),
        None => None,
    };
    let dashboard_threads = dashboard_runtime.as_ref().map(|r| r.handle().clone());
    let served = runtime.block_on(async move {
        // Before the ports are bound: a SIGTERM that arrives as soon as a client can connect
        // (the model still loading) must stop the server cleanly, not kill it.
        let stop = ShutdownSignals::register();
        // SIGHUP too: its default action would end the server as well.
        let hangups = listen_for_hangups();
        let bind_all = || -> Result<_> {
            let listener = bind(addr, sharing, "")?;
            let dashboard_listener = match dashboard_addr {
                Some(addr) => Some(bind(addr, sharing, " for the dashboard")?),
                None => None,
            };
            Ok((listener, dashboard_listener))
        };
        // Alone on its ports, the server listens at once and says "loading" meanwhile;
        // sharing them, it listens only once it can answer: connections handed to a copy
        // still loading would wait for the load, and be reset if it failed (with
        // `--reuse-port` the newest copy even takes every new connection).
        let early = if matches!(sharing, PortSharing::Exclusive) {
            Some(bind_all()?)
        } else {
            None
        };
        let dir = model_dir.clone();
        let dashboard = dashboard_addr.is_some();
        let state = tokio::task::spawn_blocking(move || {
            let state = http::AppState::<S>::from_dir(dir, requests, dashboard);
            state.set_drift_counting(drift_counting);
            release_freed_memory();
            state
        })
        .await?;
        let (listener, dashboard_listener) = match early {
            Some(bound) => bound,
            None => {
                if shared_port && state.model.get().is_none() {
                    let why = state
                        .model
                        .last_reload()
                        .and_then(|r| r.reason)
                        .unwrap_or_else(|| "no model".into());
                    bail!("no model loaded ({why}): with --shared-port a copy without one does not listen, the others answer");
                }
                bind_all()?
            }
        };
        let instance = shared_port.then(crate::healthcheck::instance).flatten();
        if let Some(hangups) = hangups {
            tokio::spawn(reload_on_sighup(state.clone(), hangups));
        }
        tracing::info!(%addr, service = S::MANIFEST.name, model_dir = %model_dir.display(), "listening");
        // Both ports stop on the same signal, each finishing its in-flight requests.
        let shutdown = stop.received().shared();
        let api = crate::server::serve(listener, named(http::router(state.clone()), instance.clone()), connections, shutdown.clone());
        match dashboard_listener.zip(dashboard_threads) {
            Some((listener, threads)) => {
                let addr = listener.local_addr()?;
                tracing::info!(%addr, dashboard = S::Dashboard::TITLE, "dashboard listening");
                // Moved to the dashboard's runtime, so its connections are driven there.
                let listener = listener.into_std()?;
                let router = named(crate::dashboard::router(state), instance);
                let pages = threads.spawn(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    crate::server::serve(listener, router, connections, shutdown).await;
                    anyhow::Ok(())
                });
                let ((), pages) = tokio::join!(api, pages);
                pages.context("the dashboard's server failed")??;
            }
            None => api.await,
        }
        tracing::info!("stopped");
        Ok(())
    });
    // Outside the async context, where a runtime may be dropped.
    drop(dashboard_runtime);
    served
}

/// `router`, its answers carrying this copy's name when it shares its ports.
fn named(router: axum::Router, instance: Option<String>) -> axum::Router {
    let Some(value) = instance.and_then(|i| axum::http::HeaderValue::from_str(&i).ok()) else {
        return router;
    };
    router.layer(axum::middleware::map_response(
        move |mut response: axum::response::Response| {
            let value = value.clone();
            async move {
                response
                    .headers_mut()
                    .insert(crate::healthcheck::INSTANCE_HEADER, value);
                response
            }
        },
    ))
}

/// Threads that draw the dashboard's pages (beside the one of its runtime that accepts and
/// reads requests): one draws as fast as the clients of a dashboard need, and leaves the
/// API's threads the rest of the machine.
const DASHBOARD_THREADS: usize = 1;

/// Listens on `addr` (see [`server::bind`]), saying which port could not be had.
fn bind(addr: SocketAddr, sharing: PortSharing, purpose: &str) -> Result<tokio::net::TcpListener> {
    server::bind(addr, sharing).with_context(|| {
        format!(
            "cannot listen on {addr}{purpose}: is another process using port {}?",
            addr.port()
        )
    })
}

/// SIGHUP, listened for from now on (before the ports are bound, like the stop signals).
fn listen_for_hangups() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{signal, SignalKind};
    signal(SignalKind::hangup())
        .inspect_err(|e| tracing::warn!(error = %e, "cannot listen for SIGHUP: reloading is off"))
        .ok()
}

/// Loads the model again on every SIGHUP; the outcome shows in /health's `last_reload`.
async fn reload_on_sighup<S: Service>(
    state: std::sync::Arc<http::AppState<S>>,
    mut hangups: tokio::signal::unix::Signal,
) {
    while hangups.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the model");
        let state = state.clone();
        let _ = tokio::task::spawn_blocking(move || {
            state.model.reload();
            release_freed_memory();
        })
        .await;
    }
}

/// Gives the memory freed after loading a model (the file's bytes, the old model and its
/// dashboard) back to the system. glibc keeps freed memory in its arenas otherwise, and each
/// reload would leave the process at its peak.
#[allow(unsafe_code)]
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // glibc's own declaration (malloc.h); no crate wraps it safely.
        extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: malloc_trim takes no pointer and only returns unused heap pages to the
        // system; glibc allows calling it at any time, from any thread.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// SIGTERM (docker stop) and SIGINT (Ctrl-C), listened for from the moment this is made: a
/// signal that arrives before [`ShutdownSignals::received`] is first polled is kept, not
/// given its default action (death by signal). tokio's `ctrl_c()` would only register when
/// polled, hence SIGINT by its number here too.
struct ShutdownSignals {
    terminate: Option<tokio::signal::unix::Signal>,
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignals {
    fn register() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        let listen = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for {name}: it will kill the server without a graceful stop");
                None
            }
        };
        Self {
            terminate: listen(SignalKind::terminate(), "SIGTERM"),
            interrupt: listen(SignalKind::interrupt(), "SIGINT"),
        }
    }

    /// Resolves on the first of them, received before or after this call.
    async fn received(self) {
        async fn recv(signal: Option<tokio::signal::unix::Signal>) {
            match signal {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            () = recv(self.terminate) => {},
            () = recv(self.interrupt) => {},
        }
        tracing::info!("shutdown requested");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_healthcheck_follows_port() {
        assert_eq!(default_health_url(None), "http://127.0.0.1:8000/health");
        assert_eq!(default_health_url(Some("")), "http://127.0.0.1:8000/health");
        assert_eq!(
            default_health_url(Some("9123")),
            "http://127.0.0.1:9123/health"
        );
    }
}

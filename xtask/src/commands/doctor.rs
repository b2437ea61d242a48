//! `cargo xtask doctor`: the runbook's incident section as checks. Each names what is wrong
//! and what to do; any failed check makes the exit code non-zero.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::build::engine;
use crate::build::{images, mlflow_base};
use crate::ctx::Ctx;
use crate::runner::Step;
use crate::runtime::{lifecycle, mlflow_server, ports};
use crate::runtime::{Kind as RuntimeKind, Runtime};
use crate::stack::mlflow_backend::{is_loopback, Postgres, HOST_FROM_CONTAINERS};
use crate::stack::Kind;
use crate::util::http;
use crate::util::postgres;

/// Diagnose the machine and the stack: toolchain, engine, image prerequisites, ports, models,
/// MLflow, Python, disk.
#[derive(clap::Args, Debug)]
pub struct Doctor {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Ok,
    Warn,
    Fail,
}

struct Finding {
    level: Level,
    check: String,
    detail: String,
    fix: Option<String>,
}

#[derive(Default)]
struct Report(Vec<Finding>);

impl Report {
    fn add(
        &mut self,
        level: Level,
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: Option<String>,
    ) {
        self.0.push(Finding {
            level,
            check: check.into(),
            detail: detail.into(),
            fix,
        });
    }
    fn ok(&mut self, check: impl Into<String>, detail: impl Into<String>) {
        self.add(Level::Ok, check, detail, None);
    }
    fn warn(
        &mut self,
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.add(Level::Warn, check, detail, Some(fix.into()));
    }
    fn fail(
        &mut self,
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.add(Level::Fail, check, detail, Some(fix.into()));
    }
}

fn check_toolchain(ctx: &Ctx, report: &mut Report) {
    for tool in ["cargo", "rustc"] {
        match ctx.runner.query_stdout(&Step::new(tool).arg("--version")) {
            Some(version) => report.ok(tool, version),
            None => report.fail(
                tool,
                format!("`{tool} --version` does not answer"),
                "install a stable Rust toolchain (https://rustup.rs)",
            ),
        }
    }
}

fn check_docker(ctx: &Ctx, report: &mut Report) {
    let engine = engine::version(ctx);
    match &engine {
        Ok(version) => report.ok("docker engine", format!("Docker Engine {version}")),
        Err(why) => report.warn(
            "docker engine",
            format!("{why:#}"),
            "start or install Docker for --runtime docker; the local runtime works without it",
        ),
    }
    if engine.is_ok() {
        let services: Vec<_> = ctx.stack.services.iter().collect();
        match images::preflight(ctx, &services, false) {
            Ok(()) => report.ok("image prerequisites", "every image can be built"),
            Err(why) => report.warn(
                "image prerequisites",
                format!("{why:#}"),
                "until then `demo` falls back to the local runtime",
            ),
        }
        let debootstrap = which::which("debootstrap");
        match debootstrap {
            Ok(path) => report.ok("debootstrap", path.display().to_string()),
            Err(_) => report.ok(
                "debootstrap",
                format!(
                    "not installed (needed only when no {} image can be had)",
                    mlflow_base::PYTHON_BASE
                ),
            ),
        }
    }
    match engine::compose_frontend(ctx) {
        Ok(command) => {
            let version = engine::compose_version(ctx, &command).unwrap_or_default();
            let kind = if command.len() == 1 {
                " (legacy front-end)"
            } else {
                ""
            };
            report.ok("compose", format!("{} {version}{kind}", command.join(" ")));
        }
        Err(why) => report.warn(
            "compose",
            format!("{why:#}"),
            "install the compose plugin (or Debian's docker-compose) for --runtime docker",
        ),
    }
}

fn check_services(ctx: &Ctx, runtime: &dyn Runtime, report: &mut Report) -> Result<()> {
    // One inspection per service (on docker each is a process), for all its endpoints.
    let states = ctx
        .stack
        .services
        .iter()
        .map(|service| Ok((service.name.as_str(), runtime.state(ctx, service)?)))
        .collect::<Result<std::collections::HashMap<_, _>>>()?;
    let running: Vec<&str> = ctx
        .stack
        .services
        .iter()
        .map(|s| s.name.as_str())
        .filter(|name| states[name].running)
        .collect();
    for (service, endpoint) in ctx.stack.endpoints() {
        let port = ctx.endpoint_port(&endpoint);
        let check = format!("{} port {port}", service.label(&endpoint));
        let state = &states[service.name.as_str()];
        if state.running {
            match http::get(&ctx.endpoint_health_url(&endpoint), Duration::from_secs(3)) {
                Ok(a) if http::is_healthy(&a) => report.ok(
                    check,
                    format!("{} serves it, healthy ({})", service.name, state.id),
                ),
                answer => {
                    let why = match answer {
                        Ok(a) => format!("answers {}: {}", a.status, a.body.trim()),
                        Err(e) => format!("does not answer ({e:#})"),
                    };
                    // Docker keeps the last health probe's output: the most direct reason.
                    let log = state
                        .health_log
                        .clone()
                        .map(|h| format!("last health check: {h}"))
                        .unwrap_or_else(|| runtime.log_tail(ctx, service, 3))
                        .replace('\n', "\n      ");
                    report.fail(
                        check,
                        format!(
                            "{} is running ({}) but {why}\n      {log}",
                            service.name, state.id
                        ),
                        format!(
                            "read `cargo xtask logs {} --tail 50`, then `cargo xtask restart {}`",
                            service.name, service.name
                        ),
                    );
                }
            }
        } else if ports::in_use(port) {
            let holders = ports::holders(&ctx.runner, port);
            let kill = holders
                .iter()
                .map(|h| h.pid.to_string())
                .collect::<Vec<_>>()
                .join(" ");
            let fix = if kill.is_empty() {
                "free the port, or run the stack on other ports with --port-offset N".to_owned()
            } else {
                format!(
                    "stop it (`kill {kill}`), or run the stack on other ports with --port-offset N"
                )
            };
            report.fail(check, ports::describe_holders(ctx, port, &holders), fix);
        } else if !running.is_empty()
            && service.kind == Kind::Mlflow
            && lifecycle::runs_without_mlflow(ctx)
        {
            report.warn(
                check,
                format!(
                    "{} is not running: the stack was brought up with --no-mlflow, so training is not tracked",
                    service.name
                ),
                "start it with `cargo xtask up`",
            );
        } else if !running.is_empty() {
            // Part of the stack runs without it: MLflow stopped under running APIs, say.
            report.fail(
                check,
                format!(
                    "{} is down while {} {} running",
                    service.name,
                    running.join(", "),
                    if running.len() == 1 { "is" } else { "are" }
                ),
                format!(
                    "read `cargo xtask logs {} --tail 50`, then start it again with `cargo xtask up`",
                    service.name
                ),
            );
        } else {
            report.ok(check, "free");
        }
    }
    Ok(())
}

fn check_images(ctx: &Ctx, report: &mut Report) {
    for service in &ctx.stack.services {
        let image = service.versioned_image();
        if engine::image_exists(ctx, &image) {
            report.ok(format!("{} image", service.name), image);
        } else {
            report.fail(
                format!("{} image", service.name),
                format!("{image} is missing"),
                "build it: `cargo xtask images`",
            );
        }
    }
}

fn check_models(ctx: &Ctx, report: &mut Report) {
    for api in ctx.stack.apis() {
        let dir = ctx.model_dir(api);
        let check = format!("{} model", api.name);
        if ctx.model_file(api).is_file() {
            let metrics: serde_json::Value =
                std::fs::read(ctx.model_file(api).with_file_name("metrics.json"))
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .unwrap_or_default();
            let version = metrics["model_version"]
                .as_str()
                .unwrap_or("unknown version");
            report.ok(check, format!("{} ({version})", ctx.show(&dir)));
        } else {
            report.fail(
                check,
                format!("no model in {}", ctx.show(&dir)),
                format!("`cargo xtask demo` trains missing models (or `{} train --data-path CSV --model-dir {}`)", api.name, ctx.show(&dir)),
            );
        }
    }
}

/// Whether something listens at `host:port` (any of its addresses), within two seconds.
fn answers(host: &str, port: u16) -> bool {
    use std::net::{TcpStream, ToSocketAddrs};
    (host, port).to_socket_addrs().is_ok_and(|mut addrs| {
        addrs.any(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
    })
}

/// MLflow's PostgreSQL server answers (`pg_isready` where installed, else a TCP connect),
/// from the host and, on the docker runtime with a database on this machine, at the address
/// containers reach it by; and `pg_dump`/`pg_restore` are there for backup and restore.
fn check_postgres(ctx: &Ctx, pg: &Postgres, runtime: RuntimeKind, report: &mut Report) {
    let (host, port) = pg.address();
    let check = "mlflow database";
    let ready = match postgres::tool("pg_isready") {
        Ok(tool) => {
            let step = Step::new(tool.to_string_lossy())
                .args(["--timeout", "3"])
                .arg(format!("--dbname={}", pg.uri));
            ctx.runner
                .query(&step)
                .map(|out| (out.status.success(), "pg_isready"))
                .unwrap_or((false, "pg_isready"))
        }
        Err(_) => (answers(&host, port), "a TCP connect"),
    };
    match ready {
        (true, how) => report.ok(check, format!("{} answers ({how})", pg.shown())),
        (false, how) => report.fail(
            check,
            format!("{} does not answer ({how})", pg.shown()),
            "start PostgreSQL, or fix --mlflow-backend (XTASK_MLFLOW_BACKEND); the database must exist",
        ),
    }
    if runtime == RuntimeKind::Docker && is_loopback(&host) {
        // host-gateway is the default bridge's gateway: named in its IPAM config, or (as
        // Docker 20.10 leaves it unnamed there) the first address of its subnet.
        let gateway = ctx
            .runner
            .query_stdout(&Step::new("docker").args([
                "network",
                "inspect",
                "bridge",
                "--format",
                "{{range .IPAM.Config}}{{.Gateway}} {{.Subnet}}{{end}}",
            ]))
            .and_then(|text| {
                let mut words = text.split_whitespace().collect::<Vec<_>>();
                let subnet = words.pop()?;
                match words.pop() {
                    Some(gateway) => Some(gateway.to_owned()),
                    None => {
                        let network: std::net::Ipv4Addr = subnet.split('/').next()?.parse().ok()?;
                        Some(std::net::Ipv4Addr::from(u32::from(network) + 1).to_string())
                    }
                }
            });
        match gateway {
            Some(gateway) if answers(&gateway, port) => report.ok(
                "mlflow database from containers",
                format!("{HOST_FROM_CONTAINERS} ({gateway}):{port} answers"),
            ),
            Some(gateway) => report.fail(
                "mlflow database from containers",
                format!(
                    "{host} is this machine: MLflow's container reaches it as \
                     {HOST_FROM_CONTAINERS} ({gateway}), where nothing answers on port {port}"
                ),
                format!(
                    "make PostgreSQL listen there too (listen_addresses = 'localhost,{gateway}') \
                     and admit the networks Docker gives containers in pg_hba.conf, both of its \
                     default pools (host all all 172.16.0.0/12 scram-sha-256, and the same for \
                     192.168.0.0/16)"
                ),
            ),
            None => report.warn(
                "mlflow database from containers",
                "cannot read the docker bridge's gateway address",
                "`docker network inspect bridge`",
            ),
        }
    }
    for tool in ["pg_dump", "pg_restore"] {
        match postgres::tool(tool) {
            Ok(path) => report.ok(tool, path.display().to_string()),
            Err(_) => report.warn(
                tool,
                "not installed: `backup` and `restore` of the PostgreSQL store need it",
                "install PostgreSQL's client tools, at least as new as the server (Debian: postgresql-client)",
            ),
        }
    }
}

fn check_python(ctx: &Ctx, report: &mut Report) {
    match mlflow_server::check_python(ctx) {
        Ok(version) => {
            let env = if mlflow_server::is_installed(ctx) {
                format!(
                    "MLflow {} installed in {}",
                    mlflow_server::version(ctx),
                    ctx.show(&mlflow_server::venv_dir(ctx))
                )
            } else {
                "MLflow not installed yet (the first `up` installs it)".to_owned()
            };
            report.ok("python", format!("Python {version}; {env}"));
        }
        Err(e) => report.fail(
            "python",
            format!("{e:#}"),
            "install python3 with venv, or use --no-mlflow",
        ),
    }
}

/// Free bytes on the file system holding `path`.
fn free_bytes(path: &Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(path).ok()?;
    Some(stat.f_bavail * stat.f_frsize)
}

fn check_disk(ctx: &Ctx, report: &mut Report) {
    const GIB: u64 = 1 << 30;
    match free_bytes(&ctx.stack_dir) {
        Some(free) if free < 2 * GIB => report.fail(
            "disk",
            format!(
                "{:.1} GiB free at {}",
                free as f64 / GIB as f64,
                ctx.show(&ctx.stack_dir)
            ),
            "free space: `cargo clean`, `docker system prune`, old backups",
        ),
        Some(free) if free < 5 * GIB => report.warn(
            "disk",
            format!("{:.1} GiB free", free as f64 / GIB as f64),
            "images and MLflow artifacts need a few GiB",
        ),
        Some(free) => report.ok("disk", format!("{:.1} GiB free", free as f64 / GIB as f64)),
        None => report.warn("disk", "cannot read free space", "check `df -h`"),
    }
}

impl Doctor {
    pub fn run(self, ctx: &Ctx, runtime: &dyn Runtime) -> Result<()> {
        if ctx.dry_run() {
            ctx.runner
                .plan("doctor only reads: it would run the checks below");
        }
        let mut report = Report::default();
        check_toolchain(ctx, &mut report);
        check_docker(ctx, &mut report);
        check_services(ctx, runtime, &mut report)?;
        if runtime.kind() == RuntimeKind::Docker {
            check_images(ctx, &mut report);
        }
        check_models(ctx, &mut report);
        if let Some(pg) = ctx.mlflow_backend.postgres() {
            check_postgres(ctx, pg, runtime.kind(), &mut report);
        }
        if ctx.stack.services.iter().any(|s| s.kind == Kind::Mlflow) {
            check_python(ctx, &mut report);
        }
        check_disk(ctx, &mut report);

        let width = report.0.iter().map(|f| f.check.len()).max().unwrap_or(0);
        for f in &report.0 {
            let mark = match f.level {
                Level::Ok => "✓",
                Level::Warn => "!",
                Level::Fail => "✗",
            };
            println!("{mark} {:<width$}  {}", f.check, f.detail);
            if let Some(fix) = &f.fix {
                println!("  {:<width$}  → {fix}", "");
            }
            if f.level == Level::Fail {
                ctx.reporter
                    .error(&format!("doctor: {}", f.check), &f.detail);
            }
        }
        let failed = report.0.iter().filter(|f| f.level == Level::Fail).count();
        if failed > 0 {
            bail!("{failed} check(s) failed; each says what to do above");
        }
        Ok(())
    }
}

//! `compose/docker-compose.demo.yml`, generated from the stack's `service.toml` files. A test
//! regenerates it and fails when the committed file differs, so they cannot drift.
//!
//! The file works with both compose front-ends: the v2 plugin and Debian's docker-compose 1.29
//! (hence no top-level `name:`; the project name is passed with `-p`).

use std::fmt::Write as _;

use crate::stack::{Kind, Service, Stack};

pub const FILE: &str = "compose/docker-compose.demo.yml";
pub const PROJECT: &str = "ml-mlops";
pub const NETWORK: &str = "ml-mlops-network";
/// The unprivileged user every container runs as.
pub const USER: &str = "10001:10001";
/// Where the API images keep their binary, and MLflow its virtual environment.
pub const API_BINARY: &str = "/app";
pub const MLFLOW_VENV: &str = "/opt/mlflow";

/// The environment variable that moves one service's host port (set by `--port-offset`).
pub fn port_variable(service: &Service) -> String {
    format!("{}_HOST_PORT", service.name.to_uppercase())
}

/// The container's health probe, exec form: scratch images have no shell.
pub fn healthcheck(service: &Service) -> Vec<String> {
    let url = format!(
        "http://127.0.0.1:{}{}",
        service.container_port, service.health_path
    );
    match service.kind {
        Kind::Api => vec![API_BINARY.into(), "healthcheck".into(), "--url".into(), url],
        Kind::Mlflow => vec![
            format!("{MLFLOW_VENV}/bin/python"),
            "-c".into(),
            format!("import urllib.request; urllib.request.urlopen('{url}', timeout=3)"),
        ],
    }
}

/// The MLflow server's arguments inside its container.
pub fn mlflow_command(service: &Service) -> Vec<String> {
    [
        "server",
        "--host",
        "0.0.0.0",
        "--port",
        &service.container_port.to_string(),
        "--backend-store-uri",
        "sqlite:////mlruns/mlflow.db",
        "--artifacts-destination",
        "/mlruns/artifacts",
        "--workers",
        "1",
        // MLflow 3 rejects unknown Host headers: allow the service and container names that
        // other containers use, and the host's loopback for any published port.
        "--allowed-hosts",
        &format!(
            "{name},{name}:{port},{container},{container}:{port},localhost,localhost:*,127.0.0.1,127.0.0.1:*",
            name = service.name,
            container = service.container,
            port = service.container_port
        ),
    ]
    .map(String::from)
    .to_vec()
}

fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

/// The compose file's text.
pub fn render(stack: &Stack) -> String {
    let mlflow = stack.mlflow();
    let mut y = String::new();
    let w = &mut y;
    let _ = writeln!(
        w,
        "# Generated from services/*/service.toml by `cargo xtask compose`; do not edit."
    );
    let _ = writeln!(
        w,
        "# Run it through the toolkit (`cargo xtask up --runtime docker`), or by hand:"
    );
    let _ = writeln!(w, "#   docker compose -p {PROJECT} -f {FILE} up -d");
    let _ = writeln!(
        w,
        "# Paths are relative to this file; XTASK_STACK_DIR and <SERVICE>_HOST_PORT move them."
    );
    let _ = writeln!(w, "services:");
    for s in &stack.services {
        let image = s.versioned_image();
        let _ = writeln!(w, "  {}:", s.name);
        let _ = writeln!(w, "    image: {image}");
        let _ = writeln!(w, "    container_name: {}", s.container);
        match s.kind {
            Kind::Mlflow => {
                let _ = writeln!(w, "    command: {}", list(&mlflow_command(s)));
                let _ = writeln!(w, "    environment:");
                let _ = writeln!(w, "      MLFLOW_SERVER_ENABLE_JOB_EXECUTION: \"false\"");
                let _ = writeln!(w, "    volumes:");
                let _ = writeln!(w, "      - ${{XTASK_STACK_DIR:-..}}/mlruns:/mlruns");
            }
            Kind::Api => {
                let _ = writeln!(w, "    environment:");
                let _ = writeln!(w, "      MODEL_DIR: /models");
                let _ = writeln!(w, "      LOG_FORMAT: json");
                let _ = writeln!(
                    w,
                    "      MLFLOW_TRACKING_URI: http://{}:{}",
                    mlflow.name, mlflow.container_port
                );
                let _ = writeln!(w, "    volumes:");
                let _ = writeln!(
                    w,
                    "      - ${{XTASK_STACK_DIR:-..}}/models/{}:/models:ro",
                    s.name
                );
                let _ = writeln!(w, "    read_only: true");
                let _ = writeln!(w, "    depends_on:");
                let _ = writeln!(w, "      {}:", mlflow.name);
                let _ = writeln!(w, "        condition: service_healthy");
            }
        }
        let _ = writeln!(w, "    user: \"{USER}\"");
        let _ = writeln!(w, "    ports:");
        let _ = writeln!(
            w,
            "      - \"127.0.0.1:${{{}:-{}}}:{}\"",
            port_variable(s),
            s.host_port,
            s.container_port
        );
        let _ = writeln!(w, "    healthcheck:");
        let _ = writeln!(
            w,
            "      test: {}",
            list(&[vec!["CMD".to_owned()], healthcheck(s)].concat())
        );
        // APIs are probed often (a cheap exec of the binary) so a restart is seen in seconds;
        // MLflow's probe starts a Python interpreter, so less often.
        let interval = if s.kind == Kind::Mlflow { "10s" } else { "2s" };
        let _ = writeln!(w, "      interval: {interval}");
        let _ = writeln!(w, "      timeout: 3s");
        let _ = writeln!(w, "      retries: 3");
        let start_period = if s.kind == Kind::Mlflow { "60s" } else { "5s" };
        let _ = writeln!(w, "      start_period: {start_period}");
        let _ = writeln!(w, "    restart: unless-stopped");
        let _ = writeln!(w, "    networks: [{NETWORK}]");
    }
    let _ = writeln!(w, "networks:");
    let _ = writeln!(w, "  {NETWORK}:");
    let _ = writeln!(w, "    name: {NETWORK}");
    y
}

/// Regenerate compose/docker-compose.demo.yml from the services' service.toml files.
#[derive(clap::Args, Debug)]
pub struct Compose {
    /// Only check that the committed file is current; exit non-zero if not.
    #[arg(long)]
    pub check: bool,
}

impl Compose {
    pub fn run(self, ctx: &crate::ctx::Ctx) -> anyhow::Result<()> {
        let path = ctx.root.join(FILE);
        let expected = render(&ctx.stack);
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current == expected {
            ctx.reporter.info(format!("{FILE} is up to date"));
            return Ok(());
        }
        if self.check {
            anyhow::bail!("{FILE} is out of date: run `cargo xtask compose` and commit it");
        }
        ctx.runner.plan(format!("write {FILE}"));
        if !ctx.dry_run() {
            std::fs::write(&path, expected)?;
            ctx.reporter.info(format!("wrote {FILE}"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn the_committed_compose_file_matches_the_stack() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let stack = Stack::load(root).unwrap();
        let expected = render(&stack);
        let path = root.join(FILE);
        let actual = std::fs::read_to_string(&path).unwrap_or_default();
        if actual != expected {
            if std::env::var_os("CI").is_some() {
                panic!("{FILE} is out of date: run `cargo xtask compose` and commit it");
            }
            std::fs::write(&path, expected).unwrap();
            panic!("{FILE} was out of date and has been regenerated: review and commit it");
        }
    }

    #[test]
    fn every_service_keeps_its_published_name_port_and_network() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let stack = Stack::load(root).unwrap();
        let text = render(&stack);
        for s in &stack.services {
            assert!(text.contains(&format!("container_name: {}\n", s.container)));
            assert!(text.contains(&format!(":-{}}}:{}\"", s.host_port, s.container_port)));
        }
        assert_eq!(
            text.matches("networks: [ml-mlops-network]").count(),
            stack.services.len()
        );
        assert!(text.contains("condition: service_healthy"));
    }
}

//! `compose/docker-compose.demo.yml`, generated from the stack's `service.toml` files as typed
//! structs serialized to YAML. A test regenerates it and fails when the committed file
//! differs, so they cannot drift.
//!
//! The file works with both compose front-ends: the v2 plugin and Debian's docker-compose 1.29
//! (hence no top-level `name:`; the project name is passed with `-p`).

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};

use super::mlflow_backend::{HOST_FROM_CONTAINERS, SECRET_ENV};
use super::mlflow_command;
use crate::stack::{Endpoint, Kind, Service, Stack, STOP_GRACE_SECONDS};

/// MLflow's address on the stack's network, as the containers reach it (its service name).
pub fn mlflow_in_network(mlflow: &Service) -> String {
    format!("http://{}:{}", mlflow.name, mlflow.container_port)
}

pub const FILE: &str = "compose/docker-compose.demo.yml";
pub const PROJECT: &str = "ml-mlops";
pub const NETWORK: &str = "ml-mlops-network";
/// The variable a named stack sets to `-NAME` (`--stack NAME` or `--port-offset N`): it ends
/// the container and network names, so a second stack's names differ from the first's. Unset,
/// the names are the default stack's.
pub const SUFFIX_VARIABLE: &str = "XTASK_STACK_SUFFIX";

/// `NAME${XTASK_STACK_SUFFIX:-}`: a name a second stack extends.
fn per_stack(name: &str) -> String {
    format!("{name}${{{SUFFIX_VARIABLE}:-}}")
}
/// The variable the docker runtime sets to MLflow's PostgreSQL URI (without its password, as
/// a container reaches the server) when the stack runs on `--mlflow-backend postgresql://`.
/// Unset, MLflow keeps the SQLite store in its volume. The password goes in `PGPASSWORD`, from
/// the environment compose runs in, so neither is ever written into this file.
pub const BACKEND_STORE_VARIABLE: &str = "XTASK_MLFLOW_BACKEND_STORE";

/// The unprivileged user every container runs as.
pub const USER: &str = "10001:10001";
/// Where the API images keep their binary, and MLflow its virtual environment.
pub const API_BINARY: &str = "/app";
pub const MLFLOW_VENV: &str = "/opt/mlflow";
/// Where the MLflow container keeps its store (a volume from the stack directory).
pub const MLRUNS: &str = "/mlruns";

/// The environment variable that moves one endpoint's host port (set by `--port-offset`):
/// `BANKCHURN_HOST_PORT`, `CARVISION_DASHBOARD_HOST_PORT`.
pub fn port_variable(service: &Service, endpoint: &Endpoint) -> String {
    match endpoint.role {
        Some(role) => format!("{}_{}_HOST_PORT", service.name, role).to_uppercase(),
        None => format!("{}_HOST_PORT", service.name.to_uppercase()),
    }
}

/// `127.0.0.1:${VAR:-HOST}:CONTAINER` for each endpoint.
fn published_ports(service: &Service) -> Vec<Port> {
    service
        .endpoints()
        .iter()
        .map(|e| {
            Port::Short(format!(
                "127.0.0.1:${{{}:-{}}}:{}",
                port_variable(service, e),
                e.host_port,
                e.container_port
            ))
        })
        .collect()
}

/// MLflow's SQLite store in the container's volume.
pub fn sqlite_store() -> String {
    format!("sqlite:///{MLRUNS}/{}", mlflow_command::STORE_FILE)
}

/// The whole file.
#[derive(Serialize)]
pub struct ComposeFile {
    pub services: Ordered<ComposeService>,
    pub networks: BTreeMap<String, Network>,
}

/// A map that keeps its insertion order (MLflow first, as the stack lists it).
pub struct Ordered<T>(pub Vec<(String, T)>);

impl<T: Serialize> Serialize for Ordered<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

#[derive(Serialize)]
pub struct ComposeService {
    pub image: String,
    /// Compose only: a swarm names its tasks itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    pub environment: BTreeMap<String, String>,
    /// Container labels: a change to one replaces the service's tasks.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    pub volumes: Vec<Mount>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub depends_on: BTreeMap<String, DependsOn>,
    pub user: String,
    /// docker's init as PID 1, passing signals on.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub init: bool,
    pub read_only: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<String>,
    pub cap_drop: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub security_opt: Vec<String>,
    /// Compose only; a swarm takes its limits from `deploy.resources`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem_limit: Option<String>,
    pub ports: Vec<Port>,
    pub healthcheck: Healthcheck,
    pub stop_grace_period: String,
    /// Compose only; a swarm's is `deploy.restart_policy`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart: Option<String>,
    pub networks: Vec<String>,
    /// `NAME:host-gateway`: names for this machine, as containers reach it (compose only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
    /// Swarm only: replicas, updates, restarts, resources and placement.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deploy: Option<super::stack_file::Deploy>,
}

/// A volume in compose's short syntax (`SOURCE:TARGET[:ro]`), or a tmpfs in the long one
/// (a swarm ignores the `tmpfs:` key, but not this).
#[derive(Serialize)]
#[serde(untagged)]
pub enum Mount {
    Short(String),
    Tmpfs {
        #[serde(rename = "type")]
        kind: &'static str,
        target: String,
    },
}

/// A published port: compose's short syntax, or the long one a swarm needs to choose how it
/// is published (`mode: ingress` through the routing mesh, `mode: host` on the task's node).
#[derive(Serialize)]
#[serde(untagged)]
pub enum Port {
    Short(String),
    Long {
        target: u16,
        published: u16,
        protocol: &'static str,
        mode: &'static str,
    },
}

#[derive(Serialize)]
pub struct DependsOn {
    pub condition: String,
}

#[derive(Serialize)]
pub struct Healthcheck {
    pub test: Vec<String>,
    pub interval: String,
    pub timeout: String,
    pub retries: u32,
    pub start_period: String,
}

#[derive(Serialize)]
pub struct Network {
    pub name: String,
    /// `overlay` in a swarm; compose's default bridge otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// In a swarm: one-off containers (retraining) may join it too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attachable: Option<bool>,
    /// A network the stack uses but does not make (a swarm's `host`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external: Option<bool>,
}

/// The container's health probe, exec form: scratch images have no shell.
fn healthcheck(service: &Service) -> Healthcheck {
    let url = format!(
        "http://127.0.0.1:{}{}",
        service.container_port, service.health_path
    );
    let probe = match service.kind {
        Kind::Api => vec![API_BINARY.into(), "healthcheck".into(), "--url".into(), url],
        Kind::Mlflow => vec![
            format!("{MLFLOW_VENV}/bin/python"),
            "-c".into(),
            format!("import urllib.request; urllib.request.urlopen('{url}', timeout=3)"),
        ],
    };
    // APIs are probed often (a cheap exec of the binary) so a crash is seen in seconds;
    // MLflow's probe starts a Python interpreter, so less often. The toolkit itself waits on
    // the published port, not on these.
    let (interval, start_period) = match service.kind {
        Kind::Api => ("2s", "5s"),
        Kind::Mlflow => ("5s", "60s"),
    };
    Healthcheck {
        test: [vec!["CMD".to_owned()], probe].concat(),
        interval: interval.into(),
        timeout: "3s".into(),
        retries: 3,
        start_period: start_period.into(),
    }
}

/// Compose's spelling of a memory limit: `1g`, `256m`.
fn memory_limit(mib: u32) -> String {
    if mib.is_multiple_of(1024) {
        format!("{}g", mib / 1024)
    } else {
        format!("{mib}m")
    }
}

pub(super) fn service_entry(service: &Service, mlflow_service: &Service) -> ComposeService {
    let resources = service.kind.resources();
    let stack_dir = "${XTASK_STACK_DIR:-..}";
    let (command, mut environment, volumes, depends_on, tmpfs, extra_hosts);
    match service.kind {
        Kind::Mlflow => {
            command = mlflow_command::server_args(&mlflow_command::ServerSettings {
                host: "0.0.0.0".into(),
                port: service.container_port,
                backend_store_uri: format!("${{{BACKEND_STORE_VARIABLE}:-{}}}", sqlite_store()),
                artifacts: format!("{MLRUNS}/artifacts"),
                // MLflow 3 rejects unknown Host headers: allow the names other containers use,
                // and the host's loopback for any published port.
                allowed_hosts: Some(format!(
                    "{name},{name}:{port},{container},{container}:{port},localhost,localhost:*,127.0.0.1,127.0.0.1:*",
                    name = service.name,
                    container = per_stack(&service.container),
                    port = service.container_port
                )),
            });
            environment = mlflow_command::SERVER_ENV
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>();
            for secret in SECRET_ENV {
                environment.insert(secret.to_string(), format!("${{{secret}:-}}"));
            }
            // A database on this machine, as containers reach it.
            extra_hosts = vec![format!("{HOST_FROM_CONTAINERS}:host-gateway")];
            volumes = vec![Mount::Short(format!("{stack_dir}/mlruns:{MLRUNS}"))];
            depends_on = BTreeMap::new();
            // Python writes its temporary files here; the root file system stays read-only.
            tmpfs = vec!["/tmp".to_owned()];
        }
        Kind::Api => {
            command = Vec::new();
            environment = BTreeMap::from([
                ("PORT".into(), service.container_port.to_string()),
                ("MODEL_DIR".into(), "/models".into()),
                ("LOG_FORMAT".into(), "json".into()),
                (
                    "MLFLOW_TRACKING_URI".into(),
                    mlflow_in_network(mlflow_service),
                ),
            ]);
            if let Some(dashboard) = &service.dashboard {
                environment.insert(
                    "DASHBOARD_PORT".into(),
                    dashboard.container_port.to_string(),
                );
            }
            volumes = vec![Mount::Short(format!(
                "{stack_dir}/models/{}:/models:ro",
                service.name
            ))];
            depends_on = BTreeMap::from([(
                mlflow_service.name.clone(),
                DependsOn {
                    condition: "service_healthy".into(),
                },
            )]);
            tmpfs = Vec::new();
            extra_hosts = Vec::new();
        }
    }
    ComposeService {
        image: service.versioned_image(),
        container_name: Some(per_stack(&service.container)),
        command,
        environment,
        labels: BTreeMap::new(),
        volumes,
        depends_on,
        user: USER.into(),
        // MLflow as PID 1 would ignore SIGTERM until it serves (Python sets no handler), so a
        // stop during its first start, while it builds its store, waited out the grace period.
        // The APIs handle SIGTERM themselves from their first instant.
        init: service.kind == Kind::Mlflow,
        read_only: true,
        tmpfs,
        cap_drop: vec!["ALL".into()],
        security_opt: vec!["no-new-privileges:true".into()],
        pids_limit: Some(resources.pids_limit),
        mem_limit: Some(memory_limit(resources.memory_limit_mib)),
        ports: published_ports(service),
        healthcheck: healthcheck(service),
        stop_grace_period: format!("{STOP_GRACE_SECONDS}s"),
        restart: Some("unless-stopped".into()),
        networks: vec![NETWORK.into()],
        extra_hosts,
        deploy: None,
    }
}

/// The compose file of `stack`.
pub fn file(stack: &Stack) -> ComposeFile {
    let mlflow_service = stack.mlflow();
    ComposeFile {
        services: Ordered(
            stack
                .services
                .iter()
                .map(|s| (s.name.clone(), service_entry(s, mlflow_service)))
                .collect(),
        ),
        networks: BTreeMap::from([(
            NETWORK.to_owned(),
            Network {
                name: per_stack(NETWORK),
                driver: None,
                attachable: None,
                external: None,
            },
        )]),
    }
}

/// The compose file's text.
pub fn render(stack: &Stack) -> String {
    let header = format!(
        "# Generated from services/*/service.toml by `cargo xtask compose`; do not edit.\n\
         # Run it through the toolkit (`cargo xtask up --runtime docker`), or by hand:\n\
         #   docker compose -p {PROJECT} -f {FILE} up -d\n\
         # Paths are relative to this file; XTASK_STACK_DIR and <SERVICE>_HOST_PORT move them.\n\
         # A second stack (`--stack NAME` or `--port-offset N`) runs as project {PROJECT}-NAME\n\
         # with {SUFFIX_VARIABLE}=-NAME, which ends its container and network names.\n"
    );
    let body = serde_yaml_ng::to_string(&file(stack)).expect("the compose file serializes");
    header + &body
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_yaml_ng::Value;

    use super::*;

    fn stack() -> Stack {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        Stack::load(root).unwrap()
    }

    /// The one check that the committed file is current (the pipeline runs it as part of
    /// `cargo test --workspace`): under CI it fails, locally it also rewrites the file.
    #[test]
    fn the_committed_compose_file_matches_the_stack() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let expected = render(&stack());
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

    /// Read back as compose reads it, not as we wrote it.
    fn parsed() -> (Stack, Value) {
        let stack = stack();
        let yaml = serde_yaml_ng::from_str(&render(&stack)).unwrap();
        (stack, yaml)
    }

    #[test]
    fn every_service_keeps_its_published_name_port_and_network() {
        let (stack, yaml) = parsed();
        for s in &stack.services {
            let entry = &yaml["services"][s.name.as_str()];
            assert_eq!(
                entry["container_name"].as_str(),
                Some(format!("{}${{XTASK_STACK_SUFFIX:-}}", s.container).as_str())
            );
            let ports: Vec<&str> = entry["ports"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap())
                .collect();
            let expected: Vec<String> = s
                .endpoints()
                .iter()
                .map(|e| {
                    format!(
                        "127.0.0.1:${{{}:-{}}}:{}",
                        port_variable(s, e),
                        e.host_port,
                        e.container_port
                    )
                })
                .collect();
            assert_eq!(ports, expected);
            assert_eq!(entry["networks"][0].as_str(), Some(NETWORK));
            if let Some(dashboard) = &s.dashboard {
                assert_eq!(
                    entry["environment"]["DASHBOARD_PORT"].as_str(),
                    Some(dashboard.container_port.to_string().as_str())
                );
            }
        }
        assert_eq!(
            yaml["networks"][NETWORK]["name"].as_str(),
            Some("ml-mlops-network${XTASK_STACK_SUFFIX:-}")
        );
    }

    #[test]
    fn every_container_is_hardened() {
        let (stack, yaml) = parsed();
        for s in &stack.services {
            let entry = &yaml["services"][s.name.as_str()];
            let why = format!("{}: {entry:?}", s.name);
            assert_eq!(entry["user"].as_str(), Some(USER), "{why}");
            assert_eq!(entry["read_only"].as_bool(), Some(true), "{why}");
            assert_eq!(entry["cap_drop"][0].as_str(), Some("ALL"), "{why}");
            assert_eq!(
                entry["security_opt"][0].as_str(),
                Some("no-new-privileges:true"),
                "{why}"
            );
            assert!(entry["pids_limit"].as_u64().is_some_and(|n| n > 0), "{why}");
            assert!(entry["mem_limit"].as_str().is_some(), "{why}");
            assert!(entry.get("privileged").is_none(), "{why}");
            assert!(entry.get("network_mode").is_none(), "{why}");
            assert!(
                entry["ports"][0]
                    .as_str()
                    .unwrap()
                    .starts_with("127.0.0.1:"),
                "{why}"
            );
        }
    }

    #[test]
    fn apis_listen_and_are_probed_on_their_declared_port() {
        let (stack, yaml) = parsed();
        for api in stack.apis() {
            let entry = &yaml["services"][api.name.as_str()];
            assert_eq!(
                entry["environment"]["PORT"].as_str(),
                Some(api.container_port.to_string().as_str())
            );
            let probe: Vec<&str> = entry["healthcheck"]["test"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            let url = format!("http://127.0.0.1:{}{}", api.container_port, api.health_path);
            assert_eq!(probe, ["CMD", API_BINARY, "healthcheck", "--url", &url]);
            assert_eq!(
                entry["depends_on"][stack.mlflow().name.as_str()]["condition"].as_str(),
                Some("service_healthy")
            );
        }
    }

    #[test]
    fn values_that_need_quoting_survive_the_round_trip() {
        let (stack, yaml) = parsed();
        let mlflow = &yaml["services"][stack.mlflow().name.as_str()];
        // `*` and `:` in one argument: YAML escapes, not Rust's.
        assert!(mlflow["command"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|a| a.as_str().is_some_and(|a| a.contains("127.0.0.1:*"))));
        assert_eq!(
            mlflow["environment"]["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"].as_str(),
            Some("false")
        );
    }
}

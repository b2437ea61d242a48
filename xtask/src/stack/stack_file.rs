//! The Docker Swarm stack file `cargo xtask deploy swarm` writes: the compose file's services,
//! made by the same typed model from the same `service.toml` files, with what a swarm needs
//! on top: concrete paths and ports, images by digest, the long syntax for published ports
//! and tmpfs mounts (a swarm ignores the short ones), and `deploy:`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use super::compose_file::{self, ComposeFile, Mount, Network, Ordered, Port, NETWORK};
use crate::stack::{Kind, Service, Stack};

/// The node label that marks where MLflow's store lives: MLflow only runs there, so it always
/// finds its database. `deploy swarm` puts it on the node it talks to when no node has it.
pub const MLFLOW_STORE_LABEL: &str = "ml-mlops.mlflow-store";

/// The container label holding the served model's version: retraining changes it, and a
/// changed container label makes the swarm replace the tasks, one at a time.
pub const MODEL_VERSION_LABEL: &str = "io.ml-mlops.model-version";

/// How the services are reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Publishing {
    /// Virtual IPs and the ingress routing mesh: every node answers on every published port
    /// and balances over the healthy tasks. What a real cluster uses.
    VipIngress,
    /// No VIPs and no routing mesh, for kernels without IPVS: each API's tasks listen on
    /// their node's host network, sharing its ports (SO_REUSEPORT, `serve --shared-port`), so
    /// an update starts the new task beside the old one and stops the old one once the new
    /// one is healthy, with no gap; the old one finishes its requests. MLflow keeps the
    /// stack's network (DNS round robin) with its port published on its node, where the APIs
    /// reach it by that node's address.
    DnsrrHost,
}

/// The stack file's name of the swarm's predefined `host` network.
pub const HOST_NETWORK: &str = "host-network";

/// What one deployment fixes beyond the stack's description.
pub struct Settings {
    /// Where the nodes find MLflow's store and the models (bind-mounted; see the README).
    pub stack_dir: PathBuf,
    /// Added to every published port.
    pub port_offset: u16,
    /// `-NAME` for a named stack, empty for the default one.
    pub name_suffix: String,
    /// Tasks per API (MLflow always runs one: one writer on its SQLite store).
    pub replicas: u32,
    pub publishing: Publishing,
    /// Every service's image, by digest (`HOST/ml-mlops/NAME@sha256:...`).
    pub images: BTreeMap<String, String>,
    /// Each API's served model version, where it has one.
    pub model_versions: BTreeMap<String, String>,
    /// The address of the node holding MLflow's store, as the other nodes reach it: where
    /// APIs on the host network find MLflow (`dnsrr-host`).
    pub mlflow_node: String,
    /// MLflow's PostgreSQL store (`--mlflow-backend`), its URI without the password, as every
    /// node reaches it; `None` for the SQLite store in MLflow's volume.
    pub postgres_uri: Option<String>,
}

/// A service's `deploy:` section.
#[derive(Serialize)]
pub struct Deploy {
    pub mode: &'static str,
    pub replicas: u32,
    pub endpoint_mode: &'static str,
    pub update_config: UpdateConfig,
    pub rollback_config: UpdateConfig,
    pub restart_policy: RestartPolicy,
    pub resources: Resources,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
}

#[derive(Serialize)]
pub struct UpdateConfig {
    pub parallelism: u32,
    pub delay: &'static str,
    /// `start-first`: the new task is healthy before the old one stops.
    pub order: &'static str,
    pub failure_action: &'static str,
    /// How long a new task is watched for a failure after it starts.
    pub monitor: &'static str,
    pub max_failure_ratio: u32,
}

#[derive(Serialize)]
pub struct RestartPolicy {
    pub condition: &'static str,
    pub delay: &'static str,
    pub window: &'static str,
}

#[derive(Serialize)]
pub struct Resources {
    pub limits: Limits,
    pub reservations: Reservations,
}

#[derive(Serialize)]
pub struct Limits {
    pub cpus: &'static str,
    pub memory: String,
    pub pids: u32,
}

#[derive(Serialize)]
pub struct Reservations {
    pub cpus: &'static str,
    pub memory: &'static str,
}

#[derive(Serialize)]
pub struct Placement {
    pub constraints: Vec<String>,
}

/// The swarm service of one `service.toml` service: `ml-mlops_bankchurn` (its stack, then its
/// name).
pub fn service_name(stack_name: &str, service: &Service) -> String {
    format!("{stack_name}_{}", service.name)
}

fn deploy(service: &Service, settings: &Settings, pids: u32, memory: String) -> Deploy {
    let host = settings.publishing == Publishing::DnsrrHost;
    let (replicas, order, reservation, placement) = match service.kind {
        // One MLflow, stopped before its replacement starts: two servers must never write one
        // SQLite store. It runs only where its store is.
        Kind::Mlflow => (
            1,
            "stop-first",
            "384M",
            Some(Placement {
                constraints: vec![format!("node.labels.{MLFLOW_STORE_LABEL} == true")],
            }),
        ),
        // Behind VIPs, or sharing their node's ports: the new task is healthy before the old
        // one stops.
        Kind::Api => (settings.replicas, "start-first", "64M", None),
    };
    let update = |failure_action| UpdateConfig {
        parallelism: 1,
        delay: "2s",
        order,
        failure_action,
        monitor: "20s",
        max_failure_ratio: 0,
    };
    Deploy {
        mode: "replicated",
        replicas,
        endpoint_mode: if host { "dnsrr" } else { "vip" },
        update_config: update("rollback"),
        rollback_config: update("pause"),
        restart_policy: RestartPolicy {
            condition: "any",
            delay: "2s",
            window: "30s",
        },
        resources: Resources {
            limits: Limits {
                cpus: "1.0",
                memory,
                pids,
            },
            reservations: Reservations {
                cpus: "0.1",
                memory: reservation,
            },
        },
        placement,
    }
}

/// The compose file's entry of `service`, made into a swarm service.
fn swarm_entry(
    service: &Service,
    mlflow: &Service,
    settings: &Settings,
) -> compose_file::ComposeService {
    let mut entry = compose_file::service_entry(service, mlflow);
    let stack_dir = settings.stack_dir.display().to_string();
    // The compose file's variables, resolved: a swarm resolves them on the machine that
    // deploys, which may not be where the stack directory is meant.
    let resolve = |text: &str| {
        text.replace(
            &format!("${{{}:-}}", compose_file::SUFFIX_VARIABLE),
            &settings.name_suffix,
        )
        .replace("${XTASK_STACK_DIR:-..}", &stack_dir)
        // MLflow's store: the PostgreSQL URI (no password in it), else SQLite in its volume.
        .replace(
            &format!(
                "${{{}:-{}}}",
                compose_file::BACKEND_STORE_VARIABLE,
                compose_file::sqlite_store()
            ),
            &settings
                .postgres_uri
                .clone()
                .unwrap_or_else(compose_file::sqlite_store),
        )
    };
    entry.image = settings
        .images
        .get(&service.name)
        .cloned()
        .unwrap_or_else(|| format!("<no image for {}>", service.name));
    entry.container_name = None;
    entry.restart = None;
    // A swarm starts every service at once; the APIs retry MLflow themselves.
    entry.depends_on.clear();
    // Not supported by swarm services (the engine ignores it).
    entry.security_opt.clear();
    // On PostgreSQL, the password stays `PGPASSWORD: ${PGPASSWORD:-}`, which `docker stack
    // deploy` fills in from the environment the swarm runtime gives it, as compose does for
    // the docker runtime: it is never written into this file. (A swarm secret would also keep
    // it out of `docker service inspect`, but secrets are immutable, so each password change
    // would need a new secret, its mount and its removal on `down`; the manager stores the
    // service spec encrypted in its Raft log either way.) On SQLite there is no password.
    if settings.postgres_uri.is_none() {
        for secret in crate::stack::mlflow_backend::SECRET_ENV {
            entry.environment.remove(*secret);
        }
    }
    // No host's database: a loopback address names no one machine in a swarm, and
    // `deploy swarm` refuses it.
    entry.extra_hosts.clear();
    entry.command = entry.command.iter().map(|a| resolve(a)).collect();
    entry.volumes = entry
        .volumes
        .into_iter()
        .map(|m| match m {
            Mount::Short(text) => Mount::Short(resolve(&text)),
            other => other,
        })
        .chain(entry.tmpfs.drain(..).map(|target| Mount::Tmpfs {
            kind: "tmpfs",
            target,
        }))
        .collect();
    let mode = match settings.publishing {
        Publishing::VipIngress => "ingress",
        Publishing::DnsrrHost => "host",
    };
    entry.ports = service
        .endpoints()
        .iter()
        .map(|e| Port::Long {
            target: e.container_port,
            published: e.host_port + settings.port_offset,
            protocol: "tcp",
            mode,
        })
        .collect();
    if host_network(service, settings) {
        on_host_network(&mut entry, service, mlflow, settings);
    } else if service.kind == Kind::Mlflow && settings.publishing == Publishing::DnsrrHost {
        allow_host(&mut entry, &settings.mlflow_node);
    }
    if let Some(version) = settings.model_versions.get(&service.name) {
        entry
            .labels
            .insert(MODEL_VERSION_LABEL.to_owned(), version.clone());
    }
    let pids = entry.pids_limit.take().unwrap_or(128);
    let memory = entry
        .mem_limit
        .take()
        .unwrap_or_else(|| "256m".to_owned())
        .to_uppercase();
    entry.deploy = Some(deploy(service, settings, pids, memory));
    entry
}

/// Whether `service`'s tasks run on their node's host network.
fn host_network(service: &Service, settings: &Settings) -> bool {
    service.kind == Kind::Api && settings.publishing == Publishing::DnsrrHost
}

/// An API's tasks on their node's host network: each listens on the published ports itself,
/// sharing them with the other tasks on the node (`serve --shared-port`), and probes its own
/// server there.
fn on_host_network(
    entry: &mut compose_file::ComposeService,
    service: &Service,
    mlflow: &Service,
    settings: &Settings,
) {
    let published = |e: &crate::stack::Endpoint| e.host_port + settings.port_offset;
    let endpoints = service.endpoints();
    for endpoint in &endpoints {
        let variable = match endpoint.role {
            None => "PORT".to_owned(),
            Some(role) => format!("{}_PORT", role.to_uppercase()),
        };
        entry
            .environment
            .insert(variable, published(endpoint).to_string());
    }
    entry
        .environment
        .insert("SHARED_PORT".into(), "true".into());
    entry.environment.insert(
        "MLFLOW_TRACKING_URI".into(),
        format!(
            "http://{}:{}",
            settings.mlflow_node,
            published(&mlflow.endpoints()[0])
        ),
    );
    if let Some(url) = entry.healthcheck.test.last_mut() {
        *url = format!(
            "http://127.0.0.1:{}{}",
            published(&endpoints[0]),
            endpoints[0].health_path
        );
    }
    entry.ports.clear();
    entry.networks = vec![HOST_NETWORK.to_owned()];
}

/// MLflow's `--allowed-hosts` with `address` added: the APIs on the host network ask MLflow
/// by its node's address.
fn allow_host(entry: &mut compose_file::ComposeService, address: &str) {
    let mut args = entry.command.iter_mut();
    while let Some(arg) = args.next() {
        if arg == "--allowed-hosts" {
            if let Some(hosts) = args.next() {
                hosts.push_str(&format!(",{address},{address}:*"));
            }
        }
    }
}

/// The stack file of `stack` for one deployment.
pub fn file(stack: &Stack, settings: &Settings) -> ComposeFile {
    let mlflow = stack.mlflow();
    ComposeFile {
        services: Ordered(
            stack
                .services
                .iter()
                .map(|s| (s.name.clone(), swarm_entry(s, mlflow, settings)))
                .collect(),
        ),
        networks: BTreeMap::from_iter(
            [(
                NETWORK.to_owned(),
                Network {
                    name: format!("{NETWORK}{}", settings.name_suffix),
                    driver: Some("overlay".into()),
                    attachable: Some(true),
                    external: None,
                },
            )]
            .into_iter()
            .chain((settings.publishing == Publishing::DnsrrHost).then(|| {
                (
                    HOST_NETWORK.to_owned(),
                    Network {
                        name: "host".into(),
                        driver: None,
                        attachable: None,
                        external: Some(true),
                    },
                )
            })),
        ),
    }
}

/// The stack file's text.
pub fn render(stack: &Stack, settings: &Settings, stack_name: &str) -> String {
    let header = format!(
        "# Generated from services/*/service.toml by `cargo xtask deploy swarm`; do not edit.\n\
         # Deployed as stack {stack_name}: docker stack deploy --resolve-image never -c FILE {stack_name}\n"
    );
    let body = serde_yaml_ng::to_string(&file(stack, settings)).expect("the stack file serializes");
    header + &body
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_yaml_ng::Value;

    use super::*;

    fn root() -> &'static Path {
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
    }

    fn settings(stack: &Stack, publishing: Publishing) -> Settings {
        let images = stack
            .services
            .iter()
            .map(|s| {
                let digest = format!("{:064x}", s.name.len());
                (
                    s.name.clone(),
                    format!("registry.example:5000/{}@sha256:{digest}", s.image()),
                )
            })
            .collect();
        let model_versions = stack
            .apis()
            .map(|s| (s.name.clone(), format!("{}-v1", s.name)))
            .collect();
        Settings {
            stack_dir: PathBuf::from("/srv/ml-mlops"),
            port_offset: 0,
            name_suffix: String::new(),
            replicas: 2,
            publishing,
            images,
            model_versions,
            mlflow_node: "10.0.0.1".into(),
            postgres_uri: None,
        }
    }

    /// The whole file for fixed inputs, as a reviewed golden file: a change to the stack or
    /// to this module shows up as a diff of it. Under CI a difference fails; locally it also
    /// rewrites the file.
    #[test]
    fn the_stack_file_matches_its_golden_copy() {
        let stack = Stack::load(root()).unwrap();
        let actual = render(
            &stack,
            &settings(&stack, Publishing::VipIngress),
            "ml-mlops",
        );
        let path = root().join("xtask/tests/golden/swarm-stack.yml");
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        if actual != expected {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "{} is out of date: run `cargo test -p xtask stack_file` and commit it",
                    path.display()
                );
            }
            std::fs::write(&path, actual).unwrap();
            panic!(
                "{} was out of date and has been rewritten: review and commit it",
                path.display()
            );
        }
    }

    fn parsed(publishing: Publishing) -> (Stack, Value) {
        let stack = Stack::load(root()).unwrap();
        let text = render(&stack, &settings(&stack, publishing), "ml-mlops");
        (stack, serde_yaml_ng::from_str(&text).unwrap())
    }

    #[test]
    fn every_service_runs_its_image_by_digest_with_no_compose_only_keys() {
        let (stack, yaml) = parsed(Publishing::VipIngress);
        for s in &stack.services {
            let entry = &yaml["services"][s.name.as_str()];
            assert!(
                entry["image"].as_str().unwrap().contains("@sha256:"),
                "{entry:?}"
            );
            for compose_only in [
                "container_name",
                "restart",
                "depends_on",
                "mem_limit",
                "pids_limit",
                "tmpfs",
                "security_opt",
            ] {
                assert!(
                    entry.get(compose_only).is_none(),
                    "{}: {compose_only}",
                    s.name
                );
            }
            // No variable is left for the deploying machine to resolve.
            assert!(
                !serde_yaml_ng::to_string(entry).unwrap().contains("${"),
                "{entry:?}"
            );
            let limits = &entry["deploy"]["resources"]["limits"];
            assert!(limits["memory"].as_str().is_some() && limits["pids"].as_u64().is_some());
            assert_eq!(
                entry["deploy"]["update_config"]["failure_action"].as_str(),
                Some("rollback")
            );
            assert_eq!(
                entry["deploy"]["restart_policy"]["condition"].as_str(),
                Some("any")
            );
            assert!(entry["volumes"]
                .as_sequence()
                .unwrap()
                .iter()
                .any(|v| v["type"].as_str() == Some("tmpfs")
                    || v.as_str().is_some_and(|v| v.starts_with("/srv/ml-mlops/"))));
        }
        assert_eq!(
            yaml["networks"][NETWORK]["driver"].as_str(),
            Some("overlay")
        );
    }

    #[test]
    fn on_postgresql_mlflow_gets_the_uri_and_the_password_only_from_the_deploying_environment() {
        let stack = Stack::load(root()).unwrap();
        let mut settings = settings(&stack, Publishing::DnsrrHost);
        settings.postgres_uri = Some("postgresql://mlflow@db.example:5432/mlflow".into());
        let text = render(&stack, &settings, "ml-mlops");
        let yaml: Value = serde_yaml_ng::from_str(&text).unwrap();
        let mlflow = &yaml["services"][stack.mlflow().name.as_str()];
        let command: Vec<&str> = mlflow["command"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let uri = command
            .iter()
            .position(|a| *a == "--backend-store-uri")
            .map(|i| command[i + 1]);
        assert_eq!(uri, Some("postgresql://mlflow@db.example:5432/mlflow"));
        // `docker stack deploy` fills it in from its environment.
        assert_eq!(
            mlflow["environment"]["PGPASSWORD"].as_str(),
            Some("${PGPASSWORD:-}")
        );
        assert!(mlflow.get("extra_hosts").is_none(), "{mlflow:?}");
        assert!(!text.contains("mlflow.db"), "{text}");
        // On SQLite, no password at all.
        let (stack, yaml) = parsed(Publishing::DnsrrHost);
        let mlflow = &yaml["services"][stack.mlflow().name.as_str()];
        assert!(mlflow["environment"].get("PGPASSWORD").is_none());
    }

    #[test]
    fn apis_roll_start_first_behind_vips_and_mlflow_stays_one_task_on_its_store() {
        let (stack, yaml) = parsed(Publishing::VipIngress);
        let mlflow = &yaml["services"][stack.mlflow().name.as_str()]["deploy"];
        assert_eq!(mlflow["replicas"].as_u64(), Some(1));
        assert_eq!(
            mlflow["update_config"]["order"].as_str(),
            Some("stop-first")
        );
        assert_eq!(
            mlflow["placement"]["constraints"][0].as_str(),
            Some("node.labels.ml-mlops.mlflow-store == true")
        );
        for api in stack.apis() {
            let entry = &yaml["services"][api.name.as_str()];
            assert_eq!(entry["deploy"]["replicas"].as_u64(), Some(2));
            assert_eq!(entry["deploy"]["endpoint_mode"].as_str(), Some("vip"));
            assert_eq!(
                entry["deploy"]["update_config"]["order"].as_str(),
                Some("start-first")
            );
            assert_eq!(entry["ports"][0]["mode"].as_str(), Some("ingress"));
            assert_eq!(
                entry["ports"][0]["published"].as_u64(),
                Some(api.host_port.into())
            );
            assert_eq!(
                entry["labels"][MODEL_VERSION_LABEL].as_str(),
                Some(format!("{}-v1", api.name).as_str())
            );
        }
    }

    #[test]
    fn without_ipvs_apis_share_their_nodes_ports_and_roll_start_first() {
        let (stack, yaml) = parsed(Publishing::DnsrrHost);
        assert_eq!(
            yaml["networks"][HOST_NETWORK]["name"].as_str(),
            Some("host")
        );
        assert_eq!(
            yaml["networks"][HOST_NETWORK]["external"].as_bool(),
            Some(true)
        );
        for api in stack.apis() {
            let entry = &yaml["services"][api.name.as_str()];
            assert_eq!(entry["deploy"]["endpoint_mode"].as_str(), Some("dnsrr"));
            assert_eq!(entry["networks"][0].as_str(), Some(HOST_NETWORK));
            // The task listens on the node's port itself, beside the task it replaces.
            assert!(
                entry["ports"].as_sequence().is_none_or(|p| p.is_empty()),
                "{entry:?}"
            );
            let env = &entry["environment"];
            assert_eq!(env["SHARED_PORT"].as_str(), Some("true"));
            let port = api.host_port.to_string();
            assert_eq!(env["PORT"].as_str(), Some(port.as_str()));
            assert_eq!(
                env["MLFLOW_TRACKING_URI"].as_str(),
                Some("http://10.0.0.1:5000")
            );
            let probe = entry["healthcheck"]["test"].as_sequence().unwrap();
            assert_eq!(
                probe.last().unwrap().as_str().unwrap(),
                format!("http://127.0.0.1:{port}{}", api.health_path)
            );
            assert_eq!(
                entry["deploy"]["update_config"]["order"].as_str(),
                Some("start-first")
            );
            if let Some(dashboard) = &api.dashboard {
                assert_eq!(
                    env["DASHBOARD_PORT"].as_str(),
                    Some(dashboard.host_port.to_string().as_str())
                );
            }
        }
        // MLflow stays on the stack's network, published on its node, which the APIs ask.
        let mlflow = &yaml["services"][stack.mlflow().name.as_str()];
        assert_eq!(mlflow["deploy"]["endpoint_mode"].as_str(), Some("dnsrr"));
        assert_eq!(mlflow["ports"][0]["mode"].as_str(), Some("host"));
        assert_eq!(mlflow["networks"][0].as_str(), Some(NETWORK));
        assert!(mlflow["command"].as_sequence().unwrap().iter().any(|a| a
            .as_str()
            .is_some_and(|a| a.ends_with(",10.0.0.1,10.0.0.1:*"))));
    }

    #[test]
    fn a_named_stack_gets_its_own_network_ports_and_mlflow_host_names() {
        let stack = Stack::load(root()).unwrap();
        let mut settings = settings(&stack, Publishing::VipIngress);
        settings.name_suffix = "-blue".into();
        settings.port_offset = 100;
        let yaml: Value =
            serde_yaml_ng::from_str(&render(&stack, &settings, "ml-mlops-blue")).unwrap();
        assert_eq!(
            yaml["networks"][NETWORK]["name"].as_str(),
            Some("ml-mlops-network-blue")
        );
        let mlflow = &yaml["services"][stack.mlflow().name.as_str()];
        assert_eq!(mlflow["ports"][0]["published"].as_u64(), Some(5100));
        assert!(mlflow["command"].as_sequence().unwrap().iter().any(|a| a
            .as_str()
            .is_some_and(|a| a.contains("mlflow-server-blue:5000"))));
    }
}

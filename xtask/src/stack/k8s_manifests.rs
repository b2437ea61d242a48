//! The stack's Kubernetes manifests, generated from the same `service.toml` files as the
//! compose file, as typed structs serialized to YAML: a kustomization base, one file per
//! service, that users overlay with their own settings.
//!
//! Each API is a Deployment (probes on its health path, requests and limits, the restricted
//! pod security level), a Service, a PodDisruptionBudget and a HorizontalPodAutoscaler; MLflow
//! is one pod on a PersistentVolumeClaim. The committed render, `deploy/k8s/`, is checked
//! against the stack by a test, as the compose file is.

use std::collections::BTreeMap;

use serde::Serialize;

use super::compose_file::{mlflow_in_network, MLRUNS};
use super::mlflow_backend::Postgres;
use super::{mlflow_command, Kind, Service, Stack, STOP_GRACE_SECONDS};

/// The committed render (images by tag, the default namespace).
pub const DIR: &str = "deploy/k8s";
pub const NAMESPACE: &str = "ml-mlops";
/// The Kubernetes versions whose API schemas the manifests are validated against, strictly
/// (the README states this range).
pub const KUBERNETES_VERSIONS: &[&str] =
    &["1.32.0", "1.33.0", "1.34.0", "1.35.0", "1.36.0", "1.37.0"];
/// The first line of every file this module writes: a folder's other files are never touched.
pub const GENERATED_MARK: &str =
    "# Generated from services/*/service.toml by `cargo xtask deploy k8s`; do not edit.";
/// The unprivileged user and group every container runs as (the compose file's `USER`).
pub const RUN_AS: i64 = 10001;
/// The seed each API pod trains its model with at start: the demo's (`--seed` of `train`).
pub const MODEL_SEED: u64 = 42;
/// MLflow's store, one volume claimed for it.
pub const MLFLOW_STORE_SIZE: &str = "10Gi";

/// How a render is made: the image of each service (by service name) and the namespace.
pub struct Settings {
    pub images: BTreeMap<String, String>,
    pub namespace: String,
    /// MLflow's PostgreSQL store (`--mlflow-backend`), else its SQLite file on the claim.
    pub postgres: Option<Postgres>,
}

impl Settings {
    /// The images of this checkout, by tag (`ml-mlops/SERVICE:VERSION`), in the default
    /// namespace: the committed render.
    pub fn by_tag(stack: &Stack) -> Self {
        Self {
            images: stack
                .services
                .iter()
                .map(|s| (s.name.clone(), s.versioned_image()))
                .collect(),
            namespace: NAMESPACE.into(),
            postgres: None,
        }
    }
}

/// One file of a render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub name: String,
    pub text: String,
}

/// The name a service's objects get: Kubernetes names take `-`, not `_`.
pub fn object_name(name: &str) -> String {
    name.replace('_', "-")
}

/// Its Deployment: named after its container, as `docker ps` showed it.
pub fn deployment_name(service: &Service) -> String {
    object_name(&service.container)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Object<Spec> {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub metadata: Metadata,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec: Option<Spec>,
}

#[derive(Serialize, Default)]
pub struct Metadata {
    /// Empty in a pod template: its pods are named after the Deployment.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Written out, although the kustomization sets it too, so that the files read alone
    /// (a scanner, `kubectl apply -f`) do not land in `default`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

type Labels = BTreeMap<String, String>;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentSpec {
    /// Left out for the APIs: their autoscaler owns the count, and `kubectl apply` must not
    /// reset it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    pub revision_history_limit: u32,
    pub selector: Selector,
    pub strategy: Strategy,
    pub template: PodTemplate,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Selector {
    pub match_labels: Labels,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Strategy {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rolling_update: Option<RollingUpdate>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RollingUpdate {
    pub max_surge: u32,
    pub max_unavailable: u32,
}

#[derive(Serialize)]
pub struct PodTemplate {
    pub metadata: Metadata,
    pub spec: PodSpec,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    /// The pods talk to no Kubernetes API.
    pub automount_service_account_token: bool,
    /// No `*_SERVICE_HOST` variables: the services find each other by DNS name.
    pub enable_service_links: bool,
    /// MLflow's Python as PID 1 would ignore SIGTERM until it serves (the compose file gives
    /// it docker's init for the same reason); with a shared process namespace the pod's pause
    /// process is PID 1 instead.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub share_process_namespace: bool,
    pub security_context: PodSecurityContext,
    pub termination_grace_period_seconds: u64,
    /// An API's pods on different nodes where the cluster has several, so that losing a node
    /// loses one of them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpread>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub init_containers: Vec<Container>,
    pub containers: Vec<Container>,
    pub volumes: Vec<Volume>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TopologySpread {
    pub max_skew: u32,
    pub topology_key: &'static str,
    /// `ScheduleAnyway`: a one-node cluster still runs them all.
    pub when_unsatisfiable: &'static str,
    pub label_selector: Selector,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSecurityContext {
    pub run_as_non_root: bool,
    pub run_as_user: i64,
    pub run_as_group: i64,
    /// Mounted volumes (MLflow's claim) become writable by that group.
    pub fs_group: i64,
    pub seccomp_profile: SeccompProfile,
}

#[derive(Serialize)]
pub struct SeccompProfile {
    #[serde(rename = "type")]
    pub kind: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    pub name: String,
    pub image: String,
    pub image_pull_policy: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub startup_probe: Option<Probe>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,
    pub resources: ResourceRequirements,
    pub security_context: ContainerSecurityContext,
    pub volume_mounts: Vec<VolumeMount>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvVarSource>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvVarSource {
    pub secret_key_ref: SecretKeySelector,
}

#[derive(Serialize)]
pub struct SecretKeySelector {
    pub name: String,
    pub key: String,
}

/// The Secret (which the user creates; a render never holds the password) whose `password`
/// key MLflow reads its PostgreSQL password from.
pub const POSTGRES_SECRET: &str = "mlflow-postgres";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    pub name: String,
    pub container_port: u16,
    pub protocol: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    pub http_get: HttpGet,
    pub period_seconds: u32,
    pub timeout_seconds: u32,
    pub failure_threshold: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpGet {
    pub path: String,
    /// The container port's name.
    pub port: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub http_headers: Vec<HttpHeader>,
}

#[derive(Serialize)]
pub struct HttpHeader {
    pub name: String,
    pub value: String,
}

#[derive(Serialize)]
pub struct ResourceRequirements {
    pub requests: BTreeMap<&'static str, String>,
    pub limits: BTreeMap<&'static str, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSecurityContext {
    pub allow_privilege_escalation: bool,
    pub privileged: bool,
    pub read_only_root_filesystem: bool,
    pub run_as_non_root: bool,
    pub capabilities: Capabilities,
    pub seccomp_profile: SeccompProfile,
}

#[derive(Serialize)]
pub struct Capabilities {
    pub drop: Vec<&'static str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount {
    pub name: String,
    pub mount_path: String,
    pub read_only: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub empty_dir: Option<EmptyDir>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<ClaimReference>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EmptyDir {
    pub size_limit: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimReference {
    pub claim_name: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub selector: Labels,
    pub ports: Vec<ServicePort>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    pub name: String,
    pub port: u16,
    /// The container port's name.
    pub target_port: String,
    pub protocol: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DisruptionBudgetSpec {
    pub max_unavailable: u32,
    pub selector: Selector,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalerSpec {
    pub scale_target_ref: ScaleTarget,
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub metrics: Vec<Metric>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleTarget {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub name: String,
}

#[derive(Serialize)]
pub struct Metric {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub resource: ResourceMetric,
}

#[derive(Serialize)]
pub struct ResourceMetric {
    pub name: &'static str,
    pub target: MetricTarget,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricTarget {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub average_utilization: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimSpec {
    pub access_modes: Vec<&'static str>,
    pub resources: ClaimResources,
}

#[derive(Serialize)]
pub struct ClaimResources {
    pub requests: BTreeMap<&'static str, String>,
}

/// `kustomization.yaml`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Kustomization {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub namespace: String,
    pub resources: Vec<String>,
}

/// How many pods of each API the autoscaler keeps: two, so that one is always serving while
/// the other is replaced (the disruption budget lets one go at a time).
pub const MIN_REPLICAS: u32 = 2;
pub const MAX_REPLICAS: u32 = 6;
/// CPU use, as a share of the request, past which the autoscaler adds a pod.
pub const CPU_TARGET_PERCENT: u32 = 70;

const PART_OF: &str = "ml-mlops";

/// The labels a service's pods are selected by.
fn selector_labels(service: &Service) -> Labels {
    Labels::from([
        ("app.kubernetes.io/name".into(), object_name(&service.name)),
        ("app.kubernetes.io/part-of".into(), PART_OF.into()),
    ])
}

/// Every label of a service's objects.
fn labels(service: &Service) -> Labels {
    let mut labels = selector_labels(service);
    labels.insert(
        "app.kubernetes.io/component".into(),
        match service.kind {
            Kind::Api => "api",
            Kind::Mlflow => "tracking",
        }
        .into(),
    );
    labels.insert(
        "app.kubernetes.io/version".into(),
        env!("CARGO_PKG_VERSION").into(),
    );
    labels.insert("app.kubernetes.io/managed-by".into(), "cargo-xtask".into());
    labels
}

fn metadata(name: String, service: &Service, namespace: &str) -> Metadata {
    Metadata {
        name,
        namespace: namespace.into(),
        labels: labels(service),
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        kind: "RuntimeDefault",
    }
}

/// Non-root, no privilege, read-only root, every capability dropped: the restricted level.
fn container_security() -> ContainerSecurityContext {
    ContainerSecurityContext {
        allow_privilege_escalation: false,
        privileged: false,
        read_only_root_filesystem: true,
        run_as_non_root: true,
        capabilities: Capabilities { drop: vec!["ALL"] },
        seccomp_profile: runtime_default(),
    }
}

fn resources(kind: Kind) -> ResourceRequirements {
    let r = kind.resources();
    ResourceRequirements {
        requests: BTreeMap::from([
            ("cpu", format!("{}m", r.cpu_request_millis)),
            ("memory", format!("{}Mi", r.memory_request_mib)),
        ]),
        limits: BTreeMap::from([
            ("cpu", format!("{}m", r.cpu_limit_millis)),
            ("memory", format!("{}Mi", r.memory_limit_mib)),
        ]),
    }
}

/// The port names of a service's endpoints: `http`, and `dashboard` for the second one.
fn port_name(role: Option<&str>) -> String {
    role.unwrap_or("http").to_owned()
}

/// Probes of the service's own health path. MLflow 3 answers only the `Host` names it allows;
/// its `/health` answered the kubelet's kind (the pod's address) too when tried, but the probes
/// say `localhost`, which it allows, so they do not hang on that exemption.
fn probe(service: &Service, period_seconds: u32, failure_threshold: u32) -> Probe {
    let http_headers = match service.kind {
        Kind::Mlflow => vec![HttpHeader {
            name: "Host".into(),
            value: "localhost".into(),
        }],
        Kind::Api => Vec::new(),
    };
    Probe {
        http_get: HttpGet {
            path: service.health_path.clone(),
            port: port_name(None),
            http_headers,
        },
        period_seconds,
        timeout_seconds: 3,
        failure_threshold,
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only,
    }
}

fn empty_dir(name: &str, size: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDir {
            size_limit: size.into(),
        }),
        persistent_volume_claim: None,
    }
}

/// MLflow's claim.
fn store_claim_name(mlflow: &Service) -> String {
    format!("{}-store", object_name(&mlflow.name))
}

/// Where an API keeps its model, and the synthetic data it trains on at start.
const MODEL_DIR: &str = "/models";
const DATA_DIR: &str = "/data";

/// The containers an API pod runs before it serves: generate the synthetic dataset and train
/// on it with the demo's seed, untracked, into the pod's model folder. Every pod trains the
/// same model (training is deterministic from the seed); an overlay that mounts models of its
/// own replaces these.
fn training_containers(service: &Service, image: &str) -> Vec<Container> {
    let data = format!(
        "{DATA_DIR}/{}",
        service.dataset.as_deref().unwrap_or("train.csv")
    );
    let seed = MODEL_SEED.to_string();
    let step = |name: &str, args: Vec<String>| Container {
        name: name.into(),
        image: image.into(),
        image_pull_policy: "IfNotPresent",
        args,
        env: Vec::new(),
        ports: Vec::new(),
        startup_probe: None,
        readiness_probe: None,
        liveness_probe: None,
        resources: resources(service.kind),
        security_context: container_security(),
        volume_mounts: vec![
            mount("training-data", DATA_DIR, false),
            mount("models", MODEL_DIR, false),
        ],
    };
    vec![
        step(
            "generate-data",
            ["generate-data", "--seed", &seed, "--out", &data]
                .map(String::from)
                .to_vec(),
        ),
        step(
            "train",
            [
                "train",
                "--seed",
                &seed,
                "--data-path",
                &data,
                "--model-dir",
                MODEL_DIR,
                "--no-mlflow",
            ]
            .map(String::from)
            .to_vec(),
        ),
    ]
}

fn deployment(
    service: &Service,
    mlflow: &Service,
    image: &str,
    namespace: &str,
    postgres: Option<&Postgres>,
) -> Object<DeploymentSpec> {
    let ports = service
        .endpoints()
        .iter()
        .map(|e| ContainerPort {
            name: port_name(e.role),
            container_port: e.container_port,
            protocol: "TCP",
        })
        .collect();
    let (args, env, volume_mounts, volumes, init_containers);
    // Startup: MLflow builds its store on a first start (the compose file waits 60 s); the
    // APIs answer within a second of starting.
    let (startup_period, startup_failures);
    match service.kind {
        Kind::Mlflow => {
            args = mlflow_command::server_args(&mlflow_command::ServerSettings {
                host: "0.0.0.0".into(),
                port: service.container_port,
                backend_store_uri: match postgres {
                    Some(pg) => pg.uri.clone(),
                    None => format!("sqlite:///{MLRUNS}/{}", mlflow_command::STORE_FILE),
                },
                artifacts: format!("{MLRUNS}/artifacts"),
                // The name the APIs use (the Service's), and the loopback a port-forward uses.
                allowed_hosts: Some(format!(
                    "{name},{name}:{port},localhost,localhost:*,127.0.0.1,127.0.0.1:*",
                    name = object_name(&service.name),
                    port = service.container_port
                )),
            });
            env = mlflow_command::SERVER_ENV
                .iter()
                .map(|(k, v)| EnvVar {
                    name: k.to_string(),
                    value: Some(v.to_string()),
                    value_from: None,
                })
                .chain(postgres.filter(|pg| pg.password.is_some()).map(|_| EnvVar {
                    name: "PGPASSWORD".into(),
                    value: None,
                    value_from: Some(EnvVarSource {
                        secret_key_ref: SecretKeySelector {
                            name: POSTGRES_SECRET.into(),
                            key: "password".into(),
                        },
                    }),
                }))
                .collect();
            volume_mounts = vec![mount("store", MLRUNS, false), mount("tmp", "/tmp", false)];
            volumes = vec![
                Volume {
                    name: "store".into(),
                    empty_dir: None,
                    persistent_volume_claim: Some(ClaimReference {
                        claim_name: store_claim_name(service),
                    }),
                },
                empty_dir("tmp", "256Mi"),
            ];
            init_containers = Vec::new();
            // Measured: healthy 53 s after a first start on a loaded 2-core machine (9 s on a
            // quiet one); three minutes before the kubelet restarts it.
            (startup_period, startup_failures) = (2, 90);
        }
        Kind::Api => {
            args = Vec::new();
            let mut variables = vec![
                ("PORT", service.container_port.to_string()),
                ("MODEL_DIR", MODEL_DIR.into()),
                ("LOG_FORMAT", "json".into()),
                ("MLFLOW_TRACKING_URI", mlflow_in_network(mlflow)),
            ];
            if let Some(dashboard) = &service.dashboard {
                variables.push(("DASHBOARD_PORT", dashboard.container_port.to_string()));
            }
            env = variables
                .into_iter()
                .map(|(name, value)| EnvVar {
                    value_from: None,
                    name: name.into(),
                    value: Some(value),
                })
                .collect();
            volume_mounts = vec![mount("models", MODEL_DIR, true)];
            volumes = vec![
                empty_dir("models", "64Mi"),
                empty_dir("training-data", "256Mi"),
            ];
            init_containers = training_containers(service, image);
            (startup_period, startup_failures) = (1, 30);
        }
    }
    let container = Container {
        name: object_name(&service.name),
        image: image.into(),
        image_pull_policy: "IfNotPresent",
        args,
        env,
        ports,
        startup_probe: Some(probe(service, startup_period, startup_failures)),
        readiness_probe: Some(probe(service, 5, 2)),
        liveness_probe: Some(probe(service, 10, 3)),
        resources: resources(service.kind),
        security_context: container_security(),
        volume_mounts,
    };
    let (replicas, strategy) = match service.kind {
        // One writer of the SQLite store: the old pod goes before the new one starts.
        Kind::Mlflow => (
            Some(1),
            Strategy {
                kind: "Recreate",
                rolling_update: None,
            },
        ),
        // A new pod serves before an old one goes: no request finds no pod.
        Kind::Api => (
            None,
            Strategy {
                kind: "RollingUpdate",
                rolling_update: Some(RollingUpdate {
                    max_surge: 1,
                    max_unavailable: 0,
                }),
            },
        ),
    };
    Object {
        api_version: "apps/v1",
        kind: "Deployment",
        metadata: metadata(deployment_name(service), service, namespace),
        spec: Some(DeploymentSpec {
            replicas,
            revision_history_limit: 5,
            selector: Selector {
                match_labels: selector_labels(service),
            },
            strategy,
            template: PodTemplate {
                metadata: Metadata {
                    labels: labels(service),
                    ..Metadata::default()
                },
                spec: PodSpec {
                    automount_service_account_token: false,
                    enable_service_links: false,
                    share_process_namespace: service.kind == Kind::Mlflow,
                    security_context: PodSecurityContext {
                        run_as_non_root: true,
                        run_as_user: RUN_AS,
                        run_as_group: RUN_AS,
                        fs_group: RUN_AS,
                        seccomp_profile: runtime_default(),
                    },
                    termination_grace_period_seconds: STOP_GRACE_SECONDS,
                    topology_spread_constraints: match service.kind {
                        Kind::Api => vec![TopologySpread {
                            max_skew: 1,
                            topology_key: "kubernetes.io/hostname",
                            when_unsatisfiable: "ScheduleAnyway",
                            label_selector: Selector {
                                match_labels: selector_labels(service),
                            },
                        }],
                        Kind::Mlflow => Vec::new(),
                    },
                    init_containers,
                    containers: vec![container],
                    volumes,
                },
            },
        }),
    }
}

fn service_object(service: &Service, namespace: &str) -> Object<ServiceSpec> {
    Object {
        api_version: "v1",
        kind: "Service",
        metadata: metadata(object_name(&service.name), service, namespace),
        spec: Some(ServiceSpec {
            kind: "ClusterIP",
            selector: selector_labels(service),
            ports: service
                .endpoints()
                .iter()
                .map(|e| ServicePort {
                    name: port_name(e.role),
                    port: e.container_port,
                    target_port: port_name(e.role),
                    protocol: "TCP",
                })
                .collect(),
        }),
    }
}

fn disruption_budget(service: &Service, namespace: &str) -> Object<DisruptionBudgetSpec> {
    Object {
        api_version: "policy/v1",
        kind: "PodDisruptionBudget",
        metadata: metadata(object_name(&service.name), service, namespace),
        spec: Some(DisruptionBudgetSpec {
            max_unavailable: 1,
            selector: Selector {
                match_labels: selector_labels(service),
            },
        }),
    }
}

fn autoscaler(service: &Service, namespace: &str) -> Object<AutoscalerSpec> {
    Object {
        api_version: "autoscaling/v2",
        kind: "HorizontalPodAutoscaler",
        metadata: metadata(object_name(&service.name), service, namespace),
        spec: Some(AutoscalerSpec {
            scale_target_ref: ScaleTarget {
                api_version: "apps/v1",
                kind: "Deployment",
                name: deployment_name(service),
            },
            min_replicas: MIN_REPLICAS,
            max_replicas: MAX_REPLICAS,
            metrics: vec![Metric {
                kind: "Resource",
                resource: ResourceMetric {
                    name: "cpu",
                    target: MetricTarget {
                        kind: "Utilization",
                        average_utilization: CPU_TARGET_PERCENT,
                    },
                },
            }],
        }),
    }
}

fn store_claim(mlflow: &Service, namespace: &str) -> Object<ClaimSpec> {
    Object {
        api_version: "v1",
        kind: "PersistentVolumeClaim",
        metadata: metadata(store_claim_name(mlflow), mlflow, namespace),
        spec: Some(ClaimSpec {
            access_modes: vec!["ReadWriteOnce"],
            resources: ClaimResources {
                requests: BTreeMap::from([("storage", MLFLOW_STORE_SIZE.to_owned())]),
            },
        }),
    }
}

/// The namespace, enforcing the restricted pod security level the pods are written for.
fn namespace_object(name: &str) -> Object<()> {
    let level = |mode: &str| {
        (
            format!("pod-security.kubernetes.io/{mode}"),
            "restricted".to_owned(),
        )
    };
    Object {
        api_version: "v1",
        kind: "Namespace",
        metadata: Metadata {
            name: name.into(),
            namespace: String::new(),
            labels: Labels::from([
                ("app.kubernetes.io/part-of".into(), PART_OF.into()),
                level("enforce"),
                level("warn"),
            ]),
        },
        spec: None,
    }
}

fn yaml<T: Serialize>(value: &T) -> String {
    serde_yaml_ng::to_string(value).expect("the manifests serialize")
}

/// Several objects in one file.
fn documents(header: &str, objects: &[String]) -> String {
    format!("{GENERATED_MARK}\n{header}---\n{}", objects.join("---\n"))
}

/// The file of one service.
pub fn service_file_name(service: &Service) -> String {
    format!("{}.yaml", object_name(&service.name))
}

/// Every file of the base, `kustomization.yaml` last.
pub fn render(stack: &Stack, settings: &Settings) -> Vec<File> {
    let mlflow = stack.mlflow();
    let namespace = settings.namespace.as_str();
    let mut files = vec![File {
        name: "namespace.yaml".into(),
        text: documents(
            "# The namespace the kustomization puts everything in (its `namespace:`).\n",
            &[yaml(&namespace_object(namespace))],
        ),
    }];
    for service in &stack.services {
        let image = &settings.images[&service.name];
        let mut objects = vec![
            yaml(&deployment(
                service,
                mlflow,
                image,
                namespace,
                settings.postgres.as_ref(),
            )),
            yaml(&service_object(service, namespace)),
        ];
        let header = match service.kind {
            Kind::Mlflow => {
                objects.push(yaml(&store_claim(service, namespace)));
                match &settings.postgres {
                    Some(pg) => format!(
                        "# {}: one pod, its runs and registry in PostgreSQL ({}), its artifacts \
                         on its claim ({MLRUNS}).\n",
                        service.title,
                        pg.shown()
                    ),
                    None => format!(
                        "# {}: one pod on its claimed store (SQLite and artifacts in {MLRUNS}).\n",
                        service.title
                    ),
                }
            }
            Kind::Api => {
                objects.push(yaml(&disruption_budget(service, namespace)));
                objects.push(yaml(&autoscaler(service, namespace)));
                format!(
                    "# {}: {MIN_REPLICAS} to {MAX_REPLICAS} pods, each training the demo's model \
                     (seed {MODEL_SEED}) before it serves.\n",
                    service.title
                )
            }
        };
        files.push(File {
            name: service_file_name(service),
            text: documents(&header, &objects),
        });
    }
    let kustomization = Kustomization {
        api_version: "kustomize.config.k8s.io/v1beta1",
        kind: "Kustomization",
        namespace: settings.namespace.clone(),
        resources: files.iter().map(|f| f.name.clone()).collect(),
    };
    files.push(File {
        name: "kustomization.yaml".into(),
        text: format!(
            "{GENERATED_MARK}\n\
             # Apply with `cargo xtask deploy k8s --apply` (or `kubectl apply -k`). Your own\n\
             # settings go in an overlay: a folder of yours whose kustomization.yaml names this\n\
             # one under `resources:` and adds `namespace:`, `images:`, `patches:` (an Ingress,\n\
             # a storage class, other limits); `kubectl kustomize OVERLAY` shows the result.\n\
             {}",
            yaml(&kustomization)
        ),
    });
    files
}

/// The Deployments of a render: what `--apply` waits for.
pub fn deployments(stack: &Stack) -> Vec<String> {
    stack.services.iter().map(deployment_name).collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_yaml_ng::Value;

    use super::*;
    use crate::stack::compose_file::USER;

    fn stack() -> Stack {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        Stack::load(root).unwrap()
    }

    /// Every object of a render, read back as Kubernetes reads it.
    fn objects(files: &[File]) -> Vec<Value> {
        files
            .iter()
            .filter(|f| f.name != "kustomization.yaml")
            .flat_map(|f| {
                serde_yaml_ng::Deserializer::from_str(&f.text)
                    .map(|d| Value::deserialize(d).unwrap())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    use serde::Deserialize as _;

    /// The one check that the committed render is current (as the compose file's): under CI
    /// it fails, locally it also rewrites the folder.
    #[test]
    fn the_committed_manifests_match_the_stack() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let stack = stack();
        let files = render(&stack, &Settings::by_tag(&stack));
        let dir = root.join(DIR);
        let stale: Vec<&File> = files
            .iter()
            .filter(|f| std::fs::read_to_string(dir.join(&f.name)).ok().as_ref() != Some(&f.text))
            .collect();
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        let extra: Vec<String> = std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !names.contains(&n.as_str()))
                    .collect()
            })
            .unwrap_or_default();
        if stale.is_empty() && extra.is_empty() {
            return;
        }
        let what = format!(
            "{DIR}: stale {:?}, not rendered {extra:?}",
            stale.iter().map(|f| &f.name).collect::<Vec<_>>()
        );
        if std::env::var_os("CI").is_some() {
            panic!("{what}: run `cargo xtask deploy k8s --render {DIR}` and commit it");
        }
        std::fs::create_dir_all(&dir).unwrap();
        for file in stale {
            std::fs::write(dir.join(&file.name), &file.text).unwrap();
        }
        panic!("{what}: rewritten, review and commit it");
    }

    #[test]
    fn every_api_has_probes_a_budget_and_an_autoscaler_and_mlflow_a_claim() {
        let stack = stack();
        let all = objects(&render(&stack, &Settings::by_tag(&stack)));
        let find = |kind: &str, name: &str| {
            all.iter()
                .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
                .unwrap_or_else(|| panic!("no {kind} {name}"))
        };
        for api in stack.apis() {
            let deployment = find("Deployment", &api.container);
            assert!(
                deployment["spec"].get("replicas").is_none(),
                "the autoscaler owns it"
            );
            let container = &deployment["spec"]["template"]["spec"]["containers"][0];
            for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
                assert_eq!(
                    container[probe]["httpGet"]["path"].as_str(),
                    Some(api.health_path.as_str())
                );
                assert_eq!(container[probe]["httpGet"]["port"].as_str(), Some("http"));
            }
            let ports: Vec<u64> = container["ports"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|p| p["containerPort"].as_u64().unwrap())
                .collect();
            let expected: Vec<u64> = api
                .endpoints()
                .iter()
                .map(|e| e.container_port.into())
                .collect();
            assert_eq!(ports, expected, "{}: the dashboard's port too", api.name);
            assert_eq!(
                find("HorizontalPodAutoscaler", &api.name)["spec"]["scaleTargetRef"]["name"]
                    .as_str(),
                Some(api.container.as_str())
            );
            assert_eq!(
                find("PodDisruptionBudget", &api.name)["spec"]["maxUnavailable"].as_u64(),
                Some(1)
            );
            let service = find("Service", &api.name);
            assert_eq!(
                service["spec"]["ports"].as_sequence().unwrap().len(),
                expected.len()
            );
        }
        let mlflow = stack.mlflow();
        let claim = find("PersistentVolumeClaim", "mlflow-store");
        assert_eq!(
            claim["spec"]["resources"]["requests"]["storage"].as_str(),
            Some(MLFLOW_STORE_SIZE)
        );
        let pod = &find("Deployment", &mlflow.container)["spec"]["template"]["spec"];
        assert_eq!(
            pod["volumes"][0]["persistentVolumeClaim"]["claimName"].as_str(),
            Some("mlflow-store")
        );
    }

    #[test]
    fn every_pod_runs_restricted() {
        assert_eq!(USER, format!("{RUN_AS}:{RUN_AS}"));
        let stack = stack();
        for object in objects(&render(&stack, &Settings::by_tag(&stack))) {
            if object["kind"] != "Deployment" {
                continue;
            }
            let pod = &object["spec"]["template"]["spec"];
            assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
            assert_eq!(pod["securityContext"]["runAsUser"].as_i64(), Some(RUN_AS));
            let containers = pod["containers"]
                .as_sequence()
                .unwrap()
                .iter()
                .chain(pod["initContainers"].as_sequence().into_iter().flatten());
            for container in containers {
                let security = &container["securityContext"];
                let why = format!("{:?}", container["name"]);
                assert_eq!(
                    security["readOnlyRootFilesystem"].as_bool(),
                    Some(true),
                    "{why}"
                );
                assert_eq!(
                    security["allowPrivilegeEscalation"].as_bool(),
                    Some(false),
                    "{why}"
                );
                assert_eq!(
                    security["capabilities"]["drop"][0].as_str(),
                    Some("ALL"),
                    "{why}"
                );
                assert_eq!(
                    security["seccompProfile"]["type"].as_str(),
                    Some("RuntimeDefault"),
                    "{why}"
                );
                for bound in ["requests", "limits"] {
                    for resource in ["cpu", "memory"] {
                        assert!(
                            container["resources"][bound][resource].as_str().is_some(),
                            "{why}"
                        );
                    }
                }
            }
        }
    }

    /// `--validate` checks the versions the README promises, no fewer.
    #[test]
    fn the_readme_claims_the_validated_kubernetes_versions() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        let minor = |v: &str| v.trim_end_matches(".0").to_owned();
        let claim = format!(
            "Kubernetes {} to {}",
            minor(KUBERNETES_VERSIONS[0]),
            minor(KUBERNETES_VERSIONS[KUBERNETES_VERSIONS.len() - 1])
        );
        assert!(readme.contains(&claim), "the README does not say {claim:?}");
        let minors: Vec<u32> = KUBERNETES_VERSIONS
            .iter()
            .map(|v| v.split('.').nth(1).unwrap().parse().unwrap())
            .collect();
        assert!(
            minors.windows(2).all(|w| w[1] == w[0] + 1),
            "a version is missing from the range: {minors:?}"
        );
    }

    #[test]
    fn mlflow_on_postgresql_reads_its_password_from_a_secret_the_render_never_holds() {
        let stack = stack();
        let mut settings = Settings::by_tag(&stack);
        let backend = crate::stack::mlflow_backend::Backend::parse(Some(
            "postgresql://mlflow:hunter2@db.data:5432/mlflow",
        ))
        .unwrap();
        settings.postgres = backend.postgres().cloned();
        let files = render(&stack, &settings);
        let mlflow = files
            .iter()
            .find(|f| f.text.contains("--backend-store-uri"))
            .unwrap();
        assert!(
            mlflow.text.contains(
                "- --backend-store-uri\n        - postgresql://mlflow@db.data:5432/mlflow\n"
            ),
            "{}",
            mlflow.text
        );
        assert!(
            mlflow.text.contains(&format!(
                "- name: PGPASSWORD\n          valueFrom:\n            secretKeyRef:\n              name: {POSTGRES_SECRET}\n              key: password\n"
            )),
            "{}",
            mlflow.text
        );
        assert!(!mlflow.text.contains("sqlite"), "{}", mlflow.text);
        for file in &files {
            assert!(!file.text.contains("hunter2"), "{}", file.text);
        }
        // The committed render keeps SQLite.
        let sqlite = render(&stack, &Settings::by_tag(&stack));
        assert!(sqlite
            .iter()
            .any(|f| f.text.contains("sqlite:////mlruns/mlflow.db")));
        assert!(!sqlite.iter().any(|f| f.text.contains("PGPASSWORD")));
    }

    #[test]
    fn images_and_namespace_come_from_the_settings() {
        let stack = stack();
        let mut settings = Settings::by_tag(&stack);
        settings.namespace = "serving".into();
        for (service, image) in settings.images.iter_mut() {
            *image = format!(
                "registry.example/ml-mlops/{service}@sha256:{}",
                "0".repeat(64)
            );
        }
        let files = render(&stack, &settings);
        let kustomization = &files.last().unwrap().text;
        assert!(
            kustomization.contains("namespace: serving"),
            "{kustomization}"
        );
        for object in objects(&files) {
            let expected = if object["kind"] == "Namespace" {
                None
            } else {
                Some("serving")
            };
            assert_eq!(
                object["metadata"]["namespace"].as_str(),
                expected,
                "{object:?}"
            );
            if object["kind"] == "Deployment" {
                let image = object["spec"]["template"]["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap();
                assert!(
                    image.starts_with("registry.example/") && image.contains("@sha256:"),
                    "{image}"
                );
            }
        }
    }
}

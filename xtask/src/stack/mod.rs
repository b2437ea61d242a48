//! The stack's description: its single source of truth, one `service.toml` per folder under
//! `services/`, and the compose file generated from it. Every command, the compose file and
//! the workflows derive names, ports and health paths from it.

pub mod compose_file;
pub mod k8s_manifests;
pub mod mlflow_backend;
pub mod mlflow_command;
pub mod stack_file;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

pub const IMAGE_PREFIX: &str = "ml-mlops";

/// How long a service gets between SIGTERM and SIGKILL: the APIs finish their in-flight
/// requests within 10 s (`serve --shutdown-timeout`), and get 5 s more to exit.
pub const STOP_GRACE_SECONDS: u64 = 15;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The MLflow tracking server, from PyPI.
    Mlflow,
    /// A model API built from the crate in the same folder.
    Api,
}

/// What one container of a kind may use: the compose file's limits, and the Kubernetes
/// requests and limits (the same memory ceiling on both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resources {
    pub memory_limit_mib: u32,
    pub pids_limit: u32,
    /// What the Kubernetes scheduler reserves, and what its autoscaler measures use against.
    pub memory_request_mib: u32,
    pub cpu_request_millis: u32,
    pub cpu_limit_millis: u32,
}

impl Kind {
    pub fn resources(self) -> Resources {
        match self {
            // MLflow's one uvicorn worker uses about 360 MiB (measured, jobs off).
            Kind::Mlflow => Resources {
                memory_limit_mib: 1024,
                pids_limit: 256,
                memory_request_mib: 512,
                cpu_request_millis: 250,
                cpu_limit_millis: 1000,
            },
            Kind::Api => Resources {
                memory_limit_mib: 256,
                pids_limit: 128,
                memory_request_mib: 64,
                cpu_request_millis: 100,
                cpu_limit_millis: 1000,
            },
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// The folder name: the crate, the binary and the name users type.
    #[serde(skip)]
    pub name: String,
    #[serde(skip)]
    pub dir: PathBuf,
    pub title: String,
    pub container: String,
    pub kind: Kind,
    pub host_port: u16,
    pub container_port: u16,
    pub health_path: String,
    /// The public CSV file the service trains on (APIs only).
    pub dataset: Option<String>,
    pub smoke: Option<Smoke>,
    pub mlflow: Option<MlflowSettings>,
    /// A second HTTP listener of the same process, serving a dashboard (APIs only).
    pub dashboard: Option<DashboardSettings>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardSettings {
    pub host_port: u16,
    pub container_port: u16,
    pub health_path: String,
}

/// One HTTP listener a service publishes on the host: its API (or MLflow's server), or its
/// dashboard. Ports, health waits, status, health and smoke checks go through these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `None` for the service's own listener, `Some("dashboard")` for the second one.
    pub role: Option<&'static str>,
    pub host_port: u16,
    pub container_port: u16,
    pub health_path: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Smoke {
    pub path: String,
    /// The JSON body to post (written as a TOML table).
    pub request: serde_json::Value,
    pub expect: Vec<Expectation>,
}

/// What one field of a smoke prediction must look like.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    pub field: String,
    pub range: Option<[f64; 2]>,
    pub one_of: Option<Vec<serde_json::Value>>,
    /// `string`, `number` or `object`.
    pub kind: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlflowSettings {
    pub version: String,
    /// The schema revision (alembic's head) of a store this version made or upgraded: a
    /// store at another one is refused before the server starts (`cargo xtask mlflow
    /// upgrade` moves an older one forward). `mlflow upgrade` checks it against the pinned
    /// MLflow's migrations.
    pub schema_revision: String,
}

impl Service {
    pub fn is_api(&self) -> bool {
        self.kind == Kind::Api
    }

    /// The listeners it publishes: its own first, then the dashboard's.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        let main = Endpoint {
            role: None,
            host_port: self.host_port,
            container_port: self.container_port,
            health_path: self.health_path.clone(),
        };
        let dashboard = self.dashboard.as_ref().map(|d| Endpoint {
            role: Some("dashboard"),
            host_port: d.host_port,
            container_port: d.container_port,
            health_path: d.health_path.clone(),
        });
        [main].into_iter().chain(dashboard).collect()
    }

    /// How an endpoint is named in reports: `carvision`, `carvision dashboard`.
    pub fn label(&self, endpoint: &Endpoint) -> String {
        match endpoint.role {
            Some(role) => format!("{} {role}", self.name),
            None => self.name.clone(),
        }
    }

    /// The image repository (tags: the workspace version and the git revision).
    pub fn image(&self) -> String {
        format!("{IMAGE_PREFIX}/{}", self.name)
    }

    /// The image tagged with the workspace version: what the compose file runs.
    pub fn versioned_image(&self) -> String {
        format!("{}:{}", self.image(), env!("CARGO_PKG_VERSION"))
    }
}

#[derive(Debug, Clone)]
pub struct Stack {
    /// MLflow first (the APIs depend on it), then the APIs by name.
    pub services: Vec<Service>,
}

/// A service's name becomes a crate, a binary, a compose service and part of an environment
/// variable (`<NAME>_HOST_PORT`): lowercase letters, digits and underscores keep it valid in all.
fn check_name(name: &str, file: &Path) -> Result<()> {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        bail!(
            "{}: the folder name {name:?} is not a valid service name: use lowercase letters, digits \
             and underscores, starting with a letter (it names the crate, the binary, the compose \
             service and the {}_HOST_PORT variable)",
            file.display(),
            name.to_uppercase()
        );
    }
    Ok(())
}

impl Stack {
    /// Reads `services/*/service.toml` under the workspace root.
    pub fn load(root: &Path) -> Result<Self> {
        let services_dir = root.join("services");
        let mut services = Vec::new();
        let entries = std::fs::read_dir(&services_dir)
            .with_context(|| format!("cannot read {}", services_dir.display()))?;
        for entry in entries {
            let dir = entry?.path();
            let file = dir.join("service.toml");
            if !file.is_file() {
                continue; // a library, not a service
            }
            let text = std::fs::read_to_string(&file)?;
            let mut service: Service =
                toml::from_str(&text).with_context(|| format!("invalid {}", file.display()))?;
            service.name = dir
                .file_name()
                .context("a service folder has a name")?
                .to_string_lossy()
                .into_owned();
            check_name(&service.name, &file)?;
            service.dir = dir;
            services.push(service);
        }
        services.sort_by_key(|s| (s.kind != Kind::Mlflow, s.name.clone()));
        let stack = Self { services };
        stack.validate()?;
        Ok(stack)
    }

    /// Every published endpoint, with its service.
    pub fn endpoints(&self) -> impl Iterator<Item = (&Service, Endpoint)> {
        self.services
            .iter()
            .flat_map(|s| s.endpoints().into_iter().map(move |e| (s, e)))
    }

    /// Fails when `offset` moves a service's host port past 65535.
    pub fn check_port_offset(&self, offset: u16) -> Result<()> {
        let highest = self
            .endpoints()
            .map(|(_, e)| e.host_port)
            .max()
            .unwrap_or(0);
        for (service, endpoint) in self.endpoints() {
            if endpoint.host_port.checked_add(offset).is_none() {
                bail!(
                    "--port-offset {offset} moves {}'s port {} past 65535: choose an offset of at most {}",
                    service.label(&endpoint),
                    endpoint.host_port,
                    u16::MAX - highest
                );
            }
        }
        Ok(())
    }

    fn validate(&self) -> Result<()> {
        let mlflow = self
            .services
            .iter()
            .filter(|s| s.kind == Kind::Mlflow)
            .count();
        if mlflow != 1 {
            bail!("the stack needs exactly one MLflow service, found {mlflow}");
        }
        let endpoints: Vec<(&Service, Endpoint)> = self.endpoints().collect();
        for (i, (a, ae)) in endpoints.iter().enumerate() {
            for (b, be) in &endpoints[i + 1..] {
                if ae.host_port == be.host_port {
                    bail!(
                        "{} and {} both claim host port {}",
                        a.label(ae),
                        b.label(be),
                        ae.host_port
                    );
                }
            }
        }
        for (i, a) in self.services.iter().enumerate() {
            for b in &self.services[i + 1..] {
                if a.container == b.container {
                    bail!(
                        "{} and {} share container name {}",
                        a.name,
                        b.name,
                        a.container
                    );
                }
            }
            if a.is_api() && (a.dataset.is_none() || a.smoke.is_none()) {
                bail!(
                    "API service {} needs `dataset` and `[smoke]` in its service.toml",
                    a.name
                );
            }
            if a.dashboard.is_some() && !a.is_api() {
                bail!("{}: only an API can serve a dashboard", a.name);
            }
            if a.kind == Kind::Mlflow && a.mlflow.is_none() {
                bail!(
                    "{} needs an `[mlflow]` table with the pinned version",
                    a.name
                );
            }
        }
        Ok(())
    }

    /// The pinned MLflow version (validated present).
    pub fn mlflow_version(&self) -> &str {
        &self
            .mlflow()
            .mlflow
            .as_ref()
            .expect("validated: MLflow has a version")
            .version
    }

    /// The schema revision of a store the pinned MLflow made.
    pub fn mlflow_schema_revision(&self) -> &str {
        &self
            .mlflow()
            .mlflow
            .as_ref()
            .expect("validated: MLflow has a version")
            .schema_revision
    }

    pub fn mlflow(&self) -> &Service {
        self.services
            .iter()
            .find(|s| s.kind == Kind::Mlflow)
            .expect("validated: one MLflow service")
    }

    pub fn apis(&self) -> impl Iterator<Item = &Service> {
        self.services.iter().filter(|s| s.is_api())
    }

    /// Looks a service up by folder name or container name.
    pub fn get(&self, name: &str) -> Result<&Service> {
        self.services
            .iter()
            .find(|s| s.name == name || s.container == name)
            .with_context(|| {
                let names: Vec<&str> = self.services.iter().map(|s| s.name.as_str()).collect();
                format!(
                    "no service named {name:?}; the stack has {}",
                    names.join(", ")
                )
            })
    }

    /// The services named, or all of them when `names` is empty.
    pub fn select(&self, names: &[String]) -> Result<Vec<&Service>> {
        if names.is_empty() {
            return Ok(self.services.iter().collect());
        }
        names.iter().map(|n| self.get(n)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A workspace holding the given `services/<name>/service.toml` files.
    fn stack_of(files: &[(&str, &str)]) -> Result<Stack> {
        let root = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let dir = root.path().join("services").join(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("service.toml"), text).unwrap();
        }
        Stack::load(root.path())
    }

    const MLFLOW: &str = "title = 'T'\ncontainer = 'tracking'\nkind = 'mlflow'\nhost_port = 5000\ncontainer_port = 5000\nhealth_path = '/health'\n[mlflow]\nversion = '1'\nschema_revision = 'abc'\n";

    fn api(container: &str, port: u16) -> String {
        format!(
            "title = 'A'\ncontainer = '{container}'\nkind = 'api'\nhost_port = {port}\ncontainer_port = 8000\nhealth_path = '/health'\ndataset = 'd.csv'\n[smoke]\npath = '/predict'\nrequest = {{ x = 1 }}\nexpect = []\n"
        )
    }

    #[test]
    fn services_load_mlflow_first_then_by_name() {
        let stack = stack_of(&[
            ("zeta", &api("zeta-api", 8002)),
            ("alpha", &api("alpha-api", 8001)),
            ("tracking", MLFLOW),
        ])
        .unwrap();
        let names: Vec<&str> = stack.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["tracking", "alpha", "zeta"]);
        assert_eq!(stack.get("alpha-api").unwrap().host_port, 8001);
    }

    #[test]
    fn a_name_that_breaks_compose_variables_is_refused() {
        let err = stack_of(&[("my-svc", &api("my-svc-api", 8001)), ("m", MLFLOW)])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"my-svc\" is not a valid service name"),
            "{err}"
        );
        assert!(err.contains("MY-SVC_HOST_PORT"), "{err}");
    }

    #[test]
    fn clashing_ports_and_missing_tables_are_refused() {
        let err = stack_of(&[("a", &api("a-api", 5000)), ("m", MLFLOW)]).unwrap_err();
        assert!(
            err.to_string().contains("both claim host port 5000"),
            "{err}"
        );
        let err = stack_of(&[("a", &api("a-api", 8001))]).unwrap_err();
        assert!(
            err.to_string().contains("exactly one MLflow service"),
            "{err}"
        );
    }

    #[test]
    fn a_dashboard_is_a_second_endpoint_whose_port_counts_too() {
        let with_dashboard = format!(
            "{}[dashboard]\nhost_port = 8501\ncontainer_port = 8501\nhealth_path = '/health'\n",
            api("a-api", 8001)
        );
        let stack = stack_of(&[("a", &with_dashboard), ("m", MLFLOW)]).unwrap();
        let a = stack.get("a").unwrap();
        let labels: Vec<String> = a.endpoints().iter().map(|e| a.label(e)).collect();
        assert_eq!(labels, ["a", "a dashboard"]);
        // 8001 + 57100 fits, 8501 + 57100 does not.
        let err = stack.check_port_offset(57_100).unwrap_err().to_string();
        assert!(
            err.contains("moves a dashboard's port 8501 past 65535"),
            "{err}"
        );
        let clash = format!(
            "{}[dashboard]\nhost_port = 5000\ncontainer_port = 8501\nhealth_path = '/health'\n",
            api("a-api", 8001)
        );
        let err = stack_of(&[("a", &clash), ("m", MLFLOW)]).unwrap_err();
        assert!(
            err.to_string()
                .contains("m and a dashboard both claim host port 5000"),
            "{err}"
        );
    }

    #[test]
    fn port_offsets_that_overflow_are_refused_naming_the_service() {
        let stack = stack_of(&[("api", &api("a-api", 8003)), ("m", MLFLOW)]).unwrap();
        assert!(stack.check_port_offset(57_532).is_ok());
        let err = stack.check_port_offset(60_000).unwrap_err().to_string();
        assert!(err.contains("moves api's port 8003 past 65535"), "{err}");
        assert!(err.contains("at most 57532"), "{err}");
    }

    fn workspace_root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn the_mlflow_lock_pins_the_version_of_service_toml() {
        let stack = Stack::load(&workspace_root()).unwrap();
        let version = &stack.mlflow().mlflow.as_ref().unwrap().version;
        let lock = std::fs::read_to_string(stack.mlflow().dir.join("requirements.lock")).unwrap();
        assert!(lock
            .lines()
            .any(|l| l.starts_with(&format!("mlflow=={version} --hash=sha256:"))));
        assert!(lock
            .lines()
            .filter(|l| !l.starts_with('#'))
            .all(|l| l.contains("--hash=sha256:")));
    }

    #[test]
    fn every_api_folder_is_a_workspace_crate() {
        let stack = Stack::load(&workspace_root()).unwrap();
        for api in stack.apis() {
            let manifest = std::fs::read_to_string(api.dir.join("Cargo.toml")).unwrap();
            assert!(
                manifest.contains(&format!("name = \"{}\"", api.name)),
                "{}",
                api.name
            );
        }
    }
}

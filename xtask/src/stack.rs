//! The stack's single source of truth: one `service.toml` per folder under `services/`. Every
//! command, the compose file and the workflows derive names, ports and health paths from it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

pub const IMAGE_PREFIX: &str = "ml-mlops";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The MLflow tracking server, from PyPI.
    Mlflow,
    /// A model API built from the crate in the same folder.
    Api,
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
}

impl Service {
    pub fn is_api(&self) -> bool {
        self.kind == Kind::Api
    }

    /// The image repository, tagged with the version and the git revision.
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
            service.dir = dir;
            services.push(service);
        }
        services.sort_by_key(|s| (s.kind != Kind::Mlflow, s.name.clone()));
        let stack = Self { services };
        stack.validate()?;
        Ok(stack)
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
        for (i, a) in self.services.iter().enumerate() {
            for b in &self.services[i + 1..] {
                if a.host_port == b.host_port {
                    bail!(
                        "{} and {} both claim host port {}",
                        a.name,
                        b.name,
                        a.host_port
                    );
                }
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

    fn workspace_root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn the_stack_has_the_names_and_ports_users_depend_on() {
        let stack = Stack::load(&workspace_root()).unwrap();
        let table: Vec<(&str, &str, u16, u16)> = stack
            .services
            .iter()
            .map(|s| {
                (
                    s.name.as_str(),
                    s.container.as_str(),
                    s.host_port,
                    s.container_port,
                )
            })
            .collect();
        assert_eq!(
            table,
            [
                ("mlflow", "mlflow-server", 5000, 5000),
                ("bankchurn", "bankchurn-api", 8001, 8000),
                ("carvision", "carvision-api", 8002, 8000),
                ("telecom", "telecom-api", 8003, 8000),
            ]
        );
        assert!(stack.services.iter().all(|s| s.health_path == "/health"));
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

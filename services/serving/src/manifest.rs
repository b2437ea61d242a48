//! The service's identity, read from its `service.toml`: the stack's single source of truth,
//! which the task runner reads too. The crate embeds the file at compile time
//! ([`service_manifest!`](crate::service_manifest)), so name and title are declared once.

use serde::Deserialize;

/// A service's name (its crate and folder name) and its `service.toml`, embedded.
#[derive(Debug, Clone, Copy)]
pub struct Manifest {
    /// Short lowercase name: the binary, the metric prefix, the model's owner.
    pub name: &'static str,
    toml: &'static str,
}

/// The keys of `service.toml` the service itself uses; the task runner's keys are ignored.
#[derive(Deserialize)]
struct ServiceToml {
    title: String,
}

impl Manifest {
    pub const fn new(name: &'static str, toml: &'static str) -> Self {
        Self { name, toml }
    }

    /// Human title, e.g. "BankChurn API".
    pub fn title(&self) -> anyhow::Result<String> {
        let parsed: ServiceToml = toml::from_str(self.toml)
            .map_err(|e| anyhow::anyhow!("services/{}/service.toml: {e}", self.name))?;
        Ok(parsed.title)
    }
}

/// The calling crate's [`Manifest`]: its package name and its `service.toml`, embedded at
/// compile time. Each service crate sits in the folder of its name, next to its service.toml.
#[macro_export]
macro_rules! service_manifest {
    () => {
        $crate::Manifest::new(
            env!("CARGO_PKG_NAME"),
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/service.toml")),
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_title_and_ignores_the_task_runners_keys() {
        let manifest = Manifest::new(
            "demo",
            "title = \"Demo API\"\ncontainer = \"demo-api\"\nhost_port = 8009\n[smoke]\npath = \"/predict\"\n",
        );
        assert_eq!(manifest.title().unwrap(), "Demo API");
    }

    #[test]
    fn a_missing_title_names_the_file() {
        let err = Manifest::new("demo", "container = \"x\"")
            .title()
            .unwrap_err();
        assert!(
            err.to_string().contains("services/demo/service.toml"),
            "{err}"
        );
    }
}

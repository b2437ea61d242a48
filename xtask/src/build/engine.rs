//! The Docker engine and its compose front-end: finding them, and asking about images. Shared
//! by the docker runtime, the image builds and `doctor`.

use anyhow::{bail, Context, Result};

use crate::ctx::Ctx;
use crate::runner::Step;

fn first_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_owned()
}

/// The engine's version, or why no engine answers.
pub fn version(ctx: &Ctx) -> Result<String> {
    let engine =
        ctx.runner
            .query(&Step::new("docker").args(["version", "--format", "{{.Server.Version}}"]));
    match engine {
        Ok(out) if out.status.success() => Ok(first_line(&out.stdout)),
        Ok(out) => bail!("no Docker engine answers: {}", first_line(&out.stderr)),
        Err(_) => bail!("the docker client is not installed"),
    }
}

/// The compose front-end to use: the v2 plugin, else the legacy `docker-compose`, unless
/// `XTASK_COMPOSE` names one (`plugin` or `legacy`). Found without running the legacy one, a
/// Python program that takes 0.4 s just to start.
pub fn compose_frontend(ctx: &Ctx) -> Result<Vec<String>> {
    let wanted = std::env::var("XTASK_COMPOSE").unwrap_or_default();
    let plugin = || {
        let version = Step::new("docker").args(["compose", "version", "--short"]);
        ctx.runner
            .query_stdout(&version)
            .map(|_| vec!["docker".to_owned(), "compose".to_owned()])
    };
    let legacy = || {
        which::which("docker-compose")
            .ok()
            .map(|_| vec!["docker-compose".to_owned()])
    };
    match wanted.as_str() {
        "plugin" => plugin().context("XTASK_COMPOSE=plugin, but `docker compose` does not answer"),
        "legacy" => legacy().context("XTASK_COMPOSE=legacy, but `docker-compose` is not installed"),
        "" => plugin()
            .or_else(legacy)
            .context("neither `docker compose` nor `docker-compose` is installed"),
        other => bail!("XTASK_COMPOSE={other:?}: use `plugin` or `legacy`"),
    }
}

/// The version of a compose front-end, for reports.
pub fn compose_version(ctx: &Ctx, command: &[String]) -> Option<String> {
    ctx.runner.query_stdout(
        &Step::new(&command[0])
            .args(&command[1..])
            .args(["version", "--short"]),
    )
}

/// `docker image inspect --format FORMAT IMAGE`; `None` when the image is absent.
pub fn image_inspect(ctx: &Ctx, image: &str, format: &str) -> Option<String> {
    ctx.runner
        .query_stdout(&Step::new("docker").args(["image", "inspect", "--format", format, image]))
}

pub fn image_exists(ctx: &Ctx, image: &str) -> bool {
    image_inspect(ctx, image, "{{.Id}}").is_some()
}

/// Where the engine keeps its images, which decides what an image ID is the digest of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageStore {
    /// The graph drivers' store (overlay2; Docker's default before 29): an image ID is the
    /// digest of the image's configuration.
    Classic,
    /// containerd's snapshotters (Docker 29's default, as on GitHub's runners): an image ID is
    /// the digest of the image's manifest (or index), what a registry serves it by.
    Containerd,
}

impl ImageStore {
    pub fn name(self) -> &'static str {
        match self {
            ImageStore::Classic => "classic",
            ImageStore::Containerd => "containerd",
        }
    }

    /// What an image ID names on this store, for messages.
    pub fn id_meaning(self) -> &'static str {
        match self {
            ImageStore::Classic => {
                "the classic image store, where an image ID is its configuration's digest"
            }
            ImageStore::Containerd => {
                "the containerd image store, where an image ID is its manifest's digest"
            }
        }
    }
}

/// Which store the engine keeps its images in: `docker info` names a `driver-type` of
/// `io.containerd.snapshotter.v1` on the containerd store.
pub fn image_store(ctx: &Ctx) -> ImageStore {
    let status = ctx.runner.query_stdout(&Step::new("docker").args([
        "info",
        "--format",
        "{{json .DriverStatus}}",
    ]));
    store_of(status.as_deref().unwrap_or_default())
}

fn store_of(driver_status: &str) -> ImageStore {
    if driver_status.contains("io.containerd.snapshotter") {
        ImageStore::Containerd
    } else {
        ImageStore::Classic
    }
}

/// Whether the client has BuildKit's `docker buildx` (then images are built with it).
pub fn has_buildx(ctx: &Ctx) -> bool {
    ctx.runner
        .query_stdout(&Step::new("docker").args(["buildx", "version"]))
        .is_some()
}

#[cfg(test)]
mod tests {
    use super::{store_of, ImageStore};

    #[test]
    fn the_store_is_read_from_the_driver_status() {
        assert_eq!(
            store_of(r#"[["driver-type","io.containerd.snapshotter.v1"]]"#),
            ImageStore::Containerd
        );
        assert_eq!(
            store_of(r#"[["Backing Filesystem","extfs"],["Supports d_type","true"]]"#),
            ImageStore::Classic
        );
        assert_eq!(store_of(""), ImageStore::Classic);
    }
}

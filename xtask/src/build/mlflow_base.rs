//! What the MLflow image is built from, with no registry needed: a Python base image (pulled,
//! or bootstrapped from Debian's archive with debootstrap) and a wheelhouse downloaded on the
//! host against `requirements.lock`, so the image build itself runs with `--network none`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::engine;
use crate::ctx::Ctx;
use crate::runner::Step;
use crate::stack::Service;
use crate::util::debian_archive::debian_archive;

/// The base MLflow's image prefers, when it is present or can be pulled.
pub const PYTHON_BASE: &str = "python:3.11-slim";
/// The base the toolkit bootstraps when it cannot.
pub const BOOTSTRAPPED_BASE: &str = "ml-mlops/bookworm-python:local";
const WHEELHOUSE_MARKER: &str = ".xtask-complete";

/// A base image already here, if any.
fn present(ctx: &Ctx) -> Option<&'static str> {
    [PYTHON_BASE, BOOTSTRAPPED_BASE]
        .into_iter()
        .find(|image| engine::image_exists(ctx, image))
}

/// Why the toolkit cannot bootstrap a base here, if it cannot.
fn cannot_bootstrap() -> Option<&'static str> {
    if which::which("debootstrap").is_err() {
        Some("debootstrap is not installed to bootstrap one (`apt-get install debootstrap`)")
    } else if !rustix::process::geteuid().is_root() {
        Some("debootstrap needs root to bootstrap one (run as root, or `docker load` a Python image)")
    } else {
        None
    }
}

/// Checks, without building anything, that a base image is here or can be had: present,
/// bootstrappable, or (with `may_pull`) pulled now. The message says what is missing and
/// what to do.
pub fn check_available(ctx: &Ctx, may_pull: bool) -> Result<()> {
    if present(ctx).is_some() {
        return Ok(());
    }
    let Some(why_not) = cannot_bootstrap() else {
        return Ok(());
    };
    if !may_pull {
        bail!("no Python base image for the MLflow image is here, and {why_not}");
    }
    match pull(ctx) {
        Ok(()) => Ok(()),
        Err(pull_error) => bail!(
            "no Python base image for the MLflow image: {PYTHON_BASE} cannot be pulled ({pull_error}) \
             and {why_not}"
        ),
    }
}

fn pull(ctx: &Ctx) -> Result<(), String> {
    let pulled = ctx
        .runner
        .query(&Step::new("docker").args(["pull", "--quiet", PYTHON_BASE]))
        .map_err(|e| format!("{e:#}"))?;
    if pulled.status.success() {
        return Ok(());
    }
    Err(String::from_utf8_lossy(&pulled.stderr)
        .lines()
        .last()
        .unwrap_or("")
        .trim()
        .to_owned())
}

/// A Python base image for MLflow: present, pulled, or bootstrapped from Debian's archive.
pub fn ensure(ctx: &Ctx) -> Result<String> {
    if let Some(image) = present(ctx) {
        return Ok(image.to_owned());
    }
    if !ctx.dry_run() {
        match pull(ctx) {
            Ok(()) => return Ok(PYTHON_BASE.to_owned()),
            Err(why) => ctx.reporter.info(format!(
                "{PYTHON_BASE} cannot be pulled ({why}); bootstrapping a Debian base instead"
            )),
        }
    }
    bootstrap(ctx)?;
    Ok(BOOTSTRAPPED_BASE.to_owned())
}

fn bootstrap(ctx: &Ctx) -> Result<()> {
    if let (false, Some(why_not)) = (ctx.dry_run(), cannot_bootstrap()) {
        bail!(
            "no Python base image can be pulled, and {why_not}; or make {PYTHON_BASE} available \
             (`docker load`), or run without Docker: `cargo xtask demo --runtime local`"
        );
    }
    let rootfs = ctx.cache_dir.join("bookworm-rootfs");
    let tarball = ctx.cache_dir.join("bookworm-rootfs.tar");
    let title =
        format!("bootstrap {BOOTSTRAPPED_BASE} from Debian bookworm (once, about a minute)");
    let result = ctx.reporter.run_task(title, |_| {
        ctx.runner.remove_path(&rootfs)?;
        let mut debootstrap = Step::new("debootstrap")
            .args([
                "--variant=minbase",
                "--include=python3,python3-venv,ca-certificates",
                "bookworm",
            ])
            .arg(&rootfs);
        if let Some(mirror) = debian_archive() {
            debootstrap = debootstrap.arg(mirror);
        }
        ctx.runner.run(&debootstrap)?;
        // What a container never needs: package lists, caches, docs and locales.
        for dir in [
            "var/lib/apt/lists",
            "var/cache/apt",
            "usr/share/doc",
            "usr/share/man",
            "usr/share/locale",
            "usr/share/info",
        ] {
            ctx.runner.remove_path(&rootfs.join(dir))?;
        }
        ctx.runner.run(
            &Step::new("tar")
                .arg("-C")
                .arg(&rootfs)
                .arg("-cf")
                .arg(&tarball)
                .arg("."),
        )?;
        ctx.runner.run(
            &Step::new("docker")
                .args([
                    "import",
                    "--change",
                    "ENV PATH=/usr/local/bin:/usr/bin:/bin",
                ])
                .arg(&tarball)
                .arg(BOOTSTRAPPED_BASE),
        )?;
        ctx.runner.remove_path(&rootfs)?;
        ctx.runner.remove_path(&tarball)
    });
    result.context("cannot bootstrap a Python base image for MLflow")
}

fn wheelhouse_dir(ctx: &Ctx, mlflow: &Service) -> Result<(PathBuf, PathBuf)> {
    let lock = mlflow.dir.join("requirements.lock");
    let text = std::fs::read(&lock).with_context(|| format!("cannot read {}", lock.display()))?;
    let key = format!("{:x}", Sha256::digest(&text));
    let dir = ctx
        .cache_dir
        .join(format!("mlflow-wheelhouse-{}", &key[..16]));
    Ok((dir, lock))
}

/// Checks that the wheelhouse is cached, or that pip is here to download it.
pub fn check_wheelhouse(ctx: &Ctx, mlflow: &Service) -> Result<()> {
    let (dir, _) = wheelhouse_dir(ctx, mlflow)?;
    if dir.join(WHEELHOUSE_MARKER).is_file() {
        return Ok(());
    }
    let pip = Step::new("python3").args(["-m", "pip", "--version"]);
    if ctx.runner.query_stdout(&pip).is_none() {
        bail!(
            "MLflow's wheels are not cached and `python3 -m pip` is not here to download them: \
             install python3 and pip"
        );
    }
    Ok(())
}

/// The wheels of `requirements.lock`, downloaded once into the cache.
pub fn wheelhouse(ctx: &Ctx, mlflow: &Service) -> Result<PathBuf> {
    let (dir, lock) = wheelhouse_dir(ctx, mlflow)?;
    if dir.join(WHEELHOUSE_MARKER).is_file() {
        return Ok(dir);
    }
    ctx.reporter
        .run_task("download the MLflow wheelhouse (once)", |_| {
            ctx.runner.run(
                &Step::new("python3")
                    .args([
                        "-m",
                        "pip",
                        "download",
                        "--no-deps",
                        "--require-hashes",
                        "--only-binary=:all:",
                    ])
                    .args(["--disable-pip-version-check", "--progress-bar", "off", "-r"])
                    .arg(&lock)
                    .arg("-d")
                    .arg(&dir),
            )?;
            ctx.runner.write_file(&dir.join(WHEELHOUSE_MARKER), "")
        })
        .map_err(|e| e.context("cannot download MLflow's wheels: is PyPI reachable?"))?;
    Ok(dir)
}

//! `cargo xtask images [SERVICE...]`: the stack's container images, with no registry needed.
//!
//! - APIs: the workspace is built once on the host, statically linked, and each binary is
//!   packaged alone `FROM scratch`.
//! - MLflow: Python from `python:3.11-slim` if it can be had, else a Debian base the toolkit
//!   bootstraps itself (debootstrap + `docker import`); MLflow from a wheelhouse downloaded on
//!   the host against `requirements.lock`, so the build runs with `--network none`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::ctx::Ctx;
use crate::runner::Step;
use crate::runtime::docker;
use crate::stack::{Kind, Service};
use crate::{binaries, status};

/// Build the images (all by default), tagged with the version and the git revision.
#[derive(clap::Args, Debug)]
pub struct Images {
    /// Only these services.
    pub services: Vec<String>,
}

/// The base MLflow's image prefers, when it is present or can be pulled.
const PYTHON_BASE: &str = "python:3.11-slim";
/// The base the toolkit bootstraps when it cannot.
const BOOTSTRAPPED_BASE: &str = "ml-mlops/bookworm-python:local";
const WHEELHOUSE_MARKER: &str = ".xtask-complete";
/// The label holding a fingerprint of everything an image is built from.
const INPUTS_LABEL: &str = "io.ml-mlops.inputs";

/// What the images are labelled and tagged with.
pub struct Revision {
    /// Where the source lives: the `origin` remote, else the checkout's path.
    pub source: String,
    /// Short commit id, `-dirty` when the tree has changes.
    pub tag: String,
    pub commit: String,
    /// The commit's time: images built twice from one commit are identical.
    pub created: String,
}

fn revision(ctx: &Ctx) -> Revision {
    let git = |args: &[&str]| {
        ctx.runner
            .query_stdout(&Step::new("git").args(args).cwd(&ctx.root))
    };
    let commit = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    let short: String = commit.chars().take(12).collect();
    let source = git(&["remote", "get-url", "origin"])
        .unwrap_or_else(|| format!("file://{}", ctx.root.display()));
    Revision {
        source,
        tag: if dirty {
            format!("{short}-dirty")
        } else {
            short
        },
        commit,
        created: git(&["log", "-1", "--format=%cI"])
            .unwrap_or_else(|| "1970-01-01T00:00:00Z".into()),
    }
}

fn image_exists(ctx: &Ctx, image: &str) -> bool {
    docker::image_inspect(ctx, image, "{{.Id}}").is_some()
}

/// The apt mirror this machine is set up with, for debootstrap.
fn debian_mirror() -> Option<String> {
    if let Ok(m) = std::env::var("XTASK_DEBIAN_MIRROR") {
        return Some(m);
    }
    let mut texts = vec![std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default()];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        texts.extend(
            dir.flatten()
                .filter_map(|e| std::fs::read_to_string(e.path()).ok()),
        );
    }
    texts.iter().flat_map(|t| t.lines()).find_map(|line| {
        let line = line.trim();
        let uri = line.strip_prefix("URIs:").map(str::trim).or_else(|| {
            line.strip_prefix("deb ")
                .and_then(|r| r.split_whitespace().find(|w| w.starts_with("http")))
        })?;
        let uri = uri.split_whitespace().next()?;
        (uri.ends_with("/debian") || uri.ends_with("/debian/")).then(|| uri.to_owned())
    })
}

/// A Python base image for MLflow: present, pulled, or bootstrapped from Debian's archive.
fn mlflow_base(ctx: &Ctx) -> Result<String> {
    for image in [PYTHON_BASE, BOOTSTRAPPED_BASE] {
        if image_exists(ctx, image) {
            return Ok(image.to_owned());
        }
    }
    if !ctx.dry_run() {
        let pulled =
            ctx.runner
                .query(&Step::new("docker").args(["pull", "--quiet", PYTHON_BASE]))?;
        if pulled.status.success() {
            return Ok(PYTHON_BASE.to_owned());
        }
        ctx.reporter.info(format!(
            "{PYTHON_BASE} cannot be pulled ({}); bootstrapping a Debian base instead",
            String::from_utf8_lossy(&pulled.stderr)
                .lines()
                .last()
                .unwrap_or("")
                .trim()
        ));
    }
    bootstrap_base(ctx)?;
    Ok(BOOTSTRAPPED_BASE.to_owned())
}

fn bootstrap_base(ctx: &Ctx) -> Result<()> {
    if !ctx.dry_run() && which::which("debootstrap").is_err() {
        bail!(
            "no Python base image can be pulled, and debootstrap is not installed to make one: \
             `apt-get install debootstrap` (as root), make {PYTHON_BASE} available (`docker load`), \
             or run without Docker: `cargo xtask demo --runtime local`"
        );
    }
    let rootfs = ctx.cache_dir.join("bookworm-rootfs");
    let tarball = ctx.cache_dir.join("bookworm-rootfs.tar");
    let title =
        format!("bootstrap {BOOTSTRAPPED_BASE} from Debian bookworm (once, about a minute)");
    let result = ctx.reporter.run_task(title, |_| {
        if rootfs.exists() && !ctx.dry_run() {
            std::fs::remove_dir_all(&rootfs)?;
        }
        let mut debootstrap = Step::new("debootstrap")
            .args([
                "--variant=minbase",
                "--include=python3,python3-venv,ca-certificates",
                "bookworm",
            ])
            .arg(&rootfs);
        if let Some(mirror) = debian_mirror() {
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
            let path = rootfs.join(dir);
            ctx.runner.plan(format!("rm -rf {}/*", path.display()));
            if !ctx.dry_run() && path.is_dir() {
                for entry in std::fs::read_dir(&path)?.flatten() {
                    let p = entry.path();
                    if p.is_dir() {
                        std::fs::remove_dir_all(&p)?
                    } else {
                        std::fs::remove_file(&p)?
                    }
                }
            }
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
        if !ctx.dry_run() {
            std::fs::remove_dir_all(&rootfs).ok();
            std::fs::remove_file(&tarball).ok();
        }
        Ok(())
    });
    result.context("cannot bootstrap a Python base image for MLflow")
}

/// The wheels of `requirements.lock`, downloaded once into the cache.
fn wheelhouse(ctx: &Ctx, mlflow: &Service) -> Result<PathBuf> {
    let lock = mlflow.dir.join("requirements.lock");
    let text = std::fs::read(&lock).with_context(|| format!("cannot read {}", lock.display()))?;
    let dir = ctx
        .cache_dir
        .join(format!("mlflow-wheelhouse-{:016x}", cache_key(&text)));
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
            if !ctx.dry_run() {
                std::fs::write(dir.join(WHEELHOUSE_MARKER), "")?;
            }
            Ok(())
        })
        .map_err(|e| e.context("cannot download MLflow's wheels: is PyPI reachable?"))?;
    Ok(dir)
}

/// A cache key for file contents (a changed lock means a new wheelhouse).
fn cache_key(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

fn dockerfile(ctx: &Ctx, service: &Service) -> PathBuf {
    let own = service.dir.join("Dockerfile");
    if own.is_file() {
        own
    } else {
        ctx.root.join("services/serving/Dockerfile.api")
    }
}

/// A fingerprint of what the image is built from: the Dockerfile, the binary or the lock, the
/// base image and the labels. The same inputs skip the build (and its 190 MB context upload).
fn inputs_fingerprint(
    ctx: &Ctx,
    service: &Service,
    revision: &Revision,
    base: Option<&str>,
) -> Result<String> {
    let mut bytes = std::fs::read(dockerfile(ctx, service))?;
    match service.kind {
        Kind::Api => bytes.extend(std::fs::read(binaries::path(ctx, service)).unwrap_or_default()),
        Kind::Mlflow => {
            bytes.extend(std::fs::read(service.dir.join("requirements.lock"))?);
            let base_id = base.and_then(|b| docker::image_inspect(ctx, b, "{{.Id}}"));
            bytes.extend(base_id.unwrap_or_default().into_bytes());
        }
    }
    bytes
        .extend(format!("{}{}{}", revision.commit, revision.created, revision.source).into_bytes());
    Ok(format!("{:016x}", cache_key(&bytes)))
}

/// Links (or copies) `from` to `to`.
fn place(from: &Path, to: &Path) -> Result<()> {
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to)
            .with_context(|| format!("cannot copy {} into the build context", from.display()))?;
    }
    Ok(())
}

/// A fresh build context holding only what the image needs.
fn stage(ctx: &Ctx, service: &Service, wheels: Option<&Path>) -> Result<PathBuf> {
    let context = ctx.root.join("target/xtask/images").join(&service.name);
    ctx.runner
        .plan(format!("stage the build context in {}", context.display()));
    if ctx.dry_run() {
        return Ok(context);
    }
    if context.exists() {
        std::fs::remove_dir_all(&context)?;
    }
    std::fs::create_dir_all(&context)?;
    std::fs::copy(dockerfile(ctx, service), context.join("Dockerfile"))?;
    match service.kind {
        Kind::Api => place(&binaries::path(ctx, service), &context.join("app"))?,
        Kind::Mlflow => {
            std::fs::copy(
                service.dir.join("requirements.lock"),
                context.join("requirements.lock"),
            )?;
            let dest = context.join("wheelhouse");
            std::fs::create_dir_all(&dest)?;
            for entry in
                std::fs::read_dir(wheels.context("MLflow needs its wheelhouse")?)?.flatten()
            {
                if entry.path().extension().is_some_and(|e| e == "whl") {
                    place(&entry.path(), &dest.join(entry.file_name()))?;
                }
            }
        }
    }
    Ok(context)
}

fn build_step(
    service: &Service,
    context: &Path,
    revision: &Revision,
    base: Option<&str>,
    inputs: &str,
) -> Step {
    let label = |k: &str, v: &str| format!("org.opencontainers.image.{k}={v}");
    let mut step = Step::new("docker")
        .args(["build", "--tag", &service.versioned_image(), "--tag"])
        .arg(format!("{}:{}", service.image(), revision.tag))
        .args(["--label", &format!("{INPUTS_LABEL}={inputs}")])
        .args(["--label", &label("title", &service.title)])
        .args(["--label", &label("source", &revision.source)])
        .args(["--label", &label("revision", &revision.commit)])
        .args(["--label", &label("version", env!("CARGO_PKG_VERSION"))])
        .args(["--label", &label("created", &revision.created)]);
    if let Some(base) = base {
        step = step
            .args(["--network", "none", "--build-arg"])
            .arg(format!("BASE_IMAGE={base}"));
    }
    step.arg(context).env("DOCKER_BUILDKIT", "0")
}

fn size_of(ctx: &Ctx, image: &str) -> String {
    docker::image_inspect(ctx, image, "{{.Size}}")
        .and_then(|bytes| bytes.parse::<f64>().ok())
        .map_or_else(|| "?".into(), |b| format!("{:.1} MB", b / 1e6))
}

/// Builds one image unless one from the same inputs exists; `Ok(false)` when it was current.
fn build_one(
    ctx: &Ctx,
    service: &Service,
    revision: &Revision,
    base: Option<&str>,
    wheels: Option<&Path>,
) -> Result<bool> {
    let inputs = inputs_fingerprint(ctx, service, revision, base)?;
    let tag = service.versioned_image();
    let label = format!("{{{{index .Config.Labels \"{INPUTS_LABEL}\"}}}}");
    if docker::image_inspect(ctx, &tag, &label).as_deref() == Some(inputs.as_str()) {
        ctx.runner.plan(format!("{tag} is up to date"));
        // Still make sure the revision tag points at it.
        ctx.runner.run(&Step::new("docker").args([
            "tag",
            &tag,
            &format!("{}:{}", service.image(), revision.tag),
        ]))?;
        return Ok(false);
    }
    let context = stage(ctx, service, wheels)?;
    ctx.runner
        .run(&build_step(service, &context, revision, base, &inputs))?;
    Ok(true)
}

/// Builds the images of `services`, in parallel where it can; returns the revision they are
/// tagged with.
pub fn build(ctx: &Ctx, services: &[&Service]) -> Result<Revision> {
    let apis: Vec<&Service> = services.iter().copied().filter(|s| s.is_api()).collect();
    binaries::build(ctx, &apis)?;
    let revision = revision(ctx);
    let mlflow_inputs = match services.iter().find(|s| s.kind == Kind::Mlflow) {
        Some(m) => Some((mlflow_base(ctx)?, wheelhouse(ctx, m)?)),
        None => None,
    };
    let results: Vec<(String, Result<()>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = services
            .iter()
            .map(|&service| {
                let (base, wheels) = match (&mlflow_inputs, service.kind) {
                    (Some((b, w)), Kind::Mlflow) => (Some(b.as_str()), Some(w.as_path())),
                    _ => (None, None),
                };
                let revision = &revision;
                scope.spawn(move || {
                    let result = ctx.reporter.run_task(
                        format!("image {}", service.versioned_image()),
                        |task| {
                            if !build_one(ctx, service, revision, base, wheels)? {
                                task.note("up to date");
                            }
                            Ok(())
                        },
                    );
                    (service.name.clone(), result)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a build thread panicked"))
            .collect()
    });
    let mut failed = Vec::new();
    for (name, result) in results {
        if let Err(e) = result {
            ctx.reporter
                .error(&format!("image {name}"), &format!("{e:#}"));
            failed.push(format!("{name}: {e:#}"));
        }
    }
    if !failed.is_empty() {
        bail!("image builds failed:\n{}", failed.join("\n"));
    }
    Ok(revision)
}

impl Images {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let services = ctx.stack.select(&self.services)?;
        let revision = build(ctx, &services)?;
        if ctx.dry_run() {
            return Ok(());
        }
        let rows: Vec<Vec<String>> = services
            .iter()
            .map(|s| {
                vec![
                    s.image(),
                    format!("{}, {}", env!("CARGO_PKG_VERSION"), revision.tag),
                    size_of(ctx, &s.versioned_image()),
                ]
            })
            .collect();
        println!("{}", status::table(&["IMAGE", "TAGS", "SIZE"], &rows));
        Ok(())
    }
}

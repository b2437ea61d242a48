//! The stack's container images, with no registry needed.
//!
//! - APIs: the workspace is built once on the host, statically linked, and each binary is
//!   packaged alone `FROM scratch`.
//! - MLflow: from the base and wheelhouse of [`mlflow_base`], built with `--network none`.
//!
//! Each image carries a label with a SHA-256 of what it is built from; an image whose inputs
//! have not changed is not built again (nor its 190 MB context sent to the engine).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::{binaries, engine, mlflow_base};
use crate::ctx::Ctx;
use crate::runner::Step;
use crate::stack::mlflow_command;
use crate::stack::{Kind, Service, IMAGE_PREFIX};

/// The label holding a fingerprint of everything an image is built from.
const INPUTS_LABEL: &str = "io.ml-mlops.inputs";
/// Set on the intermediate stage of multi-stage builds, so the untagged image the legacy
/// builder leaves behind can be removed.
const STAGE_LABEL: &str = "io.ml-mlops.stage=build";

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

pub fn revision(ctx: &Ctx) -> Revision {
    let git = |args: &[&str]| git(ctx, args);
    let commit = commit(ctx);
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

fn git(ctx: &Ctx, args: &[&str]) -> Option<String> {
    ctx.runner
        .query_stdout(&Step::new("git").args(args).cwd(&ctx.root))
}

/// The checkout's commit (`unknown` outside a git checkout).
pub fn commit(ctx: &Ctx) -> String {
    git(ctx, &["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into())
}

fn dockerfile(ctx: &Ctx, service: &Service) -> PathBuf {
    let own = service.dir.join("Dockerfile");
    if own.is_file() {
        own
    } else {
        ctx.root.join("services/serving/Dockerfile.api")
    }
}

/// A SHA-256 of what the image is built from: the Dockerfile, and the binary or the lock.
/// The git revision is left out on purpose: a commit that changes neither needs no new image.
fn inputs_fingerprint(ctx: &Ctx, service: &Service) -> Result<String> {
    let read = |path: &Path| {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let mut bytes = read(&dockerfile(ctx, service))?;
    match service.kind {
        Kind::Api => bytes.extend(read(&binaries::path(ctx, service))?),
        Kind::Mlflow => {
            bytes.extend(read(&service.dir.join("requirements.lock"))?);
            bytes.extend(read(&service.dir.join(mlflow_command::LAUNCHER))?);
        }
    }
    Ok(format!("{:x}", Sha256::digest(&bytes)))
}

/// Whether the image exists and was built from the current inputs.
fn is_current(ctx: &Ctx, service: &Service, inputs: &str) -> bool {
    let label = format!("{{{{index .Config.Labels \"{INPUTS_LABEL}\"}}}}");
    engine::image_inspect(ctx, &service.versioned_image(), &label).as_deref() == Some(inputs)
}

/// Checks in seconds what building `services`' images needs beyond cargo: for an MLflow
/// image that must be (re)built, a Python base image and MLflow's wheels. With `may_pull`,
/// a missing base is pulled if it can be.
pub fn preflight(ctx: &Ctx, services: &[&Service], may_pull: bool) -> Result<()> {
    for mlflow in services.iter().filter(|s| s.kind == Kind::Mlflow) {
        let current = inputs_fingerprint(ctx, mlflow).is_ok_and(|i| is_current(ctx, mlflow, &i));
        if !current {
            mlflow_base::check_available(ctx, may_pull)?;
            mlflow_base::check_wheelhouse(ctx, mlflow)?;
        }
    }
    Ok(())
}

/// A fresh build context holding only what the image needs.
fn stage(ctx: &Ctx, service: &Service, wheels: Option<&Path>) -> Result<PathBuf> {
    let context = ctx.root.join("target/xtask/images").join(&service.name);
    ctx.runner.remove_path(&context)?;
    ctx.runner.create_dir(&context)?;
    if ctx.dry_run() {
        return Ok(context);
    }
    ctx.runner
        .link_or_copy(&dockerfile(ctx, service), &context.join("Dockerfile"))?;
    match service.kind {
        Kind::Api => ctx
            .runner
            .link_or_copy(&binaries::path(ctx, service), &context.join("app"))?,
        Kind::Mlflow => {
            for file in ["requirements.lock", mlflow_command::LAUNCHER] {
                ctx.runner
                    .link_or_copy(&service.dir.join(file), &context.join(file))?;
            }
            let dest = context.join("wheelhouse");
            ctx.runner.create_dir(&dest)?;
            let wheels = wheels.context("MLflow needs its wheelhouse")?;
            for entry in std::fs::read_dir(wheels)?.flatten() {
                if entry.path().extension().is_some_and(|e| e == "whl") {
                    ctx.runner
                        .link_or_copy(&entry.path(), &dest.join(entry.file_name()))?;
                }
            }
        }
    }
    Ok(context)
}

/// How images are built: with BuildKit where the client has `docker buildx` (as on GitHub's
/// runners), else with the engine's legacy builder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Builder {
    BuildKit,
    Legacy,
}

fn build_step(
    builder: Builder,
    service: &Service,
    context: &Path,
    revision: &Revision,
    base: Option<&str>,
    inputs: &str,
) -> Step {
    let label = |k: &str, v: &str| format!("org.opencontainers.image.{k}={v}");
    let command = match builder {
        // Loaded into the engine's image store as one image manifest: BuildKit's own
        // provenance and SBOM would make it an index of two, and the release attests those
        // separately.
        Builder::BuildKit => Step::new("docker").args([
            "buildx",
            "build",
            "--load",
            "--provenance=false",
            "--sbom=false",
            "--progress=plain",
        ]),
        Builder::Legacy => Step::new("docker").arg("build").env("DOCKER_BUILDKIT", "0"),
    };
    let mut step = command
        .args(["--tag", &service.versioned_image(), "--tag"])
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
    step.arg(context)
}

/// The untagged intermediate images of multi-stage builds: the legacy builder keeps them.
fn remove_build_stages(ctx: &Ctx) -> Result<()> {
    ctx.runner.run(&Step::new("docker").args([
        "image",
        "prune",
        "--force",
        "--filter",
        &format!("label={STAGE_LABEL}"),
    ]))?;
    Ok(())
}

pub fn size_of(ctx: &Ctx, image: &str) -> String {
    engine::image_inspect(ctx, image, "{{.Size}}")
        .and_then(|bytes| bytes.parse::<f64>().ok())
        .map_or_else(|| "?".into(), |b| format!("{:.1} MB", b / 1e6))
}

/// Builds one image unless one from the same inputs exists; `Ok(false)` when it was current.
fn build_one(ctx: &Ctx, builder: Builder, service: &Service, revision: &Revision) -> Result<bool> {
    // Under --dry-run the binary may not be built yet: then the plan shows a build.
    let inputs = inputs_fingerprint(ctx, service);
    if inputs.as_ref().is_ok_and(|i| is_current(ctx, service, i)) {
        ctx.runner
            .plan(format!("{} is up to date", service.versioned_image()));
        // Still make sure the revision tag points at it.
        ctx.runner.run(&Step::new("docker").args([
            "tag",
            &service.versioned_image(),
            &format!("{}:{}", service.image(), revision.tag),
        ]))?;
        return Ok(false);
    }
    let inputs = match inputs {
        Ok(inputs) => inputs,
        Err(_) if ctx.dry_run() => "<sha256 of the inputs>".to_owned(),
        Err(e) => return Err(e),
    };
    let (base, wheels) = match service.kind {
        // Downloading the wheels waits on the network and bootstrapping the base mostly on
        // the disk and dpkg: together they take the longer one's time, not the sum.
        Kind::Mlflow => {
            let (base, wheels) = ctx.both(
                || mlflow_base::ensure(ctx),
                || mlflow_base::wheelhouse(ctx, service),
            );
            (Some(base?), Some(wheels?))
        }
        Kind::Api => (None, None),
    };
    let context = stage(ctx, service, wheels.as_deref())?;
    let replaced = engine::image_inspect(ctx, &service.versioned_image(), "{{.Id}}");
    ctx.runner.run(&build_step(
        builder,
        service,
        &context,
        revision,
        base.as_deref(),
        &inputs,
    ))?;
    if base.is_some() && builder == Builder::Legacy {
        remove_build_stages(ctx)?;
    }
    if let Some(old) = replaced {
        remove_replaced(ctx, service, &old);
    }
    Ok(true)
}

/// Whether the image a build replaced is to be removed: it is another image than the new
/// one, no tag names it any more, and no container (running or stopped) was made from it.
fn is_removable(old: &str, new: Option<&str>, tags_left: usize, containers: usize) -> bool {
    new.is_some_and(|new| new != old) && tags_left == 0 && containers == 0
}

/// Removes the image `old` that the build of `service` replaced, when nothing uses it any
/// more (else `docker images` would list it as `<none>` after every rebuild); says why it
/// keeps one it cannot remove, without failing the build.
pub fn remove_replaced(ctx: &Ctx, service: &Service, old: &str) {
    let new = engine::image_inspect(ctx, &service.versioned_image(), "{{.Id}}");
    let tags_left = engine::image_inspect(ctx, old, "{{len .RepoTags}}")
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(usize::MAX);
    let containers = ctx
        .runner
        .query_stdout(&Step::new("docker").args([
            "ps",
            "--all",
            "--quiet",
            "--filter",
            &format!("ancestor={old}"),
        ]))
        .map_or(usize::MAX, |ids| {
            ids.lines().filter(|l| !l.trim().is_empty()).count()
        });
    if !is_removable(old, new.as_deref(), tags_left, containers) {
        return;
    }
    if let Err(e) = ctx
        .runner
        .run(&Step::new("docker").args(["image", "rm", old]))
    {
        ctx.reporter.warn(format!(
            "the image {} replaced ({old}) is kept: {e:#}",
            service.versioned_image()
        ));
    }
}

/// Packages the API's binary as built now (of `ctx.build`'s profile) into its image, without
/// building the binary: `dev` has just built it. Unless one from the same inputs exists.
pub fn package(ctx: &Ctx, service: &Service) -> Result<()> {
    let builder = if engine::has_buildx(ctx) {
        Builder::BuildKit
    } else {
        Builder::Legacy
    };
    build_one(ctx, builder, service, &revision(ctx)).map(|_| ())
}

/// Builds the images of `services`, in parallel where it can; returns the revision they are
/// tagged with. MLflow's image does not depend on the Rust release build, so it starts at
/// once and builds beside it (its base, wheels and install take minutes too); the API images
/// start when their binaries are built.
pub fn build(ctx: &Ctx, services: &[&Service]) -> Result<Revision> {
    let apis: Vec<&Service> = services.iter().copied().filter(|s| s.is_api()).collect();
    let revision = revision(ctx);
    let builder = if engine::has_buildx(ctx) {
        Builder::BuildKit
    } else {
        Builder::Legacy
    };
    ctx.reporter.detail(format!(
        "images are built with {}",
        match builder {
            Builder::BuildKit => "BuildKit (docker buildx)",
            Builder::Legacy => "the legacy builder (docker buildx is not installed)",
        }
    ));
    let build_image = |service: &Service| {
        let result =
            ctx.reporter
                .run_task(format!("image {}", service.versioned_image()), |task| {
                    if !build_one(ctx, builder, service, &revision)? {
                        task.note("up to date");
                    }
                    Ok(())
                });
        (service.name.clone(), result)
    };
    let (binaries, results): (Result<()>, Vec<(String, Result<()>)>) =
        std::thread::scope(|scope| {
            let build_image = &build_image;
            let beside: Vec<_> = services
                .iter()
                .filter(|s| !s.is_api())
                .map(|&service| scope.spawn(move || build_image(service)))
                .collect();
            let binaries = binaries::build(ctx, &apis);
            let after: Vec<_> = if binaries.is_ok() {
                apis.iter()
                    .map(|&service| scope.spawn(move || build_image(service)))
                    .collect()
            } else {
                Vec::new()
            };
            let results = beside
                .into_iter()
                .chain(after)
                .map(|h| h.join().expect("a build thread panicked"))
                .collect();
            (binaries, results)
        });
    let mut failed = Vec::new();
    for (name, result) in results {
        if let Err(e) = result {
            ctx.reporter
                .error(&format!("image {name}"), &format!("{e:#}"));
            failed.push(format!("{name}: {e:#}"));
        }
    }
    binaries?;
    if !failed.is_empty() {
        bail!("image builds failed:\n{}", failed.join("\n"));
    }
    Ok(revision)
}

/// Every image the toolkit has built or bootstrapped (`ml-mlops/*`, any tag), and the
/// intermediate build stages.
pub fn built_by_us(ctx: &Ctx) -> Vec<String> {
    let list = Step::new("docker").args([
        "images",
        "--format",
        "{{.Repository}}:{{.Tag}}",
        "--filter",
        &format!("reference={IMAGE_PREFIX}/*"),
    ]);
    ctx.runner
        .query_stdout(&list)
        .map(|text| text.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Removes the images of [`built_by_us`] and the leftover build stages.
pub fn remove(ctx: &Ctx, images: &[String]) -> Result<()> {
    if !images.is_empty() {
        ctx.runner
            .run(&Step::new("docker").args(["rmi", "--force"]).args(images))?;
    }
    remove_build_stages(ctx)
}

#[cfg(test)]
mod tests {
    use super::is_removable;

    #[test]
    fn only_an_untagged_unused_replaced_image_is_removed() {
        assert!(is_removable("sha256:old", Some("sha256:new"), 0, 0));
        // The build gave the same image, or none.
        assert!(!is_removable("sha256:old", Some("sha256:old"), 0, 0));
        assert!(!is_removable("sha256:old", None, 0, 0));
        // Another tag still names it (the previous revision's), or a container uses it.
        assert!(!is_removable("sha256:old", Some("sha256:new"), 1, 0));
        assert!(!is_removable("sha256:old", Some("sha256:new"), 0, 1));
    }
}

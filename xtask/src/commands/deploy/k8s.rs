//! `cargo xtask deploy k8s`: the stack's Kubernetes manifests, rendered from the single source
//! (a kustomization base), validated offline, and applied with the user's kubeconfig.
//!
//! Applying has been tried only as a plan (`--dry-run`): no cluster was at hand where it was
//! written. Rendering and validating are tested for real.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::build::release_record::Record;
use crate::ctx::Ctx;
use crate::runner::Step;
use crate::scanners::findings::{self, Policy};
use crate::scanners::trivy::Trivy;
use crate::stack::k8s_manifests::{
    self, File, Settings, DIR, GENERATED_MARK, KUBERNETES_VERSIONS, NAMESPACE, POSTGRES_SECRET,
};
use crate::stack::mlflow_backend::is_loopback;

/// Render the stack as Kubernetes manifests, validate them offline, apply them to a cluster.
///
/// Renders a kustomization base from the services' service.toml files: per API a Deployment
/// (readiness, liveness and startup probes on its health path; requests and limits; non-root,
/// read-only root, no capabilities, seccomp RuntimeDefault), a Service, a PodDisruptionBudget
/// and a HorizontalPodAutoscaler; MLflow on a PersistentVolumeClaim. Images are a release's
/// digests with `--release`, else this checkout's tags. deploy/k8s holds the committed render
/// (by tag); overlay it with your own kustomization.
///
/// `--apply` runs `kubectl apply -k` and waits for every Deployment's rollout. It is
/// UNTESTED against a real cluster (only its plan is tested): try it on a test cluster first.
#[derive(clap::Args, Debug)]
pub struct K8s {
    /// Write the manifests into DIR (files this command did not write are left alone)
    /// [default: target/xtask/k8s]
    #[arg(long, value_name = "DIR", conflicts_with = "manifests")]
    pub render: Option<PathBuf>,
    /// Validate or apply the manifests already in DIR (a render, or your overlay of one)
    /// instead of rendering.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["release", "namespace", "check"])]
    pub manifests: Option<PathBuf>,
    /// Run the images of this release record (written by `cargo xtask release`; a file or the
    /// folder holding one), by digest. Without it the images are this checkout's tags
    /// (ml-mlops/SERVICE:VERSION), which the cluster must be able to pull.
    #[arg(long, value_name = "RECORD")]
    pub release: Option<PathBuf>,
    /// The namespace everything goes in (created by the render).
    #[arg(long, value_name = "NAME", value_parser = parse_namespace)]
    pub namespace: Option<String>,
    /// Only check that deploy/k8s is the current render of the stack; exit non-zero if not.
    #[arg(long, conflicts_with_all = ["render", "release", "namespace", "apply"])]
    pub check: bool,
    /// Check the manifests offline: `kubectl kustomize` builds them, `kubernetes-validate
    /// --strict` accepts them for every Kubernetes version the README claims, and `trivy
    /// config` finds nothing HIGH or CRITICAL.
    #[arg(long)]
    pub validate: bool,
    /// Apply them with kubectl (`apply -k`), then wait for every Deployment's rollout.
    /// Untested against a real cluster.
    #[arg(long)]
    pub apply: bool,
    /// With `--apply`: the kubeconfig to use [default: kubectl's own, $KUBECONFIG or
    /// ~/.kube/config]
    #[arg(long, value_name = "FILE", requires = "apply")]
    pub kubeconfig: Option<PathBuf>,
    /// With `--apply`: the kubeconfig's contents are in the environment variable VAR (a CI
    /// secret); they go to a private temporary file for kubectl, removed afterwards.
    #[arg(
        long,
        value_name = "VAR",
        requires = "apply",
        conflicts_with = "kubeconfig"
    )]
    pub kubeconfig_env: Option<String>,
    /// With `--kubeconfig-env`: when VAR is empty or unset, deploy nothing and say so (a
    /// notice under GitHub Actions) instead of failing: a workflow that deploys only where a
    /// cluster is configured.
    #[arg(long, requires = "kubeconfig_env")]
    pub skip_without_kubeconfig: bool,
    /// With `--apply`: the kubeconfig context to use [default: its current context]
    #[arg(long, value_name = "NAME", requires = "apply")]
    pub context: Option<String>,
    /// With `--apply`: how long each Deployment's rollout may take.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// A namespace is a DNS label: lowercase letters, digits and `-`, at most 63.
fn parse_namespace(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= 63
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-');
    if valid {
        Ok(text.to_owned())
    } else {
        Err("a namespace is lowercase letters, digits and `-`, at most 63, not starting or ending with `-`".into())
    }
}

/// Where a render goes when no `--render` is given.
const DEFAULT_DIR: &str = "target/xtask/k8s";

/// The Deployments to wait for after applying, and their namespace.
struct Rollout {
    namespace: String,
    deployments: Vec<String>,
}

impl K8s {
    pub fn run(mut self, ctx: &Ctx) -> Result<()> {
        if self.check {
            return check(ctx);
        }
        // Held until the end: the kubeconfig file goes when it drops.
        let _kubeconfig_file = match self.kubeconfig_env.clone() {
            Some(variable) => match kubeconfig_from_env(ctx, &variable)? {
                Some((path, file)) => {
                    self.kubeconfig = Some(path);
                    file
                }
                None if self.skip_without_kubeconfig => {
                    ctx.reporter.notice(
                        "Kubernetes deploy skipped",
                        &format!(
                            "{variable} is empty: no kubeconfig, so nothing was deployed (set \
                             it to a kubeconfig's contents to deploy)"
                        ),
                    );
                    return Ok(());
                }
                None => bail!(
                    "{variable} is empty or unset: it must hold a kubeconfig's contents \
                     (--kubeconfig-env); pass --skip-without-kubeconfig to deploy nothing then"
                ),
            },
            None => None,
        };
        let (dir, rollout) = match &self.manifests {
            Some(dir) => {
                if !ctx.dry_run() && !dir.join("kustomization.yaml").is_file() {
                    bail!(
                        "{} holds no kustomization.yaml: point --manifests at a render \
                         (`cargo xtask deploy k8s --render DIR`) or at your overlay of one",
                        dir.display()
                    );
                }
                (dir.clone(), None)
            }
            None => {
                let dir = self
                    .render
                    .clone()
                    .unwrap_or_else(|| ctx.root.join(DEFAULT_DIR));
                let settings = self.settings(ctx)?;
                let rollout = Rollout {
                    namespace: settings.namespace.clone(),
                    deployments: k8s_manifests::deployments(&ctx.stack),
                };
                write(ctx, &dir, &k8s_manifests::render(&ctx.stack, &settings))?;
                (dir, Some(rollout))
            }
        };
        if self.validate {
            validate(ctx, &dir)?;
        }
        if self.apply {
            let rollout = match rollout {
                Some(rollout) => rollout,
                None => built_rollout(ctx, &dir)?,
            };
            self.apply(ctx, &dir, &rollout)?;
        }
        Ok(())
    }

    /// The images (a release's digests, or this checkout's tags) and the namespace.
    fn settings(&self, ctx: &Ctx) -> Result<Settings> {
        let mut settings = Settings::by_tag(&ctx.stack);
        if let Some(namespace) = &self.namespace {
            settings.namespace = namespace.clone();
        }
        if let Some(pg) = ctx.mlflow_backend.postgres() {
            let (host, _) = pg.address();
            if is_loopback(&host) {
                bail!(
                    "--mlflow-backend {}: in a cluster, {host} is MLflow's own pod; name the \
                     database's host as the pods reach it (a Service's DNS name, or an address)",
                    pg.shown()
                );
            }
            if pg.password.is_some() {
                ctx.reporter.info(format!(
                    "MLflow reads its PostgreSQL password from the Secret {POSTGRES_SECRET} (key \
                     `password`), which the manifests do not hold: create it in namespace {} \
                     (kubectl -n {} create secret generic {POSTGRES_SECRET} \
                     --from-literal=password=...)",
                    settings.namespace, settings.namespace
                ));
            }
            settings.postgres = Some(pg.clone());
        }
        match &self.release {
            Some(path) => {
                let (file, record) = Record::load(path)?;
                settings.images = record.references(&ctx.stack)?;
                ctx.reporter.info(format!(
                    "images by digest from {} (release {} in {})",
                    ctx.show(&file),
                    record.tag,
                    record.registry
                ));
                let version = env!("CARGO_PKG_VERSION");
                if record.version != version {
                    ctx.reporter.warn(format!(
                        "the release is version {}, this checkout {version}: the manifests \
                         (ports, probes, arguments) come from this checkout; render from the \
                         released tag's checkout to match",
                        record.version
                    ));
                }
            }
            None => ctx.reporter.info(format!(
                "images by tag ({}/SERVICE:{}): no --release given, so the cluster must be \
                 able to pull these tags; pass --release RECORD to run a release's digests",
                crate::stack::IMAGE_PREFIX,
                env!("CARGO_PKG_VERSION")
            )),
        }
        for (service, image) in &settings.images {
            ctx.runner.plan(format!("{service} runs {image}"));
        }
        Ok(settings)
    }

    /// `kubectl` with the user's kubeconfig and context.
    fn kubectl(&self) -> Step {
        let mut step = Step::new("kubectl");
        if let Some(kubeconfig) = &self.kubeconfig {
            step = step.arg("--kubeconfig").arg(kubeconfig);
        }
        if let Some(context) = &self.context {
            step = step.args(["--context", context]);
        }
        step
    }

    fn apply(&self, ctx: &Ctx, dir: &Path, rollout: &Rollout) -> Result<()> {
        if !ctx.dry_run() {
            which::which("kubectl").context(
                "kubectl is not installed: install it (https://kubernetes.io/docs/tasks/tools/) \
                 and try again",
            )?;
        }
        ctx.reporter.warn(
            "--apply is untested against a real cluster (only its plan is): watch this first \
             rollout, and report what goes wrong",
        );
        ctx.runner
            .run_attached(&self.kubectl().args(["apply", "-k"]).arg(dir))
            .context("kubectl could not apply the manifests: is the kubeconfig's cluster reachable and are you allowed to create these objects there?")?;
        let timeout = format!("{}s", self.timeout.as_secs());
        for deployment in &rollout.deployments {
            let status = self
                .kubectl()
                .args(["rollout", "status", &format!("deployment/{deployment}")])
                .args(["--namespace", &rollout.namespace, "--timeout", &timeout]);
            ctx.runner.run_attached(&status).with_context(|| {
                format!(
                    "deployment {deployment} did not finish its rollout within {timeout}: see \
                     `kubectl --namespace {ns} describe deployment/{deployment}` and `kubectl \
                     --namespace {ns} logs deployment/{deployment}`; `kubectl --namespace {ns} \
                     rollout undo deployment/{deployment}` goes back to the previous version",
                    ns = rollout.namespace
                )
            })?;
        }
        if !ctx.dry_run() {
            ctx.reporter.info(format!(
                "applied: {} rolled out in namespace {}",
                rollout.deployments.join(", "),
                rollout.namespace
            ));
        }
        Ok(())
    }
}

/// The kubeconfig held in the environment variable `variable`, written to a file only this
/// user can read (removed when the handle drops); `None` when the variable is empty or unset.
fn kubeconfig_from_env(
    ctx: &Ctx,
    variable: &str,
) -> Result<Option<(PathBuf, Option<tempfile::NamedTempFile>)>> {
    let contents = std::env::var(variable).unwrap_or_default();
    if contents.trim().is_empty() {
        return Ok(None);
    }
    if ctx.dry_run() {
        // The plan shows where it would be, and writes nothing.
        return Ok(Some((
            PathBuf::from(format!("<the kubeconfig in ${variable}>")),
            None,
        )));
    }
    use std::io::Write as _;
    // tempfile creates it with mode 0600.
    let mut file = tempfile::Builder::new()
        .prefix("kubeconfig-")
        .tempfile()
        .context("cannot create a temporary file for the kubeconfig")?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.flush())
        .context("cannot write the kubeconfig to a temporary file")?;
    Ok(Some((file.path().to_owned(), Some(file))))
}

/// Writes `files` into `dir`, and removes the files an earlier render wrote there that this one
/// does not (a service removed); nothing else in `dir` is touched.
fn write(ctx: &Ctx, dir: &Path, files: &[File]) -> Result<()> {
    ctx.runner.create_dir(dir)?;
    for file in files {
        ctx.runner.write_file(&dir.join(&file.name), &file.text)?;
    }
    for stale in generated_files(dir) {
        let name = stale.file_name().map(|n| n.to_string_lossy().into_owned());
        if !files.iter().any(|f| Some(&f.name) == name.as_ref()) {
            ctx.runner.remove_path(&stale)?;
        }
    }
    if !ctx.dry_run() {
        ctx.reporter
            .info(format!("wrote {} files to {}", files.len(), ctx.show(dir)));
    }
    Ok(())
}

/// The files in `dir` an earlier render wrote (they start with its mark).
fn generated_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| std::fs::read_to_string(p).is_ok_and(|text| text.starts_with(GENERATED_MARK)));
    files.sort();
    files
}

/// `--check`: deploy/k8s is the render of the stack, file for file.
fn check(ctx: &Ctx) -> Result<()> {
    let dir = ctx.root.join(DIR);
    let files = k8s_manifests::render(&ctx.stack, &Settings::by_tag(&ctx.stack));
    let mut problems = Vec::new();
    for file in &files {
        match std::fs::read_to_string(dir.join(&file.name)) {
            Ok(text) if text == file.text => {}
            Ok(_) => problems.push(format!("{} differs", file.name)),
            Err(_) => problems.push(format!("{} is missing", file.name)),
        }
    }
    for extra in generated_files(&dir) {
        let name = extra.file_name().map(|n| n.to_string_lossy().into_owned());
        if !files.iter().any(|f| Some(&f.name) == name.as_ref()) {
            problems.push(format!(
                "{} is no longer rendered",
                name.unwrap_or_default()
            ));
        }
    }
    if !problems.is_empty() {
        bail!(
            "{DIR} is out of date ({}): run `cargo xtask deploy k8s --render {DIR}` and commit it",
            problems.join("; ")
        );
    }
    ctx.reporter.info(format!("{DIR} is up to date"));
    Ok(())
}

/// The built manifests of `dir` (`kubectl kustomize`), or why they do not build.
fn kustomize(ctx: &Ctx, dir: &Path) -> Result<String> {
    if ctx.dry_run() {
        ctx.runner
            .run_unchecked(&Step::new("kubectl").arg("kustomize").arg(dir))?;
        return Ok(String::new());
    }
    which::which("kubectl").context(
        "kubectl is not installed, and it builds the kustomization: install it \
         (https://kubernetes.io/docs/tasks/tools/); no cluster is needed",
    )?;
    let step = Step::new("kubectl").arg("kustomize").arg(dir);
    let Some(out) = ctx.runner.run_unchecked(&step)? else {
        return Ok(String::new());
    };
    if !out.status.success() {
        bail!(
            "`kubectl kustomize {}` failed: {}",
            ctx.show(dir),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The Deployments an overlay builds into, for `--apply --manifests`.
fn built_rollout(ctx: &Ctx, dir: &Path) -> Result<Rollout> {
    if ctx.dry_run() {
        // Nothing is built under a dry run: the plan names the base's.
        return Ok(Rollout {
            namespace: NAMESPACE.into(),
            deployments: k8s_manifests::deployments(&ctx.stack),
        });
    }
    let built = kustomize(ctx, dir)?;
    let mut namespaces = Vec::new();
    let mut deployments = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(&built) {
        let object = serde::Deserialize::deserialize(document)
            .map(|v: serde_yaml_ng::Value| v)
            .context("kubectl kustomize printed something that is not YAML")?;
        if object["kind"] == "Deployment" {
            let name = object["metadata"]["name"].as_str().unwrap_or_default();
            let namespace = object["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default");
            deployments.push(name.to_owned());
            if !namespaces.iter().any(|n| n == namespace) {
                namespaces.push(namespace.to_owned());
            }
        }
    }
    match namespaces.as_slice() {
        [one] => Ok(Rollout {
            namespace: one.clone(),
            deployments,
        }),
        [] => bail!(
            "{} builds no Deployment: nothing to roll out",
            dir.display()
        ),
        _ => bail!(
            "{} puts Deployments in several namespaces ({}): give the stack one",
            dir.display(),
            namespaces.join(", ")
        ),
    }
}

/// The three offline checks, on what `kubectl apply -k` would send: the kustomization builds,
/// every object is valid for each claimed Kubernetes version (no unknown field), and Trivy's
/// misconfiguration checks find nothing HIGH or CRITICAL.
fn validate(ctx: &Ctx, dir: &Path) -> Result<()> {
    let work = ctx.root.join("target/xtask/k8s-validate");
    let built_file = work.join("manifests.yaml");
    let built = ctx
        .reporter
        .run_task("kubectl kustomize", |_| kustomize(ctx, dir))?;
    ctx.runner.remove_path(&work)?;
    ctx.runner.write_file(&built_file, &built)?;

    let validator = crate::deps::tools::path(ctx, "kubernetes-validate")?;
    let mut rejected = Vec::new();
    for version in KUBERNETES_VERSIONS {
        let step = Step::new(validator.to_string_lossy())
            .args(["--strict", "--quiet", "--kubernetes-version", version])
            .arg(&built_file);
        let task = ctx.reporter.task(format!(
            "kubernetes-validate --strict, Kubernetes {version}"
        ));
        let Some(out) = ctx.runner.run_unchecked(&step)? else {
            task.done("planned");
            continue;
        };
        if out.status.success() {
            task.done("valid");
        } else {
            task.fail("rejected");
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            rejected.push(format!("Kubernetes {version}:\n{}", said.trim()));
        }
    }
    if !rejected.is_empty() {
        bail!(
            "kubernetes-validate --strict rejects the manifests of {}:\n{}\nfix the field it \
             names (in xtask/src/stack/k8s_manifests.rs for a render, in your overlay otherwise)",
            ctx.show(dir),
            rejected.join("\n")
        );
    }

    let trivy = Trivy::prepare_without_db(ctx)?;
    let result = trivy.config(ctx, &work, &work.join("trivy-config.json"))?;
    let policy = Policy::load(&ctx.root)?;
    if ctx.dry_run() {
        return Ok(());
    }
    findings::report(
        ctx,
        "Kubernetes manifests",
        &[result],
        &policy,
        "fix what Trivy names in the manifests (see `trivy config` on the built file)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_dns_labels() {
        assert!(parse_namespace("ml-mlops").is_ok());
        assert!(parse_namespace("ML").is_err());
        assert!(parse_namespace("-a").is_err());
        assert!(parse_namespace(&"a".repeat(64)).is_err());
    }
}

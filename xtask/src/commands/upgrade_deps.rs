//! `cargo xtask upgrade-deps`: newer crates and Python packages, kept only when the workspace
//! still builds and its tests pass.
//!
//! 1. `cargo upgrade --incompatible` (cargo-edit, pinned in tools.toml) with `--incompatible`;
//! 2. `cargo update`;
//! 3. MLflow's `requirements.lock` re-locked by uv for CPython 3.11 on Linux x86_64, from
//!    `mlflow==<the version in services/mlflow/service.toml>` and PostgreSQL's driver;
//! 4. `cargo build --workspace`, `cargo test --workspace`.
//!
//! Any failure puts every manifest and lock file back byte for byte. The table of what changed
//! is the only thing on stdout (the upgrade workflow makes it a pull request's body).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::ctx::Ctx;
use crate::deps::lockfiles::{self, Change};
use crate::deps::tools;
use crate::runner::Step;
use crate::scanners::workflows;
use crate::stack::mlflow_backend::POSTGRES_DRIVER;
use crate::util::table;

/// Upgrade the dependencies, then build and test; roll back if either fails.
///
/// `cargo update` (and with `--incompatible`, cargo-edit's `cargo upgrade --incompatible`
/// first), then MLflow's requirements.lock re-locked with hashes by uv, then `cargo build` and
/// `cargo test` of the workspace. A failure restores every Cargo.toml and lock file as it was.
/// Prints a markdown table of what changed on stdout, everything else on stderr.
#[derive(clap::Args, Debug)]
pub struct UpgradeDeps {
    /// Also raise the requirements in the Cargo.toml files to the newest releases, across
    /// semver-incompatible versions (cargo-edit's `cargo upgrade --incompatible`).
    #[arg(long)]
    pub incompatible: bool,
    /// Resolve from what is cached on this machine only (cargo's registry and uv's cache).
    /// `cargo upgrade` has no offline mode, so this excludes --incompatible.
    #[arg(long, conflicts_with = "incompatible")]
    pub offline: bool,
}

/// The files an upgrade may change, with their bytes before it (`None`: absent).
struct Snapshot {
    files: Vec<(PathBuf, Option<Vec<u8>>)>,
}

impl Snapshot {
    fn take(paths: Vec<PathBuf>) -> Result<Self> {
        let files = paths
            .into_iter()
            .map(|path| match std::fs::read(&path) {
                Ok(bytes) => Ok((path, Some(bytes))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((path, None)),
                Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
            })
            .collect::<Result<_>>()?;
        Ok(Self { files })
    }

    fn before(&self, path: &Path) -> Option<&[u8]> {
        self.files
            .iter()
            .find(|(p, _)| p == path)
            .and_then(|(_, bytes)| bytes.as_deref())
    }

    /// Puts back every file that differs from its snapshot; returns those.
    fn restore(&self, ctx: &Ctx) -> Result<Vec<PathBuf>> {
        let mut restored = Vec::new();
        for (path, before) in &self.files {
            let now = std::fs::read(path).ok();
            if now.as_deref() == before.as_deref() {
                continue;
            }
            match before {
                Some(bytes) => ctx.runner.write_file(path, bytes)?,
                None => ctx.runner.remove_path(path)?,
            }
            restored.push(path.clone());
        }
        Ok(restored)
    }
}

/// One step of the upgrade, run as a task that names it when it fails.
struct Stage<'a> {
    title: String,
    work: Box<dyn FnOnce() -> Result<()> + 'a>,
}

/// The workspace's manifests (the root one and every member's) and its Cargo.lock, from
/// `cargo metadata --no-deps`, which reads no index.
fn cargo_files(ctx: &Ctx) -> Result<(Vec<PathBuf>, PathBuf)> {
    let step = Step::new("cargo")
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .cwd(&ctx.root);
    let out = ctx.runner.query(&step)?;
    if !out.status.success() {
        bail!(
            "`cargo metadata` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("cargo metadata's JSON")?;
    let root = PathBuf::from(
        metadata["workspace_root"]
            .as_str()
            .context("cargo metadata names no workspace root")?,
    );
    let mut manifests = vec![root.join("Cargo.toml")];
    for package in metadata["packages"].as_array().into_iter().flatten() {
        if let Some(path) = package["manifest_path"].as_str() {
            let path = PathBuf::from(path);
            if !manifests.contains(&path) {
                manifests.push(path);
            }
        }
    }
    Ok((manifests, root.join("Cargo.lock")))
}

fn work_dir(ctx: &Ctx) -> PathBuf {
    ctx.root.join("target/xtask/upgrade-deps")
}

/// `uv pip compile` of `mlflow==VERSION` and PostgreSQL's driver for the image's Python, as a
/// pylock.toml, rewritten into requirements.lock (its header kept, one hashed wheel per line).
fn relock_python(ctx: &Ctx, uv: &Path, lock: &Path, offline: bool) -> Result<()> {
    let dir = work_dir(ctx);
    let input = dir.join("requirements.in");
    let output = dir.join("pylock.toml");
    ctx.runner.create_dir(&dir)?;
    ctx.runner.write_file(
        &input,
        format!(
            "mlflow=={}\n{POSTGRES_DRIVER}\n",
            ctx.stack.mlflow_version()
        ),
    )?;
    ctx.runner.remove_path(&output)?;
    let mut step = Step::new(uv.to_string_lossy())
        .args(["pip", "compile", "--no-config", "--quiet", "--no-header"])
        .args(["--generate-hashes", "--format", "pylock.toml"])
        .args(["--python-version", "3.11"])
        .args(["--python-platform", "x86_64-unknown-linux-gnu"])
        .args(["--only-binary", ":all:", "--output-file"])
        .arg(&output)
        .arg(&input);
    if offline {
        step = step.arg("--offline");
    }
    ctx.runner.run(&step)?;
    ctx.runner.plan(format!(
        "rewrite {} from {}: its header, then one `name==version --hash=sha256:...` line per \
         package (the wheel pip picks on CPython 3.11, Linux x86_64)",
        lock.display(),
        output.display()
    ));
    if ctx.dry_run() {
        return Ok(());
    }
    let old =
        std::fs::read_to_string(lock).with_context(|| format!("cannot read {}", lock.display()))?;
    let pylock = std::fs::read_to_string(&output)
        .with_context(|| format!("uv wrote no {}", output.display()))?;
    // What the tracking server never imports stays out (lockfiles::LEFT_OUT, in the README).
    let text = lockfiles::without_left_out(&lockfiles::requirements_from_pylock(
        &lockfiles::header(&old),
        &pylock,
    )?);
    let pin = format!("mlflow=={} --hash=sha256:", ctx.stack.mlflow_version());
    if !text.lines().any(|l| l.starts_with(&pin)) {
        bail!(
            "uv's lock does not pin {}",
            pin.trim_end_matches(" --hash=sha256:")
        );
    }
    ctx.runner.write_file(lock, text)
}

/// `uv pip compile --universal` of the PyPI tools pinned in `xtask/tools.toml`, with the hashes
/// of every wheel for every platform (the macOS job installs from it too), its header kept:
/// the dependencies of the tools move, the tools' own pins do not.
fn relock_tools(ctx: &Ctx, uv: &Path, lock: &Path, offline: bool) -> Result<()> {
    let dir = work_dir(ctx);
    let input = dir.join("tools.in");
    let output = dir.join("tools.lock");
    ctx.runner.create_dir(&dir)?;
    let pins: Vec<String> = tools::all()?
        .into_iter()
        .filter_map(|t| match t.source {
            tools::Source::Pypi { package, version } => Some(format!("{package}=={version}")),
            tools::Source::Crate(_) => None,
        })
        .collect();
    ctx.runner.write_file(&input, pins.join("\n") + "\n")?;
    ctx.runner.remove_path(&output)?;
    let mut step = Step::new(uv.to_string_lossy())
        .args(["pip", "compile", "--no-config", "--quiet", "--no-header"])
        .args([
            "--universal",
            "--generate-hashes",
            "--python-version",
            "3.11",
        ])
        .arg("--output-file")
        .arg(&output)
        .arg(&input);
    if offline {
        step = step.arg("--offline");
    }
    ctx.runner.run(&step)?;
    ctx.runner.plan(format!(
        "rewrite {}: its header, then uv's lock",
        lock.display()
    ));
    if ctx.dry_run() {
        return Ok(());
    }
    let old =
        std::fs::read_to_string(lock).with_context(|| format!("cannot read {}", lock.display()))?;
    let new = std::fs::read_to_string(&output)
        .with_context(|| format!("uv wrote no {}", output.display()))?;
    let locked = lockfiles::requirements_lock(&new);
    for pin in &pins {
        let (name, version) = pin.split_once("==").expect("name==version");
        if !locked
            .iter()
            .any(|l| l.name == name && l.version == version)
        {
            bail!("uv's lock of the tools does not pin {pin}");
        }
    }
    ctx.runner
        .write_file(lock, format!("{}{new}", lockfiles::header(&old)))
}

/// The GitHub Actions pinned by commit, on stderr: their tags are as the comments say, and
/// newer ones are not looked up.
fn report_actions(ctx: &Ctx) -> Result<()> {
    if !ctx.root.join(workflows::DIR).is_dir() {
        return Ok(());
    }
    let pins = workflows::pinned_actions(&ctx.root)?;
    if pins.is_empty() {
        return Ok(());
    }
    let rows: Vec<Vec<String>> = pins
        .iter()
        .map(|p| {
            vec![
                p.action.clone(),
                p.tag.clone().unwrap_or_else(|| "(no tag comment)".into()),
                p.commit.clone(),
                p.files.join(", "),
            ]
        })
        .collect();
    eprintln!(
        "\nGitHub Actions pinned by commit in {}:\n{}\nNewer tags: NOT CHECKED. Looking them up \
         needs github.com, which this command does not reach; check each with `git ls-remote \
         --tags https://github.com/OWNER/REPO` and update the commit and its comment together.",
        workflows::DIR,
        table::text(&["ACTION", "TAG", "COMMIT", "USED IN"], &rows)
    );
    Ok(())
}

impl UpgradeDeps {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let started = Instant::now();
        let lock = ctx.stack.mlflow().dir.join("requirements.lock");
        let python = lock.is_file();
        let tools_lock = ctx.root.join(tools::TOOLS_LOCK_PATH);
        let relock_tools_too = tools_lock.is_file();
        let mut wanted = Vec::new();
        if self.incompatible {
            wanted.push("cargo-edit");
        }
        if python || relock_tools_too {
            wanted.push("uv");
        }
        let paths = tools::ensure(ctx, &wanted)?;
        let tool = |name: &str| -> PathBuf {
            let i = wanted.iter().position(|w| *w == name).expect("ensured");
            paths[i].clone()
        };

        let (manifests, cargo_lock) = cargo_files(ctx)?;
        let mut protected = manifests.clone();
        protected.push(cargo_lock.clone());
        if python {
            protected.push(lock.clone());
        }
        if relock_tools_too {
            protected.push(tools_lock.clone());
        }
        let snapshot = Snapshot::take(protected)?;
        ctx.reporter.info(format!(
            "upgrading {} manifests, Cargo.lock{}; any failure puts them back as they are",
            manifests.len(),
            if python { " and requirements.lock" } else { "" }
        ));

        let offline: &[&str] = if self.offline { &["--offline"] } else { &[] };
        let cargo = |args: &[&str]| Step::new("cargo").args(args).args(offline).cwd(&ctx.root);
        let mut stages: Vec<Stage> = Vec::new();
        if self.incompatible {
            let step = Step::new(tool("cargo-edit").to_string_lossy())
                .args(["upgrade", "--incompatible"])
                .cwd(&ctx.root);
            stages.push(Stage {
                title: "cargo upgrade --incompatible".into(),
                work: Box::new(move || ctx.runner.run(&step).map(drop)),
            });
        }
        let update = cargo(&["update"]);
        stages.push(Stage {
            title: "cargo update".into(),
            work: Box::new(move || ctx.runner.run(&update).map(drop)),
        });
        if python {
            let uv = tool("uv");
            let lock = lock.clone();
            let offline = self.offline;
            stages.push(Stage {
                title: format!(
                    "re-lock {} (mlflow=={}, CPython 3.11, Linux x86_64)",
                    ctx.show(&lock).trim_start_matches("$ROOT/"),
                    ctx.stack.mlflow_version()
                ),
                work: Box::new(move || relock_python(ctx, &uv, &lock, offline)),
            });
        }
        if relock_tools_too {
            let uv = tool("uv");
            let offline = self.offline;
            stages.push(Stage {
                title: format!(
                    "re-lock {} (the PyPI tools, every platform)",
                    tools::TOOLS_LOCK_PATH
                ),
                work: Box::new(move || relock_tools(ctx, &uv, &tools_lock, offline)),
            });
        }
        for (title, args) in [
            (
                "cargo build --workspace",
                ["build", "--workspace", "--locked"],
            ),
            (
                "cargo test --workspace",
                ["test", "--workspace", "--locked"],
            ),
        ] {
            let step = cargo(&args);
            stages.push(Stage {
                title: title.into(),
                work: Box::new(move || ctx.runner.run(&step).map(drop)),
            });
        }

        for stage in stages {
            let title = stage.title.clone();
            let result = ctx.reporter.run_task(&title, |_| (stage.work)());
            let interrupted = ctx.is_interrupted();
            if result.is_ok() && !interrupted {
                continue;
            }
            let restored = snapshot.restore(ctx)?;
            let restored: Vec<String> = restored.iter().map(|p| ctx.show(p)).collect();
            let what = if restored.is_empty() {
                "nothing had changed yet".to_owned()
            } else {
                format!("restored as they were: {}", restored.join(", "))
            };
            return match result {
                Err(e) => Err(e.context(format!("`{title}` failed; {what}"))),
                Ok(()) => bail!("interrupted after `{title}`; {what}"),
            };
        }

        report_actions(ctx)?;
        if ctx.dry_run() {
            return Ok(());
        }
        let read = |path: &Path| {
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
        };
        let old_cargo =
            String::from_utf8_lossy(snapshot.before(&cargo_lock).unwrap_or_default()).into_owned();
        let mut changes: Vec<Change> = lockfiles::changes(
            "Rust",
            &lockfiles::cargo_lock(&old_cargo)?,
            &lockfiles::cargo_lock(&read(&cargo_lock)?)?,
        );
        if python {
            let old =
                String::from_utf8_lossy(snapshot.before(&lock).unwrap_or_default()).into_owned();
            let new = read(&lock)?;
            changes.extend(lockfiles::changes(
                "Python",
                &lockfiles::requirements_lock(&old),
                &lockfiles::requirements_lock(&new),
            ));
            let rewheeled = lockfiles::rewheeled(&old, &new);
            if !rewheeled.is_empty() {
                eprintln!(
                    "requirements.lock: same version, another wheel (a new hash): {}",
                    rewheeled.join(", ")
                );
            }
        }
        let table = lockfiles::markdown_table(&changes);
        print!("{table}");
        ctx.reporter
            .summary(&format!("### Dependency upgrades\n\n{table}"));
        eprintln!(
            "\n{} dependenc{} changed; built and tested in {:.0} s",
            changes.len(),
            if changes.len() == 1 { "y" } else { "ies" },
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }
}

//! The external tools the toolkit runs (cargo-deny, Trivy, the linters), each pinned to one
//! version in `xtask/tools.toml` and installed on first use into the cache:
//! `<cache>/cargo-tools` for crates, one virtual environment `<cache>/python-tools` for the
//! PyPI packages. Before a tool is used its `--version` is compared with the pin. A copy on
//! PATH is used only when it is exactly the pinned version; an ignored one is named.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::ctx::Ctx;
use crate::runner::Step;
use crate::util::lock;

/// Compiled in: the binary and its pins cannot disagree.
const TOOLS_TOML: &str = include_str!("../../tools.toml");
/// The PyPI tools and their dependencies with the hashes of their wheels (uv's universal lock;
/// `upgrade-deps` refreshes it): what pip installs, and nothing else.
pub const TOOLS_LOCK: &str = include_str!("../../tools.lock");
/// Where `upgrade-deps` rewrites it, from the workspace root.
pub const TOOLS_LOCK_PATH: &str = "xtask/tools.lock";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Entry {
    version: String,
    #[serde(rename = "crate")]
    krate: Option<String>,
    pypi: Option<String>,
    pypi_version: Option<String>,
    binary: Option<String>,
    purpose: String,
    first_install: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `cargo install --locked` of this crate at the tool's version.
    Crate(String),
    /// This PyPI package at this exact version (a wheel may add a build number).
    Pypi { package: String, version: String },
}

#[derive(Debug, Clone)]
pub struct Tool {
    pub name: String,
    /// What `<binary> --version` must print.
    pub version: String,
    pub source: Source,
    pub binary: String,
    pub purpose: String,
    /// How long the first install takes, for the progress line.
    pub first_install: String,
}

/// Every pinned tool, by name.
pub fn all() -> Result<Vec<Tool>> {
    let table: toml::Table = toml::from_str(TOOLS_TOML).context("xtask/tools.toml is invalid")?;
    table
        .into_iter()
        .map(|(name, value)| {
            let entry: Entry = value
                .try_into()
                .with_context(|| format!("xtask/tools.toml: [{name}] is invalid"))?;
            let source = match (entry.krate, entry.pypi, entry.pypi_version) {
                (Some(krate), None, None) => Source::Crate(krate),
                (None, Some(package), Some(version)) => Source::Pypi { package, version },
                _ => bail!(
                    "xtask/tools.toml: [{name}] needs either `crate`, or `pypi` and `pypi-version`"
                ),
            };
            Ok(Tool {
                binary: entry.binary.unwrap_or_else(|| name.clone()),
                name,
                version: entry.version,
                source,
                purpose: entry.purpose,
                first_install: entry.first_install,
            })
        })
        .collect()
}

pub fn get(name: &str) -> Result<Tool> {
    all()?
        .into_iter()
        .find(|t| t.name == name)
        .with_context(|| format!("no tool named {name} in xtask/tools.toml"))
}

fn cargo_root(ctx: &Ctx) -> PathBuf {
    ctx.cache_dir.join("cargo-tools")
}

fn python_env(ctx: &Ctx) -> PathBuf {
    ctx.cache_dir.join("python-tools")
}

impl Tool {
    /// Where the toolkit installs it.
    pub fn cached_path(&self, ctx: &Ctx) -> PathBuf {
        let dir = match self.source {
            Source::Crate(_) => cargo_root(ctx),
            Source::Pypi { .. } => python_env(ctx),
        };
        dir.join("bin").join(&self.binary)
    }

    fn install_dir(&self, ctx: &Ctx) -> PathBuf {
        match self.source {
            Source::Crate(_) => cargo_root(ctx),
            Source::Pypi { .. } => python_env(ctx),
        }
    }

    fn version_step(&self, path: &Path) -> Step {
        let step = Step::new(path.to_string_lossy());
        // Cargo subcommands expect their own name first when run directly.
        match self.binary.strip_prefix("cargo-") {
            Some(sub) if matches!(self.source, Source::Crate(_)) => step.args([sub, "--version"]),
            _ => step.arg("--version"),
        }
    }

    /// The version `path` reports, if it runs.
    fn version_of(&self, ctx: &Ctx, path: &Path) -> Option<String> {
        let out = ctx.runner.query(&self.version_step(path)).ok()?;
        if !out.status.success() {
            return None;
        }
        parse_version(&String::from_utf8_lossy(&out.stdout))
            .or_else(|| parse_version(&String::from_utf8_lossy(&out.stderr)))
    }
}

/// The first word of `--version` output that reads as a version number (`v1.2.3` too).
pub fn parse_version(output: &str) -> Option<String> {
    output.split_whitespace().find_map(|word| {
        let word = word.trim_matches(|c: char| !c.is_ascii_alphanumeric());
        let word = word.strip_prefix('v').unwrap_or(word);
        let end = word
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(word.len());
        let number = word[..end].trim_end_matches('.');
        let starts_with_digit = number.starts_with(|c: char| c.is_ascii_digit());
        (starts_with_digit && number.contains('.')).then(|| number.to_owned())
    })
}

/// Where a tool stands on this machine.
#[derive(Debug, Clone)]
pub struct Status {
    pub tool: Tool,
    /// The copy the toolkit uses: the cached one, or a PATH copy of the pinned version.
    pub usable: Option<PathBuf>,
    /// The cached copy and the version it reports (`None`: absent or does not run).
    pub cached: Option<(PathBuf, Option<String>)>,
    /// A copy on PATH that is not the cached one, and its version.
    pub on_path: Option<(PathBuf, Option<String>)>,
}

impl Status {
    pub fn is_usable(&self) -> bool {
        self.usable.is_some()
    }

    /// A PATH copy the toolkit does not use, with why: said out loud, never silent.
    pub fn ignored_on_path(&self) -> Option<String> {
        let (path, version) = self.on_path.as_ref()?;
        if self.usable.as_ref() == Some(path) {
            return None;
        }
        let version = version.as_deref().unwrap_or("unknown version");
        let why = if version == self.tool.version {
            "the cached copy is used"
        } else {
            "not the pinned version"
        };
        Some(format!(
            "ignoring {} {version} on PATH ({}): {why}, {} {} is pinned",
            self.tool.name,
            path.display(),
            self.tool.name,
            self.tool.version
        ))
    }
}

pub fn status(ctx: &Ctx, tool: &Tool) -> Status {
    let cached_path = tool.cached_path(ctx);
    let cached = cached_path
        .is_file()
        .then(|| (cached_path.clone(), tool.version_of(ctx, &cached_path)));
    let on_path = which::which(&tool.binary)
        .ok()
        .filter(|p| p != &cached_path)
        .map(|p| {
            let version = tool.version_of(ctx, &p);
            (p, version)
        });
    let pinned = |found: &Option<(PathBuf, Option<String>)>| {
        found
            .as_ref()
            .filter(|(_, v)| v.as_deref() == Some(tool.version.as_str()))
            .map(|(p, _)| p.clone())
    };
    let usable = pinned(&cached).or_else(|| pinned(&on_path));
    Status {
        tool: tool.clone(),
        usable,
        cached,
        on_path,
    }
}

/// The paths of the named tools, installing the missing ones first (under `--dry-run`, the
/// installs are planned and the paths they would have are returned).
pub fn ensure(ctx: &Ctx, names: &[&str]) -> Result<Vec<PathBuf>> {
    let tools = names.iter().map(|n| get(n)).collect::<Result<Vec<_>>>()?;
    let statuses: Vec<Status> = tools.iter().map(|t| status(ctx, t)).collect();
    for note in statuses.iter().filter_map(Status::ignored_on_path) {
        ctx.reporter.info(note);
    }
    let missing: Vec<&Tool> = statuses
        .iter()
        .filter(|s| !s.is_usable())
        .map(|s| &s.tool)
        .collect();
    if !missing.is_empty() {
        install(ctx, &missing)?;
    }
    // What was missing is now in the cache (install checked its version).
    Ok(statuses
        .iter()
        .map(|s| s.usable.clone().unwrap_or_else(|| s.tool.cached_path(ctx)))
        .collect())
}

/// One tool's path, installed if need be.
pub fn path(ctx: &Ctx, name: &str) -> Result<PathBuf> {
    Ok(ensure(ctx, &[name])?.remove(0))
}

/// Takes the cache's install lock: two toolkits never install into one cache at once. A
/// toolkit that waits says so, and for whom.
fn lock(ctx: &Ctx) -> Result<Option<lock::Held>> {
    if ctx.dry_run() {
        return Ok(None);
    }
    let interrupted = || ctx.is_interrupted();
    lock::acquire(
        &ctx.cache_dir.join("tools.lock"),
        "the tools cache's install lock",
        &ctx.reporter,
        &interrupted,
    )
    .map(Some)
}

/// Installs `tools` into the cache: the PyPI ones with one pip run, each crate with its own
/// `cargo install`. Then checks every one reports its pinned version.
pub fn install(ctx: &Ctx, tools: &[&Tool]) -> Result<()> {
    let _lock = lock(ctx)?;
    // Another toolkit may have installed them while we waited for the lock.
    let tools: Vec<&Tool> = tools
        .iter()
        .copied()
        .filter(|t| ctx.dry_run() || !status(ctx, t).is_usable())
        .collect();
    let (crates, wheels): (Vec<&Tool>, Vec<&Tool>) = tools
        .iter()
        .partition(|t| matches!(t.source, Source::Crate(_)));
    if !wheels.is_empty() {
        install_wheels(ctx, &wheels)?;
    }
    for tool in crates {
        install_crate(ctx, tool)?;
    }
    if ctx.dry_run() {
        return Ok(());
    }
    for tool in tools {
        let path = tool.cached_path(ctx);
        match tool.version_of(ctx, &path) {
            Some(v) if v == tool.version => {}
            found => bail!(
                "{} installed into {} reports version {}, but {} is pinned in xtask/tools.toml: \
                 fix the pin or the package version there",
                tool.name,
                ctx.show(&path),
                found.as_deref().unwrap_or("nothing"),
                tool.version
            ),
        }
    }
    Ok(())
}

fn install_wheels(ctx: &Ctx, tools: &[&Tool]) -> Result<()> {
    let env = python_env(ctx);
    let names: Vec<String> = tools
        .iter()
        .map(|t| format!("{} {}", t.name, t.version))
        .collect();
    let mut how_long: Vec<&str> = Vec::new();
    for t in tools {
        if !how_long.contains(&t.first_install.as_str()) {
            how_long.push(&t.first_install);
        }
    }
    let title = format!(
        "install {} into {} (first use only: {})",
        names.join(", "),
        ctx.show(&env),
        how_long.join("; ")
    );
    ctx.reporter.run_task(title, |task| {
        let python = env.join("bin/python");
        if !python.is_file() {
            task.set_message("python3 -m venv");
            ctx.runner
                .run(&Step::new("python3").args(["-m", "venv"]).arg(&env))
                .context(
                    "cannot create the tools' Python environment (is python3 with venv installed?)",
                )?;
        }
        // Every PyPI tool at once, from the hashed lock: pip refuses any file whose hash is not
        // in it, and resolves nothing itself (--no-deps: the lock is complete).
        task.set_message("pip install --require-hashes");
        let lock = env.join("tools.lock");
        ctx.runner.write_file(&lock, TOOLS_LOCK)?;
        ctx.runner.run(
            &Step::new(python.to_string_lossy())
                .args(["-m", "pip", "install", "--disable-pip-version-check"])
                .args(["--no-input", "--progress-bar", "off"])
                .args(["--require-hashes", "--no-deps", "-r"])
                .arg(&lock),
        )?;
        Ok(())
    })
}

fn install_crate(ctx: &Ctx, tool: &Tool) -> Result<()> {
    let Source::Crate(krate) = &tool.source else {
        unreachable!("partitioned: crates only")
    };
    let root = tool.install_dir(ctx);
    let title = format!(
        "install {} {} into {} (first use only: {})",
        tool.name,
        tool.version,
        ctx.show(&root),
        tool.first_install
    );
    ctx.reporter.run_task(title, |_| {
        ctx.runner.run(
            &Step::new("cargo")
                .args(["install", "--locked", "--version", &tool.version])
                .args(BUILT_FOR_COMPILE_TIME.iter().flat_map(|c| ["--config", c]))
                .arg("--root")
                .arg(&root)
                .arg(krate),
        )?;
        Ok(())
    })
}

/// How the pinned crates are compiled: for build time, not by the crate's own release profile
/// (cargo-deny's and cargo-edit's ask for LTO in one codegen unit), since their runs are short
/// and bound by reading files and the registry. cargo-deny 0.20.2 checks this workspace in
/// 0.64 s built either way, and installs in 115 s instead of 162 (medians of two paired runs
/// on 2 cores); cargo-edit in 116 s instead of 132 (one run each).
const BUILT_FOR_COMPILE_TIME: [&str; 3] = [
    "profile.release.opt-level=1",
    "profile.release.lto=false",
    "profile.release.codegen-units=16",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pypi_tool_is_locked_at_its_pin_with_hashes() {
        let locked = crate::deps::lockfiles::requirements_lock(TOOLS_LOCK);
        for tool in all().unwrap() {
            if let Source::Pypi { package, version } = &tool.source {
                assert!(
                    locked
                        .iter()
                        .any(|l| &l.name == package && &l.version == version),
                    "{package}=={version} is not in xtask/tools.lock: `cargo xtask upgrade-deps`"
                );
            }
        }
        // Every requirement carries its hashes (pip's --require-hashes refuses one without).
        let requirements = TOOLS_LOCK
            .split("\n")
            .filter(|l| !l.starts_with(' ') && !l.starts_with('#') && !l.is_empty());
        for line in requirements {
            assert!(line.ends_with('\\'), "{line}: no hashes follow");
        }
    }

    #[test]
    fn every_tool_is_pinned_to_an_exact_version_from_one_source() {
        let tools = all().unwrap();
        let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
        for expected in [
            "cargo-deny",
            "cargo-edit",
            "trivy",
            "actionlint",
            "zizmor",
            "hadolint",
            "check-jsonschema",
            "uv",
            "schemathesis",
            "kubernetes-validate",
        ] {
            assert!(names.contains(&expected), "{expected} is not pinned");
        }
        for tool in &tools {
            assert_eq!(
                parse_version(&tool.version).as_deref(),
                Some(tool.version.as_str()),
                "{}: the pin must be an exact version",
                tool.name
            );
            if let Source::Pypi { version, .. } = &tool.source {
                assert!(
                    version.starts_with(&tool.version),
                    "{}: package {version} does not ship {}",
                    tool.name,
                    tool.version
                );
            }
        }
    }

    #[test]
    fn versions_are_read_from_what_the_tools_print() {
        let cases = [
            ("cargo-deny 0.20.2\n", "0.20.2"),
            (
                "Version: 0.76.0\nVulnerability DB:\n  Version: 2\n",
                "0.76.0",
            ),
            ("zizmor 1.32.0\n", "1.32.0"),
            ("Haskell Dockerfile Linter 2.15.1\n", "2.15.1"),
            ("check-jsonschema, version 0.39.0\n", "0.39.0"),
            ("uv 0.13.8 (x86_64-unknown-linux-gnu)\n", "0.13.8"),
            (
                "actionlint.kjanat.dev 1.17.0\nbuilt with go1.27.1 compiler for linux/amd64\n",
                "1.17.0",
            ),
            ("cargo-upgrade v0.13.13\n", "0.13.13"),
            ("schemathesis, version 4.32.5\n", "4.32.5"),
            ("1.37.0\n", "1.37.0"),
        ];
        for (output, version) in cases {
            assert_eq!(parse_version(output).as_deref(), Some(version), "{output}");
        }
        assert_eq!(parse_version("no version here"), None);
    }
}

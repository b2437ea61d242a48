//! Secrets in everything the repository holds and has held. Trivy's secret scanner reads a
//! copy of every tracked file (Markdown, `tests/` folders and fixtures included: trivy.yaml's
//! skip-dirs are for the other scanners) and, with `scan --history`, every file version the
//! given commits added or changed, so a key committed and deleted later is still found.
//!
//! `trivy-secrets.yaml` turns off Trivy's built-in allow rules that would skip Markdown, test
//! and example paths, and lists the few files that hold fake secrets on purpose: each by its
//! exact path, with the reason. The toolkit refuses any other kind of allow rule there.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::runner::{Runner, Step};

/// Trivy's secret configuration for the repository (not for images, whose own built-in allow
/// rules stay on), at the workspace root.
pub const CONFIG: &str = "trivy-secrets.yaml";

/// Built-in allow rules that would hide a secret committed to this repository.
pub const REQUIRED_DISABLED: [&str; 4] = ["tests", "examples", "markdown", "vendor"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    #[serde(default)]
    pub disable_allow_rules: Vec<String>,
    #[serde(default)]
    pub allow_rules: Vec<AllowRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowRule {
    pub id: String,
    /// Why the file's secret is fake.
    pub description: String,
    /// `^PATH$`, dots escaped: one file.
    pub path: String,
}

impl AllowRule {
    /// The one file the rule allows, or why the rule is too wide.
    pub fn file(&self) -> Result<String> {
        let literal = self
            .path
            .strip_prefix('^')
            .and_then(|p| p.strip_suffix('$'))
            .with_context(|| format!("allow rule {}: its path must be `^FILE$`", self.id))?;
        let unescaped = literal.replace("\\.", ".");
        if unescaped.contains([
            '*', '+', '?', '(', ')', '[', ']', '{', '}', '|', '\\', '^', '$',
        ]) || literal.replace("\\.", "").contains('.')
        {
            bail!(
                "allow rule {}: {} is a pattern; name one file, dots escaped (`^dir/file\\.txt$`)",
                self.id,
                self.path
            );
        }
        Ok(unescaped)
    }
}

impl Config {
    /// Reads and checks the configuration: the built-in allow rules that would hide a
    /// committed secret are off, and each allow rule names one tracked file with a reason.
    pub fn load(path: &Path, tracked: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let config: Self = serde_yaml_ng::from_str(&text)
            .with_context(|| format!("{} is not a secret configuration", path.display()))?;
        let missing: Vec<&str> = REQUIRED_DISABLED
            .into_iter()
            .filter(|id| !config.disable_allow_rules.iter().any(|d| d == id))
            .collect();
        if !missing.is_empty() {
            bail!(
                "{}: disable-allow-rules must list {}: Trivy's built-in rules would skip those files",
                path.display(),
                missing.join(", ")
            );
        }
        for rule in &config.allow_rules {
            let file = rule.file().with_context(|| path.display().to_string())?;
            if rule.description.trim().is_empty() {
                bail!(
                    "{}: allow rule {} has no description: say why its secret is fake",
                    path.display(),
                    rule.id
                );
            }
            if !tracked.contains(&file) {
                bail!(
                    "{}: allow rule {} names {file}, which is not a tracked file",
                    path.display(),
                    rule.id
                );
            }
        }
        Ok(config)
    }

    /// The same configuration for a folder of commits (`<commit>/<path>`): each allowed file
    /// under any commit.
    pub fn for_history(&self) -> String {
        let mut text = String::from("disable-allow-rules:\n");
        for id in &self.disable_allow_rules {
            text.push_str(&format!("  - {id}\n"));
        }
        text.push_str("allow-rules:\n");
        if self.allow_rules.is_empty() {
            text.pop();
            text.push_str(" []\n");
        }
        for rule in &self.allow_rules {
            let inner = rule.path.trim_start_matches('^');
            text.push_str(&format!(
                "  - id: {}\n    description: {:?}\n    path: '^[0-9a-f]+/{}'\n",
                rule.id, rule.description, inner
            ));
        }
        text
    }
}

/// The tracked files of the repository at `root`, `/`-separated.
pub fn tracked_files(runner: &Runner, root: &Path) -> Result<Vec<String>> {
    let out = runner.query(
        &Step::new("git")
            .args(["ls-files", "-z", "--cached"])
            .cwd(root),
    )?;
    if !out.status.success() {
        bail!(
            "cannot list the tracked files of {}: {}",
            root.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(nul_separated(&out.stdout))
}

fn nul_separated(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect()
}

/// Links (or copies) each of `files` (relative to `root`, regular files only: links and files
/// deleted from the working tree are left out) into the empty folder `dest`.
pub fn stage_files(runner: &Runner, root: &Path, files: &[String], dest: &Path) -> Result<usize> {
    let mut staged = 0;
    for file in files {
        let from = root.join(file);
        if !std::fs::symlink_metadata(&from).is_ok_and(|m| m.is_file()) {
            continue;
        }
        let to = dest.join(file);
        std::fs::create_dir_all(to.parent().expect("a joined path has a parent"))?;
        runner.link_or_copy(&from, &to)?;
        staged += 1;
    }
    Ok(staged)
}

/// The commits `revs` selects (arguments of `git rev-list`, e.g. `origin/main..HEAD`), newest
/// first. A range from the all-zero commit (GitHub's "before" of a new branch) means every
/// commit up to its end.
pub fn commits(runner: &Runner, root: &Path, revs: &str) -> Result<Vec<String>> {
    let revs = match revs.split_once("..") {
        Some((from, to)) if !from.is_empty() && from.trim_matches('0').is_empty() => to,
        _ => revs,
    };
    let out = runner.query(
        &Step::new("git")
            .args(["rev-list", "--end-of-options"])
            .args(revs.split_whitespace())
            .cwd(root),
    )?;
    if !out.status.success() {
        bail!(
            "git cannot list the commits {revs}: {} (a shallow clone has no history: fetch it, e.g. `fetch-depth: 0`)",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect())
}

/// Writes into `dest/<commit>/` every file each of `commits` added or changed, as that commit
/// has it; returns how many files.
pub fn stage_history(
    runner: &Runner,
    root: &Path,
    commits: &[String],
    dest: &Path,
) -> Result<usize> {
    let mut staged = 0;
    for commit in commits {
        let out = runner.query(
            &Step::new("git")
                .args([
                    "diff-tree",
                    // A merge's files against each parent: a key added while resolving one
                    // is read too.
                    "-m",
                    "-r",
                    "--root",
                    "--no-commit-id",
                    "--name-only",
                    "--no-renames",
                    "--diff-filter=AM",
                    "-z",
                    commit,
                ])
                .cwd(root),
        )?;
        if !out.status.success() {
            bail!(
                "git cannot show what {commit} changed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let mut paths = nul_separated(&out.stdout);
        paths.sort();
        paths.dedup();
        let into = dest.join(commit);
        // Paths as they are (one starting with `:` is no pathspec magic), a few hundred per
        // call so that a large commit stays within the argument length.
        for batch in paths.chunks(500) {
            let archive = runner.query(
                &Step::new("git")
                    .args([
                        "--literal-pathspecs",
                        "archive",
                        "--format=tar",
                        commit,
                        "--",
                    ])
                    .args(batch)
                    .cwd(root),
            )?;
            if !archive.status.success() {
                bail!(
                    "git cannot read the files of {commit}: {}",
                    String::from_utf8_lossy(&archive.stderr).trim()
                );
            }
            staged += unpack_regular_files(&archive.stdout, &into)?;
        }
    }
    Ok(staged)
}

/// Writes the regular files of the tar `archive` under `into` (nothing outside it); returns
/// how many.
fn unpack_regular_files(archive: &[u8], into: &Path) -> Result<usize> {
    let mut staged = 0;
    for entry in tar::Archive::new(archive).entries()? {
        let mut entry = entry?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path: PathBuf = entry.path()?.into_owned();
        if !path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
        {
            continue;
        }
        let to = into.join(&path);
        std::fs::create_dir_all(to.parent().expect("a joined path has a parent"))?;
        std::io::copy(&mut entry, &mut std::fs::File::create(&to)?)?;
        staged += 1;
    }
    Ok(staged)
}

/// A history finding's place `<commit>/<path>` as `<path>` and the commit's short name.
pub fn split_commit(file: &str) -> Option<(String, String)> {
    let (commit, path) = file.split_once('/')?;
    (commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| (commit[..12].to_owned(), path.to_owned()))
}

/// What a history scan read, for its notes.
pub fn describe_range(commits: usize, files: usize) -> String {
    format!("{commits} commit(s), {files} file version(s) read")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(path: &str) -> AllowRule {
        AllowRule {
            id: "r".into(),
            description: "fake".into(),
            path: path.into(),
        }
    }

    #[test]
    fn an_allow_rule_names_one_file() {
        assert_eq!(
            rule(r"^xtask/tests/fixtures/key\.pem$").file().unwrap(),
            "xtask/tests/fixtures/key.pem"
        );
        for wide in [
            r"xtask/tests/fixtures/key\.pem",
            r"^xtask/tests/.*$",
            r"^xtask/tests/fixtures/key.pem$",
            r"^(a|b)$",
            r"^xtask/tests/fixtures/[a-z]+$",
        ] {
            assert!(rule(wide).file().is_err(), "{wide} was taken for one file");
        }
    }

    #[test]
    fn the_configuration_must_turn_off_the_rules_that_hide_committed_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONFIG);
        let tracked = vec!["xtask/tests/fixtures/key.pem".to_owned()];
        std::fs::write(&path, "disable-allow-rules: [tests, markdown]\n").unwrap();
        let err = format!("{:#}", Config::load(&path, &tracked).unwrap_err());
        assert!(err.contains("must list examples, vendor"), "{err}");
        let good = "disable-allow-rules: [tests, examples, markdown, vendor]\nallow-rules:\n  - id: fake-key\n    description: a key made for the test, never used\n    path: '^xtask/tests/fixtures/key\\.pem$'\n";
        std::fs::write(&path, good).unwrap();
        let config = Config::load(&path, &tracked).unwrap();
        assert!(config
            .for_history()
            .contains(r"path: '^[0-9a-f]+/xtask/tests/fixtures/key\.pem$'"));
        // An untracked file, a missing reason, a content rule: refused.
        let err = format!("{:#}", Config::load(&path, &[]).unwrap_err());
        assert!(err.contains("not a tracked file"), "{err}");
        std::fs::write(
            &path,
            good.replace("a key made for the test, never used", " "),
        )
        .unwrap();
        let err = format!("{:#}", Config::load(&path, &tracked).unwrap_err());
        assert!(err.contains("no description"), "{err}");
        std::fs::write(&path, format!("{good}    regex: ghp_.*\n")).unwrap();
        assert!(Config::load(&path, &tracked).is_err());
    }

    #[test]
    fn the_repository_configuration_is_valid() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let text = std::fs::read_to_string(root.join(CONFIG)).unwrap();
        let config: Config = serde_yaml_ng::from_str(&text).unwrap();
        for id in REQUIRED_DISABLED {
            assert!(config.disable_allow_rules.iter().any(|d| d == id), "{id}");
        }
        for rule in &config.allow_rules {
            let file = rule.file().unwrap();
            assert!(root.join(&file).is_file(), "{file}");
            assert!(!rule.description.trim().is_empty());
        }
    }

    fn git(runner: &Runner, dir: &Path, args: &[&str]) {
        runner
            .run(
                &Step::new("git")
                    .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
                    .args(args)
                    .cwd(dir),
            )
            .unwrap();
    }

    #[test]
    fn a_file_added_while_resolving_a_merge_and_a_path_git_could_read_as_magic_are_staged() {
        let runner = Runner::for_tests();
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(&repo).unwrap();
        git(&runner, &repo, &["init", "-q"]);
        std::fs::write(repo.join("README.md"), "# readme\n").unwrap();
        git(&runner, &repo, &["add", "."]);
        git(&runner, &repo, &["commit", "-qm", "one"]);
        git(&runner, &repo, &["checkout", "-q", "-b", "side"]);
        std::fs::write(repo.join("side.txt"), "side\n").unwrap();
        git(&runner, &repo, &["add", "."]);
        git(&runner, &repo, &["commit", "-qm", "side"]);
        git(&runner, &repo, &["checkout", "-q", "-"]);
        std::fs::write(repo.join(":top.txt"), "T=1\n").unwrap();
        git(&runner, &repo, &["add", "--", ":(literal):top.txt"]);
        git(&runner, &repo, &["commit", "-qm", "main"]);
        git(
            &runner,
            &repo,
            &["merge", "-q", "--no-ff", "--no-commit", "side"],
        );
        std::fs::write(repo.join("merge-key.txt"), "KEY=1\n").unwrap();
        git(&runner, &repo, &["add", "merge-key.txt"]);
        git(&runner, &repo, &["commit", "-qm", "merge"]);

        let all = commits(&runner, &repo, "HEAD").unwrap();
        let history = dir.path().join("history");
        stage_history(&runner, &repo, &all, &history).unwrap();
        let merge = &all[0];
        assert_eq!(
            std::fs::read_to_string(history.join(merge).join("merge-key.txt")).unwrap(),
            "KEY=1\n"
        );
        assert!(all
            .iter()
            .any(|c| history.join(c).join(":top.txt").is_file()));
    }

    #[test]
    fn tracked_files_and_every_version_the_commits_added_are_staged() {
        let runner = Runner::for_tests();
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(repo.join("xtask/tests/fixtures")).unwrap();
        git(&runner, &repo, &["init", "-q"]);
        std::fs::write(repo.join("README.md"), "# readme\n").unwrap();
        std::fs::write(repo.join("key.txt"), "KEY=1\n").unwrap();
        git(&runner, &repo, &["add", "."]);
        git(&runner, &repo, &["commit", "-qm", "one"]);
        std::fs::remove_file(repo.join("key.txt")).unwrap();
        std::fs::write(repo.join("xtask/tests/fixtures/f.env"), "F=1\n").unwrap();
        std::fs::write(repo.join("untracked.txt"), "U=1\n").unwrap();
        git(&runner, &repo, &["add", "xtask", "key.txt"]);
        git(&runner, &repo, &["commit", "-qm", "two"]);

        let tracked = tracked_files(&runner, &repo).unwrap();
        assert_eq!(tracked, ["README.md", "xtask/tests/fixtures/f.env"]);
        let tree = dir.path().join("tree");
        assert_eq!(stage_files(&runner, &repo, &tracked, &tree).unwrap(), 2);
        assert!(tree.join("xtask/tests/fixtures/f.env").is_file());
        assert!(!tree.join("untracked.txt").exists());

        let all = commits(&runner, &repo, "HEAD").unwrap();
        assert_eq!(all.len(), 2);
        let from_zero = commits(&runner, &repo, &format!("{}..HEAD", "0".repeat(40))).unwrap();
        assert_eq!(from_zero, all);
        let last = commits(&runner, &repo, "HEAD~1..HEAD").unwrap();
        assert_eq!(last, all[..1]);
        let history = dir.path().join("history");
        assert_eq!(stage_history(&runner, &repo, &all, &history).unwrap(), 3);
        // The deleted key is there, as the first commit had it.
        assert_eq!(
            std::fs::read_to_string(history.join(&all[1]).join("key.txt")).unwrap(),
            "KEY=1\n"
        );
        assert!(history
            .join(&all[0])
            .join("xtask/tests/fixtures/f.env")
            .is_file());
        let err = commits(&runner, &repo, "no-such-branch..HEAD").unwrap_err();
        assert!(
            format!("{err:#}").contains("cannot list the commits"),
            "{err:#}"
        );
    }

    #[test]
    fn history_places_name_their_commit() {
        let commit = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(
            split_commit(&format!("{commit}/docs/a.md")),
            Some(("0123456789ab".into(), "docs/a.md".into()))
        );
        assert_eq!(split_commit("docs/a.md"), None);
    }
}

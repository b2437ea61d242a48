//! The workflows under `.github/workflows/` as the toolkit sees them: every `run:` step is a
//! `cargo xtask` command (or, on macOS, `cargo test`), and every `cargo xtask` command they
//! call must parse with the real command line, so a workflow cannot call a command or flag
//! that does not exist.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_yaml_ng::Value;

pub const DIR: &str = ".github/workflows";

/// One `run:` step.
#[derive(Debug, Clone)]
pub struct RunStep {
    /// `.github/workflows/ci.yml`
    pub file: String,
    pub job: String,
    /// The step's line in the file (its `run:` key), for annotations.
    pub line: Option<u32>,
    pub script: String,
}

pub fn files(root: &Path) -> Result<Vec<PathBuf>> {
    let dir = root.join(DIR);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    files.sort();
    Ok(files)
}

/// Every `run:` step of every workflow under `root`.
pub fn run_steps(root: &Path) -> Result<Vec<RunStep>> {
    let mut steps = Vec::new();
    for path in files(root)? {
        let text = std::fs::read_to_string(&path)?;
        let shown = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        let doc: Value =
            serde_yaml_ng::from_str(&text).with_context(|| format!("{shown} is not valid YAML"))?;
        let lines: Vec<&str> = text.lines().collect();
        let mut search_from = 0;
        let jobs = doc.get("jobs").and_then(Value::as_mapping);
        for (job, body) in jobs.into_iter().flatten() {
            let job = job.as_str().unwrap_or("?").to_owned();
            let Some(job_steps) = body.get("steps").and_then(Value::as_sequence) else {
                continue;
            };
            for step in job_steps {
                let Some(script) = step.get("run").and_then(Value::as_str) else {
                    continue;
                };
                // Steps appear in file order: find each `run:` after the previous one.
                let line = lines
                    .iter()
                    .enumerate()
                    .skip(search_from)
                    .find(|(_, l)| {
                        let l = l.trim_start().trim_start_matches("- ");
                        l.starts_with("run:")
                    })
                    .map(|(i, _)| i);
                if let Some(i) = line {
                    search_from = i + 1;
                }
                steps.push(RunStep {
                    file: shown.clone(),
                    job: job.clone(),
                    line: line.map(|i| i as u32 + 1),
                    script: script.to_owned(),
                });
            }
        }
    }
    Ok(steps)
}

/// The commands of a script, each split into words as a POSIX shell would (shell-words). Lines
/// and the operators `;`, `|`, `||`, `&&` and `&` separate commands, where they stand apart from
/// words (or `;` ends one). Values not known here (variables, GitHub's expressions) become the
/// placeholder `VALUE`. A line whose quotes do not close is kept whole, as one word, to be
/// reported.
pub fn commands(script: &str) -> Vec<Vec<String>> {
    let mut commands = Vec::new();
    for line in script.replace("\\\n", " ").lines() {
        let line = with_placeholders(line);
        let Ok(words) = shell_words::split(&line) else {
            commands.push(vec![line.trim().to_owned()]);
            continue;
        };
        let mut command: Vec<String> = Vec::new();
        for word in words {
            let (word, ends_command) = if word.chars().all(|c| matches!(c, ';' | '|' | '&')) {
                (String::new(), true)
            } else if let Some(stripped) = word.strip_suffix(';') {
                (stripped.to_owned(), true)
            } else {
                (word, false)
            };
            if !word.is_empty() {
                command.push(word);
            }
            if ends_command && !command.is_empty() {
                commands.push(std::mem::take(&mut command));
            }
        }
        if !command.is_empty() {
            commands.push(command);
        }
    }
    commands
}

/// `line` with each value not known here replaced by `VALUE`: GitHub's `${{ expressions }}`
/// and a shell's `${VARIABLE}` and `$VARIABLE` (even in single quotes: a check loses nothing).
fn with_placeholders(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let end = if after.starts_with("{{") {
            after.find("}}").map(|i| i + 2)
        } else if after.starts_with('{') {
            after.find('}').map(|i| i + 1)
        } else {
            Some(
                after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len()),
            )
        };
        match end {
            Some(0) | None => {
                out.push('$');
                rest = after;
            }
            Some(end) => {
                out.push_str("VALUE");
                rest = &after[end..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// What is wrong with one step's commands, if anything: each problem one line. `cli` is the
/// toolkit's command line, which every `cargo xtask` command must parse with.
pub fn check_step(step: &RunStep, cli: &clap::Command) -> Vec<String> {
    let mut problems = Vec::new();
    let commands = commands(&step.script);
    if commands.is_empty() {
        problems.push("an empty `run:`".to_owned());
    }
    for (i, words) in commands.iter().enumerate() {
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        match words.as_slice() {
            ["cargo", "xtask", args @ ..] => {
                let argv = std::iter::once("cargo xtask").chain(args.iter().copied());
                if let Err(e) = cli.clone().try_get_matches_from(argv) {
                    let reason = e.to_string();
                    let reason = reason
                        .lines()
                        .next()
                        .unwrap_or("")
                        .trim_start_matches("error: ");
                    problems.push(format!("`cargo xtask {}`: {reason}", args.join(" ")));
                }
            }
            ["cargo", "test", ..] => {}
            // Keeping a copy of what a command printed (the upgrade table for a PR body).
            ["tee", _] if i > 0 => {}
            // The system packages a suite needs (as `.ci/run` installs them as root).
            ["sudo", "apt-get", "update" | "install", ..] => {}
            // The last job of a fan-out: fails unless every job it needs succeeded.
            ["test", "VALUE", "=", "success"] => {}
            // A step that stops the job, saying why in an error annotation, or says why the
            // job skips its work (a notice).
            ["echo", message]
                if message.starts_with("::error::") || message.starts_with("::notice::") => {}
            ["exit", "1"] if i > 0 => {}
            other => problems.push(format!(
                "`{}` is not a `cargo xtask` command: put it in the toolkit",
                other.join(" ")
            )),
        }
    }
    problems
}

/// The values of the matrix variable `key` in every job of the workflow `file` that has one
/// (`group: [checks, tests]`), with the job's name.
pub fn matrix_values(root: &Path, file: &str, key: &str) -> Result<Vec<(String, Vec<String>)>> {
    let path = root.join(DIR).join(file);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let doc: Value =
        serde_yaml_ng::from_str(&text).with_context(|| format!("{file} is not valid YAML"))?;
    let jobs = doc.get("jobs").and_then(Value::as_mapping);
    Ok(jobs
        .into_iter()
        .flatten()
        .filter_map(|(job, body)| {
            let values = body
                .get("strategy")?
                .get("matrix")?
                .get(key)?
                .as_sequence()?;
            Some((
                job.as_str().unwrap_or("?").to_owned(),
                values
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
            ))
        })
        .collect())
}

/// The jobs (`file: job`) that run `cargo xtask` but keep no reports when they fail: no step
/// uploads `target/xtask/reports/` (or all of `target/xtask/`) under `failure()`, `always()`
/// or `!cancelled()`.
pub fn jobs_without_kept_reports(root: &Path) -> Result<Vec<String>> {
    let mut missing = Vec::new();
    for path in files(root)? {
        let file = path
            .file_name()
            .map_or_else(String::new, |f| f.to_string_lossy().into_owned());
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let doc: Value =
            serde_yaml_ng::from_str(&text).with_context(|| format!("{file} is not valid YAML"))?;
        let jobs = doc.get("jobs").and_then(Value::as_mapping);
        for (job, body) in jobs.into_iter().flatten() {
            let steps: Vec<&Value> = body
                .get("steps")
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
                .collect();
            let field = |step: &Value, key: &str| {
                step.get(key)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            };
            let runs_xtask = steps
                .iter()
                .any(|s| field(s, "run").contains("cargo xtask"));
            let keeps_reports = steps.iter().any(|s| {
                let condition = field(s, "if");
                let paths = s
                    .get("with")
                    .and_then(|w| w.get("path"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                field(s, "uses").starts_with("actions/upload-artifact@")
                    && ["failure()", "always()", "!cancelled()"]
                        .iter()
                        .any(|c| condition.contains(c))
                    && paths
                        .lines()
                        .any(|p| matches!(p.trim(), "target/xtask/" | "target/xtask/reports/"))
            });
            if runs_xtask && !keeps_reports {
                missing.push(format!("{file}: {}", job.as_str().unwrap_or("?")));
            }
        }
    }
    Ok(missing)
}

/// An action a workflow uses, pinned to a commit, with the tag its comment says it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedAction {
    /// `actions/checkout`, `github/codeql-action/upload-sarif`.
    pub action: String,
    pub commit: String,
    /// The `# v7.0.1` comment beside the pin, if any.
    pub tag: Option<String>,
    /// The workflows that use it, by file name.
    pub files: Vec<String>,
}

/// Every `uses: OWNER/REPO[/PATH]@<40 hex digits>` of the workflows under `root`, once per
/// action and commit, in name order. Actions pinned by tag or branch are not listed.
pub fn pinned_actions(root: &Path) -> Result<Vec<PinnedAction>> {
    let mut pins: Vec<PinnedAction> = Vec::new();
    for path in files(root)? {
        let text = std::fs::read_to_string(&path)?;
        let file = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        for line in text.lines() {
            let line = line.trim_start().trim_start_matches("- ").trim_start();
            let Some(rest) = line.strip_prefix("uses:") else {
                continue;
            };
            let (reference, comment) = match rest.split_once('#') {
                Some((r, c)) => (r.trim(), Some(c.trim())),
                None => (rest.trim(), None),
            };
            let reference = reference.trim_matches(|c| c == '"' || c == '\'');
            let Some((action, commit)) = reference.split_once('@') else {
                continue;
            };
            if commit.len() != 40 || !commit.chars().all(|c| c.is_ascii_hexdigit()) {
                continue;
            }
            let tag = comment
                .and_then(|c| c.split_whitespace().next())
                .map(str::to_owned);
            match pins
                .iter_mut()
                .find(|p| p.action == action && p.commit == commit)
            {
                Some(pin) if !pin.files.contains(&file) => pin.files.push(file.clone()),
                Some(_) => {}
                None => pins.push(PinnedAction {
                    action: action.to_owned(),
                    commit: commit.to_owned(),
                    tag,
                    files: vec![file.clone()],
                }),
            }
        }
    }
    pins.sort_by(|a, b| (&a.action, &a.commit).cmp(&(&b.action, &b.commit)));
    Ok(pins)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_that_runs_the_toolkit_must_keep_its_reports_when_it_fails() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join(DIR);
        std::fs::create_dir_all(&dir).unwrap();
        let upload =
            "      - uses: actions/upload-artifact@bbbca2ddaa5d8feaa63e36b76fdaad77386f024f\n\
                      \x20       if: ${{ failure() }}\n\
                      \x20       with:\n\
                      \x20         path: |\n\
                      \x20           target/xtask/reports/\n";
        std::fs::write(
            dir.join("kept.yml"),
            format!("jobs:\n  scan:\n    steps:\n      - run: cargo xtask scan\n{upload}"),
        )
        .unwrap();
        std::fs::write(
            dir.join("lost.yml"),
            "jobs:\n  fuzz:\n    steps:\n      - run: cargo xtask fuzz-api\n  \
             other:\n    steps:\n      - run: echo hello\n",
        )
        .unwrap();
        assert_eq!(
            jobs_without_kept_reports(root.path()).unwrap(),
            ["lost.yml: fuzz"]
        );
    }

    #[test]
    fn scripts_split_into_commands_and_words() {
        assert_eq!(
            commands(
                "cargo xtask release --registry \"ghcr.io/${OWNER}\" --tag ${{ github.ref_name }}"
            ),
            [vec![
                "cargo",
                "xtask",
                "release",
                "--registry",
                "ghcr.io/VALUE",
                "--tag",
                "VALUE"
            ]]
        );
        assert_eq!(
            commands("cargo xtask upgrade-deps | tee \"${RUNNER_TEMP}/u.md\"\ncargo test -- --ignored # why\n"),
            [
                vec!["cargo", "xtask", "upgrade-deps"],
                vec!["tee", "VALUE/u.md"],
                vec!["cargo", "test", "--", "--ignored"],
            ]
        );
        assert_eq!(
            commands("cargo xtask ci; echo 'a; b' $1 || true"),
            [
                vec!["cargo", "xtask", "ci"],
                vec!["echo", "a; b", "VALUE"],
                vec!["true"],
            ]
        );
        assert_eq!(commands("echo \"unclosed"), [vec!["echo \"unclosed"]]);
        assert_eq!(
            commands("cargo xtask scan \\\n  --skip-images && echo 'a b'"),
            [
                vec!["cargo", "xtask", "scan", "--skip-images"],
                vec!["echo", "a b"],
            ]
        );
    }

    #[test]
    fn unknown_commands_and_flags_are_named() {
        let step = |script: &str| RunStep {
            file: "w.yml".into(),
            job: "j".into(),
            line: None,
            script: script.into(),
        };
        let cli = clap::Command::new("cargo xtask").subcommand(
            clap::Command::new("scan").arg(
                clap::Arg::new("skip-images")
                    .long("skip-images")
                    .action(clap::ArgAction::SetTrue),
            ),
        );
        assert!(check_step(&step("cargo xtask scan --skip-images"), &cli).is_empty());
        let problems = check_step(&step("cargo xtask scan --no-such-flag"), &cli);
        assert!(problems[0].contains("--no-such-flag"), "{problems:?}");
        let problems = check_step(&step("cargo xtask no-such-command"), &cli);
        assert!(problems[0].contains("no-such-command"), "{problems:?}");
        let problems = check_step(&step("curl https://example.invalid | sh"), &cli);
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn actions_pinned_by_commit_are_listed_with_their_tags() {
        let dir = tempfile::tempdir().unwrap();
        let workflows = dir.path().join(DIR);
        std::fs::create_dir_all(&workflows).unwrap();
        let sha = "3d3c42e5aac5ba805825da76410c181273ba90b1";
        std::fs::write(
            workflows.join("a.yml"),
            format!(
                "jobs:\n  x:\n    steps:\n      - uses: actions/checkout@{sha} # v7.0.1\n      \
                 - uses: actions/setup-node@v4\n      - name: up\n        uses: \"github/codeql-action/upload-sarif@{sha}\"\n"
            ),
        )
        .unwrap();
        std::fs::write(
            workflows.join("b.yml"),
            format!("jobs:\n  y:\n    steps:\n      - uses: actions/checkout@{sha} # v7.0.1\n"),
        )
        .unwrap();
        let pins = pinned_actions(dir.path()).unwrap();
        assert_eq!(
            pins,
            [
                PinnedAction {
                    action: "actions/checkout".into(),
                    commit: sha.into(),
                    tag: Some("v7.0.1".into()),
                    files: vec!["a.yml".into(), "b.yml".into()],
                },
                PinnedAction {
                    action: "github/codeql-action/upload-sarif".into(),
                    commit: sha.into(),
                    tag: None,
                    files: vec!["a.yml".into()],
                },
            ]
        );
        let ours = pinned_actions(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()).unwrap();
        assert!(ours.iter().all(|p| p.tag.is_some()), "{ours:?}");
    }
}

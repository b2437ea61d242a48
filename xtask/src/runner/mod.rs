//! The one place that starts and signals processes, and that changes files for a plan.
//! Commands describe what to run as [`Step`]s; the [`Runner`] prints them under `--dry-run`,
//! echoes them with `-v`, captures their output and, on failure, reports the command and the
//! tail of what it printed.
//!
//! Two crates do the work: duct for captured runs (stdout and stderr interleaved, as printed,
//! which xshell cannot do) and background services (their own process group, output to a log
//! file); xshell for foreground commands and queries, and for file and directory work. A step
//! is data, built at run time and shown by `--dry-run`, so it becomes an xshell command through
//! `Shell::cmd(program).args(args)`, the form xshell's `cmd!` template expands to: no shell,
//! each argument one argument. Signals go through rustix. Clippy's `disallowed-methods` keeps
//! every other module from spawning or signalling.

#![allow(clippy::disallowed_methods)] // the one module allowed to spawn and signal

mod process;

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rustix::process::{Pid, Signal};
use xshell::Shell;

use crate::util::progress::Reporter;

const SIGINT: i32 = Signal::INT.as_raw();

/// A program to run: what, with which arguments, where, and with which extra environment.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub program: String,
    pub args: Vec<String>,
    pub cwd: Option<PathBuf>,
    pub env: Vec<(String, String)>,
}

impl Step {
    pub fn new(program: impl Into<String>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            cwd: None,
            env: Vec::new(),
        }
    }

    pub fn arg(mut self, arg: impl AsRef<std::ffi::OsStr>) -> Self {
        self.args.push(arg.as_ref().to_string_lossy().into_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.args.extend(
            args.into_iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned()),
        );
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.env.push((
            key.to_owned(),
            value.as_ref().to_string_lossy().into_owned(),
        ));
        self
    }

    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// The step as an xshell command (no shell: every argument stays one argument).
    fn command<'a>(&self, shell: &'a Shell) -> xshell::Cmd<'a> {
        let mut command = shell.cmd(&self.program).args(&self.args);
        if let Some(dir) = &self.cwd {
            shell.change_dir(dir);
        }
        for name in NOT_INHERITED {
            command = command.env_remove(name);
        }
        for (k, v) in &self.env {
            command = command.env(k, v);
        }
        command
    }

    /// The step as a duct expression (stdio left to the caller).
    fn expression(&self) -> duct::Expression {
        let mut expression = duct::cmd(&self.program, &self.args).unchecked();
        if let Some(dir) = &self.cwd {
            expression = expression.dir(dir);
        }
        for name in NOT_INHERITED {
            expression = expression.env_remove(name);
        }
        for (k, v) in &self.env {
            expression = expression.env(k, v);
        }
        expression
    }
}

/// The toolkit's own settings that may hold a secret (`XTASK_MLFLOW_BACKEND`: a PostgreSQL
/// URI with its password), kept from every process it starts: a step that needs the secret
/// is given it explicitly (`PGPASSWORD`), and nothing else sees it in its environment.
const NOT_INHERITED: &[&str] = &["XTASK_MLFLOW_BACKEND"];

/// Rewrites absolute paths into short, stable placeholders when showing a step.
#[derive(Clone, Debug, Default)]
pub struct PathAliases(pub Vec<(PathBuf, &'static str)>);

impl PathAliases {
    pub fn show(&self, text: &str) -> String {
        let mut out = text.to_owned();
        // Longest paths first, so a nested directory wins over its parent.
        let mut aliases = self.0.clone();
        aliases.sort_by_key(|(p, _)| std::cmp::Reverse(p.as_os_str().len()));
        for (path, alias) in aliases {
            out = out.replace(&*path.to_string_lossy(), alias);
        }
        out
    }
}

fn quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c))
    {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

impl Step {
    /// The step as a shell line: `(cd DIR && KEY=VALUE program args...)`.
    pub fn display(&self, aliases: &PathAliases) -> String {
        let mut line = String::new();
        if let Some(dir) = &self.cwd {
            let _ = write!(line, "cd {} && ", quote(&dir.to_string_lossy()));
        }
        for (k, v) in &self.env {
            // Secrets (a database password) never reach a plan or a log.
            let shown = if crate::stack::mlflow_backend::SECRET_ENV.contains(&k.as_str()) {
                "***"
            } else {
                v
            };
            let _ = write!(line, "{k}={} ", quote(shown));
        }
        line.push_str(&quote(&self.program));
        for arg in &self.args {
            line.push(' ');
            line.push_str(&quote(arg));
        }
        aliases.show(&line)
    }
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub struct Runner {
    pub dry_run: bool,
    pub reporter: Arc<Reporter>,
    pub aliases: PathAliases,
}

/// A service started in the background by [`Runner::spawn_service`]: the leader of its own
/// process group.
pub struct Background {
    handle: duct::Handle,
}

impl Background {
    pub fn pid(&self) -> u32 {
        self.handle.pids()[0]
    }

    /// Why it has exited already (and reaps it), or `None` while it runs.
    pub fn exited(&self) -> Option<String> {
        match self.handle.try_wait() {
            Ok(Some(output)) => Some(exit_reason(output.status)),
            _ => None,
        }
    }
}

/// Why a service's process ended, in words: a signal is named, and one that stops processes
/// from outside (SIGTERM, SIGINT, SIGHUP, SIGKILL) is said to come from outside.
pub fn exit_reason(status: std::process::ExitStatus) -> String {
    let Some(signal) = status.signal() else {
        return format!("the process exited ({status})");
    };
    let name = match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        6 => "SIGABRT",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        15 => "SIGTERM",
        _ => "",
    };
    let named = if name.is_empty() {
        format!("signal {signal}")
    } else {
        format!("signal {signal} ({name})")
    };
    match signal {
        1 | 2 | 15 => format!(
            "the process was stopped by {named}, sent from outside the toolkit (an interrupt, a \
             `kill`, a shutdown): it did not fail by itself"
        ),
        9 => format!(
            "the process was killed by {named} from outside the toolkit (a `kill -9`, or the \
             kernel's out-of-memory killer: see `dmesg`)"
        ),
        _ => format!("the process died of {named}"),
    }
}

/// How [`Runner::stop_group`] ended a process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Nothing of the group was alive.
    AlreadyGone,
    /// It exited after SIGTERM.
    Terminated,
    /// It ignored SIGTERM for the grace period and was killed.
    Killed,
}

impl Runner {
    fn announce(&self, step: &Step) {
        let line = step.display(&self.aliases);
        if self.dry_run {
            println!("$ {line}");
        } else {
            self.reporter.detail(format!("$ {line}"));
        }
    }

    /// Prints what a dry run would do at this point (a non-process action: a wait, a file).
    pub fn plan(&self, what: impl AsRef<str>) {
        if self.dry_run {
            println!("# {}", self.aliases.show(what.as_ref()));
        }
    }

    /// Runs `step` to completion with its output captured (stdout and stderr interleaved, as
    /// they were printed); fails with the command and the tail of its output. Under
    /// `--dry-run` it only prints the step.
    pub fn run(&self, step: &Step) -> Result<String> {
        self.announce(step);
        if self.dry_run {
            return Ok(String::new());
        }
        let output = step
            .expression()
            .stdin_null()
            .stderr_to_stdout()
            .stdout_capture()
            .run()
            .with_context(|| cannot_run(step))?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            bail!(
                "`{}` failed ({}); its last lines:\n{}",
                step.display(&self.aliases),
                output.status,
                tail(&text, 30)
            );
        }
        Ok(text)
    }

    /// Runs `step` to completion with stdout and stderr captured apart, and hands back the
    /// exit status for the caller to judge: scanners exit non-zero when they find something,
    /// and write their reports to one stream and their logs to the other. Under `--dry-run`
    /// it only prints the step and returns `None`.
    pub fn run_unchecked(&self, step: &Step) -> Result<Option<Output>> {
        self.announce(step);
        if self.dry_run {
            return Ok(None);
        }
        let output = step
            .expression()
            .stdin_null()
            .stdout_capture()
            .stderr_capture()
            .run()
            .with_context(|| cannot_run(step))?;
        Ok(Some(output))
    }

    /// Runs a read-only query (`docker info`, `python3 --version`) even under `--dry-run`,
    /// since plans depend on its answer. Never fails on a non-zero exit: the caller decides.
    pub fn query(&self, step: &Step) -> Result<Output> {
        self.reporter
            .detail(format!("$ {}", step.display(&self.aliases)));
        let shell = Shell::new()?;
        step.command(&shell)
            .quiet()
            .ignore_status()
            .output()
            .with_context(|| cannot_run(step))
    }

    /// The trimmed standard output of a read-only query that succeeded; `None` if it could
    /// not run or failed.
    pub fn query_stdout(&self, step: &Step) -> Option<String> {
        let out = self.query(step).ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Runs `step` in the foreground with the terminal attached (`logs -f`); fails on a
    /// non-zero exit, except the one Ctrl-C causes.
    pub fn run_attached(&self, step: &Step) -> Result<()> {
        self.announce(step);
        if self.dry_run {
            return Ok(());
        }
        let shell = Shell::new()?;
        let status = std::process::Command::from(step.command(&shell))
            .status()
            .with_context(|| cannot_run(step))?;
        let interrupted = status.code() == Some(130) || status.signal() == Some(SIGINT);
        if !status.success() && !interrupted {
            bail!("`{}` failed ({status})", step.display(&self.aliases));
        }
        Ok(())
    }

    /// Like [`Runner::run_attached`], but the child's standard output passes through this
    /// process line by line, and the lines `keep` accepts are handed back (a suite's
    /// `MEASURED:` lines). Standard error stays attached, so cargo keeps its progress bar.
    /// The lines are handed back whether the step passed or failed.
    pub fn run_attached_keeping(
        &self,
        step: &Step,
        mut keep: impl FnMut(&str) -> bool,
    ) -> (Result<()>, Vec<String>) {
        use std::io::{BufRead, Write};
        self.announce(step);
        if self.dry_run {
            return (Ok(()), Vec::new());
        }
        let mut kept = Vec::new();
        let shell = match Shell::new() {
            Ok(shell) => shell,
            Err(e) => return (Err(e.into()), kept),
        };
        let mut command = std::process::Command::from(step.command(&shell));
        command.stdout(std::process::Stdio::piped());
        let mut child = match command.spawn().with_context(|| cannot_run(step)) {
            Ok(child) => child,
            Err(e) => return (Err(e), kept),
        };
        let mut reader = std::io::BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut out = std::io::stdout();
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
            let _ = out.write_all(&line);
            let _ = out.flush();
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end();
            if keep(text) {
                kept.push(text.to_owned());
            }
            line.clear();
        }
        let status = match child.wait().with_context(|| cannot_run(step)) {
            Ok(status) => status,
            Err(e) => return (Err(e), kept),
        };
        let interrupted = status.code() == Some(130) || status.signal() == Some(SIGINT);
        if !status.success() && !interrupted {
            let why = anyhow::anyhow!("`{}` failed ({status})", step.display(&self.aliases));
            return (Err(why), kept);
        }
        (Ok(()), kept)
    }

    /// Starts a long-running service in its own process group (so stopping it reaches its
    /// children too, and a Ctrl-C at the terminal does not), output appended to `log`.
    /// Returns `None` under `--dry-run`.
    pub fn spawn_service(&self, step: &Step, log: &Path) -> Result<Option<Background>> {
        self.announce(step);
        if self.dry_run {
            return Ok(None);
        }
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open log file {}", log.display()))?;
        let handle = step
            .expression()
            .stdin_null()
            .stdout_file(out.try_clone()?)
            .stderr_file(out)
            .before_spawn(|command| {
                command.process_group(0);
                Ok(())
            })
            .start()
            .with_context(|| format!("cannot start `{}`", step.display(&self.aliases)))?;
        Ok(Some(Background { handle }))
    }

    /// Sends `signal` to every process of the group `pgid`.
    pub fn signal_group(&self, pgid: u32, signal: Signal) -> Result<()> {
        let pid = i32::try_from(pgid)
            .ok()
            .and_then(Pid::from_raw)
            .with_context(|| format!("{pgid} is not a process group id"))?;
        rustix::process::kill_process_group(pid, signal)
            .with_context(|| format!("cannot signal process group {pgid}"))
    }

    /// Stops the process group `pgid`: SIGTERM, then SIGKILL if it is still alive after
    /// `grace`. `child` is reaped when given (it is ours, started by this invocation).
    pub fn stop_group(
        &self,
        pgid: u32,
        grace: Duration,
        child: Option<&Background>,
    ) -> Result<Stopped> {
        let reap = || {
            if let Some(child) = child {
                let _ = child.handle.try_wait();
            }
        };
        reap();
        if !self.group_alive(pgid) {
            return Ok(Stopped::AlreadyGone);
        }
        // The group may vanish between the check and the signal: that is success too.
        let _ = self.signal_group(pgid, Signal::TERM);
        let gone = crate::util::poll::until(grace, Duration::from_millis(25), || {
            reap();
            (!self.group_alive(pgid)).then_some(())
        });
        if gone.is_some() {
            return Ok(Stopped::Terminated);
        }
        let _ = self.signal_group(pgid, Signal::KILL);
        if let Some(child) = child {
            let _ = child.handle.wait();
        }
        Ok(Stopped::Killed)
    }

    /// Creates `dir` and its parents (planned under `--dry-run`).
    pub fn create_dir(&self, dir: &Path) -> Result<()> {
        self.plan(format!("mkdir -p {}", dir.display()));
        if !self.dry_run {
            Shell::new()?.create_dir(dir)?;
        }
        Ok(())
    }

    /// Deletes a file or a whole directory, if present (planned under `--dry-run`).
    pub fn remove_path(&self, path: &Path) -> Result<()> {
        self.plan(format!("rm -rf {}", path.display()));
        if !self.dry_run {
            Shell::new()?.remove_path(path)?;
        }
        Ok(())
    }

    /// Writes `contents` to `path`, creating its folder (planned under `--dry-run`).
    pub fn write_file(&self, path: &Path, contents: impl AsRef<[u8]>) -> Result<()> {
        self.plan(format!("write {}", path.display()));
        if !self.dry_run {
            Shell::new()?.write_file(path, contents)?;
        }
        Ok(())
    }

    /// Renames `from` to `to`, creating `to`'s folder, if `from` exists (planned under
    /// `--dry-run`).
    pub fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        self.plan(format!("mv {} {}", from.display(), to.display()));
        if self.dry_run || std::fs::symlink_metadata(from).is_err() {
            return Ok(());
        }
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::rename(from, to)
            .with_context(|| format!("cannot move {} to {}", from.display(), to.display()))
    }

    /// Copies the file `from` to `to`: a copy of its own, which later changes to `from` leave
    /// as it was.
    pub fn copy_file(&self, from: &Path, to: &Path) -> Result<()> {
        self.plan(format!("cp {} {}", from.display(), to.display()));
        if self.dry_run {
            return Ok(());
        }
        std::fs::copy(from, to)
            .map(drop)
            .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))
    }

    /// Hard-links `from` to `to`, or copies it where links cannot be made (another file
    /// system).
    pub fn link_or_copy(&self, from: &Path, to: &Path) -> Result<()> {
        if self.dry_run {
            return Ok(());
        }
        let shell = Shell::new()?;
        if shell.hard_link(from, to).is_err() {
            shell.copy_file(from, to)?;
        }
        Ok(())
    }

    #[cfg(test)]
    pub fn for_tests() -> Self {
        Self {
            dry_run: false,
            reporter: Arc::new(Reporter::new(-1)),
            aliases: PathAliases::default(),
        }
    }
}

fn cannot_run(step: &Step) -> String {
    format!("cannot run `{}`: is it installed?", step.program)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `up` interrupted while MLflow starts must not call MLflow's SIGTERM a failure.
    #[test]
    fn a_service_stopped_by_a_signal_is_said_to_be_stopped_from_outside() {
        use std::process::ExitStatus;
        let term = exit_reason(ExitStatus::from_raw(15));
        assert!(term.contains("signal 15 (SIGTERM)"), "{term}");
        assert!(term.contains("from outside the toolkit"), "{term}");
        let kill = exit_reason(ExitStatus::from_raw(9));
        assert!(kill.contains("out-of-memory"), "{kill}");
        let segv = exit_reason(ExitStatus::from_raw(11));
        assert_eq!(segv, "the process died of signal 11 (SIGSEGV)");
        let code = exit_reason(ExitStatus::from_raw(3 << 8));
        assert!(code.starts_with("the process exited ("), "{code}");
        assert!(code.contains('3'), "{code}");
    }

    #[test]
    fn steps_display_as_quoted_shell_lines_with_aliases() {
        let step = Step::new("/repo/target/app")
            .args(["train", "--data-path", "/repo/data/a b.csv"])
            .env("LOG_LEVEL", "info")
            .cwd("/repo");
        let aliases = PathAliases(vec![(PathBuf::from("/repo"), "$ROOT")]);
        assert_eq!(
            step.display(&aliases),
            "cd $ROOT && LOG_LEVEL=info $ROOT/target/app train --data-path '$ROOT/data/a b.csv'"
        );
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}

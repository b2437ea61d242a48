//! How long work reports itself: spinners on a terminal, timestamped lines in logs, and groups,
//! `::error` annotations and a step summary under GitHub Actions.

use std::cell::RefCell;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant, SystemTime};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Terminal,
    Plain,
    GitHub,
}

pub struct Reporter {
    mode: Mode,
    multi: MultiProgress,
    verbosity: i8,
    /// Run as a step of `cargo xtask ci`, which groups the log itself: GitHub allows no
    /// nested groups, so tasks print plain lines (annotations stay).
    in_pipeline: bool,
}

/// `hh:mm:ss` UTC, for plain log lines.
fn clock() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    )
}

impl Reporter {
    pub fn new(verbosity: i8) -> Self {
        let mode = if std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true") {
            Mode::GitHub
        } else if std::io::stderr().is_terminal() && verbosity >= 0 {
            Mode::Terminal
        } else {
            Mode::Plain
        };
        Self {
            mode,
            multi: MultiProgress::new(),
            verbosity,
            in_pipeline: std::env::var_os("XTASK_IN_PIPELINE").is_some(),
        }
    }

    fn line(&self, text: &str) {
        match self.mode {
            Mode::Terminal => {
                let _ = self.multi.println(text);
            }
            Mode::Plain | Mode::GitHub => eprintln!("[{}] {text}", clock()),
        }
    }

    /// A progress message; hidden by `-q`.
    pub fn info(&self, text: impl AsRef<str>) {
        if self.verbosity >= 0 {
            self.line(text.as_ref());
        }
    }

    /// Detail shown only with `-v`.
    pub fn detail(&self, text: impl AsRef<str>) {
        if self.verbosity > 0 {
            self.line(text.as_ref());
        }
    }

    pub fn warn(&self, text: impl AsRef<str>) {
        match self.mode {
            Mode::GitHub => eprintln!("::warning::{}", escape(text.as_ref())),
            _ => self.line(&format!("warning: {}", text.as_ref())),
        }
    }

    /// Something deliberately not done, worth seeing on the run's page: a `::notice` under
    /// GitHub Actions, a plain line elsewhere.
    pub fn notice(&self, title: &str, text: &str) {
        match self.mode {
            Mode::GitHub => eprintln!("::notice title={}::{}", escape(title), escape(text)),
            _ => self.line(&format!("{title}: {text}")),
        }
    }

    /// A failure: always shown, and annotated under GitHub Actions.
    pub fn error(&self, title: &str, text: &str) {
        match self.mode {
            Mode::GitHub => eprintln!("::error title={}::{}", escape(title), escape(text)),
            _ => self.line(&format!("error: {title}: {text}")),
        }
    }

    /// A finding, at a place in a file when it has one: under GitHub Actions an `::error` (or
    /// `::warning`) annotation, shown on that line of the pull request; elsewhere nothing,
    /// since the command's own report lists it.
    pub fn annotate(
        &self,
        error: bool,
        file: Option<&str>,
        line: Option<u32>,
        title: &str,
        text: &str,
    ) {
        if self.mode != Mode::GitHub {
            return;
        }
        let level = if error { "error" } else { "warning" };
        let place = match (file, line) {
            (Some(file), Some(line)) => format!("file={},line={line},", escape_property(file)),
            (Some(file), None) => format!("file={},", escape_property(file)),
            (None, _) => String::new(),
        };
        eprintln!(
            "::{level} {place}title={}::{}",
            escape_property(title),
            escape(text)
        );
    }

    /// Starts a unit of work: a spinner, a line, or a log group.
    pub fn task(&self, title: impl Into<String>) -> Task {
        let title = title.into();
        let bar = match self.mode {
            Mode::Terminal => {
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template(
                        "{spinner:.cyan} {prefix} {msg:.dim} {elapsed:.dim}",
                    )
                    .expect("a valid template"),
                );
                bar.set_prefix(title.clone());
                bar.enable_steady_tick(Duration::from_millis(100));
                Some(bar)
            }
            Mode::GitHub if !self.in_pipeline => {
                eprintln!("::group::{title}");
                None
            }
            Mode::Plain | Mode::GitHub => {
                if self.verbosity >= 0 {
                    eprintln!("[{}] ▶ {title}", clock());
                }
                None
            }
        };
        Task {
            title,
            note: RefCell::default(),
            bar,
            started: Instant::now(),
            mode: if self.in_pipeline && self.mode == Mode::GitHub {
                Mode::Plain
            } else {
                self.mode
            },
            quiet: self.verbosity < 0,
        }
    }

    /// Runs `work` as one task: ✓ (with the task's note) when it succeeds, ✗ when it fails.
    pub fn run_task<T>(
        &self,
        title: impl Into<String>,
        work: impl FnOnce(&Task) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let task = self.task(title);
        let result = work(&task);
        match &result {
            Ok(_) => {
                let note = task.note.take();
                task.done(note);
            }
            Err(_) => task.fail("failed"),
        }
        result
    }

    /// Opens a section of the log for a long step (`ci`): a GitHub group under Actions, a
    /// heading elsewhere. The section ends when the guard is dropped.
    pub fn group(&self, title: impl Into<String>) -> Group {
        let title = title.into();
        match self.mode {
            Mode::GitHub => eprintln!("::group::{title}"),
            _ => self.line(&format!("━━ {title}")),
        }
        Group {
            github: self.mode == Mode::GitHub,
        }
    }

    /// Asks a yes/no question on the terminal before something destructive; without a
    /// terminal only `assume_yes` (the command's `--yes`) consents. Fails when not confirmed.
    pub fn confirm(&self, question: &str, assume_yes: bool) -> anyhow::Result<()> {
        use std::io::BufRead;
        if assume_yes {
            return Ok(());
        }
        if !std::io::stdin().is_terminal() {
            anyhow::bail!(
                "{question}: refusing without a terminal to ask on; pass --yes to confirm"
            );
        }
        let _ = self.multi.suspend(|| -> std::io::Result<()> {
            eprint!("{question}? [y/N] ");
            std::io::stderr().flush()
        });
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            anyhow::bail!("nothing was changed");
        }
        Ok(())
    }

    /// Appends markdown to the GitHub Actions step summary, when there is one.
    pub fn summary(&self, markdown: &str) {
        if let Ok(path) = std::env::var("GITHUB_STEP_SUMMARY") {
            if let Ok(mut file) = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(path)
            {
                let _ = writeln!(file, "{markdown}");
            }
        }
    }
}

/// A section of the log, ended on drop.
pub struct Group {
    github: bool,
}

impl Drop for Group {
    fn drop(&mut self) {
        if self.github {
            eprintln!("::endgroup::");
        }
    }
}

/// Annotation text must keep to one line.
fn escape(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Annotation properties (`file=`, `title=`) also end at `,` and `:`.
fn escape_property(text: &str) -> String {
    escape(text).replace(':', "%3A").replace(',', "%2C")
}

/// One unit of work in progress; finish it with `done` or `fail`.
pub struct Task {
    title: String,
    /// Shown after ✓ by `Reporter::run_task`.
    note: RefCell<String>,
    bar: Option<ProgressBar>,
    started: Instant,
    mode: Mode,
    quiet: bool,
}

impl Task {
    pub fn set_message(&self, text: impl Into<String>) {
        if let Some(bar) = &self.bar {
            bar.set_message(text.into());
        }
    }

    /// What to say when the task succeeds, e.g. "up to date".
    pub fn note(&self, text: impl Into<String>) {
        self.note.replace(text.into());
    }

    fn finish(self, mark: &str, text: &str) {
        let elapsed = format!("{:.1}s", self.started.elapsed().as_secs_f64());
        let line = if text.is_empty() {
            format!("{mark} {} ({elapsed})", self.title)
        } else {
            format!("{mark} {}: {text} ({elapsed})", self.title)
        };
        match (&self.bar, self.mode) {
            (Some(bar), _) => {
                bar.set_style(ProgressStyle::with_template("{msg}").expect("a valid template"));
                bar.finish_with_message(line);
            }
            (None, Mode::GitHub) => {
                eprintln!("{line}");
                eprintln!("::endgroup::");
            }
            (None, _) if !self.quiet || mark != "✓" => eprintln!("[{}] {line}", clock()),
            (None, _) => {}
        }
    }

    pub fn done(self, text: impl AsRef<str>) {
        self.finish("✓", text.as_ref());
    }

    pub fn fail(self, text: impl AsRef<str>) {
        self.finish("✗", text.as_ref());
    }
}

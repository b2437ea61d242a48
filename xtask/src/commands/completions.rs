//! `cargo xtask completions SHELL`: tab completion for the toolkit's commands and flags.

use anyhow::Result;
use clap_complete::Shell;

/// Print a completion script for SHELL, for the command `xtask`: add `alias xtask='cargo
/// xtask'` to your shell, then e.g. for bash `cargo xtask completions bash >
/// ~/.local/share/bash-completion/completions/xtask`, for zsh into a folder of `$fpath` as
/// `_xtask`, for fish into `~/.config/fish/completions/xtask.fish`.
#[derive(clap::Args, Debug)]
pub struct Completions {
    pub shell: Shell,
}

impl Completions {
    /// `cli` is the toolkit's command line, whose commands and flags the script completes.
    pub fn run(self, mut cli: clap::Command) -> Result<()> {
        clap_complete::generate(self.shell, &mut cli, "xtask", &mut std::io::stdout());
        Ok(())
    }
}

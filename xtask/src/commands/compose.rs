//! `cargo xtask compose [--check]`: write (or check) the compose file generated from the
//! stack's `service.toml` files.

use anyhow::{bail, Result};

use crate::ctx::Ctx;
use crate::stack::compose_file::{render, FILE};

/// Regenerate compose/docker-compose.demo.yml from the services' service.toml files.
#[derive(clap::Args, Debug)]
pub struct Compose {
    /// Only check that the committed file is current; exit non-zero if not.
    #[arg(long)]
    pub check: bool,
}

impl Compose {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let path = ctx.root.join(FILE);
        let expected = render(&ctx.stack);
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current == expected {
            ctx.reporter.info(format!("{FILE} is up to date"));
            return Ok(());
        }
        if self.check {
            bail!(
                "{FILE} is out of date{}: run `cargo xtask compose` and commit it",
                differences(&current, ctx)
            );
        }
        ctx.runner.write_file(&path, expected)?;
        if !ctx.dry_run() {
            ctx.reporter.info(format!("wrote {FILE}"));
        }
        Ok(())
    }
}

/// Which services the file lacks or has in excess, when that is the difference.
fn differences(current: &str, ctx: &Ctx) -> String {
    let listed: Vec<String> = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(current)
        .ok()
        .and_then(|v| v.get("services")?.as_mapping().cloned())
        .map(|m| {
            m.keys()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let names: Vec<&str> = ctx.stack.services.iter().map(|s| s.name.as_str()).collect();
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !listed.iter().any(|l| l == n))
        .collect();
    let extra: Vec<&str> = listed
        .iter()
        .map(String::as_str)
        .filter(|l| !names.contains(l))
        .collect();
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("it lacks {}", missing.join(", ")));
    }
    if !extra.is_empty() {
        parts.push(format!("it still has {}", extra.join(", ")));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join("; "))
    }
}

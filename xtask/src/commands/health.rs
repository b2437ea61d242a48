//! `cargo xtask health`: every service's health answer; fails if any is not healthy.

use std::time::Duration;

use anyhow::{bail, Result};

use crate::ctx::Ctx;
use crate::util::http;

/// Print each service's /health answer; exit non-zero if any is not healthy.
#[derive(clap::Args, Debug)]
pub struct Health {
    /// Only these services (default: all).
    pub services: Vec<String>,
}

impl Health {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let mut unhealthy = Vec::new();
        for service in ctx.stack.select(&self.services)? {
            for endpoint in service.endpoints() {
                let url = ctx.endpoint_health_url(&endpoint);
                ctx.runner.plan(format!("GET {url}"));
                if ctx.dry_run() {
                    continue;
                }
                let label = service.label(&endpoint);
                match http::get(&url, Duration::from_secs(5)) {
                    Ok(answer) => {
                        println!("{label:<10} {} {}", answer.status, answer.body.trim());
                        if !http::is_healthy(&answer) {
                            unhealthy.push(label);
                        }
                    }
                    Err(e) => {
                        println!("{label:<10} unreachable: {e:#}");
                        unhealthy.push(label);
                    }
                }
            }
        }
        if !unhealthy.is_empty() {
            for name in &unhealthy {
                ctx.reporter.error(
                    &format!("{name} is not healthy"),
                    "see `cargo xtask doctor`",
                );
            }
            bail!(
                "not healthy: {}. Start the stack with `cargo xtask up`, or see `cargo xtask doctor`",
                unhealthy.join(", ")
            );
        }
        Ok(())
    }
}

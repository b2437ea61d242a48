//! `cargo xtask status`: the runbook's `docker ps` table, for either runtime.

use std::time::{Duration, SystemTime};

use anyhow::Result;
use serde::Serialize;

use crate::ctx::Ctx;
use crate::http;
use crate::runtime::Runtime;
use crate::stack::Service;

/// Show each service: state, health and ports.
#[derive(clap::Args, Debug)]
pub struct Status {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub service: String,
    pub container: String,
    /// `running` or `stopped`.
    pub state: String,
    /// `healthy`, `unhealthy` or `unknown` (not running).
    pub health: String,
    /// As `docker ps` words it: `Up 3 minutes (healthy)`.
    pub status: String,
    pub ports: String,
    pub url: String,
}

/// `5 seconds`, `3 minutes`, `2 hours`, as docker says it.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    let (n, unit) = match s {
        0..=1 => return "Less than a second".into(),
        2..=59 => (s, "second"),
        60..=3599 => (s / 60, "minute"),
        3600..=86_399 => (s / 3600, "hour"),
        _ => (s / 86_400, "day"),
    };
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

pub fn row(ctx: &Ctx, runtime: &dyn Runtime, service: &Service) -> Result<Row> {
    let state = runtime.state(ctx, service)?;
    let health = match (&state.health, state.running) {
        // Docker's own verdict, as `docker ps` shows it: healthy, unhealthy or starting.
        (Some(h), true) => h.clone(),
        (None, true) if http::healthy(&ctx.health_url(service), Duration::from_secs(2)) => {
            "healthy".into()
        }
        (None, true) => "unhealthy".into(),
        (_, false) => "unknown".into(),
    };
    let status = if state.running {
        let up = state
            .since
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .map_or_else(String::new, |d| format!(" {}", human(d)));
        format!("Up{up} ({health})")
    } else {
        "Not running".into()
    };
    Ok(Row {
        service: service.name.clone(),
        container: service.container.clone(),
        state: if state.running { "running" } else { "stopped" }.into(),
        health,
        status,
        ports: state.ports,
        url: ctx.url(service, ""),
    })
}

pub fn rows(ctx: &Ctx, runtime: &dyn Runtime) -> Result<Vec<Row>> {
    ctx.stack
        .services
        .iter()
        .map(|s| row(ctx, runtime, s))
        .collect()
}

/// A left-aligned text table.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("   ").trim_end().to_owned()
    };
    let mut out = vec![line(headers.iter().map(|h| h.to_string()).collect())];
    out.extend(rows.iter().map(|r| line(r.clone())));
    out.join("\n")
}

pub fn render(rows: &[Row]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.container.clone(),
                r.status.clone(),
                r.ports.clone(),
                r.url.clone(),
            ]
        })
        .collect();
    table(&["NAMES", "STATUS", "PORTS", "URL"], &cells)
}

/// The table as markdown, for the GitHub step summary.
pub fn markdown(rows: &[Row]) -> String {
    let mut md = String::from("| service | status | url |\n|---|---|---|\n");
    for r in rows {
        md.push_str(&format!("| {} | {} | {} |\n", r.container, r.status, r.url));
    }
    md
}

impl Status {
    pub fn run(self, ctx: &Ctx, runtime: &dyn Runtime) -> Result<()> {
        let rows = rows(ctx, runtime)?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&rows)?);
        } else {
            println!("{}", render(&rows));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_docker_ps() {
        assert_eq!(human(Duration::from_secs(1)), "Less than a second");
        assert_eq!(human(Duration::from_secs(45)), "45 seconds");
        assert_eq!(human(Duration::from_secs(60)), "1 minute");
        assert_eq!(human(Duration::from_secs(7300)), "2 hours");
    }

    #[test]
    fn tables_align_columns() {
        let t = table(&["A", "BB"], &[vec!["long".into(), "x".into()]]);
        assert_eq!(t, "A      BB\nlong   x");
    }
}

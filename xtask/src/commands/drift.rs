//! `cargo xtask drift`: each API's data drift, as its `/drift` measures it (the rows predicted
//! on since its model was loaded against the model's training data), one table per service.
//! Exits 1 when any service drifted, so that a schedule can retrain on it.

use anyhow::{bail, Result};

use crate::ctx::Ctx;
use crate::stack::Kind;
use crate::util::drift::Report;

/// Show each API's drift per feature (PSI, rows, verdict); exit 1 when any drifted.
///
/// A service can say `insufficient_data` (too few rows predicted on since its model was
/// loaded) or `no_reference` (its model was trained before profiles were stored): neither is
/// drift.
#[derive(clap::Args, Debug)]
pub struct Drift {
    /// Only these APIs (default: all).
    pub services: Vec<String>,
    /// PSI above which a feature has drifted [default: the service's own, 0.25].
    #[arg(long, value_name = "PSI", value_parser = positive)]
    pub threshold: Option<f64>,
    /// Print the reports as a JSON list instead of tables.
    #[arg(long)]
    pub json: bool,
    /// The API's base URL when it is not this machine's stack (e.g. a deployed API); needs
    /// exactly one service.
    #[arg(long, value_name = "URL", env = "XTASK_API_URL")]
    pub url: Option<String>,
}

fn positive(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => Err(format!("{text} is not a positive PSI (e.g. 0.25)")),
    }
}

impl Drift {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let apis: Vec<_> = ctx
            .stack
            .select(&self.services)?
            .into_iter()
            .filter(|s| s.kind == Kind::Api)
            .collect();
        if apis.is_empty() {
            bail!(
                "no API among {}: drift is measured by the APIs",
                self.services.join(", ")
            );
        }
        if self.url.is_some() && apis.len() != 1 {
            bail!("--url names one API's address: name that one service too (e.g. `cargo xtask drift bankchurn --url URL`)");
        }
        let mut reports = Vec::new();
        let mut failed = Vec::new();
        for api in apis {
            let url = match &self.url {
                Some(base) => format!("{}/drift", base.trim_end_matches('/')),
                None => ctx.url(api, "/drift"),
            };
            ctx.runner.plan(format!("GET {url}"));
            if ctx.dry_run() {
                continue;
            }
            match Report::fetch(&api.name, &url, self.threshold) {
                Ok(report) => reports.push(report),
                Err(e) => {
                    ctx.reporter
                        .error(&format!("{}: no drift report", api.name), &format!("{e:#}"));
                    failed.push(format!("{}: {e:#}", api.name));
                }
            }
        }
        if self.json {
            let bodies: Vec<_> = reports.iter().map(|r| r.body.clone()).collect();
            println!("{}", serde_json::to_string_pretty(&bodies)?);
        } else {
            for report in &reports {
                println!("{}\n", report.text());
            }
        }
        if !reports.is_empty() {
            let markdown: String = reports.iter().map(|r| r.markdown() + "\n").collect();
            ctx.reporter
                .summary(&format!("## Data drift\n\n{markdown}"));
        }
        if !failed.is_empty() {
            bail!(
                "drift could not be measured: {}. Start the stack (`cargo xtask up`) or check the URL",
                failed.join("; ")
            );
        }
        let drifted: Vec<&str> = reports
            .iter()
            .filter(|r| r.drifted())
            .map(|r| r.service.as_str())
            .collect();
        if !drifted.is_empty() {
            bail!(
                "drifted: {}; retrain with `cargo xtask retrain SERVICE --if-drifted` (or --data-path NEW.csv)",
                drifted.join(", ")
            );
        }
        Ok(())
    }
}

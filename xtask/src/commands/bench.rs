//! `cargo xtask bench`: the serving path's numbers, measured on this machine. For each API: train
//! time on its default dataset size, model load time, idle resident memory; then `/predict`
//! throughput and latency percentiles under load from `wrk` at a given concurrency.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::build::binaries;
use crate::ctx::Ctx;
use crate::report;
use crate::runner::Step;
use crate::stack::Service;
use crate::training::{self, Tracking, DEFAULT_SEED};

/// Measure train time, model load time, idle memory, and /predict under load (needs `wrk`).
#[derive(clap::Args, Debug)]
pub struct Bench {
    /// The API to load-test [default: the first API of the stack].
    #[arg(long)]
    pub service: Option<String>,
    /// Concurrent connections.
    #[arg(long, default_value_t = 32)]
    pub connections: u32,
    /// Seconds of load.
    #[arg(long, default_value_t = 10)]
    pub seconds: u32,
}

/// What wrk measured.
struct Load {
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

/// `1.23ms`, `850.00us`, `1.01s` in milliseconds.
fn millis(text: &str) -> Option<f64> {
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * factor)
}

fn parse_wrk(output: &str) -> Option<Load> {
    let percentile = |p: &str| {
        output
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(p))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(millis)
    };
    let number_after = |prefix: &str| {
        output
            .lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<f64>().ok())
    };
    Some(Load {
        requests_per_second: number_after("Requests/sec:")?,
        p50_ms: percentile("50%")?,
        p99_ms: percentile("99%")?,
        errors: number_after("Non-2xx or 3xx responses:").unwrap_or(0.0) as u64
            + output
                .lines()
                .find(|l| l.contains("Socket errors"))
                .map_or(0, |_| 1),
    })
}

fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

struct Measured {
    name: String,
    rows: usize,
    train: Duration,
    load_ms: String,
    idle_mib: f64,
}

/// The `model loaded` time a service logged (as JSON lines).
fn model_load_time(log: &Path) -> String {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "model loaded")
        .and_then(|v| v["millis"].as_u64())
        .map_or_else(|| "?".into(), |m| format!("{m} ms"))
}

impl Bench {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let target = match &self.service {
            Some(name) => ctx.stack.get(name)?,
            None => ctx.stack.apis().next().context("the stack has no API")?,
        };
        anyhow::ensure!(target.is_api(), "{} is not a model API", target.name);
        let wrk = which::which("wrk")
            .context("the load generator `wrk` is not installed: `apt-get install wrk`")?;
        let apis: Vec<&Service> = ctx.stack.apis().collect();
        binaries::build(ctx, &apis)?;
        if ctx.dry_run() {
            ctx.runner
                .plan("train, serve and load-test each API in a temporary folder");
            return Ok(());
        }
        let work = tempfile::tempdir()?;
        let mut measured = Vec::new();
        let mut load = None;
        for api in &apis {
            let dir = work.path().join(&api.name);
            let load_test = (api.name == target.name).then_some(wrk.as_path());
            let (m, l) = self.measure(ctx, api, &dir, load_test)?;
            measured.push(m);
            load = load.or(l);
        }
        let rows: Vec<Vec<String>> = measured
            .iter()
            .map(|m| {
                vec![
                    m.name.clone(),
                    m.rows.to_string(),
                    format!("{:.2} s", m.train.as_secs_f64()),
                    m.load_ms.clone(),
                    format!("{:.1} MiB", m.idle_mib),
                ]
            })
            .collect();
        println!(
            "{}",
            report::table(
                &["SERVICE", "ROWS", "TRAIN", "MODEL LOAD", "IDLE RSS"],
                &rows
            )
        );
        let load = load.context("no load test ran")?;
        println!(
            "\n{} POST {} at {} connections for {}s: {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
            target.name,
            target.smoke.as_ref().map_or("", |s| s.path.as_str()),
            self.connections,
            self.seconds,
            load.requests_per_second,
            load.p50_ms,
            load.p99_ms,
            load.errors
        );
        if load.errors > 0 {
            bail!("{} requests failed under load", load.errors);
        }
        Ok(())
    }

    /// Trains `api` in `dir`, serves it, and measures it idle; then loads it with `wrk` when
    /// given one.
    fn measure(
        &self,
        ctx: &Ctx,
        api: &Service,
        dir: &Path,
        wrk: Option<&Path>,
    ) -> Result<(Measured, Option<Load>)> {
        let data = dir.join("data.csv");
        let models = dir.join("model");
        ctx.runner
            .run(&training::generate_data_step(ctx, api, &data))?;
        let started = Instant::now();
        ctx.runner.run(&training::host_train_step(
            ctx,
            api,
            &data,
            &models,
            DEFAULT_SEED,
            &Tracking::Off,
            &[],
        ))?;
        let train = started.elapsed();
        // Data lines, without the header.
        let rows = std::fs::read_to_string(&data)?
            .lines()
            .count()
            .saturating_sub(1);

        let log = dir.join("serve.log");
        let (child, url) =
            binaries::serve_on_free_port(ctx, api, &models, &log)?.context("a server process")?;
        let measured = (|| -> Result<(f64, Option<Load>)> {
            std::thread::sleep(Duration::from_millis(500));
            let idle_mib = rss_mib(child.pid()).unwrap_or(f64::NAN);
            let load = wrk
                .map(|wrk| self.load_test(ctx, api, &url, wrk, dir))
                .transpose()?;
            Ok((idle_mib, load))
        })();
        ctx.runner
            .stop_group(child.pid(), Duration::from_secs(5), Some(&child))?;
        let (idle_mib, load) = measured?;
        let measured = Measured {
            name: api.name.clone(),
            rows,
            train,
            load_ms: model_load_time(&log),
            idle_mib,
        };
        Ok((measured, load))
    }

    /// Posts the API's smoke request from `wrk` for the configured time.
    fn load_test(
        &self,
        ctx: &Ctx,
        api: &Service,
        url: &str,
        wrk: &Path,
        dir: &Path,
    ) -> Result<Load> {
        let smoke = api.smoke.as_ref().context("the API has a smoke request")?;
        let script = dir.join("post.lua");
        std::fs::write(
            &script,
            format!(
                "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = [[{}]]\n",
                smoke.request
            ),
        )?;
        let title = format!(
            "load {} for {}s at {} connections",
            api.name, self.seconds, self.connections
        );
        let output = ctx.reporter.run_task(title, |_| {
            ctx.runner.run(
                &Step::new(wrk.to_string_lossy())
                    .args(["--threads", "2", "--latency"])
                    .args(["--connections", &self.connections.to_string()])
                    .args(["--duration", &format!("{}s", self.seconds)])
                    .arg("--script")
                    .arg(&script)
                    .arg(format!("{url}{}", smoke.path)),
            )
        })?;
        parse_wrk(&output).with_context(|| format!("cannot read wrk's report:\n{output}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrks_report() {
        let report = "Running 10s test @ http://127.0.0.1:1/predict
  2 threads and 32 connections
  Latency Distribution
     50%  850.00us
     75%    1.10ms
     90%    1.52ms
     99%    3.21ms
  123456 requests in 10.00s, 50.00MB read
Requests/sec:  12345.60
Transfer/sec:      5.00MB
";
        let load = parse_wrk(report).unwrap();
        assert_eq!(load.requests_per_second, 12345.6);
        assert!((load.p50_ms - 0.85).abs() < 1e-9);
        assert_eq!(load.p99_ms, 3.21);
        assert_eq!(load.errors, 0);
    }
}

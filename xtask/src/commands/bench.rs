//! `cargo xtask bench`: the serving path's numbers, measured on this machine. For each API: train
//! time on its default dataset size, model load time, idle resident memory; then `/predict`
//! throughput and latency percentiles under load from `wrk` at a given concurrency, against
//! its floor: the same binary's hidden `serve-floor`, the same HTTP stack answering a constant
//! body of the same size with nothing of ours in the way. Service and floor take the same load
//! in alternated rounds, so drift on a shared machine hits both; the ratio of their mean
//! throughputs is what the serving path costs. A third contender in the same rounds, the same
//! service with `--drift-counting false`, prices what counting rows for `/drift` costs.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::build::binaries;
use crate::ctx::Ctx;
use crate::runner::{Background, Step};
use crate::runtime::training;
use crate::stack::Service;
use crate::util::{http, poll, table};

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
    /// Rounds of load on the service and on its floor, alternated.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
}

/// What wrk measured.
#[derive(Debug, Clone)]
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

/// Resident memory once it stops changing: what the process holds when idle.
fn settled_rss_mib(pid: u32) -> Option<f64> {
    let mut last = rss_mib(pid)?;
    poll::until(Duration::from_secs(5), Duration::from_millis(50), || {
        let now = rss_mib(pid)?;
        let settled = now == last;
        last = now;
        settled.then_some(now)
    })
    .or(Some(last))
}

/// The servers one load test compares, in the order of the table's columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Contender {
    /// The service as it runs in the stack.
    Service,
    /// The same service with `--drift-counting false`.
    NoDriftCounting,
    /// The same HTTP stack answering a constant body.
    Floor,
}

impl Contender {
    const ALL: [Contender; 3] = [Self::Service, Self::NoDriftCounting, Self::Floor];

    /// What the progress lines call it, for the API `api`.
    fn label(self, api: &str) -> String {
        match self {
            Self::Service => api.to_owned(),
            Self::NoDriftCounting => format!("{api} without drift counting"),
            Self::Floor => "its floor".to_owned(),
        }
    }
}

/// Every contender under the same load, round by round.
struct Comparison {
    /// One list of rounds per contender, in [`Contender::ALL`]'s order.
    loads: [Vec<Load>; 3],
    /// The size of the service's answer, which the floor's answer copies.
    body_bytes: usize,
}

fn mean_rps(loads: &[Load]) -> f64 {
    loads.iter().map(|l| l.requests_per_second).sum::<f64>() / loads.len().max(1) as f64
}

/// The contenders in the order round `round` loads them: each round starts one further along,
/// and every other round runs backwards, so that no contender always follows the same one
/// and a drift in the machine's load weighs on all alike.
fn round_order(round: u32) -> [Contender; 3] {
    let mut order = Contender::ALL;
    order.rotate_left(round as usize % Contender::ALL.len());
    if round.is_multiple_of(2) {
        order.reverse();
    }
    order
}

impl Comparison {
    fn of(&self, contender: Contender) -> &[Load] {
        &self.loads[contender as usize]
    }

    /// `contender`'s mean throughput as a share of `base`'s.
    fn ratio(&self, contender: Contender, base: Contender) -> f64 {
        mean_rps(self.of(contender)) / mean_rps(self.of(base))
    }

    fn errors(&self) -> u64 {
        self.loads.iter().flatten().map(|l| l.errors).sum()
    }
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
            table::text(
                &["SERVICE", "ROWS", "TRAIN", "MODEL LOAD", "IDLE RSS"],
                &rows
            )
        );
        let comparison = load.context("no load test ran")?;
        let path = target.smoke.as_ref().map_or("", |s| s.path.as_str());
        println!(
            "\n{} POST {path} at {} connections, {}s per round ({}-byte answers):",
            target.name, self.connections, self.seconds, comparison.body_bytes
        );
        let rps = |loads: &[Load], i: usize| format!("{:.0}", loads[i].requests_per_second);
        let [service, unmetered, floor] = &comparison.loads;
        let rows: Vec<Vec<String>> = (0..service.len())
            .map(|i| {
                vec![
                    (i + 1).to_string(),
                    rps(service, i),
                    format!("{:.2} ms", service[i].p50_ms),
                    format!("{:.2} ms", service[i].p99_ms),
                    rps(unmetered, i),
                    rps(floor, i),
                    format!("{:.2} ms", floor[i].p50_ms),
                    format!(
                        "{:.2}",
                        service[i].requests_per_second / floor[i].requests_per_second
                    ),
                ]
            })
            .collect();
        println!(
            "{}",
            table::text(
                &[
                    "ROUND",
                    "REQUESTS/S",
                    "P50",
                    "P99",
                    "NO DRIFT COUNTING",
                    "FLOOR REQUESTS/S",
                    "FLOOR P50",
                    "RATIO"
                ],
                &rows
            )
        );
        println!(
            "\n{}: {:.0} requests/s against a floor of {:.0} (the same stack answering a constant body): ratio {:.2}",
            target.name,
            mean_rps(service),
            mean_rps(floor),
            comparison.ratio(Contender::Service, Contender::Floor)
        );
        let counted = comparison.ratio(Contender::Service, Contender::NoDriftCounting);
        println!(
            "drift counting: {:.0} requests/s with it, {:.0} without: {:.1}% {}",
            mean_rps(service),
            mean_rps(unmetered),
            (1.0 - counted).abs() * 100.0,
            if counted <= 1.0 {
                "slower"
            } else {
                "faster (noise)"
            }
        );
        let errors = comparison.errors();
        if errors > 0 {
            bail!("{errors} requests failed under load");
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
    ) -> Result<(Measured, Option<Comparison>)> {
        let started = Instant::now();
        let (data, models) = training::train_throwaway(ctx, api, dir)?;
        let train = started.elapsed();
        // Data lines, without the header.
        let rows = std::fs::read_to_string(&data)?
            .lines()
            .count()
            .saturating_sub(1);

        let log = dir.join("serve.log");
        let (child, url) =
            binaries::serve_on_free_port(ctx, api, &models, &log)?.context("a server process")?;
        let measured = (|| -> Result<(f64, Option<Comparison>)> {
            let idle_mib = settled_rss_mib(child.pid()).unwrap_or(f64::NAN);
            let load = wrk
                .map(|wrk| self.under_load(ctx, api, &models, &url, wrk, dir))
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

    /// Loads the service at `url`, a second copy of it serving `models` without drift
    /// counting, and its floor, in alternated rounds, with the same script.
    fn under_load(
        &self,
        ctx: &Ctx,
        api: &Service,
        models: &Path,
        url: &str,
        wrk: &Path,
        dir: &Path,
    ) -> Result<Comparison> {
        let smoke = api.smoke.as_ref().context("the API has a smoke request")?;
        let answer = http::post_json(
            &format!("{url}{}", smoke.path),
            &smoke.request,
            Duration::from_secs(10),
        )?;
        anyhow::ensure!(
            answer.status == 200,
            "{} answered its smoke request with {}: {}",
            api.name,
            answer.status,
            answer.body
        );
        let body_bytes = answer.body.len();
        let script = dir.join("post.lua");
        std::fs::write(
            &script,
            format!(
                "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = [[{}]]\n",
                smoke.request
            ),
        )?;
        let (unmetered, unmetered_url) = binaries::spawn_on_free_port(
            ctx,
            &Contender::NoDriftCounting.label(&api.name),
            &api.health_path,
            &dir.join("serve-no-drift-counting.log"),
            |port| binaries::serve_step(ctx, api, port, models).args(["--drift-counting", "false"]),
        )?
        .context("a server process without drift counting")?;
        let loads = (|| -> Result<[Vec<Load>; 3]> {
            let (floor, floor_url) =
                self.start_floor(ctx, api, body_bytes, &dir.join("floor.log"))?;
            let bases = [url, unmetered_url.as_str(), floor_url.as_str()];
            let loads = self.alternate(ctx, api, bases, wrk, &script);
            ctx.runner
                .stop_group(floor.pid(), Duration::from_secs(5), Some(&floor))?;
            loads
        })();
        ctx.runner
            .stop_group(unmetered.pid(), Duration::from_secs(5), Some(&unmetered))?;
        Ok(Comparison {
            loads: loads?,
            body_bytes,
        })
    }

    /// Loads the contenders at `bases` (in [`Contender::ALL`]'s order) with `script`, once each
    /// to warm up, then in [`round_order`] for every round.
    fn alternate(
        &self,
        ctx: &Ctx,
        api: &Service,
        bases: [&str; 3],
        wrk: &Path,
        script: &Path,
    ) -> Result<[Vec<Load>; 3]> {
        let smoke_path = api.smoke.as_ref().map_or("", |s| s.path.as_str());
        let load = |contender: Contender, round: u32| {
            let target = format!("{}{smoke_path}", bases[contender as usize]);
            self.load_test(
                ctx,
                &contender.label(&api.name),
                round,
                &target,
                wrk,
                script,
            )
        };
        // A warm-up of each, not counted: the first seconds of load pay for page faults,
        // connection set-up and the CPU's frequency ramp.
        for contender in Contender::ALL {
            load(contender, 0)?;
        }
        let mut loads: [Vec<Load>; 3] = Default::default();
        for round in 1..=self.rounds {
            for contender in round_order(round) {
                loads[contender as usize].push(load(contender, round)?);
            }
        }
        Ok(loads)
    }

    /// Starts `api`'s `serve-floor` on a free loopback port, answering `body_bytes`-byte
    /// bodies, and waits until it answers.
    fn start_floor(
        &self,
        ctx: &Ctx,
        api: &Service,
        body_bytes: usize,
        log: &Path,
    ) -> Result<(Background, String)> {
        let what = format!("{}'s floor server", api.name);
        binaries::spawn_on_free_port(ctx, &what, "/health", log, |port| {
            Step::new(binaries::path(ctx, api).to_string_lossy())
                .args(["serve-floor", "--host", "127.0.0.1", "--port"])
                .arg(port.to_string())
                .arg("--body-bytes")
                .arg(body_bytes.to_string())
        })?
        .context("a floor server process")
    }

    /// Posts the body of `script` to `url` from `wrk` for the configured time.
    fn load_test(
        &self,
        ctx: &Ctx,
        what: &str,
        round: u32,
        url: &str,
        wrk: &Path,
        script: &Path,
    ) -> Result<Load> {
        let round = if round == 0 {
            "warm-up".to_owned()
        } else {
            format!("round {round}/{}", self.rounds)
        };
        let title = format!(
            "{round}: load {what} for {}s at {} connections",
            self.seconds, self.connections
        );
        let output = ctx.reporter.run_task(title, |_| {
            ctx.runner.run(
                &Step::new(wrk.to_string_lossy())
                    .args(["--threads", "2", "--latency"])
                    .args(["--connections", &self.connections.to_string()])
                    .args(["--duration", &format!("{}s", self.seconds)])
                    .arg("--script")
                    .arg(script)
                    .arg(url),
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

    #[test]
    fn rounds_load_every_contender_once_and_none_always_first_or_after_the_same_one() {
        let orders: Vec<[Contender; 3]> = (1..=6).map(round_order).collect();
        for order in &orders {
            for contender in Contender::ALL {
                assert_eq!(order.iter().filter(|&&c| c == contender).count(), 1);
            }
        }
        for contender in Contender::ALL {
            assert!(
                orders.iter().any(|o| o[0] == contender),
                "{contender:?} never first"
            );
            let followers: std::collections::HashSet<_> = orders
                .iter()
                .filter_map(|o| {
                    o.iter()
                        .position(|&c| c == contender)
                        .filter(|&i| i > 0)
                        .map(|i| o[i - 1])
                })
                .collect();
            assert!(
                followers.len() > 1,
                "{contender:?} always follows the same one"
            );
        }
    }
}

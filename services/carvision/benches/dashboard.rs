//! How fast the dashboard's pages render and how much memory it takes, on the full-size
//! synthetic `vehicles_us.csv` (51,525 rows). Prints numbers; asserts nothing about time.
//!
//! `cargo bench -p carvision --bench dashboard` (`-- --rows N --runs N` to change the size).
//!
//! 1. In-process: each page through the dashboard's router (the handler, its middleware and
//!    the HTML), as the real server runs it, minus the socket.
//! 2. The real binary (`carvision serve`), API only and then with `--dashboard-port`: each
//!    page over HTTP, and the resident memory of each process.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use carvision::CarVision;
use serving::axum::body::Body;
use serving::axum::http::Request;
use serving::dashboard::Dashboard;
use serving::http::AppState;
use serving_testkit as testkit;
use tower::ServiceExt;

const PAGES: [(&str, &str); 8] = [
    ("overview", "/"),
    ("market", "/market"),
    (
        "market, filtered",
        "/market?min_price=5000&max_price=30000&from_year=2008&to_year=2016&brand=ford&brand=toyota&brand=chevrolet",
    ),
    ("model", "/model"),
    ("predictor, empty", "/predict"),
    (
        "predictor, priced",
        "/predict?model_year=2013&model=toyota+camry&condition=like+new&cylinders=4&fuel=gas&odometer=64000&transmission=automatic&type=sedan&paint_color=silver&drive=fwd",
    ),
    ("predictor, bad value", "/predict?model_year=1800&model=ford+f-150"),
    ("health", "/health"),
];

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(default)
}

/// Resident and peak resident memory of a process, in MiB, from /proc.
fn memory(pid: &str) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// [`memory`] once the resident size has stopped changing between two looks.
fn settled_memory(pid: &str) -> (f64, f64) {
    let mut last = memory(pid);
    testkit::poll_until(Duration::from_secs(5), || {
        let now = memory(pid);
        let settled = now.0 == last.0;
        last = now;
        settled.then_some(now)
    })
    .unwrap_or(last)
}

fn summary(mut times: Vec<Duration>) -> String {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    format!(
        "{:>8.2} {:>8.2} {:>8.2} {:>8.2}",
        ms(times[0]),
        ms(at(0.5)),
        ms(at(0.95)),
        ms(times[times.len() - 1])
    )
}

fn main() {
    let rows = arg("--rows", <CarVision as serving::Service>::DEFAULT_ROWS);
    let runs = arg("--runs", 50).max(2);
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let metrics = testkit::train_into::<CarVision>(dir.path(), rows, 42);
    println!(
        "data: {rows} rows generated and trained in {:.1} s (R² {:.3})",
        started.elapsed().as_secs_f64(),
        metrics["r2"].as_f64().unwrap_or(f64::NAN)
    );
    let model_dir = dir.path().join("model");

    let (rss_before, _) = memory("self");
    let started = Instant::now();
    let model = serving::model::load::<CarVision>(&model_dir)
        .unwrap()
        .unwrap();
    let model_load = started.elapsed();
    let (rss_model, _) = memory("self");
    let prepared = <CarVision as serving::Service>::Dashboard::load(&model).unwrap();
    let (rss_dashboard, _) = memory("self");
    drop(prepared);
    let mut loads: Vec<Duration> = (0..3)
        .map(|_| {
            let started = Instant::now();
            let _ = <CarVision as serving::Service>::Dashboard::load(&model).unwrap();
            started.elapsed()
        })
        .collect();
    loads.sort();
    let dashboard_load = loads[1];
    // Where the dashboard's load goes.
    let csv = model
        .read_version_file(carvision::dashboard::DATA_FILE)
        .unwrap();
    let started = Instant::now();
    let (market, kept) = carvision::dashboard::Market::read(csv).unwrap();
    let reading = started.elapsed();
    let started = Instant::now();
    let _ = carvision::dashboard::Evaluation::compute(&model, &market, &kept);
    let evaluating = started.elapsed();
    drop((market, kept));
    let listing = <CarVision as serving::Service>::example_request();
    let mut explaining: Vec<Duration> = (0..20)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(carvision::explain(&model.model, &listing));
            started.elapsed()
        })
        .collect();
    explaining.sort();
    println!(
        "load: model {:.0} ms (+{:.1} MiB resident), dashboard {:.0} ms (median of 3; +{:.1} MiB resident: {} listings; reading the CSV {:.0} ms, the held-out predictions {:.0} ms)\nexplaining one prediction (Shapley values): {:.2} ms",
        model_load.as_secs_f64() * 1e3,
        rss_model - rss_before,
        dashboard_load.as_secs_f64() * 1e3,
        rss_dashboard - rss_model,
        metrics["rows"].as_u64().unwrap_or(0) - metrics["rows_outside_price_band"].as_u64().unwrap_or(0),
        reading.as_secs_f64() * 1e3,
        evaluating.as_secs_f64() * 1e3,
        explaining[10].as_secs_f64() * 1e3,
    );

    let pages = serving::dashboard::router(AppState::<CarVision>::with_dashboard(Some(model)));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("\nin-process, {runs} runs each (ms):");
    println!(
        "{:<22} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "page", "min", "median", "p95", "max", "bytes"
    );
    for (name, uri) in PAGES {
        let mut times = Vec::with_capacity(runs);
        let mut bytes = 0;
        for run in 0..runs + 3 {
            let request = Request::get(uri).body(Body::empty()).unwrap();
            let started = Instant::now();
            let response = runtime.block_on(pages.clone().oneshot(request)).unwrap();
            let body = runtime
                .block_on(http_body_util_collect(response.into_body()))
                .len();
            // The first runs warm caches and allocators.
            if run >= 3 {
                times.push(started.elapsed());
            }
            bytes = body;
        }
        println!("{name:<22} {} {bytes:>9}", summary(times));
    }

    real_binary(&model_dir, runs);
}

async fn http_body_util_collect(body: Body) -> Vec<u8> {
    serving::axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap()
        .to_vec()
}

/// The release binary on real sockets: page times over HTTP and each process's memory.
fn real_binary(model_dir: &Path, runs: usize) {
    let binary = env!("CARGO_BIN_EXE_carvision");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let serve = |dashboard: Option<u16>| {
        let port = testkit::free_port();
        let mut command = testkit::serve_command(Path::new(binary), port, model_dir);
        if let Some(d) = dashboard {
            command.args(["--dashboard-port", &d.to_string()]);
        }
        let child = command.spawn().unwrap();
        let health = format!("http://127.0.0.1:{}/health", dashboard.unwrap_or(port));
        testkit::wait_until("the server healthy", Duration::from_secs(60), || {
            agent
                .get(&health)
                .call()
                .ok()
                .filter(|r| r.status().as_u16() == 200)
        });
        child
    };
    let stop = |mut child: std::process::Child| {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
    };

    let api_only = serve(None);
    let (api_rss, _) = settled_memory(&api_only.id().to_string());
    stop(api_only);

    let dashboard_port = testkit::free_port();
    let both = serve(Some(dashboard_port));
    let pid = both.id().to_string();
    let (idle_rss, _) = settled_memory(&pid);
    println!("\nthe binary over HTTP, {runs} runs each (ms):");
    println!(
        "{:<22} {:>8} {:>8} {:>8} {:>8}",
        "page", "min", "median", "p95", "max"
    );
    for (name, uri) in PAGES {
        let url = format!("http://127.0.0.1:{dashboard_port}{uri}");
        let mut times = Vec::with_capacity(runs);
        for run in 0..runs + 3 {
            let started = Instant::now();
            let mut answer = agent.get(&url).call().unwrap();
            let _ = answer
                .body_mut()
                .with_config()
                .limit(16 << 20)
                .read_to_vec()
                .unwrap();
            if run >= 3 {
                times.push(started.elapsed());
            }
        }
        println!("{name:<22} {}", summary(times));
    }
    let (busy_rss, peak) = memory(&pid);
    stop(both);
    println!(
        "\nresident memory: API only {api_rss:.1} MiB; with the dashboard {idle_rss:.1} MiB idle, {busy_rss:.1} MiB after the pages (peak {peak:.1} MiB)"
    );
}

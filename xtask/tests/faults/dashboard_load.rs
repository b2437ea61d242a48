//! Dashboard load beside the API it shares a process with: many clients on CarVision's
//! predictor and market pages while `/health` and `/predict` are timed. Before the dashboard
//! drew its pages on threads of its own, 64 such clients took `/health` from 0.5 ms to
//! 100-200 ms and `/predict` to 110-360 ms. Past the pages in flight the dashboard answers a
//! 503 page with `Retry-After: 1`, which these clients heed.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::http::{read_response, request_bytes};
use crate::target::{service, Target};

/// Dashboard clients at once, each asking for its next page as soon as it has the last.
const CLIENTS: usize = 64;
/// How long the API is timed under that load.
const SPAN: Duration = Duration::from_secs(6);
/// What the API's p99 may reach under the load: a hang guard far above its unloaded
/// latency (under a millisecond) and below what the shared threads gave (100-360 ms).
const P99_BOUND: Duration = Duration::from_millis(60);
const PREDICTOR: &str = "/predict?model_year=2013&model=toyota+camry&condition=like+new&cylinders=4&fuel=gas&odometer=64000&transmission=automatic&type=sedan&paint_color=silver&drive=fwd";

pub fn case(target: &Target) -> String {
    let api = target.addr("carvision");
    let dashboard_port = *service("carvision")
        .ports
        .get(1)
        .expect("CarVision's service.toml publishes a dashboard port");
    let dashboard = SocketAddr::from(([127, 0, 0, 1], target.stack.port(dashboard_port)));
    let (path, body) = service("carvision").smoke.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let (pages, shed, failed) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (stop, pages, shed, failed) =
                (stop.clone(), pages.clone(), shed.clone(), failed.clone());
            std::thread::spawn(move || {
                let page = if i % 2 == 0 { PREDICTOR } else { "/market" };
                let ask = format!("GET {page} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
                let mut stream: Option<TcpStream> = None;
                while !stop.load(Ordering::Relaxed) {
                    let s = match stream.take() {
                        Some(s) => s,
                        None => {
                            match TcpStream::connect_timeout(&dashboard, Duration::from_secs(2)) {
                                Ok(s) => s,
                                Err(_) => {
                                    failed.fetch_add(1, Ordering::Relaxed);
                                    continue;
                                }
                            }
                        }
                    };
                    let mut s = s;
                    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                    let answer = s
                        .write_all(ask.as_bytes())
                        .and_then(|()| read_response(&mut s));
                    match answer {
                        Ok((200, _, closes)) => {
                            pages.fetch_add(1, Ordering::Relaxed);
                            stream = (!closes).then_some(s);
                        }
                        Ok((503, page, closes)) => {
                            assert!(
                                String::from_utf8_lossy(&page).contains("try again"),
                                "a 503 that is not the busy page"
                            );
                            shed.fetch_add(1, Ordering::Relaxed);
                            stream = (!closes).then_some(s);
                            // As its Retry-After says, as a well-behaved client does.
                            std::thread::sleep(Duration::from_secs(1));
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();

    // The API on one keep-alive connection, as a client beside the dashboard's would be.
    let mut conn = TcpStream::connect_timeout(&api, Duration::from_secs(2)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.set_nodelay(true).unwrap();
    let health_ask = request_bytes("GET", "/health", None, false);
    let predict_ask = request_bytes("POST", &path, Some(&body), false);
    let (mut health, mut predict) = (Vec::new(), Vec::new());
    let mut time = |ask: &[u8], into: &mut Vec<Duration>| {
        let asked = Instant::now();
        conn.write_all(ask).unwrap();
        let (status, body, _) = read_response(&mut conn).expect("an answer from the API");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        into.push(asked.elapsed());
    };
    // Under way: the dashboard is drawing pages.
    crate::common::wait_for(
        "the dashboard answering the load",
        Duration::from_secs(30),
        Duration::from_millis(10),
        || (pages.load(Ordering::Relaxed) >= CLIENTS).then_some(()),
    );
    let until = Instant::now() + SPAN;
    while Instant::now() < until {
        time(&health_ask, &mut health);
        time(&predict_ask, &mut predict);
        // A client asking now and then, not a second load.
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let (pages, shed, failed) = (
        pages.load(Ordering::Relaxed),
        shed.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    let (health_p99, predict_p99) = (p99(&mut health), p99(&mut predict));
    eprintln!(
        "MEASURED: [{}] CarVision under {CLIENTS} dashboard clients for {} s: /health p99 {:.1} ms, /predict p99 {:.1} ms ({} each); dashboard {pages} pages, {shed} shed with 503, {failed} failed",
        target.name(),
        SPAN.as_secs(),
        health_p99.as_secs_f64() * 1e3,
        predict_p99.as_secs_f64() * 1e3,
        health.len(),
    );
    assert!(
        health_p99 < P99_BOUND && predict_p99 < P99_BOUND,
        "the dashboard's load slows the API: /health p99 {health_p99:?}, /predict p99 {predict_p99:?}"
    );
    assert!(pages > 0, "the dashboard drew no page under the load");
    assert!(
        shed > 0,
        "{CLIENTS} clients and none refused: is the limit on pages in flight gone?"
    );
    assert_eq!(failed, 0, "dashboard requests failed outright");
    format!(
        "{CLIENTS} dashboard clients: API p99 /health {:.1} ms, /predict {:.1} ms; {pages} pages, {shed} shed",
        health_p99.as_secs_f64() * 1e3,
        predict_p99.as_secs_f64() * 1e3
    )
}

fn p99(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples
        .get((samples.len() * 99 / 100).min(samples.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

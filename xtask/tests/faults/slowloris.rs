//! A slowloris against an API: many connections, each trickling a header byte now and then,
//! while `/health` must still answer within a second.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common::wait_for;
use crate::http::{health, predict_ok};
use crate::target::Target;

const SLOWLORIS_CONNECTIONS: usize = 1000;

pub fn case(target: &Target, api: &str) -> String {
    let report = slowloris(
        target.addr(api),
        SLOWLORIS_CONNECTIONS,
        Duration::from_secs(12),
    );
    eprintln!(
        "MEASURED: [{}] /health of {api} under {SLOWLORIS_CONNECTIONS} slowloris connections: {} probes, median {:.1} ms, worst {:.1} ms; the server closed {} slow connections (reopened)",
        target.name(),
        report.probes,
        report.median.as_secs_f64() * 1e3,
        report.worst.as_secs_f64() * 1e3,
        report.reopened
    );
    assert!(
        report.failures.is_empty(),
        "/health failed under the slowloris: {:?}",
        report.failures
    );
    assert!(
        report.worst < Duration::from_secs(1),
        "/health took {:?}",
        report.worst
    );
    assert!(
        predict_ok(target.addr(api), api),
        "{api} does not predict after the slowloris"
    );
    format!(
        "{} conns; health worst {:.1} ms, median {:.1} ms over {} probes; {} cut by the server",
        SLOWLORIS_CONNECTIONS,
        report.worst.as_secs_f64() * 1e3,
        report.median.as_secs_f64() * 1e3,
        report.probes,
        report.reopened
    )
}

struct SlowlorisReport {
    probes: usize,
    worst: Duration,
    median: Duration,
    failures: Vec<String>,
    /// Slow connections the server closed (its header deadline) and that were opened again.
    reopened: usize,
}

/// Holds `connections` half-sent requests open against `addr` for `span`, each sending one more
/// header byte every 2 s and reconnecting when the server closes it, while `/health` is asked
/// every 250 ms on a fresh connection.
fn slowloris(addr: SocketAddr, connections: usize, span: Duration) -> SlowlorisReport {
    const THREADS: usize = 8;
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicUsize::new(0));
    let open = move |_: usize| -> Option<TcpStream> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        s.set_write_timeout(Some(Duration::from_secs(1))).ok()?;
        s.write_all(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            .ok()?;
        Some(s)
    };
    let workers: Vec<JoinHandle<usize>> = (0..THREADS)
        .map(|t| {
            let (stop, ready) = (stop.clone(), ready.clone());
            let share = connections / THREADS + usize::from(t < connections % THREADS);
            std::thread::spawn(move || {
                let mut held: Vec<Option<TcpStream>> = (0..share).map(open).collect();
                ready.fetch_add(1, Ordering::Relaxed);
                let mut reopened = 0;
                while !stop.load(Ordering::Relaxed) {
                    for slot in &mut held {
                        let alive = slot.as_mut().is_some_and(|s| s.write_all(b"a").is_ok());
                        if !alive {
                            *slot = open(0);
                            reopened += 1;
                        }
                    }
                    for _ in 0..20 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
                reopened
            })
        })
        .collect();
    // Every slow connection opened (or tried) before measuring.
    wait_for(
        "the slow connections to open",
        Duration::from_secs(60),
        Duration::from_millis(20),
        || (ready.load(Ordering::Relaxed) == THREADS).then_some(()),
    );
    let mut latencies = Vec::new();
    let mut failures = Vec::new();
    let until = Instant::now() + span;
    while Instant::now() < until {
        let asked = Instant::now();
        match health(addr) {
            Ok((200, _)) => latencies.push(asked.elapsed()),
            Ok((status, body)) => failures.push(format!("answered {status}: {body}")),
            Err(e) => failures.push(format!("no answer within 1 s: {e}")),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    stop.store(true, Ordering::Relaxed);
    let reopened = workers.into_iter().map(|w| w.join().unwrap()).sum();
    latencies.sort();
    SlowlorisReport {
        probes: latencies.len() + failures.len(),
        worst: latencies.last().copied().unwrap_or_default(),
        median: latencies
            .get(latencies.len() / 2)
            .copied()
            .unwrap_or_default(),
        failures,
        reopened,
    }
}

//! Slow request bodies against an API: many connections each sending a large body one byte
//! at a time. The memory the API holds for them must stay a small part of its container's
//! limit (256 MiB): before bodies arriving in pieces were copied into one buffer, each byte
//! kept a slice of a fresh 8 KiB read buffer alive, and 30 such clients took TelecomAI from
//! 6 MB to 211–238 MB in 9 s.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::http::predict_ok;
use crate::target::Target;

/// Slow clients at once.
const CONNECTIONS: usize = 30;
/// The body each declares: the API's largest accepted body.
const BODY_BYTES: usize = 1 << 20;
/// One byte per connection this often.
const PACE: Duration = Duration::from_millis(5);
/// How long they send, within the API's 10 s body timeout.
const SPAN: Duration = Duration::from_secs(9);
/// The most resident memory the API may reach meanwhile: a quarter of its container's limit,
/// so that these clients are nowhere near getting it killed.
const PEAK_BOUND_KIB: u64 = 64 << 10;

pub fn case(target: &Target, api: &str) -> String {
    let addr = target.addr(api);
    let pid = target.pid(api);
    let before = resident_kib(pid);
    let report = slow_bodies(addr, pid);
    eprintln!(
        "MEASURED: [{}] {api} under {CONNECTIONS} connections each sending a {} KiB body a byte every {} ms for {} s ({} bytes each): resident {} KiB before, peak {} KiB",
        target.name(),
        BODY_BYTES >> 10,
        PACE.as_millis(),
        SPAN.as_secs(),
        report.bytes_each,
        before,
        report.peak_kib,
    );
    assert!(
        report.peak_kib < PEAK_BOUND_KIB,
        "{api} reached {} KiB resident under slow bodies, over the {PEAK_BOUND_KIB} KiB bound",
        report.peak_kib
    );
    assert!(
        predict_ok(addr, api),
        "{api} does not predict after the slow bodies"
    );
    format!(
        "{CONNECTIONS} conns × {} bytes: resident {} MiB before, peak {:.1} MiB",
        report.bytes_each,
        before >> 10,
        report.peak_kib as f64 / 1024.0
    )
}

struct SlowBodyReport {
    /// Bytes each connection sent.
    bytes_each: usize,
    peak_kib: u64,
}

/// Opens the connections, each with the head of a `POST /predict` declaring a large body,
/// then sends each one byte per `PACE` for `SPAN`, reading the API's resident memory as it
/// goes.
fn slow_bodies(addr: SocketAddr, pid: i32) -> SlowBodyReport {
    let head = format!(
        "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {BODY_BYTES}\r\n\r\n"
    );
    let mut held: Vec<TcpStream> = (0..CONNECTIONS)
        .map(|_| {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                .expect("a slow-body connection");
            s.set_nodelay(true).unwrap();
            s.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
            s.write_all(head.as_bytes()).unwrap();
            s
        })
        .collect();
    let mut peak_kib = resident_kib(pid);
    let mut bytes_each = 0;
    let until = Instant::now() + SPAN;
    while Instant::now() < until {
        // A connection the API has closed (it may shed one) stays closed.
        held.retain_mut(|s| s.write_all(b" ").is_ok());
        bytes_each += 1;
        if bytes_each % 10 == 0 {
            peak_kib = peak_kib.max(resident_kib(pid));
        }
        std::thread::sleep(PACE);
    }
    peak_kib = peak_kib.max(resident_kib(pid));
    drop(held);
    SlowBodyReport {
        bytes_each,
        peak_kib,
    }
}

/// The process's resident memory now, from `/proc` (a container's process is a host process).
fn resident_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

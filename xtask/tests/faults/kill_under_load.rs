//! `kill -9` of an API under load: keep-alive clients record when each request was sent and
//! how it ended, so that only the requests in flight at the kill may fail. Docker's restart
//! policy brings the API back on its own; locally `up` does.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common::{self, stderr, wait_for};
use crate::http::{is_healthy, read_response, request_bytes};
use crate::target::{service, Runtime, Target};

/// Concurrent keep-alive clients of the load under which each API is killed.
const LOAD_CLIENTS: usize = 4;
/// Answers each client gets before the kill and again after the recovery: all of them run.
const ANSWERS_PER_CLIENT: usize = 20;
/// The restart policy's promise.
const RECOVERY_BOUND: Duration = Duration::from_secs(5);

/// `kill -9` of an API's process under load. Docker's restart policy brings it back on its
/// own; locally `up` does.
pub fn case(target: &Target, api: &str) -> String {
    let addr = target.addr(api);
    assert!(is_healthy(addr), "{api} is not healthy before the kill");
    let load = Load::start(addr, api, LOAD_CLIENTS);
    load.wait_until_every_client_is_answered(ANSWERS_PER_CLIENT);
    let pid = target.pid(api);
    let restarts_before = target.restarts(api);
    // Signalled from here, not through a `kill` process: the instant is the kill's own.
    let killed = Instant::now();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap_or_else(|e| panic!("kill -9 {pid}: {e}"));
    // Locally nothing restarts it: `up` does, as an operator would, once the process is gone.
    let up = (target.runtime == Runtime::Local).then(|| {
        wait_for(
            &format!("pid {pid} to die of kill -9"),
            Duration::from_secs(10),
            Duration::from_millis(5),
            || (!common::pid_alive(pid)).then_some(()),
        );
        target.spawn_xtask(&["up"])
    });
    wait_for(
        &format!("{api} to be healthy again after kill -9"),
        Duration::from_secs(120),
        Duration::from_millis(20),
        || is_healthy(addr).then_some(()),
    );
    let healthy = Instant::now();
    let recovery = healthy - killed;
    load.wait_until_every_client_is_answered(ANSWERS_PER_CLIENT);
    let events = load.finish();
    if let Some(up) = up {
        let output = up.wait_with_output().unwrap();
        assert!(output.status.success(), "up failed:\n{}", stderr(&output));
    }
    let t = tally(&events, killed, healthy);
    let refused = t.refused_while_down + t.dropped_while_down;
    eprintln!(
        "MEASURED: [{}] kill -9 {api} under load ({LOAD_CLIENTS} clients): healthy again after {:.2} s; {} in flight failed, {} refused while down ({} refused, {} dropped by a dead backend); {} answered before, {} after",
        target.name(),
        recovery.as_secs_f64(),
        t.in_flight,
        refused,
        t.refused_while_down,
        t.dropped_while_down,
        t.answered_before,
        t.answered_after
    );
    assert!(
        t.answered_before > 0 && t.answered_after > 0,
        "the load did not run: {t:?}"
    );
    assert!(
        t.in_flight <= LOAD_CLIENTS,
        "{} requests in flight failed with {LOAD_CLIENTS} clients",
        t.in_flight
    );
    assert!(
        t.failed_while_up.is_empty(),
        "requests failed while {api} was up: {:?}",
        t.failed_while_up
    );
    assert_ne!(target.pid(api), pid, "the same process answers");
    let how = match target.runtime {
        Runtime::Docker => {
            assert!(
                target.restarts(api) > restarts_before,
                "docker did not restart {api}"
            );
            assert!(
                recovery <= RECOVERY_BOUND,
                "{api} took {recovery:?} to be healthy again"
            );
            "restart policy"
        }
        Runtime::Local => "`up`",
    };
    format!(
        "back in {:.2}s ({how}); in-flight failed {}, refused {}",
        recovery.as_secs_f64(),
        t.in_flight,
        refused
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Answered,
    /// An answer other than 200.
    Status(u16),
    /// The connection could not be made: nothing was sent.
    Refused,
    /// The connection broke while the request was being written.
    ResetBeforeSent,
    /// The request was sent; the connection broke before the whole answer came.
    DroppedAfterSent,
}

struct Event {
    /// When the request (or the connection attempt) started.
    at: Instant,
    outcome: Outcome,
}

struct Load {
    stop: Arc<AtomicBool>,
    /// Each client's answered requests so far.
    answered: Arc<Vec<AtomicUsize>>,
    clients: Vec<JoinHandle<Vec<Event>>>,
}

/// Whether the server closed a kept-alive connection while it sat idle: a client's pool
/// drops such a connection rather than send on it.
fn closed_by_peer(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    stream.set_nonblocking(true).ok();
    let closed = match stream.peek(&mut byte) {
        Ok(0) => true,
        Ok(_) => true, // bytes nobody asked for: do not reuse
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    stream.set_nonblocking(false).ok();
    closed
}

fn client(
    addr: SocketAddr,
    request: Vec<u8>,
    stop: Arc<AtomicBool>,
    answered: impl Fn(),
) -> Vec<Event> {
    let mut events = Vec::new();
    let mut connection: Option<TcpStream> = None;
    while !stop.load(Ordering::Relaxed) {
        if connection.as_ref().is_some_and(closed_by_peer) {
            connection = None;
        }
        let at = Instant::now();
        let stream = match &mut connection {
            Some(stream) => stream,
            None => match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                Ok(stream) => {
                    stream
                        .set_read_timeout(Some(Duration::from_secs(10)))
                        .unwrap();
                    stream.set_nodelay(true).unwrap();
                    connection.insert(stream)
                }
                Err(_) => {
                    events.push(Event {
                        at,
                        outcome: Outcome::Refused,
                    });
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        if stream.write_all(&request).is_err() {
            events.push(Event {
                at,
                outcome: Outcome::ResetBeforeSent,
            });
            connection = None;
            continue;
        }
        let outcome = match read_response(stream) {
            Ok((200, _, closes)) => {
                if closes {
                    connection = None;
                }
                answered();
                Outcome::Answered
            }
            Ok((status, _, _)) => {
                connection = None;
                Outcome::Status(status)
            }
            Err(_) => {
                connection = None;
                Outcome::DroppedAfterSent
            }
        };
        events.push(Event { at, outcome });
    }
    events
}

impl Load {
    fn start(addr: SocketAddr, api: &str, clients: usize) -> Self {
        let (path, body) = service(api).smoke.unwrap();
        let request = request_bytes("POST", &path, Some(&body), false);
        let stop = Arc::new(AtomicBool::new(false));
        let answered: Arc<Vec<AtomicUsize>> =
            Arc::new((0..clients).map(|_| AtomicUsize::new(0)).collect());
        let clients = (0..clients)
            .map(|i| {
                let (request, stop, answered) = (request.clone(), stop.clone(), answered.clone());
                std::thread::spawn(move || {
                    client(addr, request, stop, || {
                        answered[i].fetch_add(1, Ordering::Relaxed);
                    })
                })
            })
            .collect();
        Self {
            stop,
            answered,
            clients,
        }
    }

    /// Waits until every client has had `count` more answers than when called: all of them
    /// are (again) connected and served.
    fn wait_until_every_client_is_answered(&self, count: usize) {
        let counts = || -> Vec<usize> {
            self.answered
                .iter()
                .map(|a| a.load(Ordering::Relaxed))
                .collect()
        };
        let start = counts();
        wait_for(
            &format!("{count} answers on each of {} clients", start.len()),
            Duration::from_secs(60),
            Duration::from_millis(5),
            || {
                let now = counts();
                now.iter()
                    .zip(&start)
                    .all(|(now, start)| now - start >= count)
                    .then_some(())
            },
        );
    }

    fn finish(mut self) -> Vec<Event> {
        self.stop.store(true, Ordering::Relaxed);
        std::mem::take(&mut self.clients)
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect()
    }
}

/// A case that fails midway stops its load too.
impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The requests of a load, sorted by when they ran relative to a kill and the recovery.
#[derive(Debug, Default)]
struct KillTally {
    answered_before: usize,
    answered_after: usize,
    /// Sent before the kill, broken by it: the requests in flight.
    in_flight: usize,
    /// While the service was down: refused connections, or sent to an address with nothing
    /// behind it yet. A real client retries these.
    refused_while_down: usize,
    dropped_while_down: usize,
    /// Failures while the service was up (before the kill, after the first healthy answer).
    failed_while_up: Vec<String>,
}

fn tally(events: &[Event], killed: Instant, healthy: Instant) -> KillTally {
    let mut t = KillTally::default();
    for e in events {
        let before = e.at < killed;
        let after = e.at >= healthy;
        match e.outcome {
            Outcome::Answered if before => t.answered_before += 1,
            Outcome::Answered => t.answered_after += 1,
            Outcome::DroppedAfterSent if before => t.in_flight += 1,
            other if before || after => t.failed_while_up.push(format!(
                "{other:?} {} the kill",
                if before {
                    "before"
                } else {
                    "after recovery from"
                }
            )),
            Outcome::Refused | Outcome::ResetBeforeSent => t.refused_while_down += 1,
            Outcome::DroppedAfterSent | Outcome::Status(_) => t.dropped_while_down += 1,
        }
    }
    t
}

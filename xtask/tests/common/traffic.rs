//! Traffic through a change: JSON bodies posted without pause (or at a set pace) while the
//! stack retrains, swaps or restores, so that the tests can count what failed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Posts `bodies` round and round from `threads` clients (each on a kept-alive connection)
/// until stopped; counts sent and failed requests (any answer but 200, or none).
pub struct Traffic {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Traffic {
    pub fn start(url: String, bodies: Arc<Vec<String>>, threads: usize) -> Self {
        Self::paced(url, bodies, threads, Duration::ZERO)
    }

    /// [`Traffic::start`] with each client sending one request per `every` at most: a count
    /// of failed requests then measures how long the service was away.
    pub fn paced(url: String, bodies: Arc<Vec<String>>, threads: usize, every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let clients = threads;
        let threads = (0..clients)
            .map(|t| {
                let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
                let (url, bodies) = (url.clone(), bodies.clone());
                std::thread::spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .build()
                        .into();
                    let mut i = t;
                    let mut next = std::time::Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        // Pacing, not synchronization: the next request's time.
                        next += every;
                        let ok = agent
                            .post(&url)
                            .header("content-type", "application/json")
                            .send(bodies[i % bodies.len()].as_str())
                            .is_ok_and(|r| r.status() == 200);
                        sent.fetch_add(1, Ordering::Relaxed);
                        if !ok {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        i += clients;
                        if !every.is_zero() {
                            std::thread::sleep(
                                next.saturating_duration_since(std::time::Instant::now()),
                            );
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            sent,
            failed,
            threads,
        }
    }

    /// Waits until `count` more requests were sent than when called: the load runs before
    /// and after what it measures.
    pub fn wait_for_requests(&self, count: u64) {
        let goal = self.sent.load(Ordering::Relaxed) + count;
        super::wait_for(
            &format!("{count} more requests"),
            Duration::from_secs(60),
            Duration::from_millis(5),
            || (self.sent.load(Ordering::Relaxed) >= goal).then_some(()),
        );
    }

    /// Stops the clients: the requests sent, and how many failed.
    pub fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        (
            self.sent.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

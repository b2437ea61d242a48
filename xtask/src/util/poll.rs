//! Waiting for something to happen, with a deadline: the one polling loop of the toolkit, and
//! of its tests (`tests/common` compiles this file too, so its own tests sit in `util/mod.rs`).

use std::time::{Duration, Instant};

/// Calls `attempt` every `every` until it returns `Some`, and returns that; `None` when
/// `timeout` has passed (after one last attempt at the deadline).
pub fn until<T>(
    timeout: Duration,
    every: Duration,
    mut attempt: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = attempt() {
            return Some(value);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::sleep(every.min(deadline - now));
    }
}

//! Waiting for a condition in a test: poll it at a short interval until it holds, with a
//! deadline that is a hang guard, never a timing assertion.

use std::time::{Duration, Instant};

/// How often a condition is checked.
const INTERVAL: Duration = Duration::from_millis(10);

/// Calls `probe` until it returns `Some`, and returns that; `None` once `limit` has passed
/// (after a last call at the deadline).
pub fn poll_until<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::sleep(INTERVAL.min(deadline - now));
    }
}

/// [`poll_until`], panicking with "never saw `what`" at the deadline.
pub fn wait_until<T>(what: &str, limit: Duration, probe: impl FnMut() -> Option<T>) -> T {
    poll_until(limit, probe).unwrap_or_else(|| panic!("never saw {what} within {limit:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_what_the_probe_found() {
        let mut calls = 0;
        let found = wait_until("the third call", Duration::from_secs(5), || {
            calls += 1;
            (calls == 3).then_some(calls)
        });
        assert_eq!(found, 3);
    }

    #[test]
    #[should_panic(expected = "never saw nothing")]
    fn gives_up_at_the_deadline() {
        wait_until("nothing", Duration::ZERO, || None::<()>);
    }
}

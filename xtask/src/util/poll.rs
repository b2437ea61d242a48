//! Waiting for something to happen, with a deadline: the one polling loop of the toolkit.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_first_answer() {
        let mut calls = 0;
        let answer = until(Duration::from_secs(5), Duration::from_millis(1), || {
            calls += 1;
            (calls == 3).then_some(calls)
        });
        assert_eq!(answer, Some(3));
    }

    #[test]
    fn gives_up_after_the_deadline_with_a_last_attempt() {
        let mut calls = 0;
        let answer: Option<()> = until(Duration::ZERO, Duration::from_millis(1), || {
            calls += 1;
            None
        });
        assert_eq!(answer, None);
        assert_eq!(calls, 1);
    }
}

//! Treating the upstream with care: a rate limiter, and a circuit breaker that pauses dispatch
//! while the upstream fails. (The concurrency cap is a semaphore in the client.)

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Spaces calls at least `1 / rate` apart (a GCRA with a burst of one), so that no one-second
/// window ever holds more than `rate` calls (plus the one at its edge).
pub struct RateLimiter {
    interval: Duration,
    next: Mutex<tokio::time::Instant>,
}

impl RateLimiter {
    pub fn new(per_second: f64) -> Self {
        Self {
            interval: Duration::from_secs_f64(1.0 / per_second.max(0.001)),
            next: Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// Waits for this caller's slot.
    pub async fn acquire(&self) {
        let slot = {
            let mut next = self.next.lock().expect("limiter lock");
            let now = tokio::time::Instant::now();
            let slot = (*next).max(now);
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

/// Opens after `THRESHOLD` consecutive failures (5xx, time-outs, connection errors); while open,
/// workers claim nothing. After the cool-down one probe goes through: success closes it, failure
/// reopens it for twice as long (up to `MAX_COOLDOWN`).
pub struct Breaker {
    state: Mutex<BreakerState>,
}

struct BreakerState {
    failures: u32,
    open_until: Option<Instant>,
    cooldown: Duration,
}

const THRESHOLD: u32 = 5;
const MIN_COOLDOWN: Duration = Duration::from_secs(2);
const MAX_COOLDOWN: Duration = Duration::from_secs(60);

impl Default for Breaker {
    fn default() -> Self {
        Self::new()
    }
}

impl Breaker {
    pub fn new() -> Self {
        Self {
            state: Mutex::new(BreakerState {
                failures: 0,
                open_until: None,
                cooldown: MIN_COOLDOWN,
            }),
        }
    }

    /// How long to wait before dispatching; `None` when calls may go.
    pub fn wait(&self) -> Option<Duration> {
        let state = self.state.lock().expect("breaker lock");
        let until = state.open_until?;
        until.checked_duration_since(Instant::now())
    }

    /// True while open (for metrics and status).
    pub fn is_open(&self) -> bool {
        self.wait().is_some()
    }

    pub fn success(&self) {
        let mut state = self.state.lock().expect("breaker lock");
        state.failures = 0;
        state.open_until = None;
        state.cooldown = MIN_COOLDOWN;
    }

    pub fn failure(&self) {
        let mut state = self.state.lock().expect("breaker lock");
        state.failures += 1;
        let half_open = state.open_until.is_some();
        if state.failures >= THRESHOLD || half_open {
            if half_open {
                state.cooldown = (state.cooldown * 2).min(MAX_COOLDOWN);
            }
            state.open_until = Some(Instant::now() + state.cooldown);
            if !half_open {
                tracing::warn!(
                    cooldown_secs = state.cooldown.as_secs_f64(),
                    "upstream failing: circuit opened"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn limiter_spaces_calls() {
        let limiter = RateLimiter::new(10.0);
        let start = tokio::time::Instant::now();
        for _ in 0..21 {
            limiter.acquire().await;
        }
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(2000), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(2100), "{elapsed:?}");
    }

    #[test]
    fn breaker_opens_after_consecutive_failures_and_closes_on_success() {
        let b = Breaker::new();
        for _ in 0..THRESHOLD - 1 {
            b.failure();
        }
        assert!(!b.is_open());
        b.success();
        for _ in 0..THRESHOLD - 1 {
            b.failure();
        }
        assert!(!b.is_open(), "a success resets the count");
        b.failure();
        assert!(b.is_open());
        b.success();
        assert!(!b.is_open());
    }
}

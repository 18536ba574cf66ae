//! Treating the upstream with care: a rate limiter, and a circuit breaker that pauses dispatch
//! while the upstream fails. (The concurrency cap is a semaphore in the client.)

use crate::metrics::BreakerGauge;
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
        let wait = slot.saturating_duration_since(tokio::time::Instant::now());
        if !wait.is_zero() {
            crate::metrics::global().limiter_wait(wait);
        }
        tokio::time::sleep_until(slot).await;
    }
}

/// Opens after `THRESHOLD` consecutive failures (5xx, time-outs, connection errors); while open,
/// workers claim nothing. After the cool-down exactly one probe is admitted: its success closes the
/// breaker, its failure reopens it for twice as long (up to `MAX_COOLDOWN`).
pub struct Breaker {
    state: Mutex<BreakerState>,
}

struct BreakerState {
    mode: Mode,
    cooldown: Duration,
}

#[derive(Clone, Copy)]
enum Mode {
    Closed { failures: u32 },
    Open { until: Instant },
    Probing { since: Instant },
}

/// What a worker may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Dispatch normally.
    Go,
    /// Dispatch one step only: it probes whether the upstream is back.
    Probe,
    /// Dispatch nothing for this long.
    Wait(Duration),
}

const THRESHOLD: u32 = 5;
const MIN_COOLDOWN: Duration = Duration::from_secs(2);
const MAX_COOLDOWN: Duration = Duration::from_secs(60);
/// A probe that reports nothing within this time is replaced by another.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often others look again while a probe is out.
const PROBE_POLL: Duration = Duration::from_millis(200);

impl Default for Breaker {
    fn default() -> Self {
        Self::new()
    }
}

impl Breaker {
    pub fn new() -> Self {
        Self {
            state: Mutex::new(BreakerState {
                mode: Mode::Closed { failures: 0 },
                cooldown: MIN_COOLDOWN,
            }),
        }
    }

    /// Whether to dispatch now.
    pub fn admit(&self) -> Admission {
        let mut state = self.state.lock().expect("breaker lock");
        let now = Instant::now();
        match state.mode {
            Mode::Closed { .. } => Admission::Go,
            Mode::Open { until } if now < until => Admission::Wait(until - now),
            Mode::Probing { since } if now < since + PROBE_TIMEOUT => Admission::Wait(PROBE_POLL),
            Mode::Open { .. } | Mode::Probing { .. } => {
                state.mode = Mode::Probing { since: now };
                crate::metrics::global().breaker(BreakerGauge::Probing);
                Admission::Probe
            }
        }
    }

    /// The admitted probe found nothing to do: let the next admission probe instead.
    pub fn probe_unused(&self) {
        let mut state = self.state.lock().expect("breaker lock");
        if let Mode::Probing { .. } = state.mode {
            state.mode = Mode::Open {
                until: Instant::now(),
            };
            crate::metrics::global().breaker(BreakerGauge::Open);
        }
    }

    /// True unless closed (for metrics and status).
    pub fn is_open(&self) -> bool {
        !matches!(
            self.state.lock().expect("breaker lock").mode,
            Mode::Closed { .. }
        )
    }

    pub fn success(&self) {
        let mut state = self.state.lock().expect("breaker lock");
        if !matches!(state.mode, Mode::Closed { .. }) {
            tracing::info!("upstream answers again: circuit closed");
            crate::metrics::global().breaker(BreakerGauge::Closed);
        }
        state.mode = Mode::Closed { failures: 0 };
        state.cooldown = MIN_COOLDOWN;
    }

    pub fn failure(&self) {
        let mut state = self.state.lock().expect("breaker lock");
        let now = Instant::now();
        match state.mode {
            Mode::Closed { failures } if failures + 1 >= THRESHOLD => {
                state.mode = Mode::Open {
                    until: now + state.cooldown,
                };
                tracing::warn!(
                    cooldown_secs = state.cooldown.as_secs_f64(),
                    "upstream failing: circuit opened"
                );
                crate::metrics::global().breaker(BreakerGauge::Open);
            }
            Mode::Closed { failures } => {
                state.mode = Mode::Closed {
                    failures: failures + 1,
                }
            }
            // Calls that were already in flight when it opened change nothing.
            Mode::Open { .. } => {}
            Mode::Probing { .. } => {
                state.cooldown = (state.cooldown * 2).min(MAX_COOLDOWN);
                state.mode = Mode::Open {
                    until: now + state.cooldown,
                };
                crate::metrics::global().breaker(BreakerGauge::Open);
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
        assert!(matches!(b.admit(), Admission::Wait(_)));
        b.success();
        assert!(!b.is_open());
        assert_eq!(b.admit(), Admission::Go);
    }

    #[test]
    fn one_probe_at_a_time_and_a_failed_probe_doubles_the_cooldown() {
        let b = Breaker::new();
        for _ in 0..THRESHOLD {
            b.failure();
        }
        // Pretend the cool-down is over.
        b.state.lock().unwrap().mode = Mode::Open {
            until: Instant::now(),
        };
        assert_eq!(b.admit(), Admission::Probe);
        assert!(matches!(b.admit(), Admission::Wait(_)), "only one probe");
        b.failure();
        assert_eq!(b.state.lock().unwrap().cooldown, MIN_COOLDOWN * 2);
        for _ in 0..10 {
            b.failure(); // stragglers while open
        }
        assert_eq!(b.state.lock().unwrap().cooldown, MIN_COOLDOWN * 2);
        b.state.lock().unwrap().mode = Mode::Open {
            until: Instant::now(),
        };
        assert_eq!(b.admit(), Admission::Probe);
        b.probe_unused();
        assert_eq!(b.admit(), Admission::Probe, "an unused probe is handed on");
        b.success();
        assert_eq!(b.admit(), Admission::Go);
    }
}

//! Treating the upstream with care: a rate limiter, and a circuit breaker that pauses dispatch
//! while the upstream fails. (The concurrency cap is a semaphore in the client.)

use crate::metrics::BreakerGauge;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The window the rate cap counts calls in.
pub const RATE_WINDOW: Duration = Duration::from_secs(1);

/// How late a caller may wake (the timer's granularity) and still keep its planned slot.
const SLACK: Duration = Duration::from_millis(1);

/// Spaces calls at least `1 / rate` apart, so that no one-second window ever holds more than
/// `rate` calls (plus the one at its edge, plus `rate * SLACK`). Callers take turns (first come,
/// first served). A caller that wakes later than `SLACK` after its slot (a busy machine) moves the
/// schedule: the next slot is counted from when it actually went, so late calls cannot bunch up
/// with the ones after them.
pub struct RateLimiter {
    interval: Duration,
    next: tokio::sync::Mutex<tokio::time::Instant>,
}

impl RateLimiter {
    /// The first call leaves `quiet_start` after now. A process that replaces one that died (or
    /// was restarted) cannot know how many calls the other made in its last second: waiting one
    /// rate window keeps the two together within the cap.
    pub fn new(per_second: f64, quiet_start: Duration) -> Self {
        Self {
            interval: Duration::from_secs_f64(1.0 / per_second.max(0.001)),
            next: tokio::sync::Mutex::new(tokio::time::Instant::now() + quiet_start),
        }
    }

    /// Waits for this caller's turn.
    pub async fn acquire(&self) {
        let queued = tokio::time::Instant::now();
        let mut next = self.next.lock().await;
        tokio::time::sleep_until(*next).await;
        let went = tokio::time::Instant::now();
        let late_limit = went.checked_sub(SLACK).unwrap_or(went);
        *next = (*next).max(late_limit) + self.interval;
        drop(next);
        let waited = went - queued;
        if waited >= Duration::from_micros(100) {
            crate::metrics::global().limiter_wait(waited);
        }
    }
}

/// Per path (with its ids): the time before which no call may go (a `Retry-After` the upstream
/// gave for it), and one write in flight at a time, so that a `Retry-After` in a write's answer
/// holds the next write. (Without the turn, writes sent while a 429 was on its way back would
/// reach the upstream before the time it asked for.) Reads of one path may overlap: the cascade
/// checks of many accounts read their one connection, and taking turns there allowed one read
/// per upstream latency (80 % of a 200/s rate cap with 50 ms latency and 100 accounts a
/// connection, BENCHMARKS.md). A read sent after a `Retry-After` for its path was received waits
/// for it, as a write does.
#[derive(Default)]
pub struct PathGates {
    gates: Mutex<HashMap<String, Arc<Gate>>>,
}

#[derive(Default)]
struct Gate {
    /// Held by a write for its whole call.
    turn: Arc<tokio::sync::Mutex<()>>,
    /// No call before this (a `Retry-After`).
    held: Mutex<Option<Instant>>,
}

/// A caller's place on a path (and a write's turn), until dropped.
pub struct PathTurn<'a> {
    gates: &'a PathGates,
    gate: Option<Arc<Gate>>,
    turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl PathGates {
    /// Enters `path`; a write (`exclusive`) waits for the write before it to be answered.
    pub async fn enter(&self, path: &str, exclusive: bool) -> PathTurn<'_> {
        let gate = self
            .gates
            .lock()
            .expect("gates lock")
            .entry(path.to_string())
            .or_default()
            .clone();
        let turn = if exclusive {
            Some(gate.turn.clone().lock_owned().await)
        } else {
            None
        };
        PathTurn {
            gates: self,
            gate: Some(gate),
            turn,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.gates.lock().expect("gates lock").len()
    }
}

impl PathTurn<'_> {
    fn held(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        let gate = self.gate.as_ref().expect("set until dropped");
        gate.held.lock().expect("hold lock")
    }

    /// When a `Retry-After` given for this path ends, if it has not yet.
    pub fn held_until(&self) -> Option<Instant> {
        let until = (*self.held())?;
        (until > Instant::now()).then_some(until)
    }

    /// No call to this path before `until`.
    pub fn hold(&mut self, until: Instant) {
        *self.held() = Some(until);
    }
}

impl Drop for PathTurn<'_> {
    fn drop(&mut self) {
        let mut gates = self.gates.gates.lock().expect("gates lock");
        drop(self.turn.take());
        drop(self.gate.take());
        // Forget the paths nobody is on and no `Retry-After` holds any more.
        let now = Instant::now();
        gates.retain(|_, gate| {
            Arc::strong_count(gate) > 1
                || gate
                    .held
                    .lock()
                    .expect("hold lock")
                    .is_some_and(|until| until > now)
        });
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
        let limiter = RateLimiter::new(10.0, Duration::ZERO);
        let start = tokio::time::Instant::now();
        for _ in 0..21 {
            limiter.acquire().await;
        }
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(2000), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(2100), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_caller_moves_the_schedule_instead_of_bunching_with_the_next() {
        let limiter = RateLimiter::new(10.0, Duration::ZERO);
        limiter.acquire().await;
        // This caller's slot was 100 ms after the first; it comes 300 ms late.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let late = tokio::time::Instant::now();
        limiter.acquire().await;
        assert_eq!(late.elapsed(), Duration::ZERO);
        limiter.acquire().await;
        assert_eq!(late.elapsed(), Duration::from_millis(100) - SLACK);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_limiter_waits_its_quiet_start_before_the_first_call() {
        let start = tokio::time::Instant::now();
        let limiter = RateLimiter::new(10.0, Duration::from_secs(1));
        limiter.acquire().await;
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        limiter.acquire().await;
        assert_eq!(start.elapsed(), Duration::from_millis(1100));
    }

    #[tokio::test(start_paused = true)]
    async fn one_write_in_flight_per_path_while_reads_overlap() {
        let gates = Arc::new(PathGates::default());
        let first = gates.enter("/connections/1", true).await;
        let other = gates.enter("/connections/2", true).await;
        let read = gates.enter("/connections/1", false).await;
        let waiting = tokio::spawn({
            let gates = gates.clone();
            async move {
                let _turn = gates.enter("/connections/1", true).await;
                tokio::time::Instant::now()
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let released = tokio::time::Instant::now();
        drop(first);
        assert!(
            waiting.await.unwrap() >= released,
            "entered before the first write ended"
        );
        drop((other, read));
        assert_eq!(gates.len(), 0, "idle paths are forgotten");
    }

    #[tokio::test]
    async fn a_retry_after_holds_the_path_for_the_next_caller() {
        let gates = PathGates::default();
        let mut turn = gates.enter("/connections/1", true).await;
        let overlapping = gates.enter("/connections/1", false).await;
        assert_eq!(turn.held_until(), None);
        let until = Instant::now() + Duration::from_secs(60);
        turn.hold(until);
        drop((turn, overlapping));
        assert_eq!(gates.len(), 1, "kept while held");
        let read = gates.enter("/connections/1", false).await;
        assert_eq!(read.held_until(), Some(until), "a read waits for it too");
        drop(read);
        let mut next = gates.enter("/connections/1", true).await;
        assert_eq!(next.held_until(), Some(until));
        next.hold(Instant::now());
        drop(next);
        assert_eq!(gates.len(), 0, "forgotten once the hold is over");
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

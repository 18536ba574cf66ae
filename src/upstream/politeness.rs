//! Treating the upstream with care: a rate limiter that backs off when the upstream answers 429,
//! the concurrency slots, and a circuit breaker that pauses dispatch while the upstream fails.
//! The rate and the slots are this process's share of the deployment's caps
//! (`engine::shares` sets them); both start at nothing until a share is granted.

use crate::metrics::BreakerGauge;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The window the rate cap counts calls in.
pub const RATE_WINDOW: Duration = Duration::from_secs(1);

/// How late a caller may wake (the timer's granularity) and still keep its planned slot.
const SLACK: Duration = Duration::from_millis(1);

/// Calls are spaced this much wider than the rate: `rate + 1` calls in a row span
/// `1 + SPACING_MARGIN` seconds, so that a call reaching the upstream up to 25 ms later than the
/// one before it (the network, a busy machine) still leaves at most `rate` in each of its
/// seconds. It costs 2.5 % of the rate.
const SPACING_MARGIN: f64 = 0.025;

/// A 429 multiplies the rate by this when the upstream is refusing calls (`THROTTLED_SHARE`),
/// at most once a `RATE_WINDOW`, and only for a call sent after the last back-off (the 429s of
/// calls sent before it are the same congestion).
const BACKOFF: f64 = 0.5;
/// The answers the limiter weighs: those received in this window, to calls sent after the last
/// back-off.
const THROTTLE_WINDOW: Duration = Duration::from_secs(2);
/// The limiter backs off when at least this share of those answers were 429, and at least
/// `THROTTLED_MIN` of them: an upstream refusing our excess. An aggregator answering 429 now and
/// then (a tenth of the calls, at random) is waited out call by call, by its `Retry-After`,
/// without slowing every other call: halving at each of those would keep the rate at its floor.
const THROTTLED_SHARE: f64 = 0.2;
const THROTTLED_MIN: usize = 3;
/// The rate never backs off below this fraction of the share.
const BACKOFF_FLOOR: f64 = 1.0 / 8.0;
/// The rate starts to recover this long after the last back-off...
const BACKOFF_QUIET: Duration = Duration::from_secs(2);
/// ...by this fraction of the share a second (from half to all of it in 4 s).
const RECOVERY_PER_SEC: f64 = 1.0 / 8.0;

/// Spaces calls at least `(1 + SPACING_MARGIN) / rate` apart, so that no one-second window ever
/// holds more than `rate` calls (plus the one at its edge, plus `rate * SLACK`); with a whole
/// number of calls a second, a one-second window holds at most `rate` even when calls reach the
/// upstream up to 25 ms late (`engine::shares` splits the deployment's rate that way, so the
/// processes' calls add up to at most the deployment's rate in any second). Callers take turns (first come, first served). A caller that
/// wakes later than `SLACK` after its slot (a busy machine) moves the schedule: the next slot is
/// counted from when it actually went, so late calls cannot bunch up with the ones after them.
///
/// The rate is `share * factor`. The share is set from outside (`set_share`; 0 sends nothing);
/// a smaller rate applies at once, to the caller already waiting too (its slot is counted from
/// the last call with the new spacing). The factor is the back-off: a 429 halves it when a fifth
/// or more of the answers of the last `THROTTLE_WINDOW` were 429 (AIMD: at most once a
/// `RATE_WINDOW`, for a call sent after the last back-off, never below `BACKOFF_FLOOR`), and
/// `BACKOFF_QUIET` after the last back-off it grows back by `RECOVERY_PER_SEC` a second to 1.
pub struct RateLimiter {
    /// The planned slot of the last call; the turn of callers.
    last: tokio::sync::Mutex<Option<tokio::time::Instant>>,
    rate: Mutex<Rate>,
    /// Wakes the waiting caller when the rate changes.
    changed: tokio::sync::Notify,
}

struct Rate {
    share: f64,
    /// The factor right after the last back-off, and when it was.
    backed_off: Option<(f64, tokio::time::Instant)>,
    /// The answers of the last `THROTTLE_WINDOW` to calls sent after the last back-off.
    answers: Answers,
}

/// Answers in a window: when each came, whether it was 429, and how many were.
#[derive(Default)]
struct Answers {
    log: VecDeque<(tokio::time::Instant, bool)>,
    throttled: usize,
}

impl Answers {
    fn record(&mut self, now: tokio::time::Instant, throttled: bool) {
        while let Some(&(at, was)) = self.log.front() {
            if at + THROTTLE_WINDOW > now {
                break;
            }
            self.log.pop_front();
            self.throttled -= usize::from(was);
        }
        self.log.push_back((now, throttled));
        self.throttled += usize::from(throttled);
    }

    /// Whether the upstream is refusing calls: enough 429s, and a large enough share of them.
    fn refusing(&self) -> bool {
        self.throttled >= THROTTLED_MIN
            && self.throttled as f64 >= THROTTLED_SHARE * self.log.len() as f64
    }
}

impl Rate {
    fn factor(&self, now: tokio::time::Instant) -> f64 {
        let Some((factor, at)) = self.backed_off else {
            return 1.0;
        };
        let recovering = now.saturating_duration_since(at + BACKOFF_QUIET);
        (factor + RECOVERY_PER_SEC * recovering.as_secs_f64()).min(1.0)
    }

    fn effective(&self, now: tokio::time::Instant) -> f64 {
        self.share * self.factor(now)
    }
}

impl RateLimiter {
    /// A limiter of `per_second` calls a second (0: none until `set_share`).
    pub fn new(per_second: f64) -> Self {
        Self {
            last: tokio::sync::Mutex::new(None),
            rate: Mutex::new(Rate {
                share: per_second.max(0.0),
                backed_off: None,
                answers: Answers::default(),
            }),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Rate> {
        self.rate.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The calls a second this process may make, before any back-off.
    pub fn share(&self) -> f64 {
        self.state().share
    }

    /// The calls a second allowed now: the share less the back-off.
    pub fn rate(&self) -> f64 {
        self.state().effective(tokio::time::Instant::now())
    }

    /// Sets the share (0: no call until it is raised again).
    pub fn set_share(&self, per_second: f64) {
        let rate = {
            let mut state = self.state();
            state.share = per_second.max(0.0);
            state.effective(tokio::time::Instant::now())
        };
        crate::metrics::global().limiter_rate(rate);
        self.changed.notify_waiters();
    }

    /// The upstream answered a call sent at `sent`, with 429 when `throttled`: backs off when
    /// the upstream is refusing calls and this congestion was not already answered. True when it
    /// backed off.
    pub fn answered(&self, sent: tokio::time::Instant, throttled: bool) -> bool {
        let now = tokio::time::Instant::now();
        let rate = {
            let mut state = self.state();
            let last = state.backed_off.map(|(_, at)| at);
            // A call sent before the last back-off says nothing of the rate since.
            if last.is_some_and(|at| sent <= at) {
                return false;
            }
            state.answers.record(now, throttled);
            if !throttled
                || last.is_some_and(|at| now < at + RATE_WINDOW)
                || !state.answers.refusing()
            {
                return false;
            }
            let factor = (state.factor(now) * BACKOFF).max(BACKOFF_FLOOR);
            state.backed_off = Some((factor, now));
            state.answers = Answers::default();
            state.effective(now)
        };
        tracing::info!(
            calls_per_sec = rate,
            "the upstream refuses calls (429): rate backed off"
        );
        crate::metrics::global().limiter_backoff(rate);
        self.changed.notify_waiters();
        true
    }

    /// Waits for this caller's turn.
    pub async fn acquire(&self) {
        let queued = tokio::time::Instant::now();
        let mut last = self.last.lock().await;
        let slot = loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let now = tokio::time::Instant::now();
            let rate = self.state().effective(now);
            if rate <= 0.0 {
                changed.await;
                continue;
            }
            let slot = match *last {
                Some(last) => last + Duration::from_secs_f64((1.0 + SPACING_MARGIN) / rate),
                None => now,
            };
            if slot <= now {
                break slot;
            }
            // A smaller rate moves the slot later, a recovering one earlier: look again then.
            tokio::select! {
                _ = tokio::time::sleep_until(slot) => {}
                _ = changed => {}
            }
        };
        let went = tokio::time::Instant::now();
        let late_limit = went.checked_sub(SLACK).unwrap_or(went);
        *last = Some(slot.max(late_limit));
        drop(last);
        let waited = went - queued;
        if waited >= Duration::from_micros(100) {
            crate::metrics::global().limiter_wait(waited);
        }
    }
}

/// The concurrency cap: slots that calls hold while in flight. Their number is this process's
/// share of the deployment's cap and can change: more are added at once; fewer are taken out as
/// they come back (`held` counts the ones not yet back).
pub struct Slots {
    semaphore: tokio::sync::Semaphore,
    /// (wanted, held): held is the slots that exist, free or in use.
    count: Mutex<(usize, usize)>,
}

/// A slot, until dropped.
pub struct Slot<'a> {
    slots: &'a Slots,
    permit: Option<tokio::sync::SemaphorePermit<'a>>,
}

impl Slots {
    pub fn new(n: usize) -> Self {
        Self {
            semaphore: tokio::sync::Semaphore::new(n),
            count: Mutex::new((n, n)),
        }
    }

    fn count(&self) -> std::sync::MutexGuard<'_, (usize, usize)> {
        self.count.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the number of slots: more at once; fewer as the ones in use come back.
    pub fn set(&self, wanted: usize) {
        let mut count = self.count();
        let (_, held) = *count;
        let held = if wanted > held {
            self.semaphore.add_permits(wanted - held);
            wanted
        } else {
            held - self.semaphore.forget_permits(held - wanted)
        };
        *count = (wanted, held);
    }

    /// The number of slots wanted.
    pub fn wanted(&self) -> usize {
        self.count().0
    }

    /// The slots that exist: the ones wanted, and those in use beyond them until they come back.
    pub fn held(&self) -> usize {
        self.count().1
    }

    /// Waits for a free slot.
    pub async fn acquire(&self) -> Slot<'_> {
        let permit = self
            .semaphore
            .acquire()
            .await
            .expect("semaphore never closed");
        Slot {
            slots: self,
            permit: Some(permit),
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut count = self.slots.count();
        let permit = self.permit.take().expect("set until dropped");
        if count.1 > count.0 {
            permit.forget();
            count.1 -= 1;
        } else {
            drop(permit);
        }
    }
}

/// Per resource (the path with its ids; a listing with its filter, `/accounts?connection_id=…`,
/// so that one connection's `Retry-After` does not hold the listings of the others): the time
/// before which no call may go (a `Retry-After` the upstream gave for it), and one write in
/// flight at a time, so that a `Retry-After` in a write's answer holds the next write. (Without
/// the turn, writes sent while a 429 was on its way back would reach the upstream before the time
/// it asked for.) Reads of one resource may overlap: the cascade checks of many accounts read
/// their one connection, and taking turns there allowed one read per upstream latency (80 % of a
/// 200/s rate cap with 50 ms latency and 100 accounts a connection, BENCHMARKS.md). A read sent
/// after a `Retry-After` for its resource was received waits for it, as a write does. The keys
/// hold ids: they are never logged.
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

/// A caller's place on a resource (and a write's turn), until dropped.
pub struct PathTurn<'a> {
    gates: &'a PathGates,
    gate: Option<Arc<Gate>>,
    turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl PathGates {
    /// Enters `resource`; a write (`exclusive`) waits for the write before it to be answered.
    pub async fn enter(&self, resource: &str, exclusive: bool) -> PathTurn<'_> {
        let gate = self
            .gates
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(resource.to_string())
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
        self.gates
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl PathTurn<'_> {
    fn held(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        let gate = self.gate.as_ref().expect("set until dropped");
        gate.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// When a `Retry-After` given for this resource ends, if it has not yet.
    pub fn held_until(&self) -> Option<Instant> {
        let until = (*self.held())?;
        (until > Instant::now()).then_some(until)
    }

    /// No call to this resource before `until`.
    pub fn hold(&mut self, until: Instant) {
        *self.held() = Some(until);
    }
}

impl Drop for PathTurn<'_> {
    fn drop(&mut self) {
        let mut gates = self
            .gates
            .gates
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        drop(self.turn.take());
        drop(self.gate.take());
        // Forget the resources nobody is on and no `Retry-After` holds any more.
        let now = Instant::now();
        gates.retain(|_, gate| {
            Arc::strong_count(gate) > 1
                || gate
                    .held
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
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

/// Failures in a row that open the breaker. Ten, not five: with calls failing at random at 35 %
/// (a bad day, not an outage), five in a row came 12 to 16 times in a drain of 3,350 calls
/// (0.35^5 is 0.5 %), each opening holding dispatch back for its cool-down; ten in a row is
/// 0.003 %. An outage, where every call fails, still opens it within ten calls.
const THRESHOLD: u32 = 10;
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
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
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
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
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
            self.state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .mode,
            Mode::Closed { .. }
        )
    }

    pub fn success(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if !matches!(state.mode, Mode::Closed { .. }) {
            tracing::info!("upstream answers again: circuit closed");
            crate::metrics::global().breaker(BreakerGauge::Closed);
        }
        state.mode = Mode::Closed { failures: 0 };
        state.cooldown = MIN_COOLDOWN;
    }

    pub fn failure(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
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

    /// Equal to the timer's millisecond.
    fn assert_close(got: Duration, want: Duration) {
        let off = got.abs_diff(want);
        assert!(
            off <= Duration::from_millis(1),
            "{got:?} instead of {want:?}"
        );
    }

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

    #[tokio::test(start_paused = true)]
    async fn a_late_caller_moves_the_schedule_instead_of_bunching_with_the_next() {
        let limiter = RateLimiter::new(10.0);
        limiter.acquire().await;
        // This caller's slot was 100 ms after the first; it comes 300 ms late.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let late = tokio::time::Instant::now();
        limiter.acquire().await;
        assert_eq!(late.elapsed(), Duration::ZERO);
        limiter.acquire().await;
        assert_close(
            late.elapsed(),
            Duration::from_secs_f64(0.1 * (1.0 + SPACING_MARGIN)) - SLACK,
        );
    }

    /// A caller of `limiter`: when it went.
    fn call(limiter: &Arc<RateLimiter>) -> tokio::task::JoinHandle<tokio::time::Instant> {
        let limiter = limiter.clone();
        tokio::spawn(async move {
            limiter.acquire().await;
            tokio::time::Instant::now()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn no_share_sends_nothing_and_a_smaller_one_applies_to_the_caller_already_waiting() {
        let limiter = Arc::new(RateLimiter::new(0.0));
        let start = tokio::time::Instant::now();
        let first = call(&limiter);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!first.is_finished(), "no call without a share");
        limiter.set_share(10.0);
        assert_eq!(first.await.unwrap() - start, Duration::from_secs(5));
        // The next slot would be 100 ms after the first; the share drops to 2/s meanwhile.
        let second = call(&limiter);
        tokio::time::sleep(Duration::from_millis(50)).await;
        limiter.set_share(2.0);
        let went = second.await.unwrap() - start;
        let spaced = |secs: f64| Duration::from_secs_f64(secs * (1.0 + SPACING_MARGIN));
        assert_close(went, Duration::from_secs(5) + spaced(0.5));
        // A larger share applies at once too.
        let third = call(&limiter);
        tokio::time::sleep(Duration::from_millis(10)).await;
        limiter.set_share(50.0);
        assert_close(
            third.await.unwrap() - start,
            Duration::from_secs(5) + spaced(0.5) + spaced(0.02),
        );
    }

    /// `n` answers to calls sent now, `every`-th of them 429 (0: none), 10 ms apart: whether the
    /// limiter backed off at any of them.
    async fn answers(limiter: &RateLimiter, n: usize, every: usize) -> bool {
        let mut backed_off = false;
        for i in 1..=n {
            let sent = tokio::time::Instant::now();
            tokio::time::sleep(Duration::from_millis(10)).await;
            backed_off |= limiter.answered(sent, every > 0 && i % every == 0);
        }
        backed_off
    }

    #[tokio::test(start_paused = true)]
    async fn scattered_429s_leave_the_rate_alone() {
        // A tenth of the answers 429, for a minute: each is waited out by its caller only.
        let limiter = RateLimiter::new(100.0);
        assert!(!answers(&limiter, 6_000, 10).await);
        assert_eq!(limiter.rate(), 100.0);
        // A few in a row at a low rate are not yet a refusal either.
        tokio::time::sleep(THROTTLE_WINDOW).await;
        let sent = tokio::time::Instant::now();
        assert!(!limiter.answered(sent, true));
        assert!(!limiter.answered(sent, true));
        assert_eq!(limiter.rate(), 100.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_429s_halves_the_rate_once_per_congestion_and_it_recovers_after_a_quiet_time()
     {
        let limiter = RateLimiter::new(16.0);
        // Every other answer is 429: the upstream is refusing calls.
        let sent = tokio::time::Instant::now();
        assert!(answers(&limiter, 6, 2).await);
        assert_eq!(limiter.rate(), 8.0);
        // More 429s for calls sent before the back-off, or within its window: the same congestion.
        assert!(!limiter.answered(sent, true));
        assert!(
            !answers(&limiter, 20, 2).await,
            "within a second of the last"
        );
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(
            answers(&limiter, 6, 2).await,
            "still refusing a second later"
        );
        assert_eq!(limiter.rate(), 4.0);
        for _ in 0..5 {
            tokio::time::sleep(RATE_WINDOW).await;
            answers(&limiter, 3, 1).await;
        }
        assert_eq!(
            limiter.rate(),
            16.0 * BACKOFF_FLOOR,
            "never below the floor"
        );
        assert_eq!(limiter.share(), 16.0, "the share is unchanged");
        // Quiet: the rate grows back by an eighth of the share a second (the last back-off was
        // at one of the last 3 answers, up to 20 ms ago).
        let near = |want: f64| {
            let rate = limiter.rate();
            assert!(
                rate >= want && rate <= want + 0.05,
                "{rate} instead of {want}"
            );
        };
        tokio::time::sleep(BACKOFF_QUIET).await;
        near(2.0);
        tokio::time::sleep(Duration::from_secs(2)).await;
        near(6.0);
        // Calls are spaced by the rate of the moment.
        limiter.acquire().await;
        let start = tokio::time::Instant::now();
        limiter.acquire().await;
        let gap = start.elapsed();
        assert!(
            gap > Duration::from_millis(140) && gap <= Duration::from_millis(175),
            "{gap:?}"
        );
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(limiter.rate(), 16.0, "recovered in full");
    }

    #[tokio::test(start_paused = true)]
    async fn fewer_slots_take_effect_as_the_calls_in_flight_come_back() {
        let slots = Slots::new(0);
        assert!(
            tokio::time::timeout(Duration::from_secs(1), slots.acquire())
                .await
                .is_err(),
            "no slot without a share"
        );
        slots.set(3);
        let (a, b, c) = (
            slots.acquire().await,
            slots.acquire().await,
            slots.acquire().await,
        );
        slots.set(1);
        assert_eq!((slots.wanted(), slots.held()), (1, 3));
        drop(a);
        assert_eq!(slots.held(), 2);
        drop(b);
        assert_eq!(slots.held(), 1);
        assert!(
            tokio::time::timeout(Duration::from_secs(1), slots.acquire())
                .await
                .is_err(),
            "the one slot is still in use"
        );
        drop(c);
        let d = slots.acquire().await;
        slots.set(2);
        assert_eq!(slots.held(), 2);
        let e = slots.acquire().await;
        drop((d, e));
        slots.set(0);
        assert_eq!(slots.held(), 0, "free slots go at once");
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
        let other = gates.enter("/connections/2", false).await;
        assert_eq!(other.held_until(), None, "another resource is not held");
        drop((read, other));
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

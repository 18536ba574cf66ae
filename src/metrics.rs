//! The `/metrics` exposition in the OpenMetrics text format, through `prometheus-client`: this
//! process's own metrics (upstream calls and their latency, step attempts, rate-limiter waits,
//! circuit breaker, heap), kept in atomics and incremented on the hot path, and the figures read
//! from the database at scrape time (`crate::store::metrics`), set on a registry built per scrape.
//!
//! Every label is a typed set of enums whose values are fixed vocabularies (methods, status
//! classes, step kinds, outcomes, states, scopes): never an id, a reference, a pseudonym, a
//! message or any other value that could carry personal data.

use std::fmt::{self, Write};
use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::domain::{Scope, State, StepKind};
use crate::store::metrics::{Figures, RestorationState};

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric name starts with this and `_`.
const PREFIX: &str = "erasure";

/// Upper bounds (seconds) of the upstream latency histogram.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Label values written as their fixed names.
macro_rules! label_values {
    ($($t:ty),* $(,)?) => {$(
        impl EncodeLabelValue for $t {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
                encoder.write_str(self.as_str())
            }
        }
    )*};
}

/// The HTTP method of an upstream call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamMethod {
    Get,
    Delete,
    Post,
    Other,
}

impl UpstreamMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamMethod::Get => "GET",
            UpstreamMethod::Delete => "DELETE",
            UpstreamMethod::Post => "POST",
            UpstreamMethod::Other => "OTHER",
        }
    }
}

impl From<&reqwest::Method> for UpstreamMethod {
    fn from(m: &reqwest::Method) -> Self {
        match *m {
            reqwest::Method::GET => UpstreamMethod::Get,
            reqwest::Method::DELETE => UpstreamMethod::Delete,
            reqwest::Method::POST => UpstreamMethod::Post,
            _ => UpstreamMethod::Other,
        }
    }
}

/// The class of an upstream answer's status; `error` when there was none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusClass {
    Success,
    Redirect,
    TooManyRequests,
    ClientError,
    ServerError,
    NoAnswer,
}

impl StatusClass {
    pub fn of(status: Option<u16>) -> Self {
        match status {
            None => StatusClass::NoAnswer,
            Some(s) if s < 300 => StatusClass::Success,
            Some(s) if s < 400 => StatusClass::Redirect,
            Some(429) => StatusClass::TooManyRequests,
            Some(s) if s < 500 => StatusClass::ClientError,
            Some(_) => StatusClass::ServerError,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StatusClass::Success => "2xx",
            StatusClass::Redirect => "3xx",
            StatusClass::TooManyRequests => "429",
            StatusClass::ClientError => "4xx",
            StatusClass::ServerError => "5xx",
            StatusClass::NoAnswer => "error",
        }
    }
}

/// How a step attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptOutcome {
    Done,
    Retry,
    Failed,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Done => "done",
            AttemptOutcome::Retry => "retry",
            AttemptOutcome::Failed => "failed",
        }
    }
}

/// What the heap gauge measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum HeapKind {
    Allocated,
    Resident,
}

impl HeapKind {
    fn as_str(self) -> &'static str {
        match self {
            HeapKind::Allocated => "allocated",
            HeapKind::Resident => "resident",
        }
    }
}

/// The step jobs' states as `erasure_jobs` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum JobState {
    Queued,
    Running,
    Retrying,
    Paused,
}

impl JobState {
    fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Retrying => "retrying",
            JobState::Paused => "paused",
        }
    }
}

label_values!(
    UpstreamMethod,
    StatusClass,
    AttemptOutcome,
    HeapKind,
    JobState,
    StepKind,
    State,
    Scope,
    RestorationState,
);

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CallLabels {
    method: UpstreamMethod,
    status_class: StatusClass,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AttemptLabels {
    step: StepKind,
    outcome: AttemptOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HeapLabels {
    kind: HeapKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    state: State,
    scope: Scope,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct JobLabels {
    state: JobState,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RestorationLabels {
    state: RestorationState,
}

/// This process's metrics and the registry that exposes them.
pub struct Metrics {
    registry: Registry,
    heap: Family<HeapLabels, Gauge>,
    upstream_calls: Family<CallLabels, Counter>,
    upstream_latency: Histogram,
    attempts: Family<AttemptLabels, Counter>,
    limiter_waits: Counter,
    limiter_wait_seconds: Counter<f64, AtomicU64>,
    breaker_state: Gauge,
    breaker_opened: Counter,
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::default)
}

/// The breaker's states as the gauge shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerGauge {
    Closed = 0,
    Open = 1,
    Probing = 2,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut m = Metrics {
            registry: Registry::with_prefix(PREFIX),
            heap: Family::default(),
            upstream_calls: Family::default(),
            upstream_latency: Histogram::new(BUCKETS),
            attempts: Family::default(),
            limiter_waits: Counter::default(),
            limiter_wait_seconds: Counter::default(),
            breaker_state: Gauge::default(),
            breaker_opened: Counter::default(),
        };
        let r = &mut m.registry;
        r.register_with_unit(
            "heap",
            "This process's heap: bytes in live allocations, and bytes the allocator holds in memory",
            Unit::Bytes,
            m.heap.clone(),
        );
        r.register(
            "upstream_calls",
            "Upstream calls by method and status class (this process)",
            m.upstream_calls.clone(),
        );
        r.register_with_unit(
            "upstream_call_duration",
            "Duration of upstream calls (this process)",
            Unit::Seconds,
            m.upstream_latency.clone(),
        );
        r.register(
            "step_attempts",
            "Step attempts by step and outcome (this process)",
            m.attempts.clone(),
        );
        r.register(
            "rate_limiter_waits",
            "Upstream calls that waited for the rate limiter (this process)",
            m.limiter_waits.clone(),
        );
        r.register_with_unit(
            "rate_limiter_wait",
            "Time upstream calls spent waiting for the rate limiter (this process)",
            Unit::Seconds,
            m.limiter_wait_seconds.clone(),
        );
        r.register(
            "circuit_breaker_state",
            "Upstream circuit breaker: 0 closed, 1 open, 2 probing (this process)",
            m.breaker_state.clone(),
        );
        r.register(
            "circuit_breaker_opened",
            "Times the upstream circuit breaker opened (this process)",
            m.breaker_opened.clone(),
        );
        m
    }
}

impl Metrics {
    /// One upstream call: its method, status (None: no answer) and duration.
    pub fn upstream_call(&self, method: UpstreamMethod, status: Option<u16>, took: Duration) {
        let labels = CallLabels {
            method,
            status_class: StatusClass::of(status),
        };
        self.upstream_calls.get_or_create(&labels).inc();
        self.upstream_latency.observe(took.as_secs_f64());
    }

    /// One step attempt's outcome.
    pub fn attempt(&self, step: StepKind, outcome: AttemptOutcome) {
        self.attempts
            .get_or_create(&AttemptLabels { step, outcome })
            .inc();
    }

    /// A call waited for the rate limiter.
    pub fn limiter_wait(&self, waited: Duration) {
        self.limiter_waits.inc();
        self.limiter_wait_seconds.inc_by(waited.as_secs_f64());
    }

    pub fn breaker(&self, state: BreakerGauge) {
        let before = self.breaker_state.set(state as i64);
        if state == BreakerGauge::Open && before != BreakerGauge::Open as i64 {
            self.breaker_opened.inc();
        }
    }

    /// Appends this process's metrics (without the closing `# EOF`), the heap read now.
    fn encode(&self, out: &mut String) -> fmt::Result {
        if let Some((allocated, resident)) = heap() {
            for (kind, bytes) in [
                (HeapKind::Allocated, allocated),
                (HeapKind::Resident, resident),
            ] {
                self.heap
                    .get_or_create(&HeapLabels { kind })
                    .set(i64::try_from(bytes).unwrap_or(i64::MAX));
            }
        }
        encode_registry(out, &self.registry)
    }
}

/// The whole `/metrics` exposition: the database's figures, then this process's metrics, then
/// `# EOF`.
pub fn exposition(figures: &Figures) -> String {
    let mut out = String::new();
    encode_registry(&mut out, &figures_registry(figures))
        .and_then(|()| global().encode(&mut out))
        .and_then(|()| encode_eof(&mut out))
        .expect("writing to a String cannot fail");
    out
}

/// The database's figures on a registry of their own, made for this scrape: each scrape sets its
/// own values and label sets (a state with no request disappears, as it does from the query),
/// and concurrent scrapes share nothing.
fn figures_registry(f: &Figures) -> Registry {
    let mut r = Registry::with_prefix(PREFIX);

    let requests = Family::<RequestLabels, Gauge>::default();
    for &(state, scope, n) in &f.requests {
        requests
            .get_or_create(&RequestLabels { state, scope })
            .set(n);
    }
    r.register("requests", "Erasure requests by state and scope", requests);
    r.register(
        "requests_overdue",
        "Open requests past their due date (one month after receipt, moved by extensions)",
        ConstGauge::new(f.overdue),
    );
    r.register(
        "requests_due_within_7_days",
        "Open requests due within the next 7 days",
        ConstGauge::new(f.due_within_7_days),
    );

    let jobs = Family::<JobLabels, Gauge>::default();
    for (state, n) in [
        (JobState::Queued, f.jobs.queued),
        (JobState::Running, f.jobs.running),
        (JobState::Retrying, f.jobs.retrying),
        (JobState::Paused, f.jobs.paused),
    ] {
        jobs.get_or_create(&JobLabels { state }).set(n);
    }
    r.register(
        "jobs",
        "Step jobs: queued (ready, never failed), running (leased), retrying (ready again after a failure), paused (held or awaiting approval)",
        jobs,
    );

    r.register(
        "audit_entries",
        "Audit entries written (highest entry id)",
        ConstGauge::new(f.audit_entries),
    );
    r.register(
        "audit_tree_size",
        "Audit entries sequenced into the Merkle tree",
        ConstGauge::new(f.audit_tree_size),
    );
    if let Some(age) = f.checkpoint_age_seconds {
        r.register_with_unit(
            "audit_checkpoint_age",
            "Seconds since the last signed checkpoint",
            Unit::Seconds,
            ConstGauge::new(age),
        );
    }

    r.register(
        "resurrections",
        "Erased accounts listed again upstream (and erased again)",
        ConstCounter::new(u64::try_from(f.resurrections).unwrap_or(0)),
    );
    r.register(
        "resurrection_recurring_connections",
        "Connections whose erased accounts came back repeatedly: erase the connection instead",
        ConstGauge::new(f.recurring_connections),
    );

    let restorations = Family::<RestorationLabels, Gauge>::default();
    for &(state, n) in &f.restorations {
        restorations
            .get_or_create(&RestorationLabels { state })
            .set(n);
    }
    r.register("restorations", "Restorations by state", restorations);

    let failing = f.last_reverification.is_some_and(|last| !last.passed);
    r.register(
        "reverification_failing",
        "1 when the last re-verification found erased targets upstream again or could not finish",
        ConstGauge::new(i64::from(failing)),
    );
    if let Some(last) = f.last_reverification {
        r.register_with_unit(
            "reverification_last_finished",
            "When the last re-verification finished (Unix time)",
            Unit::Seconds,
            ConstGauge::new(last.finished_at),
        );
        r.register(
            "reverification_last_found",
            "Erased targets the last re-verification found upstream again",
            ConstGauge::new(last.found),
        );
    }

    r.register(
        "upstream_event_cursor",
        "Id of the last upstream event the guard applied",
        ConstGauge::new(f.event_cursor),
    );
    r
}

/// The allocator's figures (live bytes, resident bytes), refreshed now.
fn heap() -> Option<(usize, usize)> {
    use tikv_jemalloc_ctl::{epoch, stats};
    epoch::advance().ok()?;
    Some((
        stats::allocated::read().ok()?,
        stats::resident::read().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::metrics::{Jobs, Reverification};

    fn encoded(m: &Metrics) -> String {
        let mut out = String::new();
        m.encode(&mut out).unwrap();
        out
    }

    #[test]
    fn encodes_counters_and_a_cumulative_histogram_under_todays_names() {
        let m = Metrics::default();
        m.upstream_call(UpstreamMethod::Get, Some(200), Duration::from_millis(3));
        m.upstream_call(UpstreamMethod::Get, Some(503), Duration::from_millis(40));
        m.upstream_call(UpstreamMethod::Delete, None, Duration::from_secs(60));
        m.attempt(StepKind::Delete, AttemptOutcome::Retry);
        m.breaker(BreakerGauge::Open);
        m.breaker(BreakerGauge::Open);
        m.limiter_wait(Duration::from_millis(1500));
        let out = encoded(&m);
        for needed in [
            "erasure_upstream_calls_total{method=\"GET\",status_class=\"5xx\"} 1\n",
            "erasure_upstream_calls_total{method=\"DELETE\",status_class=\"error\"} 1\n",
            "erasure_upstream_call_duration_seconds_bucket{le=\"0.005\"} 1\n",
            "erasure_upstream_call_duration_seconds_bucket{le=\"0.05\"} 2\n",
            "erasure_upstream_call_duration_seconds_bucket{le=\"30.0\"} 2\n",
            "erasure_upstream_call_duration_seconds_bucket{le=\"+Inf\"} 3\n",
            "erasure_upstream_call_duration_seconds_count 3\n",
            "erasure_step_attempts_total{step=\"delete\",outcome=\"retry\"} 1\n",
            "erasure_rate_limiter_waits_total 1\n",
            "erasure_rate_limiter_wait_seconds_total 1.5\n",
            "erasure_circuit_breaker_state 1\n",
            "erasure_circuit_breaker_opened_total 1\n",
            "# TYPE erasure_upstream_calls counter\n",
            "# TYPE erasure_upstream_call_duration_seconds histogram\n",
            "# UNIT erasure_upstream_call_duration_seconds seconds\n",
            "# TYPE erasure_heap_bytes gauge\n",
        ] {
            assert!(out.contains(needed), "{needed} missing from:\n{out}");
        }
        assert!(out.contains("erasure_heap_bytes{kind=\"allocated\"} "));
        assert!(!out.contains(".."), "one full stop after each help:\n{out}");
    }

    #[test]
    fn database_figures_keep_their_names_and_labels() {
        let figures = Figures {
            requests: vec![
                (State::Completed, Scope::User, 3),
                (State::PendingApproval, Scope::Account, 1),
            ],
            overdue: 2,
            due_within_7_days: 4,
            jobs: Jobs {
                queued: 5,
                running: 6,
                retrying: 7,
                paused: 8,
            },
            audit_entries: 9,
            audit_tree_size: 8,
            checkpoint_age_seconds: Some(2.5),
            resurrections: 2,
            recurring_connections: 1,
            restorations: vec![(RestorationState::TimedOut, 1)],
            last_reverification: Some(Reverification {
                passed: false,
                finished_at: 1_700_000_000.0,
                found: 3,
            }),
            event_cursor: 42,
        };
        let out = exposition(&figures);
        for needed in [
            "erasure_requests{state=\"completed\",scope=\"user\"} 3\n",
            "erasure_requests{state=\"pending_approval\",scope=\"account\"} 1\n",
            "erasure_requests_overdue 2\n",
            "erasure_requests_due_within_7_days 4\n",
            "erasure_jobs{state=\"queued\"} 5\n",
            "erasure_jobs{state=\"paused\"} 8\n",
            "erasure_audit_entries 9\n",
            "erasure_audit_tree_size 8\n",
            "erasure_audit_checkpoint_age_seconds 2.5\n",
            "erasure_resurrections_total 2\n",
            "# TYPE erasure_resurrections counter\n",
            "erasure_resurrection_recurring_connections 1\n",
            "erasure_restorations{state=\"timed_out\"} 1\n",
            "erasure_reverification_failing 1\n",
            "erasure_reverification_last_finished_seconds 1700000000.0\n",
            "erasure_reverification_last_found 3\n",
            "erasure_upstream_event_cursor 42\n",
            "erasure_circuit_breaker_state ",
        ] {
            assert!(out.contains(needed), "{needed} missing from:\n{out}");
        }
        assert!(out.ends_with("\n# EOF\n") && out.matches("# EOF").count() == 1);

        let quiet = exposition(&Figures::default());
        assert!(quiet.contains("erasure_reverification_failing 0\n"));
        assert!(!quiet.contains("erasure_audit_checkpoint_age_seconds"));
        assert!(!quiet.contains("erasure_reverification_last_found"));
    }
}

//! This process's own metrics in the OpenMetrics text format, through `prometheus-client`:
//! upstream calls and their latency, step attempts, rate-limiter waits, circuit breaker, heap,
//! kept in atomics and incremented on the hot path. (The figures read from the database at
//! scrape time are `api::metrics`'s.) It depends on no part but `domain`, so any part may count.
//!
//! Every label is a typed set of enums whose values are fixed vocabularies (methods, status
//! classes, step kinds, outcomes, states, scopes): never an id, a reference, a pseudonym, a
//! message or any other value that could carry personal data.

use std::fmt::{self, Write};
use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::text::encode_registry;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::domain::StepKind;

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric name starts with this and `_`.
pub(crate) const PREFIX: &str = "erasure";

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
pub(crate) use label_values;

/// The HTTP method of an upstream call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::IntoStaticStr)]
#[strum(serialize_all = "UPPERCASE")]
pub enum UpstreamMethod {
    Get,
    Delete,
    Post,
    Other,
}

impl UpstreamMethod {
    pub fn as_str(self) -> &'static str {
        self.into()
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::IntoStaticStr)]
pub enum StatusClass {
    #[strum(serialize = "2xx")]
    Success,
    #[strum(serialize = "3xx")]
    Redirect,
    #[strum(serialize = "429")]
    TooManyRequests,
    #[strum(serialize = "4xx")]
    ClientError,
    #[strum(serialize = "5xx")]
    ServerError,
    #[strum(serialize = "error")]
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
        self.into()
    }
}

/// How a step attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum AttemptOutcome {
    Done,
    Retry,
    Failed,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// What the heap gauge measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
enum HeapKind {
    Allocated,
    Resident,
}

impl HeapKind {
    fn as_str(self) -> &'static str {
        self.into()
    }
}

label_values!(
    UpstreamMethod,
    StatusClass,
    AttemptOutcome,
    HeapKind,
    StepKind,
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
    limiter_rate: Gauge<f64, AtomicU64>,
    limiter_share: Gauge<f64, AtomicU64>,
    limiter_backoffs: Counter,
    concurrency_share: Gauge,
    processes: Gauge,
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
            limiter_rate: Gauge::default(),
            limiter_share: Gauge::default(),
            limiter_backoffs: Counter::default(),
            concurrency_share: Gauge::default(),
            processes: Gauge::default(),
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
            "rate_limiter_rate",
            "Upstream calls a second this process may make now: its share of \
             ERASURE_UPSTREAM_MAX_RPS less the back-off after 429s",
            m.limiter_rate.clone(),
        );
        r.register(
            "rate_limiter_share",
            "This process's share of ERASURE_UPSTREAM_MAX_RPS, calls a second (the deployment's \
             total, split among the processes that run workers)",
            m.limiter_share.clone(),
        );
        r.register(
            "rate_limiter_backoffs",
            "Times the rate limiter backed off for a burst of 429s (this process)",
            m.limiter_backoffs.clone(),
        );
        r.register(
            "upstream_concurrency_share",
            "This process's share of ERASURE_UPSTREAM_MAX_CONCURRENCY, concurrent calls",
            m.concurrency_share.clone(),
        );
        r.register(
            "upstream_processes",
            "Processes sharing the upstream caps (live leases as this process last saw them)",
            m.processes.clone(),
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

    /// The rate the limiter allows now.
    pub fn limiter_rate(&self, calls_per_sec: f64) {
        self.limiter_rate.set(calls_per_sec);
    }

    /// The limiter backed off after a 429, to this rate.
    pub fn limiter_backoff(&self, calls_per_sec: f64) {
        self.limiter_backoffs.inc();
        self.limiter_rate.set(calls_per_sec);
    }

    /// This process's share of the upstream caps, and how many processes share them.
    pub fn upstream_share(&self, calls_per_sec: f64, slots: usize, processes: usize) {
        self.limiter_share.set(calls_per_sec);
        self.concurrency_share
            .set(i64::try_from(slots).unwrap_or(i64::MAX));
        self.processes
            .set(i64::try_from(processes).unwrap_or(i64::MAX));
    }

    pub fn breaker(&self, state: BreakerGauge) {
        let before = self.breaker_state.set(state as i64);
        if state == BreakerGauge::Open && before != BreakerGauge::Open as i64 {
            self.breaker_opened.inc();
        }
    }

    /// Appends this process's metrics (without the closing `# EOF`), the heap read now.
    pub fn encode(&self, out: &mut String) -> fmt::Result {
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
        m.upstream_share(7.5, 2, 4);
        m.limiter_backoff(3.75);
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
            "erasure_rate_limiter_rate 3.75\n",
            "erasure_rate_limiter_share 7.5\n",
            "erasure_rate_limiter_backoffs_total 1\n",
            "erasure_upstream_concurrency_share 2\n",
            "erasure_upstream_processes 4\n",
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
}

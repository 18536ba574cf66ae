//! This process's own metrics (upstream calls, step attempts, rate-limiter waits, circuit
//! breaker), kept in memory and rendered in the Prometheus text format by `GET /metrics` next to
//! the figures read from the database. Labels are fixed vocabularies (methods, status classes,
//! step kinds, outcomes): never an id or any personal data.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Upper bounds (seconds) of the upstream latency histogram.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Default)]
struct Histogram {
    /// Non-cumulative counts per bucket, the last one for +Inf.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

#[derive(Default)]
pub struct Metrics {
    upstream_calls: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    upstream_latency: Histogram,
    attempts: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    limiter_waits: AtomicU64,
    limiter_wait_micros: AtomicU64,
    /// 0 closed, 1 open, 2 probing (half-open).
    breaker_state: AtomicU64,
    breaker_opened: AtomicU64,
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::default)
}

/// The breaker's states as the gauge shows them.
#[derive(Debug, Clone, Copy)]
pub enum BreakerGauge {
    Closed = 0,
    Open = 1,
    Probing = 2,
}

impl Metrics {
    /// One upstream call: its method, status (None: no answer) and duration.
    pub fn upstream_call(&self, method: &'static str, status: Option<u16>, took: Duration) {
        let class = match status {
            None => "error",
            Some(s) if s < 300 => "2xx",
            Some(s) if s < 400 => "3xx",
            Some(429) => "429",
            Some(s) if s < 500 => "4xx",
            Some(_) => "5xx",
        };
        *self
            .upstream_calls
            .lock()
            .expect("metrics lock")
            .entry((method, class))
            .or_default() += 1;
        let secs = took.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.upstream_latency.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.upstream_latency
            .sum_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// One step attempt's outcome (`done`, `retry`, `failed`).
    pub fn attempt(&self, step: &'static str, outcome: &'static str) {
        *self
            .attempts
            .lock()
            .expect("metrics lock")
            .entry((step, outcome))
            .or_default() += 1;
    }

    /// A call waited for the rate limiter.
    pub fn limiter_wait(&self, waited: Duration) {
        self.limiter_waits.fetch_add(1, Ordering::Relaxed);
        self.limiter_wait_micros
            .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn breaker(&self, state: BreakerGauge) {
        let before = self.breaker_state.swap(state as u64, Ordering::Relaxed);
        if matches!(state, BreakerGauge::Open) && before != BreakerGauge::Open as u64 {
            self.breaker_opened.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Appends this process's metrics in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        if let Some((allocated, resident)) = heap() {
            header(
                out,
                "erasure_heap_bytes",
                "gauge",
                "This process's heap: bytes in live allocations, and bytes the allocator holds in memory.",
            );
            let _ = writeln!(out, "erasure_heap_bytes{{kind=\"allocated\"}} {allocated}");
            let _ = writeln!(out, "erasure_heap_bytes{{kind=\"resident\"}} {resident}");
        }
        header(
            out,
            "erasure_upstream_calls_total",
            "counter",
            "Upstream calls by method and status class (this process).",
        );
        for ((method, class), n) in self.upstream_calls.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                out,
                "erasure_upstream_calls_total{{method=\"{method}\",status_class=\"{class}\"}} {n}"
            );
        }
        header(
            out,
            "erasure_upstream_call_duration_seconds",
            "histogram",
            "Duration of upstream calls (this process).",
        );
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.upstream_latency.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "erasure_upstream_call_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.upstream_latency.counts[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "erasure_upstream_call_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let sum = self.upstream_latency.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "erasure_upstream_call_duration_seconds_sum {sum}");
        let _ = writeln!(
            out,
            "erasure_upstream_call_duration_seconds_count {cumulative}"
        );

        header(
            out,
            "erasure_step_attempts_total",
            "counter",
            "Step attempts by step and outcome (this process).",
        );
        for ((step, outcome), n) in self.attempts.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                out,
                "erasure_step_attempts_total{{step=\"{step}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        header(
            out,
            "erasure_rate_limiter_waits_total",
            "counter",
            "Upstream calls that waited for the rate limiter (this process).",
        );
        let _ = writeln!(
            out,
            "erasure_rate_limiter_waits_total {}",
            self.limiter_waits.load(Ordering::Relaxed)
        );
        header(
            out,
            "erasure_rate_limiter_wait_seconds_total",
            "counter",
            "Time upstream calls spent waiting for the rate limiter (this process).",
        );
        let _ = writeln!(
            out,
            "erasure_rate_limiter_wait_seconds_total {}",
            self.limiter_wait_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        header(
            out,
            "erasure_circuit_breaker_state",
            "gauge",
            "Upstream circuit breaker: 0 closed, 1 open, 2 probing (this process).",
        );
        let _ = writeln!(
            out,
            "erasure_circuit_breaker_state {}",
            self.breaker_state.load(Ordering::Relaxed)
        );
        header(
            out,
            "erasure_circuit_breaker_opened_total",
            "counter",
            "Times the upstream circuit breaker opened (this process).",
        );
        let _ = writeln!(
            out,
            "erasure_circuit_breaker_opened_total {}",
            self.breaker_opened.load(Ordering::Relaxed)
        );
    }
}

/// The `# HELP` and `# TYPE` lines of a metric.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
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

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let m = Metrics::default();
        m.upstream_call("GET", Some(200), Duration::from_millis(3));
        m.upstream_call("GET", Some(503), Duration::from_millis(40));
        m.upstream_call("DELETE", None, Duration::from_secs(60));
        m.attempt("delete", "retry");
        m.breaker(BreakerGauge::Open);
        m.breaker(BreakerGauge::Open);
        let mut out = String::new();
        m.render(&mut out);
        assert!(
            out.contains("erasure_upstream_calls_total{method=\"GET\",status_class=\"5xx\"} 1")
        );
        assert!(
            out.contains(
                "erasure_upstream_calls_total{method=\"DELETE\",status_class=\"error\"} 1"
            )
        );
        assert!(out.contains("erasure_upstream_call_duration_seconds_bucket{le=\"0.005\"} 1"));
        assert!(out.contains("erasure_upstream_call_duration_seconds_bucket{le=\"0.05\"} 2"));
        assert!(out.contains("erasure_upstream_call_duration_seconds_bucket{le=\"30\"} 2"));
        assert!(out.contains("erasure_upstream_call_duration_seconds_bucket{le=\"+Inf\"} 3"));
        assert!(out.contains("erasure_step_attempts_total{step=\"delete\",outcome=\"retry\"} 1"));
        assert!(out.contains("erasure_circuit_breaker_state 1"));
        assert!(out.contains("erasure_circuit_breaker_opened_total 1"));
    }
}

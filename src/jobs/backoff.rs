//! The one backoff of every retry: exponential with full jitter, never sooner than the
//! upstream's `Retry-After`. A step's attempts and a restoration's take it through
//! [`RetryPolicy::delay`]; one upstream call's short retries within an attempt call
//! [`full_jitter`] with their own base and cap.
//!
//! Pure: no I/O, no clock.

use std::time::Duration;

use rand::Rng;

use crate::config::RetryPolicy;

/// The delay before retry `n` (1 for the first): uniform in [0, min(cap, base * 2^(n-1))], and
/// never less than `retry_after`.
pub fn full_jitter(
    base: Duration,
    cap: Duration,
    n: u32,
    retry_after: Option<Duration>,
) -> Duration {
    let exp = 2f64.powi(n.saturating_sub(1).min(40) as i32);
    let ceiling = (base.as_secs_f64() * exp).min(cap.as_secs_f64()).max(0.0);
    let jittered = Duration::from_secs_f64(rand::rng().random_range(0.0..=ceiling));
    jittered.max(retry_after.unwrap_or(Duration::ZERO))
}

impl RetryPolicy {
    /// The delay before attempt `attempt + 1` of a step or a restoration.
    pub fn delay(&self, attempt: i32, retry_after: Option<Duration>) -> Duration {
        full_jitter(self.base, self.cap, attempt.max(1) as u32, retry_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_are_capped_jittered_and_respect_retry_after() {
        let p = RetryPolicy {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
            max_attempts: 20,
        };
        let mut seen_small = false;
        for _ in 0..200 {
            let d = p.delay(10, None);
            assert!(d <= Duration::from_secs(60));
            seen_small |= d < Duration::from_secs(30);
            assert!(p.delay(1, None) <= Duration::from_secs(1));
            assert!(p.delay(3, Some(Duration::from_secs(7))) >= Duration::from_secs(7));
            let short = full_jitter(Duration::from_millis(100), Duration::from_secs(2), 30, None);
            assert!(short <= Duration::from_secs(2));
        }
        assert!(seen_small, "full jitter spreads delays");
    }
}

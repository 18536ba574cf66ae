//! Exponential backoff with full jitter, never sooner than the upstream's Retry-After.

use std::time::Duration;

use rand::Rng;

use crate::config::RetryPolicy;

impl RetryPolicy {
    /// The delay before attempt `attempt + 1`: uniform in [0, min(cap, base * 2^(attempt-1))],
    /// and never less than `retry_after`.
    pub fn delay(&self, attempt: i32, retry_after: Option<Duration>) -> Duration {
        let exp = 2f64.powi((attempt - 1).clamp(0, 40));
        let ceiling = (self.base.as_secs_f64() * exp).min(self.cap.as_secs_f64());
        let jittered = Duration::from_secs_f64(rand::rng().random_range(0.0..=ceiling.max(0.0)));
        jittered.max(retry_after.unwrap_or(Duration::ZERO))
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
        }
        assert!(seen_small, "full jitter spreads delays");
    }
}

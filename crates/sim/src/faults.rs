//! Fault injection of the simulator: what can go wrong on `/v2.1/*`, decided per call from an RNG.
//!
//! Never applies to `/token` (but for `token_unavailable`) or `/_sim/*`.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Fault settings, set at start (`SimConfig::faults`, `erasure sim --fault-*`) and at run time
/// (`GET`/`PUT /_sim/faults`). They apply to `/v2.1/*` only (never to `/_sim/*`, and to `/token`
/// only through `token_unavailable`).
/// `Default` turns everything off. In JSON every field is optional (missing = off/default) and
/// unknown fields are refused, so a typo cannot silently disable a test's fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Probability (0..=1) that a call answers a 5xx picked from `error_statuses`.
    pub error_rate: f64,
    /// The statuses a 5xx fault picks from, uniformly (500..=599). Default 500, 502, 503.
    pub error_statuses: Vec<u16>,
    /// When set, a 503 fault carries `Retry-After: <n>`.
    pub error_retry_after_secs: Option<u64>,
    /// Probability (0..=1) that a call answers 429 (an injected throttle, on top of `max_rps`).
    pub throttle_rate: f64,
    /// `Retry-After` of an injected 429.
    pub throttle_retry_after_secs: u64,
    /// Fixed latency added to every call.
    pub latency_ms: u64,
    /// Random latency added to every call, uniform in `0..=latency_jitter_ms`.
    pub latency_jitter_ms: u64,
    /// Probability (0..=1) that a call hangs for `hang_ms` (then answers 504 without doing anything).
    pub hang_rate: f64,
    /// How long a hanging call sleeps.
    pub hang_ms: u64,
    /// Probability (0..=1) that the TCP connection is shut down instead of answering: the client
    /// sees a connection error, never an HTTP status.
    pub drop_rate: f64,
    /// When > 0, a DELETE answers 204 (and does delete) but a GET of the deleted resource keeps
    /// answering 200 with the old body for this many seconds (eventual consistency).
    pub slow_delete_secs: f64,
    /// A LIST_ACCOUNTS synchronisation re-adds a deleted account under its former id (as an
    /// aggregator that keeps ids would) instead of a new one.
    pub readd_keeps_ids: bool,
    /// The next N account DELETEs that succeed are each followed at once, before the DELETE
    /// answers, by a LIST_ACCOUNTS synchronisation of the account's connection that re-adds it
    /// under its former id (a resynchronisation racing the erasure). Counted from when the faults
    /// are set; 0: off.
    pub relist_after_delete: u32,
    /// The next N token requests answer 503 with `Retry-After: 1` (an outage of the token
    /// endpoint). Counted from when the faults are set; 0: off.
    pub token_unavailable: u32,
    /// Probability (0..=1) that a call answers 200 with a body of `huge_body_bytes` (nothing done).
    pub huge_body_rate: f64,
    /// Size of a huge body (default 9 MiB, over the client's 8 MiB cap).
    pub huge_body_bytes: usize,
    /// Probability (0..=1) that a 2xx answer with a body carries truncated JSON instead (the
    /// call itself is done).
    pub bad_json_rate: f64,
    /// Probability (0..=1) that a 2xx answer with a body carries an HTML page as `text/html`
    /// instead (the call itself is done).
    pub wrong_content_type_rate: f64,
    /// Probability (0..=1) that a call answers `307` to the same path on another host (nothing
    /// done).
    pub redirect_rate: f64,
    /// Probability (0..=1) that a call answers 200 at once, then sends its JSON body one byte
    /// every `drip_ms` (nothing done).
    pub drip_rate: f64,
    /// Pause between the bytes of a dripping body.
    pub drip_ms: u64,
    /// Restricts the faults above (not `slow_delete_secs`, `readd_keeps_ids`,
    /// `relist_after_delete`) to these HTTP methods, e.g. `["DELETE"]`.
    /// Empty means every method.
    pub methods: Vec<String>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            error_rate: 0.0,
            error_statuses: vec![500, 502, 503],
            error_retry_after_secs: None,
            throttle_rate: 0.0,
            throttle_retry_after_secs: 1,
            latency_ms: 0,
            latency_jitter_ms: 0,
            hang_rate: 0.0,
            hang_ms: 30_000,
            drop_rate: 0.0,
            slow_delete_secs: 0.0,
            readd_keeps_ids: false,
            relist_after_delete: 0,
            token_unavailable: 0,
            huge_body_rate: 0.0,
            huge_body_bytes: 9 * 1024 * 1024,
            bad_json_rate: 0.0,
            wrong_content_type_rate: 0.0,
            redirect_rate: 0.0,
            drip_rate: 0.0,
            drip_ms: 200,
            methods: Vec::new(),
        }
    }
}

/// What the fault layer decided for one call.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Decision {
    Pass,
    Drop,
    Hang(Duration),
    Error {
        status: u16,
        retry_after: Option<u64>,
    },
    Throttle {
        retry_after: u64,
    },
    HugeBody(usize),
    BadJson,
    WrongContentType,
    Redirect,
    Drip(Duration),
}

impl Faults {
    /// Checks the settings; the message says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        for (name, p) in [
            ("error_rate", self.error_rate),
            ("throttle_rate", self.throttle_rate),
            ("hang_rate", self.hang_rate),
            ("drop_rate", self.drop_rate),
            ("huge_body_rate", self.huge_body_rate),
            ("bad_json_rate", self.bad_json_rate),
            ("wrong_content_type_rate", self.wrong_content_type_rate),
            ("redirect_rate", self.redirect_rate),
            ("drip_rate", self.drip_rate),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{name} must be between 0 and 1, got {p}"));
            }
        }
        if self.error_rate > 0.0 && self.error_statuses.is_empty() {
            return Err("error_statuses must not be empty when error_rate > 0".into());
        }
        if let Some(s) = self
            .error_statuses
            .iter()
            .find(|s| !(500..=599).contains(*s))
        {
            return Err(format!("error_statuses must be 5xx, got {s}"));
        }
        if !self.slow_delete_secs.is_finite() || self.slow_delete_secs < 0.0 {
            return Err("slow_delete_secs must be >= 0".into());
        }
        if self.huge_body_bytes > 256 * 1024 * 1024 {
            return Err("huge_body_bytes must be at most 256 MiB".into());
        }
        if self.drip_ms > 60_000 {
            return Err("drip_ms must be at most 60000".into());
        }
        if self.slow_delete_secs > 86_400.0 {
            return Err("slow_delete_secs must be at most one day".into());
        }
        Ok(())
    }

    /// True when no fault can fire (the fast path).
    pub(crate) fn is_off(&self) -> bool {
        self.error_rate <= 0.0
            && self.throttle_rate <= 0.0
            && self.latency_ms == 0
            && self.latency_jitter_ms == 0
            && self.hang_rate <= 0.0
            && self.drop_rate <= 0.0
            && self.huge_body_rate <= 0.0
            && self.bad_json_rate <= 0.0
            && self.wrong_content_type_rate <= 0.0
            && self.redirect_rate <= 0.0
            && self.drip_rate <= 0.0
    }

    fn applies_to(&self, method: &str) -> bool {
        self.methods.is_empty() || self.methods.iter().any(|m| m.eq_ignore_ascii_case(method))
    }

    /// Draws the fate of one call: the latency to add first, then what to answer.
    pub(crate) fn decide(&self, method: &str) -> (Duration, Decision) {
        if self.is_off() || !self.applies_to(method) {
            return (Duration::ZERO, Decision::Pass);
        }
        let mut rng = rand::rng();
        let mut latency = Duration::from_millis(self.latency_ms);
        if self.latency_jitter_ms > 0 {
            latency += Duration::from_millis(rng.random_range(0..=self.latency_jitter_ms));
        }
        let hit = |rng: &mut rand::rngs::ThreadRng, p: f64| p > 0.0 && rng.random_bool(p.min(1.0));
        let decision = if hit(&mut rng, self.drop_rate) {
            Decision::Drop
        } else if hit(&mut rng, self.hang_rate) {
            Decision::Hang(Duration::from_millis(self.hang_ms))
        } else if hit(&mut rng, self.error_rate) {
            let status = self.error_statuses[rng.random_range(0..self.error_statuses.len())];
            let retry_after = if status == 503 {
                self.error_retry_after_secs
            } else {
                None
            };
            Decision::Error {
                status,
                retry_after,
            }
        } else if hit(&mut rng, self.throttle_rate) {
            Decision::Throttle {
                retry_after: self.throttle_retry_after_secs,
            }
        } else if hit(&mut rng, self.huge_body_rate) {
            Decision::HugeBody(self.huge_body_bytes)
        } else if hit(&mut rng, self.bad_json_rate) {
            Decision::BadJson
        } else if hit(&mut rng, self.wrong_content_type_rate) {
            Decision::WrongContentType
        } else if hit(&mut rng, self.redirect_rate) {
            Decision::Redirect
        } else if hit(&mut rng, self.drip_rate) {
            Decision::Drip(Duration::from_millis(self.drip_ms))
        } else {
            Decision::Pass
        };
        (latency, decision)
    }
}

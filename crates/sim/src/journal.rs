//! The call journal (`/_sim/calls`): one record per `/token` and `/v2.1/*` call, in a bounded ring
//! buffer behind one mutex (a push is a few hundred nanoseconds, far below the cost of a call).
//!
//! It keeps paths and timings of fake data only; never grows beyond its capacity.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// One call as the simulator saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    /// Increasing from 1, in order of completion.
    pub seq: u64,
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// The query string, if any.
    pub query: Option<String>,
    /// The route template, e.g. `/v2.1/accounts/{id}` (the path itself when no route matched).
    pub route: String,
    /// The status sent; 0 when nothing was sent (dropped connection, client gone while hanging).
    pub status: u16,
    /// Unix time in milliseconds when the call arrived.
    pub started_at_ms: f64,
    /// Unix time in milliseconds when the answer was ready (or the call was abandoned).
    pub ended_at_ms: f64,
    /// `client`, `user` or `none` (no or invalid token).
    pub token_kind: String,
    /// The `Retry-After` sent, if any.
    pub retry_after_secs: Option<u64>,
    /// The caller's `User-Agent`, if any (erasure sends `erasure/<version> pid/<pid>`, so calls
    /// of different processes can be told apart).
    #[serde(default)]
    pub client: Option<String>,
    /// The injected fault, if any: `5xx`, `429`, `hang`, `drop`, `latency`, `slow_delete`.
    /// A 429 of the `max_rps` rate limit is not a fault: `null` with status 429.
    pub fault: Option<String>,
}

/// A record as kept in the ring (static strings where possible, so a push allocates little).
pub(crate) struct NewCall {
    pub method: Cow<'static, str>,
    pub path: String,
    pub query: Option<String>,
    pub route: Cow<'static, str>,
    pub status: u16,
    pub started_at_ms: f64,
    pub ended_at_ms: f64,
    pub token_kind: &'static str,
    pub retry_after_secs: Option<u64>,
    pub client: Option<String>,
    pub fault: Option<&'static str>,
}

impl NewCall {
    fn record(&self, seq: u64) -> CallRecord {
        CallRecord {
            seq,
            method: self.method.to_string(),
            path: self.path.clone(),
            query: self.query.clone(),
            route: self.route.to_string(),
            status: self.status,
            started_at_ms: self.started_at_ms,
            ended_at_ms: self.ended_at_ms,
            token_kind: self.token_kind.to_string(),
            retry_after_secs: self.retry_after_secs,
            client: self.client.clone(),
            fault: self.fault.map(str::to_string),
        }
    }
}

struct Ring {
    next_seq: u64,
    buf: VecDeque<(u64, NewCall)>,
}

pub(crate) struct Journal {
    capacity: usize,
    ring: Mutex<Ring>,
}

impl Journal {
    pub fn new(capacity: usize) -> Self {
        Journal {
            capacity,
            ring: Mutex::new(Ring {
                next_seq: 1,
                buf: VecDeque::with_capacity(capacity.min(65_536)),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push(&self, c: NewCall) {
        if self.capacity == 0 {
            return;
        }
        let mut ring = self.lock();
        let seq = ring.next_seq;
        ring.next_seq += 1;
        if ring.buf.len() >= self.capacity {
            ring.buf.pop_front();
        }
        ring.buf.push_back((seq, c));
    }

    /// Records with `seq > since`, oldest first, at most `limit`.
    pub fn since(&self, since: u64, limit: usize) -> Vec<CallRecord> {
        let ring = self.lock();
        let start = ring.buf.partition_point(|(seq, _)| *seq <= since);
        ring.buf
            .range(start..)
            .take(limit)
            .map(|(seq, c)| c.record(*seq))
            .collect()
    }

    /// Empties the journal; sequence numbers keep increasing.
    pub fn clear(&self) {
        self.lock().buf.clear();
    }
}

//! One rate limit and one concurrency cap for the whole deployment. `ERASURE_UPSTREAM_MAX_RPS`
//! and `ERASURE_UPSTREAM_MAX_CONCURRENCY` are totals for every process that shares the database;
//! each process that calls the upstream (one that runs workers) holds a share of them in
//! `upstream_shares`, under a lease it renews every `RENEW_EVERY`. PostgreSQL is the coordinator:
//! no other server.
//!
//! **Invariant.** The holdings of the live rows never sum above the caps, and no process uses
//! more than its row holds. Holdings change one process at a time (under an advisory lock, in one
//! transaction with the read of everyone else's), and a process
//! - raises its holding in the database first and uses the larger share only after the commit,
//!   and only into what nobody else holds (`cap - sum of the others' holdings`);
//! - lowers its use first (a smaller rate applies at once, to the call already waiting too;
//!   concurrent calls beyond a smaller share are taken out as they come back) and records the
//!   smaller holding after (the slots still out stay recorded until they are back);
//! - stops using its share when its lease runs out unrenewed (the database out of reach): by its
//!   own clock, counted from before the renewal began, so before the database lets anyone else
//!   take it. Then it sends nothing until a renewal succeeds.
//!
//! A process that dies keeps its holding until its lease runs out (at least
//! `LEASE - RENEW_EVERY`, longer than the one-second window the rate is counted in, so its last
//! calls are out of any window the taker's calls are in); the others look again just after the
//! lease ends and take it. A process that stops gracefully deletes its row after its last call:
//! its share is free at once. A new process starts with what is free, nothing while the others
//! hold it all: they give up what is beyond their new share at their next renewal (at most
//! `RENEW_EVERY`), and it takes that up at its next (`RENEW_SOON` while below its share). So a
//! joiner never overshoots and the caps hold through every change, with no waiting on timing
//! but the leases'.
//!
//! Each process's share (`split`): the oldest processes first, concurrency is split in whole
//! slots (the first `cap % n` get one more; with fewer slots than processes the youngest get none
//! and send nothing); the rate in whole calls a second likewise, the fraction to the youngest.
//! Each process's limiter keeps any one-second window to its rate even with calls arriving up to
//! 25 ms late (`upstream::RateLimiter`), so the processes' calls add up to at most
//! `ceil(max_rps)` in any second (`max_rps + 1` at worst, with a late timer at the edge). With
//! fewer calls a second than processes, each gets `max_rps / n`.
//!
//! The one exception: calls in flight when a lease ran out are not counted once the row is
//! gone (they end within the upstream time-out). Processes of a release before this one do not
//! take part: during such an upgrade they add their own per-process caps.
//!
//! Back-off after a 429 is each process's own (`upstream::RateLimiter`): every process calling
//! an upstream that throttles meets its 429s, so the whole deployment slows; it is not shared
//! through the table.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::Db;
use crate::store::shares::{self, Holder, Holding};
use crate::upstream::Upstream;

/// How often a process renews its lease and looks at the others' shares.
pub const RENEW_EVERY: Duration = Duration::from_secs(2);
/// How long a lease runs: three renewals, so one or two that fail cost nothing.
pub const LEASE: Duration = Duration::from_secs(6);
/// How soon a process looks again while it holds less than its share (others are giving theirs
/// up) or more (calls beyond it are still out).
const RENEW_SOON: Duration = Duration::from_millis(250);
/// How long after another process's lease ran out a process looks again to take its share.
const AFTER_EXPIRY: Duration = Duration::from_millis(50);

/// The share of the `index`-th of `n` processes (oldest first): calls a second and concurrent
/// calls. The shares of `0..n` sum to exactly `(rate, cap)`.
pub fn split(rate: f64, cap: usize, n: usize, index: usize) -> (f64, usize) {
    if index >= n {
        return (0.0, 0);
    }
    let slots = cap / n + usize::from(index < cap % n);
    if rate < n as f64 {
        return (rate / n as f64, slots);
    }
    let whole = rate.floor();
    let calls = whole as u64;
    let (n, index) = (n as u64, index as u64);
    let mut share = (calls / n + u64::from(index < calls % n)) as f64;
    if index == n - 1 {
        share += rate - whole;
    }
    (share, slots)
}

/// What this process holds before a round.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Local {
    rate: f64,
    /// Slots wanted.
    slots: usize,
}

/// The outcome of one round for this process.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Grant {
    /// Calls a second it may make.
    rate: f64,
    /// Concurrent calls it may make.
    slots: usize,
    /// Its share once the others have given theirs up.
    target: (f64, usize),
    processes: usize,
}

impl Grant {
    fn below_target(&self) -> bool {
        self.rate < self.target.0 || self.slots < self.target.1
    }
}

/// This process's grant from the live rows (`me` among them): a smaller share at once, a larger
/// one only out of what the others do not hold.
fn decide(caps: (f64, usize), me: Uuid, holders: &[Holder], local: Local) -> Grant {
    let n = holders.len();
    let index = holders.iter().position(|h| h.process_id == me).unwrap_or(n);
    let target = split(caps.0, caps.1, n, index);
    let others = holders.iter().filter(|h| h.process_id != me);
    let others_rate: f64 = others.clone().map(|h| h.rate).sum();
    let others_slots: usize = others.map(|h| h.concurrency as usize).sum();
    let rate = if local.rate >= target.0 {
        target.0
    } else {
        target.0.min((caps.0 - others_rate).max(local.rate))
    };
    let slots = if local.slots >= target.1 {
        target.1
    } else {
        target
            .1
            .min(caps.1.saturating_sub(others_slots).max(local.slots))
    };
    Grant {
        rate,
        slots,
        target,
        processes: n,
    }
}

/// This process's part in the sharing: renews its lease and keeps its upstream client's share
/// up to date, until `leave`.
pub struct Shares {
    id: Uuid,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Shares {
    /// Registers this process (a new id) and keeps `upstream`'s share up to date. The client
    /// sends nothing from now until the first round has granted it a share.
    pub fn start(db: Db, upstream: Arc<Upstream>) -> Self {
        upstream.set_share(0.0, 0);
        let id = Uuid::new_v4();
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(db, upstream, id, stop.clone()));
        Self { id, stop, task }
    }

    /// This process's id in `upstream_shares`.
    pub fn process_id(&self) -> Uuid {
        self.id
    }

    /// Gives the share back (call after the last upstream call): the row goes, so the others
    /// can take it at once.
    pub async fn leave(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }

    /// Stops renewing, as a crash would: the row stays until its lease runs out.
    pub async fn abort(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

async fn run(db: Db, upstream: Arc<Upstream>, me: Uuid, stop: CancellationToken) {
    // When the share granted last runs out unrenewed (this clock, from before its round).
    let mut valid_until: Option<Instant> = None;
    let mut shown: Option<((f64, usize), usize)> = None;
    let mut failing = false;
    let mut started = None;
    loop {
        let began = Instant::now();
        let deadline = valid_until.unwrap_or(began + LEASE);
        let round = tokio::select! {
            r = tokio::time::timeout_at(deadline, round(&db, &upstream, me, started)) => r,
            _ = stop.cancelled() => break,
        };
        let wait = match round {
            Ok(Ok((holders, grant))) => {
                valid_until = Some(began + LEASE);
                started = holders
                    .iter()
                    .find(|h| h.process_id == me)
                    .map(|h| h.started_at);
                if Instant::now() < began + LEASE {
                    upstream.set_share(grant.rate, grant.slots);
                }
                if failing {
                    tracing::info!("upstream share renewed again");
                    failing = false;
                }
                crate::metrics::global().upstream_share(grant.rate, grant.slots, grant.processes);
                crate::metrics::global().limiter_rate(upstream.rate());
                if shown != Some((grant.target, grant.processes)) {
                    shown = Some((grant.target, grant.processes));
                    announce(&upstream, &grant);
                }
                next_round(&upstream, me, &holders, &grant)
            }
            Ok(Err(e)) => {
                if !failing {
                    tracing::warn!(error = %e, "renewing the upstream share failed; retrying");
                    failing = true;
                }
                RENEW_SOON * 2
            }
            Err(_) => RENEW_SOON,
        };
        // Wait for the next round; a share whose lease runs out meanwhile is dropped first.
        let wake = Instant::now() + wait;
        loop {
            let now = Instant::now();
            if let Some(until) = valid_until
                && until <= now
            {
                lapse(&upstream);
                valid_until = None;
                failing = true;
            }
            if now >= wake {
                break;
            }
            let until = valid_until.map_or(wake, |v| v.min(wake));
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = stop.cancelled() => break,
            }
        }
        if stop.is_cancelled() {
            break;
        }
    }
    upstream.set_share(0.0, 0);
    if let Err(e) = shares::leave(&db, me).await {
        tracing::warn!(error = %e, "could not give the upstream share back; its lease will run out");
    }
}

/// One round: renew, look at the others, take what is due.
async fn round(
    db: &Db,
    upstream: &Upstream,
    me: Uuid,
    started: Option<DateTime<Utc>>,
) -> sqlx::Result<(Vec<Holder>, Grant)> {
    let (rate, held) = upstream.held();
    let now = Holding {
        rate,
        concurrency: u32::try_from(held).unwrap_or(u32::MAX),
    };
    shares::renew(db, me, started, LEASE, now, |holders| {
        let (rate, slots) = upstream.share();
        let local = Local { rate, slots };
        let grant = decide(upstream.caps(), me, holders, local);
        // Less at once, before it is recorded; more only after the commit.
        upstream.set_share(grant.rate.min(rate), grant.slots.min(slots));
        let held = upstream.held().1.max(grant.slots);
        let holding = Holding {
            rate: grant.rate,
            concurrency: u32::try_from(held).unwrap_or(u32::MAX),
        };
        (holding, grant)
    })
    .await
}

/// When to look again.
fn next_round(upstream: &Upstream, me: Uuid, holders: &[Holder], grant: &Grant) -> Duration {
    if grant.below_target() || upstream.held().1 > grant.slots {
        return RENEW_SOON;
    }
    holders
        .iter()
        .filter(|h| h.process_id != me && (h.rate > 0.0 || h.concurrency > 0))
        .map(|h| h.lease_left + AFTER_EXPIRY)
        .fold(RENEW_EVERY, Duration::min)
}

fn announce(upstream: &Upstream, grant: &Grant) {
    let (max_rps, max_concurrency) = upstream.caps();
    let (rate, slots) = grant.target;
    if slots == 0 || rate <= 0.0 {
        tracing::warn!(
            processes = grant.processes,
            max_rps,
            max_concurrency,
            "this process's share of the upstream caps is nothing (more processes than \
             ERASURE_UPSTREAM_MAX_CONCURRENCY): it sends no upstream call and claims no step"
        );
    } else {
        tracing::info!(
            processes = grant.processes,
            calls_per_sec = rate,
            concurrency = slots,
            max_rps,
            max_concurrency,
            "upstream share of this process"
        );
    }
}

fn lapse(upstream: &Upstream) {
    upstream.set_share(0.0, 0);
    crate::metrics::global().upstream_share(0.0, 0, 0);
    tracing::warn!(
        "the upstream share's lease ran out unrenewed (database out of reach?): no upstream call \
         until it is renewed"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_sum_to_the_caps_in_whole_calls_and_slots() {
        for n in 1..=12 {
            for (rate, cap) in [(30.0, 8), (30.5, 3), (7.0, 12), (0.4, 1), (100.0, 100)] {
                let shares: Vec<_> = (0..n).map(|i| split(rate, cap, n, i)).collect();
                let total: f64 = shares.iter().map(|s| s.0).sum();
                assert!((total - rate).abs() < 1e-9, "{rate} / {n}: {shares:?}");
                assert_eq!(shares.iter().map(|s| s.1).sum::<usize>(), cap);
                if rate >= n as f64 {
                    let ceilings: f64 = shares.iter().map(|s| s.0.ceil()).sum();
                    assert_eq!(ceilings, rate.ceil(), "{rate} / {n}: {shares:?}");
                }
            }
        }
        assert_eq!(split(30.0, 6, 4, 0), (8.0, 2));
        assert_eq!(split(30.0, 6, 4, 3), (7.0, 1));
        assert_eq!(split(30.5, 3, 4, 3), (7.5, 0));
        assert_eq!(split(2.0, 8, 4, 1), (0.5, 2));
    }

    fn holder(id: Uuid, rate: f64, concurrency: u32) -> Holder {
        Holder {
            process_id: id,
            started_at: DateTime::UNIX_EPOCH,
            rate,
            concurrency,
            lease_left: LEASE,
        }
    }

    fn local(rate: f64, slots: usize) -> Local {
        Local { rate, slots }
    }

    #[test]
    fn a_joiner_gets_only_what_nobody_holds_and_the_others_give_up_at_once() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let caps = (30.0, 6);
        // b joins while a holds everything.
        let rows = [holder(a, 30.0, 6), holder(b, 0.0, 0)];
        let g = decide(caps, b, &rows, local(0.0, 0));
        assert_eq!((g.rate, g.slots, g.target), (0.0, 0, (15.0, 3)));
        assert!(g.below_target());
        // a sees b and drops to its share at once.
        let g = decide(caps, a, &rows, local(30.0, 6));
        assert_eq!((g.rate, g.slots), (15.0, 3));
        // b takes up what a gave up.
        let rows = [holder(a, 15.0, 3), holder(b, 0.0, 0)];
        let g = decide(caps, b, &rows, local(0.0, 0));
        assert_eq!((g.rate, g.slots), (15.0, 3));
    }

    /// The `i`-th live process's round: (id, recorded holding, local use) of each.
    fn round_of(caps: (f64, usize), live: &mut [(Uuid, Holding, Local)], i: usize) {
        let holders: Vec<Holder> = live
            .iter()
            .map(|(id, h, _)| holder(*id, h.rate, h.concurrency))
            .collect();
        let (id, _, before) = live[i];
        let g = decide(caps, id, &holders, before);
        live[i].1 = Holding {
            rate: g.rate,
            concurrency: g.slots as u32,
        };
        live[i].2 = local(g.rate, g.slots);
    }

    /// Processes join, renew in any order, die and leave at random; after every round the
    /// recorded holdings of the live processes sum to at most the caps, and each process uses at
    /// most what it recorded.
    #[test]
    fn holdings_never_sum_above_the_caps_whatever_the_order_of_rounds() {
        let caps = (30.0, 7);
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut random = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        // (id, recorded holding, local use)
        let mut live: Vec<(Uuid, Holding, Local)> = Vec::new();
        let mut next_id = 0u128;
        for _ in 0..20_000 {
            match random(20) {
                0 if live.len() < 9 => {
                    next_id += 1;
                    let none = local(0.0, 0);
                    live.push((
                        Uuid::from_u128(next_id),
                        Holding {
                            rate: 0.0,
                            concurrency: 0,
                        },
                        none,
                    ));
                }
                1 if !live.is_empty() => {
                    live.remove(random(live.len() as u64) as usize);
                }
                _ if !live.is_empty() => {
                    let i = random(live.len() as u64) as usize;
                    round_of(caps, &mut live, i);
                }
                _ => {}
            }
            let rate: f64 = live.iter().map(|p| p.1.rate).sum();
            let slots: u32 = live.iter().map(|p| p.1.concurrency).sum();
            assert!(rate <= caps.0 + 1e-9, "{rate}: {live:?}");
            assert!(slots as usize <= caps.1, "{slots}: {live:?}");
            for (_, h, l) in &live {
                assert!(l.rate <= h.rate && l.slots as u32 <= h.concurrency);
            }
        }
        // Left alone, the survivors reach their shares.
        for _ in 0..3 {
            for i in 0..live.len() {
                round_of(caps, &mut live, i);
            }
        }
        let rate: f64 = live.iter().map(|p| p.1.rate).sum();
        assert!(live.is_empty() || (rate - caps.0).abs() < 1e-9, "{live:?}");
    }
}

//! Workers: claim ready steps, run them against the upstream, record the outcome, retry with
//! backoff, rescue expired leases, and stop gracefully. The engine never writes SQL (the store's
//! `steps` and `ready` do) and never holds a transaction open while it calls the upstream.

pub mod pause;
mod run;
pub mod shares;

use crate::config::EngineSettings;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::jobs::periodic::{self, First};
use crate::jobs::slot;

use crate::audit::pseudonym::Pseudonymizer;
use crate::audit::seal::Sealer;
use crate::store::ready::Ready;
use crate::store::{Db, requests, steps};
use crate::upstream::{Admission, Upstream};

/// Writers that record step outcomes (`store::group`); the throughput figures of BENCHMARKS.md
/// (2026-11-29 evening) were measured with eight.
const RECORDERS: usize = 8;

/// How often each worker process looks for requests that became at risk, to audit them
/// (`store::requests::mark_at_risk`; the first look at start).
const AT_RISK_SWEEP_EVERY: Duration = Duration::from_secs(60);

/// How often a worker without a share of the upstream caps looks whether it has one.
const PAUSED_POLL: Duration = Duration::from_millis(100);

/// The shortest sleep of a claim loop that found nothing due: a step due but skipped (another
/// process was claiming it) is looked for again after this, not at once.
const MIN_WAIT: Duration = Duration::from_millis(10);

pub struct Engine {
    pub(crate) db: Db,
    pub(crate) upstream: Arc<Upstream>,
    pub(crate) sealer: Sealer,
    pub(crate) pseudonyms: Pseudonymizer,
    pub(crate) settings: EngineSettings,
    pub(crate) ready: Arc<Ready>,
    /// Records attempts' outcomes, many in one commit when many steps end at once.
    pub(crate) recorder: steps::Recorder,
    /// `ERASURE_AT_RISK_DAYS`.
    pub(crate) at_risk_days: u32,
}

impl Engine {
    pub fn new(
        db: Db,
        upstream: Arc<Upstream>,
        sealer: Sealer,
        pseudonyms: Pseudonymizer,
        settings: EngineSettings,
        ready: Arc<Ready>,
        at_risk_days: u32,
    ) -> Arc<Self> {
        Arc::new(Self {
            recorder: steps::recorder(db.clone(), RECORDERS),
            db,
            upstream,
            sealer,
            pseudonyms,
            settings,
            ready,
            at_risk_days,
        })
    }

    /// Runs until `shutdown` is cancelled; then stops claiming, lets running steps finish within
    /// the grace period, and gives back (unleases) what is left.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> anyhow::Result<()> {
        let background = CancellationToken::new();
        let rescuer = tokio::spawn(rescue(self.clone(), background.clone()));
        let sweeper = tokio::spawn(sweep_at_risk(self.clone(), background.clone()));
        let hard_stop = CancellationToken::new();
        let slots = Arc::new(Semaphore::new(self.settings.concurrency));
        let mut running = JoinSet::new();

        tracing::info!(concurrency = self.settings.concurrency, "workers started");
        while !shutdown.is_cancelled() {
            while running.try_join_next().is_some() {}
            // No share of the upstream caps (not granted yet, or its lease lapsed): nothing
            // claimed could be sent.
            if self.upstream.paused() {
                tokio::select! {
                    _ = tokio::time::sleep(self.settings.poll.min(PAUSED_POLL)) => {}
                    _ = shutdown.cancelled() => break,
                }
                continue;
            }
            let admission = self.upstream.breaker.admit();
            if let Admission::Wait(wait) = admission {
                tokio::select! {
                    _ = tokio::time::sleep(wait.min(self.settings.poll)) => {}
                    _ = shutdown.cancelled() => break,
                }
                continue;
            }
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => p.expect("semaphore never closed"),
                _ = shutdown.cancelled() => break,
            };
            // While the breaker probes, one step goes; otherwise as many as there are free slots.
            let wanted = match admission {
                Admission::Probe => 1,
                _ => (1 + slots.available_permits()).min(64),
            };
            // Listen before claiming, so a wake-up that arrives during the claim is not lost.
            let notified = self.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let claimed = steps::claim(&self.db, wanted as i64, self.settings.lease).await;
            let claimed = match claimed {
                Ok(claimed) if !claimed.is_empty() => claimed,
                other => {
                    if admission == Admission::Probe {
                        self.upstream.breaker.probe_unused();
                    }
                    drop(permit);
                    let wait = match other {
                        Err(e) => {
                            tracing::warn!(error = %e, "claiming steps failed; retrying");
                            self.settings.poll
                        }
                        // Until the next waiting step is due, if sooner than the next poll.
                        Ok(_) => match steps::next_due_in(&self.db).await {
                            Ok(Some(due)) => due.max(MIN_WAIT).min(self.settings.poll),
                            _ => self.settings.poll,
                        },
                    };
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.cancelled() => break,
                    }
                    continue;
                }
            };
            let mut permit = Some(permit);
            for step in claimed {
                let permit = match permit.take() {
                    Some(p) => p,
                    None => slots
                        .clone()
                        .acquire_owned()
                        .await
                        .expect("semaphore never closed"),
                };
                let engine = self.clone();
                let stop = hard_stop.clone();
                let stopping = shutdown.clone();
                // The step runs in its slot, and lends it to another step while it waits long
                // (a `Retry-After`, a call's retry delay: `jobs::slot`).
                running.spawn(slot::run_in(slots.clone(), permit, async move {
                    engine.run_step(step, stopping, stop).await;
                }));
            }
        }

        tracing::info!(
            in_flight = running.len(),
            "stopping: no more claims; letting running steps finish"
        );
        let grace = tokio::time::sleep(self.settings.shutdown_grace);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                next = running.join_next() => if next.is_none() { break },
                _ = &mut grace => {
                    tracing::warn!(left = running.len(), "grace period over: giving back unfinished steps");
                    hard_stop.cancel();
                    while running.join_next().await.is_some() {}
                    break;
                }
            }
        }
        background.cancel();
        let _ = rescuer.await;
        let _ = sweeper.await;
        tracing::info!("workers stopped");
        Ok(())
    }
}

/// Returns steps whose lease expired (a worker died) to the queue.
async fn rescue(engine: Arc<Engine>, stop: CancellationToken) {
    let every = (engine.settings.lease / 2).max(Duration::from_millis(100));
    periodic::every("rescue", every, First::AfterPeriod, stop, || async {
        let n = steps::rescue(&engine.db).await?;
        if n > 0 {
            tracing::info!(steps = n, "rescued steps whose lease expired");
            engine.ready.wake();
        }
        Ok(())
    })
    .await
}

/// Audits the requests that became at risk or overdue, at start and then every
/// `AT_RISK_SWEEP_EVERY`.
async fn sweep_at_risk(engine: Arc<Engine>, stop: CancellationToken) {
    periodic::every("at risk", AT_RISK_SWEEP_EVERY, First::Now, stop, || async {
        let n = requests::mark_at_risk(&engine.db, engine.at_risk_days).await?;
        if n > 0 {
            tracing::warn!(
                requests = n,
                "requests became at risk: their due date is near"
            );
        }
        let n = requests::mark_overdue(&engine.db).await?;
        if n > 0 {
            tracing::warn!(requests = n, "requests became overdue: past their due date");
        }
        Ok(())
    })
    .await
}

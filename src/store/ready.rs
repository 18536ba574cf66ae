//! Waking workers when steps become ready. This process's workers wake at once; other processes
//! hear one NOTIFY per `COALESCE` at most, sent on its own once the data has committed. (A NOTIFY
//! inside a writing transaction holds a database-wide lock through its commit's flush, so one per
//! intake serialised every intake: BENCHMARKS.md.) Workers also poll, so a lost wake-up delays a
//! step but never strands it.
//!
//! Both ends of the channel live here: `run` sends the NOTIFYs, `listen` receives them. A NOTIFY
//! is never sent inside a writing transaction, and never carries data: a wake-up only says "look".

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio::sync::futures::Notified;
use tokio_util::sync::CancellationToken;

use super::{Db, READY_CHANNEL, Sessions};

/// NOTIFYs to other processes are at most this often.
const COALESCE: Duration = Duration::from_millis(20);

#[derive(Default)]
pub struct Ready {
    local: Notify,
    pending: AtomicBool,
    send: Notify,
}

impl Ready {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Steps became ready (call after their transaction committed): wakes this process's
    /// workers and, shortly, every other process's.
    pub fn ring(&self) {
        self.local.notify_waiters();
        if !self.pending.swap(true, Ordering::AcqRel) {
            self.send.notify_one();
        }
    }

    /// Wakes this process's workers only.
    pub fn wake(&self) {
        self.local.notify_waiters();
    }

    /// Resolves at the next wake-up (enable it before looking for work, so none is missed).
    pub fn notified(&self) -> Notified<'_> {
        self.local.notified()
    }

    /// LISTENs for ready steps of other processes and wakes this process's workers, until
    /// `stop`; reconnects by itself. Polling covers any notification lost meanwhile. (A LISTEN
    /// needs a session: the direct URL behind a pooler.)
    pub async fn listen(self: Arc<Self>, sessions: Sessions, stop: CancellationToken) {
        while !stop.is_cancelled() {
            let mut listener = match PgListener::connect_with(sessions.pool()).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "LISTEN connection failed; polling meanwhile");
                    tokio::select! { _ = tokio::time::sleep(Duration::from_secs(1)) => continue, _ = stop.cancelled() => return }
                }
            };
            if let Err(e) = listener.listen(READY_CHANNEL).await {
                tracing::warn!(error = %e, "LISTEN failed; polling meanwhile");
                tokio::select! { _ = tokio::time::sleep(Duration::from_secs(1)) => continue, _ = stop.cancelled() => return }
            }
            loop {
                tokio::select! {
                    n = listener.try_recv() => match n {
                        Ok(Some(_)) => self.wake(),
                        // The connection dropped (Ok(None)) or failed: wake everyone to poll,
                        // reconnect.
                        Ok(None) | Err(_) => { self.wake(); break; }
                    },
                    _ = stop.cancelled() => return,
                }
            }
        }
    }

    /// Sends the NOTIFYs asked for by `ring`, until `stop`.
    pub async fn run(self: Arc<Self>, db: Db, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = self.send.notified() => {}
                _ = stop.cancelled() => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(COALESCE) => {}
                _ = stop.cancelled() => return,
            }
            self.pending.store(false, Ordering::Release);
            if let Err(e) = sqlx::query("select pg_notify($1, '')")
                .bind(READY_CHANNEL)
                .execute(&db)
                .await
            {
                tracing::warn!(error = %e, "could not notify other processes of ready steps; they will poll");
            }
        }
    }
}

//! The resurrection guard: a LIST_ACCOUNTS synchronisation re-adds accounts deleted earlier, so
//! the guard follows the upstream event stream, recognises erased accounts by their pseudonyms
//! and erases them again; deliberate restorations lift it; a periodic re-verification looks for
//! every completed erasure in the upstream listings.
//!
//! Several processes may run it against one database: the event cursor is advanced under a row
//! lock in the transaction of the events' effects, restorations are claimed with SKIP LOCKED and
//! one re-verification runs at a time.
//!
//! The guard is logic only: it never writes SQL (the store's `guard`, `restorations` and
//! `reverify` modules do) and never keeps a raw account id: listed accounts are pseudonymised in
//! memory and compared by their pseudonyms.

mod events;
pub mod restore;
mod reverify;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;

use crate::audit::pseudonym::Pseudonymizer;
use crate::audit::seal::Sealer;
use crate::config::GuardSettings;
use crate::store::guard;
use crate::store::ready::Ready;
use crate::store::{Db, Sessions};
use crate::upstream::Upstream;

pub struct Guard {
    db: Db,
    /// The event reader's session lock lives on one of these connections.
    sessions: Sessions,
    upstream: Arc<Upstream>,
    sealer: Sealer,
    pseudonyms: Pseudonymizer,
    settings: GuardSettings,
    ready: Arc<Ready>,
    /// A re-erasure was created since the workers were last woken.
    re_erased: AtomicBool,
}

impl Guard {
    pub fn new(
        db: Db,
        sessions: Sessions,
        upstream: Arc<Upstream>,
        sealer: Sealer,
        pseudonyms: Pseudonymizer,
        settings: GuardSettings,
        ready: Arc<Ready>,
    ) -> Arc<Self> {
        Arc::new(Self {
            db,
            sessions,
            upstream,
            sealer,
            pseudonyms,
            settings,
            ready,
            re_erased: AtomicBool::new(false),
        })
    }

    /// Wakes the workers for the re-erasures created (and committed) since the last call.
    fn wake_for_re_erasures(&self) {
        if self.re_erased.swap(false, Ordering::AcqRel) {
            self.ready.ring();
        }
    }

    /// Runs until `shutdown`: restorations, the event stream (when this process leads), then
    /// re-verification when due.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!("resurrection guard started");
        let mut leader = None;
        while !shutdown.is_cancelled() {
            if let Err(e) = self.restorations().await {
                tracing::warn!(error = %e, "starting or timing out restorations failed; retrying");
            }
            // While the upstream is down (circuit open) the events wait: the workers' probe
            // finds out when it is back.
            while !self.upstream.breaker.is_open() && self.leads(&mut leader).await {
                let consumed = self.consume().await;
                self.wake_for_re_erasures();
                match consumed {
                    Ok(true) if !shutdown.is_cancelled() => continue,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the upstream event stream failed; retrying");
                        break;
                    }
                }
            }
            if let Err(e) = self.reverify_if_due(&shutdown).await {
                tracing::error!(error = %e, "re-verification could not run; retrying");
            }
            self.wake_for_re_erasures();
            tokio::select! {
                _ = tokio::time::sleep(self.settings.poll) => {}
                _ = shutdown.cancelled() => break,
            }
        }
        tracing::info!("resurrection guard stopped");
        Ok(())
    }

    /// Whether this process reads the event stream: one process at a time does, the holder of a
    /// session advisory lock on its own connection. When that connection goes (the process died,
    /// the database restarted) the lock goes with it and another process takes over. (The
    /// cursor's row lock keeps events applied once even if two processes read at once.)
    async fn leads(&self, held: &mut Option<sqlx::PgConnection>) -> bool {
        if let Some(conn) = held {
            if guard::still_leads(conn).await {
                return true;
            }
            *held = None;
        }
        let Ok(conn) = self.sessions.pool().acquire().await else {
            return false;
        };
        let mut conn = conn.detach();
        if matches!(guard::try_lead(&mut conn).await, Ok(true)) {
            tracing::info!("this process now reads the upstream event stream");
            *held = Some(conn);
            true
        } else {
            false
        }
    }
}

/// An account as upstream lists it, pseudonymised in memory: the pseudonyms of its id and bank
/// references together (what an armed guard is compared with).
pub(crate) struct ListedAccount {
    pub id: String,
    pub refs: Vec<String>,
}

impl Guard {
    /// `None` when the account has no id that could be a target.
    pub(crate) fn pseudonymise(&self, account: &serde_json::Value) -> Option<ListedAccount> {
        let id = crate::upstream::id_field(account, "id")
            .filter(|i| crate::domain::validate::TargetId::parse(i).is_ok())?;
        let mut refs = self
            .pseudonyms
            .subject_refs(crate::domain::Scope::Account, &id);
        for (kind, value) in &crate::upstream::BankReferences::of(account).0 {
            refs.extend(self.pseudonyms.account_refs(kind, value));
        }
        Some(ListedAccount { id, refs })
    }

    /// Each listed account pseudonymised (`None` without a target id) with the armed guards it
    /// matches, most recently armed first: one query for the whole list.
    pub(crate) async fn match_listed(
        &self,
        tx: &mut sqlx::PgConnection,
        accounts: &[serde_json::Value],
    ) -> sqlx::Result<Vec<(Option<ListedAccount>, Vec<guard::Guarded>)>> {
        let listed: Vec<_> = accounts.iter().map(|a| self.pseudonymise(a)).collect();
        let lists: Vec<&[String]> = listed
            .iter()
            .map(|l| l.as_ref().map_or(&[][..], |l| &l.refs[..]))
            .collect();
        let guards = guard::matching(tx, &lists).await?;
        Ok(listed.into_iter().zip(guards).collect())
    }
}

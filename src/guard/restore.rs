//! Starting deliberate restorations upstream, and ending those whose events never came; and the
//! one check of whether a connection may come back, which the API asks before it accepts a
//! restoration (the API never calls the aggregator itself).

use std::sync::Arc;

use chrono::Utc;
use serde_json::Value;

use super::Guard;
use crate::audit::pseudonym::Pseudonymizer;
use crate::domain::Scope;
use crate::store::Db;
use crate::store::restorations::{self, Claimed, Refused};
use crate::upstream::{CallError, Upstream, id_field};

/// Whether a connection may come back, as far as this service and the upstream know.
pub enum Verdict {
    /// Nothing stands in the way; the connection as the upstream showed it.
    May(Value),
    /// It may not, for this reason.
    Refused(Refused),
    /// The upstream did not answer; ask again later.
    Unknown(CallError),
}

/// Checks that neither the connection nor its user is being, or was, erased (by their pseudonyms,
/// in the store) and that the upstream still has the connection. The API asks this before it
/// accepts a restoration, and the worker again before it synchronises.
pub async fn check(
    db: &Db,
    upstream: &Upstream,
    pseudonyms: &Pseudonymizer,
    connection: &str,
) -> sqlx::Result<Verdict> {
    if let Some(refused) = store_refusal(db, pseudonyms, connection).await? {
        return Ok(Verdict::Refused(refused));
    }
    let found = match upstream.connection(connection).await {
        Ok(Some(found)) => found,
        Ok(None) => return Ok(Verdict::Refused(Refused::ConnectionGone)),
        Err(e) => return Ok(Verdict::Unknown(e)),
    };
    if let Some(user) = id_field(&found, "user_id") {
        let refs = pseudonyms.subject_refs(Scope::User, &user);
        let mut conn = db.acquire().await?;
        if let Some(refused) = restorations::user_refusal(&mut conn, &refs).await? {
            return Ok(Verdict::Refused(refused));
        }
    }
    Ok(Verdict::May(found))
}

/// Why the connection may not come back, as far as this service knows (its erasure, by its
/// pseudonyms).
async fn store_refusal(
    db: &Db,
    pseudonyms: &Pseudonymizer,
    connection: &str,
) -> sqlx::Result<Option<Refused>> {
    let mut conn = db.acquire().await?;
    let refs = pseudonyms.subject_refs(Scope::Connection, connection);
    restorations::connection_refusal(&mut conn, &refs).await
}

/// The check as the API holds it, in processes that have an upstream client: it asks the check
/// above and keeps only the refusal (the API never names the aggregator's client).
#[derive(Clone)]
pub struct RestoreCheck {
    db: Db,
    upstream: Arc<Upstream>,
    pseudonyms: Pseudonymizer,
}

impl RestoreCheck {
    pub fn new(db: Db, upstream: Arc<Upstream>, pseudonyms: Pseudonymizer) -> Self {
        Self {
            db,
            upstream,
            pseudonyms,
        }
    }

    /// Why the connection may not come back, if this service or the upstream says so now;
    /// `None` also when the upstream did not answer (the worker asks again before it
    /// synchronises). While upstream work is paused the upstream is not asked (a request never
    /// waits for a resume): only this service's refusals apply.
    pub async fn refusal(&self, connection: &str) -> sqlx::Result<Option<Refused>> {
        let asked = check(&self.db, &self.upstream, &self.pseudonyms, connection);
        let verdict = tokio::select! {
            verdict = asked => verdict?,
            _ = self.upstream.until_on_hold() => {
                return store_refusal(&self.db, &self.pseudonyms, connection).await;
            }
        };
        Ok(match verdict {
            Verdict::Refused(r) => Some(r),
            Verdict::May(_) | Verdict::Unknown(_) => None,
        })
    }
}

/// A claimed restoration is not offered to another worker for this long.
const LEASE: std::time::Duration = std::time::Duration::from_secs(60);

impl Guard {
    /// Times out late restorations and starts the pending ones that are due.
    pub(super) async fn restorations(&self) -> anyhow::Result<()> {
        let late = restorations::time_out(&self.db).await?;
        if late > 0 {
            tracing::warn!(
                restorations = late,
                "restorations timed out waiting for their synchronisation"
            );
        }
        while let Some(claimed) = restorations::claim(&self.db, LEASE).await? {
            self.start(claimed).await?;
        }
        Ok(())
    }

    /// Checks again that the connection may come back, marks the restoration as waiting (from
    /// then on the connection's events are its own), and starts the LIST_ACCOUNTS
    /// synchronisation.
    async fn start(&self, c: Claimed) -> anyhow::Result<()> {
        let Some(sealed) = c.connection_sealed.as_deref() else {
            return self.fail(&c, "the connection id is no longer held").await;
        };
        let connection = String::from_utf8(self.sealer.open(c.lease.id, sealed)?)?;
        let found = match check(&self.db, &self.upstream, &self.pseudonyms, &connection).await? {
            Verdict::May(found) => found,
            Verdict::Refused(refused) => return self.refuse(&c, refused).await,
            Verdict::Unknown(e) => return self.later(&c, e).await,
        };
        let expected = found
            .get("channels")
            .and_then(Value::as_array)
            .map(|channels| {
                channels
                    .iter()
                    .filter(|ch| ch.get("status").and_then(Value::as_str) != Some("EMPTY"))
                    .count()
            })
            .unwrap_or(0);
        if expected == 0 {
            return self
                .fail(&c, "refused: no channel of the connection has credentials, so nothing can be listed")
                .await;
        }
        let timeout = self.settings.restoration_timeout;
        if !restorations::start_waiting(&self.db, &c.lease, expected as i32, timeout).await? {
            return Ok(());
        }
        match self.upstream.list_accounts_sync(&connection).await {
            Ok(true) => {
                tracing::info!(restoration = %c.lease.id, "LIST_ACCOUNTS synchronisation started");
                Ok(())
            }
            Ok(false) => {
                self.fail(&c, "refused: the connection no longer exists upstream")
                    .await
            }
            Err(e) => self.later(&c, e).await,
        }
    }

    async fn refuse(&self, c: &Claimed, refused: Refused) -> anyhow::Result<()> {
        self.fail(c, &format!("refused: {}", refused.message()))
            .await
    }

    async fn fail(&self, c: &Claimed, why: &str) -> anyhow::Result<()> {
        let mut tx = self.db.begin().await?;
        restorations::finish(&mut tx, c.lease.id, "failed", Some(why)).await?;
        tx.commit().await?;
        tracing::warn!(restoration = %c.lease.id, reason = why, "restoration failed");
        Ok(())
    }

    /// A call failed: transient failures are tried again with backoff, up to the attempt limit.
    async fn later(&self, c: &Claimed, e: CallError) -> anyhow::Result<()> {
        let policy = &self.settings.retry;
        match e {
            CallError::Transient {
                reason,
                retry_after,
                ..
            } if !policy.exhausted(c.attempts) => {
                let delay = policy.delay(c.attempts, retry_after);
                let at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
                restorations::retry_later(&self.db, c.lease.id, &reason, at).await?;
                Ok(())
            }
            CallError::Transient { reason, .. } => {
                let why = format!("gave up after {} attempts: {reason}", c.attempts);
                self.fail(c, &why).await
            }
            CallError::Permanent { reason } => self.fail(c, &reason).await,
        }
    }
}

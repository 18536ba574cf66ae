//! Starting deliberate restorations upstream, and ending those whose events never came.

use chrono::Utc;

use super::Guard;
use crate::domain::Scope;
use crate::store::restorations::{self, Claimed, Refused};
use crate::upstream::{CallError, id_field};

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
        let connection = String::from_utf8(self.sealer.open(c.id, sealed)?)?;
        let mut conn = self.db.acquire().await?;
        let refs = self.pseudonyms.subject_refs(Scope::Connection, &connection);
        if let Some(refused) = restorations::connection_refusal(&mut conn, &refs).await? {
            return self.refuse(&c, refused).await;
        }
        let found = match self.upstream.connection(&connection).await {
            Ok(Some(found)) => found,
            Ok(None) => return self.refuse(&c, Refused::ConnectionGone).await,
            Err(e) => return self.later(&c, e).await,
        };
        if let Some(user) = id_field(&found, "user_id") {
            let refs = self.pseudonyms.subject_refs(Scope::User, &user);
            if let Some(refused) = restorations::user_refusal(&mut conn, &refs).await? {
                return self.refuse(&c, refused).await;
            }
        }
        drop(conn);
        let expected = found
            .get("channels")
            .and_then(serde_json::Value::as_array)
            .map(|channels| {
                channels
                    .iter()
                    .filter(|ch| {
                        ch.get("status").and_then(serde_json::Value::as_str) != Some("EMPTY")
                    })
                    .count()
            })
            .unwrap_or(0);
        if expected == 0 {
            return self
                .fail(&c, "refused: no channel of the connection has credentials, so nothing can be listed")
                .await;
        }
        let timeout = self.settings.restoration_timeout;
        if !restorations::start_waiting(&self.db, c.id, expected as i32, timeout).await? {
            return Ok(());
        }
        match self.upstream.list_accounts_sync(&connection).await {
            Ok(true) => {
                tracing::info!(restoration = %c.id, "LIST_ACCOUNTS synchronisation started");
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
        restorations::finish(&mut tx, c.id, "failed", Some(why)).await?;
        tx.commit().await?;
        tracing::warn!(restoration = %c.id, reason = why, "restoration failed");
        Ok(())
    }

    /// A call failed: transient failures are tried again with backoff, up to the attempt limit.
    async fn later(&self, c: &Claimed, e: CallError) -> anyhow::Result<()> {
        let policy = &self.settings.retry;
        match e {
            CallError::Transient {
                reason,
                retry_after,
            } if c.attempts < policy.max_attempts => {
                let delay = policy.delay(c.attempts, retry_after);
                let at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
                restorations::retry_later(&self.db, c.id, &reason, at).await?;
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

//! Periodic re-verification: every completed erasure is looked for in the upstream listings (all
//! connections and all accounts the application can see), pseudonymised in memory. The raw ids of
//! completed erasures are not kept (invariant 2), so the listings are the only way to look; this
//! checks every erasure, not a sample. A target found again is an alert: an error log line, an
//! audit entry, a failed run, and a new erasure linked to the original. It never writes SQL (the
//! runs and look-ups are `store::reverify`'s) and keeps no raw id beyond the page in hand.

use crate::domain::events::{Event, ReverificationFailedData, data_of};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;

use super::{Guard, ListedAccount};
use crate::domain::Scope;
use crate::domain::validate::TargetId;
use crate::store;
use crate::store::audit::{self, Entry};
use crate::store::guard::{self, GUARD};
use crate::store::restorations;
use crate::store::reverify::{Ended, Erased};
use crate::upstream::{Listing, id_field};

/// Items per listing page.
const PAGE: u32 = 500;

/// What one run saw.
#[derive(Debug, Default)]
struct Run {
    connections: i64,
    accounts: i64,
    found: i64,
}

impl Guard {
    /// Runs a re-verification when the last one started longer ago than the interval.
    pub(super) async fn reverify_if_due(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let Some(every) = self.settings.reverify_every else {
            return Ok(());
        };
        store::reverify::abandon_stale(&self.db).await?;
        let Some(run_id) = store::reverify::start_if_due(&self.db, every).await? else {
            return Ok(());
        };
        tracing::info!(
            run = run_id,
            "re-verification of completed erasures started"
        );
        let mut run = Run::default();
        let result = self.reverify(run_id, &mut run, shutdown).await;
        let checked = store::reverify::completed_erasures(&self.db).await?;
        let (state, error) = match &result {
            Ok(()) if run.found == 0 => ("passed", None),
            Ok(()) => ("failed", None),
            Err(e) => ("error", Some(e.to_string())),
        };
        let ended = Ended {
            result: state,
            error: error.as_deref(),
            connections_listed: run.connections,
            accounts_listed: run.accounts,
            erasures_checked: checked,
            found: run.found,
        };
        store::reverify::finish(&self.db, run_id, &ended).await?;
        match state {
            "passed" => tracing::info!(run = run_id, checked, "re-verification passed"),
            "failed" => tracing::error!(
                run = run_id,
                found = run.found,
                "ALERT: re-verification found erased targets upstream again; they are being erased again"
            ),
            _ => tracing::error!(
                run = run_id,
                error = error.as_deref().unwrap_or(""),
                "re-verification could not finish"
            ),
        }
        Ok(())
    }

    async fn reverify(
        &self,
        run_id: i64,
        run: &mut Run,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let source = format!("reverification:{run_id}");
        for listing in [Listing::Connections, Listing::Accounts] {
            for page in 1.. {
                if shutdown.is_cancelled() {
                    anyhow::bail!("stopped by shutdown");
                }
                let listed_at = store::db_now(&self.db).await?;
                let items = self.upstream.list_page(listing, page, PAGE).await?;
                let mut tx = self.db.begin().await?;
                run.found += match listing {
                    Listing::Connections => {
                        run.connections += items.len() as i64;
                        self.connections_found_again(&mut tx, &items, listed_at, &source)
                            .await?
                    }
                    Listing::Accounts => {
                        run.accounts += items.len() as i64;
                        self.accounts_found_again(&mut tx, &items, listed_at, &source)
                            .await?
                    }
                };
                tx.commit().await?;
                if (items.len() as u32) < PAGE {
                    break;
                }
            }
        }
        Ok(())
    }

    /// The users and connections of a page of connections found again: how many.
    async fn connections_found_again(
        &self,
        tx: &mut PgConnection,
        items: &[Value],
        listed_at: DateTime<Utc>,
        source: &str,
    ) -> anyhow::Result<i64> {
        let mut found = 0;
        for item in items {
            let Some(connection) = valid_id(item, "id") else {
                continue;
            };
            found += self
                .found_again(tx, Scope::Connection, &connection, listed_at, source)
                .await?;
            if let Some(user) = valid_id(item, "user_id") {
                found += self
                    .found_again(tx, Scope::User, &user, listed_at, source)
                    .await?;
            }
        }
        Ok(found)
    }

    /// The accounts of a page of accounts found again: how many.
    async fn accounts_found_again(
        &self,
        tx: &mut PgConnection,
        items: &[Value],
        listed_at: DateTime<Utc>,
        source: &str,
    ) -> anyhow::Result<i64> {
        let mut found = 0;
        let matches = self.match_listed(tx, items).await?;
        for (item, (listed, guards)) in items.iter().zip(matches) {
            let Some(listed) = listed else {
                continue;
            };
            found += self
                .account_found_again(tx, item, &listed, &guards, listed_at, source)
                .await?;
        }
        Ok(found)
    }

    /// A user or connection listed upstream (the listing asked for at `listed_at`, by the
    /// database's clock) whose erasure completed before: 1 when found. An erasure that completed
    /// after the listing was asked for may have deleted the target after the upstream answered.
    async fn found_again(
        &self,
        tx: &mut PgConnection,
        scope: Scope,
        id: &str,
        listed_at: DateTime<Utc>,
        source: &str,
    ) -> anyhow::Result<i64> {
        let refs = self.pseudonyms.subject_refs(scope, id);
        let Some(Erased {
            id: original,
            subject_ref,
        }) = store::reverify::completed_before(tx, &refs, listed_at).await?
        else {
            return Ok(0);
        };
        let re_erasure = self.re_erase(tx, original, scope, id).await?;
        // The request's row is locked before its entry is written, as for its other events, so
        // that its webhooks keep their order (docs/webhooks.md).
        guard::count_resurrection(tx, original).await?;
        audit::append(
            tx,
            Entry {
                request_id: Some(original),
                subject_ref: Some(&subject_ref),
                actor: GUARD,
                event: Event::ReverificationFailed,
                data: data_of(&ReverificationFailedData {
                    source: source.to_string(),
                    scope,
                    re_erasure_request: re_erasure,
                }),
            },
        )
        .await?;
        Ok(1)
    }

    /// An account listed upstream (asked for at `listed_at`) that the guard recognises as erased
    /// before: 1 when found. A guard armed after the listing was asked for may belong to a
    /// deletion the listing did not see yet, so it is left for the next run. Accounts of a
    /// connection being restored on purpose are left to the restoration.
    async fn account_found_again(
        &self,
        tx: &mut PgConnection,
        account: &Value,
        listed: &ListedAccount,
        guards: &[guard::Guarded],
        listed_at: DateTime<Utc>,
        source: &str,
    ) -> anyhow::Result<i64> {
        let Some(g) = guards.first() else {
            return Ok(0);
        };
        if guards.iter().any(|g| g.armed_at >= listed_at) {
            return Ok(0);
        }
        if let Some(connection) = valid_id(account, "connection_id") {
            let connection_refs = self.pseudonyms.subject_refs(Scope::Connection, &connection);
            if restorations::restoring(tx, &connection_refs).await? {
                return Ok(0);
            }
        }
        let Some(re_erasure) = self
            .re_erase(tx, g.root_request_id, Scope::Account, &listed.id)
            .await?
        else {
            // Already being erased again.
            return Ok(0);
        };
        guard::record_resurrection(tx, g, source, None, Some(re_erasure)).await?;
        Ok(1)
    }
}

/// An upstream id that can be a target (numeric), or nothing.
fn valid_id(value: &Value, field: &str) -> Option<String> {
    id_field(value, field).filter(|id| TargetId::parse(id).is_ok())
}

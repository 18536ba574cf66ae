//! Following the upstream event stream: each page of events takes effect in one transaction that
//! also advances the cursor, so after a crash the page is read again and nothing is done twice.
//! It never commits part of a page, and never writes SQL itself: the statements are the store's.
//!
//! A listing whose time (whole seconds) cannot be ordered against the deletion of an account it
//! names (`order`: the seconds around the deletion) is checked: the account is read upstream
//! before the page's transaction, and erased again if it is there. It is never ignored.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use chrono::Utc;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::Guard;
use crate::domain::events::Event;
use crate::domain::events::data_of;
use crate::domain::records;
use crate::domain::{Scope, State};
use crate::store::audit::{self, Entry};
use crate::store::guard::{self, GUARD, Guarded};
use crate::store::requests::{self, Inserted, NewRequest};
use crate::store::restorations::{self, Listed};
use crate::upstream::{CallError, id_field};

/// Events read per page (the upstream's maximum).
const PAGE: u32 = 100;

impl Guard {
    /// Applies the next page of events. True when the page was full (more may follow).
    pub(super) async fn consume(&self) -> anyhow::Result<bool> {
        let since = guard::cursor(&self.db).await?;
        let events = self.upstream.events(since as u64, PAGE).await?;
        if events.is_empty() {
            return Ok(false);
        }
        // Upstream reads happen before the transaction, never inside it.
        let checked = self.check_ambiguous(&events).await?;
        let mut tx = self.db.begin().await?;
        if guard::lock_cursor(&mut tx).await? != Some(since) {
            // Another process is applying (or has applied) this page.
            return Ok(false);
        }
        let mut last = since;
        for event in &events {
            let Some(id) = event_id(event) else {
                tracing::warn!("an upstream event without a numeric id was skipped");
                continue;
            };
            if id <= last {
                continue;
            }
            self.apply(&mut tx, id, event, &checked).await?;
            last = id;
        }
        guard::advance_cursor(&mut tx, last).await?;
        tx.commit().await?;
        tracing::debug!(from = since, to = last, "upstream events applied");
        Ok(events.len() as u32 >= PAGE)
    }

    /// The accounts that listings of `events` name within the seconds of their deletion
    /// (`Order::Ambiguous`), each read upstream: whether it is there. A permanent refusal of the
    /// read counts as there (the re-erasure then fails with the reason, for a person to see); a
    /// transient one fails the page, which is read again.
    async fn check_ambiguous(&self, events: &[Value]) -> anyhow::Result<HashMap<String, bool>> {
        let mut ambiguous = Vec::new();
        let mut conn = None;
        for event in events {
            if event.get("event_type").and_then(Value::as_str) != Some("LIST_ACCOUNTS_SUCCESS") {
                continue;
            }
            let accounts = listed_accounts(event);
            if accounts.is_empty() {
                continue;
            }
            let created_at = event.get("creation_date").and_then(Value::as_i64);
            let conn = match &mut conn {
                Some(conn) => conn,
                None => conn.insert(self.db.acquire().await?),
            };
            for (listed, guards) in self.match_listed(conn, accounts).await? {
                let Some(listed) = listed else {
                    continue;
                };
                if guards
                    .iter()
                    .any(|g| order(g, created_at) == Order::Ambiguous)
                    && !ambiguous.contains(&listed.id)
                {
                    ambiguous.push(listed.id);
                }
            }
        }
        drop(conn);
        let mut checked = HashMap::with_capacity(ambiguous.len());
        for id in ambiguous {
            let present = match self
                .upstream
                .exists(Scope::Account, &id, &mut Vec::new())
                .await
            {
                Ok(present) => present,
                Err(CallError::Permanent { .. }) => true,
                Err(e) => return Err(e.into()),
            };
            checked.insert(id, present);
        }
        Ok(checked)
    }

    async fn apply(
        &self,
        tx: &mut PgConnection,
        id: i64,
        event: &Value,
        checked: &HashMap<String, bool>,
    ) -> anyhow::Result<()> {
        let Some(connection) = event.get("resource").and_then(|r| id_field(r, "id")) else {
            return Ok(());
        };
        let refs = self.pseudonyms.subject_refs(Scope::Connection, &connection);
        let restoration = restorations::waiting_for(tx, &refs).await?;
        match event.get("event_type").and_then(Value::as_str) {
            Some("LIST_ACCOUNTS_SUCCESS") => {
                self.listed(tx, id, event, restoration.as_ref().map(|r| r.id), checked)
                    .await?
            }
            Some("LIST_ACCOUNTS_FAILED") => {
                if let Some(r) = restoration {
                    let why = "the upstream reported LIST_ACCOUNTS_FAILED for a channel";
                    restorations::finish(tx, r.id, "failed", Some(why)).await?;
                }
            }
            // The ALL synchronisation that follows LIST_ACCOUNTS.
            Some("SYNC_SUCCESS" | "SYNC_FAILED") => {
                if let Some(r) = restoration.filter(|r| r.channels_listed > 0) {
                    restorations::all_sync_seen(tx, r.id).await?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// One channel's LIST_ACCOUNTS_SUCCESS: each listed account is pseudonymised in memory and
    /// compared with the erased ones. A match listed after its deletion, or in the seconds of it
    /// and found upstream (`checked`), is re-erased, unless a restoration asked for it.
    async fn listed(
        &self,
        tx: &mut PgConnection,
        event_id: i64,
        event: &Value,
        restoration: Option<Uuid>,
        checked: &HashMap<String, bool>,
    ) -> anyhow::Result<()> {
        let accounts = listed_accounts(event);
        let created_at = event.get("creation_date").and_then(Value::as_i64);
        let matches = self.match_listed(tx, accounts).await?;
        let mut counts = Listed::default();
        for (account, (listed, guards)) in accounts.iter().zip(matches) {
            let status = match account.get("status").and_then(Value::as_str) {
                Some("NEW") => {
                    counts.new += 1;
                    "NEW"
                }
                Some("PRESENT") => {
                    counts.present += 1;
                    "PRESENT"
                }
                Some("MISSING") => {
                    counts.missing += 1;
                    "MISSING"
                }
                _ => "OTHER",
            };
            let Some(listed) = listed else {
                continue;
            };
            if guards.is_empty() {
                continue;
            }
            if let Some(restoration) = restoration {
                let ids: Vec<i64> = guards.iter().map(|g| g.id).collect();
                counts.guards_lifted += guard::lift(tx, &ids, restoration).await? as i32;
                continue;
            }
            // An ambiguous listing not checked before the transaction (its guard was armed
            // since) is taken as a resurrection: never ignored.
            let Some(g) = guards.iter().find(|g| match order(g, created_at) {
                Order::After => true,
                Order::Before => false,
                Order::Ambiguous => checked.get(&listed.id).copied().unwrap_or(true),
            }) else {
                continue;
            };
            // Already being erased again (listed once more meanwhile): nothing new.
            let Some(re_erasure) = self
                .re_erase(tx, g.root_request_id, Scope::Account, &listed.id)
                .await?
            else {
                continue;
            };
            guard::record_resurrection(
                tx,
                g,
                &format!("event:{event_id}"),
                Some(status),
                Some(re_erasure),
            )
            .await?;
            tracing::warn!(request = %g.root_request_id, re_erasure = %re_erasure, "an erased account was listed again upstream; erasing it again");
        }
        if let Some(restoration) = restoration {
            restorations::count_listing(tx, restoration, counts).await?;
        }
        Ok(())
    }

    /// A new erasure of a target found again upstream (under the id it was listed with), linked
    /// to the original erasure. `None` when an erasure of that id is already open.
    pub(super) async fn re_erase(
        &self,
        tx: &mut PgConnection,
        original: Uuid,
        scope: Scope,
        listed_id: &str,
    ) -> anyhow::Result<Option<Uuid>> {
        let requested_by = guard::requester_of(tx, original).await?;
        let id = Uuid::now_v7(); // time-ordered, as every request id (app::requests)
        let subject_ref = self.pseudonyms.subject_ref(scope, listed_id);
        let item = NewRequest {
            id,
            scope,
            subject_ref: subject_ref.clone(),
            target_sealed: self.sealer.seal(id, listed_id.as_bytes()),
            external_reference: None,
            not_before: None,
            state: State::Queued,
            // Within a traced span, the re-erasure joins its trace; the guard's own work has
            // none.
            traceparent: crate::telemetry::traceparent(),
        };
        let inserted = requests::insert_many(tx, &[item], requested_by, GUARD, None, Utc::now())
            .await?
            .pop();
        let Some(Inserted::Created(_)) = inserted else {
            return Ok(None);
        };
        guard::link_re_erasure(tx, id, original).await?;
        audit::append(
            tx,
            Entry {
                request_id: Some(id),
                subject_ref: Some(&subject_ref),
                actor: GUARD,
                event: Event::ReErasureOf,
                data: data_of(&records::ReErasureOf { original }),
            },
        )
        .await?;
        self.re_erased.store(true, Ordering::Release);
        Ok(Some(id))
    }
}

/// The accounts a LIST_ACCOUNTS_SUCCESS lists.
fn listed_accounts(event: &Value) -> &[Value] {
    event
        .pointer("/list_accounts_success/accounts")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Whole seconds before the second a deletion was recorded (`armed_at`) in which the upstream may
/// have deleted the account: the DELETE was answered, then recorded, within them.
const DELETION_SLACK_SECS: i64 = 2;

/// A listing against the deletion of an account it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    /// Listed after the deletion: a resurrection.
    After,
    /// Listed before the deletion: it cannot show a resurrection.
    Before,
    /// Times are whole seconds and the deletion's is known only within `DELETION_SLACK_SECS`:
    /// whether the account is there upstream decides (an aggregator may re-add an account under
    /// its old id, so the id does not tell either).
    Ambiguous,
}

fn order(g: &Guarded, created_at: Option<i64>) -> Order {
    let Some(t) = created_at else {
        return Order::After;
    };
    let armed = g.armed_at.timestamp();
    if t > armed {
        Order::After
    } else if t < armed - DELETION_SLACK_SECS {
        Order::Before
    } else {
        Order::Ambiguous
    }
}

fn event_id(event: &Value) -> Option<i64> {
    match event.get("id")? {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

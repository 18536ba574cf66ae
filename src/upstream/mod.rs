//! The Oxlin (Linxo Connect) v2.1 client: token cache, politeness (rate, concurrency, circuit
//! breaker), error classification, and the few operations the engine needs. Every assumption about
//! the upstream contract lives here, so another API version can be swapped in behind the same
//! operations.
//!
//! It never touches the database: the calls it made are handed back as `CallRecord`s for the store.

mod client;
mod politeness;

pub use client::{CallError, Upstream};
pub use politeness::{Admission, Breaker, RATE_WINDOW, RateLimiter};

use serde_json::Value;

use crate::domain::Scope;

/// One upstream call, as the audit log records it (no ids: the path is a template). The client
/// makes these; the store keeps what it is given.
#[derive(Debug, Clone)]
pub struct CallRecord {
    pub method: &'static str,
    pub path: &'static str,
    pub status: Option<u16>,
    pub error: Option<&'static str>,
    pub duration_ms: u64,
}

/// What inventory learnt about a target: counts for the audit log and, for accounts, where it
/// lives (upstream ids, kept sealed while the request is open).
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub present: bool,
    pub connections: Option<u64>,
    pub channels: Option<u64>,
    pub accounts: Option<u64>,
    pub connection_id: Option<String>,
    pub channel_id: Option<String>,
    /// An account's bank references (personal data: in memory only, pseudonymised at once).
    pub bank_references: BankReferences,
}

/// What a user's or a connection's inventory has read so far. The engine keeps it, sealed (it
/// holds upstream ids), with the request between attempts, so that an attempt that ends on a
/// transient error is continued by the next one instead of started again.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InventoryProgress {
    /// Whether the target answered; `None` until read.
    #[serde(default)]
    pub present: Option<bool>,
    /// A connection target's channels (from its body).
    #[serde(default)]
    pub channels: Option<u64>,
    /// A user target's connections (ids), once listed.
    #[serde(default)]
    pub connections: Option<Vec<String>>,
    /// Accounts counted, by connection id (a user's connections, or the connection target).
    #[serde(default)]
    pub accounts: std::collections::BTreeMap<String, u64>,
}

impl InventoryProgress {
    /// Whether anything was read.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// What was counted before counting was given up, and `reason` (counts only).
    pub fn gave_up(&self, reason: String) -> crate::domain::steps::Detail {
        crate::domain::steps::Detail::GaveUp {
            present: self.present,
            channels: self.channels,
            connections: self.connections.as_ref().map(Vec::len),
            connections_counted: self.accounts.len(),
            accounts_counted: self.accounts.values().sum::<u64>(),
            complete: false,
            reason,
        }
    }
}

/// An account's IBAN, number and reference, as `(kind, value)`. Its `Debug` shows no value.
#[derive(Clone, Default)]
pub struct BankReferences(pub Vec<(&'static str, String)>);

impl std::fmt::Debug for BankReferences {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BankReferences({} values)", self.0.len())
    }
}

impl BankReferences {
    /// The references of an upstream account object.
    pub fn of(account: &Value) -> Self {
        Self(
            [
                ("iban", "iban"),
                ("number", "account_number"),
                ("reference", "reference"),
            ]
            .into_iter()
            .filter_map(|(kind, field)| {
                let value = account.get(field)?.as_str()?.trim();
                (!value.is_empty()).then(|| (kind, value.to_string()))
            })
            .collect(),
        )
    }
}

/// What the account cascade left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cascade {
    /// The connection is gone: that was its last non-empty channel.
    ConnectionDeleted,
    /// The account's channel is EMPTY: that was its last account.
    ChannelEmpty,
    /// The channel still has accounts (its status given).
    ChannelRemains(String),
}

/// A user's connections whose accounts are listed at the same time, at most.
const LISTINGS_AT_ONCE: usize = 4;

fn path_of(scope: Scope) -> &'static str {
    match scope {
        Scope::User => "/users/{id}",
        Scope::Connection => "/connections/{id}",
        Scope::Account => "/accounts/{id}",
    }
}

/// An id field of an upstream object (ids are numeric strings, sometimes numbers).
pub fn id_field(value: &Value, field: &str) -> Option<String> {
    match value.get(field)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl Upstream {
    /// Counts what an erasure of the target will remove. Reads personal data in memory only.
    /// A user's or connection's inventory takes several calls: what they read is kept in
    /// `progress`, which a later call continues from (an account's is one call).
    pub async fn inventory(
        &self,
        scope: Scope,
        id: &str,
        progress: &mut InventoryProgress,
        calls: &mut Vec<CallRecord>,
    ) -> Result<Inventory, CallError> {
        if scope == Scope::Account {
            let Some(target) = self.get(path_of(scope), id, calls).await? else {
                return Ok(Inventory::default());
            };
            return Ok(Inventory {
                present: true,
                connection_id: id_field(&target, "connection_id"),
                channel_id: id_field(&target, "last_channel_definition_id"),
                bank_references: BankReferences::of(&target),
                ..Default::default()
            });
        }
        if progress.present.is_none() {
            let target = self.get(path_of(scope), id, calls).await?;
            progress.present = Some(target.is_some());
            progress.channels = target
                .filter(|_| scope == Scope::Connection)
                .and_then(|t| t.get("channels").and_then(Value::as_array).map(Vec::len))
                .map(|n| n as u64);
        }
        if progress.present == Some(false) {
            return Ok(Inventory::default());
        }
        let connections = match (scope, &progress.connections) {
            (Scope::User, None) => {
                let listed = self
                    .list("/connections?user_id={id}", "user_id", id, calls)
                    .await?;
                let ids: Vec<String> = listed.iter().filter_map(|c| id_field(c, "id")).collect();
                progress.connections = Some(ids.clone());
                ids
            }
            (Scope::User, Some(ids)) => ids.clone(),
            _ => vec![id.to_string()],
        };
        // The connections' account listings go together (`LISTINGS_AT_ONCE` at a time, each
        // through the rate limiter and a concurrency slot as any call): a user's inventory then
        // takes two calls in a row plus its slowest listing, not one listing after another. What
        // was counted is kept even when another listing failed, for the next attempt.
        let todo: Vec<&String> = connections
            .iter()
            .filter(|c| !progress.accounts.contains_key(*c))
            .collect();
        let mut failed = None;
        for together in todo.chunks(LISTINGS_AT_ONCE) {
            let mut listings = Vec::with_capacity(together.len());
            for connection in together {
                listings.push(self.accounts_of(connection));
            }
            for (connection, (made, result)) in together
                .iter()
                .zip(futures::future::join_all(listings).await)
            {
                calls.extend(made);
                match result {
                    Ok(n) => {
                        progress.accounts.insert((*connection).clone(), n);
                    }
                    Err(e) => failed = failed.or(Some(e)),
                }
            }
            if failed.is_some() {
                // No more listings on a failing upstream: the next attempt goes on from here.
                break;
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        Ok(Inventory {
            present: true,
            connections: (scope == Scope::User).then_some(connections.len() as u64),
            channels: progress.channels,
            accounts: Some(progress.accounts.values().sum()),
            ..Default::default()
        })
    }

    /// How many accounts a connection has, with the calls it took.
    async fn accounts_of(&self, connection: &str) -> (Vec<CallRecord>, Result<u64, CallError>) {
        let mut calls = Vec::new();
        let listed = self
            .list(
                "/accounts?connection_id={id}",
                "connection_id",
                connection,
                &mut calls,
            )
            .await;
        (calls, listed.map(|items| items.len() as u64))
    }

    /// Deletes the target. `Ok(true)` when it was deleted now, `Ok(false)` when upstream answered
    /// 404 (already gone; a verifying GET decides).
    pub async fn delete(
        &self,
        scope: Scope,
        id: &str,
        calls: &mut Vec<CallRecord>,
    ) -> Result<bool, CallError> {
        self.send(reqwest::Method::DELETE, path_of(scope), id, &[], calls)
            .await
            .map(|reply| reply.is_some())
    }

    /// Whether the target still answers a GET.
    pub async fn exists(
        &self,
        scope: Scope,
        id: &str,
        calls: &mut Vec<CallRecord>,
    ) -> Result<bool, CallError> {
        Ok(self.get(path_of(scope), id, calls).await?.is_some())
    }

    /// The state of an account's connection and channel after the account's deletion.
    pub async fn cascade(
        &self,
        connection_id: &str,
        channel_id: Option<&str>,
        calls: &mut Vec<CallRecord>,
    ) -> Result<Cascade, CallError> {
        let Some(connection) = self.get("/connections/{id}", connection_id, calls).await? else {
            return Ok(Cascade::ConnectionDeleted);
        };
        let status = connection
            .get("channels")
            .and_then(Value::as_array)
            .and_then(|channels| {
                channels
                    .iter()
                    .find(|ch| channel_id.is_some() && id_field(ch, "id").as_deref() == channel_id)
            })
            .and_then(|ch| ch.get("status"))
            .and_then(Value::as_str)
            .unwrap_or("UNKNOWN")
            .to_string();
        Ok(if status == "EMPTY" {
            Cascade::ChannelEmpty
        } else {
            Cascade::ChannelRemains(status)
        })
    }

    /// The upstream events after `since`, oldest first (at most `limit`, 1..=100).
    pub async fn events(&self, since: u64, limit: u32) -> Result<Vec<Value>, CallError> {
        let query = [("since", since.to_string()), ("limit", limit.to_string())];
        let Some(bytes) = self
            .send(reqwest::Method::GET, "/events", "", &query, &mut Vec::new())
            .await?
        else {
            return Err(CallError::Permanent {
                reason: "the upstream has no event endpoint (404 on /events)".into(),
            });
        };
        let body: Value = serde_json::from_slice(&bytes)
            .map_err(|_| CallError::transient("upstream events were not JSON"))?;
        match body.get("events") {
            Some(Value::Array(events)) => Ok(events.clone()),
            _ => Err(CallError::transient(
                "upstream events body had no `events` array",
            )),
        }
    }

    /// One page (from 1) of every connection or account the application can see.
    pub async fn list_page(
        &self,
        kind: Listing,
        page: u32,
        limit: u32,
    ) -> Result<Vec<Value>, CallError> {
        let template = match kind {
            Listing::Connections => "/connections",
            Listing::Accounts => "/accounts",
        };
        let query = [("page", page.to_string()), ("limit", limit.to_string())];
        let Some(bytes) = self
            .send(reqwest::Method::GET, template, "", &query, &mut Vec::new())
            .await?
        else {
            return Ok(Vec::new());
        };
        serde_json::from_slice(&bytes)
            .map_err(|_| CallError::transient("upstream list was not a JSON array"))
    }

    /// A connection as upstream shows it, `None` when it is gone.
    pub async fn connection(&self, id: &str) -> Result<Option<Value>, CallError> {
        self.get("/connections/{id}", id, &mut Vec::new()).await
    }

    /// Starts a LIST_ACCOUNTS synchronisation of a connection. False when the connection is gone.
    pub async fn list_accounts_sync(&self, connection_id: &str) -> Result<bool, CallError> {
        let query = [("type", "LIST_ACCOUNTS".to_string())];
        let reply = self
            .send(
                reqwest::Method::POST,
                "/connections/{id}/synchronize",
                connection_id,
                &query,
                &mut Vec::new(),
            )
            .await?;
        Ok(reply.is_some())
    }
}

/// What `list_page` enumerates.
#[derive(Debug, Clone, Copy)]
pub enum Listing {
    Connections,
    Accounts,
}

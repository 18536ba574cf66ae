//! What the audit log records of each event that is not a request's action or step end (those
//! are in `actions` and `steps`, the webhook-facing ones in `events`): one struct per payload,
//! its fields named once here. The store writes them with `events::data_of`. Pure: no I/O.
//!
//! Never a name, an e-mail, a target id or a secret: ids of keys, people, subscriptions,
//! requests and runs, counts, hosts, states and times.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// `key_created`.
#[derive(Debug, Serialize)]
pub struct KeyCreated<'a> {
    pub key: Uuid,
    pub prefix: &'a str,
    pub role: &'static str,
    pub expires_at: Option<DateTime<Utc>>,
    /// The person who owns it (`person:<id>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The key it replaces (a rotation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaces: Option<Uuid>,
}

/// `key_revoked`.
#[derive(Debug, Serialize)]
pub struct KeyRevoked<'a> {
    pub key: Uuid,
    pub prefix: &'a str,
}

/// `key_expiry_shortened`.
#[derive(Debug, Serialize)]
pub struct KeyExpiryShortened<'a> {
    pub key: Uuid,
    pub prefix: &'a str,
    pub expires_at: DateTime<Utc>,
}

/// `webhook_created`: the destination's host only (its path may carry tokens).
#[derive(Debug, Serialize)]
pub struct WebhookCreated<'a> {
    pub subscription: Uuid,
    pub host: String,
    pub event_types: &'a [String],
}

/// `webhook_changed`: what changed.
#[derive(Debug, Serialize)]
pub struct WebhookChanged<'a> {
    pub subscription: Uuid,
    pub host: Option<String>,
    pub event_types: Option<&'a [String]>,
    pub state: Option<&'static str>,
}

/// `webhook_secret_rotated`.
#[derive(Debug, Serialize)]
pub struct WebhookSecretRotated {
    pub subscription: Uuid,
    pub previous_secret_expires_at: DateTime<Utc>,
}

/// `webhook_disabled`: the event whose retries were spent, and its last attempt.
#[derive(Debug, Serialize)]
pub struct WebhookDisabled<'a> {
    pub subscription: Uuid,
    pub event: &'a str,
    pub attempts: i32,
    pub last_status: Option<i32>,
    pub last_error: Option<&'a str>,
}

/// `pseudonym_epoch_destroyed`.
#[derive(Debug, Serialize)]
pub struct EpochDestroyed {
    pub epoch: i32,
    pub requests: i64,
    pub retention_days: u32,
    pub as_of: DateTime<Utc>,
}

/// `reverification_run`.
#[derive(Debug, Serialize)]
pub struct ReverificationRun<'a> {
    pub run: i64,
    pub result: &'a str,
    pub erasures_checked: i64,
    pub connections_listed: i64,
    pub accounts_listed: i64,
    pub found: i64,
}

/// `guard_lifted`: a restoration brought back an account an erasure had deleted.
#[derive(Debug, Serialize)]
pub struct GuardLifted {
    pub restoration: Uuid,
    pub erased_by_request: Uuid,
}

/// `re_erasure_of`: the erasure this one repeats.
#[derive(Debug, Serialize)]
pub struct ReErasureOf {
    pub original: Uuid,
}

/// `person_signed_in`, with the roles the provider's groups gave (and those before, when they
/// changed).
#[derive(Debug, Serialize)]
pub struct PersonSignedIn<'a> {
    pub person: Uuid,
    pub roles: &'a [&'a str],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roles_before: Option<&'a [String]>,
}

/// `person_refused`.
#[derive(Debug, Serialize)]
pub struct PersonRefused {
    pub person: Uuid,
    pub reason: &'static str,
}

/// `person_sessions_ended`.
#[derive(Debug, Serialize)]
pub struct PersonSessionsEnded {
    pub person: Uuid,
    pub sessions: i64,
}

/// `person_forgotten`.
#[derive(Debug, Serialize)]
pub struct PersonForgotten {
    pub person: Uuid,
}

/// `upstream_paused` and `upstream_resumed`.
#[derive(Debug, Serialize)]
pub struct PauseChanged<'a> {
    pub reason: Option<&'a str>,
}

/// `bulk_operation`: an action on many requests or an upload, with its counts.
#[derive(Debug, Serialize)]
pub struct BulkOperation<'a> {
    pub operation: Uuid,
    pub action: &'a str,
    pub total: i32,
    pub done: i32,
    pub refused: i32,
    pub batch_id: Option<Uuid>,
}

/// `restoration_requested`.
#[derive(Debug, Serialize)]
pub struct RestorationRequested {
    pub restoration: Uuid,
}

/// `restoration_started`: the synchronisation was asked for; the channels whose events it waits
/// for.
#[derive(Debug, Serialize)]
pub struct RestorationStarted {
    pub restoration: Uuid,
    pub expected_channels: i32,
}

/// How a restoration ended (`restoration_completed`, `restoration_timed_out`,
/// `restoration_failed`).
#[derive(Debug, Serialize)]
pub struct RestorationEnded<'a> {
    pub restoration: Uuid,
    pub failure_reason: Option<&'a str>,
    pub channels_listed: i32,
    pub expected_channels: Option<i32>,
    pub accounts: super::events::RestorationAccounts,
    pub all_sync_followed: bool,
    pub guards_lifted: i32,
}

/// `received`: a request was accepted.
#[derive(Debug, Serialize)]
pub struct Received {
    pub scope: super::Scope,
    pub state: super::State,
    pub batch_id: Option<Uuid>,
}

/// `overdue`: an open request passed its due date.
#[derive(Debug, Serialize)]
pub struct Overdue {
    pub due_at: DateTime<Utc>,
}

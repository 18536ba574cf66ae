//! What the audit log records, and what a webhook carries of it: one enum of the audit events,
//! the webhook types that follow from some of them, and the webhook payloads, from which both the
//! outbox rows (`store::webhooks::fan_out`, in the audit entry's transaction) and the OpenAPI
//! document's `webhooks` section are made. Pure: no I/O.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{LegalBasis, Scope, State};

/// Every kind of audit entry, by the name the log stores.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::EnumIter,
)]
#[strum(serialize_all = "snake_case")]
pub enum Event {
    // A request's life, by people.
    Received,
    Approved,
    Cancelled,
    Retried,
    Held,
    Released,
    Extended,
    // Its due date.
    AtRisk,
    Overdue,
    // Its steps, by the engine.
    /// One upstream call, in logs written before 2026-12-06; the calls are now in the entry of
    /// the attempt that made them (`calls`).
    UpstreamCall,
    Inventoried,
    Deleted,
    VerifiedAbsent,
    /// The verify step found the target back after its deletion and deleted it again.
    ResurrectionAtVerify,
    CascadeObserved,
    AttemptFailed,
    Failed,
    Completed,
    ReErasureCompleted,
    // The resurrection guard and re-verification.
    ResurrectionDetected,
    ReErasureOf,
    GuardLifted,
    ReverificationFailed,
    ReverificationRun,
    // Restorations of a connection's accounts.
    RestorationRequested,
    RestorationStarted,
    RestorationCompleted,
    RestorationTimedOut,
    RestorationFailed,
    // People signing in to the console (by id, never a name).
    PersonSignedIn,
    PersonRefused,
    PersonSessionsEnded,
    PersonForgotten,
    // Keys, webhooks, retention.
    KeyCreated,
    KeyRevoked,
    KeyExpiryShortened,
    WebhookCreated,
    WebhookChanged,
    WebhookSecretRotated,
    WebhookDisabled,
    PseudonymEpochDestroyed,
    // Operations: the pause switch of all upstream work.
    UpstreamPaused,
    UpstreamResumed,
    /// An action on many requests, or an upload, as one operation (each request has its own
    /// entry too).
    BulkOperation,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(name: &str) -> Option<Self> {
        name.parse().ok()
    }

    /// The webhook type this event is told by, if any.
    pub fn webhook(self) -> Option<WebhookType> {
        Some(match self {
            Event::Completed => WebhookType::RequestCompleted,
            Event::Failed => WebhookType::RequestFailed,
            Event::AtRisk => WebhookType::RequestAtRisk,
            Event::Overdue => WebhookType::RequestOverdue,
            Event::Held => WebhookType::RequestOnHold,
            Event::ResurrectionDetected => WebhookType::RequestResurrectionDetected,
            Event::RestorationCompleted => WebhookType::RestorationCompleted,
            Event::ReverificationFailed => WebhookType::ReverificationFailed,
            _ => return None,
        })
    }
}

/// What a webhook subscription may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::IntoStaticStr, strum::EnumIter)]
pub enum WebhookType {
    #[strum(serialize = "request.completed")]
    RequestCompleted,
    #[strum(serialize = "request.failed")]
    RequestFailed,
    #[strum(serialize = "request.at_risk")]
    RequestAtRisk,
    #[strum(serialize = "request.overdue")]
    RequestOverdue,
    #[strum(serialize = "request.on_hold")]
    RequestOnHold,
    #[strum(serialize = "request.resurrection_detected")]
    RequestResurrectionDetected,
    #[strum(serialize = "restoration.completed")]
    RestorationCompleted,
    #[strum(serialize = "reverification.failed")]
    ReverificationFailed,
}

impl WebhookType {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Every type, in the order the API lists them.
    pub fn all() -> impl Iterator<Item = WebhookType> {
        <WebhookType as strum::IntoEnumIterator>::iter()
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::all().find(|t| t.as_str() == name)
    }

    /// What the event says, for the document.
    pub fn describe(self) -> &'static str {
        match self {
            WebhookType::RequestCompleted => "An erasure completed: the target is gone upstream.",
            WebhookType::RequestFailed => "An erasure failed for good and needs a person.",
            WebhookType::RequestAtRisk => "An open erasure nears its due date.",
            WebhookType::RequestOverdue => "An open erasure passed its due date.",
            WebhookType::RequestOnHold => "An erasure was put on legal hold.",
            WebhookType::RequestResurrectionDetected => {
                "An erased target was listed again upstream; a re-erasure was started."
            }
            WebhookType::RestorationCompleted => "A restoration of a connection's accounts ended.",
            WebhookType::ReverificationFailed => {
                "The weekly re-verification found an erased target present again."
            }
        }
    }

    /// Whether the payload is a `RestorationEventData` (else a `RequestEventData`).
    pub fn is_restoration(self) -> bool {
        self == WebhookType::RestorationCompleted
    }
}

/// What an `at_risk` entry records; its `days_left` is told by `request.at_risk`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AtRiskData {
    pub due_at: DateTime<Utc>,
    pub days_left: i64,
}

/// What a `resurrection_detected` entry records; its re-erasure is told by
/// `request.resurrection_detected`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResurrectionData {
    /// What listed the target again: a guard event, or a re-verification run.
    pub source: String,
    pub listed_status: Option<String>,
    pub erased_by_request: Uuid,
    pub re_erasure_request: Option<Uuid>,
    pub recurring_on_connection: bool,
}

/// What a `reverification_failed` entry records; its re-erasure is told by
/// `reverification.failed`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReverificationFailedData {
    pub source: String,
    pub scope: Scope,
    pub re_erasure_request: Option<Uuid>,
}

/// What a `held` entry records besides the action's own fields (`domain::actions`); its ground
/// is told by `request.on_hold`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeldData {
    pub legal_basis: LegalBasis,
}

/// An entry's data as a JSON object.
pub fn data_of<T: Serialize>(data: &T) -> Value {
    serde_json::to_value(data).expect("event data are plain structs")
}

/// A time in a payload: UTC, RFC 3339 with microseconds.
pub fn payload_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The request as an event about it shows it (`data` of the `request.*` and
/// `reverification.failed` webhooks). No target id, pseudonym or anything read upstream.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RequestEventData {
    pub request_id: Uuid,
    pub external_reference: Option<String>,
    pub scope: Scope,
    pub state: State,
    /// `erased` or `already_erased` once completed.
    pub outcome: Option<String>,
    pub received_at: String,
    pub due_at: String,
    pub completed_at: Option<String>,
    pub updated_at: String,
    /// For a re-erasure: the original erasure that a synchronisation undid.
    pub resurrection_of: Option<Uuid>,
    /// Path of the request's receipt (absolute with `ERASURE_PUBLIC_URL`).
    pub receipt_url: String,
    /// `request.at_risk`: whole days left before the due date.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub days_left: Option<i64>,
    /// `request.on_hold`: the ground of the hold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub legal_basis: Option<LegalBasis>,
    /// `request.resurrection_detected`, `reverification.failed`: the re-erasure started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub re_erasure_request_id: Option<Uuid>,
}

/// What the request row holds for its events.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RequestFacts {
    pub id: Uuid,
    pub external_reference: Option<String>,
    pub scope: Scope,
    pub state: State,
    pub outcome: Option<String>,
    pub received_at: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub resurrection_of: Option<Uuid>,
}

impl RequestEventData {
    /// The payload of `kind` for the request, with what the audit entry's data adds to it.
    pub fn new(kind: WebhookType, r: RequestFacts, entry: &Value) -> Self {
        fn read<T: serde::de::DeserializeOwned>(entry: &Value) -> Option<T> {
            serde_json::from_value(entry.clone()).ok()
        }
        let (mut days_left, mut legal_basis, mut re_erasure_request_id) = (None, None, None);
        match kind {
            WebhookType::RequestAtRisk => {
                days_left = read::<AtRiskData>(entry).map(|d| d.days_left);
            }
            WebhookType::RequestOnHold => {
                legal_basis = read::<HeldData>(entry).map(|d| d.legal_basis);
            }
            WebhookType::RequestResurrectionDetected => {
                re_erasure_request_id =
                    read::<ResurrectionData>(entry).and_then(|d| d.re_erasure_request);
            }
            WebhookType::ReverificationFailed => {
                re_erasure_request_id =
                    read::<ReverificationFailedData>(entry).and_then(|d| d.re_erasure_request);
            }
            _ => {}
        }
        RequestEventData {
            request_id: r.id,
            external_reference: r.external_reference,
            scope: r.scope,
            state: r.state,
            outcome: r.outcome,
            received_at: payload_time(r.received_at),
            due_at: payload_time(r.due_at),
            completed_at: r.completed_at.map(payload_time),
            updated_at: payload_time(r.updated_at),
            resurrection_of: r.resurrection_of,
            receipt_url: format!("/v1/erasure-requests/{}/receipt", r.id),
            days_left,
            legal_basis,
            re_erasure_request_id,
        }
    }
}

/// Accounts a restoration found (`restoration.completed`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RestorationAccounts {
    pub new: i32,
    pub present: i32,
    pub missing: i32,
}

/// A restoration as its event shows it (`data` of `restoration.completed`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RestorationEventData {
    pub restoration_id: Uuid,
    pub state: String,
    pub requested_at: String,
    pub finished_at: Option<String>,
    pub accounts: RestorationAccounts,
    pub guards_lifted: i32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::IntoEnumIterator;

    #[test]
    fn every_event_reads_back_from_its_name() {
        for event in Event::iter() {
            assert_eq!(Event::parse(event.as_str()), Some(event));
        }
        assert_eq!(Event::AtRisk.as_str(), "at_risk");
        assert_eq!(
            Event::PseudonymEpochDestroyed.as_str(),
            "pseudonym_epoch_destroyed"
        );
    }

    #[test]
    fn each_webhook_type_follows_from_one_event() {
        for kind in WebhookType::all() {
            let from: Vec<Event> = Event::iter()
                .filter(|e| e.webhook() == Some(kind))
                .collect();
            assert_eq!(from.len(), 1, "{kind:?}: {from:?}");
            assert_eq!(WebhookType::parse(kind.as_str()), Some(kind));
        }
    }

    #[test]
    fn times_have_microseconds_in_utc() {
        let t = DateTime::parse_from_rfc3339("2027-01-31T10:00:00.5+02:00")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(payload_time(t), "2027-01-31T08:00:00.500000Z");
    }
}

//! The use cases: every action a person or a client can take (submit, act on a request, look a
//! target up, restore, subscribe a webhook, pause, bulk actions, keys, people), each written
//! once. The API (`api`), the console (`console`) and the command line (`main`) are adapters:
//! they read their input (JSON, a form, arguments), call one function here, and present what it
//! answers. One path for each action, with one set of limits.
//!
//! May: validate input into domain types, ask the domain what an action does, call the store to
//! apply it, wake the workers. Never: speak HTTP (no request or response types; only status
//! codes, through `ApiError`), write SQL, or call the aggregator.

pub mod auth;
pub mod bulk;
pub mod error;
pub mod input;
pub mod keys;
pub mod pause;
pub mod people;
pub mod requests;
pub mod restorations;
pub mod subjects;
pub mod webhooks;

use std::sync::Arc;

use crate::audit::log::AuditLog;
use crate::audit::pseudonym::Pseudonymizer;
use crate::audit::seal::Sealer;
use crate::config::{ApprovalPolicy, WebhookSettings};
use crate::store::Db;

/// What every use case shares.
pub struct App {
    pub db: Db,
    /// The guard's restoration check, in processes that have an upstream client (`None` for
    /// `serve --no-worker`).
    pub restore_check: Option<crate::guard::restore::RestoreCheck>,
    pub pseudonyms: Pseudonymizer,
    pub sealer: Sealer,
    pub approval: ApprovalPolicy,
    /// Days before its due date from which an open request is at risk (`ERASURE_AT_RISK_DAYS`).
    pub at_risk_days: u32,
    /// Days a closed request stays linkable to its target (`ERASURE_RETENTION_DAYS`).
    pub retention_days: u32,
    /// Where webhooks may be sent (subscriptions' URLs are checked against it).
    pub webhooks: Arc<WebhookSettings>,
    pub audit: Arc<AuditLog>,
    /// Wakes the workers when requests are accepted.
    pub ready: Arc<crate::store::ready::Ready>,
    /// Commits single requests in groups.
    pub intake: crate::store::intake::Intake,
    /// API key checks, made together when requests arrive together.
    pub keys: crate::store::keys::KeyChecks,
}

/// Who does an action: a caller (an API key, a console session) or the operator at the command
/// line. The audit log names the actor, never a name.
#[derive(Clone, Copy)]
pub enum By<'a> {
    Caller(&'a crate::store::keys::Principal),
    Operator,
}

impl By<'_> {
    /// The actor the audit log names (`person:<id>`, `key:<id>` or `operator`).
    pub fn actor(&self) -> String {
        match self {
            By::Caller(principal) => principal.actor(),
            By::Operator => crate::store::audit::OPERATOR.to_string(),
        }
    }

    /// The person behind the action, if any.
    pub fn person(&self) -> Option<uuid::Uuid> {
        match self {
            By::Caller(principal) => principal.person,
            By::Operator => None,
        }
    }
}

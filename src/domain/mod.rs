//! Requests, steps, states and transitions. Pure: no I/O.

pub mod actions;
pub mod events;
pub mod keys;
pub mod records;
pub mod steps;
pub mod validate;

use chrono::{DateTime, Months, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a request erases at the aggregator.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    ToSchema,
    sqlx::Type,
    strum::IntoStaticStr,
    strum::EnumString,
)]
#[strum(serialize_all = "snake_case")]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Scope {
    User,
    Connection,
    Account,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(text: &str) -> Option<Self> {
        text.parse().ok()
    }

    /// The steps a request of this scope runs, in order.
    pub fn steps(self) -> &'static [StepKind] {
        match self {
            Scope::User | Scope::Connection => {
                &[StepKind::Inventory, StepKind::Delete, StepKind::Verify]
            }
            Scope::Account => &[
                StepKind::Inventory,
                StepKind::Delete,
                StepKind::Verify,
                StepKind::CascadeCheck,
            ],
        }
    }
}

/// The life of a request.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    ToSchema,
    sqlx::Type,
    strum::IntoStaticStr,
    strum::EnumString,
)]
#[strum(serialize_all = "snake_case")]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum State {
    PendingApproval,
    Queued,
    InProgress,
    Completed,
    Failed,
    Cancelled,
    OnHold,
}

impl State {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Every state.
    pub const ALL: [State; 7] = [
        State::PendingApproval,
        State::Queued,
        State::InProgress,
        State::Completed,
        State::Failed,
        State::Cancelled,
        State::OnHold,
    ];

    /// The states of an open request: one that may still erase, and of which a target has at
    /// most one (a new request for the same target is a duplicate). The others (completed,
    /// cancelled) are closed. The one list: the store's SQL spells it as the predicates of its
    /// partial indexes do, and a test holds the two alike (`store::requests`).
    pub const OPEN: [State; 5] = [
        State::PendingApproval,
        State::Queued,
        State::InProgress,
        State::Failed,
        State::OnHold,
    ];

    pub fn parse(text: &str) -> Option<Self> {
        text.parse().ok()
    }
}

/// What a person asks of a request (`POST /v1/erasure-requests/{id}/{action}`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    strum::IntoStaticStr,
    strum::EnumString,
    Deserialize,
    ToSchema,
)]
#[strum(serialize_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Approve,
    Cancel,
    Retry,
    Hold,
    Release,
    Extend,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The states this action may start from (`actions::decide` refuses it from any other).
    /// A hold or a cancellation stops an erasure in progress only until its first DELETE was
    /// sent (`actions::decide`).
    pub fn allowed_from(self) -> &'static [State] {
        match self {
            Action::Approve => &[State::PendingApproval],
            Action::Cancel => &[
                State::PendingApproval,
                State::Queued,
                State::InProgress,
                State::OnHold,
                State::Failed,
            ],
            Action::Retry => &[State::Failed],
            Action::Hold => &[
                State::PendingApproval,
                State::Queued,
                State::InProgress,
                State::Failed,
            ],
            Action::Release => &[State::OnHold],
            Action::Extend => &[
                State::PendingApproval,
                State::Queued,
                State::InProgress,
                State::OnHold,
                State::Failed,
            ],
        }
    }

    /// Who may take the action (admin always may).
    pub fn roles(self) -> &'static [Role] {
        match self {
            Action::Cancel => &[Role::Requester],
            _ => &[Role::Approver],
        }
    }
}

/// The durable steps of a request.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    ToSchema,
    sqlx::Type,
    strum::IntoStaticStr,
)]
#[strum(serialize_all = "snake_case")]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum StepKind {
    Inventory,
    Delete,
    Verify,
    CascadeCheck,
}

impl StepKind {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// The life of a step.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    ToSchema,
    sqlx::Type,
    strum::IntoStaticStr,
)]
#[strum(serialize_all = "snake_case")]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum StepState {
    /// An earlier step has not finished.
    Waiting,
    /// The request is held or waits for approval.
    Paused,
    /// Claimable from `run_at`.
    Ready,
    /// Leased by a worker.
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl StepState {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// GDPR Art. 17(3): the grounds on which an erasure may be held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum LegalBasis {
    /// (a) freedom of expression and information
    #[serde(rename = "art17_3_a")]
    FreedomOfExpression,
    /// (b) a legal obligation, or a task in the public interest
    #[serde(rename = "art17_3_b")]
    LegalObligation,
    /// (c) public health
    #[serde(rename = "art17_3_c")]
    PublicHealth,
    /// (d) archiving, research or statistics
    #[serde(rename = "art17_3_d")]
    Archiving,
    /// (e) legal claims
    #[serde(rename = "art17_3_e")]
    LegalClaims,
}

impl LegalBasis {
    pub const ALL: [LegalBasis; 5] = [
        LegalBasis::FreedomOfExpression,
        LegalBasis::LegalObligation,
        LegalBasis::PublicHealth,
        LegalBasis::Archiving,
        LegalBasis::LegalClaims,
    ];

    /// The ground as GDPR Art. 17(3) words it, shortly.
    pub fn describe(self) -> &'static str {
        match self {
            LegalBasis::FreedomOfExpression => {
                "Art. 17(3)(a): freedom of expression and information"
            }
            LegalBasis::LegalObligation => {
                "Art. 17(3)(b): a legal obligation, or a task in the public interest"
            }
            LegalBasis::PublicHealth => "Art. 17(3)(c): public health",
            LegalBasis::Archiving => {
                "Art. 17(3)(d): archiving, research or statistics in the public interest"
            }
            LegalBasis::LegalClaims => "Art. 17(3)(e): legal claims",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LegalBasis::FreedomOfExpression => "art17_3_a",
            LegalBasis::LegalObligation => "art17_3_b",
            LegalBasis::PublicHealth => "art17_3_c",
            LegalBasis::Archiving => "art17_3_d",
            LegalBasis::LegalClaims => "art17_3_e",
        }
    }
}

/// Total months an erasure may be extended by (GDPR Art. 12(3)).
pub const MAX_EXTENSION_MONTHS: u32 = 2;

/// The due date: one calendar month after receipt plus extensions, clamped to the month's end
/// (Jan 31 -> Feb 28/29).
pub fn due_at(received_at: DateTime<Utc>, extended_months: u32) -> DateTime<Utc> {
    received_at
        .checked_add_months(Months::new(1 + extended_months))
        .unwrap_or(received_at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn due_date_is_one_calendar_month_clamped() {
        let jan31 = Utc.with_ymd_and_hms(2027, 1, 31, 10, 0, 0).unwrap();
        assert_eq!(
            due_at(jan31, 0),
            Utc.with_ymd_and_hms(2027, 2, 28, 10, 0, 0).unwrap()
        );
        let leap = Utc.with_ymd_and_hms(2028, 1, 31, 10, 0, 0).unwrap();
        assert_eq!(
            due_at(leap, 0),
            Utc.with_ymd_and_hms(2028, 2, 29, 10, 0, 0).unwrap()
        );
        assert_eq!(
            due_at(jan31, 2),
            Utc.with_ymd_and_hms(2027, 4, 30, 10, 0, 0).unwrap()
        );
        let mar15 = Utc.with_ymd_and_hms(2027, 3, 15, 0, 0, 0).unwrap();
        assert_eq!(
            due_at(mar15, 0),
            Utc.with_ymd_and_hms(2027, 4, 15, 0, 0, 0).unwrap()
        );
    }

    #[test]
    fn account_scope_has_a_cascade_check() {
        assert_eq!(Scope::Account.steps().last(), Some(&StepKind::CascadeCheck));
        assert_eq!(Scope::User.steps().len(), 3);
    }
}

/// What an API key may do (DESIGN.md).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    ToSchema,
    clap::ValueEnum,
    strum::IntoStaticStr,
    strum::EnumString,
)]
#[strum(serialize_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// create, read, cancel
    Requester,
    /// approve, hold, release, extend, retry, restore (and read)
    Approver,
    /// read everything, audit log, export, receipts
    Auditor,
    /// keys, and all of the above
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(text: &str) -> Option<Self> {
        text.parse().ok()
    }
}

//! The decisions on what people ask of a request: who may, from which state, to which state, and
//! what is recorded. Pure: the store reads a `Snapshot` of the request (its row locked), asks
//! `decide`, and applies the `Plan` in the same transaction.
//!
//! Every rule of an action lives here once: four eyes, the states an action starts from, where a
//! release returns to, the extension cap, and until when a hold or a cancellation can still stop
//! an erasure (until its first DELETE was sent upstream).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::events::{Event, data_of};
use super::{Action, LegalBasis, MAX_EXTENSION_MONTHS, Scope, State, due_at};
use crate::config::ApprovalPolicy;

/// Whether the approval policy wants a second person to decide about requests of `scope`: to
/// approve them, and to hold, release or extend them.
pub fn second_person_decides(policy: ApprovalPolicy, scope: Scope) -> bool {
    match policy {
        ApprovalPolicy::None => false,
        ApprovalPolicy::UserScope => scope == Scope::User,
        ApprovalPolicy::All => true,
    }
}

/// Who asks or acts, for four eyes: a person (signed in, or through a key they own), or a key
/// that belongs to no one (a machine's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    Person(Uuid),
    Key(Uuid),
}

impl Who {
    /// The person who owns `key`, if any, else the key.
    pub fn of(key: Uuid, owner: Option<Uuid>) -> Self {
        owner.map_or(Who::Key(key), Who::Person)
    }
}

/// What the store read of a request, its row locked, before an action.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub state: State,
    pub scope: Scope,
    /// Who asked for the erasure: the person who owns the key that submitted it, else the key.
    pub requested_by: Who,
    pub extended_months: u32,
    pub received_at: DateTime<Utc>,
    /// Where a hold found the request (`on_hold` only).
    pub held_from: Option<State>,
    /// Whether the request's delete step was ever started, so a DELETE may have been sent.
    pub deletion_sent: bool,
    /// Whether one of the request's steps failed for good (a step may fail while its request is
    /// held from `in_progress`: the release then returns it to `failed`).
    pub step_failed: bool,
}

/// What a person asks: the action, by whom, and with what.
#[derive(Debug, Clone)]
pub struct Ask {
    pub action: Action,
    /// Who acts, for four eyes and the audit log.
    pub actor: Who,
    /// The key it acts with (a person's session acts with their personal key).
    pub key: Uuid,
    pub policy: ApprovalPolicy,
    pub details: Details,
}

/// What an action carries besides its name.
#[derive(Debug, Clone, Default)]
pub struct Details {
    /// For `hold`: the ground.
    pub legal_basis: Option<LegalBasis>,
    /// A note (for `extend`, its reason).
    pub note: Option<String>,
    /// For `extend`: 1 or 2 (the API checks the range).
    pub months: Option<u32>,
    /// The bulk operation this action is part of, if any (recorded with it).
    pub bulk: Option<Uuid>,
}

/// Why an action was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The action does not start from this state.
    InvalidTransition(State),
    /// A hold or a cancellation of a request whose DELETE was already sent upstream.
    DeletionSent(Action),
    /// Four eyes: the one who asked for the erasure cannot decide on it.
    ApproverIsRequester(Action),
    /// A hold names its ground under Art. 17(3).
    LegalBasisRequired,
    /// An extension beyond `MAX_EXTENSION_MONTHS` in total.
    ExtensionTooLong { already: u32 },
}

/// What the store changes besides the request's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Record the approving key; the paused steps become ready.
    Approve { by: Uuid },
    /// Wipe the sealed target; every step not ended is cancelled.
    Cancel,
    /// The failed steps run again from their first attempt.
    Retry,
    /// Record the ground and where the hold found the request; ready steps pause.
    Hold {
        legal_basis: LegalBasis,
        note: Option<String>,
        from: State,
    },
    /// Forget the hold; the paused steps become ready when the request goes back to work.
    Release { resume: bool },
    /// Move the due date.
    Extend {
        total_months: u32,
        due_at: DateTime<Utc>,
    },
}

/// What the store applies, in one transaction with the audit entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub from: State,
    pub to: State,
    pub change: Change,
}

/// What the audit log records of an action: where it found the request and left it, and with
/// what. (`legal_basis` is read back by the `request.on_hold` webhook: `events::HeldData`.)
#[derive(Debug, Serialize)]
struct ActionRecord<'a> {
    from: State,
    to: State,
    action: &'static str,
    note: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    legal_basis: Option<LegalBasis>,
    /// The months this extension adds.
    #[serde(skip_serializing_if = "Option::is_none")]
    months: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bulk_operation: Option<Uuid>,
}

impl Plan {
    /// The audit event of the action this plan applies, and what it records.
    pub fn record(&self, ask: &Ask) -> (Event, Value) {
        let event = match ask.action {
            Action::Approve => Event::Approved,
            Action::Cancel => Event::Cancelled,
            Action::Retry => Event::Retried,
            Action::Hold => Event::Held,
            Action::Release => Event::Released,
            Action::Extend => Event::Extended,
        };
        let legal_basis = match &self.change {
            Change::Hold { legal_basis, .. } => Some(*legal_basis),
            _ => None,
        };
        let months = match self.change {
            Change::Extend { .. } => ask.details.months,
            _ => None,
        };
        let data = data_of(&ActionRecord {
            from: self.from,
            to: self.to,
            action: ask.action.as_str(),
            note: ask.details.note.as_deref(),
            legal_basis,
            months,
            bulk_operation: ask.details.bulk,
        });
        (event, data)
    }
}

/// Decides an action on a request.
pub fn decide(request: &Snapshot, ask: &Ask) -> Result<Plan, Refusal> {
    use Action::*;
    let from = request.state;
    if !ask.action.allowed_from().contains(&from) {
        return Err(Refusal::InvalidTransition(from));
    }
    if matches!(ask.action, Cancel | Hold) && from == State::InProgress && request.deletion_sent {
        return Err(Refusal::DeletionSent(ask.action));
    }
    // Four eyes: approving always needs a second person; holding, releasing and extending do
    // when the approval policy asks for one for this scope.
    let own = request.requested_by == ask.actor;
    let second_person = match ask.action {
        Approve => true,
        Hold | Release | Extend => second_person_decides(ask.policy, request.scope),
        Cancel | Retry => false,
    };
    if own && second_person {
        return Err(Refusal::ApproverIsRequester(ask.action));
    }
    let (to, change) = match ask.action {
        Approve => (State::Queued, Change::Approve { by: ask.key }),
        Cancel => (State::Cancelled, Change::Cancel),
        Retry => (State::Queued, Change::Retry),
        Hold => {
            let legal_basis = ask.details.legal_basis.ok_or(Refusal::LegalBasisRequired)?;
            let note = ask.details.note.clone();
            (
                State::OnHold,
                Change::Hold {
                    legal_basis,
                    note,
                    from,
                },
            )
        }
        Release => {
            // Back to where the hold found it; a step that failed meanwhile fails the request.
            let back = match request.held_from.unwrap_or(State::Queued) {
                State::InProgress if request.step_failed => State::Failed,
                held_from => held_from,
            };
            let resume = matches!(back, State::Queued | State::InProgress);
            (back, Change::Release { resume })
        }
        Extend => {
            let months = ask.details.months.unwrap_or(1);
            let already = request.extended_months;
            if already + months > MAX_EXTENSION_MONTHS {
                return Err(Refusal::ExtensionTooLong { already });
            }
            let total_months = already + months;
            (
                from,
                Change::Extend {
                    total_months,
                    due_at: due_at(request.received_at, total_months),
                },
            )
        }
    };
    Ok(Plan { from, to, change })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn request(state: State) -> Snapshot {
        Snapshot {
            state,
            scope: Scope::User,
            requested_by: Who::Person(Uuid::from_u128(1)),
            extended_months: 0,
            received_at: Utc.with_ymd_and_hms(2027, 1, 31, 10, 0, 0).unwrap(),
            held_from: None,
            deletion_sent: false,
            step_failed: false,
        }
    }

    fn ask(action: Action, actor: u128) -> Ask {
        Ask {
            action,
            actor: Who::Person(Uuid::from_u128(actor)),
            key: Uuid::from_u128(100 + actor),
            policy: ApprovalPolicy::UserScope,
            details: Details {
                legal_basis: Some(LegalBasis::LegalClaims),
                note: Some("litigation".into()),
                months: Some(1),
                bulk: None,
            },
        }
    }

    #[test]
    fn the_one_who_asked_never_approves() {
        let r = request(State::PendingApproval);
        assert_eq!(
            decide(&r, &ask(Action::Approve, 1)),
            Err(Refusal::ApproverIsRequester(Action::Approve))
        );
        let plan = decide(&r, &ask(Action::Approve, 2)).unwrap();
        assert_eq!(plan.to, State::Queued);
        assert_eq!(
            plan.change,
            Change::Approve {
                by: Uuid::from_u128(102)
            }
        );
    }

    #[test]
    fn hold_release_and_extend_need_a_second_person_where_the_policy_says() {
        let queued = request(State::Queued);
        for action in [Action::Hold, Action::Extend] {
            assert_eq!(
                decide(&queued, &ask(action, 1)),
                Err(Refusal::ApproverIsRequester(action))
            );
            let mut none = ask(action, 1);
            none.policy = ApprovalPolicy::None;
            assert!(decide(&queued, &none).is_ok());
            let mut connection = queued.clone();
            connection.scope = Scope::Connection;
            assert!(decide(&connection, &ask(action, 1)).is_ok());
        }
        let mut held = request(State::OnHold);
        held.held_from = Some(State::Queued);
        assert_eq!(
            decide(&held, &ask(Action::Release, 1)),
            Err(Refusal::ApproverIsRequester(Action::Release))
        );
        // A person through another key of theirs is the same person; a machine's key is not.
        let mut own_key = ask(Action::Approve, 1);
        own_key.key = Uuid::from_u128(999);
        assert_eq!(
            decide(&request(State::PendingApproval), &own_key),
            Err(Refusal::ApproverIsRequester(Action::Approve))
        );
        let mut machine = request(State::PendingApproval);
        machine.requested_by = Who::Key(Uuid::from_u128(1));
        assert!(decide(&machine, &ask(Action::Approve, 1)).is_ok());
        // Cancelling one's own request is always allowed.
        assert!(decide(&queued, &ask(Action::Cancel, 1)).is_ok());
    }

    #[test]
    fn a_release_returns_where_the_hold_found_the_request() {
        for (from, resume) in [
            (State::PendingApproval, false),
            (State::Queued, true),
            (State::InProgress, true),
            (State::Failed, false),
        ] {
            let hold = decide(&request(from), &ask(Action::Hold, 2)).unwrap();
            assert_eq!(hold.to, State::OnHold);
            let mut held = request(State::OnHold);
            held.held_from = Some(from);
            let release = decide(&held, &ask(Action::Release, 2)).unwrap();
            assert_eq!(
                (release.to, release.change),
                (from, Change::Release { resume })
            );
        }
        // A step failed while the request was held from in_progress.
        let mut held = request(State::OnHold);
        held.held_from = Some(State::InProgress);
        held.step_failed = true;
        let release = decide(&held, &ask(Action::Release, 2)).unwrap();
        assert_eq!(release.to, State::Failed);
    }

    #[test]
    fn hold_and_cancel_stop_an_erasure_until_its_delete_is_sent() {
        let mut started = request(State::InProgress);
        for action in [Action::Hold, Action::Cancel] {
            assert!(decide(&started, &ask(action, 2)).is_ok());
        }
        started.deletion_sent = true;
        for action in [Action::Hold, Action::Cancel] {
            assert_eq!(
                decide(&started, &ask(action, 2)),
                Err(Refusal::DeletionSent(action))
            );
        }
        // A failed request may be held or cancelled whatever it sent (its retry is stopped).
        let mut failed = request(State::Failed);
        failed.deletion_sent = true;
        assert!(decide(&failed, &ask(Action::Hold, 2)).is_ok());
        assert!(decide(&failed, &ask(Action::Cancel, 2)).is_ok());
    }

    #[test]
    fn extensions_are_capped_at_two_months_in_total() {
        let mut r = request(State::Queued);
        let plan = decide(&r, &ask(Action::Extend, 2)).unwrap();
        assert_eq!(plan.to, State::Queued);
        assert_eq!(
            plan.change,
            Change::Extend {
                total_months: 1,
                due_at: Utc.with_ymd_and_hms(2027, 3, 31, 10, 0, 0).unwrap()
            }
        );
        r.extended_months = 1;
        let mut two = ask(Action::Extend, 2);
        two.details.months = Some(2);
        assert_eq!(
            decide(&r, &two),
            Err(Refusal::ExtensionTooLong { already: 1 })
        );
    }

    #[test]
    fn actions_start_only_from_their_states() {
        for state in State::ALL {
            let r = request(state);
            let allowed = |a| decide(&r, &ask(a, 2)).is_ok();
            assert_eq!(allowed(Action::Approve), state == State::PendingApproval);
            assert_eq!(allowed(Action::Retry), state == State::Failed);
            assert_eq!(
                allowed(Action::Cancel),
                !matches!(state, State::Completed | State::Cancelled)
            );
            assert_eq!(
                allowed(Action::Extend),
                !matches!(state, State::Completed | State::Cancelled)
            );
        }
    }
}

//! What a step's attempt changes, decided from how it ended: the step's new state, what becomes
//! of its request (its next step, its completion, its failure) and what the audit log records.
//! Pure: `store::steps` reads what a decision needs (the request's state, its row locked, for
//! the attempts that need it), asks [`settle`], and applies the answers of many attempts in one
//! transaction.
//!
//! Every rule of a step's end lives here once: the order of an erasure's steps, that a hold
//! stops an erasure before its delete (the delete waits `paused`), that the last step completes
//! the request, that a failure fails the request unless it is held (its release finds the failed
//! step), and what each end records.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::events::{Event, data_of};
use super::{Scope, State, StepKind, StepState};

/// Where a step stands in its request's plan, and which attempt ended.
#[derive(Debug, Clone, Copy)]
pub struct Position {
    pub scope: Scope,
    pub kind: StepKind,
    pub ordinal: i16,
    pub attempt: i32,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy)]
pub enum Ended<'a> {
    /// The step did its work; `detail` is what it found or did (counts, no identifier).
    Done { detail: &'a Value },
    /// A transient failure: try again at `at`. `throttled`: the upstream asked to wait (429).
    Retry {
        error: &'a str,
        at: DateTime<Utc>,
        throttled: bool,
    },
    /// A permanent failure: the request needs a person.
    Failed { error: &'a str },
}

/// What becomes of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// Nothing now: the step waits for its retry.
    Wait,
    /// Its next step is stored, `paused` when `held` (a hold stopped the erasure before its
    /// delete: the release lets it go on).
    Next { kind: StepKind, held: bool },
    /// The request completes.
    Complete,
    /// The request goes to `state`: `failed`, or it stays `on_hold`.
    Fail { state: State },
}

/// The decision on one attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Settlement {
    /// The step's new state.
    pub step: StepState,
    pub then: Then,
    /// What the audit log records of the attempt.
    pub event: Event,
    pub data: Value,
}

impl Position {
    /// The step after this one in its request's plan.
    pub fn next(&self) -> Option<StepKind> {
        self.scope.steps().get(self.ordinal as usize + 1).copied()
    }

    /// Whether settling an attempt that ended so needs its request's state: a success before the
    /// delete (a hold stops the erasure there) and a failure (a held request stays held).
    pub fn needs_request_state(&self, ended: &Ended) -> bool {
        match ended {
            Ended::Done { .. } => self.next() == Some(StepKind::Delete),
            Ended::Failed { .. } => true,
            Ended::Retry { .. } => false,
        }
    }
}

/// What the audit log records of an attempt that did not succeed.
#[derive(Debug, Serialize)]
struct AttemptData<'a> {
    step: StepKind,
    attempt: i32,
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    throttled: bool,
}

/// Decides what an attempt that ended so at `at` changes; `request` is its request's state
/// (read with its row locked) when [`Position::needs_request_state`] asks for it.
pub fn settle(at: Position, ended: &Ended, request: Option<State>) -> Settlement {
    let held = request == Some(State::OnHold);
    match *ended {
        Ended::Done { detail } => {
            let event = match at.kind {
                StepKind::Inventory => Event::Inventoried,
                StepKind::Delete => Event::Deleted,
                StepKind::Verify => Event::VerifiedAbsent,
                StepKind::CascadeCheck => Event::CascadeObserved,
            };
            let mut data = detail.clone();
            data["attempt"] = at.attempt.into();
            let then = match at.next() {
                Some(kind) => Then::Next {
                    kind,
                    held: held && kind == StepKind::Delete,
                },
                None => Then::Complete,
            };
            Settlement {
                step: StepState::Succeeded,
                then,
                event,
                data,
            }
        }
        Ended::Retry {
            error,
            at: retry_at,
            throttled,
        } => Settlement {
            step: StepState::Ready,
            then: Then::Wait,
            event: Event::AttemptFailed,
            data: data_of(&AttemptData {
                step: at.kind,
                attempt: at.attempt,
                error,
                retry_at: Some(retry_at),
                throttled,
            }),
        },
        Ended::Failed { error } => Settlement {
            step: StepState::Failed,
            then: Then::Fail {
                state: if held { State::OnHold } else { State::Failed },
            },
            event: Event::Failed,
            data: data_of(&AttemptData {
                step: at.kind,
                attempt: at.attempt,
                error,
                retry_at: None,
                throttled: false,
            }),
        },
    }
}

/// What a step found or did: its `detail`, which the API shows and the audit log records with
/// the step's end. Counts and results only, never an id.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Detail {
    /// An inventory that counted everything (`complete`: true).
    Counted {
        present: bool,
        connections: Option<u64>,
        channels: Option<u64>,
        accounts: Option<u64>,
        complete: bool,
    },
    /// An inventory that gave up counting after its attempts (`complete`: false): what it had
    /// counted, and why it stopped.
    GaveUp {
        present: Option<bool>,
        channels: Option<u64>,
        connections: Option<usize>,
        connections_counted: usize,
        accounts_counted: u64,
        complete: bool,
        reason: String,
    },
    /// A delete, a verification or a cascade check: its result.
    Result(StepResult),
}

/// What a delete, a verification or a cascade check came to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepResult {
    pub result: &'static str,
    /// The verify step's last round of deletion, when it deleted the target again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_again: Option<u32>,
    /// Why a cascade check was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<&'static str>,
    /// A remaining channel's status (letters, digits and `_`, at most 32).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel_status: Option<String>,
}

impl StepResult {
    /// The result alone.
    pub fn of(result: &'static str) -> Self {
        StepResult {
            result,
            deleted_again: None,
            why: None,
            channel_status: None,
        }
    }
}

impl Detail {
    /// A step's result alone.
    pub fn result(result: &'static str) -> Self {
        Detail::Result(StepResult::of(result))
    }

    /// As the steps' table and the audit log store it.
    pub fn record(&self) -> Value {
        data_of(self)
    }
}

/// One upstream call of an attempt, as the audit log records it in the attempt's entry
/// (`calls`): the route template, never a path with ids.
#[derive(Debug, Serialize)]
pub struct CallData<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub status: Option<u16>,
    pub error: Option<&'a str>,
    pub duration_ms: u64,
}

/// An attempt's entry (`data` of its settlement) with the upstream calls it made, in the order
/// they were sent: one entry records what an attempt did and what came of it.
pub fn with_calls(mut data: Value, calls: &[CallData]) -> Value {
    if !calls.is_empty() {
        data["calls"] = data_of(&calls);
    }
    data
}

/// A target found back upstream by the verify step and deleted again in `round`
/// (`resurrection_at_verify`).
pub fn redeleted(at: Position, round: u32) -> Value {
    #[derive(Serialize)]
    struct Redeleted {
        step: StepKind,
        attempt: i32,
        round: u32,
        action: &'static str,
    }
    data_of(&Redeleted {
        step: at.kind,
        attempt: at.attempt,
        round,
        action: "deleted_again",
    })
}

/// The `completed` entry of a request, and the `re_erasure_completed` entry its original gets
/// when it re-erases one (`re_erasure_request` names the re-erasure).
pub fn completed(outcome: &str, re_erasure_request: Option<uuid::Uuid>) -> Value {
    #[derive(Serialize)]
    struct Completed<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        re_erasure_request: Option<uuid::Uuid>,
        outcome: &'a str,
    }
    data_of(&Completed {
        re_erasure_request,
        outcome,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn at(scope: Scope, ordinal: i16) -> Position {
        Position {
            scope,
            kind: scope.steps()[ordinal as usize],
            ordinal,
            attempt: 2,
        }
    }

    #[test]
    fn a_success_goes_on_to_the_next_step_and_the_last_completes() {
        let detail = json!({"accounts": 3});
        let first = at(Scope::User, 0);
        let s = settle(
            first,
            &Ended::Done { detail: &detail },
            Some(State::InProgress),
        );
        assert_eq!(s.step, StepState::Succeeded);
        assert_eq!(
            s.then,
            Then::Next {
                kind: StepKind::Delete,
                held: false
            }
        );
        assert_eq!(
            (s.event, s.data),
            (Event::Inventoried, json!({"accounts": 3, "attempt": 2}))
        );
        let last = at(Scope::User, (Scope::User.steps().len() - 1) as i16);
        let s = settle(last, &Ended::Done { detail: &detail }, None);
        assert_eq!(s.then, Then::Complete);
    }

    #[test]
    fn a_hold_stops_an_erasure_before_its_delete_only() {
        let detail = json!({});
        let before_delete = at(Scope::Connection, 0);
        let done = Ended::Done { detail: &detail };
        assert!(before_delete.needs_request_state(&done));
        let s = settle(before_delete, &done, Some(State::OnHold));
        assert_eq!(
            s.then,
            Then::Next {
                kind: StepKind::Delete,
                held: true
            }
        );
        // After the delete, nothing stops the verification.
        let delete = at(Scope::Connection, 1);
        assert!(!delete.needs_request_state(&done));
        let s = settle(delete, &done, Some(State::OnHold));
        assert!(matches!(s.then, Then::Next { held: false, .. }));
    }

    #[test]
    fn a_failure_fails_the_request_unless_it_is_held() {
        let step = at(Scope::Account, 1);
        let failed = Ended::Failed {
            error: "403 from upstream",
        };
        assert!(step.needs_request_state(&failed));
        let s = settle(step, &failed, Some(State::InProgress));
        assert_eq!(s.step, StepState::Failed);
        assert_eq!(
            s.then,
            Then::Fail {
                state: State::Failed
            }
        );
        assert_eq!(s.event, Event::Failed);
        assert_eq!(
            s.data,
            json!({"step": "delete", "attempt": 2, "error": "403 from upstream"})
        );
        let s = settle(step, &failed, Some(State::OnHold));
        assert_eq!(
            s.then,
            Then::Fail {
                state: State::OnHold
            }
        );
    }

    #[test]
    fn details_record_counts_and_results_in_the_shapes_the_api_shows() {
        let counted = Detail::Counted {
            present: true,
            connections: Some(3),
            channels: None,
            accounts: Some(9),
            complete: true,
        };
        assert_eq!(
            counted.record(),
            json!({"present": true, "connections": 3, "channels": null, "accounts": 9, "complete": true})
        );
        assert_eq!(
            Detail::result("deleted").record(),
            json!({"result": "deleted"})
        );
        let again = Detail::Result(StepResult {
            deleted_again: Some(2),
            ..StepResult::of("absent")
        });
        assert_eq!(
            again.record(),
            json!({"result": "absent", "deleted_again": 2})
        );
        let gave_up = Detail::GaveUp {
            present: Some(true),
            channels: None,
            connections: Some(2),
            connections_counted: 1,
            accounts_counted: 4,
            complete: false,
            reason: "gave up".into(),
        };
        let keys: Vec<String> = gave_up
            .record()
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(
            keys,
            [
                "accounts_counted",
                "channels",
                "complete",
                "connections",
                "connections_counted",
                "present",
                "reason"
            ]
        );
    }

    #[test]
    fn a_retry_waits_and_records_when_and_whether_it_was_throttled() {
        let step = at(Scope::User, 0);
        let when = Utc::now();
        let retry = Ended::Retry {
            error: "503",
            at: when,
            throttled: true,
        };
        assert!(!step.needs_request_state(&retry));
        let s = settle(step, &retry, None);
        assert_eq!(
            (s.step, s.then, s.event),
            (StepState::Ready, Then::Wait, Event::AttemptFailed)
        );
        assert_eq!(s.data["throttled"], true);
        assert_eq!(s.data["retry_at"], json!(when));
        let s = settle(
            step,
            &Ended::Retry {
                error: "503",
                at: when,
                throttled: false,
            },
            None,
        );
        assert!(
            s.data.get("throttled").is_none(),
            "only a throttled retry says so"
        );
    }
}

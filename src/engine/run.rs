//! One attempt of one step.
//!
//! A transient error never fails a request here (unless `ERASURE_MAX_ATTEMPTS` asks for it);
//! what is read upstream stays in memory, sealed or pseudonymised before it is kept.

use std::sync::Arc;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span};

use super::Engine;
use crate::domain::steps::{Detail, StepResult};
use crate::domain::{Scope, StepKind};
use crate::jobs::lease::{self, Held};
use crate::metrics::AttemptOutcome;
use crate::store::guard::GuardArm;
use crate::store::steps::{self, Attempt, Claimed, Finished, Outcome};
use crate::upstream::CallRecord;
use crate::upstream::{CallError, Cascade, InventoryProgress};

/// Upstream ids learnt at inventory, sealed on the request while it is open, and for an account
/// the pseudonyms the resurrection guard keeps once it is deleted. While the inventory is under
/// way, what it has read so far.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Context {
    connection_id: Option<String>,
    channel_id: Option<String>,
    #[serde(default)]
    connection_ref: Option<String>,
    #[serde(default)]
    guard_refs: Vec<String>,
    /// The inventory ran out of attempts: what it did not learn stays unknown.
    #[serde(default)]
    inventory_incomplete: bool,
    /// An unfinished inventory's progress (cleared when it ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    inventory: Option<InventoryProgress>,
    /// Times the verify step found the target back after its deletion and deleted it again, in
    /// its attempts so far (counted afresh from its first attempt, e.g. after an operator's retry).
    #[serde(default, skip_serializing_if = "is_zero")]
    redeleted: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// How many times the verify step deletes again a target it finds back upstream after its
/// deletion (a synchronisation re-added it) before it fails the request: each round is audited
/// (`resurrection_at_verify`).
pub const MAX_REDELETES: u32 = 3;

impl Engine {
    /// Runs one attempt and records it, then the request's next steps back to back while they
    /// succeed (unless the process is stopping or the circuit is open).
    pub(super) async fn run_step(
        self: Arc<Self>,
        mut step: Claimed,
        shutdown: CancellationToken,
        hard_stop: CancellationToken,
    ) {
        'steps: loop {
            let mut calls = Vec::new();
            let mut redeleted = Vec::new();
            let span = step_span(&step);
            let lease = self.settings.lease;
            let renew = || async {
                match steps::renew(&self.db, &step, lease).await {
                    Ok(held) => held,
                    Err(e) => {
                        tracing::warn!(request = %step.request_id, error = %e, "lease renewal failed; will retry");
                        true
                    }
                }
            };
            // The lease is renewed by this same future (no detached task), so a worker that dies
            // or is aborted stops renewing at once and the rescuer can hand the step to another.
            // The attempt is pinned here, so that `hold` holds a reference only: its future is
            // large, and thousands run at once.
            let held = {
                let work = std::pin::pin!(
                    self.attempt(&step, &mut calls, &mut redeleted)
                        .instrument(span.clone())
                );
                lease::hold(work, lease, &hard_stop, renew).await
            };
            let result = match held {
                Held::Done(outcome) => Some(outcome),
                Held::Stopped => None,
                Held::Lost => {
                    tracing::warn!(request = %step.request_id, "lease lost; abandoning the attempt");
                    None
                }
            };
            let Some(outcome) = result else {
                // Shutdown past its grace, or the lease was lost: give it back (deletes are
                // idempotent).
                if let Err(e) = steps::release(&self.db, &step).await {
                    tracing::warn!(request = %step.request_id, error = %e, "could not give a step back; its lease will expire");
                }
                return;
            };
            let label = outcome_label(&outcome);
            record_outcome(&span, &outcome, label);
            drop(span);
            tracing::debug!(request = %step.request_id, step = ?step.kind, attempt = step.attempts, outcome = label.as_str(), "step attempt ended");
            crate::metrics::global().attempt(step.kind, label);
            let take_next = (!shutdown.is_cancelled() && !self.upstream.breaker.is_open())
                .then_some(self.settings.lease);
            for delay_ms in [50u64, 200, 1000, 3000] {
                let attempt = Attempt {
                    step: step.clone(),
                    outcome: outcome.clone(),
                    calls: calls.clone(),
                    redeleted: redeleted.clone(),
                    take_next,
                };
                match self.recorder.submit(attempt).await {
                    Ok(Finished::Next(next)) => {
                        step = next;
                        continue 'steps;
                    }
                    // The request's next step is ready: this process takes it at once (other
                    // processes are not notified for it; they poll).
                    Ok(Finished::NextReady) => return self.ready.wake(),
                    // A step given back to wait: the claim loop sleeps until it is due.
                    Ok(Finished::Recorded) if matches!(outcome, Outcome::RetryAt { .. }) => {
                        return self.ready.wake();
                    }
                    Ok(Finished::Recorded) => return,
                    Ok(Finished::Lost) => {
                        tracing::info!(request = %step.request_id, step = ?step.kind, "step was taken over by another worker; outcome dropped");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(request = %step.request_id, error = %e, "recording a step outcome failed; retrying");
                        tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
                    }
                }
            }
            tracing::error!(request = %step.request_id, "could not record a step outcome; the lease will expire and the step run again");
            return;
        }
    }

    async fn attempt(
        &self,
        step: &Claimed,
        calls: &mut Vec<CallRecord>,
        redeleted: &mut Vec<u32>,
    ) -> Outcome {
        let policy = &self.settings.retry;
        // A step claimed past the (opt-in) attempt count fails before any call.
        if policy.exhausted(step.attempts - 1) {
            return Outcome::Fail {
                error: format!("gave up after {} attempts", policy.max_attempts),
            };
        }
        let Some(sealed) = step.target_sealed.as_deref() else {
            return Outcome::Fail {
                error: "the target identifier is no longer held (request closed)".into(),
            };
        };
        let target = match self.sealer.open(step.request_id, sealed) {
            Ok(bytes) => String::from_utf8(bytes).unwrap_or_default(),
            Err(e) => {
                return Outcome::Fail {
                    error: e.to_string(),
                };
            }
        };
        let context: Context = step
            .context_sealed
            .as_deref()
            .and_then(|s| self.sealer.open(step.request_id, s).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let mut progress = context.inventory.clone().unwrap_or_default();

        let (reason, retry_after, throttled) = match self
            .execute(step, &target, &context, &mut progress, calls, redeleted)
            .await
        {
            Ok(outcome) => return outcome,
            Err(CallError::Permanent { reason }) => return Outcome::Fail { error: reason },
            Err(CallError::Transient {
                reason,
                retry_after,
                throttled,
            }) => (reason, retry_after, throttled),
        };
        // What this attempt did is kept for the next one: an inventory's progress, the verify
        // step's rounds of deletion.
        let kept = self
            .progress_context(step, &context, &progress)
            .or_else(|| self.redeleted_context(step, &context, redeleted));
        // A 429 is the upstream asking to wait: the attempt is given back (it neither counts
        // nor grows the backoff) and the step waits for the Retry-After.
        if throttled {
            return Outcome::RetryAt {
                error: reason,
                at: after(retry_after.unwrap_or(THROTTLED_WAIT)),
                context: kept,
                throttled: true,
            };
        }
        if policy.exhausted(step.attempts) {
            return Outcome::Fail {
                error: format!("gave up after {} attempts: {reason}", step.attempts),
            };
        }
        // The inventory only counts: once its own attempts are spent it is recorded as
        // incomplete, with the reason, and the erasure goes on to its deletion.
        if step.kind == StepKind::Inventory && step.attempts >= self.settings.inventory_attempts {
            return self.incomplete_inventory(step, &target, &progress, &reason);
        }
        Outcome::RetryAt {
            error: reason,
            at: after(policy.delay(step.attempts, retry_after)),
            context: kept,
            throttled: false,
        }
    }

    /// The verify step's rounds of deletion so far, before this attempt.
    fn redeleted_before(step: &Claimed, context: &Context) -> u32 {
        if step.attempts > 1 {
            context.redeleted
        } else {
            0
        }
    }

    /// The request's context with the verify step's rounds of deletion counted, sealed; `None`
    /// when this attempt deleted nothing again.
    fn redeleted_context(
        &self,
        step: &Claimed,
        context: &Context,
        redeleted: &[u32],
    ) -> Option<Vec<u8>> {
        let last = *redeleted.last()?;
        let kept = Context {
            redeleted: last,
            ..context.clone()
        };
        Some(self.seal_context(step, &kept))
    }

    /// The request's context with an unfinished inventory's progress, sealed; `None` when there
    /// is nothing new to keep.
    fn progress_context(
        &self,
        step: &Claimed,
        context: &Context,
        progress: &InventoryProgress,
    ) -> Option<Vec<u8>> {
        if step.kind != StepKind::Inventory
            || progress.is_empty()
            || context.inventory.as_ref() == Some(progress)
        {
            return None;
        }
        let kept = Context {
            inventory: Some(progress.clone()),
            ..Context::default()
        };
        Some(self.seal_context(step, &kept))
    }

    fn seal_context(&self, step: &Claimed, context: &Context) -> Vec<u8> {
        self.sealer.seal(
            step.request_id,
            &serde_json::to_vec(context).expect("context serialises"),
        )
    }

    /// An inventory that ran out of attempts: done, but incomplete, with what it counted. An
    /// account's guard then knows the account by its id only (its bank references were not
    /// read), and its cascade check is skipped (its connection is not known).
    fn incomplete_inventory(
        &self,
        step: &Claimed,
        target: &str,
        progress: &InventoryProgress,
        reason: &str,
    ) -> Outcome {
        let context = Context {
            inventory_incomplete: true,
            guard_refs: if step.scope == Scope::Account {
                self.pseudonyms.subject_refs(Scope::Account, target)
            } else {
                Vec::new()
            },
            ..Context::default()
        };
        let detail = progress.gave_up(format!(
            "gave up counting after {} attempts: {reason}",
            step.attempts
        ));
        Outcome::Done {
            detail: detail.record(),
            context: Some(self.seal_context(step, &context)),
            guard: None,
        }
    }

    async fn execute(
        &self,
        step: &Claimed,
        target: &str,
        context: &Context,
        progress: &mut InventoryProgress,
        calls: &mut Vec<CallRecord>,
        redeleted: &mut Vec<u32>,
    ) -> Result<Outcome, CallError> {
        let up = &self.upstream;
        let done = |detail: Detail| Outcome::Done {
            detail: detail.record(),
            context: None,
            guard: None,
        };
        Ok(match step.kind {
            StepKind::Inventory => {
                let inv = up.inventory(step.scope, target, progress, calls).await?;
                let p = &self.pseudonyms;
                let guard_refs = if step.scope == Scope::Account && inv.present {
                    let mut refs = p.subject_refs(Scope::Account, target);
                    for (kind, value) in &inv.bank_references.0 {
                        refs.extend(p.account_refs(kind, value));
                    }
                    refs
                } else {
                    Vec::new()
                };
                let context = Context {
                    connection_id: inv.connection_id.clone(),
                    channel_id: inv.channel_id.clone(),
                    connection_ref: inv
                        .connection_id
                        .as_deref()
                        .map(|c| p.subject_ref(Scope::Connection, c)),
                    guard_refs,
                    ..Context::default()
                };
                // Written when it holds something, or to clear the progress kept so far.
                let sealed = (context.connection_id.is_some() || step.context_sealed.is_some())
                    .then(|| self.seal_context(step, &context));
                Outcome::Done {
                    detail: Detail::Counted {
                        present: inv.present,
                        connections: inv.connections,
                        channels: inv.channels,
                        accounts: inv.accounts,
                        complete: true,
                    }
                    .record(),
                    context: sealed,
                    guard: None,
                }
            }
            StepKind::Delete => {
                let deleted = up.delete(step.scope, target, calls).await?;
                Outcome::Done {
                    detail: Detail::result(if deleted { "deleted" } else { "already_absent" })
                        .record(),
                    context: None,
                    // From now on a synchronisation that lists the account again is a
                    // resurrection.
                    guard: (!context.guard_refs.is_empty()).then(|| GuardArm {
                        connection_ref: context.connection_ref.clone(),
                        refs: context.guard_refs.clone(),
                    }),
                }
            }
            StepKind::Verify => {
                let before = Self::redeleted_before(step, context);
                while up.exists(step.scope, target, calls).await? {
                    // Back after its deletion (a synchronisation re-added it), or a slow deletion
                    // (the GET still answers after the DELETE): a second DELETE tells them apart.
                    let round = before + redeleted.len() as u32 + 1;
                    if round > MAX_REDELETES {
                        return Ok(Outcome::Fail {
                            error: format!(
                                "still present upstream after being deleted again {MAX_REDELETES} times: \
                                 something keeps re-adding it (a synchronisation of its \
                                 connection); stop that, or erase the connection, then retry"
                            ),
                        });
                    }
                    if !up.delete(step.scope, target, calls).await? {
                        // Already gone (404): the GET answered from a slow deletion. Re-verify
                        // with backoff.
                        return Err(CallError::transient(
                            "still present upstream after deletion; verifying again",
                        ));
                    }
                    redeleted.push(round);
                }
                let detail = Detail::Result(StepResult {
                    deleted_again: redeleted.last().copied(),
                    ..StepResult::of("absent")
                });
                Outcome::Done {
                    detail: detail.record(),
                    context: self.redeleted_context(step, context, redeleted),
                    guard: None,
                }
            }
            StepKind::CascadeCheck => match context.connection_id.as_deref() {
                None => done(Detail::Result(StepResult {
                    why: Some(if context.inventory_incomplete {
                        "the inventory was incomplete: the account's connection is not known"
                    } else {
                        "the account was absent before deletion"
                    }),
                    ..StepResult::of("skipped")
                })),
                Some(connection) => {
                    let cascade = up
                        .cascade(connection, context.channel_id.as_deref(), calls)
                        .await?;
                    done(match cascade {
                        Cascade::ConnectionDeleted => Detail::result("connection_deleted"),
                        Cascade::ChannelEmpty => Detail::result("channel_empty"),
                        Cascade::ChannelRemains(status) => Detail::Result(StepResult {
                            channel_status: Some(
                                status
                                    .chars()
                                    .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                                    .take(32)
                                    .collect(),
                            ),
                            ..StepResult::of("channel_remains")
                        }),
                    })
                }
            },
        })
    }
}

/// How long a 429 without a `Retry-After` makes a step wait.
const THROTTLED_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The time `delay` from now.
fn after(delay: std::time::Duration) -> chrono::DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default()
}

/// The span of one attempt of a step when traces are on (`telemetry`): a child of the API call
/// that created the request (its stored `traceparent`), parent of the attempt's upstream calls.
/// It names the request by its id and the step by its kind, scope and attempt; never its target
/// or pseudonym.
fn step_span(step: &Claimed) -> Span {
    if !crate::telemetry::enabled() {
        return Span::none();
    }
    use tracing::field::Empty;
    let span = tracing::info_span!(
        "step",
        otel.name = %format_args!("step {}", step.kind.as_str()),
        otel.status_code = Empty,
        otel.status_description = Empty,
        trace_id = Empty,
        erasure.request.id = %step.request_id,
        erasure.step = step.kind.as_str(),
        erasure.scope = step.scope.as_str(),
        erasure.attempt = step.attempts,
        erasure.step.outcome = Empty,
    );
    crate::telemetry::continue_trace(&span, step.traceparent.as_deref());
    span
}

/// How the attempt ended, on its span: the outcome, and for a failure the error status with the
/// reason the request shows (`last_error`, which holds no id).
fn record_outcome(span: &Span, outcome: &Outcome, label: AttemptOutcome) {
    if span.is_disabled() {
        return;
    }
    span.record("erasure.step.outcome", label.as_str());
    if let Outcome::Fail { error } = outcome {
        span.record("otel.status_code", "ERROR");
        span.record("otel.status_description", error.as_str());
    }
}

fn outcome_label(o: &Outcome) -> AttemptOutcome {
    match o {
        Outcome::Done { .. } => AttemptOutcome::Done,
        Outcome::RetryAt { .. } => AttemptOutcome::Retry,
        Outcome::Fail { .. } => AttemptOutcome::Failed,
    }
}

//! Steps as durable jobs: SKIP LOCKED claims with a lease, fenced completion, rescue of expired
//! leases. No transaction is held open while a step calls the upstream.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::Db;
use super::audit::{self, Entry};
use super::guard::GuardArm;
use crate::domain::{Scope, StepKind};

/// A step a worker holds.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub step_id: i64,
    pub request_id: Uuid,
    pub ordinal: i16,
    pub kind: StepKind,
    pub attempts: i32,
    pub lease_token: Uuid,
    pub scope: Scope,
    pub subject_ref: String,
    pub target_sealed: Option<Vec<u8>>,
    pub context_sealed: Option<Vec<u8>>,
}

/// Claims up to `limit` ready steps.
pub async fn claim(db: &Db, limit: i64, lease: Duration) -> sqlx::Result<Vec<Claimed>> {
    sqlx::query_as::<_, Claimed>(
        "with next as ( \
             select id from steps where state = 'ready' and run_at <= now() \
             order by run_at limit $1 for update skip locked \
         ), claimed as ( \
             update steps s set state = 'running', attempts = s.attempts + 1, \
                 lease_token = gen_random_uuid(), lease_until = now() + $2, updated_at = now() \
             from next where s.id = next.id \
             returning s.id, s.request_id, s.ordinal, s.kind, s.attempts, s.lease_token \
         ), started as ( \
             update erasure_requests r set state = 'in_progress', updated_at = now() \
             from claimed c where r.id = c.request_id and r.state = 'queued' \
         ) \
         select c.id as step_id, c.request_id, c.ordinal, c.kind, c.attempts, c.lease_token, \
             r.scope, r.subject_ref, r.target_sealed, r.context_sealed \
         from claimed c join erasure_requests r on r.id = c.request_id",
    )
    .bind(limit)
    .bind(lease)
    .fetch_all(db)
    .await
}

// A lease token is set exactly while its step runs (constraint `steps_leased_while_running`), so
// the token alone fences an attempt's writes below. (With `and state = 'running'` added, the
// planner's generic plan walked the partial index of running steps, dead entries included,
// instead of the primary key: 0.28 ms a step, and growing between vacuums.)

/// Extends the lease; false when the step is no longer ours.
pub async fn renew(db: &Db, c: &Claimed, lease: Duration) -> sqlx::Result<bool> {
    let done =
        sqlx::query("update steps set lease_until = now() + $3 where id = $1 and lease_token = $2")
            .bind(c.step_id)
            .bind(c.lease_token)
            .bind(lease)
            .execute(db)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives a step back untried (shutdown): ready now, the attempt not counted.
pub async fn release(db: &Db, c: &Claimed) -> sqlx::Result<()> {
    sqlx::query(
        "update steps set state = 'ready', attempts = greatest(attempts - 1, 0), lease_token = null, \
         lease_until = null, run_at = now(), updated_at = now() \
         where id = $1 and lease_token = $2",
    )
    .bind(c.step_id)
    .bind(c.lease_token)
    .execute(db)
    .await?;
    Ok(())
}

/// Returns steps whose lease expired to the queue. Returns how many.
pub async fn rescue(db: &Db) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "update steps set state = 'ready', lease_token = null, lease_until = null, run_at = now(), \
         last_error = 'lease expired: the worker stopped or lost the database', updated_at = now() \
         where id in (select id from steps where state = 'running' and lease_until < now() \
                      for update skip locked)",
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// What became of a step's attempt.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The step did its work. `context` replaces the request's sealed context when given;
    /// `guard` arms the resurrection guard for a deleted account.
    Done {
        detail: Value,
        context: Option<Vec<u8>>,
        guard: Option<GuardArm>,
    },
    /// A transient failure: try again at `at`.
    RetryAt { error: String, at: DateTime<Utc> },
    /// A permanent failure: the request fails and needs a person.
    Fail { error: String },
}

/// One upstream call, as the audit log records it (no ids: the path is a template).
#[derive(Debug, Clone)]
pub struct CallRecord {
    pub method: &'static str,
    pub path: &'static str,
    pub status: Option<u16>,
    pub error: Option<&'static str>,
    pub duration_ms: u64,
}

/// What recording an attempt's outcome did.
#[derive(Debug)]
pub enum Finished {
    /// The step is no longer held by this attempt: nothing was written.
    Lost,
    /// Recorded; nothing of the request is ready now (it completed or failed, or a retry waits).
    Recorded,
    /// Recorded; the request's next step is ready for any worker.
    NextReady,
    /// Recorded; the request's next step is leased to the caller, who runs it at once.
    Next(Claimed),
}

/// Records the outcome of an attempt, fenced by the lease token (nothing is written when the
/// step is no longer held by this attempt). With `take_next`, a success leases the request's next
/// step to the caller in the same transaction: no claim, no wake-up between an erasure's steps.
pub async fn finish(
    db: &Db,
    c: &Claimed,
    outcome: Outcome,
    calls: &[CallRecord],
    take_next: Option<Duration>,
) -> sqlx::Result<Finished> {
    let mut tx = db.begin().await?;
    let (state, error, detail, run_at) = match &outcome {
        Outcome::Done { detail, .. } => ("succeeded", None, Some(detail.clone()), None),
        Outcome::RetryAt { error, at } => ("ready", Some(error.as_str()), None, Some(*at)),
        Outcome::Fail { error } => ("failed", Some(error.as_str()), None, None),
    };
    let fenced = sqlx::query(
        "update steps set state = $3, last_error = $4, detail = coalesce($5, detail), \
             run_at = coalesce($6, run_at), lease_token = null, lease_until = null, updated_at = now() \
         where id = $1 and lease_token = $2",
    )
    .bind(c.step_id)
    .bind(c.lease_token)
    .bind(state)
    .bind(error)
    .bind(detail)
    .bind(run_at)
    .execute(&mut *tx)
    .await?;
    if fenced.rows_affected() != 1 {
        return Ok(Finished::Lost);
    }
    let entry = |event: &'static str, data: Value| Entry {
        request_id: Some(c.request_id),
        subject_ref: Some(&c.subject_ref),
        actor: audit::ENGINE,
        event,
        data,
    };
    let mut entries: Vec<Entry> = calls
        .iter()
        .map(|call| {
            entry(
                "upstream_call",
                json!({
                    "step": c.kind, "attempt": c.attempts, "method": call.method, "path": call.path,
                    "status": call.status, "error": call.error, "duration_ms": call.duration_ms,
                }),
            )
        })
        .collect();
    let step = json!({"step": c.kind, "attempt": c.attempts});
    let mut original_ref = None;
    let finished = match outcome {
        Outcome::Done {
            detail,
            context,
            guard,
        } => {
            if let Some(guard) = guard {
                super::guard::arm(&mut tx, c.request_id, &guard).await?;
            }
            if let Some(context) = &context {
                sqlx::query("update erasure_requests set context_sealed = $2 where id = $1")
                    .bind(c.request_id)
                    .bind(context)
                    .execute(&mut *tx)
                    .await?;
            }
            let event = match c.kind {
                StepKind::Inventory => "inventoried",
                StepKind::Delete => "deleted",
                StepKind::Verify => "verified_absent",
                StepKind::CascadeCheck => "cascade_observed",
            };
            let mut data = detail;
            data["attempt"] = json!(c.attempts);
            entries.push(entry(event, data));
            let next = next_step(&mut tx, c, take_next).await?;
            match next {
                Some((step_id, kind, attempts, lease_token)) => match lease_token {
                    Some(lease_token) => Finished::Next(Claimed {
                        step_id,
                        request_id: c.request_id,
                        ordinal: c.ordinal + 1,
                        kind,
                        attempts,
                        lease_token,
                        scope: c.scope,
                        subject_ref: c.subject_ref.clone(),
                        target_sealed: c.target_sealed.clone(),
                        context_sealed: context.or_else(|| c.context_sealed.clone()),
                    }),
                    None => Finished::NextReady,
                },
                None => {
                    let (outcome, original, subject_ref) = complete_request(&mut tx, c).await?;
                    entries.push(entry("completed", json!({"outcome": outcome})));
                    // A re-erasure's completion is also told on the original, so its receipt
                    // shows it.
                    if let (Some(original), Some(subject_ref)) = (original, subject_ref) {
                        original_ref = Some((original, subject_ref, outcome));
                    }
                    Finished::Recorded
                }
            }
        }
        Outcome::RetryAt { error, at } => {
            let mut data = step;
            data["error"] = json!(error);
            data["retry_at"] = json!(at);
            entries.push(entry("attempt_failed", data));
            Finished::Recorded
        }
        Outcome::Fail { error } => {
            sqlx::query(
                "update erasure_requests set state = 'failed', failure_reason = $2, updated_at = now() \
                 where id = $1",
            )
            .bind(c.request_id)
            .bind(&error)
            .execute(&mut *tx)
            .await?;
            let mut data = step;
            data["error"] = json!(error);
            entries.push(entry("failed", data));
            Finished::Recorded
        }
    };
    if let Some((original, subject_ref, outcome)) = &original_ref {
        entries.push(Entry {
            request_id: Some(*original),
            subject_ref: Some(subject_ref),
            actor: audit::ENGINE,
            event: "re_erasure_completed",
            data: json!({"re_erasure_request": c.request_id, "outcome": outcome}),
        });
    }
    audit::append_all(&mut tx, entries).await?;
    tx.commit().await?;
    Ok(finished)
}

/// Makes the request's next waiting step ready, or with `take_next` leases it to the caller.
/// The next step keeps the request's place in the queue (its receipt time), so erasures already
/// started finish before new ones start.
async fn next_step(
    tx: &mut Transaction<'_, Postgres>,
    c: &Claimed,
    take_next: Option<Duration>,
) -> sqlx::Result<Option<(i64, StepKind, i32, Option<Uuid>)>> {
    let query = match take_next {
        Some(lease) => sqlx::query_as(
            "update steps set state = 'running', attempts = attempts + 1, \
                 lease_token = gen_random_uuid(), lease_until = now() + $3, updated_at = now() \
             where request_id = $1 and ordinal = $2 and state = 'waiting' \
             returning id, kind, attempts, lease_token",
        )
        .bind(c.request_id)
        .bind(c.ordinal + 1)
        .bind(lease),
        None => sqlx::query_as(
            "update steps set state = 'ready', updated_at = now(), \
                 run_at = (select received_at from erasure_requests where id = $1) \
             where request_id = $1 and ordinal = $2 and state = 'waiting' \
             returning id, kind, attempts, lease_token",
        )
        .bind(c.request_id)
        .bind(c.ordinal + 1),
    };
    query.fetch_optional(&mut **tx).await
}

/// Completes the request: its outcome, and the original it re-erases (with its pseudonym), if any.
async fn complete_request(
    tx: &mut Transaction<'_, Postgres>,
    c: &Claimed,
) -> sqlx::Result<(String, Option<Uuid>, Option<String>)> {
    sqlx::query_as(
        "update erasure_requests r set state = 'completed', completed_at = now(), updated_at = now(), \
             target_sealed = null, context_sealed = null, \
             outcome = (select case when detail->>'result' = 'already_absent' \
                             then 'already_erased' else 'erased' end \
                        from steps where request_id = $1 and kind = 'delete') \
         where id = $1 returning outcome, resurrection_of, \
             (select o.subject_ref from erasure_requests o where o.id = r.resurrection_of)",
    )
    .bind(c.request_id)
    .fetch_one(&mut **tx)
    .await
}

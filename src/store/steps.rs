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

/// Extends the lease; false when the step is no longer ours.
pub async fn renew(db: &Db, c: &Claimed, lease: Duration) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "update steps set lease_until = now() + $3 where id = $1 and lease_token = $2 and state = 'running'",
    )
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
         where id = $1 and lease_token = $2 and state = 'running'",
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

/// Records the outcome of an attempt, fenced by the lease token: false when the step is no longer
/// held by this attempt (nothing is written then).
pub async fn finish(
    db: &Db,
    c: &Claimed,
    outcome: Outcome,
    calls: &[CallRecord],
) -> sqlx::Result<bool> {
    let mut tx = db.begin().await?;
    let (state, error, detail, run_at) = match &outcome {
        Outcome::Done { detail, .. } => ("succeeded", None, Some(detail.clone()), None),
        Outcome::RetryAt { error, at } => ("ready", Some(error.as_str()), None, Some(*at)),
        Outcome::Fail { error } => ("failed", Some(error.as_str()), None, None),
    };
    let fenced = sqlx::query(
        "update steps set state = $3, last_error = $4, detail = coalesce($5, detail), \
             run_at = coalesce($6, run_at), lease_token = null, lease_until = null, updated_at = now() \
         where id = $1 and lease_token = $2 and state = 'running'",
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
        return Ok(false);
    }
    let step = json!({"step": c.kind, "attempt": c.attempts});
    for call in calls {
        append(
            &mut tx,
            c,
            "upstream_call",
            json!({
                "step": c.kind, "attempt": c.attempts, "method": call.method, "path": call.path,
                "status": call.status, "error": call.error, "duration_ms": call.duration_ms,
            }),
        )
        .await?;
    }
    match outcome {
        Outcome::Done {
            detail,
            context,
            guard,
        } => {
            if let Some(guard) = guard {
                super::guard::arm(&mut tx, c.request_id, &guard).await?;
            }
            if let Some(context) = context {
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
            append(&mut tx, c, event, data).await?;
            // The next step keeps the request's place in the queue (its receipt time), so
            // erasures already started finish before new ones start.
            let next = sqlx::query(
                "update steps set state = 'ready', updated_at = now(), \
                     run_at = (select received_at from erasure_requests where id = $1) \
                 where request_id = $1 and ordinal = $2 and state = 'waiting'",
            )
            .bind(c.request_id)
            .bind(c.ordinal + 1)
            .execute(&mut *tx)
            .await?;
            if next.rows_affected() == 0 {
                complete_request(&mut tx, c).await?;
            }
        }
        Outcome::RetryAt { error, at } => {
            let mut data = step;
            data["error"] = json!(error);
            data["retry_at"] = json!(at);
            append(&mut tx, c, "attempt_failed", data).await?;
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
            append(&mut tx, c, "failed", data).await?;
        }
    }
    tx.commit().await?;
    Ok(true)
}

async fn complete_request(tx: &mut Transaction<'_, Postgres>, c: &Claimed) -> sqlx::Result<()> {
    let (outcome, original): (String, Option<Uuid>) = sqlx::query_as(
        "update erasure_requests set state = 'completed', completed_at = now(), updated_at = now(), \
             target_sealed = null, context_sealed = null, \
             outcome = (select case when detail->>'result' = 'already_absent' \
                             then 'already_erased' else 'erased' end \
                        from steps where request_id = $1 and kind = 'delete') \
         where id = $1 returning outcome, resurrection_of",
    )
    .bind(c.request_id)
    .fetch_one(&mut **tx)
    .await?;
    append(tx, c, "completed", json!({"outcome": outcome})).await?;
    // A re-erasure's completion is also told on the original, so its receipt shows it.
    if let Some(original) = original {
        let subject_ref: String =
            sqlx::query_scalar("select subject_ref from erasure_requests where id = $1")
                .bind(original)
                .fetch_one(&mut **tx)
                .await?;
        audit::append(
            tx,
            Entry {
                request_id: Some(original),
                subject_ref: Some(&subject_ref),
                actor: audit::ENGINE,
                event: "re_erasure_completed",
                data: json!({"re_erasure_request": c.request_id, "outcome": outcome}),
            },
        )
        .await?;
    }
    Ok(())
}

async fn append(
    tx: &mut Transaction<'_, Postgres>,
    c: &Claimed,
    event: &str,
    data: Value,
) -> sqlx::Result<()> {
    audit::append(
        tx,
        Entry {
            request_id: Some(c.request_id),
            subject_ref: Some(&c.subject_ref),
            actor: audit::ENGINE,
            event,
            data,
        },
    )
    .await
}

//! Steps as durable jobs: the steps queue (its claim, lease and rescue are `store::lease`'s, the
//! queue described here once), and the fenced, grouped recording of attempts' outcomes. No
//! transaction is held open while a step calls the upstream.
//!
//! Never writes an outcome for a step its attempt no longer holds (the lease token fences it).

use crate::domain::events::Event;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use super::Db;
use super::audit::{self, Entry};
use super::group::{Group, Writes};
use super::guard::GuardArm;
use super::lease::{self, Lease, Queue, Renewal};
use crate::domain::steps::{self, Ended, Position, Settlement, Then};
use crate::domain::{Scope, State, StepKind};
use crate::upstream::CallRecord;

/// A step a worker holds.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    /// The step's id and its attempt's lease token.
    #[sqlx(flatten)]
    pub lease: Lease<i64>,
    pub request_id: Uuid,
    pub ordinal: i16,
    pub kind: StepKind,
    pub attempts: i32,
    pub scope: Scope,
    pub subject_ref: String,
    pub target_sealed: Option<Vec<u8>>,
    pub context_sealed: Option<Vec<u8>>,
    /// The request's `traceparent`: the step's span continues its trace.
    pub traceparent: Option<String>,
    /// The request was queued when the step was claimed: the attempt's outcome starts it.
    pub queued: bool,
}

// A lease token is set exactly while its step runs (constraint `steps_leased_while_running`), so
// the token alone fences an attempt's writes (no `held_while`). (With `and state = 'running'`
// added, the planner's generic plan walked the partial index of running steps, dead entries
// included, instead of the primary key: 0.28 ms a step, and growing between vacuums.) The claim
// walks the partial index `steps_ready` (BENCHMARKS.md, "Claim query"). It leaves the request's
// state alone: a queued request becomes `in_progress` with its first attempt's outcome
// (`finish_all`), which writes the row anyway (one non-HOT update of the request fewer).
/// The steps queue (`store::lease`).
pub const QUEUE: Queue = lease::queue! {
    table: "steps",
    due: "select id from steps where state = 'ready' and run_at <= now() order by run_at limit $1",
    set: ", state = 'running', attempts = q.attempts + 1, updated_at = now()",
    returning: "q.id, q.request_id, q.ordinal, q.kind, q.attempts, q.lease_token",
    then: " \
         select c.id, c.request_id, c.ordinal, c.kind, c.attempts, c.lease_token, \
             r.scope, r.subject_ref, r.target_sealed, r.context_sealed, r.traceparent, \
             r.state = 'queued' as queued \
         from claimed c join erasure_requests r on r.id = c.request_id",
    held_while: "",
    // Given back untried (shutdown): ready now, the attempt not counted.
    release: ", state = 'ready', attempts = greatest(attempts - 1, 0), run_at = now(), \
              updated_at = now()",
    rescue: (
        "state = 'running'",
        ", state = 'ready', run_at = now(), updated_at = now(), \
         last_error = 'lease expired: the worker stopped or lost the database'"
    ),
};

/// Claims up to `limit` ready steps.
pub async fn claim(db: &Db, limit: i64, lease: Duration) -> sqlx::Result<Vec<Claimed>> {
    lease::claim(db, &QUEUE, limit, lease).await
}

/// How long until the next waiting step is due (zero when one is due already; none when no step
/// waits). A claim loop that found nothing due sleeps no longer than this, so a step that gave
/// its slot back to wait for a `Retry-After` or a backoff is taken again when due, not at the
/// next poll. One look-up of the first entry of `steps_ready`.
pub async fn next_due_in(db: &Db) -> sqlx::Result<Option<Duration>> {
    let secs: Option<f64> = sqlx::query_scalar(
        "select extract(epoch from min(run_at) - clock_timestamp())::float8 \
         from steps where state = 'ready'",
    )
    .fetch_one(db)
    .await?;
    Ok(secs.map(|s| Duration::from_secs_f64(s.max(0.0))))
}

/// Extends the lease; false when the step is no longer ours.
pub async fn renew(db: &Db, c: &Claimed, lease: Duration) -> sqlx::Result<bool> {
    lease::renew(db, &QUEUE, &c.lease, lease, Renewal::Working).await
}

/// Gives a step back untried (shutdown): ready now, the attempt not counted.
pub async fn release(db: &Db, c: &Claimed) -> sqlx::Result<()> {
    lease::release(db, &QUEUE, &c.lease).await
}

/// Returns steps whose lease expired to the queue. Returns how many.
pub async fn rescue(db: &Db) -> sqlx::Result<u64> {
    lease::rescue(db, &QUEUE).await
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
    /// A transient failure: try again at `at`. `context`, when given, replaces the request's
    /// sealed context (what a multi-call step learnt so far, for the next attempt to continue
    /// from). `throttled`: the upstream asked to wait (429); the attempt is given back, so it
    /// neither counts nor grows the step's backoff.
    RetryAt {
        error: String,
        at: DateTime<Utc>,
        context: Option<Vec<u8>>,
        throttled: bool,
    },
    /// A permanent failure: the request fails and needs a person.
    Fail { error: String },
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

/// An attempt's outcome to record.
pub struct Attempt {
    pub step: Claimed,
    pub outcome: Outcome,
    pub calls: Vec<CallRecord>,
    /// The rounds (numbered from 1) in which the verify step found its target back upstream
    /// after its deletion and deleted it again, in this attempt: each is audited as a
    /// resurrection (`resurrection_at_verify`).
    pub redeleted: Vec<u32>,
    /// With a lease, a success leases the request's next step to the caller.
    pub take_next: Option<Duration>,
}

/// Records attempts' outcomes, many in one commit when many steps end at once (`store::group`).
pub struct Outcomes;

pub type Recorder = Group<Outcomes>;

/// Starts the writers that record outcomes.
pub fn recorder(db: Db, writers: usize) -> Recorder {
    Group::start(db, Outcomes, writers)
}

impl Writes for Outcomes {
    type Job = Attempt;
    type Out = Finished;

    async fn write(
        &self,
        conn: &mut PgConnection,
        jobs: &[Attempt],
    ) -> sqlx::Result<Vec<Finished>> {
        finish_all(conn, jobs).await
    }
}

impl Outcome {
    /// How the attempt ended, as `domain::steps` decides on it.
    fn ended(&self) -> Ended<'_> {
        match self {
            Outcome::Done { detail, .. } => Ended::Done { detail },
            Outcome::RetryAt {
                error,
                at,
                throttled,
                ..
            } => Ended::Retry {
                error,
                at: *at,
                throttled: *throttled,
            },
            Outcome::Fail { error } => Ended::Failed { error },
        }
    }
}

impl Attempt {
    fn position(&self) -> Position {
        Position {
            scope: self.step.scope,
            kind: self.step.kind,
            ordinal: self.step.ordinal,
            attempt: self.step.attempts,
        }
    }
}

/// Records the outcomes of attempts, each fenced by its lease token (nothing is written for a
/// step no longer held by its attempt: `Lost`), with one statement per kind of write for all of
/// them, as `domain::steps::settle` decides. A success with `take_next` leases the request's next
/// step to the caller in the same transaction: no claim, no wake-up between an erasure's steps.
async fn finish_all(conn: &mut PgConnection, jobs: &[Attempt]) -> sqlx::Result<Vec<Finished>> {
    let states = request_states(conn, jobs).await?;
    let settled: Vec<Settlement> = jobs
        .iter()
        .map(|j| {
            let state = states.get(&j.step.request_id).copied();
            steps::settle(j.position(), &j.outcome.ended(), state)
        })
        .collect();
    let held_ids = fence(conn, jobs, &settled).await?;
    let held: Vec<(&Attempt, &Settlement)> = jobs
        .iter()
        .zip(&settled)
        .filter(|(j, _)| held_ids.contains(&j.step.lease.id))
        .collect();

    // What an attempt changes besides its step: the request's sealed context (a success's, or a
    // retry's progress) and its start (a queued request is `in_progress` from the first outcome
    // of a step: the claim does not write the request), the resurrection guard (a success's).
    let (mut ctx_ids, mut ctxs) = (Vec::new(), Vec::new());
    let (mut guard_ids, mut guard_conns, mut guard_refs) = (Vec::new(), Vec::new(), Vec::new());
    for (j, _) in &held {
        let (context, guard) = match &j.outcome {
            Outcome::Done { context, guard, .. } => (context, guard.as_ref()),
            Outcome::RetryAt { context, .. } => (context, None),
            Outcome::Fail { .. } => continue,
        };
        // A request queued when its step was claimed is started here (queued again at any
        // step when retried or released); the statement leaves a state it no longer has.
        if context.is_some() || j.step.queued {
            ctx_ids.push(j.step.request_id);
            ctxs.push(context.as_deref());
        }
        if let Some(guard) = guard {
            guard_ids.push(j.step.request_id);
            guard_conns.push(guard.connection_ref.as_deref());
            guard_refs.push(json!(guard.refs));
        }
    }
    if !ctx_ids.is_empty() {
        sqlx::query(
            "update erasure_requests r set context_sealed = coalesce(u.context, r.context_sealed), \
                 state = case when r.state = 'queued' then 'in_progress' else r.state end, \
                 updated_at = case when r.state = 'queued' then now() else r.updated_at end \
             from unnest($1::uuid[], $2::bytea[]) as u(id, context) \
             where r.id = u.id and (u.context is not null or r.state = 'queued')",
        )
        .bind(&ctx_ids)
        .bind(&ctxs)
        .execute(&mut *conn)
        .await?;
    }
    if !guard_ids.is_empty() {
        super::guard::arm_all(conn, &guard_ids, &guard_conns, &guard_refs).await?;
    }

    // The next step of each success, or its request's completion, or its failure.
    let mut next = next_steps(conn, &held).await?;
    let last: Vec<Uuid> = held
        .iter()
        .filter(|(_, s)| s.then == Then::Complete)
        .map(|(j, _)| j.step.request_id)
        .collect();
    let completed = complete_requests(conn, &last).await?;
    let (mut failed, mut failed_to, mut reasons) = (Vec::new(), Vec::new(), Vec::new());
    for (j, s) in &held {
        if let (Then::Fail { state }, Outcome::Fail { error }) = (s.then, &j.outcome) {
            failed.push(j.step.request_id);
            failed_to.push(state.as_str());
            reasons.push(error.as_str());
        }
    }
    if !failed.is_empty() {
        sqlx::query(
            "update erasure_requests r set failure_reason = u.reason, updated_at = now(), \
                 state = u.state \
             from unnest($1::uuid[], $2::text[], $3::text[]) as u(id, reason, state) \
             where r.id = u.id",
        )
        .bind(&failed)
        .bind(&reasons)
        .bind(&failed_to)
        .execute(&mut *conn)
        .await?;
    }

    // The audit entries of every attempt, in order.
    let mut entries = Vec::new();
    let mut out = Vec::with_capacity(jobs.len());
    for (job, settlement) in jobs.iter().zip(settled) {
        if !held_ids.contains(&job.step.lease.id) {
            out.push(Finished::Lost);
            continue;
        }
        let c = &job.step;
        let entry = |event: Event, data: Value| Entry {
            request_id: Some(c.request_id),
            subject_ref: Some(&c.subject_ref),
            actor: audit::ENGINE,
            event,
            data,
        };
        let calls: Vec<steps::CallData> = job
            .calls
            .iter()
            .map(|call| steps::CallData {
                method: call.method,
                path: call.path,
                status: call.status,
                error: call.error,
                duration_ms: call.duration_ms,
            })
            .collect();
        entries.extend(job.redeleted.iter().map(|round| {
            entry(
                Event::ResurrectionAtVerify,
                steps::redeleted(job.position(), *round),
            )
        }));
        entries.push(entry(
            settlement.event,
            steps::with_calls(settlement.data, &calls),
        ));
        out.push(match settlement.then {
            Then::Wait | Then::Fail { .. } => Finished::Recorded,
            Then::Next { .. } => match next.remove(&c.request_id) {
                Some((id, kind, attempts, Some(token))) => Finished::Next(Claimed {
                    lease: Lease { id, token },
                    request_id: c.request_id,
                    ordinal: c.ordinal + 1,
                    kind,
                    attempts,
                    scope: c.scope,
                    subject_ref: c.subject_ref.clone(),
                    target_sealed: c.target_sealed.clone(),
                    context_sealed: match &job.outcome {
                        Outcome::Done {
                            context: Some(context),
                            ..
                        } => Some(context.clone()),
                        _ => c.context_sealed.clone(),
                    },
                    traceparent: c.traceparent.clone(),
                    // Started by this outcome.
                    queued: false,
                }),
                Some((_, _, _, None)) => Finished::NextReady,
                // The next step was not stored: it exists already in another state.
                None => Finished::Recorded,
            },
            Then::Complete => {
                let (outcome, original, original_ref) = completed
                    .get(&c.request_id)
                    .ok_or(sqlx::Error::RowNotFound)?;
                entries.push(entry(Event::Completed, steps::completed(outcome, None)));
                // A re-erasure's completion is also told on the original, so its receipt shows
                // it.
                if let (Some(original), Some(original_ref)) = (original, original_ref) {
                    entries.push(Entry {
                        request_id: Some(*original),
                        subject_ref: Some(original_ref),
                        actor: audit::ENGINE,
                        event: Event::ReErasureCompleted,
                        data: steps::completed(outcome, Some(c.request_id)),
                    });
                }
                Finished::Recorded
            }
        });
    }
    audit::append_all(conn, entries).await?;
    Ok(out)
}

/// The states of the requests whose attempts need one to be settled
/// (`Position::needs_request_state`), their rows locked first (as `store::requests::act` locks
/// the row it acts on before its steps), so that a hold or a cancellation either comes before
/// the delete step is stored, or sees it and is refused: a DELETE is never sent for a held
/// request.
async fn request_states(
    conn: &mut PgConnection,
    jobs: &[Attempt],
) -> sqlx::Result<std::collections::HashMap<Uuid, State>> {
    let ids: Vec<Uuid> = jobs
        .iter()
        .filter(|j| j.position().needs_request_state(&j.outcome.ended()))
        .map(|j| j.step.request_id)
        .collect();
    if ids.is_empty() {
        return Ok(Default::default());
    }
    // Locking reads the row as the last committed change left it.
    let rows: Vec<(Uuid, State)> = sqlx::query_as(
        "select id, state from erasure_requests where id = any($1) \
         order by id for no key update",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Records each attempt's step state where its lease still holds; returns those steps' ids.
async fn fence(
    conn: &mut PgConnection,
    jobs: &[Attempt],
    settled: &[Settlement],
) -> sqlx::Result<std::collections::HashSet<i64>> {
    let n = jobs.len();
    let (mut ids, mut tokens, mut states, mut errors, mut details, mut run_ats, mut given_back) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (j, settlement) in jobs.iter().zip(settled) {
        let (error, detail, run_at, back) = match j.outcome.ended() {
            Ended::Done { detail } => (None, Some(detail), None, 0),
            Ended::Retry {
                error,
                at,
                throttled,
            } => (Some(error), None, Some(at), i32::from(throttled)),
            Ended::Failed { error } => (Some(error), None, None, 0),
        };
        ids.push(j.step.lease.id);
        tokens.push(j.step.lease.token);
        states.push(settlement.step.as_str());
        errors.push(error);
        details.push(detail);
        run_ats.push(run_at);
        given_back.push(back);
    }
    let held: Vec<i64> = sqlx::query_scalar(
        "update steps s set state = u.state, last_error = u.error, \
             detail = coalesce(u.detail, s.detail), run_at = coalesce(u.run_at, s.run_at), \
             attempts = s.attempts - u.given_back, \
             lease_token = null, lease_until = null, updated_at = now() \
         from unnest($1::int8[], $2::uuid[], $3::text[], $4::text[], $5::jsonb[], $6::timestamptz[], \
                     $7::int4[]) \
             as u(id, token, state, error, detail, run_at, given_back) \
         where s.id = u.id and s.lease_token = u.token \
         returning s.id",
    )
    .bind(&ids)
    .bind(&tokens)
    .bind(&states)
    .bind(&errors)
    .bind(&details)
    .bind(&run_ats)
    .bind(&given_back)
    .fetch_all(&mut *conn)
    .await?;
    Ok(held.into_iter().collect())
}

/// For each success whose scope's plan has a step after it, that step: stored now, leased to the
/// caller when it asked (`take_next`) or else ready. (Requests accepted by releases before 0009
/// have their later steps stored already, `waiting`: those rows are taken instead.) The next step
/// keeps the request's place in the queue (its receipt time), so erasures already started finish
/// before new ones start. Keyed by request; a step found in another state (the request was
/// cancelled meanwhile) is left alone and not returned.
async fn next_steps(
    conn: &mut PgConnection,
    held: &[(&Attempt, &Settlement)],
) -> sqlx::Result<std::collections::HashMap<Uuid, (i64, StepKind, i32, Option<Uuid>)>> {
    let with_next: Vec<(&Attempt, StepKind, bool)> = held
        .iter()
        .filter_map(|(j, s)| match s.then {
            Then::Next { kind, held } => Some((*j, kind, held)),
            _ => None,
        })
        .collect();
    if with_next.is_empty() {
        return Ok(Default::default());
    }
    let requests: Vec<Uuid> = with_next.iter().map(|(j, ..)| j.step.request_id).collect();
    let ordinals: Vec<i16> = with_next.iter().map(|(j, ..)| j.step.ordinal + 1).collect();
    let kinds: Vec<&str> = with_next.iter().map(|(_, k, _)| k.as_str()).collect();
    let leases: Vec<Option<f64>> = with_next
        .iter()
        .map(|(j, ..)| j.take_next.map(|d| d.as_secs_f64()))
        .collect();
    let paused: Vec<bool> = with_next.iter().map(|(.., held)| *held).collect();
    let rows: Vec<(Uuid, i64, StepKind, i32, Option<Uuid>)> = sqlx::query_as(
        "insert into steps as s (request_id, ordinal, kind, state, attempts, lease_token, \
             lease_until, run_at) \
         select u.request_id, u.ordinal, u.kind, \
             case when u.paused then 'paused' when u.lease is null then 'ready' else 'running' end, \
             case when u.lease is null or u.paused then 0 else 1 end, \
             case when u.lease is null or u.paused then null else gen_random_uuid() end, \
             case when u.paused then null else now() + u.lease * interval '1 second' end, \
             r.received_at \
         from unnest($1::uuid[], $2::int2[], $3::text[], $4::float8[], $5::bool[]) \
             as u(request_id, ordinal, kind, lease, paused) \
         join erasure_requests r on r.id = u.request_id \
         on conflict (request_id, ordinal) do update set state = excluded.state, \
             attempts = s.attempts + excluded.attempts, lease_token = excluded.lease_token, \
             lease_until = excluded.lease_until, run_at = excluded.run_at, updated_at = now() \
         where s.state = 'waiting' \
         returning s.request_id, s.id, s.kind, s.attempts, s.lease_token",
    )
    .bind(&requests)
    .bind(&ordinals)
    .bind(&kinds)
    .bind(&leases)
    .bind(&paused)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(request, id, kind, attempts, token)| (request, (id, kind, attempts, token)))
        .collect())
}

/// What completing a request found: its outcome, and the original it re-erases with that
/// original's pseudonym, if any.
type Completion = (String, Option<Uuid>, Option<String>);

/// Completes requests; keyed by request.
async fn complete_requests(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> sqlx::Result<std::collections::HashMap<Uuid, Completion>> {
    if ids.is_empty() {
        return Ok(Default::default());
    }
    let rows: Vec<(Uuid, String, Option<Uuid>, Option<String>)> = sqlx::query_as(
        "update erasure_requests r set state = 'completed', completed_at = now(), updated_at = now(), \
             target_sealed = null, context_sealed = null, \
             outcome = (select case when detail->>'result' = 'already_absent' \
                             then 'already_erased' else 'erased' end \
                        from steps where request_id = r.id and kind = 'delete') \
         where id = any($1) returning id, outcome, resurrection_of, \
             (select o.subject_ref from erasure_requests o where o.id = r.resurrection_of)",
    )
    .bind(ids)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, outcome, original, original_ref)| (id, (outcome, original, original_ref)))
        .collect())
}

//! Erasure requests: intake, reads, and the transitions people ask for.
//!
//! Takes and returns pseudonyms (`subject_ref`), never a target id in clear: the id arrives
//! sealed (`target_sealed`) and is wiped when the request ends. Never deletes a request (the
//! database refuses: migration 0011) and never changes a state but through `act` or the steps'
//! outcomes (`store::steps`).

use crate::domain::events::{AtRiskData, Event, data_of};
use crate::domain::records;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{HashMap, HashSet};

use sqlx::{Connection, PgConnection, Postgres, Transaction};

use utoipa::ToSchema;
use uuid::Uuid;

use super::Db;
use super::audit::{self, Entry};
use super::copy::BinaryRows;
use crate::domain::actions::{self, Ask, Change, Snapshot, Who};
use crate::domain::{Scope, State, StepKind, StepState};

/// A request as the API shows it. Never holds the target id.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct ErasureRequest {
    pub id: Uuid,
    pub scope: Scope,
    pub state: State,
    /// Pseudonym of the target: `k<version>:` + HMAC-SHA-256.
    pub subject_ref: String,
    pub external_reference: Option<String>,
    pub not_before: Option<DateTime<Utc>>,
    pub received_at: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
    pub extended_months: i32,
    pub completed_at: Option<DateTime<Utc>>,
    /// `erased` or `already_erased` once completed.
    pub outcome: Option<String>,
    pub failure_reason: Option<String>,
    pub hold_legal_basis: Option<String>,
    pub hold_note: Option<String>,
    pub requested_by: Uuid,
    pub approved_by: Option<Uuid>,
    pub batch_id: Option<Uuid>,
    /// For a re-erasure: the original erasure that a synchronisation undid.
    pub resurrection_of: Option<Uuid>,
    /// How many times the erased account was listed again upstream (and erased again).
    pub resurrections: i32,
    /// `erase_connection` when account erasures keep coming back on this account's connection:
    /// only erasing the connection (or the user) cannot be undone by a synchronisation.
    pub advice: Option<String>,
    #[sqlx(skip)]
    pub steps: Vec<Step>,
}

/// One step of a request.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Step {
    #[serde(skip)]
    pub request_id: Uuid,
    pub kind: StepKind,
    pub state: StepState,
    pub attempts: i32,
    pub last_error: Option<String>,
    /// When the step may next run.
    pub run_at: DateTime<Utc>,
    /// Counts and outcomes; never personal data.
    #[schema(value_type = Option<Object>)]
    pub detail: Option<serde_json::Value>,
}

/// `State::OPEN` as an SQL list, spelled as the predicate of the partial unique index
/// `erasure_requests_one_open_per_subject` (a macro, so SQL literals take it with `concat!`).
/// A literal, not a bound array: `on conflict` infers that index from its predicate when the
/// statement is prepared, and a query reads a partial index only when the planner can prove its
/// condition implies the predicate, which it cannot from a parameter in a generic plan. A test
/// below holds this list, `State::OPEN` and the migration alike.
macro_rules! open_states {
    () => {
        "('pending_approval', 'queued', 'in_progress', 'failed', 'on_hold')"
    };
}
pub(crate) use open_states;

/// The states not in `State::OPEN` as an SQL list, for `state not in`: spelled as the predicate
/// of the partial index `erasure_requests_due_open` (open requests by due date), so that the
/// queries of open requests by due date read it (a literal for the same reason as `open_states`).
macro_rules! closed_states {
    () => {
        "('completed', 'cancelled')"
    };
}
pub(crate) use closed_states;

/// Whether a request is *at risk* (an SQL condition on `erasure_requests`): open, and due from now
/// on but within `$days` days, `$days` being the placeholder (an `int4`) of
/// `ERASURE_AT_RISK_DAYS` (a macro, so SQL literals take it with `concat!`). Past its due date a
/// request is overdue instead (its own filter and figure), no longer at risk; with 0 days none is.
/// The one definition of the list's `at_risk` filter, the status page's section, the
/// `erasure_requests_at_risk` gauge and the sweep that audits it (`mark_at_risk`), so that they
/// agree. `state not in closed_states!()` and a range of `due_at` read the partial index
/// `erasure_requests_due_open`.
macro_rules! at_risk {
    ($days:literal) => {
        concat!(
            "(state not in ",
            $crate::store::requests::closed_states!(),
            " and due_at >= now() and due_at < now() + make_interval(days => ",
            $days,
            "))"
        )
    };
}
pub(crate) use at_risk;

/// The unique index that keeps one open request per target.
const ONE_OPEN_PER_SUBJECT: &str = "erasure_requests_one_open_per_subject";

/// Whether an insert failed because another submission of the same target committed an open
/// request at the same moment (the unique index refused the loser).
pub fn lost_race(e: &sqlx::Error) -> bool {
    super::violates(e, ONE_OPEN_PER_SUBJECT)
}

/// The requests of one target in every state, `$1` being its pseudonyms: a CTE named
/// `of_target`, read by the hash index on `subject_ref` before the rest of the query applies
/// (a macro, so SQL literals take it with `concat!`). A query that orders or filters by another
/// indexed column, with a limit, can otherwise be planned as a walk of that index through the
/// whole table (a generic plan, or statistics not yet gathered): 17 to 53 ms a look-up at 120,000
/// to 400,000 requests (BENCHMARKS.md).
macro_rules! of_target {
    () => {
        "with of_target as materialized \
         (select * from erasure_requests where subject_ref = any($1)) "
    };
}
pub(crate) use of_target;

const COLUMNS: &str = "id, scope, state, subject_ref, external_reference, not_before, received_at, \
    due_at, extended_months, completed_at, outcome, failure_reason, hold_legal_basis, hold_note, \
    requested_by, approved_by, batch_id, resurrection_of, resurrections, advice";

/// A request ready to insert: validated, pseudonymised and sealed.
#[derive(Clone)]
pub struct NewRequest {
    pub id: Uuid,
    pub scope: Scope,
    pub subject_ref: String,
    pub target_sealed: Vec<u8>,
    pub external_reference: Option<String>,
    pub not_before: Option<DateTime<Utc>>,
    pub state: State,
    /// The W3C `traceparent` of the API call that creates it (`telemetry::traceparent`): later
    /// work joins its trace. `None` when traces are off.
    pub traceparent: Option<String>,
}

/// What became of one item of an intake.
#[derive(Debug, Clone)]
pub enum Inserted {
    Created(Box<ErasureRequest>),
    /// An open request for the same target exists.
    DuplicateOf(Uuid),
}

/// Inserts requests with their steps and "received" audit entries (atomic on its own, or part of
/// the caller's transaction). Items whose target already has an open request (possibly one
/// earlier in the same call) are not inserted: each is `DuplicateOf` that request.
///
/// Calls of `COPY_FROM` items or more (batches) go in by `COPY` (`Rows::copy_fresh`), at
/// 10,000 items about a sixth cheaper than the statement. Smaller ones (single requests and the
/// intake's groups) go in by one statement (`Rows::insert`): three `COPY`s and a savepoint cost
/// more round trips than they save on a few rows (BENCHMARKS.md, 2026-11-30).
pub async fn insert_many(
    conn: &mut PgConnection,
    items: &[NewRequest],
    requested_by: Uuid,
    actor: &str,
    batch_id: Option<Uuid>,
    received_at: DateTime<Utc>,
) -> sqlx::Result<Vec<Inserted>> {
    const COPY_FROM: usize = 1000;
    /// Inserts after which an item neither inserted nor a duplicate of an open request is an
    /// error (each needs the target's open request to close at that very moment).
    const INSERTS: usize = 3;
    if items.is_empty() {
        return Ok(vec![]);
    }
    // The request is answered from memory: keep its times as PostgreSQL will.
    let received_at = as_stored(received_at);
    let rows = Rows {
        requested_by,
        actor,
        batch_id,
        received_at,
        due_at: crate::domain::due_at(received_at, 0),
    };
    let (mut created, mut open) = (HashSet::new(), HashMap::new());
    let mut left: Vec<&NewRequest> = items.iter().collect();
    for _ in 0..INSERTS {
        let inserted = if left.len() >= COPY_FROM {
            rows.copy_fresh(conn, &left).await?
        } else {
            rows.insert(conn, &left).await?
        };
        // The open request of each item not inserted (one query for all of them: re-sending a
        // whole batch makes every item a duplicate). An earlier item of the same call is among
        // them. After a copy that met open requests this is their second look-up, on purpose:
        // one that closed during the copy no longer makes its item a duplicate.
        let duplicate_refs: Vec<&str> = left
            .iter()
            .filter(|i| !inserted.contains(&i.id))
            .map(|i| i.subject_ref.as_str())
            .collect();
        created.extend(inserted);
        if !duplicate_refs.is_empty() {
            open.extend(open_requests(conn, &duplicate_refs).await?);
        }
        // An item whose target's open request closed between the insert and the look-up is no
        // longer a duplicate: it is inserted again (an intake group of one key is not in a
        // transaction, so failing here would retry items already committed).
        left.retain(|i| !created.contains(&i.id) && !open.contains_key(&i.subject_ref));
        if left.is_empty() {
            break;
        }
    }
    items
        .iter()
        .map(|item| {
            if created.contains(&item.id) {
                Ok(Inserted::Created(Box::new(rows.created(item))))
            } else {
                let existing = open
                    .get(&item.subject_ref)
                    .ok_or(sqlx::Error::RowNotFound)?;
                Ok(Inserted::DuplicateOf(*existing))
            }
        })
        .collect()
}

/// What the items of one `insert_many` share.
struct Rows<'a> {
    requested_by: Uuid,
    actor: &'a str,
    batch_id: Option<Uuid>,
    received_at: DateTime<Utc>,
    due_at: DateTime<Utc>,
}

impl Rows<'_> {
    /// Inserts the items by one statement; returns the ids inserted. An item whose target has
    /// an open request is skipped by `on conflict do nothing`.
    async fn insert(
        &self,
        conn: &mut PgConnection,
        items: &[&NewRequest],
    ) -> sqlx::Result<HashSet<Uuid>> {
        let ids: Vec<Uuid> = items.iter().map(|i| i.id).collect();
        let scopes: Vec<&str> = items.iter().map(|i| i.scope.as_str()).collect();
        let refs: Vec<&str> = items.iter().map(|i| i.subject_ref.as_str()).collect();
        let sealed: Vec<&[u8]> = items.iter().map(|i| i.target_sealed.as_slice()).collect();
        let external: Vec<Option<&str>> = items
            .iter()
            .map(|i| i.external_reference.as_deref())
            .collect();
        let states: Vec<&str> = items.iter().map(|i| i.state.as_str()).collect();
        let traceparents: Vec<Option<&str>> =
            items.iter().map(|i| i.traceparent.as_deref()).collect();
        let not_before: Vec<Option<DateTime<Utc>>> =
            items.iter().map(|i| i.not_before.map(as_stored)).collect();
        // The first step of every item (those of items not inserted are filtered out in SQL);
        // each later one is stored when the one before it succeeds.
        let kinds: Vec<&str> = items.iter().map(|i| i.scope.steps()[0].as_str()).collect();
        let step_states: Vec<&str> = items
            .iter()
            .map(|i| first_step_state(i.state).as_str())
            .collect();
        let run_at: Vec<DateTime<Utc>> = items
            .iter()
            .map(|i| first_run_at(i.not_before.map(as_stored), self.received_at))
            .collect();
        let created: Vec<Uuid> = sqlx::query_scalar(concat!(
            "with ins as ( \
                 insert into erasure_requests (id, scope, subject_ref, target_sealed, external_reference, \
                     state, not_before, received_at, due_at, requested_by, batch_id, traceparent) \
                 select u.id, u.scope, u.subject_ref, u.sealed, u.external, u.state, u.not_before, $8, $9, $10, $11, \
                     u.traceparent \
                 from unnest($1::uuid[], $2::text[], $3::text[], $4::bytea[], $5::text[], $6::text[], \
                             $7::timestamptz[], $17::text[]) \
                     as u(id, scope, subject_ref, sealed, external, state, not_before, traceparent) \
                 on conflict (subject_ref) where state in ",
            open_states!(),
            " do nothing \
                 returning id, scope, state, subject_ref \
             ), new_steps as ( \
                 insert into steps (request_id, ordinal, kind, state, run_at) \
                 select s.request_id, 0, s.kind, s.state, s.run_at \
                 from unnest($1::uuid[], $12::text[], $13::text[], $14::timestamptz[]) \
                     as s(request_id, kind, state, run_at) \
                 join ins on ins.id = s.request_id \
             ), received as ( \
                 insert into audit_entries (request_id, subject_ref, actor, event, data) \
                 select id, subject_ref, $15, $16, \
                     jsonb_build_object('scope', scope, 'state', state, 'batch_id', $11::uuid) \
                 from ins \
             ) \
             select id from ins",
        ))
        .bind(&ids)
        .bind(&scopes)
        .bind(&refs)
        .bind(&sealed)
        .bind(&external)
        .bind(&states)
        .bind(&not_before)
        .bind(self.received_at)
        .bind(self.due_at)
        .bind(self.requested_by)
        .bind(self.batch_id)
        .bind(&kinds)
        .bind(&step_states)
        .bind(&run_at)
        .bind(self.actor)
        .bind(Event::Received.as_str())
        .bind(&traceparents)
        .fetch_all(conn)
        .await?;
        Ok(created.into_iter().collect())
    }

    /// Copies the first item of each target of `items`; returns the ids inserted.
    ///
    /// `COPY` cannot skip a conflicting row as `on conflict do nothing` does, so it runs under a
    /// savepoint: when it meets an open request of one of the targets (a batch sent again, or
    /// another intake of the same target at the same moment), it is rolled back and copied again
    /// without the targets that have an open request. Items of fresh targets pay no look-up.
    async fn copy_fresh(
        &self,
        conn: &mut PgConnection,
        items: &[&NewRequest],
    ) -> sqlx::Result<HashSet<Uuid>> {
        /// Copies after which a conflict is returned as an error (each needs another intake of
        /// one of the targets between its look-up and its copy).
        const COPIES: usize = 4;
        let mut seen = HashSet::with_capacity(items.len());
        let firsts: Vec<&NewRequest> = items
            .iter()
            .copied()
            .filter(|i| seen.insert(i.subject_ref.as_str()))
            .collect();
        let mut open = HashMap::new();
        for copy in 1..=COPIES {
            let fresh: Vec<&NewRequest> = firsts
                .iter()
                .copied()
                .filter(|i| !open.contains_key(&i.subject_ref))
                .collect();
            let mut tx = Connection::begin(&mut *conn).await?;
            match self.copy(&mut tx, &fresh).await {
                Ok(()) => {
                    tx.commit().await?;
                    return Ok(fresh.iter().map(|i| i.id).collect());
                }
                Err(e) if copy < COPIES && lost_race(&e) => {
                    tx.rollback().await?;
                    let refs: Vec<&str> = firsts.iter().map(|i| i.subject_ref.as_str()).collect();
                    open = open_requests(conn, &refs).await?;
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the last copy returns")
    }

    /// Copies the requests, the first step of each (each later one is stored when the one
    /// before it succeeds) and their "received" entries.
    async fn copy(&self, conn: &mut PgConnection, items: &[&NewRequest]) -> sqlx::Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        // The entries' time is the database's clock, read once for them all: a column left to
        // its volatile default (`clock_timestamp()`) makes PostgreSQL insert a copy row by row.
        let at: DateTime<Utc> = sqlx::query_scalar("select clock_timestamp()")
            .fetch_one(&mut *conn)
            .await?;
        let mut requests = BinaryRows::with_capacity(items.len() * 256);
        let mut steps = BinaryRows::with_capacity(items.len() * 64);
        let mut received = BinaryRows::with_capacity(items.len() * 192);
        for item in items {
            requests
                .row(12)
                .uuid(Some(item.id))
                .text(Some(item.scope.as_str()))
                .text(Some(&item.subject_ref))
                .bytea(&item.target_sealed)
                .text(item.external_reference.as_deref())
                .text(Some(item.state.as_str()));
            match item.not_before {
                Some(t) => requests.timestamptz(t),
                None => requests.null(),
            };
            requests
                .timestamptz(self.received_at)
                .timestamptz(self.due_at)
                .uuid(Some(self.requested_by))
                .uuid(self.batch_id)
                .text(item.traceparent.as_deref());
            steps
                .row(5)
                .uuid(Some(item.id))
                .int2(0)
                .text(Some(item.scope.steps()[0].as_str()))
                .text(Some(first_step_state(item.state).as_str()))
                .timestamptz(first_run_at(item.not_before, self.received_at));
            let data = data_of(&records::Received {
                scope: item.scope,
                state: item.state,
                batch_id: self.batch_id,
            });
            // The entry's nonce is made here: the column's default (`gen_random_uuid()`, through
            // OpenSSL) took a quarter of this copy's time in PostgreSQL.
            received
                .row(7)
                .uuid(Some(item.id))
                .text(Some(&item.subject_ref))
                .text(Some(self.actor))
                .text(Some(Event::Received.as_str()))
                .jsonb(&data)
                .bytea(&rand::random::<[u8; 16]>())
                .timestamptz(at);
        }
        requests
            .copy_in(
                conn,
                "copy erasure_requests (id, scope, subject_ref, target_sealed, external_reference, \
                 state, not_before, received_at, due_at, requested_by, batch_id, traceparent) \
                 from stdin (format binary)",
            )
            .await?;
        steps
            .copy_in(
                conn,
                "copy steps (request_id, ordinal, kind, state, run_at) from stdin (format binary)",
            )
            .await?;
        received
            .copy_in(
                conn,
                "copy audit_entries (request_id, subject_ref, actor, event, data, nonce, at) \
                 from stdin (format binary)",
            )
            .await?;
        Ok(())
    }

    /// The request as inserted.
    fn created(&self, item: &NewRequest) -> ErasureRequest {
        let not_before = item.not_before.map(as_stored);
        ErasureRequest {
            id: item.id,
            scope: item.scope,
            state: item.state,
            subject_ref: item.subject_ref.clone(),
            external_reference: item.external_reference.clone(),
            not_before,
            received_at: self.received_at,
            due_at: self.due_at,
            extended_months: 0,
            completed_at: None,
            outcome: None,
            failure_reason: None,
            hold_legal_basis: None,
            hold_note: None,
            requested_by: self.requested_by,
            approved_by: None,
            batch_id: self.batch_id,
            resurrection_of: None,
            resurrections: 0,
            advice: None,
            steps: planned_steps(
                item.id,
                item.scope,
                first_run_at(not_before, self.received_at),
                vec![],
                first_step_state(item.state),
                StepState::Waiting,
            ),
        }
    }
}

/// A new request's first step: ready when it is queued, paused otherwise (awaiting approval).
fn first_step_state(state: State) -> StepState {
    match state {
        State::Queued => StepState::Ready,
        _ => StepState::Paused,
    }
}

/// The open request of each of `refs` that has one.
async fn open_requests(
    conn: &mut PgConnection,
    refs: &[&str],
) -> sqlx::Result<HashMap<String, Uuid>> {
    let open = sqlx::query_as::<_, (String, Uuid)>(concat!(
        "select r.subject_ref, r.id from unnest($1::text[]) as u(subject_ref) \
         join erasure_requests r on r.subject_ref = u.subject_ref and r.state in ",
        open_states!()
    ))
    .bind(refs)
    .fetch_all(conn)
    .await?;
    Ok(open.into_iter().collect())
}

/// For each target, given its pseudonyms under older key versions, its open request recorded
/// under one of them (the first received), if any: the unique index on open requests sees the
/// pseudonyms of one version only. One query for all the targets; none when no target has an
/// older pseudonym (before any key rotation).
pub async fn open_of_each_target(
    db: &Db,
    older_refs: &[Vec<String>],
) -> sqlx::Result<Vec<Option<Uuid>>> {
    let mut found = vec![None; older_refs.len()];
    let (refs, positions) = super::numbered(older_refs);
    if refs.is_empty() {
        return Ok(found);
    }
    let rows: Vec<(i32, Uuid)> = sqlx::query_as(concat!(
        "select distinct on (t.n) t.n, r.id \
         from unnest($1::text[], $2::int4[]) as t(subject_ref, n) \
         join erasure_requests r on r.subject_ref = t.subject_ref \
         where r.state in ",
        open_states!(),
        " order by t.n, r.received_at",
    ))
    .bind(&refs)
    .bind(&positions)
    .fetch_all(db)
    .await?;
    for (n, id) in rows {
        found[n as usize] = Some(id);
    }
    Ok(found)
}

/// A time as sqlx sends it to PostgreSQL: whole microseconds since 2000-01-01, truncated.
fn as_stored(t: DateTime<Utc>) -> DateTime<Utc> {
    let epoch =
        DateTime::<Utc>::from_timestamp(946_684_800, 0).expect("2000-01-01 is a valid time");
    (t - epoch)
        .num_microseconds()
        .map_or(t, |us| epoch + chrono::Duration::microseconds(us))
}

/// One request with its steps.
pub async fn get(db: &Db, id: Uuid) -> sqlx::Result<Option<ErasureRequest>> {
    let mut conn = db.acquire().await?;
    let sql = format!("select {COLUMNS} from erasure_requests where id = $1");
    let Some(mut request) = sqlx::query_as::<_, ErasureRequest>(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let stored = steps_of(&mut conn, &[id]).await?;
    request.steps = with_planned_steps(&request, stored);
    Ok(Some(request))
}

/// A request of one target, as a look-up by target shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TargetRequest {
    pub id: Uuid,
    pub state: State,
    pub received_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    /// `erased` or `already_erased` once completed.
    pub outcome: Option<String>,
}

/// The requests of one target, `refs` being its pseudonyms (under every key version), newest
/// first, at most 100.
pub async fn by_target(db: &Db, refs: &[String]) -> sqlx::Result<Vec<TargetRequest>> {
    sqlx::query_as(concat!(
        of_target!(),
        "select id, state, received_at, completed_at, outcome from of_target \
         order by received_at desc limit 100",
    ))
    .bind(refs)
    .fetch_all(db)
    .await
}

/// A request's steps: those stored, then those of its scope's plan not yet reached (`waiting`,
/// or `cancelled` once the request is): a later step is stored only when the one before it
/// succeeds.
fn with_planned_steps(request: &ErasureRequest, stored: Vec<Step>) -> Vec<Step> {
    let run_at = first_run_at(request.not_before, request.received_at);
    let unreached = if request.state == State::Cancelled {
        StepState::Cancelled
    } else {
        StepState::Waiting
    };
    planned_steps(
        request.id,
        request.scope,
        run_at,
        stored,
        unreached,
        unreached,
    )
}

/// When a request's steps may first run: at receipt, or at its `not_before` if later.
fn first_run_at(not_before: Option<DateTime<Utc>>, received_at: DateTime<Utc>) -> DateTime<Utc> {
    not_before.unwrap_or(received_at).max(received_at)
}

/// The steps of `scope`'s plan: `stored` ones as they are, then the rest, not yet stored: the
/// first of those `next`, the others `later`.
fn planned_steps(
    request_id: Uuid,
    scope: Scope,
    run_at: DateTime<Utc>,
    mut steps: Vec<Step>,
    next: StepState,
    later: StepState,
) -> Vec<Step> {
    let stored = steps.len();
    for kind in scope.steps().iter().skip(stored) {
        steps.push(Step {
            request_id,
            kind: *kind,
            state: if steps.len() == stored { next } else { later },
            attempts: 0,
            last_error: None,
            run_at,
            detail: None,
        });
    }
    steps
}

async fn steps_of(conn: &mut PgConnection, ids: &[Uuid]) -> sqlx::Result<Vec<Step>> {
    sqlx::query_as::<_, Step>(
        "select request_id, kind, state, attempts, last_error, run_at, detail from steps \
         where request_id = any($1) order by request_id, ordinal",
    )
    .bind(ids)
    .fetch_all(conn)
    .await
}

/// Filters of the list.
#[derive(Debug, Default, Clone)]
pub struct ListFilter {
    pub state: Option<State>,
    pub scope: Option<Scope>,
    pub received_from: Option<DateTime<Utc>>,
    pub received_to: Option<DateTime<Utc>>,
    pub due_from: Option<DateTime<Utc>>,
    pub due_to: Option<DateTime<Utc>>,
    /// Only requests not yet completed or cancelled.
    pub open_only: bool,
    /// Only requests at risk (`at_risk!`) with this many days.
    pub at_risk_days: Option<u32>,
    pub batch_id: Option<Uuid>,
    /// Only requests with this external reference.
    pub external_reference: Option<String>,
    /// Page after this (received_at, id), newest first.
    pub after: Option<(DateTime<Utc>, Uuid)>,
    pub limit: i64,
}

/// The conditions of a `ListFilter`, bound as `list_filter` binds them ($1 to $13).
macro_rules! list_where {
    () => {
        concat!(
            "($1::text is null or state = $1) and ($2::text is null or scope = $2) \
             and ($3::timestamptz is null or received_at >= $3) and ($4::timestamptz is null or received_at < $4) \
             and ($5::timestamptz is null or due_at >= $5) and ($6::timestamptz is null or due_at < $6) \
             and (not $7 or state not in ",
            closed_states!(),
            ") \
             and ($8::uuid is null or batch_id = $8) \
             and ($13::text is null or external_reference = $13) \
             and ($9::timestamptz is null or (received_at, id) < ($9, $10::uuid)) \
             and ($12::int4 is null or ",
            at_risk!("$12"),
            ")"
        )
    };
}

/// Binds a `ListFilter` to `list_where!`'s parameters.
fn list_filter<'q, O>(
    query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    f: &'q ListFilter,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    query
        .bind(f.state.map(State::as_str))
        .bind(f.scope.map(Scope::as_str))
        .bind(f.received_from)
        .bind(f.received_to)
        .bind(f.due_from)
        .bind(f.due_to)
        .bind(f.open_only)
        .bind(f.batch_id)
        .bind(f.after.map(|a| a.0))
        .bind(f.after.map(|a| a.1))
        .bind(f.limit)
        .bind(f.at_risk_days.map(days_param))
        .bind(f.external_reference.as_deref())
}

/// The ids of the requests a filter matches (its `after` and `limit` apply), oldest first: the
/// selection of a bulk action.
pub async fn matching(db: &Db, f: &ListFilter) -> sqlx::Result<Vec<Uuid>> {
    let sql = concat!(
        "select id from erasure_requests where ",
        list_where!(),
        " order by received_at, id limit $11"
    );
    let rows: Vec<(Uuid,)> = list_filter(sqlx::query_as(sql), f).fetch_all(db).await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// A page of requests, newest first.
pub async fn list(db: &Db, f: &ListFilter) -> sqlx::Result<Vec<ErasureRequest>> {
    let sql = format!(
        concat!(
            "select {COLUMNS} from erasure_requests where ",
            list_where!(),
            " order by received_at desc, id desc limit $11"
        ),
        COLUMNS = COLUMNS
    );
    let mut page = list_filter(
        sqlx::query_as::<_, ErasureRequest>(sqlx::AssertSqlSafe(sql)),
        f,
    )
    .fetch_all(db)
    .await?;
    let ids: Vec<Uuid> = page.iter().map(|r| r.id).collect();
    let mut conn = db.acquire().await?;
    let mut by_id: std::collections::HashMap<Uuid, Vec<Step>> = std::collections::HashMap::new();
    for step in steps_of(&mut conn, &ids).await? {
        by_id.entry(step.request_id).or_default().push(step);
    }
    for r in &mut page {
        r.steps = with_planned_steps(r, by_id.remove(&r.id).unwrap_or_default());
    }
    Ok(page)
}

/// `ERASURE_AT_RISK_DAYS` as the `int4` that `at_risk!` takes, at most `MAX_AT_RISK_DAYS` (as
/// `config` checks it), so that the interval stays in range.
pub(crate) fn days_param(days: u32) -> i32 {
    days.min(crate::config::MAX_AT_RISK_DAYS) as i32
}

/// Why an action was not applied.
#[derive(Debug)]
pub enum Refusal {
    NotFound,
    /// The domain's decision (`domain::actions::decide`).
    Denied(actions::Refusal),
}

/// Whether the delete step of request `r` was ever started (so a DELETE may have been sent).
macro_rules! deletion_sent {
    () => {
        "exists (select 1 from steps s where s.request_id = r.id and s.kind = 'delete' \
         and (s.state in ('running', 'succeeded', 'failed') or s.attempts > 0))"
    };
}

/// Applies an action to a request as `domain::actions::decide` plans it from the request's
/// locked row, with its audit entry, in one transaction; returns the state it leaves the request
/// in. `at_risk_days` (`ERASURE_AT_RISK_DAYS`): an extension that takes a request out of the
/// at-risk window clears its mark, so that it is audited again when it comes back into it.
pub async fn act(
    db: &Db,
    id: Uuid,
    ask: &Ask,
    at_risk_days: u32,
) -> anyhow::Result<Result<State, Refusal>> {
    let mut tx = db.begin().await?;
    type Row = (
        State,
        Scope,
        Uuid,
        Option<Uuid>,
        i32,
        DateTime<Utc>,
        String,
        Option<String>,
        bool,
        bool,
    );
    let row: Option<Row> = sqlx::query_as(concat!(
        "select state, scope, requested_by, \
             (select owner_person from api_keys k where k.id = r.requested_by), \
             extended_months, received_at, subject_ref, held_from, ",
        deletion_sent!(),
        ", exists (select 1 from steps s where s.request_id = r.id and s.state = 'failed') \
         from erasure_requests r where id = $1 for update of r"
    ))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((
        state,
        scope,
        requested_by,
        requester,
        extended,
        received_at,
        subject_ref,
        held_from,
        sent,
        step_failed,
    )) = row
    else {
        return Ok(Err(Refusal::NotFound));
    };
    let snapshot = Snapshot {
        state,
        scope,
        requested_by: Who::of(requested_by, requester),
        extended_months: extended.max(0) as u32,
        received_at,
        held_from: held_from.as_deref().and_then(State::parse),
        deletion_sent: sent,
        step_failed,
    };
    let plan = match actions::decide(&snapshot, ask) {
        Ok(plan) => plan,
        Err(refusal) => return Ok(Err(Refusal::Denied(refusal))),
    };
    match &plan.change {
        Change::Approve { by } => {
            sqlx::query("update erasure_requests set approved_by = $2 where id = $1")
                .bind(id)
                .bind(by)
                .execute(&mut *tx)
                .await?;
            resume_steps(&mut tx, id).await?;
        }
        Change::Cancel => {
            sqlx::query(
                "update erasure_requests set target_sealed = null, context_sealed = null, \
                 completed_at = now() where id = $1",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            // A step in flight (an inventory's reads) is fenced: its outcome is not recorded.
            sqlx::query(
                "update steps set state = 'cancelled', lease_token = null, lease_until = null, \
                     updated_at = now() \
                 where request_id = $1 and state not in ('succeeded', 'failed', 'cancelled')",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        Change::Retry => {
            sqlx::query("update erasure_requests set failure_reason = null where id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "update steps set state = 'ready', attempts = 0, run_at = now(), updated_at = now() \
                 where request_id = $1 and state = 'failed'",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        Change::Hold {
            legal_basis,
            note,
            from,
        } => {
            sqlx::query(
                "update erasure_requests set hold_legal_basis = $2, hold_note = $3, held_from = $4 \
                 where id = $1",
            )
            .bind(id)
            .bind(legal_basis.as_str())
            .bind(note)
            .bind(from.as_str())
            .execute(&mut *tx)
            .await?;
            // A step in flight finishes and is recorded; the next step is then stored paused
            // (`store::steps`), and a retry of a held request's step waits paused too.
            sqlx::query(
                "update steps set state = 'paused', updated_at = now() where request_id = $1 and state = 'ready'",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        Change::Release { resume } => {
            sqlx::query(
                "update erasure_requests set hold_legal_basis = null, hold_note = null, held_from = null \
                 where id = $1",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            if *resume {
                resume_steps(&mut tx, id).await?;
            }
        }
        Change::Extend {
            total_months,
            due_at,
        } => {
            sqlx::query(
                "update erasure_requests set extended_months = $2, due_at = $3 where id = $1",
            )
            .bind(id)
            .bind(*total_months as i32)
            .bind(due_at)
            .execute(&mut *tx)
            .await?;
            sqlx::query(concat!(
                "update erasure_requests set at_risk_at = null \
                 where id = $1 and at_risk_at is not null and not ",
                at_risk!("$2"),
            ))
            .bind(id)
            .bind(days_param(at_risk_days))
            .execute(&mut *tx)
            .await?;
            // Back within its due date: overdue again (and audited) if it passes it again.
            sqlx::query(
                "update erasure_requests set overdue_at = null \
                 where id = $1 and overdue_at is not null and due_at >= now()",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
    }
    // A worker may have started the delete step between the read above and the steps' update
    // (the update waited for its claim): then the DELETE may be on its way, and the hold or the
    // cancellation comes too late. A queued request too: one retried or released has its delete
    // step ready, and the claim leaves the request's state to the attempt's outcome.
    if matches!(plan.change, Change::Hold { .. } | Change::Cancel)
        && matches!(plan.from, State::InProgress | State::Queued)
    {
        let sent: bool = sqlx::query_scalar(concat!(
            "select ",
            deletion_sent!(),
            " from erasure_requests r where r.id = $1"
        ))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        if sent {
            tx.rollback().await?;
            return Ok(Err(Refusal::Denied(actions::Refusal::DeletionSent(
                ask.action,
            ))));
        }
    }
    sqlx::query("update erasure_requests set state = $2, updated_at = now() where id = $1")
        .bind(id)
        .bind(plan.to.as_str())
        .execute(&mut *tx)
        .await?;
    let (event, data) = plan.record(ask);
    audit::append(
        &mut tx,
        Entry {
            request_id: Some(id),
            subject_ref: Some(&subject_ref),
            actor: &audit::actor_name(ask.actor),
            event,
            data,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Ok(plan.to))
}

/// Marks the requests that became at risk (`at_risk!` with `days`) since the last sweep, each
/// with its `at_risk` audit entry (`{"due_at", "days_left"}`, by the engine) in the same
/// transaction; returns how many. Any number of processes may sweep at once: a request is marked
/// once (`at_risk_at`), and rows another transaction holds are skipped, to be marked by the next
/// sweep, rather than waited for. In transactions of at most `MARKS` requests, so that a first
/// sweep over many requests holds no lock long.
pub async fn mark_at_risk(db: &Db, days: u32) -> sqlx::Result<u64> {
    let sql = concat!(
        "update erasure_requests set at_risk_at = now() where id in ( \
             select id from erasure_requests where at_risk_at is null and ",
        at_risk!("$2"),
        " order by due_at limit $1 for update skip locked) \
         returning id, subject_ref, due_at, \
             floor(extract(epoch from due_at - now()) / 86400)::int4",
    );
    mark_in_rounds(
        db,
        sql,
        Some(days_param(days)),
        Event::AtRisk,
        |due_at, days_left| {
            data_of(&AtRiskData {
                due_at,
                days_left: i64::from(days_left),
            })
        },
    )
    .await
}

/// Marks the open requests that passed their due date since the last sweep, each with its
/// `overdue` audit entry (`{"due_at"}`, by the engine) in the same transaction (which also queues
/// its `request.overdue` webhooks); returns how many. Like `mark_at_risk`: once per request
/// (`overdue_at`), rows held elsewhere skipped, at most `MARKS` a transaction.
pub async fn mark_overdue(db: &Db) -> sqlx::Result<u64> {
    let sql = concat!(
        "update erasure_requests set overdue_at = now() where id in ( \
             select id from erasure_requests where overdue_at is null and state not in ",
        closed_states!(),
        " and due_at < now() order by due_at limit $1 for update skip locked) \
         returning id, subject_ref, due_at, 0::int4",
    );
    mark_in_rounds(db, sql, None, Event::Overdue, |due_at, _| {
        data_of(&records::Overdue { due_at })
    })
    .await
}

/// Runs `mark` (an update that marks at most `$1` requests and returns their id, pseudonym, due
/// date and days left; `$2` is `days` when given) in transactions of at most `MARKS` requests,
/// each with the requests' `event` entries (their data from `data`, by the engine), until a
/// round marks fewer; returns how many were marked.
async fn mark_in_rounds(
    db: &Db,
    mark: &'static str,
    days: Option<i32>,
    event: Event,
    data: impl Fn(DateTime<Utc>, i32) -> serde_json::Value,
) -> sqlx::Result<u64> {
    const MARKS: i64 = 1000;
    let mut marked = 0;
    loop {
        let mut tx = db.begin().await?;
        let mut query = sqlx::query_as(mark).bind(MARKS);
        if let Some(days) = days {
            query = query.bind(days);
        }
        let mut rows: Vec<(Uuid, String, DateTime<Utc>, i32)> = query.fetch_all(&mut *tx).await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(marked);
        }
        rows.sort_by_key(|r| (r.2, r.0));
        let entries = rows
            .iter()
            .map(|(id, subject_ref, due_at, days_left)| Entry {
                request_id: Some(*id),
                subject_ref: Some(subject_ref),
                actor: audit::ENGINE,
                event,
                data: data(*due_at, *days_left),
            })
            .collect();
        audit::append_all(&mut tx, entries).await?;
        tx.commit().await?;
        marked += rows.len() as u64;
        if (rows.len() as i64) < MARKS {
            return Ok(marked);
        }
    }
}

/// Makes the paused first pending step of a request ready again.
async fn resume_steps(tx: &mut Transaction<'_, Postgres>, id: Uuid) -> sqlx::Result<()> {
    sqlx::query(
        "update steps s set state = 'ready', updated_at = now(), \
             run_at = greatest(now(), coalesce(r.not_before, now())) \
         from erasure_requests r where r.id = s.request_id and s.request_id = $1 and s.state = 'paused'",
    )
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The re-erasures made of request `id` (after its target was listed again upstream), oldest
/// first.
pub async fn re_erasures_of(db: &Db, id: Uuid) -> sqlx::Result<Vec<(Uuid, State)>> {
    let rows: Vec<(Uuid, String)> = sqlx::query_as(
        "select id, state from erasure_requests where resurrection_of = $1 order by received_at, id",
    )
    .bind(id)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, state)| State::parse(&state).map(|s| (id, s)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// States as an SQL list: `('a', 'b')`.
    fn sql_list(states: impl IntoIterator<Item = State>) -> String {
        let quoted: Vec<String> = states
            .into_iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        format!("({})", quoted.join(", "))
    }

    #[test]
    fn the_sql_lists_of_states_are_state_open() {
        assert_eq!(open_states!(), sql_list(State::OPEN));
        let closed = State::ALL.into_iter().filter(|s| !State::OPEN.contains(s));
        assert_eq!(closed_states!(), sql_list(closed));
    }

    /// The partial indexes' predicates say what the queries say, so the queries can read them.
    #[test]
    fn the_partial_indexes_list_the_same_states() {
        let init = include_str!("../../migrations/0001_init.sql");
        assert!(init.contains(concat!(
            "erasure_requests_one_open_per_subject on erasure_requests (subject_ref)\n    where state in ",
            open_states!(),
            ";"
        )));
        assert!(init.contains(concat!(
            "erasure_requests_due_open on erasure_requests (due_at)\n    where state not in ",
            closed_states!(),
            ";"
        )));
    }
}

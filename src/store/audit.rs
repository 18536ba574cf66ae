//! The audit log's tables: appending entries (always inside the transaction of the change they
//! record), reading entries and sequenced leaves back, and the figures of the compliance report.
//!
//! Takes pseudonyms, key ids and counts, never personal data in clear: what is written here is
//! kept for good. Never updates or deletes an entry or a leaf (the database refuses: the log is
//! append-only and tamper-evident); leaves are written by `audit::log` alone.

use std::collections::HashMap;
use std::ops::Range;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::requests::closed_states;
use super::webhooks;
use crate::domain::events;

/// One entry about a request.
pub struct Entry<'a> {
    pub request_id: Option<Uuid>,
    pub subject_ref: Option<&'a str>,
    pub actor: &'a str,
    pub event: events::Event,
    pub data: Value,
}

pub async fn append(conn: &mut PgConnection, entry: Entry<'_>) -> sqlx::Result<()> {
    append_all(conn, vec![entry]).await
}

/// Appends an entry about no request and no subject (a key, a subscription, a guard run).
pub async fn append_unlinked(
    conn: &mut PgConnection,
    actor: &str,
    event: events::Event,
    data: Value,
) -> sqlx::Result<()> {
    append(
        conn,
        Entry {
            request_id: None,
            subject_ref: None,
            actor,
            event,
            data,
        },
    )
    .await
}

/// Appends entries in the order given, in one statement, and with them the webhook events that
/// follow from them (`Event::webhook`), for every subscription that asked for their type: the
/// only write point of both, so that a change and what it tells subscribers commit together. The
/// same statement reads the requests of such entries that a subscription wants, so that without
/// a subscription nothing more is sent to the database.
pub async fn append_all(conn: &mut PgConnection, entries: Vec<Entry<'_>>) -> sqlx::Result<()> {
    let n = entries.len();
    let (mut request_ids, mut subject_refs, mut actors, mut events, mut data) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut hook_at, mut hook_kinds, mut hook_requests) = (Vec::new(), Vec::new(), Vec::new());
    let mut restorations = Vec::new();
    for (i, e) in entries.into_iter().enumerate() {
        if let Some(kind) = e.event.webhook() {
            if kind.is_restoration() {
                restorations.push(e.data.clone());
            } else if let Some(request) = e.request_id {
                hook_at.push(i as i32);
                hook_kinds.push(kind.as_str());
                hook_requests.push(request);
            }
        }
        request_ids.push(e.request_id);
        subject_refs.push(e.subject_ref);
        actors.push(e.actor);
        events.push(e.event.as_str());
        data.push(e.data);
    }
    let hooked: Vec<webhooks::RequestHook> = sqlx::query_as(
        "with entries as ( \
             insert into audit_entries (request_id, subject_ref, actor, event, data) \
             select request_id, subject_ref, actor, event, data \
             from unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::jsonb[]) \
             with ordinality as e(request_id, subject_ref, actor, event, data, n) order by n \
         ) \
         select u.n, u.kind, s.id as subscription_id, r.id, r.external_reference, r.scope, \
             r.state, r.outcome, r.received_at, r.due_at, r.completed_at, r.updated_at, \
             r.resurrection_of, r.traceparent \
         from unnest($6::int4[], $7::text[], $8::uuid[]) as u(n, kind, request_id) \
         join webhook_subscriptions s on s.state <> 'disabled' and u.kind = any(s.event_types) \
         join erasure_requests r on r.id = u.request_id \
         order by u.n, s.created_at, s.id",
    )
    .bind(request_ids)
    .bind(subject_refs)
    .bind(actors)
    .bind(events)
    .bind(&data)
    .bind(hook_at)
    .bind(hook_kinds)
    .bind(hook_requests)
    .fetch_all(&mut *conn)
    .await?;
    webhooks::queue_request_events(conn, hooked, &data).await?;
    for entry in restorations {
        webhooks::queue_restoration_event(conn, &entry).await?;
    }
    Ok(())
}

/// One entry as the status page lists it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Event {
    pub at: DateTime<Utc>,
    pub event: String,
    pub actor: String,
}

/// The entries of a request, oldest first, at most 500.
pub async fn events_of(db: &super::Db, request_id: Uuid) -> sqlx::Result<Vec<Event>> {
    sqlx::query_as(
        "select at, event, actor from audit_entries where request_id = $1 order by id limit 500",
    )
    .bind(request_id)
    .fetch_all(db)
    .await
}

/// A sequenced entry: its place in the Merkle tree and its canonical JSON.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Leaf {
    pub leaf_index: i64,
    pub leaf: String,
}

/// A leaf with its hash, as exports carry it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HashedLeaf {
    #[sqlx(flatten)]
    pub leaf: Leaf,
    pub leaf_hash: Vec<u8>,
}

/// Up to `limit` leaves with an index above `after`, oldest first; only those of `request_id`
/// when given.
pub async fn leaves_after(
    db: &super::Db,
    after: i64,
    request_id: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<Leaf>> {
    sqlx::query_as(
        "select leaf_index, leaf from audit_leaves where leaf_index > $1 \
         and ($2::uuid is null or request_id = $2) order by leaf_index limit $3",
    )
    .bind(after)
    .bind(request_id)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// The contiguous run of leaf indexes, within the first `size`, from the first to the last entry
/// made in `[from, to)` (either end open when `None`); empty at 0 when there is none.
pub async fn leaf_range(
    db: &super::Db,
    size: i64,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> sqlx::Result<Range<i64>> {
    let (start, end): (i64, i64) = sqlx::query_as(
        "select coalesce(min(leaf_index), 0), coalesce(max(leaf_index) + 1, 0) from audit_leaves \
         where leaf_index < $1 and ($2::timestamptz is null or at >= $2) and ($3::timestamptz is null or at < $3)",
    )
    .bind(size)
    .bind(from)
    .bind(to)
    .fetch_one(db)
    .await?;
    Ok(start..end)
}

/// Up to `limit` leaves of `range`, in order, with their hashes.
pub async fn leaves_in(
    db: &super::Db,
    range: Range<i64>,
    limit: i64,
) -> sqlx::Result<Vec<HashedLeaf>> {
    sqlx::query_as(
        "select leaf_index, leaf, leaf_hash from audit_leaves where leaf_index >= $1 and leaf_index < $2 \
         order by leaf_index limit $3",
    )
    .bind(range.start)
    .bind(range.end)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// The actor name of an API key in the audit log.
pub fn key_actor(key_id: Uuid) -> String {
    format!("key:{key_id}")
}

/// What each person did in `[from, to)`: (person, event, count), by person then event.
pub async fn people_actions(
    db: &super::Db,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> sqlx::Result<Vec<(Uuid, String, i64)>> {
    sqlx::query_as(
        "select substr(actor, 8)::uuid, event, count(*) from audit_entries \
         where at >= $1 and at < $2 and actor like 'person:%' \
         and event not in ('person_signed_in', 'person_refused') \
         group by 1, 2 order by 1, 2",
    )
    .bind(from)
    .bind(to)
    .fetch_all(db)
    .await
}

/// The actor name of a person in the audit log: their id, never their name or e-mail.
pub fn person_actor(person: Uuid) -> String {
    format!("person:{person}")
}

/// The actor the log names for `who`: `person:<id>` or `key:<id>`.
pub fn actor_name(who: crate::domain::actions::Who) -> String {
    match who {
        crate::domain::actions::Who::Person(p) => person_actor(p),
        crate::domain::actions::Who::Key(k) => key_actor(k),
    }
}

/// The actor name of an operator at the command line (`erasure keys`, `erasure demo`).
pub const OPERATOR: &str = "operator";

/// The actor name of the engine.
pub const ENGINE: &str = "engine";

/// Seconds from receipt to completion.
macro_rules! elapsed {
    () => {
        "extract(epoch from completed_at - received_at)::float8"
    };
}

/// The requests completed in `[$1, $2)`.
macro_rules! completed_in {
    () => {
        "from erasure_requests where state = 'completed' and completed_at >= $1 and completed_at < $2"
    };
}

/// One day of the chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Day {
    pub date: NaiveDate,
    pub received: i64,
    pub completed: i64,
    /// Median time to completion of the requests completed that day, in seconds.
    pub median_secs: Option<f64>,
}

/// The figures of a period `[from, to)`, for the compliance report (`audit::report`).
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// Of the requests received in the period: how many, and where they stand now.
    pub received: i64,
    pub completed: i64,
    pub failed: i64,
    pub on_hold: i64,
    pub cancelled: i64,
    /// Still open (any state but completed and cancelled) past their due date.
    pub overdue_open: i64,
    /// Completed, but after their due date.
    pub completed_late: i64,
    /// Of the requests completed in the period: how many, how many by their due date, and the
    /// time from receipt to completion in seconds.
    pub completed_in_period: i64,
    pub within_deadline: i64,
    pub median_secs: Option<f64>,
    pub p95_secs: Option<f64>,
    pub worst_secs: Option<f64>,
    pub days: Vec<Day>,
}

/// The figures of the compliance report for `[from, to)` (see `audit::report`): counts and
/// durations only.
pub async fn report_figures(
    db: &super::Db,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> sqlx::Result<Figures> {
    let (received, completed, failed, on_hold, cancelled, overdue_open, completed_late): (
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
    ) = sqlx::query_as(concat!(
        "select count(*), count(*) filter (where state = 'completed'), \
                count(*) filter (where state = 'failed'), count(*) filter (where state = 'on_hold'), \
                count(*) filter (where state = 'cancelled'), \
                count(*) filter (where state not in ",
        closed_states!(),
        " and due_at < now()), \
                count(*) filter (where state = 'completed' and completed_at > due_at) \
         from erasure_requests where received_at >= $1 and received_at < $2",
    ))
    .bind(from)
    .bind(to)
    .fetch_one(db)
    .await?;
    let (completed_in_period, within_deadline, median_secs, p95_secs, worst_secs): (
        i64,
        i64,
        Option<f64>,
        Option<f64>,
        Option<f64>,
    ) = sqlx::query_as(concat!(
        "select count(*), count(*) filter (where completed_at <= due_at), ",
        "percentile_cont(0.5) within group (order by ",
        elapsed!(),
        "), percentile_cont(0.95) within group (order by ",
        elapsed!(),
        "), max(",
        elapsed!(),
        ") ",
        completed_in!()
    ))
    .bind(from)
    .bind(to)
    .fetch_one(db)
    .await?;
    let days = daily(db, from, to).await?;
    Ok(Figures {
        received,
        completed,
        failed,
        on_hold,
        cancelled,
        overdue_open,
        completed_late,
        completed_in_period,
        within_deadline,
        median_secs,
        p95_secs,
        worst_secs,
        days,
    })
}

/// Requests received and completed on each UTC day of `[from, to)`, with the median time to
/// completion of those completed that day (one grouped query for each, whatever the span).
pub async fn daily(
    db: &super::Db,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> sqlx::Result<Vec<Day>> {
    let received_by_day: HashMap<NaiveDate, i64> = sqlx::query_as(
        "select (received_at at time zone 'UTC')::date, count(*) from erasure_requests \
         where received_at >= $1 and received_at < $2 group by 1",
    )
    .bind(from)
    .bind(to)
    .fetch_all(db)
    .await?
    .into_iter()
    .collect();
    let completed_by_day: HashMap<NaiveDate, (i64, Option<f64>)> =
        sqlx::query_as::<_, (NaiveDate, i64, Option<f64>)>(concat!(
            "select (completed_at at time zone 'UTC')::date, count(*), ",
            "percentile_cont(0.5) within group (order by ",
            elapsed!(),
            ") ",
            completed_in!(),
            " group by 1"
        ))
        .bind(from)
        .bind(to)
        .fetch_all(db)
        .await?
        .into_iter()
        .map(|(day, n, median)| (day, (n, median)))
        .collect();
    let last = (to - chrono::Duration::microseconds(1)).date_naive();
    let days = from
        .date_naive()
        .iter_days()
        .take_while(|d| *d <= last)
        .map(|date| {
            let (completed, median_secs) =
                completed_by_day.get(&date).copied().unwrap_or((0, None));
            Day {
                date,
                received: received_by_day.get(&date).copied().unwrap_or(0),
                completed,
                median_secs,
            }
        })
        .collect::<Vec<Day>>();
    Ok(days)
}

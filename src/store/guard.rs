//! The resurrection guard's tables: the pseudonyms of erased accounts, the event cursor, and
//! each resurrection seen.
//!
//! Takes pseudonyms only, never an upstream id in clear (the guard pseudonymises listings in
//! memory). Never calls the upstream. Never deletes a guard: a restoration lifts it, with an audit
//! entry.

use crate::domain::events::{Event, ResurrectionData, data_of};
use crate::domain::records;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::Db;
use super::audit::{self, Entry};

/// Resurrections on one connection from which its requests advise erasing the connection.
pub const RECURRING: i64 = 2;

/// The audit actor of what the guard does by itself.
pub const GUARD: &str = "guard";

/// What the guard keeps of a deleted account: pseudonyms only.
#[derive(Debug, Clone)]
pub struct GuardArm {
    pub connection_ref: Option<String>,
    /// Pseudonyms of the account's upstream id and of its bank references.
    pub refs: Vec<String>,
}

/// Arms the guard for requests' accounts (in the transaction that records their deletion): for
/// each request, its connection's pseudonym and a JSON array of the account's pseudonyms.
pub async fn arm_all(
    conn: &mut PgConnection,
    request_ids: &[Uuid],
    connection_refs: &[Option<&str>],
    refs: &[serde_json::Value],
) -> sqlx::Result<()> {
    sqlx::query(
        "insert into erased_accounts (request_id, root_request_id, connection_ref, refs) \
         select r.id, coalesce(r.resurrection_of, r.id), u.connection_ref, \
             array(select r.value from jsonb_array_elements_text(u.refs) with ordinality as r(value, n) \
                   order by r.n) \
         from unnest($1::uuid[], $2::text[], $3::jsonb[]) as u(request_id, connection_ref, refs) \
         join erasure_requests r on r.id = u.request_id",
    )
    .bind(request_ids)
    .bind(connection_refs)
    .bind(refs)
    .execute(conn)
    .await?;
    Ok(())
}

/// An armed guard.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Guarded {
    pub id: i64,
    pub request_id: Uuid,
    pub root_request_id: Uuid,
    pub connection_ref: Option<String>,
    pub refs: Vec<String>,
    pub armed_at: DateTime<Utc>,
}

/// For each list of pseudonyms (one listed account each), the armed guards any of them matches,
/// most recently armed first: one query for a whole page of listed accounts. Each pseudonym is
/// looked up in the GIN index on its own (`offset 0` keeps the lookup a separate plan): as a plain
/// join, statistics that lag the table's growth made the planner compare every listed pseudonym
/// with every erased account (10 s for a page of 1,500 against 20,000 accounts; now 7 ms).
pub async fn matching(
    conn: &mut PgConnection,
    lists: &[&[String]],
) -> sqlx::Result<Vec<Vec<Guarded>>> {
    let (refs, owners) = super::numbered(lists);
    let rows: Vec<(i32, Guarded)> = sqlx::query_as::<_, MatchRow>(
        "select distinct on (l.n, e.armed_at, e.id) l.n, e.id, e.request_id, e.root_request_id, \
             e.connection_ref, e.refs, e.armed_at \
         from unnest($1::text[], $2::int4[]) as l(ref, n) \
         cross join lateral (select * from erased_accounts e \
             where e.lifted_at is null and e.refs @> array[l.ref] offset 0) e \
         order by l.n, e.armed_at desc, e.id desc",
    )
    .bind(&refs)
    .bind(&owners)
    .fetch_all(conn)
    .await?
    .into_iter()
    .map(|m| (m.n, m.guard))
    .collect();
    let mut out: Vec<Vec<Guarded>> = (0..lists.len()).map(|_| Vec::new()).collect();
    for (n, guard) in rows {
        out[n as usize].push(guard);
    }
    Ok(out)
}

#[derive(sqlx::FromRow)]
struct MatchRow {
    n: i32,
    #[sqlx(flatten)]
    guard: Guarded,
}

/// Takes the event stream reader's lock for this session, if free: true when this connection now
/// holds it (until it closes).
pub async fn try_lead(conn: &mut PgConnection) -> sqlx::Result<bool> {
    super::locks::try_for_session(conn, super::locks::Lock::EventReader).await
}

/// Whether the connection that took the reader's lock still answers (the lock lives with it).
pub async fn still_leads(conn: &mut PgConnection) -> bool {
    sqlx::query("select 1").execute(conn).await.is_ok()
}

/// The id of the last upstream event that took effect.
pub async fn cursor(db: &Db) -> sqlx::Result<i64> {
    sqlx::query_scalar("select last_event_id from upstream_event_cursor")
        .fetch_one(db)
        .await
}

/// Locks the cursor for advancing it; `None` while another process holds it.
pub async fn lock_cursor(conn: &mut PgConnection) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar("select last_event_id from upstream_event_cursor for update skip locked")
        .fetch_optional(conn)
        .await
}

/// Moves the cursor (locked by `lock_cursor`) to the last event applied.
pub async fn advance_cursor(conn: &mut PgConnection, to: i64) -> sqlx::Result<()> {
    sqlx::query("update upstream_event_cursor set last_event_id = $1, updated_at = now()")
        .bind(to)
        .execute(conn)
        .await?;
    Ok(())
}

/// Records that a guarded account was listed again, on the original request (its counters, its
/// advice, its audit entries: the receipt shows them).
pub async fn record_resurrection(
    conn: &mut PgConnection,
    guard: &Guarded,
    source: &str,
    listed_status: Option<&str>,
    re_erasure: Option<Uuid>,
) -> sqlx::Result<()> {
    sqlx::query(
        "insert into resurrections (guard_id, root_request_id, connection_ref, source, \
             listed_status, re_erasure_id) values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(guard.id)
    .bind(guard.root_request_id)
    .bind(&guard.connection_ref)
    .bind(source)
    .bind(listed_status)
    .bind(re_erasure)
    .execute(&mut *conn)
    .await?;
    let root_ref: String = sqlx::query_scalar(
        "update erasure_requests set resurrections = resurrections + 1, updated_at = now() \
         where id = $1 returning subject_ref",
    )
    .bind(guard.root_request_id)
    .fetch_one(&mut *conn)
    .await?;
    let mut recurring = false;
    if let Some(connection) = &guard.connection_ref {
        let on_connection: i64 =
            sqlx::query_scalar("select count(*) from resurrections where connection_ref = $1")
                .bind(connection)
                .fetch_one(&mut *conn)
                .await?;
        if on_connection >= RECURRING {
            recurring = true;
            sqlx::query(
                "update erasure_requests set advice = 'erase_connection', updated_at = now() \
                 where advice is null and id in \
                     (select root_request_id from erased_accounts where connection_ref = $1)",
            )
            .bind(connection)
            .execute(&mut *conn)
            .await?;
        }
    }
    audit::append(
        conn,
        Entry {
            request_id: Some(guard.root_request_id),
            subject_ref: Some(&root_ref),
            actor: GUARD,
            event: Event::ResurrectionDetected,
            data: data_of(&ResurrectionData {
                source: source.to_string(),
                listed_status: listed_status.map(str::to_string),
                erased_by_request: guard.request_id,
                re_erasure_request: re_erasure,
                recurring_on_connection: recurring,
            }),
        },
    )
    .await
}

/// The API key that asked for a request: a re-erasure of its target is asked in the same name.
pub async fn requester_of(conn: &mut PgConnection, request_id: Uuid) -> sqlx::Result<Uuid> {
    sqlx::query_scalar("select requested_by from erasure_requests where id = $1")
        .bind(request_id)
        .fetch_one(conn)
        .await
}

/// Links a re-erasure to the erasure of the same target it repeats.
pub async fn link_re_erasure(
    conn: &mut PgConnection,
    re_erasure: Uuid,
    original: Uuid,
) -> sqlx::Result<()> {
    sqlx::query("update erasure_requests set resurrection_of = $2 where id = $1")
        .bind(re_erasure)
        .bind(original)
        .execute(conn)
        .await?;
    Ok(())
}

/// Counts one more resurrection on an erasure request (a target re-verification found again).
pub async fn count_resurrection(conn: &mut PgConnection, request_id: Uuid) -> sqlx::Result<()> {
    sqlx::query(
        "update erasure_requests set resurrections = resurrections + 1, updated_at = now() \
         where id = $1",
    )
    .bind(request_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Lifts guards for accounts a deliberate restoration brought back. Returns how many.
pub async fn lift(
    conn: &mut PgConnection,
    guard_ids: &[i64],
    restoration_id: Uuid,
) -> sqlx::Result<u64> {
    let lifted: Vec<(Uuid, Uuid, String)> = sqlx::query_as(
        "update erased_accounts g set lifted_at = now(), lifted_by = $2 \
         from erasure_requests r \
         where g.id = any($1) and g.lifted_at is null and r.id = g.root_request_id \
         returning g.root_request_id, g.request_id, r.subject_ref",
    )
    .bind(guard_ids)
    .bind(restoration_id)
    .fetch_all(&mut *conn)
    .await?;
    for (root, request, subject_ref) in &lifted {
        audit::append(
            conn,
            Entry {
                request_id: Some(*root),
                subject_ref: Some(subject_ref),
                actor: GUARD,
                event: Event::GuardLifted,
                data: data_of(&records::GuardLifted {
                    restoration: restoration_id,
                    erased_by_request: *request,
                }),
            },
        )
        .await?;
    }
    Ok(lifted.len() as u64)
}

//! Deliberate restorations: a LIST_ACCOUNTS synchronisation of a connection, asked for by an
//! approver, that lifts the resurrection guard for the accounts it brings back. It never calls the
//! upstream (the guard does) and never shows the connection id: it is kept sealed, and wiped when
//! the restoration ends. A worker takes a pending one under a lease of `store::lease` (the queue
//! described here once).

use crate::domain::events::{Event, RestorationAccounts, data_of};
use crate::domain::records;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use super::Db;
use super::audit::{self, Entry};
use super::guard::GUARD;
use super::lease::{self, Lease, Queue};
use super::requests::{of_target, open_states};

/// A restoration as the API shows it. Never holds the connection id.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Restoration {
    pub id: Uuid,
    /// `pending` (to be started upstream), `waiting` (synchronisation started, reading events),
    /// `completed`, `failed` (with `failure_reason`) or `timed_out`.
    pub state: String,
    /// Pseudonym of the connection.
    pub connection_ref: String,
    pub reason: String,
    pub requested_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// When waiting for the synchronisation's events stops.
    pub deadline: Option<DateTime<Utc>>,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub failure_reason: Option<String>,
    /// Channels of the connection the synchronisation lists (those with credentials).
    pub expected_channels: Option<i32>,
    /// Channels whose LIST_ACCOUNTS_SUCCESS was read.
    pub channels_listed: i32,
    /// Accounts listed `NEW` (re-added, deleted ones among them), `PRESENT` and `MISSING`.
    pub accounts_new: i32,
    pub accounts_present: i32,
    pub accounts_missing: i32,
    /// Whether the `ALL` synchronisation that follows LIST_ACCOUNTS was seen.
    pub all_sync_followed: bool,
    /// Erased accounts brought back on purpose (the guard no longer re-erases them).
    pub guards_lifted: i32,
}

const COLUMNS: &str = "id, state, connection_ref, reason, requested_by, created_at, updated_at, \
    finished_at, deadline, attempts, last_error, failure_reason, expected_channels, \
    channels_listed, accounts_new, accounts_present, accounts_missing, all_sync_followed, \
    guards_lifted";

/// Why a connection may not come back: the one list of refusals, for the API's 409s and the
/// worker's `failure_reason`.
#[derive(Debug)]
pub enum Refused {
    /// An erasure of the connection is open.
    ErasureOpen(Uuid),
    /// The connection was erased: it cannot come back.
    ConnectionErased(Uuid),
    /// A restoration of the connection is already under way.
    RestorationOpen(Uuid),
    /// An erasure of the connection's user is open.
    UserErasureOpen(Uuid),
    /// The connection's user was erased.
    UserErased(Uuid),
    /// The upstream does not know the connection.
    ConnectionGone,
}

impl Refused {
    /// The API's error code.
    pub fn code(&self) -> &'static str {
        match self {
            Refused::ErasureOpen(_) => "erasure_open",
            Refused::ConnectionErased(_) => "connection_erased",
            Refused::RestorationOpen(_) => "restoration_open",
            Refused::UserErasureOpen(_) => "user_erasure_open",
            Refused::UserErased(_) => "user_erased",
            Refused::ConnectionGone => "connection_gone",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Refused::ErasureOpen(r) => format!(
                "an erasure of this connection is open (request {r}); restore after it ends, or cancel it"
            ),
            Refused::ConnectionErased(r) => format!(
                "this connection was erased (request {r}); an erased connection cannot come back"
            ),
            Refused::RestorationOpen(r) => {
                format!("a restoration of this connection is under way ({r})")
            }
            Refused::UserErasureOpen(r) => {
                format!("an erasure of this connection's user is open (request {r})")
            }
            Refused::UserErased(r) => {
                format!("this connection's user was erased (request {r}); it cannot come back")
            }
            Refused::ConnectionGone => "this connection does not exist upstream \
                 (an erased connection cannot come back)"
                .into(),
        }
    }
}

/// The refusal an erasure of the connection (`refs`: its pseudonyms) gives, if any.
pub async fn connection_refusal(
    conn: &mut PgConnection,
    refs: &[String],
) -> sqlx::Result<Option<Refused>> {
    Ok(erasure_of(conn, refs).await?.map(|(request, open)| {
        if open {
            Refused::ErasureOpen(request)
        } else {
            Refused::ConnectionErased(request)
        }
    }))
}

/// The refusal an erasure of the connection's user (`refs`: the user's pseudonyms) gives, if any.
pub async fn user_refusal(
    conn: &mut PgConnection,
    refs: &[String],
) -> sqlx::Result<Option<Refused>> {
    Ok(erasure_of(conn, refs).await?.map(|(request, open)| {
        if open {
            Refused::UserErasureOpen(request)
        } else {
            Refused::UserErased(request)
        }
    }))
}

/// The open (first) or completed erasure request of a target, among `refs` (its pseudonyms), and
/// whether it is open.
async fn erasure_of(
    conn: &mut PgConnection,
    refs: &[String],
) -> sqlx::Result<Option<(Uuid, bool)>> {
    sqlx::query_as(concat!(
        of_target!(),
        "select id, state in ",
        open_states!(),
        " from of_target where (state in ",
        open_states!(),
        " or state = 'completed') order by state in ",
        open_states!(),
        " desc limit 1"
    ))
    .bind(refs)
    .fetch_optional(conn)
    .await
}

/// Records a new restoration (state `pending`) and its audit entry, unless refused.
pub async fn create(
    db: &Db,
    id: Uuid,
    connection_refs: &[String],
    connection_sealed: &[u8],
    reason: &str,
    requested_by: Uuid,
    actor: &str,
) -> sqlx::Result<Result<Restoration, Refused>> {
    let mut tx = db.begin().await?;
    if let Some(refused) = connection_refusal(&mut tx, connection_refs).await? {
        return Ok(Err(refused));
    }
    let sql = format!(
        "insert into restorations (id, connection_ref, connection_sealed, reason, state, requested_by) \
         values ($1, $2, $3, $4, 'pending', $5) \
         on conflict (connection_ref) where state in ('pending', 'waiting') do nothing \
         returning {COLUMNS}"
    );
    // The open restoration we collided with may end between the two statements (each sees the
    // latest commits): then insert again rather than find nothing.
    let mut attempts = 0;
    let created = loop {
        attempts += 1;
        let created: Option<Restoration> = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
            .bind(id)
            .bind(&connection_refs[0])
            .bind(connection_sealed)
            .bind(reason)
            .bind(requested_by)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(created) = created {
            break created;
        }
        let existing: Option<Uuid> = sqlx::query_scalar(
            "select id from restorations where connection_ref = any($1) \
             and state in ('pending', 'waiting')",
        )
        .bind(connection_refs)
        .fetch_optional(&mut *tx)
        .await?;
        match existing {
            Some(existing) => return Ok(Err(Refused::RestorationOpen(existing))),
            None if attempts < 5 => continue,
            None => return Err(sqlx::Error::RowNotFound),
        }
    };
    append(
        &mut tx,
        &created,
        actor,
        Event::RestorationRequested,
        data_of(&records::RestorationRequested {
            restoration: created.id,
        }),
    )
    .await?;
    tx.commit().await?;
    Ok(Ok(created))
}

pub async fn get(db: &Db, id: Uuid) -> sqlx::Result<Option<Restoration>> {
    let sql = format!("select {COLUMNS} from restorations where id = $1");
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(db)
        .await
}

/// The newest restorations, at most `limit`.
pub async fn recent(db: &Db, limit: i64) -> sqlx::Result<Vec<Restoration>> {
    let sql = format!("select {COLUMNS} from restorations order by created_at desc, id limit $1");
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(limit)
        .fetch_all(db)
        .await
}

/// A pending restoration taken by a worker, with its sealed connection id.
#[derive(Debug, sqlx::FromRow)]
pub struct Claimed {
    /// The restoration's id and its lease token.
    #[sqlx(flatten)]
    pub lease: Lease<Uuid>,
    pub connection_ref: String,
    pub connection_sealed: Option<Vec<u8>>,
    pub attempts: i32,
}

// A claim also moves `run_at` past the lease (as the release before migration 0026 did, which
// knows no other lease): one that lapsed is claimed again once due (no rescue). The worker
// neither renews nor gives it back: `retry_later` and `finish` clear it. The token fences the
// one step that must happen once, `start_waiting`.
/// The queue of restorations to start (`store::lease`): pending ones that are due.
pub const QUEUE: Queue = lease::queue! {
    table: "restorations",
    due: "select id from restorations where state = 'pending' and run_at <= now() \
          order by run_at limit $1",
    set: ", attempts = q.attempts + 1, run_at = now() + $2, updated_at = now()",
    returning: "q.id, q.connection_ref, q.connection_sealed, q.attempts, q.lease_token",
    then: "select id, connection_ref, connection_sealed, attempts, lease_token from claimed",
    held_while: " and state in ('pending', 'waiting')",
    release: ", run_at = now(), updated_at = now()",
};

/// Takes one pending restoration that is due; it is not offered again for `lease`.
pub async fn claim(db: &Db, lease: std::time::Duration) -> sqlx::Result<Option<Claimed>> {
    let claimed: Vec<Claimed> = lease::claim(db, &QUEUE, 1, lease).await?;
    Ok(claimed.into_iter().next())
}

/// The synchronisation is about to be started: events of the connection now belong to this
/// restoration. False when it is no longer pending, or no longer leased by `lease` (the claim
/// lapsed during the checks and another worker took it): then this worker starts nothing.
pub async fn start_waiting(
    db: &Db,
    lease: &Lease<Uuid>,
    expected_channels: i32,
    timeout: std::time::Duration,
) -> sqlx::Result<bool> {
    let mut tx = db.begin().await?;
    let sql = format!(
        "update restorations set state = 'waiting', expected_channels = $2, \
             deadline = now() + $3, updated_at = now() \
         where id = $1 and state = 'pending' and lease_token = $4 returning {COLUMNS}"
    );
    let started: Option<Restoration> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(lease.id)
        .bind(expected_channels)
        .bind(timeout)
        .bind(lease.token)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(r) = started else {
        return Ok(false);
    };
    append(
        &mut tx,
        &r,
        GUARD,
        Event::RestorationStarted,
        data_of(&records::RestorationStarted {
            restoration: r.id,
            expected_channels,
        }),
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// The synchronisation could not be started yet: pending again, tried at `at`.
pub async fn retry_later(db: &Db, id: Uuid, error: &str, at: DateTime<Utc>) -> sqlx::Result<()> {
    sqlx::query(
        "update restorations set state = 'pending', deadline = null, last_error = $2, run_at = $3, \
             lease_token = null, lease_until = null, updated_at = now() \
         where id = $1 and state in ('pending', 'waiting')",
    )
    .bind(id)
    .bind(error)
    .bind(at)
    .execute(db)
    .await?;
    Ok(())
}

/// Ends a restoration (`completed`, `failed` or `timed_out`), wiping the connection id.
pub async fn finish(
    conn: &mut PgConnection,
    id: Uuid,
    state: &str,
    failure_reason: Option<&str>,
) -> sqlx::Result<()> {
    let sql = format!(
        "update restorations set state = $2, failure_reason = $3, connection_sealed = null, \
             lease_token = null, lease_until = null, finished_at = now(), updated_at = now() \
         where id = $1 and state in ('pending', 'waiting') returning {COLUMNS}"
    );
    let ended: Option<Restoration> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(state)
        .bind(failure_reason)
        .fetch_optional(&mut *conn)
        .await?;
    if let Some(r) = ended {
        let event = match state {
            "completed" => Event::RestorationCompleted,
            "timed_out" => Event::RestorationTimedOut,
            _ => Event::RestorationFailed,
        };
        let data = data_of(&records::RestorationEnded {
            restoration: r.id,
            failure_reason,
            channels_listed: r.channels_listed,
            expected_channels: r.expected_channels,
            accounts: RestorationAccounts {
                new: r.accounts_new,
                present: r.accounts_present,
                missing: r.accounts_missing,
            },
            all_sync_followed: r.all_sync_followed,
            guards_lifted: r.guards_lifted,
        });
        append(conn, &r, GUARD, event, data).await?;
    }
    Ok(())
}

/// Ends, as timed out, the restorations whose events did not all come in time.
pub async fn time_out(db: &Db) -> sqlx::Result<u64> {
    let mut tx = db.begin().await?;
    let late: Vec<Uuid> = sqlx::query_scalar(
        "select id from restorations where state = 'waiting' and deadline < now() \
         for update skip locked",
    )
    .fetch_all(&mut *tx)
    .await?;
    for id in &late {
        finish(
            &mut tx,
            *id,
            "timed_out",
            Some("the synchronisation's events did not all arrive before the deadline"),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(late.len() as u64)
}

/// The restoration waiting for events of the connection (any of its pseudonyms), locked.
pub async fn waiting_for(
    conn: &mut PgConnection,
    connection_refs: &[String],
) -> sqlx::Result<Option<Restoration>> {
    let sql = format!(
        "select {COLUMNS} from restorations where connection_ref = any($1) and state = 'waiting' \
         for update"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(connection_refs)
        .fetch_optional(conn)
        .await
}

/// Whether a restoration of the connection (any of its pseudonyms) is pending or waiting.
pub async fn restoring(conn: &mut PgConnection, connection_refs: &[String]) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "select exists (select 1 from restorations where connection_ref = any($1) \
         and state in ('pending', 'waiting'))",
    )
    .bind(connection_refs)
    .fetch_one(conn)
    .await
}

/// What one LIST_ACCOUNTS_SUCCESS event of the connection showed.
#[derive(Debug, Default, Clone, Copy)]
pub struct Listed {
    pub new: i32,
    pub present: i32,
    pub missing: i32,
    pub guards_lifted: i32,
}

/// Counts one channel's listing; completes the restoration when every channel was listed and the
/// ALL synchronisation was seen.
pub async fn count_listing(conn: &mut PgConnection, id: Uuid, listed: Listed) -> sqlx::Result<()> {
    sqlx::query(
        "update restorations set channels_listed = channels_listed + 1, \
             accounts_new = accounts_new + $2, accounts_present = accounts_present + $3, \
             accounts_missing = accounts_missing + $4, guards_lifted = guards_lifted + $5, \
             updated_at = now() where id = $1",
    )
    .bind(id)
    .bind(listed.new)
    .bind(listed.present)
    .bind(listed.missing)
    .bind(listed.guards_lifted)
    .execute(&mut *conn)
    .await?;
    complete_if_done(conn, id).await
}

/// The ALL synchronisation that follows LIST_ACCOUNTS was seen.
pub async fn all_sync_seen(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<()> {
    sqlx::query(
        "update restorations set all_sync_followed = true, updated_at = now() where id = $1",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?;
    complete_if_done(conn, id).await
}

async fn complete_if_done(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<()> {
    let done: bool = sqlx::query_scalar(
        "select all_sync_followed and channels_listed >= coalesce(expected_channels, 1) \
         from restorations where id = $1",
    )
    .bind(id)
    .fetch_one(&mut *conn)
    .await?;
    if done {
        finish(conn, id, "completed", None).await?;
    }
    Ok(())
}

async fn append(
    conn: &mut PgConnection,
    r: &Restoration,
    actor: &str,
    event: Event,
    data: Value,
) -> sqlx::Result<()> {
    audit::append(
        conn,
        Entry {
            request_id: None,
            subject_ref: Some(&r.connection_ref),
            actor,
            event,
            data,
        },
    )
    .await
}

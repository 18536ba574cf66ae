//! Pseudonym key epochs (`pseudonym_epochs`): their keys, sealed (`audit::epochs` seals and
//! opens them), when each starts, and their destruction by the retention job.
//!
//! Takes and returns sealed keys only, never a key in clear. An epoch ends when the next one (by
//! `starts_at`, then version) starts, or, while none has, `ERASURE_PSEUDONYM_EPOCH_DAYS` after it
//! started (when the next one is due: `ended_at`); its pseudonyms are `k<version>:`. A destroyed epoch keeps
//! its row with no key (a tombstone: its version, times and how many requests it covered).

use crate::domain::events::Event;
use crate::domain::events::data_of;
use crate::domain::records;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::Db;
use super::audit;
use super::requests::closed_states;

/// An SQL condition on `erasure_requests` (or a row with `subject_ref`): its pseudonym was made
/// under a live epoch (a request of a destroyed one is found by nothing).
macro_rules! live_epoch {
    () => {
        "(split_part(subject_ref, ':', 1) in \
          (select 'k' || version from pseudonym_epochs where key_sealed is not null))"
    };
}
pub(crate) use live_epoch;

/// An epoch as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Epoch {
    pub version: i32,
    /// `None` once destroyed.
    pub key_sealed: Option<Vec<u8>>,
    pub origin: String,
    pub starts_at: DateTime<Utc>,
    /// Whether it has started (by the database's clock).
    pub started: bool,
}

/// Takes the epochs' lock for the rest of the transaction.
pub async fn lock(conn: &mut PgConnection) -> sqlx::Result<()> {
    super::locks::for_transaction(conn, super::locks::Lock::Epochs).await
}

/// Every epoch, live or destroyed, oldest first.
pub async fn all(conn: &mut PgConnection) -> sqlx::Result<Vec<Epoch>> {
    sqlx::query_as(
        "select version, key_sealed, origin, starts_at, starts_at <= now() as started \
         from pseudonym_epochs order by starts_at, version",
    )
    .fetch_all(conn)
    .await
}

/// The live epochs (with their sealed keys), oldest first.
pub async fn live(db: &Db) -> sqlx::Result<Vec<Epoch>> {
    sqlx::query_as(
        "select version, key_sealed, origin, starts_at, starts_at <= now() as started \
         from pseudonym_epochs where key_sealed is not null order by starts_at, version",
    )
    .fetch_all(db)
    .await
}

/// The versions of the live epochs and when each started, oldest first (a look-up reads them
/// from the database, so that an epoch another process destroyed a moment ago is not used
/// however fresh this process's keys are).
pub async fn live_versions(db: &Db) -> sqlx::Result<Vec<(i32, DateTime<Utc>)>> {
    sqlx::query_as(
        "select version, starts_at from pseudonym_epochs where key_sealed is not null \
         order by starts_at, version",
    )
    .fetch_all(db)
    .await
}

/// When the oldest request was received (the start given to configured keys migrated into
/// epochs), or now.
pub async fn first_request_at(conn: &mut PgConnection) -> sqlx::Result<DateTime<Utc>> {
    sqlx::query_scalar("select coalesce(min(received_at), now()) from erasure_requests")
        .fetch_one(conn)
        .await
}

/// Inserts an epoch; `starts_at` `None` is now.
pub async fn insert(
    conn: &mut PgConnection,
    version: i32,
    key_sealed: &[u8],
    origin: &str,
    starts_at: Option<DateTime<Utc>>,
) -> sqlx::Result<()> {
    sqlx::query(
        "insert into pseudonym_epochs (version, key_sealed, origin, starts_at) \
         values ($1, $2, $3, coalesce($4, now()))",
    )
    .bind(version)
    .bind(key_sealed)
    .bind(origin)
    .bind(starts_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether the epoch that started last started at least `epoch_days` ago (or none has started):
/// then a new one is due.
pub async fn new_epoch_due(conn: &mut PgConnection, epoch_days: u32) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "select coalesce(max(starts_at) filter (where starts_at <= now()) \
                         <= now() - make_interval(days => $1), true) \
         from pseudonym_epochs where key_sealed is not null",
    )
    .bind(epoch_days as i32)
    .fetch_one(conn)
    .await
}

/// The next free version (versions are never reused, destroyed ones included).
pub async fn next_version(conn: &mut PgConnection) -> sqlx::Result<i32> {
    sqlx::query_scalar("select coalesce(max(version), 0) + 1 from pseudonym_epochs")
        .fetch_one(conn)
        .await
}

/// When epoch `e` ends (SQL, `$epoch_days` the bind of `ERASURE_PSEUDONYM_EPOCH_DAYS`): when the
/// next one started, or while none has, `epoch_days` after it started, as the rule will stand then
/// (a new epoch is due from then: `new_epoch_due`).
macro_rules! ended_at {
    ($epoch_days:literal) => {
        concat!(
            "coalesce((select min(n.starts_at) from pseudonym_epochs n \
                 where (n.starts_at, n.version) > (e.starts_at, e.version)), \
             e.starts_at + make_interval(days => ",
            $epoch_days,
            "))"
        )
    };
}

/// Live epochs that have ended by `cutoff` (`ended_at`): the only ones retention may destroy.
pub async fn ended_by(db: &Db, cutoff: DateTime<Utc>, epoch_days: u32) -> sqlx::Result<Vec<i32>> {
    sqlx::query_scalar(concat!(
        "select e.version from pseudonym_epochs e \
         where e.key_sealed is not null and ",
        ended_at!("$2"),
        " <= $1 order by e.starts_at, e.version"
    ))
    .bind(cutoff)
    .bind(epoch_days as i32)
    .fetch_all(db)
    .await
}

/// How a retention run treats an epoch that is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Apply {
    /// Destroy its key.
    Destroy,
    /// Only say that it would be destroyed; change nothing.
    DryRun,
}

/// Destroys epoch `version` when it is still live, ended by `cutoff` (`ended_at`), and every
/// request made under it is closed and closed by `cutoff`; answers how many requests it covered,
/// or `None` when it stays (or another process destroyed it first). With `Apply::DryRun` it
/// answers the same and changes nothing. In one transaction, under the
/// epoch's row lock (concurrent runs destroy it once and write one audit entry): the key is
/// removed, the guard's pseudonyms of its requests are emptied (they would link an account to
/// them under a later key), its idempotency keys deleted, and the audit entry appended.
pub async fn destroy_if_expired(
    db: &Db,
    version: i32,
    cutoff: DateTime<Utc>,
    epoch_days: u32,
    retention_days: u32,
    as_of: DateTime<Utc>,
    apply: Apply,
) -> sqlx::Result<Option<i64>> {
    let mut tx = db.begin().await?;
    let ends: Option<(DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(concat!(
        "select e.starts_at, ",
        ended_at!("$2"),
        " from pseudonym_epochs e where e.version = $1 and e.key_sealed is not null for update"
    ))
    .bind(version)
    .bind(epoch_days as i32)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((starts_at, ended_at)) = ends else {
        return Ok(None);
    };
    if ended_at > cutoff {
        return Ok(None);
    }
    let prefix = format!("k{version}:%");
    let (requests, open, last_closed): (i64, i64, Option<DateTime<Utc>>) = sqlx::query_as(concat!(
        "select count(*), count(*) filter (where state not in ",
        closed_states!(),
        "), max(coalesce(completed_at, updated_at)) \
             from erasure_requests where subject_ref like $1",
    ))
    .bind(&prefix)
    .fetch_one(&mut *tx)
    .await?;
    if open > 0 || last_closed.is_some_and(|t| t > cutoff) {
        return Ok(None);
    }
    if apply == Apply::DryRun {
        return Ok(Some(requests));
    }
    strip_guard(&mut tx, &prefix).await?;
    sqlx::query("delete from idempotency_keys where created_at >= $1 and created_at < $2")
        .bind(starts_at)
        .bind(ended_at)
        .execute(&mut *tx)
        .await?;
    let destroyed = sqlx::query(
        "update pseudonym_epochs set key_sealed = null, destroyed_at = now(), requests = $2 \
         where version = $1 and key_sealed is not null",
    )
    .bind(version)
    .bind(requests)
    .execute(&mut *tx)
    .await?;
    if destroyed.rows_affected() != 1 {
        return Ok(None);
    }
    let data = data_of(&records::EpochDestroyed {
        epoch: version,
        requests,
        retention_days,
        as_of,
    });
    audit::append_unlinked(&mut tx, "retention", Event::PseudonymEpochDestroyed, data).await?;
    tx.commit().await?;
    Ok(Some(requests))
}

/// Empties the guard's pseudonyms of the requests made under an epoch (`prefix`: `k<v>:%`):
/// they may hold pseudonyms under later keys too, which would still link an account to them.
async fn strip_guard(conn: &mut PgConnection, prefix: &str) -> sqlx::Result<()> {
    sqlx::query(
        "update erased_accounts set refs = '{}', connection_ref = null \
         where request_id in (select id from erasure_requests where subject_ref like $1) \
           and (cardinality(refs) > 0 or connection_ref is not null)",
    )
    .bind(prefix)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "update resurrections set connection_ref = null \
         where root_request_id in (select id from erasure_requests where subject_ref like $1) \
           and connection_ref is not null",
    )
    .bind(prefix)
    .execute(conn)
    .await?;
    Ok(())
}

/// How long a compaction waits for the transactions that began before it to end.
const OLDER_TRANSACTIONS_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits (up to `OLDER_TRANSACTIONS_WAIT`) for the transactions of this database that began
/// before this call to end, since one of them could hold a snapshot from before a key's
/// destruction and `VACUUM FULL` would keep that row version (seen on a loaded machine: the
/// compaction ran right after the destroying commit and kept the key). False when some still run.
pub async fn older_transactions_ended(sessions: &super::Sessions) -> sqlx::Result<bool> {
    let mut conn = sessions.pool().acquire().await?;
    let since: DateTime<Utc> = sqlx::query_scalar("select clock_timestamp()")
        .fetch_one(&mut *conn)
        .await?;
    let deadline = std::time::Instant::now() + OLDER_TRANSACTIONS_WAIT;
    loop {
        let older: i64 = sqlx::query_scalar(
            "select count(*) from pg_stat_activity \
             where datname = current_database() and pid <> pg_backend_pid() and xact_start < $1",
        )
        .bind(since)
        .fetch_one(&mut *conn)
        .await?;
        if older == 0 {
            return Ok(true);
        }
        if std::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Rewrites the table so that no dead row version holds a destroyed key on disk (the dump never
/// shows one; the files could until vacuumed). Needs the table's owner: refused to the service's
/// own role, where autovacuum does it later (`SECURITY.md`). It waits at most 200 ms for its lock
/// (while it waits, it holds up every other use of the table, and a retention run at the same
/// moment could wait for it in turn): a run that cannot have it now leaves it to autovacuum.
/// (`VACUUM` after a `SET` needs a session: the direct URL behind a pooler.)
///
/// Call `older_transactions_ended` first: `VACUUM FULL` keeps a dead row version that a running
/// transaction may still see.
pub async fn compact(sessions: &super::Sessions) -> sqlx::Result<()> {
    let mut conn = sessions.pool().acquire().await?;
    sqlx::query("set lock_timeout = '200ms'")
        .execute(&mut *conn)
        .await?;
    let done = sqlx::query("vacuum full pseudonym_epochs")
        .execute(&mut *conn)
        .await;
    sqlx::query("reset lock_timeout")
        .execute(&mut *conn)
        .await?;
    done.map(|_| ())
}

/// What `/metrics`, the status page and the report show.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct Figures {
    /// Epochs whose key exists.
    pub live: i64,
    /// Epochs whose key was destroyed.
    pub destroyed: i64,
    /// When the oldest live epoch started: nothing older can be linked to a person.
    pub oldest_live_start: Option<DateTime<Utc>>,
}

pub async fn figures(db: &Db) -> sqlx::Result<Figures> {
    sqlx::query_as(
        "select count(*) filter (where key_sealed is not null) as live, \
                count(*) filter (where key_sealed is null) as destroyed, \
                min(starts_at) filter (where key_sealed is not null) as oldest_live_start \
         from pseudonym_epochs",
    )
    .fetch_one(db)
    .await
}

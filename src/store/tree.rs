//! The audit log's Merkle tables: the sequencer's horizon, the leaves, the stored tree nodes and
//! the signed checkpoints (`audit_sequencer`, `audit_leaves`, `audit_tree`, `audit_checkpoints`).
//! The statements only: what a leaf says, how the tree grows and what is signed is
//! `audit::log`'s. It never updates or deletes a leaf, a node or a checkpoint (the database
//! refuses it anyway); the sequencer's horizon is the one row it moves.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::Db;
use super::copy::BinaryRows;
use crate::domain::State;

/// Takes the log writer's lock for the transaction: waits for it with `wait`, otherwise answers
/// false at once when another process holds it.
pub async fn lock_writer(tx: &mut PgConnection, wait: bool) -> sqlx::Result<bool> {
    use super::locks::{Lock, for_transaction, try_for_transaction};
    if wait {
        for_transaction(tx, Lock::AuditWriter).await?;
        Ok(true)
    } else {
        try_for_transaction(tx, Lock::AuditWriter).await
    }
}

/// About how many committed entries wait to be sequenced: identity values above the highest
/// sequenced entry id (two index look-ups, whatever the backlog; ids of rolled-back inserts
/// count until the next round, entries committed late below that id wait for the timer).
pub async fn backlog(db: &Db) -> sqlx::Result<u64> {
    let n: i64 = sqlx::query_scalar(
        "select coalesce((select max(id) from audit_entries), 0) \
              - coalesce((select max(entry_id) from audit_leaves), 0)",
    )
    .fetch_one(db)
    .await?;
    Ok(n.max(0) as u64)
}

/// The stored horizon (every entry whose transaction id is below it is a leaf), locked for the
/// transaction.
pub async fn horizon_for_update(tx: &mut PgConnection) -> sqlx::Result<String> {
    sqlx::query_scalar("select horizon::text from audit_sequencer for update")
        .fetch_one(&mut *tx)
        .await
}

/// The commit-safe horizon now: below the next transaction id to be assigned (read first: any
/// transaction that gets an id later is above it), and below the id of every transaction still
/// running in this database (their entries are not visible yet). The cluster-wide snapshot xmin
/// would also wait for other databases' transactions. pg_stat_activity gives 32-bit ids: they are
/// widened with the epoch of the first reading.
pub async fn safe_horizon(tx: &mut PgConnection) -> sqlx::Result<i64> {
    let xmax: i64 =
        sqlx::query_scalar("select pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
            .fetch_one(&mut *tx)
            .await?;
    sqlx::query("select pg_stat_clear_snapshot()")
        .execute(&mut *tx)
        .await?;
    // A 32-bit id far above xmax is from the previous epoch; one just above it was assigned
    // after xmax was read and cannot hold the horizon back.
    let running: Option<i64> = sqlx::query_scalar(
        "select min(case when w - $1 > 2147483648 then w - 4294967296 else w end) from ( \
             select (($1 >> 32) << 32) + backend_xid::text::bigint as w from pg_stat_activity \
             where datname = current_database() and pid <> pg_backend_pid() and backend_xid is not null \
         ) as r",
    )
    .bind(xmax)
    .fetch_one(&mut *tx)
    .await?;
    Ok(running.map_or(xmax, |r| r.min(xmax)))
}

/// Moves the stored horizon.
pub async fn set_horizon(tx: &mut PgConnection, horizon: &str) -> sqlx::Result<()> {
    sqlx::query("update audit_sequencer set horizon = $1::xid8")
        .bind(horizon)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// The number of leaves: the index of the next one.
pub async fn leaf_count(tx: &mut PgConnection) -> sqlx::Result<i64> {
    sqlx::query_scalar("select coalesce(max(leaf_index) + 1, 0) from audit_leaves")
        .fetch_one(&mut *tx)
        .await
}

/// An entry as the sequencer reads it.
#[derive(sqlx::FromRow)]
pub struct EntryRow {
    pub id: i64,
    pub xid_text: String,
    pub at: DateTime<Utc>,
    pub request_id: Option<Uuid>,
    pub subject_ref: Option<String>,
    pub actor: String,
    pub event: String,
    pub data: Value,
    pub nonce: Vec<u8>,
}

/// Up to `limit` entries with transaction ids in `from..to`, after `after` (xid, id), in that
/// order.
pub async fn entries_between(
    tx: &mut PgConnection,
    from: &str,
    to: &str,
    after: &(String, i64),
    limit: i64,
) -> sqlx::Result<Vec<EntryRow>> {
    sqlx::query_as(
        "select id, xid::text as xid_text, at, request_id, subject_ref, actor, event, data, nonce \
         from audit_entries \
         where xid >= $1::xid8 and xid < $2::xid8 and (xid, id) > ($3::xid8, $4) \
         order by xid, id limit $5",
    )
    .bind(from)
    .bind(to)
    .bind(&after.0)
    .bind(after.1)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await
}

/// How many leaves each of `requests` has (those with none are left out).
pub async fn leaves_per_request(
    tx: &mut PgConnection,
    requests: &[Uuid],
) -> sqlx::Result<Vec<(Uuid, i64)>> {
    sqlx::query_as(
        "select request_id, count(*) from audit_leaves where request_id = any($1) group by request_id",
    )
    .bind(requests)
    .fetch_all(&mut *tx)
    .await
}

/// Writes leaves: rows of (leaf_index, entry_id, request_id, subject_ref, at, leaf, leaf_hash).
/// Returns how many were written.
pub async fn copy_leaves(tx: &mut PgConnection, rows: BinaryRows) -> sqlx::Result<u64> {
    rows.copy_in(
        &mut *tx,
        "copy audit_leaves (leaf_index, entry_id, request_id, subject_ref, at, leaf, leaf_hash) \
         from stdin (format binary)",
    )
    .await
}

/// Writes tree nodes: rows of (level, idx, hash).
pub async fn copy_nodes(tx: &mut PgConnection, rows: BinaryRows) -> sqlx::Result<u64> {
    rows.copy_in(
        &mut *tx,
        "copy audit_tree (level, idx, hash) from stdin (format binary)",
    )
    .await
}

/// The number of stored level-1 nodes (pairs of leaves).
pub async fn pair_count(tx: &mut PgConnection) -> sqlx::Result<i64> {
    sqlx::query_scalar("select coalesce(max(idx) + 1, 0) from audit_tree where level = 1")
        .fetch_one(&mut *tx)
        .await
}

/// The hashes of leaves `from..to`, in order.
pub async fn leaf_hashes(tx: &mut PgConnection, from: u64, to: u64) -> sqlx::Result<Vec<Vec<u8>>> {
    sqlx::query_scalar(
        "select leaf_hash from audit_leaves where leaf_index >= $1 and leaf_index < $2 \
         order by leaf_index",
    )
    .bind(from as i64)
    .bind(to as i64)
    .fetch_all(&mut *tx)
    .await
}

/// The hashes of the given leaves and of the given stored nodes (`levels[i]`, `idx[i]`), as
/// (level, index, hash); leaves are level 0.
pub async fn node_hashes(
    conn: &mut PgConnection,
    leaves: &[i64],
    levels: &[i16],
    idx: &[i64],
) -> sqlx::Result<Vec<(i16, i64, Vec<u8>)>> {
    sqlx::query_as(
        "select 0::int2, leaf_index, leaf_hash from audit_leaves where leaf_index = any($1) \
         union all \
         select t.level, t.idx, t.hash from unnest($2::int2[], $3::int8[]) as u(level, idx) \
         join audit_tree t on t.level = u.level and t.idx = u.idx",
    )
    .bind(leaves)
    .bind(levels)
    .bind(idx)
    .fetch_all(&mut *conn)
    .await
}

/// A signed checkpoint as stored.
#[derive(sqlx::FromRow)]
pub struct CheckpointRow {
    pub size: i64,
    pub root: Vec<u8>,
    pub note: String,
    pub created_at: DateTime<Utc>,
}

/// Stores a signed checkpoint.
pub async fn insert_checkpoint(
    tx: &mut PgConnection,
    size: u64,
    root: &[u8],
    note: &str,
) -> sqlx::Result<()> {
    sqlx::query("insert into audit_checkpoints (size, root, note) values ($1, $2, $3)")
        .bind(size as i64)
        .bind(root)
        .bind(note)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// The newest checkpoint.
pub async fn latest_checkpoint(conn: &mut PgConnection) -> sqlx::Result<Option<CheckpointRow>> {
    sqlx::query_as(
        "select size, root, note, created_at from audit_checkpoints order by size desc limit 1",
    )
    .fetch_optional(&mut *conn)
    .await
}

/// The newest checkpoint signed before `t`.
pub async fn latest_checkpoint_before(
    db: &Db,
    t: DateTime<Utc>,
) -> sqlx::Result<Option<CheckpointRow>> {
    sqlx::query_as(
        "select size, root, note, created_at from audit_checkpoints where created_at < $1 \
         order by size desc limit 1",
    )
    .bind(t)
    .fetch_optional(db)
    .await
}

/// What one statement (one snapshot) says about a request for its receipt: one row per leaf of
/// the request under the newest checkpoint (a completed request's only), or one row with no leaf.
#[derive(sqlx::FromRow)]
pub struct ReceiptRow {
    pub state: State,
    pub subject_ref: String,
    /// The request's audit entries.
    pub total: i64,
    pub size: Option<i64>,
    pub root: Option<Vec<u8>>,
    pub note: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub leaf_index: Option<i64>,
    pub leaf: Option<String>,
}

/// A request's state, pseudonym and entry count, the newest checkpoint and the request's leaves
/// below its size, in one round trip; no row when there is no such request.
pub async fn receipt_rows(db: &Db, request_id: Uuid) -> sqlx::Result<Vec<ReceiptRow>> {
    sqlx::query_as(
        "select r.state, r.subject_ref, \
                (select count(*) from audit_entries e where e.request_id = r.id) as total, \
                c.size, c.root, c.note, c.created_at, l.leaf_index, l.leaf \
         from erasure_requests r \
         left join lateral ( \
             select size, root, note, created_at from audit_checkpoints order by size desc limit 1 \
         ) c on true \
         left join lateral ( \
             select leaf_index, leaf from audit_leaves \
             where r.state = 'completed' and request_id = r.id and leaf_index < c.size \
         ) l on true \
         where r.id = $1 \
         order by l.leaf_index",
    )
    .bind(request_id)
    .fetch_all(db)
    .await
}

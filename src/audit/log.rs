//! The audit log as a Merkle tree: sequencing entries into leaves, signing checkpoints, and
//! reading proofs. One process at a time does the writing (a PostgreSQL advisory lock); any
//! process can read.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use sqlx::{PgConnection, Row};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::checkpoint::{Checkpoint, Signer};
use super::merkle::{self, Hash};
use crate::store::Db;

/// The advisory lock of the log writer.
const WRITER_LOCK: i64 = 0x6572_6173_7572_6501;
/// Entries read per round trip while sequencing.
const CHUNK: i64 = 5_000;

/// A signed checkpoint as stored.
#[derive(Debug, Clone)]
pub struct StoredCheckpoint {
    pub size: u64,
    pub root: Hash,
    pub note: String,
    pub created_at: DateTime<Utc>,
}

/// Writes and reads the log.
pub struct AuditLog {
    db: Db,
    signer: Signer,
    origin: String,
}

impl AuditLog {
    pub fn new(db: Db, signer: Signer, origin: impl Into<String>) -> Self {
        Self {
            db,
            signer,
            origin: origin.into(),
        }
    }

    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// Sequences what can be sequenced and signs a checkpoint when the tree grew. With `wait`,
    /// waits for another writer to finish instead of skipping the round. Returns the latest
    /// checkpoint.
    pub async fn sync(&self, wait: bool) -> anyhow::Result<Option<StoredCheckpoint>> {
        let mut tx = self.db.begin().await?;
        if wait {
            sqlx::query("select pg_advisory_xact_lock($1)")
                .bind(WRITER_LOCK)
                .execute(&mut *tx)
                .await?;
        } else {
            let got: bool = sqlx::query_scalar("select pg_try_advisory_xact_lock($1)")
                .bind(WRITER_LOCK)
                .fetch_one(&mut *tx)
                .await?;
            if !got {
                drop(tx);
                return latest(&self.db).await;
            }
        }
        let size = sequence(&mut tx).await?;
        let last = latest_in(&mut tx).await?;
        let grew = last.as_ref().is_none_or(|c| c.size < size);
        if grew && size > 0 {
            let hashes = leaf_hashes_in(&mut tx, size).await?;
            let root = merkle::root(&hashes);
            let note = self.signer.sign(&Checkpoint {
                origin: self.origin.clone(),
                size,
                root,
            });
            sqlx::query("insert into audit_checkpoints (size, root, note) values ($1, $2, $3)")
                .bind(size as i64)
                .bind(root.as_slice())
                .bind(&note)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        latest(&self.db).await
    }

    /// Keeps the log sequenced and checkpointed every `every` until `stop`.
    pub async fn run(self: std::sync::Arc<Self>, every: Duration, stop: CancellationToken) {
        loop {
            if let Err(e) = self.sync(false).await {
                tracing::warn!(error = %e, "audit log round failed; retrying");
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.cancelled() => return,
            }
        }
    }
}

/// Turns every entry whose transaction is finished into the next leaf. Returns the tree size.
async fn sequence(tx: &mut PgConnection) -> anyhow::Result<u64> {
    let horizon: String =
        sqlx::query_scalar("select horizon::text from audit_sequencer for update")
            .fetch_one(&mut *tx)
            .await?;
    // The horizon: below the next transaction id to be assigned (read first: any transaction
    // that gets an id later is above it), and below the id of every transaction still running in
    // this database (their entries are not visible yet). The cluster-wide snapshot xmin would
    // also wait for other databases' transactions. pg_stat_activity gives 32-bit ids: they are
    // widened with the epoch of the first reading.
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
    // Never backwards: what lies below the old horizon is already sequenced.
    let old_horizon: i64 = horizon
        .parse()
        .context("the stored horizon is not a number")?;
    let new_horizon = running
        .map_or(xmax, |r| r.min(xmax))
        .max(old_horizon)
        .to_string();
    let mut next: i64 =
        sqlx::query_scalar("select coalesce(max(leaf_index) + 1, 0) from audit_leaves")
            .fetch_one(&mut *tx)
            .await?;
    let mut after: (String, i64) = (horizon.clone(), 0);
    loop {
        let rows = sqlx::query(
            "select id, xid::text as xid, at, request_id, subject_ref, actor, event, data, nonce \
             from audit_entries \
             where xid >= $1::xid8 and xid < $2::xid8 and (xid, id) > ($3::xid8, $4) \
             order by xid, id limit $5",
        )
        .bind(&horizon)
        .bind(&new_horizon)
        .bind(&after.0)
        .bind(after.1)
        .bind(CHUNK)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            break;
        }
        // Each leaf says its place among its request's leaves, so a receipt with an entry
        // removed shows a hole.
        let request_ids: Vec<Uuid> = rows
            .iter()
            .filter_map(|r| r.get::<Option<Uuid>, _>("request_id"))
            .collect();
        let mut seq: std::collections::HashMap<Uuid, i64> = sqlx::query_as(
            "select request_id, count(*) from audit_leaves where request_id = any($1) group by request_id",
        )
        .bind(&request_ids)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let (mut idx, mut ids, mut reqs, mut subjects, mut ats, mut leaves, mut hashes) =
            (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
        for row in &rows {
            let id: i64 = row.get("id");
            let at: DateTime<Utc> = row.get("at");
            let request_id: Option<Uuid> = row.get("request_id");
            let subject_ref: Option<String> = row.get("subject_ref");
            let request_seq = request_id.map(|r| {
                let n = seq.entry(r).or_insert(0);
                *n += 1;
                *n - 1
            });
            let leaf = leaf_text(
                id,
                request_seq,
                at,
                request_id,
                subject_ref.as_deref(),
                row.get("actor"),
                row.get("event"),
                row.get("data"),
                row.get("nonce"),
            );
            hashes.push(merkle::leaf_hash(leaf.as_bytes()).to_vec());
            idx.push(next);
            ids.push(id);
            reqs.push(request_id);
            subjects.push(subject_ref);
            ats.push(at);
            leaves.push(leaf);
            next += 1;
            after = (row.get("xid"), id);
        }
        sqlx::query(
            "insert into audit_leaves (leaf_index, entry_id, request_id, subject_ref, at, leaf, leaf_hash) \
             select * from unnest($1::int8[], $2::int8[], $3::uuid[], $4::text[], $5::timestamptz[], \
                                  $6::text[], $7::bytea[])",
        )
        .bind(&idx)
        .bind(&ids)
        .bind(&reqs)
        .bind(&subjects)
        .bind(&ats)
        .bind(&leaves)
        .bind(&hashes)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query("update audit_sequencer set horizon = $1::xid8")
        .bind(&new_horizon)
        .execute(&mut *tx)
        .await?;
    Ok(next as u64)
}

/// The exact text of a leaf: a JSON object with sorted keys (serde_json's map is ordered).
#[allow(clippy::too_many_arguments)]
fn leaf_text(
    id: i64,
    request_seq: Option<i64>,
    at: DateTime<Utc>,
    request_id: Option<Uuid>,
    subject_ref: Option<&str>,
    actor: &str,
    event: &str,
    data: Value,
    nonce: Vec<u8>,
) -> String {
    json!({
        "entry_id": id,
        "request_seq": request_seq,
        "at": at.to_rfc3339_opts(SecondsFormat::Micros, true),
        "request_id": request_id,
        "subject_ref": subject_ref,
        "actor": actor,
        "event": event,
        "data": data,
        "nonce": hex::encode(nonce),
    })
    .to_string()
}

fn to_hash(bytes: &[u8]) -> anyhow::Result<Hash> {
    bytes.try_into().context("a stored hash is not 32 bytes")
}

async fn leaf_hashes_in(conn: &mut PgConnection, size: u64) -> anyhow::Result<Vec<Hash>> {
    let rows: Vec<Vec<u8>> = sqlx::query_scalar(
        "select leaf_hash from audit_leaves where leaf_index < $1 order by leaf_index",
    )
    .bind(size as i64)
    .fetch_all(&mut *conn)
    .await?;
    anyhow::ensure!(rows.len() as u64 == size, "the log has a gap below {size}");
    rows.iter().map(|h| to_hash(h)).collect()
}

/// Every leaf hash of the tree of `size` leaves.
pub async fn leaf_hashes(db: &Db, size: u64) -> anyhow::Result<Vec<Hash>> {
    let mut conn = db.acquire().await?;
    leaf_hashes_in(&mut conn, size).await
}

fn stored(row: sqlx::postgres::PgRow) -> anyhow::Result<StoredCheckpoint> {
    Ok(StoredCheckpoint {
        size: row.get::<i64, _>("size") as u64,
        root: to_hash(&row.get::<Vec<u8>, _>("root"))?,
        note: row.get("note"),
        created_at: row.get("created_at"),
    })
}

async fn latest_in(conn: &mut PgConnection) -> anyhow::Result<Option<StoredCheckpoint>> {
    sqlx::query(
        "select size, root, note, created_at from audit_checkpoints order by size desc limit 1",
    )
    .fetch_optional(&mut *conn)
    .await?
    .map(stored)
    .transpose()
}

/// The newest checkpoint.
pub async fn latest(db: &Db) -> anyhow::Result<Option<StoredCheckpoint>> {
    let mut conn = db.acquire().await?;
    latest_in(&mut conn).await
}

/// A leaf as stored.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub index: u64,
    pub leaf: String,
}

/// The leaves of one request below `size`, in order.
pub async fn leaves_of_request(db: &Db, request_id: Uuid, size: u64) -> anyhow::Result<Vec<Leaf>> {
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "select leaf_index, leaf from audit_leaves where request_id = $1 and leaf_index < $2 order by leaf_index",
    )
    .bind(request_id)
    .bind(size as i64)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(i, leaf)| Leaf {
            index: i as u64,
            leaf,
        })
        .collect())
}

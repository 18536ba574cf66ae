//! The audit log as a Merkle tree: sequencing entries into leaves, signing checkpoints, and
//! reading proofs. One process at a time does the writing (a PostgreSQL advisory lock); any
//! process can read. What a leaf says and how the tree grows are decided here; the statements
//! that read and write the tables are `store::tree`'s. It never changes or removes a leaf, a node
//! or a checkpoint once written.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::checkpoint::{Checkpoint, Signer};
use super::merkle::{self, Hash};
use super::tree::{self, NodeId, Nodes};
use crate::store::Db;
use crate::store::copy::BinaryRows;
use crate::store::tree::{self as stored_tree, CheckpointRow, EntryRow};
/// Entries read per round trip while sequencing.
const CHUNK: i64 = 5_000;
/// Requests whose leaf count a sequencer round keeps in memory before reading counts again.
const SEQ_MEMORY: usize = 100_000;

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
        if !stored_tree::lock_writer(&mut tx, wait).await? {
            drop(tx);
            return latest(&self.db).await;
        }
        let size = sequence(&mut tx).await?;
        let last = latest_in(&mut tx).await?;
        let grew = last.as_ref().is_none_or(|c| c.size < size);
        if grew && size > 0 {
            let root = fetch_nodes(&mut tx, &tree::cover(0, size))
                .await?
                .hash(0, size)?;
            let note = self.signer.sign(&Checkpoint {
                origin: self.origin.clone(),
                size,
                root,
            });
            stored_tree::insert_checkpoint(&mut tx, size, root.as_slice(), &note).await?;
        }
        tx.commit().await?;
        latest(&self.db).await
    }

    /// Keeps the log sequenced and checkpointed until `stop`: at least every `every`, and sooner
    /// once `every_entries` entries wait (looked at every quarter second at most).
    pub async fn run(
        self: std::sync::Arc<Self>,
        every: Duration,
        every_entries: u64,
        stop: CancellationToken,
    ) {
        let tick = every.min(Duration::from_millis(250));
        let mut last: Option<Instant> = None;
        loop {
            let due = match last {
                Some(at) if at.elapsed() < every => match self.waiting().await {
                    Ok(n) => n >= every_entries,
                    Err(e) => {
                        tracing::warn!(error = %e, "audit log backlog unknown");
                        false
                    }
                },
                _ => true,
            };
            if due {
                if let Err(e) = self.sync(false).await {
                    tracing::warn!(error = %e, "audit log round failed; retrying");
                }
                last = Some(Instant::now());
            }
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    /// About how many committed entries wait to be sequenced (`store::tree::backlog`).
    async fn waiting(&self) -> anyhow::Result<u64> {
        Ok(stored_tree::backlog(&self.db).await?)
    }
}

/// Turns every entry whose transaction is finished into the next leaf. Returns the tree size.
async fn sequence(tx: &mut PgConnection) -> anyhow::Result<u64> {
    let horizon = stored_tree::horizon_for_update(&mut *tx).await?;
    let safe = stored_tree::safe_horizon(&mut *tx).await?;
    // Never backwards: what lies below the old horizon is already sequenced.
    let old_horizon: i64 = horizon
        .parse()
        .context("the stored horizon is not a number")?;
    let new_horizon = safe.max(old_horizon).to_string();
    let mut next = stored_tree::leaf_count(&mut *tx).await?;
    complete_tree(&mut *tx, next as u64).await?;
    // The peaks of the tree so far: the only old nodes that new nodes can have as children.
    let peak_ids = tree::cover(0, next as u64);
    let mut peaks = fetch_nodes(&mut *tx, &peak_ids)
        .await?
        .hashes(&ranges_of(&peak_ids))?;
    let mut after: (String, i64) = (horizon.clone(), 0);
    // Each leaf says its place among its request's leaves (`request_seq`), so a receipt with an
    // entry removed shows a hole: the count of every request seen in this round, read once.
    let mut seq: HashMap<Uuid, i64> = HashMap::new();
    // The chunk made but not written yet: chunk k is written while chunk k + 1 is made, on
    // another thread (the service's CPU work beside PostgreSQL's).
    let mut pending: Option<Chunk> = None;
    loop {
        let entries =
            stored_tree::entries_between(&mut *tx, &horizon, &new_horizon, &after, CHUNK).await?;
        let Some(last) = entries.last() else {
            break;
        };
        after = (last.xid_text.clone(), last.id);
        if seq.len() > SEQ_MEMORY {
            // Forgotten counts are read again, which is right once every leaf made is written.
            if let Some(chunk) = pending.take() {
                peaks = write_chunk(&mut *tx, chunk, &peaks).await?;
            }
            seq.clear();
        }
        // A request not seen in this round has all its leaves (from earlier rounds) stored. One
        // first seen by its "received" entry has none: that entry is written with the request
        // and is its first (receipts are verified so), so new requests are not counted.
        let mut unseen = Vec::new();
        for e in &entries {
            let Some(r) = e.request_id else { continue };
            if seq.contains_key(&r) {
                continue;
            }
            if e.event == crate::domain::events::Event::Received.as_str() {
                seq.insert(r, 0);
            } else {
                unseen.push(r);
            }
        }
        unseen.sort_unstable();
        unseen.dedup();
        if !unseen.is_empty() {
            let stored = stored_tree::leaves_per_request(&mut *tx, &unseen).await?;
            seq.extend(unseen.into_iter().map(|r| (r, 0)));
            seq.extend(stored);
        }
        let first = next as u64;
        next += entries.len() as i64;
        let making = tokio::task::spawn_blocking(move || {
            let chunk = make_leaves(entries, first, &mut seq);
            (chunk, seq)
        });
        if let Some(chunk) = pending.take() {
            peaks = write_chunk(&mut *tx, chunk, &peaks).await?;
        }
        let (chunk, counts) = making.await.context("making leaves")?;
        seq = counts;
        pending = Some(chunk);
    }
    if let Some(chunk) = pending.take() {
        write_chunk(&mut *tx, chunk, &peaks).await?;
    }
    stored_tree::set_horizon(&mut *tx, &new_horizon).await?;
    Ok(next as u64)
}

/// Entries made leaves, from leaf index `first`: the rows for `audit_leaves` and their hashes.
struct Chunk {
    first: u64,
    rows: BinaryRows,
    hashes: Vec<Hash>,
}

/// Makes the leaves of `entries` (CPU only), counting each request's leaves in `seq`.
fn make_leaves(entries: Vec<EntryRow>, first: u64, seq: &mut HashMap<Uuid, i64>) -> Chunk {
    let mut rows = BinaryRows::with_capacity(entries.len() * 640);
    let mut hashes = Vec::with_capacity(entries.len());
    for (n, e) in entries.into_iter().enumerate() {
        let request_seq = e.request_id.map(|r| {
            let count = seq.entry(r).or_insert(0);
            *count += 1;
            *count - 1
        });
        let leaf = leaf_text(
            e.id,
            request_seq,
            e.at,
            e.request_id,
            e.subject_ref.as_deref(),
            &e.actor,
            &e.event,
            e.data,
            e.nonce,
        );
        let hash = merkle::leaf_hash(leaf.as_bytes());
        rows.row(7)
            .int8((first + n as u64) as i64)
            .int8(e.id)
            .uuid(e.request_id)
            .text(e.subject_ref.as_deref())
            .timestamptz(e.at)
            .text(Some(&leaf))
            .bytea(&hash);
        hashes.push(hash);
    }
    Chunk {
        first,
        rows,
        hashes,
    }
}

/// Writes a chunk's leaves and the tree nodes they complete; returns the peaks of the grown tree.
async fn write_chunk(
    tx: &mut PgConnection,
    chunk: Chunk,
    peaks: &[Hash],
) -> anyhow::Result<Vec<Hash>> {
    let written = stored_tree::copy_leaves(&mut *tx, chunk.rows).await?;
    anyhow::ensure!(
        written == chunk.hashes.len() as u64,
        "{written} leaves written, not {}",
        chunk.hashes.len()
    );
    extend_tree(tx, chunk.first, peaks, &chunk.hashes).await
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

/// Adds the tree nodes of leaves that have none: those a process of a release before the stored
/// tree (migration 0005) sequenced while the migration ran or after it, during a rolling upgrade.
/// The nodes are written in order, so the tree is whole for the leaves below twice the number of
/// level-1 nodes, and a whole tree of `size` leaves leaves at most one leaf without a parent.
async fn complete_tree(tx: &mut PgConnection, size: u64) -> anyhow::Result<()> {
    let pairs = stored_tree::pair_count(&mut *tx).await?;
    let whole = 2 * pairs as u64;
    if size < whole + 2 {
        return Ok(());
    }
    let leaves = stored_tree::leaf_hashes(&mut *tx, whole, size).await?;
    let hashes = leaves
        .iter()
        .map(|h| to_hash(h))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let peak_ids = tree::cover(0, whole);
    let peaks = fetch_nodes(&mut *tx, &peak_ids)
        .await?
        .hashes(&ranges_of(&peak_ids))?;
    extend_tree(tx, whole, &peaks, &hashes).await?;
    tracing::info!(
        from = whole,
        to = size,
        "audit tree completed for leaves sequenced without it (an older release)"
    );
    Ok(())
}

/// Writes the tree nodes that the leaves `hashes` (from index `size`) complete; returns the peaks
/// of the grown tree.
async fn extend_tree(
    tx: &mut PgConnection,
    size: u64,
    peaks: &[Hash],
    hashes: &[Hash],
) -> anyhow::Result<Vec<Hash>> {
    let grown = tree::grow(size, peaks, hashes)?;
    let mut rows = BinaryRows::with_capacity(grown.len() * 56);
    for ((level, i), hash) in &grown {
        rows.row(3).int2(*level as i16).int8(*i as i64).bytea(hash);
    }
    if !rows.is_empty() {
        stored_tree::copy_nodes(&mut *tx, rows).await?;
    }
    // Every peak of the grown tree is an old peak, a new leaf or a new node.
    let new_size = size + hashes.len() as u64;
    let mut known = Nodes::default();
    known
        .0
        .extend(tree::cover(0, size).into_iter().zip(peaks.iter().copied()));
    known.0.extend(
        hashes
            .iter()
            .enumerate()
            .map(|(i, h)| ((0, size + i as u64), *h)),
    );
    known.0.extend(grown);
    known.hashes(&ranges_of(&tree::cover(0, new_size)))
}

/// The leaf range of each node.
fn ranges_of(ids: &[NodeId]) -> Vec<(u64, u64)> {
    ids.iter()
        .map(|&(level, i)| (i << level, (i + 1) << level))
        .collect()
}

/// Reads the given nodes: leaves from `audit_leaves`, the others from `audit_tree`.
async fn fetch_nodes(conn: &mut PgConnection, ids: &[NodeId]) -> anyhow::Result<Nodes> {
    let leaves: Vec<i64> = ids
        .iter()
        .filter(|(l, _)| *l == 0)
        .map(|(_, i)| *i as i64)
        .collect();
    let (levels, idx): (Vec<i16>, Vec<i64>) = ids
        .iter()
        .filter(|(l, _)| *l > 0)
        .map(|(l, i)| (*l as i16, *i as i64))
        .unzip();
    let rows = stored_tree::node_hashes(conn, &leaves, &levels, &idx).await?;
    let mut nodes = Nodes::default();
    for (level, i, h) in rows {
        nodes.0.insert((level as u8, i as u64), to_hash(&h)?);
    }
    Ok(nodes)
}

/// The hashes of each list of subtrees (proofs), reading only the nodes they need.
async fn subtree_hashes(db: &Db, lists: &[Vec<(u64, u64)>]) -> anyhow::Result<Vec<Vec<Hash>>> {
    let ids = tree::nodes_for(&lists.concat());
    let mut conn = db.acquire().await?;
    let nodes = fetch_nodes(&mut conn, &ids).await?;
    lists.iter().map(|ranges| nodes.hashes(ranges)).collect()
}

/// The inclusion proof of each leaf index in the tree of `size` leaves.
pub async fn inclusion_proofs(
    db: &Db,
    indexes: &[u64],
    size: u64,
) -> anyhow::Result<Vec<Vec<Hash>>> {
    let lists: Vec<_> = indexes
        .iter()
        .map(|&i| tree::inclusion_ranges(i, size))
        .collect();
    subtree_hashes(db, &lists).await
}

/// The consistency proof from the tree of `old_size` leaves to the tree of `size` leaves.
pub async fn consistency_proof(db: &Db, old_size: u64, size: u64) -> anyhow::Result<Vec<Hash>> {
    let lists = [tree::consistency_ranges(old_size, size)];
    Ok(subtree_hashes(db, &lists).await?.remove(0))
}

/// The range proof of leaves `start..end` in the tree of `size` leaves.
pub async fn range_proof(db: &Db, start: u64, end: u64, size: u64) -> anyhow::Result<Vec<Hash>> {
    let lists = [tree::range_ranges(start, end, size)];
    Ok(subtree_hashes(db, &lists).await?.remove(0))
}

/// The root of the tree of `size` leaves.
pub async fn root(db: &Db, size: u64) -> anyhow::Result<Hash> {
    let lists = [vec![(0, size)]];
    let mut conn = db.acquire().await?;
    fetch_nodes(&mut conn, &tree::nodes_for(&lists[0]))
        .await?
        .hash(0, size)
}

/// A checkpoint as the store gives it, its root checked to be a hash.
pub(crate) fn stored(row: CheckpointRow) -> anyhow::Result<StoredCheckpoint> {
    Ok(StoredCheckpoint {
        size: row.size as u64,
        root: to_hash(&row.root)?,
        note: row.note,
        created_at: row.created_at,
    })
}

async fn latest_in(conn: &mut PgConnection) -> anyhow::Result<Option<StoredCheckpoint>> {
    stored_tree::latest_checkpoint(conn)
        .await?
        .map(stored)
        .transpose()
}

/// The newest checkpoint.
pub async fn latest(db: &Db) -> anyhow::Result<Option<StoredCheckpoint>> {
    let mut conn = db.acquire().await?;
    latest_in(&mut conn).await
}

/// The newest checkpoint signed before `t`.
pub async fn latest_before(db: &Db, t: DateTime<Utc>) -> anyhow::Result<Option<StoredCheckpoint>> {
    stored_tree::latest_checkpoint_before(db, t)
        .await?
        .map(stored)
        .transpose()
}

/// A leaf as stored.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub index: u64,
    pub leaf: String,
}

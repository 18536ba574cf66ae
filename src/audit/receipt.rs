//! Receipts: the proof that one request was erased, checkable offline with the public key. This
//! module fetches the parts (through `store::tree` and the log); the document itself is made by
//! `erasure_proof::receipt` (its format: `erasure_proof::verify`).
//!
//! Never holds more than pseudonyms and the audit log's own entries: no identifier.

use erasure_proof::receipt::{self as document, Entry};
use serde_json::Value;
use uuid::Uuid;

use super::log::{self, AuditLog, Leaf, StoredCheckpoint};
use crate::domain::State;
use crate::store::Db;
use crate::store::tree::{self, CheckpointRow};

/// Why a receipt cannot be given (yet).
#[derive(Debug)]
pub enum NoReceipt {
    /// No such request.
    NotFound,
    /// The request is in this state: a receipt proves a completed erasure.
    NotCompleted(State),
    /// Some of the request's entries are not in a signed checkpoint yet (a transaction that began
    /// earlier is still open); try again shortly.
    NotSealed,
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for NoReceipt {
    fn from(e: anyhow::Error) -> Self {
        NoReceipt::Failed(e)
    }
}

impl From<sqlx::Error> for NoReceipt {
    fn from(e: sqlx::Error) -> Self {
        NoReceipt::Failed(e.into())
    }
}

/// What one statement (one snapshot) says about a request: its state and pseudonym, how many
/// audit entries it has, the newest checkpoint and the request's leaves below its size.
struct Seen {
    state: State,
    subject_ref: String,
    total: i64,
    checkpoint: Option<StoredCheckpoint>,
    leaves: Vec<Leaf>,
}

impl Seen {
    /// The checkpoint and leaves when every entry of the request is under the checkpoint.
    fn sealed(self) -> Option<(StoredCheckpoint, Vec<Leaf>)> {
        let checkpoint = self.checkpoint?;
        (self.leaves.len() as i64 == self.total).then_some((checkpoint, self.leaves))
    }
}

/// One round trip instead of one per question (request, entry count, checkpoint, leaves).
async fn look(db: &Db, request_id: Uuid) -> Result<Option<Seen>, NoReceipt> {
    let mut rows = tree::receipt_rows(db, request_id).await?.into_iter();
    let Some(first) = rows.next() else {
        return Ok(None);
    };
    let checkpoint = match (first.size, first.root, first.note, first.created_at) {
        (Some(size), Some(root), Some(note), Some(created_at)) => {
            Some(log::stored(CheckpointRow {
                size,
                root,
                note,
                created_at,
            })?)
        }
        _ => None,
    };
    let leaf = |index: Option<i64>, leaf: Option<String>| {
        Some(Leaf {
            index: index? as u64,
            leaf: leaf?,
        })
    };
    let leaves = leaf(first.leaf_index, first.leaf)
        .into_iter()
        .chain(rows.filter_map(|row| leaf(row.leaf_index, row.leaf)))
        .collect();
    Ok(Some(Seen {
        state: first.state,
        subject_ref: first.subject_ref,
        total: first.total,
        checkpoint,
        leaves,
    }))
}

/// Builds the receipt of a completed request: its entries, their inclusion proofs and a signed
/// checkpoint. Two round trips when the newest checkpoint covers the request (what it reads
/// about the request, then the proof nodes of all its entries at once).
pub async fn build(db: &Db, log: &AuditLog, request_id: Uuid) -> Result<Value, NoReceipt> {
    let seen = look(db, request_id).await?.ok_or(NoReceipt::NotFound)?;
    if seen.state != State::Completed {
        return Err(NoReceipt::NotCompleted(seen.state));
    }
    let subject_ref = seen.subject_ref.clone();
    // The newest checkpoint usually covers a completed request already (the sequencer runs
    // every few seconds): only when it does not, sequence and sign now (a write and a commit).
    let sealed = match seen.sealed() {
        Some(sealed) => Some(sealed),
        None => {
            log.sync(true).await?;
            look(db, request_id)
                .await?
                .ok_or(NoReceipt::NotFound)?
                .sealed()
        }
    };
    let (checkpoint, leaves) = sealed.ok_or(NoReceipt::NotSealed)?;
    let indexes: Vec<u64> = leaves.iter().map(|leaf| leaf.index).collect();
    let proofs = log::inclusion_proofs(db, &indexes, checkpoint.size).await?;
    let entries: Vec<Entry> = leaves
        .iter()
        .zip(&proofs)
        .map(|(leaf, proof)| Entry {
            leaf_index: leaf.index,
            leaf: &leaf.leaf,
            inclusion_proof: proof,
        })
        .collect();
    Ok(document::assemble(
        &request_id.to_string(),
        &subject_ref,
        &checkpoint.note,
        &entries,
    ))
}

//! Receipts: the proof that one request was erased, checkable offline with the public key
//! (see `verify.rs` for the format).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use uuid::Uuid;

use super::log::{self, AuditLog};
use crate::store::Db;

/// Why a receipt cannot be given (yet).
#[derive(Debug)]
pub enum NoReceipt {
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

/// Builds the receipt of a request: its entries, their inclusion proofs and a signed checkpoint.
pub async fn build(
    db: &Db,
    log: &AuditLog,
    request_id: Uuid,
    subject_ref: &str,
) -> Result<Value, NoReceipt> {
    let total: i64 = sqlx::query_scalar("select count(*) from audit_entries where request_id = $1")
        .bind(request_id)
        .fetch_one(db)
        .await?;
    // The newest checkpoint usually covers a completed request already (the sequencer runs
    // every few seconds): only when it does not, sequence and sign now (a write and a commit).
    let mut sealed = None;
    for fresh in [false, true] {
        let checkpoint = if fresh {
            log.sync(true).await?
        } else {
            log::latest(db).await?
        };
        if let Some(checkpoint) = checkpoint {
            let leaves = log::leaves_of_request(db, request_id, checkpoint.size).await?;
            if leaves.len() as i64 == total {
                sealed = Some((checkpoint, leaves));
                break;
            }
        }
    }
    let (checkpoint, leaves) = sealed.ok_or(NoReceipt::NotSealed)?;
    let indexes: Vec<u64> = leaves.iter().map(|leaf| leaf.index).collect();
    let proofs = log::inclusion_proofs(db, &indexes, checkpoint.size).await?;
    let entries: Vec<Value> = leaves
        .iter()
        .zip(proofs)
        .map(|(leaf, proof)| {
            let proof: Vec<String> = proof.iter().map(|h| STANDARD.encode(h)).collect();
            json!({"leaf_index": leaf.index, "leaf": leaf.leaf, "inclusion_proof": proof})
        })
        .collect();
    Ok(json!({
        "format": "erasure-receipt/v1",
        "request_id": request_id,
        "subject_ref": subject_ref,
        "entry_count_for_request": entries.len(),
        "checkpoint": checkpoint.note,
        "entries": entries,
    }))
}

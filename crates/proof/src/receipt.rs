//! The receipt document (`erasure-receipt/v1`, described in `verify.rs`): what the service sends
//! and the verifier reads, assembled here from its parts so that both sides share one format.
//!
//! Pure: it never reads a store or a secret; the service fetches the leaves, proofs and
//! checkpoint (`erasure::audit::receipt`) and hands them over.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::merkle::Hash;

/// The `format` of a receipt.
pub const FORMAT: &str = "erasure-receipt/v1";

/// One entry of a receipt: a leaf of the log and its inclusion proof at the checkpoint's size.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    pub leaf_index: u64,
    /// The exact leaf text hashed into the log.
    pub leaf: &'a str,
    pub inclusion_proof: &'a [Hash],
}

/// The receipt of request `request_id` (its pseudonym `subject_ref`): its entries in log order
/// and the signed checkpoint note they are proven against.
pub fn assemble(
    request_id: &str,
    subject_ref: &str,
    checkpoint_note: &str,
    entries: &[Entry<'_>],
) -> Value {
    let entries: Vec<Value> = entries
        .iter()
        .map(|entry| {
            let proof: Vec<String> = entry
                .inclusion_proof
                .iter()
                .map(|h| STANDARD.encode(h))
                .collect();
            json!({"leaf_index": entry.leaf_index, "leaf": entry.leaf, "inclusion_proof": proof})
        })
        .collect();
    json!({
        "format": FORMAT,
        "request_id": request_id,
        "subject_ref": subject_ref,
        "entry_count_for_request": entries.len(),
        "checkpoint": checkpoint_note,
        "entries": entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{Checkpoint, Signer};
    use crate::merkle;
    use crate::verify::verify_receipt;

    #[test]
    fn an_assembled_receipt_verifies_and_names_its_parts() {
        let id = "0190a7b2-0000-7000-8000-000000000001";
        let leaves: Vec<String> = ["received", "step", "completed"]
            .iter()
            .enumerate()
            .map(|(seq, event)| {
                json!({"request_id": id, "subject_ref": "k1:ab", "event": event,
                       "at": "2026-01-01T00:00:00Z", "request_seq": seq})
                .to_string()
            })
            .collect();
        let hashes: Vec<Hash> = leaves
            .iter()
            .map(|l| merkle::leaf_hash(l.as_bytes()))
            .collect();
        let root = merkle::root(&hashes);
        let signer = Signer::new("erasure-audit", &[3u8; 32]);
        let note = signer.sign(&Checkpoint {
            origin: "erasure-audit".into(),
            size: hashes.len() as u64,
            root,
        });
        let proofs: Vec<Vec<Hash>> = (0..hashes.len())
            .map(|i| merkle::inclusion_proof(&hashes, i))
            .collect();
        let entries: Vec<Entry> = leaves
            .iter()
            .zip(&proofs)
            .enumerate()
            .map(|(i, (leaf, proof))| Entry {
                leaf_index: i as u64,
                leaf,
                inclusion_proof: proof,
            })
            .collect();
        let receipt = assemble(id, "k1:ab", &note, &entries);
        assert_eq!(receipt["format"], FORMAT);
        assert_eq!(receipt["entry_count_for_request"], 3);
        assert_eq!(receipt["entries"][2]["leaf"], leaves[2].as_str());
        verify_receipt(&receipt.to_string(), &signer.verifier_key()).unwrap();
    }
}

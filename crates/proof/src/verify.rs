//! Offline verification of receipts and exports (`erasure audit verify`), given only the
//! verifier key that `erasure audit public-key` prints.
//!
//! # Receipt (`erasure-receipt/v1`), one JSON object
//! ```text
//! {"format": "erasure-receipt/v1",
//!  "request_id": "<uuid>",
//!  "subject_ref": "k1:...",
//!  "entry_count_for_request": n,
//!  "checkpoint": "<signed checkpoint note, see checkpoint.rs>",
//!  "entries": [{"leaf_index": i, "leaf": "<exact leaf text>", "inclusion_proof": ["<base64 hash>", ...]}, ...]}
//! ```
//! `leaf` is the exact text that was hashed into the log (`leaf_hash(leaf.as_bytes())`), itself a
//! JSON object with at least `request_id`, `subject_ref`, `event` and `at` (strings). Other fields
//! are welcome and ignored. A receipt verifies when:
//! - the checkpoint note carries a signature by the key that verifies over its exact body;
//! - there is at least one entry, leaf indexes strictly increase (no reordering, no duplicate) and
//!   are below the checkpoint's size;
//! - every entry's inclusion proof leads from the hash of its leaf text to the checkpoint's root
//!   at the checkpoint's size (a proof for another tree size fails: a stale proof);
//! - every leaf is a JSON object whose `request_id` and `subject_ref` equal the receipt's (an entry
//!   of another request, even with a valid proof, fails), with string `event` and `at`;
//! - `entry_count_for_request` equals the number of entries;
//! - if the leaves carry `request_seq` (the 0-based position of the event among its request's
//!   events), every leaf carries it and entry `k` has `request_seq == k`;
//! - the first entry is the `received` event and some entry is the `completed` event.
//!
//! What this proves, and what not: every entry shown is in the signed log, belongs to this
//! request, and is shown in log order; nobody without the signing key can forge or alter one.
//! Inclusion proofs cannot show that no entry of the request was left out. The `received` and
//! `completed` checks catch removing either end; `entry_count_for_request` is not signed, so it
//! only catches accidental loss: whoever removes a middle entry can lower the count too. Leaves
//! that carry `request_seq` close that gap (a removed entry leaves a hole in the sequence, and the
//! sequence is inside the signed leaves); without it, an auditor who needs completeness can list
//! the request's entries from an export (which is proven complete for its range). And whoever
//! holds the signing key can sign anything: the key must stay with the service.
//!
//! Entry numbers in messages count positions in `entries` from 0 (`entries[3]` is "entry 3").
//!
//! # Export (`erasure-export/v1`), JSON Lines
//! ```text
//! {"format": "erasure-export/v1", "start": a, "end": b, "size": n, "checkpoint": "<signed note>", "range_proof": ["<base64 hash>", ...]}
//! {"leaf_index": a, "leaf": "<exact leaf text>"}
//! ...
//! {"leaf_index": b-1, "leaf": "<exact leaf text>"}
//! ```
//! An export verifies when the checkpoint's signature holds, `size` is the checkpoint's size,
//! `start <= end <= size`, the lines after the header are exactly leaves `a..b` in order (a
//! missing, duplicated, reordered, extra or truncated line fails) and the range's leaf hashes with
//! the range proof (see [`merkle::range_proof`]) rebuild the checkpoint's root. That proves the
//! export is exactly leaves `a..b` of the signed log. Line numbers in messages count from 1 (the
//! header is line 1). Verification streams: memory does not grow with the export
//! ([`verify_export_reader`]).
//!
//! It needs only the public key: never the database, never a secret.

use std::fmt;
use std::io::BufRead;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::checkpoint::{self, Checkpoint, CheckpointError, VerifierKey};
use super::merkle::{self, Hash, MerkleError};

/// The `format` of receipts.
pub const RECEIPT_FORMAT: &str = "erasure-receipt/v1";
/// The `format` of JSON Lines exports (in their header line).
pub const EXPORT_FORMAT: &str = "erasure-export/v1";

/// A receipt as serialized (see the module documentation).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Receipt {
    pub format: String,
    pub request_id: String,
    pub subject_ref: String,
    pub entry_count_for_request: u64,
    pub checkpoint: String,
    pub entries: Vec<ReceiptEntry>,
}

/// One entry of a receipt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReceiptEntry {
    pub leaf_index: u64,
    /// The exact leaf text that was hashed.
    pub leaf: String,
    /// Base64 hashes, bottom-up (RFC 9162 inclusion proof).
    pub inclusion_proof: Vec<String>,
}

/// The header line of a JSON Lines export.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportHeader {
    pub format: String,
    pub start: u64,
    pub end: u64,
    pub size: u64,
    /// The signed checkpoint of tree size `size`; `null` when the log was empty.
    pub checkpoint: Option<String>,
    /// Base64 hashes (see [`merkle::range_proof`]).
    pub range_proof: Vec<String>,
}

/// A leaf line of a JSON Lines export.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportLine {
    pub leaf_index: u64,
    /// The exact leaf text that was hashed.
    pub leaf: String,
}

/// What a verified receipt shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptSummary {
    pub request_id: String,
    pub subject_ref: String,
    /// How many entries the receipt holds.
    pub entries: usize,
    /// The `at` of the `received` entry.
    pub received_at: String,
    /// The `at` of the first `completed` entry.
    pub completed_at: String,
    /// The signed checkpoint the entries are proven against (its `size` is the tree size).
    pub checkpoint: Checkpoint,
}

impl fmt::Display for ReceiptSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "request {} (subject {}): {} entries, received {}, completed {}; \
             all in the log {} of size {} (root {})",
            self.request_id,
            self.subject_ref,
            self.entries,
            self.received_at,
            self.completed_at,
            self.checkpoint.origin,
            self.checkpoint.size,
            hex::encode(self.checkpoint.root)
        )
    }
}

/// What a verified export covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    /// The first leaf index.
    pub start: u64,
    /// One past the last leaf index.
    pub end: u64,
    /// The tree size of the checkpoint.
    pub size: u64,
    pub checkpoint: Checkpoint,
}

impl fmt::Display for ExportSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "leaves {}..{} ({} entries), exactly as in the log {} of size {} (root {})",
            self.start,
            self.end,
            self.end - self.start,
            self.checkpoint.origin,
            self.size,
            hex::encode(self.checkpoint.root)
        )
    }
}

/// What failed. The messages say where (entry or line) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("{what} is not valid JSON: {detail}")]
    NotJson { what: String, detail: String },
    #[error("{what} is malformed: {detail}")]
    Malformed { what: String, detail: String },
    #[error("{what} has format {found}; expected {expected:?}")]
    Format {
        what: &'static str,
        expected: &'static str,
        found: String,
    },
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("the receipt has no entries")]
    NoEntries,
    #[error(
        "entries out of order: entry {position} has leaf {leaf_index}, which does not come after \
         leaf {previous} of the entry before it (leaf indexes must strictly increase; an entry was \
         moved or duplicated)"
    )]
    OutOfOrder {
        position: usize,
        leaf_index: u64,
        previous: u64,
    },
    #[error(
        "entry {position} (leaf {leaf_index}) is beyond the checkpoint, which covers leaves \
         0..{size} (a proof for another tree size?)"
    )]
    BeyondCheckpoint {
        position: usize,
        leaf_index: u64,
        size: u64,
    },
    #[error(
        "inclusion proof of entry {position} (leaf {leaf_index}) does not match the checkpoint \
         root (tree size {size}): {source}"
    )]
    Inclusion {
        position: usize,
        leaf_index: u64,
        size: u64,
        source: MerkleError,
    },
    #[error(
        "entry {position} (leaf {leaf_index}) has {field} {found:?}, not the receipt's \
         {expected:?}: an entry of another request was inserted"
    )]
    Foreign {
        position: usize,
        leaf_index: u64,
        field: &'static str,
        found: String,
        expected: String,
    },
    #[error("entry {position} (leaf {leaf_index}): {detail}")]
    BadEntry {
        position: usize,
        leaf_index: u64,
        detail: String,
    },
    #[error(
        "the receipt declares {declared} entries for the request (entry_count_for_request) but \
         holds {found}: an entry was removed or added"
    )]
    EntryCount { declared: u64, found: usize },
    #[error(
        "entry {position} (leaf {leaf_index}) has request_seq {found} where {position} is due: \
         an entry of the request was removed or added"
    )]
    Sequence {
        position: usize,
        leaf_index: u64,
        found: String,
    },
    #[error(
        "the first entry (leaf {leaf_index}) records the event {found:?}, not \"received\": a \
         receipt starts where the request was received (was that entry removed?)"
    )]
    FirstNotReceived { leaf_index: u64, found: String },
    #[error(
        "no entry records the event \"completed\": the receipt does not prove a completed erasure \
         (was that entry removed?)"
    )]
    NotCompleted,
    #[error("the export has no checkpoint (the log was empty when it was made): nothing to verify")]
    NoCheckpoint,
    #[error(
        "the export header says tree size {header}, but its checkpoint is of tree size {checkpoint}"
    )]
    SizeMismatch { header: u64, checkpoint: u64 },
    #[error("the export's range {start}..{end} does not lie within its tree of size {size}")]
    RangeOutOfBounds { start: u64, end: u64, size: u64 },
    #[error("line {line}: expected leaf {expected}, found leaf {found}: a line is {why}")]
    LineOrder {
        line: u64,
        expected: u64,
        found: u64,
        why: &'static str,
    },
    #[error(
        "the export is truncated: it ends after line {lines}, but the header and leaves \
         {start}..{end} need {needed} lines"
    )]
    Truncated {
        lines: u64,
        start: u64,
        end: u64,
        needed: u64,
    },
    #[error("line {line}: unexpected line after the last leaf of the range {start}..{end}")]
    ExtraLine { line: u64, start: u64, end: u64 },
    #[error("range proof: {0}")]
    RangeProof(#[from] MerkleError),
    #[error(
        "the export's leaves {start}..{end} and its range proof lead to root {computed}, but the \
         checkpoint's root is {expected}: a leaf or a proof hash was altered, or the proof is for \
         another tree"
    )]
    ExportRoot {
        start: u64,
        end: u64,
        computed: String,
        expected: String,
    },
    #[error("reading the export failed: {0}")]
    Io(String),
}

/// Verifies a receipt (see the module documentation) with the verifier key.
pub fn verify_receipt(json: &str, vkey: &str) -> Result<ReceiptSummary, VerifyError> {
    let vkey = VerifierKey::parse(vkey)?;
    let value: Value = serde_json::from_str(json).map_err(|e| VerifyError::NotJson {
        what: "the receipt".into(),
        detail: e.to_string(),
    })?;
    check_format(&value, "the receipt", RECEIPT_FORMAT)?;
    let receipt: Receipt = from_value(value, "the receipt")?;
    let cp = checkpoint::open_with(&receipt.checkpoint, &vkey)?;
    if receipt.entries.is_empty() {
        return Err(VerifyError::NoEntries);
    }

    let mut previous: Option<u64> = None;
    let mut with_seq = false;
    let mut events = Vec::with_capacity(receipt.entries.len());
    for (position, entry) in receipt.entries.iter().enumerate() {
        let leaf_index = entry.leaf_index;
        let bad = |detail: String| VerifyError::BadEntry {
            position,
            leaf_index,
            detail,
        };
        if let Some(previous) = previous
            && leaf_index <= previous
        {
            return Err(VerifyError::OutOfOrder {
                position,
                leaf_index,
                previous,
            });
        }
        previous = Some(leaf_index);
        if leaf_index >= cp.size {
            return Err(VerifyError::BeyondCheckpoint {
                position,
                leaf_index,
                size: cp.size,
            });
        }
        let proof = decode_hashes(&entry.inclusion_proof).map_err(|i| {
            bad(format!(
                "inclusion proof hash {i} is not a base64 SHA-256 hash"
            ))
        })?;
        let leaf_hash = merkle::leaf_hash(entry.leaf.as_bytes());
        merkle::verify_inclusion(&leaf_hash, leaf_index, cp.size, &proof, &cp.root).map_err(
            |source| VerifyError::Inclusion {
                position,
                leaf_index,
                size: cp.size,
                source,
            },
        )?;

        // The leaf is proven to be in the log; now, is it one of this request's?
        if !entry.leaf.trim_start().starts_with('{') {
            return Err(bad("the leaf is not a JSON object".into()));
        }
        let leaf: LeafView = serde_json::from_str(&entry.leaf)
            .map_err(|e| bad(format!("the leaf is not a valid JSON object: {e}")))?;
        for (field, got, want) in [
            ("request_id", &leaf.request_id, &receipt.request_id),
            ("subject_ref", &leaf.subject_ref, &receipt.subject_ref),
        ] {
            let got = string_field(got, field).map_err(bad)?;
            if got != *want {
                return Err(VerifyError::Foreign {
                    position,
                    leaf_index,
                    field,
                    found: got.to_string(),
                    expected: want.clone(),
                });
            }
        }
        let event = string_field(&leaf.event, "event").map_err(bad)?;
        let at = string_field(&leaf.at, "at").map_err(bad)?;
        if position == 0 {
            with_seq = leaf.request_seq.is_some();
        }
        match (&leaf.request_seq, with_seq) {
            (None, false) => {}
            (Some(seq), true) if seq.as_u64() == Some(position as u64) => {}
            (Some(seq), true) => {
                return Err(VerifyError::Sequence {
                    position,
                    leaf_index,
                    found: seq.to_string(),
                });
            }
            (None, true) => {
                return Err(bad(
                    "the leaf has no request_seq, while entry 0 has one".into()
                ));
            }
            (Some(_), false) => {
                return Err(bad(
                    "the leaf has a request_seq, while entry 0 has none".into()
                ));
            }
        }
        events.push((event.to_string(), at.to_string()));
    }

    if receipt.entry_count_for_request != receipt.entries.len() as u64 {
        return Err(VerifyError::EntryCount {
            declared: receipt.entry_count_for_request,
            found: receipt.entries.len(),
        });
    }
    let (first_event, received_at) = &events[0];
    if first_event != "received" {
        return Err(VerifyError::FirstNotReceived {
            leaf_index: receipt.entries[0].leaf_index,
            found: first_event.clone(),
        });
    }
    let completed_at = events
        .iter()
        .find(|(event, _)| event == "completed")
        .map(|(_, at)| at.clone())
        .ok_or(VerifyError::NotCompleted)?;
    Ok(ReceiptSummary {
        request_id: receipt.request_id,
        subject_ref: receipt.subject_ref,
        entries: receipt.entries.len(),
        received_at: received_at.clone(),
        completed_at,
        checkpoint: cp,
    })
}

/// The fields of a leaf that a receipt's verification reads. Deserializing into a struct (not a
/// map) refuses a leaf that names one of them twice.
#[derive(Deserialize)]
struct LeafView {
    #[serde(default)]
    request_id: Option<Value>,
    #[serde(default)]
    subject_ref: Option<Value>,
    #[serde(default)]
    event: Option<Value>,
    #[serde(default)]
    at: Option<Value>,
    #[serde(default)]
    request_seq: Option<Value>,
}

fn string_field<'a>(value: &'a Option<Value>, field: &str) -> Result<&'a str, String> {
    match value {
        Some(Value::String(s)) => Ok(s),
        None => Err(format!("the leaf has no {field}")),
        Some(other) => Err(format!("the leaf's {field} is not a string: {other}")),
    }
}

/// Verifies a JSON Lines export (see the module documentation) with the verifier key.
pub fn verify_export(jsonl: &str, vkey: &str) -> Result<ExportSummary, VerifyError> {
    verify_export_reader(jsonl.as_bytes(), vkey)
}

/// [`verify_export`] reading line by line, in constant memory (for exports of millions of
/// entries).
pub fn verify_export_reader<R: BufRead>(
    mut reader: R,
    vkey: &str,
) -> Result<ExportSummary, VerifyError> {
    let vkey = VerifierKey::parse(vkey)?;
    let mut lines = Lines {
        reader: &mut reader,
        buf: String::new(),
        number: 0,
    };
    let Some((_, header)) = lines.next()? else {
        return Err(VerifyError::Malformed {
            what: "the export".into(),
            detail: "it is empty".into(),
        });
    };
    let value: Value = serde_json::from_str(header).map_err(|e| VerifyError::NotJson {
        what: "the export header (line 1)".into(),
        detail: e.to_string(),
    })?;
    check_format(&value, "the export header (line 1)", EXPORT_FORMAT)?;
    let header: ExportHeader = from_value(value, "the export header (line 1)")?;
    let note = header
        .checkpoint
        .as_deref()
        .ok_or(VerifyError::NoCheckpoint)?;
    let cp = checkpoint::open_with(note, &vkey)?;
    let (start, end, size) = (header.start, header.end, header.size);
    if size != cp.size {
        return Err(VerifyError::SizeMismatch {
            header: size,
            checkpoint: cp.size,
        });
    }
    if start > end || end > size {
        return Err(VerifyError::RangeOutOfBounds { start, end, size });
    }
    let proof = decode_hashes(&header.range_proof).map_err(|i| VerifyError::Malformed {
        what: "the export header (line 1)".into(),
        detail: format!("range_proof[{i}] is not a base64 SHA-256 hash"),
    })?;

    let mut expected = start;
    let root = merkle::root_from_range_with(start, end, size, &proof, || {
        let number = lines.number;
        let Some((line, text)) = lines.next()? else {
            return Err(VerifyError::Truncated {
                lines: number,
                start,
                end,
                needed: 1 + end - start,
            });
        };
        if text.trim().is_empty() {
            return Err(VerifyError::Malformed {
                what: format!("line {line}"),
                detail: format!("it is empty where leaf {expected} is due"),
            });
        }
        let parsed: ExportLine = serde_json::from_str(text).map_err(|e| {
            let hint = if e.is_eof() {
                " (the file seems truncated)"
            } else {
                ""
            };
            VerifyError::NotJson {
                what: format!("line {line}"),
                detail: format!("{e}{hint}"),
            }
        })?;
        if parsed.leaf_index != expected {
            return Err(VerifyError::LineOrder {
                line,
                expected,
                found: parsed.leaf_index,
                why: if parsed.leaf_index < expected {
                    "duplicated or out of order"
                } else {
                    "missing or out of order"
                },
            });
        }
        expected += 1;
        Ok(merkle::leaf_hash(parsed.leaf.as_bytes()))
    })?;
    debug_assert_eq!(expected, end);
    while let Some((line, text)) = lines.next()? {
        if !text.trim().is_empty() {
            return Err(VerifyError::ExtraLine { line, start, end });
        }
    }
    if root != cp.root {
        return Err(VerifyError::ExportRoot {
            start,
            end,
            computed: hex::encode(root),
            expected: hex::encode(cp.root),
        });
    }
    Ok(ExportSummary {
        start,
        end,
        size,
        checkpoint: cp,
    })
}

/// Lines of a reader, one buffer reused, line endings (`\n` or `\r\n`) removed.
struct Lines<'a, R> {
    reader: &'a mut R,
    buf: String,
    /// The number of the last line read, from 1.
    number: u64,
}

impl<R: BufRead> Lines<'_, R> {
    /// The next line and its number.
    fn next(&mut self) -> Result<Option<(u64, &str)>, VerifyError> {
        self.buf.clear();
        let read = self
            .reader
            .read_line(&mut self.buf)
            .map_err(|e| VerifyError::Io(format!("line {}: {e}", self.number + 1)))?;
        if read == 0 {
            return Ok(None);
        }
        self.number += 1;
        let line = self.buf.strip_suffix('\n').unwrap_or(&self.buf);
        Ok(Some((self.number, line.strip_suffix('\r').unwrap_or(line))))
    }
}

fn check_format(
    value: &Value,
    what: &'static str,
    expected: &'static str,
) -> Result<(), VerifyError> {
    let found = match value.get("format") {
        Some(Value::String(s)) if s == expected => return Ok(()),
        Some(other) => other.to_string(),
        None if value.is_object() => "(none)".to_string(),
        None => {
            return Err(VerifyError::Malformed {
                what: what.into(),
                detail: "it is not a JSON object".into(),
            });
        }
    };
    Err(VerifyError::Format {
        what,
        expected,
        found,
    })
}

fn from_value<T: DeserializeOwned>(value: Value, what: &str) -> Result<T, VerifyError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let detail = if path == "." {
            e.into_inner().to_string()
        } else {
            format!("{path}: {}", e.into_inner())
        };
        VerifyError::Malformed {
            what: what.into(),
            detail,
        }
    })
}

/// Decodes base64 hashes; the error is the position of the first bad one.
fn decode_hashes(texts: &[String]) -> Result<Vec<Hash>, usize> {
    texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            STANDARD
                .decode(text)
                .ok()
                .and_then(|bytes| Hash::try_from(bytes).ok())
                .ok_or(i)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Signer;
    use serde_json::json;

    fn leaf(request: &str, event: &str, i: usize) -> String {
        json!({"request_id": request, "subject_ref": format!("k1:{request}"), "event": event,
               "at": format!("2026-01-01T00:00:{i:02}Z")})
        .to_string()
    }

    /// A small log: request "a" received, request "b" received, "a" completed.
    fn setup() -> (Signer, Vec<String>, Vec<Hash>) {
        let signer = Signer::new("erasure-audit", &[3; 32]);
        let leaves = vec![
            leaf("a", "received", 0),
            leaf("b", "received", 1),
            leaf("a", "completed", 2),
        ];
        let hashes = leaves
            .iter()
            .map(|l| merkle::leaf_hash(l.as_bytes()))
            .collect();
        (signer, leaves, hashes)
    }

    fn receipt(signer: &Signer, leaves: &[String], hashes: &[Hash], indexes: &[usize]) -> Value {
        let note = signer.sign(&Checkpoint {
            origin: "test".into(),
            size: hashes.len() as u64,
            root: merkle::root(hashes),
        });
        let entries: Vec<Value> = indexes
            .iter()
            .map(|&i| {
                let proof: Vec<String> = merkle::inclusion_proof(hashes, i)
                    .iter()
                    .map(|h| STANDARD.encode(h))
                    .collect();
                json!({"leaf_index": i, "leaf": leaves[i], "inclusion_proof": proof})
            })
            .collect();
        json!({"format": RECEIPT_FORMAT, "request_id": "a", "subject_ref": "k1:a",
               "entry_count_for_request": entries.len(), "checkpoint": note, "entries": entries})
    }

    #[test]
    fn a_receipt_verifies_and_says_what_it_shows() {
        let (signer, leaves, hashes) = setup();
        let r = receipt(&signer, &leaves, &hashes, &[0, 2]);
        let summary = verify_receipt(&r.to_string(), &signer.verifier_key()).unwrap();
        assert_eq!(summary.entries, 2);
        assert_eq!(summary.checkpoint.size, 3);
        assert_eq!(summary.received_at, "2026-01-01T00:00:00Z");
        assert_eq!(summary.completed_at, "2026-01-01T00:00:02Z");
        assert!(
            summary
                .to_string()
                .starts_with("request a (subject k1:a): 2 entries")
        );
    }

    #[test]
    fn receipt_shape_errors_are_precise() {
        let (signer, leaves, hashes) = setup();
        let vkey = signer.verifier_key();
        let r = receipt(&signer, &leaves, &hashes, &[0, 2]);
        let e = verify_receipt("{", &vkey).unwrap_err();
        assert!(
            e.to_string().starts_with("the receipt is not valid JSON"),
            "{e}"
        );
        let mut bad = r.clone();
        bad["format"] = json!("erasure-receipt/v9");
        let e = verify_receipt(&bad.to_string(), &vkey).unwrap_err();
        assert!(matches!(e, VerifyError::Format { .. }), "{e}");
        let mut bad = r.clone();
        bad["entries"][1]["leaf_index"] = json!("two");
        let e = verify_receipt(&bad.to_string(), &vkey).unwrap_err();
        assert!(e.to_string().contains("entries[1].leaf_index"), "{e}");
        let mut bad = r.clone();
        bad["entries"][1]["inclusion_proof"][0] = json!("AAAA");
        let e = verify_receipt(&bad.to_string(), &vkey).unwrap_err();
        assert_eq!(
            e.to_string(),
            "entry 1 (leaf 2): inclusion proof hash 0 is not a base64 SHA-256 hash"
        );
        let mut bad = r.clone();
        bad["entries"] = json!([]);
        bad["entry_count_for_request"] = json!(0);
        assert_eq!(
            verify_receipt(&bad.to_string(), &vkey).unwrap_err(),
            VerifyError::NoEntries
        );
        let e = verify_receipt(&r.to_string(), "not a key").unwrap_err();
        assert!(
            matches!(
                e,
                VerifyError::Checkpoint(CheckpointError::BadVerifierKey(_))
            ),
            "{e}"
        );
    }

    #[test]
    fn request_seq_when_present_must_be_contiguous() {
        let signer = Signer::new("erasure-audit", &[3; 32]);
        let mk = |event: &str, seq: u64| {
            json!({"request_id": "a", "subject_ref": "k1:a", "event": event, "at": "t", "request_seq": seq})
                .to_string()
        };
        let leaves = vec![mk("received", 0), mk("deleted", 1), mk("completed", 2)];
        let hashes: Vec<Hash> = leaves
            .iter()
            .map(|l| merkle::leaf_hash(l.as_bytes()))
            .collect();
        let vkey = signer.verifier_key();
        let full = receipt(&signer, &leaves, &hashes, &[0, 1, 2]);
        verify_receipt(&full.to_string(), &vkey).unwrap();
        // Removing the middle entry and fixing the count is caught by the sequence.
        let cut = receipt(&signer, &leaves, &hashes, &[0, 2]);
        let e = verify_receipt(&cut.to_string(), &vkey).unwrap_err();
        assert!(
            matches!(
                e,
                VerifyError::Sequence {
                    position: 1,
                    leaf_index: 2,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn a_leaf_naming_a_field_twice_is_refused() {
        let signer = Signer::new("erasure-audit", &[3; 32]);
        let leaves = vec![
            r#"{"request_id":"a","subject_ref":"k1:a","event":"received","at":"t"}"#.to_string(),
            r#"{"request_id":"a","subject_ref":"k1:a","event":"completed","at":"t","request_id":"b"}"#.to_string(),
        ];
        let hashes: Vec<Hash> = leaves
            .iter()
            .map(|l| merkle::leaf_hash(l.as_bytes()))
            .collect();
        let r = receipt(&signer, &leaves, &hashes, &[0, 1]);
        let e = verify_receipt(&r.to_string(), &signer.verifier_key()).unwrap_err();
        assert!(
            e.to_string().contains("duplicate field `request_id`"),
            "{e}"
        );
    }

    #[test]
    fn an_export_with_an_empty_range_verifies() {
        let (signer, _, hashes) = setup();
        let note = signer.sign(&Checkpoint {
            origin: "test".into(),
            size: 3,
            root: merkle::root(&hashes),
        });
        let proof: Vec<String> = merkle::range_proof(&hashes, 1, 1)
            .iter()
            .map(|h| STANDARD.encode(h))
            .collect();
        let header = json!({"format": EXPORT_FORMAT, "start": 1, "end": 1, "size": 3, "checkpoint": note, "range_proof": proof});
        let summary = verify_export(&format!("{header}\n"), &signer.verifier_key()).unwrap();
        assert_eq!((summary.start, summary.end, summary.size), (1, 1, 3));
        let empty_log = json!({"format": EXPORT_FORMAT, "start": 0, "end": 0, "size": 0, "checkpoint": null, "range_proof": []});
        assert_eq!(
            verify_export(&format!("{empty_log}\n"), &signer.verifier_key()).unwrap_err(),
            VerifyError::NoCheckpoint
        );
    }
}

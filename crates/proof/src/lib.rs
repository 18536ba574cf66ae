//! erasure-proof: the proofs of the erasure service that an auditor checks on their own machine.
//!
//! - [`merkle`]: the RFC 9162 Merkle tree, inclusion, consistency and range proofs (pure);
//! - [`checkpoint`]: signed checkpoints (Ed25519 notes) and the verifier key;
//! - [`receipt`]: the receipt document (`erasure-receipt/v1`) assembled from its parts;
//! - [`verify`]: offline verification of receipts and exports;
//! - [`cli`]: the `verify` command, shared by `erasure audit verify` and `erasure-verify`.
//!
//! This crate may compute hashes, sign and verify, and read the files it is given. It never
//! depends on a database, a web framework, an async runtime or an HTTP client (`tests/it/layers.rs`
//! in the service checks it), never reads a secret from the environment, and holds no identifier:
//! only pseudonyms and the audit log's own entries.

pub mod checkpoint;
pub mod cli;
pub mod merkle;
pub mod receipt;
pub mod verify;

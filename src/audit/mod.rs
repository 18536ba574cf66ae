//! Proof of erasure without personal data: pseudonyms, sealing of identifiers while a request is
//! open, the Merkle audit log with signed checkpoints, receipts, and their offline verification.
//!
//! The pure proofs (the Merkle tree, checkpoints, the receipt document and the verifier) are the
//! crate `erasure-proof` (`crates/proof`), re-exported here as `audit::merkle`,
//! `audit::checkpoint` and `audit::verify`, so that an auditor can build the verifier alone.
//!
//! Its modules never write SQL (`store::tree` and `store::audit` keep the tables) and never
//! hold an identifier in clear beyond the call that pseudonymises or seals it.

pub use erasure_proof::{checkpoint, merkle, verify};

pub mod epochs;
pub mod log;
pub mod pseudonym;
pub mod receipt;
pub mod report;
pub mod retention;
pub mod seal;
pub mod tree;

//! Proof of erasure without personal data: pseudonyms, sealing of identifiers while a request is
//! open, the Merkle audit log with signed checkpoints, receipts, and their offline verification.
//!
//! Its modules never write SQL (`store::tree` and `store::audit` keep the tables) and never
//! hold an identifier in clear beyond the call that pseudonymises or seals it.

pub mod checkpoint;
pub mod epochs;
pub mod log;
pub mod merkle;
pub mod pseudonym;
pub mod receipt;
pub mod report;
pub mod retention;
pub mod seal;
pub mod tree;
pub mod verify;

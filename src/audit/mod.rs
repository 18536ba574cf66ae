//! Proof of erasure without personal data. This part holds the pseudonyms and the sealing of
//! identifiers while a request is open; the Merkle log and receipts build on it.

pub mod pseudonym;
pub mod seal;

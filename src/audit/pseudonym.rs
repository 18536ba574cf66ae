//! Pseudonyms: `k<version>:` + hex HMAC-SHA-256(key, scope ":" normalised id).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Key32;
use crate::domain::Scope;

#[derive(Debug, Clone)]
pub struct Pseudonymizer {
    key: Key32,
    version: u32,
}

impl Pseudonymizer {
    pub fn new(key: Key32, version: u32) -> Self {
        Self { key, version }
    }

    /// The pseudonym of a target. The id is normalised (trimmed) first.
    pub fn subject_ref(&self, scope: Scope, target_id: &str) -> String {
        format!(
            "k{}:{}",
            self.version,
            hex::encode(self.mac(&[scope.as_str().as_bytes(), b":", target_id.trim().as_bytes()]))
        )
    }

    /// Every pseudonym the target may have been recorded under (the current key version first;
    /// older versions follow once keys rotate). Look-ups compare against all of them.
    pub fn subject_refs(&self, scope: Scope, target_id: &str) -> Vec<String> {
        vec![self.subject_ref(scope, target_id)]
    }

    /// The pseudonym of one of an account's bank references (`kind` is "iban", "number" or
    /// "reference"), normalised (spaces removed, upper case) so that the same account listed again
    /// by a synchronisation, under a new upstream id, is recognised.
    pub fn account_ref(&self, kind: &str, value: &str) -> String {
        let normalised: String = value
            .chars()
            .filter(|c| !c.is_whitespace())
            .flat_map(char::to_uppercase)
            .collect();
        format!(
            "k{}:{}",
            self.version,
            hex::encode(self.mac(&[b"account-", kind.as_bytes(), b":", normalised.as_bytes()]))
        )
    }

    /// Every pseudonym a bank reference may have been recorded under (see `subject_refs`).
    pub fn account_refs(&self, kind: &str, value: &str) -> Vec<String> {
        vec![self.account_ref(kind, value)]
    }

    /// A keyed digest of arbitrary bytes (used for idempotency bodies, which may hold ids).
    pub fn digest(&self, bytes: &[u8]) -> Vec<u8> {
        self.mac(&[b"digest:", bytes]).to_vec()
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.key.bytes()).expect("any key length");
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_are_keyed_versioned_and_scoped() {
        let p = Pseudonymizer::new(Key32::random(), 3);
        let a = p.subject_ref(Scope::User, "123");
        assert!(a.starts_with("k3:"));
        assert_eq!(a.len(), 3 + 64);
        assert_eq!(a, p.subject_ref(Scope::User, " 123 "));
        assert_ne!(a, p.subject_ref(Scope::Account, "123"));
        assert_ne!(
            a,
            Pseudonymizer::new(Key32::random(), 3).subject_ref(Scope::User, "123")
        );
    }
}

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

//! Pseudonyms: `k<version>:` + hex HMAC-SHA-256(key, scope ":" normalised id).
//!
//! Keys rotate: new pseudonyms use the current key and its version; the older keys (with their
//! versions) stay so that look-ups find what was recorded under them (`subject_refs`,
//! `account_refs`, `digests`).
//!
//! Never stores, logs or returns the identifier it is given; only the pseudonym leaves.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::domain::Scope;
use crate::secrets::Key32;

#[derive(Debug, Clone)]
pub struct Pseudonymizer {
    key: Key32,
    version: u32,
    /// Older key versions, newest first.
    old: Vec<Pseudonymizer>,
}

impl Pseudonymizer {
    pub fn new(key: Key32, version: u32) -> Self {
        Self {
            key,
            version,
            old: Vec::new(),
        }
    }

    /// With older key versions still usable for look-ups (given as `(version, key)`).
    pub fn with_old_keys(mut self, old: &[(u32, Key32)]) -> Self {
        let mut old: Vec<(u32, Key32)> = old.to_vec();
        old.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
        self.old = old
            .into_iter()
            .map(|(version, key)| Pseudonymizer::new(key, version))
            .collect();
        self
    }

    /// The current key first, then the older ones.
    fn versions(&self) -> impl Iterator<Item = &Pseudonymizer> {
        std::iter::once(self).chain(&self.old)
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
        self.versions()
            .map(|p| p.subject_ref(scope, target_id))
            .collect()
    }

    /// The pseudonyms of the target under the older key versions only (none until keys rotate).
    pub fn older_subject_refs(&self, scope: Scope, target_id: &str) -> Vec<String> {
        self.old
            .iter()
            .map(|p| p.subject_ref(scope, target_id))
            .collect()
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
        self.versions()
            .map(|p| p.account_ref(kind, value))
            .collect()
    }

    /// A keyed digest of arbitrary bytes (used for idempotency bodies, which may hold ids).
    pub fn digest(&self, bytes: &[u8]) -> Vec<u8> {
        self.mac(&[b"digest:", bytes]).to_vec()
    }

    /// The digest of `bytes` under every key version, current first (see `subject_refs`).
    pub fn digests(&self, bytes: &[u8]) -> Vec<Vec<u8>> {
        self.versions().map(|p| p.digest(bytes)).collect()
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

    #[test]
    fn old_key_versions_stay_usable_for_look_ups() {
        let (k1, k2) = (Key32::random(), Key32::random());
        let before = Pseudonymizer::new(k1.clone(), 1);
        let after = Pseudonymizer::new(k2, 2).with_old_keys(&[(1, k1)]);
        let recorded = before.subject_ref(Scope::User, "123");
        let refs = after.subject_refs(Scope::User, "123");
        assert_eq!(refs.len(), 2);
        assert!(refs[0].starts_with("k2:"), "current first");
        assert_eq!(refs[1], recorded);
        assert_eq!(after.subject_ref(Scope::User, "123"), refs[0]);
        assert_eq!(
            after.account_refs("iban", "fr76 1234")[1],
            before.account_ref("iban", "FR761234")
        );
        assert_eq!(after.digests(b"{}")[1], before.digest(b"{}"));
        assert_eq!(
            before.subject_refs(Scope::User, "123"),
            vec![recorded.clone()]
        );
        assert_eq!(after.older_subject_refs(Scope::User, "123"), vec![recorded]);
        assert!(before.older_subject_refs(Scope::User, "123").is_empty());
    }
}

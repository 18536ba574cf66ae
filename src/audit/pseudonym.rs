//! Pseudonyms: `k<version>:` + hex HMAC-SHA-256(key, scope ":" normalised id).
//!
//! Keys rotate: new pseudonyms use the current key and its version (the current pseudonym epoch,
//! `audit::epochs`); the keys of the other live epochs stay so that look-ups find what was
//! recorded under them (`subject_refs`, `account_refs`, `digests`), until retention destroys them.
//!
//! Never stores, logs or returns the identifier it is given; only the pseudonym leaves.

use std::sync::{Arc, RwLock};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::domain::Scope;
use crate::secrets::Key32;

/// The keys in use, shared by every clone: `replace` swaps them for all (the pseudonym epochs are
/// reloaded from the database, `audit::epochs`), and a key dropped from the ring is zeroed once
/// the last computation that took it ends.
#[derive(Debug, Clone)]
pub struct Pseudonymizer {
    ring: Arc<RwLock<Arc<Ring>>>,
}

#[derive(Debug)]
struct Ring {
    current: Versioned,
    /// Older key versions, newest first.
    old: Vec<Versioned>,
}

#[derive(Debug)]
struct Versioned {
    key: Key32,
    version: u32,
}

impl Ring {
    fn new(current: (u32, Key32), old: &[(u32, Key32)]) -> Self {
        let mut old: Vec<(u32, Key32)> = old.to_vec();
        old.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
        Self {
            current: Versioned {
                key: current.1,
                version: current.0,
            },
            old: old
                .into_iter()
                .map(|(version, key)| Versioned { key, version })
                .collect(),
        }
    }

    /// The current key first, then the older ones.
    fn versions(&self) -> impl Iterator<Item = &Versioned> {
        std::iter::once(&self.current).chain(&self.old)
    }
}

impl Pseudonymizer {
    pub fn new(key: Key32, version: u32) -> Self {
        Self {
            ring: Arc::new(RwLock::new(Arc::new(Ring::new((version, key), &[])))),
        }
    }

    /// With older key versions still usable for look-ups (given as `(version, key)`).
    pub fn with_old_keys(self, old: &[(u32, Key32)]) -> Self {
        let current = {
            let ring = self.ring();
            (ring.current.version, ring.current.key.clone())
        };
        self.replace(current, old);
        self
    }

    /// Makes `current` the key of new pseudonyms and `old` the only others, in every clone.
    pub fn replace(&self, current: (u32, Key32), old: &[(u32, Key32)]) {
        let ring = Arc::new(Ring::new(current, old));
        *self.ring.write().unwrap_or_else(|e| e.into_inner()) = ring;
    }

    /// The version of new pseudonyms.
    pub fn current_version(&self) -> u32 {
        self.ring().current.version
    }

    /// Every key version in use, current first.
    pub fn versions(&self) -> Vec<u32> {
        self.ring().versions().map(|v| v.version).collect()
    }

    fn ring(&self) -> Arc<Ring> {
        self.ring.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The pseudonym of a target. The id is normalised (trimmed) first.
    pub fn subject_ref(&self, scope: Scope, target_id: &str) -> String {
        self.ring().current.subject_ref(scope, target_id)
    }

    /// Every pseudonym the target may have been recorded under (the current key version first;
    /// older versions follow once keys rotate). Look-ups compare against all of them.
    pub fn subject_refs(&self, scope: Scope, target_id: &str) -> Vec<String> {
        self.ring()
            .versions()
            .map(|p| p.subject_ref(scope, target_id))
            .collect()
    }

    /// The pseudonyms of the target under the older key versions only (none until keys rotate).
    pub fn older_subject_refs(&self, scope: Scope, target_id: &str) -> Vec<String> {
        self.ring()
            .old
            .iter()
            .map(|p| p.subject_ref(scope, target_id))
            .collect()
    }

    /// The pseudonym of one of an account's bank references (`kind` is "iban", "number" or
    /// "reference"), normalised (spaces removed, upper case) so that the same account listed again
    /// by a synchronisation, under a new upstream id, is recognised.
    pub fn account_ref(&self, kind: &str, value: &str) -> String {
        self.ring().current.account_ref(kind, value)
    }

    /// Every pseudonym a bank reference may have been recorded under (see `subject_refs`).
    pub fn account_refs(&self, kind: &str, value: &str) -> Vec<String> {
        self.ring()
            .versions()
            .map(|p| p.account_ref(kind, value))
            .collect()
    }

    /// A keyed digest of arbitrary bytes (used for idempotency bodies, which may hold ids).
    pub fn digest(&self, bytes: &[u8]) -> Vec<u8> {
        self.ring().current.digest(bytes)
    }

    /// The digest of `bytes` under every key version, current first (see `subject_refs`).
    pub fn digests(&self, bytes: &[u8]) -> Vec<Vec<u8>> {
        self.ring().versions().map(|p| p.digest(bytes)).collect()
    }
}

impl Versioned {
    fn subject_ref(&self, scope: Scope, target_id: &str) -> String {
        format!(
            "k{}:{}",
            self.version,
            hex::encode(self.mac(&[scope.as_str().as_bytes(), b":", target_id.trim().as_bytes()]))
        )
    }

    fn account_ref(&self, kind: &str, value: &str) -> String {
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

    fn digest(&self, bytes: &[u8]) -> Vec<u8> {
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

    #[test]
    fn replacing_the_keys_changes_every_clone_and_forgets_dropped_versions() {
        let (k1, k2) = (Key32::random(), Key32::random());
        let p = Pseudonymizer::new(k1.clone(), 1);
        let clone = p.clone();
        let recorded = p.subject_ref(Scope::User, "123");
        p.replace((2, k2.clone()), &[(1, k1)]);
        assert_eq!(clone.current_version(), 2);
        assert_eq!(clone.versions(), vec![2, 1]);
        assert_eq!(clone.subject_refs(Scope::User, "123")[1], recorded);
        p.replace((2, k2), &[]);
        assert_eq!(clone.versions(), vec![2]);
        assert!(!clone.subject_refs(Scope::User, "123").contains(&recorded));
    }
}

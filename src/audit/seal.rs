//! Identifiers of an open request are kept sealed: AES-256-GCM with `ERASURE_DATA_KEY`, a random
//! 96-bit nonce per seal, and the request id as associated data (a sealed value cannot be moved to
//! another request). Stored as nonce || ciphertext.
//!
//! Never logs the plaintext or the key; a value that does not open is an error, never a guess.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use uuid::Uuid;

use crate::secrets::Key32;

#[derive(Clone)]
pub struct Sealer {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(<redacted>)")
    }
}

impl Sealer {
    pub fn new(key: &Key32) -> Self {
        Self {
            cipher: Aes256Gcm::new(key.bytes().into()),
        }
    }

    pub fn seal(&self, request_id: Uuid, plaintext: &[u8]) -> Vec<u8> {
        self.seal_with(request_id.as_bytes(), plaintext)
    }

    pub fn open(&self, request_id: Uuid, sealed: &[u8]) -> anyhow::Result<Vec<u8>> {
        self.open_with(request_id.as_bytes(), sealed)
    }

    /// Seals with any associated data (what the sealed value belongs to, e.g. a pseudonym epoch).
    pub fn seal_with(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let nonce: [u8; 12] = rand::random();
        let mut out = nonce.to_vec();
        let ciphertext = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("AES-GCM encryption of a small value cannot fail");
        out.extend_from_slice(&ciphertext);
        out
    }

    /// Opens what `seal_with` sealed with the same associated data.
    pub fn open_with(&self, aad: &[u8], sealed: &[u8]) -> anyhow::Result<Vec<u8>> {
        if sealed.len() < 12 + 16 {
            anyhow::bail!("sealed value too short");
        }
        let (nonce, ciphertext) = sealed.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().expect("split at 12");
        self.cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| anyhow::anyhow!("sealed value does not open with ERASURE_DATA_KEY"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_open_only_for_their_request() {
        let sealer = Sealer::new(&Key32::random());
        let id = Uuid::new_v4();
        let a = sealer.seal(id, b"12345");
        let b = sealer.seal(id, b"12345");
        assert_ne!(a, b, "nonces must differ");
        assert_eq!(sealer.open(id, &a).unwrap(), b"12345");
        assert!(sealer.open(Uuid::new_v4(), &a).is_err());
        assert!(Sealer::new(&Key32::random()).open(id, &a).is_err());
        let mut flipped = a.clone();
        flipped[20] ^= 1;
        assert!(sealer.open(id, &flipped).is_err());
    }
}

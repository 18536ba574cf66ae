//! Signed checkpoints of the audit log, in the C2SP formats:
//!
//! - `tlog-checkpoint` body: `<origin>\n<tree size, decimal>\n<base64 root hash>\n` (extension
//!   lines after the root are accepted when opening and ignored; none are written);
//! - `signed-note`: the body, a blank line, then one line per signature,
//!   `— <key name> <base64(key id (4 bytes) || Ed25519 signature (64 bytes))>\n` (an em dash,
//!   U+2014, and a space). The signature covers the exact body bytes, final newline included;
//! - key id: the first 4 bytes of `SHA-256(key name || "\n" || 0x01 || public key)`;
//! - verifier key (`vkey`, what `erasure audit public-key` prints):
//!   `<key name>+<key id, 8 hex digits>+<base64(0x01 || 32-byte public key)>`.
//!
//! Such notes can be checked by other tools of that ecosystem (Go's `golang.org/x/mod/sumdb/note`).
//!
//! It never signs anything but a checkpoint body of this form.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use super::merkle::Hash;

/// The algorithm byte of Ed25519 in signed notes.
const ALG_ED25519: u8 = 0x01;
/// How signature lines start.
const SIG_PREFIX: &str = "— ";

/// What a checkpoint says: the log (`origin`), its size and its root hash.
#[derive(Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

impl fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checkpoint")
            .field("origin", &self.origin)
            .field("size", &self.size)
            .field("root", &hex::encode(self.root))
            .finish()
    }
}

impl Checkpoint {
    /// The checkpoint body (the signed text).
    ///
    /// # Panics
    /// When the origin is empty or holds a line break or another control character.
    pub fn body(&self) -> String {
        assert!(
            !self.origin.is_empty() && !self.origin.chars().any(char::is_control),
            "a checkpoint origin is one non-empty line"
        );
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        )
    }

    /// Parses a checkpoint body (the text of a note, without its signatures).
    pub fn parse_body(text: &str) -> Result<Checkpoint, CheckpointError> {
        let bad = |why: String| CheckpointError::MalformedBody(why);
        let Some(text) = text.strip_suffix('\n') else {
            return Err(bad("it does not end with a newline".into()));
        };
        let mut lines = text.split('\n');
        let origin = lines.next().unwrap_or_default();
        if origin.is_empty() {
            return Err(bad("the origin line (line 1) is empty".into()));
        }
        let size = lines
            .next()
            .ok_or_else(|| bad("the tree size line (line 2) is missing".into()))?;
        let size = parse_size(size).ok_or_else(|| {
            bad(format!(
                "the tree size (line 2) {size:?} is not a decimal number without leading zeros"
            ))
        })?;
        let root = lines
            .next()
            .ok_or_else(|| bad("the root hash line (line 3) is missing".into()))?;
        let root: Hash = STANDARD
            .decode(root)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                bad(format!(
                    "the root hash (line 3) {root:?} is not a base64 SHA-256 hash"
                ))
            })?;
        for (i, extension) in lines.enumerate() {
            if extension.is_empty() {
                return Err(bad(format!("line {} is empty", i + 4)));
            }
        }
        Ok(Checkpoint {
            origin: origin.to_string(),
            size,
            root,
        })
    }
}

fn parse_size(s: &str) -> Option<u64> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if canonical { s.parse().ok() } else { None }
}

/// Why a checkpoint cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("the public key is not a verifier key (<name>+<8 hex digits>+<base64 key>): {0}")]
    BadVerifierKey(String),
    #[error("the checkpoint is not a signed note: {0}")]
    MalformedNote(String),
    #[error("the checkpoint body is malformed: {0}")]
    MalformedBody(String),
    #[error(
        "the checkpoint has no signature by the key {name} (key id {key_id}); it is signed by: {found} \
         (a different or rotated key?)"
    )]
    NoSignature {
        name: String,
        key_id: String,
        found: String,
    },
    #[error(
        "the checkpoint's signature does not verify with this key ({name}, key id {key_id}): \
         the checkpoint text or its signature was altered"
    )]
    BadSignature { name: String, key_id: String },
}

/// A C2SP verifier key for Ed25519.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifierKey {
    pub name: String,
    pub key_id: [u8; 4],
    key: VerifyingKey,
}

impl fmt::Debug for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_string())
    }
}

impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut key = vec![ALG_ED25519];
        key.extend_from_slice(self.key.as_bytes());
        write!(
            f,
            "{}+{}+{}",
            self.name,
            hex::encode(self.key_id),
            STANDARD.encode(key)
        )
    }
}

impl VerifierKey {
    /// Parses `<name>+<8 hex key id>+<base64(0x01 || public key)>` (surrounding white space is
    /// ignored) and checks that the key id is the one of that name and key.
    pub fn parse(vkey: &str) -> Result<VerifierKey, CheckpointError> {
        let bad = |why: &str| CheckpointError::BadVerifierKey(why.to_string());
        // The base64 of the key may itself hold '+': split at the first two only.
        let parts: Vec<&str> = vkey.trim().splitn(3, '+').collect();
        let [name, id, key] = parts[..] else {
            return Err(bad("it does not have three parts separated by '+'"));
        };
        if !valid_name(name) {
            return Err(bad("the key name is empty or holds white space"));
        }
        let key_id: [u8; 4] = (id.len() == 8)
            .then(|| hex::decode(id).ok())
            .flatten()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("the key id is not 8 hex digits"))?;
        let key = STANDARD
            .decode(key)
            .map_err(|_| bad("the key is not base64"))?;
        let (alg, key) = key.split_first().ok_or_else(|| bad("the key is empty"))?;
        if *alg != ALG_ED25519 {
            return Err(bad(&format!(
                "the key algorithm is {alg:#04x}; only Ed25519 (0x01) is supported"
            )));
        }
        let key: [u8; 32] = key
            .try_into()
            .map_err(|_| bad("an Ed25519 key is 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&key)
            .map_err(|_| bad("the key is not an Ed25519 public key"))?;
        if key_id != self::key_id(name, key.as_bytes()) {
            return Err(bad("the key id does not belong to this name and key"));
        }
        Ok(VerifierKey {
            name: name.to_string(),
            key_id,
            key,
        })
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.to_bytes()
    }
}

/// The C2SP signed-note key id of an Ed25519 key:
/// `SHA-256(name || "\n" || 0x01 || public key)[..4]`.
pub fn key_id(name: &str, public_key: &[u8; 32]) -> [u8; 4] {
    let hash = Sha256::new()
        .chain_update(name.as_bytes())
        .chain_update(b"\n")
        .chain_update([ALG_ED25519])
        .chain_update(public_key)
        .finalize();
    [hash[0], hash[1], hash[2], hash[3]]
}

/// A key name of signed notes: not empty, no white space, no `+`.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(char::is_whitespace) && !name.contains('+')
}

/// Signs checkpoints with an Ed25519 key. Its `Debug` shows the name and key id, never the key.
#[derive(Clone)]
pub struct Signer {
    key: SigningKey,
    name: String,
    key_id: [u8; 4],
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("name", &self.name)
            .field("key_id", &hex::encode(self.key_id))
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer named `name` (e.g. `erasure-audit`) with the Ed25519 key of this 32-byte seed.
    ///
    /// # Panics
    /// When the name is empty or holds white space or `+` (not a valid signed-note key name).
    pub fn new(name: &str, seed: &[u8; 32]) -> Signer {
        assert!(
            valid_name(name),
            "a signed-note key name is non-empty, without white space or '+'"
        );
        let key = SigningKey::from_bytes(seed);
        let key_id = key_id(name, key.verifying_key().as_bytes());
        Signer {
            key,
            name: name.to_string(),
            key_id,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> [u8; 4] {
        self.key_id
    }

    /// The whole signed note of a checkpoint: body, blank line, signature line.
    ///
    /// # Panics
    /// When the origin is empty or holds a line break (see [`Checkpoint::body`]).
    pub fn sign(&self, cp: &Checkpoint) -> String {
        use ed25519_dalek::Signer as _;
        let body = cp.body();
        let signature = self.key.sign(body.as_bytes());
        let mut blob = self.key_id.to_vec();
        blob.extend_from_slice(&signature.to_bytes());
        format!(
            "{body}\n{SIG_PREFIX}{} {}\n",
            self.name,
            STANDARD.encode(blob)
        )
    }

    /// The verifier key (`<name>+<key id hex>+<base64(0x01 || public key)>`), as printed by
    /// `erasure audit public-key`.
    pub fn verifier_key(&self) -> String {
        self.verifier().to_string()
    }

    /// The verifier key, parsed.
    pub fn verifier(&self) -> VerifierKey {
        VerifierKey {
            name: self.name.clone(),
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }
}

/// Checks a signed checkpoint note against a verifier key and returns the checkpoint: the note is
/// well formed, one of its signatures carries the key's name and id, that signature verifies over
/// the exact body bytes, and the body is a checkpoint. Signatures by other keys are ignored.
pub fn open(note: &str, vkey: &str) -> Result<Checkpoint, CheckpointError> {
    open_with(note, &VerifierKey::parse(vkey)?)
}

/// [`open`] with a parsed verifier key.
pub fn open_with(note: &str, vkey: &VerifierKey) -> Result<Checkpoint, CheckpointError> {
    let bad = |why: String| CheckpointError::MalformedNote(why);
    if note.contains('\r') {
        return Err(bad(
            "it holds a carriage return (were its line endings converted to CRLF?)".into(),
        ));
    }
    if let Some(c) = note.chars().find(|c| c.is_control() && *c != '\n') {
        return Err(bad(format!("it holds the control character {c:?}")));
    }
    if !note.ends_with('\n') {
        return Err(bad("it does not end with a newline".into()));
    }
    let split = note
        .rfind("\n\n")
        .ok_or_else(|| bad("there is no blank line before the signatures".into()))?;
    let (text, signatures) = (&note[..split + 1], &note[split + 2..]);
    if signatures.is_empty() {
        return Err(bad("it has no signature lines".into()));
    }
    let mut found = Vec::new();
    let mut matched = false;
    for (i, line) in signatures
        .strip_suffix('\n')
        .unwrap_or(signatures)
        .split('\n')
        .enumerate()
    {
        let sig_line = |why: &str| bad(format!("signature line {} {why}", i + 1));
        let rest = line
            .strip_prefix(SIG_PREFIX)
            .ok_or_else(|| sig_line("does not start with \"— \""))?;
        let (name, blob) = rest
            .rsplit_once(' ')
            .ok_or_else(|| sig_line("is not \"— <name> <base64>\""))?;
        if !valid_name(name) {
            return Err(sig_line("has an invalid key name"));
        }
        let blob = STANDARD
            .decode(blob)
            .map_err(|_| sig_line("is not valid base64"))?;
        if blob.len() < 5 {
            return Err(sig_line("is too short to hold a key id and a signature"));
        }
        let id: [u8; 4] = blob[..4].try_into().expect("4 bytes");
        found.push(format!("{name} (key id {})", hex::encode(id)));
        if name != vkey.name || id != vkey.key_id {
            continue;
        }
        matched = true;
        let verified = Signature::from_slice(&blob[4..])
            .ok()
            .is_some_and(|sig| vkey.key.verify_strict(text.as_bytes(), &sig).is_ok());
        if !verified {
            return Err(CheckpointError::BadSignature {
                name: vkey.name.clone(),
                key_id: hex::encode(vkey.key_id),
            });
        }
    }
    if !matched {
        return Err(CheckpointError::NoSignature {
            name: vkey.name.clone(),
            key_id: hex::encode(vkey.key_id),
            found: found.join(", "),
        });
    }
    Checkpoint::parse_body(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle;

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            origin: "erasure/audit-log/v1".into(),
            size: 42,
            root: merkle::leaf_hash(b"x"),
        }
    }

    #[test]
    fn signs_and_opens() {
        let signer = Signer::new("erasure-audit", &[7; 32]);
        let note = signer.sign(&checkpoint());
        let body = checkpoint().body();
        assert!(note.starts_with(&body));
        assert!(note[body.len()..].starts_with("\n— erasure-audit "));
        assert_eq!(open(&note, &signer.verifier_key()).unwrap(), checkpoint());
        // White space around the key (as read from a file) is fine.
        assert_eq!(
            open(&note, &format!(" {}\n", signer.verifier_key())).unwrap(),
            checkpoint()
        );
    }

    #[test]
    fn formats_follow_c2sp() {
        let signer = Signer::new("erasure-audit", &[7; 32]);
        let vkey = signer.verifier_key();
        let parts: Vec<&str> = vkey.split('+').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0], "erasure-audit");
        let key = STANDARD.decode(parts[2]).unwrap();
        assert_eq!(key.len(), 33);
        assert_eq!(key[0], 1);
        let mut h = Sha256::new();
        h.update(b"erasure-audit\n\x01");
        h.update(&key[1..]);
        assert_eq!(parts[1], hex::encode(&h.finalize()[..4]));
        let note = signer.sign(&checkpoint());
        let line = note.lines().last().unwrap();
        let blob = STANDARD.decode(line.rsplit_once(' ').unwrap().1).unwrap();
        assert_eq!(blob.len(), 68);
        assert_eq!(hex::encode(&blob[..4]), parts[1]);
        let body = format!(
            "erasure/audit-log/v1\n42\n{}\n",
            STANDARD.encode(merkle::leaf_hash(b"x"))
        );
        assert_eq!(checkpoint().body(), body);
        let vk = VerifyingKey::from_bytes(&key[1..].try_into().unwrap()).unwrap();
        vk.verify_strict(body.as_bytes(), &Signature::from_slice(&blob[4..]).unwrap())
            .unwrap();
    }

    /// A signed note made by Go's golang.org/x/mod/sumdb/note (its documentation's example key
    /// and note) opens here: the formats match the reference implementation.
    #[test]
    fn opens_the_go_note_example() {
        let vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
        let note = "If you think cryptography is the answer to your problem,\n\
                    then you don't know what your problem is.\n\
                    \n\
                    — PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
        // Not a checkpoint body, so opening fails only at the body, after the signature held.
        assert!(matches!(
            open(note, vkey),
            Err(CheckpointError::MalformedBody(_))
        ));
        let mut tampered = note.replace("answer", "Answer");
        assert!(matches!(
            open(&tampered, vkey),
            Err(CheckpointError::BadSignature { .. })
        ));
        tampered = note.replace("x08go", "x08gp");
        assert!(open(&tampered, vkey).is_err());

        // Signing with the example's private key gives the very same note, byte for byte.
        let skey = STANDARD
            .decode("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz")
            .unwrap();
        assert_eq!(skey[0], 1);
        let signer = Signer::new("PeterNeumann", &skey[1..].try_into().unwrap());
        assert_eq!(signer.verifier_key(), vkey);
        let text = note.split_once("\n\n").unwrap().0;
        let mut blob = signer.key_id().to_vec();
        {
            use ed25519_dalek::Signer as _;
            blob.extend_from_slice(&signer.key.sign(format!("{text}\n").as_bytes()).to_bytes());
        }
        assert_eq!(
            format!("{text}\n\n— PeterNeumann {}\n", STANDARD.encode(blob)),
            note
        );
    }

    #[test]
    fn tampering_and_wrong_keys_fail_clearly() {
        let signer = Signer::new("erasure-audit", &[7; 32]);
        let vkey = signer.verifier_key();
        let note = signer.sign(&checkpoint());

        let altered = note.replacen("42", "43", 1);
        let e = open(&altered, &vkey).unwrap_err();
        assert!(
            e.to_string()
                .contains("signature does not verify with this key"),
            "{e}"
        );

        let other = Signer::new("erasure-audit", &[8; 32]);
        let e = open(&note, &other.verifier_key()).unwrap_err();
        assert!(matches!(e, CheckpointError::NoSignature { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("it is signed by: erasure-audit (key id"),
            "{e}"
        );

        let renamed = Signer::new("someone-else", &[7; 32]);
        assert!(matches!(
            open(&note, &renamed.verifier_key()),
            Err(CheckpointError::NoSignature { .. })
        ));

        // A signature by the right key over another body.
        let other_note = signer.sign(&Checkpoint {
            size: 43,
            ..checkpoint()
        });
        let (body, _) = note.split_once("\n\n").unwrap();
        let (_, sig) = other_note.split_once("\n\n").unwrap();
        let spliced = format!("{body}\n\n{sig}");
        assert!(matches!(
            open(&spliced, &vkey),
            Err(CheckpointError::BadSignature { .. })
        ));

        // Signatures by unknown keys are ignored; ours is still found.
        let extra = format!("{note}— witness {}\n", STANDARD.encode([9u8; 68]));
        assert_eq!(open(&extra, &vkey).unwrap(), checkpoint());

        for (broken, why) in [
            (note.replace('\n', "\r\n"), "carriage return"),
            (note.trim_end().to_string(), "newline"),
            (note.replace("\n\n", "\n"), "blank line"),
            (note.replace("— ", "-- "), "does not start with"),
        ] {
            let e = open(&broken, &vkey).unwrap_err();
            assert!(e.to_string().contains(why), "{why}: {e}");
        }
    }

    #[test]
    fn bodies_are_strict() {
        let signer = Signer::new("erasure-audit", &[7; 32]);
        let root = STANDARD.encode([1u8; 32]);
        for body in [
            format!("origin\n042\n{root}\n"),
            format!("origin\n-1\n{root}\n"),
            format!("origin\n\n{root}\n"),
            "origin\n1\nAAAA\n".to_string(),
            format!("\n1\n{root}\n"),
            "origin\n1\n".to_string(),
        ] {
            assert!(Checkpoint::parse_body(&body).is_err(), "{body:?}");
        }
        let with_extension = format!("origin\n1\n{root}\nextension line\n");
        assert_eq!(Checkpoint::parse_body(&with_extension).unwrap().size, 1);
        let cp = Checkpoint::parse_body(&format!("origin\n0\n{root}\n")).unwrap();
        assert_eq!(open(&signer.sign(&cp), &signer.verifier_key()).unwrap(), cp);
    }

    #[test]
    fn keys_whose_base64_holds_a_plus_work() {
        let mut found = 0;
        for seed in 0..=255u8 {
            let signer = Signer::new("erasure-audit", &[seed; 32]);
            let vkey = signer.verifier_key();
            if vkey.matches('+').count() > 2 {
                found += 1;
                let note = signer.sign(&checkpoint());
                assert_eq!(open(&note, &vkey).unwrap(), checkpoint(), "{vkey}");
            }
        }
        assert!(found > 0);
    }

    #[test]
    fn verifier_keys_are_checked() {
        let signer = Signer::new("erasure-audit", &[7; 32]);
        let vkey = signer.verifier_key();
        assert_eq!(VerifierKey::parse(&vkey).unwrap().to_string(), vkey);
        let (name, rest) = vkey.split_once('+').unwrap();
        let (id, key) = rest.split_once('+').unwrap();
        for bad in [
            format!("{name}+{id}"),
            format!("{name}+00000000+{key}"),
            format!("{name}+{id}+AAAA"),
            format!("other+{id}+{key}"),
            format!("{name}+{id}+{key}+x"),
            format!("+{id}+{key}"),
        ] {
            assert!(
                matches!(
                    VerifierKey::parse(&bad),
                    Err(CheckpointError::BadVerifierKey(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn debug_hides_the_seed() {
        let seed = [0xab; 32];
        let signer = Signer::new("erasure-audit", &seed);
        let shown = format!("{signer:?} {signer:#?}");
        assert!(
            !shown.contains("ab, ab") && !shown.contains("abab") && !shown.contains("171"),
            "{shown}"
        );
        assert!(shown.contains("erasure-audit"));
    }
}

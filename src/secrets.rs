//! Secrets: the service's 32-byte keys and the upstream client secret, read from the environment
//! (or a file named by `NAME_FILE`). It depends on no other part of the crate, so every part can
//! take a key from here. It must never print, log or return a secret: `Debug` shows
//! `<redacted>`, errors name the variable, never its value, and the bytes are zeroed on drop.

use std::fmt;

use anyhow::{Context, bail};
use zeroize::{Zeroize, Zeroizing};

/// A 32-byte secret key. Its `Debug` output never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Key32([u8; 32]);

impl Key32 {
    /// Parses 64 hex characters.
    pub fn from_hex(name: &str, text: &str) -> anyhow::Result<Self> {
        let text = text.trim();
        let bytes = Zeroizing::new(hex::decode(text).map_err(|_| {
            anyhow::anyhow!(
                "{name} must be 64 hex characters (32 bytes); make one with `openssl rand -hex 32`"
            )
        })?);
        let bytes: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            anyhow::anyhow!(
                "{name} must be 64 hex characters (32 bytes); make one with `openssl rand -hex 32`"
            )
        })?;
        // 32 random bytes have almost always more than 25 distinct values; fewer than 16 is a
        // pattern (a repeated byte, a repeated short string), not a key.
        let distinct = bytes
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        if distinct < 16 {
            bail!(
                "{name} is a weak key (a repeated pattern, not random); make one with \
                 `openssl rand -hex 32`"
            );
        }
        Ok(Self(bytes))
    }

    pub fn random() -> Self {
        Self(rand::random())
    }

    /// A key made elsewhere of random bytes (a pseudonym epoch's, once unsealed).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl Drop for Key32 {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Key32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key32(<redacted>)")
    }
}

/// A secret string (client secret). Its `Debug` output never shows it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Reads `NAME` or, failing that, the file named by `NAME_FILE`.
pub fn secret_from_env(name: &str) -> anyhow::Result<Option<String>> {
    if let Ok(value) = std::env::var(name)
        && !value.trim().is_empty()
    {
        return Ok(Some(value.trim().to_string()));
    }
    let file_var = format!("{name}_FILE");
    if let Ok(path) = std::env::var(&file_var)
        && !path.trim().is_empty()
    {
        let value = std::fs::read_to_string(path.trim())
            .with_context(|| format!("cannot read the file named by {file_var}"))?;
        return Ok(Some(value.trim().to_string()));
    }
    Ok(None)
}

/// The three service keys of DESIGN.md.
#[derive(Debug, Clone)]
pub struct Keys {
    /// A configured pseudonym key (optional since pseudonym epochs: it is migrated into the
    /// database once as the epoch of its version, `audit::epochs`).
    pub pseudonym: Option<Key32>,
    pub pseudonym_version: u32,
    /// Older configured pseudonym keys `(version, key)` (`ERASURE_PSEUDONYM_OLD_KEYS`), migrated
    /// into epochs as well.
    pub pseudonym_old: Vec<(u32, Key32)>,
    pub signing: Key32,
    pub data: Key32,
}

impl Keys {
    pub const PSEUDONYM: &'static str = "ERASURE_PSEUDONYM_KEY";
    pub const SIGNING: &'static str = "ERASURE_SIGNING_KEY";
    pub const DATA: &'static str = "ERASURE_DATA_KEY";
    pub const PSEUDONYM_OLD: &'static str = "ERASURE_PSEUDONYM_OLD_KEYS";

    /// Loads every key from the environment; a missing or weak key is an error that says how to
    /// make one.
    pub fn from_env() -> anyhow::Result<Self> {
        let load = |name: &str| -> anyhow::Result<Key32> {
            match secret_from_env(name)? {
                Some(text) => Key32::from_hex(name, &text),
                None => bail!(
                    "{name} is not set (nor {name}_FILE); make a key with `openssl rand -hex 32` \
                     (or run `erasure demo`, which generates its own)"
                ),
            }
        };
        let pseudonym = match secret_from_env(Self::PSEUDONYM)? {
            Some(text) => Some(Key32::from_hex(Self::PSEUDONYM, &text)?),
            None => None,
        };
        let pseudonym_version = pseudonym_version_from_env()?;
        let pseudonym_old = match secret_from_env(Self::PSEUDONYM_OLD)? {
            Some(text) => parse_old_keys(&text, pseudonym_version, pseudonym.as_ref())?,
            None => Vec::new(),
        };
        Ok(Self {
            pseudonym,
            pseudonym_version,
            pseudonym_old,
            signing: load(Self::SIGNING)?,
            data: load(Self::DATA)?,
        })
    }

    pub fn random() -> Self {
        Self {
            pseudonym: Some(Key32::random()),
            pseudonym_version: 1,
            pseudonym_old: Vec::new(),
            signing: Key32::random(),
            data: Key32::random(),
        }
    }
}

/// `ERASURE_PSEUDONYM_OLD_KEYS`: `version:hexkey` items separated by commas or white space, the
/// retired pseudonym keys with the version each was used under. Errors never show a key.
fn parse_old_keys(
    text: &str,
    current: u32,
    current_key: Option<&Key32>,
) -> anyhow::Result<Vec<(u32, Key32)>> {
    const NAME: &str = Keys::PSEUDONYM_OLD;
    let mut out: Vec<(u32, Key32)> = Vec::new();
    for (n, item) in text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|i| !i.is_empty())
        .enumerate()
    {
        let (version, key) = item
            .split_once(':')
            .with_context(|| format!("{NAME}: item {} is not `version:hexkey`", n + 1))?;
        let version = version
            .parse::<u32>()
            .ok()
            .filter(|v| *v > 0)
            .with_context(|| format!("{NAME}: item {} has no positive version", n + 1))?;
        let key = Key32::from_hex(&format!("{NAME} (version {version})"), key)?;
        if version == current || out.iter().any(|(v, _)| *v == version) {
            bail!(
                "{NAME}: version {version} appears twice (or is the current ERASURE_PSEUDONYM_KEY_VERSION)"
            );
        }
        if current_key == Some(&key) {
            bail!("{NAME}: version {version} has the current ERASURE_PSEUDONYM_KEY");
        }
        out.push((version, key));
    }
    Ok(out)
}

fn pseudonym_version_from_env() -> anyhow::Result<u32> {
    match std::env::var("ERASURE_PSEUDONYM_KEY_VERSION") {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|v| *v > 0)
            .context("ERASURE_PSEUDONYM_KEY_VERSION must be a positive integer"),
        _ => Ok(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_pseudonym_keys_parse_and_never_show_in_errors() {
        let (current, a, b) = (Key32::random(), Key32::random(), Key32::random());
        let text = format!("1:{}, 2:{}\n", a.to_hex(), b.to_hex());
        let old = parse_old_keys(&text, 3, Some(&current)).unwrap();
        assert_eq!(old, vec![(1, a.clone()), (2, b)]);
        assert!(parse_old_keys("", 3, Some(&current)).unwrap().is_empty());
        for bad in [
            a.to_hex(),
            format!("0:{}", a.to_hex()),
            format!("3:{}", a.to_hex()),
            format!("1:{0},1:{0}", a.to_hex()),
            format!("1:{}", current.to_hex()),
            format!("1:{}", &a.to_hex()[..60]),
        ] {
            let err = parse_old_keys(&bad, 3, Some(&current))
                .unwrap_err()
                .to_string();
            assert!(err.contains("ERASURE_PSEUDONYM_OLD_KEYS"), "{err}");
            assert!(!err.contains(&a.to_hex()[..16]), "a key in an error: {err}");
        }
    }

    #[test]
    fn weak_or_malformed_keys_are_refused_with_the_way_to_make_one() {
        for (text, why) in [
            ("", "64 hex characters"),
            ("abcd", "64 hex characters"),
            (&"zz".repeat(32), "64 hex characters"),
            (&"00".repeat(32), "weak key"),
            (&"0123456789abcdef".repeat(4), "weak key"),
            (&"deadbeef".repeat(8), "weak key"),
        ] {
            let e = Key32::from_hex("ERASURE_DATA_KEY", text)
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{text}: {e}");
            assert!(e.contains("openssl rand -hex 32"), "{e}");
            assert!(e.contains("ERASURE_DATA_KEY"), "{e}");
        }
        let good = Key32::random().to_hex();
        assert_eq!(Key32::from_hex("K", &good).unwrap().to_hex(), good);
    }
}

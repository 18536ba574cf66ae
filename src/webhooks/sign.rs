//! Standard Webhooks signatures: a secret `whsec_` + base64 of random bytes, and
//! `v1,` + base64(HMAC-SHA256(secret, "{webhook-id}.{webhook-timestamp}.{body}")).
//!
//! A secret is shown once (when made) and otherwise only sealed; its `Debug` shows nothing.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// The prefix of a signing secret.
pub const PREFIX: &str = "whsec_";

/// The key bytes of a signing secret.
#[derive(Clone)]
pub struct SigningKey(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

/// A new secret, as shown to the admin once: `whsec_` + base64 of 32 random bytes.
pub fn new_secret() -> Zeroizing<String> {
    let bytes: Zeroizing<[u8; 32]> = Zeroizing::new(rand::random());
    Zeroizing::new(format!("{PREFIX}{}", STANDARD.encode(bytes.as_slice())))
}

impl SigningKey {
    /// The key of a secret (`whsec_` + base64, the prefix optional).
    pub fn parse(secret: &str) -> anyhow::Result<Self> {
        let text = secret.strip_prefix(PREFIX).unwrap_or(secret);
        let bytes = STANDARD
            .decode(text)
            .map_err(|_| anyhow::anyhow!("a webhook secret is not base64"))?;
        anyhow::ensure!(
            (24..=64).contains(&bytes.len()),
            "a webhook secret must hold 24 to 64 bytes"
        );
        Ok(Self(Zeroizing::new(bytes)))
    }

    /// `v1,<base64 signature>` of one message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The `webhook-signature` header: one signature per key, space-separated.
pub fn header(keys: &[SigningKey], id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|k| k.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's reference libraries.
    #[test]
    fn signs_as_the_reference_libraries() {
        let key = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            key.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn new_secrets_parse_and_differ() {
        let a = new_secret();
        let b = new_secret();
        assert!(a.starts_with(PREFIX));
        assert_ne!(*a, *b);
        SigningKey::parse(&a).unwrap();
        assert!(SigningKey::parse("whsec_short").is_err());
        assert!(!format!("{:?}", SigningKey::parse(&a).unwrap()).contains(&a[6..]));
        let keys = [
            SigningKey::parse(&a).unwrap(),
            SigningKey::parse(&b).unwrap(),
        ];
        assert_eq!(header(&keys, "msg_1", 1, b"{}").split(' ').count(), 2);
    }
}

//! API keys: shown once, stored as a SHA-256 digest (keys are 192 random bits, so a fast digest
//! cannot be brute-forced), found by a short prefix that names them in logs without revealing them.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::Db;
use crate::domain::Role;

/// A verified key.
#[derive(Debug, Clone)]
pub struct Principal {
    pub key_id: Uuid,
    pub role: Role,
}

fn digest(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// Creates a key and returns (id, the key itself). The key is not stored.
pub async fn create(
    db: &Db,
    role: Role,
    label: &str,
    expires_at: Option<DateTime<Utc>>,
) -> anyhow::Result<(Uuid, String)> {
    let prefix = hex::encode(rand::random::<[u8; 4]>());
    let secret = hex::encode(rand::random::<[u8; 24]>());
    let key = format!("ek_{prefix}_{secret}");
    let id = Uuid::new_v4();
    sqlx::query(
        "insert into api_keys (id, prefix, hash, role, label, expires_at) values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(&prefix)
    .bind(digest(&key))
    .bind(role.as_str())
    .bind(label)
    .bind(expires_at)
    .execute(db)
    .await?;
    Ok((id, key))
}

/// Finds the live key a bearer token names. `None` for unknown, revoked or expired keys.
pub async fn authenticate(db: &Db, key: &str) -> sqlx::Result<Option<Principal>> {
    let Some(prefix) = key
        .strip_prefix("ek_")
        .and_then(|rest| rest.split_once('_'))
        .map(|(p, _)| p)
    else {
        return Ok(None);
    };
    if prefix.len() != 8 {
        return Ok(None);
    }
    let row: Option<(Uuid, Vec<u8>, String)> = sqlx::query_as(
        "select id, hash, role from api_keys where prefix = $1 and revoked_at is null \
         and (expires_at is null or expires_at > now())",
    )
    .bind(prefix)
    .fetch_optional(db)
    .await?;
    Ok(row.and_then(|(key_id, hash, role)| {
        let presented = digest(key);
        let same = hash.len() == presented.len()
            && hash
                .iter()
                .zip(&presented)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        let role = Role::parse(&role)?;
        same.then_some(Principal { key_id, role })
    }))
}

//! The console's sign-in sessions (`console_sessions`): a random token in an HttpOnly cookie,
//! stored as its SHA-256 digest, bound to the API key that opened it.
//!
//! Never stores the token or the key in clear; a session is valid only while its key is.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::Db;
use super::keys::Principal;
use crate::domain::Role;

/// How long a session lasts.
pub const LIFETIME: chrono::Duration = chrono::Duration::hours(8);

fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Opens a session for `key_id`; returns its token (256 random bits, URL-safe) and when it ends.
/// Sessions ended or expired more than a day ago are removed on the way.
pub async fn start(db: &Db, key_id: Uuid) -> sqlx::Result<(String, DateTime<Utc>)> {
    let token = hex::encode(rand::random::<[u8; 32]>());
    let expires_at = Utc::now() + LIFETIME;
    sqlx::query("delete from console_sessions where expires_at < now() - interval '1 day'")
        .execute(db)
        .await?;
    sqlx::query(
        "insert into console_sessions (token_hash, key_id, expires_at) values ($1, $2, $3)",
    )
    .bind(digest(&token))
    .bind(key_id)
    .bind(expires_at)
    .execute(db)
    .await?;
    Ok((token, expires_at))
}

/// The live key behind a session token: `None` when the session is unknown, ended or expired, or
/// its key is revoked or expired.
pub async fn principal(db: &Db, token: &str) -> sqlx::Result<Option<Principal>> {
    if token.len() != 64 {
        return Ok(None);
    }
    let row: Option<(Uuid, String)> = sqlx::query_as(
        "select k.id, k.role from console_sessions s join api_keys k on k.id = s.key_id \
         where s.token_hash = $1 and s.ended_at is null and s.expires_at > now() \
         and k.revoked_at is null and (k.expires_at is null or k.expires_at > now())",
    )
    .bind(digest(token))
    .fetch_optional(db)
    .await?;
    Ok(row.and_then(|(key_id, role)| Role::parse(&role).map(|role| Principal { key_id, role })))
}

/// Ends a session (sign-out).
pub async fn end(db: &Db, token: &str) -> sqlx::Result<()> {
    sqlx::query(
        "update console_sessions set ended_at = now() where token_hash = $1 and ended_at is null",
    )
    .bind(digest(token))
    .execute(db)
    .await?;
    Ok(())
}

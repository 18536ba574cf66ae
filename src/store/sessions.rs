//! The console's sign-in sessions (`console_sessions`): a random token in an HttpOnly cookie,
//! stored as its SHA-256 digest, bound to the API key that opened it or to a person (through their
//! personal key); and the sign-ins under way at an OpenID Provider (`oidc_pending`).
//!
//! Never stores the token, a key or a provider's token in clear; a key's session is valid only
//! while its key is, a person's while the person has a role.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::Db;
use super::keys::Principal;
use crate::domain::Role;

/// How long a session lasts by default (`ERASURE_SESSION_HOURS`).
pub const LIFETIME: chrono::Duration = chrono::Duration::hours(8);

fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Opens a session for `key_id` (and `person`, for a person's sign-in) lasting `lifetime`;
/// returns its token (256 random bits, hex) and when it ends. Sessions ended or expired more than
/// a day ago are removed on the way.
pub async fn start(
    db: &Db,
    key_id: Uuid,
    person: Option<Uuid>,
    lifetime: chrono::Duration,
) -> sqlx::Result<(String, DateTime<Utc>)> {
    let token = hex::encode(rand::random::<[u8; 32]>());
    let expires_at = Utc::now() + lifetime;
    sqlx::query("delete from console_sessions where expires_at < now() - interval '1 day'")
        .execute(db)
        .await?;
    sqlx::query(
        "insert into console_sessions (token_hash, key_id, person_id, expires_at) \
         values ($1, $2, $3, $4)",
    )
    .bind(digest(&token))
    .bind(key_id)
    .bind(person)
    .bind(expires_at)
    .execute(db)
    .await?;
    Ok((token, expires_at))
}

/// A live session: who is behind it, and (for the page only) the person's display name.
pub struct SignedIn {
    pub principal: Principal,
    pub name: Option<String>,
    /// Opened by the OpenID Provider (a person's sign-in), not with a key.
    pub through_provider: bool,
}

/// Who is behind a session token: `None` when the session is unknown, ended or expired, or its
/// key is revoked or expired, or its person holds no role any more. A person's roles are read
/// from their latest sign-in, at each request.
pub async fn principal(db: &Db, token: &str) -> sqlx::Result<Option<Principal>> {
    Ok(signed_in(db, token).await?.map(|s| s.principal))
}

/// `principal`, with the person's name.
pub async fn signed_in(db: &Db, token: &str) -> sqlx::Result<Option<SignedIn>> {
    if token.len() != 64 {
        return Ok(None);
    }
    type Row = (
        Uuid,
        Option<String>,
        Option<Uuid>,
        bool,
        Option<Vec<String>>,
        Option<String>,
    );
    let row: Option<Row> = sqlx::query_as(
        "select k.id, k.role, p.id, s.person_id is not null, p.roles, p.display_name \
         from console_sessions s join api_keys k on k.id = s.key_id \
         left join people p on p.id = coalesce(s.person_id, k.owner_person) \
         where s.token_hash = $1 and s.ended_at is null and s.expires_at > now() \
         and k.revoked_at is null and (k.expires_at is null or k.expires_at > now())",
    )
    .bind(digest(token))
    .fetch_optional(db)
    .await?;
    Ok(row.and_then(
        |(key_id, role, person, through_provider, person_roles, name)| {
            let roles: Vec<Role> = if through_provider {
                person_roles?
                    .iter()
                    .filter_map(|r| Role::parse(r))
                    .collect()
            } else {
                vec![Role::parse(role.as_deref()?)?]
            };
            (!roles.is_empty()).then_some(SignedIn {
                principal: Principal {
                    key_id,
                    roles,
                    person,
                },
                name,
                through_provider,
            })
        },
    ))
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

/// A sign-in under way at the provider, as its callback needs it.
pub struct Pending {
    pub state_hash: Vec<u8>,
    pub nonce: String,
    pub pkce_verifier: String,
}

/// The digest a sign-in's `state` is kept and compared by.
pub fn state_digest(state: &str) -> Vec<u8> {
    digest(state)
}

/// Records a sign-in under way for the browser holding `browser` (a random id in its cookie),
/// valid for ten minutes. Expired ones are removed on the way.
pub async fn begin_sign_in(
    db: &Db,
    browser: &str,
    state: &str,
    nonce: &str,
    pkce_verifier: &str,
) -> sqlx::Result<()> {
    sqlx::query("delete from oidc_pending where expires_at < now()")
        .execute(db)
        .await?;
    sqlx::query(
        "insert into oidc_pending (browser_hash, state_hash, nonce, pkce_verifier, expires_at) \
         values ($1, $2, $3, $4, now() + interval '10 minutes')",
    )
    .bind(digest(browser))
    .bind(digest(state))
    .bind(nonce)
    .bind(pkce_verifier)
    .execute(db)
    .await?;
    Ok(())
}

/// Takes the sign-in under way of the browser holding `browser`: it is deleted, so a callback is
/// accepted once. `None` when there is none (another browser, used already, or expired).
pub async fn take_sign_in(db: &Db, browser: &str) -> sqlx::Result<Option<Pending>> {
    if browser.len() != 64 {
        return Ok(None);
    }
    let row: Option<(Vec<u8>, String, String, DateTime<Utc>)> = sqlx::query_as(
        "delete from oidc_pending where browser_hash = $1 \
         returning state_hash, nonce, pkce_verifier, expires_at",
    )
    .bind(digest(browser))
    .fetch_optional(db)
    .await?;
    Ok(row
        .filter(|(_, _, _, expires_at)| *expires_at > Utc::now())
        .map(|(state_hash, nonce, pkce_verifier, _)| Pending {
            state_hash,
            nonce,
            pkce_verifier,
        }))
}

//! API keys: made (shown once), listed, found by id or prefix, revoked, rotated with a grace
//! period. The same for the console and the command line; the limits of a new key are
//! `domain::keys::NewKey`'s.
//!
//! Never logs or stores a key: only its digest and its prefix.

use std::time::Duration;

use uuid::Uuid;

use super::By;
use super::error::ApiError;
use crate::domain::keys::NewKey;
use crate::store::Db;
use crate::store::keys::{self, KeyInfo};

/// The longest grace of a rotated key: a week, in minutes.
pub const MAX_GRACE_MINUTES: u32 = 7 * 24 * 60;

/// Makes a key; answers it, to be shown once. A key made by a person is theirs: what it does
/// counts as them (four eyes included).
pub async fn create(db: &Db, new: &NewKey, by: By<'_>) -> Result<String, ApiError> {
    let (_, key) = keys::create_owned(db, new, &by.actor(), by.person()).await?;
    Ok(key)
}

/// Every key but the people's own session keys.
pub async fn list(db: &Db) -> Result<Vec<KeyInfo>, ApiError> {
    Ok(keys::list(db).await?)
}

/// A key by its id or its 8-character prefix, or 404.
pub async fn find(db: &Db, id_or_prefix: &str) -> Result<KeyInfo, ApiError> {
    keys::find(db, id_or_prefix)
        .await?
        .ok_or_else(|| ApiError::not_found("key"))
}

/// Revokes a key at once; false when it was revoked already.
pub async fn revoke(db: &Db, key: &KeyInfo, by: By<'_>) -> Result<bool, ApiError> {
    Ok(keys::revoke(db, key.id, &by.actor()).await?)
}

/// Replaces a key by a new one of the same role; the old one stays valid for `grace_minutes`
/// (at most `MAX_GRACE_MINUTES`; 0 revokes it at once). Answers the new key's id and the key,
/// to be shown once.
pub async fn rotate(
    db: &Db,
    old: &KeyInfo,
    grace_minutes: u32,
    by: By<'_>,
) -> Result<(Uuid, String), ApiError> {
    if grace_minutes > MAX_GRACE_MINUTES {
        return Err(ApiError::field(
            "grace_minutes",
            format!("must be at most {MAX_GRACE_MINUTES} (a week)"),
        ));
    }
    let grace = Duration::from_secs(u64::from(grace_minutes) * 60);
    Ok(keys::rotate(db, old, grace, &by.actor()).await?)
}

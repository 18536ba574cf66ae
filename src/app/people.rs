//! People who sign in through the identity provider: listed with their roles, their sessions
//! ended, and forgotten when they leave (a tombstone in place of the name and e-mail, the id
//! kept so that every proof still verifies). The same for the console and the command line.
//!
//! Never puts a name or an e-mail in the audit log or a log line: ids only.

use uuid::Uuid;

use super::By;
use super::error::ApiError;
use crate::store::Db;
use crate::store::people::{self, Person};

/// Everyone who signed in, most recent first.
pub async fn list(db: &Db) -> Result<Vec<Person>, ApiError> {
    Ok(people::list(db).await?)
}

/// One person, or 404.
pub async fn get(db: &Db, id: Uuid) -> Result<Person, ApiError> {
    people::get(db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("person"))
}

/// Ends every session of a person; answers how many were open, or 404.
pub async fn end_sessions(db: &Db, id: Uuid, by: By<'_>) -> Result<u64, ApiError> {
    people::end_sessions(db, id, &by.actor())
        .await?
        .ok_or_else(|| ApiError::not_found("person"))
}

/// Forgets a person who left: name and e-mail replaced, sessions ended, keys revoked, id kept;
/// or 404.
pub async fn forget(db: &Db, id: Uuid, by: By<'_>) -> Result<(), ApiError> {
    if people::forget(db, id, &by.actor()).await? {
        Ok(())
    } else {
        Err(ApiError::not_found("person"))
    }
}

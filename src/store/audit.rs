//! Appending to the audit log. Always inside the transaction of the change it records.

use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

/// One entry about a request.
pub struct Entry<'a> {
    pub request_id: Option<Uuid>,
    pub subject_ref: Option<&'a str>,
    pub actor: &'a str,
    pub event: &'a str,
    pub data: Value,
}

pub async fn append(conn: &mut PgConnection, entry: Entry<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "insert into audit_entries (request_id, subject_ref, actor, event, data) \
         values ($1, $2, $3, $4, $5)",
    )
    .bind(entry.request_id)
    .bind(entry.subject_ref)
    .bind(entry.actor)
    .bind(entry.event)
    .bind(entry.data)
    .execute(conn)
    .await?;
    Ok(())
}

/// The actor name of an API key in the audit log.
pub fn key_actor(key_id: Uuid) -> String {
    format!("key:{key_id}")
}

/// The actor name of the engine.
pub const ENGINE: &str = "engine";

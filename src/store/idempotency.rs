//! Idempotency keys of `POST /v1/erasure-requests`: each key an API key sent, with the digest of
//! the body it came with and the response to replay when the same key comes again.
//!
//! Takes a keyed digest of the body, never the body: a body holds a target id in clear. Always
//! inside the transaction that inserts the request, so a key is never stored without its
//! request, nor a request without its key.

use sqlx::PgConnection;
use uuid::Uuid;

/// What the first use of a key stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FirstUse {
    /// The digest of the body it came with.
    pub body_digest: Vec<u8>,
    /// The HTTP status answered.
    pub status: i16,
    /// The body answered.
    pub response: serde_json::Value,
}

/// Takes `key` for the API key `api_key_id`, with the digest of the body it came with; when the
/// key was taken before, nothing is written and its first use is returned.
pub async fn take(
    conn: &mut PgConnection,
    api_key_id: Uuid,
    key: &str,
    body_digest: &[u8],
) -> sqlx::Result<Option<FirstUse>> {
    let fresh = sqlx::query(
        "insert into idempotency_keys (api_key_id, key, body_digest, status, response) \
         values ($1, $2, $3, 0, '{}') on conflict do nothing",
    )
    .bind(api_key_id)
    .bind(key)
    .bind(body_digest)
    .execute(&mut *conn)
    .await?;
    if fresh.rows_affected() != 0 {
        return Ok(None);
    }
    let first = sqlx::query_as(
        "select body_digest, status, response from idempotency_keys where api_key_id = $1 and key = $2",
    )
    .bind(api_key_id)
    .bind(key)
    .fetch_one(conn)
    .await?;
    Ok(Some(first))
}

/// Keeps the response to replay for `key`: 202 with `response`, the request accepted.
pub async fn accepted(
    conn: &mut PgConnection,
    api_key_id: Uuid,
    key: &str,
    response: &serde_json::Value,
) -> sqlx::Result<()> {
    sqlx::query("update idempotency_keys set status = 202, response = $3 where api_key_id = $1 and key = $2")
        .bind(api_key_id)
        .bind(key)
        .bind(response)
        .execute(conn)
        .await?;
    Ok(())
}

//! Bulk operations: an action on many requests, or an upload, as one operation with its own id
//! (`migrations/0023_bulk_operations.sql`), and each item's result, read back a page at a time.
//! The actions themselves are applied one request at a time by `store::requests::act`, each in
//! its own transaction with its own audit entry; this module records what became of each.
//!
//! Holds no personal data: request ids, results, refusal codes and messages that name fields
//! and states.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Db, audit};
use crate::domain::events::Event;
use crate::domain::events::data_of;
use crate::domain::records;

/// An operation and its counts.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Operation {
    pub id: Uuid,
    /// `approve`, `hold`, `release`, `extend`, `retry`, `cancel`, or `submit` (an upload).
    pub action: String,
    /// Who asked: `key:<id>` or `person:<id>`.
    pub actor: String,
    pub created_at: DateTime<Utc>,
    /// Absent while items are still being applied.
    pub finished_at: Option<DateTime<Utc>>,
    /// Items in the selection or the file.
    pub total: i32,
    /// Items applied (an upload: requests created).
    pub done: i32,
    /// Items refused (an upload: duplicates and invalid lines).
    pub refused: i32,
    /// An upload's batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<Uuid>,
}

/// What became of one item.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Item {
    /// From 1, in the selection's or the file's order.
    pub ordinal: i32,
    /// A CSV upload's line (its header is line 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<Uuid>,
    /// `done` or `refused` (an action); `created`, `duplicate` or `invalid` (an upload).
    pub result: String,
    /// Why an item was refused, as the API's error code (`invalid_transition`,
    /// `approver_is_requester`, `not_found`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// An item's result before it is recorded.
pub struct NewItem {
    pub line: Option<i64>,
    pub request_id: Option<Uuid>,
    pub result: &'static str,
    pub error: Option<String>,
    pub message: Option<String>,
}

/// Starts an operation of `total` items for `actor`.
pub async fn start(
    db: &Db,
    action: &str,
    actor: &str,
    total: usize,
    batch_id: Option<Uuid>,
) -> sqlx::Result<Uuid> {
    let id = Uuid::now_v7();
    sqlx::query(
        "insert into bulk_operations (id, action, actor, total, batch_id) \
         values ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(action)
    .bind(actor)
    .bind(total as i32)
    .bind(batch_id)
    .execute(db)
    .await?;
    Ok(id)
}

/// Records the results of items `first`, `first + 1`, ... of an operation, in one statement;
/// an item counts as done when its result is `done` or `created`.
pub async fn record(db: &Db, operation: Uuid, first: usize, items: &[NewItem]) -> sqlx::Result<()> {
    if items.is_empty() {
        return Ok(());
    }
    let ordinals: Vec<i32> = (0..items.len()).map(|i| (first + i) as i32).collect();
    let lines: Vec<Option<i64>> = items.iter().map(|i| i.line).collect();
    let requests: Vec<Option<Uuid>> = items.iter().map(|i| i.request_id).collect();
    let results: Vec<&str> = items.iter().map(|i| i.result).collect();
    let errors: Vec<Option<&str>> = items.iter().map(|i| i.error.as_deref()).collect();
    let messages: Vec<Option<&str>> = items.iter().map(|i| i.message.as_deref()).collect();
    sqlx::query(
        "with added as ( \
             insert into bulk_items (operation_id, ordinal, line, request_id, result, error, message) \
             select $1, * from unnest($2::int4[], $3::int8[], $4::uuid[], $5::text[], $6::text[], \
                                      $7::text[]) \
             returning result) \
         update bulk_operations set \
             done = done + (select count(*) from added where result in ('done', 'created')), \
             refused = refused + (select count(*) from added where result not in ('done', 'created')) \
         where id = $1",
    )
    .bind(operation)
    .bind(&ordinals)
    .bind(&lines)
    .bind(&requests)
    .bind(&results)
    .bind(&errors)
    .bind(&messages)
    .execute(db)
    .await?;
    Ok(())
}

/// Marks an operation finished and audits it (`bulk_operation`, with its action and counts).
pub async fn finish(db: &Db, operation: Uuid) -> sqlx::Result<Operation> {
    let mut tx = db.begin().await?;
    let op: Operation =
        sqlx::query_as("update bulk_operations set finished_at = now() where id = $1 returning *")
            .bind(operation)
            .fetch_one(&mut *tx)
            .await?;
    let data = data_of(&records::BulkOperation {
        operation: op.id,
        action: &op.action,
        total: op.total,
        done: op.done,
        refused: op.refused,
        batch_id: op.batch_id,
    });
    audit::append_unlinked(&mut tx, &op.actor, Event::BulkOperation, data).await?;
    tx.commit().await?;
    Ok(op)
}

/// An operation, if it exists.
pub async fn get(db: &Db, operation: Uuid) -> sqlx::Result<Option<Operation>> {
    sqlx::query_as("select * from bulk_operations where id = $1")
        .bind(operation)
        .fetch_optional(db)
        .await
}

/// Up to `limit` items of an operation after ordinal `after`, in order; only those with one of
/// `results` when given.
pub async fn items(
    db: &Db,
    operation: Uuid,
    after: i32,
    limit: i64,
    results: Option<&[&str]>,
) -> sqlx::Result<Vec<Item>> {
    sqlx::query_as(
        "select ordinal, line, request_id, result, error, message from bulk_items \
         where operation_id = $1 and ordinal > $2 and ($4::text[] is null or result = any($4)) \
         order by ordinal limit $3",
    )
    .bind(operation)
    .bind(after)
    .bind(limit)
    .bind(results)
    .fetch_all(db)
    .await
}

/// How many items of an operation have each result.
pub async fn counts(db: &Db, operation: Uuid) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as(
        "select result, count(*) from bulk_items where operation_id = $1 group by result \
         order by result",
    )
    .bind(operation)
    .fetch_all(db)
    .await
}

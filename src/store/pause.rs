//! The pause switch: one row saying whether upstream work is paused, since when, by whom and
//! why (`migrations/0022_pause.sql`). Every process that calls the aggregator reads it
//! (`engine::pause`); a change is audited in the same transaction. Holds no personal data: the
//! reason is checked free text, the actor a key or person id.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::{Db, audit};
use crate::domain::events::Event;
use crate::domain::events::data_of;
use crate::domain::records;

/// Whether upstream work is paused.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema, sqlx::FromRow)]
pub struct Pause {
    /// While true, no process starts an upstream call: calls in flight finish and are recorded,
    /// intake and reads go on, and due dates do not move.
    pub paused: bool,
    /// Why it was paused (while paused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Since when (while paused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// Who paused it: `key:<id>` or `person:<id>` (while paused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// The switch as it is now.
pub async fn current(db: &Db) -> sqlx::Result<Pause> {
    sqlx::query_as("select paused, reason, since, by_actor as by from upstream_pause")
        .fetch_one(db)
        .await
}

/// Pauses (`paused`, with its `reason`) or resumes upstream work for `actor`, auditing the change
/// (`upstream_paused` or `upstream_resumed`, with the reason). Returns the switch as it is now,
/// and whether this call changed it (pausing what is paused changes nothing, and is not audited
/// again).
pub async fn set(
    db: &Db,
    paused: bool,
    reason: Option<&str>,
    actor: &str,
) -> sqlx::Result<(Pause, bool)> {
    let mut tx = db.begin().await?;
    let now: Pause = sqlx::query_as(
        "select paused, reason, since, by_actor as by from upstream_pause for update",
    )
    .fetch_one(&mut *tx)
    .await?;
    if now.paused == paused {
        return Ok((now, false));
    }
    let after: Pause = sqlx::query_as(
        "update upstream_pause set paused = $1, \
             reason = case when $1 then $2 end, since = case when $1 then now() end, \
             by_actor = case when $1 then $3 end \
         returning paused, reason, since, by_actor as by",
    )
    .bind(paused)
    .bind(reason)
    .bind(actor)
    .fetch_one(&mut *tx)
    .await?;
    let event = if paused {
        Event::UpstreamPaused
    } else {
        Event::UpstreamResumed
    };
    let data = data_of(&records::PauseChanged { reason });
    audit::append_unlinked(&mut tx, actor, event, data).await?;
    tx.commit().await?;
    Ok((after, true))
}

//! Re-verification runs (the `reverifications` table) and the look-ups a run makes: starting one
//! at a time when due, ending it with its figures and audit entry, finding a completed erasure of
//! a target listed again. It never calls the upstream and never sees a raw target id: targets
//! come in as their pseudonyms.

use crate::domain::events::Event;
use crate::domain::events::data_of;
use crate::domain::records;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::Db;
use super::audit;
use super::epochs::live_epoch;
use super::guard::GUARD;
use super::requests::of_target;

/// A run still marked running after this long was cut short (its process stopped).
const ABANDONED_AFTER: &str = "6 hours";

/// Marks as errors the runs still running after `ABANDONED_AFTER` (their process stopped).
pub async fn abandon_stale(db: &Db) -> sqlx::Result<()> {
    let abandoned = format!(
        "update reverifications set state = 'error', finished_at = now(), \
             error = 'the process running it stopped' \
         where state = 'running' and started_at < now() - interval '{ABANDONED_AFTER}'"
    );
    sqlx::query(sqlx::AssertSqlSafe(abandoned))
        .execute(db)
        .await?;
    Ok(())
}

/// Starts a run unless one started less than `every` ago (or is running): its id when started.
pub async fn start_if_due(db: &Db, every: Duration) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "insert into reverifications (state) select 'running' \
         where not exists (select 1 from reverifications where started_at > now() - $1) \
         on conflict do nothing returning id",
    )
    .bind(every)
    .fetch_optional(db)
    .await
}

/// How many erasures are completed and still linkable (what a run checks: those of a destroyed
/// pseudonym epoch can no longer be recognised).
pub async fn completed_erasures(db: &Db) -> sqlx::Result<i64> {
    sqlx::query_scalar(concat!(
        "select count(*) from erasure_requests where state = 'completed' and ",
        live_epoch!()
    ))
    .fetch_one(db)
    .await
}

/// How a run ended and what it saw.
#[derive(Debug)]
pub struct Ended<'a> {
    /// `passed`, `failed` (a target was found again) or `error` (the run could not finish).
    pub result: &'a str,
    pub error: Option<&'a str>,
    pub connections_listed: i64,
    pub accounts_listed: i64,
    pub erasures_checked: i64,
    pub found: i64,
}

/// Records the end of run `run_id` and its audit entry, in one transaction.
pub async fn finish(db: &Db, run_id: i64, ended: &Ended<'_>) -> sqlx::Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query(
        "update reverifications set state = $2, finished_at = now(), connections_listed = $3, \
             accounts_listed = $4, erasures_checked = $5, found = $6, error = $7 where id = $1",
    )
    .bind(run_id)
    .bind(ended.result)
    .bind(ended.connections_listed)
    .bind(ended.accounts_listed)
    .bind(ended.erasures_checked)
    .bind(ended.found)
    .bind(ended.error)
    .execute(&mut *tx)
    .await?;
    let data = data_of(&records::ReverificationRun {
        run: run_id,
        result: ended.result,
        erasures_checked: ended.erasures_checked,
        connections_listed: ended.connections_listed,
        accounts_listed: ended.accounts_listed,
        found: ended.found,
    });
    audit::append_unlinked(&mut tx, GUARD, Event::ReverificationRun, data).await?;
    tx.commit().await
}

/// A completed erasure request of a target.
#[derive(Debug, sqlx::FromRow)]
pub struct Erased {
    pub id: Uuid,
    pub subject_ref: String,
}

/// The first erasure of the target (`refs`: its pseudonyms) that completed before `before`.
pub async fn completed_before(
    conn: &mut PgConnection,
    refs: &[String],
    before: DateTime<Utc>,
) -> sqlx::Result<Option<Erased>> {
    sqlx::query_as(concat!(
        of_target!(),
        "select id, subject_ref from of_target \
         where state = 'completed' and completed_at < $2 and ",
        live_epoch!(),
        " order by completed_at limit 1",
    ))
    .bind(refs)
    .bind(before)
    .fetch_optional(conn)
    .await
}

/// The last finished re-verification, as the status page and `/metrics` show it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LastRun {
    /// `passed`, `failed` or `error`.
    pub state: String,
    pub finished_at: DateTime<Utc>,
    /// Erased targets it found upstream again.
    pub found: i64,
}

impl LastRun {
    /// It found nothing erased upstream again and finished.
    pub fn passed(&self) -> bool {
        self.state == "passed"
    }
}

/// The last finished re-verification, if any.
pub async fn last_finished(db: &Db) -> sqlx::Result<Option<LastRun>> {
    sqlx::query_as(
        "select state, finished_at, found from reverifications where finished_at is not null \
         order by id desc limit 1",
    )
    .fetch_optional(db)
    .await
}

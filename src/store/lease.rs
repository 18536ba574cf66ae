//! The one lease and the one claim of every job queue (steps, webhook subscriptions,
//! restorations): a worker claims due rows with `FOR UPDATE SKIP LOCKED`, each then holds a lease
//! (`lease_token = gen_random_uuid()`, `lease_until = now() + lease`), renews it, gives it back,
//! and a queue that needs it has its expired leases rescued. Every write here is fenced by the
//! token: a worker whose lease was taken over changes nothing.
//!
//! A queue is described once, by its module, with [`queue!`]: SQL fragments that are string
//! literals of the store (never input), composed at compile time into the queue's statements. The
//! queue's "due" subquery is its own, so a tuned claim keeps its plan. Never decides when to renew
//! or what a job does (`jobs::lease`, the workers); never commits a transaction it was lent.

use std::time::Duration;

use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgExecutor};
use uuid::Uuid;

/// A held lease: the row's key and the token that fences the holder's writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromRow)]
pub struct Lease<K> {
    pub id: K,
    #[sqlx(rename = "lease_token")]
    pub token: Uuid,
}

/// The type of a queue's key (`int8`, `uuid`).
pub trait Key:
    for<'q> sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Copy + Send
{
}

impl<K> Key for K where
    K: for<'q> sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Copy + Send
{
}

/// A queue's statements, made by [`queue!`] from its description.
#[derive(Debug)]
pub struct Queue {
    /// `$1`: how many at most, `$2`: the lease. Returns what the queue's `then` selects.
    claim: &'static str,
    /// `$1`: key, `$2`: token, `$3`: the lease. Also requires the queue's `held_while`.
    renew: &'static str,
    /// The same renewal without `held_while` (`Renewal::Writing`).
    keep: &'static str,
    /// `$1`: key, `$2`: token.
    release: &'static str,
    /// No parameter; `None` for a queue whose claim takes over lapsed leases itself.
    rescue: Option<&'static str>,
}

/// Describes a queue; every fragment is a string literal:
/// - `table`: the queue's table (keyed by `id`, with `lease_token` and `lease_until`);
/// - `due`: a subquery of the ids to claim, at most `$1` of them, in claim order (it is locked
///   `for update skip locked`; the claimed rows are joined as `q`);
/// - `set`: what a claim sets besides the lease (`", state = 'running'"`, or `""`);
/// - `returning`: the claimed rows' columns (from `q`), and `then`: the rest of the statement,
///   which reads them as `claimed` (further CTEs after a comma, then the final `select`);
/// - `held_while`: a condition a renewal also requires (`" and state = 'enabled'"`, or `""`);
/// - `release`: what giving a lease back sets besides clearing it (`""` or `", …"`);
/// - optionally `rescue: (leased, set)`: how leased rows are told (`"state = 'running'"`) and
///   what a rescue of an expired one sets besides clearing its lease.
macro_rules! queue {
    (
        table: $table:literal,
        due: $due:literal,
        set: $set:literal,
        returning: $returning:literal,
        then: $then:literal,
        held_while: $held:literal,
        release: $release:literal
        $(, rescue: ($leased:literal, $rescued:literal))? $(,)?
    ) => {
        $crate::store::lease::Queue::new(
            concat!(
                "with due as (", $due, " for update skip locked), ",
                "claimed as (update ", $table, " q set lease_token = gen_random_uuid(), ",
                "lease_until = now() + $2", $set, " from due where q.id = due.id ",
                "returning ", $returning, ") ", $then
            ),
            concat!(
                "update ", $table, " set lease_until = now() + $3 ",
                "where id = $1 and lease_token = $2", $held
            ),
            concat!(
                "update ", $table, " set lease_until = now() + $3 ",
                "where id = $1 and lease_token = $2"
            ),
            concat!(
                "update ", $table, " set lease_token = null, lease_until = null", $release,
                " where id = $1 and lease_token = $2"
            ),
            $crate::store::lease::queue!(@rescue $table $(, $leased, $rescued)?),
        )
    };
    (@rescue $table:literal) => { None };
    (@rescue $table:literal, $leased:literal, $rescued:literal) => {
        Some(concat!(
            "update ", $table, " set lease_token = null, lease_until = null", $rescued,
            " where id in (select id from ", $table, " where ", $leased,
            " and lease_until < now() for update skip locked)"
        ))
    };
}
pub(crate) use queue;

impl Queue {
    #[doc(hidden)]
    pub const fn new(
        claim: &'static str,
        renew: &'static str,
        keep: &'static str,
        release: &'static str,
        rescue: Option<&'static str>,
    ) -> Self {
        Self {
            claim,
            renew,
            keep,
            release,
            rescue,
        }
    }
}

/// Claims up to `limit` due rows of `queue`, each leased for `lease`.
pub async fn claim<'c, T>(
    db: impl PgExecutor<'c>,
    queue: &Queue,
    limit: i64,
    lease: Duration,
) -> sqlx::Result<Vec<T>>
where
    T: for<'r> FromRow<'r, PgRow> + Send + Unpin,
{
    sqlx::query_as(queue.claim)
        .bind(limit)
        .bind(lease)
        .fetch_all(db)
        .await
}

/// What a renewal requires besides the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// The queue's `held_while` too: a worker's renewal while it works.
    Working,
    /// The token alone, in a transaction that then writes under the lease: the row stays locked
    /// to the commit, so no claim takes it over in between.
    Writing,
}

/// Extends a lease; false when it is no longer held (or, `Working`, the queue's `held_while` no
/// longer holds).
pub async fn renew<'c, K: Key>(
    db: impl PgExecutor<'c>,
    queue: &Queue,
    held: &Lease<K>,
    lease: Duration,
    renewal: Renewal,
) -> sqlx::Result<bool> {
    let sql = match renewal {
        Renewal::Working => queue.renew,
        Renewal::Writing => queue.keep,
    };
    fenced(db, sql, held, Some(lease)).await
}

/// Gives a lease back (with what the queue sets then); nothing when it is no longer held.
pub async fn release<'c, K: Key>(
    db: impl PgExecutor<'c>,
    queue: &Queue,
    held: &Lease<K>,
) -> sqlx::Result<()> {
    fenced(db, queue.release, held, None).await?;
    Ok(())
}

/// Returns the rows whose lease expired to the queue. Returns how many.
pub async fn rescue<'c>(db: impl PgExecutor<'c>, queue: &Queue) -> sqlx::Result<u64> {
    let Some(sql) = queue.rescue else {
        return Ok(0);
    };
    Ok(sqlx::query(sql).execute(db).await?.rows_affected())
}

async fn fenced<'c, K: Key>(
    db: impl PgExecutor<'c>,
    sql: &'static str,
    held: &Lease<K>,
    lease: Option<Duration>,
) -> sqlx::Result<bool> {
    let mut query = sqlx::query(sql).bind(held.id).bind(held.token);
    if let Some(lease) = lease {
        query = query.bind(lease);
    }
    Ok(query.execute(db).await?.rows_affected() == 1)
}

#[cfg(test)]
mod tests {
    use super::super::{restorations, steps, webhooks};

    #[test]
    fn the_queues_statements_are_composed_as_tuned() {
        // A step's renewal matches on its primary key and token only (`store::steps`).
        assert_eq!(
            steps::QUEUE.renew,
            "update steps set lease_until = now() + $3 where id = $1 and lease_token = $2"
        );
        assert_eq!(steps::QUEUE.renew, steps::QUEUE.keep);
        assert!(steps::QUEUE.claim.starts_with(
            "with due as (select id from steps where state = 'ready' and run_at <= now() \
             order by run_at limit $1 for update skip locked), claimed as (update steps q set \
             lease_token = gen_random_uuid(), lease_until = now() + $2, state = 'running'"
        ));
        assert!(
            webhooks::QUEUE
                .renew
                .ends_with("and lease_token = $2 and state = 'enabled'")
        );
        assert!(webhooks::QUEUE.keep.ends_with("and lease_token = $2"));
        assert!(webhooks::QUEUE.rescue.is_none() && restorations::QUEUE.rescue.is_none());
        assert!(steps::QUEUE.rescue.is_some_and(|sql| sql.contains(
            "where id in (select id from steps where state = 'running' and lease_until < now() \
             for update skip locked)"
        )));
    }
}

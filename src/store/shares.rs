//! The upstream shares (`upstream_shares`): which processes call the upstream, their leases, and
//! what each holds of the deployment's rate and concurrency caps. The statements only: how the
//! caps are split and when a process may raise its holding is `engine::shares`'s.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Db;

/// A live process's row.
#[derive(Debug, Clone, PartialEq)]
pub struct Holder {
    pub process_id: Uuid,
    /// When it registered (the order of shares: oldest first).
    pub started_at: DateTime<Utc>,
    /// Calls a second it may make.
    pub rate: f64,
    /// Calls it may have in flight.
    pub concurrency: u32,
    /// How long its lease still runs (by the database's clock, when read).
    pub lease_left: Duration,
}

/// What a process holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Holding {
    pub rate: f64,
    pub concurrency: u32,
}

/// One round of process `me`, in one transaction under the shares lock: deletes the rows whose
/// lease ran out, renews `me`'s lease for `lease` (registering it with `now` when it has no row,
/// as started at `started`, or now: a process whose row went while it could not renew keeps its
/// place),
/// reads the live rows (oldest process first) and records what `decide` answers from them as
/// `me`'s holding. `decide` runs inside the transaction: nobody else's holding changes until it
/// commits. Returns the rows as read, and `decide`'s own answer.
pub async fn renew<T>(
    db: &Db,
    me: Uuid,
    started: Option<DateTime<Utc>>,
    lease: Duration,
    now: Holding,
    decide: impl FnOnce(&[Holder]) -> (Holding, T),
) -> sqlx::Result<(Vec<Holder>, T)> {
    let mut tx = db.begin().await?;
    super::locks::for_transaction(&mut tx, super::locks::Lock::Shares).await?;
    sqlx::query("delete from upstream_shares where lease_until < now()")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "insert into upstream_shares \
             (process_id, started_at, lease_until, rate, concurrency, host, pid) \
         values ($1, coalesce($7, now()), now() + $2, $3, $4, $5, $6) \
         on conflict (process_id) do update set lease_until = excluded.lease_until",
    )
    .bind(me)
    .bind(lease)
    .bind(now.rate)
    .bind(i32::try_from(now.concurrency).unwrap_or(i32::MAX))
    .bind(host())
    .bind(i32::try_from(std::process::id()).unwrap_or(0))
    .bind(started)
    .execute(&mut *tx)
    .await?;
    let rows: Vec<(Uuid, DateTime<Utc>, f64, i32, f64)> = sqlx::query_as(
        "select process_id, started_at, rate, concurrency, \
                greatest(extract(epoch from lease_until - now()), 0)::float8 \
         from upstream_shares order by started_at, process_id",
    )
    .fetch_all(&mut *tx)
    .await?;
    let holders: Vec<Holder> = rows
        .into_iter()
        .map(|(process_id, started_at, rate, concurrency, left)| Holder {
            process_id,
            started_at,
            rate,
            concurrency: u32::try_from(concurrency).unwrap_or(0),
            lease_left: Duration::from_secs_f64(left),
        })
        .collect();
    let (holding, answer) = decide(&holders);
    sqlx::query("update upstream_shares set rate = $2, concurrency = $3 where process_id = $1")
        .bind(me)
        .bind(holding.rate)
        .bind(i32::try_from(holding.concurrency).unwrap_or(i32::MAX))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok((holders, answer))
}

/// Process `me` stops calling the upstream: its row goes, and what it held is free at once.
pub async fn leave(db: &Db, me: Uuid) -> sqlx::Result<()> {
    sqlx::query("delete from upstream_shares where process_id = $1")
        .bind(me)
        .execute(db)
        .await?;
    Ok(())
}

/// The machine's name, for operators reading the table ('' when unknown).
fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().chars().take(255).collect())
        .unwrap_or_default()
}

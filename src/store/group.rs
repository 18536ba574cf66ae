//! Group commit: writes that many tasks ask for at once are made by a few writers, each taking
//! every job waiting (up to `MAX_GROUP`) and making them in one transaction, so one commit (and
//! one flush of the WAL) carries many. An idle system gives a writer one job at a time, so no job
//! waits for company. Each job is answered only after its group committed. When a group fails,
//! its jobs are retried one by one, so one job's trouble does not become the others'.
//! Used by single intakes (`store::intake`), by the engine's step outcomes (`store::steps`), and,
//! without a transaction, by API key checks (`store::keys`): one query answers every request
//! waiting for its key. The intake writers and key checks keep their connections from one group
//! to the next (`Group::start_connected`); the step outcomes take theirs from the shared pool.
//!
//! Never answers a job before its group committed.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{Connection, PgConnection, Postgres};
use tokio::sync::{Mutex, mpsc, oneshot};

use super::Db;

/// The most jobs one commit carries.
const MAX_GROUP: usize = 256;

/// Jobs accepted but not yet taken by a writer, at most (then `submit` waits).
const QUEUE: usize = 4096;

/// What a group writes.
pub trait Writes: Send + Sync + 'static {
    type Job: Send + Sync + 'static;
    type Out: Send + 'static;

    /// Whether the jobs are made in a transaction of their own (a group that only reads needs
    /// none; one whose writes are one statement, or that opens its own when it needs one, need
    /// not pay its round trips).
    const TRANSACTION: bool = true;

    /// Makes the jobs' writes (in the group's transaction, if `TRANSACTION`); one output per
    /// job, in job order.
    fn write<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        jobs: &'a [Self::Job],
    ) -> impl Future<Output = sqlx::Result<Vec<Self::Out>>> + Send + 'a;

    /// Called once a group committed.
    fn committed(&self, _outs: &[Self::Out]) {}
}

type Queued<W> = (
    <W as Writes>::Job,
    oneshot::Sender<sqlx::Result<<W as Writes>::Out>>,
);

/// The queue in front of the writers; they stop when every clone of it is dropped.
pub struct Group<W: Writes> {
    queue: mpsc::Sender<Queued<W>>,
}

impl<W: Writes> Clone for Group<W> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

impl<W: Writes> Group<W> {
    /// Starts `writers` writers on the current runtime; each takes a connection from `db` for a
    /// group and gives it back after.
    pub fn start(db: Db, what: W, writers: usize) -> Self {
        Self::spawn(db, what, writers, false)
    }

    /// Starts `writers` writers on the current runtime, each with a connection of its own that
    /// it keeps from one group to the next: a pool of `writers` to `db`'s database, connected
    /// when first used (so the sockets belong to this runtime). Taking a connection from a pool
    /// and giving it back costs two round trips (sqlx pings it both ways) and a task; under load
    /// that was as many round trips as the groups' own (BENCHMARKS.md, 2026-11-30).
    pub fn start_connected(db: &Db, what: W, writers: usize) -> Self {
        let writers = writers.max(1);
        Self::spawn(super::lazy_pool(db, writers as u32), what, writers, true)
    }

    fn spawn(db: Db, what: W, writers: usize, keep: bool) -> Self {
        let (queue, waiting) = mpsc::channel(QUEUE);
        let waiting = Arc::new(Mutex::new(waiting));
        let what = Arc::new(what);
        for _ in 0..writers.max(1) {
            let held = Held {
                db: db.clone(),
                keep,
                conn: None,
                used: Instant::now(),
            };
            tokio::spawn(write(held, what.clone(), waiting.clone()));
        }
        Self { queue }
    }

    /// Makes one job's writes; returns once they committed.
    pub async fn submit(&self, job: W::Job) -> sqlx::Result<W::Out> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((job, reply))
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        answer.await.map_err(|_| sqlx::Error::PoolClosed)?
    }
}

/// A writer's way to a connection.
struct Held {
    db: Db,
    /// Whether the connection is kept from one group to the next.
    keep: bool,
    conn: Option<PoolConnection<Postgres>>,
    /// When `conn` was last used.
    used: Instant,
}

/// A kept connection that waited longer than this is pinged before it is used, as the pool does
/// with its idle connections: a connection the database closed (a restart, a terminated backend)
/// is then replaced before a job is sent on it. Under load a writer's groups follow each other
/// closer than this, and nothing is pinged.
const STALE: Duration = Duration::from_millis(10);

impl Held {
    async fn take(&mut self) -> sqlx::Result<PoolConnection<Postgres>> {
        if let Some(mut conn) = self.conn.take() {
            if self.used.elapsed() < STALE || conn.ping().await.is_ok() {
                return Ok(conn);
            }
            // Broken: dropped here, not given back to the pool to fail its test again.
            drop(conn.detach());
        }
        self.db.acquire().await
    }

    /// After a group that committed: keeps the connection, or gives it back to the pool when the
    /// writer keeps none. (After a failure `commit` drops it: back to the pool, which tests it and
    /// closes it if it is broken.)
    fn give_back(&mut self, conn: PoolConnection<Postgres>) {
        if self.keep {
            self.conn = Some(conn);
            self.used = Instant::now();
        }
    }
}

async fn write<W: Writes>(
    mut held: Held,
    what: Arc<W>,
    waiting: Arc<Mutex<mpsc::Receiver<Queued<W>>>>,
) {
    let mut queued = Vec::with_capacity(MAX_GROUP);
    loop {
        // One writer at a time takes what waits; the others write meanwhile.
        if waiting.lock().await.recv_many(&mut queued, MAX_GROUP).await == 0 {
            return;
        }
        let (jobs, replies): (Vec<W::Job>, Vec<_>) = queued.drain(..).unzip();
        match commit(&mut held, &*what, &jobs).await {
            Ok(outs) => {
                what.committed(&outs);
                for (reply, out) in replies.into_iter().zip(outs) {
                    let _ = reply.send(Ok(out));
                }
            }
            Err(e) if jobs.len() == 1 => {
                let _ = replies.into_iter().next().map(|r| r.send(Err(e)));
            }
            // The database is out of reach: it is for every job, and trying them one by one
            // would make the last wait for each one's time-out.
            Err(e) if unavailable(&e).is_some() => {
                for reply in replies {
                    let _ = reply.send(Err(unavailable(&e).unwrap_or(sqlx::Error::PoolTimedOut)));
                }
            }
            Err(_) => {
                for (job, reply) in jobs.into_iter().zip(replies) {
                    let result = commit(&mut held, &*what, std::slice::from_ref(&job)).await;
                    if let Ok(outs) = &result {
                        what.committed(outs);
                    }
                    let _ = reply.send(result.and_then(|mut outs| {
                        outs.pop().ok_or_else(|| {
                            sqlx::Error::Protocol("a group write returned no output".into())
                        })
                    }));
                }
            }
        }
    }
}

/// A copy of an error that says the database is out of reach (the kinds the API answers with
/// 503); `None` for any other error.
fn unavailable(e: &sqlx::Error) -> Option<sqlx::Error> {
    match e {
        sqlx::Error::PoolTimedOut => Some(sqlx::Error::PoolTimedOut),
        sqlx::Error::PoolClosed => Some(sqlx::Error::PoolClosed),
        sqlx::Error::Io(io) => Some(sqlx::Error::Io(std::io::Error::new(
            io.kind(),
            io.to_string(),
        ))),
        _ => None,
    }
}

async fn commit<W: Writes>(
    held: &mut Held,
    what: &W,
    jobs: &[W::Job],
) -> sqlx::Result<Vec<W::Out>> {
    let mut conn = held.take().await?;
    let outs = if W::TRANSACTION {
        let mut tx = conn.begin().await?;
        let outs = one_per_job(what.write(&mut tx, jobs).await?, jobs)?;
        tx.commit().await?;
        outs
    } else {
        one_per_job(what.write(&mut conn, jobs).await?, jobs)?
    };
    held.give_back(conn);
    Ok(outs)
}

fn one_per_job<J, O>(outs: Vec<O>, jobs: &[J]) -> sqlx::Result<Vec<O>> {
    if outs.len() != jobs.len() {
        return Err(sqlx::Error::Protocol(format!(
            "a group write returned {} outputs for {} jobs",
            outs.len(),
            jobs.len()
        )));
    }
    Ok(outs)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct SelectOne;

    impl Writes for SelectOne {
        type Job = u32;
        type Out = i32;

        async fn write(&self, conn: &mut PgConnection, jobs: &[u32]) -> sqlx::Result<Vec<i32>> {
            let one: i32 = sqlx::query_scalar("select 1").fetch_one(conn).await?;
            Ok(jobs.iter().map(|_| one).collect())
        }
    }

    /// With the database out of reach, every job of a group is answered with that at once,
    /// not after one time-out per job (which trying them one by one would take).
    #[tokio::test]
    async fn an_unreachable_database_fails_the_whole_group_at_once() {
        let db = sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(Duration::from_millis(500))
            .connect_lazy("postgres://postgres@127.0.0.1:1/nothing")
            .unwrap();
        let group = Group::start(db, SelectOne, 1);
        let started = Instant::now();
        let results = futures::future::join_all((0..20).map(|n| group.submit(n))).await;
        for result in results {
            let e = result.expect_err("nothing can be written");
            assert!(unavailable(&e).is_some(), "{e:?}");
        }
        // One group, or two if the first job went alone: two time-outs at most; one by one, 20.
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
    }
}

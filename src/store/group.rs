//! Group commit: writes that many tasks ask for at once are made by a few writers, each taking
//! every job waiting (up to `MAX_GROUP`) and making them in one transaction, so one commit (and
//! one flush of the WAL) carries many. An idle system gives a writer one job at a time, so no job
//! waits for company. Each job is answered only after its group committed. When a group fails,
//! its jobs are retried one by one, so one job's trouble does not become the others'.
//! Used by single intakes (`store::intake`) and by the engine's step outcomes (`store::steps`).

use std::future::Future;
use std::sync::Arc;

use sqlx::PgConnection;
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

    /// Makes the jobs' writes in the caller's transaction; one output per job, in job order.
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
    /// Starts `writers` writers on the current runtime.
    pub fn start(db: Db, what: W, writers: usize) -> Self {
        let (queue, waiting) = mpsc::channel(QUEUE);
        let waiting = Arc::new(Mutex::new(waiting));
        let what = Arc::new(what);
        for _ in 0..writers.max(1) {
            tokio::spawn(write(db.clone(), what.clone(), waiting.clone()));
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

async fn write<W: Writes>(db: Db, what: Arc<W>, waiting: Arc<Mutex<mpsc::Receiver<Queued<W>>>>) {
    let mut queued = Vec::with_capacity(MAX_GROUP);
    loop {
        // One writer at a time takes what waits; the others write meanwhile.
        if waiting.lock().await.recv_many(&mut queued, MAX_GROUP).await == 0 {
            return;
        }
        let (jobs, replies): (Vec<W::Job>, Vec<_>) = queued.drain(..).unzip();
        match commit(&db, &*what, &jobs).await {
            Ok(outs) => {
                what.committed(&outs);
                for (reply, out) in replies.into_iter().zip(outs) {
                    let _ = reply.send(Ok(out));
                }
            }
            Err(e) if jobs.len() == 1 => {
                let _ = replies.into_iter().next().map(|r| r.send(Err(e)));
            }
            Err(_) => {
                for (job, reply) in jobs.into_iter().zip(replies) {
                    let result = commit(&db, &*what, std::slice::from_ref(&job)).await;
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

async fn commit<W: Writes>(db: &Db, what: &W, jobs: &[W::Job]) -> sqlx::Result<Vec<W::Out>> {
    let mut tx = db.begin().await?;
    let outs = what.write(&mut tx, jobs).await?;
    if outs.len() != jobs.len() {
        return Err(sqlx::Error::Protocol(format!(
            "a group write returned {} outputs for {} jobs",
            outs.len(),
            jobs.len()
        )));
    }
    tx.commit().await?;
    Ok(outs)
}

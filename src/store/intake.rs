//! Single requests committed together. Concurrent `POST /v1/erasure-requests` (those without an
//! Idempotency-Key) are inserted in groups (`store::group`): under load one statement and one
//! commit carry many requests, where one commit per request queued every intake on the WAL's lock
//! (BENCHMARKS.md).
//!
//! Never answers a request before its group committed.

use std::sync::Arc;

use chrono::Utc;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use super::Db;
use super::group::{Group, Writes};
use super::ready::Ready;
use super::requests::{self, Inserted, NewRequest};

/// One request to insert, with the API key that submits it and its audit actor (`person:<id>`
/// when a person is behind the key, else `key:<id>`: the same for every submission of one key).
pub struct Submission {
    pub item: NewRequest,
    pub requested_by: Uuid,
    pub actor: String,
}

/// Inserts requests with their steps and "received" entries; wakes the workers once committed.
pub struct Intakes {
    ready: Arc<Ready>,
}

pub type Intake = Group<Intakes>;

/// Starts the intake's writers on the current runtime, with connections of their own to `db`'s
/// database.
pub fn start(db: &Db, ready: Arc<Ready>, writers: usize) -> Intake {
    Group::start_connected(db, Intakes { ready }, writers)
}

impl Writes for Intakes {
    type Job = Submission;
    type Out = Inserted;

    /// A group of one submitting key (the usual case) is one statement, atomic on its own: no
    /// `BEGIN` and `COMMIT` round trips. Several keys make a transaction.
    const TRANSACTION: bool = false;

    /// One statement per submitting key; `Created`, or `DuplicateOf` the open request for the
    /// same target (possibly one earlier in the same group).
    async fn write(
        &self,
        conn: &mut PgConnection,
        jobs: &[Submission],
    ) -> sqlx::Result<Vec<Inserted>> {
        if jobs.iter().any(|j| j.requested_by != jobs[0].requested_by) {
            let mut tx = conn.begin().await?;
            let outs = self.insert(&mut tx, jobs).await?;
            tx.commit().await?;
            return Ok(outs);
        }
        self.insert(conn, jobs).await
    }

    fn committed(&self, _: &[Inserted]) {
        self.ready.ring();
    }
}

impl Intakes {
    async fn insert(
        &self,
        conn: &mut PgConnection,
        jobs: &[Submission],
    ) -> sqlx::Result<Vec<Inserted>> {
        let received_at = Utc::now();
        let mut results: Vec<Option<Inserted>> = (0..jobs.len()).map(|_| None).collect();
        for first in 0..jobs.len() {
            if results[first].is_some() {
                continue;
            }
            let by = jobs[first].requested_by;
            let same: Vec<usize> = (first..jobs.len())
                .filter(|&n| results[n].is_none() && jobs[n].requested_by == by)
                .collect();
            let items: Vec<NewRequest> = same.iter().map(|&n| jobs[n].item.clone()).collect();
            let actor = &jobs[first].actor;
            let inserted =
                requests::insert_many(conn, &items, by, actor, None, received_at).await?;
            for (n, result) in same.into_iter().zip(inserted) {
                results[n] = Some(result);
            }
        }
        Ok(results.into_iter().flatten().collect())
    }
}

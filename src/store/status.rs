//! The figures of the status page (`console::dashboard`): counts and short lists over requests, steps,
//! resurrections and re-verifications, read together for people watching the service.
//!
//! Read only: never writes. Never returns personal data: request ids, states, times, counts and
//! the reasons the engine recorded (which name no target).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Db;
use super::requests::{at_risk, closed_states, days_param};
use super::reverify::LastRun;
use crate::domain::{Scope, State, StepKind};

/// What the status page shows, as of one reading.
#[derive(Debug, Clone)]
pub struct Status {
    /// Requests in each state (a state with none is absent).
    pub by_state: HashMap<State, i64>,
    /// Open requests past their due date, the most overdue first (at most 100).
    pub overdue: Vec<DueRequest>,
    /// Open requests at risk (`requests::at_risk!`), the soonest due first (at most 100).
    pub at_risk: Vec<AtRiskRequest>,
    /// Failed requests by reason, the commonest first (at most 20).
    pub failures: Vec<ReasonCount>,
    /// Steps waiting to retry, by their last error, the commonest first (at most 20).
    pub retrying: Vec<ReasonCount>,
    /// Batches with requests still open, the newest first (at most 20).
    pub batches: Vec<RunningBatch>,
    /// Resurrections detected (and erased again).
    pub resurrections: i64,
    /// The last re-verification that finished.
    pub last_reverification: Option<LastRun>,
}

impl Status {
    /// How many requests are in `state`.
    pub fn count(&self, state: State) -> i64 {
        self.by_state.get(&state).copied().unwrap_or(0)
    }
}

/// An open request with its due date.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DueRequest {
    pub id: Uuid,
    pub scope: Scope,
    pub state: State,
    pub received_at: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
}

/// An open request at risk, with its current step (the last one stored) and that step's last
/// error, if any.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AtRiskRequest {
    #[sqlx(flatten)]
    pub request: DueRequest,
    pub step: Option<StepKind>,
    pub last_error: Option<String>,
}

/// How many share one reason.
#[derive(Debug, Clone)]
pub struct ReasonCount {
    pub reason: String,
    pub count: i64,
}

impl From<(String, i64)> for ReasonCount {
    fn from((reason, count): (String, i64)) -> Self {
        Self { reason, count }
    }
}

/// A batch with requests still open.
#[derive(Debug, Clone)]
pub struct RunningBatch {
    pub batch_id: Uuid,
    pub total: i64,
    /// Its requests completed, failed or cancelled.
    pub done: i64,
    /// When its first request was received.
    pub received_at: DateTime<Utc>,
}

/// The open requests whose due date meets `$when` (SQL on `due_at`), the soonest due first, at
/// most 100: read by the partial index of open requests by due date.
macro_rules! open_due {
    ($when:literal) => {
        concat!(
            "select id, scope, state, received_at, due_at from erasure_requests \
             where state not in ",
            closed_states!(),
            " and ",
            $when,
            " order by due_at limit 100"
        )
    };
}

/// Reads the figures of the status page, with requests at risk from `at_risk_days` before their
/// due date.
pub async fn read(db: &Db, at_risk_days: u32) -> sqlx::Result<Status> {
    let by_state: Vec<(State, i64)> =
        sqlx::query_as("select state, count(*) from erasure_requests group by state")
            .fetch_all(db)
            .await?;
    let overdue = sqlx::query_as(open_due!("due_at < now()"))
        .fetch_all(db)
        .await?;
    let at_risk = sqlx::query_as(concat!(
        "select r.id, r.scope, r.state, r.received_at, r.due_at, s.kind as step, s.last_error \
         from erasure_requests r left join lateral \
             (select kind, last_error from steps where request_id = r.id \
              order by ordinal desc limit 1) s on true \
         where ",
        at_risk!("$1"),
        " order by r.due_at limit 100"
    ))
    .bind(days_param(at_risk_days))
    .fetch_all(db)
    .await?;
    let failures: Vec<(String, i64)> = sqlx::query_as(
        "select coalesce(failure_reason, 'no reason recorded'), count(*) from erasure_requests \
         where state = 'failed' group by 1 order by 2 desc limit 20",
    )
    .fetch_all(db)
    .await?;
    let retrying: Vec<(String, i64)> = sqlx::query_as(
        "select last_error, count(*) from steps where state = 'ready' and last_error is not null \
         group by 1 order by 2 desc limit 20",
    )
    .fetch_all(db)
    .await?;
    let batches: Vec<(Uuid, i64, i64, DateTime<Utc>)> = sqlx::query_as(
        "select batch_id, count(*), count(*) filter (where state in ('completed', 'failed', 'cancelled')), \
             min(received_at) \
         from erasure_requests where batch_id in \
             (select distinct batch_id from erasure_requests where batch_id is not null \
              and state not in ('completed', 'failed', 'cancelled')) \
         group by batch_id order by 4 desc limit 20",
    )
    .fetch_all(db)
    .await?;
    let resurrections = sqlx::query_scalar("select count(*) from resurrections")
        .fetch_one(db)
        .await?;
    let last_reverification = super::reverify::last_finished(db).await?;
    Ok(Status {
        by_state: by_state.into_iter().collect(),
        overdue,
        at_risk,
        failures: failures.into_iter().map(ReasonCount::from).collect(),
        retrying: retrying.into_iter().map(ReasonCount::from).collect(),
        batches: batches
            .into_iter()
            .map(|(batch_id, total, done, received_at)| RunningBatch {
                batch_id,
                total,
                done,
                received_at,
            })
            .collect(),
        resurrections,
        last_reverification,
    })
}

//! The figures `GET /metrics` reads from the database at scrape time, the same from every process:
//! requests by state and scope, due dates, step jobs, the audit log, the resurrection guard,
//! restorations and re-verification. Only counts, ages and times keyed by fixed vocabularies
//! (states, scopes): it must never return an id, a pseudonym, a reference or anything personal.

use chrono::{DateTime, Utc};

use super::Db;
use super::guard::RECURRING;
use super::requests::{at_risk, closed_states, days_param};
use super::reverify::LastRun;
use crate::domain::{Scope, State};

/// Everything `/metrics` shows from the database, read at once.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// Requests by state and scope (only the pairs that have any).
    pub requests: Vec<(State, Scope, i64)>,
    /// Open requests past their due date.
    pub overdue: i64,
    /// Open requests due within the next 7 days.
    pub due_within_7_days: i64,
    /// Open requests at risk (`requests::at_risk!`).
    pub at_risk: i64,
    pub jobs: Jobs,
    /// Highest audit entry id.
    pub audit_entries: i64,
    /// Audit entries sequenced into the Merkle tree.
    pub audit_tree_size: i64,
    /// Seconds since the last signed checkpoint; `None` before the first one.
    pub checkpoint_age_seconds: Option<f64>,
    /// Erased accounts listed again upstream.
    pub resurrections: i64,
    /// Connections whose erased accounts came back at least `RECURRING` times.
    pub recurring_connections: i64,
    /// Restorations by state (only the states that have any).
    pub restorations: Vec<(RestorationState, i64)>,
    /// The last finished re-verification, if any.
    pub last_reverification: Option<LastRun>,
    /// Id of the last upstream event the guard applied.
    pub event_cursor: i64,
    /// Webhook subscriptions and their outbox.
    pub webhooks: super::webhooks::Figures,
    /// Pseudonym key epochs, live and destroyed.
    pub epochs: super::epochs::Figures,
    /// Since when upstream work is paused (`store::pause`), if it is.
    pub paused_since: Option<DateTime<Utc>>,
}

/// Step jobs that are not finished.
#[derive(Debug, Clone, Copy, Default, sqlx::FromRow)]
pub struct Jobs {
    /// Ready, never failed.
    pub queued: i64,
    /// Leased by a worker.
    pub running: i64,
    /// Ready again after a failure.
    pub retrying: i64,
    /// The request is held or awaits approval.
    pub paused: i64,
}

/// The states of a restoration (the `restorations.state` check constraint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, sqlx::Type, strum::IntoStaticStr)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum RestorationState {
    Pending,
    Waiting,
    Completed,
    Failed,
    TimedOut,
}

impl RestorationState {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Reads every figure of `/metrics` from the database, with requests at risk from
/// `at_risk_days` before their due date.
pub async fn figures(db: &Db, at_risk_days: u32) -> sqlx::Result<Figures> {
    let requests = sqlx::query_as(
        "select state, scope, count(*) from erasure_requests group by state, scope order by 1, 2",
    )
    .fetch_all(db)
    .await?;

    let (overdue, due_within_7_days, at_risk): (i64, i64, i64) = sqlx::query_as(concat!(
        "select count(*) filter (where due_at < now()), \
                count(*) filter (where ",
        at_risk!("7"),
        "), count(*) filter (where ",
        at_risk!("$1"),
        ") from erasure_requests where state not in ",
        closed_states!(),
    ))
    .bind(days_param(at_risk_days))
    .fetch_one(db)
    .await?;

    let jobs: Jobs = sqlx::query_as(
        "select count(*) filter (where state = 'ready' and last_error is null) as queued, \
                count(*) filter (where state = 'running') as running, \
                count(*) filter (where state = 'ready' and last_error is not null) as retrying, \
                count(*) filter (where state = 'paused') as paused \
         from steps where state in ('ready', 'running', 'paused')",
    )
    .fetch_one(db)
    .await?;

    let (audit_entries, audit_tree_size, checkpoint_age_seconds): (i64, i64, Option<f64>) =
        sqlx::query_as(
            "select (select coalesce(max(id), 0) from audit_entries), \
                    (select coalesce(max(leaf_index) + 1, 0) from audit_leaves), \
                    (select extract(epoch from now() - max(created_at))::float8 \
                     from audit_checkpoints)",
        )
        .fetch_one(db)
        .await?;

    let (resurrections, recurring_connections): (i64, i64) = sqlx::query_as(
        "select (select count(*) from resurrections), \
                (select count(*) from (select connection_ref from resurrections \
                 where connection_ref is not null group by connection_ref \
                 having count(*) >= $1) c)",
    )
    .bind(RECURRING)
    .fetch_one(db)
    .await?;

    let restorations =
        sqlx::query_as("select state, count(*) from restorations group by state order by 1")
            .fetch_all(db)
            .await?;

    let last_reverification = super::reverify::last_finished(db).await?;

    let event_cursor = super::guard::cursor(db).await?;

    Ok(Figures {
        requests,
        overdue,
        due_within_7_days,
        at_risk,
        jobs,
        audit_entries,
        audit_tree_size,
        checkpoint_age_seconds,
        resurrections,
        recurring_connections,
        restorations,
        last_reverification,
        event_cursor,
        webhooks: super::webhooks::figures(db).await?,
        epochs: super::epochs::figures(db).await?,
        paused_since: super::pause::current(db).await?.since,
    })
}

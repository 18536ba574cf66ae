//! The status page (`/`): counts by state, what is overdue and what is at risk (with its current
//! step's last error), failures by reason, daily intake and completions, running batches and the
//! resurrection guard's figures, and the pause switch of upstream work; the sign-in form when no
//! session is open. Any role may read it.

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use askama::Template;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::session::{self, Form, field, sign_in_page};
use super::{Chrome, Failure, render, see_other};
use crate::api::AppState;
use crate::app::pause as app;
use crate::audit::report::{Chart, chart};
use crate::audit::retention;
use crate::domain::{Role, State};
use crate::store;
use crate::store::status::{DueRequest, ReasonCount};

/// A request in a table of the console, with its due date said for people.
pub struct DueRow {
    pub id: Uuid,
    pub scope: &'static str,
    pub state: &'static str,
    pub received: String,
    pub due: String,
    pub late: bool,
    pub step: &'static str,
    pub error: String,
}

impl DueRow {
    pub fn new(
        id: Uuid,
        scope: &'static str,
        state: &'static str,
        received_at: DateTime<Utc>,
        due_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> DueRow {
        let days = (due_at - now).num_days();
        let late = due_at < now;
        let due = if late {
            format!("{} ({} days late)", due_at.format("%Y-%m-%d"), -days)
        } else {
            format!("{} (in {days} days)", due_at.format("%Y-%m-%d"))
        };
        DueRow {
            id,
            scope,
            state,
            received: received_at.format("%Y-%m-%d %H:%M").to_string(),
            due,
            late,
            step: "",
            error: String::new(),
        }
    }

    fn of(r: &DueRequest, now: DateTime<Utc>) -> DueRow {
        DueRow::new(
            r.id,
            r.scope.as_str(),
            r.state.as_str(),
            r.received_at,
            r.due_at,
            now,
        )
    }
}

pub struct BatchRow {
    pub id: Uuid,
    pub received: String,
    pub done: i64,
    pub total: i64,
    pub percent: String,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct Dashboard {
    chrome: Chrome,
    counts: Vec<(&'static str, String, i64)>,
    overdue: Vec<DueRow>,
    at_risk_days: u32,
    at_risk: Vec<DueRow>,
    failures: Vec<ReasonCount>,
    retrying: Vec<ReasonCount>,
    chart: Chart,
    batches: Vec<BatchRow>,
    resurrections: i64,
    last_reverification: String,
    /// Webhook subscriptions the service disabled (their retries were spent): an alert.
    webhooks_disabled: Vec<crate::store::webhooks::Subscription>,
    /// The retention and the oldest live pseudonym epoch.
    retention: String,
    now: String,
}

/// The status page, or the sign-in form.
#[get("/")]
pub async fn home(
    state: web::Data<AppState>,
    sign_in: web::Data<super::oidc::SignIn>,
    req: HttpRequest,
) -> Result<HttpResponse, Failure> {
    let Some(session) = session::current(&state, &req).await? else {
        return sign_in_page(&sign_in, None);
    };
    let db = &state.db;
    let now = Utc::now();
    let figures = store::status::read(db, state.at_risk_days).await?;
    let midnight = now
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc();
    let days = store::audit::daily(db, midnight - chrono::Duration::days(29), now).await?;
    let counts = [
        State::PendingApproval,
        State::Queued,
        State::InProgress,
        State::OnHold,
        State::Failed,
        State::Completed,
        State::Cancelled,
    ]
    .into_iter()
    .map(|s| (s.as_str(), s.as_str().replace('_', " "), figures.count(s)))
    .collect();
    let at_risk = figures
        .at_risk
        .iter()
        .map(|r| DueRow {
            step: r.step.map_or("", |s| s.as_str()),
            error: r.last_error.clone().unwrap_or_default(),
            ..DueRow::of(&r.request, now)
        })
        .collect();
    let batches = figures
        .batches
        .iter()
        .map(|b| BatchRow {
            id: b.batch_id,
            received: b.received_at.format("%Y-%m-%d %H:%M").to_string(),
            done: b.done,
            total: b.total,
            percent: format!("{:.1}", b.done as f64 * 100.0 / b.total.max(1) as f64),
        })
        .collect();
    let last_reverification = match &figures.last_reverification {
        Some(run) => format!(
            "{} at {}",
            run.state,
            run.finished_at.format("%Y-%m-%d %H:%M UTC")
        ),
        None => "not yet run".into(),
    };
    render(&Dashboard {
        chrome: session.chrome("Status"),
        counts,
        overdue: figures.overdue.iter().map(|r| DueRow::of(r, now)).collect(),
        at_risk_days: state.at_risk_days,
        at_risk,
        failures: figures.failures,
        retrying: figures.retrying,
        chart: chart(&days),
        batches,
        resurrections: figures.resurrections,
        last_reverification,
        webhooks_disabled: store::webhooks::disabled(db).await?,
        retention: retention::statement(state.retention_days, &store::epochs::figures(db).await?),
        now: now.format("%Y-%m-%d %H:%M:%S").to_string(),
    })
}

/// Pauses all upstream work (as `POST /v1/pause`; approvers and admins).
#[post("/pause")]
pub async fn pause(
    state: web::Data<AppState>,
    Form { session, fields }: Form,
) -> Result<HttpResponse, Failure> {
    let principal = session.require(&[Role::Approver])?;
    app::pause_all(&state, principal, field(&fields, "reason").unwrap_or("")).await?;
    Ok(see_other("/#pause"))
}

/// Resumes upstream work (as `POST /v1/resume`; admins).
#[post("/resume")]
pub async fn resume(
    state: web::Data<AppState>,
    Form { session, .. }: Form,
) -> Result<HttpResponse, Failure> {
    let principal = session.require(&[])?;
    app::resume_all(&state, principal, None).await?;
    Ok(see_other("/#pause"))
}

//! The status page for compliance officers: server-rendered HTML with inline CSS and SVG (no
//! scripts, no external assets). `/` asks for an API key once (any role), kept in an HttpOnly,
//! SameSite=Strict cookie, then shows counts by state, what is overdue and what is at risk (due
//! within `ERASURE_AT_RISK_DAYS`, with its current step's last error; each request links to its
//! own page), recent failures by reason, daily intake and completions, and running batches.

use std::fmt::Write;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use crate::audit::report::{self, esc};
use crate::domain::State;
use crate::store;
use crate::store::audit::Event;
use crate::store::reverify::LastRun;
use crate::store::status::{DueRequest, ReasonCount, RunningBatch};

const COOKIE: &str = "erasure_key";

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;color:#1b1f24;max-width:72rem}\
h1{font-size:1.5rem}h2{font-size:1.1rem;margin-top:2rem}table{border-collapse:collapse;width:100%}\
th,td{text-align:left;padding:.3rem .6rem;border-bottom:1px solid #ddd;font-size:.9rem}\
.cards{display:flex;flex-wrap:wrap;gap:.8rem}.card{border:1px solid #ccd;border-radius:6px;padding:.6rem 1rem;min-width:7rem}\
.card b{display:block;font-size:1.4rem}.late{color:#b00020}.muted{color:#667}\
.bar{background:#e8e8f0;border-radius:4px;height:.8rem;width:16rem}.bar span{display:block;height:100%;background:#2b6cb0;border-radius:4px}\
form.inline{display:inline}svg{width:100%;max-width:48rem;height:auto}\
.legend span{display:inline-block;width:.9em;height:.9em;margin:0 .3em 0 1em;vertical-align:-.1em}";

fn page(title: &str, body: &str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'"))
        .insert_header(("Cache-Control", "no-store"))
        .body(format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\
             <link rel=\"icon\" href=\"data:,\"><style>{STYLE}</style></head><body>{body}</body></html>",
            esc(title)
        ))
}

fn login_page(message: Option<&str>) -> HttpResponse {
    let note = message
        .map(|m| format!("<p class=\"late\">{}</p>", esc(m)))
        .unwrap_or_default();
    let mut response = page(
        "erasure: sign in",
        &format!(
            "<h1>erasure status</h1>{note}<form method=\"post\" action=\"/login\">\
             <label>API key <input type=\"password\" name=\"key\" autocomplete=\"off\" size=\"60\"></label> \
             <button type=\"submit\">Sign in</button></form>\
             <p class=\"muted\">Any role may read this page. The key is kept in an HttpOnly cookie for 8 hours.</p>"
        ),
    );
    if message.is_some() {
        *response.status_mut() = actix_web::http::StatusCode::UNAUTHORIZED;
    }
    response
}

/// Whether the request's cookie holds a valid key.
async fn signed_in(state: &AppState, req: &HttpRequest) -> Result<bool, ApiError> {
    let Some(cookie) = req.cookie(COOKIE) else {
        return Ok(false);
    };
    Ok(state
        .keys
        .submit(cookie.value().to_string())
        .await?
        .is_some())
}

fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to))
        .finish()
}

/// Signs in with an API key sent by the form.
#[post("/login")]
pub async fn login(state: web::Data<AppState>, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    if body.len() > 4096 {
        return Ok(login_page(Some("That is not an API key.")));
    }
    let key = form_urlencoded::parse(&body)
        .find(|(name, _)| name == "key")
        .map(|(_, value)| value.trim().to_string())
        .unwrap_or_default();
    if state.keys.submit(key.clone()).await?.is_none() {
        return Ok(login_page(Some("Unknown, revoked or expired API key.")));
    }
    let cookie = Cookie::build(COOKIE, key)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .max_age(actix_web::cookie::time::Duration::hours(8))
        .finish();
    let mut response = see_other("/");
    response
        .add_cookie(&cookie)
        .map_err(|e| ApiError::Internal(e.into()))?;
    Ok(response)
}

#[post("/logout")]
pub async fn logout() -> HttpResponse {
    let mut response = see_other("/");
    let mut cookie = Cookie::new(COOKIE, "");
    cookie.set_path("/");
    cookie.make_removal();
    let _ = response.add_cookie(&cookie);
    response
}

/// Requests as a table, each row with its further cells (`heads` names their columns).
fn request_rows<'a>(
    rows: impl IntoIterator<Item = (&'a DueRequest, String)>,
    heads: &str,
    now: DateTime<Utc>,
) -> String {
    let mut rows = rows.into_iter().peekable();
    if rows.peek().is_none() {
        return "<p class=\"muted\">None.</p>".into();
    }
    let mut html = format!(
        "<table><tr><th>request</th><th>scope</th><th>state</th><th>received</th><th>due</th>{heads}</tr>",
    );
    for (r, cells) in rows {
        let (id, due) = (r.id, r.due_at);
        let days = (due - now).num_days();
        let due_text = if due < now {
            format!(
                "<span class=\"late\">{} ({} days late)</span>",
                due.format("%Y-%m-%d"),
                -days
            )
        } else {
            format!("{} (in {days} days)", due.format("%Y-%m-%d"))
        };
        let _ = write!(
            html,
            "<tr><td><a href=\"/requests/{id}\">{id}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{due_text}</td>{cells}</tr>",
            r.scope.as_str(),
            r.state.as_str(),
            r.received_at.format("%Y-%m-%d %H:%M")
        );
    }
    html.push_str("</table>");
    html
}

/// The status page (or the sign-in form).
#[get("/")]
pub async fn status(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    if !signed_in(&state, &req).await? {
        return Ok(login_page(None));
    }
    let db = &state.db;
    let now = Utc::now();
    let mut body = String::from(
        "<h1>erasure status</h1><form class=\"inline\" method=\"post\" action=\"/logout\"><button>Sign out</button></form>",
    );

    let figures = store::status::read(db, state.at_risk_days).await?;
    body.push_str("<h2>Requests by state</h2><div class=\"cards\">");
    for s in [
        State::PendingApproval,
        State::Queued,
        State::InProgress,
        State::OnHold,
        State::Failed,
        State::Completed,
        State::Cancelled,
    ] {
        let name = s.as_str();
        let _ = write!(
            body,
            "<div class=\"card\" id=\"count-{name}\"><b>{}</b>{}</div>",
            figures.count(s),
            name.replace('_', " ")
        );
    }
    body.push_str("</div>");

    let _ = write!(
        body,
        "<h2 id=\"overdue\">Overdue ({})</h2>{}",
        figures.overdue.len(),
        request_rows(figures.overdue.iter().map(|r| (r, String::new())), "", now)
    );
    let at_risk = figures.at_risk.iter().map(|r| {
        let step = r.step.map_or("", |s| s.as_str());
        let error = esc(r.last_error.as_deref().unwrap_or(""));
        (&r.request, format!("<td>{step}</td><td>{error}</td>"))
    });
    let _ = write!(
        body,
        "<h2 id=\"at-risk\">At risk: due within {} days ({})</h2>{}",
        state.at_risk_days,
        figures.at_risk.len(),
        request_rows(at_risk, "<th>step</th><th>last error</th>", now)
    );

    body.push_str("<h2 id=\"failures\">Failures by reason</h2>");
    if figures.failures.is_empty() && figures.retrying.is_empty() {
        body.push_str("<p class=\"muted\">None.</p>");
    } else {
        body.push_str(
            "<table><tr><th>reason</th><th>failed requests</th><th>steps retrying</th></tr>",
        );
        for ReasonCount { reason, count: n } in &figures.failures {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{n}</td><td></td></tr>",
                esc(reason)
            );
        }
        for ReasonCount { reason, count: n } in &figures.retrying {
            let _ = write!(
                body,
                "<tr><td>{}</td><td></td><td>{n}</td></tr>",
                esc(reason)
            );
        }
        body.push_str("</table>");
    }

    let midnight = now
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc();
    let days = store::audit::daily(db, midnight - chrono::Duration::days(29), now).await?;
    body.push_str("<h2>Daily intake and completions</h2>");
    body.push_str(&report::chart(&days));

    body.push_str("<h2 id=\"batches\">Running batches</h2>");
    if figures.batches.is_empty() {
        body.push_str("<p class=\"muted\">None.</p>");
    }
    for RunningBatch {
        batch_id,
        total,
        done,
        received_at,
    } in figures.batches
    {
        let pct = done as f64 * 100.0 / total.max(1) as f64;
        let _ = write!(
            body,
            "<p>batch {batch_id} (received {}): {done} of {total} done \
             <span class=\"bar\" style=\"display:inline-block\"><span style=\"width:{pct:.1}%\"></span></span></p>",
            received_at.format("%Y-%m-%d %H:%M")
        );
    }

    let _ = write!(
        body,
        "<h2>Erasures that stay erased</h2><p>Resurrections detected and erased again: {}. \
         Last re-verification: {}.</p>",
        figures.resurrections,
        match figures.last_reverification {
            Some(LastRun {
                state, finished_at, ..
            }) => format!(
                "{} at {}",
                esc(&state),
                finished_at.format("%Y-%m-%d %H:%M UTC")
            ),
            None => "not yet run".into(),
        }
    );
    body.push_str(&webhooks_section(&store::webhooks::disabled(db).await?));
    let _ = write!(
        body,
        "<p class=\"muted\">As of {} UTC. Machine-readable: <code>/v1/erasure-requests</code>, <code>/metrics</code>.</p>",
        now.format("%Y-%m-%d %H:%M:%S")
    );
    Ok(page("erasure status", &body))
}

/// Webhook subscriptions the service disabled (their retries were spent): an alert, shown only
/// when there is one.
pub fn webhooks_section(disabled: &[crate::store::webhooks::Subscription]) -> String {
    if disabled.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "<h2 id=\"webhooks\">Webhooks disabled ({})</h2><table><tr><th>subscription</th>\
         <th>disabled at</th><th>why</th></tr>",
        disabled.len()
    );
    for s in disabled {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            s.id,
            s.disabled_at
                .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
                .unwrap_or_default(),
            esc(s.disabled_reason.as_deref().unwrap_or(""))
        );
    }
    out.push_str(
        "</table><p>Mend the receiver, send the failed event again (<code>POST /v1/webhooks/{id}/redeliver</code>; \
         it goes first), then enable the subscription (<code>PATCH /v1/webhooks/{id}</code>).</p>",
    );
    out
}

/// One request, for people: its state, steps, attempts and audit events (no personal data).
#[get("/requests/{id}")]
pub async fn request(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    if !signed_in(&state, &req).await? {
        return Ok(see_other("/"));
    }
    let Ok(id) = Uuid::parse_str(&path) else {
        return Ok(HttpResponse::NotFound()
            .content_type("text/html; charset=utf-8")
            .body("not found"));
    };
    let Some(r) = store::requests::get(&state.db, id).await? else {
        return Ok(HttpResponse::NotFound()
            .content_type("text/html; charset=utf-8")
            .body("not found"));
    };
    let mut body = format!(
        "<p><a href=\"/\">&larr; status</a></p><h1>request {}</h1><table>\
         <tr><th>scope</th><td>{}</td></tr><tr><th>state</th><td>{}</td></tr>\
         <tr><th>subject</th><td><code>{}</code></td></tr>\
         <tr><th>received</th><td>{}</td></tr><tr><th>due</th><td>{}</td></tr>\
         <tr><th>completed</th><td>{}</td></tr><tr><th>failure</th><td>{}</td></tr>\
         <tr><th>resurrections</th><td>{}</td></tr></table><h2>Steps</h2><table>\
         <tr><th>step</th><th>state</th><th>attempts</th><th>last error</th></tr>",
        r.id,
        r.scope.as_str(),
        r.state.as_str(),
        esc(&r.subject_ref),
        r.received_at.format("%Y-%m-%d %H:%M UTC"),
        r.due_at.format("%Y-%m-%d %H:%M UTC"),
        r.completed_at
            .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_default(),
        esc(r.failure_reason.as_deref().unwrap_or("")),
        r.resurrections,
    );
    for s in &r.steps {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{:?}</td><td>{}</td><td>{}</td></tr>",
            s.kind.as_str(),
            s.state,
            s.attempts,
            esc(s.last_error.as_deref().unwrap_or(""))
        );
    }
    body.push_str(
        "</table><h2>Audit events</h2><table><tr><th>time</th><th>event</th><th>actor</th></tr>",
    );
    for Event { at, event, actor } in store::audit::events_of(&state.db, id).await? {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            at.format("%Y-%m-%d %H:%M:%S%.3f"),
            esc(&event),
            esc(&actor)
        );
    }
    body.push_str("</table>");
    Ok(page(&format!("request {id}"), &body))
}

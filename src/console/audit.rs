//! The audit page (auditors): the report of a chosen period opened in the browser, an export
//! of a period to download, and the verifier key. Both are the API's own `GET /v1/audit/report`
//! and `/v1/audit/export`, which accept the session cookie for reads: this page only turns the
//! dates people pick into the API's times.

use actix_web::{HttpRequest, HttpResponse, get, web};
use askama::Template;
use chrono::{NaiveDate, Utc};

use super::session::Session;
use super::{Chrome, Failure, render, see_other};
use crate::api::AppState;
use crate::app::error::ApiError;
use crate::domain::Role;

#[derive(Template)]
#[template(path = "audit.html")]
struct Page {
    chrome: Chrome,
    from: String,
    to: String,
    public_key: String,
}

/// The audit page.
#[get("/audit")]
pub async fn page(state: web::Data<AppState>, session: Session) -> Result<HttpResponse, Failure> {
    session.require(&[Role::Auditor])?;
    let today = Utc::now().date_naive();
    render(&Page {
        chrome: session.chrome("Audit"),
        from: (today - chrono::Duration::days(30)).to_string(),
        to: today.to_string(),
        public_key: state.audit.signer().verifier_key(),
    })
}

/// The period of the form as the API's `from` and `to` (the last day included).
fn period(req: &HttpRequest) -> Result<Vec<(String, String)>, Failure> {
    let mut out = Vec::new();
    for (name, value) in form_urlencoded::parse(req.query_string().as_bytes()) {
        match name.as_ref() {
            "from" | "to" => {
                let day = NaiveDate::parse_from_str(value.trim(), "%Y-%m-%d")
                    .map_err(|_| ApiError::field(name.as_ref(), "must be a date, YYYY-MM-DD"))?;
                let day = if name == "to" {
                    day.succ_opt().unwrap_or(day)
                } else {
                    day
                };
                let at = day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc();
                out.push((name.into_owned(), at.to_rfc3339()));
            }
            "format" if matches!(value.as_ref(), "jsonl" | "csv") => {
                out.push((name.into_owned(), value.into_owned()))
            }
            _ => {
                return Err(Failure(ApiError::field(
                    "query",
                    "the form sends from, to and format (jsonl or csv) only",
                )));
            }
        }
    }
    Ok(out)
}

fn to_api(path: &str, pairs: &[(String, String)]) -> Result<HttpResponse, Failure> {
    let query = serde_urlencoded::to_string(pairs).map_err(anyhow::Error::from)?;
    Ok(see_other(&format!("{path}?{query}")))
}

/// Opens the report of the chosen period (`GET /v1/audit/report`).
#[get("/audit/report")]
pub async fn report(req: HttpRequest, session: Session) -> Result<HttpResponse, Failure> {
    session.require(&[Role::Auditor])?;
    to_api("/v1/audit/report", &period(&req)?)
}

/// Downloads the export of the chosen period (`GET /v1/audit/export`).
#[get("/audit/export")]
pub async fn export(req: HttpRequest, session: Session) -> Result<HttpResponse, Failure> {
    session.require(&[Role::Auditor])?;
    to_api("/v1/audit/export", &period(&req)?)
}

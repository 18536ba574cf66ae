//! The console: server-rendered pages for compliance officers, approvers, auditors and admins,
//! on the API's sign-in (an API key exchanged for an HttpOnly, SameSite=Strict session cookie).
//! Each page and button is shown by the key's role, and every action goes through the use cases
//! the API and the command line call (`app`): the console never has a path of its own to change
//! the data; it reads its pages through the store.
//!
//! Templates are askama's (compiled, escaping by default) under `templates/`. Pages carry no
//! script and no external asset (CSP `default-src 'none'`). Every state-changing form carries a
//! CSRF token bound to the session and is refused unless `Origin` is this service.
//!
//! Never puts a target id in a URL, a page or a log line: the look-up form posts it and the page
//! answers with request ids only.

pub mod audit;
pub mod bulk;
pub mod dashboard;
pub mod keys;
pub mod oidc;
pub mod people;
pub mod requests;
pub mod restorations;
pub mod session;
pub mod webhooks;

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpResponse, ResponseError, web};
use askama::Template;

use crate::app::error::ApiError;
use crate::domain::Role;
use crate::store::keys::Principal;

/// The console's Content-Security-Policy: no script, no external asset, forms to this origin only.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; \
    form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The templates' own filters (`{{ t|utc }}`), in scope of each page that uses them.
pub mod filters {
    use chrono::{DateTime, Utc};

    /// A time as pages show it: `2026-12-03 09:20:42 UTC`.
    #[askama::filter_fn]
    pub fn utc(t: &DateTime<Utc>, _: &dyn askama::Values) -> askama::Result<String> {
        Ok(t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
    }
}

/// What every signed-in page shows around its content: the navigation by role and the sign-out
/// form's CSRF token.
pub struct Chrome {
    pub title: String,
    /// The roles held, comma-separated.
    pub role: String,
    /// The person signed in, by name (pages only).
    pub name: Option<String>,
    pub csrf: String,
    pub may_submit: bool,
    pub may_decide: bool,
    pub may_audit: bool,
    pub may_admin: bool,
    /// While upstream work is paused: since when, by whom and why (every page says so).
    pub paused: Option<Paused>,
}

/// What every page says while upstream work is paused.
pub struct Paused {
    pub since: String,
    pub by: String,
    pub reason: String,
}

impl Chrome {
    pub fn new(principal: &Principal, csrf: &str, title: impl Into<String>) -> Chrome {
        let may = |roles: &[Role]| crate::app::auth::allowed(principal, roles);
        Chrome {
            title: title.into(),
            role: principal.roles_text(),
            name: None,
            csrf: csrf.to_string(),
            may_submit: may(&[Role::Requester]),
            may_decide: may(&[Role::Approver]),
            may_audit: may(&[Role::Auditor]),
            may_admin: may(&[]),
            paused: None,
        }
    }
}

/// Actors as pages show them: `person:<id>` becomes `<name> (person:<id>)`, from the people
/// table (the audit log itself holds the id only).
pub async fn name_people<'a>(
    state: &crate::api::AppState,
    actors: impl Iterator<Item = &'a mut String>,
) -> Result<(), Failure> {
    let mut actors: Vec<(&'a mut String, uuid::Uuid)> = actors
        .filter_map(|a| {
            let id = a.strip_prefix("person:")?.parse().ok()?;
            Some((a, id))
        })
        .collect();
    let ids: Vec<uuid::Uuid> = actors.iter().map(|(_, id)| *id).collect();
    let names = crate::store::people::names(&state.db, &ids).await?;
    for (actor, id) in actors.iter_mut() {
        if let Some(name) = names.get(id) {
            **actor = format!("{name} (person:{id})");
        }
    }
    Ok(())
}

/// An HTML page with the console's headers.
pub fn html(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header(("Content-Security-Policy", CSP))
        .insert_header(("Cache-Control", "no-store"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        // Not `no-referrer`: with it a browser sends `Origin: null`, which the forms refuse.
        .insert_header(("Referrer-Policy", "same-origin"))
        .body(body)
}

/// Renders a template as a 200 page.
pub fn render(page: &impl Template) -> Result<HttpResponse, Failure> {
    Ok(html(
        StatusCode::OK,
        page.render().map_err(anyhow::Error::from)?,
    ))
}

/// A 303 to another console page.
pub fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to))
        .finish()
}

/// Why a page could not be shown, as a page (never JSON): the API's error with its status and
/// message, the fields it names, and a way back.
#[derive(Debug)]
pub struct Failure(pub ApiError);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<E: Into<ApiError>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.into())
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    message: &'a str,
    fields: Vec<(&'a String, &'a String)>,
}

impl ResponseError for Failure {
    fn status_code(&self) -> StatusCode {
        self.0.status_code()
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal(e) = &self.0 {
            tracing::error!(error = %e, "console page failed");
        }
        let status = self.status_code();
        let message = match &self.0 {
            ApiError::Internal(_) => "Something failed on our side; try again.".to_string(),
            other => other.to_string(),
        };
        let fields = match &self.0 {
            ApiError::Invalid { fields, .. } => fields.iter().collect(),
            _ => Vec::new(),
        };
        let page = ErrorPage {
            status: status.as_u16(),
            message: &message,
            fields,
        };
        html(
            status,
            page.render()
                .unwrap_or_else(|_| "<!doctype html><title>error</title>".into()),
        )
    }
}

/// The console's routes, with its sign-in settings (and provider) shared by every HTTP worker.
pub fn pages(sign_in: oidc::SignIn) -> impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static {
    let sign_in = web::Data::new(sign_in);
    move |cfg| {
        cfg.app_data(sign_in.clone());
        routes(cfg);
    }
}

/// Adds the console's routes (`pages` adds the sign-in settings they need).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(dashboard::home)
        .service(dashboard::pause)
        .service(dashboard::resume)
        .service(session::login)
        .service(session::logout)
        .service(oidc::login)
        .service(oidc::callback)
        .service(people::list)
        .service(people::confirm_end)
        .service(people::end)
        .service(requests::list)
        .service(requests::search)
        .service(requests::new_form)
        .service(requests::submit)
        .service(requests::upload)
        .service(bulk::confirm)
        .service(bulk::act)
        .service(bulk::show)
        .service(requests::detail)
        .service(requests::confirm)
        .service(requests::act)
        .service(restorations::new_form)
        .service(restorations::start)
        .service(restorations::page)
        .service(audit::page)
        .service(audit::report)
        .service(audit::export)
        .service(keys::list)
        .service(keys::create)
        .service(keys::confirm_revoke)
        .service(keys::revoke)
        .service(webhooks::list)
        .service(webhooks::create)
        .service(webhooks::detail)
        .service(webhooks::change_state)
        .service(webhooks::test)
        .service(webhooks::rotate)
        .service(webhooks::redeliver);
}

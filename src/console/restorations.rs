//! Restorations in the console (approvers): start one with its reason, follow its progress
//! (as `POST /v1/restorations` and `GET /v1/restorations/{id}`).

use actix_web::{HttpResponse, get, post, web};
use askama::Template;

use super::session::{Form, Session, field};
use super::{Chrome, Failure, filters, render, see_other};
use crate::api::AppState;
use crate::app::auth::READERS;
use crate::app::restorations::{self as app, RestorationBody};
use crate::domain::Role;
use crate::store;
use crate::store::restorations::Restoration;

#[derive(Template)]
#[template(path = "restorations.html")]
struct NewPage {
    chrome: Chrome,
    recent: Vec<Restoration>,
}

/// The form to start a restoration, and the newest ones.
#[get("/restorations/new")]
pub async fn new_form(
    state: web::Data<AppState>,
    session: Session,
) -> Result<HttpResponse, Failure> {
    session.require(&[Role::Approver])?;
    render(&NewPage {
        chrome: session.chrome("Restorations"),
        recent: store::restorations::recent(&state.db, 50).await?,
    })
}

/// Starts a restoration.
#[post("/restorations")]
pub async fn start(
    state: web::Data<AppState>,
    Form { session, fields }: Form,
) -> Result<HttpResponse, Failure> {
    let principal = session.require(&[Role::Approver])?;
    let started = app::start(
        &state,
        principal,
        RestorationBody {
            connection_id: field(&fields, "connection_id").unwrap_or("").to_string(),
            reason: field(&fields, "reason").unwrap_or("").to_string(),
        },
    )
    .await?;
    Ok(see_other(&format!("/restorations/{}", started.id)))
}

#[derive(Template)]
#[template(path = "restoration.html")]
struct Page {
    chrome: Chrome,
    r: Restoration,
}

/// A restoration's progress.
#[get("/restorations/{id}")]
pub async fn page(
    state: web::Data<AppState>,
    session: Session,
    path: web::Path<String>,
) -> Result<HttpResponse, Failure> {
    session.require(READERS)?;
    let id = crate::app::input::path_id(&path)?;
    let r = app::get(&state, id).await?;
    render(&Page {
        chrome: session.chrome("Restoration"),
        r,
    })
}

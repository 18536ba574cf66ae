//! People in the console (admins): who has signed in through the identity provider, their roles
//! and last sign-in, and a confirmed action that ends a person's sessions. Names are shown on
//! these pages only; the audit entry of the action names the person by id.

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use askama::Template;
use uuid::Uuid;

#[allow(unused_imports)]
use super::filters;
use super::session::{Form, Session};
use super::{Chrome, Failure, render, see_other};
use crate::api::AppState;
use crate::app::{By, people};
use crate::store::people::Person;

#[derive(Template)]
#[template(path = "people.html")]
struct Page {
    chrome: Chrome,
    people: Vec<Person>,
    ended: Option<u64>,
}

/// The people.
#[get("/people")]
pub async fn list(
    state: web::Data<AppState>,
    req: HttpRequest,
    session: Session,
) -> Result<HttpResponse, Failure> {
    session.require(&[])?;
    let ended = req
        .query_string()
        .strip_prefix("ended=")
        .and_then(|n| n.parse().ok());
    render(&Page {
        chrome: session.chrome("People"),
        people: people::list(&state.db).await?,
        ended,
    })
}

#[derive(Template)]
#[template(path = "person_end.html")]
struct Confirm {
    chrome: Chrome,
    p: Person,
}

async fn person_or_404(state: &AppState, path: &str) -> Result<Person, Failure> {
    let id: Uuid = crate::app::input::path_id(path)?;
    Ok(people::get(&state.db, id).await?)
}

/// Asks to confirm the end of a person's sessions, naming them.
#[get("/people/{id}/end-sessions")]
pub async fn confirm_end(
    state: web::Data<AppState>,
    session: Session,
    path: web::Path<String>,
) -> Result<HttpResponse, Failure> {
    session.require(&[])?;
    let p = person_or_404(&state, &path).await?;
    render(&Confirm {
        chrome: session.chrome("End sessions"),
        p,
    })
}

/// Ends every session of a person.
#[post("/people/{id}/end-sessions")]
pub async fn end(
    state: web::Data<AppState>,
    path: web::Path<String>,
    Form { session, .. }: Form,
) -> Result<HttpResponse, Failure> {
    let principal = session.require(&[])?;
    let p = person_or_404(&state, &path).await?;
    let ended = people::end_sessions(&state.db, p.id, By::Caller(principal)).await?;
    Ok(see_other(&format!("/people?ended={ended}")))
}

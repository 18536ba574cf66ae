//! API keys in the console (admins): list them (prefix, role, label, created, expiry, revoked),
//! create one (shown once, on the answer page only) and revoke one, through `store::keys` as
//! `erasure keys` does. A revoked key is refused by the next request, its sessions with it.

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use askama::Template;
use chrono::Utc;
use uuid::Uuid;

use super::session::{Form, Session, field};
use super::{Chrome, Failure, render, see_other};
use crate::api::AppState;
use crate::app::error::ApiError;
use crate::domain::Role;
use crate::domain::keys::NewKey;

use crate::app::{By, keys};
use crate::store::keys::KeyInfo;

#[derive(Template)]
#[template(path = "keys.html")]
struct Page {
    chrome: Chrome,
    keys: Vec<KeyInfo>,
    roles: Vec<&'static str>,
    /// A key just created: shown on this answer only.
    created: Option<(String, String)>,
    revoked: bool,
}

async fn show(
    state: &AppState,
    chrome: Chrome,
    created: Option<(String, String)>,
    revoked: bool,
) -> Result<HttpResponse, Failure> {
    render(&Page {
        chrome,
        keys: keys::list(&state.db).await?,
        roles: [Role::Requester, Role::Approver, Role::Auditor, Role::Admin]
            .iter()
            .map(|r| r.as_str())
            .collect(),
        created,
        revoked,
    })
}

/// The keys.
#[get("/keys")]
pub async fn list(
    state: web::Data<AppState>,
    req: HttpRequest,
    session: Session,
) -> Result<HttpResponse, Failure> {
    session.require(&[])?;
    let revoked = req.query_string() == "revoked=1";
    let chrome = session.chrome("Keys");
    show(&state, chrome, None, revoked).await
}

/// Creates a key and shows it once.
#[post("/keys")]
pub async fn create(
    state: web::Data<AppState>,
    Form { session, fields }: Form,
) -> Result<HttpResponse, Failure> {
    let principal = session.require(&[])?;
    let role = field(&fields, "role")
        .and_then(Role::parse)
        .ok_or_else(|| ApiError::field("role", "must be requester, approver, auditor or admin"))?;
    let days = field(&fields, "expires_days").map(|days| days.parse::<i64>().unwrap_or(0));
    let new = NewKey::new(
        role,
        field(&fields, "label").unwrap_or(""),
        days,
        Utc::now(),
    )
    .map_err(|(name, why)| {
        let name = if name == "expires_in_days" {
            "expires_days"
        } else {
            name
        };
        ApiError::field(name, why)
    })?;
    let key = keys::create(&state.db, &new, By::Caller(principal)).await?;
    let chrome = session.chrome("Keys");
    show(
        &state,
        chrome,
        Some((role.as_str().to_string(), key)),
        false,
    )
    .await
}

#[derive(Template)]
#[template(path = "key_revoke.html")]
struct ConfirmRevoke {
    chrome: Chrome,
    k: KeyInfo,
}

/// Asks to confirm a revocation, naming the key.
#[get("/keys/{id}/revoke")]
pub async fn confirm_revoke(
    state: web::Data<AppState>,
    session: Session,
    path: web::Path<String>,
) -> Result<HttpResponse, Failure> {
    session.require(&[])?;
    let k = key_or_404(&state, &path).await?;
    render(&ConfirmRevoke {
        chrome: session.chrome("Revoke a key"),
        k,
    })
}

async fn key_or_404(state: &AppState, path: &str) -> Result<KeyInfo, Failure> {
    let id: Uuid = crate::app::input::path_id(path)?;
    Ok(keys::find(&state.db, &id.to_string()).await?)
}

/// Revokes a key at once.
#[post("/keys/{id}/revoke")]
pub async fn revoke(
    state: web::Data<AppState>,
    path: web::Path<String>,
    Form { session, .. }: Form,
) -> Result<HttpResponse, Failure> {
    let principal = session.require(&[])?;
    let k = key_or_404(&state, &path).await?;
    keys::revoke(&state.db, &k, By::Caller(principal)).await?;
    Ok(see_other("/keys?revoked=1"))
}

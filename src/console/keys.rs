//! API keys in the console (admins): list them (prefix, role, label, created, expiry, revoked),
//! create one (shown once, on the answer page only) and revoke one, through `store::keys` as
//! `erasure keys` does. A revoked key is refused by the next request, its sessions with it.

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use askama::Template;
use uuid::Uuid;

use super::session::{field, session_or_sign_in};
use super::{Chrome, Failure, render, see_other};
use crate::api::AppState;
use crate::api::error::ApiError;
use crate::domain::Role;
use crate::domain::validate;
use crate::store;
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
        keys: store::keys::list(&state.db).await?,
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
pub async fn list(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, Failure> {
    let session = session_or_sign_in!(state, req);
    session.require(&[])?;
    let revoked = req.query_string() == "revoked=1";
    let chrome = session.chrome("Keys");
    show(&state, chrome, None, revoked).await
}

/// Creates a key and shows it once.
#[post("/keys")]
pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, Failure> {
    let session = session_or_sign_in!(state, req);
    let fields = session.form(&req, &body)?;
    let principal = session.require(&[])?;
    let (actor, owner) = (principal.actor(), principal.person);
    let role = field(&fields, "role")
        .and_then(Role::parse)
        .ok_or_else(|| ApiError::field("role", "must be requester, approver, auditor or admin"))?;
    let label = validate::free_text(field(&fields, "label").unwrap_or(""), 200)
        .map_err(|why| ApiError::field("label", why))?;
    let expires_at = match field(&fields, "expires_days") {
        None => None,
        Some(days) => {
            let days: i64 = days
                .parse()
                .ok()
                .filter(|d| (1..=3660).contains(d))
                .ok_or_else(|| ApiError::field("expires_days", "must be 1 to 3660 days"))?;
            Some(chrono::Utc::now() + chrono::Duration::days(days))
        }
    };
    // A key made by a person is theirs: what it does counts as them (four eyes included).
    let (_, key) = store::keys::create_owned(&state.db, role, &label, expires_at, &actor, owner)
        .await
        .map_err(ApiError::Internal)?;
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
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, Failure> {
    let session = session_or_sign_in!(state, req);
    session.require(&[])?;
    let k = key_or_404(&state, &path).await?;
    render(&ConfirmRevoke {
        chrome: session.chrome("Revoke a key"),
        k,
    })
}

async fn key_or_404(state: &AppState, path: &str) -> Result<KeyInfo, Failure> {
    let id: Uuid = crate::api::input::path_id(path)?;
    store::keys::find(&state.db, &id.to_string())
        .await?
        .ok_or_else(|| Failure(ApiError::not_found("key")))
}

/// Revokes a key at once.
#[post("/keys/{id}/revoke")]
pub async fn revoke(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, Failure> {
    let session = session_or_sign_in!(state, req);
    session.form(&req, &body)?;
    let actor = session.require(&[])?.actor();
    let k = key_or_404(&state, &path).await?;
    store::keys::revoke(&state.db, k.id, &actor).await?;
    Ok(see_other("/keys?revoked=1"))
}

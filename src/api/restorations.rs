//! `POST /v1/restorations`, `GET /v1/restorations/{id}`: restoring a connection's deleted accounts
//! on purpose (a LIST_ACCOUNTS synchronisation), which lifts the resurrection guard for them.
//!
//! It never calls the aggregator itself: the guard's `restore::check` does.

use actix_web::{HttpResponse, get, post, web};

use super::AppState;
use super::auth::Caller;
use super::error::ErrorBody;
use super::input::JsonBody;
use crate::app::auth::READERS;
use crate::app::error::ApiError;
use crate::app::restorations::{self, RestorationBody};
use crate::domain::Role;
use crate::store::restorations::Restoration;

/// Starts a LIST_ACCOUNTS restoration of a connection. Accounts it brings back are not erased
/// again by the resurrection guard. Refused (409) while an erasure of the connection or of its
/// user is open, or when either was erased. An API-only process (`serve --no-worker`) cannot look
/// the user up: the worker checks it before it synchronises and fails the restoration instead.
#[utoipa::path(
    post, path = "/v1/restorations", tag = "restorations",
    request_body = RestorationBody,
    responses(
        (status = 202, description = "Accepted; follow it at Location", body = Restoration, headers(("Location" = String))),
        (status = 409, description = "An erasure of the connection or its user is open, the connection or its user was erased, or a restoration of it is under way", body = ErrorBody),
        (status = 422, description = "Invalid field", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[post("/v1/restorations")]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let principal = caller.require(&[Role::Approver])?;
    let body: RestorationBody = body.object()?;
    let r = restorations::start(&state, principal, body).await?;
    Ok(HttpResponse::Accepted()
        .insert_header(("Location", format!("/v1/restorations/{}", r.id)))
        .json(r))
}

/// A restoration: its state and what the synchronisation listed (counts only).
#[utoipa::path(
    get, path = "/v1/restorations/{id}", tag = "restorations",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Restoration), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
#[get("/v1/restorations/{id}")]
pub async fn get_one(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(READERS)?;
    let id = crate::app::input::path_id(&path)?;
    Ok(HttpResponse::Ok().json(restorations::get(&state, id).await?))
}

//! The pause switch of all upstream work: `GET /v1/pause`, `POST /v1/pause` (approver or admin)
//! and `POST /v1/resume` (admin). Every process stops starting upstream calls within a second
//! (`engine::pause`); calls in flight finish and are recorded; intake and reads go on; due dates
//! do not move (at-risk and overdue show what a pause costs). Audited with who and why.

use actix_web::{HttpResponse, get, post, web};

use super::AppState;
use super::auth::Caller;
use super::error::ErrorBody;
use super::input::JsonBody;
use crate::app::auth::READERS;
use crate::app::error::ApiError;
use crate::app::pause::{self as app, PauseBody, ResumeBody};
use crate::domain::Role;
use crate::store::pause::Pause;

/// Whether upstream work is paused, since when, by whom and why.
#[utoipa::path(get, path = "/v1/pause", tag = "operations",
    responses((status = 200, body = Pause)),
    security(("bearer" = [])))]
#[get("/v1/pause")]
pub async fn status(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    caller.require(READERS)?;
    Ok(HttpResponse::Ok().json(app::current(&state).await?))
}

/// Pauses all upstream work, in every process, within a second: calls in flight finish and are
/// recorded, no other starts; intake and reads go on; due dates do not move. Pausing what is
/// paused changes nothing. Approvers and admins.
#[utoipa::path(post, path = "/v1/pause", tag = "operations", request_body = PauseBody,
    responses((status = 200, body = Pause), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
#[post("/v1/pause")]
pub async fn pause(
    state: web::Data<AppState>,
    caller: Caller,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let principal = caller.require(&[Role::Approver])?;
    let body: PauseBody = body.object()?;
    Ok(HttpResponse::Ok().json(app::pause_all(&state, principal, &body.reason).await?))
}

/// Resumes upstream work: every process starts calling again within a second, from where it
/// stopped. Admins.
#[utoipa::path(post, path = "/v1/resume", tag = "operations",
    request_body(content = Option<ResumeBody>, content_type = "application/json"),
    responses((status = 200, body = Pause), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
#[post("/v1/resume")]
pub async fn resume(
    state: web::Data<AppState>,
    caller: Caller,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let principal = caller.require(&[])?;
    let body: ResumeBody = body.object_or_default()?;
    let resumed = app::resume_all(&state, principal, body.reason.as_deref()).await?;
    Ok(HttpResponse::Ok().json(resumed))
}

//! `POST /v1/restorations`, `GET /v1/restorations/{id}`: restoring a connection's deleted accounts
//! on purpose (a LIST_ACCOUNTS synchronisation), which lifts the resurrection guard for them.
//!
//! It never calls the aggregator itself: the guard's `restore::check` does.

use actix_web::{HttpResponse, get, post, web};
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::auth::{Caller, READERS};
use super::error::{ApiError, ErrorBody};
use super::input::{self, JsonBody};
use crate::domain::validate::{self, TargetId};
use crate::domain::{Role, Scope};
use crate::store::keys::Principal;
use crate::store::restorations::{self, Refused, Restoration};

/// A restoration to start.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestorationBody {
    /// The aggregator's id of the connection whose deleted accounts should come back (digits).
    #[schema(example = "2001", pattern = "^(0|[1-9][0-9]{0,31})$")]
    pub connection_id: String,
    /// Why, in a few words (no personal data).
    #[schema(min_length = 1, max_length = 500)]
    pub reason: String,
}

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
    let r = start(&state, principal, body).await?;
    Ok(HttpResponse::Accepted()
        .insert_header(("Location", format!("/v1/restorations/{}", r.id)))
        .json(r))
}

/// Starts a restoration for `principal` (an approver): the API's and the console's one way.
pub async fn start(
    state: &AppState,
    principal: &Principal,
    body: RestorationBody,
) -> Result<Restoration, ApiError> {
    let connection = TargetId::parse(&body.connection_id)
        .map_err(|why| ApiError::field("connection_id", why))?;
    let reason =
        validate::free_text(&body.reason, 500).map_err(|why| ApiError::field("reason", why))?;
    if let Some(refusal) = refused_for_the_user(state, connection.as_str()).await? {
        return Err(refusal);
    }
    let id = Uuid::new_v4();
    let refs = state
        .pseudonyms
        .subject_refs(Scope::Connection, connection.as_str());
    let sealed = state.sealer.seal(id, connection.as_str().as_bytes());
    let actor = principal.actor();
    let created = restorations::create(
        &state.db,
        id,
        &refs,
        &sealed,
        &reason,
        principal.key_id,
        &actor,
    )
    .await?;
    created.map_err(conflict)
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
    let id = input::path_id(&path)?;
    let restoration = restorations::get(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("restoration"))?;
    Ok(HttpResponse::Ok().json(restoration))
}

/// The guard's check, where this process has an upstream client: the connection must still exist
/// and neither it nor its user may be being, or have been, erased. (Without an upstream client,
/// or when the upstream does not answer, the worker asks the same before it synchronises and
/// fails the restoration instead.)
async fn refused_for_the_user(
    state: &AppState,
    connection: &str,
) -> Result<Option<ApiError>, ApiError> {
    let Some(check) = &state.restore_check else {
        return Ok(None);
    };
    Ok(check.refusal(connection).await?.map(conflict))
}

/// A refusal as the API's 409.
fn conflict(refused: Refused) -> ApiError {
    ApiError::conflict(refused.code(), refused.message())
}

//! `/v1/erasure-requests`: intake, reads and transitions, over `app::requests`.
//!
//! Never returns a target id: it is sealed on create and answered as its pseudonym only.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, get, post, web};

use super::AppState;
use super::auth::Caller;
use super::error::ErrorBody;
use super::input::{self, JsonBody};
use crate::app::auth::READERS;
use crate::app::error::ApiError;
use crate::app::requests::{
    self, BatchResult, CreateRequest, ListQuery, Parsed, RequestPage, Submitted,
};
use crate::domain::{Action, Role};
use crate::store::requests::{ErasureRequest, Inserted};

/// Submit an erasure request.
#[utoipa::path(
    post, path = "/v1/erasure-requests", tag = "erasure requests",
    request_body = CreateRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for the same key and body")),
    responses(
        (status = 202, description = "Accepted and committed", body = ErasureRequest, headers(("Location" = String))),
        (status = 409, description = "An open request for this target exists", body = ErrorBody),
        (status = 422, description = "Invalid field, or an Idempotency-Key reused with another body", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[post("/v1/erasure-requests")]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let principal = caller.require(&[Role::Requester])?;
    let idempotency_key = match req.headers().get("idempotency-key") {
        None => None,
        Some(v) => {
            let text = v
                .to_str()
                .ok()
                .map(str::trim)
                .filter(|t| !t.is_empty() && t.len() <= 255);
            Some(
                text.ok_or_else(|| {
                    ApiError::field("Idempotency-Key", "must be 1 to 255 visible characters")
                })?
                .to_string(),
            )
        }
    };
    let item: CreateRequest = body.object()?;
    let Some(key) = idempotency_key else {
        return accepted(requests::submit_one(&state, principal, item).await?);
    };
    match requests::submit_idempotent(&state, principal, item, &key, &body.bytes).await? {
        Submitted::Created(created) => accepted(Inserted::Created(created)),
        Submitted::Replayed { status, response } => {
            let location = response
                .get("id")
                .and_then(|v| v.as_str())
                .map(|id| format!("/v1/erasure-requests/{id}"));
            let mut reply =
                HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::ACCEPTED));
            if let Some(location) = location {
                reply.insert_header(("Location", location));
            }
            reply.insert_header(("Idempotent-Replayed", "true"));
            Ok(reply.json(response))
        }
    }
}

/// 202 with the new request, or 409 naming the open one.
fn accepted(inserted: Inserted) -> Result<HttpResponse, ApiError> {
    match inserted {
        Inserted::Created(created) => Ok(HttpResponse::Accepted()
            .insert_header(("Location", format!("/v1/erasure-requests/{}", created.id)))
            .json(created)),
        Inserted::DuplicateOf(existing) => Err(requests::duplicate(existing)),
    }
}

/// Submit up to 10,000 erasure requests at once, as a JSON array or CSV.
///
/// CSV has a header line naming its columns: `scope,target_id` and optionally
/// `external_reference` and `not_before`. Each item is validated on its own; every valid item is
/// committed in one transaction.
#[utoipa::path(
    post, path = "/v1/erasure-requests/batch", tag = "erasure requests",
    request_body(content(
        (Vec<CreateRequest> = "application/json"),
        (String = "text/csv", example = "scope,target_id,external_reference\nuser,1042,TICKET-1\n")
    )),
    responses(
        (status = 200, description = "Per-item results; valid items committed", body = BatchResult),
        (status = 400, description = "Unreadable body", body = ErrorBody),
        (status = 413, description = "More than 10,000 items", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[post("/v1/erasure-requests/batch")]
pub async fn batch(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let principal = caller.require(&[Role::Requester])?;
    let bytes = input::body(payload, input::MAX_BATCH_BODY).await?;
    let parsed: Parsed = match input::media_type(&req).as_deref() {
        Some("application/json") => requests::parse_json_batch(&bytes)?,
        Some("text/csv") => requests::parse_csv_batch(&bytes)?,
        _ => {
            return Err(ApiError::client(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send a JSON array (application/json) or CSV (text/csv)",
            ));
        }
    };
    Ok(HttpResponse::Ok().json(requests::submit_batch(&state, principal, parsed).await?))
}

/// List erasure requests, newest first.
#[utoipa::path(
    get, path = "/v1/erasure-requests", tag = "erasure requests",
    params(ListQuery),
    responses((status = 200, body = RequestPage), (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
#[get("/v1/erasure-requests")]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    caller.require(READERS)?;
    let q: ListQuery = input::query(&req)?;
    Ok(HttpResponse::Ok().json(requests::list_page(&state, q).await?))
}

/// One erasure request with its steps.
#[utoipa::path(
    get, path = "/v1/erasure-requests/{id}", tag = "erasure requests",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = ErasureRequest), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
#[get("/v1/erasure-requests/{id}")]
pub async fn get_one(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(READERS)?;
    if path.as_str() == "batch" {
        // `/batch` is POST only (405), not a request id.
        return Ok(super::unrouted(&req));
    }
    let id = crate::app::input::path_id(&path)?;
    Ok(HttpResponse::Ok().json(requests::get(&state, id).await?))
}

/// Act on a request: approve, cancel, retry, hold, release or extend.
///
/// approve, hold, release, extend, retry: role approver; cancel: role requester.
/// hold takes `{legal_basis, note}`, extend `{months, reason}`; the others an optional `{note}`.
#[utoipa::path(
    post, path = "/v1/erasure-requests/{id}/{action}", tag = "erasure requests",
    params(("id" = Uuid, Path), ("action" = Action, Path, description = "approve | cancel | retry | hold | release | extend")),
    request_body(content = Object, description = "HoldBody for hold, ExtendBody for extend, NoteBody otherwise"),
    responses(
        (status = 200, body = ErasureRequest),
        (status = 403, description = "Wrong role, or the approver is the requester", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Not allowed from the request's state", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[post("/v1/erasure-requests/{id}/{action}")]
pub async fn act(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let (id, action) = path.into_inner();
    let action = requests::action_named(&action)?;
    let principal = caller.require(action.roles())?;
    let id = crate::app::input::path_id(&id)?;
    body.require(!matches!(action, Action::Hold | Action::Extend))?;
    let details = requests::action_details(action, &body.bytes)?;
    Ok(HttpResponse::Ok().json(requests::perform(&state, principal, id, action, details).await?))
}

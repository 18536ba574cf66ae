//! Bulk operations: `POST /v1/bulk-actions` takes an action on a selection (explicit `ids`, or
//! every request a list `filter` matches), up to 10,000, as one operation with its own id;
//! `GET /v1/bulk-actions/{id}` answers its counts and `GET /v1/bulk-actions/{id}/items` each
//! item's result, a page at a time. An upload's line results are kept the same way (`submit`).
//!
//! Each item goes through the decision a single action takes (`domain::actions::decide`: the
//! states it starts from, four eyes by person), in its own transaction with its own audit entry
//! naming the operation; the operation gets one entry more (`bulk_operation`).

use actix_web::{HttpResponse, get, post, web};

use super::AppState;
use super::auth::Caller;
use super::error::ErrorBody;
use super::input::{self, JsonBody};
use crate::app::auth::READERS;
use crate::app::bulk::{self, BulkBody, ItemPage, ItemsQuery};
use crate::app::error::ApiError;
use crate::store::bulk::Operation;

/// Start an action on many requests: approve, hold, release, extend, retry or cancel.
///
/// Each request is decided as a single action would be (states, roles, four eyes by person) and
/// gets its own audit entry; a request the action does not apply to is refused on its own line,
/// and the others go on. Answers once every item is applied, with the counts; the items are at
/// `Location`'s `/items`.
#[utoipa::path(post, path = "/v1/bulk-actions", tag = "erasure requests", request_body = BulkBody,
    responses(
        (status = 200, description = "Applied; the items are at `{Location}/items`", body = Operation, headers(("Location" = String))),
        (status = 403, body = ErrorBody),
        (status = 422, description = "Invalid field; no selection, or more than 10,000 requests", body = ErrorBody),
    ),
    security(("bearer" = [])))]
#[post("/v1/bulk-actions")]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let body: BulkBody = body.object()?;
    let principal = caller.require(body.action.roles())?;
    let details = bulk::details_of(&body)?;
    let ids = bulk::selection(&state, body.ids, body.filter).await?;
    let op = bulk::act_on_all(&state, principal, body.action, details, ids).await?;
    Ok(HttpResponse::Ok()
        .insert_header(("Location", format!("/v1/bulk-actions/{}", op.id)))
        .json(op))
}

/// An operation's counts.
#[utoipa::path(get, path = "/v1/bulk-actions/{id}", tag = "erasure requests",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Operation), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
#[get("/v1/bulk-actions/{id}")]
pub async fn get_one(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(READERS)?;
    Ok(HttpResponse::Ok().json(bulk::operation(&state, &path).await?))
}

/// Each item's result, in order, a page at a time.
#[utoipa::path(get, path = "/v1/bulk-actions/{id}/items", tag = "erasure requests",
    params(("id" = Uuid, Path), ItemsQuery),
    responses((status = 200, body = ItemPage), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
#[get("/v1/bulk-actions/{id}/items")]
pub async fn item_list(
    state: web::Data<AppState>,
    caller: Caller,
    req: actix_web::HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(READERS)?;
    let q: ItemsQuery = input::query(&req)?;
    let op = bulk::operation(&state, &path).await?;
    Ok(HttpResponse::Ok().json(bulk::item_page(&state, op.id, &q).await?))
}

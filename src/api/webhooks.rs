//! `/v1/webhooks`: subscriptions to signed webhooks (Standard Webhooks), their secrets, test
//! events, the delivery log and redelivery. Admin only.
//!
//! A secret is returned once, when it is made (creation, rotation), and never logged.

use actix_web::{HttpRequest, HttpResponse, get, patch, post, web};

use super::AppState;
use super::auth::Caller;
use super::error::ErrorBody;
use super::input::{self, JsonBody};
use crate::app::error::ApiError;
use crate::app::webhooks::{
    self as app, ChangeSubscription, CreateSubscription, DeliveryPage, DeliveryQuery, Queued,
    Redeliver, Rotate, SubscriptionList, TestQueued, WithSecret,
};
use crate::domain::Role;
use crate::store::webhooks::Subscription;

/// Subscribes a URL to event types. The signing secret is in the answer, this once.
#[utoipa::path(
    post, path = "/v1/webhooks", tag = "webhooks",
    request_body = CreateSubscription,
    responses(
        (status = 201, description = "Created; the secret is shown this once", body = WithSecret, headers(("Location" = String))),
        (status = 422, description = "Invalid field (a URL that is not allowed, an unknown event type)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[post("/v1/webhooks")]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let principal = caller.require(&[Role::Admin])?;
    let body: CreateSubscription = body.object()?;
    let created = app::subscribe(&state, principal, &body).await?;
    Ok(HttpResponse::Created()
        .insert_header((
            "Location",
            format!("/v1/webhooks/{}", created.subscription.id),
        ))
        .insert_header(("Cache-Control", "no-store"))
        .json(created))
}

/// Every subscription (never a secret).
#[utoipa::path(
    get, path = "/v1/webhooks", tag = "webhooks",
    responses((status = 200, body = SubscriptionList)),
    security(("bearer" = []))
)]
#[get("/v1/webhooks")]
pub async fn list(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Admin])?;
    Ok(HttpResponse::Ok().json(app::list(&state).await?))
}

/// One subscription (never its secret).
#[utoipa::path(
    get, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Subscription), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
#[get("/v1/webhooks/{id}")]
pub async fn get_one(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Admin])?;
    Ok(HttpResponse::Ok().json(app::found(&state, &path).await?))
}

/// Changes a subscription: its URL, event types, description, or state (pause, enable, disable).
/// Enabling a subscription the service disabled resumes its queued events, in order.
#[utoipa::path(
    patch, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = Uuid, Path)),
    request_body = ChangeSubscription,
    responses((status = 200, body = Subscription), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
#[patch("/v1/webhooks/{id}")]
pub async fn change(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let principal = caller.require(&[Role::Admin])?;
    let id = crate::app::input::path_id(&path)?;
    let body: ChangeSubscription = body.object_or_default()?;
    Ok(HttpResponse::Ok().json(app::change_one(&state, principal, id, &body).await?))
}

/// Replaces the signing secret. The new one is in the answer, this once; the old one stays valid
/// for `overlap_seconds`, and deliveries carry a signature by each meanwhile.
#[utoipa::path(
    post, path = "/v1/webhooks/{id}/rotate", tag = "webhooks",
    params(("id" = Uuid, Path)),
    request_body(content = Option<Rotate>, content_type = "application/json"),
    responses((status = 200, body = WithSecret), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
#[post("/v1/webhooks/{id}/rotate")]
pub async fn rotate(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let principal = caller.require(&[Role::Admin])?;
    let id = crate::app::input::path_id(&path)?;
    let body: Rotate = body.object_or_default()?;
    let rotated = app::rotate_one(&state, principal, id, body.overlap_seconds).await?;
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(rotated))
}

/// Queues a `test` event for the subscription (after the events queued already).
#[utoipa::path(
    post, path = "/v1/webhooks/{id}/test", tag = "webhooks",
    params(("id" = Uuid, Path)),
    responses((status = 202, body = TestQueued), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
#[post("/v1/webhooks/{id}/test")]
pub async fn test(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let principal = caller.require(&[Role::Admin])?;
    let id = crate::app::input::path_id(&path)?;
    Ok(HttpResponse::Accepted().json(app::send_test(&state, principal, id).await?))
}

/// The delivery log: each attempt's event, status, duration, error and at most 200 characters of
/// the answer, newest first.
#[utoipa::path(
    get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = Uuid, Path), DeliveryQuery),
    responses((status = 200, body = DeliveryPage), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
#[get("/v1/webhooks/{id}/deliveries")]
pub async fn deliveries(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Admin])?;
    let q: DeliveryQuery = input::query(&req)?;
    let subscription = app::found(&state, &path).await?;
    Ok(HttpResponse::Ok().json(app::delivery_page(&state, subscription.id, &q).await?))
}

/// Sends events again with their own `webhook-id`: one (`event_id`) or every one since a time
/// (`since`), in their order, before what is queued after them.
#[utoipa::path(
    post, path = "/v1/webhooks/{id}/redeliver", tag = "webhooks",
    params(("id" = Uuid, Path)),
    request_body = Redeliver,
    responses((status = 202, body = Queued), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
#[post("/v1/webhooks/{id}/redeliver")]
pub async fn redeliver(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Admin])?;
    let body: Redeliver = body.object()?;
    let subscription = app::found(&state, &path).await?;
    let queued = app::redeliver_events(&state, subscription.id, &body).await?;
    Ok(HttpResponse::Accepted().json(Queued { queued }))
}

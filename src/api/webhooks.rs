//! `/v1/webhooks`: subscriptions to signed webhooks (Standard Webhooks), their secrets, test
//! events, the delivery log and redelivery. Admin only.
//!
//! A secret is returned once, when it is made (creation, rotation), and never logged.

use std::collections::BTreeSet;

use actix_web::{HttpRequest, HttpResponse, get, patch, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::input::{self, JsonBody};
use crate::domain::{Role, validate};
use crate::store::keys::Principal;
use crate::store::webhooks::{self as store, Changes, Delivery, Subscription, SubscriptionState};
use crate::webhooks::{event_types as known_types, sign, target};

/// The longest overlap of a rotated secret: 7 days.
const MAX_OVERLAP_SECS: u64 = 7 * 24 * 3600;
/// The overlap of a rotated secret when none is given: 24 hours.
const DEFAULT_OVERLAP_SECS: u64 = 24 * 3600;

/// A subscription to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSubscription {
    /// Where to POST events: `https` (plain `http` only to the hosts of
    /// `ERASURE_WEBHOOK_ALLOW_HTTP_HOSTS`), a host allowed by `ERASURE_WEBHOOK_ALLOWED_HOSTS` (when
    /// unset: any public host).
    #[schema(example = "https://hooks.example.com/erasure", max_length = 2000)]
    pub url: String,
    /// The event types to send (at least one).
    #[schema(example = json!(["request.completed", "request.failed"]))]
    pub event_types: Vec<String>,
    /// For people (no personal data).
    #[schema(max_length = 200)]
    pub description: Option<String>,
}

/// A subscription with its signing secret, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct WithSecret {
    #[serde(flatten)]
    pub subscription: Subscription,
    /// The signing secret (`whsec_` + base64): keep it; it is not shown again.
    pub secret: String,
}

/// Changes to a subscription; absent fields are unchanged.
#[derive(Debug, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ChangeSubscription {
    #[schema(max_length = 2000)]
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 200)]
    pub description: Option<Option<String>>,
    /// `paused` queues events until `enabled` again; `disabled` stops new events.
    pub state: Option<SubscriptionState>,
}

/// Tells an absent field (`None`) from a `null` one (`Some(None)`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// A rotation of the signing secret.
#[derive(Debug, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Rotate {
    /// How long the old secret stays valid (deliveries carry both signatures meanwhile):
    /// 0 to 604800 seconds, default 86400.
    #[schema(minimum = 0, maximum = 604800)]
    pub overlap_seconds: Option<u64>,
}

/// What to send again: one event, or every event since a time (exactly one of them).
#[derive(Debug, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Redeliver {
    /// An event's `webhook-id` (`msg_...`).
    pub event_id: Option<String>,
    /// Every event that occurred at or after this time.
    pub since: Option<DateTime<Utc>>,
}

/// Events queued again.
#[derive(Debug, Serialize, ToSchema)]
pub struct Queued {
    pub queued: u64,
}

/// A test event queued.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestQueued {
    /// Its `webhook-id`.
    pub event_id: String,
}

/// Subscriptions.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionList {
    pub items: Vec<Subscription>,
}

/// A page of the delivery log, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryPage {
    pub items: Vec<Delivery>,
    /// Pass as `before` for the next page; absent on the last page.
    pub next_before: Option<i64>,
}

/// Paging of the delivery log.
#[derive(Debug, Deserialize, IntoParams, Default)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// `next_before` of the previous page.
    pub before: Option<i64>,
    /// 1 to 200, default 50.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
}

fn url(state: &AppState, url: &str) -> Result<String, ApiError> {
    target::check(&state.webhooks, url)
        .map(|u| u.to_string())
        .map_err(|why| ApiError::field("url", why))
}

fn event_types(types: &[String]) -> Result<Vec<String>, ApiError> {
    if types.is_empty() {
        return Err(ApiError::field(
            "event_types",
            "must name at least one event type",
        ));
    }
    let mut seen = BTreeSet::new();
    for t in types {
        if !known_types().any(|known| known == t) {
            let all: Vec<&str> = known_types().collect();
            return Err(ApiError::field(
                "event_types",
                format!("each must be one of {}", all.join(", ")),
            ));
        }
        seen.insert(t.clone());
    }
    Ok(known_types()
        .filter(|t| seen.contains(*t))
        .map(str::to_string)
        .collect())
}

fn description(text: &str) -> Result<String, ApiError> {
    validate::free_text(text, 200).map_err(|why| ApiError::field("description", why))
}

/// A new secret and its sealed form (the subscription id as associated data).
fn new_secret(state: &AppState, id: Uuid) -> (zeroize::Zeroizing<String>, Vec<u8>) {
    let secret = sign::new_secret();
    let sealed = state.sealer.seal(id, secret.as_bytes());
    (secret, sealed)
}

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
    let created = subscribe(&state, principal, &body).await?;
    Ok(HttpResponse::Created()
        .insert_header((
            "Location",
            format!("/v1/webhooks/{}", created.subscription.id),
        ))
        .insert_header(("Cache-Control", "no-store"))
        .json(created))
}

/// Validates and stores a subscription; its secret is in the answer, this once. The API and the
/// console both subscribe through it.
pub async fn subscribe(
    state: &AppState,
    principal: &Principal,
    body: &CreateSubscription,
) -> Result<WithSecret, ApiError> {
    let url = url(state, &body.url)?;
    let types = event_types(&body.event_types)?;
    let description = body.description.as_deref().map(description).transpose()?;
    let id = Uuid::now_v7();
    let (secret, sealed) = new_secret(state, id);
    let created = store::create(
        &state.db,
        store::NewSubscription {
            id,
            url: &url,
            event_types: &types,
            description: description.as_deref(),
            secret_sealed: &sealed,
            created_by: principal.key_id,
        },
        &principal.actor(),
    )
    .await?;
    Ok(WithSecret {
        subscription: created,
        secret: secret.to_string(),
    })
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
    let items = store::list(&state.db).await?;
    Ok(HttpResponse::Ok().json(SubscriptionList { items }))
}

/// The subscription a path names, or 404.
pub async fn found(state: &AppState, path: &str) -> Result<Subscription, ApiError> {
    let id = input::path_id(path)?;
    store::get(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook subscription"))
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
    Ok(HttpResponse::Ok().json(found(&state, &path).await?))
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
    let id = input::path_id(&path)?;
    let body: ChangeSubscription = body.object_or_default()?;
    Ok(HttpResponse::Ok().json(change_one(&state, principal, id, &body).await?))
}

/// Applies changes to a subscription (the API's PATCH and the console's buttons).
pub async fn change_one(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
    body: &ChangeSubscription,
) -> Result<Subscription, ApiError> {
    let url = body.url.as_deref().map(|u| url(state, u)).transpose()?;
    let types = body.event_types.as_deref().map(event_types).transpose()?;
    let description = match &body.description {
        None => None,
        Some(None) => Some(None),
        Some(Some(text)) => Some(Some(description(text)?)),
    };
    let changes = Changes {
        url: url.as_deref(),
        event_types: types.as_deref(),
        description: description.as_ref().map(|d| d.as_deref()),
        state: body.state,
    };
    store::update(&state.db, id, changes, &principal.actor())
        .await?
        .ok_or_else(|| ApiError::not_found("webhook subscription"))
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
    let id = input::path_id(&path)?;
    let body: Rotate = body.object_or_default()?;
    let rotated = rotate_one(&state, principal, id, body.overlap_seconds).await?;
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(rotated))
}

/// Replaces a subscription's secret, the old one valid for `overlap_seconds` (default 24 h);
/// the new one is in the answer, this once.
pub async fn rotate_one(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
    overlap_seconds: Option<u64>,
) -> Result<WithSecret, ApiError> {
    let overlap = overlap_seconds.unwrap_or(DEFAULT_OVERLAP_SECS);
    if overlap > MAX_OVERLAP_SECS {
        return Err(ApiError::field(
            "overlap_seconds",
            format!("must be between 0 and {MAX_OVERLAP_SECS}"),
        ));
    }
    let (secret, sealed) = new_secret(state, id);
    let until = Utc::now() + chrono::Duration::seconds(overlap as i64);
    let rotated = store::rotate(&state.db, id, &sealed, until, &principal.actor())
        .await?
        .ok_or_else(|| ApiError::not_found("webhook subscription"))?;
    Ok(WithSecret {
        subscription: rotated,
        secret: secret.to_string(),
    })
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
    let id = input::path_id(&path)?;
    Ok(HttpResponse::Accepted().json(send_test(&state, principal, id).await?))
}

/// Queues a `test` event for a subscription.
pub async fn send_test(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
) -> Result<TestQueued, ApiError> {
    let event_id = store::queue_test(&state.db, id, principal.key_id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook subscription"))?;
    Ok(TestQueued { event_id })
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
    let subscription = found(&state, &path).await?;
    Ok(HttpResponse::Ok().json(delivery_page(&state, subscription.id, &q).await?))
}

/// A page of a subscription's delivery log.
pub async fn delivery_page(
    state: &AppState,
    subscription: Uuid,
    q: &DeliveryQuery,
) -> Result<DeliveryPage, ApiError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::field("limit", "must be between 1 and 200"));
    }
    let items = store::deliveries(&state.db, subscription, q.before, i64::from(limit)).await?;
    let next_before = (items.len() == limit as usize)
        .then(|| items.last().map(|d| d.id))
        .flatten();
    Ok(DeliveryPage { items, next_before })
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
    let subscription = found(&state, &path).await?;
    let queued = redeliver_events(&state, subscription.id, &body).await?;
    Ok(HttpResponse::Accepted().json(Queued { queued }))
}

/// Queues events of a subscription again: one (`event_id`) or every one since a time (`since`).
pub async fn redeliver_events(
    state: &AppState,
    subscription: Uuid,
    body: &Redeliver,
) -> Result<u64, ApiError> {
    match (&body.event_id, body.since) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(ApiError::field(
                "event_id",
                "give either event_id or since (exactly one)",
            ));
        }
        (Some(event), None) => {
            let well_formed = event.len() == 36
                && event.starts_with("msg_")
                && event[4..].bytes().all(|b| b.is_ascii_hexdigit());
            if !well_formed {
                return Err(ApiError::field(
                    "event_id",
                    "must be a webhook-id (msg_...)",
                ));
            }
        }
        (None, Some(since)) => {
            validate::timestamp(since).map_err(|why| ApiError::field("since", why))?;
        }
    }
    let queued = store::redeliver(
        &state.db,
        subscription,
        body.event_id.as_deref(),
        body.since,
    )
    .await?;
    if body.event_id.is_some() && queued == 0 {
        return Err(ApiError::not_found("event of this subscription"));
    }
    Ok(queued)
}

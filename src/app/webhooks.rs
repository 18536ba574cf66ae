//! Subscriptions to signed webhooks (Standard Webhooks): their URLs and event types checked,
//! their secrets made and rotated, test events, the delivery log and redelivery.
//!
//! A secret is returned once, when it is made (creation, rotation), and never logged.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::App;
use super::error::ApiError;
use super::input;
use crate::domain::validate;
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

fn url(state: &App, url: &str) -> Result<String, ApiError> {
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
fn new_secret(state: &App, id: Uuid) -> (zeroize::Zeroizing<String>, Vec<u8>) {
    let secret = sign::new_secret();
    let sealed = state.sealer.seal(id, secret.as_bytes());
    (secret, sealed)
}

/// Validates and stores a subscription; its secret is in the answer, this once. The API and the
/// console both subscribe through it.
pub async fn subscribe(
    state: &App,
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

/// Every subscription.
pub async fn list(state: &App) -> Result<SubscriptionList, ApiError> {
    Ok(SubscriptionList {
        items: store::list(&state.db).await?,
    })
}

/// A subscription that is not there.
fn missing() -> ApiError {
    ApiError::not_found("webhook subscription")
}

/// The subscription a path names, or 404.
pub async fn found(state: &App, path: &str) -> Result<Subscription, ApiError> {
    let id = input::path_id(path)?;
    store::get(&state.db, id).await?.ok_or_else(missing)
}

/// Applies changes to a subscription (the API's PATCH and the console's buttons).
pub async fn change_one(
    state: &App,
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
        .ok_or_else(missing)
}

/// Replaces a subscription's secret, the old one valid for `overlap_seconds` (default 24 h);
/// the new one is in the answer, this once.
pub async fn rotate_one(
    state: &App,
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
        .ok_or_else(missing)?;
    Ok(WithSecret {
        subscription: rotated,
        secret: secret.to_string(),
    })
}

/// Queues a `test` event for a subscription.
pub async fn send_test(
    state: &App,
    principal: &Principal,
    id: Uuid,
) -> Result<TestQueued, ApiError> {
    let event_id = store::queue_test(&state.db, id, principal.key_id)
        .await?
        .ok_or_else(missing)?;
    Ok(TestQueued { event_id })
}

/// A page of a subscription's delivery log.
pub async fn delivery_page(
    state: &App,
    subscription: Uuid,
    q: &DeliveryQuery,
) -> Result<DeliveryPage, ApiError> {
    let limit = input::page_limit(q.limit, 50, 200)?;
    let items = store::deliveries(&state.db, subscription, q.before, i64::from(limit)).await?;
    let next_before = (items.len() == limit as usize)
        .then(|| items.last().map(|d| d.id))
        .flatten();
    Ok(DeliveryPage { items, next_before })
}

/// Queues events of a subscription again: one (`event_id`) or every one since a time (`since`).
pub async fn redeliver_events(
    state: &App,
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

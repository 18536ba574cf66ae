//! Webhook subscriptions in the console (admins): list and create them (the signing secret shown
//! once), pause or enable one, send a test event, rotate the secret, read the delivery log and
//! send events again, through the use cases (`app::webhooks::subscribe`, `change_one`,
//! `rotate_one`, `send_test`, `delivery_page`, `redeliver_events`).

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use askama::Template;
use chrono::{DateTime, NaiveDateTime, Utc};
use uuid::Uuid;

use super::session::{Form, Session, field};
use super::{Chrome, Failure, filters, render, see_other};
use crate::api::AppState;
use crate::app::error::ApiError;
use crate::app::input;
use crate::app::webhooks::{self as app, ChangeSubscription, CreateSubscription, DeliveryQuery};
use crate::store::webhooks::{self as store, Delivery, Subscription, SubscriptionState};
use crate::webhooks::event_types;

#[derive(Template)]
#[template(path = "webhooks.html")]
struct ListPage {
    chrome: Chrome,
    subscriptions: Vec<Subscription>,
    event_types: Vec<&'static str>,
    /// A subscription just created and its secret: shown on this answer only.
    created: Option<(Uuid, String)>,
}

async fn show_list(
    state: &AppState,
    session: &Session,
    created: Option<(Uuid, String)>,
) -> Result<HttpResponse, Failure> {
    render(&ListPage {
        chrome: session.chrome("Webhooks"),
        subscriptions: store::list(&state.db).await?,
        event_types: event_types().collect(),
        created,
    })
}

/// The subscriptions, and the form to add one.
#[get("/webhooks")]
pub async fn list(state: web::Data<AppState>, session: Session) -> Result<HttpResponse, Failure> {
    session.require(&[])?;
    show_list(&state, &session, None).await
}

/// Subscribes a URL and shows its signing secret once.
#[post("/webhooks")]
pub async fn create(
    state: web::Data<AppState>,
    Form { session, fields }: Form,
) -> Result<HttpResponse, Failure> {
    let principal = session.require(&[])?;
    let body = CreateSubscription {
        url: field(&fields, "url").unwrap_or("").to_string(),
        event_types: fields
            .iter()
            .filter(|(k, _)| k == "event_types")
            .map(|(_, v)| v.clone())
            .collect(),
        description: field(&fields, "description").map(str::to_string),
    };
    let created = app::subscribe(&state, principal, &body).await?;
    show_list(
        &state,
        &session,
        Some((created.subscription.id, created.secret)),
    )
    .await
}

#[derive(Template)]
#[template(path = "webhook.html")]
struct DetailPage {
    chrome: Chrome,
    s: Subscription,
    deliveries: Vec<Delivery>,
    next_before: Option<i64>,
    /// What was just done, for the notice.
    done: Option<&'static str>,
    /// A secret just made by a rotation: shown on this answer only.
    secret: Option<String>,
}

async fn show_detail(
    state: &AppState,
    session: &Session,
    s: Subscription,
    before: Option<i64>,
    done: Option<&'static str>,
    secret: Option<String>,
) -> Result<HttpResponse, Failure> {
    let page = app::delivery_page(
        state,
        s.id,
        &DeliveryQuery {
            before,
            limit: Some(50),
        },
    )
    .await?;
    render(&DetailPage {
        chrome: session.chrome("Webhook"),
        s,
        deliveries: page.items,
        next_before: page.next_before,
        done,
        secret,
    })
}

/// What a `?done=` names, as the page says it.
fn notice(done: &str) -> Option<&'static str> {
    Some(match done {
        "enabled" => "Enabled: queued events are delivered in order.",
        "paused" => "Paused: events are queued until it is enabled again.",
        "disabled" => "Disabled: it gets no new events.",
        "test" => "A test event is queued; it appears in the log once sent.",
        "redeliver" => "Queued again: the events are sent with their own webhook-id.",
        _ => return None,
    })
}

/// The detail page's query: the log's paging, and what was just done.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DetailQuery {
    before: Option<i64>,
    done: Option<String>,
}

/// One subscription: its state, actions and delivery log (newest first, 50 a page).
#[get("/webhooks/{id}")]
pub async fn detail(
    state: web::Data<AppState>,
    req: HttpRequest,
    session: Session,
    path: web::Path<String>,
) -> Result<HttpResponse, Failure> {
    session.require(&[])?;
    let q: DetailQuery = input::query_str(req.query_string())?;
    let s = app::found(&state, &path).await?;
    show_detail(
        &state,
        &session,
        s,
        q.before,
        q.done.as_deref().and_then(notice),
        None,
    )
    .await
}

/// Enables, pauses or disables a subscription.
#[post("/webhooks/{id}/state")]
pub async fn change_state(
    state: web::Data<AppState>,
    path: web::Path<String>,
    Form { session, fields }: Form,
) -> Result<HttpResponse, Failure> {
    let principal = session.require(&[])?;
    let id = input::path_id(&path)?;
    let to = match field(&fields, "state") {
        Some("enabled") => SubscriptionState::Enabled,
        Some("paused") => SubscriptionState::Paused,
        Some("disabled") => SubscriptionState::Disabled,
        _ => {
            return Err(Failure(ApiError::field(
                "state",
                "must be enabled, paused or disabled",
            )));
        }
    };
    let changes = ChangeSubscription {
        state: Some(to),
        ..Default::default()
    };
    app::change_one(&state, principal, id, &changes).await?;
    Ok(see_other(&format!("/webhooks/{id}?done={}", to.as_str())))
}

/// Queues a test event.
#[post("/webhooks/{id}/test")]
pub async fn test(
    state: web::Data<AppState>,
    path: web::Path<String>,
    Form { session, .. }: Form,
) -> Result<HttpResponse, Failure> {
    let principal = session.require(&[])?;
    let id = input::path_id(&path)?;
    app::send_test(&state, principal, id).await?;
    Ok(see_other(&format!("/webhooks/{id}?done=test")))
}

/// Rotates the signing secret (the old one valid for the overlap chosen) and shows the new one
/// once.
#[post("/webhooks/{id}/rotate")]
pub async fn rotate(
    state: web::Data<AppState>,
    path: web::Path<String>,
    Form { session, fields }: Form,
) -> Result<HttpResponse, Failure> {
    let principal = session.require(&[])?;
    let id = input::path_id(&path)?;
    let hours = match field(&fields, "overlap_hours") {
        None => None,
        Some(h) => Some(
            h.parse::<u64>()
                .ok()
                .filter(|h| *h <= 168)
                .ok_or_else(|| ApiError::field("overlap_hours", "must be 0 to 168 hours"))?,
        ),
    };
    let rotated = app::rotate_one(&state, principal, id, hours.map(|h| h * 3600)).await?;
    show_detail(
        &state,
        &session,
        rotated.subscription,
        None,
        Some("Rotated: deliveries are signed with the old and the new secret until the overlap ends."),
        Some(rotated.secret),
    )
    .await
}

/// A time typed in the form: RFC 3339, or a browser's `datetime-local` value taken as UTC.
fn since(text: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| {
            NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M")
                .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S"))
                .map(|t| t.and_utc())
        })
        .map_err(|_| ApiError::field("since", "must be a time such as 2026-12-01T00:00 (UTC)"))
}

/// Sends one event again (by its `webhook-id`) or every event since a time.
#[post("/webhooks/{id}/redeliver")]
pub async fn redeliver(
    state: web::Data<AppState>,
    path: web::Path<String>,
    Form { session, fields }: Form,
) -> Result<HttpResponse, Failure> {
    session.require(&[])?;
    let s = app::found(&state, &path).await?;
    let body = app::Redeliver {
        event_id: field(&fields, "event_id").map(str::to_string),
        since: field(&fields, "since").map(since).transpose()?,
    };
    app::redeliver_events(&state, s.id, &body).await?;
    Ok(see_other(&format!("/webhooks/{}?done=redeliver", s.id)))
}

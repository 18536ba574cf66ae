//! Bulk operations: an action on a selection (explicit `ids`, or every request a list `filter`
//! matches), up to 10,000, as one operation with its own id, its counts and each item's result.
//! An upload's line results are kept the same way (`record_upload`).
//!
//! Each item goes through the decision a single action takes (`domain::actions::decide`: the
//! states it starts from, four eyes by person), in its own transaction with its own audit entry
//! naming the operation; the operation gets one entry more (`bulk_operation`).

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::App;
use super::error::ApiError;
use super::input;
use super::requests::{ListQuery, action_details, list_filter, refused};
use crate::domain::Action;
use crate::domain::actions::{Ask, Details, Who};
use crate::store::bulk::{self, Item, NewItem, Operation};
use crate::store::keys::Principal;
use crate::store::requests::{self, Refusal};

/// Largest selection of one operation.
pub const MAX_SELECTION: usize = 10_000;
/// Items applied at once.
const AT_ONCE: usize = 8;
/// Items recorded per statement.
const CHUNK: usize = 500;

/// An action on many requests.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkBody {
    #[serde(deserialize_with = "input::from_string")]
    pub action: Action,
    /// The requests, in the order to act on them (duplicates count once). Give `ids` or
    /// `filter`.
    pub ids: Option<Vec<Uuid>>,
    /// Every request the list's filters match (as `GET /v1/erasure-requests` takes them, without
    /// `cursor` and `limit`), oldest first.
    #[schema(value_type = Option<Object>)]
    pub filter: Option<ListQuery>,
    /// For `hold`: the Art. 17(3) ground.
    #[schema(value_type = Option<crate::domain::LegalBasis>)]
    pub legal_basis: Option<serde_json::Value>,
    /// For `hold` (required) and the others (optional).
    pub note: Option<String>,
    /// For `extend`: 1 or 2.
    #[schema(value_type = Option<u32>)]
    pub months: Option<serde_json::Value>,
    /// For `extend`: why.
    pub reason: Option<String>,
}

/// The details of the action, checked as a single action's body is (`action_details`).
pub fn details_of(body: &BulkBody) -> Result<Details, ApiError> {
    let mut fields = serde_json::Map::new();
    let texts = [("note", &body.note), ("reason", &body.reason)];
    for (name, value) in texts {
        if let Some(text) = value {
            fields.insert(name.into(), text.clone().into());
        }
    }
    for (name, value) in [("legal_basis", &body.legal_basis), ("months", &body.months)] {
        if let Some(value) = value {
            fields.insert(name.into(), value.clone());
        }
    }
    let bytes = serde_json::to_vec(&fields).map_err(anyhow::Error::from)?;
    action_details(body.action, &bytes)
}

/// The requests of a selection: `ids` (each once, in order) or what `filter` matches; 1 to
/// 10,000 of them.
pub async fn selection(
    state: &App,
    ids: Option<Vec<Uuid>>,
    filter: Option<ListQuery>,
) -> Result<Vec<Uuid>, ApiError> {
    let ids = match (ids, filter) {
        (Some(ids), None) => {
            let mut seen = std::collections::HashSet::new();
            ids.into_iter().filter(|id| seen.insert(*id)).collect()
        }
        (None, Some(filter)) => {
            if filter.cursor.is_some() || filter.limit.is_some() {
                return Err(ApiError::field(
                    "filter",
                    "takes the list's filters without cursor or limit",
                ));
            }
            let f = list_filter(state, filter, MAX_SELECTION as i64 + 1)?;
            requests::matching(&state.db, &f).await?
        }
        _ => return Err(ApiError::field("ids", "give either ids or filter")),
    };
    if ids.is_empty() {
        return Err(ApiError::field("ids", "the selection holds no request"));
    }
    if ids.len() > MAX_SELECTION {
        return Err(ApiError::field(
            "ids",
            format!("the selection holds more than {MAX_SELECTION} requests; narrow it"),
        ));
    }
    Ok(ids)
}

/// Applies `action` to each of `ids` for `principal`, who must hold one of `Action::roles` (403
/// otherwise), recording
/// each item's result, and answers the finished operation (the API's and the console's one way).
pub async fn act_on_all(
    state: &App,
    principal: &Principal,
    action: Action,
    details: Details,
    ids: Vec<Uuid>,
) -> Result<Operation, ApiError> {
    super::auth::require(principal, action.roles())?;
    let op = bulk::start(
        &state.db,
        action.as_str(),
        &principal.actor(),
        ids.len(),
        None,
    )
    .await?;
    let ask = Ask {
        action,
        actor: Who::of(principal.key_id, principal.person),
        key: principal.key_id,
        policy: state.approval,
        details: Details {
            bulk: Some(op),
            ..details
        },
    };
    let mut woke = false;
    for (n, chunk) in ids.chunks(CHUNK).enumerate() {
        let items: Vec<NewItem> = futures::stream::iter(chunk)
            .map(|id| act_on_one(state, &ask, *id))
            .buffered(AT_ONCE)
            .collect()
            .await;
        woke |= items.iter().any(|i| i.result == "done");
        bulk::record(&state.db, op, 1 + n * CHUNK, &items).await?;
    }
    if woke && matches!(action, Action::Approve | Action::Release | Action::Retry) {
        state.ready.ring();
    }
    Ok(bulk::finish(&state.db, op).await?)
}

/// One item: applied, or refused with the reason a single action would have answered.
async fn act_on_one(state: &App, ask: &Ask, id: Uuid) -> NewItem {
    let refusal = match requests::act(&state.db, id, ask, state.at_risk_days).await {
        Ok(Ok(_)) => {
            return NewItem {
                line: None,
                request_id: Some(id),
                result: "done",
                error: None,
                message: None,
            };
        }
        Ok(Err(Refusal::NotFound)) => ApiError::not_found("erasure request"),
        Ok(Err(Refusal::Denied(why))) => refused(ask.action, why),
        Err(e) => {
            tracing::warn!(error = %e, request = %id, "a bulk operation's item failed");
            ApiError::Internal(e)
        }
    };
    NewItem {
        line: None,
        request_id: Some(id),
        result: "refused",
        error: Some(refusal.code().to_string()),
        message: Some(refusal.sentence()),
    }
}

/// An operation by the id in a path.
pub async fn operation(state: &App, path: &str) -> Result<Operation, ApiError> {
    let id = input::path_id(path)?;
    bulk::get(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("bulk operation"))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ItemsQuery {
    /// `next_after` of the previous page.
    pub after: Option<i32>,
    /// 1 to 1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Only items with this result (`done`, `refused`; an upload's `created`, `duplicate`,
    /// `invalid`; `attention`: every item not done or created).
    pub result: Option<String>,
}

/// The results an item filter names.
fn results_of(name: &str) -> Option<&'static [&'static str]> {
    Some(match name {
        "done" => &["done"],
        "refused" => &["refused"],
        "created" => &["created"],
        "duplicate" => &["duplicate"],
        "invalid" => &["invalid"],
        "attention" => &["refused", "duplicate", "invalid"],
        _ => return None,
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ItemPage {
    pub items: Vec<Item>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<i32>,
}

/// A page of an operation's items (the API's and the console's one way).
pub async fn item_page(state: &App, operation: Uuid, q: &ItemsQuery) -> Result<ItemPage, ApiError> {
    let limit = input::page_limit(q.limit, 100, 1000)?;
    let results = match q.result.as_deref() {
        None => None,
        Some(name) => Some(results_of(name).ok_or_else(|| {
            ApiError::field(
                "result",
                "must be done, refused, created, duplicate, invalid or attention",
            )
        })?),
    };
    let after = q.after.unwrap_or(0);
    let limit_plus_one = i64::from(limit) + 1;
    let mut items = bulk::items(&state.db, operation, after, limit_plus_one, results).await?;
    let next_after = (items.len() > limit as usize).then(|| {
        items.truncate(limit as usize);
        items.last().map_or(after, |i| i.ordinal)
    });
    Ok(ItemPage { items, next_after })
}

/// Keeps an upload's line results as an operation (`submit`), so its result page is paged like a
/// bulk action's.
pub async fn record_upload(
    state: &App,
    principal: &Principal,
    result: &super::requests::BatchResult,
) -> Result<Operation, ApiError> {
    let op = bulk::start(
        &state.db,
        "submit",
        &principal.actor(),
        result.items.len(),
        Some(result.batch_id),
    )
    .await?;
    for (n, chunk) in result.items.chunks(CHUNK).enumerate() {
        let items: Vec<NewItem> = chunk
            .iter()
            .map(|item| NewItem {
                line: item.line.map(|l| l as i64),
                request_id: item.id,
                result: match item.status.as_str() {
                    "created" => "created",
                    "duplicate" => "duplicate",
                    _ => "invalid",
                },
                error: (item.status == "invalid").then(|| "validation_failed".to_string()),
                message: item.fields.as_ref().map(|fields| {
                    fields
                        .iter()
                        .map(|(name, why)| format!("{name}: {why}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                }),
            })
            .collect();
        bulk::record(&state.db, op, 1 + n * CHUNK, &items).await?;
    }
    Ok(bulk::finish(&state.db, op).await?)
}

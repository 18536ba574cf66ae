//! `POST /v1/subjects/lookup`: was this target erased? The identifier is hashed into its
//! pseudonym in memory; it is neither stored nor logged.
//!
//! Never puts the identifier in a URL, a log line or an answer.

use actix_web::{HttpRequest, HttpResponse, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::auth::{Caller, READERS};
use super::error::{ApiError, ErrorBody};
use super::input;
use crate::domain::validate::TargetId;
use crate::domain::{Scope, State};
use crate::store::requests;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LookupBody {
    #[serde(deserialize_with = "input::from_string")]
    pub scope: Scope,
    #[schema(pattern = "^(0|[1-9][0-9]{0,31})$")]
    pub target_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LookupRequest {
    pub id: Uuid,
    pub state: State,
    pub received_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub outcome: Option<String>,
    /// Where the receipt of a completed erasure is.
    pub receipt: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LookupResult {
    /// True when a request for this target completed.
    pub erased: bool,
    /// When the first completed erasure of this target finished.
    pub erased_at: Option<DateTime<Utc>>,
    /// The pseudonym under the current key version (requests recorded under older versions
    /// are found too).
    pub subject_ref: String,
    /// Every request for this target, newest first.
    pub requests: Vec<LookupRequest>,
}

/// Was this target erased, and when? Answers from the pseudonym; stores and logs nothing.
#[utoipa::path(post, path = "/v1/subjects/lookup", tag = "subjects", request_body = LookupBody,
    responses((status = 200, body = LookupResult), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
#[post("/v1/subjects/lookup")]
pub async fn lookup(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    caller.require(READERS)?;
    let bytes = input::body(payload, input::MAX_BODY).await?;
    input::require_json(&req, &bytes, false)?;
    let body: LookupBody = input::json_object(&bytes)?;
    Ok(HttpResponse::Ok().json(find(&state, body).await?))
}

/// What the service holds about a target, found by its pseudonyms under every key version (the
/// API's and the console's one way). The identifier is hashed in memory and dropped.
pub async fn find(state: &AppState, body: LookupBody) -> Result<LookupResult, ApiError> {
    let target =
        TargetId::parse(&body.target_id).map_err(|why| ApiError::field("target_id", why))?;
    // Every key version: what was recorded before a rotation is found too.
    let refs = state.pseudonyms.subject_refs(body.scope, target.as_str());
    let requests: Vec<LookupRequest> = requests::by_target(&state.db, &refs)
        .await?
        .into_iter()
        .map(|r| LookupRequest {
            id: r.id,
            state: r.state,
            received_at: r.received_at,
            completed_at: r.completed_at,
            outcome: r.outcome,
            receipt: (r.state == State::Completed)
                .then(|| format!("/v1/erasure-requests/{}/receipt", r.id)),
        })
        .collect();
    let erased_at = requests
        .iter()
        .filter(|r| r.state == State::Completed)
        .filter_map(|r| r.completed_at)
        .min();
    Ok(LookupResult {
        erased: erased_at.is_some(),
        erased_at,
        subject_ref: refs[0].clone(),
        requests,
    })
}

/// For each target (scope and upstream id), the open request recorded under an older pseudonym
/// key version, if any: the unique index only sees pseudonyms of one version. One query for all
/// the targets; nothing to look up before a rotation. An unparsable id has none.
pub async fn open_under_old_keys(
    state: &AppState,
    targets: &[(Scope, &str)],
) -> Result<Vec<Option<Uuid>>, ApiError> {
    let older_refs: Vec<Vec<String>> = targets
        .iter()
        .map(|(scope, target_id)| match TargetId::parse(target_id) {
            Ok(target) => state.pseudonyms.older_subject_refs(*scope, target.as_str()),
            Err(_) => Vec::new(),
        })
        .collect();
    Ok(requests::open_of_each_target(&state.db, &older_refs).await?)
}

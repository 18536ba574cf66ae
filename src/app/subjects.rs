//! Was this target erased? The identifier is hashed into its pseudonyms in memory (every key
//! version still held); it is neither stored nor logged.
//!
//! Never puts the identifier in a log line or an answer.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::App;
use super::error::ApiError;
use super::input;
use crate::domain::validate::TargetId;
use crate::domain::{Scope, State};
use crate::store::{epochs, requests};

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
    /// Days a closed request stays linkable to its target (`ERASURE_RETENTION_DAYS`); then the
    /// key of its pseudonym epoch is destroyed and nobody can find it by target any more.
    pub retention_days: u32,
    /// When the oldest pseudonym epoch still held started: requests before it cannot be found.
    pub records_held_since: Option<DateTime<Utc>>,
    /// When no request is found: that no record of this target is held within the retention.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What the service holds about a target, found by its pseudonyms under every key version (the
/// API's and the console's one way). The identifier is hashed in memory and dropped.
pub async fn find(state: &App, body: LookupBody) -> Result<LookupResult, ApiError> {
    let target =
        TargetId::parse(&body.target_id).map_err(|why| ApiError::field("target_id", why))?;
    // Every live key version: what was recorded before a rotation is found too; an epoch
    // destroyed by another process since this one loaded its keys is not used.
    let live = epochs::live_versions(&state.db).await?;
    let subject_ref = state.pseudonyms.subject_ref(body.scope, target.as_str());
    let refs: Vec<String> = state
        .pseudonyms
        .subject_refs(body.scope, target.as_str())
        .into_iter()
        .filter(|r| live.iter().any(|(v, _)| r.starts_with(&format!("k{v}:"))))
        .collect();
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
    let note = requests.is_empty().then(|| {
        format!(
            "no record of this target is held within the retention period ({} days)",
            state.retention_days
        )
    });
    Ok(LookupResult {
        erased: erased_at.is_some(),
        erased_at,
        subject_ref,
        requests,
        retention_days: state.retention_days,
        records_held_since: live.first().map(|(_, at)| *at),
        note,
    })
}

/// For each target (scope and upstream id), the open request recorded under an older pseudonym
/// key version, if any: the unique index only sees pseudonyms of one version. One query for all
/// the targets; nothing to look up before a rotation. An unparsable id has none.
pub async fn open_under_old_keys(
    state: &App,
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

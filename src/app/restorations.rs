//! Restoring a connection's deleted accounts on purpose (a LIST_ACCOUNTS synchronisation), which
//! lifts the resurrection guard for them.
//!
//! Never calls the aggregator itself: the guard's `restore::check` does.

use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::App;
use super::error::ApiError;
use crate::domain::Scope;
use crate::domain::validate::{self, TargetId};
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

/// Starts a restoration for `principal` (an approver): the API's and the console's one way.
pub async fn start(
    state: &App,
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

/// The guard's check, where this process has an upstream client: the connection must still exist
/// and neither it nor its user may be being, or have been, erased. (Without an upstream client,
/// or when the upstream does not answer, the worker asks the same before it synchronises and
/// fails the restoration instead.)
async fn refused_for_the_user(state: &App, connection: &str) -> Result<Option<ApiError>, ApiError> {
    let Some(check) = &state.restore_check else {
        return Ok(None);
    };
    Ok(check.refusal(connection).await?.map(conflict))
}

/// One restoration, or 404.
pub async fn get(state: &App, id: Uuid) -> Result<Restoration, ApiError> {
    restorations::get(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("restoration"))
}

/// A refusal as a 409.
fn conflict(refused: Refused) -> ApiError {
    ApiError::conflict(refused.code(), refused.message())
}

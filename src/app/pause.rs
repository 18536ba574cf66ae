//! The pause switch of all upstream work: every process stops starting upstream calls within a
//! second (`engine::pause`); calls in flight finish and are recorded; intake and reads go on; due
//! dates do not move. Audited with who and why.

use serde::Deserialize;
use utoipa::ToSchema;

use super::App;
use super::error::ApiError;
use crate::domain::validate;
use crate::store::keys::Principal;
use crate::store::pause::{self as switch, Pause};

/// Why upstream work is paused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseBody {
    /// Up to 500 characters, no personal data (e.g. "aggregator maintenance until 14:00").
    pub reason: String,
}

/// Why it is resumed (optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResumeBody {
    pub reason: Option<String>,
}

fn reason(text: &str) -> Result<String, ApiError> {
    validate::free_text(text, 500).map_err(|why| ApiError::field("reason", why))
}

/// Pauses all upstream work for `principal` (the API's and the console's one way).
pub async fn pause_all(state: &App, principal: &Principal, why: &str) -> Result<Pause, ApiError> {
    let why = reason(why)?;
    Ok(switch::set(&state.db, true, Some(&why), &principal.actor())
        .await?
        .0)
}

/// Resumes all upstream work for `principal` (the API's and the console's one way).
pub async fn resume_all(
    state: &App,
    principal: &Principal,
    why: Option<&str>,
) -> Result<Pause, ApiError> {
    let why = why.map(reason).transpose()?;
    Ok(
        switch::set(&state.db, false, why.as_deref(), &principal.actor())
            .await?
            .0,
    )
}

/// Whether upstream work is paused, since when, by whom and why.
pub async fn current(state: &App) -> Result<Pause, ApiError> {
    Ok(switch::current(&state.db).await?)
}

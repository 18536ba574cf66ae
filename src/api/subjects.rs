//! `POST /v1/subjects/lookup`: was this target erased? The identifier is hashed into its
//! pseudonym in memory; it is neither stored nor logged.
//!
//! Never puts the identifier in a URL, a log line or an answer.

use actix_web::{HttpResponse, post, web};

use super::AppState;
use super::auth::Caller;
use super::error::ErrorBody;
use super::input::JsonBody;
use crate::app::auth::READERS;
use crate::app::error::ApiError;
use crate::app::subjects::{self, LookupBody, LookupResult};

/// Was this target erased, and when? Answers from the pseudonym; stores and logs nothing.
#[utoipa::path(post, path = "/v1/subjects/lookup", tag = "subjects", request_body = LookupBody,
    responses((status = 200, body = LookupResult), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
#[post("/v1/subjects/lookup")]
pub async fn lookup(
    state: web::Data<AppState>,
    caller: Caller,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    caller.require(READERS)?;
    let body: LookupBody = body.object()?;
    Ok(HttpResponse::Ok().json(subjects::find(&state, body).await?))
}

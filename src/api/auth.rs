//! Bearer API keys and roles.
//!
//! Never logs or returns a key: only its prefix names it.

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, web};
use futures::future::LocalBoxFuture;

use super::AppState;
use super::error::ApiError;
use crate::domain::Role;
use crate::store::keys::Principal;

/// The caller, authenticated by its API key.
pub struct Caller(pub Principal);

impl Caller {
    /// Refuses with 403 unless the caller has one of `roles` (admin always may).
    pub fn require(&self, roles: &[Role]) -> Result<&Principal, ApiError> {
        if self.0.role == Role::Admin || roles.contains(&self.0.role) {
            Ok(&self.0)
        } else {
            let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            Err(ApiError::client(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "this needs the role {} (this key is {})",
                    names.join(" or "),
                    self.0.role.as_str()
                ),
            ))
        }
    }
}

/// Who may read requests.
pub const READERS: &[Role] = &[Role::Requester, Role::Approver, Role::Auditor];

fn unauthorized(message: &str) -> ApiError {
    ApiError::client(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let header = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no app state")))?;
            let header = header
                .ok_or_else(|| unauthorized("send an API key: `Authorization: Bearer <key>`"))?;
            let key = header
                .strip_prefix("Bearer ")
                .or_else(|| header.strip_prefix("bearer "))
                .map(str::trim)
                .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <key>`"))?;
            let principal = state
                .keys
                .submit(key.to_string())
                .await?
                .ok_or_else(|| unauthorized("unknown, revoked or expired API key"))?;
            state
                .rates
                .take(principal.key_id)
                .map_err(|wait| ApiError::RateLimited {
                    retry_after: wait,
                    per_second: state.rates.rate(),
                })?;
            Ok(Caller(principal))
        })
    }
}

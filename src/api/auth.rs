//! Bearer API keys and roles; the console's session cookie for reads.
//!
//! A `GET` or `HEAD` without an `Authorization` header may be authenticated by the console's
//! session cookie (HttpOnly, SameSite=Strict), so that a signed-in browser can open the report, an
//! export or a receipt; every other method needs the bearer key (the console's own forms check a
//! CSRF token and `Origin` before they act).
//!
//! Never logs or returns a key or a session token: only a key's prefix names it.

use actix_web::dev::Payload;
use actix_web::http::{Method, StatusCode};
use actix_web::{FromRequest, HttpRequest, web};
use futures::future::LocalBoxFuture;

use super::AppState;
use crate::app::error::ApiError;
use crate::domain::Role;
use crate::store::keys::Principal;

/// The caller, authenticated by its API key.
pub struct Caller(pub Principal);

/// The cookie that holds a console session's token.
pub const SESSION_COOKIE: &str = "erasure_session";

impl Caller {
    /// Refuses with 403 unless the caller has one of `roles` (admin always may).
    pub fn require(&self, roles: &[Role]) -> Result<&Principal, ApiError> {
        crate::app::auth::require(&self.0, roles)
    }
}

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
        let reads = matches!(*req.method(), Method::GET | Method::HEAD);
        let session = req
            .cookie(SESSION_COOKIE)
            .filter(|_| reads && header.is_none())
            .map(|c| c.value().to_string());
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no app state")))?;
            let principal = if let Some(token) = session {
                crate::store::sessions::principal(&state.db, &token)
                    .await?
                    .ok_or_else(|| {
                        unauthorized("the console session ended: sign in again, or send an API key")
                    })?
            } else {
                let header = header.ok_or_else(|| {
                    unauthorized("send an API key: `Authorization: Bearer <key>`")
                })?;
                let key = header
                    .strip_prefix("Bearer ")
                    .or_else(|| header.strip_prefix("bearer "))
                    .map(str::trim)
                    .ok_or_else(|| {
                        unauthorized("the Authorization header must be `Bearer <key>`")
                    })?;
                state
                    .keys
                    .submit(key.to_string())
                    .await?
                    .ok_or_else(|| unauthorized("unknown, revoked or expired API key"))?
            };
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

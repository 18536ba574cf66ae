//! How the API renders the one error of the use cases (`app::error::ApiError`): `{error, message,
//! fields?}` with its status.
//!
//! A body never carries personal data, a secret or an internal error's text: a 500 says only that
//! something failed (the cause goes to the log, without identifiers).

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::error::ApiError;
use crate::store;

/// The error body of every 4xx and 5xx.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A machine-readable code, e.g. `validation_failed`, `duplicate_request`.
    pub error: String,
    /// A sentence for people.
    pub message: String,
    /// For validation errors: why each named field was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<BTreeMap<String, String>>,
    /// Extra facts, e.g. the id of the existing request for `duplicate_request`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<serde_json::Value>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Invalid { status, .. } | ApiError::Client { status, .. } => *status,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(e) => {
                if is_unavailable(e) {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            }
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let body = match self {
            ApiError::Invalid {
                code,
                message,
                fields,
                ..
            } => ErrorBody {
                error: (*code).into(),
                message: message.clone(),
                fields: Some(fields.clone()),
                details: None,
            },
            ApiError::Client {
                code,
                message,
                details,
                ..
            } => ErrorBody {
                error: (*code).into(),
                message: message.clone(),
                fields: None,
                details: details.clone(),
            },
            ApiError::RateLimited { per_second, .. } => ErrorBody {
                error: "rate_limited".into(),
                message: format!(
                    "this API key sent more than {per_second} requests per second; \
                     retry after the time in Retry-After"
                ),
                fields: None,
                details: None,
            },
            ApiError::Internal(e) => {
                // Errors from the store or the engine never carry request bodies, but keep the
                // detail in the log only.
                tracing::error!(error = %e, "request failed");
                let unavailable = status == StatusCode::SERVICE_UNAVAILABLE;
                ErrorBody {
                    error: if unavailable {
                        "unavailable"
                    } else {
                        "internal"
                    }
                    .into(),
                    message: if unavailable {
                        "the database is unreachable; nothing was recorded, try again shortly"
                    } else {
                        "internal error; nothing was recorded unless the response said so"
                    }
                    .into(),
                    fields: None,
                    details: None,
                }
            }
        };
        let mut reply = HttpResponse::build(status);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            reply.insert_header(("Retry-After", "5"));
        }
        if let ApiError::RateLimited { retry_after, .. } = self {
            let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            reply.insert_header(("Retry-After", secs.to_string()));
        }
        reply.json(body)
    }
}

fn is_unavailable(e: &anyhow::Error) -> bool {
    e.downcast_ref::<store::Error>()
        .is_some_and(store::unreachable)
}

/// Documents, on every operation, the errors any request can meet before its handler decides:
/// the limits (429, 431), authentication (401, 403), unreadable or oversized bodies (400, 408,
/// 413, 415), invalid parameters (422) and an unreachable database (503).
pub struct CommonResponses;

impl utoipa::Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        for item in openapi.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
                let with_body = op.request_body.is_some();
                let mut add = |code: &str, description: &str| {
                    op.responses
                        .responses
                        .entry(code.to_string())
                        .or_insert_with(|| error(description).into());
                };
                add(
                    "429",
                    "Too many requests from this API key (see Retry-After) or too many open \
                     connections from this address",
                );
                add("431", "The request line and headers are too large");
                if secured {
                    add("401", "No API key, or an unknown, revoked or expired one");
                    add("403", "The API key's role may not do this");
                    add("422", "An invalid parameter or field, named in `fields`");
                    add("503", "The database is unreachable; nothing was recorded");
                }
                if with_body {
                    add("400", "The body cannot be read (not JSON, truncated)");
                    add("408", "The body took too long to arrive");
                    add("413", "The body is too large");
                    add("415", "The body is not of a supported media type");
                }
            }
        }
    }
}

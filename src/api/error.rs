//! One error type for the whole API, rendered as `{error, message, fields?}`.
//!
//! A body never carries personal data, a secret or an internal error's text: a 500 says only that
//! something failed (the cause goes to the log, without identifiers).

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

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

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    Invalid {
        status: StatusCode,
        code: &'static str,
        message: String,
        fields: BTreeMap<String, String>,
    },
    #[error("{message}")]
    Client {
        status: StatusCode,
        code: &'static str,
        message: String,
        details: Option<serde_json::Value>,
    },
    /// 429: this key sent more than its rate; `Retry-After` says when to come back.
    #[error("rate limited")]
    RateLimited {
        retry_after: std::time::Duration,
        per_second: f64,
    },
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// 422 naming one field.
    pub fn field(field: impl Into<String>, why: impl Into<String>) -> Self {
        let mut fields = BTreeMap::new();
        fields.insert(field.into(), why.into());
        Self::fields(fields)
    }

    /// 422 naming several fields.
    pub fn fields(fields: BTreeMap<String, String>) -> Self {
        let names: Vec<&str> = fields.keys().map(String::as_str).collect();
        ApiError::Invalid {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "validation_failed",
            message: format!("invalid field(s): {}", names.join(", ")),
            fields,
        }
    }

    /// 400 for a body or query that cannot be read at all.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::client(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn client(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Client {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn with_details(self, value: serde_json::Value) -> Self {
        match self {
            ApiError::Client {
                status,
                code,
                message,
                ..
            } => ApiError::Client {
                status,
                code,
                message,
                details: Some(value),
            },
            other => other,
        }
    }

    pub fn not_found(what: &str) -> Self {
        Self::client(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such {what}"),
        )
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::client(StatusCode::CONFLICT, code, message)
    }

    /// The machine-readable code of the body (`error`).
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Invalid { code, .. } | ApiError::Client { code, .. } => code,
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Internal(_) => "internal_error",
        }
    }

    /// The sentence of the body for people, with the fields it names and why (never an internal
    /// error's cause).
    pub fn sentence(&self) -> String {
        match self {
            ApiError::Invalid { fields, .. } => fields
                .iter()
                .map(|(name, why)| format!("{name}: {why}"))
                .collect::<Vec<_>>()
                .join("; "),
            ApiError::Internal(_) => "could not be applied; try again".into(),
            other => other.to_string(),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Internal(e.into())
    }
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

//! The one error of every use case: what went wrong, in words a client may read. The API and the
//! console render it (`api::error`: `{error, message, fields?}` as JSON; a page for the console);
//! the command line prints its sentence.
//!
//! Never carries personal data, a secret or an internal error's text to a client: `Internal`
//! keeps its cause for the log only.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;

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

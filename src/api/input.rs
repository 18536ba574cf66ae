//! Reading what HTTP clients send: bounded bodies, the JSON body extractor, query strings. The
//! parsing itself (JSON, query text, path ids) is `app::input`, shared with the console.
//!
//! Never echoes a value it refuses (it could be personal data): messages name the field and why.

use actix_web::error::PayloadError;
use actix_web::http::StatusCode;
use actix_web::web::{Bytes, BytesMut};
use actix_web::{FromRequest, HttpRequest, dev};
use futures::future::LocalBoxFuture;
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;

use crate::app::error::ApiError;
use crate::app::input::{json_object, json_or_default, query_str};

/// Largest body of a single request.
pub const MAX_BODY: usize = 1024 * 1024;
/// Largest body of a batch (10,000 items).
pub const MAX_BATCH_BODY: usize = 16 * 1024 * 1024;

/// Reads the body, refusing more than `limit` bytes with 413.
pub async fn body<S>(mut payload: S, limit: usize) -> Result<Bytes, ApiError>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    let mut out = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            if super::limits::is_body_timeout(&e) {
                ApiError::client(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    "the request body took too long to arrive",
                )
            } else {
                ApiError::bad_request("unreadable_body", "the request body could not be read")
            }
        })?;
        if out.len() + chunk.len() > limit {
            return Err(ApiError::client(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the request body exceeds {limit} bytes"),
            ));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

/// A request's body, read within [`MAX_BODY`] (413 beyond), with whether it was sent as
/// `application/json`: the one way a handler reads a JSON body. Put it after the `Caller`, so
/// that a request is authenticated before its body is read, and parse it after the role check.
pub struct JsonBody {
    pub bytes: Bytes,
    is_json: bool,
}

impl JsonBody {
    /// The body as one JSON object of type `T`; 415 unless it was sent as JSON.
    pub fn object<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        self.require(false)?;
        json_object(&self.bytes)
    }

    /// Like [`JsonBody::object`] for an optional body: empty means `T::default()`.
    pub fn object_or_default<T: DeserializeOwned + Default>(&self) -> Result<T, ApiError> {
        self.require(true)?;
        json_or_default(&self.bytes)
    }

    /// Refuses anything but JSON (an empty body is allowed when `optional`).
    pub fn require(&self, optional: bool) -> Result<(), ApiError> {
        if self.is_json || (optional && self.bytes.iter().all(u8::is_ascii_whitespace)) {
            return Ok(());
        }
        Err(ApiError::client(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as application/json",
        ))
    }
}

impl FromRequest for JsonBody {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut dev::Payload) -> Self::Future {
        let is_json = media_type(req).as_deref() == Some("application/json");
        let payload = payload.take();
        Box::pin(async move {
            Ok(JsonBody {
                bytes: body(payload, MAX_BODY).await?,
                is_json,
            })
        })
    }
}

/// The media type of the request, lower-cased, without parameters.
pub fn media_type(req: &HttpRequest) -> Option<String> {
    let value = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)?
        .to_str()
        .ok()?;
    Some(value.split(';').next()?.trim().to_ascii_lowercase())
}

/// Parses a query string into `T`, naming the refused parameter.
pub fn query<T: DeserializeOwned>(req: &HttpRequest) -> Result<T, ApiError> {
    query_str(req.query_string())
}

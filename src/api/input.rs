//! Reading what clients send: bounded bodies, JSON and query strings parsed with the path of
//! whatever field was refused.
//!
//! Never echoes a value it refuses (it could be personal data): messages name the field and why.

use actix_web::error::PayloadError;
use actix_web::http::StatusCode;
use actix_web::web::{Bytes, BytesMut};
use actix_web::{FromRequest, HttpRequest, dev};
use futures::future::LocalBoxFuture;
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;

use super::error::ApiError;

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

/// Parses JSON into `T`, naming the refused field.
pub fn json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let inner = e.inner();
        if inner.is_eof() {
            // A truncated body is not about one field.
            ApiError::bad_request(
                "invalid_json",
                format!(
                    "the body ends early (line {}, column {})",
                    inner.line(),
                    inner.column()
                ),
            )
        } else {
            field_error(&e)
        }
    })?;
    de.end().map_err(|_| {
        ApiError::bad_request("invalid_json", "trailing characters after the JSON value")
    })?;
    Ok(parsed)
}

/// Like [`json`] for a body that must be one JSON object: serde would also read a struct from
/// an array of its fields in order.
pub fn json_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => json(bytes),
        _ => Err(ApiError::bad_request(
            "invalid_json",
            "the body must be a JSON object",
        )),
    }
}

/// Reads a field of a string type (an enum) only from a JSON string: serde would also take the
/// object `{"user": null}` for the variant `user`. Use with `#[serde(deserialize_with)]`.
pub fn from_string<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: DeserializeOwned,
{
    use serde::Deserialize;
    use serde::de::{Error, IntoDeserializer};
    let text = String::deserialize(deserializer)?;
    T::deserialize(IntoDeserializer::<serde::de::value::Error>::into_deserializer(text))
        .map_err(D::Error::custom)
}

/// Like [`json`] for an optional body: empty means `T::default()`.
pub fn json_or_default<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        json_object(bytes)
    }
}

/// Parses a value already read as JSON into `T` (used per batch item).
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| field_error(&e))
}

/// Parses a query string into `T`, naming the refused parameter.
pub fn query<T: DeserializeOwned>(req: &HttpRequest) -> Result<T, ApiError> {
    query_str(req.query_string())
}

/// Parses query text into `T`, naming the refused parameter (never repeating its value).
pub fn query_str<T: DeserializeOwned>(text: &str) -> Result<T, ApiError> {
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(text.as_bytes()));
    serde_path_to_error::deserialize(de).map_err(|e| field_error(&e))
}

fn field_error<E: std::fmt::Display>(e: &serde_path_to_error::Error<E>) -> ApiError {
    let inner = e.inner().to_string();
    let path = e.path().to_string();
    // serde names the field in its message; the path is the parent's, or already the field's.
    let named = |name: &str| {
        if path == "." {
            name.to_string()
        } else if path == name || path.ends_with(&format!(".{name}")) {
            path.clone()
        } else {
            format!("{path}.{name}")
        }
    };
    for (prefix, why) in [
        ("unknown field `", "unknown field"),
        ("missing field `", "is required"),
        ("duplicate field `", "is given more than once"),
    ] {
        if let Some(rest) = inner.strip_prefix(prefix)
            && let Some(name) = rest.split('`').next()
        {
            // An unknown name is the client's own text: repeat it only when it is harmless.
            if !crate::domain::validate::safe_to_echo(name) {
                return ApiError::field("(unnamed field)", why);
            }
            return ApiError::field(named(name), why);
        }
    }
    if path == "." || path.contains('?') {
        // Not about one field: the body itself is not what we expect.
        return ApiError::bad_request(
            "invalid_json",
            format!("the body is not valid: {}", reason(&inner)),
        );
    }
    ApiError::field(path, reason(&inner))
}

/// The reason of a serde message without the value that was refused (it may be personal data)
/// and without serde_json's " at line L column C".
fn reason(message: &str) -> String {
    // Search from the end: the refused value comes before serde's own words and may contain them.
    let message = match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => message,
    };
    let expected = message.rfind(", expected ").map(|i| &message[i + 2..]);
    let kind = if message.starts_with("invalid type") {
        "wrong type"
    } else if message.starts_with("invalid value") || message.starts_with("unknown variant") {
        "invalid value"
    } else if message.starts_with("invalid length") {
        "invalid length"
    } else if message.starts_with("EOF")
        || message.starts_with("expected")
        || message.starts_with("key must")
    {
        return "malformed JSON".to_string();
    } else {
        // chrono, uuid and number parsers describe the format, never the input.
        return message.to_string();
    };
    match expected {
        Some(expected) => format!("{kind}; {expected}"),
        None => kind.to_string(),
    }
}

/// A UUID from a path segment (`{id}`), or 422 naming `id`.
pub fn path_id(path: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(path).map_err(|_| ApiError::field("id", "must be a UUID"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_never_echo_the_value() {
        let r = reason("invalid type: string \"jean@example.fr\", expected u32 at line 1 column 9");
        assert_eq!(r, "wrong type; expected u32");
        let r = reason(
            "unknown variant `FR7630006000011234567890189`, expected one of `user`, `account`",
        );
        assert!(!r.contains("FR76"), "{r}");
        assert!(r.contains("expected one of"));
        let r = reason(
            "unknown variant `x, expected jean@example.fr`, expected one of `user`, `account`",
        );
        assert!(!r.contains("jean"), "{r}");
        assert!(r.contains("expected one of"));
    }
}

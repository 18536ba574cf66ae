//! Reading input into typed values: JSON bodies, query text, path ids, each refused with a
//! 4xx `ApiError` that names the field and never repeats the value (it may be personal data).
//! The same for the API's bodies, the console's forms and the batch files.

use serde::de::DeserializeOwned;

use super::error::ApiError;

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

/// A page's size: `limit` (or `default` when absent), from 1 to `max`, or 422 naming `limit`.
pub fn page_limit(limit: Option<u32>, default: u32, max: u32) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(default);
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::field(
            "limit",
            format!("must be between 1 and {max}"),
        ))
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

//! Hostile answers of the fault layer: huge bodies, truncated JSON, HTML instead of JSON,
//! redirects to another host and bodies that drip in a byte at a time.
//!
//! Never reached unless a test or a benchmark sets such a fault.

use std::time::Duration;

use actix_web::HttpResponse;
use actix_web::body::BoxBody;
use actix_web::dev::ServiceResponse;
use actix_web::http::header;
use actix_web::web::Bytes;

/// How a genuine answer is spoiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Corruption {
    BadJson,
    Html,
}

impl Corruption {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Corruption::BadJson => "bad_json",
            Corruption::Html => "wrong_content_type",
        }
    }
}

/// 200 with `bytes` of JSON whitespace after `[`, streamed in 64 KiB chunks (never in memory).
pub(crate) fn huge_body(bytes: usize) -> HttpResponse {
    const CHUNK: usize = 64 * 1024;
    let chunk = Bytes::from(vec![b' '; CHUNK]);
    let chunks = bytes.div_ceil(CHUNK);
    let body = futures::stream::iter(
        std::iter::once(Bytes::from_static(b"["))
            .chain(std::iter::repeat_n(chunk, chunks))
            .map(Ok::<_, std::convert::Infallible>),
    );
    HttpResponse::Ok()
        .content_type("application/json")
        .streaming(body)
}

/// 307 to the same path on a host that is not the upstream.
pub(crate) fn redirect(path: &str) -> HttpResponse {
    HttpResponse::TemporaryRedirect()
        .insert_header((header::LOCATION, format!("http://redirected.invalid{path}")))
        .finish()
}

/// 200 at once, then a JSON body one byte every `every`.
pub(crate) fn drip(every: Duration) -> HttpResponse {
    let text: &'static [u8] = br#"{"drip": "this body arrives one byte at a time"}"#;
    let body = futures::stream::unfold(0usize, move |i| async move {
        if i >= text.len() {
            return None;
        }
        if i > 0 {
            actix_web::rt::time::sleep(every).await;
        }
        Some((
            Ok::<_, std::convert::Infallible>(Bytes::copy_from_slice(&text[i..=i])),
            i + 1,
        ))
    });
    HttpResponse::Ok()
        .content_type("application/json")
        .streaming(body)
}

/// Replaces the body of a genuine answer.
pub(crate) fn corrupt(res: ServiceResponse<BoxBody>, how: Corruption) -> ServiceResponse<BoxBody> {
    let (body, content_type): (&'static str, &'static str) = match how {
        Corruption::BadJson => (r#"{"id": "1", "name": "trunc"#, "application/json"),
        Corruption::Html => (
            "<html><body><h1>Maintenance</h1></body></html>",
            "text/html; charset=utf-8",
        ),
    };
    let mut res = res.map_body(|_, _| BoxBody::new(body));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    res.headers_mut().remove(header::CONTENT_LENGTH);
    res
}

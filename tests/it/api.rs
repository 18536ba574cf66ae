//! The erasure-request API through HTTP, black-box: validation, authentication and roles,
//! transitions, the approval policy, due dates, batches, the list and idempotency keys.
//! The engine is off (`worker: false`), so requests stay where the API puts them.

use crate::common;

use std::collections::HashSet;

use chrono::{DateTime, Months, Utc};
use common::{Options, TestApp};
use erasure::config::ApprovalPolicy;
use serde_json::{Value, json};

const REQUESTS: &str = "/v1/erasure-requests";
const BATCH: &str = "/v1/erasure-requests/batch";

/// What came back: the status, the raw text and the text parsed as JSON (`Null` if it is not).
struct Reply {
    status: u16,
    text: String,
    json: Value,
    location: Option<String>,
}

async fn send(rb: reqwest::RequestBuilder) -> Reply {
    let r = rb.send().await.expect("the server answers");
    let status = r.status().as_u16();
    let location = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = r.text().await.unwrap_or_default();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply {
        status,
        text,
        json,
        location,
    }
}

async fn api() -> TestApp {
    TestApp::spawn(Options {
        worker: false,
        ..Options::default()
    })
    .await
}

async fn api_with(approval: ApprovalPolicy) -> TestApp {
    TestApp::spawn(Options {
        worker: false,
        approval,
        ..Options::default()
    })
    .await
}

/// POST with a raw body and content type (none when `None`).
async fn post_raw(
    app: &TestApp,
    path: &str,
    key: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> Reply {
    let mut rb = app.http.post(app.url(path)).bearer_auth(key).body(body);
    if let Some(ct) = content_type {
        rb = rb.header("content-type", ct);
    }
    send(rb).await
}

async fn post_json(app: &TestApp, path: &str, key: &str, body: &Value) -> Reply {
    send(app.http.post(app.url(path)).bearer_auth(key).json(body)).await
}

async fn get(app: &TestApp, path: &str, key: &str) -> Reply {
    send(app.http.get(app.url(path)).bearer_auth(key)).await
}

/// GET the list with query parameters (encoded by reqwest).
async fn list(app: &TestApp, query: &[(&str, &str)]) -> Reply {
    send(
        app.http
            .get(app.url(REQUESTS))
            .bearer_auth(&app.auditor)
            .query(query),
    )
    .await
}

fn ids_of(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap_or_else(|| panic!("not a page: {page}"))
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// The body is exactly the error shape `{error, message, fields?, details?}`.
fn assert_error_shape(r: &Reply) {
    let obj = r.json.as_object().unwrap_or_else(|| {
        panic!(
            "status {}: the body is not a JSON object: {:?}",
            r.status, r.text
        )
    });
    assert!(
        obj["error"].as_str().is_some_and(|e| !e.is_empty()),
        "no error code: {}",
        r.text
    );
    assert!(
        obj["message"].as_str().is_some_and(|m| !m.is_empty()),
        "no message: {}",
        r.text
    );
    if let Some(fields) = obj.get("fields") {
        let fields = fields
            .as_object()
            .unwrap_or_else(|| panic!("fields is not an object: {}", r.text));
        assert!(!fields.is_empty(), "empty fields: {}", r.text);
        assert!(fields.values().all(Value::is_string), "{}", r.text);
    }
    for key in obj.keys() {
        assert!(
            ["error", "message", "fields", "details"].contains(&key.as_str()),
            "unexpected key {key}: {}",
            r.text
        );
    }
}

/// Asserts an error reply with this status and code.
fn assert_error(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text);
    assert_error_shape(r);
    assert_eq!(r.json["error"], code, "{}", r.text);
}

/// Asserts a 422 naming `field`.
fn assert_field(r: &Reply, field: &str) {
    assert_error(r, 422, "validation_failed");
    assert!(
        r.json["fields"].get(field).is_some_and(Value::is_string),
        "expected the field {field:?} to be named: {}",
        r.text
    );
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .unwrap_or_else(|| panic!("not a time: {v}"))
        .parse()
        .unwrap_or_else(|e| panic!("not RFC 3339 ({e}): {v}"))
}

async fn count_requests(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from erasure_requests")
        .fetch_one(&app.db)
        .await
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// 1. Validation of POST /v1/erasure-requests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_refuses_invalid_fields_naming_them() {
    let app = api().await;
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"scope": "user", "target_id": "1", "colour": "red"}),
            "colour",
        ),
        (json!({"scope": 5, "target_id": "1"}), "scope"),
        (json!({"scope": "user", "target_id": 12}), "target_id"),
        (json!({"target_id": "1"}), "scope"),
        (json!({"scope": "user"}), "target_id"),
        (json!({"scope": "galaxy", "target_id": "1"}), "scope"),
        (json!({"scope": "User", "target_id": "1"}), "scope"),
        (json!({"scope": "user", "target_id": ""}), "target_id"),
        (json!({"scope": "user", "target_id": "   "}), "target_id"),
        (
            json!({"scope": "user", "target_id": "1".repeat(33)}),
            "target_id",
        ),
        (json!({"scope": "user", "target_id": "12a"}), "target_id"),
        (json!({"scope": "user", "target_id": "-12"}), "target_id"),
        (json!({"scope": "user", "target_id": "1.5"}), "target_id"),
        (
            json!({"scope": "user", "target_id": "1", "not_before": "tomorrow"}),
            "not_before",
        ),
        (
            json!({"scope": "user", "target_id": "1", "not_before": "2026-13-01T00:00:00Z"}),
            "not_before",
        ),
        (
            json!({"scope": "user", "target_id": "1", "not_before": "2026-01-01"}),
            "not_before",
        ),
        (
            json!({"scope": "user", "target_id": "1", "not_before": 1_767_225_600}),
            "not_before",
        ),
        (
            json!({"scope": "user", "target_id": "1", "not_before": (Utc::now() + chrono::Duration::days(800)).to_rfc3339()}),
            "not_before",
        ),
        (
            json!({"scope": "user", "target_id": "1", "external_reference": ""}),
            "external_reference",
        ),
        (
            json!({"scope": "user", "target_id": "1", "external_reference": "x".repeat(129)}),
            "external_reference",
        ),
        (
            json!({"scope": "user", "target_id": "1", "external_reference": 7}),
            "external_reference",
        ),
    ];
    for (body, field) in &cases {
        let r = post_json(&app, REQUESTS, &app.requester, body).await;
        assert_field(&r, field);
        assert!(
            r.json["message"].as_str().unwrap().contains(field),
            "the message names {field}: {}",
            r.text
        );
    }
    // Several bad fields at once are all named.
    let r = post_json(
        &app,
        REQUESTS,
        &app.requester,
        &json!({"scope": "user", "target_id": "x", "external_reference": "a@b.fr"}),
    )
    .await;
    assert_field(&r, "target_id");
    assert_field(&r, "external_reference");
    // The same key twice is named too.
    let r = post_raw(
        &app,
        REQUESTS,
        &app.requester,
        Some("application/json"),
        r#"{"scope":"user","scope":"account","target_id":"1"}"#,
    )
    .await;
    assert_field(&r, "scope");
    assert_eq!(count_requests(&app).await, 0, "nothing refused was stored");

    // The boundaries are accepted: 32 digits, a trimmed id, a not_before within the year.
    let r = post_json(
        &app,
        REQUESTS,
        &app.requester,
        &json!({"scope": "user", "target_id": "9".repeat(32)}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let r = post_json(
        &app,
        REQUESTS,
        &app.requester,
        &json!({"scope": "account", "target_id": " 77 ", "not_before": "2020-01-01T00:00:00+02:00", "external_reference": "TICKET-2041"}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.json["not_before"], "2019-12-31T22:00:00Z");
    assert_eq!(r.json["external_reference"], "TICKET-2041");
    assert_eq!(count_requests(&app).await, 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_data_is_refused_and_never_echoed() {
    let app = api().await;
    let personal = [
        "jean.dupont@example.fr",
        "see marie.curie@exemple.com",
        "FR7630006000011234567890189",
        "FR76 3000 6000 0112 3456 7890 189",
        "+33 6 12 34 56 78",
        "06.12.34.56.78",
    ];
    for value in personal {
        let r = post_json(
            &app,
            REQUESTS,
            &app.requester,
            &json!({"scope": "user", "target_id": "1", "external_reference": value}),
        )
        .await;
        assert_field(&r, "external_reference");
        assert!(
            !r.text.contains(value),
            "the error echoes {value:?}: {}",
            r.text
        );
        for word in value.split_whitespace().filter(|w| w.len() > 3) {
            assert!(
                !r.text.contains(word),
                "the error echoes {word:?}: {}",
                r.text
            );
        }
    }
    // Nor is a value sent in another field, even one shaped like serde's own message.
    let sneaky = "x, expected jean.dupont@example.fr";
    let r = post_json(
        &app,
        REQUESTS,
        &app.requester,
        &json!({"scope": sneaky, "target_id": "1"}),
    )
    .await;
    assert_field(&r, "scope");
    assert!(!r.text.contains("jean.dupont"), "{}", r.text);
    let r = post_json(
        &app,
        REQUESTS,
        &app.requester,
        &json!({"scope": "user", "target_id": "jean.dupont@example.fr"}),
    )
    .await;
    assert_field(&r, "target_id");
    assert!(!r.text.contains("jean.dupont"), "{}", r.text);
    let r = post_json(
        &app,
        REQUESTS,
        &app.requester,
        &json!({"scope": "user", "target_id": 33612345678u64}),
    )
    .await;
    assert_field(&r, "target_id");
    assert!(!r.text.contains("33612345678"), "{}", r.text);
    let r = list(&app, &[("state", "x, expected jean.dupont@example.fr")]).await;
    assert_field(&r, "state");
    assert!(!r.text.contains("jean.dupont"), "{}", r.text);
    assert_eq!(count_requests(&app).await, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_bodies_get_clear_errors() {
    let app = api().await;
    let key = app.requester.clone();
    let valid = r#"{"scope":"user","target_id":"1"}"#;

    // Over 1 MiB.
    let filler = "1".repeat(1024 * 1024);
    let big = format!(r#"{{"scope":"user","target_id":"{filler}"}}"#);
    let r = post_raw(&app, REQUESTS, &key, Some("application/json"), big).await;
    assert_error(&r, 413, "body_too_large");

    // Wrong or missing content type, even with a valid body.
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/jsonx"),
        None,
    ] {
        let r = post_raw(&app, REQUESTS, &key, ct, valid).await;
        assert_error(&r, 415, "unsupported_media_type");
    }

    // Bodies that are not one JSON object.
    for body in [
        r#"{"scope":"user","#,
        "{scope: user}",
        "",
        "   ",
        r#"[{"scope":"user","target_id":"1"}]"#,
        r#"["user","1"]"#,
        "null",
        "42",
        r#""user""#,
        r#"{"scope":"user","target_id":"1"} {"#,
    ] {
        let r = post_raw(&app, REQUESTS, &key, Some("application/json"), body).await;
        assert_error(&r, 400, "invalid_json");
    }

    // The media type is read without its parameters and case-insensitively.
    let r = post_raw(
        &app,
        REQUESTS,
        &key,
        Some("Application/JSON; charset=utf-8"),
        valid,
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(count_requests(&app).await, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nasty_inputs_never_cause_a_5xx() {
    let app = api().await;
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let deep_obj = format!("{}1{}", r#"{"a":"#.repeat(3000), "}".repeat(3000));
    let long = "9".repeat(200_000);
    let bodies: Vec<Vec<u8>> = vec![
        // numbers
        br#"{"scope":"user","target_id":1e999}"#.to_vec(),
        br#"{"scope":"user","target_id":18446744073709551616}"#.to_vec(),
        br#"{"scope":"user","target_id":-0}"#.to_vec(),
        br#"{"scope":1e999,"target_id":"1"}"#.to_vec(),
        br#"{"scope":"user","target_id":"1e999"}"#.to_vec(),
        br#"{"scope":"user","target_id":"1","not_before":1e999}"#.to_vec(),
        br#"{"scope":"user","target_id":"99999999999999999999999999999999999999999999999"}"#
            .to_vec(),
        // dates outside what PostgreSQL (or anyone) can store
        br#"{"scope":"user","target_id":"1","not_before":"-10000-01-01T00:00:00Z"}"#.to_vec(),
        br#"{"scope":"user","target_id":"1","not_before":"-262143-01-01T00:00:00Z"}"#.to_vec(),
        br#"{"scope":"user","target_id":"1","not_before":"+262142-01-01T00:00:00Z"}"#.to_vec(),
        br#"{"scope":"user","target_id":"1","not_before":"9999-12-31T23:59:60Z"}"#.to_vec(),
        br#"{"scope":"user","target_id":"1","not_before":"2026-02-30T00:00:00Z"}"#.to_vec(),
        // nesting
        format!(r#"{{"scope":{deep},"target_id":"1"}}"#).into_bytes(),
        format!(r#"{{"scope":"user","target_id":{deep_obj}}}"#).into_bytes(),
        format!(r#"{{"scope":"user","target_id":"1","not_before":{deep}}}"#).into_bytes(),
        format!(r#"{{"scope":"user","target_id":"1","nested":{deep}}}"#).into_bytes(),
        deep.clone().into_bytes(),
        br#"{"scope":{"user":null},"target_id":"1"}"#.to_vec(),
        br#"{"scope":{"user":{}},"target_id":"1"}"#.to_vec(),
        br#"{"scope":["user"],"target_id":"1"}"#.to_vec(),
        br#"{"scope":"user","target_id":["1"]}"#.to_vec(),
        br#"{"scope":"user","target_id":{"id":"1"}}"#.to_vec(),
        // unicode
        r#"{"scope":"user","target_id":"١٢٣"}"#.as_bytes().to_vec(),
        r#"{"scope":"user","target_id":"１２３"}"#.as_bytes().to_vec(),
        r#"{"scope":"user","target_id":"12\u200b3"}"#.as_bytes().to_vec(),
        r#"{"scope":"user","target_id":"🦀"}"#.as_bytes().to_vec(),
        r#"{"scope":"usér","target_id":"1"}"#.as_bytes().to_vec(),
        r#"{"scope":"user","target_id":"\ud800"}"#.as_bytes().to_vec(),
        r#"{"scope":"user","target_id":"1","external_reference":"\ud83e"}"#
            .as_bytes()
            .to_vec(),
        b"{\"scope\":\"user\",\"target_id\":\"\xff\xfe\"}".to_vec(),
        b"\xef\xbb\xbf{\"scope\":\"user\",\"target_id\":\"1\"}".to_vec(),
        r#"{"scöpe":"user","target_id":"1"}"#.as_bytes().to_vec(),
        // NUL and other control characters
        br#"{"scope":"user","target_id":"1\u0000"}"#.to_vec(),
        br#"{"scope":"user\u0000","target_id":"1"}"#.to_vec(),
        br#"{"scope":"user","target_id":"1","external_reference":"T-1\u0000"}"#.to_vec(),
        br#"{"scope":"user","target_id":"1","external_reference":"T-1\u001b[31m"}"#.to_vec(),
        br#"{"scope":"user","target_id":"1","external_reference":"T-1\n2"}"#.to_vec(),
        b"{\"scope\":\"user\",\"target_id\":\"1\x00\"}".to_vec(),
        b"{\"scope\":\"user\",\"target_id\":\"1\"}\x00".to_vec(),
        br#"{"\u0000":1,"scope":"user","target_id":"1"}"#.to_vec(),
        // long strings
        format!(r#"{{"scope":"user","target_id":"{long}"}}"#).into_bytes(),
        format!(r#"{{"scope":"user","target_id":"1","external_reference":"T{long}"}}"#)
            .into_bytes(),
        format!(r#"{{"scope":"{long}","target_id":"1"}}"#).into_bytes(),
        format!(r#"{{"scope":"user","target_id":"1","not_before":"{long}"}}"#).into_bytes(),
        // nulls
        b"null".to_vec(),
        br#"{"scope":null,"target_id":"1"}"#.to_vec(),
        br#"{"scope":"user","target_id":null}"#.to_vec(),
        br#"{"scope":null,"target_id":null,"external_reference":null,"not_before":null}"#.to_vec(),
        // shapes
        b"{}".to_vec(),
        b"[]".to_vec(),
        b"true".to_vec(),
        b"\"\"".to_vec(),
        b"{".to_vec(),
        b"}".to_vec(),
        br#"{"scope":"user","target_id":"1",}"#.to_vec(),
        br#"{"scope":"user" "target_id":"1"}"#.to_vec(),
        br#"{'scope':'user','target_id':'1'}"#.to_vec(),
        b"\x00\x01\x02\x03".to_vec(),
    ];
    for (n, body) in bodies.iter().enumerate() {
        let r = post_raw(
            &app,
            REQUESTS,
            &app.requester,
            Some("application/json"),
            body.clone(),
        )
        .await;
        let shown = String::from_utf8_lossy(&body[..body.len().min(120)]).to_string();
        assert!(
            (400..500).contains(&r.status),
            "case {n} {shown:?}: status {}: {}",
            r.status,
            &r.text[..r.text.len().min(300)]
        );
        assert_error_shape(&r);
    }

    // The same kind of input on the other routes.
    let id = app.submit("user", "5").await;
    let act_bodies: Vec<(&str, Vec<u8>)> = vec![
        (
            "hold",
            br#"{"legal_basis":"art17_3_e","note":"claim\u0000"}"#.to_vec(),
        ),
        ("hold", br#"{"legal_basis":null,"note":"x"}"#.to_vec()),
        (
            "hold",
            br#"{"legal_basis":"art17_3_e","note":null}"#.to_vec(),
        ),
        (
            "hold",
            format!(r#"{{"legal_basis":"art17_3_e","note":"{long}"}}"#).into_bytes(),
        ),
        (
            "hold",
            br#"{"legal_basis":"art17_3_e","note":"call +33 6 12 34 56 78"}"#.to_vec(),
        ),
        (
            "hold",
            br#"{"legal_basis":"art17_3_e","note":"   "}"#.to_vec(),
        ),
        ("hold", b"".to_vec()),
        ("hold", deep.clone().into_bytes()),
        ("extend", br#"{"months":4294967296,"reason":"x"}"#.to_vec()),
        ("extend", br#"{"months":-1,"reason":"x"}"#.to_vec()),
        ("extend", br#"{"months":1.5,"reason":"x"}"#.to_vec()),
        ("extend", br#"{"months":"1","reason":"x"}"#.to_vec()),
        ("extend", br#"{"months":0,"reason":"x"}"#.to_vec()),
        ("extend", br#"{"months":1}"#.to_vec()),
        (
            "extend",
            br#"{"months":1,"reason":"ask jean@example.fr"}"#.to_vec(),
        ),
        ("cancel", br#"{"note":5}"#.to_vec()),
        ("cancel", br#"{"note":"a\u0000"}"#.to_vec()),
        ("cancel", br#"{"why":"x"}"#.to_vec()),
        ("cancel", b"[]".to_vec()),
        ("cancel", b"nope".to_vec()),
    ];
    for (action, body) in &act_bodies {
        let key = if *action == "cancel" {
            &app.requester
        } else {
            &app.approver
        };
        let r = post_raw(
            &app,
            &format!("{REQUESTS}/{id}/{action}"),
            key,
            Some("application/json"),
            body.clone(),
        )
        .await;
        let shown = String::from_utf8_lossy(&body[..body.len().min(120)]).to_string();
        assert!(
            (400..500).contains(&r.status),
            "{action} {shown:?}: status {}: {}",
            r.status,
            r.text
        );
        assert_error_shape(&r);
    }
    let after = get(&app, &format!("{REQUESTS}/{id}"), &app.auditor).await;
    assert_eq!(
        after.json["state"], "queued",
        "nothing refused changed the request"
    );
    assert_eq!(after.json["extended_months"], 0);

    let long_q = "9".repeat(20_000);
    let queries: Vec<Vec<(&str, &str)>> = vec![
        vec![("limit", "-1")],
        vec![("limit", "1e3")],
        vec![("limit", "99999999999")],
        vec![("limit", "")],
        vec![("limit", "1"), ("limit", "2")],
        vec![("state", "QUEUED")],
        vec![("state", "")],
        vec![("scope", "\0")],
        vec![("overdue", "maybe")],
        vec![("at_risk", "1")],
        vec![("due_within_days", "-1")],
        vec![("due_within_days", "4294967296")],
        vec![("due_within_days", "99999")],
        vec![("received_from", "-10000-01-01T00:00:00Z")],
        vec![("received_to", "+262142-01-01T00:00:00Z")],
        vec![("due_from", "-262143-01-01T00:00:00Z")],
        vec![("due_to", "0000-00-00T00:00:00Z")],
        vec![("received_from", &long_q)],
        vec![(
            "cursor",
            "-300000000000000000_00000000-0000-0000-0000-000000000000",
        )],
        vec![(
            "cursor",
            "8000000000000000000_00000000-0000-0000-0000-000000000000",
        )],
        vec![(
            "cursor",
            "9223372036854775807_00000000-0000-0000-0000-000000000000",
        )],
        vec![("cursor", "1_2")],
        vec![("cursor", "\0")],
        vec![("cursor", &long_q)],
        vec![("batch_id", "zzz")],
        vec![("\u{fffd}", "1")],
        vec![("", "")],
    ];
    for q in &queries {
        let r = list(&app, q).await;
        assert!(
            (400..500).contains(&r.status),
            "{q:?}: status {}: {}",
            r.status,
            r.text
        );
        assert_error_shape(&r);
    }
    for path in [
        format!("{REQUESTS}/{long_q}"),
        format!("{REQUESTS}/%00"),
        format!("{REQUESTS}/..%2F..%2Fetc%2Fpasswd"),
        format!("{REQUESTS}/{id}%00"),
    ] {
        let r = get(&app, &path, &app.auditor).await;
        assert!(
            (400..500).contains(&r.status),
            "{path}: status {}: {}",
            r.status,
            r.text
        );
        assert_error_shape(&r);
    }
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 2. Authentication and roles
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_roles_are_enforced() {
    let app = api().await;
    let body = json!({"scope": "user", "target_id": "1"});

    // No key: 401, before anything else (even an invalid body).
    let r = send(app.http.post(app.url(REQUESTS)).json(&body)).await;
    assert_error(&r, 401, "unauthorized");
    let r = send(app.http.post(app.url(REQUESTS)).json(&json!({"bad": true}))).await;
    assert_error(&r, 401, "unauthorized");
    let r = send(app.http.get(app.url(REQUESTS))).await;
    assert_error(&r, 401, "unauthorized");

    // Malformed headers and unknown keys: 401.
    let mut wrong_secret = app.requester.clone();
    let last = wrong_secret.pop().unwrap();
    wrong_secret.push(if last == '0' { '1' } else { '0' });
    for header in [
        "Basic dXNlcjpwYXNz".to_string(),
        "Bearer".to_string(),
        "Bearer ".to_string(),
        "Token abc".to_string(),
        app.requester.clone(),
        format!("Bearer{}", app.requester),
        "Bearer ek_00000000_000000000000000000000000000000000000000000000000".to_string(),
        "Bearer ek_".to_string(),
        "Bearer ek__".to_string(),
        "Bearer not-a-key".to_string(),
        format!("Bearer {wrong_secret}"),
        format!("Bearer {}", "a".repeat(4000)),
    ] {
        let r = send(
            app.http
                .post(app.url(REQUESTS))
                .header("authorization", &header)
                .json(&body),
        )
        .await;
        assert_error(&r, 401, "unauthorized");
        let r = send(
            app.http
                .get(app.url(REQUESTS))
                .header("authorization", &header),
        )
        .await;
        assert_error(&r, 401, "unauthorized");
    }
    let r = send(
        app.http
            .get(app.url(REQUESTS))
            .header("authorization", b"Bearer \xff\xfe".as_slice()),
    )
    .await;
    assert_error(&r, 401, "unauthorized");
    assert_eq!(count_requests(&app).await, 0);

    // The wrong role: 403.
    let r = post_json(&app, REQUESTS, &app.auditor, &body).await;
    assert_error(&r, 403, "forbidden");
    let r = post_json(&app, REQUESTS, &app.approver, &body).await;
    assert_error(&r, 403, "forbidden");
    let r = post_json(&app, BATCH, &app.auditor, &json!([body])).await;
    assert_error(&r, 403, "forbidden");
    assert_eq!(count_requests(&app).await, 0);

    let id = app.submit("user", "1").await;
    for action in ["approve", "hold", "release", "extend", "retry"] {
        let r = post_json(
            &app,
            &format!("{REQUESTS}/{id}/{action}"),
            &app.requester,
            &json!({}),
        )
        .await;
        assert_error(&r, 403, "forbidden");
        let r = post_json(
            &app,
            &format!("{REQUESTS}/{id}/{action}"),
            &app.auditor,
            &json!({}),
        )
        .await;
        assert_error(&r, 403, "forbidden");
    }
    let r = post_json(
        &app,
        &format!("{REQUESTS}/{id}/cancel"),
        &app.auditor,
        &json!({}),
    )
    .await;
    assert_error(&r, 403, "forbidden");
    let r = post_json(
        &app,
        &format!("{REQUESTS}/{id}/cancel"),
        &app.approver,
        &json!({}),
    )
    .await;
    assert_error(&r, 403, "forbidden");
    assert_eq!(
        app.audit_events(&id).await,
        vec!["received"],
        "nothing refused was done"
    );

    // Every role reads.
    for key in [
        &app.requester,
        &app.requester2,
        &app.approver,
        &app.auditor,
        &app.admin,
    ] {
        assert_eq!(
            get(&app, &format!("{REQUESTS}/{id}"), key).await.status,
            200
        );
        assert_eq!(get(&app, REQUESTS, key).await.status, 200);
    }

    // A revoked key no longer works.
    sqlx::query("update api_keys set revoked_at = now() where label = 'requester-2'")
        .execute(&app.db)
        .await
        .unwrap();
    let r = get(&app, REQUESTS, &app.requester2).await;
    assert_error(&r, 401, "unauthorized");

    // Health, readiness and the docs need no key.
    for path in [
        "/healthz",
        "/readyz",
        "/swagger-ui/",
        "/api-docs/openapi.json",
    ] {
        let r = send(app.http.get(app.url(path))).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
    }
    let doc = send(app.http.get(app.url("/api-docs/openapi.json"))).await;
    assert!(
        doc.json["paths"].get("/v1/erasure-requests").is_some(),
        "{}",
        doc.text
    );
    let ui = send(app.http.get(app.url("/swagger-ui/"))).await;
    assert!(ui.text.to_lowercase().contains("swagger"), "{}", ui.text);

    // An unknown route is a JSON 404.
    let r = send(app.http.get(app.url("/v2/nothing"))).await;
    assert_error(&r, 404, "not_found");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 3. Transitions
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_from_queued_once() {
    let app = api().await;
    let id = app.submit("connection", "4242").await;
    let path = format!("{REQUESTS}/{id}/cancel");

    // An empty body is allowed for cancel.
    let r = post_raw(&app, &path, &app.requester, None::<&str>, "").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["id"], id);
    assert_eq!(r.json["state"], "cancelled");
    assert!(r.json["completed_at"].is_string(), "{}", r.text);
    for step in r.json["steps"].as_array().unwrap() {
        assert_eq!(step["state"], "cancelled", "{}", r.text);
    }
    assert_eq!(app.audit_events(&id).await, vec!["received", "cancelled"]);
    let sealed: Option<Vec<u8>> =
        sqlx::query_scalar("select target_sealed from erasure_requests where id = $1::uuid")
            .bind(&id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert!(sealed.is_none(), "a cancelled request keeps no target id");

    let r = post_json(&app, &path, &app.requester, &json!({"note": "again"})).await;
    assert_error(&r, 409, "invalid_transition");
    assert_eq!(r.json["details"]["state"], "cancelled", "{}", r.text);
    assert_eq!(app.audit_events(&id).await, vec!["received", "cancelled"]);

    // Once closed, the same target may be asked for again.
    let again = app.submit("connection", "4242").await;
    assert_ne!(again, id);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_and_release() {
    let app = api().await;
    let id = app.submit("account", "31").await;
    let hold = format!("{REQUESTS}/{id}/hold");

    for (body, field) in [
        (
            json!({"legal_basis": "art17_3_f", "note": "x"}),
            "legal_basis",
        ),
        (
            json!({"legal_basis": "because", "note": "x"}),
            "legal_basis",
        ),
        (json!({"note": "x"}), "legal_basis"),
        (json!({"legal_basis": "art17_3_e"}), "note"),
        (json!({"legal_basis": "art17_3_e", "note": ""}), "note"),
        (
            json!({"legal_basis": "art17_3_e", "note": "x".repeat(501)}),
            "note",
        ),
        (
            json!({"legal_basis": "art17_3_e", "note": "x", "until": "2030-01-01"}),
            "until",
        ),
    ] {
        let r = post_json(&app, &hold, &app.approver, &body).await;
        assert_field(&r, field);
    }
    for body in [
        "",
        r#"["art17_3_e", "note"]"#,
        r#"{"legal_basis":{"art17_3_e":null},"note":"x"}"#,
    ] {
        let r = post_raw(&app, &hold, &app.approver, Some("application/json"), body).await;
        assert!(
            (400..500).contains(&r.status),
            "{body}: {} {}",
            r.status,
            r.text
        );
        assert_error_shape(&r);
    }
    assert_eq!(
        get(&app, &format!("{REQUESTS}/{id}"), &app.auditor)
            .await
            .json["state"],
        "queued"
    );

    let r = post_json(
        &app,
        &hold,
        &app.approver,
        &json!({"legal_basis": "art17_3_e", "note": "litigation L-77"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["state"], "on_hold");
    assert_eq!(r.json["hold_legal_basis"], "art17_3_e");
    assert_eq!(r.json["hold_note"], "litigation L-77");
    assert_eq!(r.json["steps"][0]["state"], "paused", "{}", r.text);

    // Held twice, or released twice: refused.
    let r = post_json(
        &app,
        &hold,
        &app.approver,
        &json!({"legal_basis": "art17_3_b", "note": "again"}),
    )
    .await;
    assert_error(&r, 409, "invalid_transition");

    let release = format!("{REQUESTS}/{id}/release");
    let r = post_json(
        &app,
        &release,
        &app.approver,
        &json!({"note": "claim settled"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["state"], "queued");
    assert!(r.json["hold_legal_basis"].is_null(), "{}", r.text);
    assert!(r.json["hold_note"].is_null(), "{}", r.text);
    assert_eq!(r.json["steps"][0]["state"], "ready", "{}", r.text);
    let r = post_json(&app, &release, &app.approver, &json!({})).await;
    assert_error(&r, 409, "invalid_transition");

    assert_eq!(
        app.audit_events(&id).await,
        vec!["received", "held", "released"]
    );
    let held: Value = sqlx::query_scalar(
        "select data from audit_entries where request_id = $1::uuid and event = 'held'",
    )
    .bind(&id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(held["legal_basis"], "art17_3_e", "{held}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_moves_due_at_by_calendar_months_up_to_two() {
    let app = api().await;
    let r = post_json(
        &app,
        REQUESTS,
        &app.requester,
        &json!({"scope": "user", "target_id": "808"}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_string();
    let received = time(&r.json["received_at"]);
    assert_eq!(
        time(&r.json["due_at"]),
        received.checked_add_months(Months::new(1)).unwrap()
    );
    let extend = format!("{REQUESTS}/{id}/extend");

    for (body, field) in [
        (json!({"months": 3, "reason": "complex case"}), "months"),
        (json!({"months": 0, "reason": "complex case"}), "months"),
        (json!({"months": 1}), "reason"),
        (json!({"months": 1, "reason": " "}), "reason"),
        (json!({"reason": "complex case"}), "months"),
    ] {
        let r = post_json(&app, &extend, &app.approver, &body).await;
        assert_field(&r, field);
    }

    let r = post_json(
        &app,
        &extend,
        &app.approver,
        &json!({"months": 1, "reason": "many systems involved"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.json["state"], "queued",
        "extending does not change the state"
    );
    assert_eq!(r.json["extended_months"], 1);
    assert_eq!(time(&r.json["received_at"]), received);
    assert_eq!(
        time(&r.json["due_at"]),
        received.checked_add_months(Months::new(2)).unwrap()
    );

    // Two more would make three: refused, and nothing changes.
    let r = post_json(
        &app,
        &extend,
        &app.approver,
        &json!({"months": 2, "reason": "still complex"}),
    )
    .await;
    assert_field(&r, "months");
    let now = get(&app, &format!("{REQUESTS}/{id}"), &app.auditor).await;
    assert_eq!(now.json["extended_months"], 1);
    assert_eq!(
        time(&now.json["due_at"]),
        received.checked_add_months(Months::new(2)).unwrap()
    );

    // One more is the last.
    let r = post_json(
        &app,
        &extend,
        &app.approver,
        &json!({"months": 1, "reason": "still complex"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        time(&r.json["due_at"]),
        received.checked_add_months(Months::new(3)).unwrap()
    );
    let r = post_json(
        &app,
        &extend,
        &app.approver,
        &json!({"months": 1, "reason": "once more"}),
    )
    .await;
    assert_field(&r, "months");

    assert_eq!(
        app.audit_events(&id).await,
        vec!["received", "extended", "extended"]
    );
    let months: Vec<Value> = sqlx::query_scalar(
        "select data->'months' from audit_entries where request_id = $1::uuid and event = 'extended' order by id",
    )
    .bind(&id)
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(months, vec![json!(1), json!(1)]);

    // Calendar months, clamped to the month's end: received Jan 31 of a leap year.
    sqlx::query(
        "update erasure_requests set received_at = '2028-01-31T10:00:00Z', due_at = '2028-02-29T10:00:00Z', \
         extended_months = 0 where id = $1::uuid",
    )
    .bind(&id)
    .execute(&app.db)
    .await
    .unwrap();
    let r = post_json(
        &app,
        &extend,
        &app.approver,
        &json!({"months": 2, "reason": "complex"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["due_at"], "2028-04-30T10:00:00Z");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_transitions_and_bad_ids() {
    let app = api().await;
    let id = app.submit("user", "99").await;

    let r = post_json(
        &app,
        &format!("{REQUESTS}/{id}/retry"),
        &app.approver,
        &json!({}),
    )
    .await;
    assert_error(&r, 409, "invalid_transition");
    assert_eq!(r.json["details"]["state"], "queued", "{}", r.text);
    let r = post_json(
        &app,
        &format!("{REQUESTS}/{id}/approve"),
        &app.approver,
        &json!({}),
    )
    .await;
    assert_error(&r, 409, "invalid_transition");
    let r = post_json(
        &app,
        &format!("{REQUESTS}/{id}/release"),
        &app.approver,
        &json!({}),
    )
    .await;
    assert_error(&r, 409, "invalid_transition");

    for action in ["delete", "APPROVE", "receipt", "approve.json"] {
        let r = post_json(
            &app,
            &format!("{REQUESTS}/{id}/{action}"),
            &app.admin,
            &json!({}),
        )
        .await;
        assert_error(&r, 404, "not_found");
    }

    for bad in ["not-a-uuid", "123", "00000000-0000-0000-0000-00000000000g"] {
        let r = post_json(
            &app,
            &format!("{REQUESTS}/{bad}/cancel"),
            &app.requester,
            &json!({}),
        )
        .await;
        assert_field(&r, "id");
        let r = get(&app, &format!("{REQUESTS}/{bad}"), &app.auditor).await;
        assert_field(&r, "id");
    }

    let unknown = uuid::Uuid::new_v4();
    let r = get(&app, &format!("{REQUESTS}/{unknown}"), &app.auditor).await;
    assert_error(&r, 404, "not_found");
    for (action, key) in [
        ("cancel", &app.requester),
        ("approve", &app.approver),
        ("hold", &app.approver),
    ] {
        let body = json!({"legal_basis": "art17_3_e", "note": "x"});
        let body = if action == "hold" { body } else { json!({}) };
        let r = post_json(&app, &format!("{REQUESTS}/{unknown}/{action}"), key, &body).await;
        assert_error(&r, 404, "not_found");
    }

    // A GET of a request shows it, without the target id.
    let r = get(&app, &format!("{REQUESTS}/{id}"), &app.auditor).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["state"], "queued");
    assert!(r.json.get("target_id").is_none());
    assert_eq!(app.audit_events(&id).await, vec!["received"]);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 4. The approval policy
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_all_needs_a_second_person() {
    let app = api_with(ApprovalPolicy::All).await;
    // The admin may submit and approve, but not both for the same request.
    let r = post_json(
        &app,
        REQUESTS,
        &app.admin,
        &json!({"scope": "account", "target_id": "7"}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.json["state"], "pending_approval");
    assert_eq!(r.json["steps"][0]["state"], "paused", "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_string();
    let approve = format!("{REQUESTS}/{id}/approve");

    let r = post_json(&app, &approve, &app.admin, &json!({})).await;
    assert_error(&r, 403, "approver_is_requester");
    let r = post_json(&app, &approve, &app.requester, &json!({})).await;
    assert_error(&r, 403, "forbidden");
    assert_eq!(
        get(&app, &format!("{REQUESTS}/{id}"), &app.auditor)
            .await
            .json["state"],
        "pending_approval"
    );

    let r = post_raw(&app, &approve, &app.approver, None::<&str>, "").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["state"], "queued");
    assert!(r.json["approved_by"].is_string(), "{}", r.text);
    assert_eq!(r.json["steps"][0]["state"], "ready", "{}", r.text);
    let r = post_json(&app, &approve, &app.approver, &json!({})).await;
    assert_error(&r, 409, "invalid_transition");
    assert_eq!(app.audit_events(&id).await, vec!["received", "approved"]);

    // Every scope waits; a request by a requester is approved by the admin.
    for (scope, target) in [("user", "1"), ("connection", "2")] {
        let r = post_json(
            &app,
            REQUESTS,
            &app.requester,
            &json!({"scope": scope, "target_id": target}),
        )
        .await;
        assert_eq!(r.json["state"], "pending_approval", "{}", r.text);
        let r = post_json(
            &app,
            &format!("{REQUESTS}/{}/approve", r.json["id"].as_str().unwrap()),
            &app.admin,
            &json!({}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json["state"], "queued");
    }
    // A pending request may be cancelled or held, and release returns it to pending_approval.
    let pending = post_json(
        &app,
        REQUESTS,
        &app.requester,
        &json!({"scope": "user", "target_id": "3"}),
    )
    .await;
    let pid = pending.json["id"].as_str().unwrap().to_string();
    let r = post_json(
        &app,
        &format!("{REQUESTS}/{pid}/hold"),
        &app.approver,
        &json!({"legal_basis": "art17_3_b", "note": "tax audit"}),
    )
    .await;
    assert_eq!(r.json["state"], "on_hold", "{}", r.text);
    let r = post_json(
        &app,
        &format!("{REQUESTS}/{pid}/release"),
        &app.approver,
        &json!({}),
    )
    .await;
    assert_eq!(r.json["state"], "pending_approval", "{}", r.text);
    let r = post_json(
        &app,
        &format!("{REQUESTS}/{pid}/cancel"),
        &app.requester,
        &json!({}),
    )
    .await;
    assert_eq!(r.json["state"], "cancelled", "{}", r.text);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_user_scope_holds_only_users() {
    let app = api_with(ApprovalPolicy::UserScope).await;
    let mut ids = vec![];
    for (scope, target, state) in [
        ("user", "1", "pending_approval"),
        ("connection", "2", "queued"),
        ("account", "3", "queued"),
    ] {
        let r = post_json(
            &app,
            REQUESTS,
            &app.requester,
            &json!({"scope": scope, "target_id": target}),
        )
        .await;
        assert_eq!(r.status, 202, "{}", r.text);
        assert_eq!(r.json["state"], state, "{scope}: {}", r.text);
        ids.push(r.json["id"].as_str().unwrap().to_string());
    }
    // Batches follow the same policy.
    let r = post_json(
        &app,
        BATCH,
        &app.requester,
        &json!([{"scope": "user", "target_id": "4"}, {"scope": "account", "target_id": "5"}]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let batch_id = r.json["batch_id"].as_str().unwrap();
    let page = list(
        &app,
        &[("batch_id", batch_id), ("state", "pending_approval")],
    )
    .await;
    assert_eq!(
        page.json["items"].as_array().unwrap().len(),
        1,
        "{}",
        page.text
    );
    assert_eq!(page.json["items"][0]["scope"], "user");

    let r = post_json(
        &app,
        &format!("{REQUESTS}/{}/approve", ids[0]),
        &app.requester,
        &json!({}),
    )
    .await;
    assert_error(&r, 403, "forbidden");
    let r = post_json(
        &app,
        &format!("{REQUESTS}/{}/approve", ids[0]),
        &app.approver,
        &json!({}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["state"], "queued");
    let r = post_json(
        &app,
        &format!("{REQUESTS}/{}/approve", ids[1]),
        &app.approver,
        &json!({}),
    )
    .await;
    assert_error(&r, 409, "invalid_transition");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 5. The shape of a created request and its due date
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_request_is_due_one_calendar_month_later() {
    let app = api().await;
    let before = Utc::now();
    let r = post_json(
        &app,
        REQUESTS,
        &app.requester,
        &json!({"scope": "account", "target_id": "123456", "external_reference": "ZD#998877"}),
    )
    .await;
    let after = Utc::now();
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.json["id"].as_str().unwrap();
    uuid::Uuid::parse_str(id).unwrap();
    assert_eq!(
        r.location.as_deref(),
        Some(format!("{REQUESTS}/{id}").as_str())
    );
    assert_eq!(r.json["scope"], "account");
    assert_eq!(r.json["state"], "queued");
    assert_eq!(r.json["external_reference"], "ZD#998877");
    assert!(
        r.json["subject_ref"].as_str().unwrap().starts_with('k'),
        "{}",
        r.text
    );
    assert!(r.json["completed_at"].is_null());
    assert_eq!(r.json["extended_months"], 0);
    assert!(r.json.get("target_id").is_none());
    assert!(
        !r.text.contains("123456"),
        "the target id never comes back: {}",
        r.text
    );

    let received = time(&r.json["received_at"]);
    assert!(
        received >= before - chrono::Duration::milliseconds(1) && received <= after,
        "{received}"
    );
    let due = time(&r.json["due_at"]);
    assert_eq!(due, received.checked_add_months(Months::new(1)).unwrap());
    assert!(
        due - received >= chrono::Duration::days(28)
            && due - received <= chrono::Duration::days(31)
    );

    let kinds: Vec<&str> = r.json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["inventory", "delete", "verify", "cascade_check"]);
    for step in r.json["steps"].as_array().unwrap() {
        assert_eq!(step["attempts"], 0);
        assert!(step["last_error"].is_null());
    }

    // The GET agrees with the 202.
    let g = get(&app, &format!("{REQUESTS}/{id}"), &app.requester).await;
    assert_eq!(g.status, 200);
    assert_eq!(g.json["received_at"], r.json["received_at"]);
    assert_eq!(g.json["due_at"], r.json["due_at"]);

    // Times with more than microseconds come back as they are kept.
    for (target, not_before) in [
        ("124", "2021-06-01T12:00:00.123456789Z"),
        ("125", "1999-12-31T23:59:59.9999999Z"),
    ] {
        let r = post_json(
            &app,
            REQUESTS,
            &app.requester,
            &json!({"scope": "user", "target_id": target, "not_before": not_before}),
        )
        .await;
        assert_eq!(r.status, 202, "{}", r.text);
        let g = get(
            &app,
            &format!("{REQUESTS}/{}", r.json["id"].as_str().unwrap()),
            &app.requester,
        )
        .await;
        for field in ["not_before", "received_at", "due_at"] {
            assert_eq!(
                r.json[field], g.json[field],
                "{field}: the 202 and the GET disagree"
            );
        }
        assert_eq!(r.json["steps"], g.json["steps"]);
    }

    // An open request for the same target: 409 naming it.
    let dup = post_json(
        &app,
        REQUESTS,
        &app.requester2,
        &json!({"scope": "account", "target_id": "123456"}),
    )
    .await;
    assert_error(&dup, 409, "duplicate_request");
    assert_eq!(dup.json["details"]["existing_id"], id);
    // The same id in another scope is another target.
    let other = post_json(
        &app,
        REQUESTS,
        &app.requester,
        &json!({"scope": "user", "target_id": "123456"}),
    )
    .await;
    assert_eq!(other.status, 202, "{}", other.text);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 6. Batches
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_json_reports_each_item() {
    let app = api().await;
    let existing = app.submit("user", "500").await;
    let body = json!([
        {"scope": "user", "target_id": "501"},                                   // 0 created
        {"scope": "user", "target_id": "x"},                                     // 1 invalid
        {"scope": "user", "target_id": "501"},                                   // 2 duplicate of 0
        {"scope": "user", "target_id": "500"},                                   // 3 duplicate of existing
        {"scope": "account", "target_id": "502", "external_reference": "T-9"},   // 4 created
        {"scope": "account", "target_id": "503", "external_reference": "a@b.fr"},// 5 invalid
        {"scope": "galaxy", "target_id": "504"},                                 // 6 invalid
        {"scope": "user", "target_id": "505", "colour": "red"},                  // 7 invalid
        42,                                                                      // 8 invalid
        {"scope": "connection", "target_id": " 502 "},                           // 9 created
        ["user", "506"],                                                         // 10 invalid
        {"scope": {"user": null}, "target_id": "507"}                            // 11 invalid
    ]);
    let r = post_json(&app, BATCH, &app.requester, &body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!r.text.contains("a@b.fr"), "{}", r.text);
    let items = r.json["items"].as_array().unwrap();
    assert_eq!(items.len(), 12);
    let statuses: Vec<&str> = items
        .iter()
        .map(|i| i["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "created",
            "invalid",
            "duplicate",
            "duplicate",
            "created",
            "invalid",
            "invalid",
            "invalid",
            "invalid",
            "created",
            "invalid",
            "invalid"
        ]
    );
    for (n, item) in items.iter().enumerate() {
        assert_eq!(item["index"], n, "{item}");
        assert!(item.get("line").is_none(), "{item}");
    }
    assert_eq!(
        (
            r.json["created"].as_u64(),
            r.json["duplicates"].as_u64(),
            r.json["invalid"].as_u64()
        ),
        (Some(3), Some(2), Some(7))
    );
    assert!(items[1]["fields"]["target_id"].is_string(), "{}", items[1]);
    assert!(
        items[5]["fields"]["external_reference"].is_string(),
        "{}",
        items[5]
    );
    assert!(items[6]["fields"]["scope"].is_string(), "{}", items[6]);
    assert!(items[7]["fields"]["colour"].is_string(), "{}", items[7]);
    assert!(items[8]["fields"].is_object(), "{}", items[8]);
    assert!(items[10]["fields"].is_object(), "{}", items[10]);
    assert!(items[11]["fields"]["scope"].is_string(), "{}", items[11]);
    assert_eq!(
        items[2]["id"], items[0]["id"],
        "a duplicate within the batch names the first"
    );
    assert_eq!(
        items[3]["id"],
        existing.as_str(),
        "a duplicate of an open request names it"
    );

    let batch_id = r.json["batch_id"].as_str().unwrap();
    let created: Vec<String> = items
        .iter()
        .filter(|i| i["status"] == "created")
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    let page = list(&app, &[("batch_id", batch_id)]).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert_eq!(sorted(ids_of(&page.json)), sorted(created.clone()));
    for req in page.json["items"].as_array().unwrap() {
        assert_eq!(req["batch_id"], batch_id);
    }
    assert_eq!(count_requests(&app).await, 4);
    for id in &created {
        assert_eq!(app.audit_events(id).await, vec!["received"]);
    }

    // Bodies that are not a batch.
    for (body, status, code) in [
        ("[]", 400, "empty_batch"),
        (r#"{"scope":"user","target_id":"1"}"#, 400, "invalid_json"),
        ("[", 400, "invalid_json"),
        ("", 400, "invalid_json"),
    ] {
        let r = post_raw(&app, BATCH, &app.requester, Some("application/json"), body).await;
        assert_error(&r, status, code);
    }
    let r = post_raw(
        &app,
        BATCH,
        &app.requester,
        Some("text/plain"),
        "scope,target_id\nuser,1\n",
    )
    .await;
    assert_error(&r, 415, "unsupported_media_type");
    let r = post_raw(&app, BATCH, &app.requester, None::<&str>, "[]").await;
    assert_error(&r, 415, "unsupported_media_type");
    assert_eq!(count_requests(&app).await, 4);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_csv_reports_line_numbers() {
    let app = api().await;
    let csv = "\u{feff}scope,target_id,external_reference\r\n\
               user,601,T-1\r\n\
               user,6o2,T-2\r\n\
               account,603,\r\n\
               user,601,T-3\r\n\
               \"connection\",\"604\",\"T,4\"\r\n\
               planet,605,T-6\r\n\
               user,606,jean@example.fr\r\n\
               ,607,T-8\r\n\
               user,,T-9\r\n";
    let r = post_raw(
        &app,
        BATCH,
        &app.requester,
        Some("text/csv; charset=utf-8"),
        csv,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!r.text.contains("jean@"), "{}", r.text);
    let items = r.json["items"].as_array().unwrap();
    let got: Vec<(u64, &str)> = items
        .iter()
        .map(|i| (i["line"].as_u64().unwrap(), i["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            (2, "created"),
            (3, "invalid"),
            (4, "created"),
            (5, "duplicate"),
            (6, "created"),
            (7, "invalid"),
            (8, "invalid"),
            (9, "invalid"),
            (10, "invalid"),
        ]
    );
    for item in items {
        assert!(item.get("index").is_none(), "{item}");
    }
    assert!(items[1]["fields"]["target_id"].is_string(), "{}", items[1]);
    assert!(items[5]["fields"]["scope"].is_string(), "{}", items[5]);
    assert!(
        items[6]["fields"]["external_reference"].is_string(),
        "{}",
        items[6]
    );
    assert!(items[7]["fields"]["scope"].is_string(), "{}", items[7]);
    assert!(items[8]["fields"]["target_id"].is_string(), "{}", items[8]);
    assert_eq!(items[3]["id"], items[0]["id"]);
    assert_eq!(
        (
            r.json["created"].as_u64(),
            r.json["duplicates"].as_u64(),
            r.json["invalid"].as_u64()
        ),
        (Some(3), Some(1), Some(5))
    );

    let page = list(&app, &[("batch_id", r.json["batch_id"].as_str().unwrap())]).await;
    let refs: HashSet<Option<&str>> = page.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["external_reference"].as_str())
        .collect();
    assert_eq!(refs, HashSet::from([Some("T-1"), None, Some("T,4")]));

    // Columns in another order, without external_reference.
    let r = post_raw(
        &app,
        BATCH,
        &app.requester,
        Some("text/csv"),
        "target_id,scope\n701,user\n",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["created"], 1);
    assert_eq!(r.json["items"][0]["line"], 2);

    // Line numbers count blank lines and quoted line breaks (LF endings).
    let csv =
        "scope,target_id,external_reference\n\nuser,610,\nuser,611,\"T\n9\"\n\naccount,612,T-12\n";
    let r = post_raw(&app, BATCH, &app.requester, Some("text/csv"), csv).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let got: Vec<(u64, &str)> = r.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["line"].as_u64().unwrap(), i["status"].as_str().unwrap()))
        .collect();
    assert_eq!(got, [(3, "created"), (4, "invalid"), (7, "created")]);

    // Headers that are not ours: refused as a whole.
    for csv in [
        "scope,target_id,email\nuser,801,a@b.fr\n",
        "scope,id\nuser,802\n",
        "scope\nuser\n",
        "target_id\n803\n",
        "user,804\n",
    ] {
        let r = post_raw(&app, BATCH, &app.requester, Some("text/csv"), csv).await;
        assert!(
            (400..500).contains(&r.status),
            "{csv:?}: {} {}",
            r.status,
            r.text
        );
        assert_error_shape(&r);
        assert!(!r.text.contains("a@b.fr"), "{}", r.text);
    }
    let r = post_raw(
        &app,
        BATCH,
        &app.requester,
        Some("text/csv"),
        "scope,target_id,email\nuser,801,x\n",
    )
    .await;
    assert_field(&r, "csv.email");
    let r = post_raw(&app, BATCH, &app.requester, Some("text/csv"), "").await;
    assert!((400..500).contains(&r.status), "{} {}", r.status, r.text);
    let r = post_raw(
        &app,
        BATCH,
        &app.requester,
        Some("text/csv"),
        "scope,target_id\n",
    )
    .await;
    assert_error(&r, 400, "empty_batch");
    assert_eq!(count_requests(&app).await, 6);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_size_is_limited_to_10000() {
    let app = api().await;
    let items = |n: usize| -> Value {
        Value::Array(
            (0..n)
                .map(|i| json!({"scope": "user", "target_id": format!("{}", 1_000_000 + i)}))
                .collect(),
        )
    };

    let r = post_json(&app, BATCH, &app.requester, &items(10_001)).await;
    assert_error(&r, 413, "batch_too_large");
    let mut csv = String::from("scope,target_id\n");
    for i in 0..10_001 {
        csv.push_str(&format!("user,{}\n", 2_000_000 + i));
    }
    let r = post_raw(&app, BATCH, &app.requester, Some("text/csv"), csv).await;
    assert_error(&r, 413, "batch_too_large");
    assert_eq!(
        count_requests(&app).await,
        0,
        "nothing of a refused batch is stored"
    );

    let r = post_json(&app, BATCH, &app.requester, &items(10_000)).await;
    assert_eq!(r.status, 200, "{}", &r.text[..r.text.len().min(500)]);
    assert_eq!(r.json["created"], 10_000);
    assert_eq!(r.json["duplicates"], 0);
    assert_eq!(r.json["invalid"], 0);
    assert_eq!(r.json["items"].as_array().unwrap().len(), 10_000);
    let in_batch: i64 =
        sqlx::query_scalar("select count(*) from erasure_requests where batch_id = $1::uuid")
            .bind(r.json["batch_id"].as_str().unwrap())
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(in_batch, 10_000);
    app.stop().await;
}

/// Batches of 1,000 items or more go in by `COPY` (smaller calls by one statement): the same
/// rows, the same duplicates, and a batch sent twice, or two at once, creates each target once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_batches_store_what_small_ones_do() {
    let app = api().await;
    let open = app.submit("user", "7000001").await;
    let targets = |from: usize, n: usize| -> Vec<Value> {
        (from..from + n)
            .map(|i| json!({"scope": "account", "target_id": format!("{}", 7_000_000 + i)}))
            .collect()
    };
    let mut items = targets(0, 1200);
    items[1] = json!({"scope": "user", "target_id": "7000001"}); // duplicate of the open one
    items[7] = items[3].clone(); // duplicate of an earlier item
    items[9]["external_reference"] = json!("T-9");
    let batch = Value::Array(items);
    let r = post_json(&app, BATCH, &app.requester, &batch).await;
    assert_eq!(r.status, 200, "{}", &r.text[..r.text.len().min(500)]);
    assert_eq!(
        (r.json["created"].as_u64(), r.json["duplicates"].as_u64()),
        (Some(1198), Some(2))
    );
    let first = r.json["items"].as_array().unwrap().clone();
    assert_eq!(first[1]["status"], "duplicate");
    assert_eq!(first[1]["id"], open.as_str());
    assert_eq!(first[7]["status"], "duplicate");
    assert_eq!(first[7]["id"], first[3]["id"]);
    assert_eq!(count_requests(&app).await, 1199);

    // An item of the large batch is stored as one of a small batch is.
    let small = post_json(
        &app,
        BATCH,
        &app.requester,
        &json!([{"scope": "account", "target_id": "7100000", "external_reference": "T-9"}]),
    )
    .await;
    assert_eq!(small.json["created"], 1, "{}", small.text);
    let stored = |id: String| {
        let db = app.db.clone();
        async move {
            sqlx::query_scalar::<_, Value>(
                "select jsonb_build_object( \
                     'request', (select to_jsonb(r) - '{id,subject_ref,target_sealed,received_at,due_at,updated_at,batch_id}'::text[] \
                                 || jsonb_build_object('due', r.due_at = r.received_at + interval '1 month') \
                                 from erasure_requests r where id = $1::uuid), \
                     'steps', (select jsonb_agg(jsonb_build_object('ordinal', s.ordinal, 'kind', s.kind, 'state', s.state, \
                                   'attempts', s.attempts, 'at_receipt', s.run_at = r.received_at) order by s.ordinal) \
                               from steps s join erasure_requests r on r.id = s.request_id where s.request_id = $1::uuid), \
                     'audit', (select jsonb_agg(jsonb_build_object('event', a.event, 'actor', a.actor, \
                                   'data', a.data - 'batch_id', 'batch', a.data->>'batch_id' = r.batch_id::text, \
                                   'subject', a.subject_ref = r.subject_ref, 'nonce_bytes', length(a.nonce), \
                                   'at_after_receipt', a.at >= r.received_at and a.at < r.received_at + interval '10 seconds') order by a.id) \
                               from audit_entries a join erasure_requests r on r.id = a.request_id where a.request_id = $1::uuid))",
            )
            .bind(id)
            .fetch_one(&db)
            .await
            .unwrap()
        }
    };
    let large_row = stored(first[9]["id"].as_str().unwrap().to_string()).await;
    let small_row = stored(small.json["items"][0]["id"].as_str().unwrap().to_string()).await;
    assert_eq!(large_row, small_row);
    assert_eq!(
        large_row["steps"].as_array().unwrap().len(),
        1,
        "{large_row}"
    );
    assert_eq!(large_row["audit"][0]["batch"], true, "{large_row}");
    assert_eq!(large_row["audit"][0]["nonce_bytes"], 16, "{large_row}");
    // The copy gives each entry its time (the database's clock), as the column's default would.
    assert_eq!(
        large_row["audit"][0]["at_after_receipt"], true,
        "{large_row}"
    );
    // Each entry's nonce is its own (the copy makes them, not the column's default).
    let (entries, nonces): (i64, i64) = sqlx::query_as(
        "select count(*), count(distinct nonce) from audit_entries where event = 'received'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!((entries, nonces), (1200, 1200));

    // Sent again: every item a duplicate of what the first sending created.
    let again = post_json(&app, BATCH, &app.requester, &batch).await;
    assert_eq!(
        again.status,
        200,
        "{}",
        &again.text[..again.text.len().min(500)]
    );
    assert_eq!(again.json["duplicates"], 1200);
    for (a, b) in again.json["items"].as_array().unwrap().iter().zip(&first) {
        assert_eq!(a["id"], b["id"], "{a} {b}");
    }

    // Two batches at once that share 600 targets: each target created once, the other batch's
    // item a duplicate naming it.
    let (one, two) = (
        Value::Array(targets(2000, 1200)),
        Value::Array(targets(2600, 1200)),
    );
    let (r1, r2) = tokio::join!(
        post_json(&app, BATCH, &app.requester, &one),
        post_json(&app, BATCH, &app.requester, &two)
    );
    assert_eq!(
        (r1.status, r2.status),
        (200, 200),
        "{} {}",
        &r1.text[..r1.text.len().min(300)],
        &r2.text[..r2.text.len().min(300)]
    );
    assert_eq!(
        r1.json["created"].as_u64().unwrap() + r2.json["created"].as_u64().unwrap(),
        1800
    );
    assert_eq!(
        r1.json["duplicates"].as_u64().unwrap() + r2.json["duplicates"].as_u64().unwrap(),
        600
    );
    let (i1, i2) = (
        r1.json["items"].as_array().unwrap(),
        r2.json["items"].as_array().unwrap(),
    );
    for n in 0..600 {
        let (a, b) = (&i1[600 + n], &i2[n]);
        assert_eq!(
            a["id"], b["id"],
            "the shared target names one request: {a} {b}"
        );
        assert_ne!(a["status"], b["status"], "{a} {b}");
    }
    assert_eq!(count_requests(&app).await, 1199 + 1 + 1800);
    app.stop().await;
}

/// A target whose open request closes between the insert that met it and the look-up of that
/// request is no longer a duplicate: the item is inserted, not answered with an error (an intake
/// group of one key is not in a transaction, so an error would retry items already committed).
/// The closing is made deterministic by a trigger that cancels the open request at the end of
/// the insert, for the statement (small calls) and for `COPY` (1,000 items or more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_whose_request_closes_meanwhile_is_inserted() {
    use erasure::domain::{Scope, State};
    use erasure::store::requests::{Inserted, NewRequest, insert_many};
    let app = api().await;
    for (n, size) in [(0, 2), (1, 1000)] {
        let open = app.submit("account", &format!("{}", 4_200 + n)).await;
        let subject: String =
            sqlx::query_scalar("select subject_ref from erasure_requests where id = $1::uuid")
                .bind(&open)
                .fetch_one(&app.db)
                .await
                .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "create or replace function close_meanwhile() returns trigger language plpgsql as $$ \
             begin update erasure_requests set state = 'cancelled', target_sealed = null, \
                 context_sealed = null where id = '{open}'; return null; end $$; \
             create or replace trigger close_meanwhile after insert on erasure_requests \
                 for each statement execute function close_meanwhile();"
        )))
        .execute(&app.db)
        .await
        .unwrap();
        let item = |subject_ref: String| NewRequest {
            id: uuid::Uuid::now_v7(),
            scope: Scope::Account,
            subject_ref,
            target_sealed: vec![7; 44],
            external_reference: None,
            not_before: None,
            state: State::Queued,
            traceparent: None,
        };
        let mut items: Vec<NewRequest> = (1..size)
            .map(|k| item(format!("k1:fresh-{n}-{k}")))
            .collect();
        items.push(item(subject.clone()));
        let mut conn = app.db.acquire().await.unwrap();
        let inserted = insert_many(
            &mut conn,
            &items,
            uuid::Uuid::now_v7(),
            "key:test",
            None,
            Utc::now(),
        )
        .await
        .unwrap_or_else(|e| panic!("{size} items: {e}"));
        assert_eq!(inserted.len(), size);
        for (item, outcome) in items.iter().zip(&inserted) {
            assert!(
                matches!(outcome, Inserted::Created(r) if r.id == item.id),
                "{size} items: {outcome:?}"
            );
        }
        let open_now: Vec<uuid::Uuid> = sqlx::query_scalar(
            "select id from erasure_requests where subject_ref = $1 and state = 'queued'",
        )
        .bind(&subject)
        .fetch_all(&app.db)
        .await
        .unwrap();
        assert_eq!(open_now, vec![items[size - 1].id], "{size} items");
    }
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 7. The list
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters() {
    let app = api().await;
    let u1 = app.submit("user", "1").await;
    let u2 = app.submit("user", "2").await;
    let c3 = app.submit("connection", "3").await;
    let a4 = app.submit("account", "4").await;
    let a5 = app.submit("account", "5").await;
    let r = post_json(
        &app,
        &format!("{REQUESTS}/{u2}/cancel"),
        &app.requester,
        &json!({}),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = post_json(
        &app,
        &format!("{REQUESTS}/{a5}/hold"),
        &app.approver,
        &json!({"legal_basis": "art17_3_e", "note": "claim"}),
    )
    .await;
    assert_eq!(r.status, 200);

    let set = |q: &[(&str, &str)]| {
        let q: Vec<(String, String)> = q
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let app = &app;
        async move {
            let q: Vec<(&str, &str)> = q.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let r = list(app, &q).await;
            assert_eq!(r.status, 200, "{q:?}: {}", r.text);
            sorted(ids_of(&r.json))
        }
    };
    let s = |ids: &[&String]| sorted(ids.iter().map(|s| s.to_string()).collect());

    assert_eq!(set(&[]).await, s(&[&u1, &u2, &c3, &a4, &a5]));
    assert_eq!(set(&[("state", "queued")]).await, s(&[&u1, &c3, &a4]));
    assert_eq!(set(&[("state", "cancelled")]).await, s(&[&u2]));
    assert_eq!(set(&[("state", "on_hold")]).await, s(&[&a5]));
    assert_eq!(set(&[("state", "failed")]).await, s(&[]));
    assert_eq!(set(&[("scope", "user")]).await, s(&[&u1, &u2]));
    assert_eq!(
        set(&[("scope", "account"), ("state", "queued")]).await,
        s(&[&a4])
    );

    // Nothing is overdue yet; then u1 (open) and u2 (cancelled) are made overdue in the database.
    assert_eq!(set(&[("overdue", "true")]).await, s(&[]));
    sqlx::query(
        "update erasure_requests set due_at = now() - interval '1 day' where id = any($1::uuid[])",
    )
    .bind(vec![u1.clone(), u2.clone()])
    .execute(&app.db)
    .await
    .unwrap();
    sqlx::query(
        "update erasure_requests set due_at = now() + interval '2 days' where id = $1::uuid",
    )
    .bind(&c3)
    .execute(&app.db)
    .await
    .unwrap();
    assert_eq!(
        set(&[("overdue", "true")]).await,
        s(&[&u1]),
        "a cancelled request is never overdue"
    );
    assert_eq!(
        set(&[("overdue", "false")]).await,
        s(&[&u1, &u2, &c3, &a4, &a5])
    );
    assert_eq!(
        set(&[("overdue", "true"), ("scope", "connection")]).await,
        s(&[])
    );
    assert_eq!(set(&[("due_within_days", "3")]).await, s(&[&u1, &c3]));
    assert_eq!(set(&[("due_within_days", "0")]).await, s(&[&u1]));
    assert_eq!(
        set(&[("due_within_days", "40")]).await,
        s(&[&u1, &c3, &a4, &a5])
    );

    // Received and due ranges: from is inclusive, to exclusive.
    for (id, at) in [
        (&u1, "2025-01-15T12:00:00Z"),
        (&c3, "2025-02-01T00:00:00Z"),
        (&a4, "2025-03-15T12:00:00Z"),
    ] {
        sqlx::query(
            "update erasure_requests set received_at = $2::timestamptz where id = $1::uuid",
        )
        .bind(id)
        .bind(at)
        .execute(&app.db)
        .await
        .unwrap();
    }
    assert_eq!(
        set(&[
            ("received_from", "2025-02-01T00:00:00Z"),
            ("received_to", "2025-04-01T00:00:00Z")
        ])
        .await,
        s(&[&c3, &a4])
    );
    assert_eq!(
        set(&[
            ("received_from", "2025-01-01T00:00:00Z"),
            ("received_to", "2025-02-01T00:00:00Z")
        ])
        .await,
        s(&[&u1])
    );
    assert_eq!(
        set(&[("received_to", "2025-12-31T00:00:00+01:00")]).await,
        s(&[&u1, &c3, &a4])
    );
    assert_eq!(
        set(&[("received_from", "2025-03-15T12:00:00.000001Z")]).await,
        s(&[&u2, &a5])
    );
    let tomorrow = (Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let in_five = (Utc::now() + chrono::Duration::days(5)).to_rfc3339();
    assert_eq!(
        set(&[("due_from", &tomorrow), ("due_to", &in_five)]).await,
        s(&[&c3])
    );
    assert_eq!(set(&[("due_to", &tomorrow)]).await, s(&[&u1, &u2]));
    app.stop().await;
}

/// The ids the list answers `query` with (asserting 200), sorted.
async fn listed(app: &TestApp, query: &[(&str, &str)]) -> Vec<String> {
    let r = list(app, query).await;
    assert_eq!(r.status, 200, "{query:?}: {}", r.text);
    sorted(ids_of(&r.json))
}

/// The `at_risk` audit entries of a request: each one's `data`.
async fn at_risk_entries(app: &TestApp, id: &str) -> Vec<Value> {
    sqlx::query_scalar(
        "select data from audit_entries where request_id = $1::uuid and event = 'at_risk' \
         order by id",
    )
    .bind(id)
    .fetch_all(&app.db)
    .await
    .unwrap()
}

/// Sets the due date of requests to `now() + <interval>` in the database.
async fn due_in(app: &TestApp, ids: &[&String], interval: &str) {
    sqlx::query(
        "update erasure_requests set due_at = now() + $2::interval where id = any($1::uuid[])",
    )
    .bind(ids.iter().map(|id| id.to_string()).collect::<Vec<_>>())
    .bind(interval)
    .execute(&app.db)
    .await
    .unwrap();
}

/// A request whose due date is within `ERASURE_AT_RISK_DAYS` (7) is at risk: the list's filter,
/// the status page's section (with its current step's last error) and `/metrics` show it, and
/// neither a request far from its due date nor an overdue, a completed or a cancelled one. The
/// sweep audits it once however often it runs (and from two processes at once); an extension out
/// of the window clears the mark, so that it is audited again when it comes back; a worker
/// process sweeps as it starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_near_their_due_date_are_at_risk() {
    let app = api().await;
    let near = app.submit("user", "1").await;
    let far = app.submit("user", "2").await;
    let late = app.submit("connection", "3").await;
    let done = app.submit("user", "4").await;
    let cancelled = app.submit("user", "5").await;
    let r = post_json(
        &app,
        &format!("{REQUESTS}/{cancelled}/cancel"),
        &app.requester,
        &json!({}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Fresh requests are due in a month: none is at risk.
    assert_eq!(
        listed(&app, &[("at_risk", "true")]).await,
        Vec::<String>::new()
    );

    due_in(&app, &[&near, &done, &cancelled], "3 days").await;
    due_in(&app, &[&late], "-1 day").await;
    sqlx::query(
        "update erasure_requests set state = 'completed', completed_at = now(), outcome = 'erased', \
         target_sealed = null, context_sealed = null where id = $1::uuid",
    )
    .bind(&done)
    .execute(&app.db)
    .await
    .unwrap();
    sqlx::query(
        "update steps set attempts = 3, last_error = 'upstream 503 (transient)' \
         where request_id = $1::uuid",
    )
    .bind(&near)
    .execute(&app.db)
    .await
    .unwrap();

    // The list.
    assert_eq!(
        listed(&app, &[("at_risk", "true")]).await,
        vec![near.clone()]
    );
    assert_eq!(
        listed(&app, &[("at_risk", "true"), ("scope", "connection")]).await,
        Vec::<String>::new()
    );
    assert_eq!(
        listed(&app, &[("overdue", "true")]).await,
        vec![late.clone()]
    );
    assert_eq!(
        listed(&app, &[("at_risk", "false")]).await,
        sorted(vec![
            near.clone(),
            far.clone(),
            late.clone(),
            done.clone(),
            cancelled.clone()
        ])
    );

    // /metrics.
    let (status, metrics) = app.get_text("/metrics", "").await;
    assert_eq!(status, 200);
    for needed in [
        "erasure_requests_at_risk 1\n",
        "erasure_requests_overdue 1\n",
        "erasure_requests_due_within_7_days 1\n",
    ] {
        assert!(
            metrics.contains(needed),
            "{needed} missing from:\n{metrics}"
        );
    }

    // The status page: its "At risk" section, up to the next heading.
    let page = app
        .http
        .get(app.url("/"))
        .header("cookie", app.sign_in(&app.auditor).await)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let section = |id: &str| -> String {
        let start = page
            .find(&format!("<h2 id=\"{id}\""))
            .unwrap_or_else(|| panic!("no section {id}: {page}"));
        let rest = &page[start + 4..];
        rest[..rest.find("<h2").unwrap_or(rest.len())].to_string()
    };
    let risky = section("at-risk");
    assert!(risky.contains("due within 7 days (1)"), "{risky}");
    assert!(risky.contains(&format!("/requests/{near}")), "{risky}");
    assert!(
        risky.contains("<td>inventory</td><td>upstream 503 (transient)</td>"),
        "the current step and its last error: {risky}"
    );
    for other in [&far, &late, &done, &cancelled] {
        assert!(
            !risky.contains(other.as_str()),
            "{other} is not at risk: {risky}"
        );
    }
    assert!(section("overdue").contains(late.as_str()));

    // The sweep audits it once, however often and from however many processes it runs.
    let db = app.db.clone();
    let (a, b) = tokio::join!(
        erasure::store::requests::mark_at_risk(&db, 7),
        erasure::store::requests::mark_at_risk(&db, 7)
    );
    assert_eq!(a.unwrap() + b.unwrap(), 1);
    assert_eq!(
        erasure::store::requests::mark_at_risk(&db, 7)
            .await
            .unwrap(),
        0
    );
    let entries = at_risk_entries(&app, &near).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["days_left"], 2, "{entries:?}");
    let due = get(&app, &format!("{REQUESTS}/{near}"), &app.auditor).await;
    assert_eq!(time(&entries[0]["due_at"]), time(&due.json["due_at"]));
    for other in [&far, &late, &done, &cancelled] {
        assert!(at_risk_entries(&app, other).await.is_empty());
    }
    assert_eq!(
        app.audit_events(&near).await,
        ["received", "at_risk"],
        "no personal data, no other entry"
    );

    // An extension takes it out of the window and clears the mark: at risk again later, it is
    // audited again.
    let r = post_json(
        &app,
        &format!("{REQUESTS}/{near}/extend"),
        &app.approver,
        &json!({"months": 1, "reason": "complex case"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        listed(&app, &[("at_risk", "true")]).await,
        Vec::<String>::new()
    );
    assert_eq!(
        erasure::store::requests::mark_at_risk(&db, 7)
            .await
            .unwrap(),
        0
    );
    due_in(&app, &[&near], "1 day").await;
    assert_eq!(
        erasure::store::requests::mark_at_risk(&db, 7)
            .await
            .unwrap(),
        1
    );
    assert_eq!(at_risk_entries(&app, &near).await.len(), 2);

    // A worker process sweeps as it starts. `far`, held, waits (a held request is open: at risk
    // all the same) rather than be erased by that worker meanwhile.
    let r = post_json(
        &app,
        &format!("{REQUESTS}/{far}/hold"),
        &app.approver,
        &json!({"legal_basis": "art17_3_e", "note": "claim"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    due_in(&app, &[&far], "6 days").await;
    let worker = app.extra_worker(common::fast_engine()).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while at_risk_entries(&app, &far).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker's sweep never audited {far}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(at_risk_entries(&app, &far).await[0]["days_left"], 5);
    worker.stop().await.unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_with_a_cursor_newest_first() {
    let app = api().await;
    let mut submitted = vec![];
    for n in 0..7 {
        submitted.push(app.submit("user", &format!("{}", 900 + n)).await);
    }
    let mut seen: Vec<String> = vec![];
    let mut received: Vec<DateTime<Utc>> = vec![];
    let mut sizes = vec![];
    let mut cursor: Option<String> = None;
    loop {
        let mut q = vec![("limit", "3".to_string())];
        if let Some(c) = &cursor {
            q.push(("cursor", c.clone()));
        }
        let q: Vec<(&str, &str)> = q.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let page = list(&app, &q).await;
        assert_eq!(page.status, 200, "{}", page.text);
        sizes.push(page.json["items"].as_array().unwrap().len());
        seen.extend(ids_of(&page.json));
        received.extend(
            page.json["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| time(&r["received_at"])),
        );
        match page.json["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => {
                assert!(page.json["next_cursor"].is_null(), "{}", page.text);
                break;
            }
        }
        assert!(sizes.len() < 10, "paging does not end");
    }
    assert_eq!(sizes, [3, 3, 1]);
    assert_eq!(
        seen.iter().collect::<HashSet<_>>().len(),
        7,
        "no duplicates: {seen:?}"
    );
    let mut newest_first = submitted.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);
    assert!(received.windows(2).all(|w| w[0] >= w[1]), "{received:?}");

    // Exactly one page: no cursor. The default limit covers all seven.
    let page = list(&app, &[("limit", "7")]).await;
    assert_eq!(page.json["items"].as_array().unwrap().len(), 7);
    assert!(page.json["next_cursor"].is_null(), "{}", page.text);
    let page = list(&app, &[]).await;
    assert_eq!(ids_of(&page.json), newest_first);
    let page = list(&app, &[("limit", "500")]).await;
    assert_eq!(page.status, 200);

    // Ties on received_at are broken by id: nothing is skipped or repeated.
    sqlx::query("update erasure_requests set received_at = '2026-01-01T00:00:00Z'")
        .execute(&app.db)
        .await
        .unwrap();
    let mut all = vec![];
    let mut cursor: Option<String> = None;
    for _ in 0..7 {
        let mut q = vec![("limit", "2".to_string())];
        if let Some(c) = &cursor {
            q.push(("cursor", c.clone()));
        }
        let q: Vec<(&str, &str)> = q.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let page = list(&app, &q).await;
        all.extend(ids_of(&page.json));
        match page.json["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(sorted(all), sorted(submitted));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_refuses_bad_queries() {
    let app = api().await;
    app.submit("user", "1").await;
    for (q, field) in [
        (vec![("cursor", "abc")], "cursor"),
        (vec![("cursor", "123_notauuid")], "cursor"),
        (vec![("cursor", "")], "cursor"),
        (vec![("limit", "0")], "limit"),
        (vec![("limit", "501")], "limit"),
        (vec![("limit", "ten")], "limit"),
        (vec![("colour", "red")], "colour"),
        (vec![("received_from", "yesterday")], "received_from"),
        (vec![("received_to", "2025-02-30T00:00:00Z")], "received_to"),
        (vec![("due_from", "2025-01-01")], "due_from"),
        (vec![("due_to", "soon")], "due_to"),
        (vec![("state", "done")], "state"),
        (vec![("scope", "galaxy")], "scope"),
        (vec![("overdue", "yes")], "overdue"),
        (vec![("at_risk", "soon")], "at_risk"),
        (vec![("at_risk", "")], "at_risk"),
        (vec![("due_within_days", "-3")], "due_within_days"),
        (vec![("due_within_days", "100000")], "due_within_days"),
        (vec![("batch_id", "42")], "batch_id"),
        (vec![("limit", "1"), ("limit", "2")], "limit"),
    ] {
        let r = list(&app, &q).await;
        assert_field(&r, field);
    }
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 8. Idempotency keys
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys() {
    let app = api().await;
    let body = json!({"scope": "user", "target_id": "321"});
    let with_key = |key: String, body: Value| {
        let rb = app
            .http
            .post(app.url(REQUESTS))
            .bearer_auth(&app.requester)
            .header("Idempotency-Key", key)
            .json(&body);
        send(rb)
    };
    let r = with_key("k".repeat(256), body.clone()).await;
    assert_field(&r, "Idempotency-Key");
    let r = with_key(String::new(), body.clone()).await;
    assert_field(&r, "Idempotency-Key");
    assert_eq!(count_requests(&app).await, 0);

    let key = "k".repeat(255);
    let first = with_key(key.clone(), body.clone()).await;
    assert_eq!(first.status, 202, "{}", first.text);
    let again = with_key(key.clone(), body.clone()).await;
    assert_eq!(again.status, 202, "{}", again.text);
    assert_eq!(again.json, first.json, "the first response is replayed");
    assert_eq!(again.location, first.location);
    let other = with_key(key.clone(), json!({"scope": "user", "target_id": "322"})).await;
    assert_error(&other, 422, "idempotency_key_reused");
    assert_eq!(count_requests(&app).await, 1);

    // Without the key, the same body is a duplicate.
    let r = post_json(&app, REQUESTS, &app.requester, &body).await;
    assert_error(&r, 409, "duplicate_request");
    app.stop().await;
}

/// Single submissions arriving together are committed together (`store::intake`), yet each is
/// answered for itself: every distinct target is created once with its own id, the same target
/// sent at once by two keys is created once and every other copy is told which request is open,
/// each request is attributed to the key that sent it, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submissions_are_each_answered_for_themselves() {
    let app = api().await;
    // Every fourth one is the same account; the others are distinct users.
    let bodies: Vec<Value> = (0..80u32)
        .map(|n| match n % 4 {
            0 => json!({"scope": "account", "target_id": "777"}),
            _ => json!({"scope": "user", "target_id": format!("{}", 5000 + n)}),
        })
        .collect();
    let sends = bodies.iter().enumerate().map(|(n, body)| {
        let key = if n % 2 == 0 {
            &app.requester
        } else {
            &app.requester2
        };
        post_json(&app, REQUESTS, key, body)
    });
    let replies = futures::future::join_all(sends).await;

    let mut created = HashSet::new();
    let mut same_target_created = Vec::new();
    let mut duplicates_named = Vec::new();
    for (n, r) in replies.iter().enumerate() {
        if n % 4 != 0 {
            assert_eq!(r.status, 202, "{}", r.text);
            let id = r.json["id"].as_str().unwrap().to_string();
            assert_eq!(r.location.as_deref(), Some(&*format!("{REQUESTS}/{id}")));
            assert!(created.insert(id), "each request has its own id");
        } else if r.status == 202 {
            same_target_created.push(r.json["id"].as_str().unwrap().to_string());
        } else {
            assert_error(r, 409, "duplicate_request");
            duplicates_named.push(
                r.json["details"]["existing_id"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
    }
    assert_eq!(created.len(), 60);
    assert_eq!(same_target_created.len(), 1, "one target, one open request");
    assert_eq!(duplicates_named.len(), 19);
    assert!(
        duplicates_named
            .iter()
            .all(|id| *id == same_target_created[0])
    );
    assert_eq!(count_requests(&app).await, 61);

    // Attribution: each request names the key that sent it, as stored and as answered; each has
    // its steps and its "received" entry.
    let key_id = |label: &'static str| {
        sqlx::query_scalar::<_, uuid::Uuid>("select id from api_keys where label = $1")
            .bind(label)
            .fetch_one(&app.db)
    };
    let (first, second) = (
        key_id("requester").await.unwrap(),
        key_id("requester-2").await.unwrap(),
    );
    for (n, r) in replies.iter().enumerate().filter(|(_, r)| r.status == 202) {
        let expected = if n % 2 == 0 { first } else { second }.to_string();
        assert_eq!(r.json["requested_by"], json!(expected));
        let id = r.json["id"].as_str().unwrap();
        let shown = get(&app, &format!("{REQUESTS}/{id}"), &app.requester).await;
        assert_eq!(shown.json["requested_by"], json!(expected));
        assert_eq!(shown.json["state"], "queued");
        assert_eq!(
            shown.json["steps"], r.json["steps"],
            "the answer is what was stored"
        );
    }
    let (steps, received): (i64, i64) = sqlx::query_as(
        "select (select count(*) from steps), \
                (select count(*) from audit_entries where event = 'received')",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(
        steps, 61,
        "the first step of each is stored; later ones when reached"
    );
    assert_eq!(received, 61);
    app.stop().await;
}

/// The intake writers and key checks keep their connections between requests. When the database
/// closes them (a restart, a terminated backend), the next requests are still accepted: a kept
/// connection that waited is tested before use and replaced, as the pool does with its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_goes_on_after_the_database_closed_its_connections() {
    let app = api().await;
    for n in 0..8 {
        app.submit("account", &format!("{}", 4_300 + n)).await;
    }
    let closed: i64 = sqlx::query_scalar(
        "select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity \
         where datname = current_database() and pid <> pg_backend_pid()) as t",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!(
        closed >= 2,
        "the service's connections were closed: {closed}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    for n in 0..8 {
        app.submit("account", &format!("{}", 4_400 + n)).await;
    }
    app.stop().await;
}

/// An error that says the database is going away (a shutdown, a restart, a terminated backend:
/// class 57P) is a 503, as an unreachable database is, not a 500. Made deterministic by a trigger
/// that raises that class.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_going_away_is_a_503() {
    let app = api().await;
    sqlx::raw_sql(
        "create function going_away() returns trigger language plpgsql as $$ \
         begin raise exception 'terminating connection' using errcode = 'admin_shutdown'; end $$; \
         create trigger going_away before insert on erasure_requests \
             for each statement execute function going_away();",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let (status, body) = app
        .post(
            "/v1/erasure-requests",
            &app.requester,
            json!({"scope": "account", "target_id": "4500"}),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].is_string(), "{body}");
    sqlx::raw_sql("drop trigger going_away on erasure_requests")
        .execute(&app.db)
        .await
        .unwrap();
    app.submit("account", "4500").await;
    app.stop().await;
}

//! The authorisation matrix: every route of the OpenAPI document x every role x every kind of
//! bad credential, asserting 401 / 403 / not-refused exactly as DESIGN.md's roles say. A route
//! added to the document without a row here fails the test.

use crate::common;

use std::collections::BTreeSet;

use common::{Options, TestApp};
use erasure::config::ApprovalPolicy;
use erasure::domain::Role;
use erasure::store;
use erasure::store::audit::OPERATOR;
use serde_json::{Value, json};

const ACTIONS: [&str; 6] = ["approve", "cancel", "retry", "hold", "release", "extend"];

/// Who may call a route (admin always may).
#[derive(Clone, Copy, Debug)]
enum Allowed {
    /// No key needed.
    Public,
    Roles(&'static [Role]),
}

const READERS: Allowed = Allowed::Roles(&[Role::Requester, Role::Approver, Role::Auditor]);
const REQUESTER: Allowed = Allowed::Roles(&[Role::Requester]);
const APPROVER: Allowed = Allowed::Roles(&[Role::Approver]);
const AUDITOR: Allowed = Allowed::Roles(&[Role::Auditor]);
/// Admin keys only.
const ADMIN: Allowed = Allowed::Roles(&[]);

/// DESIGN.md's roles, one row per operation (`{action}` expanded).
fn matrix() -> Vec<(&'static str, String, Allowed)> {
    let mut rows = vec![
        ("GET", "/healthz".to_string(), Allowed::Public),
        ("GET", "/readyz".to_string(), Allowed::Public),
        ("GET", "/metrics".to_string(), Allowed::Public),
        ("POST", "/v1/erasure-requests".to_string(), REQUESTER),
        ("POST", "/v1/erasure-requests/batch".to_string(), REQUESTER),
        ("GET", "/v1/erasure-requests".to_string(), READERS),
        ("GET", "/v1/erasure-requests/{id}".to_string(), READERS),
        (
            "GET",
            "/v1/erasure-requests/{id}/receipt".to_string(),
            AUDITOR,
        ),
        ("POST", "/v1/subjects/lookup".to_string(), READERS),
        ("POST", "/v1/restorations".to_string(), APPROVER),
        ("GET", "/v1/restorations/{id}".to_string(), READERS),
        ("GET", "/v1/audit/checkpoint".to_string(), AUDITOR),
        ("GET", "/v1/audit/consistency".to_string(), AUDITOR),
        ("GET", "/v1/audit/entries".to_string(), AUDITOR),
        ("GET", "/v1/audit/export".to_string(), AUDITOR),
        ("GET", "/v1/audit/report".to_string(), AUDITOR),
        ("POST", "/v1/webhooks".to_string(), ADMIN),
        ("GET", "/v1/webhooks".to_string(), ADMIN),
        ("GET", "/v1/webhooks/{id}".to_string(), ADMIN),
        ("PATCH", "/v1/webhooks/{id}".to_string(), ADMIN),
        ("POST", "/v1/webhooks/{id}/rotate".to_string(), ADMIN),
        ("POST", "/v1/webhooks/{id}/test".to_string(), ADMIN),
        ("GET", "/v1/webhooks/{id}/deliveries".to_string(), ADMIN),
        ("POST", "/v1/webhooks/{id}/redeliver".to_string(), ADMIN),
        // A bulk action takes its action's roles (the matrix's body approves).
        ("POST", "/v1/bulk-actions".to_string(), APPROVER),
        ("GET", "/v1/bulk-actions/{id}".to_string(), READERS),
        ("GET", "/v1/bulk-actions/{id}/items".to_string(), READERS),
        ("GET", "/v1/pause".to_string(), READERS),
        ("POST", "/v1/pause".to_string(), APPROVER),
        ("POST", "/v1/resume".to_string(), ADMIN),
    ];
    for action in ACTIONS {
        let allowed = if action == "cancel" {
            REQUESTER
        } else {
            APPROVER
        };
        rows.push((
            "POST",
            format!("/v1/erasure-requests/{{id}}/{action}"),
            allowed,
        ));
    }
    rows
}

/// Every operation of the OpenAPI document, `{action}` expanded to its documented values.
fn documented() -> BTreeSet<(String, String)> {
    let doc: Value = serde_json::from_str(&erasure::api::openapi_json()).unwrap();
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let method = method.to_uppercase();
            if path.contains("{action}") {
                for action in ACTIONS {
                    out.insert((method.clone(), path.replace("{action}", action)));
                }
            } else {
                out.insert((method, path.clone()));
            }
        }
    }
    out
}

/// A body that an allowed caller could have accepted (so "allowed" is not hidden behind a 422).
fn body_for(path: &str, n: usize) -> Option<Value> {
    let target = format!("{}", 700_000 + n);
    Some(match path {
        "/v1/erasure-requests" => json!({"scope": "user", "target_id": target}),
        "/v1/erasure-requests/batch" => json!([{"scope": "connection", "target_id": target}]),
        "/v1/subjects/lookup" => json!({"scope": "user", "target_id": target}),
        "/v1/restorations" => json!({"connection_id": target, "reason": "matrix test"}),
        "/v1/webhooks" => {
            json!({"url": "https://hooks.example.com/in", "event_types": ["request.completed"]})
        }
        "/v1/webhooks/{id}" => json!({"state": "paused"}),
        "/v1/webhooks/{id}/rotate" => json!({"overlap_seconds": 60}),
        "/v1/webhooks/{id}/redeliver" => json!({"since": "2000-01-01T00:00:00Z"}),
        "/v1/bulk-actions" => json!({"action": "approve", "ids": [uuid::Uuid::new_v4()]}),
        "/v1/pause" => json!({"reason": "matrix"}),
        p if p.ends_with("/hold") => json!({"legal_basis": "art17_3_b", "note": "matrix"}),
        p if p.ends_with("/extend") => json!({"months": 1, "reason": "matrix"}),
        p if p.starts_with("/v1/erasure-requests/") && !p.ends_with("/receipt") => json!({}),
        _ => return None,
    })
}

fn query_for(path: &str) -> &'static str {
    match path {
        "/v1/audit/consistency" => "?from=0&to=0",
        "/v1/audit/export" => "?format=jsonl",
        _ => "",
    }
}

/// The statuses the OpenAPI document lists for an operation of the matrix.
fn documented_statuses(doc: &Value, method: &str, template: &str) -> BTreeSet<u16> {
    let template = ACTIONS
        .iter()
        .find(|a| template.ends_with(&format!("/{a}")))
        .map_or(template.to_string(), |a| {
            template.replace(&format!("/{a}"), "/{action}")
        });
    doc["paths"][template.as_str()][method.to_lowercase()]["responses"]
        .as_object()
        .map(|r| r.keys().map(|k| k.parse().unwrap()).collect())
        .unwrap_or_default()
}

/// An admin key revoked and one expired: (revoked, expired).
async fn revoked_and_expired_admin_keys(app: &TestApp) -> (String, String) {
    let (revoked_id, revoked) =
        store::keys::create(&app.db, Role::Admin, "revoked", None, OPERATOR)
            .await
            .unwrap();
    assert!(
        store::keys::revoke(&app.db, revoked_id, OPERATOR)
            .await
            .unwrap()
    );
    let past = chrono::Utc::now() - chrono::Duration::seconds(1);
    let (_, expired) = store::keys::create(&app.db, Role::Admin, "expired", Some(past), OPERATOR)
        .await
        .unwrap();
    (revoked, expired)
}

struct Call {
    status: u16,
    body: Value,
}

async fn call(
    app: &TestApp,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<Value>,
) -> Call {
    let url = app.url(path);
    let mut req = match method {
        "GET" => app.http.get(url),
        "POST" => app.http.post(url),
        "PATCH" => app.http.patch(url),
        other => panic!("no method {other} in the matrix"),
    };
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    Call {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_every_role_every_bad_key() {
    let app = TestApp::spawn(Options {
        worker: false,
        guard: None,
        ..Options::empty_sim()
    })
    .await;

    // The matrix covers exactly the documented routes.
    let rows = matrix();
    let in_matrix: BTreeSet<(String, String)> = rows
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.clone()))
        .collect();
    let documented = documented();
    let missing: Vec<_> = documented.difference(&in_matrix).collect();
    let extra: Vec<_> = in_matrix.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "routes without a matrix row: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "matrix rows of no documented route: {extra:?}"
    );

    // Bad credentials: a revoked key, an expired key, an unknown key, a malformed header, none.
    let (revoked, expired) = revoked_and_expired_admin_keys(&app).await;
    let unknown = "ek_0123abcd_0123456789abcdef0123456789abcdef0123456789abcdef";
    let bad: Vec<(&str, Option<String>)> = vec![
        ("no key", None),
        ("malformed header", Some(format!("Basic {}", app.admin))),
        ("unknown key", Some(format!("Bearer {unknown}"))),
        ("revoked key", Some(format!("Bearer {revoked}"))),
        ("expired key", Some(format!("Bearer {expired}"))),
    ];
    let roles = [
        (Role::Requester, app.requester.clone()),
        (Role::Approver, app.approver.clone()),
        (Role::Auditor, app.auditor.clone()),
        (Role::Admin, app.admin.clone()),
    ];

    // Something for the `{id}` routes to find.
    let request_id = app.submit("user", "424242").await;
    let (status, restoration) = app
        .post(
            "/v1/restorations",
            &app.approver,
            json!({"connection_id": "515151", "reason": "matrix test"}),
        )
        .await;
    assert_eq!(status, 202, "{restoration}");
    let restoration_id = restoration["id"].as_str().unwrap().to_string();
    let (status, webhook) = app
        .post(
            "/v1/webhooks",
            &app.admin,
            json!({"url": "https://hooks.example.com/in", "event_types": ["request.failed"]}),
        )
        .await;
    assert_eq!(status, 201, "{webhook}");
    let webhook_id = webhook["id"].as_str().unwrap().to_string();

    let doc: Value = serde_json::from_str(&erasure::api::openapi_json()).unwrap();
    let mut n = 0;
    let mut checked = 0;
    for (method, template, allowed) in &rows {
        let path = if template.starts_with("/v1/restorations/") {
            template.replace("{id}", &restoration_id)
        } else if template.starts_with("/v1/webhooks/") {
            template.replace("{id}", &webhook_id)
        } else {
            template.replace("{id}", &request_id)
        };
        let path = format!("{path}{}", query_for(template));
        for (what, header) in &bad {
            n += 1;
            let r = call(
                &app,
                method,
                &path,
                header.as_deref(),
                body_for(template, n),
            )
            .await;
            match allowed {
                Allowed::Public => assert_eq!(r.status, 200, "{method} {path} with {what}"),
                Allowed::Roles(_) => {
                    assert_eq!(r.status, 401, "{method} {path} with {what}: {}", r.body);
                    assert_eq!(r.body["error"], "unauthorized", "{method} {path}");
                    assert!(r.body["message"].is_string());
                }
            }
            checked += 1;
        }
        for (role, key) in &roles {
            n += 1;
            let auth = format!("Bearer {key}");
            let r = call(&app, method, &path, Some(&auth), body_for(template, n)).await;
            let documented = documented_statuses(&doc, method, template);
            assert!(
                documented.contains(&r.status),
                "{method} {template}: {} undocumented",
                r.status
            );
            let may = match allowed {
                Allowed::Public => true,
                Allowed::Roles(roles) => *role == Role::Admin || roles.contains(role),
            };
            if may {
                assert!(
                    r.status < 500 && r.status != 401 && r.status != 403,
                    "{method} {path} as {role:?} must be allowed: {} {}",
                    r.status,
                    r.body
                );
            } else {
                assert_eq!(
                    r.status, 403,
                    "{method} {path} as {role:?} must be forbidden: {}",
                    r.body
                );
                assert_eq!(r.body["error"], "forbidden", "{method} {path} as {role:?}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, rows.len() * 9);
    app.stop().await;
}

/// Where the approval policy says a second person decides, the key that submitted a request
/// (an admin key: the only role that may both submit and decide) may not approve, hold, release
/// or extend it; another key may. Outside the policy's scope the submitter may.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_person_decides_where_the_policy_says_so() {
    let app = TestApp::spawn(Options {
        worker: false,
        guard: None,
        approval: ApprovalPolicy::UserScope,
        ..Options::empty_sim()
    })
    .await;
    let submit = |scope: &'static str, target: &'static str| {
        let app = &app;
        async move {
            let (status, body) = app
                .post(
                    "/v1/erasure-requests",
                    &app.admin,
                    json!({"scope": scope, "target_id": target}),
                )
                .await;
            assert_eq!(status, 202, "{body}");
            body["id"].as_str().unwrap().to_string()
        }
    };
    let act = |id: String, key: String, action: &'static str| {
        let app = &app;
        async move {
            let body = match action {
                "hold" => json!({"legal_basis": "art17_3_e", "note": "claim"}),
                "extend" => json!({"months": 1, "reason": "complex"}),
                _ => json!({}),
            };
            app.post(&format!("/v1/erasure-requests/{id}/{action}"), &key, body)
                .await
        }
    };
    let own = |r: &(u16, Value)| r.0 == 403 && r.1["error"] == "approver_is_requester";

    let user = submit("user", "1001").await;
    for action in ["approve", "hold", "extend"] {
        let r = act(user.clone(), app.admin.clone(), action).await;
        assert!(own(&r), "{action} by the submitter: {r:?}");
    }
    let r = act(user.clone(), app.approver.clone(), "hold").await;
    assert_eq!(r.0, 200, "{r:?}");
    let r = act(user.clone(), app.admin.clone(), "release").await;
    assert!(own(&r), "release by the submitter: {r:?}");
    let r = act(user.clone(), app.approver.clone(), "release").await;
    assert_eq!(r.0, 200, "{r:?}");
    let r = act(user.clone(), app.approver.clone(), "approve").await;
    assert_eq!(r.0, 200, "{r:?}");
    assert_eq!(r.1["state"], "queued");
    let r = act(user.clone(), app.approver.clone(), "extend").await;
    assert_eq!(r.0, 200, "{r:?}");
    // Cancel is the submitter's own right.
    let r = act(user, app.admin.clone(), "cancel").await;
    assert_eq!(r.0, 200, "{r:?}");

    // Outside the policy's scope (a connection under user-scope) the submitter decides alone.
    let connection = submit("connection", "2002").await;
    for action in ["hold", "release", "extend"] {
        let r = act(connection.clone(), app.admin.clone(), action).await;
        assert_eq!(r.0, 200, "{action}: {r:?}");
    }
    app.stop().await;
}

/// Keys presented at the same moment are checked together (one query for the requests waiting),
/// yet each request is answered for its own key: the right role passes, another role gets 403,
/// every kind of bad key 401. A key revoked is refused by the very next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_checked_together_are_each_answered_for_their_own_key() {
    let app = TestApp::spawn(Options::no_worker()).await;
    let (revoked, expired) = revoked_and_expired_admin_keys(&app).await;
    // The admin key's prefix with another secret: found by its prefix, refused by its digest.
    let last = if app.admin.ends_with('0') { '1' } else { '0' };
    let forged = format!("{}{last}", &app.admin[..app.admin.len() - 1]);
    let cases: Vec<(String, u16)> = vec![
        (format!("Bearer {}", app.requester), 202),
        (format!("Bearer {}", app.admin), 202),
        (format!("Bearer {}", app.auditor), 403),
        (format!("Bearer {}", app.approver), 403),
        (format!("Bearer {revoked}"), 401),
        (format!("Bearer {expired}"), 401),
        (format!("Bearer {forged}"), 401),
        ("Bearer ek_0123abcd_0123456789abcdef".to_string(), 401),
        ("Bearer not-a-key".to_string(), 401),
    ];
    let mut calls = Vec::new();
    for round in 0..8 {
        for (n, (auth, want)) in cases.iter().enumerate() {
            let target = format!("{}", 900_000 + round * 100 + n);
            let app = &app;
            calls.push(async move {
                let body = json!({"scope": "user", "target_id": target});
                let got = call(app, "POST", "/v1/erasure-requests", Some(auth), Some(body)).await;
                (auth, *want, got.status, got.body)
            });
        }
    }
    let answers = futures::future::join_all(calls).await;
    for (auth, want, got, body) in &answers {
        assert_eq!(got, want, "{auth}: {body}");
    }
    let created: i64 = sqlx::query_scalar("select count(*) from erasure_requests")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(created, 16, "two keys may submit, eight times each");

    // Revoked, then used at once: refused.
    let requester = store::keys::find(&app.db, &app.requester)
        .await
        .unwrap()
        .unwrap();
    assert!(
        store::keys::revoke(&app.db, requester.id, OPERATOR)
            .await
            .unwrap()
    );
    let after = call(
        &app,
        "GET",
        "/v1/erasure-requests",
        Some(&format!("Bearer {}", app.requester)),
        None,
    )
    .await;
    assert_eq!(after.status, 401, "{}", after.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_is_revoked_never_deleted() {
    let app = TestApp::spawn(Options {
        worker: false,
        ..Options::default()
    })
    .await;
    let id = app.submit("user", "4242").await;
    for sql in ["delete from api_keys", "truncate api_keys cascade"] {
        let err = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&app.db)
            .await
            .expect_err(sql);
        assert!(err.to_string().contains("never deleted"), "{sql}: {err}");
    }
    // Revoking still works, and the request still names the key that made it.
    let (key_id, _) = store::keys::create(&app.db, Role::Requester, "leaving", None, OPERATOR)
        .await
        .unwrap();
    assert!(
        store::keys::revoke(&app.db, key_id, OPERATOR)
            .await
            .unwrap()
    );
    let (status, body) = app
        .get(&format!("/v1/erasure-requests/{id}"), &app.auditor)
        .await;
    assert_eq!(status, 200, "{body}");
    let maker: Option<String> = sqlx::query_scalar(
        "select k.label from erasure_requests r join api_keys k on k.id = r.requested_by \
         where r.id = $1::text::uuid",
    )
    .bind(&id)
    .fetch_optional(&app.db)
    .await
    .unwrap();
    assert!(maker.is_some(), "the request's key is gone");
    app.stop().await;
}

//! The console over HTTP as a browser uses it (form posts with the session cookie, the CSRF
//! token and `Origin`): each role does its job, a role that may not act is refused, forms without
//! the token or from another origin are refused, and no target id appears in a page.

mod common;

use common::console::Console;
use common::{Options, TestApp};

/// The id a 303 to `/requests/{id}?done=…` names.
fn request_id(location: &str) -> String {
    location
        .trim_start_matches("/requests/")
        .split('?')
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_does_its_job_in_the_console_and_no_more() {
    let app = TestApp::spawn(Options::default()).await;
    let officer = Console::sign_in(&app, &app.requester).await;
    let approver = Console::sign_in(&app, &app.approver).await;
    let auditor = Console::sign_in(&app, &app.auditor).await;
    let admin = Console::sign_in(&app, &app.admin).await;
    let later = (chrono::Utc::now() + chrono::Duration::days(300)).to_rfc3339();

    // The officer submits one erasure (held back by its not-before time, so it stays queued).
    let target = "987654321012";
    let (status, location, _) = officer
        .post(
            "/requests/new",
            &[
                ("scope", "account"),
                ("target_id", target),
                ("external_reference", "TICKET-77"),
                ("not_before", &later),
            ],
        )
        .await;
    assert_eq!(status, 303, "submitted");
    let id = request_id(&location);
    let (status, page) = officer.get(&location).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("Submitted.") && page.contains("TICKET-77"),
        "{page}"
    );
    assert!(!page.contains(target), "no target id on the request's page");
    // The officer may cancel but not hold: no hold button, and 403 when posted anyway.
    assert!(page.contains("action-cancel") && !page.contains("action-hold"));
    let (status, _, body) = officer
        .post(
            &format!("/requests/{id}/hold"),
            &[("legal_basis", "art17_3_e"), ("note", "x")],
        )
        .await;
    assert_eq!(status, 403, "{body}");
    // The same target again: a duplicate, linked to the open request.
    let (status, _, body) = officer
        .post(
            "/requests/new",
            &[("scope", "account"), ("target_id", target)],
        )
        .await;
    assert_eq!(status, 409);
    assert!(body.contains(&format!("/requests/{id}")) && !body.contains(target));

    // Forms without the token, with another's token, or from another origin are refused.
    let fields = [("scope", "account"), ("target_id", "5")];
    let (status, _, _) = officer
        .post_raw("/requests/new", &fields, Some(&officer.base))
        .await;
    assert_eq!(status, 403, "no CSRF token");
    let mut stolen = vec![("csrf", approver.csrf.as_str())];
    stolen.extend_from_slice(&fields);
    let (status, _, _) = officer
        .post_raw("/requests/new", &stolen, Some(&officer.base))
        .await;
    assert_eq!(status, 403, "another session's token");
    let mut ours = vec![("csrf", officer.csrf.as_str())];
    ours.extend_from_slice(&fields);
    let (status, _, _) = officer
        .post_raw("/requests/new", &ours, Some("https://evil.example"))
        .await;
    assert_eq!(status, 403, "another origin");
    let (status, _, _) = officer.post_raw("/requests/new", &ours, None).await;
    assert_eq!(status, 403, "no Origin");

    // A file of 200 lines: 190 new, 4 duplicates of lines above or of the open request, 6 invalid.
    let csv = common::upload_of_200(5_000_000, target, &later);
    let (status, page) = officer.upload(csv).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("<b id=\"created\">190</b>"), "{page}");
    assert!(page.contains("<b id=\"duplicates\">4</b>"), "{page}");
    assert!(page.contains("<b id=\"invalid\">6</b>"), "{page}");
    assert!(
        page.contains(&format!("/requests/{id}")),
        "the duplicate links the open request"
    );
    assert!(
        !page.contains("5000001"),
        "no target id on the outcome page"
    );

    // The approver holds, releases and extends, each after a confirmation page.
    let (status, confirm) = approver.get(&format!("/requests/{id}/hold")).await;
    assert_eq!(status, 200);
    assert!(confirm.contains("Art. 17(3)(e)") && confirm.contains("Confirm hold"));
    let (status, location, body) = approver
        .post(
            &format!("/requests/{id}/hold"),
            &[("legal_basis", "art17_3_e"), ("note", "litigation pending")],
        )
        .await;
    assert_eq!(status, 303, "{body}");
    let (_, page) = approver.get(&location).await;
    assert!(page.contains("<td id=\"state\">on_hold</td>"), "{page}");
    let (status, _, _) = approver.post(&format!("/requests/{id}/release"), &[]).await;
    assert_eq!(status, 303);
    let (status, _, body) = approver
        .post(
            &format!("/requests/{id}/extend"),
            &[("months", "3"), ("reason", "complex")],
        )
        .await;
    assert_eq!(status, 422, "three months is refused: {body}");
    assert!(body.contains("months"));
    let (status, location, _) = approver
        .post(
            &format!("/requests/{id}/extend"),
            &[("months", "2"), ("reason", "complex case")],
        )
        .await;
    assert_eq!(status, 303);
    let (_, page) = approver.get(&location).await;
    assert!(
        page.contains("extended by 2 month(s)") && page.contains("<td id=\"state\">queued</td>")
    );
    for event in ["held", "released", "extended"] {
        assert!(page.contains(event), "{event} in the timeline: {page}");
    }

    // Filters: by external reference and by batch.
    let (_, list) = auditor
        .get("/requests?external_reference=TICKET-77&state=")
        .await;
    assert!(
        list.contains(&id) && list.contains("1 request(s)"),
        "{list}"
    );
    // The look-up posts the id; the answer shows request ids only.
    let (status, _, page) = auditor
        .post(
            "/requests/search",
            &[("scope", "account"), ("target_id", target)],
        )
        .await;
    assert_eq!(status, 200);
    assert!(page.contains(&id) && !page.contains(target), "{page}");

    // The auditor reads the report and an export with the session cookie; a POST to the API
    // with the cookie alone is refused.
    let (status, report) = auditor
        .get("/audit/report?from=2026-01-01&to=2030-12-31")
        .await;
    assert_eq!(status, 303, "{report}");
    let (status, report) = auditor
        .get("/v1/audit/report?from=2026-01-01T00:00:00Z&to=2026-12-31T00:00:00Z")
        .await;
    assert_eq!(status, 200);
    assert!(report.contains("GDPR Art. 17 erasure report"));
    let (status, export) = auditor.get("/v1/audit/export?format=jsonl").await;
    assert_eq!(status, 200);
    assert!(export.starts_with("{\"checkpoint\"") || export.contains("erasure-export/v1"));
    let r = auditor
        .http
        .post(format!("{}/v1/erasure-requests/{id}/cancel", auditor.base))
        .header("Cookie", &auditor.cookie)
        .header("Origin", &auditor.base)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401, "the API acts on bearer keys only");
    // Keys are the admin's: the auditor gets 403.
    let (status, _) = auditor.get("/keys").await;
    assert_eq!(status, 403);

    // The admin creates a key, which signs in; revoked, it is refused at once, its session too.
    let (status, _, page) = admin
        .post("/keys", &[("role", "requester"), ("label", "temp officer")])
        .await;
    assert_eq!(status, 200);
    let at = page
        .find("<pre id=\"new-key\">")
        .expect("the new key, once")
        + 18;
    let key = page[at..at + page[at..].find('<').unwrap()].to_string();
    let (status, _) = app.get("/v1/erasure-requests?limit=1", &key).await;
    assert_eq!(status, 200);
    let temp = Console::sign_in(&app, &key).await;
    let (_, keys_page) = admin.get("/keys").await;
    assert!(!keys_page.contains(&key), "a key is shown only once");
    let prefix = &key[3..11];
    let row = &keys_page[keys_page.find(&format!("id=\"key-{prefix}\"")).unwrap()..];
    let at = row.find("href=\"/keys/").unwrap() + 12;
    let key_id = &row[at..at + 36];
    let (status, confirm) = admin.get(&format!("/keys/{key_id}/revoke")).await;
    assert_eq!(status, 200);
    assert!(confirm.contains("Confirm revoke") && confirm.contains(&prefix.to_string()));
    let (status, location, _) = admin.post(&format!("/keys/{key_id}/revoke"), &[]).await;
    assert_eq!((status, location.as_str()), (303, "/keys?revoked=1"));
    let (status, _) = app.get("/v1/erasure-requests?limit=1", &key).await;
    assert_eq!(status, 401, "the revoked key is refused at once");
    // Both are in the audit log, by the admin's key, without the label or the key.
    let entries: Vec<(String, String, serde_json::Value)> = sqlx::query_as(
        "select event, actor, data from audit_entries where data->>'prefix' = $1 order by id",
    )
    .bind(prefix)
    .fetch_all(&app.db)
    .await
    .unwrap();
    let events: Vec<&str> = entries.iter().map(|(e, _, _)| e.as_str()).collect();
    assert_eq!(events, ["key_created", "key_revoked"]);
    for (_, actor, data) in &entries {
        assert!(actor.starts_with("key:"), "{actor}");
        assert!(!data.to_string().contains("temp officer") && !data.to_string().contains(&key));
    }
    let (status, location, _) = temp
        .post("/requests/new", &[("scope", "user"), ("target_id", "9")])
        .await;
    assert_eq!(
        (status, location.as_str()),
        (303, "/"),
        "the session of a revoked key is over: back to sign-in"
    );
    let (_, home) = temp.get("/").await;
    assert!(home.contains("API key") && !home.contains("Requests by state"));

    // Sign-out ends the session.
    let (status, _, _) = officer.post("/logout", &[]).await;
    assert_eq!(status, 303);
    let (_, home) = officer.get("/").await;
    assert!(home.contains("erasure: sign in"), "signed out");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_subscriptions_are_managed_by_admins_in_the_console() {
    let app = TestApp::spawn(Options::no_worker()).await;
    let admin = Console::sign_in(&app, &app.admin).await;
    let approver = Console::sign_in(&app, &app.approver).await;
    let url = "http://127.0.0.1:9/hook";
    let types = [
        ("event_types", "request.completed"),
        ("event_types", "request.failed"),
    ];

    // Not an approver's: no link, 403 to read or to post.
    let (_, home) = approver.get("/").await;
    assert!(!home.contains("href=\"/webhooks\""));
    let (status, _) = approver.get("/webhooks").await;
    assert_eq!(status, 403);
    let (status, _, _) = approver.post("/webhooks", &[("url", url), types[0]]).await;
    assert_eq!(status, 403);

    // Refused with the field named, nothing created: an internal address, no event type.
    let (status, _, body) = admin
        .post("/webhooks", &[("url", "http://10.1.2.3/hook"), types[0]])
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("<b>url</b>"), "{body}");
    let (status, _, body) = admin.post("/webhooks", &[("url", url)]).await;
    assert_eq!(status, 422);
    assert!(body.contains("<b>event_types</b>"), "{body}");
    let (_, listed) = app.get("/v1/webhooks", &app.admin).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 0);

    // Created: the secret is on this answer only; the API shows the same subscription.
    let (status, _, page) = admin
        .post(
            "/webhooks",
            &[("url", url), types[0], types[1], ("description", "SIEM")],
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let at = page
        .find("<pre id=\"new-secret\">")
        .expect("the secret, once")
        + 21;
    let secret = page[at..at + page[at..].find('<').unwrap()].to_string();
    assert!(secret.starts_with("whsec_"), "{secret}");
    let (_, listed) = app.get("/v1/webhooks", &app.admin).await;
    let sub = &listed["items"][0];
    assert_eq!(
        sub["event_types"],
        serde_json::json!(["request.completed", "request.failed"])
    );
    assert_eq!(sub["description"], "SIEM");
    let id = sub["id"].as_str().unwrap().to_string();
    let (status, page) = admin.get(&format!("/webhooks/{id}")).await;
    assert_eq!(status, 200);
    assert!(!page.contains(&secret), "the secret is shown once");

    // Forms need the token; a pause goes through the API's change.
    let path = format!("/webhooks/{id}/state");
    let (status, _, _) = admin
        .post_raw(&path, &[("state", "paused")], Some(&admin.base))
        .await;
    assert_eq!(status, 403, "no CSRF token");
    let (status, location, _) = admin.post(&path, &[("state", "paused")]).await;
    assert_eq!(status, 303);
    assert_eq!(location, format!("/webhooks/{id}?done=paused"));
    let (_, sub) = app.get(&format!("/v1/webhooks/{id}"), &app.admin).await;
    assert_eq!(sub["state"], "paused");
    let (status, _, _) = admin.post(&path, &[("state", "gone")]).await;
    assert_eq!(status, 422);

    // Bad rotation and redelivery input: 422 naming the field; an unknown subscription: 404.
    let (status, _, body) = admin
        .post(
            &format!("/webhooks/{id}/rotate"),
            &[("overlap_hours", "999")],
        )
        .await;
    assert_eq!(status, 422);
    assert!(body.contains("overlap_hours"));
    let (status, _, body) = admin.post(&format!("/webhooks/{id}/redeliver"), &[]).await;
    assert_eq!(status, 422);
    assert!(body.contains("event_id"));
    let (status, _, body) = admin
        .post(
            &format!("/webhooks/{id}/redeliver"),
            &[("since", "last week")],
        )
        .await;
    assert_eq!(status, 422);
    assert!(body.contains("since"));
    let (status, _, _) = admin
        .post(
            &format!("/webhooks/{id}/redeliver"),
            &[("since", "2026-01-01T00:00")],
        )
        .await;
    assert_eq!(status, 303, "a datetime-local value is taken as UTC");
    let unknown = uuid::Uuid::new_v4();
    let (status, _) = admin.get(&format!("/webhooks/{unknown}")).await;
    assert_eq!(status, 404);
    let (status, _, _) = admin.post(&format!("/webhooks/{unknown}/test"), &[]).await;
    assert_eq!(status, 404);
    app.stop().await;
}

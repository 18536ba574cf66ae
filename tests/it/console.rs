//! The console over HTTP as a browser uses it (form posts with the session cookie, the CSRF
//! token and `Origin`): each role does its job, a role that may not act is refused, forms without
//! the token or from another origin are refused, and no target id appears in a page.

use crate::common;

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

    // A key's label and life have the CLI's limits (domain::keys): refused with the field named.
    for (label, days, field) in [
        ("x".repeat(101), "30", "label"),
        ("ops".to_string(), "0", "expires_days"),
        ("ops".to_string(), "3661", "expires_days"),
    ] {
        let form = [
            ("role", "auditor"),
            ("label", label.as_str()),
            ("expires_days", days),
        ];
        let (status, _, page) = admin.post("/keys", &form).await;
        assert_eq!(status, 422, "{label:.10} {days}");
        assert!(page.contains(field), "{page}");
    }
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

/// The `id` of the new key on the keys page's answer.
fn new_key(page: &str) -> String {
    let at = page
        .find("<pre id=\"new-key\">")
        .expect("the new key, once")
        + 18;
    page[at..at + page[at..].find('<').unwrap()].to_string()
}

async fn person_id(app: &TestApp, login: &str) -> uuid::Uuid {
    sqlx::query_scalar("select id from people where subject = $1")
        .bind(login)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

async fn open_sessions(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from console_sessions where ended_at is null")
        .fetch_one(&app.db)
        .await
        .unwrap()
}

/// Against a real OpenID Provider (oidc-provider from npm, `tests/oidc`): each person signs in
/// through the provider's own pages with the roles of their groups; a person without a mapped
/// group is refused; a replayed callback is refused; roles are read again at each sign-in; four
/// eyes hold between people, whatever key they use; the audit log names people by id only;
/// sign-out ends the session here and at the provider; admins end a person's sessions; keys
/// rotated at the provider keep sign-in working; `erasure people forget` leaves a tombstone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_sign_in_through_the_provider_and_four_eyes_compare_people() {
    use common::oidc::{Browser, app_with_provider};
    let (mut provider, app) = app_with_provider(Options {
        approval: erasure::config::ApprovalPolicy::All,
        ..Options::no_worker()
    })
    .await;
    let base = app.url("");

    // The sign-in page offers the provider and no key form (key sign-in is off with a provider).
    let anonymous = Browser::new(&base);
    let page = anonymous.get(&base).await;
    assert!(page.body.contains("Sign in with Test IdP"), "{}", page.body);
    assert!(!page.body.contains("name=\"key\""), "no key form");
    let refused = Console {
        http: reqwest::Client::new(),
        base: base.clone(),
        cookie: String::new(),
        csrf: String::new(),
    }
    .post_raw("/login", &[("key", app.admin.as_str())], Some(&base))
    .await;
    assert_eq!(refused.0, 403, "key sign-in is off");

    // Each role signs in and sees its own pages.
    let mut browsers = std::collections::HashMap::new();
    for (login, name, sees, not) in [
        (
            "officer",
            "Olivia Officer",
            "href=\"/requests/new\"",
            "href=\"/audit\"",
        ),
        (
            "approver",
            "Arthur Approver",
            "href=\"/restorations/new\"",
            "href=\"/requests/new\"",
        ),
        (
            "auditor",
            "Audrey Auditor",
            "href=\"/audit\"",
            "href=\"/requests/new\"",
        ),
        ("admin", "Adam Admin", "href=\"/people\"", "Sign in with"),
        ("lead", "Lena Lead", "href=\"/keys\"", "Sign in with"),
    ] {
        let browser = Browser::new(&base);
        let page = browser.sign_in(&provider, login).await;
        assert_eq!(page.status, 200, "{login}: {}", page.body);
        assert!(page.body.contains("Signed in"), "{}", page.body);
        let console = browser.console().await;
        let (_, home) = console.get("/").await;
        assert!(
            home.contains(&format!("<b id=\"who\">{name}</b>")),
            "{home}"
        );
        assert!(
            home.contains(sees) && !home.contains(not),
            "{login}: {home}"
        );
        browsers.insert(login, (browser, console));
    }
    let (_, lead) = &browsers["lead"];
    let (status, _) = browsers["officer"].1.get("/people").await;
    assert_eq!(status, 403, "people are an admin's page");

    // A person in no mapped group: refused with a page that says so, and no session.
    let before = open_sessions(&app).await;
    let visitor = Browser::new(&base);
    let page = visitor.sign_in(&provider, "visitor").await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("none of your groups gives you a role"));
    assert!(visitor.session_cookie().is_none());
    assert_eq!(open_sessions(&app).await, before);

    // A replayed callback (the same code and state, from the same browser) is refused.
    let replay = Browser::new(&base);
    let callback = replay.callback_of(&provider, "approver").await;
    assert!(callback.contains("/auth/oidc/callback?"), "{callback}");
    let first = replay.get(&callback).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let again = replay.get(&callback).await;
    assert_eq!(again.status, 400, "{}", again.body);
    assert!(again.body.contains("used already"), "{}", again.body);

    // Four eyes between people: the lead (requester and admin) submits in person, creates an
    // approver key (theirs), and is refused the approval through it, and in person.
    let (status, location, body) = lead
        .post(
            "/requests/new",
            &[("scope", "user"), ("target_id", "424242")],
        )
        .await;
    assert_eq!(status, 303, "{body}");
    let id = location
        .trim_start_matches("/requests/")
        .split('?')
        .next()
        .unwrap()
        .to_string();
    let (status, _, page) = lead
        .post(
            "/keys",
            &[("role", "approver"), ("label", "lead's approver key")],
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let key = new_key(&page);
    let (status, body) = app
        .post(
            &format!("/v1/erasure-requests/{id}/approve"),
            &key,
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "approver_is_requester");
    let (status, _, _) = lead.post(&format!("/requests/{id}/approve"), &[]).await;
    assert_eq!(status, 403, "the lead is no approver in person either");
    // Another person approves.
    let (_, approver) = &browsers["approver"];
    let (status, _, body) = approver.post(&format!("/requests/{id}/approve"), &[]).await;
    assert_eq!(status, 303, "{body}");
    // The request page names both people; the audit log holds their ids, never their names.
    let (_, page) = approver.get(&format!("/requests/{id}")).await;
    let lead_id = person_id(&app, "lead").await;
    let approver_id = person_id(&app, "approver").await;
    assert!(
        page.contains(&format!("Lena Lead (person:{lead_id})")),
        "{page}"
    );
    assert!(page.contains(&format!("Arthur Approver (person:{approver_id})")));
    let actors: Vec<(String, String)> = sqlx::query_as(
        "select event, actor from audit_entries where request_id = $1::uuid order by id",
    )
    .bind(&id)
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert!(
        actors.contains(&("approved".into(), format!("person:{approver_id}")))
            || actors
                .iter()
                .any(|(_, a)| *a == format!("person:{approver_id}")),
        "{actors:?}"
    );
    assert!(
        actors
            .iter()
            .any(|(_, a)| *a == format!("person:{lead_id}")),
        "{actors:?}"
    );
    let created: (String, serde_json::Value) = sqlx::query_as(
        "select actor, data from audit_entries where event = 'key_created' and data->>'prefix' = $1",
    )
    .bind(&key[3..11])
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(created.0, format!("person:{lead_id}"));
    assert_eq!(created.1["owner"], format!("person:{lead_id}"));
    // Canary: no name or e-mail of anyone in the audit log.
    let log: Vec<String> =
        sqlx::query_scalar("select actor || ' ' || event || ' ' || data::text from audit_entries")
            .fetch_all(&app.db)
            .await
            .unwrap();
    let log = log.join("\n");
    for canary in [
        "Olivia",
        "Arthur",
        "Audrey",
        "Adam",
        "Lena",
        "Victor",
        "example.test",
        "Officer",
    ] {
        assert!(!log.contains(canary), "{canary} in the audit log");
    }

    // The report names who acted, from the people table.
    let (status, report) = browsers["auditor"].1.get("/v1/audit/report").await;
    assert_eq!(status, 200);
    assert!(
        report.contains("Lena Lead") && report.contains("Arthur Approver"),
        "{report}"
    );

    // Roles are read again at each sign-in: a person taken out of a group loses its role, in
    // their open session too.
    let mover = Browser::new(&base);
    assert_eq!(mover.sign_in(&provider, "mover").await.status, 200);
    let mover_console = mover.console().await;
    let (_, home) = mover_console.get("/").await;
    assert!(home.contains("approver, auditor"), "{home}");
    let r = reqwest::Client::new()
        .post(format!("{}/test/groups", provider.issuer))
        .body(r#"{"login":"mover","groups":["internal-audit"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let again = Browser::new(&base);
    assert_eq!(again.sign_in(&provider, "mover").await.status, 200);
    let (_, home) = mover_console.get("/").await;
    assert!(
        home.contains("(auditor)") && !home.contains("href=\"/restorations/new\""),
        "{home}"
    );
    // Out of every mapped group: refused, and their sessions end.
    reqwest::Client::new()
        .post(format!("{}/test/groups", provider.issuer))
        .body(r#"{"login":"mover","groups":[]}"#)
        .send()
        .await
        .unwrap();
    let gone = Browser::new(&base);
    assert_eq!(gone.sign_in(&provider, "mover").await.status, 403);
    let (_, home) = mover_console.get("/").await;
    assert!(home.contains("Sign in with"), "signed out: {home}");

    // Admins see people and end a person's sessions.
    let (_, admin) = &browsers["admin"];
    let (status, page) = admin.get("/people").await;
    assert_eq!(status, 200);
    assert!(
        page.contains("Olivia Officer") && page.contains("requester, admin"),
        "{page}"
    );
    assert!(
        !page.contains("Victor"),
        "a person refused without a role is not recorded"
    );
    let officer_id = person_id(&app, "officer").await;
    let (status, confirm) = admin
        .get(&format!("/people/{officer_id}/end-sessions"))
        .await;
    assert_eq!(status, 200);
    assert!(confirm.contains("Confirm: end sessions"));
    let (status, location, _) = admin
        .post(&format!("/people/{officer_id}/end-sessions"), &[])
        .await;
    assert_eq!((status, location.as_str()), (303, "/people?ended=1"));
    let (_, home) = browsers["officer"].1.get("/").await;
    assert!(home.contains("Sign in with"), "the officer's session ended");
    let entry: String =
        sqlx::query_scalar("select actor from audit_entries where event = 'person_sessions_ended'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(entry, format!("person:{}", person_id(&app, "admin").await));

    // Sign-out ends the session here, and sends the browser to the provider's end-session page.
    let (_, auditor) = &browsers["auditor"];
    let (status, _, page) = auditor.post("/logout", &[]).await;
    assert_eq!(status, 200);
    assert!(
        page.contains(&format!("{}/session/end?", provider.issuer))
            && page.contains("client_id=erasure-console"),
        "{page}"
    );
    let (_, home) = auditor.get("/").await;
    assert!(home.contains("Sign in with"), "signed out");

    // Keys rotated at the provider (a restart makes a new key): sign-in keeps working.
    provider.restart();
    let after = Browser::new(&base);
    let page = after.sign_in(&provider, "approver").await;
    assert_eq!(page.status, 200, "{}", page.body);

    // `erasure people forget`: name and e-mail become a tombstone; the id stays in the log.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_erasure"))
        .args(["people", "forget", &lead_id.to_string()])
        .env("DATABASE_URL", &app.db_url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (name, email): (String, Option<String>) =
        sqlx::query_as("select display_name, email from people where id = $1")
            .bind(lead_id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!((name.as_str(), email), ("(forgotten person)", None));
    let (status, _) = app.get("/v1/erasure-requests?limit=1", &key).await;
    assert_eq!(status, 401, "a forgotten person's keys are revoked");
    let (status, _) = lead.get("/").await;
    assert_eq!(status, 200);
    let (_, home) = lead.get("/").await;
    assert!(
        home.contains("Sign in with"),
        "a forgotten person's sessions end"
    );
    let (_, page) = approver.get(&format!("/requests/{id}")).await;
    assert!(!page.contains("Lena") && page.contains(&format!("person:{lead_id}")));
    app.stop().await;
}

/// The ID token checks, through a fake issuer the test controls (`tests/oidc/forge.mjs`): each
/// forged callback is refused with a page that says why and opens no session; an unknown `kid`
/// fetches the keys again once (a rotation works, a stranger's key does not); a replayed
/// callback, a callback without this browser's sign-in, a state from another browser and a
/// replayed code are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_callbacks_are_refused_with_a_page_and_no_session() {
    use common::oidc::{Browser, Node, free_port, settings};
    let forger = Node::forger();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let app = TestApp::spawn(Options {
        bind: format!("127.0.0.1:{port}"),
        console: settings(&forger.issuer, &base, "forge-client", "forge-client-secret"),
        ..Options::no_worker()
    })
    .await;
    let fetches = || async {
        let v: serde_json::Value = reqwest::get(format!("{}/test/jwks-fetches", forger.issuer))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["fetches"].as_i64().unwrap()
    };
    // Starts a sign-in in `browser`: the callback URL the issuer answers for `mode`.
    let callback_of = |browser: &Browser, mode: &'static str| {
        let (step, base) = (browser.step.clone(), base.clone());
        async move {
            let r = step
                .get(format!("{base}/auth/oidc/login"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 303);
            let to = r.headers()["location"].to_str().unwrap().to_string();
            let r = step.get(format!("{to}&mode={mode}")).send().await.unwrap();
            r.headers()["location"].to_str().unwrap().to_string()
        }
    };

    // The harness works: a well-signed token signs in.
    let good = Browser::new(&base);
    let url = callback_of(&good, "good").await;
    let page = good.get(&url).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(good.session_cookie().is_some());
    let sessions = open_sessions(&app).await;

    for (mode, says) in [
        ("none", "unsigned or signed with an algorithm"),
        ("hs256", "unsigned or signed with an algorithm"),
        ("wrong_key", "signature is not the provider"),
        ("wrong_aud", "issued for another application"),
        ("wrong_iss", "issued by another provider"),
        ("expired", "has expired"),
        ("wrong_nonce", "belongs to another sign-in"),
    ] {
        let browser = Browser::new(&base);
        let url = callback_of(&browser, mode).await;
        let page = browser.get(&url).await;
        assert_eq!(page.status, 400, "{mode}: {}", page.body);
        assert!(page.body.contains(says), "{mode}: {}", page.body);
        assert!(page.body.contains("Sign in with"), "a way to start again");
        assert!(browser.session_cookie().is_none(), "{mode}: no session");
    }
    // A key never published: the keys are fetched again, once, and the token refused.
    let before = fetches().await;
    let browser = Browser::new(&base);
    let url = callback_of(&browser, "unknown_kid").await;
    let page = browser.get(&url).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("signature is not the provider"));
    assert_eq!(fetches().await, before + 1, "fetched again once");
    // A key rotated in at the issuer: fetched again, and the sign-in works.
    let rotated = Browser::new(&base);
    let url = callback_of(&rotated, "rotated").await;
    let page = rotated.get(&url).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(fetches().await, before + 2);
    assert_eq!(open_sessions(&app).await, sessions + 1);

    // The same callback again (a replay): refused, the sign-in was used.
    let page = rotated.get(&url).await;
    assert_eq!(page.status, 400);
    assert!(page.body.contains("used already"), "{}", page.body);
    // A callback in a browser that did not start the sign-in.
    let stranger = Browser::new(&base);
    let url = callback_of(&Browser::new(&base), "good").await;
    let page = stranger.get(&url).await;
    assert_eq!(page.status, 400);
    assert!(page.body.contains("not started in this browser"));
    // A state from another browser: this browser's own sign-in is under way, with its state.
    let victim = Browser::new(&base);
    let _own = callback_of(&victim, "good").await;
    let theirs = callback_of(&Browser::new(&base), "good").await;
    let page = victim.get(&theirs).await;
    assert_eq!(page.status, 400);
    assert!(page.body.contains("state differs"), "{}", page.body);
    // A code used once already, under a new sign-in's state: the issuer refuses it.
    let browser = Browser::new(&base);
    let used = callback_of(&browser, "good").await;
    assert_eq!(browser.get(&used).await.status, 200);
    let fresh = callback_of(&browser, "good").await;
    let state = fresh.split("state=").nth(1).unwrap();
    let code = used
        .split("code=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let page = browser
        .get(&format!(
            "{base}/auth/oidc/callback?code={code}&state={state}"
        ))
        .await;
    assert_eq!(page.status, 400);
    assert!(page.body.contains("refused this sign-in"), "{}", page.body);
    // An error from the provider, and nonsense: pages, no 5xx.
    let page = Browser::new(&base)
        .get(&format!(
            "{base}/auth/oidc/callback?error=access_denied&state=x"
        ))
        .await;
    assert_eq!(page.status, 400);
    let page = Browser::new(&base)
        .get(&format!("{base}/auth/oidc/callback?code=%ZZ&&state"))
        .await;
    assert!(page.status < 500 && page.status >= 400, "{}", page.status);
    assert_eq!(open_sessions(&app).await, sessions + 2);
    app.stop().await;
}

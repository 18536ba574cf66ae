//! `GET /v1/audit/report`: the compliance page, its figures, its errors, and that it renders in
//! real headless Chromium
//! (Debian's `chromium` and `chromium-driver`, installed by `.ci/run`; driven by fantoccini).

use crate::common;
use crate::driver;

use common::{Options, TestApp};
use driver::Browser;
use serde_json::json;

async fn page(app: &TestApp, query: &str, key: &str) -> (u16, String, String) {
    let r = app
        .http
        .get(app.url(&format!("/v1/audit/report{query}")))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let ctype = r.headers()["content-type"].to_str().unwrap().to_string();
    (status, ctype, r.text().await.unwrap())
}

fn figure(html: &str, label: &str) -> String {
    let start = html
        .find(&format!(">{label}</th>"))
        .unwrap_or_else(|| panic!("no row {label}"));
    let rest = &html[start..];
    let value = &rest[rest.find("\">").unwrap() + 2..];
    value[..value.find("</td>").unwrap()].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_counts_the_period_and_renders_in_chromium() {
    let app = TestApp::spawn(Options::default()).await;
    let users = app.user_ids();
    for u in &users[..3] {
        let id = app.submit("user", u).await;
        app.wait_state(&id, "completed", 20).await;
    }
    let later = (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339();
    let (status, _) = app
        .post(
            "/v1/erasure-requests",
            &app.requester,
            json!({"scope": "user", "target_id": users[3], "not_before": later}),
        )
        .await;
    assert_eq!(status, 202);

    let (status, ctype, html) = page(&app, "", &app.auditor).await;
    assert_eq!(status, 200, "{html}");
    assert_eq!(ctype, "text/html; charset=utf-8");
    assert_eq!(figure(&html, "Received"), "4");
    assert_eq!(figure(&html, "Completed (erased and verified)"), "3");
    assert_eq!(figure(&html, "Completed in the period"), "3");
    assert_eq!(figure(&html, "Completed by their due date"), "3 of 3");
    assert_eq!(figure(&html, "Overdue: still open past the due date"), "0");
    assert!(
        html.contains("<svg") && html.contains("<polyline"),
        "the chart"
    );
    let (_, cp) = app.get("/v1/audit/checkpoint", &app.auditor).await;
    assert!(html.contains(cp["public_key"].as_str().unwrap()));
    assert!(html.contains("erasure/audit-log/v1"), "the signed note");
    // No personal data, no pseudonyms.
    for u in &users {
        assert!(!html.contains(u.as_str()), "a target id on the page");
    }
    assert!(!html.contains("k1:"), "a pseudonym on the page");

    // A period before anything happened: zeros, and no checkpoint yet.
    let (status, _, empty) = page(
        &app,
        "?from=2020-01-01T00:00:00Z&to=2020-02-01T00:00:00Z",
        &app.auditor,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(figure(&empty, "Received"), "0");
    assert!(empty.contains("No checkpoint was signed by the end of the period"));

    // Bad input: JSON errors naming the field.
    for (query, field) in [
        ("?from=yesterday", "from"),
        ("?to=2026-13-01T00:00:00Z", "to"),
        ("?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", "from"),
        ("?from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", "to"),
        ("?colour=red", "colour"),
    ] {
        let (status, body) = app
            .get(&format!("/v1/audit/report{query}"), &app.auditor)
            .await;
        assert_eq!(status, 422, "{query}: {body}");
        assert!(body["fields"][field].is_string(), "{query}: {body}");
    }
    let (status, _) = app.get("/v1/audit/report", &app.requester).await;
    assert_eq!(status, 403);
    let (status, _, _) = page(&app, "", &app.admin).await;
    assert_eq!(status, 200);

    render_in_chromium(&app).await;
    app.stop().await;
}

/// Opens the report in headless Chromium signed in as the auditor (the session cookie is
/// enough for a GET): the DOM the browser built, axe-core's check, and a screenshot.
async fn render_in_chromium(app: &TestApp) {
    let browser = Browser::start(&app.base).await;
    browser.sign_in(&app.auditor).await;
    browser.open("/v1/audit/report").await;
    let dom = browser.wait_for("GDPR Art. 17 erasure report").await;
    assert!(
        dom.contains("<svg") && dom.contains("<rect"),
        "the chart is in the DOM"
    );
    assert!(
        dom.contains("erasure/audit-log/v1"),
        "the checkpoint is in the DOM"
    );
    browser.assert_accessible().await;
    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:?}");
    browser.quit().await;
}

//! The status page and /metrics as people and Prometheus see them: the page in real headless
//! Chromium (chromedriver, driven by fantoccini), signed in with an API key, showing the numbers
//! the API reports, accessible, with no console errors.

use crate::common;
use crate::driver;

use common::{Options, TestApp};
use driver::Browser;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_what_the_api_reports_in_a_real_browser() {
    let app = TestApp::spawn(Options::default()).await;
    let users = app.sim.seeded().users.clone();
    let done = app.submit("user", &users[0].id).await;
    app.wait_state(&done, "completed", 20).await;
    // One held (on_hold), one waiting for a later start (queued), a batch still running.
    let later = (chrono::Utc::now() + chrono::Duration::days(40)).to_rfc3339();
    let (_, held) = app
        .post(
            "/v1/erasure-requests",
            &app.requester,
            json!({"scope": "user", "target_id": users[1].id, "not_before": later}),
        )
        .await;
    let held = held["id"].as_str().unwrap().to_string();
    let (status, _) = app
        .post(
            &format!("/v1/erasure-requests/{held}/hold"),
            &app.approver,
            json!({"legal_basis": "art17_3_e", "note": "litigation"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, batch) = app
        .post(
            "/v1/erasure-requests/batch",
            &app.requester,
            json!([
                {"scope": "user", "target_id": users[2].id, "not_before": later},
                {"scope": "user", "target_id": users[3].id, "not_before": later}
            ]),
        )
        .await;
    assert!(status < 300, "{batch}");

    // What the API says.
    let (_, listed) = app
        .get("/v1/erasure-requests?limit=100", &app.auditor)
        .await;
    let items = listed["items"]
        .as_array()
        .or(listed.as_array())
        .cloned()
        .unwrap_or_default();
    let api_count = |state: &str| items.iter().filter(|r| r["state"] == state).count();
    assert_eq!(api_count("completed"), 1, "{listed}");
    assert_eq!(api_count("on_hold"), 1);
    assert_eq!(api_count("queued"), 2);

    let browser = Browser::start(&app.base).await;
    browser.open("/").await;
    assert!(
        browser.source().await.contains("API key"),
        "the sign-in form"
    );
    // A wrong key is refused.
    browser.fill("input[name=key]", "ek_00000000_nope").await;
    browser.click("button[type=submit]").await;
    browser
        .wait_for("Unknown, revoked or expired API key")
        .await;
    // The auditor's key signs in.
    browser.sign_in(&app.auditor).await;
    browser.assert_accessible().await;
    let page = browser.source().await;
    for (state, n) in [
        ("completed", 1),
        ("on_hold", 1),
        ("queued", 2),
        ("failed", 0),
    ] {
        let text = browser.text(&format!("#count-{state} b")).await;
        assert_eq!(text, n.to_string(), "{state} on the page");
        assert_eq!(api_count(state), n, "{state} in the API");
    }
    assert!(page.contains("Running batches"));
    assert!(page.contains("0 of 2 done"), "the batch's progress");
    assert!(page.contains("<svg"), "the daily chart");
    assert!(!page.contains(&users[1].id), "no upstream id on the page");
    assert!(!page.contains(&app.auditor), "the key is not in the page");

    // A request's own page, by its link.
    browser.open(&format!("/requests/{done}")).await;
    let detail = browser.wait_for("verified_absent").await;
    assert!(detail.contains("completed"), "{detail}");
    // The refused sign-in answered 401, which the console reports; nothing else may.
    let errors: Vec<String> = browser
        .console_errors()
        .await
        .into_iter()
        .filter(|e| !(e.contains("/login") && e.contains("401")))
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:?}");
    browser.quit().await;

    // Without the cookie: the sign-in form, never the data.
    let (status, text) = app.get_text("/", "").await;
    assert_eq!(status, 200);
    assert!(text.contains("API key") && !text.contains("Requests by state"));
    let (status, _) = app.get_text(&format!("/requests/{done}"), "").await;
    assert!(status == 303 || status == 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_report_requests_jobs_upstream_calls_and_the_audit_log_without_ids() {
    let app = TestApp::spawn(Options::default()).await;
    let user = app.sim.seeded().users[0].id.clone();
    let id = app.submit("user", &user).await;
    app.wait_state(&id, "completed", 20).await;
    let (status, text) = app.get_text("/metrics", "").await;
    assert_eq!(status, 200);
    for needed in [
        "erasure_requests{state=\"completed\",scope=\"user\"} 1",
        "erasure_requests_overdue 0",
        "erasure_requests_due_within_7_days 0",
        "erasure_jobs{state=\"running\"}",
        "erasure_jobs{state=\"retrying\"}",
        "erasure_audit_entries ",
        "erasure_audit_tree_size ",
        "erasure_upstream_calls_total{method=\"DELETE\",status_class=\"2xx\"}",
        "erasure_upstream_call_duration_seconds_bucket{le=\"+Inf\"}",
        "erasure_step_attempts_total{step=\"delete\",outcome=\"done\"}",
        "erasure_rate_limiter_waits_total",
        // Present; its value is the process's, which other tests' apps in this test binary share
        // (one upstream per process in production), so it is not asserted here.
        "erasure_circuit_breaker_state ",
        "erasure_resurrections_total 0",
    ] {
        assert!(text.contains(needed), "{needed} missing from:\n{text}");
    }
    // The process's live heap and what the allocator holds: figures, and the second the larger.
    let heap = |kind: &str| -> f64 {
        let prefix = format!("erasure_heap_bytes{{kind=\"{kind}\"}} ");
        let line = text.lines().find(|l| l.starts_with(&prefix));
        line.unwrap_or_else(|| panic!("{prefix} missing from:\n{text}"))[prefix.len()..]
            .parse()
            .unwrap()
    };
    assert!(heap("allocated") > 0.0 && heap("resident") >= heap("allocated"));
    assert!(!text.contains(&user), "no upstream id in the metrics");
    assert!(!text.contains(&id), "no request id in the metrics");
    // Every sample line parses as `name{labels} number`.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
    app.stop().await;
}

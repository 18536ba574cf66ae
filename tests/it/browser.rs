//! The console in real headless Chromium (chromedriver, driven by fantoccini), against the
//! simulator: each person does their whole job from the browser. An officer submits one erasure
//! and a file of 200 lines; an approver approves, holds, releases, extends and restores; an
//! auditor looks up a target, opens the report and downloads an export and a receipt, both of
//! which `erasure audit verify` accepts; an admin creates and revokes a key and runs a webhook
//! subscription. Every page passes axe-core with no serious or critical violation, no page shows
//! a target id, and screenshots of the main pages are saved (`driver::screenshots()`).

use crate::common;
use crate::driver;

use std::time::Duration;

use common::{Options, TestApp};
use driver::{Browser, ENTER};
use erasure::config::ApprovalPolicy;

/// Whether `page` holds `id` as a token of its own (the simulator's ids are short numbers, which
/// a request id or a time may contain).
fn shows(page: &str, id: &str) -> bool {
    let inside =
        |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || "-:._".contains(c));
    page.match_indices(id).any(|(at, _)| {
        !inside(page[..at].chars().next_back()) && !inside(page[at + id.len()..].chars().next())
    })
}

/// The page's source, checked: accessible, and none of `secrets` in it.
async fn checked(browser: &Browser, secrets: &[&str]) -> String {
    browser.assert_accessible().await;
    let page = browser.source().await;
    for secret in secrets {
        assert!(
            !shows(&page, secret),
            "{secret:?} on {}",
            browser.path().await
        );
    }
    page
}

/// The request id a `/requests/{id}…` path names.
fn id_in(path: &str) -> String {
    path.trim_start_matches("/requests/")
        .split(['?', '/'])
        .next()
        .unwrap()
        .to_string()
}

/// Reloads a page until it shows `text` (a state the engine reaches in its own time).
async fn reload_until(browser: &Browser, path: &str, text: &str, secs: u64) -> String {
    for _ in 0..secs * 5 {
        browser.open(path).await;
        let page = browser.source().await;
        if page.contains(text) {
            return page;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{path} never showed {text:?}: {}", browser.source().await);
}

/// `erasure audit verify` on a downloaded file: its verdict line, and whether it passed.
fn verify(app: &TestApp, kind: &str, file: &std::path::Path, public_key: &str) -> (bool, String) {
    let out = app
        .command("audit")
        .args(["verify", kind])
        .arg(file)
        .args(["--public-key", public_key])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_officer_submits_one_erasure_and_a_file_and_may_not_decide() {
    let app = TestApp::spawn(Options::default()).await;
    let user = app.sim.seeded().users[0].id.clone();
    let browser = Browser::start(&app.base).await;

    // The sign-in page, then the status page.
    browser.open("/").await;
    checked(&browser, &[]).await;
    browser.screenshot("signin").await;
    // By keyboard alone: Tab to the key, type it, Enter.
    browser.tab_to("input[name=key]", 5).await;
    browser.keys(&app.requester).await;
    browser.keys(ENTER).await;
    browser.wait_for("Requests by state").await;
    checked(&browser, &[&app.requester]).await;
    // The first Tab reaches the link that skips the navigation.
    browser.tab_to("a.skip", 1).await;
    browser.keys(ENTER).await;
    assert!(browser.path().await.starts_with('/'));
    assert_eq!(
        browser.client.current_url().await.unwrap().fragment(),
        Some("content")
    );

    // One erasure by form.
    browser.open("/requests/new").await;
    checked(&browser, &[]).await;
    browser.screenshot("submit").await;
    browser.select("#n-scope", "user").await;
    browser.fill("#n-target", &user).await;
    browser.fill("#n-ref", "TICKET-1").await;
    browser
        .click("form[action='/requests/new'] button[type=submit]")
        .await;
    browser.wait_for("Submitted.").await;
    let id = id_in(&browser.path().await);
    let page = checked(&browser, &[&user]).await;
    assert!(page.contains("TICKET-1"), "{page}");
    // An officer sees no approver's button, and is refused the approver's page.
    for action in ["hold", "approve", "extend", "release"] {
        assert!(
            !page.contains(&format!("id=\"action-{action}\"")),
            "{action}"
        );
    }
    browser.open(&format!("/requests/{id}/hold")).await;
    browser.wait_for("Error 403").await;
    reload_until(
        &browser,
        &format!("/requests/{id}"),
        "<td id=\"state\">completed</td>",
        30,
    )
    .await;
    checked(&browser, &[&user]).await;
    browser.screenshot("request").await;

    // A file of 200 lines: 190 new, 4 duplicates (of lines above, or of an open request),
    // 6 invalid. The open request is one held back by its not-before time.
    let open_id = app.submit_later("account", "987654321012").await;
    let later = (chrono::Utc::now() + chrono::Duration::days(300)).to_rfc3339();
    let csv = common::upload_of_200(7_000_000, "987654321012", &later);
    let file = std::env::temp_dir().join(format!("erasure-upload-{}.csv", uuid::Uuid::new_v4()));
    std::fs::write(&file, &csv).unwrap();
    browser.open("/requests/new").await;
    browser
        .find("#u-file")
        .await
        .send_keys(&file.display().to_string())
        .await
        .unwrap();
    browser
        .click("form[action='/requests/upload'] button[type=submit]")
        .await;
    browser.wait_for("id=\"created\"").await;
    assert_eq!(browser.text("#created").await, "190");
    assert_eq!(browser.text("#duplicates").await, "4");
    assert_eq!(browser.text("#invalid").await, "6");
    let page = checked(&browser, &["7000001", "987654321012", &user]).await;
    assert!(
        page.contains(&format!("/requests/{open_id}")),
        "the duplicate links the open request"
    );
    browser.screenshot("upload").await;
    std::fs::remove_file(&file).unwrap();

    // The list, filtered by the batch the upload made.
    browser.click(".notice a").await;
    browser.wait_for("request(s)").await;
    checked(&browser, &["7000001"]).await;
    browser.open("/requests").await;
    checked(&browser, &["7000001", &user]).await;
    browser.screenshot("requests").await;
    // The status page counts them.
    browser.open("/").await;
    let home = checked(&browser, &[&user]).await;
    assert!(home.contains("Requests by state"));
    browser.screenshot("status").await;
    let errors = browser.console_errors().await;
    let errors: Vec<_> = errors.iter().filter(|e| !e.contains(" 403 ")).collect();
    assert!(errors.is_empty(), "console errors: {errors:?}");
    browser.sign_out().await;
    browser.open(&format!("/requests/{id}")).await;
    browser.wait_for("API key").await;
    browser.quit().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_approves_holds_releases_extends_and_restores() {
    let app = TestApp::spawn(Options {
        approval: ApprovalPolicy::All,
        ..Options::default()
    })
    .await;
    let seeded = app.sim.seeded().clone();
    let connection = &seeded.users[1].connections[0];
    let account = connection.channels[0].accounts[0].clone();
    let waiting = app.submit("account", &account).await;
    let held = app.submit_later("user", &seeded.users[2].id).await;
    let secrets = [
        account.as_str(),
        seeded.users[2].id.as_str(),
        connection.id.as_str(),
    ];

    let browser = Browser::start(&app.base).await;
    browser.sign_in(&app.approver).await;
    // Approve, after the confirmation page.
    browser.open(&format!("/requests/{waiting}")).await;
    browser.wait_for("pending_approval").await;
    checked(&browser, &secrets).await;
    browser.click("#action-approve").await;
    browser.wait_for("Confirm: approve").await;
    checked(&browser, &secrets).await;
    browser.click("#confirm").await;
    reload_until(
        &browser,
        &format!("/requests/{waiting}"),
        "<td id=\"state\">completed</td>",
        30,
    )
    .await;

    // Hold under Art. 17(3)(e) with a note, release, extend by two months.
    browser.open(&format!("/requests/{held}")).await;
    browser.click("#action-hold").await;
    browser.wait_for("Confirm: hold").await;
    checked(&browser, &secrets).await;
    browser.screenshot("confirm-hold").await;
    browser
        .click("input[name=legal_basis][value=art17_3_e]")
        .await;
    browser.fill("#c-note", "litigation pending").await;
    browser.click("#confirm").await;
    browser.wait_for("<td id=\"state\">on_hold</td>").await;
    // Released by keyboard alone: Tab to the action, Enter, Tab to the confirmation, Enter.
    browser.tab_to("#action-release", 20).await;
    browser.keys(ENTER).await;
    browser.wait_for("Confirm: release").await;
    browser.tab_to("#confirm", 20).await;
    browser.keys(ENTER).await;
    // Released, it waits for approval again (a hold never skips the approval).
    browser
        .wait_for("<td id=\"state\">pending_approval</td>")
        .await;
    browser.click("#action-extend").await;
    browser.wait_for("Confirm: extend").await;
    browser.select("#c-months", "2").await;
    browser.fill("#c-reason", "complex case").await;
    browser.click("#confirm").await;
    let page = browser.wait_for("extended by 2 month(s)").await;
    for event in ["held", "released", "extended"] {
        assert!(page.contains(event), "{event} in the timeline");
    }
    checked(&browser, &secrets).await;

    // A requester has no such buttons and is refused the confirmation page.
    let requester = Browser::start(&app.base).await;
    requester.sign_in(&app.requester).await;
    requester.open(&format!("/requests/{held}")).await;
    let page = requester.wait_for("Request ").await;
    for action in ["approve", "hold", "release", "extend"] {
        assert!(
            !page.contains(&format!("id=\"action-{action}\"")),
            "{action}"
        );
    }
    requester.open(&format!("/requests/{held}/approve")).await;
    requester.wait_for("Error 403").await;
    requester.quit().await;

    // A restoration of the connection whose account was erased, followed to its end.
    browser.open("/restorations/new").await;
    checked(&browser, &secrets).await;
    browser
        .fill("input[name=connection_id]", &connection.id)
        .await;
    browser
        .fill("input[name=reason]", "erased by mistake, ticket 4411")
        .await;
    browser
        .click("form[action='/restorations'] button[type=submit]")
        .await;
    browser.wait_for("Restoration ").await;
    let path = browser.path().await;
    let page = reload_until(&browser, &path, "<td id=\"state\">completed</td>", 30).await;
    assert!(page.contains("1 new"), "{page}");
    checked(&browser, &secrets).await;
    browser.screenshot("restoration").await;
    browser.quit().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_reads_the_report_and_downloads_an_export_and_a_receipt_that_verify() {
    let app = TestApp::spawn(Options::default()).await;
    let users = app.user_ids();
    let mut done = Vec::new();
    for u in &users[..3] {
        done.push(app.submit("user", u).await);
    }
    for id in &done {
        app.wait_state(id, "completed", 30).await;
    }
    let secrets: Vec<&str> = users.iter().map(String::as_str).collect();

    let browser = Browser::start(&app.base).await;
    browser.sign_in(&app.auditor).await;
    // The look-up: the id is posted, the answer names request ids only.
    browser.open("/requests").await;
    browser.select("#s-scope", "user").await;
    browser.fill("#s-target", &users[1]).await;
    browser
        .click("form[action='/requests/search'] button[type=submit]")
        .await;
    let page = browser.wait_for("Look-up").await;
    assert!(page.contains(&done[1]) && page.contains("erased"), "{page}");
    checked(&browser, &secrets).await;
    assert!(!shows(&browser.path().await, &users[1]), "never in a URL");

    // The report of the period, in the browser.
    browser.open("/audit").await;
    checked(&browser, &secrets).await;
    browser.screenshot("audit").await;
    let public_key = browser.text("#public-key").await;
    browser.click("#open-report").await;
    let report = browser.wait_for("GDPR Art. 17 erasure report").await;
    assert!(report.contains("<svg") && report.contains("erasure/audit-log/v1"));
    checked(&browser, &secrets).await;
    browser.screenshot("report").await;

    // The export (JSON Lines) downloads and verifies with only the public key.
    browser.open("/audit").await;
    browser.select("#e-format", "jsonl").await;
    browser.click("#download-export").await;
    let export = browser.downloaded("audit-export").await;
    let (ok, said) = verify(&app, "--export", &export, &public_key);
    assert!(ok && said.starts_with("OK"), "{said}");

    // A receipt from the request's page, and the command the page gives verifies it.
    browser.open(&format!("/requests/{}", done[0])).await;
    let page = checked(&browser, &secrets).await;
    assert!(page.contains("erasure audit verify --receipt"));
    browser.click("#receipt").await;
    let receipt = browser.downloaded("receipt-").await;
    let (ok, said) = verify(&app, "--receipt", &receipt, &public_key);
    assert!(ok && said.starts_with("OK"), "{said}");
    // A receipt altered by one byte fails.
    let mut text = std::fs::read_to_string(&receipt).unwrap();
    text = text.replacen("completed", "complete_", 1);
    std::fs::write(&receipt, text).unwrap();
    let (ok, said) = verify(&app, "--receipt", &receipt, &public_key);
    assert!(!ok, "{said}");

    // The auditor may not act or manage keys.
    let page = browser.source().await;
    assert!(
        !page.contains("id=\"action-"),
        "no action buttons for an auditor"
    );
    browser.open("/keys").await;
    browser.wait_for("Error 403").await;
    let errors = browser.console_errors().await;
    let errors: Vec<_> = errors.iter().filter(|e| !e.contains(" 403 ")).collect();
    assert!(errors.is_empty(), "console errors: {errors:?}");
    browser.quit().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_manages_keys_and_webhooks() {
    let app = TestApp::spawn(Options::default()).await;
    // A receiver that accepts every delivery.
    let receiver = actix_web::HttpServer::new(|| {
        actix_web::App::new().default_service(actix_web::web::to(|| async {
            actix_web::HttpResponse::NoContent().finish()
        }))
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let hook = format!("http://{}/hook", receiver.addrs()[0]);
    let receiver = receiver.run();
    let stop_receiver = receiver.handle();
    tokio::spawn(receiver);

    let browser = Browser::start(&app.base).await;
    browser.sign_in(&app.admin).await;

    // A key, shown once; it works at once.
    browser.open("/keys").await;
    checked(&browser, &[&app.admin]).await;
    browser.select("#k-role", "requester").await;
    browser.fill("#k-label", "temp officer").await;
    browser.click("#create-key").await;
    let key = browser.text("#new-key").await;
    assert!(key.starts_with("ek_"), "{key}");
    browser.screenshot("keys").await;
    let (status, _) = app.get("/v1/erasure-requests?limit=1", &key).await;
    assert_eq!(status, 200);
    browser.open("/keys").await;
    let page = checked(&browser, &[&key]).await;
    assert!(!page.contains(&key), "a key is shown once");
    // Revoked after its confirmation page: refused at once.
    browser.click(&format!("#key-{} a", &key[3..11])).await;
    browser.wait_for("Confirm revoke").await;
    checked(&browser, &[&key]).await;
    browser.click("#confirm").await;
    browser.wait_for("Revoked:").await;
    let (status, _) = app.get("/v1/erasure-requests?limit=1", &key).await;
    assert_eq!(status, 401, "the revoked key is refused at once");

    // A webhook subscription: its secret shown once, a test event delivered and logged.
    browser.open("/webhooks").await;
    checked(&browser, &[]).await;
    browser.fill("#w-url", &hook).await;
    browser.fill("#w-desc", "case system").await;
    browser.click("#subscribe").await;
    let secret = browser.text("#new-secret").await;
    assert!(secret.starts_with("whsec_"), "{secret}");
    browser.click(".notice a").await;
    browser.wait_for("Delivery log").await;
    let page = checked(&browser, &[&secret]).await;
    assert!(page.contains("request.completed") && page.contains("case system"));
    let path = browser.path().await;
    browser.click("#send-test").await;
    browser.wait_for("A test event is queued").await;
    let page = reload_until(&browser, &path, "<td>204</td>", 20).await;
    assert!(page.contains("<td>test</td>"), "{page}");
    checked(&browser, &[&secret]).await;
    browser.screenshot("webhook").await;
    // Pause, enable, rotate (a new secret, shown once), send the test event again.
    browser.click("#pause").await;
    browser.wait_for("<td id=\"state\">paused</td>").await;
    browser.click("#enable").await;
    browser.wait_for("<td id=\"state\">enabled</td>").await;
    browser.fill("#w-overlap", "1").await;
    browser.click("#rotate").await;
    let rotated = browser.text("#new-secret").await;
    assert!(rotated.starts_with("whsec_") && rotated != secret);
    assert!(
        browser
            .source()
            .await
            .contains("previous secret valid until")
    );
    let event = page[page.find("<code>msg_").unwrap() + 6..][..36].to_string();
    browser.fill("#w-event", &event).await;
    browser.click("#redeliver").await;
    browser.wait_for("Queued again").await;
    let mut sent = 0;
    for _ in 0..100 {
        browser.open(&path).await;
        sent = browser.source().await.matches(&event).count();
        if sent >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(sent >= 2, "sent again with the same webhook-id: {sent}");
    browser.open("/webhooks").await;
    checked(&browser, &[&secret, &rotated]).await;
    browser.screenshot("webhooks").await;
    browser.quit().await;
    stop_receiver.stop(true).await;
    app.stop().await;
}

/// Signs in through the provider's own login and consent pages (oidc-provider's, in
/// `tests/oidc`); waits for the console to name the person.
async fn sign_in_at_provider(browser: &Browser, login: &str) {
    browser.open("/").await;
    browser.click("#sso").await;
    browser.wait_for("name=\"login\"").await;
    browser.fill("input[name=login]", login).await;
    browser.fill("input[name=password]", "any password").await;
    browser.click("button[type=submit]").await;
    for _ in 0..100 {
        let page = browser.source().await;
        if page.contains("value=\"consent\"") {
            browser.click("button[type=submit]").await;
        } else if page.contains("id=\"who\"") || page.contains("id=\"refusal\"") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never back at the console: {}", browser.source().await);
}

/// Single sign-on in the browser, through a real provider's login page: an officer submits, a
/// second person approves, the request page names both; a person with no mapped group is
/// refused; sign-out ends the session at the console and the provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_sign_in_through_the_providers_login_page() {
    let (_provider, app) = common::oidc::app_with_provider(Options {
        approval: ApprovalPolicy::All,
        ..Options::no_worker()
    })
    .await;
    let browser = Browser::start(&app.base).await;
    browser.open("/").await;
    let page = checked(&browser, &[]).await;
    assert!(page.contains("Sign in with Test IdP") && !page.contains("name=\"key\""));
    browser.screenshot("signin-sso").await;

    sign_in_at_provider(&browser, "officer").await;
    let page = browser.wait_for("Olivia Officer").await;
    assert!(page.contains("(requester)"), "{page}");
    browser.open("/requests/new").await;
    browser.select("#n-scope", "user").await;
    browser.fill("#n-target", "8675309").await;
    browser
        .click("form[action='/requests/new'] button[type=submit]")
        .await;
    browser.wait_for("Submitted.").await;
    let id = id_in(&browser.path().await);

    // Sign-out: the provider asks to end its session too, then the browser is back here.
    browser.click("header form[action='/logout'] button").await;
    browser.wait_for("sign-out").await;
    browser.click("button[name=logout]").await;
    browser.wait_for("Sign in with Test IdP").await;
    browser.open(&format!("/requests/{id}")).await;
    browser.wait_for("Sign in with Test IdP").await;

    // Someone in no mapped group is refused, with a page that says so.
    sign_in_at_provider(&browser, "visitor").await;
    let page = checked(&browser, &[]).await;
    assert!(
        page.contains("none of your groups gives you a role"),
        "{page}"
    );
    browser.open("/").await;
    browser.wait_for("Sign in with Test IdP").await;
    browser.client.delete_all_cookies().await.unwrap();

    // Another person approves; the request page names both.
    sign_in_at_provider(&browser, "approver").await;
    browser.wait_for("Arthur Approver").await;
    browser.open(&format!("/requests/{id}")).await;
    browser.click("#action-approve").await;
    browser.wait_for("Confirm: approve").await;
    browser.click("#confirm").await;
    let page = browser.wait_for("approved").await;
    assert!(
        page.contains("Olivia Officer (person:") && page.contains("Arthur Approver (person:"),
        "{page}"
    );
    checked(&browser, &["8675309"]).await;
    browser.screenshot("request-people").await;
    browser.quit().await;
    app.stop().await;
}

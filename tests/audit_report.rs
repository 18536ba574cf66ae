//! `GET /v1/audit/report`: the compliance page, its figures, its errors, and that it renders in
//! a real headless browser (Debian's `chromium`, installed by `.ci/run`).

mod common;

use std::time::Duration;

use common::{Options, TestApp};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    let users: Vec<String> = app
        .sim
        .seeded()
        .users
        .iter()
        .map(|u| u.id.clone())
        .collect();
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

/// Loads the page in headless Chromium through a local proxy that adds the API key (a browser
/// cannot be told to send a bearer header): the DOM it built, and a screenshot.
async fn render_in_chromium(app: &TestApp) {
    let Some(chromium) = ["chromium", "chromium-browser"].into_iter().find(|c| {
        std::process::Command::new(c)
            .arg("--version")
            .output()
            .is_ok()
    }) else {
        eprintln!(
            "SKIPPED the headless browser check: chromium is not installed \
             (`apt-get install -y chromium`; .ci/run installs it)"
        );
        return;
    };
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    let upstream = app.base.trim_start_matches("http://").to_string();
    let auth = format!("\r\nAuthorization: Bearer {}", app.auditor);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = proxy.accept().await {
            let (upstream, auth) = (upstream.clone(), auth.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match client.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let line_end = head.windows(2).position(|w| w == b"\r\n").unwrap();
                head.splice(line_end..line_end, auth.bytes());
                let mut server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
                server.write_all(&head).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    let url = format!("http://{proxy_addr}/v1/audit/report");
    let dir = std::env::temp_dir().join(format!("erasure-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |extra: Vec<String>| {
        let mut cmd = tokio::process::Command::new(chromium);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--window-size=1000,1800",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .args(extra)
        .arg(&url)
        .kill_on_drop(true);
        async move {
            tokio::time::timeout(Duration::from_secs(90), cmd.output())
                .await
                .expect("chromium answers within 90 s")
                .unwrap()
        }
    };
    let dom = run(vec!["--dump-dom".into()]).await;
    let dom_text = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom_text.contains("GDPR Art. 17 erasure report"),
        "chromium did not render the report: {dom_text:.500} {}",
        String::from_utf8_lossy(&dom.stderr)
    );
    assert!(
        dom_text.contains("<svg") && dom_text.contains("<rect"),
        "the chart is in the DOM"
    );
    assert!(
        dom_text.contains("erasure/audit-log/v1"),
        "the checkpoint is in the DOM"
    );

    let shot = dir.join("report.png");
    let out = run(vec![format!("--screenshot={}", shot.display())]).await;
    let png = std::fs::read(&shot)
        .unwrap_or_else(|_| panic!("no screenshot: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    eprintln!("report screenshot: {}", shot.display());
}

//! The pause switch of all upstream work (`POST /v1/pause`, `/v1/resume`, the console's forms):
//! every process stops starting upstream calls within a second, intake and reads go on, and the
//! switch survives restarts; resuming finishes what waited.

use crate::common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::console::Console;
use common::{Options, TestApp, fast_engine};
use erasure_sim::SimConfig;
use serde_json::{Value, json};

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

/// Upstream calls (token, API and event stream) that started after `t_ms`.
fn calls_after(app: &TestApp, t_ms: f64) -> usize {
    app.sim
        .calls(0)
        .iter()
        .filter(|c| c.started_at_ms > t_ms)
        .count()
}

async fn pause_entries(app: &TestApp) -> Vec<(String, String, Value)> {
    sqlx::query_as(
        "select event, actor, data from audit_entries \
         where event in ('upstream_paused', 'upstream_resumed') order by id",
    )
    .fetch_all(&app.db)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_stops_every_process_within_a_second_survives_restarts_and_resume_finishes() {
    let app = TestApp::spawn(Options {
        sim: SimConfig {
            users: 30,
            ..SimConfig::default()
        },
        max_rps: 10.0,
        ..Options::default()
    })
    .await;
    let other = app.extra_worker(fast_engine()).await;
    let mut ids = Vec::new();
    for user in app.user_ids() {
        ids.push(app.submit("user", &user).await);
    }
    // Work is under way in both processes when the pause comes.
    app.wait_steps("state = 'succeeded'", 30).await;

    // Who may, and with what.
    let (status, body) = app
        .post("/v1/pause", &app.requester, json!({"reason": "x"}))
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = app.post("/v1/pause", &app.approver, json!({})).await;
    assert_eq!(
        (status, body["fields"]["reason"].is_string()),
        (422, true),
        "{body}"
    );
    let (status, body) = app
        .post(
            "/v1/pause",
            &app.approver,
            json!({"reason": "mail jane@example.com"}),
        )
        .await;
    assert_eq!(
        status, 422,
        "a reason with personal data is refused: {body}"
    );

    let reason = "aggregator maintenance until 14:00";
    let (status, paused) = app
        .post("/v1/pause", &app.approver, json!({"reason": reason}))
        .await;
    let paused_at = now_ms();
    assert_eq!(status, 200, "{paused}");
    assert_eq!(
        (paused["paused"].as_bool(), paused["reason"].as_str()),
        (Some(true), Some(reason))
    );
    assert!(
        paused["by"].as_str().unwrap().starts_with("key:"),
        "{paused}"
    );
    // Pausing again changes nothing and is not audited again.
    let (status, again) = app
        .post("/v1/pause", &app.admin, json!({"reason": "again"}))
        .await;
    assert_eq!((status, &again["since"]), (200, &paused["since"]));

    // Within a second no process starts a call; intake and reads go on.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(
        calls_after(&app, paused_at + 1000.0),
        0,
        "no upstream call after the pause"
    );
    let open: i64 = sqlx::query_scalar(
        "select count(*) from erasure_requests where state in ('queued', 'in_progress')",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!(open > 0, "the pause came while erasures were open");
    assert!(
        calls_after(&app, paused_at - 2000.0) > 0,
        "calls went out just before the pause"
    );
    let (status, _) = app
        .post(
            "/v1/erasure-requests",
            &app.requester,
            json!({"scope": "account", "target_id": "999001"}),
        )
        .await;
    assert_eq!(status, 202, "intake goes on");
    // A request that would ask the aggregator does not wait for the resume: a restoration is
    // accepted at once (its worker asks the aggregator after the resume).
    let asked = std::time::Instant::now();
    let (status, body) = app
        .post(
            "/v1/restorations",
            &app.approver,
            json!({"connection_id": "424242", "reason": "paused check"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    let (status, seen) = app.get("/v1/pause", &app.auditor).await;
    assert_eq!((status, seen["paused"].as_bool()), (200, Some(true)));
    let (_, metrics) = app.get_text("/metrics", &app.auditor).await;
    assert!(metrics.contains("erasure_upstream_paused 1"), "{metrics}");

    // Every console page says so; the approver may not resume, the admin may.
    let approver = Console::sign_in(&app, &app.approver).await;
    let (_, page) = approver.get("/requests").await;
    assert!(
        page.contains("id=\"paused\"") && page.contains(reason),
        "{page}"
    );
    assert!(
        !page.contains("id=\"resume\""),
        "an approver has no resume button"
    );
    let (status, _, _) = approver.post("/resume", &[]).await;
    assert_eq!(status, 403);

    // A restarted process stays paused.
    other.stop().await.unwrap();
    let restarted = app.extra_worker(fast_engine()).await;
    let restarted_at = now_ms();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(
        calls_after(&app, restarted_at),
        0,
        "a process started while paused sends nothing"
    );

    let admin = Console::sign_in(&app, &app.admin).await;
    let (_, home) = admin.get("/").await;
    assert!(home.contains("id=\"resume\""), "{home}");
    let (status, location, _) = admin.post("/resume", &[]).await;
    assert_eq!((status, location.as_str()), (303, "/#pause"));
    let (_, now) = app.get("/v1/pause", &app.auditor).await;
    assert_eq!(now, json!({"paused": false}));
    for id in &ids {
        let done = app.wait_state(id, "completed", 90).await;
        assert_eq!(done["outcome"], "erased", "{done:#}");
    }

    // Both changes are in the audit log with who and why.
    let entries = pause_entries(&app).await;
    let events: Vec<&str> = entries.iter().map(|(e, _, _)| e.as_str()).collect();
    assert_eq!(events, ["upstream_paused", "upstream_resumed"]);
    assert_eq!(entries[0].1, paused["by"].as_str().unwrap());
    assert_eq!(entries[0].2["reason"], reason);
    assert!(entries[1].1.starts_with("key:") && entries[1].1 != entries[0].1);
    restarted.stop().await.unwrap();
    app.stop().await;
}

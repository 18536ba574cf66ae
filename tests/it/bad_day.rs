//! Erasures on a bad day upstream: faults on every route, long outages, throttling, and an
//! inventory that cannot finish. Every transient error is waited out; only a permanent one fails.

use crate::common;

use std::time::Duration;

use common::{Options, TestApp, assert_no_call_before_retry_after, fast_engine};
use erasure::upstream::{InventoryProgress, Upstream};
use erasure_sim::{CallRecord, Faults, SeedRequest, SeededUser};
use serde_json::Value;

/// Users with `connections` connections of one channel of `accounts` accounts each.
fn users(app: &TestApp, n: usize, connections: usize, accounts: usize) -> Vec<SeededUser> {
    app.sim
        .seed(&SeedRequest {
            users: n,
            connections_per_user: Some(connections),
            channels_per_connection: Some(1),
            accounts_per_channel: Some(accounts),
            ..Default::default()
        })
        .unwrap()
        .users
}

/// Every call answered 429 with `Retry-After: 1`.
fn throttle_every_call(app: &TestApp) {
    app.sim
        .set_faults(Faults {
            throttle_rate: 1.0,
            throttle_retry_after_secs: 1,
            ..Faults::default()
        })
        .unwrap();
}

/// The calls to the API for erasures (the tests' own checks go to the simulator too, and the
/// resurrection guard reads the event stream whenever it likes).
fn api_calls(app: &TestApp, since: u64) -> Vec<CallRecord> {
    app.sim
        .calls(since)
        .into_iter()
        .filter(|c| c.route.starts_with("/v2.1") && c.route != "/v2.1/events")
        .collect()
}

async fn count_failed(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from erasure_requests where state = 'failed'")
        .fetch_one(&app.db)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_with_several_connections_are_erased_through_503s_and_429s_on_every_route() {
    let app = TestApp::spawn(Options {
        max_rps: 200.0,
        max_concurrency: 8,
        ..Options::empty_sim()
    })
    .await;
    let seeded = users(&app, 6, 3, 3);
    let mark = app.sim.calls(0).last().map_or(0, |c| c.seq);
    app.sim
        .set_faults(Faults {
            error_rate: 0.25,
            error_statuses: vec![503],
            error_retry_after_secs: Some(1),
            throttle_rate: 0.10,
            throttle_retry_after_secs: 1,
            ..Faults::default()
        })
        .unwrap();
    let targets: Vec<String> = seeded.iter().map(|u| u.id.clone()).collect();
    for done in app.erase_all("user", &targets, 120).await {
        assert_eq!(done["outcome"], "erased", "{done:#}");
        assert_eq!(done["steps"][0]["detail"]["complete"], true, "{done:#}");
        assert_eq!(done["steps"][0]["detail"]["accounts"], 9, "{done:#}");
    }
    let calls = api_calls(&app, mark);
    app.sim.set_faults(Faults::default()).unwrap();
    assert_eq!(count_failed(&app).await, 0);
    for u in &seeded {
        assert_eq!(app.upstream_status(&format!("/users/{}", u.id)).await, 404);
    }
    // About a third of at least 42 calls fault (mean about 14): fewer than 4 has odds under
    // one in 10^4, so these bounds only say that faults were injected and waited out.
    let faults = calls.iter().filter(|c| c.fault.is_some()).count();
    assert!(faults >= 4, "faults were injected ({faults})");
    let waited = assert_no_call_before_retry_after(&calls);
    assert!(waited >= 3, "Retry-After answers were checked ({waited})");
    // Each user needs 1 + 1 + 3 reads to count, 1 DELETE and 1 GET to verify.
    let needed = seeded.len() * 7;
    println!(
        "calls {} needed {needed} amplification {:.2} faults {faults} retry-after answers {waited}",
        calls.len(),
        calls.len() as f64 / needed as f64
    );
    app.stop().await;
}

/// How long the outage of `a_long_outage...` lasts.
const OUTAGE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_outage_fails_nothing_and_every_erasure_completes_after_it_unattended() {
    // Every DELETE answers 503 for the whole outage (the inventories' reads go through): the
    // circuit breaker opens and probes; nothing fails, and once the outage ends every erasure
    // completes without anyone pressing retry.
    let app = TestApp::spawn(Options {
        max_concurrency: 4,
        ..Options::empty_sim()
    })
    .await;
    let seeded = users(&app, 4, 2, 2);
    app.sim
        .set_faults(Faults {
            error_rate: 1.0,
            error_statuses: vec![503],
            methods: vec!["DELETE".into()],
            ..Faults::default()
        })
        .unwrap();
    let mut ids = Vec::new();
    for u in &seeded {
        ids.push(app.submit("user", &u.id).await);
    }
    let outage_ends = tokio::time::Instant::now() + OUTAGE;
    while tokio::time::Instant::now() < outage_ends {
        assert_eq!(
            count_failed(&app).await,
            0,
            "a transient outage failed a request"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let most: i32 = sqlx::query_scalar("select max(attempts) from steps where kind = 'delete'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(most >= 1, "the deletions were tried during the outage");
    println!("most attempts of a deletion during the outage: {most}");
    app.sim.set_faults(Faults::default()).unwrap();
    for id in &ids {
        let done = app.wait_state(id, "completed", 60).await;
        assert_eq!(done["outcome"], "erased", "{done:#}");
    }
    assert_eq!(count_failed(&app).await, 0);
    for u in &seeded {
        assert_eq!(app.upstream_status(&format!("/users/{}", u.id)).await, 404);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_error_outlasting_the_old_attempt_count_does_not_fail_the_request() {
    // The upstream keeps showing a deleted user for 20 s (eventual consistency): every
    // verification until then is a transient error that does not trip the breaker, so with
    // backoff capped at 0.5 s the step makes far more attempts than the count of 20 a step used
    // to have before its request failed.
    let app = TestApp::spawn(Options::empty_sim()).await;
    let user = users(&app, 1, 1, 1).remove(0);
    app.sim
        .set_faults(Faults {
            slow_delete_secs: 20.0,
            ..Faults::default()
        })
        .unwrap();
    let id = app.submit("user", &user.id).await;
    let done = app.wait_state(&id, "completed", 60).await;
    let verify = &done["steps"][2];
    assert_eq!(verify["kind"], "verify", "{done:#}");
    let attempts = verify["attempts"].as_i64().unwrap();
    assert!(attempts > 20, "{attempts} attempts: {done:#}");
    assert_eq!(count_failed(&app).await, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inventory_that_keeps_failing_is_recorded_incomplete_and_the_deletion_goes_on() {
    let mut engine = fast_engine();
    engine.inventory_attempts = 2;
    let app = TestApp::spawn(Options {
        engine,
        ..Options::empty_sim()
    })
    .await;
    let user = users(&app, 1, 2, 2).remove(0);
    // Every read fails; deletions go through.
    app.sim
        .set_faults(Faults {
            error_rate: 1.0,
            error_statuses: vec![500],
            methods: vec!["GET".into()],
            ..Faults::default()
        })
        .unwrap();
    let id = app.submit("user", &user.id).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let request = loop {
        let (_, body) = app
            .get(&format!("/v1/erasure-requests/{id}"), &app.auditor)
            .await;
        if body["steps"][1]["state"] == "succeeded" {
            break body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the deletion waited for the inventory: {body:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let inventory = &request["steps"][0];
    assert_eq!(inventory["state"], "succeeded", "{request:#}");
    assert_eq!(inventory["detail"]["complete"], false, "{request:#}");
    let reason = inventory["detail"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("after 2 attempts") && reason.contains("500"),
        "{reason}"
    );
    assert!(!common::mentions(&request.to_string(), &user.id));

    app.sim.set_faults(Faults::default()).unwrap();
    app.wait_state(&id, "completed", 30).await;
    assert_eq!(
        app.upstream_status(&format!("/users/{}", user.id)).await,
        404
    );
    // The receipt carries the incomplete inventory, with its reason.
    let (status, receipt) = app
        .get(&format!("/v1/erasure-requests/{id}/receipt"), &app.auditor)
        .await;
    assert_eq!(status, 200, "{receipt}");
    let inventoried: Vec<Value> = receipt["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| serde_json::from_str::<Value>(e["leaf"].as_str().unwrap()).unwrap())
        .filter(|leaf| leaf["event"] == "inventoried")
        .collect();
    assert_eq!(inventoried.len(), 1, "{receipt:#}");
    assert_eq!(inventoried[0]["data"]["complete"], false);
    assert!(
        inventoried[0]["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("gave up counting")
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inventory_continues_from_what_it_read_before_and_lists_accounts_together() {
    let app = TestApp::spawn(Options::empty_sim()).await;
    let user = users(&app, 1, 3, 2).remove(0);
    let connections: Vec<String> = user.connections.iter().map(|c| c.id.clone()).collect();
    let upstream = Upstream::new(app.options_upstream.clone()).unwrap();
    let scope = erasure::domain::Scope::User;

    // From nothing: the user, its connections, then each connection's accounts.
    let mark = app.sim.calls(0).last().map_or(0, |c| c.seq);
    let mut progress = InventoryProgress::default();
    let inv = upstream
        .inventory(scope, &user.id, &mut progress, &mut Vec::new())
        .await
        .unwrap();
    assert_eq!((inv.connections, inv.accounts), (Some(3), Some(6)));
    assert_eq!(api_calls(&app, mark).len(), 5);
    assert_eq!(progress.accounts.len(), 3);

    // Two connections counted by an earlier attempt: only the third is read.
    let mut progress = InventoryProgress {
        present: Some(true),
        connections: Some(connections.clone()),
        accounts: connections[..2].iter().map(|c| (c.clone(), 2)).collect(),
        ..Default::default()
    };
    let mark = app.sim.calls(0).last().map_or(0, |c| c.seq);
    let inv = upstream
        .inventory(scope, &user.id, &mut progress, &mut Vec::new())
        .await
        .unwrap();
    assert_eq!((inv.connections, inv.accounts), (Some(3), Some(6)));
    let calls = api_calls(&app, mark);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].route, "/v2.1/accounts");
    assert!(
        calls[0]
            .query
            .as_deref()
            .unwrap()
            .contains(&format!("connection_id={}", connections[2]))
    );

    // The connections' account listings go together: with every answer 700 ms late, each of the
    // three starts before any of them has answered (one after another, each would start after
    // the one before it answered).
    app.sim
        .set_faults(Faults {
            latency_ms: 700,
            ..Faults::default()
        })
        .unwrap();
    let mark = app.sim.calls(0).last().map_or(0, |c| c.seq);
    let mut progress = InventoryProgress::default();
    let inv = upstream
        .inventory(scope, &user.id, &mut progress, &mut Vec::new())
        .await
        .unwrap();
    assert_eq!((inv.connections, inv.accounts), (Some(3), Some(6)));
    let listings: Vec<CallRecord> = api_calls(&app, mark)
        .into_iter()
        .filter(|c| c.route == "/v2.1/accounts")
        .collect();
    assert_eq!(listings.len(), 3, "{listings:?}");
    let last_start = listings.iter().map(|c| c.started_at_ms).fold(0.0, f64::max);
    let first_end = listings
        .iter()
        .map(|c| c.ended_at_ms)
        .fold(f64::INFINITY, f64::min);
    assert!(
        last_start < first_end,
        "the listings went one after another: {listings:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_waiting_for_its_retry_is_taken_again_when_due_not_at_the_next_poll() {
    // Polls 20 s apart: only a wake-up at the step's due time can take it back sooner.
    let app = TestApp::spawn(Options {
        engine: erasure::config::EngineSettings {
            poll: Duration::from_secs(20),
            ..fast_engine()
        },
        ..Options::empty_sim()
    })
    .await;
    let user = users(&app, 1, 1, 1).remove(0);
    throttle_every_call(&app);
    let id = app.submit("user", &user.id).await;
    // The first attempt ends throttled; the step waits in the queue until its `retry_at`.
    let mut waited = 0;
    while !app
        .audit_events(&id)
        .await
        .iter()
        .any(|e| e == "attempt_failed")
    {
        waited += 1;
        assert!(waited < 750, "no attempt ended throttled in 15 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.sim.set_faults(Faults::default()).unwrap();
    app.wait_state(&id, "completed", 60).await;
    // From the last failed attempt's `retry_at` to the inventory's success.
    let late: f64 = sqlx::query_scalar(
        "select extract(epoch from i.at - (f.data->>'retry_at')::timestamptz)::float8 \
         from audit_entries i, audit_entries f \
         where i.request_id = $1::uuid and i.event = 'inventoried' \
         and f.request_id = $1::uuid and f.event = 'attempt_failed' \
         order by f.id desc limit 1",
    )
    .bind(&id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!(
        (0.0..1.5).contains(&late),
        "the step succeeded {late:.2} s after it was due (polls are 20 s apart)"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_waited_out_without_using_the_steps_attempts() {
    let app = TestApp::spawn(Options::empty_sim()).await;
    let user = users(&app, 1, 1, 1).remove(0);
    throttle_every_call(&app);
    let id = app.submit("user", &user.id).await;
    // Long enough for several throttled attempts (each waits its Retry-After per call).
    tokio::time::sleep(Duration::from_secs(10)).await;
    let throttled: i64 = sqlx::query_scalar(
        "select count(*) from audit_entries where request_id = $1::uuid \
         and event = 'attempt_failed' and data->>'throttled' = 'true'",
    )
    .bind(&id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!(throttled >= 1, "attempts ended throttled ({throttled})");
    app.sim.set_faults(Faults::default()).unwrap();
    let done = app.wait_state(&id, "completed", 30).await;
    // Only the attempt that went through counts.
    assert_eq!(done["steps"][0]["attempts"], 1, "{done:#}");
    assert_eq!(count_failed(&app).await, 0);
    let calls = api_calls(&app, 0);
    assert!(assert_no_call_before_retry_after(&calls) > 3);
    app.stop().await;
}

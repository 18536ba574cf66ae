//! The engine under failure: injected upstream faults, slow deletions, workers that die.

use crate::common;

use std::time::Duration;

use common::{
    Options, TestApp, assert_no_call_before_retry_after, busiest_second, fast_engine,
    giving_up_after, peak_in_flight,
};
use erasure_sim::{Faults, SimConfig};
use serde_json::json;

async fn completed_once(app: &TestApp, id: &str) {
    let events = app.audit_events(id).await;
    assert_eq!(
        events.iter().filter(|e| *e == "completed").count(),
        1,
        "{id}: {events:?}"
    );
    assert_eq!(
        events.iter().filter(|e| *e == "deleted").count(),
        1,
        "{id}: {events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_through_5xx_and_429_respect_retry_after_and_the_caps() {
    let max_rps = 20.0;
    let max_concurrency = 4;
    let app = TestApp::spawn(Options {
        max_rps,
        max_concurrency,
        ..Options::empty_sim()
    })
    .await;
    let targets = app.seed_accounts(10);
    app.sim
        .set_faults(Faults {
            error_rate: 0.3,
            error_retry_after_secs: Some(1),
            throttle_rate: 0.1,
            throttle_retry_after_secs: 1,
            ..Faults::default()
        })
        .unwrap();
    for done in app.erase_all("account", &targets, 90).await {
        assert_eq!(done["outcome"], "erased");
        completed_once(&app, done["id"].as_str().unwrap()).await;
    }
    // The service's calls only (the test's own checks below go to the simulator too).
    let calls = app.api_calls();
    app.sim.set_faults(Faults::default()).unwrap();
    for t in &targets {
        assert_eq!(app.upstream_status(&format!("/accounts/{t}")).await, 404);
    }

    let faults = calls.iter().filter(|c| c.fault.is_some()).count();
    assert!(faults > 10, "faults were injected ({faults})");
    // No call came earlier than the Retry-After its resource was given (the reads of a
    // connection overlap: the cascade checks of its accounts, one of them in flight while another's
    // 429 comes back, cannot know of it).
    let own: Vec<_> = calls
        .iter()
        .filter(|c| !c.path.starts_with("/v2.1/connections/"))
        .cloned()
        .collect();
    let waited = assert_no_call_before_retry_after(&own);
    assert!(waited > 3, "Retry-After answers were checked ({waited})");
    // Rate: no one-second window holds more than max_rps calls (+1 at its edge).
    let busiest = busiest_second(&calls);
    assert!(
        busiest as f64 <= max_rps + 1.0,
        "{busiest} calls in one second"
    );
    // Concurrency: never more than max_concurrency calls in flight.
    let peak = peak_in_flight(&calls);
    assert!(peak <= max_concurrency as i32, "{peak} calls in flight");
    println!(
        "calls {} faults {faults} busiest second {busiest} peak concurrency {peak}",
        calls.len()
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_deletion_is_verified_again_until_gone() {
    let app = TestApp::spawn(Options::default()).await;
    app.sim
        .set_faults(Faults {
            slow_delete_secs: 1.5,
            ..Faults::default()
        })
        .unwrap();
    let account = app.sim.seeded().users[0].connections[0].channels[0].accounts[0].clone();
    let id = app.submit("account", &account).await;
    let done = app.wait_state(&id, "completed", 30).await;
    let verify = &done["steps"][2];
    assert_eq!(verify["kind"], "verify");
    assert!(
        verify["attempts"].as_i64().unwrap() > 1,
        "re-verified: {verify}"
    );
    assert!(
        app.audit_events(&id)
            .await
            .contains(&"attempt_failed".to_string())
    );
    app.stop().await;
}

/// The account DELETEs the service sent, in order, and their statuses.
fn account_deletes(app: &TestApp) -> Vec<u16> {
    app.api_calls()
        .iter()
        .filter(|c| c.method == "DELETE" && c.route == "/v2.1/accounts/{id}")
        .map(|c| c.status)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_re_added_between_its_deletion_and_its_verification_is_deleted_again() {
    // No guard: the engine alone must see it through.
    let app = TestApp::spawn(Options {
        guard: None,
        ..Options::empty_sim()
    })
    .await;
    let account = app.seed_accounts(1)[0].clone();
    // A LIST_ACCOUNTS synchronisation re-adds the account, under its id, right after the DELETE.
    app.sim
        .set_faults(Faults {
            relist_after_delete: 1,
            ..Faults::default()
        })
        .unwrap();
    let id = app.submit("account", &account).await;
    let done = app.wait_state(&id, "completed", 30).await;
    assert_eq!(done["outcome"], "erased");
    assert_eq!(done["steps"][2]["state"], "succeeded", "{done}");
    assert_eq!(account_deletes(&app), vec![204, 204], "deleted twice");
    assert_eq!(
        app.upstream_status(&format!("/accounts/{account}")).await,
        404,
        "gone upstream"
    );
    let events = app.audit_events(&id).await;
    assert_eq!(
        events
            .iter()
            .filter(|e| *e == "resurrection_at_verify")
            .count(),
        1,
        "{events:?}"
    );
    completed_once(&app, &id).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_that_keeps_coming_back_fails_its_request_after_three_rounds() {
    let app = TestApp::spawn(Options {
        guard: None,
        ..Options::empty_sim()
    })
    .await;
    let account = app.seed_accounts(1)[0].clone();
    app.sim
        .set_faults(Faults {
            relist_after_delete: 100,
            ..Faults::default()
        })
        .unwrap();
    let id = app.submit("account", &account).await;
    let failed = app.wait_state(&id, "failed", 30).await;
    let reason = failed["failure_reason"].as_str().unwrap();
    assert!(
        reason.contains("deleted again 3 times"),
        "a clear reason: {reason}"
    );
    assert!(!common::mentions(&failed.to_string(), &account));
    assert_eq!(account_deletes(&app), vec![204; 4], "1 deletion + 3 rounds");
    let events = app.audit_events(&id).await;
    assert_eq!(
        events
            .iter()
            .filter(|e| *e == "resurrection_at_verify")
            .count(),
        3,
        "{events:?}"
    );

    // Once the synchronisations stop, an operator's retry finishes it.
    app.sim.set_faults(Faults::default()).unwrap();
    let (status, body) = app
        .post(
            &format!("/v1/erasure-requests/{id}/retry"),
            &app.approver,
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    app.wait_state(&id, "completed", 30).await;
    assert_eq!(
        app.upstream_status(&format!("/accounts/{account}")).await,
        404
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_fail_the_request_and_retry_requeues_it() {
    let app = TestApp::spawn(Options {
        engine: giving_up_after(2),
        ..Options::default()
    })
    .await;
    app.sim
        .set_faults(Faults {
            error_rate: 1.0,
            error_statuses: vec![500],
            ..Faults::default()
        })
        .unwrap();
    let user = app.sim.seeded().users[0].id.clone();
    let id = app.submit("user", &user).await;
    let failed = app.wait_state(&id, "failed", 30).await;
    assert!(
        failed["failure_reason"]
            .as_str()
            .unwrap()
            .contains("gave up after 2 attempts"),
        "{failed}"
    );
    assert_eq!(failed["steps"][0]["state"], "failed");
    assert!(
        failed["steps"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("500")
    );
    assert!(!common::mentions(&failed.to_string(), &user));

    app.sim.set_faults(Faults::default()).unwrap();
    let (status, body) = app
        .post(
            &format!("/v1/erasure-requests/{id}/retry"),
            &app.approver,
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    app.wait_state(&id, "completed", 30).await;
    let events = app.audit_events(&id).await;
    assert!(events.contains(&"failed".to_string()) && events.contains(&"retried".to_string()));
    assert_eq!(app.upstream_status(&format!("/users/{user}")).await, 404);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_a_permanent_failure_with_its_reason() {
    let app = TestApp::spawn(Options {
        worker: false,
        ..Options::default()
    })
    .await;
    let mut upstream = app.options_upstream.clone();
    upstream.client_secret = erasure::secrets::Secret::new("wrong-secret");
    let worker = erasure::service::start(erasure::service::ServiceConfig {
        database_url: app.db_url.clone(),
        direct_database_url: None,
        bind: None,
        metrics_bind: None,
        keys: app.keys.clone(),
        upstream: Some(upstream),
        engine: fast_engine(),
        guard: None,
        approval: Default::default(),
        db_pool: 5,
        http_workers: 1,
        checkpoint_every: std::time::Duration::from_secs(10),
        at_risk_days: erasure::config::DEFAULT_AT_RISK_DAYS,
        webhooks: Default::default(),
        retention: common::fast_retention(),
        console: Default::default(),
    })
    .await
    .unwrap();
    let id = app.submit("user", &app.sim.seeded().users[0].id).await;
    let failed = app.wait_state(&id, "failed", 20).await;
    assert!(
        failed["failure_reason"].as_str().unwrap().contains("401"),
        "{failed}"
    );
    assert!(!failed.to_string().contains("wrong-secret"));
    worker.stop().await.unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_tokens_are_refreshed() {
    let app = TestApp::spawn(Options {
        sim: SimConfig {
            token_ttl: Duration::from_secs(1),
            ..SimConfig::default()
        },
        max_rps: 10.0,
        ..Options::default()
    })
    .await;
    let targets = app.seed_accounts(3);
    app.erase_all("account", &targets, 30).await;
    let calls = app.sim.calls(0);
    let tokens = calls.iter().filter(|c| c.route == "/token").count();
    assert!(
        tokens >= 2,
        "the 1-second token was refreshed ({tokens} token calls over {} calls)",
        calls.len()
    );
    let unauthorized = calls.iter().filter(|c| c.status == 401).count();
    assert!(unauthorized <= tokens, "no 401 loops: {unauthorized} 401s");
    app.stop().await;
}

/// The simulator's token calls, once there are at least `n` (panics after 10 s).
async fn token_calls_at_least(app: &TestApp, n: usize) -> Vec<erasure_sim::CallRecord> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let tokens: Vec<_> = app
            .sim
            .calls(0)
            .into_iter()
            .filter(|c| c.route == "/token")
            .collect();
        if tokens.len() >= n {
            return tokens;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} token calls, not {n}",
            tokens.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A worker holds a token before its first step needs one. When the token endpoint is down and
/// asks to wait (`Retry-After`), no one asks again sooner: neither the worker's renewal nor the
/// steps that meanwhile need a token, which wait for it instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_fetched_when_the_worker_starts_and_the_token_endpoint_is_not_asked_too_early() {
    let app = TestApp::spawn(Options {
        sim: SimConfig {
            faults: Faults {
                token_unavailable: 2,
                ..Faults::default()
            },
            ..SimConfig::default()
        },
        ..Options::default()
    })
    .await;
    // Erasures that need a token while the endpoint is down.
    let targets = app.seed_accounts(3);
    app.erase_all("account", &targets, 30).await;
    let calls = app.sim.calls(0);
    let tokens: Vec<_> = calls.iter().filter(|c| c.route == "/token").collect();
    let statuses: Vec<u16> = tokens.iter().map(|c| c.status).collect();
    assert_eq!(
        statuses,
        vec![503, 503, 200],
        "one request for a token at a time, none before the Retry-After"
    );
    assert!(assert_no_call_before_retry_after(&calls) >= 2);
    let first_api = calls
        .iter()
        .filter(|c| c.route.starts_with("/v2.1/"))
        .map(|c| c.started_at_ms)
        .fold(f64::INFINITY, f64::min);
    assert!(tokens[2].ended_at_ms <= first_api);

    // A worker started with nothing to do fetches its token at once.
    let worker = app.extra_worker(fast_engine()).await;
    token_calls_at_least(&app, 4).await;
    worker.stop().await.unwrap();
    app.stop().await;
}

/// A renewal refused by the token endpoint leaves the token in hand in use until it expires:
/// calls go on meanwhile, none with an expired token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_token_renewal_keeps_the_valid_token_in_use() {
    let app = TestApp::spawn(Options {
        sim: SimConfig {
            token_ttl: Duration::from_secs(4),
            ..SimConfig::default()
        },
        max_rps: 20.0,
        ..Options::default()
    })
    .await;
    let first = token_calls_at_least(&app, 1).await[0].clone();
    assert_eq!(first.status, 200);
    // The renewal (due 0.4 s before the 4-s token expires) meets an outage.
    app.sim
        .set_faults(Faults {
            token_unavailable: 1,
            ..Faults::default()
        })
        .unwrap();
    // About 6 s of calls at 20 a second, across the renewal.
    let targets = app.seed_accounts(30);
    app.erase_all("account", &targets, 60).await;
    let calls = app.sim.calls(0);
    let refused = token_calls_at_least(&app, 2)
        .await
        .into_iter()
        .find(|c| c.status == 503)
        .expect("the renewal met the outage");
    let expiry = first.started_at_ms + 4000.0;
    let meanwhile = calls
        .iter()
        .filter(|c| c.route.starts_with("/v2.1/"))
        .filter(|c| c.started_at_ms > refused.ended_at_ms && c.ended_at_ms < expiry)
        .count();
    assert!(
        meanwhile > 0,
        "calls went on with the token in hand after the refused renewal"
    );
    assert!(
        calls.iter().all(|c| c.status != 401),
        "no call with an expired token"
    );
    assert!(assert_no_call_before_retry_after(&calls) >= 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_opens_while_the_upstream_is_down() {
    let app = TestApp::spawn(Options::empty_sim()).await;
    let targets = app.seed_accounts(4);
    app.sim
        .set_faults(Faults {
            error_rate: 1.0,
            error_statuses: vec![502],
            ..Faults::default()
        })
        .unwrap();
    let mut ids = Vec::new();
    for t in &targets {
        ids.push(app.submit("account", t).await);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = app.api_calls().len();
    // 12 requests, backoff 50..500 ms: without a breaker that is well over 100 calls in 3 s.
    assert!(
        during < 40,
        "the breaker held dispatch back: {during} calls in 3 s of outage"
    );
    app.sim.set_faults(Faults::default()).unwrap();
    for id in &ids {
        app.wait_state(id, "completed", 60).await;
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_dies_mid_step_is_taken_over_and_nothing_runs_twice_in_the_log() {
    let app = TestApp::spawn(Options {
        worker: false,
        ..Options::default()
    })
    .await;
    let mut engine = fast_engine();
    engine.lease = Duration::from_secs(1);
    app.sim
        .set_faults(Faults {
            latency_ms: 2500,
            methods: vec!["DELETE".into()],
            ..Faults::default()
        })
        .unwrap();
    let doomed = app.extra_worker(engine.clone()).await;
    let account = app.sim.seeded().users[0].connections[0].channels[0].accounts[0].clone();
    let id = app.submit("account", &account).await;
    // Wait for the delete to be in flight, then crash the worker.
    app.wait_steps("kind = 'delete' and state = 'running'", 20)
        .await;
    doomed.abort().await;
    app.sim.set_faults(Faults::default()).unwrap();
    let survivor = app.extra_worker(engine).await;
    let done = app.wait_state(&id, "completed", 30).await;
    assert_eq!(done["steps"][1]["kind"], "delete");
    assert!(
        done["steps"][1]["attempts"].as_i64().unwrap() >= 2,
        "{done:#}"
    );
    completed_once(&app, &id).await;
    survivor.stop().await.unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_gives_back_unfinished_steps() {
    let app = TestApp::spawn(Options {
        worker: false,
        ..Options::empty_sim()
    })
    .await;
    let targets = app.seed_accounts(3);
    app.sim
        .set_faults(Faults {
            latency_ms: 3000,
            ..Faults::default()
        })
        .unwrap();
    let mut engine = fast_engine();
    engine.shutdown_grace = Duration::from_millis(300);
    let worker = app.extra_worker(engine.clone()).await;
    let mut ids = Vec::new();
    for t in &targets {
        ids.push(app.submit("account", t).await);
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    worker.stop().await.unwrap();
    assert_eq!(
        app.running_steps().await,
        0,
        "nothing is left leased after a graceful stop"
    );
    app.sim.set_faults(Faults::default()).unwrap();
    let worker = app.extra_worker(engine).await;
    for id in &ids {
        app.wait_state(id, "completed", 30).await;
        completed_once(&app, id).await;
    }
    worker.stop().await.unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_and_restarted_loses_nothing_and_completes_nothing_twice() {
    let app = TestApp::spawn(Options {
        worker: false,
        ..Options::empty_sim()
    })
    .await;
    let targets = app.seed_accounts(10);
    app.sim
        .set_faults(Faults {
            latency_ms: 100,
            latency_jitter_ms: 100,
            ..Faults::default()
        })
        .unwrap();
    let spawn = || {
        app.command("worker")
            .env("ERASURE_LEASE_SECS", "1")
            .spawn()
            .unwrap()
    };
    let mut ids = Vec::new();
    for t in &targets {
        ids.push(app.submit("account", t).await);
    }
    let mut kills = 0;
    for _ in 0..3 {
        let mut child = spawn();
        tokio::time::sleep(Duration::from_millis(700)).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
    }
    let mut child = spawn();
    for id in &ids {
        app.wait_state(id, "completed", 60).await;
        completed_once(&app, id).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    for t in &targets {
        assert_eq!(app.upstream_status(&format!("/accounts/{t}")).await, 404);
    }
    assert_eq!(kills, 3);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_worker_process_cleanly() {
    let app = TestApp::spawn(Options {
        worker: false,
        ..Options::empty_sim()
    })
    .await;
    let targets = app.seed_accounts(4);
    app.sim
        .set_faults(Faults {
            latency_ms: 2000,
            ..Faults::default()
        })
        .unwrap();
    let mut ids = Vec::new();
    for t in &targets {
        ids.push(app.submit("account", t).await);
    }
    let mut child = app
        .command("worker")
        .env("ERASURE_SHUTDOWN_GRACE_SECS", "0.5")
        .spawn()
        .unwrap();
    // Wait until steps are in flight, then SIGTERM.
    app.wait_steps("state = 'running'", 20).await;
    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let started = std::time::Instant::now();
    let status = child.wait().unwrap();
    assert!(status.success(), "a SIGTERM is a clean exit: {status}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "it stopped within its grace period"
    );
    assert_eq!(
        app.running_steps().await,
        0,
        "unfinished steps were given back"
    );
    app.sim.set_faults(Faults::default()).unwrap();
    let worker = app.extra_worker(fast_engine()).await;
    for id in &ids {
        app.wait_state(id, "completed", 30).await;
        completed_once(&app, id).await;
    }
    worker.stop().await.unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_refuses_a_database_that_lacks_a_migration() {
    let app = TestApp::spawn(Options {
        worker: false,
        ..Options::empty_sim()
    })
    .await;
    sqlx::query(
        "delete from _sqlx_migrations where version = (select max(version) from _sqlx_migrations)",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let out = app.command("worker").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("lacks migration") && err.contains("erasure migrate"),
        "{err}"
    );
    app.stop().await;
}

/// Outcomes of steps that end together are recorded in one transaction (`store::group`), yet
/// each is fenced by its own lease: an attempt whose step another worker took writes nothing,
/// and the others are recorded as if alone (the next step leased to the caller, a retry
/// scheduled), each with its own audit entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_recorded_together_are_each_fenced_by_their_own_lease() {
    use erasure::store::steps::{self, Attempt, Finished, Outcome};
    let app = TestApp::spawn(Options {
        worker: false,
        ..Options::default()
    })
    .await;
    let mut ids = Vec::new();
    for target in ["9001", "9002", "9003"] {
        ids.push(app.submit("account", target).await);
    }
    let lease = Duration::from_secs(30);
    let mut claimed = steps::claim(&app.db, 10, lease).await.unwrap();
    assert_eq!(claimed.len(), 3);
    claimed.sort_by_key(|c| ids.iter().position(|id| *id == c.request_id.to_string()));
    // Another worker took the second request's step.
    sqlx::query("update steps set lease_token = gen_random_uuid() where id = $1")
        .bind(claimed[1].lease.id)
        .execute(&app.db)
        .await
        .unwrap();
    let retry_at = chrono::Utc::now() + chrono::Duration::minutes(5);
    let done = || Outcome::Done {
        detail: json!({"present": true}),
        context: None,
        guard: None,
    };
    let outcomes = [
        (done(), Some(lease)),
        (done(), Some(lease)),
        (
            Outcome::RetryAt {
                error: "upstream answered 503".into(),
                at: retry_at,
                context: None,
                throttled: false,
            },
            Some(lease),
        ),
    ];
    let recorder = steps::recorder(app.db.clone(), 1);
    let results = futures::future::join_all(claimed.iter().zip(outcomes).map(
        |(step, (outcome, take_next))| {
            recorder.submit(Attempt {
                step: step.clone(),
                outcome,
                calls: vec![],
                redeleted: vec![],
                take_next,
            })
        },
    ))
    .await;
    let results: Vec<Finished> = results.into_iter().map(Result::unwrap).collect();
    let Finished::Next(next) = &results[0] else {
        panic!("the first success leases its next step: {:?}", results[0]);
    };
    assert_eq!(next.kind, erasure::domain::StepKind::Delete);
    assert_eq!(
        (next.request_id, next.ordinal, next.attempts),
        (claimed[0].request_id, 1, 1)
    );
    assert!(matches!(results[1], Finished::Lost), "{:?}", results[1]);
    assert!(matches!(results[2], Finished::Recorded), "{:?}", results[2]);

    let state_of = |n: usize, ordinal: i16| {
        sqlx::query_as::<_, (String, Option<uuid::Uuid>, chrono::DateTime<chrono::Utc>)>(
            "select state, lease_token, run_at from steps where request_id = $1 and ordinal = $2",
        )
        .bind(claimed[n].request_id)
        .bind(ordinal)
        .fetch_optional(&app.db)
    };
    assert_eq!(state_of(0, 0).await.unwrap().unwrap().0, "succeeded");
    let (state, token, _) = state_of(0, 1).await.unwrap().unwrap();
    assert_eq!((state.as_str(), token), ("running", Some(next.lease.token)));
    let (state, token, _) = state_of(1, 0).await.unwrap().unwrap();
    assert_eq!(state, "running", "the taken step is left to its new holder");
    assert_ne!(token, Some(claimed[1].lease.token));
    assert!(
        state_of(1, 1).await.unwrap().is_none(),
        "a lost attempt stores no next step"
    );
    let (state, _, run_at) = state_of(2, 0).await.unwrap().unwrap();
    assert_eq!(state, "ready");
    assert!((run_at - retry_at).num_milliseconds().abs() < 1);

    let events: Vec<(uuid::Uuid, String)> = sqlx::query_as(
        "select request_id, event from audit_entries where request_id is not null and event <> 'received' order by id",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(
        events,
        vec![
            (claimed[0].request_id, "inventoried".to_string()),
            (claimed[2].request_id, "attempt_failed".to_string()),
        ]
    );
    app.stop().await;
}

/// The steps queue through the one lease of every queue (`store::lease`): renewing and giving
/// back are fenced by the token (a stale holder changes nothing), and a lease that expired is
/// rescued: the step is ready again, its lease cleared, and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steps_lease_is_renewed_and_given_back_by_its_holder_only_and_rescued_when_it_expires() {
    use erasure::store::steps;
    let app = TestApp::spawn(Options::no_worker()).await;
    app.submit("account", "9101").await;
    let lease = Duration::from_secs(30);
    let claimed = steps::claim(&app.db, 10, lease).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let held = &claimed[0];
    assert_eq!(held.attempts, 1);
    let mut stale = held.clone();
    stale.lease.token = uuid::Uuid::new_v4();
    assert!(!steps::renew(&app.db, &stale, lease).await.unwrap());
    assert!(steps::renew(&app.db, held, lease).await.unwrap());
    steps::release(&app.db, &stale).await.unwrap();
    let row = || {
        sqlx::query_as::<_, (String, i32, Option<uuid::Uuid>, Option<String>)>(
            "select state, attempts, lease_token, last_error from steps where id = $1",
        )
        .bind(held.lease.id)
        .fetch_one(&app.db)
    };
    let (state, attempts, token, _) = row().await.unwrap();
    assert_eq!(
        (state.as_str(), attempts, token),
        ("running", 1, Some(held.lease.token))
    );

    // Nothing to rescue while the lease runs; once it expired, the step is ready again.
    assert_eq!(steps::rescue(&app.db).await.unwrap(), 0);
    sqlx::query("update steps set lease_until = now() - interval '1 second' where id = $1")
        .bind(held.lease.id)
        .execute(&app.db)
        .await
        .unwrap();
    assert_eq!(steps::rescue(&app.db).await.unwrap(), 1);
    let (state, attempts, token, error) = row().await.unwrap();
    assert_eq!((state.as_str(), attempts, token), ("ready", 1, None));
    assert!(error.unwrap().contains("lease expired"));
    assert!(
        !steps::renew(&app.db, held, lease).await.unwrap(),
        "the old holder lost it"
    );

    // Claimed again, then given back untried: ready, the attempt not counted.
    let again = steps::claim(&app.db, 10, lease).await.unwrap();
    assert_eq!((again.len(), again[0].attempts), (1, 2));
    assert_ne!(again[0].lease.token, held.lease.token);
    steps::release(&app.db, &again[0]).await.unwrap();
    let (state, attempts, token, _) = row().await.unwrap();
    assert_eq!((state.as_str(), attempts, token), ("ready", 1, None));
    app.stop().await;
}

/// A request's later steps are stored when reached; requests accepted by earlier releases have
/// them stored from the start, `waiting`. Both kinds run to completion side by side, each step
/// once, and read the same through the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_stored_by_earlier_releases_with_all_their_steps_complete_too() {
    let app = TestApp::spawn(Options {
        worker: false,
        ..Options::default()
    })
    .await;
    let accounts = app.seed_accounts(1);
    let new = app.submit("account", &accounts[0]).await;
    let old = app.submit("account", &accounts[1]).await;
    let stored = |id: String| {
        sqlx::query_scalar::<_, i64>("select count(*) from steps where request_id = $1::uuid")
            .bind(id)
            .fetch_one(&app.db)
    };
    assert_eq!(stored(new.clone()).await.unwrap(), 1);
    // As releases before 0009 stored them: every step at intake, the later ones waiting.
    sqlx::query(
        "insert into steps (request_id, ordinal, kind, state, run_at) \
         select $1::uuid, n, k, 'waiting', r.received_at from erasure_requests r, \
             unnest(array[1, 2, 3]::int2[], array['delete', 'verify', 'cascade_check']) as s(n, k) \
         where r.id = $1::uuid",
    )
    .bind(&old)
    .execute(&app.db)
    .await
    .unwrap();
    let (_, shown) = app
        .get(&format!("/v1/erasure-requests/{new}"), &app.auditor)
        .await;
    let kinds: Vec<&str> = shown["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["inventory", "delete", "verify", "cascade_check"]);
    assert_eq!(shown["steps"][1]["state"], "waiting");

    let worker = app.extra_worker(fast_engine()).await;
    for id in [&new, &old] {
        let done = app.wait_state(id, "completed", 30).await;
        assert_eq!(done["outcome"], "erased", "{done:#}");
        let states: Vec<&str> = done["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["state"].as_str().unwrap())
            .collect();
        assert_eq!(states, ["succeeded"; 4], "{done:#}");
        completed_once(&app, id).await;
        assert_eq!(stored(id.clone()).await.unwrap(), 4);
    }
    worker.stop().await.unwrap();
    app.stop().await;
}

/// Polls the request until `check` holds on it.
async fn wait_request(
    app: &TestApp,
    id: &str,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = app
            .get(&format!("/v1/erasure-requests/{id}"), &app.auditor)
            .await;
        if check(&body) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {body:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Issue 32, hole 4: during an outage a request sits in progress with nothing deleted; a legal
/// hold or a cancellation must still stop it, until its first DELETE has been sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_and_cancel_stop_an_erasure_in_progress_until_its_delete_is_sent() {
    let app = TestApp::spawn(Options::default()).await;
    // The aggregator is down for reads: the inventories fail and are tried again.
    app.sim
        .set_faults(Faults {
            error_rate: 1.0,
            error_statuses: vec![503],
            methods: vec!["GET".into()],
            ..Faults::default()
        })
        .unwrap();
    let users = app.user_ids();
    let held = app.submit("user", &users[0]).await;
    let cancelled = app.submit("user", &users[1]).await;
    for id in [&held, &cancelled] {
        wait_request(&app, id, "in progress with a failed inventory", |r| {
            r["state"] == "in_progress" && r["steps"][0]["attempts"].as_i64() >= Some(2)
        })
        .await;
    }
    let (status, body) = app
        .post(
            &format!("/v1/erasure-requests/{held}/hold"),
            &app.approver,
            json!({"legal_basis": "art17_3_e", "note": "litigation hold"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "on_hold");
    let (status, body) = app
        .post(
            &format!("/v1/erasure-requests/{cancelled}/cancel"),
            &app.requester,
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "cancelled");

    // The aggregator comes back: the held request's inventory (in flight or due) may finish,
    // and then its delete waits, paused; the cancelled one does nothing more.
    app.sim.set_faults(Faults::default()).unwrap();
    wait_request(&app, &held, "the held request settles", |r| {
        r["state"] == "on_hold"
            && r["steps"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["state"] != "running" && s["state"] != "ready")
    })
    .await;
    // Long enough for a worker to have taken any step that were claimable.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let deletes = |app: &TestApp| {
        app.api_calls()
            .iter()
            .filter(|c| c.method == "DELETE")
            .count()
    };
    assert_eq!(deletes(&app), 0, "no DELETE while held or after cancelling");
    let (_, r) = app
        .get(&format!("/v1/erasure-requests/{held}"), &app.auditor)
        .await;
    assert_eq!(r["state"], "on_hold", "{r:#}");
    let (_, r) = app
        .get(&format!("/v1/erasure-requests/{cancelled}"), &app.auditor)
        .await;
    assert_eq!(r["state"], "cancelled", "{r:#}");
    assert!(
        r["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["state"] == "cancelled" || s["state"] == "succeeded"),
        "{r:#}"
    );

    // Released, the held erasure goes on from where it was and completes.
    let (status, body) = app
        .post(
            &format!("/v1/erasure-requests/{held}/release"),
            &app.approver,
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    app.wait_state(&held, "completed", 30).await;
    assert_eq!(deletes(&app), 1);

    // Once a DELETE was sent (here it fails, and is tried again), neither stops it any more.
    app.sim
        .set_faults(Faults {
            error_rate: 1.0,
            error_statuses: vec![503],
            methods: vec!["DELETE".into()],
            ..Faults::default()
        })
        .unwrap();
    let sent = app.submit("user", &users[2]).await;
    wait_request(&app, &sent, "a delete that failed", |r| {
        r["steps"][1]["attempts"].as_i64() >= Some(1) && r["steps"][1]["state"] != "running"
    })
    .await;
    hold_and_cancel_come_too_late(&app, &sent).await;
    app.sim.set_faults(Faults::default()).unwrap();
    app.wait_state(&sent, "completed", 30).await;
    app.stop().await;
}

/// Both a legal hold and a cancellation of `id` are refused: its DELETE was already sent.
async fn hold_and_cancel_come_too_late(app: &TestApp, id: &str) {
    for (action, key, body) in [
        (
            "hold",
            &app.approver,
            json!({"legal_basis": "art17_3_e", "note": "litigation hold"}),
        ),
        ("cancel", &app.requester, json!({})),
    ] {
        let (status, answer) = app
            .post(&format!("/v1/erasure-requests/{id}/{action}"), key, body)
            .await;
        assert_eq!(status, 409, "{action}: {answer}");
        assert_eq!(answer["error"], "deletion_sent", "{answer}");
        assert!(
            answer["message"].as_str().unwrap().contains("already sent"),
            "{answer}"
        );
    }
}

/// A request retried after its delete failed for good is queued again with its delete step
/// ready: once a worker has sent that DELETE, a hold or a cancellation comes too late, though the
/// request still reads `queued` until the attempt ends (the claim leaves the request's state to
/// the attempt's outcome). The state then moves on to `in_progress` and `completed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_request_whose_delete_is_in_flight_can_no_longer_be_held() {
    let app = TestApp::spawn(Options {
        engine: giving_up_after(1),
        ..Options::default()
    })
    .await;
    // The delete fails, and with one attempt allowed the request fails.
    app.sim
        .set_faults(Faults {
            error_rate: 1.0,
            error_statuses: vec![503],
            methods: vec!["DELETE".into()],
            ..Faults::default()
        })
        .unwrap();
    let user = app.user_ids()[0].clone();
    let id = app.submit("user", &user).await;
    app.wait_state(&id, "failed", 30).await;

    // The DELETE now takes 1.2 s upstream (the client waits 2 s): the retried delete is in
    // flight while we act.
    app.sim
        .set_faults(Faults {
            latency_ms: 1200,
            methods: vec!["DELETE".into()],
            ..Faults::default()
        })
        .unwrap();
    let (status, body) = app
        .post(
            &format!("/v1/erasure-requests/{id}/retry"),
            &app.approver,
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    wait_request(&app, &id, "the retried delete in flight", |r| {
        r["steps"][1]["state"] == "running"
    })
    .await;
    hold_and_cancel_come_too_late(&app, &id).await;
    let done = app.wait_state(&id, "completed", 30).await;
    assert!(done["steps"][1]["state"] == "succeeded", "{done:#}");
    app.stop().await;
}

//! Signed webhooks (Standard Webhooks) delivered from the outbox, against a receiver in the test
//! that records every delivery. Each delivery is verified twice: by a verifier written here from
//! the specification, and by the reference `standardwebhooks` package from PyPI
//! (`tests/webhooks/verify.py`, installed into `tests/webhooks/.venv` on first use, or the
//! Python named by `ERASURE_TEST_PYTHON`).

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::{KillOnDrop, Options, TestApp, fast_engine, fast_webhooks};
use erasure::config::WebhookSettings;
use erasure::domain::events::{Event, ResurrectionData, ReverificationFailedData, data_of};
use erasure_sim::SeedRequest;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub(crate) struct Got {
    pub(crate) id: String,
    timestamp: String,
    signature: String,
    pub(crate) body: String,
    pub(crate) accepted: bool,
}

/// A webhook receiver: answers 503 to its first `refuse` requests (down), 500 to all while
/// `broken`, after `delay_ms`, and not before `held` is false; records everything (`arrived`
/// counts the requests as they come in, before any wait).
#[derive(Default)]
pub(crate) struct Receiver {
    got: Mutex<Vec<Got>>,
    refuse: AtomicUsize,
    broken: AtomicBool,
    delay_ms: AtomicU64,
    held: AtomicBool,
    arrived: AtomicUsize,
}

impl Receiver {
    pub(crate) fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// Ids in the order they were first accepted.
    pub(crate) fn accepted_ids(&self) -> Vec<String> {
        let mut seen = BTreeSet::new();
        self.got()
            .into_iter()
            .filter(|g| g.accepted && seen.insert(g.id.clone()))
            .map(|g| g.id)
            .collect()
    }
}

async fn receive(
    state: web::Data<Arc<Receiver>>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    state.arrived.fetch_add(1, Ordering::SeqCst);
    while state.held.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let down = state
        .refuse
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let broken = state.broken.load(Ordering::SeqCst);
    state.got.lock().unwrap().push(Got {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: String::from_utf8_lossy(&body).into_owned(),
        accepted: !down && !broken,
    });
    if broken {
        HttpResponse::InternalServerError().body("x".repeat(1000))
    } else if down {
        HttpResponse::ServiceUnavailable().body("down for maintenance")
    } else {
        HttpResponse::Ok().body("thanks")
    }
}

/// Starts a receiver on 127.0.0.1, port 0: its URL.
pub(crate) fn start_receiver(receiver: Arc<Receiver>) -> String {
    let data = web::Data::new(receiver);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .default_service(web::to(receive))
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")
    .unwrap();
    let addr = server.addrs()[0];
    tokio::spawn(server.run());
    format!("http://{addr}/hooks/erasure")
}

/// The Standard Webhooks check, written from the specification: some `v1,` signature of the
/// header is base64(HMAC-SHA256(base64-decoded secret after `whsec_`, "id.timestamp.body")), and
/// the timestamp is within 5 minutes.
fn verifies(secret: &str, g: &Got) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.{}", g.id, g.timestamp, g.body).as_bytes());
    let expected = STANDARD.encode(mac.finalize().into_bytes());
    let ts: i64 = g.timestamp.parse().unwrap_or(0);
    let fresh = (chrono::Utc::now().timestamp() - ts).abs() < 300;
    fresh
        && g.signature
            .split(' ')
            .any(|s| s.strip_prefix("v1,") == Some(expected.as_str()))
}

/// The Python of a virtual environment with `standardwebhooks`, made once per test process.
fn python() -> &'static PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        if let Ok(p) = std::env::var("ERASURE_TEST_PYTHON") {
            return PathBuf::from(p);
        }
        let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/webhooks/.venv"));
        let python = dir.join("bin/python");
        let has = |p: &PathBuf| {
            std::process::Command::new(p)
                .args(["-c", "import standardwebhooks"])
                .status()
                .is_ok_and(|s| s.success())
        };
        if !has(&python) {
            let made = std::process::Command::new("python3")
                .args(["-m", "venv"])
                .arg(&dir)
                .status()
                .expect("python3 runs");
            assert!(made.success(), "python3 -m venv failed");
            let installed = std::process::Command::new(dir.join("bin/pip"))
                .args(["install", "-q", "standardwebhooks"])
                .status()
                .expect("pip runs");
            assert!(installed.success(), "pip install standardwebhooks failed");
        }
        assert!(has(&python), "standardwebhooks is not importable");
        python
    })
}

/// The reference package's verdict on each delivery, with `secret`.
fn verified_by_reference(secret: &str, got: &[Got]) -> Vec<bool> {
    let python = python().clone();
    let file = std::env::temp_dir().join(format!(
        "erasure-webhooks-{}-{}.jsonl",
        std::process::id(),
        uuid::Uuid::new_v4()
    ));
    let lines: Vec<String> = got
        .iter()
        .map(|g| {
            json!({"id": g.id, "timestamp": g.timestamp, "signature": g.signature, "body": g.body})
                .to_string()
        })
        .collect();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let out = std::process::Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/webhooks/verify.py"
        ))
        .arg(secret)
        .arg(&file)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts: Vec<bool> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l == "ok")
        .collect();
    assert_eq!(verdicts.len(), got.len());
    verdicts
}

/// Subscribes `url` to `types`: (id, secret).
pub(crate) async fn subscribe(app: &TestApp, url: &str, types: &[&str]) -> (String, String) {
    let (status, body) = app
        .post(
            "/v1/webhooks",
            &app.admin,
            json!({"url": url, "event_types": types, "description": "case system"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let secret = body["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    (body["id"].as_str().unwrap().to_string(), secret)
}

/// Waits until `select count(*) ... = 0` holds: no event left pending for this subscription.
pub(crate) async fn wait_delivered(app: &TestApp, subscription: &str, secs: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let pending: i64 = sqlx::query_scalar(
            "select count(*) from webhook_events where subscription_id = $1::uuid and state <> 'delivered'",
        )
        .bind(subscription)
        .fetch_one(&app.db)
        .await
        .unwrap();
        if pending == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{pending} events not delivered within {secs}s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The subscription's event ids in outbox order.
async fn outbox_ids(app: &TestApp, subscription: &str) -> Vec<String> {
    sqlx::query_scalar(
        "select id from webhook_events where subscription_id = $1::uuid order by seq",
    )
    .bind(subscription)
    .fetch_all(&app.db)
    .await
    .unwrap()
}

async fn queue_tests(app: &TestApp, subscription: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let (status, body) = app
            .post(
                &format!("/v1/webhooks/{subscription}/test"),
                &app.admin,
                json!({}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        ids.push(body["event_id"].as_str().unwrap().to_string());
    }
    ids
}

async fn wait_for(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} within {secs}s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every event arrived, in outbox order, and every copy of one event is the same message.
fn assert_all_in_order(got: &[Got], receiver: &Receiver, outbox: &[String]) {
    assert_eq!(
        receiver.accepted_ids(),
        outbox,
        "every event, once accepted, in order"
    );
    let mut bodies: BTreeMap<&str, &str> = BTreeMap::new();
    for g in got {
        assert!(outbox.contains(&g.id), "an unknown webhook-id");
        let first = bodies.entry(&g.id).or_insert(&g.body);
        assert_eq!(
            *first, g.body,
            "a duplicate carries the same webhook-id and body"
        );
    }
}

/// Everything a payload's `data` may hold.
const PAYLOAD_FIELDS: &[&str] = &[
    "request_id",
    "external_reference",
    "scope",
    "state",
    "outcome",
    "received_at",
    "due_at",
    "completed_at",
    "updated_at",
    "resurrection_of",
    "receipt_url",
    "days_left",
    "re_erasure_request_id",
    "legal_basis",
    "message",
    "subscription_id",
    "requested_by",
    "restoration_id",
    "requested_at",
    "finished_at",
    "accounts",
    "guards_lifted",
];

/// No target id, pseudonym or anything but the fields above in any payload.
fn assert_nothing_personal(got: &[Got], targets: &[String], refs: &[String]) {
    fn strings(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Number(n) => out.push(n.to_string()),
            Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
            Value::Object(o) => o.values().for_each(|v| strings(v, out)),
            _ => {}
        }
    }
    for g in got {
        let body: Value = serde_json::from_str(&g.body).unwrap();
        for key in body["data"].as_object().unwrap().keys() {
            assert!(
                PAYLOAD_FIELDS.contains(&key.as_str()),
                "unexpected field {key}"
            );
        }
        let mut values = Vec::new();
        strings(&body, &mut values);
        for v in values {
            assert!(!targets.contains(&v), "a target id in a payload");
            assert!(!v.starts_with("k1:"), "a pseudonym in a payload");
            for r in refs {
                assert!(!v.contains(r.as_str()), "a pseudonym in a payload");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completed_erasures_reach_a_receiver_that_was_down_signed_in_order_and_without_personal_data()
 {
    let app = TestApp::spawn(Options {
        webhooks: WebhookSettings {
            retry_scale: 0.0002,
            ..fast_webhooks()
        },
        ..Options::empty_sim()
    })
    .await;
    let receiver = Arc::new(Receiver::default());
    // Down for its first four requests: the first event is retried (1 ms, 60 ms, 360 ms, 1.4 s).
    receiver.refuse.store(4, Ordering::SeqCst);
    let url = start_receiver(receiver.clone());
    let (subscription, secret) =
        subscribe(&app, &url, &["request.completed", "request.on_hold"]).await;
    let seeded = app
        .sim
        .seed(&SeedRequest {
            users: 12,
            ..Default::default()
        })
        .unwrap();
    let targets: Vec<String> = seeded.users.iter().map(|u| u.id.clone()).collect();
    let mut ids = Vec::new();
    for t in &targets {
        ids.push(app.submit("user", t).await);
    }
    for id in &ids {
        app.wait_state(id, "completed", 60).await;
    }
    wait_delivered(&app, &subscription, 60).await;

    let outbox = outbox_ids(&app, &subscription).await;
    assert_eq!(outbox.len(), targets.len(), "one event per completion");
    let got = receiver.got();
    assert!(
        got.len() >= targets.len() + 4,
        "the first was refused four times"
    );
    assert_all_in_order(&got, &receiver, &outbox);
    for g in &got {
        assert!(verifies(&secret, g), "signature of {}", g.id);
    }
    assert!(
        verified_by_reference(&secret, &got)
            .into_iter()
            .all(|ok| ok),
        "standardwebhooks verifies every delivery"
    );
    let refs: Vec<String> = sqlx::query_scalar("select subject_ref from erasure_requests")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_nothing_personal(&got, &targets, &refs);
    let completed: BTreeSet<String> = got
        .iter()
        .map(|g| {
            let body: Value = serde_json::from_str(&g.body).unwrap();
            assert_eq!(body["type"], "request.completed");
            assert_eq!(body["data"]["state"], "completed");
            assert_eq!(body["data"]["outcome"], "erased");
            let id = body["data"]["request_id"].as_str().unwrap().to_string();
            assert_eq!(
                body["data"]["receipt_url"],
                format!("/v1/erasure-requests/{id}/receipt")
            );
            id
        })
        .collect();
    assert_eq!(completed, ids.iter().cloned().collect());

    // The delivery log: the refusals of the first event, then one attempt for each.
    let (status, log) = app
        .get(
            &format!("/v1/webhooks/{subscription}/deliveries?limit=200"),
            &app.admin,
        )
        .await;
    assert_eq!(status, 200, "{log}");
    let items = log["items"].as_array().unwrap();
    assert_eq!(items.len(), got.len());
    assert!(items.iter().any(|d| d["status"] == 503
        && d["excerpt"] == "down for maintenance"
        && d["error"] == "answered HTTP 503"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_delivery_loses_nothing_and_repeats_only_the_same_ids() {
    let app = TestApp::spawn(Options::no_worker()).await;
    let receiver = Arc::new(Receiver::default());
    receiver.delay_ms.store(60, Ordering::SeqCst);
    let url = start_receiver(receiver.clone());
    let (subscription, secret) = subscribe(&app, &url, &["request.completed"]).await;
    let queued = queue_tests(&app, &subscription, 30).await;
    let worker = |app: &TestApp| {
        let child = app
            .command("worker")
            .env("ERASURE_WEBHOOK_ALLOW_HTTP_HOSTS", "127.0.0.1")
            .env("ERASURE_WEBHOOK_TIMEOUT_SECS", "1")
            .env("ERASURE_WEBHOOK_POLL_MS", "50")
            .spawn()
            .unwrap();
        KillOnDrop(child)
    };
    let mut first = worker(&app);
    wait_for("deliveries to start", 60, || receiver.got().len() >= 5).await;
    // SIGKILL while a delivery is in flight (each answer takes 60 ms).
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let before = receiver.got().len();
    assert!(before < 30, "killed before the end ({before})");
    let _second = worker(&app);
    wait_delivered(&app, &subscription, 60).await;
    let got = receiver.got();
    let outbox = outbox_ids(&app, &subscription).await;
    assert_eq!(outbox, queued);
    assert_all_in_order(&got, &receiver, &outbox);
    assert!(
        verified_by_reference(&secret, &got)
            .into_iter()
            .all(|ok| ok)
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_rotated_during_delivery_signs_with_both_until_the_overlap_ends() {
    let app = TestApp::spawn(Options::no_worker()).await;
    let receiver = Arc::new(Receiver::default());
    receiver.delay_ms.store(30, Ordering::SeqCst);
    let url = start_receiver(receiver.clone());
    let (subscription, old) = subscribe(&app, &url, &["request.completed"]).await;
    let before = queue_tests(&app, &subscription, 10).await;
    let worker = app
        .extra_process_with(fast_engine(), None, fast_webhooks())
        .await;
    wait_for("deliveries to start", 60, || receiver.got().len() >= 3).await;
    let (status, body) = app
        .post(
            &format!("/v1/webhooks/{subscription}/rotate"),
            &app.admin,
            json!({"overlap_seconds": 3600}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let new = body["secret"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert!(body["previous_secret_expires_at"].is_string());
    let after = queue_tests(&app, &subscription, 10).await;
    wait_delivered(&app, &subscription, 60).await;
    let got = receiver.got();
    assert_all_in_order(&got, &receiver, &[before.clone(), after.clone()].concat());
    // Every delivery verifies with the old secret (valid during the overlap); those of events
    // queued after the rotation with the new one too.
    assert!(verified_by_reference(&old, &got).into_iter().all(|ok| ok));
    let later: Vec<Got> = got
        .iter()
        .filter(|g| after.contains(&g.id))
        .cloned()
        .collect();
    assert!(verified_by_reference(&new, &later).into_iter().all(|ok| ok));
    assert!(got.iter().all(|g| verifies(&old, g) || verifies(&new, g)));

    // Rotated again without overlap: only the newest secret signs.
    let (status, body) = app
        .post(
            &format!("/v1/webhooks/{subscription}/rotate"),
            &app.admin,
            json!({"overlap_seconds": 0}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let newest = body["secret"].as_str().unwrap().to_string();
    let last = queue_tests(&app, &subscription, 1).await;
    wait_delivered(&app, &subscription, 60).await;
    let got: Vec<Got> = receiver
        .got()
        .into_iter()
        .filter(|g| g.id == last[0])
        .collect();
    assert!(
        verified_by_reference(&newest, &got)
            .into_iter()
            .all(|ok| ok)
    );
    assert!(verified_by_reference(&new, &got).into_iter().all(|ok| !ok));
    // The secret is never shown again.
    let (_, listed) = app.get("/v1/webhooks", &app.admin).await;
    let text = listed.to_string();
    for s in [&old, &new, &newest] {
        assert!(!text.contains(&s[6..]));
    }
    worker.stop().await.unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_not_allowed_are_refused_when_subscribing() {
    let app = TestApp::spawn(Options {
        webhooks: WebhookSettings {
            allowed_hosts: Some(vec!["hooks.example.com".into(), "*.corp.example".into()]),
            ..fast_webhooks()
        },
        ..Options::no_worker()
    })
    .await;
    for url in [
        "https://evil.example.org/hook",
        "http://hooks.example.com/hook",
        "https://10.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://corp.example/hook",
        "https://user:pw@hooks.example.com/hook",
        "ftp://hooks.example.com/hook",
        "hooks.example.com/hook",
    ] {
        let (status, body) = app
            .post(
                "/v1/webhooks",
                &app.admin,
                json!({"url": url, "event_types": ["request.completed"]}),
            )
            .await;
        assert_eq!(status, 422, "{url}: {body}");
        assert_eq!(body["error"], "validation_failed");
        assert!(body["fields"]["url"].is_string(), "{body}");
        assert!(!body.to_string().contains("evil"), "the URL is not echoed");
    }
    let (status, body) = app
        .post(
            "/v1/webhooks",
            &app.admin,
            json!({"url": "https://hooks.example.com/hook", "event_types": ["request.exploded"]}),
        )
        .await;
    assert_eq!(status, 422);
    assert!(body["fields"]["event_types"].is_string(), "{body}");
    let (status, _) = app
        .post(
            "/v1/webhooks",
            &app.requester,
            json!({"url": "https://hooks.example.com/hook", "event_types": ["request.completed"]}),
        )
        .await;
    assert_eq!(status, 403);
    for url in [
        "https://hooks.example.com/hook",
        "https://siem.corp.example/in",
        "http://127.0.0.1:9/x",
    ] {
        let (status, body) = app
            .post(
                "/v1/webhooks",
                &app.admin,
                json!({"url": url, "event_types": ["request.completed"]}),
            )
            .await;
        assert_eq!(status, 201, "{url}: {body}");
    }
    // A change of URL is checked the same way.
    let (_, listed) = app.get("/v1/webhooks", &app.admin).await;
    let id = listed["items"][0]["id"].as_str().unwrap();
    let r = app
        .http
        .patch(app.url(&format!("/v1/webhooks/{id}")))
        .bearer_auth(&app.admin)
        .json(&json!({"url": "https://evil.example.org/"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_lease_was_taken_over_sends_and_records_nothing_more() {
    let app = TestApp::spawn(Options::no_worker()).await;
    let receiver = Arc::new(Receiver::default());
    receiver.held.store(true, Ordering::SeqCst);
    let url = start_receiver(receiver.clone());
    let (subscription, _) = subscribe(&app, &url, &["request.failed"]).await;
    let queued = queue_tests(&app, &subscription, 2).await;
    // A 10-s time-out (30-s lease): the first event is held at the receiver well within it.
    let worker = app
        .extra_process_with(
            fast_engine(),
            None,
            WebhookSettings {
                timeout: Duration::from_secs(10),
                ..fast_webhooks()
            },
        )
        .await;
    wait_for("the first event in flight", 30, || {
        receiver.arrived.load(Ordering::SeqCst) >= 1
    })
    .await;
    let in_flight = tokio::time::Instant::now();
    // The worker stalls past its lease (as on a starved machine): the lease lapses and the
    // subscription is claimed again, by the same process's next look. The first event, sent but
    // not recorded, is sent again by the new holder (at least once, same webhook-id).
    sqlx::query(
        "update webhook_subscriptions set lease_until = now() - interval '1 second' \
         where id = $1::uuid",
    )
    .bind(&subscription)
    .execute(&app.db)
    .await
    .unwrap();
    wait_for("the first event sent again by the new holder", 30, || {
        receiver.arrived.load(Ordering::SeqCst) >= 2
    })
    .await;
    // The stalled worker's send outlasts the time after which a worker confirms its lease before
    // sending again.
    tokio::time::sleep_until(in_flight + erasure::webhooks::CONFIRM_AFTER * 2).await;
    receiver.held.store(false, Ordering::SeqCst);
    wait_delivered(&app, &subscription, 30).await;
    // Every delivery task has ended: nothing more can be sent.
    worker.stop().await.unwrap();

    let got = receiver.got();
    let sent = |id: &str| got.iter().filter(|g| g.id == id).count();
    assert_eq!(sent(&queued[0]), 2, "{got:?}");
    assert_eq!(
        sent(&queued[1]),
        1,
        "the second event is sent by the holder of the lease only"
    );
    let (_, log) = app
        .get(
            &format!("/v1/webhooks/{subscription}/deliveries"),
            &app.admin,
        )
        .await;
    let items = log["items"].as_array().unwrap();
    assert_eq!(
        items.len(),
        2,
        "one attempt recorded per event, by the holder: {log:#}"
    );
    assert!(
        items
            .iter()
            .all(|d| d["attempt"] == 1 && d["event_state"] == "delivered")
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spent_retries_disable_the_subscription_with_an_alert_and_redelivery_resumes_it() {
    let app = TestApp::spawn(Options::no_worker()).await;
    let receiver = Arc::new(Receiver::default());
    receiver.broken.store(true, Ordering::SeqCst);
    let url = start_receiver(receiver.clone());
    let (subscription, secret) = subscribe(&app, &url, &["request.failed"]).await;
    let queued = queue_tests(&app, &subscription, 2).await;
    // The whole schedule (77.6 h) in about 0.3 s. A lease of 30 s (3 × the time-out), far beyond
    // any stall of a loaded machine: an attempt is sent again only once its lease expired
    // unrecorded (at least once), which would add one to the count below.
    let worker = app
        .extra_process_with(
            fast_engine(),
            None,
            WebhookSettings {
                retry_scale: 0.000001,
                timeout: Duration::from_secs(10),
                ..fast_webhooks()
            },
        )
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let disabled = loop {
        let (_, s) = app
            .get(&format!("/v1/webhooks/{subscription}"), &app.admin)
            .await;
        if s["state"] == "disabled" {
            break s;
        }
        assert!(tokio::time::Instant::now() < deadline, "not disabled: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        disabled["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("13 attempts")
    );
    assert_eq!(disabled["pending_events"], 1, "the second event waits");
    assert_eq!(
        receiver.got().len(),
        13,
        "13 attempts of the first event, none of the second"
    );
    let (_, log) = app
        .get(
            &format!("/v1/webhooks/{subscription}/deliveries"),
            &app.admin,
        )
        .await;
    let items = log["items"].as_array().unwrap();
    assert_eq!(items.len(), 13);
    assert!(items.iter().all(|d| d["status"] == 500
        && d["excerpt"].as_str().unwrap().chars().count() == 200
        && d["event_state"] == "failed"));
    assert_eq!(items[0]["attempt"], 13);
    let events = app.audit_events_of_webhooks().await;
    assert!(
        events.contains(&"webhook_disabled".to_string()),
        "{events:?}"
    );
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("erasure_webhook_subscriptions{state=\"disabled\"} 1"),
        "{metrics}"
    );
    let page = app
        .http
        .get(app.url("/"))
        .header("Cookie", app.sign_in(&app.admin).await)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Webhooks disabled (1)"), "{page}");
    assert!(page.contains(&subscription), "{page}");

    // Mended: the failed event queued again (same id, first in line), then enabled again: both
    // arrive, in order.
    receiver.broken.store(false, Ordering::SeqCst);
    let (status, body) = app
        .post(
            &format!("/v1/webhooks/{subscription}/redeliver"),
            &app.admin,
            json!({"event_id": queued[0]}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["queued"], 1);
    let r = app
        .http
        .patch(app.url(&format!("/v1/webhooks/{subscription}")))
        .bearer_auth(&app.admin)
        .json(&json!({"state": "enabled"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_delivered(&app, &subscription, 60).await;
    assert_eq!(receiver.accepted_ids(), queued);
    assert!(
        verified_by_reference(&secret, &receiver.got())
            .into_iter()
            .all(|ok| ok)
    );

    // Everything since a time, again: same ids, same order.
    let (status, body) = app
        .post(
            &format!("/v1/webhooks/{subscription}/redeliver"),
            &app.admin,
            json!({"since": "2000-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["queued"], 2);
    wait_delivered(&app, &subscription, 60).await;
    let accepted: Vec<String> = receiver
        .got()
        .into_iter()
        .filter(|g| g.accepted)
        .map(|g| g.id)
        .collect();
    assert_eq!(accepted, [queued.clone(), queued.clone()].concat());
    worker.stop().await.unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_at_risk_and_overdue_requests_are_told_with_their_due_date_and_nothing_personal() {
    let app = TestApp::spawn(Options::no_worker()).await;
    let receiver = Arc::new(Receiver::default());
    let url = start_receiver(receiver.clone());
    let (subscription, secret) = subscribe(
        &app,
        &url,
        &[
            "request.on_hold",
            "request.at_risk",
            "request.overdue",
            "request.resurrection_detected",
            "reverification.failed",
            "restoration.completed",
        ],
    )
    .await;
    let targets: Vec<String> = (0..3).map(|i| format!("{}", 987_650 + i)).collect();
    let mut ids = Vec::new();
    for t in &targets {
        let (status, body) = app
            .post(
                "/v1/erasure-requests",
                &app.requester,
                json!({"scope": "user", "target_id": t, "external_reference": "TICKET-77"}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        ids.push(body["id"].as_str().unwrap().to_string());
    }
    // A legal hold on the first; the second at risk (due in 3 days); the third past its due date.
    let (status, body) = app
        .post(
            &format!("/v1/erasure-requests/{}/hold", ids[0]),
            &app.approver,
            json!({"legal_basis": "art17_3_e", "note": "litigation"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for (id, days) in [(&ids[1], 3), (&ids[2], -2)] {
        sqlx::query("update erasure_requests set due_at = now() + make_interval(days => $2) where id = $1::uuid")
            .bind(id)
            .bind(days)
            .execute(&app.db)
            .await
            .unwrap();
    }
    assert_eq!(
        erasure::store::requests::mark_at_risk(&app.db, 7)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        erasure::store::requests::mark_overdue(&app.db)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        erasure::store::requests::mark_overdue(&app.db)
            .await
            .unwrap(),
        0,
        "once"
    );
    // The guard's and the restorations' entries, as they write them (src/store/guard.rs,
    // src/guard/reverify.rs, src/store/restorations.rs), through the one write point.
    let (status, restoration) = app
        .post(
            "/v1/restorations",
            &app.approver,
            json!({"connection_id": "5150", "reason": "a mistaken erasure"}),
        )
        .await;
    assert_eq!(status, 202, "{restoration}");
    let re_erasure = uuid::Uuid::now_v7();
    let original: uuid::Uuid = ids[0].parse().unwrap();
    let mut conn = app.db.acquire().await.unwrap();
    for (request, event, data) in [
        (
            Some(original),
            Event::ResurrectionDetected,
            data_of(&ResurrectionData {
                source: "guard".into(),
                listed_status: None,
                erased_by_request: original,
                re_erasure_request: Some(re_erasure),
                recurring_on_connection: false,
            }),
        ),
        (
            Some(original),
            Event::ReverificationFailed,
            data_of(&ReverificationFailedData {
                source: "reverification".into(),
                scope: erasure::domain::Scope::User,
                re_erasure_request: Some(re_erasure),
            }),
        ),
        (
            None,
            Event::RestorationCompleted,
            json!({"restoration": restoration["id"]}),
        ),
    ] {
        erasure::store::audit::append(
            &mut conn,
            erasure::store::audit::Entry {
                request_id: request,
                subject_ref: Some("k1:x"),
                actor: "guard",
                event,
                data,
            },
        )
        .await
        .unwrap();
    }
    drop(conn);
    let worker = app
        .extra_process_with(fast_engine(), None, fast_webhooks())
        .await;
    wait_delivered(&app, &subscription, 60).await;
    worker.stop().await.unwrap();

    let got = receiver.got();
    assert_eq!(
        receiver.accepted_ids(),
        outbox_ids(&app, &subscription).await
    );
    let bodies: Vec<Value> = got
        .iter()
        .map(|g| serde_json::from_str(&g.body).unwrap())
        .collect();
    let of_type = |t: &str| {
        bodies
            .iter()
            .find(|b| b["type"] == t)
            .unwrap_or_else(|| panic!("no {t}: {bodies:?}"))
            .clone()
    };
    let held = of_type("request.on_hold");
    assert_eq!(held["data"]["request_id"], ids[0].as_str());
    assert_eq!(held["data"]["state"], "on_hold");
    assert_eq!(held["data"]["legal_basis"], "art17_3_e");
    assert_eq!(held["data"]["external_reference"], "TICKET-77");
    let at_risk = of_type("request.at_risk");
    assert_eq!(at_risk["data"]["request_id"], ids[1].as_str());
    assert_eq!(at_risk["data"]["days_left"], 2);
    let overdue = of_type("request.overdue");
    assert_eq!(overdue["data"]["request_id"], ids[2].as_str());
    assert!(overdue["data"]["due_at"].as_str().unwrap().ends_with('Z'));
    for t in ["request.resurrection_detected", "reverification.failed"] {
        let b = of_type(t);
        assert_eq!(b["data"]["request_id"], ids[0].as_str());
        assert_eq!(b["data"]["re_erasure_request_id"], re_erasure.to_string());
    }
    let restored = of_type("restoration.completed");
    assert_eq!(restored["data"]["restoration_id"], restoration["id"]);
    assert_eq!(restored["data"]["accounts"]["new"], 0);
    assert_eq!(got.len(), 6);
    assert!(
        verified_by_reference(&secret, &got)
            .into_iter()
            .all(|ok| ok)
    );
    let refs: Vec<String> = sqlx::query_scalar(
        "select subject_ref from erasure_requests union all select connection_ref from restorations",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    let canaries = [targets.clone(), vec!["5150".to_string()]].concat();
    assert_nothing_personal(&got, &canaries, &refs);
    app.stop().await;
}

trait WebhookAudit {
    async fn audit_events_of_webhooks(&self) -> Vec<String>;
}

impl WebhookAudit for TestApp {
    async fn audit_events_of_webhooks(&self) -> Vec<String> {
        sqlx::query_scalar(
            "select event from audit_entries where event like 'webhook_%' order by id",
        )
        .fetch_all(&self.db)
        .await
        .unwrap()
    }
}

/// The real binary at `RUST_LOG=trace` creates, rotates and delivers with secrets that never
/// reach its logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_secrets_stay_out_of_trace_logs() {
    let mut app = TestApp::spawn(Options::no_worker()).await;
    let receiver = Arc::new(Receiver::default());
    let url = start_receiver(receiver.clone());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log_path = std::env::temp_dir().join(format!(
        "erasure-webhook-secrets-{}.log",
        std::process::id()
    ));
    let service = app
        .command("serve")
        .env("ERASURE_BIND", format!("127.0.0.1:{port}"))
        .env("ERASURE_WEBHOOK_ALLOW_HTTP_HOSTS", "127.0.0.1")
        .env("ERASURE_WEBHOOK_POLL_MS", "50")
        .env("RUST_LOG", "trace")
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let mut service = KillOnDrop(service);
    app.base = format!("http://127.0.0.1:{port}");
    wait_for_http(&app).await;
    let (subscription, first) = subscribe(&app, &url, &["request.completed"]).await;
    queue_tests(&app, &subscription, 2).await;
    wait_delivered(&app, &subscription, 60).await;
    let (status, body) = app
        .post(
            &format!("/v1/webhooks/{subscription}/rotate"),
            &app.admin,
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let second = body["secret"].as_str().unwrap().to_string();
    queue_tests(&app, &subscription, 2).await;
    wait_delivered(&app, &subscription, 60).await;
    service.0.kill().unwrap();
    let _ = service.0.wait();
    let logs = std::fs::read_to_string(&log_path).unwrap();
    let _ = std::fs::remove_file(&log_path);
    assert!(logs.contains("TRACE"), "trace logs were written");
    assert_eq!(receiver.accepted_ids().len(), 4);
    for secret in [&first, &second] {
        assert!(!logs.contains(&secret[6..]), "a signing secret in the logs");
    }
}

async fn wait_for_http(app: &TestApp) {
    for _ in 0..200 {
        if app.http.get(app.url("/healthz")).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the service did not start");
}

/// Delivered events and attempts older than the retention go (each worker prunes at its start and
/// then hourly); pending ones and recent ones stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_deliveries_are_pruned_and_pending_events_kept() {
    let app = TestApp::spawn(Options::no_worker()).await;
    let receiver = Arc::new(Receiver::default());
    let url = start_receiver(receiver.clone());
    let (subscription, _) = subscribe(&app, &url, &["request.completed"]).await;
    let old = queue_tests(&app, &subscription, 3).await;
    let worker = app
        .extra_process_with(fast_engine(), None, fast_webhooks())
        .await;
    wait_delivered(&app, &subscription, 60).await;
    worker.stop().await.unwrap();
    // Those three a month and a half ago; then one recent delivery and one still pending.
    for sql in [
        "update webhook_events set occurred_at = occurred_at - interval '45 days', \
             delivered_at = delivered_at - interval '45 days'",
        "update webhook_deliveries set at = at - interval '45 days'",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&app.db)
            .await
            .unwrap();
    }
    let recent = queue_tests(&app, &subscription, 1).await;
    let worker = app
        .extra_process_with(fast_engine(), None, fast_webhooks())
        .await;
    wait_delivered(&app, &subscription, 60).await;
    worker.stop().await.unwrap();
    let pending = queue_tests(&app, &subscription, 1).await;

    // The second worker pruned at its start already, or this does.
    let pruned = erasure::store::webhooks::prune(&app.db, 30).await.unwrap();
    assert!(
        pruned == 0 || pruned == 6,
        "three events and their three attempts"
    );
    let left = outbox_ids(&app, &subscription).await;
    assert_eq!(left, [recent, pending].concat());
    assert!(old.iter().all(|id| !left.contains(id)));
    let (_, log) = app
        .get(
            &format!("/v1/webhooks/{subscription}/deliveries"),
            &app.admin,
        )
        .await;
    assert_eq!(log["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        erasure::store::webhooks::prune(&app.db, 30).await.unwrap(),
        0
    );
    app.stop().await;
}

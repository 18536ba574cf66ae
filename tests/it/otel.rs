//! Traces over OTLP, as a platform team's collector receives them: the real binary exports to a
//! real OTLP/HTTP receiver (`common::otel`, decoding with the `opentelemetry-proto` package from
//! PyPI). One trace follows a request from the API call that created it (continuing the caller's
//! `traceparent`) through its steps, their upstream calls and its webhook delivery; no personal
//! data or secret is in any exported span; and without the settings nothing is exported.

use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use common::otel::{Receiver, attr, terminate, variables};
use common::{KillOnDrop, Options, TestApp};
use serde_json::{Value, json};

/// The caller's trace and span (a W3C `traceparent` it sends).
const CALLER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "b7ad6b7169203331";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A webhook receiver that accepts everything (204); its URL has a secret in its path and query,
/// which no span may show.
fn start_hook() -> String {
    let server = HttpServer::new(|| App::new().default_service(web::to(HttpResponse::NoContent)))
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.addrs()[0];
    tokio::spawn(server.run());
    format!("http://{addr}/hooks/path-canary-5f1d?token=query-canary-77ab")
}

/// Starts `erasure serve` (API and workers) with `env`, its logs in a file; `app` then talks to it.
async fn serve(app: &mut TestApp, env: &[(String, String)]) -> (KillOnDrop, std::path::PathBuf) {
    let port = free_port();
    let log_path = std::env::temp_dir().join(format!(
        "erasure-otel-{}-{}.log",
        std::process::id(),
        uuid::Uuid::new_v4()
    ));
    let mut cmd = app.command("serve");
    cmd.args(["--log-format", "json"])
        .env("ERASURE_BIND", format!("127.0.0.1:{port}"))
        .env("ERASURE_WEBHOOK_ALLOW_HTTP_HOSTS", "127.0.0.1")
        .env("ERASURE_WEBHOOK_POLL_MS", "50")
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&log_path).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let service = KillOnDrop(cmd.spawn().unwrap());
    app.base = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if app.http.get(app.url("/healthz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (service, log_path)
}

/// Submits an erasure with the caller's `traceparent` (when given): the response.
async fn submit(app: &TestApp, target: &str, traceparent: Option<&str>) -> Value {
    let mut req = app
        .http
        .post(app.url("/v1/erasure-requests"))
        .bearer_auth(&app.requester)
        .json(&json!({"scope": "user", "target_id": target}));
    if let Some(tp) = traceparent {
        req = req.header("traceparent", tp);
    }
    let reply = req.send().await.unwrap();
    assert_eq!(reply.status().as_u16(), 202);
    reply.json().await.unwrap()
}

/// Waits until every webhook event is delivered (and at least `n` were queued).
async fn wait_delivered(app: &TestApp, n: i64) {
    for _ in 0..300 {
        let (all, pending): (i64, i64) = sqlx::query_as(
            "select count(*), count(*) filter (where state <> 'delivered') from webhook_events",
        )
        .fetch_one(&app.db)
        .await
        .unwrap();
        if all >= n && pending == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the webhook events were not delivered");
}

fn named<'a>(spans: &'a [Value], trace: &str, name: &str) -> Vec<&'a Value> {
    spans
        .iter()
        .filter(|s| s["trace_id"] == trace && s["name"] == name)
        .collect()
}

/// The real binary with `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_SERVICE_NAME` and
/// `OTEL_RESOURCE_ATTRIBUTES`, exporting only when it stops (a schedule longer than the test): a
/// request submitted with a caller's `traceparent` is followed in that one trace from the API
/// call to each step, each upstream call and its webhook delivery; a request submitted without
/// one starts its own trace; the JSON logs carry the trace id; and no target id, upstream path,
/// pseudonym, e-mail, key, token or webhook secret is in any span; health probes make none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_follows_a_request_from_the_api_call_to_its_webhook() {
    let receiver = Receiver::start();
    let mut app = TestApp::spawn(Options {
        worker: false,
        guard: None,
        ..Options::default()
    })
    .await;
    let hook = start_hook();
    let mut env = variables(&receiver);
    for (k, v) in [
        ("OTEL_SERVICE_NAME", "erasure-test"),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment.name=test",
        ),
        // Nothing is sent before the process stops: what arrives was flushed at its shutdown.
        ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
    ] {
        env.push((k.into(), v.into()));
    }
    let (mut service, log_path) = serve(&mut app, &env).await;

    let (status, body) = app
        .post(
            "/v1/webhooks",
            &app.admin,
            json!({"url": hook, "event_types": ["request.completed"], "description": "tickets"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let webhook_secret = body["secret"].as_str().unwrap().to_string();
    let user = app.sim.seeded().users[0].clone();
    let absent = "918273645546372819";
    let traceparent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let traced_request = submit(&app, &user.id, Some(&traceparent)).await;
    let own_request = submit(&app, absent, None).await;
    let id = traced_request["id"].as_str().unwrap();
    let other = own_request["id"].as_str().unwrap();
    app.wait_state(id, "completed", 60).await;
    app.wait_state(other, "completed", 60).await;
    wait_delivered(&app, 2).await;
    let stored: Option<String> =
        sqlx::query_scalar("select traceparent from erasure_requests where id = $1::uuid")
            .bind(id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    let stored = stored.expect("the request keeps its traceparent");
    assert!(
        stored.starts_with(&format!("00-{CALLER_TRACE}-")) && stored.ends_with("-01"),
        "{stored}"
    );
    assert!(
        receiver.spans().is_empty(),
        "the batch waits for its schedule"
    );
    assert!(terminate(&mut service.0, 30), "the service stopped cleanly");
    let spans = receiver.spans();
    let text = receiver.text();
    // Health probes (the test polled /healthz until the service answered) are not traced.
    assert!(!text.contains("/healthz"), "{text}");

    // The API call continues the caller's trace.
    let api = named(&spans, CALLER_TRACE, "POST /v1/erasure-requests");
    assert_eq!(api.len(), 1, "{text}");
    let api = api[0];
    assert_eq!(api["kind"], "server");
    assert_eq!(api["parent_span_id"], CALLER_SPAN);
    assert_eq!(
        attr(api, "http.route"),
        Some(&json!("/v1/erasure-requests"))
    );
    assert_eq!(attr(api, "http.request.method"), Some(&json!("POST")));
    assert_eq!(attr(api, "http.response.status_code"), Some(&json!(202)));
    assert_eq!(api["resource"]["service.name"], "erasure-test");
    assert_eq!(api["resource"]["deployment.environment.name"], "test");
    let api_span = api["span_id"].as_str().unwrap();
    assert_eq!(stored, format!("00-{CALLER_TRACE}-{api_span}-01"));

    // Each step, run by a worker later, is a child of the API call.
    let steps: Vec<&Value> = spans
        .iter()
        .filter(|s| {
            s["trace_id"] == CALLER_TRACE && s["name"].as_str().unwrap().starts_with("step ")
        })
        .collect();
    let kinds: BTreeSet<&str> = steps.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["step inventory", "step delete", "step verify"]),
        "{text}"
    );
    for s in &steps {
        assert_eq!(s["parent_span_id"], api_span, "{s}");
        assert_eq!(attr(s, "erasure.request.id"), Some(&json!(id)));
        assert_eq!(attr(s, "erasure.step.outcome"), Some(&json!("done")));
        assert_eq!(attr(s, "erasure.attempt"), Some(&json!(1)));
    }
    let step_ids: BTreeSet<&str> = steps
        .iter()
        .map(|s| s["span_id"].as_str().unwrap())
        .collect();

    // Each upstream call is a child of its step: method, route template, status, retry.
    let calls: Vec<&Value> = spans
        .iter()
        .filter(|s| {
            s["trace_id"] == CALLER_TRACE
                && s["kind"] == "client"
                && attr(s, "url.template").is_some()
        })
        .filter(|s| s["name"] != "POST /token")
        .filter(|s| !s["name"].as_str().unwrap().starts_with("webhook "))
        .collect();
    assert!(calls.len() >= 3, "{text}");
    for c in &calls {
        let parent = c["parent_span_id"].as_str().unwrap();
        assert!(step_ids.contains(parent), "a call outside its step: {c}");
        let method = attr(c, "http.request.method").unwrap().as_str().unwrap();
        let template = attr(c, "url.template").unwrap().as_str().unwrap();
        assert_eq!(c["name"], format!("{method} {template}"));
        assert!(template.contains("{id}"), "{c}");
        assert!(attr(c, "http.response.status_code").is_some(), "{c}");
        assert_eq!(attr(c, "http.request.resend_count"), Some(&json!(0)));
        assert_eq!(attr(c, "server.address"), Some(&json!("127.0.0.1")));
    }
    let seen: BTreeSet<(String, i64)> = calls
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                attr(c, "http.response.status_code")
                    .unwrap()
                    .as_i64()
                    .unwrap(),
            )
        })
        .collect();
    assert!(seen.contains(&("GET /users/{id}".into(), 200)), "{seen:?}");
    assert!(
        seen.iter()
            .any(|(n, s)| n == "DELETE /users/{id}" && (200..300).contains(s)),
        "{seen:?}"
    );
    assert!(seen.contains(&("GET /users/{id}".into(), 404)), "{seen:?}");

    // The webhook delivery of its completion is a child of the API call: host only.
    let hooks = named(&spans, CALLER_TRACE, "webhook request.completed");
    assert_eq!(hooks.len(), 1, "{text}");
    let delivery = hooks[0];
    assert_eq!(delivery["parent_span_id"], api_span);
    assert_eq!(delivery["kind"], "client");
    assert_eq!(
        attr(delivery, "http.response.status_code"),
        Some(&json!(204))
    );
    assert_eq!(attr(delivery, "server.address"), Some(&json!("127.0.0.1")));
    assert_eq!(attr(delivery, "erasure.webhook.attempt"), Some(&json!(1)));

    // A request submitted without a traceparent starts its own trace, followed the same way.
    let roots: Vec<&Value> = spans
        .iter()
        .filter(|s| s["name"] == "POST /v1/erasure-requests" && s["trace_id"] != CALLER_TRACE)
        .collect();
    assert_eq!(roots.len(), 1, "{text}");
    assert_eq!(roots[0]["parent_span_id"], "");
    let own_trace = roots[0]["trace_id"].as_str().unwrap();
    assert_eq!(named(&spans, own_trace, "step verify").len(), 1, "{text}");
    assert_eq!(
        named(&spans, own_trace, "webhook request.completed").len(),
        1,
        "{text}"
    );

    // The JSON log lines of the traced work carry its trace id.
    let logs = std::fs::read_to_string(&log_path).unwrap();
    let _ = std::fs::remove_file(&log_path);
    assert!(
        logs.lines()
            .any(|l| l.contains(&format!("\"trace_id\":\"{CALLER_TRACE}\""))),
        "no log line carries the trace id:\n{logs}"
    );

    // No personal data or secret in any span.
    let mut canaries: Vec<(String, String)> = vec![
        ("a target id".into(), absent.into()),
        ("an e-mail".into(), user.email.clone()),
        ("an upstream path".into(), format!("/users/{}", user.id)),
        ("an upstream query".into(), format!("user_id={}", user.id)),
        (
            "a pseudonym".into(),
            traced_request["subject_ref"].as_str().unwrap().into(),
        ),
        (
            "a pseudonym".into(),
            own_request["subject_ref"].as_str().unwrap().into(),
        ),
        (
            "the client secret".into(),
            erasure_sim::DEFAULT_CLIENT_SECRET.into(),
        ),
        ("the webhook secret".into(), webhook_secret[6..].to_string()),
        ("the webhook URL's path".into(), "path-canary-5f1d".into()),
        ("the webhook URL's query".into(), "query-canary-77ab".into()),
        ("the signing key".into(), app.keys.signing.to_hex()),
        ("the data key".into(), app.keys.data.to_hex()),
    ];
    for c in &user.connections {
        canaries.push(("an upstream path".into(), format!("/connections/{}", c.id)));
    }
    for t in app.sim.issued_tokens() {
        canaries.push(("a bearer token".into(), t));
    }
    for key in [&app.requester, &app.admin] {
        canaries.push(("an API key".into(), key[12..].to_string()));
    }
    for (what, canary) in &canaries {
        assert!(
            !text.contains(canary.as_str()),
            "{what} is in a span: {canary}"
        );
    }
    app.stop().await;
}

/// Traces are off unless asked for: with `OTEL_SDK_DISABLED=true` beside an endpoint, the service
/// works, keeps no `traceparent` and exports nothing; a protocol it cannot speak is refused at
/// start with a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_exported_unless_asked_and_bad_settings_are_refused() {
    let receiver = Receiver::start();
    let mut app = TestApp::spawn(Options {
        worker: false,
        guard: None,
        ..Options::default()
    })
    .await;

    let refused = app
        .command("serve")
        .env("ERASURE_BIND", "127.0.0.1:0")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("OTEL_EXPORTER_OTLP_PROTOCOL=grpc is not supported")
            && said.contains("http/protobuf"),
        "{said}"
    );

    let mut env = variables(&receiver);
    env.push(("OTEL_SDK_DISABLED".into(), "true".into()));
    let (mut service, log_path) = serve(&mut app, &env).await;
    let user = app.sim.seeded().users[1].id.clone();
    let traceparent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let request = submit(&app, &user, Some(&traceparent)).await;
    let id = request["id"].as_str().unwrap();
    app.wait_state(id, "completed", 60).await;
    assert!(terminate(&mut service.0, 30));
    let _ = std::fs::remove_file(&log_path);
    let stored: Option<String> =
        sqlx::query_scalar("select traceparent from erasure_requests where id = $1::uuid")
            .bind(id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(stored, None);
    assert_eq!(receiver.text(), "", "nothing was exported");
    app.stop().await;
}

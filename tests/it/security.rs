//! Security: API key management through the real binary, limits (headers, slow clients,
//! connections per client, request rate per key), hostile upstream answers, secrets kept out of
//! logs and errors. SECURITY.md links each control to its test here.

use crate::common;

use std::process::Stdio;

use common::{Options, TestApp};
use serde_json::{Value, json};

/// Runs `erasure keys <args>` and returns (success, stdout, stderr).
fn keys_cli(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let out = app
        .command("keys")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

async fn status_with(app: &TestApp, key: &str) -> u16 {
    app.get("/v1/erasure-requests", key).await.0
}

fn list_json(app: &TestApp) -> Vec<Value> {
    let (ok, out, err) = keys_cli(app, &["list", "--json"]);
    assert!(ok, "{err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_create_list_revoke_rotate() {
    let app = TestApp::spawn(Options {
        worker: false,
        guard: None,
        ..Options::empty_sim()
    })
    .await;

    // create prints the key alone; it works at once.
    let (ok, out, err) = keys_cli(
        &app,
        &["create", "--role", "requester", "--label", "ops team"],
    );
    assert!(ok, "{err}");
    let key = out.trim().to_string();
    assert_eq!(out, format!("{key}\n"), "the key alone on stdout");
    assert!(
        key.starts_with("ek_") && key.len() == 3 + 8 + 1 + 48,
        "{key}"
    );
    assert_eq!(status_with(&app, &key).await, 200);
    let prefix = key[3..11].to_string();

    // list shows id, prefix, role, label and times, never the key nor its digest.
    let (ok, table, _) = keys_cli(&app, &["list"]);
    assert!(ok);
    assert!(table.starts_with("id\tprefix\trole\tlabel\tcreated\texpires\trevoked\n"));
    assert!(
        table.contains(&prefix) && table.contains("ops team"),
        "{table}"
    );
    let secret = &key[12..];
    assert!(!table.contains(secret));
    let listed = list_json(&app);
    assert_eq!(listed.len(), 6, "five test keys and this one");
    let mine = listed.iter().find(|k| k["prefix"] == prefix).unwrap();
    let fields: Vec<&String> = mine.as_object().unwrap().keys().collect();
    assert_eq!(
        fields,
        [
            "created_at",
            "expires_at",
            "id",
            "label",
            "owner_person",
            "prefix",
            "revoked_at",
            "role"
        ]
    );
    assert_eq!(mine["role"], "requester");
    assert!(mine["revoked_at"].is_null() && mine["expires_at"].is_null());
    for k in &listed {
        assert!(!k.to_string().contains(secret));
    }

    // Expiry on create: a key with --expires-in-days works now and shows its expiry; a key whose
    // expiry has passed is refused (401) like an unknown one.
    let (ok, out, _) = keys_cli(
        &app,
        &[
            "create",
            "--role",
            "auditor",
            "--label",
            "temp",
            "--expires-in-days",
            "1",
        ],
    );
    assert!(ok);
    let temp = out.trim().to_string();
    assert_eq!(status_with(&app, &temp).await, 200);
    let shown = list_json(&app)
        .into_iter()
        .find(|k| k["prefix"] == temp[3..11])
        .unwrap();
    assert!(shown["expires_at"].is_string(), "{shown}");
    sqlx::query("update api_keys set expires_at = now() - interval '1 second' where prefix = $1")
        .bind(&temp[3..11])
        .execute(&app.db)
        .await
        .unwrap();
    assert_eq!(status_with(&app, &temp).await, 401);
    let (ok, _, err) = keys_cli(
        &app,
        &[
            "create",
            "--role",
            "auditor",
            "--label",
            "x",
            "--expires-in-days",
            "0",
        ],
    );
    assert!(!ok && err.contains("--expires-in-days"), "{err}");

    // rotate: a new key (alone on stdout) with the same role and label; the old one is revoked
    // at once by default.
    let (ok, out, err) = keys_cli(&app, &["rotate", &prefix]);
    assert!(ok, "{err}");
    let rotated = out.trim().to_string();
    assert_eq!(out, format!("{rotated}\n"));
    assert_ne!(rotated, key);
    assert_eq!(status_with(&app, &rotated).await, 200);
    assert_eq!(status_with(&app, &key).await, 401, "old key revoked");
    let new_row = list_json(&app)
        .into_iter()
        .find(|k| k["prefix"] == rotated[3..11])
        .unwrap();
    assert_eq!(new_row["role"], "requester");
    assert_eq!(new_row["label"], "ops team");
    // Rotating a revoked key is refused.
    let (ok, _, err) = keys_cli(&app, &["rotate", &prefix]);
    assert!(!ok && err.contains("revoked"), "{err}");

    // rotate with a grace period: the old key keeps working until it expires.
    let new_id = new_row["id"].as_str().unwrap().to_string();
    let (ok, out, err) = keys_cli(&app, &["rotate", &new_id, "--grace-minutes", "30"]);
    assert!(ok, "{err}");
    let third = out.trim().to_string();
    assert_eq!(status_with(&app, &third).await, 200);
    assert_eq!(status_with(&app, &rotated).await, 200, "still in its grace");
    let old = list_json(&app)
        .into_iter()
        .find(|k| k["id"] == new_id.as_str())
        .unwrap();
    assert!(old["expires_at"].is_string() && old["revoked_at"].is_null());

    // revoke by id and by prefix; effective on the very next request (also through another
    // process: the CLI is one, the server another).
    let (ok, _, err) = keys_cli(&app, &["revoke", &new_id]);
    assert!(ok, "{err}");
    assert_eq!(status_with(&app, &rotated).await, 401);
    let (ok, _, err) = keys_cli(&app, &["revoke", &third[3..11]]);
    assert!(ok, "{err}");
    assert_eq!(status_with(&app, &third).await, 401);
    let (ok, _, err) = keys_cli(&app, &["revoke", &third[3..11]]);
    assert!(ok && err.contains("already"), "{err}");

    // An unknown key: a clear error that does not echo what was typed (it may be a key).
    let (ok, _, err) = keys_cli(&app, &["revoke", "ek_deadbeef_0123456789abcdef"]);
    assert!(!ok && err.contains("no key has that id or prefix"), "{err}");
    assert!(!err.contains("0123456789abcdef"));
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------------------

use std::time::Duration;

use erasure::config::HttpLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn limited(limits: HttpLimits) -> Options {
    Options {
        worker: false,
        guard: None,
        limits,
        ..Options::empty_sim()
    }
}

fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_string()
}

/// Reads what the server sends until it closes the connection or `wait` passes (then panics:
/// the server must not leave a client hanging).
async fn read_until_closed(stream: &mut TcpStream, wait: Duration) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(wait, stream.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the server kept the connection open: {out:?}");
    String::from_utf8_lossy(&out).into_owned()
}

/// One HTTP/1.1 request on an open connection; the status and body of its response.
async fn exchange(stream: &mut TcpStream, request: &str) -> (u16, String) {
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut chunk))
            .await
            .expect("an answer")
            .unwrap();
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if body.len() >= length {
                let status = head[9..12].parse().unwrap();
                return (status, body.to_string());
            }
        }
        if n == 0 {
            panic!("connection closed mid-answer: {text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_heads_get_431() {
    let app = TestApp::spawn(limited(HttpLimits::default())).await;
    // Many headers within actix's count, over our 16 KiB.
    let mut req = app
        .http
        .get(app.url("/v1/erasure-requests"))
        .bearer_auth(&app.auditor);
    for i in 0..40 {
        req = req.header(format!("x-filler-{i}"), "f".repeat(500));
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status().as_u16(), 431);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "headers_too_large", "{body}");
    assert!(body["message"].as_str().unwrap().contains("16384"));
    // A long query string counts too.
    let r = app
        .http
        .get(app.url(&format!(
            "/v1/erasure-requests?cursor={}",
            "9".repeat(20_000)
        )))
        .bearer_auth(&app.auditor)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 431);
    // Beyond what actix buffers at all (128 KiB) or more than 96 headers: 431 as well, and the
    // service carries on.
    refused_head(
        app.http
            .get(app.url("/healthz"))
            .header("x-huge", "h".repeat(200_000)),
    )
    .await;
    let mut req = app.http.get(app.url("/healthz"));
    for i in 0..120 {
        req = req.header(format!("x-n-{i}"), "1");
    }
    refused_head(req).await;
    assert_eq!(app.get("/v1/erasure-requests", &app.auditor).await.0, 200);
    app.stop().await;
}

/// A request head actix stops reading: answered 431, or reset. Actix answers 431 and closes; when
/// part of the head was still unread (it arrived in a later segment, or was never read), the
/// kernel resets the connection, and the client may see the reset before the answer. Never any
/// other answer.
async fn refused_head(req: reqwest::RequestBuilder) {
    match req.send().await {
        Ok(r) => assert_eq!(r.status().as_u16(), 431),
        Err(e) => {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            let mut reset = false;
            while let Some(err) = source {
                if let Some(io) = err.downcast_ref::<std::io::Error>() {
                    reset |= matches!(
                        io.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                    );
                }
                source = err.source();
            }
            assert!(reset, "neither 431 nor a reset: {e:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off() {
    let app = TestApp::spawn(limited(HttpLimits {
        request_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(1),
        ..HttpLimits::default()
    }))
    .await;

    // A head that drips in a byte every 200 ms never completes: 408 and the connection closes.
    let mut stream = TcpStream::connect(addr(&app)).await.unwrap();
    stream
        .write_all(b"GET /v1/erasure-requests HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let drip = async {
        for _ in 0..100 {
            if stream.write_all(b"X").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let mut probe = TcpStream::connect(addr(&app)).await.unwrap();
    let (_, health) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(15), drip),
        exchange(
            &mut probe,
            "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
    );
    assert_eq!(health.0, 200, "others are served meanwhile");
    let answer = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );

    // A body that drips: 408 with the JSON error, nothing stored.
    let mut stream = TcpStream::connect(addr(&app)).await.unwrap();
    let head = format!(
        "POST /v1/erasure-requests HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{",
        app.requester
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    for _ in 0..100 {
        let _ = stream.write_all(b" ").await;
        match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                got.extend_from_slice(&buf[..n]);
                if got.windows(4).any(|w| w == b"\r\n\r\n") && got.ends_with(b"}") {
                    break;
                }
            }
            Err(_) => {}
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"error\":\"body_timeout\""), "{text}");
    let n: i64 = sqlx::query_scalar("select count(*) from erasure_requests")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(n, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_client_address_are_capped() {
    let app = TestApp::spawn(limited(HttpLimits {
        max_connections_per_ip: 2,
        ..HttpLimits::default()
    }))
    .await;
    let get = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut one = TcpStream::connect(addr(&app)).await.unwrap();
    let mut two = TcpStream::connect(addr(&app)).await.unwrap();
    assert_eq!(exchange(&mut one, get).await.0, 200);
    assert_eq!(exchange(&mut two, get).await.0, 200);
    // The third open connection is refused (429, JSON) and closed.
    let mut three = TcpStream::connect(addr(&app)).await.unwrap();
    let (status, body) = exchange(&mut three, get).await;
    assert_eq!(status, 429, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "too_many_connections");
    read_until_closed(&mut three, Duration::from_secs(10)).await;
    // The first two keep working; once one closes, a new connection is served.
    assert_eq!(exchange(&mut one, get).await.0, 200);
    drop(two);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut again = TcpStream::connect(addr(&app)).await.unwrap();
        if exchange(&mut again, get).await.0 == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a closed connection was never counted out"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_has_a_request_rate() {
    // 3 at once, then one every 10 s: the test cannot refill a bucket by being slow.
    let app = TestApp::spawn(limited(HttpLimits {
        rate_per_key: 0.1,
        burst_per_key: 3.0,
        ..HttpLimits::default()
    }))
    .await;
    for _ in 0..3 {
        assert_eq!(app.get("/v1/erasure-requests", &app.auditor).await.0, 200);
    }
    let r = app
        .http
        .get(app.url("/v1/erasure-requests"))
        .bearer_auth(&app.auditor)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry_after), "{retry_after}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
    assert!(body["message"].as_str().unwrap().contains("0.1"), "{body}");
    // Writes are limited the same way, and nothing is stored.
    let (status, _) = app
        .post(
            "/v1/subjects/lookup",
            &app.auditor,
            json!({"scope": "user", "target_id": "1"}),
        )
        .await;
    assert_eq!(status, 429);
    // Another key has its own bucket; a request without a valid key is refused as before (401).
    assert_eq!(app.get("/v1/erasure-requests", &app.approver).await.0, 200);
    assert_eq!(app.get("/v1/erasure-requests", "ek_nope").await.0, 401);
    // Public routes are not keyed.
    for _ in 0..5 {
        assert_eq!(
            app.http
                .get(app.url("/healthz"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Hostile upstream answers
// ---------------------------------------------------------------------------------------------

use erasure_sim::Faults;

/// Each hostile answer on every upstream GET: the request fails after its attempts with a reason
/// that names what was wrong (never hangs, never reads more than the cap); once the upstream
/// behaves, `retry` completes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_upstream_answers_fail_cleanly_and_retry_completes() {
    let app = TestApp::spawn(Options {
        engine: common::giving_up_after(3),
        guard: None,
        ..Options::default()
    })
    .await;
    let gets = || vec!["GET".to_string()];
    let cases: Vec<(&str, Faults, &str)> = vec![
        (
            "huge_body",
            Faults {
                huge_body_rate: 1.0,
                methods: gets(),
                ..Faults::default()
            },
            "exceeds 8 MiB",
        ),
        (
            "bad_json",
            Faults {
                bad_json_rate: 1.0,
                methods: gets(),
                ..Faults::default()
            },
            "invalid JSON",
        ),
        (
            "wrong_content_type",
            Faults {
                wrong_content_type_rate: 1.0,
                methods: gets(),
                ..Faults::default()
            },
            "text/html instead of JSON",
        ),
        (
            "redirect",
            Faults {
                redirect_rate: 1.0,
                methods: gets(),
                ..Faults::default()
            },
            "redirects are not followed",
        ),
        (
            "drip",
            Faults {
                drip_rate: 1.0,
                drip_ms: 200,
                methods: gets(),
                ..Faults::default()
            },
            "timeout",
        ),
    ];
    let users = app.sim.seeded().users.clone();
    for (i, (name, faults, reason)) in cases.into_iter().enumerate() {
        let since = app.sim.calls(0).last().map_or(0, |c| c.seq);
        app.sim.set_faults(faults).unwrap();
        let id = app.submit("user", &users[i].id).await;
        let failed = app.wait_state(&id, "failed", 60).await;
        let text = failed.to_string();
        assert!(text.contains(reason), "{name}: {failed:#}");
        let calls = app.sim.calls(since);
        assert!(
            calls.iter().any(|c| c.fault.as_deref() == Some(name)),
            "{name} was injected"
        );
        app.sim.set_faults(Faults::default()).unwrap();
        // The user is still there: nothing was deleted on a hostile answer.
        assert_eq!(
            app.upstream_status(&format!("/users/{}", users[i].id))
                .await,
            200
        );
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
            app.upstream_status(&format!("/users/{}", users[i].id))
                .await,
            404
        );
    }
    app.stop().await;
}

/// A mix of every hostile answer at 30 %: every erasure still completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasures_complete_through_a_mix_of_hostile_answers() {
    let app = TestApp::spawn(Options {
        guard: None,
        ..Options::default()
    })
    .await;
    app.sim
        .set_faults(Faults {
            huge_body_rate: 0.1,
            bad_json_rate: 0.1,
            wrong_content_type_rate: 0.1,
            drip_rate: 0.05,
            drip_ms: 100,
            ..Faults::default()
        })
        .unwrap();
    app.erase_all("user", &app.user_ids(), 120).await;
    let injected = app
        .sim
        .calls(0)
        .iter()
        .filter(|c| c.fault.is_some())
        .count();
    assert!(injected > 0, "faults were injected");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------------

/// The real binary at RUST_LOG=trace (API and workers, both log formats' worth of detail): the
/// upstream client secret, the bearer tokens the simulator issued, the API keys (used, refused,
/// unknown) and the three service keys never appear in its logs nor in any error body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_out_of_trace_logs_and_error_bodies() {
    let mut app = TestApp::spawn(Options {
        worker: false,
        guard: None,
        ..Options::default()
    })
    .await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log_path = std::env::temp_dir().join(format!("erasure-secrets-{}.log", std::process::id()));
    let service = app
        .command("serve")
        .env("ERASURE_BIND", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "trace")
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let mut service = common::KillOnDrop(service);
    app.base = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if app.http.get(app.url("/healthz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Work that takes tokens upstream and keys through every path of authentication.
    let user = app.sim.seeded().users[0].id.clone();
    let id = app.submit("user", &user).await;
    app.wait_state(&id, "completed", 60).await;
    let unknown = "ek_cafebabe_5ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e7";
    let mut wrong_secret = app.requester.clone();
    wrong_secret.replace_range(12..16, "ffff");
    let mut bodies = String::new();
    for header in [
        format!("Bearer {unknown}"),
        format!("Bearer {wrong_secret}"),
        format!("Basic {}", app.admin),
        app.admin.clone(),
        format!("Bearer {}", app.approver), // valid, wrong role below
    ] {
        let r = app
            .http
            .post(app.url("/v1/erasure-requests"))
            .header("authorization", header)
            .json(&json!({"scope": "user", "target_id": "5"}))
            .send()
            .await
            .unwrap();
        assert!(matches!(r.status().as_u16(), 401 | 403));
        bodies.push_str(&r.text().await.unwrap());
    }
    let (_, page) = app.get("/v1/erasure-requests", &app.auditor).await;
    bodies.push_str(&page.to_string());
    service.0.kill().unwrap();
    let _ = service.0.wait();
    let logs = std::fs::read_to_string(&log_path).unwrap();
    let _ = std::fs::remove_file(&log_path);
    assert!(
        logs.lines().count() > 100 && logs.contains("TRACE"),
        "trace logs were written"
    );

    let tokens = app.sim.issued_tokens();
    assert!(!tokens.is_empty(), "the service took a token");
    let mut secrets: Vec<(String, String)> = vec![
        (
            "client secret".into(),
            erasure_sim::DEFAULT_CLIENT_SECRET.into(),
        ),
        (
            "pseudonym key".into(),
            app.keys.pseudonym.as_ref().unwrap().to_hex(),
        ),
        ("signing key".into(), app.keys.signing.to_hex()),
        ("data key".into(), app.keys.data.to_hex()),
        ("unknown key".into(), unknown[12..].to_string()),
        ("wrong secret".into(), wrong_secret[12..].to_string()),
    ];
    for t in tokens {
        secrets.push(("bearer token".into(), t));
    }
    for (name, key) in [
        ("requester", &app.requester),
        ("requester2", &app.requester2),
        ("approver", &app.approver),
        ("auditor", &app.auditor),
        ("admin", &app.admin),
    ] {
        // The secret part of a key (after `ek_<prefix>_`); the prefix may be named.
        secrets.push((format!("{name} key"), key[12..].to_string()));
    }
    for (name, secret) in &secrets {
        assert!(!logs.contains(secret.as_str()), "the {name} is in the logs");
        assert!(
            !bodies.contains(secret.as_str()),
            "the {name} is in a response"
        );
    }
    app.stop().await;
}

/// Outside `demo` the service refuses to start with a missing, malformed or weak key, and says
/// how to make one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_missing_or_weak_keys() {
    let app = TestApp::spawn(Options {
        worker: false,
        guard: None,
        ..Options::empty_sim()
    })
    .await;
    let weak = "00".repeat(32);
    let pattern = "0123456789abcdef".repeat(4);
    let cases: Vec<(&str, Option<&str>, &str)> = vec![
        ("ERASURE_DATA_KEY", None, "ERASURE_DATA_KEY is not set"),
        ("ERASURE_SIGNING_KEY", Some("abc"), "64 hex characters"),
        ("ERASURE_PSEUDONYM_KEY", Some(&weak), "weak key"),
        ("ERASURE_DATA_KEY", Some(&pattern), "weak key"),
    ];
    for (name, value, why) in cases {
        let mut cmd = app.command("serve");
        cmd.env("ERASURE_BIND", "127.0.0.1:0")
            .stderr(Stdio::piped())
            .stdout(Stdio::piped());
        match value {
            None => cmd.env_remove(name),
            Some(v) => cmd.env(name, v),
        };
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}={value:?} started");
        assert!(err.contains(why), "{name}: {err}");
        assert!(err.contains("openssl rand -hex 32"), "{name}: {err}");
        if let Some(v) = value {
            assert!(
                !err.contains(v) || v.len() < 8,
                "the refused key is echoed: {err}"
            );
        }
    }
    app.stop().await;
}

/// The OpenAPI document holds no key, token or secret (only the shape of a bearer key).
#[test]
fn the_openapi_document_holds_no_secret() {
    let doc = erasure::api::openapi_json();
    assert!(!doc.contains(erasure_sim::DEFAULT_CLIENT_SECRET));
    let hexes = doc
        .split(|c: char| !c.is_ascii_hexdigit())
        .filter(|w| w.len() >= 32)
        .count();
    assert_eq!(hexes, 0, "a key-like hex string in the document");
    assert!(!doc.contains("ek_"), "an API key in the document");
}

/// Certificate verification cannot be switched off: nothing in the source calls reqwest's
/// `danger_accept_invalid_*`, and only rustls is compiled in (no native TLS).
#[test]
fn tls_verification_has_no_off_switch() {
    fn scan(dir: &std::path::Path, hits: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                scan(&path, hits);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                if text.contains(concat!("danger_", "accept_invalid")) {
                    hits.push(path.display().to_string());
                }
            }
        }
    }
    let mut hits = Vec::new();
    scan(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut hits,
    );
    assert!(hits.is_empty(), "{hits:?}");
    let manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    let reqwest = manifest.lines().find(|l| l.starts_with("reqwest")).unwrap();
    assert!(
        reqwest.contains("default-features = false") && reqwest.contains("rustls-tls"),
        "{reqwest}"
    );
    assert!(!reqwest.contains("native-tls"));
}

// ---------------------------------------------------------------------------------------------
// Regressions found by schema-driven fuzzing (fuzz/run.sh)
// ---------------------------------------------------------------------------------------------

/// The statuses each operation documents, from the served OpenAPI document.
fn documented_statuses(method: &str, template: &str) -> Vec<u16> {
    let doc: Value = serde_json::from_str(&erasure::api::openapi_json()).unwrap();
    doc["paths"][template][method.to_lowercase()]["responses"]
        .as_object()
        .unwrap_or_else(|| panic!("{method} {template} is not documented"))
        .keys()
        .map(|k| k.parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzing_regressions() {
    let app = TestApp::spawn(Options {
        worker: false,
        guard: None,
        ..Options::empty_sim()
    })
    .await;
    let send = |req: reqwest::RequestBuilder| async move {
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let allow = r
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_string());
        let body: Value = r.json().await.unwrap_or(Value::Null);
        (status, allow, body)
    };

    // Undocumented statuses (ST103): errors every operation can give are in the document, and
    // the JSON error shape comes with them.
    let cases: Vec<(&str, &str, reqwest::RequestBuilder, u16)> = vec![
        (
            "GET",
            "/v1/audit/checkpoint",
            app.http.get(app.url("/v1/audit/checkpoint")),
            401,
        ),
        (
            "GET",
            "/v1/erasure-requests/{id}",
            app.http
                .get(app.url("/v1/erasure-requests/%C2%AA%C3%85"))
                .bearer_auth(&app.admin),
            422,
        ),
        (
            "POST",
            "/v1/subjects/lookup",
            app.http
                .post(app.url("/v1/subjects/lookup"))
                .bearer_auth(&app.admin),
            415,
        ),
        (
            "POST",
            "/v1/subjects/lookup",
            app.http
                .post(app.url("/v1/subjects/lookup"))
                .bearer_auth(&app.admin)
                .header("content-type", "application/json")
                .body("\u{0}"),
            400,
        ),
        (
            "POST",
            "/v1/erasure-requests",
            app.http
                .post(app.url("/v1/erasure-requests"))
                .bearer_auth(&app.admin)
                .header("content-type", "application/json")
                .body(vec![0xff]),
            400,
        ),
        (
            "POST",
            "/v1/erasure-requests/batch",
            app.http
                .post(app.url("/v1/erasure-requests/batch"))
                .bearer_auth(&app.admin)
                .header("content-type", "text/csv")
                .body(b";\xf2\x98\xbd\xa5{~\x08\xfe".to_vec()),
            400,
        ),
        (
            "POST",
            "/v1/erasure-requests/batch",
            app.http
                .post(app.url("/v1/erasure-requests/batch"))
                .bearer_auth(&app.admin)
                .header("content-type", "text/csv")
                .body(";\u{f8b65}\u{683b4}\u{bf}\u{eb}{~\u{8}\u{fe}w9\n1\n"),
            422,
        ),
        (
            "POST",
            "/v1/restorations",
            app.http
                .post(app.url("/v1/restorations"))
                .bearer_auth(&app.admin),
            415,
        ),
        (
            "POST",
            "/v1/erasure-requests/{id}/{action}",
            app.http
                .post(app.url(&format!(
                    "/v1/erasure-requests/{}/approve",
                    uuid::Uuid::new_v4()
                )))
                .json(&json!({})),
            401,
        ),
    ];
    for (method, template, req, expected) in cases {
        let (status, _, body) = send(req).await;
        assert_eq!(status, expected, "{method} {template}: {body}");
        assert!(
            body["error"].is_string() && body["message"].is_string(),
            "{body}"
        );
        assert!(
            documented_statuses(method, template).contains(&status),
            "{method} {template} does not document {status}"
        );
    }

    // Undeclared methods (ST204, ST205): 405 with the route's documented methods in Allow.
    for (method, path, allow) in [
        ("TRACE", "/healthz", "GET"),
        ("PUT", "/metrics", "GET"),
        ("OPTIONS", "/v1/erasure-requests/batch", "POST"),
        ("GET", "/v1/erasure-requests/batch", "POST"),
        ("DELETE", "/v1/erasure-requests", "GET, POST"),
        (
            "OPTIONS",
            "/v1/erasure-requests/0b8e7c3e-4d9f-4f4e-9a8e-111111111111/receipt",
            "GET",
        ),
    ] {
        let req = app
            .http
            .request(method.parse().unwrap(), app.url(path))
            .bearer_auth(&app.admin);
        let (status, got, body) = send(req).await;
        assert_eq!(status, 405, "{method} {path}: {body}");
        assert_eq!(got.as_deref(), Some(allow), "{method} {path}");
        assert_eq!(body["error"], "method_not_allowed");
    }
    let (status, allow, _) = send(app.http.get(app.url("/v2/nothing"))).await;
    assert_eq!((status, allow), (404, None));
    app.stop().await;
}

/// Found by fuzzing (seed 3): a restoration asked for while another of the same connection was
/// ending answered 500 (the open one it collided with was gone when it was looked up). Many at
/// once, while the guard ends them (the connection does not exist): only 202 or 409. The API runs
/// without workers, as `serve --no-worker` does, so it accepts them without asking the upstream
/// and a separate worker's guard ends them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_restorations_of_one_connection_never_fail() {
    let app = TestApp::spawn(Options {
        worker: false,
        ..Options::empty_sim()
    })
    .await;
    let worker = app
        .extra_process(common::fast_engine(), Some(common::fast_guard()))
        .await;
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..40 {
        let calls = (0..8).map(|_| {
            app.post(
                "/v1/restorations",
                &app.approver,
                json!({"connection_id": "2001", "reason": "fuzz regression"}),
            )
        });
        for (status, body) in futures::future::join_all(calls).await {
            assert!(matches!(status, 202 | 409), "{status}: {body}");
            *statuses.entry(status).or_insert(0) += 1;
        }
    }
    assert!(statuses.contains_key(&202), "{statuses:?}");
    worker.stop().await.unwrap();
    app.stop().await;
}

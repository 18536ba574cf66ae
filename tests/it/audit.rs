//! The audit log: append-only, sequenced into a signed Merkle tree, receipts and exports that
//! verify offline, and no personal data anywhere.

use crate::common;

use std::time::Duration;

use common::{Options, TestApp, fast_engine};
use erasure::audit::{merkle, verify};
use erasure_sim::{Faults, SimConfig};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_refuses_to_change_the_audit_log() {
    let app = TestApp::spawn(Options {
        worker: false,
        ..Options::default()
    })
    .await;
    app.submit("user", "4242").await;
    let (status, _) = app.get("/v1/audit/checkpoint", &app.auditor).await;
    assert_eq!(status, 200);
    for table in ["audit_entries", "audit_leaves", "audit_checkpoints"] {
        for sql in [
            format!("update {table} set created_at = created_at"),
            format!("delete from {table}"),
            format!("truncate {table} cascade"),
        ] {
            let sql = sql.replace("set created_at = created_at", "set ctid = ctid");
            let err = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
                .execute(&app.db)
                .await;
            let err = err.expect_err(&format!("{sql} must be refused"));
            assert!(
                err.to_string().contains("append-only") || err.to_string().contains("cannot"),
                "{sql}: {err}"
            );
        }
    }
    // The sequencer's one row: without it nothing more is sequenced, so it is never deleted
    // (its horizon moves by UPDATE, the one change it takes).
    for sql in ["delete from audit_sequencer", "truncate audit_sequencer"] {
        let err = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&app.db)
            .await
            .expect_err(sql);
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    let n: i64 = sqlx::query_scalar("select count(*) from audit_entries")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(n >= 1);
    app.submit("user", "4243").await;
    let (status, _) = app.get("/v1/audit/checkpoint", &app.auditor).await;
    assert_eq!(status, 200, "sequencing goes on");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_refuses_to_delete_an_erasure_request() {
    let app = TestApp::spawn(Options {
        worker: false,
        ..Options::default()
    })
    .await;
    let id = app.submit("user", "4242").await;
    for sql in [
        "delete from erasure_requests",
        "truncate erasure_requests cascade",
    ] {
        let err = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&app.db)
            .await
            .expect_err(sql);
        assert!(err.to_string().contains("never deleted"), "{sql}: {err}");
    }
    let (status, body) = app
        .get(&format!("/v1/erasure-requests/{id}"), &app.auditor)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["steps"][0]["kind"], "inventory", "{body}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_erasure_has_a_receipt_that_verifies_offline() {
    let app = TestApp::spawn(Options::default()).await;
    let account = app.sim.seeded().users[0].connections[0].channels[0].accounts[0].clone();
    let id = app.submit("account", &account).await;
    // Not completed yet, or already: either way a receipt only exists once completed.
    let other = app.submit("user", "31337").await;
    app.wait_state(&id, "completed", 20).await;
    app.wait_state(&other, "completed", 20).await;

    let (status, receipt) = app
        .get_text(&format!("/v1/erasure-requests/{id}/receipt"), &app.auditor)
        .await;
    assert_eq!(status, 200, "{receipt}");
    let (_, cp) = app.get("/v1/audit/checkpoint", &app.auditor).await;
    let vkey = cp["public_key"].as_str().unwrap().to_string();
    let summary = verify::verify_receipt(&receipt, &vkey).expect("the receipt verifies");
    let parsed: Value = serde_json::from_str(&receipt).unwrap();
    let events: Vec<String> = parsed["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(e["leaf"].as_str().unwrap()).unwrap()["event"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for needed in [
        "received",
        "inventoried",
        "deleted",
        "verified_absent",
        "cascade_observed",
        "completed",
    ] {
        assert!(events.iter().any(|e| e == needed), "{needed} in {events:?}");
    }
    assert!(
        !common::mentions(&receipt, &account),
        "no upstream id in the receipt"
    );
    for (k, e) in parsed["entries"].as_array().unwrap().iter().enumerate() {
        let leaf: Value = serde_json::from_str(e["leaf"].as_str().unwrap()).unwrap();
        assert_eq!(
            leaf["request_seq"], k,
            "each leaf says its place among its request's entries"
        );
    }
    println!("{summary:?}");

    // The same receipt fails with another key, and when one entry is removed.
    let other_key =
        erasure::audit::checkpoint::Signer::new("erasure-audit", &[7u8; 32]).verifier_key();
    assert!(verify::verify_receipt(&receipt, &other_key).is_err());
    let mut cut = parsed.clone();
    cut["entries"].as_array_mut().unwrap().remove(1);
    assert!(verify::verify_receipt(&cut.to_string(), &vkey).is_err());
    // Even with the (unsigned) count lowered to match, the hole in request_seq shows.
    cut["entry_count_for_request"] = json!(cut["entries"].as_array().unwrap().len());
    let err = verify::verify_receipt(&cut.to_string(), &vkey).unwrap_err();
    assert!(err.to_string().contains("request_seq"), "{err}");

    // The CLI says the same with only the public key.
    let dir = std::env::temp_dir().join(format!("erasure-receipt-{id}"));
    std::fs::write(&dir, &receipt).unwrap();
    let verify_cli = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_erasure"))
            .args([
                "audit",
                "verify",
                "--receipt",
                dir.to_str().unwrap(),
                "--public-key",
                &vkey,
            ])
            .output()
            .unwrap()
    };
    let ok = verify_cli();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    std::fs::write(&dir, receipt.replacen("received", "reCeived", 1)).unwrap();
    let bad = verify_cli();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("FAILED"));
    let _ = std::fs::remove_file(&dir);

    // A request that is not completed has no receipt.
    let queued = app.post("/v1/erasure-requests", &app.requester, json!({"scope": "user", "target_id": "99", "not_before": chrono::Utc::now() + chrono::Duration::days(30)})).await;
    let (status, body) = app
        .get(
            &format!(
                "/v1/erasure-requests/{}/receipt",
                queued.1["id"].as_str().unwrap()
            ),
            &app.auditor,
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "receipt_not_available");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_and_consistency_proofs_verify() {
    let app = TestApp::spawn(Options::default()).await;
    let a = app.submit("user", &app.sim.seeded().users[0].id).await;
    app.wait_state(&a, "completed", 20).await;
    let (_, first) = app.get("/v1/audit/checkpoint", &app.auditor).await;
    let b = app.submit("user", &app.sim.seeded().users[1].id).await;
    app.wait_state(&b, "completed", 20).await;
    let (_, second) = app.get("/v1/audit/checkpoint", &app.auditor).await;
    let (m, n) = (
        first["size"].as_u64().unwrap(),
        second["size"].as_u64().unwrap(),
    );
    assert!(n > m, "the log grew: {m} -> {n}");
    let vkey = second["public_key"].as_str().unwrap();

    let hashes = common::assert_log_extends(&app, &first, &second).await;
    let (r1, r2) = (
        common::hash_of(&first["root_hash"]),
        common::hash_of(&second["root_hash"]),
    );
    assert!(merkle::verify_consistency(m, n, &r2, &r1, &hashes).is_err());

    let (status, export) = app
        .get_text("/v1/audit/export?format=jsonl", &app.auditor)
        .await;
    assert_eq!(status, 200);
    verify::verify_export(&export, vkey).expect("the full export verifies");
    let lines: Vec<&str> = export.lines().collect();
    let dropped: String = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3)
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    assert!(
        verify::verify_export(&dropped, vkey).is_err(),
        "a removed line is caught"
    );

    let (status, csv) = app
        .get_text("/v1/audit/export?format=csv", &app.auditor)
        .await;
    assert_eq!(status, 200);
    assert!(csv.starts_with("leaf_index,at,request_id,subject_ref,actor,event,data,leaf_sha256\n"));
    assert_eq!(
        csv.lines().count(),
        lines.len(),
        "one CSV row per JSONL leaf line (+ header each)"
    );

    let (status, body) = app.get("/v1/audit/export?format=xml", &app.auditor).await;
    assert_eq!(status, 422, "{body}");
    let (status, _) = app.get("/v1/audit/export", &app.requester).await;
    assert_eq!(status, 403);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_answers_from_the_pseudonym() {
    let app = TestApp::spawn(Options::default()).await;
    let user = app.sim.seeded().users[2].id.clone();
    let id = app.submit("user", &user).await;
    app.wait_state(&id, "completed", 20).await;
    let (status, found) = app
        .post(
            "/v1/subjects/lookup",
            &app.auditor,
            json!({"scope": "user", "target_id": user}),
        )
        .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["erased"], true);
    assert_eq!(found["requests"][0]["id"], id.as_str());
    assert_eq!(
        found["requests"][0]["receipt"],
        format!("/v1/erasure-requests/{id}/receipt")
    );
    let (_, other) = app
        .post(
            "/v1/subjects/lookup",
            &app.auditor,
            json!({"scope": "account", "target_id": user}),
        )
        .await;
    assert_eq!(other["erased"], false);
    assert_eq!(other["requests"].as_array().unwrap().len(), 0);
    let (status, bad) = app
        .post(
            "/v1/subjects/lookup",
            &app.auditor,
            json!({"scope": "user", "target_id": "jean@example.fr"}),
        )
        .await;
    assert_eq!(status, 422);
    assert!(!bad.to_string().contains("jean@"));
    app.stop().await;
}

/// Plants canaries (long ids nobody else uses, the simulator's fake e-mails, names and IBANs),
/// runs erasures of every scope and outcome, then searches a full dump of the database, the
/// logs of a service run at RUST_LOG=trace and the spans it exported to an OTLP receiver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_personal_data_in_the_database_dump_or_the_logs() {
    let mut app = TestApp::spawn(Options {
        worker: false,
        sim: SimConfig {
            users: 6,
            ..SimConfig::default()
        },
        ..Options::default()
    })
    .await;
    // The API and the workers both run in the real binary, whose logs are captured.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log_path = std::env::temp_dir().join(format!("erasure-canary-{}.log", std::process::id()));
    let log_file = std::fs::File::create(&log_path).unwrap();
    let receiver = common::otel::Receiver::start();
    let service = app
        .command("serve")
        .envs(common::otel::variables(&receiver))
        .args(["--log-format", "json"])
        .env("ERASURE_BIND", format!("127.0.0.1:{port}"))
        .env("ERASURE_MAX_ATTEMPTS", "2")
        .env("ERASURE_RETRY_CAP_SECS", "0.2")
        .env("ERASURE_CHECKPOINT_SECS", "0.5")
        .env("RUST_LOG", "trace")
        .stderr(log_file)
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
    let users = app.sim.seeded().users.clone();
    // Personal data the upstream holds about them, read as the engine reads it.
    let mut canaries: Vec<String> = vec![
        "918273645546372819".into(),
        "827364554637281911".into(),
        "736455463728191122".into(),
    ];
    for u in &users {
        canaries.push(u.email.clone());
    }
    let token: Value = app.http.post(format!("{}/token", app.sim.auth_url()))
        .json(&json!({"provider": "linxoConnect", "client_id": erasure_sim::DEFAULT_CLIENT_ID,
            "client_secret": erasure_sim::DEFAULT_CLIENT_SECRET, "grant_type": "client_credentials", "scope": "openid"}))
        .send().await.unwrap().json().await.unwrap();
    let bearer = token["access_token"].as_str().unwrap();
    for u in &users {
        let user: Value = app
            .http
            .get(format!("{}/users/{}", app.sim.api_url(), u.id))
            .bearer_auth(bearer)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for field in ["first_name", "last_name"] {
            if let Some(v) = user[field].as_str().filter(|v| v.len() >= 5) {
                canaries.push(v.to_string());
            }
        }
        for account in u
            .connections
            .iter()
            .flat_map(|c| &c.channels)
            .flat_map(|c| &c.accounts)
        {
            let acc: Value = app
                .http
                .get(format!("{}/accounts/{account}", app.sim.api_url()))
                .bearer_auth(bearer)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            for field in ["iban", "account_number", "reference"] {
                if let Some(v) = acc[field].as_str().filter(|v| v.len() >= 8) {
                    canaries.push(v.to_string());
                }
            }
        }
    }
    // Every scope and outcome: completed, already erased, failed, cancelled, held.
    let mut ids = vec![
        app.submit("user", &users[0].id).await,
        app.submit("connection", &users[1].connections[0].id).await,
        app.submit("account", &users[2].connections[0].channels[0].accounts[0])
            .await,
        app.submit("user", &canaries[0]).await,
    ];
    // Held and cancelled before they start (not_before keeps them queued).
    let later = chrono::Utc::now() + chrono::Duration::days(30);
    let submit_later = |target: String| {
        let app = &app;
        async move {
            let (s, body) = app
                .post(
                    "/v1/erasure-requests",
                    &app.requester,
                    json!({"scope": "account", "target_id": target, "not_before": later}),
                )
                .await;
            assert_eq!(s, 202, "{body}");
            body["id"].as_str().unwrap().to_string()
        }
    };
    let held = submit_later(canaries[1].clone()).await;
    let (s, _) = app
        .post(
            &format!("/v1/erasure-requests/{held}/hold"),
            &app.approver,
            json!({"legal_basis": "art17_3_e", "note": "litigation"}),
        )
        .await;
    assert_eq!(s, 200);
    let cancelled = submit_later(canaries[2].clone()).await;
    let (s, _) = app
        .post(
            &format!("/v1/erasure-requests/{cancelled}/cancel"),
            &app.requester,
            json!({}),
        )
        .await;
    assert_eq!(s, 200);
    for id in &ids {
        app.wait_state(id, "completed", 30).await;
    }
    // A resynchronisation lists the erased account again (the guard re-erases it), and an
    // approver restores another connection on purpose: both read account lists full of personal
    // data from the event stream.
    let (resync, _) = app
        .upstream(
            reqwest::Method::POST,
            &format!(
                "/connections/{}/synchronize?type=LIST_ACCOUNTS",
                users[2].connections[0].id
            ),
        )
        .await;
    let restored = users[5].connections[0].id.clone();
    let (s, restoration) = app
        .post(
            "/v1/restorations",
            &app.approver,
            json!({"connection_id": restored, "reason": "audit of the canary test"}),
        )
        .await;
    assert_eq!(s, 202, "{restoration}");
    let restoration = format!("/v1/restorations/{}", restoration["id"].as_str().unwrap());
    for _ in 0..200 {
        let (_, r) = app.get(&restoration, &app.auditor).await;
        if r["state"] == "completed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        app.get(&restoration, &app.auditor).await.1["state"],
        "completed"
    );
    if resync == 204 {
        // The channel kept other accounts: the erased one comes back and is erased again.
        for _ in 0..200 {
            let (_, r) = app
                .get(&format!("/v1/erasure-requests/{}", ids[2]), &app.auditor)
                .await;
            if r["resurrections"] == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let re: String = sqlx::query_scalar(
            "select id::text from erasure_requests where resurrection_of = $1::uuid",
        )
        .bind(&ids[2])
        .fetch_one(&app.db)
        .await
        .unwrap();
        app.wait_state(&re, "completed", 30).await;
    }
    app.sim
        .set_faults(Faults {
            error_rate: 1.0,
            error_statuses: vec![503],
            ..Faults::default()
        })
        .unwrap();
    let failing = app.submit("user", &users[3].id).await;
    app.wait_state(&failing, "failed", 30).await;
    app.sim.set_faults(Faults::default()).unwrap();
    ids.push(failing);
    let (s, _) = app
        .post(
            "/v1/subjects/lookup",
            &app.auditor,
            json!({"scope": "user", "target_id": users[4].id}),
        )
        .await;
    assert_eq!(s, 200);
    for id in &ids {
        let (s, receipt) = app
            .get_text(&format!("/v1/erasure-requests/{id}/receipt"), &app.auditor)
            .await;
        assert!(s == 200 || s == 409, "{receipt}");
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    service.0.kill().unwrap();
    service.0.wait().unwrap();

    let dump = std::process::Command::new("pg_dump")
        .arg("--data-only")
        .arg(&app.db_url)
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump = String::from_utf8_lossy(&dump.stdout).to_string();
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(logs.len() > 1000, "trace logs were written");
    let spans = receiver.text();
    assert!(
        spans.contains("step verify") && spans.contains("GET /users/{id}"),
        "spans were exported"
    );
    assert!(dump.contains("k1:"), "the dump holds pseudonyms");
    let mut paths_with_ids = vec![format!("/connections/{restored}")];
    for u in &users[..4] {
        paths_with_ids.push(format!("/users/{}", u.id));
        for c in &u.connections {
            paths_with_ids.push(format!("/connections/{}", c.id));
            for a in c.channels.iter().flat_map(|ch| &ch.accounts) {
                paths_with_ids.push(format!("/accounts/{a}"));
            }
        }
    }
    for canary in canaries.iter().chain(&paths_with_ids) {
        assert!(
            !dump.contains(canary.as_str()),
            "the database dump holds {canary}"
        );
        assert!(!logs.contains(canary.as_str()), "the logs hold {canary}");
        assert!(!spans.contains(canary.as_str()), "a span holds {canary}");
    }
    // The held request still keeps its id, but only sealed.
    let sealed: Option<Vec<u8>> =
        sqlx::query_scalar("select target_sealed from erasure_requests where id = $1::uuid")
            .bind(&held)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert!(sealed.is_some());
    let _ = std::fs::remove_file(&log_path);
    println!(
        "searched {} canaries and {} paths in {} bytes of dump and {} bytes of logs (resync: {resync})",
        canaries.len(),
        paths_with_ids.len(),
        dump.len(),
        logs.len()
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_routes_need_the_auditor_role() {
    let app = TestApp::spawn(Options {
        worker: false,
        engine: fast_engine(),
        ..Options::default()
    })
    .await;
    for path in [
        "/v1/audit/checkpoint",
        "/v1/audit/entries",
        "/v1/audit/export",
        "/v1/audit/consistency?from=1",
    ] {
        let (s, _) = app.get(path, &app.requester).await;
        assert_eq!(s, 403, "{path}");
        let r = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path}");
    }
    app.stop().await;
}

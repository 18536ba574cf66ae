//! The audit log under deployment changes: the service running as its own application role
//! (privileges refuse changes to the audit tables, besides the triggers), and a rotation of the
//! pseudonym key (old versions stay usable for look-ups and duplicate checks).

use crate::common;

use std::time::Duration;

use common::{Options, TestApp};
use erasure::config::ApprovalPolicy;
use erasure::secrets::{Key32, Keys};
use erasure::service::{self, ServiceConfig};
use serde_json::{Value, json};

/// The audit tables, each with a column to "update".
const AUDIT_TABLES: [(&str, &str); 4] = [
    ("audit_entries", "event"),
    ("audit_leaves", "leaf"),
    ("audit_checkpoints", "note"),
    ("audit_tree", "hash"),
];

/// Restarts the app's service (API and sequencer, no worker) with another database role or other
/// keys.
async fn restart(app: &mut TestApp, database_url: String, keys: Keys) {
    if let Some(r) = app.running.take() {
        r.stop().await.unwrap();
    }
    let running = service::start(ServiceConfig {
        database_url,
        direct_database_url: None,
        bind: Some("127.0.0.1:0".into()),
        metrics_bind: None,
        keys,
        upstream: None,
        engine: common::fast_engine(),
        guard: None,
        approval: ApprovalPolicy::None,
        db_pool: 20,
        http_workers: 2,
        checkpoint_every: Duration::from_millis(500),
        at_risk_days: erasure::config::DEFAULT_AT_RISK_DAYS,
        webhooks: Default::default(),
        retention: common::fast_retention(),
        console: Default::default(),
    })
    .await
    .unwrap();
    app.base = format!("http://{}", running.addr.unwrap());
    app.running = Some(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_application_role_may_append_to_the_audit_log_but_not_change_it() {
    let mut app = TestApp::spawn(Options::no_worker()).await;
    let role = format!("erasure_t_app_{}", std::process::id());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "drop role if exists {role}; create role {role} login in role erasure_app"
    )))
    .execute(&app.db)
    .await
    .unwrap();
    let may = |table: &'static str, privilege: &'static str| {
        let (db, role) = (app.db.clone(), role.clone());
        async move {
            sqlx::query_scalar::<_, bool>("select has_table_privilege($1, $2, $3)")
                .bind(role)
                .bind(table)
                .bind(privilege)
                .fetch_one(&db)
                .await
                .unwrap()
        }
    };
    for (table, _) in AUDIT_TABLES {
        assert!(
            may(table, "SELECT").await && may(table, "INSERT").await,
            "{table}"
        );
        for privilege in ["UPDATE", "DELETE", "TRUNCATE"] {
            assert!(!may(table, privilege).await, "{privilege} on {table}");
        }
    }
    assert!(may("erasure_requests", "UPDATE").await);
    // Requests are closed (an update), never deleted.
    assert!(!may("erasure_requests", "DELETE").await && !may("erasure_requests", "TRUNCATE").await);
    assert!(!may("audit_sequencer", "DELETE").await);
    // Keys are revoked (an update), never deleted.
    assert!(may("api_keys", "UPDATE").await);
    assert!(!may("api_keys", "DELETE").await && !may("api_keys", "TRUNCATE").await);

    // The whole service runs as that role: intake appends entries, the sequencer signs.
    let url = app.db_url.replacen("postgres@", &format!("{role}@"), 1);
    let keys = app.keys.clone();
    restart(&mut app, url.clone(), keys).await;
    let id = app.submit("user", "4242").await;
    let (status, cp) = app.get("/v1/audit/checkpoint", &app.auditor).await;
    assert_eq!(status, 200, "{cp}");
    assert!(cp["size"].as_u64().unwrap() >= 1);
    let (status, body) = app
        .post(
            &format!("/v1/erasure-requests/{id}/cancel"),
            &app.requester,
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let as_app = sqlx::PgPool::connect(&url).await.unwrap();
    for (table, column) in AUDIT_TABLES {
        for sql in [
            format!("update {table} set {column} = {column}"),
            format!("delete from {table}"),
            format!("truncate {table}"),
        ] {
            let err = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
                .execute(&as_app)
                .await
                .expect_err(&sql);
            assert!(
                err.to_string().contains("permission denied"),
                "{sql}: {err}"
            );
        }
    }
    as_app.close().await;
    app.db.close().await;
    app.stop().await;
    // The role owns nothing: dropping it needs no clean-up of the test database.
    let admin = sqlx::PgPool::connect(common::ADMIN_URL).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("drop role {role}")))
        .execute(&admin)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_key_rotation_requests_recorded_under_the_old_key_are_found() {
    let mut app = TestApp::spawn(Options::default()).await;
    let users: Vec<String> = app
        .sim
        .seeded()
        .users
        .iter()
        .map(|u| u.id.clone())
        .collect();
    // Under key version 1: one erasure completed, one open (not before next month), one
    // submitted with an Idempotency-Key.
    let erased = app.submit("user", &users[0]).await;
    app.wait_state(&erased, "completed", 20).await;
    let later = (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339();
    let (status, open) = app
        .post(
            "/v1/erasure-requests",
            &app.requester,
            json!({"scope": "user", "target_id": users[1], "not_before": later}),
        )
        .await;
    assert_eq!(status, 202, "{open}");
    assert!(open["subject_ref"].as_str().unwrap().starts_with("k1:"));
    let idempotent_body = json!({"scope": "user", "target_id": users[2], "not_before": later});
    let post_idempotent = |app: &TestApp| {
        app.http
            .post(app.url("/v1/erasure-requests"))
            .bearer_auth(&app.requester)
            .header("Idempotency-Key", "ticket-77")
            .json(&idempotent_body)
            .send()
    };
    let first: Value = post_idempotent(&app).await.unwrap().json().await.unwrap();

    // Restart with version 2 current and version 1 kept for look-ups.
    let old_key = app.keys.pseudonym.clone().unwrap();
    let new_key = Key32::random();
    let rotated = Keys {
        pseudonym: Some(new_key.clone()),
        pseudonym_version: 2,
        pseudonym_old: vec![(1, old_key)],
        ..app.keys.clone()
    };
    let url = app.db_url.clone();
    restart(&mut app, url.clone(), rotated.clone()).await;

    let (status, found) = app
        .post(
            "/v1/subjects/lookup",
            &app.auditor,
            json!({"scope": "user", "target_id": users[0]}),
        )
        .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["erased"], true, "{found}");
    assert_eq!(found["requests"][0]["id"], erased.as_str());
    assert!(found["subject_ref"].as_str().unwrap().starts_with("k2:"));

    let (status, dup) = app
        .post(
            "/v1/erasure-requests",
            &app.requester,
            json!({"scope": "user", "target_id": users[1]}),
        )
        .await;
    assert_eq!(
        status, 409,
        "the open request under k1 is a duplicate: {dup}"
    );
    assert_eq!(dup["error"], "duplicate_request");
    assert_eq!(dup["details"]["existing_id"], open["id"], "{dup}");

    let replay = post_idempotent(&app).await.unwrap();
    assert_eq!(replay.status().as_u16(), 202);
    assert_eq!(replay.headers()["Idempotent-Replayed"], "true");
    let replay: Value = replay.json().await.unwrap();
    assert_eq!(replay["id"], first["id"]);

    let (status, fresh) = app
        .post(
            "/v1/erasure-requests",
            &app.requester,
            json!({"scope": "user", "target_id": users[3]}),
        )
        .await;
    assert_eq!(status, 202, "{fresh}");
    assert!(fresh["subject_ref"].as_str().unwrap().starts_with("k2:"));

    // The keys were migrated into pseudonym epochs: without the old key configured the look-up
    // still finds it (only retention destroys an epoch's key: tests/it/retention.rs).
    let forgotten = Keys {
        pseudonym_old: vec![],
        ..rotated
    };
    restart(&mut app, url, forgotten).await;
    let (_, kept) = app
        .post(
            "/v1/subjects/lookup",
            &app.auditor,
            json!({"scope": "user", "target_id": users[0]}),
        )
        .await;
    assert_eq!(kept["erased"], true, "{kept}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_key_rotation_batches_report_requests_open_under_the_old_key_as_duplicates() {
    let mut app = TestApp::spawn(Options::no_worker()).await;
    // Open under key version 1 (no worker: they stay queued).
    let open_user = app.submit("user", "7001").await;
    let open_account = app.submit("account", "7002").await;

    let rotated = Keys {
        pseudonym: Some(Key32::random()),
        pseudonym_version: 2,
        pseudonym_old: vec![(1, app.keys.pseudonym.clone().unwrap())],
        ..app.keys.clone()
    };
    let url = app.db_url.clone();
    restart(&mut app, url, rotated).await;

    let (status, r) = app
        .post(
            "/v1/erasure-requests/batch",
            &app.requester,
            json!([
                {"scope": "user", "target_id": "7001"},     // 0 open under k1
                {"scope": "user", "target_id": "7003"},     // 1 new
                {"scope": "account", "target_id": " 7002 "}, // 2 open under k1
                {"scope": "user", "target_id": "7001"},     // 3 open under k1 again
                {"scope": "connection", "target_id": "7001"} // 4 another scope: new
            ]),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    let items = r["items"].as_array().unwrap();
    let got: Vec<(&str, &str)> = items
        .iter()
        .map(|i| (i["status"].as_str().unwrap(), i["id"].as_str().unwrap()))
        .collect();
    assert_eq!(got[0], ("duplicate", open_user.as_str()), "{r}");
    assert_eq!(got[1].0, "created", "{r}");
    assert_eq!(got[2], ("duplicate", open_account.as_str()), "{r}");
    assert_eq!(got[3], ("duplicate", open_user.as_str()), "{r}");
    assert_eq!(got[4].0, "created", "{r}");
    assert_eq!(
        (&r["created"], &r["duplicates"], &r["invalid"]),
        (&json!(2), &json!(3), &json!(0)),
        "{r}"
    );

    let csv = app
        .http
        .post(app.url("/v1/erasure-requests/batch"))
        .bearer_auth(&app.requester)
        .header("content-type", "text/csv")
        .body("scope,target_id\nuser,7001\nuser,7005\naccount,7002\n")
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status().as_u16(), 200);
    let csv: Value = csv.json().await.unwrap();
    let got: Vec<(u64, &str, &str)> = csv["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["line"].as_u64().unwrap(),
                i["status"].as_str().unwrap(),
                i["id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(got[0], (2, "duplicate", open_user.as_str()), "{csv}");
    assert_eq!((got[1].0, got[1].1), (3, "created"), "{csv}");
    assert_eq!(got[2], (4, "duplicate", open_account.as_str()), "{csv}");

    // Nothing was inserted for the duplicates: one open request per target, across versions.
    let by_version: Vec<(String, i64)> = sqlx::query_as(
        "select left(subject_ref, 3), count(*) from erasure_requests \
         where state = 'queued' group by 1 order by 1",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(by_version, [("k1:".to_string(), 2), ("k2:".to_string(), 3)]);
    app.stop().await;
}

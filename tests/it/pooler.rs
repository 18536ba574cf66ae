//! The service behind a real PgBouncer in transaction mode (Debian's 1.18, `common::pooler`):
//! `DATABASE_URL` at the pooler, `ERASURE_DATABASE_DIRECT_URL` at the server.

use crate::common;
use crate::guard::wait_re_erasures;
use crate::webhooks::{Receiver, start_receiver, subscribe, wait_delivered};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use common::pooler::PgBouncer;
use common::{Options, TestApp, fast_engine, fast_guard, fresh_database};
use erasure::audit::verify;
use erasure::store;
use erasure_sim::SeedRequest;
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use std::str::FromStr;

/// Why the pooled URL needs the vendored change: sqlx's named statements meet on the pooler's one
/// server connection; the pooled connections of `store::connect_pooled` keep nothing between
/// their sequences, so any number of clients share it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_statements_collide_behind_the_pooler_and_the_services_do_not() {
    let bouncer = PgBouncer::start(1);
    let url = bouncer.url(&fresh_database().await);
    let sql = "select $1::int + 1";
    // sqlx as it comes (without the startup parameter PgBouncer refuses).
    let plain = PgConnectOptions::from_str(&url)
        .unwrap()
        .extra_float_digits(None);
    let mut a = PgConnection::connect_with(&plain).await.unwrap();
    let mut b = PgConnection::connect_with(&plain).await.unwrap();
    let one: i32 = sqlx::query_scalar(sql)
        .bind(1)
        .fetch_one(&mut a)
        .await
        .unwrap();
    assert_eq!(one, 2);
    let e = sqlx::query_scalar::<_, i32>(sql)
        .bind(1)
        .fetch_one(&mut b)
        .await
        .expect_err("the second client's sqlx_s_1 meets the first's on the one server connection");
    assert!(e.to_string().contains("already exists"), "{e}");
    drop((a, b));

    let pool = store::connect_pooled(&url, 8).await.unwrap();
    let answers: Vec<sqlx::Result<(i32, Option<String>)>> =
        futures::future::join_all((0..200).map(|n| {
            let pool = pool.clone();
            async move {
                // A transaction too: several statements on one server connection, then given back.
                let mut tx = pool.begin().await?;
                let x: i32 = sqlx::query_scalar(sql).bind(n).fetch_one(&mut *tx).await?;
                let y: Option<String> = sqlx::query_scalar("select $1::text where $2")
                    .bind("row")
                    .bind(n % 2 == 0)
                    .fetch_optional(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok((x, y))
            }
        }))
        .await;
    for (n, answer) in answers.into_iter().enumerate() {
        let (x, y) = answer.unwrap();
        assert_eq!(x, n as i32 + 1);
        assert_eq!(y.is_some(), n % 2 == 0);
    }
    // A statement that fails leaves the connection usable.
    let e = sqlx::query("select * from no_such_table")
        .execute(&pool)
        .await
        .expect_err("no such table");
    assert!(e.to_string().contains("no_such_table"), "{e}");
    let again: i32 = sqlx::query_scalar(sql)
        .bind(41)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(again, 42);
    pool.close().await;
}

/// Server connections to this test's database, sampled until `stop`: the highest count seen.
fn sample_connections(db: sqlx::PgPool, stop: Arc<AtomicBool>) -> Arc<AtomicI64> {
    let peak = Arc::new(AtomicI64::new(0));
    let seen = peak.clone();
    tokio::spawn(async move {
        while !stop.load(Ordering::SeqCst) {
            if let Ok(n) = sqlx::query_scalar::<_, i64>(
                "select count(*) from pg_stat_activity where datname = current_database()",
            )
            .fetch_one(&db)
            .await
            {
                seen.fetch_max(n, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    });
    peak
}

/// Eight processes (one with the API) through a pooler of 20 server connections: intake one by
/// one and in a batch, erasures of users with several connections and accounts, the guard
/// erasing a resynchronised account again, webhooks delivered, receipts that verify, the pause
/// switch; and the server never sees more than 50 connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_processes_run_every_path_through_pgbouncer_in_transaction_mode() {
    let app = TestApp::spawn(Options {
        pooler: Some(20),
        ..Options::empty_sim()
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let peak = sample_connections(app.db.clone(), stop.clone());
    let mut others = Vec::new();
    for n in 0..7 {
        others.push(
            app.extra_process(fast_engine(), (n == 0).then(fast_guard))
                .await,
        );
    }
    let receiver = Arc::new(Receiver::default());
    let url = start_receiver(receiver.clone());
    let (subscription, _) = subscribe(&app, &url, &["request.completed"]).await;

    // Users of 2 connections of 2 accounts each, one request each, sent at once.
    let seeded = app
        .sim
        .seed(&SeedRequest {
            users: 24,
            connections_per_user: Some(2),
            channels_per_connection: Some(1),
            accounts_per_channel: Some(2),
            ..Default::default()
        })
        .unwrap();
    let users: Vec<String> = seeded.users.iter().map(|u| u.id.clone()).collect();
    let mut ids = futures::future::join_all(users.iter().map(|u| app.submit("user", u))).await;
    // A batch of accounts of other users.
    let others_seeded = app
        .sim
        .seed(&SeedRequest {
            users: 10,
            connections_per_user: Some(1),
            channels_per_connection: Some(1),
            accounts_per_channel: Some(3),
            ..Default::default()
        })
        .unwrap();
    let connection = others_seeded.users[0].connections[0].clone();
    let accounts: Vec<String> = others_seeded
        .users
        .iter()
        .flat_map(|u| &u.connections)
        .flat_map(|c| &c.channels)
        .map(|ch| ch.accounts[0].clone())
        .collect();
    let items: Vec<Value> = accounts
        .iter()
        .map(|a| json!({"scope": "account", "target_id": a}))
        .collect();
    let (status, body) = app
        .post("/v1/erasure-requests/batch", &app.requester, json!(items))
        .await;
    assert_eq!(status, 200, "{body}");
    for item in body["items"].as_array().unwrap() {
        assert_eq!(item["status"], "created", "{body}");
        ids.push(item["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        let done = app.wait_state(id, "completed", 60).await;
        assert_eq!(done["outcome"], "erased", "{done:#}");
    }
    for u in &users {
        assert_eq!(app.upstream_status(&format!("/users/{u}")).await, 404);
    }

    // The guard (one process reads the event stream through its direct session): a third party
    // resynchronises an erased account's connection; it is erased again.
    let original = &ids[users.len()];
    let (status, _) = app
        .upstream(
            Method::POST,
            &format!(
                "/connections/{}/synchronize?type=LIST_ACCOUNTS",
                connection.id
            ),
        )
        .await;
    assert_eq!(status, 204);
    let re_erasure = wait_re_erasures(&app, original, 1, 30).await.remove(0);
    app.wait_state(&re_erasure, "completed", 30).await;

    // Webhooks: every completion delivered, once.
    wait_delivered(&app, &subscription, 30).await;
    assert_eq!(receiver.accepted_ids().len(), ids.len() + 1);

    // The audit log: a receipt verifies against the checkpoint.
    let (status, receipt) = app
        .get_text(
            &format!("/v1/erasure-requests/{original}/receipt"),
            &app.auditor,
        )
        .await;
    assert_eq!(status, 200, "{receipt}");
    let (_, checkpoint) = app.get("/v1/audit/checkpoint", &app.auditor).await;
    verify::verify_receipt(&receipt, checkpoint["public_key"].as_str().unwrap())
        .expect("the receipt verifies");

    // The pause switch, followed by every process through the pooler.
    let (status, body) = app
        .post("/v1/pause", &app.admin, json!({"reason": "maintenance"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, paused) = app.get("/v1/pause", &app.auditor).await;
    assert_eq!(paused["paused"], true, "{paused}");
    let (status, body) = app.post("/v1/resume", &app.admin, json!({})).await;
    assert_eq!(status, 200, "{body}");

    stop.store(true, Ordering::SeqCst);
    let peak = peak.load(Ordering::SeqCst);
    assert!(
        peak <= 50,
        "{peak} server connections at once, more than max_connections = 50"
    );
    assert!(peak > 0);
    for other in others {
        other.stop().await.unwrap();
    }
    let log = app.pooler.as_ref().unwrap().log();
    assert!(!log.contains("already exists"), "{log}");
    app.stop().await;
}

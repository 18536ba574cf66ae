//! Erasures end to end: the API, the engine and the simulator, on real PostgreSQL.

use crate::common;

use common::{Options, TestApp};
use erasure_sim::SeedRequest;
use serde_json::json;

fn steps(body: &serde_json::Value) -> Vec<(String, String)> {
    body["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["kind"].as_str().unwrap().to_string(),
                s["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_is_erased_upstream_verified_and_audited() {
    let app = TestApp::spawn(Options::default()).await;
    let user = app.sim.seeded().users[0].clone();
    let (status, _) = (
        app.upstream_status(&format!("/users/{}", user.id)).await,
        (),
    );
    assert_eq!(status, 200);

    let id = app.submit("user", &user.id).await;
    let done = app.wait_state(&id, "completed", 20).await;
    assert_eq!(done["outcome"], "erased");
    assert!(done["completed_at"].is_string());
    assert_eq!(
        steps(&done),
        vec![
            ("inventory".into(), "succeeded".into()),
            ("delete".into(), "succeeded".into()),
            ("verify".into(), "succeeded".into())
        ]
    );
    let inventory = &done["steps"][0]["detail"];
    assert_eq!(inventory["present"], true);
    assert_eq!(inventory["connections"], user.connections.len());
    let accounts: usize = user
        .connections
        .iter()
        .flat_map(|c| &c.channels)
        .map(|ch| ch.accounts.len())
        .sum();
    assert_eq!(inventory["accounts"], accounts);
    assert!(done.get("target_id").is_none());
    assert!(
        !common::mentions(&done.to_string(), &user.id),
        "the target id never comes back"
    );

    assert_eq!(
        app.upstream_status(&format!("/users/{}", user.id)).await,
        404
    );
    for c in &user.connections {
        assert_eq!(
            app.upstream_status(&format!("/connections/{}", c.id)).await,
            404
        );
    }
    let events = app.audit_events(&id).await;
    assert_eq!(events.first().map(String::as_str), Some("received"));
    assert_eq!(events.iter().filter(|e| *e == "completed").count(), 1);
    assert!(events.contains(&"deleted".to_string()));
    assert!(events.contains(&"verified_absent".to_string()));
    // Each attempt's entry records the calls it made, in order, by route template.
    let calls: Vec<(String, String, String, Option<i64>)> = sqlx::query_as(
        "select e.event, c->>'method', c->>'path', (c->>'status')::bigint \
         from audit_entries e, jsonb_array_elements(e.data->'calls') with ordinality as x(c, n) \
         where e.request_id = $1::uuid order by e.id, x.n",
    )
    .bind(&id)
    .fetch_all(&app.db)
    .await
    .unwrap();
    let call = |event: &str, method: &str, path: &str, status: i64| {
        (event.into(), method.into(), path.into(), Some(status))
    };
    let mut expected = vec![
        call("inventoried", "GET", "/users/{id}", 200),
        call("inventoried", "GET", "/connections?user_id={id}", 200),
    ];
    expected.extend(
        user.connections
            .iter()
            .map(|_| call("inventoried", "GET", "/accounts?connection_id={id}", 200)),
    );
    expected.push(call("deleted", "DELETE", "/users/{id}", 204));
    expected.push(call("verified_absent", "GET", "/users/{id}", 404));
    assert_eq!(calls, expected);
    assert!(!events.contains(&"upstream_call".to_string()));

    // The sealed target is wiped once the request is closed.
    let sealed: Option<Vec<u8>> =
        sqlx::query_scalar("select target_sealed from erasure_requests where id = $1::uuid")
            .bind(&id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert!(sealed.is_none());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_erasures_observe_the_seeds_cascade() {
    let app = TestApp::spawn(Options::empty_sim()).await;
    // One channel with one account: deleting it empties the channel, and the connection goes.
    let lone = app
        .sim
        .seed(&SeedRequest {
            users: 1,
            connections_per_user: Some(1),
            channels_per_connection: Some(1),
            accounts_per_channel: Some(1),
            ..Default::default()
        })
        .unwrap();
    // Two channels of one account each: deleting one empties its channel, the connection stays.
    let two = app
        .sim
        .seed(&SeedRequest {
            users: 1,
            connections_per_user: Some(1),
            channels_per_connection: Some(2),
            accounts_per_channel: Some(1),
            ..Default::default()
        })
        .unwrap();
    // One channel with two accounts: the channel remains.
    let pair = app
        .sim
        .seed(&SeedRequest {
            users: 1,
            connections_per_user: Some(1),
            channels_per_connection: Some(1),
            accounts_per_channel: Some(2),
            ..Default::default()
        })
        .unwrap();

    let cases = [
        (&lone.users[0].connections[0], "connection_deleted", 404),
        (&two.users[0].connections[0], "channel_empty", 200),
        (&pair.users[0].connections[0], "channel_remains", 200),
    ];
    for (connection, expected, connection_status) in cases {
        let account = &connection.channels[0].accounts[0];
        let id = app.submit("account", account).await;
        let done = app.wait_state(&id, "completed", 20).await;
        assert_eq!(done["steps"].as_array().unwrap().len(), 4);
        assert_eq!(done["steps"][3]["kind"], "cascade_check");
        assert_eq!(done["steps"][3]["detail"]["result"], expected, "{done:#}");
        assert_eq!(
            app.upstream_status(&format!("/accounts/{account}")).await,
            404
        );
        assert_eq!(
            app.upstream_status(&format!("/connections/{}", connection.id))
                .await,
            connection_status
        );
        assert!(
            app.audit_events(&id)
                .await
                .contains(&"cascade_observed".to_string())
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_is_erased_with_its_accounts() {
    let app = TestApp::spawn(Options::default()).await;
    let connection = app.sim.seeded().users[1].connections[0].clone();
    let id = app.submit("connection", &connection.id).await;
    let done = app.wait_state(&id, "completed", 20).await;
    let accounts: usize = connection.channels.iter().map(|c| c.accounts.len()).sum();
    assert_eq!(done["steps"][0]["detail"]["accounts"], accounts);
    assert_eq!(
        app.upstream_status(&format!("/connections/{}", connection.id))
            .await,
        404
    );
    for account in connection.channels.iter().flat_map(|c| &c.accounts) {
        assert_eq!(
            app.upstream_status(&format!("/accounts/{account}")).await,
            404
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_target_is_already_erased() {
    let app = TestApp::spawn(Options::default()).await;
    let id = app.submit("user", "987654321987").await;
    let done = app.wait_state(&id, "completed", 20).await;
    assert_eq!(done["outcome"], "already_erased");
    assert_eq!(done["steps"][0]["detail"]["present"], false);
    assert_eq!(done["steps"][1]["detail"]["result"], "already_absent");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_replay_and_refuse_reuse() {
    let app = TestApp::spawn(Options {
        worker: false,
        ..Options::default()
    })
    .await;
    let send = |key: &'static str, body: serde_json::Value| {
        let app = &app;
        async move {
            let r = app
                .http
                .post(app.url("/v1/erasure-requests"))
                .bearer_auth(&app.requester)
                .header("Idempotency-Key", key)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let location = r
                .headers()
                .get("location")
                .map(|v| v.to_str().unwrap().to_string());
            (
                status,
                location,
                r.json::<serde_json::Value>().await.unwrap(),
            )
        }
    };
    let body = json!({"scope": "user", "target_id": "555", "external_reference": "T-1"});
    let (s1, l1, b1) = send("abc-1", body.clone()).await;
    let (s2, l2, b2) = send("abc-1", body.clone()).await;
    assert_eq!((s1, s2), (202, 202));
    assert_eq!(b1["id"], b2["id"]);
    assert_eq!(l1, l2);
    assert_eq!(
        l1.unwrap(),
        format!("/v1/erasure-requests/{}", b1["id"].as_str().unwrap())
    );
    let (s3, _, b3) = send("abc-1", json!({"scope": "user", "target_id": "556"})).await;
    assert_eq!(s3, 422);
    assert_eq!(b3["error"], "idempotency_key_reused");
    let count: i64 = sqlx::query_scalar("select count(*) from erasure_requests")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(count, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_open_request_for_the_same_target_is_a_conflict() {
    let app = TestApp::spawn(Options {
        worker: false,
        ..Options::default()
    })
    .await;
    let first = app.submit("account", "777").await;
    let (status, body) = app
        .post(
            "/v1/erasure-requests",
            &app.requester2,
            json!({"scope": "account", "target_id": " 777 "}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "duplicate_request");
    assert_eq!(body["details"]["existing_id"], first.as_str());
    // The same id in another scope is another target.
    app.submit("user", "777").await;
    app.stop().await;
}

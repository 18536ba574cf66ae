//! Black-box tests of the upstream simulator (`erasure_sim`), over HTTP, each against its own
//! simulator started in-process on port 0.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use erasure_sim::{Faults, SeedRequest, SeedResponse, Sim, SimArgs, SimConfig};
use reqwest::header::HeaderMap;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

// ------------------------------------------------------------------------------------------------
// Helpers

struct Env {
    sim: Sim,
    http: Client,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }
    fn retry_after(&self) -> Option<u64> {
        self.headers
            .get("retry-after")
            .map(|v| v.to_str().unwrap().parse().unwrap())
    }
}

fn config() -> SimConfig {
    SimConfig {
        workers: 1,
        sync_duration: Duration::from_millis(100),
        ..SimConfig::default()
    }
}

fn seed_req(users: usize, conns: usize, chans: usize, accs: usize, txns: usize) -> SeedRequest {
    SeedRequest {
        users,
        connections_per_user: Some(conns),
        channels_per_connection: Some(chans),
        accounts_per_channel: Some(accs),
        transactions_per_account: Some(txns),
    }
}

impl Env {
    async fn new(config: SimConfig) -> Env {
        let sim = Sim::start(config).await.expect("simulator starts");
        Env {
            sim,
            http: Client::new(),
        }
    }

    async fn call(
        &self,
        method: Method,
        url: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut rb = self.http.request(method, url);
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let res = rb.send().await.expect("HTTP call");
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("non-JSON body: {}", String::from_utf8_lossy(&bytes)))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    fn api(&self, path: &str) -> String {
        format!("{}{path}", self.sim.api_url())
    }

    async fn get(&self, token: &str, path: &str) -> Reply {
        self.call(Method::GET, &self.api(path), Some(token), None)
            .await
    }

    async fn delete(&self, token: &str, path: &str) -> Reply {
        self.call(Method::DELETE, &self.api(path), Some(token), None)
            .await
    }

    async fn post(&self, token: &str, path: &str) -> Reply {
        self.call(Method::POST, &self.api(path), Some(token), None)
            .await
    }

    async fn token_request(&self, body: Value) -> Reply {
        let url = format!("{}/token", self.sim.auth_url());
        self.call(Method::POST, &url, None, Some(body)).await
    }

    async fn client_token(&self) -> String {
        let r = self
            .token_request(json!({
                "provider": "linxoConnect",
                "client_id": "erasure-sim",
                "client_secret": "sim-secret",
                "grant_type": "client_credentials",
                "scope": "accounts_manage",
            }))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        r.body["access_token"].as_str().unwrap().to_string()
    }

    async fn user_token(&self, email: &str) -> String {
        let r = self
            .token_request(json!({
                "provider": "linxoConnect",
                "client_id": "erasure-sim",
                "client_secret": "sim-secret",
                "grant_type": "password",
                "username": email,
                "password": "sim-password",
                "scope": "accounts_read",
            }))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        r.body["access_token"].as_str().unwrap().to_string()
    }

    async fn sim(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let url = format!("{}/_sim{path}", self.sim.base_url());
        self.call(method, &url, None, body).await
    }

    async fn seed(&self, req: SeedRequest) -> SeedResponse {
        let r = self
            .sim(
                Method::POST,
                "/seed",
                Some(serde_json::to_value(req).unwrap()),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        serde_json::from_value(r.body).unwrap()
    }

    async fn set_faults(&self, faults: Value) {
        let r = self.sim(Method::PUT, "/faults", Some(faults)).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }

    async fn calls(&self, since: u64) -> Vec<Value> {
        let r = self
            .sim(Method::GET, &format!("/calls?since={since}"), None)
            .await;
        assert_eq!(r.status, StatusCode::OK);
        r.body["calls"].as_array().unwrap().clone()
    }

    /// Events with id > since, all pages.
    async fn events(&self, token: &str, since: u64) -> Vec<Value> {
        let mut out = Vec::new();
        let mut since = since;
        loop {
            let r = self
                .get(token, &format!("/events?since={since}&limit=100"))
                .await;
            assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
            let page = r.body["events"].as_array().unwrap().clone();
            if page.is_empty() {
                return out;
            }
            since = id(&page[page.len() - 1]);
            out.extend(page);
        }
    }

    /// Waits until the events contain one of type `event_type` for the connection.
    async fn wait_event(&self, token: &str, event_type: &str, connection: &str) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let events = self.events(token, 0).await;
            if events.iter().any(|e| {
                e["event_type"] == event_type && e["resource"]["id"].as_str() == Some(connection)
            }) {
                return events;
            }
            assert!(
                Instant::now() < deadline,
                "no {event_type} event for {connection}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn id(v: &Value) -> u64 {
    v["id"].as_str().expect("id is a string").parse().unwrap()
}

fn mod97(digits: &str) -> u32 {
    digits
        .bytes()
        .fold(0, |acc, d| (acc * 10 + u32::from(d - b'0')) % 97)
}

/// ISO 13616 check of a compact IBAN.
fn iban_is_valid(iban: &str) -> bool {
    let rearranged = format!("{}{}", &iban[4..], &iban[..4]);
    let digits: String = rearranged
        .chars()
        .map(|c| {
            if c.is_ascii_digit() {
                c.to_string()
            } else {
                (c as u32 - 'A' as u32 + 10).to_string()
            }
        })
        .collect();
    mod97(&digits) == 1
}

// ------------------------------------------------------------------------------------------------
// Tokens

#[tokio::test]
async fn token_client_credentials_and_password_grants() {
    let env = Env::new(config()).await;
    let seeded = env.seed(seed_req(2, 1, 1, 1, 1)).await;
    let r = env
        .token_request(json!({
            "provider": "linxoConnect", "client_id": "erasure-sim", "client_secret": "sim-secret",
            "grant_type": "client_credentials", "scope": "accounts_manage",
        }))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(r.body["expires_in"], 3600);
    let client = r.body["access_token"].as_str().unwrap().to_string();
    assert!(client.len() >= 32);

    let u = &seeded.users[0];
    let r = env.get(&client, &format!("/users/{}", u.id)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["email"], u.email.as_str());

    let user = env.user_token(&u.email).await;
    assert_ne!(user, client);
    let r = env.get(&user, "/users/me").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["id"], u.id.as_str());
    assert_eq!(r.body["email"], u.email.as_str());
    let r = env.get(&user, &format!("/users/{}", u.id)).await;
    assert_eq!(r.status, StatusCode::OK);

    // /users/me is for user tokens.
    assert_eq!(
        env.get(&client, "/users/me").await.status,
        StatusCode::FORBIDDEN
    );
    let r = env.delete(&client, "/users/me").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.error(), "forbidden");
}

#[tokio::test]
async fn token_rejects_wrong_credentials_and_bad_bodies() {
    let env = Env::new(config()).await;
    let seeded = env.seed(seed_req(1, 1, 1, 1, 1)).await;
    let email = seeded.users[0].email.clone();
    let base = |grant: &str| {
        json!({"provider": "linxoConnect", "client_id": "erasure-sim",
               "client_secret": "sim-secret", "grant_type": grant})
    };

    let mut b = base("client_credentials");
    b["client_secret"] = json!("wrong");
    let r = env.token_request(b).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.error(), "invalid_client");
    assert!(r.body["error_description"].as_str().unwrap().len() > 3);

    let mut b = base("client_credentials");
    b["client_id"] = json!("someone-else");
    assert_eq!(env.token_request(b).await.error(), "invalid_client");

    let mut b = base("password");
    b["username"] = json!(email);
    b["password"] = json!("wrong");
    let r = env.token_request(b).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.error(), "invalid_grant");

    let mut b = base("password");
    b["username"] = json!("nobody@example.com");
    b["password"] = json!("sim-password");
    assert_eq!(env.token_request(b).await.error(), "invalid_grant");

    // Bad bodies are 400.
    let mut b = base("password");
    b["username"] = json!(email);
    assert_eq!(env.token_request(b).await.status, StatusCode::BAD_REQUEST);
    let r = env.token_request(base("authorization_code")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error(), "unsupported_grant_type");
    let mut b = base("client_credentials");
    b.as_object_mut().unwrap().remove("grant_type");
    assert_eq!(env.token_request(b).await.status, StatusCode::BAD_REQUEST);
    let mut b = base("client_credentials");
    b["provider"] = json!("otherProvider");
    assert_eq!(env.token_request(b).await.status, StatusCode::BAD_REQUEST);
    let res = env
        .http
        .post(format!("{}/token", env.sim.auth_url()))
        .body("client_id=erasure-sim")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
}

#[tokio::test]
async fn api_rejects_missing_unknown_and_expired_tokens() {
    let env = Env::new(SimConfig {
        token_ttl: Duration::from_secs(1),
        ..config()
    })
    .await;
    let seeded = env.seed(seed_req(1, 1, 1, 1, 1)).await;
    let path = format!("/users/{}", seeded.users[0].id);

    let r = env.call(Method::GET, &env.api(&path), None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.error(), "invalid_token");
    assert!(r.headers.contains_key("www-authenticate"));
    assert_eq!(
        env.get("not-a-token", &path).await.status,
        StatusCode::UNAUTHORIZED
    );
    let res = env
        .http
        .get(env.api(&path))
        .header("authorization", "Basic Zm9vOmJhcg==")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    let r = env
        .token_request(
            json!({"provider": "linxoConnect", "client_id": "erasure-sim",
            "client_secret": "sim-secret", "grant_type": "client_credentials"}),
        )
        .await;
    assert_eq!(r.body["expires_in"], 1);
    let token = r.body["access_token"].as_str().unwrap().to_string();
    let user_token = env.user_token(&seeded.users[0].email).await;
    assert_eq!(env.get(&token, &path).await.status, StatusCode::OK);
    assert_eq!(
        env.get(&user_token, "/users/me").await.status,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = env.get(&token, &path).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.body["error_description"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
    assert_eq!(
        env.get(&user_token, "/users/me").await.status,
        StatusCode::UNAUTHORIZED
    );
    // A fresh token works; revoking all tokens (/_sim/tokens) makes it fail.
    let fresh = env.client_token().await;
    assert_eq!(env.get(&fresh, &path).await.status, StatusCode::OK);
    assert_eq!(
        env.sim(Method::DELETE, "/tokens", None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        env.get(&fresh, &path).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn user_token_is_confined_to_its_user() {
    let env = Env::new(config()).await;
    let s = env.seed(seed_req(2, 1, 1, 1, 2)).await;
    let (a, b) = (&s.users[0], &s.users[1]);
    let tok = env.user_token(&a.email).await;
    let client = env.client_token().await;
    let b_conn = &b.connections[0].id;
    let b_acc = &b.connections[0].channels[0].accounts[0];

    for path in [
        format!("/users/{}", b.id),
        format!("/connections/{b_conn}"),
        format!("/accounts/{b_acc}"),
        format!("/transactions?account_id={b_acc}"),
        format!("/connections?user_id={}", b.id),
        format!("/accounts?connection_id={b_conn}"),
        "/events".to_string(),
    ] {
        let r = env.get(&tok, &path).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "GET {path}");
        assert_eq!(r.error(), "forbidden");
    }
    for path in [
        format!("/accounts/{b_acc}"),
        format!("/connections/{b_conn}"),
        format!("/users/{}", b.id),
    ] {
        assert_eq!(
            env.delete(&tok, &path).await.status,
            StatusCode::FORBIDDEN,
            "DELETE {path}"
        );
    }
    assert_eq!(
        env.post(&tok, &format!("/connections/{b_conn}/synchronize"))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    // Nothing of b was touched.
    assert_eq!(
        env.get(&client, &format!("/accounts/{b_acc}")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        env.get(&client, &format!("/users/{}", b.id)).await.status,
        StatusCode::OK
    );
    // Its own data is visible, and unfiltered lists show only its own.
    let a_acc = &a.connections[0].channels[0].accounts[0];
    assert_eq!(
        env.get(&tok, &format!("/accounts/{a_acc}")).await.status,
        StatusCode::OK
    );
    let conns = env.get(&tok, "/connections").await.body;
    assert_eq!(conns.as_array().unwrap().len(), 1);
    assert_eq!(conns[0]["id"], a.connections[0].id.as_str());
    let accs = env.get(&tok, "/accounts").await.body;
    assert_eq!(accs.as_array().unwrap().len(), 1);
    assert_eq!(accs[0]["id"], a_acc.as_str());
    // The client token sees everyone.
    let all = env.get(&client, "/connections").await.body;
    assert_eq!(all.as_array().unwrap().len(), 2);
}

// ------------------------------------------------------------------------------------------------
// Shapes and data

#[tokio::test]
async fn resources_have_the_documented_shapes_and_realistic_data() {
    let env = Env::new(config()).await;
    let s = env.seed(seed_req(3, 1, 2, 2, 3)).await;
    let tok = env.client_token().await;
    let mut ibans = HashSet::new();
    for u in &s.users {
        let user = env.get(&tok, &format!("/users/{}", u.id)).await.body;
        for f in ["first_name", "last_name", "email", "gender", "birthdate"] {
            assert!(user[f].is_string(), "user.{f}: {user}");
        }
        assert!(user["creation_date"].is_i64());
        assert!(user["email_verified"].is_boolean());
        let postcode = user["address"]["postcode"].as_str().unwrap();
        assert!(postcode.len() == 5 && postcode.bytes().all(|b| b.is_ascii_digit()));
        let email = user["email"].as_str().unwrap();
        assert!(email.is_ascii() && email.contains('@') && email.contains('.'));
        assert!(["MALE", "FEMALE"].contains(&user["gender"].as_str().unwrap()));
        assert_eq!(user["birthdate"].as_str().unwrap().len(), 10);

        for c in &u.connections {
            let conn = env.get(&tok, &format!("/connections/{}", c.id)).await.body;
            assert_eq!(conn["user_id"], u.id.as_str());
            assert_eq!(conn["status"], "SUCCESS");
            assert!(conn["name"].is_string() && conn["provider_id"].is_string());
            assert!(conn["creation_date"].is_i64() && conn["auto_sync"].is_boolean());
            let channels = conn["channels"].as_array().unwrap();
            assert_eq!(channels.len(), 2);
            for (ch, seeded_ch) in channels.iter().zip(&c.channels) {
                assert_eq!(ch["id"], seeded_ch.id.as_str());
                assert!(["REDIRECT", "EMBEDDED"].contains(&ch["mode"].as_str().unwrap()));
                assert_eq!(ch["status"], "SUCCESS");
                assert!(ch["last_success_date"].is_i64() && ch["last_end_date"].is_i64());
                for a in &seeded_ch.accounts {
                    let acc = env.get(&tok, &format!("/accounts/{a}")).await.body;
                    assert_eq!(acc["id"], a.as_str());
                    assert!(a.parse::<u64>().is_ok());
                    assert_eq!(acc["connection_id"], c.id.as_str());
                    assert_eq!(acc["last_channel_definition_id"], seeded_ch.id.as_str());
                    assert_eq!(acc["currency"], "EUR");
                    assert_eq!(acc["status"], "ACTIVE");
                    assert!(acc["balance"].is_number() && acc["balance_date"].is_i64());
                    for f in ["name", "reference", "account_number", "type"] {
                        assert!(acc[f].is_string(), "account.{f}: {acc}");
                    }
                    let iban = acc["iban"].as_str().unwrap();
                    assert!(iban.starts_with("FR") && iban.len() == 27, "{iban}");
                    assert!(iban_is_valid(iban), "bad IBAN checksum {iban}");
                    // The RIB inside the IBAN has a valid key too.
                    assert_eq!(mod97(&iban[4..]), 0, "bad RIB key {iban}");
                    assert!(iban.contains(acc["account_number"].as_str().unwrap()));
                    ibans.insert(iban.to_string());
                    let txs = env
                        .get(&tok, &format!("/transactions?account_id={a}"))
                        .await
                        .body;
                    assert_eq!(txs.as_array().unwrap().len(), 3);
                    for t in txs.as_array().unwrap() {
                        assert_eq!(t["account_id"], a.as_str());
                        assert!(t["amount"].is_number() && t["date"].is_i64());
                        assert!(t["label"].is_string() && t["currency"] == "EUR");
                    }
                }
            }
        }
    }
    assert_eq!(ibans.len(), 12, "IBANs are distinct");
}

#[tokio::test]
async fn same_seed_gives_same_data_and_another_seed_differs() {
    let mk = |seed| SimConfig {
        seed,
        users: 4,
        ..config()
    };
    let (e1, e2, e3) = (
        Env::new(mk(7)).await,
        Env::new(mk(7)).await,
        Env::new(mk(8)).await,
    );
    assert_eq!(e1.sim.seeded(), e2.sim.seeded());
    assert_eq!(e1.sim.seeded().users.len(), 4);
    assert_ne!(e1.sim.seeded(), e3.sim.seeded());

    async fn dump(env: &Env) -> Vec<Value> {
        let tok = env.client_token().await;
        let mut out = Vec::new();
        for u in &env.sim.seeded().users {
            out.push(env.get(&tok, &format!("/users/{}", u.id)).await.body);
            out.push(
                env.get(&tok, &format!("/connections?user_id={}", u.id))
                    .await
                    .body,
            );
            for c in &u.connections {
                out.push(
                    env.get(&tok, &format!("/accounts?connection_id={}", c.id))
                        .await
                        .body,
                );
                for ch in &c.channels {
                    for a in &ch.accounts {
                        out.push(
                            env.get(&tok, &format!("/transactions?account_id={a}"))
                                .await
                                .body,
                        );
                    }
                }
            }
        }
        out
    }
    let (d1, d2, d3) = (dump(&e1).await, dump(&e2).await, dump(&e3).await);
    assert_eq!(d1, d2);
    assert_ne!(d1, d3);
    // Further seeding stays in step.
    let more1 = e1.seed(SeedRequest {
        users: 3,
        ..SeedRequest::default()
    });
    let more2 = e2.seed(SeedRequest {
        users: 3,
        ..SeedRequest::default()
    });
    assert_eq!(more1.await, more2.await);
}

#[tokio::test]
async fn sim_seed_endpoint_creates_what_it_returns() {
    let env = Env::new(SimConfig {
        users: 2,
        ..config()
    })
    .await;
    assert_eq!(env.sim.seeded().users.len(), 2);
    let s = env.seed(seed_req(3, 2, 2, 3, 4)).await;
    assert_eq!(s.users.len(), 3);
    let tok = env.client_token().await;
    let mut ids = HashSet::new();
    for u in &s.users {
        assert!(ids.insert(u.id.clone()));
        assert_eq!(u.connections.len(), 2);
        env.user_token(&u.email).await;
        for c in &u.connections {
            assert!(ids.insert(c.id.clone()));
            assert_eq!(c.channels.len(), 2);
            let conn = env.get(&tok, &format!("/connections/{}", c.id)).await.body;
            let chan_ids: Vec<&str> = conn["channels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].as_str().unwrap())
                .collect();
            assert_eq!(
                chan_ids,
                c.channels.iter().map(|c| c.id.as_str()).collect::<Vec<_>>()
            );
            for ch in &c.channels {
                assert_eq!(ch.accounts.len(), 3);
                for a in &ch.accounts {
                    assert!(ids.insert(a.clone()));
                    let acc = env.get(&tok, &format!("/accounts/{a}")).await;
                    assert_eq!(acc.status, StatusCode::OK);
                    assert_eq!(acc.body["connection_id"], c.id.as_str());
                    let txs = env
                        .get(&tok, &format!("/transactions?account_id={a}"))
                        .await;
                    assert_eq!(txs.body.as_array().unwrap().len(), 4);
                }
            }
        }
    }
    let emails: HashSet<_> = s.users.iter().map(|u| &u.email).collect();
    assert_eq!(emails.len(), 3);
    let stats = env.sim(Method::GET, "/stats", None).await.body;
    assert_eq!(stats["users"], 5);
    assert!(stats["accounts"].as_u64().unwrap() >= 36);

    for bad in [
        json!({"users": 1, "channels_per_connection": 0}),
        json!({"users": 1, "colour": "red"}),
        json!({"users": -1}),
    ] {
        let r = env.sim(Method::POST, "/seed", Some(bad.clone())).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(r.error(), "invalid_request");
    }
}

// ------------------------------------------------------------------------------------------------
// Deletes and cascades

#[tokio::test]
async fn delete_user_removes_everything_below_it() {
    let env = Env::new(config()).await;
    let s = env.seed(seed_req(2, 2, 2, 2, 3)).await;
    let (u, other) = (&s.users[0], &s.users[1]);
    let tok = env.client_token().await;

    let r = env.delete(&tok, &format!("/users/{}", u.id)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(r.body, Value::Null);
    let r = env.get(&tok, &format!("/users/{}", u.id)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error(), "not_found");
    for c in &u.connections {
        assert_eq!(
            env.get(&tok, &format!("/connections/{}", c.id))
                .await
                .status,
            StatusCode::NOT_FOUND
        );
        for ch in &c.channels {
            for a in &ch.accounts {
                assert_eq!(
                    env.get(&tok, &format!("/accounts/{a}")).await.status,
                    StatusCode::NOT_FOUND
                );
                assert_eq!(
                    env.get(&tok, &format!("/transactions?account_id={a}"))
                        .await
                        .status,
                    StatusCode::NOT_FOUND
                );
            }
        }
    }
    assert_eq!(
        env.get(&tok, &format!("/connections?user_id={}", u.id))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let r = env.delete(&tok, &format!("/users/{}", u.id)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error(), "not_found");
    // The e-mail no longer logs in; the other user is untouched.
    let r = env
        .token_request(
            json!({"provider": "linxoConnect", "client_id": "erasure-sim",
            "client_secret": "sim-secret", "grant_type": "password",
            "username": u.email, "password": "sim-password"}),
        )
        .await;
    assert_eq!(r.error(), "invalid_grant");
    assert_eq!(
        env.get(&tok, &format!("/users/{}", other.id)).await.status,
        StatusCode::OK
    );
    let stats = env.sim(Method::GET, "/stats", None).await.body;
    assert_eq!(stats["users"], 1);
    assert_eq!(stats["connections"], 2);
    assert_eq!(stats["accounts"], 8);
    assert_eq!(stats["transactions"], 24);
    let all = env.get(&tok, "/accounts?limit=500").await.body;
    assert_eq!(all.as_array().unwrap().len(), 8);
}

#[tokio::test]
async fn delete_users_me_with_a_user_token() {
    let env = Env::new(config()).await;
    let s = env.seed(seed_req(1, 1, 1, 2, 1)).await;
    let u = &s.users[0];
    let tok = env.user_token(&u.email).await;
    let client = env.client_token().await;
    assert_eq!(
        env.delete(&tok, "/users/me").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        env.get(&client, &format!("/users/{}", u.id)).await.status,
        StatusCode::NOT_FOUND
    );
    let a = &u.connections[0].channels[0].accounts[0];
    assert_eq!(
        env.get(&client, &format!("/accounts/{a}")).await.status,
        StatusCode::NOT_FOUND
    );
    // The token of a deleted user is no longer valid.
    assert_eq!(
        env.get(&tok, "/users/me").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        env.delete(&client, &format!("/users/{}", u.id))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn delete_connection_removes_its_accounts_and_transactions() {
    let env = Env::new(config()).await;
    let s = env.seed(seed_req(1, 2, 2, 2, 2)).await;
    let u = &s.users[0];
    let (c1, c2) = (&u.connections[0], &u.connections[1]);
    let tok = env.client_token().await;

    assert_eq!(
        env.delete(&tok, &format!("/connections/{}", c1.id))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        env.get(&tok, &format!("/connections/{}", c1.id))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    for a in c1.channels.iter().flat_map(|c| &c.accounts) {
        assert_eq!(
            env.get(&tok, &format!("/accounts/{a}")).await.status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            env.get(&tok, &format!("/transactions?account_id={a}"))
                .await
                .status,
            StatusCode::NOT_FOUND
        );
    }
    assert_eq!(
        env.get(&tok, &format!("/accounts?connection_id={}", c1.id))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let r = env.delete(&tok, &format!("/connections/{}", c1.id)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error(), "not_found");
    assert_eq!(
        env.post(
            &tok,
            &format!("/connections/{}/synchronize?type=LIST_ACCOUNTS", c1.id)
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    // The other connection and the user remain.
    let list = env
        .get(&tok, &format!("/connections?user_id={}", u.id))
        .await
        .body;
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![c2.id.as_str()]);
    let accs = env
        .get(&tok, &format!("/accounts?connection_id={}", c2.id))
        .await
        .body;
    assert_eq!(accs.as_array().unwrap().len(), 4);
    assert_eq!(
        env.get(&tok, &format!("/users/{}", u.id)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn account_delete_cascades_to_empty_channel_then_connection() {
    let env = Env::new(config()).await;
    let s = env.seed(seed_req(1, 1, 2, 2, 2)).await;
    let u = &s.users[0];
    let c = &u.connections[0];
    let (ch1, ch2) = (&c.channels[0], &c.channels[1]);
    let tok = env.client_token().await;
    let conn_path = format!("/connections/{}", c.id);
    let channel = |conn: &Value, id: &str| {
        conn["channels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|ch| ch["id"] == id)
            .unwrap()
            .clone()
    };

    // First account of channel 1: the channel keeps its other account.
    let a = &ch1.accounts[0];
    assert_eq!(
        env.delete(&tok, &format!("/accounts/{a}")).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        env.get(&tok, &format!("/accounts/{a}")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        env.get(&tok, &format!("/transactions?account_id={a}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let conn = env.get(&tok, &conn_path).await.body;
    assert_eq!(channel(&conn, &ch1.id)["status"], "SUCCESS");

    // Last account of channel 1: the channel is EMPTY (credentials gone), the connection stays.
    assert_eq!(
        env.delete(&tok, &format!("/accounts/{}", ch1.accounts[1]))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let r = env.get(&tok, &conn_path).await;
    assert_eq!(r.status, StatusCode::OK);
    let empty = channel(&r.body, &ch1.id);
    assert_eq!(empty["status"], "EMPTY");
    assert!(empty.get("expires").is_none());
    assert_eq!(channel(&r.body, &ch2.id)["status"], "SUCCESS");
    let accs = env
        .get(&tok, &format!("/accounts?connection_id={}", c.id))
        .await
        .body;
    assert_eq!(accs.as_array().unwrap().len(), 2);

    // Channel 2 emptied too: no non-empty channel is left, the connection is deleted.
    assert_eq!(
        env.delete(&tok, &format!("/accounts/{}", ch2.accounts[0]))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(env.get(&tok, &conn_path).await.status, StatusCode::OK);
    assert_eq!(
        env.delete(&tok, &format!("/accounts/{}", ch2.accounts[1]))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        env.get(&tok, &conn_path).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        env.delete(&tok, &conn_path).await.status,
        StatusCode::NOT_FOUND
    );
    let r = env
        .delete(&tok, &format!("/accounts/{}", ch2.accounts[1]))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error(), "not_found");
    let list = env
        .get(&tok, &format!("/connections?user_id={}", u.id))
        .await;
    assert_eq!(list.body, json!([]));
    // The user itself stays.
    assert_eq!(
        env.get(&tok, &format!("/users/{}", u.id)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn lists_are_paged_bare_arrays() {
    let env = Env::new(config()).await;
    let s = env.seed(seed_req(1, 1, 1, 7, 30)).await;
    let c = &s.users[0].connections[0];
    let tok = env.client_token().await;
    let mut seen = Vec::new();
    for (page, want) in [(1, 3), (2, 3), (3, 1), (4, 0)] {
        let r = env
            .get(
                &tok,
                &format!("/accounts?connection_id={}&page={page}&limit=3", c.id),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let arr = r.body.as_array().expect("bare array");
        assert_eq!(arr.len(), want, "page {page}");
        seen.extend(arr.iter().map(id));
    }
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "ascending ids");
    let expected: BTreeSet<u64> = c.channels[0]
        .accounts
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), expected);

    let a = &c.channels[0].accounts[0];
    let r = env
        .get(&tok, &format!("/transactions?account_id={a}"))
        .await;
    assert_eq!(r.body.as_array().unwrap().len(), 25, "default limit 25");
    let r = env
        .get(&tok, &format!("/transactions?account_id={a}&page=2"))
        .await;
    assert_eq!(r.body.as_array().unwrap().len(), 5);
    let r = env
        .get(&tok, &format!("/transactions?account_id={a}&limit=500"))
        .await;
    assert_eq!(r.body.as_array().unwrap().len(), 30);
    for bad in [
        format!("/transactions?account_id={a}&limit=501"),
        format!("/transactions?account_id={a}&page=0"),
        format!("/transactions?account_id={a}&limit=abc"),
        "/transactions".to_string(),
        format!("/accounts?connection_id={}&limit=0", c.id),
    ] {
        let r = env.get(&tok, &bad).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(r.error(), "invalid_request");
    }
    let r = env
        .get(
            &tok,
            &format!("/connections?user_id={}&page=2", s.users[0].id),
        )
        .await;
    assert_eq!(r.body, json!([]));
}

#[tokio::test]
async fn unknown_routes_and_ids_answer_json_404() {
    let env = Env::new(config()).await;
    let tok = env.client_token().await;
    for path in [
        "/nothing",
        "/accounts/abc",
        "/accounts/999999999",
        "/users/0",
    ] {
        let r = env.get(&tok, path).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(r.error(), "not_found");
        assert!(r.body["error_description"].is_string());
    }
    let r = env.sim(Method::GET, "/health", None).await;
    assert_eq!(r.status, StatusCode::OK);
    // The journal names matched routes by template and unmatched ones by their path.
    let routes: Vec<String> = env
        .calls(0)
        .await
        .iter()
        .map(|c| c["route"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        routes,
        [
            "/token",
            "/v2.1/nothing",
            "/v2.1/accounts/{id}",
            "/v2.1/accounts/{id}",
            "/v2.1/users/{id}"
        ]
    );
}

// ------------------------------------------------------------------------------------------------
// Synchronisation, restore, events

fn list_event<'a>(events: &'a [Value], channel: &str) -> &'a Value {
    events
        .iter()
        .find(|e| {
            e["event_type"] == "LIST_ACCOUNTS_SUCCESS" && e["channel_definition_id"] == channel
        })
        .expect("LIST_ACCOUNTS_SUCCESS event of the channel")
}

#[tokio::test]
async fn list_accounts_restores_deleted_accounts_with_present_new_missing() {
    let env = Env::new(config()).await;
    let s = env.seed(seed_req(1, 1, 1, 3, 4)).await;
    let c = &s.users[0].connections[0];
    let ch = &c.channels[0];
    let (a1, a2, a3) = (&ch.accounts[0], &ch.accounts[1], &ch.accounts[2]);
    let tok = env.client_token().await;

    let before = env.get(&tok, &format!("/accounts/{a1}")).await.body;
    let before_txs = env
        .get(&tok, &format!("/transactions?account_id={a1}"))
        .await
        .body;
    assert_eq!(
        env.delete(&tok, &format!("/accounts/{a1}")).await.status,
        StatusCode::NO_CONTENT
    );
    // The bank closes a2 and opens a brand-new account.
    assert_eq!(
        env.sim(Method::POST, &format!("/bank/accounts/{a2}/close"), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let added = env
        .sim(
            Method::POST,
            &format!("/bank/connections/{}/channels/{}/accounts", c.id, ch.id),
            None,
        )
        .await;
    assert_eq!(added.status, StatusCode::CREATED);
    let new_ref = added.body["reference"].as_str().unwrap().to_string();
    assert_eq!(env.events(&tok, 0).await.len(), 0);

    let r = env
        .post(
            &tok,
            &format!("/connections/{}/synchronize?type=LIST_ACCOUNTS", c.id),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let conn = env.get(&tok, &format!("/connections/{}", c.id)).await.body;
    assert_eq!(conn["status"], "RUNNING");

    let events = env.wait_event(&tok, "SYNC_SUCCESS", &c.id).await;
    assert_eq!(events.len(), 2, "{events:#?}");
    let list = list_event(&events, &ch.id);
    assert_eq!(list["resource_type"], "CONNECTION");
    assert_eq!(list["resource"]["id"], c.id.as_str());
    assert!(list["creation_date"].is_i64());
    let sync = events
        .iter()
        .find(|e| e["event_type"] == "SYNC_SUCCESS")
        .unwrap();
    assert!(id(sync) > id(list), "the ALL sync follows LIST_ACCOUNTS");
    assert_eq!(sync["channel_definition_id"], ch.id.as_str());

    let accounts = list["list_accounts_success"]["accounts"]
        .as_array()
        .unwrap();
    assert_eq!(accounts.len(), 4, "{accounts:#?}");
    let by_ref = |r: &str| {
        accounts
            .iter()
            .find(|a| a["reference"] == r)
            .unwrap_or_else(|| panic!("no account {r}"))
    };
    let a2_ref = env.get(&tok, &format!("/accounts/{a2}")).await.body["reference"].clone();
    let a3_ref = env.get(&tok, &format!("/accounts/{a3}")).await.body["reference"].clone();
    assert_eq!(by_ref(a3_ref.as_str().unwrap())["status"], "PRESENT");
    assert_eq!(by_ref(a3_ref.as_str().unwrap())["id"], a3.as_str());
    assert_eq!(by_ref(a2_ref.as_str().unwrap())["status"], "MISSING");
    let restored = by_ref(before["reference"].as_str().unwrap());
    assert_eq!(restored["status"], "NEW");
    assert_eq!(restored["iban"], before["iban"]);
    assert_eq!(restored["connection_id"], c.id.as_str());
    let brand_new = by_ref(&new_ref);
    assert_eq!(brand_new["status"], "NEW");

    // The restored account is back under a new id, with the same personal data; the old id stays 404.
    let restored_id = restored["id"].as_str().unwrap();
    assert_ne!(restored_id, a1.as_str());
    let back = env.get(&tok, &format!("/accounts/{restored_id}")).await;
    assert_eq!(back.status, StatusCode::OK);
    assert_eq!(back.body["iban"], before["iban"]);
    assert_eq!(back.body["account_number"], before["account_number"]);
    let back_txs = env
        .get(&tok, &format!("/transactions?account_id={restored_id}"))
        .await
        .body;
    let strip = |txs: &Value| -> Vec<(Value, Value, Value)> {
        txs.as_array()
            .unwrap()
            .iter()
            .map(|t| (t["label"].clone(), t["amount"].clone(), t["date"].clone()))
            .collect()
    };
    assert_eq!(strip(&back_txs), strip(&before_txs));
    assert_eq!(
        env.get(&tok, &format!("/accounts/{a1}")).await.status,
        StatusCode::NOT_FOUND
    );
    let brand_new_id = brand_new["id"].as_str().unwrap();
    assert_eq!(
        env.get(&tok, &format!("/accounts/{brand_new_id}"))
            .await
            .status,
        StatusCode::OK
    );
    // The MISSING account stays associated, marked CLOSED.
    assert_eq!(
        env.get(&tok, &format!("/accounts/{a2}")).await.body["status"],
        "CLOSED"
    );
    let conn = env.get(&tok, &format!("/connections/{}", c.id)).await.body;
    assert_eq!(conn["status"], "SUCCESS");
    let listed = env
        .get(&tok, &format!("/accounts?connection_id={}", c.id))
        .await
        .body;
    assert_eq!(listed.as_array().unwrap().len(), 4);

    // A second LIST_ACCOUNTS sees them all PRESENT (a2 still MISSING).
    env.post(
        &tok,
        &format!("/connections/{}/synchronize?type=LIST_ACCOUNTS", c.id),
    )
    .await;
    let since = id(events.last().unwrap());
    let deadline = Instant::now() + Duration::from_secs(5);
    let later = loop {
        let ev = env.events(&tok, since).await;
        if ev.iter().any(|e| e["event_type"] == "SYNC_SUCCESS") {
            break ev;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let statuses: Vec<&str> = list_event(&later, &ch.id)["list_accounts_success"]["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == "PRESENT").count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(statuses.iter().filter(|s| **s == "MISSING").count(), 1);
}

#[tokio::test]
async fn accounts_of_an_empty_channel_do_not_come_back() {
    let env = Env::new(config()).await;
    let s = env.seed(seed_req(1, 1, 2, 1, 1)).await;
    let c = &s.users[0].connections[0];
    let (ch1, ch2) = (&c.channels[0], &c.channels[1]);
    let tok = env.client_token().await;
    assert_eq!(
        env.delete(&tok, &format!("/accounts/{}", ch1.accounts[0]))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    env.post(
        &tok,
        &format!("/connections/{}/synchronize?type=LIST_ACCOUNTS", c.id),
    )
    .await;
    let events = env.wait_event(&tok, "SYNC_SUCCESS", &c.id).await;
    let lists: Vec<&Value> = events
        .iter()
        .filter(|e| e["event_type"] == "LIST_ACCOUNTS_SUCCESS")
        .collect();
    assert_eq!(lists.len(), 1, "only the non-empty channel is listed");
    assert_eq!(lists[0]["channel_definition_id"], ch2.id.as_str());
    let accounts = lists[0]["list_accounts_success"]["accounts"]
        .as_array()
        .unwrap();
    assert_eq!(accounts.len(), 1);
    assert_eq!(accounts[0]["status"], "PRESENT");
    let listed = env
        .get(&tok, &format!("/accounts?connection_id={}", c.id))
        .await
        .body;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let conn = env.get(&tok, &format!("/connections/{}", c.id)).await.body;
    let ch = conn["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == ch1.id.as_str())
        .unwrap()
        .clone();
    assert_eq!(ch["status"], "EMPTY");
}

#[tokio::test]
async fn a_running_synchronisation_blocks_deletes_with_409() {
    let env = Env::new(SimConfig {
        sync_duration: Duration::from_millis(400),
        ..config()
    })
    .await;
    let s = env.seed(seed_req(1, 1, 1, 2, 1)).await;
    let u = &s.users[0];
    let c = &u.connections[0];
    let a = &c.channels[0].accounts[0];
    let tok = env.client_token().await;
    let sync = format!("/connections/{}/synchronize", c.id);

    let r = env.post(&tok, &format!("{sync}?type=BOGUS")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error(), "invalid_request");
    assert_eq!(
        env.post(&tok, "/connections/424242/synchronize?type=ALL")
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    assert_eq!(
        env.post(&tok, &format!("{sync}?type=ALL")).await.status,
        StatusCode::NO_CONTENT
    );
    for path in [
        format!("/accounts/{a}"),
        format!("/connections/{}", c.id),
        format!("/users/{}", u.id),
    ] {
        let r = env.delete(&tok, &path).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "DELETE {path}");
        assert_eq!(r.error(), "sync_in_progress");
    }
    assert_eq!(
        env.post(&tok, &format!("{sync}?type=ALL")).await.status,
        StatusCode::CONFLICT
    );
    assert_eq!(
        env.get(&tok, &format!("/accounts/{a}")).await.status,
        StatusCode::OK
    );

    let events = env.wait_event(&tok, "SYNC_SUCCESS", &c.id).await;
    assert!(
        events
            .iter()
            .all(|e| e["event_type"] != "LIST_ACCOUNTS_SUCCESS")
    );
    assert_eq!(
        env.get(&tok, &format!("/connections/{}", c.id)).await.body["status"],
        "SUCCESS"
    );
    assert_eq!(
        env.delete(&tok, &format!("/accounts/{a}")).await.status,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn events_are_read_oldest_first_after_since() {
    let env = Env::new(SimConfig {
        sync_duration: Duration::from_millis(20),
        ..config()
    })
    .await;
    let s = env.seed(seed_req(1, 1, 3, 1, 1)).await;
    let c = &s.users[0].connections[0];
    let tok = env.client_token().await;
    assert_eq!(env.get(&tok, "/events").await.body, json!({"events": []}));
    env.post(
        &tok,
        &format!("/connections/{}/synchronize?type=LIST_ACCOUNTS", c.id),
    )
    .await;
    env.wait_event(&tok, "SYNC_SUCCESS", &c.id).await;

    let first = env.get(&tok, "/events?since=0&limit=4").await.body;
    let first = first["events"].as_array().unwrap();
    assert_eq!(first.len(), 4);
    let ids: Vec<u64> = first.iter().map(id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert!(
        first[..3]
            .iter()
            .all(|e| e["event_type"] == "LIST_ACCOUNTS_SUCCESS")
    );
    let rest = env
        .get(&tok, &format!("/events?since={}&limit=100", ids[3]))
        .await
        .body;
    let rest = rest["events"].as_array().unwrap();
    assert_eq!(rest.len(), 2);
    assert!(rest.iter().all(|e| e["event_type"] == "SYNC_SUCCESS"));
    assert!(id(&rest[0]) > ids[3]);
    let last = id(&rest[1]);
    let none = env.get(&tok, &format!("/events?since={last}")).await.body;
    assert_eq!(none, json!({"events": []}));
    let mid = env
        .get(&tok, &format!("/events?since={}", ids[1]))
        .await
        .body;
    assert_eq!(mid["events"].as_array().unwrap().len(), 4);
    assert_eq!(
        env.get(&tok, "/events?limit=101").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        env.get(&tok, "/events?since=x").await.status,
        StatusCode::BAD_REQUEST
    );
}

// ------------------------------------------------------------------------------------------------
// Rate limit and faults

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let env = Env::new(SimConfig {
        max_rps: Some(5),
        ..config()
    })
    .await;
    let s = env.seed(seed_req(1, 1, 1, 1, 1)).await;
    let path = format!("/users/{}", s.users[0].id);
    let tok = env.client_token().await;
    let (mut ok, mut limited) = (0, 0);
    for _ in 0..20 {
        let r = env.get(&tok, &path).await;
        match r.status {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                limited += 1;
                assert_eq!(r.error(), "rate_limited");
                assert!(r.retry_after().unwrap() >= 1);
            }
            s => panic!("unexpected {s}"),
        }
    }
    assert!((5..=8).contains(&ok), "ok = {ok}");
    assert_eq!(ok + limited, 20);
    // /token is not limited.
    env.client_token().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(env.get(&tok, &path).await.status, StatusCode::OK);
    // The journal has the 429s, with their Retry-After and no fault.
    let calls = env.calls(0).await;
    let c429: Vec<&Value> = calls.iter().filter(|c| c["status"] == 429).collect();
    assert_eq!(c429.len(), limited);
    assert!(
        c429.iter()
            .all(|c| c["retry_after_secs"].as_u64() >= Some(1) && c["fault"].is_null())
    );

    // At run time: off, then on again.
    let r = env
        .sim(Method::PUT, "/rate-limit", Some(json!({"max_rps": null})))
        .await;
    assert_eq!(r.body, json!({"max_rps": null}));
    for _ in 0..30 {
        assert_eq!(env.get(&tok, &path).await.status, StatusCode::OK);
    }
    env.sim(Method::PUT, "/rate-limit", Some(json!({"max_rps": 2})))
        .await;
    assert_eq!(
        env.sim(Method::GET, "/rate-limit", None).await.body,
        json!({"max_rps": 2})
    );
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(env.get(&tok, &path).await.status);
    }
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn fault_5xx_answers_errors_and_does_nothing() {
    let env = Env::new(config()).await;
    let s = env.seed(seed_req(1, 1, 1, 1, 1)).await;
    let a = &s.users[0].connections[0].channels[0].accounts[0];
    let tok = env.client_token().await;
    env.set_faults(json!({"error_rate": 1.0, "error_statuses": [503],
        "error_retry_after_secs": 7, "methods": ["DELETE"]}))
        .await;
    let r = env.delete(&tok, &format!("/accounts/{a}")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.retry_after(), Some(7));
    assert_eq!(r.error(), "service_unavailable");
    // GETs are not faulted (methods filter); the account is still there.
    assert_eq!(
        env.get(&tok, &format!("/accounts/{a}")).await.status,
        StatusCode::OK
    );

    env.set_faults(json!({"error_rate": 1.0})).await;
    let mut seen = HashSet::new();
    for _ in 0..40 {
        let r = env.delete(&tok, &format!("/accounts/{a}")).await;
        assert!(r.status.is_server_error(), "{}", r.status);
        assert!(r.body["error"].is_string());
        if r.status != StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(r.retry_after(), None);
        }
        seen.insert(r.status.as_u16());
    }
    assert_eq!(seen, HashSet::from([500, 502, 503]));
    let calls = env.calls(0).await;
    let faulted = calls.iter().filter(|c| c["fault"] == "5xx").count();
    assert_eq!(faulted, 41);
    env.set_faults(json!({})).await;
    assert_eq!(
        env.get(&tok, &format!("/accounts/{a}")).await.status,
        StatusCode::OK,
        "a 5xx never deletes"
    );
    assert_eq!(
        env.delete(&tok, &format!("/accounts/{a}")).await.status,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn fault_429_is_injected_with_retry_after_at_the_set_rate() {
    let env = Env::new(config()).await;
    let s = env.seed(seed_req(1, 1, 1, 1, 1)).await;
    let path = format!("/users/{}", s.users[0].id);
    let tok = env.client_token().await;
    env.set_faults(json!({"throttle_rate": 1.0, "throttle_retry_after_secs": 3}))
        .await;
    let r = env.get(&tok, &path).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.retry_after(), Some(3));
    let last = env.calls(0).await.pop().unwrap();
    assert_eq!(last["fault"], "429");
    assert_eq!(last["retry_after_secs"], 3);

    env.set_faults(json!({"throttle_rate": 0.5})).await;
    let mut limited = 0;
    for _ in 0..200 {
        if env.get(&tok, &path).await.status == StatusCode::TOO_MANY_REQUESTS {
            limited += 1;
        }
    }
    assert!((60..=140).contains(&limited), "limited = {limited}");
}

#[tokio::test]
async fn fault_latency_fixed_and_random() {
    let env = Env::new(config()).await;
    let s = env.seed(seed_req(1, 1, 1, 1, 1)).await;
    let path = format!("/users/{}", s.users[0].id);
    let tok = env.client_token().await;
    env.set_faults(json!({"latency_ms": 150})).await;
    let t = Instant::now();
    assert_eq!(env.get(&tok, &path).await.status, StatusCode::OK);
    assert!(t.elapsed() >= Duration::from_millis(150));
    let last = env.calls(0).await.pop().unwrap();
    assert_eq!(last["fault"], "latency");
    assert!(
        last["ended_at_ms"].as_f64().unwrap() - last["started_at_ms"].as_f64().unwrap() >= 149.0
    );

    env.set_faults(json!({"latency_jitter_ms": 80})).await;
    let mut durations = Vec::new();
    for _ in 0..12 {
        let t = Instant::now();
        env.get(&tok, &path).await;
        durations.push(t.elapsed());
    }
    let max = durations.iter().max().unwrap();
    let min = durations.iter().min().unwrap();
    assert!(*max <= Duration::from_millis(400), "{durations:?}");
    assert!(
        *max - *min >= Duration::from_millis(10),
        "random: {durations:?}"
    );

    env.set_faults(json!({})).await;
    let t = Instant::now();
    env.get(&tok, &path).await;
    assert!(t.elapsed() < Duration::from_millis(100));
    assert!(env.calls(0).await.pop().unwrap()["fault"].is_null());
}

#[tokio::test]
async fn fault_hang_makes_the_client_time_out_and_does_nothing() {
    let env = Env::new(config()).await;
    let s = env.seed(seed_req(1, 1, 1, 1, 1)).await;
    let a = &s.users[0].connections[0].channels[0].accounts[0];
    let tok = env.client_token().await;
    env.set_faults(json!({"hang_rate": 1.0, "hang_ms": 700}))
        .await;
    let short = Client::builder()
        .timeout(Duration::from_millis(250))
        .build()
        .unwrap();
    let t = Instant::now();
    let err = short
        .delete(env.api(&format!("/accounts/{a}")))
        .bearer_auth(&tok)
        .send()
        .await
        .expect_err("the call hangs");
    assert!(err.is_timeout(), "{err:?}");
    assert!(t.elapsed() < Duration::from_millis(650));
    // Once the hang is over, the call is journaled as a hang, and the account was not deleted.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let calls = env.calls(0).await;
    let hung = calls
        .iter()
        .find(|c| c["method"] == "DELETE")
        .expect("journaled");
    assert_eq!(hung["fault"], "hang");
    assert!(
        [0, 504].contains(&hung["status"].as_u64().unwrap()),
        "{hung}"
    );
    env.set_faults(json!({})).await;
    assert_eq!(
        env.get(&tok, &format!("/accounts/{a}")).await.status,
        StatusCode::OK
    );
    // A patient client gets a 504 after the hang.
    env.set_faults(json!({"hang_rate": 1.0, "hang_ms": 100}))
        .await;
    let r = env.get(&tok, &format!("/accounts/{a}")).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test]
async fn fault_drop_gives_a_connection_error_and_does_nothing() {
    let env = Env::new(config()).await;
    let s = env.seed(seed_req(1, 1, 1, 1, 1)).await;
    let a = &s.users[0].connections[0].channels[0].accounts[0];
    let tok = env.client_token().await;
    // Warm the pooled keep-alive connection first.
    assert_eq!(
        env.get(&tok, &format!("/accounts/{a}")).await.status,
        StatusCode::OK
    );
    env.set_faults(json!({"drop_rate": 1.0, "methods": ["DELETE"]}))
        .await;
    for _ in 0..3 {
        let err = env
            .http
            .delete(env.api(&format!("/accounts/{a}")))
            .bearer_auth(&tok)
            .send()
            .await
            .expect_err("no HTTP answer");
        assert!(!err.is_timeout() && err.status().is_none(), "{err:?}");
    }
    let calls = env.calls(0).await;
    let dropped: Vec<&Value> = calls.iter().filter(|c| c["fault"] == "drop").collect();
    assert_eq!(dropped.len(), 3);
    assert!(dropped.iter().all(|c| c["status"] == 0));
    // The same client still works (new connection), and nothing was deleted.
    assert_eq!(
        env.get(&tok, &format!("/accounts/{a}")).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn fault_slow_delete_keeps_answering_200_for_a_while() {
    let env = Env::new(config()).await;
    let s = env.seed(seed_req(1, 2, 1, 2, 1)).await;
    let c = &s.users[0].connections;
    let a = &c[0].channels[0].accounts[0];
    let tok = env.client_token().await;
    let before = env.get(&tok, &format!("/accounts/{a}")).await.body;
    env.set_faults(json!({"slow_delete_secs": 0.6})).await;

    assert_eq!(
        env.delete(&tok, &format!("/accounts/{a}")).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        env.delete(&tok, &format!("/connections/{}", c[1].id))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let t = Instant::now();
    let r = env.get(&tok, &format!("/accounts/{a}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, before);
    assert_eq!(
        env.get(&tok, &format!("/connections/{}", c[1].id))
            .await
            .status,
        StatusCode::OK
    );
    // It is gone for real: lists do not show it and a second DELETE is 404.
    let listed = env
        .get(&tok, &format!("/accounts?connection_id={}", c[0].id))
        .await
        .body;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(
        env.delete(&tok, &format!("/accounts/{a}")).await.status,
        StatusCode::NOT_FOUND
    );
    let calls = env.calls(0).await;
    let slow = calls.iter().filter(|c| c["fault"] == "slow_delete").count();
    assert_eq!(slow, 4, "2 deletes + 2 stale GETs");
    tokio::time::sleep(Duration::from_millis(650).saturating_sub(t.elapsed())).await;
    assert_eq!(
        env.get(&tok, &format!("/accounts/{a}")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        env.get(&tok, &format!("/connections/{}", c[1].id))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn faults_endpoint_validates_and_only_touches_the_api() {
    let env = Env::new(config()).await;
    let s = env.seed(seed_req(1, 1, 1, 1, 1)).await;
    let r = env.sim(Method::GET, "/faults", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["error_rate"], 0.0);
    assert_eq!(r.body["error_statuses"], json!([500, 502, 503]));
    assert_eq!(r.body["slow_delete_secs"], 0.0);
    for bad in [
        json!({"error_rate": 2.0}),
        json!({"drop_rate": -0.1}),
        json!({"error_rate": 0.5, "error_statuses": [404]}),
        json!({"colour": "red"}),
        json!({"slow_delete_secs": -1.0}),
    ] {
        let r = env.sim(Method::PUT, "/faults", Some(bad.clone())).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(r.error(), "invalid_request");
    }
    env.set_faults(json!({"error_rate": 1.0, "latency_ms": 5}))
        .await;
    let r = env.sim(Method::GET, "/faults", None).await;
    assert_eq!(r.body["error_rate"], 1.0);
    assert_eq!(r.body["latency_ms"], 5);
    assert_eq!(env.sim.faults().error_rate, 1.0);
    // /token and /_sim are never faulted.
    let tok = env.client_token().await;
    assert_eq!(
        env.sim(Method::GET, "/health", None).await.status,
        StatusCode::OK
    );
    assert!(
        env.get(&tok, &format!("/users/{}", s.users[0].id))
            .await
            .status
            .is_server_error()
    );
    // Start-time faults are in force from the first call.
    let env2 = Env::new(SimConfig {
        faults: Faults {
            error_rate: 1.0,
            error_statuses: vec![502],
            ..Faults::default()
        },
        ..config()
    })
    .await;
    let tok2 = env2.client_token().await;
    assert_eq!(
        env2.get(&tok2, "/users/1").await.status,
        StatusCode::BAD_GATEWAY
    );
    assert!(
        Sim::start(SimConfig {
            faults: Faults {
                hang_rate: 3.0,
                ..Faults::default()
            },
            ..config()
        })
        .await
        .is_err()
    );
}

// ------------------------------------------------------------------------------------------------
// Journal, lifecycle, CLI

#[tokio::test]
async fn journal_records_calls_in_order_with_routes_and_token_kinds() {
    let env = Env::new(config()).await;
    let s = env.seed(seed_req(1, 1, 1, 2, 1)).await;
    let u = &s.users[0];
    let a = &u.connections[0].channels[0].accounts[0];
    assert_eq!(
        env.sim(Method::DELETE, "/calls", None).await.status,
        StatusCode::NO_CONTENT
    );
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as f64;
    let tok = env.client_token().await; // 1 POST /token
    let utok = env.user_token(&u.email).await; // 2 POST /token
    env.get(&tok, &format!("/users/{}", u.id)).await; // 3
    env.get(&utok, "/users/me").await; // 4
    env.call(Method::GET, &env.api("/users/me"), None, None)
        .await; // 5 (401)
    env.delete(&tok, &format!("/accounts/{a}")).await; // 6
    env.post(
        &tok,
        &format!("/connections/{}/synchronize?type=ALL", u.connections[0].id),
    )
    .await; // 7
    env.sim(Method::GET, "/health", None).await; // not journaled

    let calls = env.calls(0).await;
    assert_eq!(calls.len(), 7, "{calls:#?}");
    let seqs: Vec<u64> = calls.iter().map(|c| c["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    let row = |i: usize| {
        let c = &calls[i];
        (
            c["method"].as_str().unwrap().to_string(),
            c["route"].as_str().unwrap().to_string(),
            c["status"].as_u64().unwrap(),
            c["token_kind"].as_str().unwrap().to_string(),
        )
    };
    let expect = [
        ("POST", "/token", 200, "none"),
        ("POST", "/token", 200, "none"),
        ("GET", "/v2.1/users/{id}", 200, "client"),
        ("GET", "/v2.1/users/me", 200, "user"),
        ("GET", "/v2.1/users/me", 401, "none"),
        ("DELETE", "/v2.1/accounts/{id}", 204, "client"),
        ("POST", "/v2.1/connections/{id}/synchronize", 204, "client"),
    ];
    for (i, (m, r, s, k)) in expect.iter().enumerate() {
        assert_eq!(
            row(i),
            (m.to_string(), r.to_string(), *s, k.to_string()),
            "call {i}"
        );
    }
    assert_eq!(calls[5]["path"], format!("/v2.1/accounts/{a}"));
    assert_eq!(calls[6]["query"], "type=ALL");
    for c in &calls {
        let (st, en) = (
            c["started_at_ms"].as_f64().unwrap(),
            c["ended_at_ms"].as_f64().unwrap(),
        );
        assert!(st >= t0 - 1.0 && en >= st && en < t0 + 60_000.0, "{c}");
        assert!(c["fault"].is_null() && c["retry_after_secs"].is_null());
    }
    let tail = env.calls(seqs[4]).await;
    assert_eq!(tail.len(), 2);
    assert_eq!(tail[0]["seq"].as_u64().unwrap(), seqs[5]);
    assert_eq!(env.sim.calls(seqs[5]).len(), 1);

    env.sim(Method::DELETE, "/calls", None).await;
    assert!(env.calls(0).await.is_empty());
    env.get(&tok, &format!("/users/{}", u.id)).await;
    let after = env.calls(0).await;
    assert_eq!(after.len(), 1);
    assert!(
        after[0]["seq"].as_u64().unwrap() > seqs[6],
        "seq keeps increasing"
    );
}

#[tokio::test]
async fn journal_is_a_bounded_ring() {
    let env = Env::new(SimConfig {
        journal_capacity: 5,
        ..config()
    })
    .await;
    let tok = env.client_token().await;
    for _ in 0..9 {
        env.get(&tok, "/users/1").await;
    }
    let calls = env.calls(0).await;
    assert_eq!(calls.len(), 5);
    assert_eq!(calls[0]["seq"], 6);
    assert_eq!(calls[4]["seq"], 10);
}

#[tokio::test]
async fn stop_and_drop_stop_the_server() {
    let sim = Sim::start(config()).await.unwrap();
    let url = format!("{}/_sim/health", sim.base_url());
    assert!(sim.api_url().ends_with("/v2.1"));
    assert_eq!(sim.auth_url(), sim.base_url());
    assert_eq!(sim.base_url(), format!("http://{}", sim.addr()));
    let http = Client::new();
    assert!(http.get(&url).send().await.unwrap().status().is_success());
    sim.stop().await;
    let fresh = Client::new();
    assert!(fresh.get(&url).send().await.is_err());

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sim = Sim::start_on(config(), listener).await.unwrap();
    let url = format!("{}/_sim/health", sim.base_url());
    assert!(
        Client::new()
            .get(&url)
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    drop(sim);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(Client::new().get(&url).send().await.is_err());
}

#[test]
fn cli_arguments_map_to_the_config() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }
    let cli = Cli::try_parse_from(["erasure-sim"]).unwrap();
    assert_eq!(cli.sim.bind, "127.0.0.1:8090");
    let c = cli.sim.to_config().unwrap();
    assert_eq!((c.seed, c.users), (42, 20));
    assert_eq!(c.client_id, "erasure-sim");
    assert_eq!(c.client_secret, "sim-secret");
    assert_eq!(c.token_ttl, Duration::from_secs(3600));
    assert_eq!(c.sync_duration, Duration::from_millis(200));
    assert_eq!(c.max_rps, None);
    assert_eq!(c.faults, Faults::default());

    let cli = Cli::try_parse_from([
        "erasure-sim",
        "--bind",
        "0.0.0.0:9000",
        "--seed",
        "9",
        "--users",
        "3",
        "--client-id",
        "me",
        "--client-secret",
        "s3cret",
        "--token-ttl-secs",
        "2",
        "--max-rps",
        "50",
        "--sync-duration-ms",
        "10",
        "--fault-error-rate",
        "0.1",
        "--fault-error-retry-after-secs",
        "4",
        "--fault-throttle-rate",
        "0.2",
        "--fault-latency-ms",
        "3",
        "--fault-latency-jitter-ms",
        "4",
        "--fault-hang-rate",
        "0.01",
        "--fault-hang-ms",
        "5000",
        "--fault-drop-rate",
        "0.02",
        "--fault-slow-delete-secs",
        "1.5",
    ])
    .unwrap();
    let c = cli.sim.to_config().unwrap();
    assert_eq!((c.seed, c.users, c.client_id.as_str()), (9, 3, "me"));
    assert_eq!(c.client_secret, "s3cret");
    assert_eq!(c.token_ttl, Duration::from_secs(2));
    assert_eq!(c.max_rps, Some(50));
    assert_eq!(c.sync_duration, Duration::from_millis(10));
    assert_eq!(c.faults.error_rate, 0.1);
    assert_eq!(c.faults.error_retry_after_secs, Some(4));
    assert_eq!(c.faults.throttle_rate, 0.2);
    assert_eq!((c.faults.latency_ms, c.faults.latency_jitter_ms), (3, 4));
    assert_eq!((c.faults.hang_rate, c.faults.hang_ms), (0.01, 5000));
    assert_eq!(c.faults.drop_rate, 0.02);
    assert_eq!(c.faults.slow_delete_secs, 1.5);
    let bad = Cli::try_parse_from(["erasure-sim", "--fault-drop-rate", "1.5"]).unwrap();
    assert!(bad.sim.to_config().is_err());
}

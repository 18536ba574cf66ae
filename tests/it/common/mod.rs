//! Test harness: a fresh database per test, the simulator on port 0, the service on port 0.
#![allow(dead_code)]

pub mod console;
pub mod oidc;
pub mod otel;
pub mod pooler;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use erasure::config::{
    ApprovalPolicy, EngineSettings, GuardSettings, HttpLimits, RetentionSettings, RetryPolicy,
    UpstreamSettings, WebhookSettings,
};
use erasure::domain::Role;
use erasure::secrets::{Keys, Secret};
use erasure::service::{self, Running, ServiceConfig};
use erasure::store;
use erasure_sim::{CallRecord, SeedRequest, Sim, SimConfig};
use serde_json::{Value, json};

pub const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Creates an empty, migrated database for one test and returns its URL. Databases left by
/// earlier test processes that are no longer running are dropped first.
pub async fn fresh_database() -> String {
    let base = std::env::var("ERASURE_TEST_DATABASE_URL").unwrap_or_else(|_| ADMIN_URL.to_string());
    let root = base.rsplit_once('/').map(|(r, _)| r.to_string()).unwrap();
    let admin = sqlx::PgPool::connect(&format!("{root}/postgres")).await.expect(
        "PostgreSQL must run on 127.0.0.1:5432 (pg_ctlcluster --skip-systemctl-redirect 15 main start)",
    );
    if COUNTER.fetch_add(0, Ordering::SeqCst) == 0 {
        let stale: Vec<String> =
            sqlx::query_scalar("select datname from pg_database where datname like 'erasure_t_%'")
                .fetch_all(&admin)
                .await
                .unwrap();
        for name in stale {
            let pid: Option<i32> = name.split('_').nth(2).and_then(|p| p.parse().ok());
            let alive = pid.is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
            if !alive {
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "drop database if exists \"{name}\" with (force)"
                )))
                .execute(&admin)
                .await;
            }
        }
    }
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let name = format!("erasure_t_{}_{n}", std::process::id());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("create database \"{name}\"")))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let url = format!("{root}/{name}");
    let db = store::connect(&url, 2).await.unwrap();
    store::migrate(&db).await.unwrap();
    db.close().await;
    url
}

/// A CSV upload of 200 lines: 190 new accounts (`first`, `first + 1`, ...), 3 repeats of lines
/// above, `open_target` (a duplicate when a request for it is open), and 6 invalid lines. Every
/// valid line carries `not_before`.
pub fn upload_of_200(first: u64, open_target: &str, not_before: &str) -> String {
    let mut csv = String::from("scope,target_id,external_reference,not_before\n");
    for i in 0..190 {
        csv.push_str(&format!("account,{},B-{i},{not_before}\n", first + i));
    }
    for i in 0..3 {
        csv.push_str(&format!("account,{},B-dup,{not_before}\n", first + i));
    }
    csv.push_str(&format!("account,{open_target},B-open,{not_before}\n"));
    for bad in [
        "account,12ab",
        "planet,1",
        "account,",
        "user,-4",
        "account,01",
        "x",
    ] {
        csv.push_str(bad);
        csv.push('\n');
    }
    csv
}

/// Engine settings that make tests quick.
pub fn fast_engine() -> EngineSettings {
    EngineSettings {
        concurrency: 16,
        lease: Duration::from_secs(3),
        poll: Duration::from_millis(100),
        retry: RetryPolicy {
            base: Duration::from_millis(50),
            cap: Duration::from_millis(500),
            max_attempts: 0,
        },
        inventory_attempts: 5,
        shutdown_grace: Duration::from_secs(5),
    }
}

/// `fast_engine` with a request failing once a step has had `attempts` attempts.
pub fn giving_up_after(attempts: i32) -> EngineSettings {
    let mut engine = fast_engine();
    engine.retry.max_attempts = attempts;
    engine
}

pub struct Options {
    pub sim: SimConfig,
    pub engine: EngineSettings,
    pub approval: ApprovalPolicy,
    pub max_rps: f64,
    pub max_concurrency: usize,
    pub worker: bool,
    /// The resurrection guard beside the workers (`None`: not run).
    pub guard: Option<GuardSettings>,
    /// Limits of the HTTP API (by default: no rate per key and no cap of connections per
    /// address, so that tests sending many requests at once are not throttled).
    pub limits: HttpLimits,
    /// `ERASURE_AT_RISK_DAYS`.
    pub at_risk_days: u32,
    /// Webhooks (by default: plain http to 127.0.0.1 allowed, quick polling).
    pub webhooks: WebhookSettings,
    /// Pseudonym epochs and retention (by default: keys reloaded every 200 ms, no daily job).
    pub retention: RetentionSettings,
    /// The console's sign-in (by default: key sign-in, no provider).
    pub console: erasure::config::ConsoleSettings,
    /// Where the service listens (by default a free port: `127.0.0.1:0`).
    pub bind: String,
    /// Through a PgBouncer in transaction mode that opens at most this many server connections
    /// (`DATABASE_URL` at the pooler, `ERASURE_DATABASE_DIRECT_URL` at the server); `None`:
    /// directly.
    pub pooler: Option<u32>,
}

/// Retention settings that make tests quick: keys reloaded every 200 ms, the job only run by hand.
pub fn fast_retention() -> RetentionSettings {
    RetentionSettings {
        refresh: Duration::from_millis(200),
        run_every: None,
        ..RetentionSettings::default()
    }
}

/// Webhook settings that make tests quick: http to 127.0.0.1, polled every 50 ms.
pub fn fast_webhooks() -> WebhookSettings {
    WebhookSettings {
        allow_http_hosts: vec!["127.0.0.1".into()],
        poll: Duration::from_millis(50),
        timeout: Duration::from_secs(2),
        ..WebhookSettings::default()
    }
}

/// A guard that reads events often and never re-verifies by itself.
pub fn fast_guard() -> GuardSettings {
    GuardSettings {
        poll: Duration::from_millis(100),
        restoration_timeout: Duration::from_secs(10),
        reverify_every: None,
        retry: fast_engine().retry,
    }
}

impl Options {
    /// No engine: requests stay where the API puts them.
    pub fn no_worker() -> Self {
        Self {
            worker: false,
            ..Self::default()
        }
    }

    /// A simulator with no users: the test seeds what it needs.
    pub fn empty_sim() -> Self {
        Self {
            sim: SimConfig::default(),
            ..Self::default()
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            sim: SimConfig {
                users: 5,
                ..SimConfig::default()
            },
            engine: fast_engine(),
            approval: ApprovalPolicy::None,
            max_rps: 500.0,
            max_concurrency: 8,
            worker: true,
            guard: Some(fast_guard()),
            limits: HttpLimits {
                rate_per_key: 0.0,
                max_connections_per_ip: 0,
                ..HttpLimits::default()
            },
            at_risk_days: erasure::config::DEFAULT_AT_RISK_DAYS,
            webhooks: fast_webhooks(),
            retention: fast_retention(),
            console: Default::default(),
            bind: "127.0.0.1:0".into(),
            pooler: None,
        }
    }
}

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub sim: Sim,
    pub db_url: String,
    pub db: sqlx::PgPool,
    pub keys: Keys,
    pub requester: String,
    pub requester2: String,
    pub approver: String,
    pub auditor: String,
    pub admin: String,
    pub running: Option<Running>,
    pub options_upstream: UpstreamSettings,
    /// The PgBouncer the service goes through (`Options::pooler`).
    pub pooler: Option<std::sync::Arc<pooler::PgBouncer>>,
}

impl TestApp {
    pub async fn spawn(options: Options) -> TestApp {
        let db_url = fresh_database().await;
        let sim = Sim::start(options.sim.clone()).await.unwrap();
        let keys = Keys::random();
        let upstream = UpstreamSettings {
            api_url: sim.api_url(),
            auth_url: sim.auth_url(),
            client_id: erasure_sim::DEFAULT_CLIENT_ID.into(),
            client_secret: Secret::new(erasure_sim::DEFAULT_CLIENT_SECRET),
            max_rps: options.max_rps,
            max_concurrency: options.max_concurrency,
            timeout: Duration::from_secs(2),
        };
        let pooler = options
            .pooler
            .map(|n| std::sync::Arc::new(pooler::PgBouncer::start(n)));
        let config = ServiceConfig {
            database_url: pooler.as_ref().map_or(db_url.clone(), |p| p.url(&db_url)),
            direct_database_url: pooler.as_ref().map(|_| db_url.clone()),
            bind: Some(options.bind.clone()),
            metrics_bind: None,
            keys: keys.clone(),
            upstream: options.worker.then(|| upstream.clone()),
            engine: options.engine.clone(),
            guard: options.guard.clone(),
            approval: options.approval,
            db_pool: 20,
            http_workers: 2,
            checkpoint_every: std::time::Duration::from_secs(10),
            at_risk_days: options.at_risk_days,
            webhooks: options.webhooks.clone(),
            retention: options.retention.clone(),
            console: options.console.clone(),
        };
        let running = service::start_with(config, options.limits.clone())
            .await
            .unwrap();
        let base = format!("http://{}", running.addr.unwrap());
        let db = store::connect(&db_url, 4).await.unwrap();
        let key = |role, label: &'static str| {
            let db = db.clone();
            async move {
                store::keys::create(&db, role, label, None, store::audit::OPERATOR)
                    .await
                    .unwrap()
                    .1
            }
        };
        TestApp {
            requester: key(Role::Requester, "requester").await,
            requester2: key(Role::Requester, "requester-2").await,
            approver: key(Role::Approver, "approver").await,
            auditor: key(Role::Auditor, "auditor").await,
            admin: key(Role::Admin, "admin").await,
            base,
            http: reqwest::Client::new(),
            sim,
            db_url,
            db,
            keys,
            running: Some(running),
            options_upstream: upstream,
            pooler,
        }
    }

    /// Starts another worker process-equivalent (engine only) against the same database.
    pub async fn extra_worker(&self, engine: EngineSettings) -> Running {
        self.extra_process(engine, None).await
    }

    /// Another worker process-equivalent, with or without the resurrection guard.
    pub async fn extra_process(
        &self,
        engine: EngineSettings,
        guard: Option<GuardSettings>,
    ) -> Running {
        self.extra_process_with(engine, guard, fast_webhooks())
            .await
    }

    /// Another worker process-equivalent with the given webhook settings.
    pub async fn extra_process_with(
        &self,
        engine: EngineSettings,
        guard: Option<GuardSettings>,
        webhooks: WebhookSettings,
    ) -> Running {
        service::start(ServiceConfig {
            engine,
            guard,
            webhooks,
            ..self.extra_config()
        })
        .await
        .unwrap()
    }

    /// What another process of this app runs with: workers without an API, on this app's
    /// database, simulator and keys, with quick settings.
    pub fn extra_config(&self) -> ServiceConfig {
        ServiceConfig {
            database_url: self
                .pooler
                .as_ref()
                .map_or(self.db_url.clone(), |p| p.url(&self.db_url)),
            direct_database_url: self.pooler.as_ref().map(|_| self.db_url.clone()),
            bind: None,
            metrics_bind: None,
            keys: self.keys.clone(),
            upstream: Some(self.options_upstream.clone()),
            engine: fast_engine(),
            guard: None,
            approval: ApprovalPolicy::None,
            db_pool: 10,
            http_workers: 1,
            checkpoint_every: std::time::Duration::from_secs(10),
            at_risk_days: erasure::config::DEFAULT_AT_RISK_DAYS,
            webhooks: fast_webhooks(),
            retention: fast_retention(),
            console: Default::default(),
        }
    }

    /// Seeds `users` users of one connection, one channel and three accounts each: the accounts.
    pub fn seed_accounts(&self, users: usize) -> Vec<String> {
        let seeded = self
            .sim
            .seed(&SeedRequest {
                users,
                connections_per_user: Some(1),
                channels_per_connection: Some(1),
                accounts_per_channel: Some(3),
                ..Default::default()
            })
            .unwrap();
        seeded
            .users
            .iter()
            .flat_map(|u| &u.connections)
            .flat_map(|c| &c.channels)
            .flat_map(|ch| ch.accounts.clone())
            .collect()
    }

    /// The simulator's journal of API calls (not token requests).
    pub fn api_calls(&self) -> Vec<CallRecord> {
        self.sim
            .calls(0)
            .into_iter()
            .filter(|c| c.route.starts_with("/v2.1"))
            .collect()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Signs in to the console with `key` as a browser would (a form post from this origin) and
    /// returns the `Cookie` header of the session.
    pub async fn sign_in(&self, key: &str) -> String {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let origin = self.url("");
        let response = client
            .post(self.url("/login"))
            .header("Origin", origin.trim_end_matches('/'))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(format!("key={key}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 303, "signed in");
        let cookie = response
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .expect("a session cookie");
        cookie.split(';').next().unwrap().to_string()
    }

    /// GET returning the body as text (receipts and exports are verified byte for byte).
    pub async fn get_text(&self, path: &str, key: &str) -> (u16, String) {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Waits until `select count(*) from steps where <condition>` is positive.
    pub async fn wait_steps(&self, condition: &'static str, secs: u64) {
        let sql = format!("select count(*) from steps where {condition}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone()))
                .fetch_one(&self.db)
                .await
                .unwrap();
            if n > 0 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no step where {condition} within {secs}s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Steps still leased by some worker.
    pub async fn running_steps(&self) -> i64 {
        sqlx::query_scalar("select count(*) from steps where state = 'running'")
            .fetch_one(&self.db)
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str, key: &str) -> (u16, Value) {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Submits an erasure and returns its id (asserting 202).
    pub async fn submit(&self, scope: &str, target: &str) -> String {
        let (status, body) = self
            .post(
                "/v1/erasure-requests",
                &self.requester,
                json!({"scope": scope, "target_id": target}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        body["id"].as_str().unwrap().to_string()
    }

    /// Submits an erasure of each target, then waits for each to complete (panics after `secs`
    /// for one): the completed requests, in order.
    pub async fn erase_all(&self, scope: &str, targets: &[String], secs: u64) -> Vec<Value> {
        let mut ids = Vec::new();
        for t in targets {
            ids.push(self.submit(scope, t).await);
        }
        let mut done = Vec::new();
        for id in &ids {
            done.push(self.wait_state(id, "completed", secs).await);
        }
        done
    }

    /// Submits an erasure held back by a not-before time 300 days on, so that it stays open; its
    /// id.
    pub async fn submit_later(&self, scope: &str, target: &str) -> String {
        let later = (chrono::Utc::now() + chrono::Duration::days(300)).to_rfc3339();
        let (status, body) = self
            .post(
                "/v1/erasure-requests",
                &self.requester,
                json!({"scope": scope, "target_id": target, "not_before": later}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        body["id"].as_str().unwrap().to_string()
    }

    /// The ids of the simulator's seeded users.
    pub fn user_ids(&self) -> Vec<String> {
        self.sim
            .seeded()
            .users
            .iter()
            .map(|u| u.id.clone())
            .collect()
    }

    /// Waits until the request reaches `state` (panics after `secs`).
    pub async fn wait_state(&self, id: &str, state: &str, secs: u64) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let (status, body) = self
                .get(&format!("/v1/erasure-requests/{id}"), &self.auditor)
                .await;
            assert_eq!(status, 200, "{body}");
            if body["state"] == state {
                return body;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("request {id} did not reach {state} in {secs}s: {body:#}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Upstream GET with a fresh client token: the status.
    pub async fn upstream_status(&self, path: &str) -> u16 {
        self.upstream(reqwest::Method::GET, path).await.0
    }

    /// An upstream call with a fresh client token, as a third party (the application itself)
    /// would make it: the status and the JSON body (null when there is none).
    pub async fn upstream(&self, method: reqwest::Method, path: &str) -> (u16, Value) {
        let token: Value = self
            .http
            .post(format!("{}/token", self.sim.auth_url()))
            .json(&json!({"provider": "linxoConnect", "client_id": erasure_sim::DEFAULT_CLIENT_ID,
                "client_secret": erasure_sim::DEFAULT_CLIENT_SECRET, "grant_type": "client_credentials", "scope": "openid"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let reply = self
            .http
            .request(method, format!("{}{path}", self.sim.api_url()))
            .bearer_auth(token["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        let status = reply.status().as_u16();
        (status, reply.json().await.unwrap_or(Value::Null))
    }

    pub async fn audit_events(&self, id: &str) -> Vec<String> {
        sqlx::query_scalar(
            "select event from audit_entries where request_id = $1::uuid order by id",
        )
        .bind(id)
        .fetch_all(&self.db)
        .await
        .unwrap()
    }

    /// The real binary with this app's database, simulator and keys in its environment (quick
    /// polling and retries); add what a test needs and spawn it.
    pub fn command(&self, subcommand: &str) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_erasure"));
        cmd.arg(subcommand)
            .env("DATABASE_URL", &self.db_url)
            .env("ERASURE_UPSTREAM_API_URL", self.sim.api_url())
            .env("ERASURE_UPSTREAM_AUTH_URL", self.sim.auth_url())
            .env("ERASURE_UPSTREAM_CLIENT_ID", erasure_sim::DEFAULT_CLIENT_ID)
            .env(
                "ERASURE_UPSTREAM_CLIENT_SECRET",
                erasure_sim::DEFAULT_CLIENT_SECRET,
            )
            .env("ERASURE_UPSTREAM_MAX_RPS", "200")
            .env(
                "ERASURE_PSEUDONYM_KEY",
                self.keys
                    .pseudonym
                    .as_ref()
                    .map(|k| k.to_hex())
                    .unwrap_or_default(),
            )
            .env("ERASURE_SIGNING_KEY", self.keys.signing.to_hex())
            .env("ERASURE_DATA_KEY", self.keys.data.to_hex())
            .env("ERASURE_POLL_MS", "100")
            .env("ERASURE_EVENTS_POLL_MS", "100")
            .env("ERASURE_REVERIFY_EVERY_HOURS", "0")
            .env("ERASURE_RETRY_BASE_SECS", "0.05")
            .env("ERASURE_RETRY_CAP_SECS", "0.5")
            .env("RUST_LOG", "warn")
            .env("ERASURE_API_RATE_PER_KEY", "0")
            .env("ERASURE_HTTP_MAX_CONNECTIONS_PER_IP", "0")
            .stdout(std::process::Stdio::null());
        cmd
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await.unwrap();
        }
    }
}

/// Whether `text` holds `id` as a whole token (not inside a longer run of letters and digits): an
/// upstream id of four digits is also, by chance, part of a microsecond or a signature.
pub fn mentions(text: &str, id: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    text.match_indices(id).any(|(at, _)| {
        !alnum(text[..at].chars().next_back()) && !alnum(text[at + id.len()..].chars().next())
    })
}

#[test]
fn mentions_finds_whole_tokens_only() {
    assert!(mentions(r#"{"target_id":"1005"}"#, "1005"));
    assert!(mentions("/accounts/1005", "1005"));
    assert!(!mentions(
        "2026-12-06T11:03:21.810051Z and dGVz1005dA",
        "1005"
    ));
}

/// A hash of an audit answer (a root, a proof step): base64 of 32 bytes.
pub fn hash_of(v: &Value) -> [u8; 32] {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

/// The consistency proof between two checkpoints (`GET /v1/audit/checkpoint` answers), checked
/// with the verifier's own code: the later log extends the earlier. Answers the proof.
pub async fn assert_log_extends(app: &TestApp, first: &Value, second: &Value) -> Vec<[u8; 32]> {
    let (m, n) = (
        first["size"].as_u64().unwrap(),
        second["size"].as_u64().unwrap(),
    );
    let (status, proof) = app
        .get(
            &format!("/v1/audit/consistency?from={m}&to={n}"),
            &app.auditor,
        )
        .await;
    assert_eq!(status, 200, "{proof}");
    let hashes: Vec<[u8; 32]> = proof["proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(hash_of)
        .collect();
    let (r1, r2) = (hash_of(&first["root_hash"]), hash_of(&second["root_hash"]));
    erasure::audit::merkle::verify_consistency(m, n, &r1, &r2, &hashes)
        .expect("the newer log extends the older");
    hashes
}

/// A child process killed when the test ends, even when it panics.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The most calls started in any one-second window.
pub fn busiest_second(calls: &[CallRecord]) -> usize {
    let mut starts: Vec<f64> = calls.iter().map(|c| c.started_at_ms).collect();
    starts.sort_by(f64::total_cmp);
    let (mut busiest, mut j) = (0, 0);
    for (i, t) in starts.iter().enumerate() {
        while starts[j] <= t - 1000.0 {
            j += 1;
        }
        busiest = busiest.max(i - j + 1);
    }
    busiest
}

/// The most calls in flight at once at the simulator.
pub fn peak_in_flight(calls: &[CallRecord]) -> i32 {
    let mut edges: Vec<(f64, i32)> = calls
        .iter()
        .flat_map(|c| [(c.started_at_ms, 1), (c.ended_at_ms, -1)])
        .collect();
    edges.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut now, mut peak) = (0, 0);
    for (_, d) in edges {
        now += d;
        peak = peak.max(now);
    }
    peak
}

/// The resource a call was to, as the service holds it after a `Retry-After`: its path, and a
/// listing's filter (the query without its page), so `/accounts?connection_id=…` of one
/// connection and of another are two resources.
pub fn resource(c: &CallRecord) -> String {
    let filter: Vec<&str> = c
        .query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("page=") && !p.starts_with("limit="))
        .collect();
    if filter.is_empty() {
        c.path.clone()
    } else {
        format!("{}?{}", c.path, filter.join("&"))
    }
}

/// Every call to a resource that reached the simulator after it answered a call to that resource
/// with a `Retry-After` came no earlier than that answer asked (less 5 ms for the clocks); calls to
/// other resources may go meanwhile. The number of such answers a later call to their resource
/// was checked against.
pub fn assert_no_call_before_retry_after(calls: &[CallRecord]) -> usize {
    let mut by_resource: std::collections::HashMap<String, Vec<&CallRecord>> = Default::default();
    for c in calls {
        by_resource.entry(resource(c)).or_default().push(c);
    }
    let mut checked = 0;
    for same in by_resource.values() {
        for c in same {
            let Some(wait) = c.retry_after_secs else {
                continue;
            };
            let free_at = c.ended_at_ms + wait as f64 * 1000.0;
            let mut later = same
                .iter()
                .filter(|n| n.started_at_ms > c.ended_at_ms)
                .peekable();
            if later.peek().is_some() {
                checked += 1;
            }
            for next in later {
                assert!(
                    next.started_at_ms >= free_at - 5.0,
                    "{} {} came {:.0} ms after a Retry-After of {wait} s for its resource",
                    next.method,
                    next.route,
                    next.started_at_ms - c.ended_at_ms
                );
            }
        }
    }
    checked
}

//! The upstream simulator: a stand-in for the Oxlin (Linxo Connect) Accounts API v2.1 as
//! `shared/UPSTREAM.md` describes it, used by the tests, the demo and the benchmarks.
//!
//! One HTTP server answers three families of routes:
//! - `POST /token` (the auth server): client-credentials and password grants;
//! - `/v2.1/*` (the API): users, connections, accounts, transactions, synchronisations, events,
//!   with the seed's delete cascade and LIST_ACCOUNTS restore;
//! - `/_sim/*` (control, not part of the upstream): health, faults, rate limit, seeding, the call
//!   journal, statistics, token revocation and the bank side (close/reopen/add accounts).
//!
//! Run it with `erasure-sim` (this crate's binary), with `erasure sim` (a service built with its
//! `sim` feature, a default one), or in-process with [`Sim::start`] (port 0) in tests.
//!
//! It depends on no part of the service, and the service depends on it only through its optional
//! `sim` feature (`erasure demo`, `erasure sim`) and in its tests: it stands in for the aggregator
//! (`tests/it/layers.rs` checks both). It holds fake data only.

use std::net::SocketAddr;
use std::time::Duration;

use actix_web::middleware::from_fn;
use actix_web::web::Data;
use actix_web::{App, HttpServer};
use anyhow::Context;

mod fake;
pub mod faults;
mod hostile;
mod http;
mod journal;
mod store;

pub use faults::Faults;
pub use journal::CallRecord;
pub use store::{
    SeedRequest, SeedResponse, SeededChannel, SeededConnection, SeededUser, Stats, USER_PASSWORD,
};

use http::Shared;

/// Client id the simulator accepts unless configured otherwise.
pub const DEFAULT_CLIENT_ID: &str = "erasure-sim";
/// Client secret the simulator accepts unless configured otherwise (not a secret).
pub const DEFAULT_CLIENT_SECRET: &str = "sim-secret";

/// Settings of a simulator.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seed of the fake data: the same seed (and the same seeding calls) give the same data.
    pub seed: u64,
    /// Users seeded at start (with the default random shape of `/_sim/seed`).
    pub users: usize,
    pub client_id: String,
    pub client_secret: String,
    /// `expires_in` of the tokens it issues.
    pub token_ttl: Duration,
    /// Requests per second allowed on `/v2.1/*` (beyond: 429 with `Retry-After`); None = no limit.
    pub max_rps: Option<u32>,
    /// How long a synchronisation keeps its connection RUNNING.
    pub sync_duration: Duration,
    /// Fault settings at start.
    pub faults: Faults,
    /// Records kept by the call journal (oldest dropped first); 0 disables it.
    pub journal_capacity: usize,
    /// HTTP worker threads.
    pub workers: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 42,
            users: 0,
            client_id: DEFAULT_CLIENT_ID.into(),
            client_secret: DEFAULT_CLIENT_SECRET.into(),
            token_ttl: Duration::from_secs(3600),
            max_rps: None,
            sync_duration: Duration::from_millis(200),
            faults: Faults::default(),
            journal_capacity: 1_000_000,
            workers: 2,
        }
    }
}

/// A running simulator. Dropping it stops the server (without waiting); [`Sim::stop`] waits.
pub struct Sim {
    addr: SocketAddr,
    handle: actix_web::dev::ServerHandle,
    shared: Data<Shared>,
    seeded: SeedResponse,
}

impl Sim {
    /// Starts a simulator on `127.0.0.1:0`.
    pub async fn start(config: SimConfig) -> anyhow::Result<Sim> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
        Self::start_on(config, listener).await
    }

    /// Starts a simulator on an already bound listener.
    pub async fn start_on(
        config: SimConfig,
        listener: std::net::TcpListener,
    ) -> anyhow::Result<Sim> {
        config
            .faults
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid fault settings: {e}"))?;
        let shared = Data::new(Shared::new(&config));
        let seeded = shared.write().seed(&SeedRequest {
            users: config.users,
            ..SeedRequest::default()
        });
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let app_shared = shared.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(app_shared.clone())
                .wrap(from_fn(http::gate))
                .configure(http::configure)
        })
        .workers(config.workers.max(1))
        .disable_signals()
        .shutdown_timeout(1)
        .on_connect(http::on_connect)
        .listen(listener)
        .context("listening")?
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(Sim {
            addr,
            handle,
            shared,
            seeded,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://HOST:PORT`: where `/_sim/*` lives.
    pub fn base_url(&self) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{addr}")
    }

    /// The auth server's base: `POST {auth_url}/token`.
    pub fn auth_url(&self) -> String {
        self.base_url()
    }

    /// The API base: `http://HOST:PORT/v2.1`.
    pub fn api_url(&self) -> String {
        format!("{}/v2.1", self.base_url())
    }

    /// What was seeded at start (`SimConfig::users`).
    pub fn seeded(&self) -> &SeedResponse {
        &self.seeded
    }

    /// Creates more data, like `POST /_sim/seed`.
    pub fn seed(&self, req: &SeedRequest) -> anyhow::Result<SeedResponse> {
        req.validate().map_err(|e| anyhow::anyhow!(e))?;
        Ok(self.shared.write().seed(req))
    }

    /// Every bearer token issued and not revoked (tests look for them in logs).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.shared.token_values()
    }

    /// The fault settings in force.
    pub fn faults(&self) -> Faults {
        (*self.shared.faults()).clone()
    }

    /// Changes the fault settings, like `PUT /_sim/faults`.
    pub fn set_faults(&self, faults: Faults) -> anyhow::Result<()> {
        faults.validate().map_err(|e| anyhow::anyhow!(e))?;
        self.shared.set_faults(faults);
        Ok(())
    }

    /// Changes the rate limit, like `PUT /_sim/rate-limit`.
    pub fn set_max_rps(&self, max_rps: Option<u32>) {
        self.shared.limiter.set(max_rps);
    }

    /// Journal records with `seq > since`, like `GET /_sim/calls?since=`.
    pub fn calls(&self, since: u64) -> Vec<CallRecord> {
        self.shared.journal.since(since, usize::MAX)
    }

    /// Empties the journal, like `DELETE /_sim/calls`.
    pub fn clear_calls(&self) {
        self.shared.journal.clear();
    }

    /// Counts of what the aggregator holds.
    pub fn stats(&self) -> Stats {
        self.shared.read().stats()
    }

    /// Stops the server, letting calls in flight finish (at most one second).
    pub async fn stop(self) {
        self.handle.stop(true).await;
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        // The stop command is sent when `stop` is called; the returned future only waits for it.
        drop(self.handle.stop(false));
    }
}

/// Command-line settings of `erasure sim` (each also `ERASURE_SIM_<NAME>`).
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, env = "ERASURE_SIM_BIND", default_value = "127.0.0.1:8090")]
    pub bind: String,
    /// Seed of the fake data.
    #[arg(long, env = "ERASURE_SIM_SEED", default_value_t = 42)]
    pub seed: u64,
    /// Users seeded at start.
    #[arg(long, env = "ERASURE_SIM_USERS", default_value_t = 20)]
    pub users: usize,
    /// Client id accepted by POST /token.
    #[arg(long, env = "ERASURE_SIM_CLIENT_ID", default_value = DEFAULT_CLIENT_ID)]
    pub client_id: String,
    /// Client secret accepted by POST /token.
    #[arg(
        long,
        env = "ERASURE_SIM_CLIENT_SECRET",
        default_value = DEFAULT_CLIENT_SECRET,
        hide_default_value = true,
        hide_env_values = true
    )]
    pub client_secret: String,
    /// Lifetime (`expires_in`) of issued tokens, in seconds.
    #[arg(long, env = "ERASURE_SIM_TOKEN_TTL_SECS", default_value_t = 3600)]
    pub token_ttl_secs: u64,
    /// Requests per second allowed on /v2.1 before 429 (0 or absent: no limit).
    #[arg(long, env = "ERASURE_SIM_MAX_RPS")]
    pub max_rps: Option<u32>,
    /// How long a synchronisation keeps its connection RUNNING, in milliseconds.
    #[arg(long, env = "ERASURE_SIM_SYNC_DURATION_MS", default_value_t = 200)]
    pub sync_duration_ms: u64,
    /// HTTP worker threads.
    #[arg(long, env = "ERASURE_SIM_WORKERS", default_value_t = 2)]
    pub workers: usize,
    /// Records kept by the call journal.
    #[arg(
        long,
        env = "ERASURE_SIM_JOURNAL_CAPACITY",
        default_value_t = 1_000_000
    )]
    pub journal_capacity: usize,
    /// Fault: probability (0..1) of a 500/502/503 answer.
    #[arg(long, env = "ERASURE_SIM_FAULT_ERROR_RATE", default_value_t = 0.0)]
    pub fault_error_rate: f64,
    /// Fault: `Retry-After` seconds sent with injected 503s.
    #[arg(long, env = "ERASURE_SIM_FAULT_ERROR_RETRY_AFTER_SECS")]
    pub fault_error_retry_after_secs: Option<u64>,
    /// Fault: probability (0..1) of an injected 429.
    #[arg(long, env = "ERASURE_SIM_FAULT_THROTTLE_RATE", default_value_t = 0.0)]
    pub fault_throttle_rate: f64,
    /// Fault: `Retry-After` seconds of injected 429s.
    #[arg(
        long,
        env = "ERASURE_SIM_FAULT_THROTTLE_RETRY_AFTER_SECS",
        default_value_t = 1
    )]
    pub fault_throttle_retry_after_secs: u64,
    /// Fault: fixed latency added to every call, in milliseconds.
    #[arg(long, env = "ERASURE_SIM_FAULT_LATENCY_MS", default_value_t = 0)]
    pub fault_latency_ms: u64,
    /// Fault: random latency added to every call, uniform in 0..=N milliseconds.
    #[arg(long, env = "ERASURE_SIM_FAULT_LATENCY_JITTER_MS", default_value_t = 0)]
    pub fault_latency_jitter_ms: u64,
    /// Fault: probability (0..1) that a call hangs.
    #[arg(long, env = "ERASURE_SIM_FAULT_HANG_RATE", default_value_t = 0.0)]
    pub fault_hang_rate: f64,
    /// Fault: how long a hanging call hangs, in milliseconds.
    #[arg(long, env = "ERASURE_SIM_FAULT_HANG_MS", default_value_t = 30_000)]
    pub fault_hang_ms: u64,
    /// Fault: probability (0..1) that the connection is dropped instead of answering.
    #[arg(long, env = "ERASURE_SIM_FAULT_DROP_RATE", default_value_t = 0.0)]
    pub fault_drop_rate: f64,
    /// Fault: seconds during which a deleted resource still answers GET with 200.
    #[arg(
        long,
        env = "ERASURE_SIM_FAULT_SLOW_DELETE_SECS",
        default_value_t = 0.0
    )]
    pub fault_slow_delete_secs: f64,
}

impl SimArgs {
    /// The simulator settings these arguments describe.
    pub fn to_config(&self) -> anyhow::Result<SimConfig> {
        let faults = Faults {
            error_rate: self.fault_error_rate,
            error_retry_after_secs: self.fault_error_retry_after_secs,
            throttle_rate: self.fault_throttle_rate,
            throttle_retry_after_secs: self.fault_throttle_retry_after_secs,
            latency_ms: self.fault_latency_ms,
            latency_jitter_ms: self.fault_latency_jitter_ms,
            hang_rate: self.fault_hang_rate,
            hang_ms: self.fault_hang_ms,
            drop_rate: self.fault_drop_rate,
            slow_delete_secs: self.fault_slow_delete_secs,
            ..Faults::default()
        };
        faults
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid fault settings: {e}"))?;
        Ok(SimConfig {
            seed: self.seed,
            users: self.users,
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            token_ttl: Duration::from_secs(self.token_ttl_secs),
            max_rps: self.max_rps.filter(|r| *r > 0),
            sync_duration: Duration::from_millis(self.sync_duration_ms),
            faults,
            journal_capacity: self.journal_capacity,
            workers: self.workers,
        })
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Runs the simulator until SIGINT or SIGTERM.
pub async fn run(args: SimArgs) -> anyhow::Result<()> {
    let config = args.to_config()?;
    let listener = std::net::TcpListener::bind(&args.bind)
        .with_context(|| format!("binding {}", args.bind))?;
    let users = config.users;
    let sim = Sim::start_on(config, listener).await?;
    println!("erasure sim: API base {}", sim.api_url());
    println!("erasure sim: auth URL {} (POST /token)", sim.auth_url());
    println!("erasure sim: control {}/_sim", sim.base_url());
    println!("erasure sim: client id {}", args.client_id);
    if args.client_secret == DEFAULT_CLIENT_SECRET {
        println!("erasure sim: client secret: default ({DEFAULT_CLIENT_SECRET})");
    } else {
        println!("erasure sim: client secret: set (not shown)");
    }
    println!(
        "erasure sim: seed {}, {users} users seeded, user password {USER_PASSWORD}",
        args.seed
    );
    shutdown_signal().await;
    println!("erasure sim: stopping");
    sim.stop().await;
    Ok(())
}

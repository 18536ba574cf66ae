//! Starting and stopping the API and the workers, shared by `serve`, `worker`, `demo` and tests.
//!
//! It holds no logic of a part: it builds each part from its settings and starts and stops them.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::app::App;
use crate::audit::checkpoint::Signer;
use crate::audit::log::AuditLog;
use crate::audit::seal::Sealer;
use crate::config::{
    ApprovalPolicy, ConsoleSettings, EngineSettings, GuardSettings, HttpLimits, RetentionSettings,
    UpstreamSettings, WebhookSettings,
};
use crate::engine::Engine;
use crate::engine::shares::Shares;
use crate::guard::Guard;
use crate::guard::restore::RestoreCheck;
use crate::secrets::Keys;
use crate::store::intake;
use crate::store::ready::Ready;
use crate::store::{self, Db};
use crate::upstream::Upstream;
use crate::webhooks::Webhooks;

/// The name of the checkpoint signing key (in signed notes and the verifier key).
pub const AUDIT_KEY_NAME: &str = "erasure-audit";
/// The origin line of checkpoints: which log they are of.
pub const AUDIT_ORIGIN: &str = "erasure/audit-log/v1";

/// Writers that commit single requests in groups (`store::intake`), per HTTP worker: three, so
/// that groups commit while the next ones gather. Two or four measured the same (BENCHMARKS.md,
/// 2026-11-30 morning); with one set of writers for the process, three had beaten four in every
/// paired run, and two, six or eight were no better (2026-11-30).
const INTAKE_WRITERS: usize = 3;

/// Connections each HTTP worker takes from the process's `db_pool` for its own intake writers and
/// key checks.
const WORKER_CONNECTIONS: u32 = INTAKE_WRITERS as u32 + store::keys::CHECKERS as u32;

/// Connections left for everything else (reads, transitions, batches, the audit sequencer, the
/// engine), at least.
const SHARED_CONNECTIONS: u32 = 4;

/// What to run.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub database_url: String,
    /// `ERASURE_DATABASE_DIRECT_URL`: when set, `database_url` is a pooler in transaction mode
    /// (PgBouncer) and what needs a session goes here (`store::Sessions`).
    pub direct_database_url: Option<String>,
    /// Where the API listens; `None` runs workers only.
    pub bind: Option<String>,
    /// Where a process without the API serves `/metrics` and health; `None`: nowhere.
    pub metrics_bind: Option<String>,
    pub keys: Keys,
    /// Where the workers erase; `None` runs the API only.
    pub upstream: Option<UpstreamSettings>,
    pub engine: EngineSettings,
    /// The resurrection guard, run beside the workers; `None`: not in this process.
    pub guard: Option<GuardSettings>,
    pub approval: ApprovalPolicy,
    pub db_pool: u32,
    pub http_workers: usize,
    /// How often the audit log is sequenced and a checkpoint signed (when it grew); sooner when
    /// `ERASURE_CHECKPOINT_EVERY_ENTRIES` entries wait (`config::checkpoint_every_entries`).
    pub checkpoint_every: std::time::Duration,
    /// Days before its due date from which an open request is at risk (`ERASURE_AT_RISK_DAYS`).
    pub at_risk_days: u32,
    /// Webhooks: delivered by processes that run workers; their URLs checked by the API.
    pub webhooks: WebhookSettings,
    /// Pseudonym epochs (every process) and the retention job (processes that run workers).
    pub retention: RetentionSettings,
    /// The console's sign-in: sessions, key sign-in, the OpenID Provider.
    pub console: ConsoleSettings,
}

/// A running service.
pub struct Running {
    pub addr: Option<SocketAddr>,
    pub db: Db,
    shutdown: CancellationToken,
    server: Option<actix_web::dev::ServerHandle>,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// This process's share of the upstream caps (processes that run workers).
    shares: Option<Shares>,
}

pub async fn start(config: ServiceConfig) -> anyhow::Result<Running> {
    start_with(config, HttpLimits::default()).await
}

/// `start` with the given limits of the HTTP API.
pub async fn start_with(config: ServiceConfig, limits: HttpLimits) -> anyhow::Result<Running> {
    let (db, sessions) = match &config.direct_database_url {
        None => {
            let db = store::connect(&config.database_url, shared_connections(&config)?).await?;
            let sessions = store::Sessions::of(&db);
            (db, sessions)
        }
        Some(direct) => (
            store::connect_pooled(&config.database_url, shared_connections(&config)?).await?,
            store::Sessions::direct(direct)?,
        ),
    };
    store::check_migrated(&db).await?;
    let sealer = Sealer::new(&config.keys.data);
    let retention = config.retention.clone();
    let pseudonyms =
        crate::audit::epochs::start(&db, &sealer, &config.keys, retention.epoch_days).await?;
    let shutdown = CancellationToken::new();
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(
        crate::audit::epochs::run(
            db.clone(),
            sealer.clone(),
            pseudonyms.clone(),
            retention.clone(),
            shutdown.clone(),
        )
        .map(Ok),
    ));
    let mut addr = None;
    let mut server = None;
    let audit = Arc::new(AuditLog::new(
        db.clone(),
        Signer::new(AUDIT_KEY_NAME, config.keys.signing.bytes()),
        AUDIT_ORIGIN,
    ));
    {
        let audit = audit.clone();
        let stop = shutdown.clone();
        let every = config.checkpoint_every;
        let every_entries = crate::config::checkpoint_every_entries()?;
        tasks.push(tokio::spawn(async move {
            audit.run(every, every_entries, stop).await;
            Ok(())
        }));
    }
    let ready = Ready::new();
    tasks.push(tokio::spawn(
        ready.clone().run(db.clone(), shutdown.clone()).map(Ok),
    ));
    let upstream = match &config.upstream {
        Some(settings) => Some(Arc::new(Upstream::new(settings.clone())?)),
        None => None,
    };
    // A paused deployment stays paused through a restart: nothing is sent before the switch is
    // read, then it is followed.
    if let Some(upstream) = &upstream {
        crate::engine::pause::apply(&db, upstream).await?;
        tasks.push(tokio::spawn(
            crate::engine::pause::follow(db.clone(), upstream.clone(), shutdown.clone()).map(Ok),
        ));
    }
    // A process that calls the upstream takes its share of the deployment's caps; until the
    // first round grants it, it sends nothing.
    let shares = upstream
        .as_ref()
        .map(|upstream| Shares::start(db.clone(), upstream.clone()));
    let rates = Arc::new(api::limits::KeyRates::new(
        limits.rate_per_key,
        limits.burst_per_key,
    ));
    // Called on each HTTP worker's thread: the worker's intake writers and key checks run there,
    // on connections of their own, so a request is checked and committed without leaving its thread
    // (handing it to another thread and back cost a quarter of the service's CPU in thread
    // wake-ups; BENCHMARKS.md, 2026-11-30).
    let state = {
        let (db, upstream, pseudonyms, sealer, audit, ready, limits) = (
            db.clone(),
            upstream.clone(),
            pseudonyms.clone(),
            sealer.clone(),
            audit.clone(),
            ready.clone(),
            limits.clone(),
        );
        let (approval, at_risk_days) = (config.approval, config.at_risk_days);
        let retention_days = retention.retention_days;
        let webhooks = std::sync::Arc::new(config.webhooks.clone());
        let restore_check =
            upstream.map(|upstream| RestoreCheck::new(db.clone(), upstream, pseudonyms.clone()));
        move || AppState {
            app: App {
                db: db.clone(),
                restore_check: restore_check.clone(),
                pseudonyms: pseudonyms.clone(),
                sealer: sealer.clone(),
                approval,
                at_risk_days,
                retention_days,
                webhooks: webhooks.clone(),
                audit: audit.clone(),
                ready: ready.clone(),
                intake: intake::start(&db, ready.clone(), INTAKE_WRITERS),
                keys: store::keys::checks(&db),
            },
            rates: rates.clone(),
            limits: limits.clone(),
        }
    };
    let http = match (&config.bind, &config.metrics_bind) {
        (Some(bind), _) => {
            let listener = std::net::TcpListener::bind(bind)
                .with_context(|| format!("cannot listen on {bind}"))?;
            addr = Some(listener.local_addr()?);
            Some(api::serve(
                listener,
                &limits,
                state,
                config.http_workers,
                crate::console::pages(crate::console::oidc::SignIn::new(config.console.clone())?),
            )?)
        }
        (None, Some(bind)) => {
            let listener = std::net::TcpListener::bind(bind)
                .with_context(|| format!("cannot listen on {bind} (metrics)"))?;
            addr = Some(listener.local_addr()?);
            Some(api::serve_metrics(listener, state())?)
        }
        (None, None) => None,
    };
    if let Some(http) = http {
        server = Some(http.handle());
        tasks.push(tokio::spawn(async move {
            http.await.map_err(anyhow::Error::from)
        }));
    }
    if let Some(upstream) = upstream {
        // A token at hand before the first step needs one, renewed before it expires.
        tasks.push(tokio::spawn(
            upstream.clone().keep_token(shutdown.clone()).map(Ok),
        ));
        tasks.push(tokio::spawn(
            crate::audit::retention::run(
                db.clone(),
                sessions.clone(),
                sealer.clone(),
                pseudonyms.clone(),
                retention,
                shutdown.clone(),
            )
            .map(Ok),
        ));
        let webhooks = Webhooks::new(db.clone(), sealer.clone(), config.webhooks.clone())?;
        tasks.push(tokio::spawn(webhooks.run(shutdown.clone())));
        if let Some(settings) = &config.guard {
            let guard = Guard::new(
                db.clone(),
                sessions.clone(),
                upstream.clone(),
                sealer.clone(),
                pseudonyms.clone(),
                settings.clone(),
                ready.clone(),
            );
            tasks.push(tokio::spawn(guard.run(shutdown.clone())));
        }
        // Other processes' steps wake this one's workers (a LISTEN: a session).
        tasks.push(tokio::spawn(
            ready
                .clone()
                .listen(sessions.clone(), shutdown.clone())
                .map(Ok),
        ));
        let engine = Engine::new(
            db.clone(),
            upstream,
            sealer,
            pseudonyms,
            config.engine.clone(),
            ready,
            config.at_risk_days,
        );
        tasks.push(tokio::spawn(engine.run(shutdown.clone())));
    }
    Ok(Running {
        addr,
        db,
        shutdown,
        server,
        tasks,
        shares,
    })
}

/// The main pool's size: `db_pool` less what the HTTP workers take for their own.
fn shared_connections(config: &ServiceConfig) -> anyhow::Result<u32> {
    let workers = if config.bind.is_some() {
        config.http_workers.max(1) as u32
    } else {
        0
    };
    let shared = config.db_pool.saturating_sub(workers * WORKER_CONNECTIONS);
    if shared < SHARED_CONNECTIONS {
        anyhow::bail!(
            "ERASURE_DB_POOL={} is too small for {workers} HTTP workers: each takes \
             {WORKER_CONNECTIONS} connections for intake and {SHARED_CONNECTIONS} more are needed; \
             set it to at least {}",
            config.db_pool,
            workers * WORKER_CONNECTIONS + SHARED_CONNECTIONS
        );
    }
    Ok(shared)
}

impl Running {
    /// This process's id among those sharing the upstream caps (`upstream_shares`), if it
    /// calls the upstream.
    pub fn upstream_process(&self) -> Option<uuid::Uuid> {
        self.shares.as_ref().map(Shares::process_id)
    }

    /// Stops claiming, lets running steps finish within the grace period, stops the API; then
    /// gives the share of the upstream caps back.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        if let Some(server) = &self.server {
            server.stop(true).await;
        }
        let mut result = Ok(());
        for task in self.tasks {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = result.and(Err(e)),
                Err(e) => result = result.and(Err(e.into())),
            }
        }
        if let Some(shares) = self.shares {
            shares.leave().await;
        }
        self.db.close().await;
        result
    }

    /// Stops at once, as a crash would: nothing is given back; leases expire by themselves.
    pub async fn abort(self) {
        if let Some(server) = &self.server {
            server.stop(false).await;
        }
        if let Some(shares) = self.shares {
            shares.abort().await;
        }
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }

    /// Runs until SIGINT or SIGTERM, then stops gracefully.
    pub async fn until_signal(self) -> anyhow::Result<()> {
        wait_for_signal().await;
        tracing::info!("signal received: shutting down");
        self.stop().await
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(db_pool: u32, http_workers: usize, api: bool) -> ServiceConfig {
        ServiceConfig {
            database_url: "postgres://postgres@127.0.0.1/erasure".into(),
            direct_database_url: None,
            bind: api.then(|| "127.0.0.1:0".into()),
            metrics_bind: None,
            keys: Keys::random(),
            upstream: None,
            engine: EngineSettings::default(),
            guard: None,
            approval: ApprovalPolicy::default(),
            db_pool,
            http_workers,
            checkpoint_every: std::time::Duration::from_secs(10),
            at_risk_days: crate::config::DEFAULT_AT_RISK_DAYS,
            webhooks: WebhookSettings::default(),
            retention: RetentionSettings::default(),
            console: Default::default(),
        }
    }

    /// `ERASURE_DB_POOL` is the process's total: the HTTP workers' own pools come out of it, and
    /// a pool too small for them is refused at start, naming the size that would do.
    #[test]
    fn http_workers_take_their_connections_from_the_pool() {
        assert_eq!(shared_connections(&config(40, 2, true)).unwrap(), 30);
        assert_eq!(shared_connections(&config(40, 2, false)).unwrap(), 40);
        assert_eq!(shared_connections(&config(9, 1, true)).unwrap(), 4);
        let e = shared_connections(&config(13, 2, true)).unwrap_err();
        assert!(e.to_string().contains("at least 14"), "{e}");
    }
}

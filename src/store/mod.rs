//! PostgreSQL through sqlx: connection, migrations, and one module per table family. SQL lives
//! here only (DESIGN.md, invariant 7; `tests/it/layers.rs`): the other parts call named functions,
//! so that a schema change touches this folder.
//!
//! Never takes or stores personal data in clear: targets arrive as pseudonyms or sealed, and
//! nothing here logs the values it reads or writes. Never answers HTTP, calls the aggregator or
//! decides policy (when to retry, what to erase): it reads and writes what it is told.

pub mod audit;
pub mod bulk;
pub mod copy;
pub mod epochs;
pub mod group;
pub mod guard;
pub mod idempotency;
pub mod intake;
pub mod keys;
pub mod lease;
pub mod locks;
pub mod metrics;
pub mod pause;
pub mod people;
pub mod ready;
pub mod requests;
pub mod restorations;
pub mod reverify;
pub mod sessions;
pub mod shares;
pub mod status;
pub mod steps;
pub mod tree;
pub mod webhooks;

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

pub type Db = PgPool;

/// What a store function fails with.
pub type Error = sqlx::Error;

/// The channel workers LISTEN on; sent when a step becomes ready.
pub const READY_CHANNEL: &str = "erasure_steps_ready";

fn options(url: &str) -> anyhow::Result<PgConnectOptions> {
    options_of("DATABASE_URL", url)
}

fn options_of(setting: &str, url: &str) -> anyhow::Result<PgConnectOptions> {
    PgConnectOptions::from_str(url)
        .with_context(|| format!("{setting} is not a valid postgres:// URL"))
        .map(|o| o.log_statements(tracing::log::LevelFilter::Trace))
}

/// Opens a pool; if PostgreSQL cannot be reached, says so in one line with the fix.
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Db> {
    let opts = options(url)?;
    pool_options(max_connections)
        .connect_with(opts.clone())
        .await
        .map_err(|e| unreachable_hint(&opts, e))
}

/// Opens the service's pool through a pooler in transaction mode (PgBouncer): no statement
/// outlives its sequence (the statement cache off: unnamed statements, one Sync each;
/// `vendor/README.md`), and no startup parameter a pooler may refuse (`extra_float_digits`).
/// What needs a session goes through [`Sessions`] on the direct URL.
pub async fn connect_pooled(url: &str, max_connections: u32) -> anyhow::Result<Db> {
    let opts = options(url)?
        .statement_cache_capacity(0)
        .extra_float_digits(None);
    pool_options(max_connections)
        .connect_with(opts.clone())
        .await
        .map_err(|e| unreachable_hint(&opts, e))
}

/// Connections for work that needs a session of its own, which a transaction-mode pooler cannot
/// give: LISTEN (`ready`), the event reader's session lock (`locks::try_for_session`), `VACUUM`
/// with a lock time-out (`epochs::compact`). The direct URL when the service goes through a
/// pooler (`ERASURE_DATABASE_DIRECT_URL`), else the service's own pool.
#[derive(Debug, Clone)]
pub struct Sessions(Db);

/// Connections a process holds on the direct URL at most: the LISTEN, the event reader's lock,
/// one for `VACUUM`.
const SESSION_CONNECTIONS: u32 = 3;

impl Sessions {
    /// Sessions from the service's own pool (no pooler in between).
    pub fn of(db: &Db) -> Self {
        Self(db.clone())
    }

    /// A small pool on the direct URL; it connects when first used.
    pub fn direct(url: &str) -> anyhow::Result<Self> {
        let opts = options_of("ERASURE_DATABASE_DIRECT_URL", url)?;
        Ok(Self(
            pool_options(SESSION_CONNECTIONS).connect_lazy_with(opts),
        ))
    }

    pub fn pool(&self) -> &Db {
        &self.0
    }
}

/// Another pool of `max_connections` to `db`'s database. It connects when first used, so its
/// connections belong to the runtime (the thread) of the tasks that use it.
pub fn lazy_pool(db: &Db, max_connections: u32) -> Db {
    pool_options(max_connections).connect_lazy_with((*db.connect_options()).clone())
}

/// The settings of every pool of the service.
fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
}

fn unreachable_hint(opts: &PgConnectOptions, e: sqlx::Error) -> anyhow::Error {
    let db = opts.get_database().unwrap_or("?");
    match &e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => anyhow::anyhow!(
            "cannot reach PostgreSQL at {}:{} ({e}); start it, e.g. \
             `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, or set DATABASE_URL",
            opts.get_host(),
            opts.get_port()
        ),
        sqlx::Error::Database(d) if d.code().as_deref() == Some("3D000") => anyhow::anyhow!(
            "database \"{db}\" does not exist; create it with `createdb -h {} -U postgres {db}` \
             or run `erasure demo`, which creates it",
            opts.get_host()
        ),
        _ => anyhow::anyhow!("cannot connect to PostgreSQL: {e}"),
    }
}

/// Creates the database named in the URL when it is missing (used by `demo` and tests).
pub async fn ensure_database(url: &str) -> anyhow::Result<()> {
    let opts = options(url)?;
    let name = opts
        .get_database()
        .context("DATABASE_URL names no database")?
        .to_string();
    let admin = opts.clone().database("postgres");
    let mut conn = admin
        .connect()
        .await
        .map_err(|e| unreachable_hint(&admin, e))?;
    let exists: bool =
        sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
            .bind(&name)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        let sql = format!("create database {quoted}");
        match sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
        {
            Ok(_) => {}
            // Another process created it at the same moment.
            Err(sqlx::Error::Database(d)) if d.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The migrations this build carries.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Applies the migrations.
pub async fn migrate(db: &Db) -> anyhow::Result<()> {
    MIGRATOR.run(db).await.context("applying migrations")?;
    Ok(())
}

/// Refuses to run against a database that lacks a migration this build needs (an older database
/// with a newer process). A newer database with an older process is fine: migrations only add.
pub async fn check_migrated(db: &Db) -> anyhow::Result<()> {
    let applied: Vec<i64> = match sqlx::query_scalar(
        "select version from _sqlx_migrations where success",
    )
    .fetch_all(db)
    .await
    {
        Ok(applied) => applied,
        Err(e) => {
            // An application role may not read the migrations table (see 0005).
            tracing::warn!(error = %e, "cannot read _sqlx_migrations: the schema check is skipped");
            return Ok(());
        }
    };
    let missing: Vec<String> = MIGRATOR
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .map(|m| format!("{} ({})", m.version, m.description))
        .collect();
    if !missing.is_empty() {
        anyhow::bail!(
            "the database lacks migration(s) {}: run `erasure migrate` first",
            missing.join(", ")
        );
    }
    Ok(())
}

/// The database's clock: what times written by `now()` compare with.
pub async fn db_now(db: &Db) -> sqlx::Result<chrono::DateTime<chrono::Utc>> {
    sqlx::query_scalar("select clock_timestamp()")
        .fetch_one(db)
        .await
}

/// Whether the database answers (readiness).
pub async fn ping(db: &Db) -> sqlx::Result<()> {
    sqlx::query_scalar::<_, i32>("select 1")
        .fetch_one(db)
        .await?;
    Ok(())
}

/// Lists flattened for `unnest($1::text[], $2::int4[])`: every value, each with the position of
/// its list. One query then answers for every list.
fn numbered<L: AsRef<[String]>>(lists: &[L]) -> (Vec<&str>, Vec<i32>) {
    lists
        .iter()
        .enumerate()
        .flat_map(|(n, list)| list.as_ref().iter().map(move |v| (v.as_str(), n as i32)))
        .unzip()
}

/// Whether the error says the database is out of reach (the API answers 503: try again), not
/// that it refused or failed the statement.
pub fn unreachable(e: &Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => true,
        // The server closed the connection: shutting down or restarting, or an operator's
        // `pg_terminate_backend` (class 57P), or a connection exception (class 08).
        sqlx::Error::Database(d) => d
            .code()
            .is_some_and(|c| c.starts_with("57P") || c.starts_with("08")),
        _ => false,
    }
}

/// True when the error is a violation of the named constraint.
pub fn violates(e: &sqlx::Error, constraint: &str) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.constraint() == Some(constraint))
}

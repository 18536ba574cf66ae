//! The `erasure` binary: parses the command line, sets up logging and calls the library. Thin: it
//! never holds logic of a part (README, "Where to change what").

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use erasure::app::error::ApiError;
use erasure::app::{self, By};
use erasure::audit::checkpoint::Signer;
use erasure::audit::retention;
use erasure::config::{
    ApprovalPolicy, AtRiskArgs, ConsoleArgs, DbArgs, EngineArgs, GuardArgs, HttpLimitArgs,
    RetentionArgs, UpstreamArgs, WebhookArgs, table,
};
#[cfg(feature = "sim")]
use erasure::demo;
use erasure::domain::Role;
use erasure::domain::keys::NewKey;
use erasure::secrets::Keys;
use erasure::service::{self, ServiceConfig};
use erasure::telemetry::{self, LogFormat};
use erasure::{api, store};

/// jemalloc's options for this process (the library sets the allocator; jemalloc reads this
/// symbol by name): freed pages go back to the system after 3 s unused instead of 10 s, which
/// keeps the worker's peak RSS in the drain clear of its 100 MiB target at no measurable CPU
/// (BENCHMARKS.md, "Drain beside graphile-worker"). `_RJEM_MALLOC_CONF` still overrides it.
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8; 20] = b"dirty_decay_ms:3000\0";

#[derive(Parser)]
#[command(
    name = "erasure",
    version,
    about = "GDPR erasure orchestration for the Oxlin (Linxo Connect) aggregator"
)]
struct Cli {
    /// Log format, `text` or `json` (logs go to stderr; RUST_LOG chooses the level).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "ERASURE_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole system on one machine: database, simulator, API and workers.
    #[cfg(feature = "sim")]
    Demo(demo::DemoArgs),
    /// The whole system on one machine (not in this build: it has no simulator).
    #[cfg(not(feature = "sim"))]
    Demo(NoSimulator),
    /// API and workers.
    Serve(Box<ServeArgs>),
    /// Workers only (any number of them against one database).
    Worker(Box<WorkerArgs>),
    /// Apply migrations and exit.
    Migrate(DbArgs),
    /// Print the OpenAPI document (the same bytes as openapi/openapi.json).
    Openapi,
    /// Print the configuration reference, docs/configuration.md, from these definitions.
    #[command(hide = true)]
    ConfigTable,
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Audit log: public key and offline verification.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// People who sign in to the console through the OpenID Provider.
    People {
        #[command(subcommand)]
        command: PeopleCommand,
    },
    /// Retention of erasure records: destroy the pseudonym keys of epochs past it.
    Retention {
        #[command(subcommand)]
        command: RetentionCommand,
    },
    /// The upstream simulator as its own server.
    #[cfg(feature = "sim")]
    Sim(erasure_sim::SimArgs),
    /// The upstream simulator (not in this build: run `erasure-sim`).
    #[cfg(not(feature = "sim"))]
    Sim(NoSimulator),
}

/// What `demo` and `sim` say in a build without the `sim` feature (the production image's).
#[cfg(not(feature = "sim"))]
const NO_SIMULATOR: &str = "this build of erasure has no simulator (it was built without the \
    `sim` feature, like the production image), so `erasure demo` and `erasure sim` are not \
    available. Build with the default features for them (`cargo run --release -- demo`), or run \
    the simulator on its own: `erasure-sim` (`cargo run --release -p erasure-sim`, or the \
    Dockerfile's `sim` target)";

/// The arguments of `demo` and `sim` in a build without the simulator: whatever they are, the
/// command says that this build has none.
#[cfg(not(feature = "sim"))]
#[derive(clap::Args)]
struct NoSimulator {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    _args: Vec<String>,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create an API key and print it (alone, once) on stdout.
    Create {
        #[arg(long, value_enum)]
        role: Role,
        #[arg(long)]
        label: String,
        /// Days until the key expires (default: never).
        #[arg(long)]
        expires_in_days: Option<u32>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// List keys: id, prefix, role, label, created, expires, revoked (never the key itself).
    List {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Revoke a key at once, in every process, by its id or its prefix.
    Revoke {
        /// The key's id (UUID) or its 8-character prefix (`ek_<prefix>_...`).
        key: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Replace a key: a new key with the same role, label and expiry is printed alone on stdout;
    /// the old one is revoked at once, or expires after --grace-minutes.
    Rotate {
        /// The key's id (UUID) or its 8-character prefix.
        key: String,
        /// Minutes the old key keeps working, so its users can switch (default 0: revoked now).
        #[arg(long, default_value_t = 0)]
        grace_minutes: u32,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Subcommand)]
enum PeopleCommand {
    /// List people: id, roles, last sign-in, open sessions (names with --names only).
    List {
        /// Show display names and e-mails too (personal data: for the screen, not for logs).
        #[arg(long)]
        names: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Forget a person (a leaver): their name and e-mail become a tombstone, their roles and
    /// sessions end, the keys they own are revoked; the id stays, so every audit entry naming it
    /// still verifies.
    Forget {
        /// The person's id (UUID, as the audit log names it: `person:<id>`).
        person: String,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Subcommand)]
enum RetentionCommand {
    /// Destroy the key of every pseudonym epoch past the retention (what the workers do daily);
    /// prints each epoch destroyed and how many requests it covered.
    Run {
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        retention: RetentionArgs,
        /// Apply the retention as of this time (RFC 3339) instead of now, as the rule will stand
        /// then (an epoch ends ERASURE_PSEUDONYM_EPOCH_DAYS after it starts). A future time needs
        /// --yes (or --dry-run): it destroys now keys only due then.
        #[arg(long, value_parser = parse_time)]
        as_of: Option<chrono::DateTime<chrono::Utc>>,
        /// Only say what would be destroyed; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Confirm a run as of a future time.
        #[arg(long)]
        yes: bool,
    },
}

fn parse_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| "must be an RFC 3339 time, e.g. 2029-01-31T00:00:00Z".to_string())
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Print the verifier key of checkpoints (from ERASURE_SIGNING_KEY); it is public.
    PublicKey,
    /// Verify a receipt or an export offline, with only the public key. Exits 0 only when every
    /// signature, proof and hash holds.
    Verify(erasure_proof::cli::VerifyArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Where the API listens.
    #[arg(long, env = "ERASURE_BIND", default_value = "127.0.0.1:8080")]
    bind: String,
    /// Run the API only.
    #[arg(long)]
    no_worker: bool,
    #[command(flatten)]
    limits: HttpLimitArgs,
    #[command(flatten)]
    console: ConsoleArgs,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(clap::Args)]
struct WorkerArgs {
    #[command(flatten)]
    db: DbArgs,
    /// `erasure worker` only: where it serves `/metrics` and health (e.g. 0.0.0.0:9090); nowhere
    /// by default.
    #[arg(long, env = "ERASURE_METRICS_BIND")]
    metrics_bind: Option<String>,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(clap::Args)]
struct CommonArgs {
    #[command(flatten)]
    upstream: UpstreamArgs,
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    guard: GuardArgs,
    #[command(flatten)]
    at_risk: AtRiskArgs,
    #[command(flatten)]
    webhooks: WebhookArgs,
    #[command(flatten)]
    retention: RetentionArgs,
    /// Which requests need a second person's approval: `none`, `user-scope` (requests of scope
    /// `user`) or `all`.
    #[arg(long, value_enum, env = "ERASURE_APPROVAL", default_value = "none")]
    approval: ApprovalPolicy,
    /// Database connections of this process, in all (each HTTP worker takes 5 of them for its
    /// intake writers and key checks; at least 4 must be left).
    #[arg(long, env = "ERASURE_DB_POOL", default_value_t = 40)]
    db_pool: u32,
    /// HTTP worker threads.
    #[arg(long, env = "ERASURE_HTTP_WORKERS", default_value_t = 2)]
    http_workers: usize,
    /// Seconds between audit checkpoints: how often the audit log is sequenced and a checkpoint
    /// signed (only when the log grew).
    #[arg(long, env = "ERASURE_CHECKPOINT_SECS", default_value_t = 10.0)]
    checkpoint_secs: f64,
}

impl CommonArgs {
    fn config(
        &self,
        db: DbArgs,
        bind: Option<String>,
        worker: bool,
    ) -> anyhow::Result<ServiceConfig> {
        // The upstream first: serve refuses to start without one.
        let upstream = if worker {
            Some(self.upstream.settings()?)
        } else {
            None
        };
        let engine = self.engine.settings()?;
        let guard = self.guard.settings(engine.retry.clone())?;
        Ok(ServiceConfig {
            database_url: db.database_url,
            direct_database_url: db.database_direct_url,
            bind,
            metrics_bind: None,
            keys: Keys::from_env()?,
            upstream,
            guard: Some(guard),
            engine,
            approval: self.approval,
            db_pool: self.db_pool,
            http_workers: self.http_workers,
            checkpoint_every: std::time::Duration::from_secs_f64(self.checkpoint_secs.max(0.1)),
            at_risk_days: self.at_risk.days()?,
            webhooks: self.webhooks.settings()?,
            retention: self.retention.settings()?,
            console: Default::default(),
        })
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let telemetry = match telemetry::init(cli.log_format) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let code = match run(cli.command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    // The spans still queued are exported before the process exits.
    telemetry.shutdown().await;
    code
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        #[cfg(feature = "sim")]
        Command::Demo(args) => demo::run(args).await?,
        #[cfg(not(feature = "sim"))]
        Command::Demo(_) | Command::Sim(_) => anyhow::bail!(NO_SIMULATOR),
        Command::Serve(args) => {
            let args = *args;
            let mut config = args
                .common
                .config(args.db, Some(args.bind), !args.no_worker)?;
            config.console = args
                .console
                .settings(config.webhooks.public_url.as_deref())?;
            let running = service::start_with(config, args.limits.settings()?).await?;
            if let Some(addr) = running.addr {
                tracing::info!(%addr, "API listening");
            }
            running.until_signal().await?;
        }
        Command::Worker(args) => {
            let args = *args;
            let mut config = args.common.config(args.db, None, true)?;
            config.metrics_bind = args.metrics_bind;
            service::start(config).await?.until_signal().await?;
        }
        Command::Migrate(db) => {
            let pool = store::connect(db.session_url(), 2).await?;
            store::migrate(&pool).await?;
            eprintln!("migrations applied");
        }
        Command::Openapi => print!("{}", api::openapi_json()),
        Command::ConfigTable => print!("{}", table::markdown(&Cli::command())),
        Command::Keys { command } => keys(command).await?,
        Command::People { command } => people(command).await?,
        Command::Audit {
            command: AuditCommand::PublicKey,
        } => {
            let keys = Keys::from_env()?;
            let signer = Signer::new(service::AUDIT_KEY_NAME, keys.signing.bytes());
            println!("{}", signer.verifier_key());
        }
        Command::Audit {
            command: AuditCommand::Verify(args),
        } => return Ok(erasure_proof::cli::verify(&args)),
        #[cfg(feature = "sim")]
        Command::Sim(args) => erasure_sim::run(args).await?,
        Command::Retention {
            command:
                RetentionCommand::Run {
                    db,
                    retention,
                    as_of,
                    dry_run,
                    yes,
                },
        } => {
            let settings = retention.settings()?;
            let now = chrono::Utc::now();
            let as_of = as_of.unwrap_or(now);
            let apply = if dry_run {
                retention::Apply::DryRun
            } else {
                retention::Apply::Destroy
            };
            if let Some(why) = retention::confirmation_needed(as_of, now, apply).filter(|_| !yes) {
                eprintln!("{why}");
                return Ok(ExitCode::FAILURE);
            }
            let pool = store::connect(db.session_url(), 2).await?;
            store::check_migrated(&pool).await?;
            let destroyed = retention::run_once(
                &pool,
                &store::Sessions::of(&pool),
                settings.retention_days,
                settings.epoch_days,
                as_of,
                apply,
            )
            .await?;
            let verb = match apply {
                retention::Apply::Destroy => "destroyed",
                retention::Apply::DryRun => "would be destroyed",
            };
            for d in &destroyed {
                println!("epoch {} {verb}: {} requests", d.epoch, d.requests);
            }
            match (destroyed.is_empty(), apply) {
                (true, retention::Apply::Destroy) => println!("no epoch past the retention"),
                (true, retention::Apply::DryRun) => {
                    println!("no epoch would be destroyed (dry run: nothing changed)")
                }
                (false, retention::Apply::DryRun) => println!("dry run: nothing changed"),
                (false, retention::Apply::Destroy) => {}
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn people(command: PeopleCommand) -> anyhow::Result<()> {
    match command {
        PeopleCommand::List { names, db } => {
            let pool = store::connect(db.session_url(), 2).await?;
            store::check_migrated(&pool).await?;
            let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
                t.map_or("-".to_string(), |t| {
                    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
                })
            };
            for p in app::people::list(&pool).await.map_err(cli)? {
                let roles = if p.roles.is_empty() {
                    "-".to_string()
                } else {
                    p.roles.join(",")
                };
                let mut line = format!(
                    "{}\t{roles}\t{}\t{}",
                    p.id,
                    time(p.last_sign_in_at),
                    p.sessions
                );
                if names {
                    line.push_str(&format!(
                        "\t{}\t{}",
                        p.display_name,
                        p.email.as_deref().unwrap_or("-")
                    ));
                }
                println!("{line}");
            }
        }
        PeopleCommand::Forget { person, db } => {
            let id = uuid::Uuid::parse_str(person.trim().trim_start_matches("person:"))
                .map_err(|_| anyhow::anyhow!("the person must be named by their id (a UUID)"))?;
            let pool = store::connect(db.session_url(), 2).await?;
            store::check_migrated(&pool).await?;
            match app::people::forget(&pool, id, By::Operator).await {
                Err(e) if e.code() == "not_found" => {
                    anyhow::bail!("no person has the id {id} (see `erasure people list`)")
                }
                done => done.map_err(cli)?,
            }
            eprintln!("person {id} forgotten: name and e-mail replaced, sessions ended, id kept");
        }
    }
    Ok(())
}

async fn keys(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create {
            role,
            label,
            expires_in_days,
            db,
        } => {
            let days = expires_in_days.map(i64::from);
            let new = NewKey::new(role, &label, days, chrono::Utc::now())
                .map_err(|(field, why)| anyhow::anyhow!("--{}: {why}", field.replace('_', "-")))?;
            let pool = store::connect(db.session_url(), 2).await?;
            let key = app::keys::create(&pool, &new, By::Operator)
                .await
                .map_err(cli)?;
            println!("{key}");
        }
        KeysCommand::List { json, db } => {
            let pool = store::connect(db.session_url(), 2).await?;
            let keys = app::keys::list(&pool).await.map_err(cli)?;
            let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
                t.map_or("-".to_string(), |t| {
                    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
                })
            };
            if !json {
                println!("id\tprefix\trole\tlabel\tcreated\texpires\trevoked");
            }
            for k in keys {
                if json {
                    println!("{}", serde_json::to_string(&k)?);
                } else {
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                        k.id,
                        k.prefix,
                        k.role,
                        k.label,
                        time(Some(k.created_at)),
                        time(k.expires_at),
                        time(k.revoked_at)
                    );
                }
            }
        }
        KeysCommand::Revoke { key, db } => {
            let pool = store::connect(db.session_url(), 2).await?;
            let found = key_named(&pool, &key).await?;
            if app::keys::revoke(&pool, &found, By::Operator)
                .await
                .map_err(cli)?
            {
                eprintln!("revoked key {} ({})", found.id, found.prefix);
            } else {
                eprintln!("key {} ({}) was revoked already", found.id, found.prefix);
            }
        }
        KeysCommand::Rotate {
            key,
            grace_minutes,
            db,
        } => {
            let pool = store::connect(db.session_url(), 2).await?;
            let found = key_named(&pool, &key).await?;
            let (id, new_key) = app::keys::rotate(&pool, &found, grace_minutes, By::Operator)
                .await
                .map_err(cli)?;
            println!("{new_key}");
            if grace_minutes == 0 {
                eprintln!("new key {id}; old key {} revoked", found.id);
            } else {
                eprintln!(
                    "new key {id}; old key {} expires in {grace_minutes} minute(s)",
                    found.id
                );
            }
        }
    }
    Ok(())
}

/// A key by its id or prefix, or the command line's sentence for none.
async fn key_named(pool: &store::Db, key: &str) -> anyhow::Result<erasure::store::keys::KeyInfo> {
    match app::keys::find(pool, key).await {
        Err(e) if e.code() == "not_found" => {
            anyhow::bail!("no key has that id or prefix (see `erasure keys list`)")
        }
        found => found.map_err(cli),
    }
}

/// A use case's error as the command line says it: its sentence, or an internal error's cause.
fn cli(e: ApiError) -> anyhow::Error {
    match e {
        ApiError::Internal(cause) => cause,
        ApiError::Invalid { fields, .. } => anyhow::anyhow!(
            "{}",
            fields
                .iter()
                .map(|(name, why)| format!("--{}: {why}", name.replace('_', "-")))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        other => anyhow::anyhow!("{}", other.sentence()),
    }
}

#[cfg(test)]
mod tests {
    /// jemalloc found `MALLOC_CONF` (a symbol it looks up by name, so nothing else fails if a
    /// rename or a new prefix makes it miss it).
    #[test]
    fn the_allocator_returns_freed_pages_after_three_seconds() {
        // SAFETY: `opt.dirty_decay_ms` is an `ssize_t` option.
        let ms: isize = unsafe { tikv_jemalloc_ctl::raw::read(b"opt.dirty_decay_ms\0") }.unwrap();
        assert_eq!(ms, 3000);
    }
}

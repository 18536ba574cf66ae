//! `erasure demo`: the whole system on one machine for a first look.
//!
//! Never used in production: its keys are generated and kept in `.erasure-demo/`. Built only with
//! the `sim` feature (a default one), since it embeds the simulator (`erasure-sim`).

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::{EngineSettings, GuardSettings, UpstreamSettings};
use crate::domain::Role;
use crate::domain::keys::NewKey;
use crate::secrets::{Key32, Keys, Secret};
use crate::service::{self, ServiceConfig};
use crate::store;
use erasure_sim::{Sim, SimConfig};

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub db: crate::config::DbArgs,
    /// Where the API listens.
    #[arg(long, env = "ERASURE_BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,
    /// Users the embedded simulator seeds.
    #[arg(long, default_value_t = 20)]
    pub users: usize,
    /// Where the demo keeps its generated keys.
    #[arg(long, env = "ERASURE_DEMO_DIR", default_value = ".erasure-demo")]
    pub dir: PathBuf,
    // `ERASURE_AT_RISK_DAYS=31` shows every new request at risk at once.
    #[command(flatten)]
    pub at_risk: crate::config::AtRiskArgs,
    #[command(flatten)]
    pub webhooks: crate::config::WebhookArgs,
    #[command(flatten)]
    pub retention: crate::config::RetentionArgs,
}

/// Loads the demo's keys from `dir/keys.env`, generating any that are missing.
fn demo_keys(dir: &Path) -> anyhow::Result<Keys> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("keys.env");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let find = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .and_then(|v| Key32::from_hex(name, v).ok())
    };
    let keys = Keys {
        // Pseudonym keys are random epochs kept in the database; one an earlier demo generated is
        // migrated into them.
        pseudonym: find(Keys::PSEUDONYM),
        pseudonym_version: 1,
        pseudonym_old: Vec::new(),
        signing: find(Keys::SIGNING).unwrap_or_else(Key32::random),
        data: find(Keys::DATA).unwrap_or_else(Key32::random),
    };
    let pseudonym = keys
        .pseudonym
        .as_ref()
        .map(|k| format!("{}={}\n", Keys::PSEUDONYM, k.to_hex()))
        .unwrap_or_default();
    let content = format!(
        "# Keys of `erasure demo` (secrets: keep this file private)\n{pseudonym}{}={}\n{}={}\n",
        Keys::SIGNING,
        keys.signing.to_hex(),
        Keys::DATA,
        keys.data.to_hex()
    );
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        file.write_all(content.as_bytes())?;
    }
    Ok(keys)
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let keys = demo_keys(&args.dir)?;
    store::ensure_database(args.db.session_url()).await?;
    {
        let db = store::connect(args.db.session_url(), 2).await?;
        store::migrate(&db).await?;
        db.close().await;
    }
    let sim = Sim::start(SimConfig {
        users: args.users,
        ..SimConfig::default()
    })
    .await?;
    let db = store::connect(args.db.session_url(), 2).await?;
    let demo_key = NewKey::new(Role::Admin, "demo", None, chrono::Utc::now())
        .map_err(|(field, why)| anyhow::anyhow!("{field} {why}"))?;
    let api_key = crate::app::keys::create(&db, &demo_key, crate::app::By::Operator)
        .await
        .map_err(|e| anyhow::Error::new(e).context("cannot make the demo's key"))?;
    db.close().await;

    let running = service::start(ServiceConfig {
        database_url: args.db.database_url.clone(),
        direct_database_url: args.db.database_direct_url.clone(),
        bind: Some(args.bind.clone()),
        metrics_bind: None,
        keys,
        upstream: Some(UpstreamSettings {
            api_url: sim.api_url(),
            auth_url: sim.auth_url(),
            client_id: erasure_sim::DEFAULT_CLIENT_ID.into(),
            client_secret: Secret::new(erasure_sim::DEFAULT_CLIENT_SECRET),
            max_rps: 50.0,
            max_concurrency: 8,
            timeout: std::time::Duration::from_secs(10),
        }),
        engine: EngineSettings::default(),
        guard: Some(GuardSettings::default()),
        approval: Default::default(),
        db_pool: 20,
        http_workers: 2,
        checkpoint_every: std::time::Duration::from_secs(10),
        at_risk_days: args.at_risk.days()?,
        console: Default::default(),
        webhooks: args.webhooks.settings()?,
        retention: args.retention.settings()?,
    })
    .await?;
    let addr = running.addr.expect("the demo runs the API");
    let user = sim
        .seeded()
        .users
        .first()
        .map(|u| u.id.clone())
        .unwrap_or_else(|| "1".into());
    println!("erasure demo is running.");
    println!("  API:            http://{addr}");
    println!("  console:        http://{addr}/ (sign in with the admin API key below)");
    println!("  Swagger UI:     http://{addr}/swagger-ui/");
    println!(
        "  simulator:      {} ({} fake users seeded)",
        sim.api_url(),
        args.users
    );
    println!("  keys kept in:   {}/keys.env", args.dir.display());
    println!("  admin API key:  {api_key}");
    println!();
    println!("Erase a seeded user:");
    println!(
        "  curl -s -X POST http://{addr}/v1/erasure-requests -H 'Authorization: Bearer {api_key}' \
         -H 'Content-Type: application/json' -d '{{\"scope\":\"user\",\"target_id\":\"{user}\"}}'"
    );
    println!(
        "Then follow it: curl -s http://{addr}/v1/erasure-requests -H 'Authorization: Bearer {api_key}'"
    );
    println!("Press Ctrl-C to stop.");
    running.until_signal().await?;
    sim.stop().await;
    Ok(())
}

//! Settings: flags and environment variables (`DATABASE_URL`, `ERASURE_*`), validated into the
//! plain settings structs that the parts read (`UpstreamSettings`, `EngineSettings`,
//! `GuardSettings`, `HttpLimits`...). A leaf: it imports only `secrets`, never a part that reads
//! it (api, engine, guard, upstream, store, audit), so that any part can take its settings from
//! here. Keys and the client secret are read by `secrets`; nothing here prints one.

use std::time::Duration;

use anyhow::{Context, bail};

use crate::secrets::{Secret, secret_from_env};

pub mod table;

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/erasure";

/// `ERASURE_CHECKPOINT_EVERY_ENTRIES` (default 1000): a checkpoint is signed as soon as this many
/// audit entries wait, even before `ERASURE_CHECKPOINT_SECS` have passed.
pub fn checkpoint_every_entries() -> anyhow::Result<u64> {
    parse_checkpoint_every_entries(
        std::env::var("ERASURE_CHECKPOINT_EVERY_ENTRIES")
            .ok()
            .as_deref(),
    )
}

fn parse_checkpoint_every_entries(value: Option<&str>) -> anyhow::Result<u64> {
    match value.map(str::trim) {
        None | Some("") => Ok(1000),
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .context("ERASURE_CHECKPOINT_EVERY_ENTRIES must be a positive integer"),
    }
}

/// `ERASURE_AT_RISK_DAYS` when unset.
pub const DEFAULT_AT_RISK_DAYS: u32 = 7;

/// The largest `ERASURE_AT_RISK_DAYS`: ten years, as the list's `due_within_days`.
pub const MAX_AT_RISK_DAYS: u32 = 3660;

/// `ERASURE_PSEUDONYM_EPOCH_DAYS` when unset: a new pseudonym key every 90 days.
pub const DEFAULT_EPOCH_DAYS: u32 = 90;

/// `ERASURE_RETENTION_DAYS` when unset: three years.
pub const DEFAULT_RETENTION_DAYS: u32 = 1095;

/// Pseudonym key epochs and the retention of erasure records (`audit::epochs`,
/// `audit::retention`).
#[derive(Debug, Clone)]
pub struct RetentionSettings {
    /// Days between the starts of two pseudonym epochs.
    pub epoch_days: u32,
    /// Days a closed request stays linkable before its epoch's key is destroyed.
    pub retention_days: u32,
    /// How often each process reloads the live epochs (and starts a new one when it is due).
    pub refresh: Duration,
    /// How often this process runs the retention job (`None`: never).
    pub run_every: Option<Duration>,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            epoch_days: DEFAULT_EPOCH_DAYS,
            retention_days: DEFAULT_RETENTION_DAYS,
            refresh: Duration::from_secs(60),
            run_every: Some(Duration::from_secs(24 * 3600)),
        }
    }
}

/// `ERASURE_PSEUDONYM_EPOCH_DAYS` and `ERASURE_RETENTION_DAYS`; give every process the same.
#[derive(Debug, Clone, clap::Args)]
pub struct RetentionArgs {
    /// Days between the starts of two pseudonym key epochs (random keys kept sealed in the
    /// database: docs/retention.md); give every process the same.
    #[arg(long, env = "ERASURE_PSEUDONYM_EPOCH_DAYS", default_value_t = DEFAULT_EPOCH_DAYS)]
    pub pseudonym_epoch_days: u32,
    /// Days a closed request stays linkable to its target; then its epoch's key is destroyed
    /// (by the workers daily, or `erasure retention run`).
    #[arg(long, env = "ERASURE_RETENTION_DAYS", default_value_t = DEFAULT_RETENTION_DAYS)]
    pub retention_days: u32,
}

impl RetentionArgs {
    /// The settings, validated (each between 1 and 36,600 days).
    pub fn settings(&self) -> anyhow::Result<RetentionSettings> {
        for (name, days) in [
            ("ERASURE_PSEUDONYM_EPOCH_DAYS", self.pseudonym_epoch_days),
            ("ERASURE_RETENTION_DAYS", self.retention_days),
        ] {
            if !(1..=36_600).contains(&days) {
                bail!("{name} must be between 1 and 36600 days");
            }
        }
        Ok(RetentionSettings {
            epoch_days: self.pseudonym_epoch_days,
            retention_days: self.retention_days,
            ..RetentionSettings::default()
        })
    }
}

/// When an open request is *at risk*, as flags and variables (read by the API's list filter,
/// status page and `/metrics`, and by the workers' sweep that audits it once: give every process
/// the same value).
#[derive(Debug, Clone, clap::Args)]
pub struct AtRiskArgs {
    /// Days before its due date from which an open request is at risk (0 to 3660; 0: none ever
    /// is); give every process the same.
    #[arg(long, env = "ERASURE_AT_RISK_DAYS", default_value_t = DEFAULT_AT_RISK_DAYS)]
    pub at_risk_days: u32,
}

impl AtRiskArgs {
    /// The days, validated.
    pub fn days(&self) -> anyhow::Result<u32> {
        if self.at_risk_days > MAX_AT_RISK_DAYS {
            bail!("ERASURE_AT_RISK_DAYS must be between 0 and {MAX_AT_RISK_DAYS}");
        }
        Ok(self.at_risk_days)
    }
}

/// Which requests need a second person's approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum ApprovalPolicy {
    #[default]
    None,
    UserScope,
    All,
}

/// How to reach the aggregator.
#[derive(Debug, Clone, clap::Args)]
pub struct UpstreamArgs {
    /// The aggregator's API base, e.g. `https://api.oxlin.io/v2.1` (required by `serve` with
    /// workers and by `worker`).
    #[arg(long, env = "ERASURE_UPSTREAM_API_URL")]
    pub upstream_api_url: Option<String>,
    /// The aggregator's auth server, e.g. `https://auth.oxlin.io` (`POST {url}/token`; required
    /// with the API base).
    #[arg(long, env = "ERASURE_UPSTREAM_AUTH_URL")]
    pub upstream_auth_url: Option<String>,
    /// The application's client id at the aggregator (required with the API base); its secret
    /// is `ERASURE_UPSTREAM_CLIENT_SECRET`, read from the environment only.
    #[arg(long, env = "ERASURE_UPSTREAM_CLIENT_ID")]
    pub upstream_client_id: Option<String>,
    /// Maximum upstream requests per second of the whole deployment: every process that shares
    /// the database and runs workers takes a share of it (coordinated through PostgreSQL:
    /// `engine::shares`); API-only processes take none.
    #[arg(long, env = "ERASURE_UPSTREAM_MAX_RPS", default_value_t = 20.0)]
    pub upstream_max_rps: f64,
    /// Maximum concurrent upstream calls of the whole deployment, shared the same way.
    #[arg(long, env = "ERASURE_UPSTREAM_MAX_CONCURRENCY", default_value_t = 8)]
    pub upstream_max_concurrency: usize,
    /// Time-out of one upstream call, in seconds.
    #[arg(long, env = "ERASURE_UPSTREAM_TIMEOUT_SECS", default_value_t = 30.0)]
    pub upstream_timeout_secs: f64,
}

/// The upstream settings once validated.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub api_url: String,
    pub auth_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// Calls a second, every process's together (this process uses its share: `engine::shares`).
    pub max_rps: f64,
    /// Concurrent calls, every process's together (shared the same way).
    pub max_concurrency: usize,
    pub timeout: Duration,
}

impl UpstreamArgs {
    /// Validates the arguments; the client secret comes from `ERASURE_UPSTREAM_CLIENT_SECRET`
    /// (or its `_FILE`) only, so that it never shows in a process list.
    pub fn settings(&self) -> anyhow::Result<UpstreamSettings> {
        let missing = |what: &str| {
            anyhow::anyhow!(
                "no upstream configured: set {what} (see README, \"Running against the aggregator\")"
            )
        };
        let api_url = self
            .upstream_api_url
            .clone()
            .ok_or_else(|| missing("ERASURE_UPSTREAM_API_URL"))?;
        let auth_url = self
            .upstream_auth_url
            .clone()
            .ok_or_else(|| missing("ERASURE_UPSTREAM_AUTH_URL"))?;
        let client_id = self
            .upstream_client_id
            .clone()
            .ok_or_else(|| missing("ERASURE_UPSTREAM_CLIENT_ID"))?;
        let client_secret = secret_from_env("ERASURE_UPSTREAM_CLIENT_SECRET")?
            .ok_or_else(|| missing("ERASURE_UPSTREAM_CLIENT_SECRET"))?;
        for (name, url) in [
            ("ERASURE_UPSTREAM_API_URL", &api_url),
            ("ERASURE_UPSTREAM_AUTH_URL", &auth_url),
        ] {
            reqwest::Url::parse(url).with_context(|| format!("{name} is not a valid URL"))?;
        }
        if self.upstream_max_rps.is_nan() || self.upstream_max_rps <= 0.0 {
            bail!("ERASURE_UPSTREAM_MAX_RPS must be greater than 0");
        }
        if self.upstream_max_concurrency == 0 {
            bail!("ERASURE_UPSTREAM_MAX_CONCURRENCY must be at least 1");
        }
        Ok(UpstreamSettings {
            api_url: api_url.trim_end_matches('/').to_string(),
            auth_url: auth_url.trim_end_matches('/').to_string(),
            client_id,
            client_secret: Secret::new(client_secret),
            max_rps: self.upstream_max_rps,
            max_concurrency: self.upstream_max_concurrency,
            timeout: Duration::from_secs_f64(self.upstream_timeout_secs.max(0.1)),
        })
    }
}

/// How workers behave (read by `engine`).
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Steps run at once by this process.
    pub concurrency: usize,
    pub lease: Duration,
    /// Poll interval when no notification arrives.
    pub poll: Duration,
    pub retry: RetryPolicy,
    /// Attempts (throttled ones not counted) after which an inventory that keeps meeting
    /// transient errors is recorded as incomplete and the erasure goes on to its deletion.
    pub inventory_attempts: i32,
    pub shutdown_grace: Duration,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            concurrency: 32,
            lease: Duration::from_secs(30),
            poll: Duration::from_secs(1),
            retry: RetryPolicy::default(),
            inventory_attempts: 5,
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

/// Exponential backoff with full jitter (its delays: `backoff`).
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub base: Duration,
    pub cap: Duration,
    /// Attempts after which a transient error fails the request; 0 (the default): never, a
    /// transient error is retried for as long as it lasts (the request shows as at risk, then
    /// overdue, as its due date nears and passes).
    pub max_attempts: i32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(600),
            max_attempts: 0,
        }
    }
}

impl RetryPolicy {
    /// Whether `attempts` attempts used up the (opt-in) count.
    pub fn exhausted(&self, attempts: i32) -> bool {
        self.max_attempts > 0 && attempts >= self.max_attempts
    }
}

/// The resurrection guard's settings (read by `guard`).
#[derive(Debug, Clone)]
pub struct GuardSettings {
    /// How often the event stream is read when it has nothing new.
    pub poll: Duration,
    /// How long a restoration waits for its synchronisation's events.
    pub restoration_timeout: Duration,
    /// How often every completed erasure is looked for upstream; `None`: never.
    pub reverify_every: Option<Duration>,
    /// Retries of starting a restoration's synchronisation.
    pub retry: RetryPolicy,
}

impl Default for GuardSettings {
    fn default() -> Self {
        Self {
            poll: Duration::from_secs(2),
            restoration_timeout: Duration::from_secs(600),
            reverify_every: Some(Duration::from_secs(7 * 24 * 3600)),
            retry: RetryPolicy::default(),
        }
    }
}

/// How workers behave, as flags and variables.
#[derive(Debug, Clone, clap::Args)]
pub struct EngineArgs {
    /// Steps one process runs at once.
    #[arg(long, env = "ERASURE_WORKER_CONCURRENCY", default_value_t = 32)]
    pub worker_concurrency: usize,
    /// Lease of a claimed step, in seconds; renewed while it runs.
    #[arg(long, env = "ERASURE_LEASE_SECS", default_value_t = 30.0)]
    pub lease_secs: f64,
    /// Poll interval when no notification arrives, in milliseconds.
    #[arg(long, env = "ERASURE_POLL_MS", default_value_t = 1000)]
    pub poll_ms: u64,
    /// First retry delay in seconds (exponential backoff with full jitter).
    #[arg(long, env = "ERASURE_RETRY_BASE_SECS", default_value_t = 1.0)]
    pub retry_base_secs: f64,
    /// Longest retry delay in seconds (the backoff's cap, however long a transient error lasts).
    #[arg(long, env = "ERASURE_RETRY_CAP_SECS", default_value_t = 600.0)]
    pub retry_cap_secs: f64,
    /// Attempts of one step after which a transient error fails the request (0: never, the
    /// default; transient errors are retried while they last).
    #[arg(long, env = "ERASURE_MAX_ATTEMPTS", default_value_t = 0)]
    pub max_attempts: i32,
    /// Attempts of an inventory after which it is recorded as incomplete and the erasure goes on
    /// to delete.
    #[arg(long, env = "ERASURE_INVENTORY_MAX_ATTEMPTS", default_value_t = 5)]
    pub inventory_max_attempts: i32,
    /// On SIGTERM, how long running steps may finish, in seconds.
    #[arg(long, env = "ERASURE_SHUTDOWN_GRACE_SECS", default_value_t = 20.0)]
    pub shutdown_grace_secs: f64,
}

impl EngineArgs {
    pub fn settings(&self) -> anyhow::Result<EngineSettings> {
        if self.worker_concurrency == 0 {
            bail!("ERASURE_WORKER_CONCURRENCY must be at least 1");
        }
        if self.lease_secs.is_nan() || self.lease_secs < 1.0 {
            bail!("ERASURE_LEASE_SECS must be at least 1");
        }
        if self.max_attempts < 0 {
            bail!("ERASURE_MAX_ATTEMPTS must be 0 (never fail a transient error) or more");
        }
        if self.inventory_max_attempts < 1 {
            bail!("ERASURE_INVENTORY_MAX_ATTEMPTS must be at least 1");
        }
        Ok(EngineSettings {
            concurrency: self.worker_concurrency,
            lease: Duration::from_secs_f64(self.lease_secs),
            poll: Duration::from_millis(self.poll_ms.max(10)),
            retry: RetryPolicy {
                base: Duration::from_secs_f64(self.retry_base_secs.max(0.001)),
                cap: Duration::from_secs_f64(self.retry_cap_secs.max(self.retry_base_secs)),
                max_attempts: self.max_attempts,
            },
            inventory_attempts: self.inventory_max_attempts,
            shutdown_grace: Duration::from_secs_f64(self.shutdown_grace_secs.max(0.0)),
        })
    }
}

/// The resurrection guard, restorations and re-verification (run by every worker process).
#[derive(Debug, Clone, clap::Args)]
pub struct GuardArgs {
    /// How often the upstream event stream is read when idle, in milliseconds.
    #[arg(long, env = "ERASURE_EVENTS_POLL_MS", default_value_t = 2000)]
    pub events_poll_ms: u64,
    /// How long a restoration waits for its synchronisation's events, in seconds.
    #[arg(long, env = "ERASURE_RESTORATION_TIMEOUT_SECS", default_value_t = 600)]
    pub restoration_timeout_secs: u64,
    /// Hours between re-verifications of every completed erasure (0: never).
    #[arg(long, env = "ERASURE_REVERIFY_EVERY_HOURS", default_value_t = 168.0)]
    pub reverify_every_hours: f64,
}

impl GuardArgs {
    pub fn settings(&self, retry: RetryPolicy) -> anyhow::Result<GuardSettings> {
        if self.restoration_timeout_secs == 0 {
            bail!("ERASURE_RESTORATION_TIMEOUT_SECS must be at least 1");
        }
        if self.reverify_every_hours.is_nan() || self.reverify_every_hours < 0.0 {
            bail!("ERASURE_REVERIFY_EVERY_HOURS must be 0 (never) or more");
        }
        Ok(GuardSettings {
            poll: Duration::from_millis(self.events_poll_ms.max(10)),
            restoration_timeout: Duration::from_secs(self.restoration_timeout_secs),
            reverify_every: (self.reverify_every_hours > 0.0)
                .then(|| Duration::from_secs_f64(self.reverify_every_hours * 3600.0)),
            retry,
        })
    }
}

/// Webhooks: where deliveries may go, how long an answer may take, how fast retries come
/// (read by `webhooks` and by the API when it checks a subscription's URL).
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// `ERASURE_WEBHOOK_ALLOWED_HOSTS`: when set, the only hosts a subscription may name (exact
    /// names, or `*.example.com` for its subdomains), trusted wherever they resolve. When unset,
    /// any public host: names and addresses that are (or resolve to) loopback, private,
    /// link-local or otherwise internal are refused.
    pub allowed_hosts: Option<Vec<String>>,
    /// `ERASURE_WEBHOOK_ALLOW_HTTP_HOSTS`: hosts that may be reached over plain `http` (and are
    /// trusted wherever they resolve); every other URL must be `https`.
    pub allow_http_hosts: Vec<String>,
    /// Time-out of one delivery (connect, send, answer).
    pub timeout: Duration,
    /// Multiplies the retry schedule (1: the real one, over more than 3 days); tests shrink it.
    pub retry_scale: f64,
    /// How often a worker looks for events to deliver.
    pub poll: Duration,
    /// Subscriptions one process delivers to at once.
    pub concurrency: usize,
    /// Prefix of the receipt link in payloads (e.g. `https://erasure.example.com`); without it
    /// the link is the path alone.
    pub public_url: Option<String>,
    /// Days delivered events and delivery attempts are kept.
    pub retention_days: u32,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            allowed_hosts: None,
            allow_http_hosts: Vec::new(),
            timeout: Duration::from_secs(10),
            retry_scale: 1.0,
            poll: Duration::from_millis(200),
            concurrency: 16,
            public_url: None,
            retention_days: 30,
        }
    }
}

/// Webhooks, as flags and variables.
#[derive(Debug, Clone, clap::Args)]
pub struct WebhookArgs {
    /// Hosts webhooks may be sent to, comma-separated (`hooks.example.com,*.corp.example`); when
    /// unset, any public host (internal addresses refused).
    #[arg(long, env = "ERASURE_WEBHOOK_ALLOWED_HOSTS")]
    pub webhook_allowed_hosts: Option<String>,
    /// Hosts webhooks may reach over plain http, comma-separated (e.g. `127.0.0.1` for tests).
    #[arg(long, env = "ERASURE_WEBHOOK_ALLOW_HTTP_HOSTS")]
    pub webhook_allow_http_hosts: Option<String>,
    /// Time-out of one webhook delivery, in seconds (its lease is three times it).
    #[arg(long, env = "ERASURE_WEBHOOK_TIMEOUT_SECS", default_value_t = 10.0)]
    pub webhook_timeout_secs: f64,
    /// Multiplies the webhook retry schedule's delays (above 0, at most 1; 1: the real schedule,
    /// over more than 3 days; tests shrink it).
    #[arg(long, env = "ERASURE_WEBHOOK_RETRY_SCALE", default_value_t = 1.0)]
    pub webhook_retry_scale: f64,
    /// How often a worker looks for webhook events due, in milliseconds.
    #[arg(long, env = "ERASURE_WEBHOOK_POLL_MS", default_value_t = 200)]
    pub webhook_poll_ms: u64,
    /// Webhook subscriptions one process delivers to at once.
    #[arg(long, env = "ERASURE_WEBHOOK_CONCURRENCY", default_value_t = 16)]
    pub webhook_concurrency: usize,
    /// The service's public base URL, for `receipt_url` in webhook payloads and the console's
    /// sign-in redirect URI.
    #[arg(long, env = "ERASURE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Days delivered webhook events and delivery attempts are kept (1 to 3650; pending and
    /// failed events stay).
    #[arg(long, env = "ERASURE_WEBHOOK_RETENTION_DAYS", default_value_t = 30)]
    pub webhook_retention_days: u32,
}

/// A comma-separated list of host names, lower-cased, empty items dropped.
fn host_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect()
}

impl WebhookArgs {
    pub fn settings(&self) -> anyhow::Result<WebhookSettings> {
        if !self.webhook_timeout_secs.is_finite()
            || self.webhook_timeout_secs < 0.1
            || self.webhook_timeout_secs > 300.0
        {
            bail!("ERASURE_WEBHOOK_TIMEOUT_SECS must be between 0.1 and 300");
        }
        if !self.webhook_retry_scale.is_finite()
            || self.webhook_retry_scale <= 0.0
            || self.webhook_retry_scale > 1.0
        {
            bail!("ERASURE_WEBHOOK_RETRY_SCALE must be above 0 and at most 1");
        }
        if !(1..=3650).contains(&self.webhook_retention_days) {
            bail!("ERASURE_WEBHOOK_RETENTION_DAYS must be between 1 and 3650");
        }
        if self.webhook_concurrency == 0 {
            bail!("ERASURE_WEBHOOK_CONCURRENCY must be at least 1");
        }
        if let Some(url) = &self.public_url {
            reqwest::Url::parse(url).context("ERASURE_PUBLIC_URL is not a valid URL")?;
        }
        let allowed_hosts = self
            .webhook_allowed_hosts
            .as_deref()
            .map(host_list)
            .filter(|l| !l.is_empty());
        Ok(WebhookSettings {
            allowed_hosts,
            allow_http_hosts: self
                .webhook_allow_http_hosts
                .as_deref()
                .map(host_list)
                .unwrap_or_default(),
            timeout: Duration::from_secs_f64(self.webhook_timeout_secs),
            retry_scale: self.webhook_retry_scale,
            poll: Duration::from_millis(self.webhook_poll_ms.clamp(10, 60_000)),
            concurrency: self.webhook_concurrency,
            public_url: self
                .public_url
                .as_deref()
                .map(|u| u.trim_end_matches('/').to_string()),
            retention_days: self.webhook_retention_days,
        })
    }
}

/// The console's sign-in: sessions, key sign-in, and single sign-on through OpenID Connect.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    /// `ERASURE_SESSION_HOURS`: how long a console session lasts.
    pub session_hours: u32,
    /// Whether an API key may open a console session (`ERASURE_CONSOLE_KEY_SIGNIN`; on without a
    /// provider, off by default with one).
    pub key_sign_in: bool,
    /// The OpenID Provider people sign in with; `None`: key sign-in only.
    pub oidc: Option<OidcSettings>,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        Self {
            session_hours: 8,
            key_sign_in: true,
            oidc: None,
        }
    }
}

/// The four role names a claim value may map to (the domain's `Role`s).
pub const ROLE_NAMES: &[&str] = &["requester", "approver", "auditor", "admin"];

/// An OpenID Provider, validated. The client secret is read by `secrets` and never shown.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// `ERASURE_OIDC_ISSUER`, exactly as the provider names itself in its tokens.
    pub issuer: String,
    pub client_id: String,
    /// `ERASURE_OIDC_CLIENT_SECRET` (or `_FILE`); `None`: a public client (PKCE alone).
    pub client_secret: Option<Secret>,
    /// `<ERASURE_PUBLIC_URL>/auth/oidc/callback`.
    pub redirect_url: String,
    /// `ERASURE_PUBLIC_URL`, without a trailing slash: where sign-out returns to.
    pub public_url: String,
    /// `ERASURE_OIDC_SCOPES` (always with `openid`).
    pub scopes: Vec<String>,
    /// `ERASURE_OIDC_ROLE_CLAIM` (default `groups`; a dotted path reaches a nested claim, e.g.
    /// `realm_access.roles`).
    pub role_claim: String,
    /// `ERASURE_OIDC_ROLES`: (claim value, role name), role names among `ROLE_NAMES`.
    pub roles: Vec<(String, String)>,
    /// The name on the sign-in button ("Sign in with <name>"): `ERASURE_OIDC_NAME`, else the
    /// issuer's host.
    pub display_name: String,
}

/// The console's sign-in, as flags and variables.
#[derive(Debug, Clone, clap::Args)]
pub struct ConsoleArgs {
    /// The OpenID Provider's issuer URL: enables single sign-on for the console (docs/sso.md).
    #[arg(long, env = "ERASURE_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,
    /// The console's client id at the provider.
    #[arg(long, env = "ERASURE_OIDC_CLIENT_ID")]
    pub oidc_client_id: Option<String>,
    /// Scopes asked of the OpenID Provider, space- or comma-separated.
    #[arg(
        long,
        env = "ERASURE_OIDC_SCOPES",
        default_value = "openid profile email"
    )]
    pub oidc_scopes: String,
    /// The ID token claim that carries roles (a string or an array of strings; a dotted path
    /// reaches a nested claim, e.g. `realm_access.roles`).
    #[arg(long, env = "ERASURE_OIDC_ROLE_CLAIM", default_value = "groups")]
    pub oidc_role_claim: String,
    /// Roles given by the role claim's values: `<claim value>=<role>`, comma-separated (e.g.
    /// `dpo=approver,platform=admin`).
    #[arg(long, env = "ERASURE_OIDC_ROLES")]
    pub oidc_roles: Option<String>,
    /// The provider's name on the sign-in button (default: the issuer's host).
    #[arg(long, env = "ERASURE_OIDC_NAME")]
    pub oidc_name: Option<String>,
    /// Whether an API key may sign in to the console, `true` or `false` (default: true without a
    /// provider, false with one).
    #[arg(long, env = "ERASURE_CONSOLE_KEY_SIGNIN")]
    pub console_key_signin: Option<bool>,
    /// Hours a console session lasts (ended sooner by sign-out, when its key is revoked, or when
    /// the person loses every role).
    #[arg(long, env = "ERASURE_SESSION_HOURS", default_value_t = 8)]
    pub session_hours: u32,
}

/// Parses `ERASURE_OIDC_ROLES`: `<claim value>=<role>` items, comma-separated.
pub fn parse_role_map(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut map = Vec::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((value, role)) = item.rsplit_once('=') else {
            bail!("ERASURE_OIDC_ROLES: `{item}` is not `<claim value>=<role>`");
        };
        let (value, role) = (value.trim(), role.trim().to_ascii_lowercase());
        if value.is_empty() {
            bail!("ERASURE_OIDC_ROLES: `{item}` names no claim value");
        }
        if !ROLE_NAMES.contains(&role.as_str()) {
            bail!(
                "ERASURE_OIDC_ROLES: `{role}` is not a role (requester, approver, auditor, admin)"
            );
        }
        map.push((value.to_string(), role));
    }
    Ok(map)
}

impl ConsoleArgs {
    /// The settings, validated; the client secret comes from `ERASURE_OIDC_CLIENT_SECRET` (or its
    /// `_FILE`) only. `public_url` is `ERASURE_PUBLIC_URL` (read with the webhooks' settings).
    pub fn settings(&self, public_url: Option<&str>) -> anyhow::Result<ConsoleSettings> {
        if !(1..=720).contains(&self.session_hours) {
            bail!("ERASURE_SESSION_HOURS must be between 1 and 720");
        }
        let oidc = match self.oidc_issuer.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(issuer) => {
                let parsed = reqwest::Url::parse(issuer)
                    .context("ERASURE_OIDC_ISSUER is not a valid URL")?;
                let client_id = self
                    .oidc_client_id
                    .as_deref()
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .context("ERASURE_OIDC_CLIENT_ID must be set with ERASURE_OIDC_ISSUER")?;
                let public_url = public_url
                    .map(|u| u.trim().trim_end_matches('/'))
                    .filter(|u| !u.is_empty())
                    .context(
                        "ERASURE_PUBLIC_URL must be set with ERASURE_OIDC_ISSUER (the redirect \
                         URI is <ERASURE_PUBLIC_URL>/auth/oidc/callback)",
                    )?;
                reqwest::Url::parse(public_url).context("ERASURE_PUBLIC_URL is not a valid URL")?;
                let mut scopes: Vec<String> = self
                    .oidc_scopes
                    .split([' ', ','])
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
                if !scopes.iter().any(|s| s == "openid") {
                    scopes.insert(0, "openid".into());
                }
                let roles = parse_role_map(self.oidc_roles.as_deref().unwrap_or(""))?;
                if roles.is_empty() {
                    bail!(
                        "ERASURE_OIDC_ROLES must map at least one claim value to a role \
                         (e.g. `dpo=approver`)"
                    );
                }
                let role_claim = self.oidc_role_claim.trim();
                if role_claim.is_empty() {
                    bail!("ERASURE_OIDC_ROLE_CLAIM must name a claim");
                }
                Some(OidcSettings {
                    issuer: issuer.to_string(),
                    client_id: client_id.to_string(),
                    client_secret: secret_from_env("ERASURE_OIDC_CLIENT_SECRET")?.map(Secret::new),
                    redirect_url: format!("{public_url}/auth/oidc/callback"),
                    public_url: public_url.to_string(),
                    scopes,
                    role_claim: role_claim.to_string(),
                    roles,
                    display_name: self
                        .oidc_name
                        .clone()
                        .filter(|n| !n.trim().is_empty())
                        .unwrap_or_else(|| parsed.host_str().unwrap_or(issuer).to_string()),
                })
            }
        };
        Ok(ConsoleSettings {
            session_hours: self.session_hours,
            key_sign_in: self.console_key_signin.unwrap_or(oidc.is_none()),
            oidc,
        })
    }
}

/// The database.
#[derive(Debug, Clone, clap::Args)]
pub struct DbArgs {
    /// The PostgreSQL database.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// A direct URL of the same database, for when DATABASE_URL points at a pooler in
    /// transaction mode (PgBouncer): then no statement outlives its transaction on DATABASE_URL,
    /// and what needs a session (LISTEN, the event reader's lock, VACUUM, migrations, the
    /// commands other than serve and worker) goes here. Unset: DATABASE_URL is used for everything.
    #[arg(long, env = "ERASURE_DATABASE_DIRECT_URL")]
    pub database_direct_url: Option<String>,
}

impl DbArgs {
    /// Where a command that needs a session connects: the direct URL when there is one.
    pub fn session_url(&self) -> &str {
        self.database_direct_url
            .as_deref()
            .unwrap_or(&self.database_url)
    }
}

/// Limits of the HTTP API (besides the body and batch sizes of `api::input`).
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Time a client has to send a request's head (line and headers); 408 after it.
    pub request_timeout: Duration,
    /// Time a client has to send a request's body once its head arrived; 408 after it.
    pub body_timeout: Duration,
    /// Open connections from one client IP address (0: no cap). The connections beyond the cap
    /// get 429 `too_many_connections` and are closed.
    pub max_connections_per_ip: usize,
    /// Requests per second of one API key, per process (0: no limit); 429 with `Retry-After`.
    pub rate_per_key: f64,
    /// Requests one key may send at once before the rate applies.
    pub burst_per_key: f64,
    /// Largest request head (target and headers), in bytes; 431 beyond it.
    pub max_head_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            max_connections_per_ip: 64,
            rate_per_key: 50.0,
            burst_per_key: 100.0,
            max_head_bytes: 16 * 1024,
        }
    }
}

/// The limits of the HTTP API as flags and variables.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpLimitArgs {
    /// Seconds a client has to send a request's head (408 after it).
    #[arg(
        long,
        env = "ERASURE_HTTP_REQUEST_TIMEOUT_SECS",
        default_value_t = 10.0
    )]
    pub http_request_timeout_secs: f64,
    /// Seconds a client has to send a request's body once its head arrived (408 after it).
    #[arg(long, env = "ERASURE_HTTP_BODY_TIMEOUT_SECS", default_value_t = 60.0)]
    pub http_body_timeout_secs: f64,
    /// Open connections from one client IP address (0: no cap); the connections beyond it get
    /// 429 and are closed.
    #[arg(
        long,
        env = "ERASURE_HTTP_MAX_CONNECTIONS_PER_IP",
        default_value_t = 64
    )]
    pub http_max_connections_per_ip: usize,
    /// Requests per second of one API key, per process (0: no limit); 429 with `Retry-After`
    /// beyond it.
    #[arg(long, env = "ERASURE_API_RATE_PER_KEY", default_value_t = 50.0)]
    pub api_rate_per_key: f64,
    /// Requests one key may send at once before its rate applies (default: twice the rate).
    #[arg(long, env = "ERASURE_API_BURST_PER_KEY")]
    pub api_burst_per_key: Option<f64>,
}

impl HttpLimitArgs {
    pub fn settings(&self) -> anyhow::Result<HttpLimits> {
        let positive = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 && v <= 86_400.0 {
                Ok(Duration::from_secs_f64(v))
            } else {
                bail!("{name} must be between 0 and 86400 seconds")
            }
        };
        if !self.api_rate_per_key.is_finite() || self.api_rate_per_key < 0.0 {
            bail!("ERASURE_API_RATE_PER_KEY must be 0 (no limit) or more");
        }
        let burst = self
            .api_burst_per_key
            .unwrap_or((self.api_rate_per_key * 2.0).max(1.0));
        if !burst.is_finite() || burst < 1.0 {
            bail!("ERASURE_API_BURST_PER_KEY must be at least 1");
        }
        Ok(HttpLimits {
            request_timeout: positive(
                "ERASURE_HTTP_REQUEST_TIMEOUT_SECS",
                self.http_request_timeout_secs,
            )?,
            body_timeout: positive(
                "ERASURE_HTTP_BODY_TIMEOUT_SECS",
                self.http_body_timeout_secs,
            )?,
            max_connections_per_ip: self.http_max_connections_per_ip,
            rate_per_key: self.api_rate_per_key,
            burst_per_key: burst,
            ..HttpLimits::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::{Keys, Secret};

    #[test]
    fn checkpoint_every_entries_is_a_positive_count() {
        assert_eq!(parse_checkpoint_every_entries(None).unwrap(), 1000);
        assert_eq!(parse_checkpoint_every_entries(Some(" 50 ")).unwrap(), 50);
        for bad in ["0", "-3", "many", "1.5"] {
            let err = parse_checkpoint_every_entries(Some(bad)).unwrap_err();
            assert!(err.to_string().contains("ERASURE_CHECKPOINT_EVERY_ENTRIES"));
        }
    }

    #[test]
    fn epochs_and_retention_default_to_90_and_1095_days_and_are_bounded() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            retention: RetentionArgs,
        }
        use clap::Parser;
        let settings = |args: &[&str]| Cli::try_parse_from(args).unwrap().retention.settings();
        let s = settings(&["erasure"]).unwrap();
        assert_eq!((s.epoch_days, s.retention_days), (90, 1095));
        let s = settings(&[
            "erasure",
            "--pseudonym-epoch-days",
            "7",
            "--retention-days",
            "365",
        ])
        .unwrap();
        assert_eq!((s.epoch_days, s.retention_days), (7, 365));
        for (flag, name) in [
            ("--pseudonym-epoch-days", "ERASURE_PSEUDONYM_EPOCH_DAYS"),
            ("--retention-days", "ERASURE_RETENTION_DAYS"),
        ] {
            for bad in ["0", "36601"] {
                let e = settings(&["erasure", flag, bad]).unwrap_err();
                assert!(e.to_string().contains(name), "{e}");
            }
        }
    }

    #[test]
    fn at_risk_days_default_to_7_and_are_bounded() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            at_risk: AtRiskArgs,
        }
        use clap::Parser;
        let days = |args: &[&str]| Cli::try_parse_from(args).map(|c| c.at_risk.days());
        assert_eq!(days(&["erasure"]).unwrap().unwrap(), DEFAULT_AT_RISK_DAYS);
        assert_eq!(
            days(&["erasure", "--at-risk-days", "0"]).unwrap().unwrap(),
            0
        );
        assert_eq!(
            days(&["erasure", "--at-risk-days", "3660"])
                .unwrap()
                .unwrap(),
            3660
        );
        let e = days(&["erasure", "--at-risk-days", "3661"])
            .unwrap()
            .unwrap_err();
        assert!(e.to_string().contains("ERASURE_AT_RISK_DAYS"), "{e}");
        for bad in ["-1", "7.5", "soon"] {
            assert!(days(&["erasure", "--at-risk-days", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn role_maps_parse_and_refuse_unknown_roles() {
        let map = parse_role_map("privacy-officers=requester, dpo=Approver,a=b=admin,").unwrap();
        let want: Vec<(String, String)> = [
            ("privacy-officers", "requester"),
            ("dpo", "approver"),
            ("a=b", "admin"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(map, want);
        assert!(parse_role_map("dpo=approver,cn=x").is_err());
        assert!(parse_role_map("dpo=boss").is_err());
        assert!(parse_role_map("=admin").is_err());
        assert_eq!(parse_role_map("").unwrap(), vec![]);
        assert_eq!(
            parse_role_map(" a=admin ").unwrap(),
            vec![("a".to_string(), "admin".to_string())]
        );
    }

    #[test]
    fn debug_output_shows_no_secret() {
        let keys = Keys::random();
        let settings = UpstreamSettings {
            api_url: "https://api.example/v2.1".into(),
            auth_url: "https://auth.example".into(),
            client_id: "app".into(),
            client_secret: Secret::new("s3cr3t-value"),
            max_rps: 1.0,
            max_concurrency: 1,
            timeout: Duration::from_secs(1),
        };
        let shown = format!("{keys:?} {keys:#?} {settings:?} {settings:#?}");
        for secret in [
            keys.pseudonym.as_ref().unwrap().to_hex(),
            keys.signing.to_hex(),
            keys.data.to_hex(),
            "s3cr3t-value".to_string(),
        ] {
            assert!(!shown.contains(&secret), "{shown}");
        }
        assert!(shown.contains("<redacted>"));
    }
}

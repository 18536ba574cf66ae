//! Settings and secrets. Environment first (`DATABASE_URL`, `ERASURE_*`), with flags for the same
//! names. Secrets are 32-byte keys given as 64 hex characters, either in the variable itself or in
//! a file named by the same variable with a `_FILE` suffix. They are never printed.

use std::fmt;
use std::time::Duration;

use anyhow::{Context, bail};
use zeroize::{Zeroize, Zeroizing};

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/erasure";

/// A 32-byte secret key. Its `Debug` output never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Key32([u8; 32]);

impl Key32 {
    /// Parses 64 hex characters.
    pub fn from_hex(name: &str, text: &str) -> anyhow::Result<Self> {
        let text = text.trim();
        let bytes = Zeroizing::new(hex::decode(text).map_err(|_| {
            anyhow::anyhow!(
                "{name} must be 64 hex characters (32 bytes); make one with `openssl rand -hex 32`"
            )
        })?);
        let bytes: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            anyhow::anyhow!(
                "{name} must be 64 hex characters (32 bytes); make one with `openssl rand -hex 32`"
            )
        })?;
        // 32 random bytes have almost always more than 25 distinct values; fewer than 16 is a
        // pattern (a repeated byte, a repeated short string), not a key.
        let distinct = bytes
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        if distinct < 16 {
            bail!(
                "{name} is a weak key (a repeated pattern, not random); make one with \
                 `openssl rand -hex 32`"
            );
        }
        Ok(Self(bytes))
    }

    pub fn random() -> Self {
        Self(rand::random())
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl Drop for Key32 {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Key32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key32(<redacted>)")
    }
}

/// A secret string (client secret). Its `Debug` output never shows it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Reads `NAME` or, failing that, the file named by `NAME_FILE`.
pub fn secret_from_env(name: &str) -> anyhow::Result<Option<String>> {
    if let Ok(value) = std::env::var(name)
        && !value.trim().is_empty()
    {
        return Ok(Some(value.trim().to_string()));
    }
    let file_var = format!("{name}_FILE");
    if let Ok(path) = std::env::var(&file_var)
        && !path.trim().is_empty()
    {
        let value = std::fs::read_to_string(path.trim())
            .with_context(|| format!("cannot read the file named by {file_var}"))?;
        return Ok(Some(value.trim().to_string()));
    }
    Ok(None)
}

/// The three service keys of DESIGN.md.
#[derive(Debug, Clone)]
pub struct Keys {
    pub pseudonym: Key32,
    pub pseudonym_version: u32,
    /// Older pseudonym keys `(version, key)`, still used for look-ups after a rotation
    /// (`ERASURE_PSEUDONYM_OLD_KEYS`).
    pub pseudonym_old: Vec<(u32, Key32)>,
    pub signing: Key32,
    pub data: Key32,
}

impl Keys {
    pub const PSEUDONYM: &'static str = "ERASURE_PSEUDONYM_KEY";
    pub const SIGNING: &'static str = "ERASURE_SIGNING_KEY";
    pub const DATA: &'static str = "ERASURE_DATA_KEY";
    pub const PSEUDONYM_OLD: &'static str = "ERASURE_PSEUDONYM_OLD_KEYS";

    /// Loads every key from the environment; a missing or weak key is an error that says how to
    /// make one.
    pub fn from_env() -> anyhow::Result<Self> {
        let load = |name: &str| -> anyhow::Result<Key32> {
            match secret_from_env(name)? {
                Some(text) => Key32::from_hex(name, &text),
                None => bail!(
                    "{name} is not set (nor {name}_FILE); make a key with `openssl rand -hex 32` \
                     (or run `erasure demo`, which generates its own)"
                ),
            }
        };
        let pseudonym = load(Self::PSEUDONYM)?;
        let pseudonym_version = pseudonym_version_from_env()?;
        let pseudonym_old = match secret_from_env(Self::PSEUDONYM_OLD)? {
            Some(text) => parse_old_keys(&text, pseudonym_version, &pseudonym)?,
            None => Vec::new(),
        };
        Ok(Self {
            pseudonym,
            pseudonym_version,
            pseudonym_old,
            signing: load(Self::SIGNING)?,
            data: load(Self::DATA)?,
        })
    }

    pub fn random() -> Self {
        Self {
            pseudonym: Key32::random(),
            pseudonym_version: 1,
            pseudonym_old: Vec::new(),
            signing: Key32::random(),
            data: Key32::random(),
        }
    }
}

/// `ERASURE_PSEUDONYM_OLD_KEYS`: `version:hexkey` items separated by commas or white space, the
/// retired pseudonym keys with the version each was used under. Errors never show a key.
fn parse_old_keys(
    text: &str,
    current: u32,
    current_key: &Key32,
) -> anyhow::Result<Vec<(u32, Key32)>> {
    const NAME: &str = Keys::PSEUDONYM_OLD;
    let mut out: Vec<(u32, Key32)> = Vec::new();
    for (n, item) in text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|i| !i.is_empty())
        .enumerate()
    {
        let (version, key) = item
            .split_once(':')
            .with_context(|| format!("{NAME}: item {} is not `version:hexkey`", n + 1))?;
        let version = version
            .parse::<u32>()
            .ok()
            .filter(|v| *v > 0)
            .with_context(|| format!("{NAME}: item {} has no positive version", n + 1))?;
        let key = Key32::from_hex(&format!("{NAME} (version {version})"), key)?;
        if version == current || out.iter().any(|(v, _)| *v == version) {
            bail!(
                "{NAME}: version {version} appears twice (or is the current ERASURE_PSEUDONYM_KEY_VERSION)"
            );
        }
        if key == *current_key {
            bail!("{NAME}: version {version} has the current ERASURE_PSEUDONYM_KEY");
        }
        out.push((version, key));
    }
    Ok(out)
}

fn pseudonym_version_from_env() -> anyhow::Result<u32> {
    match std::env::var("ERASURE_PSEUDONYM_KEY_VERSION") {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|v| *v > 0)
            .context("ERASURE_PSEUDONYM_KEY_VERSION must be a positive integer"),
        _ => Ok(1),
    }
}

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
    /// API base, e.g. https://api.oxlin.io/v2.1
    #[arg(long, env = "ERASURE_UPSTREAM_API_URL")]
    pub upstream_api_url: Option<String>,
    /// Auth server, e.g. https://auth.oxlin.io (POST {url}/token)
    #[arg(long, env = "ERASURE_UPSTREAM_AUTH_URL")]
    pub upstream_auth_url: Option<String>,
    #[arg(long, env = "ERASURE_UPSTREAM_CLIENT_ID")]
    pub upstream_client_id: Option<String>,
    /// Maximum upstream requests per second of this process.
    #[arg(long, env = "ERASURE_UPSTREAM_MAX_RPS", default_value_t = 20.0)]
    pub upstream_max_rps: f64,
    /// Maximum concurrent upstream calls of this process.
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
    pub max_rps: f64,
    pub max_concurrency: usize,
    pub timeout: Duration,
    /// How long a new process waits before its first upstream call (see `RateLimiter::new`).
    pub quiet_start: Duration,
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
            quiet_start: crate::upstream::RATE_WINDOW,
        })
    }
}

/// How workers behave.
#[derive(Debug, Clone, clap::Args)]
pub struct EngineArgs {
    /// Jobs one process runs at once.
    #[arg(long, env = "ERASURE_WORKER_CONCURRENCY", default_value_t = 32)]
    pub worker_concurrency: usize,
    /// Lease of a claimed job, in seconds; renewed while it runs.
    #[arg(long, env = "ERASURE_LEASE_SECS", default_value_t = 30.0)]
    pub lease_secs: f64,
    /// Poll interval when no notification arrives, in milliseconds.
    #[arg(long, env = "ERASURE_POLL_MS", default_value_t = 1000)]
    pub poll_ms: u64,
    /// First retry delay in seconds (exponential backoff with full jitter).
    #[arg(long, env = "ERASURE_RETRY_BASE_SECS", default_value_t = 1.0)]
    pub retry_base_secs: f64,
    /// Longest retry delay in seconds.
    #[arg(long, env = "ERASURE_RETRY_CAP_SECS", default_value_t = 3600.0)]
    pub retry_cap_secs: f64,
    /// Attempts of one step before the request fails.
    #[arg(long, env = "ERASURE_MAX_ATTEMPTS", default_value_t = 20)]
    pub max_attempts: i32,
    /// Grace period for in-flight calls at shutdown, in seconds.
    #[arg(long, env = "ERASURE_SHUTDOWN_GRACE_SECS", default_value_t = 20.0)]
    pub shutdown_grace_secs: f64,
}

impl EngineArgs {
    pub fn settings(&self) -> anyhow::Result<crate::engine::EngineSettings> {
        if self.worker_concurrency == 0 {
            bail!("ERASURE_WORKER_CONCURRENCY must be at least 1");
        }
        if self.lease_secs.is_nan() || self.lease_secs < 1.0 {
            bail!("ERASURE_LEASE_SECS must be at least 1");
        }
        if self.max_attempts < 1 {
            bail!("ERASURE_MAX_ATTEMPTS must be at least 1");
        }
        Ok(crate::engine::EngineSettings {
            concurrency: self.worker_concurrency,
            lease: Duration::from_secs_f64(self.lease_secs),
            poll: Duration::from_millis(self.poll_ms.max(10)),
            retry: crate::engine::RetryPolicy {
                base: Duration::from_secs_f64(self.retry_base_secs.max(0.001)),
                cap: Duration::from_secs_f64(self.retry_cap_secs.max(self.retry_base_secs)),
                max_attempts: self.max_attempts,
            },
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
    pub fn settings(
        &self,
        retry: crate::engine::RetryPolicy,
    ) -> anyhow::Result<crate::guard::GuardSettings> {
        if self.restoration_timeout_secs == 0 {
            bail!("ERASURE_RESTORATION_TIMEOUT_SECS must be at least 1");
        }
        if self.reverify_every_hours.is_nan() || self.reverify_every_hours < 0.0 {
            bail!("ERASURE_REVERIFY_EVERY_HOURS must be 0 (never) or more");
        }
        Ok(crate::guard::GuardSettings {
            poll: Duration::from_millis(self.events_poll_ms.max(10)),
            restoration_timeout: Duration::from_secs(self.restoration_timeout_secs),
            reverify_every: (self.reverify_every_hours > 0.0)
                .then(|| Duration::from_secs_f64(self.reverify_every_hours * 3600.0)),
            retry,
        })
    }
}

/// The database.
#[derive(Debug, Clone, clap::Args)]
pub struct DbArgs {
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
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
    /// Seconds a client has to send a request's head.
    #[arg(
        long,
        env = "ERASURE_HTTP_REQUEST_TIMEOUT_SECS",
        default_value_t = 10.0
    )]
    pub http_request_timeout_secs: f64,
    /// Seconds a client has to send a request's body.
    #[arg(long, env = "ERASURE_HTTP_BODY_TIMEOUT_SECS", default_value_t = 60.0)]
    pub http_body_timeout_secs: f64,
    /// Open connections from one client IP address (0: no cap).
    #[arg(
        long,
        env = "ERASURE_HTTP_MAX_CONNECTIONS_PER_IP",
        default_value_t = 64
    )]
    pub http_max_connections_per_ip: usize,
    /// Requests per second of one API key, per process (0: no limit).
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

    #[test]
    fn old_pseudonym_keys_parse_and_never_show_in_errors() {
        let (current, a, b) = (Key32::random(), Key32::random(), Key32::random());
        let text = format!("1:{}, 2:{}\n", a.to_hex(), b.to_hex());
        let old = parse_old_keys(&text, 3, &current).unwrap();
        assert_eq!(old, vec![(1, a.clone()), (2, b)]);
        assert!(parse_old_keys("", 3, &current).unwrap().is_empty());
        for bad in [
            a.to_hex(),
            format!("0:{}", a.to_hex()),
            format!("3:{}", a.to_hex()),
            format!("1:{0},1:{0}", a.to_hex()),
            format!("1:{}", current.to_hex()),
            format!("1:{}", &a.to_hex()[..60]),
        ] {
            let err = parse_old_keys(&bad, 3, &current).unwrap_err().to_string();
            assert!(err.contains("ERASURE_PSEUDONYM_OLD_KEYS"), "{err}");
            assert!(!err.contains(&a.to_hex()[..16]), "a key in an error: {err}");
        }
    }

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
    fn weak_or_malformed_keys_are_refused_with_the_way_to_make_one() {
        for (text, why) in [
            ("", "64 hex characters"),
            ("abcd", "64 hex characters"),
            (&"zz".repeat(32), "64 hex characters"),
            (&"00".repeat(32), "weak key"),
            (&"0123456789abcdef".repeat(4), "weak key"),
            (&"deadbeef".repeat(8), "weak key"),
        ] {
            let e = Key32::from_hex("ERASURE_DATA_KEY", text)
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{text}: {e}");
            assert!(e.contains("openssl rand -hex 32"), "{e}");
            assert!(e.contains("ERASURE_DATA_KEY"), "{e}");
        }
        let good = Key32::random().to_hex();
        assert_eq!(Key32::from_hex("K", &good).unwrap().to_hex(), good);
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
            quiet_start: Duration::ZERO,
        };
        let shown = format!("{keys:?} {keys:#?} {settings:?} {settings:#?}");
        for secret in [
            keys.pseudonym.to_hex(),
            keys.signing.to_hex(),
            keys.data.to_hex(),
            "s3cr3t-value".to_string(),
        ] {
            assert!(!shown.contains(&secret), "{shown}");
        }
        assert!(shown.contains("<redacted>"));
    }
}

//! HTTP to the aggregator: one place that sends, times, classifies and records each call.
//!
//! Never touches the database, never logs a token, a secret or an id (the path template is
//! recorded, not the path), and never sends a call outside the rate limiter and a concurrency
//! slot.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tracing::{Instrument, Span};

use super::CallRecord;
use super::politeness::{Breaker, PathGates, RateLimiter, Slots};
use crate::config::UpstreamSettings;

/// The most an upstream answer may weigh; more is treated as a transient fault.
const MAX_BODY: usize = 8 * 1024 * 1024;
/// Page size of list calls.
const PAGE: usize = 100;

/// Retries of one call within a step's attempt after a transient error, before the attempt gives
/// up (the step's own retry, with its longer backoff, takes over then).
const CALL_RETRIES: u32 = 3;
/// The full-jitter delays between those retries: uniform in [0, min(cap, base * 2^(n-1))].
const CALL_RETRY_BASE: Duration = Duration::from_millis(100);
const CALL_RETRY_CAP: Duration = Duration::from_secs(2);
/// A `Retry-After` longer than this is not waited for within the attempt: the attempt ends and
/// the step is scheduled after it. (A shorter wait lends the step's worker slot to another step
/// meanwhile: `jobs::slot`.)
const CALL_RETRY_MAX_WAIT: Duration = Duration::from_secs(10);

/// Why a call did not give an answer the engine can use.
#[derive(Debug, Clone, PartialEq)]
pub enum CallError {
    /// Try again later, never sooner than `retry_after`. `throttled`: the upstream answered 429,
    /// asking to wait, which is not a failure of the call.
    Transient {
        reason: String,
        retry_after: Option<Duration>,
        throttled: bool,
    },
    /// A person must look: the upstream refused the call for good.
    Permanent { reason: String },
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Transient { reason, .. } => write!(f, "transient: {reason}"),
            CallError::Permanent { reason } => write!(f, "permanent: {reason}"),
        }
    }
}

impl std::error::Error for CallError {}

impl CallError {
    pub(crate) fn transient(reason: impl Into<String>) -> Self {
        CallError::Transient {
            reason: reason.into(),
            retry_after: None,
            throttled: false,
        }
    }
}

struct Token {
    /// Wiped from memory when dropped.
    value: zeroize::Zeroizing<String>,
    /// When a new one is fetched (a tenth of its life, at most 30 s, before it expires).
    refresh_at: Instant,
    /// When the upstream stops taking it: until then it is used while a new one cannot be had.
    expires_at: Instant,
}

/// The client token and the token endpoint's last `Retry-After`.
#[derive(Default)]
struct Tokens {
    current: Option<Arc<Token>>,
    /// No token request before this (the endpoint's `Retry-After`, or a short pause after a
    /// failure), from any caller.
    held_until: Option<Instant>,
}

/// What the token cache holds for a caller.
enum Cached {
    /// A token not due for renewal.
    Fresh(Arc<Token>),
    /// Due (or none), but no token request before `until`; `usable`: one still valid.
    Held {
        until: Instant,
        usable: Option<Arc<Token>>,
    },
    /// Due for renewal (or none); `usable`: one still valid meanwhile.
    Due(Option<Arc<Token>>),
}

/// Waits of the token keeper (`Upstream::keep_token`) after a failure without `Retry-After`:
/// full jitter from `TOKEN_RETRY_BASE`, doubling, at most `TOKEN_RETRY_CAP`.
const TOKEN_RETRY_BASE: Duration = Duration::from_millis(500);
const TOKEN_RETRY_CAP: Duration = Duration::from_secs(60);

/// The aggregator's API, shared by every worker of a process.
pub struct Upstream {
    http: reqwest::Client,
    settings: UpstreamSettings,
    token: std::sync::Mutex<Tokens>,
    /// Held by the one caller asking the endpoint for a token (the keeper or a step).
    renewing: Mutex<()>,
    /// This process's share of the deployment's rate.
    limiter: RateLimiter,
    /// This process's share of the deployment's concurrent calls.
    slots: Slots,
    pub breaker: Breaker,
    /// Per resource (the path with its ids; a listing with its filter): one write in flight, and
    /// no call before a `Retry-After` given for it, whichever step or task makes it.
    paths: PathGates,
    /// True while an operator paused all upstream work (`engine::pause`): no call starts.
    hold: tokio::sync::watch::Sender<bool>,
    /// The API's and the token endpoint's hosts, for spans.
    host: String,
    auth_host: String,
}

impl Upstream {
    pub fn new(settings: UpstreamSettings) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(format!(
                "erasure/{} pid/{}",
                env!("CARGO_PKG_VERSION"),
                std::process::id()
            ))
            .pool_max_idle_per_host(settings.max_concurrency)
            .build()?;
        Ok(Self {
            http,
            host: crate::telemetry::host_of(&settings.api_url),
            auth_host: crate::telemetry::host_of(&settings.auth_url),
            limiter: RateLimiter::new(settings.max_rps),
            slots: Slots::new(settings.max_concurrency),
            breaker: Breaker::new(),
            paths: PathGates::default(),
            settings,
            token: std::sync::Mutex::new(Tokens::default()),
            renewing: Mutex::new(()),
            hold: tokio::sync::watch::Sender::new(false),
        })
    }

    /// The deployment's caps, every process's calls together: calls a second and calls at once
    /// (`ERASURE_UPSTREAM_MAX_RPS`, `ERASURE_UPSTREAM_MAX_CONCURRENCY`).
    pub fn caps(&self) -> (f64, usize) {
        (self.settings.max_rps, self.settings.max_concurrency)
    }

    /// This process's share of the caps: calls a second and concurrent calls. A new client has
    /// all of it, as if alone; a process that shares the caps with others sets it (and keeps it up
    /// to date: `engine::shares`, which starts by setting none until it is granted one). A
    /// smaller share applies at once (calls in flight beyond it finish); set a larger one only
    /// once the others have given it up.
    pub fn set_share(&self, per_second: f64, concurrency: usize) {
        self.limiter.set_share(per_second);
        self.slots.set(concurrency);
    }

    /// This process's share: calls a second (before any back-off) and concurrent calls.
    pub fn share(&self) -> (f64, usize) {
        (self.limiter.share(), self.slots.wanted())
    }

    /// What this process holds of the caps: its rate share, and the concurrent calls it may
    /// have in flight (its share, or more while calls beyond a smaller one are still out).
    pub fn held(&self) -> (f64, usize) {
        (self.limiter.share(), self.slots.held())
    }

    /// The calls a second allowed now (the share less the back-off after 429s).
    pub fn rate(&self) -> f64 {
        self.limiter.rate()
    }

    /// True while this process has no share to call the upstream with (not granted yet, or its
    /// lease on it lapsed) or upstream work is paused: workers claim nothing meanwhile.
    pub fn paused(&self) -> bool {
        self.limiter.share() <= 0.0 || self.slots.wanted() == 0 || self.on_hold()
    }

    /// Holds (`true`) or lets go (`false`) every call not yet sent: while held, no call starts
    /// (one waiting for its turn waits on); calls already sent finish.
    pub fn hold(&self, on: bool) {
        self.hold
            .send_if_modified(|held| std::mem::replace(held, on) != on);
    }

    /// Whether calls are held (`hold`).
    pub fn on_hold(&self) -> bool {
        *self.hold.borrow()
    }

    /// Returns once calls are held (at once if they are).
    pub async fn until_on_hold(&self) {
        let mut held = self.hold.subscribe();
        // The sender lives as long as `self`.
        let _ = held.wait_for(|held| *held).await;
    }

    /// Returns once calls are not held.
    async fn while_held(&self) {
        let mut held = self.hold.subscribe();
        // The sender lives as long as `self`.
        let _ = held.wait_for(|held| !*held).await;
    }

    /// Keeps a client token at hand until `stop`: fetches one at once (so the first calls of a
    /// worker need not wait for it) and a new one when the current one is due for renewal, so
    /// that no call waits for the token endpoint while a token is valid. After a failure it waits
    /// for the endpoint's `Retry-After` (kept for every caller, `token`) or a growing delay; it
    /// sends nothing while upstream work is paused.
    pub async fn keep_token(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let mut failures = 0u32;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.while_held() => {}
            }
            let next = tokio::select! {
                _ = stop.cancelled() => return,
                next = self.renew_when_due(&mut failures) => next,
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(next.into()) => {}
            }
        }
    }

    /// The keeper's round: renews the token if it is due and no `Retry-After` holds it; returns
    /// when to look again.
    async fn renew_when_due(&self, failures: &mut u32) -> Instant {
        let _renewing = self.renewing.lock().await;
        match self.cached(false, None) {
            Cached::Fresh(t) => t.refresh_at,
            Cached::Held { until, .. } => until,
            Cached::Due(_) => match self.renew().await {
                Ok(token) => {
                    *failures = 0;
                    token.refresh_at
                }
                Err(e) => {
                    *failures += 1;
                    let failures = *failures;
                    tracing::warn!(failures, error = %e, "upstream token not renewed; trying again");
                    let (retry_after, cap) = match &e {
                        CallError::Transient { retry_after, .. } => (*retry_after, TOKEN_RETRY_CAP),
                        // Wrong credentials: a person must mend the settings.
                        CallError::Permanent { .. } => (None, TOKEN_RETRY_CAP * 5),
                    };
                    Instant::now()
                        + crate::jobs::backoff::full_jitter(
                            TOKEN_RETRY_BASE,
                            cap,
                            failures,
                            retry_after,
                        )
                }
            },
        }
    }

    /// What the cache holds for a caller (`force`: not the `stale` token it was refused with).
    fn cached(&self, force: bool, stale: Option<&Arc<Token>>) -> Cached {
        let tokens = self
            .token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        // Another caller refreshed it after our stale one was handed out: use theirs.
        let usable = tokens.current.clone().filter(|t| {
            let refreshed = stale.is_some_and(|s| !Arc::ptr_eq(s, t));
            (!force || refreshed) && now < t.expires_at
        });
        match (usable, tokens.held_until.filter(|until| now < *until)) {
            (Some(t), _) if now < t.refresh_at => Cached::Fresh(t),
            (usable, Some(until)) => Cached::Held { until, usable },
            (usable, None) => Cached::Due(usable),
        }
    }

    /// A client token: the cached one unless it is due for renewal (or `force`d out as `stale`).
    /// While it is renewed by another caller, or when a new one cannot be had (the endpoint
    /// failed, or asked to wait with a `Retry-After` that has not passed), a cached one still
    /// valid serves. No caller asks for a token before such a `Retry-After`: each is told to wait
    /// for it instead.
    async fn token(
        &self,
        force: bool,
        stale: Option<&Arc<Token>>,
    ) -> Result<Arc<Token>, CallError> {
        // The token to use now, or (`Ok(Err)`) the valid one, if any, to use while renewing.
        let look = || match self.cached(force, stale) {
            Cached::Fresh(t) => Ok(Ok(t)),
            Cached::Held {
                usable: Some(t), ..
            } => Ok(Ok(t)),
            Cached::Held {
                until,
                usable: None,
            } => Err(CallError::Transient {
                reason: "token endpoint unavailable; waiting before asking again".into(),
                retry_after: Some(until.saturating_duration_since(Instant::now())),
                throttled: false,
            }),
            Cached::Due(usable) => Ok(Err(usable)),
        };
        let usable = match look()? {
            Ok(t) => return Ok(t),
            Err(usable) => usable,
        };
        // One caller asks the endpoint; the others use a valid token meanwhile, or wait for it.
        let _renewing = match (&usable, self.renewing.try_lock()) {
            (_, Ok(guard)) => guard,
            (Some(t), Err(_)) => return Ok(t.clone()),
            (None, Err(_)) => self.renewing.lock().await,
        };
        let usable = match look()? {
            Ok(t) => return Ok(t),
            Err(usable) => usable,
        };
        self.renew().await.or_else(|e| usable.ok_or(e))
    }

    /// Fetches a new token into the cache (the caller holds `renewing`); a transient failure
    /// holds every later request for one for its `Retry-After`, or `TOKEN_RETRY_BASE`.
    async fn renew(&self) -> Result<Arc<Token>, CallError> {
        let fetched = self.fetch_token().await;
        let mut tokens = self
            .token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match fetched {
            Ok(token) => {
                tokens.current = Some(token.clone());
                tokens.held_until = None;
                Ok(token)
            }
            Err(e) => {
                // Not asked sooner than its `Retry-After`, nor at once after a failure without one
                // (every call would try it while the token in hand still serves).
                if let CallError::Transient { retry_after, .. } = &e {
                    tokens.held_until =
                        Some(Instant::now() + retry_after.unwrap_or(TOKEN_RETRY_BASE));
                }
                Err(e)
            }
        }
    }

    /// Asks the token endpoint for a new client token.
    async fn fetch_token(&self) -> Result<Arc<Token>, CallError> {
        let started = Instant::now();
        let body = json!({
            "provider": "linxoConnect",
            "client_id": self.settings.client_id,
            "client_secret": self.settings.client_secret.expose(),
            "grant_type": "client_credentials",
            "scope": "openid",
        });
        let span = self.token_span();
        let reply = self
            .http
            .post(format!("{}/token", self.settings.auth_url))
            .json(&body)
            .send()
            .instrument(span.clone())
            .await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                span.in_scope(|| record_on_span(None, Some(transport_kind(&e))));
                return Err(transport_error("token", &e));
            }
        };
        let status = reply.status();
        span.in_scope(|| record_on_span(Some(status.as_u16()), None));
        if !status.is_success() {
            return Err(classify(status, reply.headers(), "token endpoint"));
        }
        let value: Value = read_json(reply).await?;
        let access = value
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| CallError::transient("token endpoint answered without access_token"))?;
        let expires_in = value
            .get("expires_in")
            .and_then(Value::as_f64)
            .filter(|s| s.is_finite() && *s >= 0.0)
            .unwrap_or(300.0)
            .min(86_400.0);
        let margin = (expires_in * 0.1).min(30.0);
        Ok(Arc::new(Token {
            value: zeroize::Zeroizing::new(access.to_string()),
            refresh_at: started + Duration::from_secs_f64(expires_in - margin),
            expires_at: started + Duration::from_secs_f64(expires_in),
        }))
    }

    /// GET of one resource: `Some(json)` on 200, `None` on 404.
    pub(super) async fn get(
        &self,
        template: &'static str,
        id: &str,
        calls: &mut Vec<CallRecord>,
    ) -> Result<Option<Value>, CallError> {
        match self.send(Method::GET, template, id, &[], calls).await? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|_| CallError::transient("upstream answered with invalid JSON")),
            None => Ok(None),
        }
    }

    /// Every item of a paged list (a short or empty page is the last one).
    pub(super) async fn list(
        &self,
        template: &'static str,
        param: &str,
        id: &str,
        calls: &mut Vec<CallRecord>,
    ) -> Result<Vec<Value>, CallError> {
        let mut all = Vec::new();
        for page in 1.. {
            let query = [
                (param, id.to_string()),
                ("page", page.to_string()),
                ("limit", PAGE.to_string()),
            ];
            let Some(bytes) = self.send(Method::GET, template, id, &query, calls).await? else {
                break;
            };
            let items: Vec<Value> = serde_json::from_slice(&bytes)
                .map_err(|_| CallError::transient("upstream list was not a JSON array"))?;
            let n = items.len();
            all.extend(items);
            if n < PAGE || page >= 10_000 {
                break;
            }
        }
        Ok(all)
    }

    /// Sends one call, and sends it again after a transient error (a time-out, a connection
    /// error, 408, 409, 429, 5xx) up to `CALL_RETRIES` times with short full-jitter delays, never
    /// before a `Retry-After`, each time through the rate limiter and a concurrency slot. Only
    /// GET and DELETE are sent again (they are idempotent), and not once the circuit breaker is
    /// open or the upstream asks to wait longer than `CALL_RETRY_MAX_WAIT`: the step's attempt
    /// ends then and the engine schedules the next. `Ok(Some(body))` on 2xx, `Ok(None)` on 404.
    /// Records every HTTP exchange in `calls`. `id` fills the template's `{id}`, in the path or
    /// in a listing's filter (`/accounts?connection_id={id}`: `query` has the filter itself).
    pub(super) async fn send(
        &self,
        method: Method,
        template: &'static str,
        id: &str,
        query: &[(&str, String)],
        calls: &mut Vec<CallRecord>,
    ) -> Result<Option<Vec<u8>>, CallError> {
        let idempotent = method == Method::GET || method == Method::DELETE;
        let mut retries = 0;
        loop {
            let span = self.call_span(&method, template, retries);
            let result = self
                .send_once(method.clone(), template, id, query, calls)
                .instrument(span)
                .await;
            let Err(CallError::Transient { retry_after, .. }) = &result else {
                return result;
            };
            let wait_asked = retry_after.unwrap_or(Duration::ZERO);
            if !idempotent
                || retries >= CALL_RETRIES
                || wait_asked > CALL_RETRY_MAX_WAIT
                || self.breaker.is_open()
            {
                return result;
            }
            retries += 1;
            crate::jobs::slot::wait(call_retry_delay(retries, *retry_after)).await;
        }
    }

    /// The span of one call (its sending, and its re-sending after a 401) when it is traced
    /// (`traced`): a child of the step's, named `<method> <route template>` and holding the
    /// method, the route template (never the path, which has ids), the upstream's host, the
    /// retry (`http.request.resend_count`, 0 for the first send) and the status it ends with.
    fn call_span(&self, method: &Method, template: &'static str, retries: u32) -> Span {
        if !traced() {
            return Span::none();
        }
        use tracing::field::Empty;
        tracing::info_span!(
            "upstream call",
            otel.name = %format_args!("{method} {template}"),
            otel.kind = "client",
            otel.status_code = Empty,
            http.request.method = %method,
            url.template = template,
            server.address = self.host.as_str(),
            http.request.resend_count = i64::from(retries),
            http.response.status_code = Empty,
            error.type = Empty,
        )
    }

    /// The span of a token request when it is traced: `POST /token` at the auth host.
    fn token_span(&self) -> Span {
        if !traced() {
            return Span::none();
        }
        use tracing::field::Empty;
        tracing::info_span!(
            "upstream token",
            otel.name = "POST /token",
            otel.kind = "client",
            otel.status_code = Empty,
            http.request.method = "POST",
            url.template = "/token",
            server.address = self.auth_host.as_str(),
            http.response.status_code = Empty,
            error.type = Empty,
        )
    }

    /// Sends one call (re-sending once with a fresh token after a 401). One write per resource is
    /// in flight.
    async fn send_once(
        &self,
        method: Method,
        template: &'static str,
        id: &str,
        query: &[(&str, String)],
        calls: &mut Vec<CallRecord>,
    ) -> Result<Option<Vec<u8>>, CallError> {
        // The resource called: the template with its id, a listing's filter included
        // (`/accounts?connection_id=…`, not every connection's `/accounts`), so that a
        // `Retry-After` holds that resource only. It has an id: it keys the gates, never a log.
        let resource = template.replace("{id}", id);
        let path = resource.split('?').next().unwrap_or(&resource);
        let url = format!("{}{}", self.settings.api_url, path);
        let mut turn = self.paths.enter(&resource, method != Method::GET).await;
        let mut stale: Option<Arc<Token>> = None;
        for attempt in 0..2 {
            // A write has the resource to itself (reads of it may overlap); a `Retry-After`
            // given to an earlier call holds it. Then a concurrency slot, then the rate slot:
            // calls that waited for a slot must not leave together in a burst. A `Retry-After`
            // that came back for this resource meanwhile (to an overlapping read) sends it back
            // to wait.
            // A pause holds it before its slots are taken and after (it may come while the call
            // waits for them).
            let _slot = loop {
                self.while_held().await;
                if let Some(until) = turn.held_until() {
                    crate::jobs::slot::wait_until(until.into()).await;
                }
                let slot = self.slots.acquire().await;
                self.limiter.acquire().await;
                if turn.held_until().is_none() && !self.on_hold() {
                    break slot;
                }
            };
            // The token is taken after the waits, so it cannot expire while queued.
            let token = self.token(stale.is_some(), stale.as_ref()).await?;
            let started = Instant::now();
            let sent = tokio::time::Instant::now();
            let result = self
                .http
                .request(method.clone(), &url)
                .query(query)
                .bearer_auth(token.value.as_str())
                .send()
                .await;
            let method_name = crate::metrics::UpstreamMethod::from(&method).as_str();
            let record = |status: Option<u16>, error: Option<&'static str>| {
                let took = started.elapsed();
                crate::metrics::global().upstream_call((&method).into(), status, took);
                record_on_span(status, error);
                CallRecord {
                    method: method_name,
                    path: template,
                    status,
                    error,
                    duration_ms: took.as_millis() as u64,
                }
            };
            let reply = match result {
                Ok(reply) => reply,
                Err(e) => {
                    let err = transport_error("call", &e);
                    calls.push(record(None, Some(transport_kind(&e))));
                    self.breaker.failure();
                    return Err(err);
                }
            };
            let status = reply.status();
            // The upstream asks every caller to slow down when it refuses many calls (429): the
            // whole process does.
            self.limiter
                .answered(sent, status == StatusCode::TOO_MANY_REQUESTS);
            if status == StatusCode::UNAUTHORIZED && attempt == 0 {
                calls.push(record(Some(401), None));
                stale = Some(token);
                continue;
            }
            if status.is_success() {
                let empty = status == StatusCode::NO_CONTENT || reply.content_length() == Some(0);
                let body = match not_json(reply.headers()).filter(|_| !empty) {
                    Some(refused) => Err(refused),
                    None => read_body(reply).await,
                };
                calls.push(record(
                    Some(status.as_u16()),
                    body.as_ref().err().map(|_| "body"),
                ));
                let body = body?;
                self.breaker.success();
                return Ok(Some(body));
            }
            calls.push(record(Some(status.as_u16()), None));
            if status == StatusCode::NOT_FOUND {
                self.breaker.success();
                return Ok(None);
            }
            if status.is_server_error() {
                self.breaker.failure();
            }
            let err = classify(status, reply.headers(), "upstream");
            if let CallError::Transient {
                retry_after: Some(wait),
                ..
            } = &err
            {
                turn.hold(Instant::now() + *wait);
            }
            return Err(err);
        }
        Err(CallError::Permanent {
            reason:
                "upstream refused a freshly issued token (401 twice): check the client credentials"
                    .into(),
        })
    }
}

/// Whether a call is traced: with traces on, within a traced span (a step's, an API call's); the
/// guard's polls and other work outside a request make no span.
fn traced() -> bool {
    crate::telemetry::enabled() && !Span::current().is_disabled()
}

/// What a call ended with, on its span (when traced): the status, or the kind of transport error
/// (`timeout`, `connect`, `transport`, `body`), and an error status for no answer or a 5xx.
fn record_on_span(status: Option<u16>, error: Option<&'static str>) {
    let span = Span::current();
    if span.is_disabled() {
        return;
    }
    if let Some(status) = status {
        // As i64: tracing-opentelemetry exports unsigned fields as strings.
        span.record("http.response.status_code", i64::from(status));
    }
    if let Some(error) = error {
        span.record("error.type", error);
    }
    if status.is_none_or(|s| s >= 500) || error.is_some() {
        span.record("otel.status_code", "ERROR");
    }
}

/// The delay before a call's `retry`-th retry within an attempt (the one backoff, with the
/// call's own base and cap).
fn call_retry_delay(retry: u32, retry_after: Option<Duration>) -> Duration {
    crate::jobs::backoff::full_jitter(CALL_RETRY_BASE, CALL_RETRY_CAP, retry, retry_after)
}

fn transport_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "transport"
    }
}

fn transport_error(what: &str, e: &reqwest::Error) -> CallError {
    // The reqwest error text may carry the URL (and so an id): say only what kind it was.
    CallError::transient(format!(
        "{what}: {} error talking to the upstream",
        transport_kind(e)
    ))
}

/// A 2xx answer that says it is not JSON (no content type is let through to the parser).
fn not_json(headers: &reqwest::header::HeaderMap) -> Option<CallError> {
    let value = headers.get(reqwest::header::CONTENT_TYPE)?;
    let media = value
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    match media.as_deref() {
        Some("application/json") => None,
        Some(m) if m.ends_with("+json") => None,
        // The upstream's text is not echoed unless it is a plain media type.
        Some(m)
            if m.len() <= 64
                && m.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/+.-".contains(&b)) =>
        {
            Some(CallError::transient(format!(
                "upstream answered {m} instead of JSON"
            )))
        }
        _ => Some(CallError::transient(
            "upstream answered an unreadable content type instead of JSON",
        )),
    }
}

/// 408, 409, 429 and 5xx are transient (with their Retry-After); redirects are never followed (the
/// client's policy is none: a redirect off the configured host could leak the bearer token or
/// act elsewhere); other statuses need a person.
fn classify(status: StatusCode, headers: &reqwest::header::HeaderMap, what: &str) -> CallError {
    let code = status.as_u16();
    if status.is_redirection() {
        return CallError::Permanent {
            reason: format!(
                "{what} answered a redirect ({code}); redirects are not followed: check the \
                 configured upstream URLs"
            ),
        };
    }
    // 408: the upstream gave up waiting for our request (it was not acted on): send it again.
    if code == 408 || code == 409 || code == 429 || status.is_server_error() {
        CallError::Transient {
            reason: format!("{what} answered {code}"),
            retry_after: retry_after(headers),
            throttled: code == 429,
        }
    } else {
        CallError::Permanent {
            reason: format!("{what} answered {code}: refused; a person must look"),
        }
    }
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let text = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = text.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::from_secs_f64(secs.min(86_400.0)));
    }
    let when = chrono::DateTime::parse_from_rfc2822(text).ok()?;
    let wait = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(
        wait.to_std()
            .unwrap_or(Duration::ZERO)
            .min(Duration::from_secs(86_400)),
    )
}

async fn read_body(mut reply: reqwest::Response) -> Result<Vec<u8>, CallError> {
    if reply.content_length().is_some_and(|n| n > MAX_BODY as u64) {
        return Err(CallError::transient("upstream answer exceeds 8 MiB"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = reply
        .chunk()
        .await
        .map_err(|e| transport_error("body", &e))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(CallError::transient("upstream answer exceeds 8 MiB"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

async fn read_json(reply: reqwest::Response) -> Result<Value, CallError> {
    if let Some(refused) = not_json(reply.headers()) {
        return Err(refused);
    }
    let body = read_body(reply).await?;
    serde_json::from_slice(&body)
        .map_err(|_| CallError::transient("upstream answered with invalid JSON"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};

    #[test]
    fn only_json_is_read() {
        let mut h = HeaderMap::new();
        assert_eq!(not_json(&h), None, "no content type: the parser decides");
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "application/problem+json",
        ] {
            h.insert(CONTENT_TYPE, HeaderValue::from_static(ok));
            assert_eq!(not_json(&h), None, "{ok}");
        }
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        let e = not_json(&h).unwrap().to_string();
        assert!(e.contains("text/html instead of JSON"), "{e}");
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/x<script>"));
        let e = not_json(&h).unwrap().to_string();
        assert!(!e.contains("script"), "{e}");
    }

    #[test]
    fn time_outs_conflicts_throttling_and_server_errors_are_tried_again() {
        let h = HeaderMap::new();
        for code in [408, 409, 429, 500, 502, 503, 504] {
            let e = classify(StatusCode::from_u16(code).unwrap(), &h, "upstream");
            assert!(matches!(e, CallError::Transient { .. }), "{code}: {e}");
        }
        for code in [400, 401, 403, 410, 422, 301] {
            let e = classify(StatusCode::from_u16(code).unwrap(), &h, "upstream");
            assert!(matches!(e, CallError::Permanent { .. }), "{code}: {e}");
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        let later = (chrono::Utc::now() + chrono::Duration::seconds(120)).to_rfc2822();
        h.insert(RETRY_AFTER, HeaderValue::from_str(&later).unwrap());
        let got = retry_after(&h).unwrap();
        assert!(got > Duration::from_secs(100) && got <= Duration::from_secs(120));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn statuses_are_classified_as_upstream_md_says() {
        let h = HeaderMap::new();
        for code in [409, 429, 500, 502, 503] {
            let s = StatusCode::from_u16(code).unwrap();
            assert!(
                matches!(classify(s, &h, "x"), CallError::Transient { .. }),
                "{code}"
            );
        }
        for code in [301, 302, 307, 308, 400, 403, 422] {
            let s = StatusCode::from_u16(code).unwrap();
            assert!(
                matches!(classify(s, &h, "x"), CallError::Permanent { .. }),
                "{code}"
            );
        }
    }
}

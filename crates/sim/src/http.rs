//! HTTP side of the simulator: the gate (journal, rate limit, faults, token resolution) and the
//! handlers of `/token`, `/v2.1/*` and `/_sim/*`.
//!
//! Part of the simulator: it never imports the service's parts.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderMap};
use actix_web::middleware::Next;
use actix_web::web::{self, Bytes, Data};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, ResponseError};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::faults::{Decision, Faults};
use super::journal::{Journal, NewCall};
use super::store::{ApiError, SeedRequest, Store, SyncKind, USER_PASSWORD};

// ---------------------------------------------------------------------------------------------
// Shared state

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenKind {
    Client,
    User(u64),
}

impl TokenKind {
    fn name(self) -> &'static str {
        match self {
            TokenKind::Client => "client",
            TokenKind::User(_) => "user",
        }
    }
}

struct TokenInfo {
    kind: TokenKind,
    expires: Instant,
}

/// Who called, as resolved by the gate from the `authorization` header.
#[derive(Debug, Clone, Copy)]
enum Caller {
    Missing,
    Unknown,
    Expired(TokenKind),
    Valid(TokenKind),
}

impl Caller {
    fn token_kind(self) -> &'static str {
        match self {
            Caller::Missing | Caller::Unknown => "none",
            Caller::Expired(k) | Caller::Valid(k) => k.name(),
        }
    }
}

/// A fault noted by a handler (slow delete) for the journal.
#[derive(Clone)]
struct Note(Rc<Cell<Option<&'static str>>>);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    User,
    Connection,
    Account,
}

/// A resource deleted under `slow_delete_secs`: GET keeps answering this body until `until`.
struct Ghost {
    until: Instant,
    owner: u64,
    body: Bytes,
}

/// Token bucket of `max_rps` (burst of one second's worth).
pub(crate) struct Limiter {
    rps: AtomicU32,
    bucket: Mutex<(f64, Instant)>,
}

impl Limiter {
    fn new(rps: Option<u32>) -> Self {
        let l = Limiter {
            rps: AtomicU32::new(0),
            bucket: Mutex::new((0.0, Instant::now())),
        };
        l.set(rps);
        l
    }

    pub(crate) fn set(&self, rps: Option<u32>) {
        let rps = rps.unwrap_or(0);
        *lock(&self.bucket) = (f64::from(rps), Instant::now());
        self.rps.store(rps, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> Option<u32> {
        Some(self.rps.load(Ordering::Relaxed)).filter(|r| *r > 0)
    }

    /// Takes a token, or says how many seconds to wait.
    fn check(&self) -> Result<(), u64> {
        let rps = self.rps.load(Ordering::Relaxed);
        if rps == 0 {
            return Ok(());
        }
        let cap = f64::from(rps);
        let mut b = lock(&self.bucket);
        let now = Instant::now();
        b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * cap).min(cap);
        b.1 = now;
        if b.0 >= 1.0 {
            b.0 -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.0) / cap).ceil().max(1.0) as u64)
        }
    }
}

pub(crate) struct Shared {
    pub client_id: String,
    pub client_secret: String,
    pub token_ttl: Duration,
    pub sync_duration: Duration,
    pub store: RwLock<Store>,
    tokens: RwLock<HashMap<String, TokenInfo>>,
    faults: RwLock<Arc<Faults>>,
    /// False when no per-call fault can fire (the fast path skips the fault lock).
    faults_on: AtomicBool,
    pub limiter: Limiter,
    pub journal: Journal,
    ghosts: Mutex<HashMap<(Kind, u64), Ghost>>,
    /// Account DELETEs still to be followed at once by a LIST_ACCOUNTS (`relist_after_delete`).
    relists_left: AtomicU32,
    /// Token requests still to be refused (`token_unavailable`).
    token_refusals_left: AtomicU32,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(crate) fn new(config: &super::SimConfig) -> Self {
        Shared {
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            token_ttl: config.token_ttl,
            sync_duration: config.sync_duration,
            store: RwLock::new(Store::new(config.seed)),
            tokens: RwLock::new(HashMap::new()),
            faults: RwLock::new(Arc::new(config.faults.clone())),
            faults_on: AtomicBool::new(!config.faults.is_off()),
            limiter: Limiter::new(config.max_rps),
            journal: Journal::new(config.journal_capacity),
            ghosts: Mutex::new(HashMap::new()),
            relists_left: AtomicU32::new(config.faults.relist_after_delete),
            token_refusals_left: AtomicU32::new(config.faults.token_unavailable),
        }
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Store> {
        self.store.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, Store> {
        self.store.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn faults(&self) -> Arc<Faults> {
        self.faults
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn set_faults(&self, faults: Faults) {
        self.faults_on.store(!faults.is_off(), Ordering::Relaxed);
        self.relists_left
            .store(faults.relist_after_delete, Ordering::Relaxed);
        self.token_refusals_left
            .store(faults.token_unavailable, Ordering::Relaxed);
        *self.faults.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(faults);
    }

    /// Every token issued and not revoked (tests look for them in logs).
    pub(crate) fn token_values(&self) -> Vec<String> {
        let tokens = self.tokens.read().unwrap_or_else(|e| e.into_inner());
        tokens.keys().cloned().collect()
    }

    pub(crate) fn revoke_tokens(&self) {
        self.tokens
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn issue_token(&self, kind: TokenKind) -> String {
        let mut raw = [0u8; 24];
        rand::rng().fill_bytes(&mut raw);
        let token = hex::encode(raw);
        let now = Instant::now();
        let mut tokens = self.tokens.write().unwrap_or_else(|e| e.into_inner());
        if tokens.len() >= 100_000 {
            tokens.retain(|_, t| t.expires > now);
        }
        tokens.insert(
            token.clone(),
            TokenInfo {
                kind,
                expires: now + self.token_ttl,
            },
        );
        token
    }

    fn resolve(&self, headers: &HeaderMap) -> Caller {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Caller::Missing;
        };
        let Ok(value) = value.to_str() else {
            return Caller::Unknown;
        };
        let Some(token) = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
        else {
            return Caller::Unknown;
        };
        let tokens = self.tokens.read().unwrap_or_else(|e| e.into_inner());
        match tokens.get(token.trim()) {
            None => Caller::Unknown,
            Some(t) if t.expires <= Instant::now() => Caller::Expired(t.kind),
            Some(t) => Caller::Valid(t.kind),
        }
    }

    fn add_ghost(
        &self,
        req: &HttpRequest,
        kind: Kind,
        id: u64,
        owner: u64,
        value: &impl Serialize,
    ) {
        let secs = self.faults().slow_delete_secs;
        if secs <= 0.0 {
            return;
        }
        note_fault(req, "slow_delete");
        let body = serde_json::to_vec(value).unwrap_or_default();
        let now = Instant::now();
        let mut ghosts = lock(&self.ghosts);
        if ghosts.len() >= 1024 {
            ghosts.retain(|_, g| g.until > now);
        }
        ghosts.insert(
            (kind, id),
            Ghost {
                until: now + Duration::from_secs_f64(secs),
                owner,
                body: Bytes::from(body),
            },
        );
    }

    /// The stale 200 of a slow delete, if one is still due.
    fn ghost(&self, req: &HttpRequest, kind: Kind, id: u64, p: Principal) -> Option<HttpResponse> {
        let mut ghosts = lock(&self.ghosts);
        let g = ghosts.get(&(kind, id))?;
        if g.until <= Instant::now() {
            ghosts.remove(&(kind, id));
            return None;
        }
        p.may_access(g.owner).ok()?;
        note_fault(req, "slow_delete");
        Some(
            HttpResponse::Ok()
                .content_type("application/json")
                .body(g.body.clone()),
        )
    }
}

fn note_fault(req: &HttpRequest, fault: &'static str) {
    if let Some(n) = req.extensions().get::<Note>() {
        n.0.set(Some(fault));
    }
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

pub(crate) fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Errors

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.error, self.description)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut r = HttpResponse::build(self.status_code());
        if let Some(s) = self.retry_after {
            r.insert_header((header::RETRY_AFTER, s.to_string()));
        }
        if self.status == 401 {
            r.insert_header((
                header::WWW_AUTHENTICATE,
                format!("Bearer error=\"{}\"", self.error),
            ));
        }
        r.json(json!({"error": self.error, "error_description": self.description}))
    }
}

type ApiResult = Result<HttpResponse, ApiError>;

// ---------------------------------------------------------------------------------------------
// The gate: journal, rate limit, faults, token resolution.

/// Records a call in the journal when finished, or when dropped unfinished (client gone).
struct Pending {
    shared: Data<Shared>,
    method: Cow<'static, str>,
    path: String,
    query: Option<String>,
    route: Cow<'static, str>,
    started_at_ms: f64,
    token_kind: &'static str,
    client: Option<String>,
    fault: Option<&'static str>,
    done: bool,
}

impl Pending {
    fn finish(&mut self, status: u16, retry_after_secs: Option<u64>) {
        self.done = true;
        self.shared.journal.push(NewCall {
            method: std::mem::take(&mut self.method),
            path: std::mem::take(&mut self.path),
            query: self.query.take(),
            route: std::mem::take(&mut self.route),
            status,
            started_at_ms: self.started_at_ms,
            ended_at_ms: now_ms(),
            token_kind: self.token_kind,
            retry_after_secs,
            client: self.client.take(),
            fault: self.fault,
        });
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            self.finish(0, None);
        }
    }
}

fn retry_after_of(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The file descriptor of the connection, for the `drop` fault.
#[cfg(unix)]
#[derive(Clone, Copy)]
pub(crate) struct ConnFd(pub std::os::fd::RawFd);

pub(crate) fn on_connect(conn: &dyn std::any::Any, ext: &mut actix_web::dev::Extensions) {
    #[cfg(unix)]
    if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
        use std::os::fd::AsRawFd;
        ext.insert(ConnFd(tcp.as_raw_fd()));
    }
    #[cfg(not(unix))]
    let _ = (conn, ext);
}

/// Shuts the TCP connection down under the request: the client reads EOF before any status line.
fn drop_connection(req: &ServiceRequest) {
    #[cfg(unix)]
    if let Some(ConnFd(fd)) = req.conn_data::<ConnFd>() {
        use std::os::fd::FromRawFd;
        // SAFETY: the descriptor belongs to the live connection this request arrived on (actix
        // owns it until the connection ends, which cannot happen while we hold the request).
        // ManuallyDrop keeps us from closing it; we only shut the socket down.
        let stream = std::mem::ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(*fd) });
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }
    #[cfg(not(unix))]
    let _ = req;
}

fn method_name(m: &actix_web::http::Method) -> Cow<'static, str> {
    use actix_web::http::Method;
    Cow::Borrowed(match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => return Cow::Owned(m.as_str().to_string()),
    })
}

/// The route template a journaled path matches (without a second trip through the router), or
/// the path itself when it matches none.
fn route_of(path: &str) -> Cow<'static, str> {
    let found = if path == "/token" {
        Some("/token")
    } else {
        path.strip_prefix("/v2.1/").and_then(|rest| {
            let mut seg = rest.split('/');
            let parts = (seg.next()?, seg.next(), seg.next(), seg.next());
            let id = |s: &str| !s.is_empty();
            match parts {
                ("users", Some("me"), None, None) => Some("/v2.1/users/me"),
                ("users", Some(i), None, None) if id(i) => Some("/v2.1/users/{id}"),
                ("connections", None, None, None) => Some("/v2.1/connections"),
                ("connections", Some(i), None, None) if id(i) => Some("/v2.1/connections/{id}"),
                ("connections", Some(i), Some("synchronize"), None) if id(i) => {
                    Some("/v2.1/connections/{id}/synchronize")
                }
                ("accounts", None, None, None) => Some("/v2.1/accounts"),
                ("accounts", Some(i), None, None) if id(i) => Some("/v2.1/accounts/{id}"),
                ("transactions", None, None, None) => Some("/v2.1/transactions"),
                ("events", None, None, None) => Some("/v2.1/events"),
                _ => None,
            }
        })
    };
    found.map_or_else(|| Cow::Owned(path.to_string()), Cow::Borrowed)
}

pub(crate) async fn gate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let path = req.path();
    let api = path == "/v2.1" || path.starts_with("/v2.1/");
    if !api && path != "/token" {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    let shared = req
        .app_data::<Data<Shared>>()
        .expect("simulator state")
        .clone();
    let query = req.query_string();
    let mut pending = Pending {
        shared: shared.clone(),
        method: method_name(req.method()),
        path: path.to_string(),
        query: (!query.is_empty()).then(|| query.to_string()),
        route: route_of(path),
        started_at_ms: now_ms(),
        token_kind: "none",
        client: req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(100).collect()),
        fault: None,
        done: false,
    };
    if !api {
        // An outage of the token endpoint (`token_unavailable`).
        let refused = shared
            .token_refusals_left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if refused {
            let mut e = ApiError::new(
                503,
                "unavailable",
                "token endpoint unavailable; retry later",
            );
            e.retry_after = Some(1);
            pending.finish(503, Some(1));
            return Ok(req.into_response(e.error_response()));
        }
        let res = next.call(req).await?;
        pending.finish(res.status().as_u16(), None);
        return Ok(res.map_into_boxed_body());
    }

    let caller = shared.resolve(req.headers());
    pending.token_kind = caller.token_kind();
    req.extensions_mut().insert(caller);

    if let Err(secs) = shared.limiter.check() {
        let mut e = ApiError::new(429, "rate_limited", "too many requests; retry later");
        e.retry_after = Some(secs);
        pending.finish(429, Some(secs));
        return Ok(req.into_response(e.error_response()));
    }

    let (latency, decision) = if shared.faults_on.load(Ordering::Relaxed) {
        shared.faults().decide(req.method().as_str())
    } else {
        (Duration::ZERO, Decision::Pass)
    };
    if !latency.is_zero() {
        pending.fault = Some("latency");
        actix_web::rt::time::sleep(latency).await;
    }
    let injected = match decision.clone() {
        Decision::Pass => None,
        Decision::Drop => {
            pending.fault = Some("drop");
            drop_connection(&req);
            pending.finish(0, None);
            let mut res = HttpResponse::InternalServerError().finish();
            res.head_mut()
                .set_connection_type(actix_web::http::ConnectionType::Close);
            return Ok(req.into_response(res));
        }
        Decision::Hang(d) => {
            pending.fault = Some("hang");
            actix_web::rt::time::sleep(d).await;
            Some(ApiError::new(
                504,
                "timeout",
                "the upstream did not answer in time; nothing was done",
            ))
        }
        Decision::Error {
            status,
            retry_after,
        } => {
            pending.fault = Some("5xx");
            let (code, text) = match status {
                502 => ("bad_gateway", "bad gateway; nothing was done"),
                503 => (
                    "service_unavailable",
                    "service unavailable; nothing was done",
                ),
                _ => ("internal_error", "internal error; nothing was done"),
            };
            let mut e = ApiError::new(status, code, text);
            e.retry_after = retry_after;
            Some(e)
        }
        Decision::Throttle { retry_after } => {
            pending.fault = Some("429");
            let mut e = ApiError::new(429, "rate_limited", "too many requests; retry later");
            e.retry_after = Some(retry_after);
            Some(e)
        }
        Decision::HugeBody(bytes) => {
            pending.fault = Some("huge_body");
            pending.finish(200, None);
            return Ok(req.into_response(super::hostile::huge_body(bytes)));
        }
        Decision::Redirect => {
            pending.fault = Some("redirect");
            pending.finish(307, None);
            let reply = super::hostile::redirect(req.path());
            return Ok(req.into_response(reply));
        }
        Decision::Drip(every) => {
            pending.fault = Some("drip");
            pending.finish(200, None);
            return Ok(req.into_response(super::hostile::drip(every)));
        }
        Decision::BadJson | Decision::WrongContentType => None,
    };
    if let Some(e) = injected {
        pending.finish(e.status, e.retry_after);
        return Ok(req.into_response(e.error_response()));
    }

    let note = Note(Rc::new(Cell::new(None)));
    req.extensions_mut().insert(note.clone());
    let res = next.call(req).await?;
    if let Some(f) = note.0.get() {
        pending.fault = Some(f);
    }
    let corrupt = match decision {
        Decision::BadJson => Some(super::hostile::Corruption::BadJson),
        Decision::WrongContentType => Some(super::hostile::Corruption::Html),
        _ => None,
    }
    .filter(|_| res.status().is_success() && res.status().as_u16() != 204);
    if let Some(how) = corrupt {
        pending.fault = Some(how.name());
    }
    pending.finish(res.status().as_u16(), retry_after_of(res.headers()));
    match corrupt {
        Some(how) => Ok(super::hostile::corrupt(res.map_into_boxed_body(), how)),
        None => Ok(res.map_into_boxed_body()),
    }
}

// ---------------------------------------------------------------------------------------------
// Auth helpers

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Principal {
    Client,
    User(u64),
}

impl Principal {
    /// A user token may only touch its own user's data.
    fn may_access(self, owner: u64) -> Result<(), ApiError> {
        match self {
            Principal::Client => Ok(()),
            Principal::User(u) if u == owner => Ok(()),
            Principal::User(_) => Err(ApiError::forbidden(
                "this token does not give access to that resource",
            )),
        }
    }
}

fn unauthorized(text: &str) -> ApiError {
    ApiError::new(401, "invalid_token", text)
}

fn principal(req: &HttpRequest, store: &Store) -> Result<Principal, ApiError> {
    match req
        .extensions()
        .get::<Caller>()
        .copied()
        .unwrap_or(Caller::Missing)
    {
        Caller::Missing => Err(unauthorized("missing bearer token")),
        Caller::Unknown => Err(unauthorized("unknown or malformed token")),
        Caller::Expired(_) => Err(unauthorized("the token has expired")),
        Caller::Valid(TokenKind::Client) => Ok(Principal::Client),
        Caller::Valid(TokenKind::User(u)) if store.users.contains_key(&u) => Ok(Principal::User(u)),
        Caller::Valid(TokenKind::User(_)) => Err(unauthorized("the token's user no longer exists")),
    }
}

fn parse_id(what: &str, raw: &str) -> Result<u64, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found(what, raw))
}

type Query = web::Query<HashMap<String, String>>;

fn query_u64(q: &Query, name: &str) -> Result<Option<u64>, ApiError> {
    match q.get(name) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("{name} must be a non-negative integer"))),
    }
}

/// `page` (from 1) and `limit` (1..=max, default `default`): the range to skip/take.
fn paging(q: &Query, default: usize, max: usize) -> Result<(usize, usize), ApiError> {
    let page = query_u64(q, "page")?.unwrap_or(1);
    if page == 0 {
        return Err(ApiError::bad_request("page starts at 1"));
    }
    let limit = query_u64(q, "limit")?.unwrap_or(default as u64);
    if limit == 0 || limit > max as u64 {
        return Err(ApiError::bad_request(format!("limit must be in 1..={max}")));
    }
    let limit = limit as usize;
    Ok(((page as usize - 1).saturating_mul(limit), limit))
}

fn json_list<'a, T: Serialize + 'a>(items: impl Iterator<Item = &'a T>) -> HttpResponse {
    let items: Vec<&T> = items.collect();
    HttpResponse::Ok().json(items)
}

fn no_content() -> HttpResponse {
    HttpResponse::NoContent().finish()
}

// ---------------------------------------------------------------------------------------------
// /token

#[derive(Deserialize)]
struct TokenRequest {
    provider: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    grant_type: Option<String>,
    scope: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

async fn token(sh: Data<Shared>, body: Bytes) -> ApiResult {
    let req: TokenRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body must be a JSON object: {e}")))?;
    if let Some(p) = &req.provider
        && p != "linxoConnect"
    {
        return Err(ApiError::bad_request(format!("unknown provider {p:?}")));
    }
    let (Some(client_id), Some(grant_type)) = (&req.client_id, &req.grant_type) else {
        return Err(ApiError::bad_request(
            "client_id and grant_type are required",
        ));
    };
    if *client_id != sh.client_id || req.client_secret.as_deref() != Some(&*sh.client_secret) {
        return Err(ApiError::new(
            401,
            "invalid_client",
            "unknown client or wrong secret",
        ));
    }
    let kind = match grant_type.as_str() {
        "client_credentials" => TokenKind::Client,
        "password" => {
            let (Some(username), Some(password)) = (&req.username, &req.password) else {
                return Err(ApiError::bad_request(
                    "the password grant needs username and password",
                ));
            };
            match sh.read().user_by_email(username) {
                Some(uid) if password == USER_PASSWORD => TokenKind::User(uid),
                _ => {
                    return Err(ApiError::new(
                        401,
                        "invalid_grant",
                        "wrong username or password",
                    ));
                }
            }
        }
        other => {
            return Err(ApiError::new(
                400,
                "unsupported_grant_type",
                format!("unsupported grant_type {other:?}"),
            ));
        }
    };
    let access_token = sh.issue_token(kind);
    let mut body = json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": sh.token_ttl.as_secs_f64().ceil() as u64,
    });
    if let Some(scope) = req.scope {
        body["scope"] = json!(scope);
    }
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(body))
}

// ---------------------------------------------------------------------------------------------
// /v2.1/users

async fn get_me(req: HttpRequest, sh: Data<Shared>) -> ApiResult {
    let store = sh.read();
    match principal(&req, &store)? {
        Principal::User(uid) => Ok(HttpResponse::Ok().json(&store.users[&uid])),
        Principal::Client => Err(ApiError::forbidden("/users/me needs a user token")),
    }
}

async fn get_user(req: HttpRequest, sh: Data<Shared>, id: web::Path<String>) -> ApiResult {
    let store = sh.read();
    let p = principal(&req, &store)?;
    let id = parse_id("user", &id)?;
    p.may_access(id)?;
    match store.users.get(&id) {
        Some(u) => Ok(HttpResponse::Ok().json(u)),
        None => sh
            .ghost(&req, Kind::User, id, p)
            .ok_or_else(|| ApiError::not_found("user", id)),
    }
}

fn delete_user_id(req: &HttpRequest, sh: &Shared, id: u64) -> ApiResult {
    let mut store = sh.write();
    let user = store.delete_user(id)?;
    drop(store);
    sh.add_ghost(req, Kind::User, id, id, &user);
    Ok(no_content())
}

async fn delete_me(req: HttpRequest, sh: Data<Shared>) -> ApiResult {
    let p = principal(&req, &sh.read())?;
    match p {
        Principal::User(uid) => delete_user_id(&req, &sh, uid),
        Principal::Client => Err(ApiError::forbidden("/users/me needs a user token")),
    }
}

async fn delete_user(req: HttpRequest, sh: Data<Shared>, id: web::Path<String>) -> ApiResult {
    let p = principal(&req, &sh.read())?;
    let id = parse_id("user", &id)?;
    p.may_access(id)?;
    delete_user_id(&req, &sh, id)
}

// ---------------------------------------------------------------------------------------------
// /v2.1/connections

async fn list_connections(req: HttpRequest, sh: Data<Shared>, q: Query) -> ApiResult {
    let store = sh.read();
    let p = principal(&req, &store)?;
    let (skip, limit) = paging(&q, 25, 500)?;
    let user = match (p, query_u64(&q, "user_id")?) {
        (Principal::Client, None) => {
            return Ok(json_list(store.connections.values().skip(skip).take(limit)));
        }
        (Principal::Client, Some(u)) => u,
        (Principal::User(u), None) => u,
        (Principal::User(u), Some(x)) => {
            p.may_access(x)?;
            u
        }
    };
    let u = store
        .users
        .get(&user)
        .ok_or_else(|| ApiError::not_found("user", user))?;
    Ok(json_list(
        u.connections
            .iter()
            .skip(skip)
            .take(limit)
            .filter_map(|c| store.connections.get(c)),
    ))
}

async fn get_connection(req: HttpRequest, sh: Data<Shared>, id: web::Path<String>) -> ApiResult {
    let store = sh.read();
    let p = principal(&req, &store)?;
    let id = parse_id("connection", &id)?;
    match store.connections.get(&id) {
        Some(c) => {
            p.may_access(c.user_id)?;
            Ok(HttpResponse::Ok().json(c))
        }
        None => sh
            .ghost(&req, Kind::Connection, id, p)
            .ok_or_else(|| ApiError::not_found("connection", id)),
    }
}

async fn delete_connection(req: HttpRequest, sh: Data<Shared>, id: web::Path<String>) -> ApiResult {
    let mut store = sh.write();
    let p = principal(&req, &store)?;
    let id = parse_id("connection", &id)?;
    let owner = store
        .connection_owner(id)
        .ok_or_else(|| ApiError::not_found("connection", id))?;
    p.may_access(owner)?;
    let conn = store.delete_connection(id)?;
    drop(store);
    sh.add_ghost(&req, Kind::Connection, id, owner, &conn);
    Ok(no_content())
}

async fn synchronize(
    req: HttpRequest,
    sh: Data<Shared>,
    id: web::Path<String>,
    q: Query,
) -> ApiResult {
    let mut store = sh.write();
    let p = principal(&req, &store)?;
    let kind = match q.get("type").map(String::as_str) {
        None | Some("ALL") => SyncKind::All,
        Some("LIST_ACCOUNTS") => SyncKind::ListAccounts,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "type must be LIST_ACCOUNTS or ALL, got {other:?}"
            )));
        }
    };
    let id = parse_id("connection", &id)?;
    let owner = store
        .connection_owner(id)
        .ok_or_else(|| ApiError::not_found("connection", id))?;
    p.may_access(owner)?;
    store.start_sync(id)?;
    drop(store);
    let shared = sh.clone();
    actix_web::rt::spawn(async move {
        actix_web::rt::time::sleep(shared.sync_duration).await;
        let keep_ids = shared.faults().readd_keeps_ids;
        shared.write().finish_sync(id, kind, now_secs(), keep_ids);
    });
    Ok(no_content())
}

// ---------------------------------------------------------------------------------------------
// /v2.1/accounts, /v2.1/transactions, /v2.1/events

async fn list_accounts(req: HttpRequest, sh: Data<Shared>, q: Query) -> ApiResult {
    let store = sh.read();
    let p = principal(&req, &store)?;
    let (skip, limit) = paging(&q, 25, 500)?;
    match (p, query_u64(&q, "connection_id")?) {
        (_, Some(cid)) => {
            let c = store
                .connections
                .get(&cid)
                .ok_or_else(|| ApiError::not_found("connection", cid))?;
            p.may_access(c.user_id)?;
            Ok(json_list(
                c.accounts
                    .iter()
                    .skip(skip)
                    .take(limit)
                    .filter_map(|a| store.accounts.get(a)),
            ))
        }
        (Principal::Client, None) => Ok(json_list(store.accounts.values().skip(skip).take(limit))),
        (Principal::User(u), None) => {
            let mut ids: Vec<u64> = store.users[&u]
                .connections
                .iter()
                .filter_map(|c| store.connections.get(c))
                .flat_map(|c| c.accounts.iter().copied())
                .collect();
            ids.sort_unstable();
            Ok(json_list(
                ids.iter()
                    .skip(skip)
                    .take(limit)
                    .filter_map(|a| store.accounts.get(a)),
            ))
        }
    }
}

async fn get_account(req: HttpRequest, sh: Data<Shared>, id: web::Path<String>) -> ApiResult {
    let store = sh.read();
    let p = principal(&req, &store)?;
    let id = parse_id("account", &id)?;
    match store.accounts.get(&id) {
        Some(a) => {
            p.may_access(a.user_id)?;
            Ok(HttpResponse::Ok().json(a))
        }
        None => sh
            .ghost(&req, Kind::Account, id, p)
            .ok_or_else(|| ApiError::not_found("account", id)),
    }
}

async fn delete_account(req: HttpRequest, sh: Data<Shared>, id: web::Path<String>) -> ApiResult {
    let mut store = sh.write();
    let p = principal(&req, &store)?;
    let id = parse_id("account", &id)?;
    let owner = store
        .accounts
        .get(&id)
        .ok_or_else(|| ApiError::not_found("account", id))?
        .user_id;
    p.may_access(owner)?;
    let (account, _cascade) = store.delete_account(id)?;
    // A resynchronisation racing the erasure (`relist_after_delete`): the account is back, under
    // its old id, before the DELETE answers.
    let relist = sh
        .relists_left
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok();
    if relist {
        store.finish_sync(
            account.connection_id,
            SyncKind::ListAccounts,
            now_secs(),
            true,
        );
        drop(store);
        return Ok(no_content());
    }
    drop(store);
    sh.add_ghost(&req, Kind::Account, id, owner, &account);
    Ok(no_content())
}

async fn list_transactions(req: HttpRequest, sh: Data<Shared>, q: Query) -> ApiResult {
    let store = sh.read();
    let p = principal(&req, &store)?;
    let (skip, limit) = paging(&q, 25, 500)?;
    let aid = query_u64(&q, "account_id")?
        .ok_or_else(|| ApiError::bad_request("account_id is required"))?;
    let a = store
        .accounts
        .get(&aid)
        .ok_or_else(|| ApiError::not_found("account", aid))?;
    p.may_access(a.user_id)?;
    Ok(json_list(a.transactions.iter().skip(skip).take(limit)))
}

async fn list_events(req: HttpRequest, sh: Data<Shared>, q: Query) -> ApiResult {
    let store = sh.read();
    if principal(&req, &store)? != Principal::Client {
        return Err(ApiError::forbidden("events need the client token"));
    }
    let since = query_u64(&q, "since")?.unwrap_or(0);
    let limit = query_u64(&q, "limit")?.unwrap_or(100);
    if limit == 0 || limit > 100 {
        return Err(ApiError::bad_request("limit must be in 1..=100"));
    }
    let events: Vec<&serde_json::Value> = store
        .events_since(since, limit as usize)
        .iter()
        .map(|e| &e.body)
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "events": events })))
}

// ---------------------------------------------------------------------------------------------
// /_sim

async fn sim_health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn sim_get_faults(sh: Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(&*sh.faults())
}

async fn sim_put_faults(sh: Data<Shared>, body: Bytes) -> ApiResult {
    let faults: Faults = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid faults: {e}")))?;
    faults.validate().map_err(ApiError::bad_request)?;
    sh.set_faults(faults.clone());
    Ok(HttpResponse::Ok().json(faults))
}

#[derive(Serialize, Deserialize)]
struct RateLimit {
    max_rps: Option<u32>,
}

async fn sim_get_rate_limit(sh: Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(RateLimit {
        max_rps: sh.limiter.get(),
    })
}

async fn sim_put_rate_limit(sh: Data<Shared>, body: Bytes) -> ApiResult {
    let r: RateLimit = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("expected {{\"max_rps\": n|null}}: {e}")))?;
    sh.limiter.set(r.max_rps);
    Ok(HttpResponse::Ok().json(RateLimit {
        max_rps: sh.limiter.get(),
    }))
}

async fn sim_seed(sh: Data<Shared>, body: Bytes) -> ApiResult {
    let req: SeedRequest = if body.iter().all(u8::is_ascii_whitespace) {
        SeedRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid seed request: {e}")))?
    };
    req.validate().map_err(ApiError::bad_request)?;
    let out = sh.write().seed(&req);
    Ok(HttpResponse::Ok().json(out))
}

async fn sim_calls(sh: Data<Shared>, q: Query) -> ApiResult {
    let since = query_u64(&q, "since")?.unwrap_or(0);
    let limit = query_u64(&q, "limit")?.unwrap_or(u64::MAX) as usize;
    Ok(HttpResponse::Ok().json(json!({ "calls": sh.journal.since(since, limit) })))
}

async fn sim_clear_calls(sh: Data<Shared>) -> HttpResponse {
    sh.journal.clear();
    no_content()
}

async fn sim_stats(sh: Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(sh.read().stats())
}

async fn sim_revoke_tokens(sh: Data<Shared>) -> HttpResponse {
    sh.revoke_tokens();
    no_content()
}

async fn sim_bank_close(sh: Data<Shared>, id: web::Path<String>) -> ApiResult {
    let id = parse_id("account", &id)?;
    sh.write().bank_set_open(id, false)?;
    Ok(no_content())
}

async fn sim_bank_reopen(sh: Data<Shared>, id: web::Path<String>) -> ApiResult {
    let id = parse_id("account", &id)?;
    sh.write().bank_set_open(id, true)?;
    Ok(no_content())
}

async fn sim_bank_add(sh: Data<Shared>, path: web::Path<(String, String)>) -> ApiResult {
    let (cid, channel) = path.into_inner();
    let cid = parse_id("connection", &cid)?;
    let reference = sh.write().bank_add(cid, &channel)?;
    Ok(HttpResponse::Created().json(json!({ "reference": reference })))
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    ApiError::new(
        404,
        "not_found",
        format!("no route for {} {}", req.method(), req.path()),
    )
    .error_response()
}

/// All routes of the simulator.
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::QueryConfig::default().error_handler(|e, _| {
            ApiError::bad_request(format!("invalid query string: {e}")).into()
        }),
    )
    .route("/token", web::post().to(token))
    .service(
        web::scope("/v2.1")
            .route("/users/me", web::get().to(get_me))
            .route("/users/me", web::delete().to(delete_me))
            .route("/users/{id}", web::get().to(get_user))
            .route("/users/{id}", web::delete().to(delete_user))
            .route("/connections", web::get().to(list_connections))
            .route("/connections/{id}", web::get().to(get_connection))
            .route("/connections/{id}", web::delete().to(delete_connection))
            .route("/connections/{id}/synchronize", web::post().to(synchronize))
            .route("/accounts", web::get().to(list_accounts))
            .route("/accounts/{id}", web::get().to(get_account))
            .route("/accounts/{id}", web::delete().to(delete_account))
            .route("/transactions", web::get().to(list_transactions))
            .route("/events", web::get().to(list_events))
            .default_service(web::to(not_found)),
    )
    .service(
        web::scope("/_sim")
            .route("/health", web::get().to(sim_health))
            .route("/faults", web::get().to(sim_get_faults))
            .route("/faults", web::put().to(sim_put_faults))
            .route("/rate-limit", web::get().to(sim_get_rate_limit))
            .route("/rate-limit", web::put().to(sim_put_rate_limit))
            .route("/seed", web::post().to(sim_seed))
            .route("/calls", web::get().to(sim_calls))
            .route("/calls", web::delete().to(sim_clear_calls))
            .route("/stats", web::get().to(sim_stats))
            .route("/tokens", web::delete().to(sim_revoke_tokens))
            .route("/bank/accounts/{id}/close", web::post().to(sim_bank_close))
            .route(
                "/bank/accounts/{id}/reopen",
                web::post().to(sim_bank_reopen),
            )
            .route(
                "/bank/connections/{id}/channels/{channel}/accounts",
                web::post().to(sim_bank_add),
            )
            .default_service(web::to(not_found)),
    )
    .default_service(web::to(not_found));
}

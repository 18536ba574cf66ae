//! Webhooks: delivering the outbox (`store::webhooks`) to subscribers with Standard Webhooks
//! headers and signatures, at least once, in order per subscription, with retries over more than
//! three days; then the subscription is disabled, audited, and shown on `/metrics` and the status
//! page.
//!
//! Any worker process delivers: it leases a subscription whose oldest pending event is due, sends
//! its events one after the other (never the next before the one before it was accepted), records
//! each batch of attempts with its lease renewed, and gives the subscription back. A process that
//! dies mid-delivery leaves its lease to expire; the events it sent but did not record are sent
//! again with the same `webhook-id`. A worker whose lease lapsed (it stalled) and was taken over
//! sends nothing more and records nothing: its lease is confirmed (and renewed) before a send once
//! `CONFIRM_AFTER` has passed since it was last known to hold it, and recording checks it in the
//! same transaction. Never logs a secret, a payload or an answer's body.

pub mod sign;
pub mod target;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span};

use crate::audit::seal::Sealer;
use crate::config::WebhookSettings;
use crate::domain::events::WebhookType;
use crate::jobs::lease;
use crate::store::Db;
use crate::store::webhooks::{self as store, Attempted, Claim, Next, Pending};
use sign::SigningKey;

/// The event types a subscription may ask for (besides `test`, sent on demand).
pub fn event_types() -> impl Iterator<Item = &'static str> {
    WebhookType::all().map(WebhookType::as_str)
}

/// Delays before each retry of an event (seconds, before `ERASURE_WEBHOOK_RETRY_SCALE`): the
/// first attempt is at once, then 5 s, 5 min, 30 min, 2 h, 5 h and 10 h seven times: 13 attempts
/// over 77.6 hours (more than 3 days).
pub const SCHEDULE: [u64; 12] = [
    5, 300, 1800, 7200, 18000, 36000, 36000, 36000, 36000, 36000, 36000, 36000,
];

/// Attempts of one event after which its subscription is disabled.
pub const MAX_ATTEMPTS: i32 = SCHEDULE.len() as i32 + 1;

/// Events read per round trip.
const BATCH: i64 = 100;

/// How long a worker keeps one subscription before giving others their turn.
const TURN: Duration = Duration::from_secs(5);

/// While a worker has slots to spare, it keeps a subscription it delivers to for its turn and
/// looks for new events this often (rather than every `ERASURE_WEBHOOK_POLL_MS`), so that events
/// of a busy subscription wait milliseconds, not a poll interval.
const LINGER_POLL: Duration = Duration::from_millis(20);

/// A send goes only while the subscription's lease is known to be held: when it was last confirmed
/// longer ago than this (or renewed longer ago than a third of the lease), it is confirmed and
/// renewed in the database first, and a worker that lost it stops. Quick batches pay nothing.
pub const CONFIRM_AFTER: Duration = Duration::from_millis(100);

/// How often each worker process prunes what is older than `ERASURE_WEBHOOK_RETENTION_DAYS`.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Bytes of an answer read at most (of which 200 characters are kept).
const ANSWER_READ: usize = 1024;

/// Characters of an answer kept in the delivery log.
pub const EXCERPT: usize = 200;

/// The delay before the next attempt of an event that has had `attempts` attempts; `None` when
/// the schedule is spent. A `Retry-After` the receiver sent (429, 503) is honoured, up to the
/// longest step of the schedule.
pub fn retry_delay(attempts: i32, scale: f64, retry_after: Option<Duration>) -> Option<Duration> {
    if attempts >= MAX_ATTEMPTS {
        return None;
    }
    let step = SCHEDULE[(attempts.max(1) - 1) as usize];
    let scheduled = Duration::from_secs_f64(step as f64 * scale);
    let longest = Duration::from_secs(SCHEDULE[SCHEDULE.len() - 1]);
    Some(scheduled.max(retry_after.unwrap_or_default().min(longest)))
}

/// The span of one delivery attempt of a request's event when traces are on (`telemetry`): a
/// child of the API call that created the request (its stored `traceparent`), named
/// `webhook <event type>`, with the receiver's host only (a URL's path or query may hold a
/// secret), the event's `webhook-id`, the attempt and the status. Events of no traced request
/// (`test`, `restoration.completed`) make none.
fn delivery_span(url: &Result<reqwest::Url, String>, event: &Pending, attempt: i32) -> Span {
    if !crate::telemetry::enabled() || event.traceparent.is_none() {
        return Span::none();
    }
    use tracing::field::Empty;
    let host = url.as_ref().ok().and_then(|u| u.host_str()).unwrap_or("");
    let span = tracing::info_span!(
        "webhook delivery",
        otel.name = %format_args!("webhook {}", event.event_type),
        otel.kind = "client",
        otel.status_code = Empty,
        trace_id = Empty,
        http.request.method = "POST",
        server.address = host,
        http.response.status_code = Empty,
        erasure.webhook.event_type = event.event_type.as_str(),
        erasure.webhook.id = event.id.as_str(),
        erasure.webhook.attempt = attempt,
    );
    crate::telemetry::continue_trace(&span, event.traceparent.as_deref());
    span
}

/// Delivers webhooks.
pub struct Webhooks {
    db: Db,
    sealer: Sealer,
    settings: Arc<WebhookSettings>,
    client: reqwest::Client,
    lease: Duration,
}

impl Webhooks {
    pub fn new(db: Db, sealer: Sealer, settings: WebhookSettings) -> anyhow::Result<Arc<Self>> {
        let settings = Arc::new(settings);
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
            .no_proxy()
            .user_agent(concat!("erasure-webhooks/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(target::Resolver {
                settings: settings.clone(),
            }))
            .build()?;
        // A batch is recorded within a third of the lease, and one attempt lasts at most the
        // time-out.
        let lease = (settings.timeout * 3).max(Duration::from_secs(1));
        Ok(Arc::new(Self {
            db,
            sealer,
            settings,
            client,
            lease,
        }))
    }

    /// Delivers until `shutdown`; then lets the subscriptions being delivered record what was
    /// sent, and gives them back.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> anyhow::Result<()> {
        let slots = Arc::new(Semaphore::new(self.settings.concurrency));
        let mut running = JoinSet::new();
        let mut pruned: Option<Instant> = None;
        while !shutdown.is_cancelled() {
            while running.try_join_next().is_some() {}
            if pruned.is_none_or(|at| at.elapsed() > PRUNE_EVERY) {
                pruned = Some(Instant::now());
                match store::prune(&self.db, self.settings.retention_days).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(rows = n, "pruned old webhook events and attempts"),
                    Err(e) => tracing::warn!(error = %e, "pruning webhook events failed"),
                }
            }
            let free = slots.available_permits();
            if free > 0 {
                // The lease runs from the claim at the latest.
                let asked = Instant::now();
                match store::claim(&self.db, free as i64, self.lease).await {
                    Ok(claims) => {
                        for claim in claims {
                            let permit = slots
                                .clone()
                                .acquire_owned()
                                .await
                                .expect("semaphore never closed");
                            let (this, stop, spare) =
                                (self.clone(), shutdown.clone(), slots.clone());
                            running.spawn(async move {
                                this.deliver(claim, asked, stop, spare).await;
                                drop(permit);
                            });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "claiming webhook subscriptions failed"),
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.settings.poll) => {}
                _ = shutdown.cancelled() => break,
            }
        }
        while running.join_next().await.is_some() {}
        Ok(())
    }

    /// Delivers a leased subscription's due events in order, for one turn. `claimed`: when the
    /// lease was asked for.
    async fn deliver(
        &self,
        claim: Claim,
        claimed: Instant,
        stop: CancellationToken,
        slots: Arc<Semaphore>,
    ) {
        let started = Instant::now();
        // When the lease was last renewed, and last known to be held (each taken before the
        // statement that did it: the lease ran from then at the latest).
        let mut renewed = claimed;
        let mut confirmed;
        let subscription = claim.id;
        loop {
            let asked = Instant::now();
            let next = match store::next_events(&self.db, &claim, BATCH).await {
                Ok(Some(next)) => next,
                // No longer ours, or paused or disabled meanwhile.
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(%subscription, error = %e, "reading webhook events failed");
                    break;
                }
            };
            confirmed = asked;
            let (target, events) = next;
            if events.first().is_none_or(|e| !e.due) {
                let linger = events.is_empty()
                    && slots.available_permits() > 0
                    && started.elapsed() < TURN
                    && !stop.is_cancelled();
                if !linger {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(LINGER_POLL) => {}
                    _ = stop.cancelled() => {}
                }
                // The lease must outlive the wait.
                if renewed.elapsed() > lease::renew_after(self.lease) {
                    let asked = Instant::now();
                    match store::renew(&self.db, &claim, self.lease).await {
                        Ok(true) => renewed = asked,
                        Ok(false) => return,
                        Err(e) => {
                            tracing::warn!(%subscription, error = %e, "renewing a webhook lease failed");
                            break;
                        }
                    }
                }
                continue;
            }
            let keys = match self.keys(subscription, &target) {
                Ok(keys) => keys,
                Err(e) => {
                    tracing::error!(%subscription, error = %e, "a webhook secret does not open");
                    break;
                }
            };
            let url = target::check(&self.settings, &target.url);
            let batch_started = Instant::now();
            let mut attempted = Vec::new();
            for event in events {
                if !event.due
                    || stop.is_cancelled()
                    || batch_started.elapsed() > lease::renew_after(self.lease)
                {
                    break;
                }
                // Never send once the lease may have been taken over (this worker stalled past
                // it, or the subscription was paused or disabled meanwhile).
                if confirmed.elapsed() > CONFIRM_AFTER
                    || renewed.elapsed() > lease::renew_after(self.lease)
                {
                    let asked = Instant::now();
                    match store::renew(&self.db, &claim, self.lease).await {
                        Ok(true) => (renewed, confirmed) = (asked, asked),
                        Ok(false) => {
                            tracing::info!(%subscription, "webhook lease lost; sending nothing more");
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(%subscription, error = %e, "confirming a webhook lease failed");
                            break;
                        }
                    }
                }
                let a = self.send(&url, &keys, &event).await;
                let accepted = matches!(a.next, Next::Delivered);
                attempted.push(a);
                if !accepted {
                    break;
                }
            }
            let failed = attempted
                .last()
                .is_some_and(|a| !matches!(a.next, Next::Delivered));
            if let Some(a) = attempted.last().filter(|_| failed) {
                if matches!(a.next, Next::GiveUp) {
                    tracing::error!(%subscription, attempts = a.attempt, "webhook retries spent: the subscription is disabled");
                } else {
                    tracing::info!(%subscription, attempt = a.attempt, status = a.status, error = a.error.as_deref(), "webhook delivery failed; will retry");
                }
            }
            let asked = Instant::now();
            match self.record(&claim, &attempted).await {
                Some(true) => renewed = asked,
                // The lease was lost (nothing was recorded: another worker holds it and sends
                // again what this one sent), or the subscription was disabled.
                _ => return,
            }
            if failed || stop.is_cancelled() || started.elapsed() > TURN {
                break;
            }
        }
        if let Err(e) = store::release(&self.db, &claim).await {
            tracing::warn!(%subscription, error = %e, "could not give a webhook subscription back; its lease will expire");
        }
    }

    /// Records attempts, retrying a few times; `None` when it could not (the lease will expire
    /// and what was sent is sent again, with the same ids).
    async fn record(&self, claim: &Claim, attempted: &[Attempted]) -> Option<bool> {
        for delay_ms in [50u64, 200, 1000, 3000] {
            match store::record(&self.db, claim, attempted, self.lease).await {
                Ok(held) => return Some(held),
                Err(e) => {
                    tracing::warn!(subscription = %claim.id, error = %e, "recording webhook deliveries failed; retrying");
                    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                }
            }
        }
        None
    }

    /// The keys to sign with: the current secret, and the previous one while it is valid.
    fn keys(
        &self,
        subscription: uuid::Uuid,
        target: &store::Target,
    ) -> anyhow::Result<Vec<SigningKey>> {
        let mut keys = Vec::with_capacity(2);
        for sealed in std::iter::once(&target.secret_sealed).chain(&target.previous_secret_sealed) {
            let secret = zeroize::Zeroizing::new(self.sealer.open(subscription, sealed)?);
            keys.push(SigningKey::parse(std::str::from_utf8(&secret)?)?);
        }
        Ok(keys)
    }

    /// The body of an event as sent: `{type, timestamp, data}`.
    fn body(&self, event: &Pending) -> Vec<u8> {
        let mut data = event.payload.clone();
        if let (Some(base), Some(Value::String(path))) =
            (&self.settings.public_url, data.get_mut("receipt_url"))
        {
            *path = format!("{base}{path}");
        }
        serde_json::to_vec(&json!({
            "type": event.event_type,
            "timestamp": event.occurred_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            "data": data,
        }))
        .expect("a JSON value serialises")
    }

    /// One attempt of one event.
    async fn send(
        &self,
        url: &Result<reqwest::Url, String>,
        keys: &[SigningKey],
        event: &Pending,
    ) -> Attempted {
        let attempt = event.attempts + 1;
        let started = Instant::now();
        let span = delivery_span(url, event, attempt);
        let (status, error, excerpt, retry_after) = match url {
            Err(why) => (None, Some(format!("the URL is refused: {why}")), None, None),
            Ok(url) => self.post(url, keys, event).instrument(span.clone()).await,
        };
        if !span.is_disabled() {
            if let Some(status) = status {
                span.record("http.response.status_code", status);
            }
            if !status.is_some_and(|s| (200..300).contains(&s)) {
                span.record("otel.status_code", "ERROR");
            }
        }
        let duration_ms = started.elapsed().as_millis().min(i32::MAX as u128) as i32;
        let accepted = status.is_some_and(|s| (200..300).contains(&s));
        let next = if accepted {
            Next::Delivered
        } else {
            match retry_delay(attempt, self.settings.retry_scale, retry_after) {
                Some(delay) => Next::RetryAt(
                    Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default(),
                ),
                None => Next::GiveUp,
            }
        };
        let error = error.or_else(|| match status {
            Some(s) if (300..400).contains(&s) => Some("redirects are not followed".into()),
            Some(s) if !accepted => Some(format!("answered HTTP {s}")),
            _ => None,
        });
        Attempted {
            seq: event.seq,
            attempt,
            status,
            duration_ms,
            error,
            excerpt,
            next,
        }
    }

    /// Sends one event: the status, an error, an excerpt of the answer, its `Retry-After`.
    async fn post(
        &self,
        url: &reqwest::Url,
        keys: &[SigningKey],
        event: &Pending,
    ) -> (
        Option<i32>,
        Option<String>,
        Option<String>,
        Option<Duration>,
    ) {
        let body = self.body(event);
        let timestamp = Utc::now().timestamp();
        let signature = sign::header(keys, &event.id, timestamp, &body);
        let sent = self
            .client
            .post(url.clone())
            .header("webhook-id", &event.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        let mut answer = match sent {
            Ok(answer) => answer,
            Err(e) => return (None, Some(describe(&e)), None, None),
        };
        let status = answer.status().as_u16();
        let retry_after = (status == 429 || status == 503)
            .then(|| {
                answer
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)?
                    .to_str()
                    .ok()?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .flatten()
            .map(Duration::from_secs);
        let mut read = Vec::new();
        while read.len() < ANSWER_READ {
            match answer.chunk().await {
                Ok(Some(chunk)) => read.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(_) => break,
            }
        }
        let excerpt: String = String::from_utf8_lossy(&read)
            .chars()
            .filter(|c| !c.is_control() || *c == ' ')
            .take(EXCERPT)
            .collect();
        (
            Some(i32::from(status)),
            None,
            (!excerpt.is_empty()).then_some(excerpt),
            retry_after,
        )
    }
}

/// What went wrong with a request, without its URL.
fn describe(e: &reqwest::Error) -> String {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = source {
        if s.to_string() == target::INTERNAL_ONLY {
            return target::INTERNAL_ONLY.into();
        }
        source = s.source();
    }
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "could not connect".into()
    } else if e.is_redirect() {
        "redirects are not followed".into()
    } else {
        "the request failed".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_span_more_than_three_days_then_stop() {
        let total: Duration = (1..MAX_ATTEMPTS)
            .map(|n| retry_delay(n, 1.0, None).unwrap())
            .sum();
        assert!(total > Duration::from_secs(3 * 24 * 3600), "{total:?}");
        assert_eq!(retry_delay(1, 1.0, None), Some(Duration::from_secs(5)));
        assert_eq!(retry_delay(MAX_ATTEMPTS, 1.0, None), None);
        assert_eq!(
            retry_delay(1, 0.001, Some(Duration::from_secs(60))),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            retry_delay(1, 1.0, Some(Duration::from_secs(10 * 24 * 3600))),
            Some(Duration::from_secs(36000))
        );
    }
}

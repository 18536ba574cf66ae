//! Webhook subscriptions, the outbox of their events and the log of delivery attempts
//! (migration 0016). Events are queued in the outbox by `store::audit::append_all`, in the
//! transaction of the audit entry of the change that causes them, from the types of
//! `domain::events` (the OpenAPI document's `webhooks` are made from the same types), so every
//! path that changes a request and audits it emits them; `test` events are queued here. A worker
//! holds a subscription under a lease of `store::lease` (the queue described here once).
//!
//! Holds sealed secrets only (never a secret in clear), and payloads without target ids,
//! pseudonyms or anything read upstream. Decides nothing: the retry schedule and when to give up
//! are `webhooks`'.

use crate::domain::events::Event;
use crate::domain::events::data_of;
use crate::domain::records;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::Db;
use super::audit;
use super::lease::{self, Lease, Queue, Renewal};
use crate::domain::events::{
    RequestEventData, RequestFacts, RestorationAccounts, RestorationEventData, WebhookType,
    payload_time,
};
use sqlx::PgConnection;

/// Whether a subscription gets events and deliveries.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    ToSchema,
    sqlx::Type,
    strum::IntoStaticStr,
)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum SubscriptionState {
    /// Gets events and deliveries.
    Enabled,
    /// Gets events, queued until it is enabled again.
    Paused,
    /// Gets no new events: the service disabled it once an event's retries were spent (or an
    /// admin did). Enable it to resume what is queued.
    Disabled,
}

impl SubscriptionState {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A subscription as the API shows it. Never holds its secret.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Subscription {
    pub id: Uuid,
    pub url: String,
    pub event_types: Vec<String>,
    pub description: Option<String>,
    pub state: SubscriptionState,
    /// Why the service disabled it.
    pub disabled_reason: Option<String>,
    pub disabled_at: Option<DateTime<Utc>>,
    /// Until when the secret before the last rotation is still valid (deliveries are signed
    /// with both until then).
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Events not delivered yet.
    pub pending_events: i64,
}

const COLUMNS: &str = "s.id, s.url, s.event_types, s.description, s.state, s.disabled_reason, \
    s.disabled_at, s.previous_expires_at as previous_secret_expires_at, s.created_at, s.updated_at, \
    (select count(*) from webhook_events e where e.subscription_id = s.id and e.state = 'pending') \
        as pending_events";

/// A subscription to create.
pub struct NewSubscription<'a> {
    pub id: Uuid,
    pub url: &'a str,
    pub event_types: &'a [String],
    pub description: Option<&'a str>,
    pub secret_sealed: &'a [u8],
    pub created_by: Uuid,
}

/// Creates a subscription with its audit entry.
pub async fn create(db: &Db, new: NewSubscription<'_>, actor: &str) -> sqlx::Result<Subscription> {
    let mut tx = db.begin().await?;
    sqlx::query(
        "insert into webhook_subscriptions (id, url, event_types, description, secret_sealed, created_by) \
         values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(new.id)
    .bind(new.url)
    .bind(new.event_types)
    .bind(new.description)
    .bind(new.secret_sealed)
    .bind(new.created_by)
    .execute(&mut *tx)
    .await?;
    let data = data_of(&records::WebhookCreated {
        subscription: new.id,
        host: crate::telemetry::host_of(new.url),
        event_types: new.event_types,
    });
    audit::append_unlinked(&mut tx, actor, Event::WebhookCreated, data).await?;
    let created = get_in(&mut tx, new.id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    tx.commit().await?;
    Ok(created)
}

async fn get_in(conn: &mut sqlx::PgConnection, id: Uuid) -> sqlx::Result<Option<Subscription>> {
    let sql = format!("select {COLUMNS} from webhook_subscriptions s where s.id = $1");
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(conn)
        .await
}

pub async fn get(db: &Db, id: Uuid) -> sqlx::Result<Option<Subscription>> {
    let mut conn = db.acquire().await?;
    get_in(&mut conn, id).await
}

/// Every subscription, oldest first.
pub async fn list(db: &Db) -> sqlx::Result<Vec<Subscription>> {
    let sql = format!(
        "select {COLUMNS} from webhook_subscriptions s order by s.created_at, s.id limit 1000"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(db).await
}

/// Changes to a subscription (`None`: unchanged).
#[derive(Debug, Default)]
pub struct Changes<'a> {
    pub url: Option<&'a str>,
    pub event_types: Option<&'a [String]>,
    pub description: Option<Option<&'a str>>,
    pub state: Option<SubscriptionState>,
}

/// Applies changes with their audit entry; `None` when there is no such subscription. Enabling
/// clears why it was disabled; queued events are then delivered in order.
pub async fn update(
    db: &Db,
    id: Uuid,
    changes: Changes<'_>,
    actor: &str,
) -> sqlx::Result<Option<Subscription>> {
    let mut tx = db.begin().await?;
    let done = sqlx::query(
        "update webhook_subscriptions set url = coalesce($2, url), \
             event_types = coalesce($3, event_types), \
             description = case when $4 then $5 else description end, \
             state = coalesce($6, state), \
             disabled_reason = case when $6 is null or $6 = 'disabled' then disabled_reason end, \
             disabled_at = case when $6 is null then disabled_at when $6 = 'disabled' then now() end, \
             updated_at = now() \
         where id = $1",
    )
    .bind(id)
    .bind(changes.url)
    .bind(changes.event_types)
    .bind(changes.description.is_some())
    .bind(changes.description.flatten())
    .bind(changes.state.map(SubscriptionState::as_str))
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(None);
    }
    let data = data_of(&records::WebhookChanged {
        subscription: id,
        host: changes.url.map(crate::telemetry::host_of),
        event_types: changes.event_types,
        state: changes.state.map(SubscriptionState::as_str),
    });
    audit::append_unlinked(&mut tx, actor, Event::WebhookChanged, data).await?;
    let changed = get_in(&mut tx, id).await?;
    tx.commit().await?;
    Ok(changed)
}

/// Replaces the secret; the one it replaces stays valid until `previous_expires_at`. `None` when
/// there is no such subscription.
pub async fn rotate(
    db: &Db,
    id: Uuid,
    secret_sealed: &[u8],
    previous_expires_at: DateTime<Utc>,
    actor: &str,
) -> sqlx::Result<Option<Subscription>> {
    let mut tx = db.begin().await?;
    let done = sqlx::query(
        "update webhook_subscriptions set previous_secret_sealed = secret_sealed, \
             previous_expires_at = $3, secret_sealed = $2, updated_at = now() where id = $1",
    )
    .bind(id)
    .bind(secret_sealed)
    .bind(previous_expires_at)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(None);
    }
    let data = data_of(&records::WebhookSecretRotated {
        subscription: id,
        previous_secret_expires_at: previous_expires_at,
    });
    audit::append_unlinked(&mut tx, actor, Event::WebhookSecretRotated, data).await?;
    let rotated = get_in(&mut tx, id).await?;
    tx.commit().await?;
    Ok(rotated)
}

/// Queues a `test` event for one subscription (after what is queued already); its id, or `None`
/// when there is no such subscription.
pub async fn queue_test(db: &Db, id: Uuid, actor_key: Uuid) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar(
        "insert into webhook_events (id, subscription_id, event_type, payload) \
         select 'msg_' || replace(gen_random_uuid()::text, '-', ''), s.id, 'test', \
             jsonb_build_object('message', 'a test event, sent on demand', \
                 'subscription_id', s.id, 'requested_by', $2::uuid) \
         from webhook_subscriptions s where s.id = $1 returning id",
    )
    .bind(id)
    .bind(actor_key)
    .fetch_optional(db)
    .await
}

/// Queues events again, with their own ids (the receiver sees the same `webhook-id`): one event
/// (`event_id`) or every event that occurred since `since`. Returns how many; they are sent in
/// their original order, before anything queued after them.
pub async fn redeliver(
    db: &Db,
    subscription: Uuid,
    event_id: Option<&str>,
    since: Option<DateTime<Utc>>,
) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "update webhook_events set state = 'pending', attempts = 0, next_attempt_at = now(), \
             last_error = null \
         where subscription_id = $1 and ($2::text is null or id = $2) \
             and ($3::timestamptz is null or occurred_at >= $3)",
    )
    .bind(subscription)
    .bind(event_id)
    .bind(since)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// One attempt of the delivery log.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Delivery {
    /// The attempt's place in the log (page with `before`).
    pub id: i64,
    /// The event's `webhook-id`.
    pub event_id: String,
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    /// The event's state now: `pending`, `delivered` or `failed`.
    pub event_state: String,
    /// 1 for the first attempt of the event.
    pub attempt: i32,
    pub at: DateTime<Utc>,
    /// The receiver's HTTP status; none when it did not answer.
    pub status: Option<i32>,
    pub duration_ms: i32,
    /// Why the attempt failed, when it did.
    pub error: Option<String>,
    /// The first 200 characters of the answer at most.
    pub excerpt: Option<String>,
}

/// The delivery log of a subscription, newest first: up to `limit` attempts before `before`.
pub async fn deliveries(
    db: &Db,
    subscription: Uuid,
    before: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<Delivery>> {
    sqlx::query_as(
        "select d.id, e.id as event_id, e.event_type, e.occurred_at, e.state as event_state, \
             d.attempt, d.at, d.status, d.duration_ms, d.error, d.excerpt \
         from webhook_deliveries d join webhook_events e on e.seq = d.event_seq \
         where d.subscription_id = $1 and ($2::int8 is null or d.id < $2) \
         order by d.id desc limit $3",
    )
    .bind(subscription)
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// A subscription a worker holds: its id and its lease token.
pub type Claim = Lease<Uuid>;

// A claim takes over a lapsed lease itself (no rescue); a renewal needs the subscription still
// enabled; giving it back clears the lease only.
/// The queue of subscriptions to deliver to (`store::lease`): enabled ones whose oldest pending
/// event is due and that no other worker holds, the longest unleased first.
pub const QUEUE: Queue = lease::queue! {
    table: "webhook_subscriptions",
    due: "select s.id from webhook_subscriptions s \
          where s.state = 'enabled' and (s.lease_until is null or s.lease_until < now()) \
            and (select e.next_attempt_at from webhook_events e \
                 where e.subscription_id = s.id and e.state = 'pending' \
                 order by e.seq limit 1) <= now() \
          order by s.lease_until nulls first limit $1",
    set: "",
    returning: "q.id, q.lease_token",
    then: "select id, lease_token from claimed",
    held_while: " and state = 'enabled'",
    release: "",
};

/// Leases up to `limit` enabled subscriptions whose oldest pending event is due and that no
/// other worker holds.
pub async fn claim(db: &Db, limit: i64, lease: std::time::Duration) -> sqlx::Result<Vec<Claim>> {
    lease::claim(db, &QUEUE, limit, lease).await
}

/// Gives a subscription back.
pub async fn release(db: &Db, claim: &Claim) -> sqlx::Result<()> {
    lease::release(db, &QUEUE, claim).await
}

/// A pending event, oldest first.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Pending {
    pub seq: i64,
    pub id: String,
    pub event_type: String,
    pub payload: Value,
    pub occurred_at: DateTime<Utc>,
    pub attempts: i32,
    /// Whether its time has come.
    pub due: bool,
    /// The `traceparent` of the request it is about: its delivery joins that trace.
    pub traceparent: Option<String>,
}

/// Where and with what to deliver, read after the events (so that a rotation committed before
/// an event is seen with it).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Target {
    pub url: String,
    pub secret_sealed: Vec<u8>,
    /// The secret before the last rotation, while it is still valid.
    pub previous_secret_sealed: Option<Vec<u8>>,
}

/// The next pending events of a held subscription, in order, and where to send them; `None` when
/// it is no longer held by `claim` or no longer enabled.
pub async fn next_events(
    db: &Db,
    claim: &Claim,
    limit: i64,
) -> sqlx::Result<Option<(Target, Vec<Pending>)>> {
    let events: Vec<Pending> = sqlx::query_as(
        "select seq, id, event_type, payload, occurred_at, attempts, next_attempt_at <= now() as due, \
             traceparent \
         from webhook_events where subscription_id = $1 and state = 'pending' order by seq limit $2",
    )
    .bind(claim.id)
    .bind(limit)
    .fetch_all(db)
    .await?;
    let target: Option<Target> = sqlx::query_as(
        "select url, secret_sealed, \
             case when previous_expires_at > now() then previous_secret_sealed end \
                 as previous_secret_sealed \
         from webhook_subscriptions where id = $1 and lease_token = $2 and state = 'enabled'",
    )
    .bind(claim.id)
    .bind(claim.token)
    .fetch_optional(db)
    .await?;
    Ok(target.map(|t| (t, events)))
}

/// What became of one attempt.
#[derive(Debug, Clone)]
pub struct Attempted {
    pub seq: i64,
    /// The attempt's number (1 for the first).
    pub attempt: i32,
    pub status: Option<i32>,
    pub duration_ms: i32,
    pub error: Option<String>,
    pub excerpt: Option<String>,
    pub next: Next,
}

/// The event after an attempt.
#[derive(Debug, Clone)]
pub enum Next {
    Delivered,
    RetryAt(DateTime<Utc>),
    /// The retries are spent: the event failed and its subscription is disabled.
    GiveUp,
}

/// Renews a held lease; false when it is no longer held by `claim` (it lapsed and another worker
/// claimed the subscription) or the subscription is no longer enabled.
pub async fn renew(db: &Db, claim: &Claim, lease: std::time::Duration) -> sqlx::Result<bool> {
    lease::renew(db, &QUEUE, claim, lease, Renewal::Working).await
}

/// Records attempts of one held subscription in one transaction (the log, each event's state;
/// for a `GiveUp`, the subscription disabled with its audit entry) and renews its lease. Returns
/// whether the lease is still held. Fenced by the lease token: a worker whose lease was taken
/// over records nothing (the new holder sends again what it sent, with the same ids, and records
/// that), so no attempt is counted twice.
pub async fn record(
    db: &Db,
    claim: &Claim,
    attempts: &[Attempted],
    lease: std::time::Duration,
) -> sqlx::Result<bool> {
    let mut tx = db.begin().await?;
    // Renewed first (`now()` is the transaction's start either way): the subscription's row stays
    // locked to the commit, so no claim takes it over in between.
    if !lease::renew(&mut *tx, &QUEUE, claim, lease, Renewal::Writing).await? {
        return Ok(false);
    }
    if !attempts.is_empty() {
        let seqs: Vec<i64> = attempts.iter().map(|a| a.seq).collect();
        let numbers: Vec<i32> = attempts.iter().map(|a| a.attempt).collect();
        let statuses: Vec<Option<i32>> = attempts.iter().map(|a| a.status).collect();
        let durations: Vec<i32> = attempts.iter().map(|a| a.duration_ms).collect();
        let errors: Vec<Option<&str>> = attempts.iter().map(|a| a.error.as_deref()).collect();
        let excerpts: Vec<Option<&str>> = attempts.iter().map(|a| a.excerpt.as_deref()).collect();
        let (states, next_ats): (Vec<&str>, Vec<Option<DateTime<Utc>>>) = attempts
            .iter()
            .map(|a| match &a.next {
                Next::Delivered => ("delivered", None),
                Next::RetryAt(at) => ("pending", Some(*at)),
                Next::GiveUp => ("failed", None),
            })
            .unzip();
        sqlx::query(
            "with log as ( \
                 insert into webhook_deliveries (event_seq, subscription_id, attempt, status, \
                     duration_ms, error, excerpt) \
                 select u.seq, $1, u.attempt, u.status, u.duration, u.error, u.excerpt \
                 from unnest($2::int8[], $3::int4[], $4::int4[], $5::int4[], $6::text[], $7::text[]) \
                     with ordinality as u(seq, attempt, status, duration, error, excerpt, n) \
                 order by n \
             ) \
             update webhook_events e set state = u.state, attempts = u.attempt, \
                 next_attempt_at = coalesce(u.next_at, e.next_attempt_at), \
                 last_status = u.status, last_error = u.error, \
                 delivered_at = case when u.state = 'delivered' then now() else e.delivered_at end \
             from unnest($2::int8[], $3::int4[], $4::int4[], $6::text[], $8::text[], \
                         $9::timestamptz[]) as u(seq, attempt, status, error, state, next_at) \
             where e.seq = u.seq and e.state = 'pending'",
        )
        .bind(claim.id)
        .bind(&seqs)
        .bind(&numbers)
        .bind(&statuses)
        .bind(&durations)
        .bind(&errors)
        .bind(&excerpts)
        .bind(&states)
        .bind(&next_ats)
        .execute(&mut *tx)
        .await?;
    }
    if let Some(gave_up) = attempts.iter().find(|a| matches!(a.next, Next::GiveUp)) {
        let reason = format!(
            "an event was not accepted after {} attempts over the retry schedule (last: {})",
            gave_up.attempt,
            gave_up
                .status
                .map(|s| format!("HTTP {s}"))
                .or_else(|| gave_up.error.clone())
                .unwrap_or_default()
        );
        let disabled = sqlx::query(
            "update webhook_subscriptions set state = 'disabled', disabled_reason = $2, \
                 disabled_at = now(), updated_at = now(), lease_token = null, lease_until = null \
             where id = $1 and state <> 'disabled'",
        )
        .bind(claim.id)
        .bind(&reason)
        .execute(&mut *tx)
        .await?;
        if disabled.rows_affected() > 0 {
            let event: String = sqlx::query_scalar("select id from webhook_events where seq = $1")
                .bind(gave_up.seq)
                .fetch_one(&mut *tx)
                .await?;
            let data = data_of(&records::WebhookDisabled {
                subscription: claim.id,
                event: &event,
                attempts: gave_up.attempt,
                last_status: gave_up.status,
                last_error: gave_up.error.as_deref(),
            });
            audit::append_unlinked(&mut tx, audit::ENGINE, Event::WebhookDisabled, data).await?;
        }
        tx.commit().await?;
        return Ok(false);
    }
    tx.commit().await?;
    Ok(true)
}

/// Deletes what is older than `days`: delivery attempts made before then, and delivered events
/// delivered before then (their attempts are older still); pending and failed events stay. At
/// most `CHUNK` rows a statement, rows another process is deleting skipped. Returns how many
/// rows went.
pub async fn prune(db: &Db, days: u32) -> sqlx::Result<u64> {
    // Both tables grow in the order of their keys: the first young row bounds the old ones, and
    // walking the key to it reads only rows that are deleted.
    let attempts = delete_in_chunks(
        db,
        days,
        "delete from webhook_deliveries where id in ( \
             select id from webhook_deliveries where id < coalesce( \
                 (select id from webhook_deliveries \
                  where at >= now() - make_interval(days => $1) order by id limit 1), \
                 9223372036854775807) \
             order by id limit $2 for update skip locked)",
    )
    .await?;
    let events = delete_in_chunks(
        db,
        days,
        "delete from webhook_events where seq in ( \
             select seq from webhook_events where state = 'delivered' \
                 and delivered_at < now() - make_interval(days => $1) and seq < coalesce( \
                 (select seq from webhook_events \
                  where occurred_at >= now() - make_interval(days => $1) order by seq limit 1), \
                 9223372036854775807) \
             order by seq limit $2 for update skip locked)",
    )
    .await?;
    Ok(attempts + events)
}

/// Runs a `delete … limit $2` (`$1`: the days) until it deletes fewer than a chunk; returns how
/// many rows went.
async fn delete_in_chunks(db: &Db, days: u32, sql: &'static str) -> sqlx::Result<u64> {
    const CHUNK: i64 = 5000;
    let mut deleted = 0;
    loop {
        let done = sqlx::query(sql)
            .bind(days as i32)
            .bind(CHUNK)
            .execute(db)
            .await?
            .rows_affected();
        deleted += done;
        if (done as i64) < CHUNK {
            return Ok(deleted);
        }
    }
}

/// Webhook figures for `/metrics` and the status page.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// Subscriptions by state (only the states that have any).
    pub subscriptions: Vec<(SubscriptionState, i64)>,
    /// Events not delivered yet, every subscription's.
    pub pending: i64,
    /// Seconds since the oldest pending event of an enabled subscription occurred.
    pub oldest_pending_age_seconds: Option<f64>,
}

pub async fn figures(db: &Db) -> sqlx::Result<Figures> {
    let subscriptions = sqlx::query_as(
        "select state, count(*) from webhook_subscriptions group by state order by 1",
    )
    .fetch_all(db)
    .await?;
    let (pending, oldest): (i64, Option<f64>) = sqlx::query_as(
        "select count(*), extract(epoch from now() - min(e.occurred_at) \
                 filter (where s.state = 'enabled'))::float8 \
         from webhook_events e join webhook_subscriptions s on s.id = e.subscription_id \
         where e.state = 'pending'",
    )
    .fetch_one(db)
    .await?;
    Ok(Figures {
        subscriptions,
        pending,
        oldest_pending_age_seconds: oldest,
    })
}

/// Subscriptions the service disabled (for the status page), newest first.
pub async fn disabled(db: &Db) -> sqlx::Result<Vec<Subscription>> {
    let sql = format!(
        "select {COLUMNS} from webhook_subscriptions s where s.state = 'disabled' \
         order by s.disabled_at desc nulls last limit 100"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(db).await
}

/// A request event that a subscription asked for, with the request as it is now.
#[derive(Debug, sqlx::FromRow)]
pub struct RequestHook {
    /// The audit entry's place among those appended together.
    pub n: i32,
    pub kind: String,
    pub subscription_id: Uuid,
    #[sqlx(flatten)]
    pub request: RequestFacts,
    /// The request's `traceparent`: its delivery joins the request's trace.
    pub traceparent: Option<String>,
}

/// One outbox row: the subscription, the event type, the payload and the `traceparent` of the
/// request it is about.
type Outbox = (Uuid, &'static str, Value, Option<String>);

/// Queues one outbox row per event and subscription, in order.
async fn queue(conn: &mut PgConnection, rows: Vec<Outbox>) -> sqlx::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let (mut subscriptions, mut kinds, mut payloads, mut traceparents) =
        (vec![], vec![], vec![], vec![]);
    for (subscription, kind, payload, traceparent) in rows {
        subscriptions.push(subscription);
        kinds.push(kind);
        payloads.push(payload);
        traceparents.push(traceparent);
    }
    sqlx::query(
        "insert into webhook_events (id, subscription_id, event_type, payload, traceparent) \
         select 'msg_' || replace(gen_random_uuid()::text, '-', ''), u.subscription, u.kind, \
             u.payload, u.traceparent \
         from unnest($1::uuid[], $2::text[], $3::jsonb[], $4::text[]) with ordinality \
             as u(subscription, kind, payload, traceparent, n) order by n",
    )
    .bind(subscriptions)
    .bind(kinds)
    .bind(payloads)
    .bind(traceparents)
    .execute(conn)
    .await?;
    Ok(())
}

/// Queues the request events of `hooks`; `data` holds the data of the audit entries they follow
/// from, by their place (`RequestHook::n`).
pub(super) async fn queue_request_events(
    conn: &mut PgConnection,
    hooks: Vec<RequestHook>,
    data: &[Value],
) -> sqlx::Result<()> {
    let rows = hooks
        .into_iter()
        .filter_map(|h| {
            let kind = WebhookType::parse(&h.kind)?;
            let entry = data.get(h.n as usize)?;
            let payload =
                serde_json::to_value(RequestEventData::new(kind, h.request, entry)).ok()?;
            Some((h.subscription_id, kind.as_str(), payload, h.traceparent))
        })
        .collect();
    queue(conn, rows).await
}

/// Queues `restoration.completed` for the restoration an audit entry's data names.
pub(super) async fn queue_restoration_event(
    conn: &mut PgConnection,
    entry: &Value,
) -> sqlx::Result<()> {
    let Some(id) = entry["restoration"]
        .as_str()
        .and_then(|s| s.parse::<Uuid>().ok())
    else {
        return Ok(());
    };
    let kind = WebhookType::RestorationCompleted;
    type Row = (
        Uuid,
        String,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
        i32,
        i32,
        i32,
        i32,
    );
    let subscriptions: Vec<Uuid> = sqlx::query_scalar(
        "select id from webhook_subscriptions where state <> 'disabled' and $1 = any(event_types) \
         order by created_at, id",
    )
    .bind(kind.as_str())
    .fetch_all(&mut *conn)
    .await?;
    if subscriptions.is_empty() {
        return Ok(());
    }
    let Some((restoration_id, state, created_at, finished_at, new, present, missing, lifted)) =
        sqlx::query_as::<_, Row>(
            "select id, state, created_at, finished_at, accounts_new, accounts_present, \
                 accounts_missing, guards_lifted from restorations where id = $1",
        )
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(());
    };
    let payload = serde_json::to_value(RestorationEventData {
        restoration_id,
        state,
        requested_at: payload_time(created_at),
        finished_at: finished_at.map(payload_time),
        accounts: RestorationAccounts {
            new,
            present,
            missing,
        },
        guards_lifted: lifted,
    })
    .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let rows = subscriptions
        .into_iter()
        .map(|s| (s, kind.as_str(), payload.clone(), None))
        .collect();
    queue(conn, rows).await
}

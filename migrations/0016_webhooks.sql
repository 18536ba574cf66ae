-- Signed webhooks (Standard Webhooks), delivered durably from an outbox.
--
-- webhook_subscriptions: where to send which events. The signing secret (`whsec_...`) is kept
-- sealed with ERASURE_DATA_KEY (the subscription id as associated data); after a rotation the
-- previous one stays valid until previous_expires_at, and deliveries carry both signatures
-- meanwhile. `paused` (by an admin) keeps its events queued; `disabled` (by the service, once an
-- event's retries over three days were spent, or by an admin) gets no new events. A worker
-- process delivers one subscription at a time under a lease (lease_token, lease_until), in order.
create table webhook_subscriptions (
    id                      uuid primary key,
    url                     text not null,
    event_types             text[] not null,
    description             text,
    state                   text not null default 'enabled'
                                check (state in ('enabled', 'paused', 'disabled')),
    disabled_reason         text,
    disabled_at             timestamptz,
    secret_sealed           bytea not null,
    previous_secret_sealed  bytea,
    previous_expires_at     timestamptz,
    created_by              uuid not null references api_keys (id),
    created_at              timestamptz not null default now(),
    updated_at              timestamptz not null default now(),
    lease_token             uuid,
    lease_until             timestamptz
);

-- The outbox: one row per event and subscription, written by the trigger below in the same
-- transaction as the audit entry of the change that causes it (or by the API for `test` events
-- and nothing else). `id` is the stable `webhook-id` of every attempt. Delivered in `seq` order
-- per subscription: only the oldest pending event of a subscription is ever sent. It holds no
-- target id, pseudonym or anything read upstream: request ids, external references, states and
-- times only.
create table webhook_events (
    seq                 bigint generated always as identity primary key,
    id                  text not null unique,
    subscription_id     uuid not null references webhook_subscriptions (id),
    event_type          text not null,
    payload             jsonb not null,
    occurred_at         timestamptz not null default clock_timestamp(),
    state               text not null default 'pending'
                            check (state in ('pending', 'delivered', 'failed')),
    attempts            integer not null default 0,
    next_attempt_at     timestamptz not null default now(),
    last_status         integer,
    last_error          text,
    delivered_at        timestamptz
);
create index webhook_events_pending on webhook_events (subscription_id, seq) where state = 'pending';
create index webhook_events_of_subscription on webhook_events (subscription_id, occurred_at);

-- Each attempt: its status, duration and at most 200 characters of the answer (never more).
-- `event_seq` is the event's `seq`, without a foreign key: both tables are pruned by age
-- (ERASURE_WEBHOOK_RETENTION_DAYS), the attempts first, and a key would make each deleted event
-- look for its attempts.
create table webhook_deliveries (
    id                  bigint generated always as identity primary key,
    event_seq           bigint not null,
    subscription_id     uuid not null references webhook_subscriptions (id),
    attempt             integer not null,
    at                  timestamptz not null default now(),
    status              integer,
    duration_ms         integer not null,
    error               text,
    excerpt             text check (char_length(excerpt) <= 200)
);
create index webhook_deliveries_of_subscription on webhook_deliveries (subscription_id, id);

-- When an open request passed its due date: set once by the workers' sweep with its `overdue`
-- audit entry (as at_risk_at, migration 0014). A nullable column: only the catalog changes.
alter table erasure_requests add column overdue_at timestamptz;

-- Times in payloads: UTC, RFC 3339 with microseconds, whatever the session's time zone.
create function webhook_time(t timestamptz) returns text language sql immutable as $$
    select to_char(t at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

-- The fan-out: an audit entry that a webhook event type follows from writes one outbox row per
-- subscription (enabled or paused) that asked for that type, in the entry's transaction. Without
-- such a subscription it costs one look-up of this small table.
create function webhook_fan_out() returns trigger language plpgsql as $$
declare
    kind text := case new.event
        when 'completed' then 'request.completed'
        when 'failed' then 'request.failed'
        when 'at_risk' then 'request.at_risk'
        when 'overdue' then 'request.overdue'
        when 'held' then 'request.on_hold'
        when 'resurrection_detected' then 'request.resurrection_detected'
        when 'reverification_failed' then 'reverification.failed'
        when 'restoration_completed' then 'restoration.completed'
    end;
    extra jsonb := '{}'::jsonb;
begin
    if kind is null or not exists (
        select 1 from webhook_subscriptions where state <> 'disabled' and kind = any(event_types)
    ) then
        return null;
    end if;
    if kind = 'restoration.completed' then
        insert into webhook_events (id, subscription_id, event_type, payload, occurred_at)
        select 'msg_' || replace(gen_random_uuid()::text, '-', ''), s.id, kind,
            jsonb_build_object(
                'restoration_id', r.id,
                'state', r.state,
                'requested_at', webhook_time(r.created_at),
                'finished_at', webhook_time(r.finished_at),
                'accounts', jsonb_build_object('new', r.accounts_new,
                    'present', r.accounts_present, 'missing', r.accounts_missing),
                'guards_lifted', r.guards_lifted),
            new.at
        from webhook_subscriptions s
        join restorations r on r.id = (new.data->>'restoration')::uuid
        where s.state <> 'disabled' and kind = any(s.event_types);
        return null;
    end if;
    if new.request_id is null then
        return null;
    end if;
    if kind = 'request.at_risk' then
        extra := jsonb_build_object('days_left', new.data->'days_left');
    elsif kind in ('request.resurrection_detected', 'reverification.failed') then
        extra := jsonb_build_object('re_erasure_request_id', new.data->'re_erasure_request');
    elsif kind = 'request.on_hold' then
        extra := jsonb_build_object('legal_basis', new.data->'legal_basis');
    end if;
    insert into webhook_events (id, subscription_id, event_type, payload, occurred_at)
    select 'msg_' || replace(gen_random_uuid()::text, '-', ''), s.id, kind,
        jsonb_build_object(
            'request_id', r.id,
            'external_reference', r.external_reference,
            'scope', r.scope,
            'state', r.state,
            'outcome', r.outcome,
            'received_at', webhook_time(r.received_at),
            'due_at', webhook_time(r.due_at),
            'completed_at', webhook_time(r.completed_at),
            'updated_at', webhook_time(r.updated_at),
            'resurrection_of', r.resurrection_of,
            'receipt_url', '/v1/erasure-requests/' || r.id || '/receipt') || extra,
        new.at
    from webhook_subscriptions s
    join erasure_requests r on r.id = new.request_id
    where s.state <> 'disabled' and kind = any(s.event_types);
    return null;
end;
$$;

create trigger audit_entries_webhooks after insert on audit_entries for each row
    when (new.event in ('completed', 'failed', 'at_risk', 'overdue', 'held',
                        'resurrection_detected', 'reverification_failed', 'restoration_completed'))
    execute function webhook_fan_out();

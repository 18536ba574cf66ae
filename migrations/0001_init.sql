-- Schema of the erasure service. Migrations are forward-only.

create table api_keys (
    id          uuid primary key,
    prefix      text not null unique,
    hash        bytea not null,
    role        text not null check (role in ('requester', 'approver', 'auditor', 'admin')),
    label       text not null,
    created_at  timestamptz not null default now(),
    expires_at  timestamptz,
    revoked_at  timestamptz
);

create table erasure_requests (
    id                  uuid primary key,
    scope               text not null check (scope in ('user', 'connection', 'account')),
    subject_ref         text not null,
    -- The raw target id and what inventory learnt (upstream ids), sealed with ERASURE_DATA_KEY,
    -- only while the request is open; wiped when it closes.
    target_sealed       bytea,
    context_sealed      bytea,
    external_reference  text,
    state               text not null check (state in ('pending_approval', 'queued', 'in_progress',
                            'completed', 'failed', 'cancelled', 'on_hold')),
    not_before          timestamptz,
    received_at         timestamptz not null,
    due_at              timestamptz not null,
    extended_months     integer not null default 0 check (extended_months between 0 and 2),
    completed_at        timestamptz,
    outcome             text,
    failure_reason      text,
    hold_legal_basis    text,
    hold_note           text,
    held_from           text,
    requested_by        uuid not null references api_keys (id),
    approved_by         uuid references api_keys (id),
    batch_id            uuid,
    updated_at          timestamptz not null default now(),
    constraint closed_requests_hold_no_identifier
        check (state not in ('completed', 'cancelled') or (target_sealed is null and context_sealed is null))
);

-- One open request per target.
create unique index erasure_requests_one_open_per_subject on erasure_requests (subject_ref)
    where state in ('pending_approval', 'queued', 'in_progress', 'failed', 'on_hold');
create index erasure_requests_received on erasure_requests (received_at desc, id desc);
create index erasure_requests_state on erasure_requests (state, received_at desc);
create index erasure_requests_due_open on erasure_requests (due_at)
    where state not in ('completed', 'cancelled');
create index erasure_requests_batch on erasure_requests (batch_id) where batch_id is not null;

-- Each step of a request is a durable job.
create table steps (
    id           bigint generated always as identity primary key,
    request_id   uuid not null references erasure_requests (id),
    ordinal      smallint not null,
    kind         text not null check (kind in ('inventory', 'delete', 'verify', 'cascade_check')),
    state        text not null check (state in ('waiting', 'paused', 'ready', 'running',
                     'succeeded', 'failed', 'cancelled')),
    attempts     integer not null default 0,
    run_at       timestamptz not null default now(),
    lease_until  timestamptz,
    lease_token  uuid,
    last_error   text,
    detail       jsonb,
    updated_at   timestamptz not null default now(),
    unique (request_id, ordinal)
);
create index steps_ready on steps (run_at) where state = 'ready';
create index steps_running on steps (lease_until) where state = 'running';

create table idempotency_keys (
    api_key_id   uuid not null references api_keys (id),
    key          text not null,
    body_digest  bytea not null,
    status       smallint not null,
    response     jsonb not null,
    created_at   timestamptz not null default now(),
    primary key (api_key_id, key)
);

-- The audit log: append-only. Never personal data: pseudonyms, request ids, key ids, counts.
create table audit_entries (
    id           bigint generated always as identity primary key,
    at           timestamptz not null default clock_timestamp(),
    request_id   uuid,
    subject_ref  text,
    actor        text not null,
    event        text not null,
    data         jsonb not null default '{}'::jsonb,
    nonce        bytea not null default uuid_send(gen_random_uuid())
);
create index audit_entries_request on audit_entries (request_id, id) where request_id is not null;

create function audit_entries_refuse_change() returns trigger language plpgsql as $$
begin
    raise exception 'audit_entries is append-only: % refused', tg_op
        using errcode = 'insufficient_privilege';
end;
$$;
create trigger audit_entries_no_update_delete before update or delete on audit_entries
    for each row execute function audit_entries_refuse_change();
create trigger audit_entries_no_truncate before truncate on audit_entries
    for each statement execute function audit_entries_refuse_change();

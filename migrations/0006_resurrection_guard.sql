-- The resurrection guard and deliberate restorations (issue 5). Forward-only; safe while older
-- processes serve (new tables and nullable/defaulted columns only).

-- A re-erasure repeats an earlier erasure that a synchronisation undid: it points at the original
-- (the root of the chain, whose receipt shows every resurrection and re-erasure).
alter table erasure_requests
    add column resurrection_of uuid references erasure_requests (id),
    add column resurrections integer not null default 0,
    -- Set when account erasures keep coming back on the same connection.
    add column advice text;
create index erasure_requests_resurrection_of on erasure_requests (resurrection_of)
    where resurrection_of is not null;

-- What is needed to recognise an erased account when a synchronisation lists it again, and
-- nothing else: pseudonyms of its upstream id and of its bank references (IBAN, number,
-- reference), and of its connection. Armed when the account is deleted upstream; lifted when a
-- deliberate restoration brings the account back.
create table erased_accounts (
    id              bigint generated always as identity primary key,
    request_id      uuid not null references erasure_requests (id),
    root_request_id uuid not null references erasure_requests (id),
    connection_ref  text,
    refs            text[] not null,
    armed_at        timestamptz not null default now(),
    lifted_at       timestamptz,
    lifted_by       uuid
);
create index erased_accounts_refs on erased_accounts using gin (refs) where lifted_at is null;
create index erased_accounts_connection on erased_accounts (connection_ref);
create index erased_accounts_request on erased_accounts (request_id);

-- Where the consumer of the upstream event stream stopped. Advanced in the same transaction as
-- the effects of the events it covers, so each event takes effect once.
create table upstream_event_cursor (
    singleton     boolean primary key default true check (singleton),
    last_event_id bigint not null default 0,
    updated_at    timestamptz not null default now()
);
insert into upstream_event_cursor default values;

-- Each time an erased account was listed again.
create table resurrections (
    id              bigint generated always as identity primary key,
    guard_id        bigint not null references erased_accounts (id),
    root_request_id uuid not null references erasure_requests (id),
    connection_ref  text,
    -- `event:<upstream event id>` or `reverification:<id>`.
    source          text not null,
    listed_status   text,
    re_erasure_id   uuid references erasure_requests (id),
    detected_at     timestamptz not null default now()
);
create index resurrections_root on resurrections (root_request_id);
create index resurrections_connection on resurrections (connection_ref);

-- Deliberate LIST_ACCOUNTS restorations of a connection.
create table restorations (
    id                  uuid primary key,
    connection_ref      text not null,
    -- The upstream connection id, sealed with ERASURE_DATA_KEY (the restoration id as associated
    -- data), only while the restoration is open.
    connection_sealed   bytea,
    reason              text not null,
    state               text not null check (state in ('pending', 'waiting', 'completed', 'failed',
                            'timed_out')),
    requested_by        uuid not null references api_keys (id),
    created_at          timestamptz not null default now(),
    updated_at          timestamptz not null default now(),
    run_at              timestamptz not null default now(),
    attempts            integer not null default 0,
    last_error          text,
    deadline            timestamptz,
    expected_channels   integer,
    channels_listed     integer not null default 0,
    accounts_new        integer not null default 0,
    accounts_present    integer not null default 0,
    accounts_missing    integer not null default 0,
    all_sync_followed   boolean not null default false,
    guards_lifted       integer not null default 0,
    failure_reason      text,
    finished_at         timestamptz,
    constraint closed_restorations_hold_no_identifier
        check (state in ('pending', 'waiting') or connection_sealed is null)
);
-- One open restoration per connection.
create unique index restorations_one_open_per_connection on restorations (connection_ref)
    where state in ('pending', 'waiting');
create index restorations_pending on restorations (run_at) where state = 'pending';
create index restorations_waiting on restorations (deadline) where state = 'waiting';

-- Periodic re-verification runs: every completed erasure looked for in the upstream listings.
create table reverifications (
    id                  bigint generated always as identity primary key,
    started_at          timestamptz not null default now(),
    finished_at         timestamptz,
    state               text not null check (state in ('running', 'passed', 'failed', 'error')),
    connections_listed  bigint not null default 0,
    accounts_listed     bigint not null default 0,
    erasures_checked    bigint not null default 0,
    found               bigint not null default 0,
    error               text
);
create unique index reverifications_one_running on reverifications ((true)) where state = 'running';

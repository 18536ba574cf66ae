-- The processes that call the upstream (every process that runs workers), each with a lease it
-- renews, and what each holds of the deployment's caps: ERASURE_UPSTREAM_MAX_RPS (`rate`, calls a
-- second) and ERASURE_UPSTREAM_MAX_CONCURRENCY (`concurrency`, calls at once). A process raises
-- its holding here before it uses more and lowers it after it uses less, one process at a time
-- (an advisory lock), so the holdings of the live rows never sum above the caps
-- (src/engine/shares.rs). A row whose lease ran out is a process that died: anyone deletes it,
-- and what it held is free again. Nothing here is personal data.
create table upstream_shares (
    process_id uuid primary key,
    started_at timestamptz not null default now(),
    lease_until timestamptz not null,
    rate double precision not null default 0 check (rate >= 0),
    concurrency integer not null default 0 check (concurrency >= 0),
    -- For operators: where the process runs.
    host text not null default '',
    pid integer not null default 0
);

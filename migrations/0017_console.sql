-- The browser console's sessions: the cookie holds a random token, the table its SHA-256 digest
-- and the API key it was opened with. A session ends at sign-out, after 8 hours, or as soon as
-- its key is revoked or expires (every check joins api_keys). No personal data.
create table console_sessions (
    token_hash  bytea primary key,
    key_id      uuid not null references api_keys (id),
    created_at  timestamptz not null default now(),
    expires_at  timestamptz not null,
    ended_at    timestamptz
);
create index console_sessions_by_expiry on console_sessions (expires_at);

-- The list's filter by the caller's own ticket reference.
create index erasure_requests_by_external_reference on erasure_requests (external_reference, received_at desc)
    where external_reference is not null;

-- A request's page links the re-erasures made of it.
create index erasure_requests_by_resurrection_of on erasure_requests (resurrection_of)
    where resurrection_of is not null;

-- An API key is revoked, never deleted: the requests, idempotency records and audit entries that
-- name it must keep naming a key that exists. The database now refuses to delete one, by trigger
-- and by privilege, as it does for the audit log.
create function api_keys_refuse_delete() returns trigger language plpgsql as $$
begin
    raise exception 'api_keys rows are revoked, never deleted: % refused', tg_op
        using errcode = 'insufficient_privilege';
end;
$$;
create trigger api_keys_no_delete before delete on api_keys
    for each row execute function api_keys_refuse_delete();
create trigger api_keys_no_truncate before truncate on api_keys
    for each statement execute function api_keys_refuse_delete();
revoke delete, truncate on api_keys from public;
do $$
begin
    if exists (select from pg_roles where rolname = 'erasure_app') then
        revoke delete, truncate on api_keys from erasure_app;
    end if;
end
$$;

-- With keys never deleted, the foreign keys from a request to the key that made or approved it
-- guarded nothing more: both ids come from the key the caller was just authenticated with. They
-- made PostgreSQL look up and lock that one key row once per inserted request (SELECT ... FOR KEY
-- SHARE), about a tenth of a 10,000-item batch's statement (BENCHMARKS.md, "time-ordered request
-- ids").
--
-- Both statements only change the catalog (no rewrite, no scan), but they take exclusive locks on
-- erasure_requests and api_keys: the migration waits for the transactions using them and holds
-- new ones back until it commits (milliseconds once it has the locks).
alter table erasure_requests
    drop constraint if exists erasure_requests_requested_by_fkey,
    drop constraint if exists erasure_requests_approved_by_fkey;

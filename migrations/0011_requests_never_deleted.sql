-- An erasure request is never deleted: it is the record that an erasure was asked for and what
-- became of it, and the audit log names it. The database now refuses to delete one, by trigger
-- and by privilege, as it does for API keys (0010) and the audit log. (Once a request closes it
-- holds no identifier: `closed_requests_hold_no_identifier`.)
create function erasure_requests_refuse_delete() returns trigger language plpgsql as $$
begin
    raise exception 'erasure_requests rows are never deleted: % refused', tg_op
        using errcode = 'insufficient_privilege';
end;
$$;
create trigger erasure_requests_no_delete before delete on erasure_requests
    for each row execute function erasure_requests_refuse_delete();
create trigger erasure_requests_no_truncate before truncate on erasure_requests
    for each statement execute function erasure_requests_refuse_delete();
revoke delete, truncate on erasure_requests from public;
do $$
begin
    if exists (select from pg_roles where rolname = 'erasure_app') then
        revoke delete, truncate on erasure_requests from erasure_app;
    end if;
end
$$;

-- With requests never deleted, the foreign key from a step to its request guarded nothing more:
-- a request's first step is inserted with it, in the same transaction (joined to the insert's
-- RETURNING, or copied right after the requests), and each later step is inserted joined to its
-- request's row (`store::steps`). The key made PostgreSQL look up and lock the request
-- once per inserted step (SELECT ... FOR KEY SHARE, through SPI): 5 to 6 us per step, a fifth
-- of a 10,000-item batch. The one from a re-erasure to the request it repeats is set by the
-- guard from a request it read, and its check was queued for every inserted request, though the
-- column is null for all but re-erasures (BENCHMARKS.md, "batch intake without the step's
-- foreign key").
--
-- Both statements only change the catalog (no rewrite, no scan), but they take exclusive locks on
-- steps and erasure_requests: the migration waits for the transactions using them and holds new
-- ones back until it commits.
alter table steps drop constraint if exists steps_request_id_fkey;
alter table erasure_requests drop constraint if exists erasure_requests_resurrection_of_fkey;

-- Newest first, the list reads these two indexes backwards as well as it read them forwards (an
-- "Index Scan Backward"). Declared descending, every new request went in at their left edge,
-- where a full page splits in half; at the right edge PostgreSQL fills the left page to 90 %
-- before it splits. 200,000 rows of (received_at, id), time-ordered ids in batches of 10,000, took
-- 14 MB descending against 7.9 MB ascending, with the page splits and WAL that go with them.
--
-- Each is built anew, which reads the table once. The migration holds every statement on
-- erasure_requests back until it commits (the `alter table` above already locks the table):
-- 2 s at a million requests on the benchmark machine, for the two builds.
drop index erasure_requests_received;
create index erasure_requests_received on erasure_requests (received_at, id);
drop index erasure_requests_state;
create index erasure_requests_state on erasure_requests (state, received_at);

-- A NOTIFY in a writing transaction holds a database-wide lock through its commit's flush, so
-- the one every intake sent serialised all intakes. The process that accepts requests now wakes
-- its own workers directly and other processes with at most one NOTIFY per 20 ms, sent on its own
-- (`store::ready`). Processes of an older release still serving during an upgrade no longer
-- notify for their intakes: workers find those requests by polling (within a second).
drop trigger steps_notify_ready_insert on steps;
drop function steps_notify_ready();

-- Steps a person makes ready again (approve, release, retry) are announced the same way, by the
-- process that took the action once it committed; the statement trigger that looked for them ran
-- on every `update steps` (several per erasure step) to find them.
drop trigger steps_notify_resumed on steps;
drop function steps_notify_resumed();

-- The guard's GIN index took every insert into its pending list, which every lookup then scanned
-- in full until a vacuum merged it: 2 ms per listed account at 20,000 erased accounts, 6 s per
-- page of events. Without the pending list a lookup takes microseconds and an insert a little
-- more.
alter index erased_accounts_refs set (fastupdate = off);
select gin_clean_pending_list('erased_accounts_refs');

-- A step's lease token is set exactly while it runs; the fenced writes of an attempt match on
-- the token alone (a `state = 'running'` beside it made the planner walk the partial index of
-- running steps instead of the primary key). `not valid`: checked for every write from now on,
-- without scanning the rows written before.
alter table steps add constraint steps_leased_while_running
    check ((state = 'running') = (lease_token is not null)) not valid;

-- NOTIFY serialises commits (one database-wide lock held through the flush), so send it only
-- when another process may need waking: new requests, and steps a person makes ready again
-- (approve, release, retry). A worker takes the next step of its own request without it, and
-- every process polls besides.
drop trigger steps_notify_ready_update on steps;
create function steps_notify_resumed() returns trigger language plpgsql as $$
begin
    if exists (
        select 1 from new_rows n join old_rows o on o.id = n.id
        where n.state = 'ready' and o.state in ('paused', 'failed')
    ) then
        perform pg_notify('erasure_steps_ready', '');
    end if;
    return null;
end;
$$;
create trigger steps_notify_resumed after update on steps
    referencing new table as new_rows old table as old_rows
    for each statement execute function steps_notify_resumed();

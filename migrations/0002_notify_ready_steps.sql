-- Wake the workers whenever a statement makes steps ready (one notification per statement,
-- delivered at commit). Polling covers any notification that is lost.
create function steps_notify_ready() returns trigger language plpgsql as $$
begin
    if exists (select 1 from ready_rows where state = 'ready') then
        perform pg_notify('erasure_steps_ready', '');
    end if;
    return null;
end;
$$;
create trigger steps_notify_ready_insert after insert on steps
    referencing new table as ready_rows
    for each statement execute function steps_notify_ready();
create trigger steps_notify_ready_update after update on steps
    referencing new table as ready_rows
    for each statement execute function steps_notify_ready();

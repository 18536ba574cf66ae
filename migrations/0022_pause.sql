-- The pause switch (`store::pause`): one row saying whether upstream work is paused, since when,
-- by whom and why. Every process that calls the aggregator reads it (`engine::pause`); a change
-- is audited (`upstream_paused`, `upstream_resumed`) in the same transaction. No personal data:
-- the reason is checked free text, the actor a key or person id.
create table upstream_pause (
    id boolean primary key default true check (id),
    paused boolean not null default false,
    reason text,
    since timestamptz,
    by_actor text
);
insert into upstream_pause default values;

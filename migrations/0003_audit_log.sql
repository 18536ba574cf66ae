-- The audit log as an RFC 9162 Merkle tree. Entries are sequenced into leaves in commit-safe
-- order: only entries whose transaction is older than every running transaction (xid below the
-- snapshot's xmin) are sequenced, so no entry can later appear before a sequenced one.
alter table audit_entries add column xid xid8 not null default pg_current_xact_id();
create index audit_entries_xid on audit_entries (xid, id);

create table audit_leaves (
    leaf_index  bigint primary key,
    entry_id    bigint not null unique references audit_entries (id),
    request_id  uuid,
    subject_ref text,
    at          timestamptz not null,
    -- The exact bytes hashed: H(0x00 || leaf).
    leaf        text not null,
    leaf_hash   bytea not null
);
create index audit_leaves_request on audit_leaves (request_id, leaf_index) where request_id is not null;
create index audit_leaves_subject on audit_leaves (subject_ref, leaf_index) where subject_ref is not null;
create index audit_leaves_at on audit_leaves (at);

-- Where the sequencer stopped: every entry with xid below this horizon is a leaf.
create table audit_sequencer (
    singleton   boolean primary key default true check (singleton),
    horizon     xid8 not null
);
insert into audit_sequencer (horizon) values ('0'::xid8);

create table audit_checkpoints (
    size        bigint primary key,
    root        bytea not null,
    note        text not null,
    created_at  timestamptz not null default now()
);

create trigger audit_leaves_no_update_delete before update or delete on audit_leaves
    for each row execute function audit_entries_refuse_change();
create trigger audit_leaves_no_truncate before truncate on audit_leaves
    for each statement execute function audit_entries_refuse_change();
create trigger audit_checkpoints_no_update_delete before update or delete on audit_checkpoints
    for each row execute function audit_entries_refuse_change();
create trigger audit_checkpoints_no_truncate before truncate on audit_checkpoints
    for each statement execute function audit_entries_refuse_change();

-- For roles other than the owner, the privileges say the same as the triggers.
revoke update, delete, truncate on audit_entries, audit_leaves, audit_checkpoints from public;

create or replace function audit_entries_refuse_change() returns trigger language plpgsql as $$
begin
    raise exception '% is append-only: % refused', tg_table_name, tg_op
        using errcode = 'insufficient_privilege';
end;
$$;

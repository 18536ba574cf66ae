-- The Merkle tree's complete subtrees, so that roots and proofs read O(log n) rows instead of
-- every leaf (src/audit/tree.rs). Node (level, idx) is the root of the perfect subtree over leaves
-- idx * 2^level .. (idx + 1) * 2^level; level 0 is audit_leaves.leaf_hash. The sequencer writes
-- each node once, in the transaction that sequences the leaf completing it; nodes never change.
create table audit_tree (
    level   smallint not null check (level between 1 and 62),
    idx     bigint not null check (idx >= 0),
    hash    bytea not null check (octet_length(hash) = 32),
    primary key (level, idx)
);

create trigger audit_tree_no_update_delete before update or delete on audit_tree
    for each row execute function audit_entries_refuse_change();
create trigger audit_tree_no_truncate before truncate on audit_tree
    for each statement execute function audit_entries_refuse_change();
revoke update, delete, truncate on audit_tree from public;

-- The nodes of a log sequenced before this migration: H(0x01 || left || right), level by level.
do $$
declare
    lvl int := 1;
    n bigint;
begin
    insert into audit_tree (level, idx, hash)
    select 1, a.leaf_index / 2, sha256('\x01'::bytea || a.leaf_hash || b.leaf_hash)
    from audit_leaves a join audit_leaves b on b.leaf_index = a.leaf_index + 1
    where a.leaf_index % 2 = 0;
    loop
        lvl := lvl + 1;
        insert into audit_tree (level, idx, hash)
        select lvl, a.idx / 2, sha256('\x01'::bytea || a.hash || b.hash)
        from audit_tree a join audit_tree b on b.level = lvl - 1 and b.idx = a.idx + 1
        where a.level = lvl - 1 and a.idx % 2 = 0;
        get diagnostics n = row_count;
        exit when n = 0;
    end loop;
end
$$;

-- Privileges (DESIGN invariant 3: the database refuses UPDATE, DELETE and TRUNCATE on the audit
-- log by trigger AND by privilege). The tables belong to the role that migrates; the service can
-- run as a separate login role that is a member of the group role erasure_app, which may change
-- the operational tables but only read and append to the audit tables:
--     create role erasure_svc login password '...' in role erasure_app;
--     DATABASE_URL=postgres://erasure_svc:...@host/erasure erasure serve
-- (`erasure migrate` keeps running as the owner). erasure_app is created here when the migrating
-- role may create roles; otherwise create it first (`create role erasure_app nologin`).
-- A later migration that adds a table gets the same operational privileges by default; one that
-- adds an audit table must revoke update, delete and truncate on it from erasure_app.
do $$
begin
    if not exists (select from pg_roles where rolname = 'erasure_app') then
        begin
            create role erasure_app nologin;
        exception
            when duplicate_object or unique_violation then null; -- created meanwhile by another database's migration
            when insufficient_privilege then
                raise notice 'no role erasure_app and no right to create it: the service runs as the owner';
                return;
        end;
    end if;
    execute format('grant connect on database %I to erasure_app', current_database());
    grant usage on schema public to erasure_app;
    grant select, insert, update, delete on all tables in schema public to erasure_app;
    grant usage, select on all sequences in schema public to erasure_app;
    alter default privileges in schema public grant select, insert, update, delete on tables to erasure_app;
    alter default privileges in schema public grant usage, select on sequences to erasure_app;
    -- The audit log: read and append only. The sequencer's horizon is the one row it moves.
    revoke update, delete, truncate on audit_entries, audit_leaves, audit_checkpoints, audit_tree
        from erasure_app;
    revoke insert, delete, truncate on audit_sequencer from erasure_app;
    revoke all on _sqlx_migrations from erasure_app;
end
$$;

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

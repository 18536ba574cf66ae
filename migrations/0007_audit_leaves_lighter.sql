-- Less work per sequenced entry (BENCHMARKS.md, "Audit log"). Forward-only and safe while
-- processes of the previous release still serve: they neither read by these nor rely on them.
--
-- No query reads leaves by subject (look-ups read erasure_requests by pseudonym; the receipt
-- reads leaves by request): the index only cost a random insert of a 67-byte key per entry.
drop index if exists audit_leaves_subject;

-- The foreign key from a leaf to its entry made PostgreSQL, for every leaf, look the entry up
-- and lock it (SELECT ... FOR KEY SHARE): a second write to every audit_entries tuple and its WAL,
-- about as costly as the leaf itself. What it guarded holds without it: the sequencer copies each
-- leaf's entry_id from the entry it read in the same transaction, entries can never be deleted
-- (trigger and privileges), and entry_id stays unique (one leaf per entry).
alter table audit_leaves drop constraint if exists audit_leaves_entry_id_fkey;
--
-- Both statements only change the catalog (no rewrite, no scan), but they take exclusive locks
-- on audit_leaves and (for the foreign key's triggers) audit_entries: the migration waits for
-- transactions using them and holds new ones back until it commits (milliseconds once it has
-- the locks).

-- The sequencer's one row says where the audit log's sequencing stopped; without it nothing more
-- would be sequenced into the Merkle tree. The other audit tables refuse DELETE and TRUNCATE from
-- everyone, their owner included (triggers of 0003 and 0005); the sequencer refused them only by
-- privilege, from erasure_app. Now its triggers refuse them too (its UPDATE, the one change it
-- takes, stays allowed).
create trigger audit_sequencer_no_delete before delete on audit_sequencer
    for each row execute function audit_entries_refuse_change();
create trigger audit_sequencer_no_truncate before truncate on audit_sequencer
    for each statement execute function audit_entries_refuse_change();
revoke delete, truncate on audit_sequencer from public;

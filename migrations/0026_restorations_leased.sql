-- Restorations are claimed like every job queue (`store::lease`): a claim sets a lease token and
-- its end, as on steps and webhook subscriptions, so the three queues share one claim and one
-- lease. A claim still also moves `run_at` past the lease, as before, so a process of the
-- previous release (which knows only `run_at`) and one of this release never both take the same
-- restoration; the lease is cleared when the restoration is retried later or ends.
--
-- Forward-only and safe while processes of the previous release still serve: two nullable
-- columns without a default (catalog only, no rewrite), which they neither read nor write.
alter table restorations
    add column if not exists lease_token uuid,
    add column if not exists lease_until timestamptz;

-- With requests never deleted (0011), the foreign keys from an erased account to its request and
-- to the original request it re-erases guarded nothing more: the guard is armed by a statement
-- that joins each new row to its request's row (`store::guard::arm_all`), and the root is read
-- from that same row. Each key made PostgreSQL look up and lock the request (SELECT ... FOR KEY
-- SHARE, through SPI) for every armed account, twice: about 17 us a row measured in isolation,
-- and a lock written on a request row the drain updates again moments later (BENCHMARKS.md,
-- "Drain beside graphile-worker"). As 0011 did for steps.
--
-- Catalog only (no rewrite, no scan); it takes an exclusive lock on erased_accounts and
-- erasure_requests until it commits. Processes of the previous release still serving neither
-- need nor notice the keys.
alter table erased_accounts
    drop constraint if exists erased_accounts_request_id_fkey,
    drop constraint if exists erased_accounts_root_request_id_fkey;

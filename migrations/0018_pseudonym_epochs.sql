-- Pseudonym key epochs (issue 23). New pseudonyms (`k<version>:`) are made under the key of the
-- current epoch; a new epoch starts every ERASURE_PSEUDONYM_EPOCH_DAYS. Each key is random (or,
-- once, a configured ERASURE_PSEUDONYM_KEY migrated here), kept sealed with ERASURE_DATA_KEY, and
-- destroyed by the retention job once every request made under it is closed and older than
-- ERASURE_RETENTION_DAYS: the row stays as a tombstone (version, times, how many requests it
-- covered) with no key, so nothing links the pseudonyms of that epoch to a person any more.
-- Forward-only; a new table only, safe while older processes serve.
create table pseudonym_epochs (
    version       integer primary key check (version > 0),
    -- nonce || AES-256-GCM(ERASURE_DATA_KEY, key), 'pseudonym-epoch:<version>' as associated
    -- data; null once destroyed.
    key_sealed    bytea,
    -- 'random', or 'configured' (ERASURE_PSEUDONYM_KEY / ERASURE_PSEUDONYM_OLD_KEYS migrated).
    origin        text not null check (origin in ('random', 'configured')),
    -- New pseudonyms use the epoch that started last; an epoch ends when the next one starts.
    starts_at     timestamptz not null,
    created_at    timestamptz not null default now(),
    destroyed_at  timestamptz,
    -- How many requests were pseudonymised under it (when destroyed).
    requests      bigint,
    constraint destroyed_epochs_hold_no_key check ((destroyed_at is null) = (key_sealed is not null))
);
create index pseudonym_epochs_by_start on pseudonym_epochs (starts_at, version);

-- Bulk operations (`store::bulk`): an action on up to 10,000 requests at once, or an upload of
-- up to 10,000 lines, as one operation with its own id, and each item's result, paged. No
-- personal data: request ids, results, refusal codes and messages that name fields and states
-- (never a value a client sent).
create table bulk_operations (
    id uuid primary key,
    -- approve, hold, release, extend, retry, cancel; submit for an upload
    action text not null,
    actor text not null,
    created_at timestamptz not null default now(),
    finished_at timestamptz,
    total integer not null,
    done integer not null default 0,
    refused integer not null default 0,
    -- an upload's batch
    batch_id uuid
);
create index bulk_operations_by_time on bulk_operations (created_at desc);

create table bulk_items (
    operation_id uuid not null references bulk_operations (id),
    -- from 1, in the selection's or the file's order
    ordinal integer not null,
    -- a CSV upload's line (its header is line 1)
    line bigint,
    request_id uuid,
    -- done or refused (an action); created, duplicate or invalid (an upload)
    result text not null,
    error text,
    message text,
    primary key (operation_id, ordinal)
);

-- People who sign in to the console through the company's OpenID Provider (issue 29).
--
-- A person is known by (issuer, subject); their display name and e-mail live here only (never in
-- the audit log, which names `person:<id>`), and `erasure people forget` replaces both with a
-- tombstone, keeping the id. Roles are those of the latest sign-in.
create table people (
    id               uuid primary key,
    issuer           text not null,
    subject          text not null,
    display_name     text not null,
    email            text,
    roles            text[] not null default '{}',
    created_at       timestamptz not null default now(),
    last_sign_in_at  timestamptz,
    forgotten_at     timestamptz,
    unique (issuer, subject),
    check (roles <@ array['requester', 'approver', 'auditor', 'admin']::text[])
);

-- Every person has one *personal* key row: it stands for the person in the columns that name a
-- key (a request's requested_by and approved_by, a webhook's created_by, idempotency records) and
-- opens their console sessions. It holds no usable secret (its digest is of random bytes nobody
-- kept) and is never accepted as a bearer key. Keys a person creates in the console are owned by
-- them: what such a key does counts as that person (four eyes compare owners).
alter table api_keys
    add column owner_person uuid references people (id),
    add column personal boolean not null default false,
    alter column role drop not null,
    add constraint api_keys_personal_has_owner check (not personal or owner_person is not null),
    add constraint api_keys_role_unless_personal check (personal or role is not null);
create unique index api_keys_personal_of on api_keys (owner_person) where personal;

-- A session opened by a person (through their personal key); an admin can end them all.
alter table console_sessions add column person_id uuid references people (id);
create index console_sessions_by_person on console_sessions (person_id)
    where person_id is not null and ended_at is null;

-- A sign-in under way: bound to one browser by a random id in a short-lived HttpOnly cookie (its
-- digest here), used once (deleted when the callback arrives). No token is ever stored.
create table oidc_pending (
    browser_hash   bytea primary key,
    state_hash     bytea not null,
    nonce          text not null,
    pkce_verifier  text not null,
    expires_at     timestamptz not null
);
create index oidc_pending_by_expiry on oidc_pending (expires_at);

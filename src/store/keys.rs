//! API keys: shown once, stored as a SHA-256 digest (keys are 192 random bits, so a fast digest
//! cannot be brute-forced), found by a short prefix that names them in logs without revealing them.
//!
//! Never stores or logs a key in clear; never deletes a key (they are revoked).

use crate::domain::events::Event;
use crate::domain::events::data_of;
use crate::domain::records;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::Db;
use super::audit;
use super::group::{Group, Writes};
use crate::domain::Role;
use crate::domain::keys::NewKey;

/// Who is calling: a verified key, or a person's console session (through their personal key).
#[derive(Debug, Clone)]
pub struct Principal {
    /// The key (for a person's session, their personal key: it names them in the columns that
    /// hold a key, and carries their rate of requests).
    pub key_id: Uuid,
    /// What the caller may do: a key's one role, or the roles of a person's latest sign-in.
    pub roles: Vec<Role>,
    /// The person behind the caller: the person signed in, or the owner of the key; `None` for a
    /// key no person owns (a machine's, or one made at the command line).
    pub person: Option<Uuid>,
}

impl Principal {
    /// The actor the audit log names: `person:<id>` when a person is behind the call (never their
    /// name), else `key:<id>`.
    pub fn actor(&self) -> String {
        match self.person {
            Some(person) => audit::person_actor(person),
            None => audit::key_actor(self.key_id),
        }
    }

    /// The roles, comma-separated (`requester, approver`).
    pub fn roles_text(&self) -> String {
        let names: Vec<&str> = self.roles.iter().map(|r| r.as_str()).collect();
        if names.is_empty() {
            "none".into()
        } else {
            names.join(", ")
        }
    }
}

/// The person behind a key (its owner, or the person a personal key stands for); `None` for a key
/// no person owns.
pub async fn owner_of(conn: &mut PgConnection, key_id: Uuid) -> sqlx::Result<Option<Uuid>> {
    Ok(
        sqlx::query_scalar::<_, Option<Uuid>>("select owner_person from api_keys where id = $1")
            .bind(key_id)
            .fetch_optional(conn)
            .await?
            .flatten(),
    )
}

/// The actor the audit log names for what `key_id` does: `person:<id>` when a person owns the key
/// (or it is their personal key), else `key:<id>`; with that person.
pub async fn actor_of(
    conn: &mut PgConnection,
    key_id: Uuid,
) -> sqlx::Result<(String, Option<Uuid>)> {
    let person = owner_of(conn, key_id).await?;
    Ok(match person {
        Some(p) => (audit::person_actor(p), Some(p)),
        None => (audit::key_actor(key_id), None),
    })
}

/// `same_person` on a connection of the pool.
pub async fn same_caller(db: &Db, a: Uuid, b: Uuid) -> sqlx::Result<bool> {
    if a == b {
        return Ok(true);
    }
    let mut conn = db.acquire().await?;
    same_person(&mut conn, a, b).await
}

/// Whether two keys are the same caller for four eyes: the same key, or keys of one person.
pub async fn same_person(conn: &mut PgConnection, a: Uuid, b: Uuid) -> sqlx::Result<bool> {
    if a == b {
        return Ok(true);
    }
    let (x, y) = (owner_of(conn, a).await?, owner_of(conn, b).await?);
    Ok(x.is_some() && x == y)
}

fn digest(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// Creates a key and returns (id, the key itself), with a `key_created` audit entry by `actor`.
/// The key is not stored. (Tests and set-up; people and the CLI make keys through [`create_owned`]
/// with a checked [`NewKey`].)
pub async fn create(
    db: &Db,
    role: Role,
    label: &str,
    expires_at: Option<DateTime<Utc>>,
    actor: &str,
) -> anyhow::Result<(Uuid, String)> {
    let key = NewKey {
        role,
        label: label.into(),
        expires_at,
    };
    create_owned(db, &key, actor, None).await
}

/// Makes `key` for `actor`, owned by `owner` when a person makes it (what it does counts as that
/// person), and returns (id, the key itself).
pub async fn create_owned(
    db: &Db,
    key: &NewKey,
    actor: &str,
    owner: Option<Uuid>,
) -> anyhow::Result<(Uuid, String)> {
    let mut tx = db.begin().await?;
    let created = insert(
        &mut tx,
        key.role,
        &key.label,
        key.expires_at,
        actor,
        None,
        owner,
    )
    .await?;
    tx.commit().await?;
    Ok(created)
}

/// The personal key of a person, made on their first sign-in: it holds no usable secret.
pub async fn personal_key(conn: &mut PgConnection, person: Uuid) -> sqlx::Result<Uuid> {
    if let Some(id) =
        sqlx::query_scalar("select id from api_keys where owner_person = $1 and personal")
            .bind(person)
            .fetch_optional(&mut *conn)
            .await?
    {
        return Ok(id);
    }
    let id = Uuid::new_v4();
    // A prefix no bearer key has (`p` is not hex) and the digest of bytes nobody keeps.
    let prefix = format!("p{}", hex::encode(rand::random::<[u8; 8]>()));
    sqlx::query(
        "insert into api_keys (id, prefix, hash, role, label, personal, owner_person) \
         values ($1, $2, $3, null, 'person', true, $4)",
    )
    .bind(id)
    .bind(prefix)
    .bind(digest(&hex::encode(rand::random::<[u8; 32]>())))
    .bind(person)
    .execute(&mut *conn)
    .await?;
    Ok(id)
}

/// Inserts a key and its `key_created` entry (id, prefix, role, expiry; never the label, which is
/// free text, nor the key).
async fn insert(
    conn: &mut sqlx::PgConnection,
    role: Role,
    label: &str,
    expires_at: Option<DateTime<Utc>>,
    actor: &str,
    replaces: Option<Uuid>,
    owner: Option<Uuid>,
) -> anyhow::Result<(Uuid, String)> {
    let prefix = hex::encode(rand::random::<[u8; 4]>());
    let secret = hex::encode(rand::random::<[u8; 24]>());
    let key = format!("ek_{prefix}_{secret}");
    let id = Uuid::new_v4();
    sqlx::query(
        "insert into api_keys (id, prefix, hash, role, label, expires_at, owner_person) \
         values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(&prefix)
    .bind(digest(&key))
    .bind(role.as_str())
    .bind(label)
    .bind(expires_at)
    .bind(owner)
    .execute(&mut *conn)
    .await?;
    let data = data_of(&records::KeyCreated {
        key: id,
        prefix: &prefix,
        role: role.as_str(),
        expires_at,
        owner: owner.map(audit::person_actor),
        replaces,
    });
    audit::append_unlinked(conn, actor, Event::KeyCreated, data).await?;
    Ok((id, key))
}

/// The prefix a bearer token names its key by (`ek_<prefix>_<secret>`); `None` if it is not
/// shaped like a key.
fn prefix_of(key: &str) -> Option<&str> {
    key.strip_prefix("ek_")
        .and_then(|rest| rest.split_once('_'))
        .map(|(p, _)| p)
        .filter(|p| p.len() == 8)
}

/// Checks API keys. Requests that arrive together are checked with one query (`store::group`):
/// one query per request was a round trip and a backend wake-up each, the largest cost of a
/// single intake after its insert. Each check still reads the key as it is at that moment, so a
/// key revoked is refused by the next request.
pub type KeyChecks = Group<Checks>;

/// What `KeyChecks` runs.
pub struct Checks;

/// Readers of the keys at once.
pub const CHECKERS: usize = 2;

/// Starts the key checks on the current runtime, with connections of their own to `db`'s
/// database.
pub fn checks(db: &Db) -> KeyChecks {
    Group::start_connected(db, Checks, CHECKERS)
}

impl Writes for Checks {
    /// A bearer token.
    type Job = String;
    /// The live key it names; `None` for unknown, revoked or expired keys.
    type Out = Option<Principal>;

    const TRANSACTION: bool = false;

    async fn write(
        &self,
        conn: &mut PgConnection,
        keys: &[String],
    ) -> sqlx::Result<Vec<Option<Principal>>> {
        // Requests of one key come together: each prefix once.
        let mut prefixes: Vec<&str> = keys.iter().filter_map(|k| prefix_of(k)).collect();
        prefixes.sort_unstable();
        prefixes.dedup();
        if prefixes.is_empty() {
            return Ok(keys.iter().map(|_| None).collect());
        }
        // A join on `unnest` rather than `prefix = any($1)`: PostgreSQL then keeps one plan for
        // the statement, where it planned `any` afresh for each array (three times the query).
        type Row = (String, Uuid, Vec<u8>, Option<String>, Option<Uuid>);
        let rows: Vec<Row> = sqlx::query_as(
            "select k.prefix, k.id, k.hash, k.role, k.owner_person \
             from unnest($1::text[]) as p(prefix) \
             join api_keys k on k.prefix = p.prefix \
             where k.revoked_at is null and (k.expires_at is null or k.expires_at > now()) \
             and not k.personal",
        )
        .bind(&prefixes)
        .fetch_all(conn)
        .await?;
        Ok(keys
            .iter()
            .map(|key| {
                let prefix = prefix_of(key)?;
                let (_, key_id, hash, role, owner) = rows.iter().find(|row| row.0 == prefix)?;
                let presented = digest(key);
                let same: bool = hash.as_slice().ct_eq(presented.as_slice()).into();
                let role = Role::parse(role.as_deref()?)?;
                same.then_some(Principal {
                    key_id: *key_id,
                    roles: vec![role],
                    person: *owner,
                })
            })
            .collect())
    }
}

/// A key as `erasure keys list` shows it: never the key nor its digest.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct KeyInfo {
    pub id: Uuid,
    pub prefix: String,
    pub role: String,
    pub label: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// The person who owns the key (created it in the console).
    pub owner_person: Option<Uuid>,
}

/// Personal keys (which stand for a person's sign-in) are never listed, found or revoked as keys.
const INFO: &str = "id, prefix, role, label, created_at, expires_at, revoked_at, owner_person";

/// Every key, oldest first.
pub async fn list(db: &Db) -> sqlx::Result<Vec<KeyInfo>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {INFO} from api_keys where not personal order by created_at, id"
    )))
    .fetch_all(db)
    .await
}

/// Finds a key by its id (a UUID) or its 8-character prefix.
pub async fn find(db: &Db, id_or_prefix: &str) -> sqlx::Result<Option<KeyInfo>> {
    let text = id_or_prefix.trim();
    let text = text
        .strip_prefix("ek_")
        .map(|rest| rest.split('_').next().unwrap_or(rest))
        .unwrap_or(text);
    let id = Uuid::parse_str(text).ok();
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {INFO} from api_keys where (id = $1 or prefix = $2) and not personal"
    )))
    .bind(id)
    .bind(text)
    .fetch_optional(db)
    .await
}

/// Revokes a key at once (the next request with it gets 401, in every process: authentication
/// reads the database on each request). Returns false when it was revoked already.
/// `actor` is named in its `key_revoked` audit entry.
pub async fn revoke(db: &Db, id: Uuid, actor: &str) -> sqlx::Result<bool> {
    let mut tx = db.begin().await?;
    let done = revoke_in(&mut tx, id, actor).await?;
    tx.commit().await?;
    Ok(done)
}

async fn revoke_in(conn: &mut PgConnection, id: Uuid, actor: &str) -> sqlx::Result<bool> {
    let prefix: Option<String> = sqlx::query_scalar(
        "update api_keys set revoked_at = now() where id = $1 and revoked_at is null and not personal \
         returning prefix",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(prefix) = prefix else {
        return Ok(false);
    };
    let data = data_of(&records::KeyRevoked {
        key: id,
        prefix: &prefix,
    });
    audit::append_unlinked(conn, actor, Event::KeyRevoked, data).await?;
    Ok(true)
}

/// Rotation: a new key with the old one's role, label and remaining lifetime; the old key is
/// revoked now (`grace` zero) or expires after `grace`. One transaction: never both lost.
pub async fn rotate(
    db: &Db,
    old: &KeyInfo,
    grace: std::time::Duration,
    actor: &str,
) -> anyhow::Result<(Uuid, String)> {
    let role =
        Role::parse(&old.role).ok_or_else(|| anyhow::anyhow!("unknown role {}", old.role))?;
    if old.revoked_at.is_some() || old.expires_at.is_some_and(|t| t <= Utc::now()) {
        anyhow::bail!(
            "key {} is revoked or expired already; create a new one",
            old.id
        );
    }
    let mut tx = db.begin().await?;
    let (id, key) = insert(
        &mut tx,
        role,
        &old.label,
        old.expires_at,
        actor,
        Some(old.id),
        old.owner_person,
    )
    .await?;
    if grace.is_zero() {
        revoke_in(&mut tx, old.id, actor).await?;
    } else {
        let at = Utc::now() + chrono::Duration::from_std(grace)?;
        sqlx::query(
            "update api_keys set expires_at = least(coalesce(expires_at, $2), $2) where id = $1",
        )
        .bind(old.id)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        let data = data_of(&records::KeyExpiryShortened {
            key: old.id,
            prefix: &old.prefix,
            expires_at: at,
        });
        audit::append_unlinked(&mut tx, actor, Event::KeyExpiryShortened, data).await?;
    }
    tx.commit().await?;
    Ok((id, key))
}

//! People who sign in to the console through the OpenID Provider (`people`): known by (issuer,
//! subject), with the display name and e-mail of their latest sign-in and its roles.
//!
//! A person's name and e-mail live in this table only: audit entries name `person:<id>`, and
//! nothing here logs a name. `forget` replaces both with a tombstone and keeps the id, so that
//! every audit entry and proof that names the id still verifies.

use crate::domain::events::Event;
use crate::domain::events::data_of;
use crate::domain::records;
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Db;
use super::audit;
use crate::domain::Role;

/// The name a forgotten person shows.
pub const TOMBSTONE: &str = "(forgotten person)";

/// A person as the admins' page shows them.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Person {
    pub id: Uuid,
    pub display_name: String,
    pub email: Option<String>,
    pub roles: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub last_sign_in_at: Option<DateTime<Utc>>,
    pub forgotten_at: Option<DateTime<Utc>>,
    /// Sessions open now.
    pub sessions: i64,
}

/// Who signed in, as the provider's verified ID token says.
pub struct SignIn<'a> {
    pub issuer: &'a str,
    pub subject: &'a str,
    pub display_name: &'a str,
    pub email: Option<&'a str>,
    pub roles: &'a [Role],
}

/// Records a sign-in: the person is created or updated (name, e-mail and roles of this sign-in);
/// answers their id and personal key. With no role, an existing person keeps no role and their
/// sessions end, and `None` is answered (an unknown person without a role is not recorded).
pub async fn sign_in(db: &Db, who: SignIn<'_>) -> sqlx::Result<Option<(Uuid, Uuid)>> {
    let roles: Vec<&str> = who.roles.iter().map(|r| r.as_str()).collect();
    let mut tx = db.begin().await?;
    if roles.is_empty() {
        let id: Option<Uuid> = sqlx::query_scalar(
            "update people set roles = '{}' where issuer = $1 and subject = $2 returning id",
        )
        .bind(who.issuer)
        .bind(who.subject)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(id) = id {
            end_sessions_in(&mut tx, id).await?;
            audit::append_unlinked(
                &mut tx,
                &audit::person_actor(id),
                Event::PersonRefused,
                data_of(&records::PersonRefused {
                    person: id,
                    reason: "no_role",
                }),
            )
            .await?;
        }
        tx.commit().await?;
        return Ok(None);
    }
    let (id, before): (Uuid, Option<Vec<String>>) = sqlx::query_as(
        "with old as (select id, roles from people where issuer = $2 and subject = $3) \
         insert into people (id, issuer, subject, display_name, email, roles, last_sign_in_at) \
         values ($1, $2, $3, $4, $5, $6, now()) \
         on conflict (issuer, subject) do update set display_name = excluded.display_name, \
         email = excluded.email, roles = excluded.roles, last_sign_in_at = now(), \
         forgotten_at = null \
         returning id, (select roles from old)",
    )
    .bind(Uuid::now_v7())
    .bind(who.issuer)
    .bind(who.subject)
    .bind(who.display_name)
    .bind(who.email)
    .bind(&roles)
    .fetch_one(&mut *tx)
    .await?;
    let key = super::keys::personal_key(&mut tx, id).await?;
    let data = data_of(&records::PersonSignedIn {
        person: id,
        roles: &roles,
        roles_before: before.as_deref().filter(|b| **b != *roles.as_slice()),
    });
    audit::append_unlinked(
        &mut tx,
        &audit::person_actor(id),
        Event::PersonSignedIn,
        data,
    )
    .await?;
    tx.commit().await?;
    Ok(Some((id, key)))
}

/// Everyone who has signed in, most recent sign-in first.
pub async fn list(db: &Db) -> sqlx::Result<Vec<Person>> {
    sqlx::query_as(
        "select p.id, p.display_name, p.email, p.roles, p.created_at, p.last_sign_in_at, \
         p.forgotten_at, (select count(*) from console_sessions s where s.person_id = p.id \
         and s.ended_at is null and s.expires_at > now()) as sessions \
         from people p order by p.last_sign_in_at desc nulls last, p.id",
    )
    .fetch_all(db)
    .await
}

/// One person.
pub async fn get(db: &Db, id: Uuid) -> sqlx::Result<Option<Person>> {
    Ok(list(db).await?.into_iter().find(|p| p.id == id))
}

/// The display names of these people (for pages; never for logs or the audit log).
pub async fn names(db: &Db, ids: &[Uuid]) -> sqlx::Result<HashMap<Uuid, String>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(Uuid, String)> =
        sqlx::query_as("select id, display_name from people where id = any($1)")
            .bind(ids)
            .fetch_all(db)
            .await?;
    Ok(rows.into_iter().collect())
}

/// The people behind these keys (owners, or the person a personal key stands for), with names.
pub async fn behind_keys(db: &Db, keys: &[Uuid]) -> sqlx::Result<HashMap<Uuid, (Uuid, String)>> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(Uuid, Uuid, String)> = sqlx::query_as(
        "select k.id, p.id, p.display_name from api_keys k join people p on p.id = k.owner_person \
         where k.id = any($1)",
    )
    .bind(keys)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|(k, p, n)| (k, (p, n))).collect())
}

async fn end_sessions_in(conn: &mut sqlx::PgConnection, id: Uuid) -> sqlx::Result<u64> {
    Ok(sqlx::query(
        "update console_sessions set ended_at = now() where person_id = $1 and ended_at is null",
    )
    .bind(id)
    .execute(conn)
    .await?
    .rows_affected())
}

/// Ends every open session of a person (they sign in again through the provider), with a
/// `person_sessions_ended` entry by `actor`. Answers how many ended; `None` for an unknown person.
pub async fn end_sessions(db: &Db, id: Uuid, actor: &str) -> sqlx::Result<Option<u64>> {
    let mut tx = db.begin().await?;
    let known: Option<Uuid> = sqlx::query_scalar("select id from people where id = $1")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    if known.is_none() {
        return Ok(None);
    }
    let ended = end_sessions_in(&mut tx, id).await?;
    audit::append_unlinked(
        &mut tx,
        actor,
        Event::PersonSessionsEnded,
        data_of(&records::PersonSessionsEnded {
            person: id,
            sessions: ended as i64,
        }),
    )
    .await?;
    tx.commit().await?;
    Ok(Some(ended))
}

/// Forgets a person (a leaver is a data subject too): name and e-mail replaced by a tombstone,
/// roles and sessions ended, the keys they own revoked, the id kept. `false` for an unknown
/// person.
pub async fn forget(db: &Db, id: Uuid, actor: &str) -> sqlx::Result<bool> {
    let mut tx = db.begin().await?;
    let done = sqlx::query(
        "update people set display_name = $2, email = null, roles = '{}', \
         forgotten_at = coalesce(forgotten_at, now()) where id = $1",
    )
    .bind(id)
    .bind(TOMBSTONE)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if done {
        end_sessions_in(&mut tx, id).await?;
        // A leaver's keys go with them.
        let revoked: Vec<(Uuid, String)> = sqlx::query_as(
            "update api_keys set revoked_at = now() \
             where owner_person = $1 and revoked_at is null and not personal returning id, prefix",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        for (key, prefix) in revoked {
            audit::append_unlinked(
                &mut tx,
                actor,
                Event::KeyRevoked,
                data_of(&records::KeyRevoked {
                    key,
                    prefix: &prefix,
                }),
            )
            .await?;
        }
        audit::append_unlinked(
            &mut tx,
            actor,
            Event::PersonForgotten,
            data_of(&records::PersonForgotten { person: id }),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(done)
}

//! Erasure requests: intake (one, idempotent, a batch), the list, and the actions on a request
//! (approve, cancel, retry, hold, release, extend), for the API, the console and bulk actions.
//!
//! Never returns a target id: it is sealed on create and answered as its pseudonym only.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::App;
use super::error::ApiError;
use super::{input, subjects};
use crate::domain::actions::{self, Ask, Details, Who};
use crate::domain::validate::{self, TargetId};
use crate::domain::{Action, LegalBasis, Scope, State};
use crate::store::intake::Submission;
use crate::store::keys::Principal;
use crate::store::requests::{self, ErasureRequest, Inserted, ListFilter, NewRequest, Refusal};
use crate::store::{self, idempotency};

/// A new erasure request. `target_id` is the upstream id; it is never returned.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    #[serde(deserialize_with = "input::from_string")]
    pub scope: Scope,
    /// The aggregator's id of the user, connection or account (digits).
    #[schema(example = "1042", pattern = "^(0|[1-9][0-9]{0,31})$")]
    pub target_id: String,
    /// An opaque ticket id of yours. Refused when it looks like personal data.
    #[schema(min_length = 1, max_length = 128)]
    pub external_reference: Option<String>,
    /// Do not start before this time.
    pub not_before: Option<DateTime<Utc>>,
}

impl App {
    /// Validates, pseudonymises and seals one item. `traceparent`: the API call's
    /// (`telemetry::traceparent`), kept so that the request's later work joins its trace.
    fn prepare(
        &self,
        item: CreateRequest,
        traceparent: Option<&str>,
    ) -> Result<NewRequest, BTreeMap<String, String>> {
        let mut fields = BTreeMap::new();
        let target = TargetId::parse(&item.target_id)
            .map_err(|why| fields.insert("target_id".into(), why.into()))
            .ok();
        let external = match item.external_reference.as_deref() {
            None => None,
            Some(text) => validate::external_reference(text)
                .map_err(|why| fields.insert("external_reference".into(), why.into()))
                .ok(),
        };
        if let Some(t) = item.not_before {
            if let Err(why) = validate::timestamp(t) {
                fields.insert("not_before".into(), why.into());
            } else if t > Utc::now() + chrono::Duration::days(366) {
                fields.insert("not_before".into(), "must be within a year".into());
            }
        }
        let Some(target) = target else {
            return Err(fields);
        };
        if !fields.is_empty() {
            return Err(fields);
        }
        // Time-ordered (UUIDv7): each insert lands at the right edge of the indexes keyed by
        // request id instead of on a random page (BENCHMARKS.md, "time-ordered request ids").
        let id = Uuid::now_v7();
        let needs_approval = actions::second_person_decides(self.approval, item.scope);
        Ok(NewRequest {
            id,
            scope: item.scope,
            subject_ref: self.pseudonyms.subject_ref(item.scope, target.as_str()),
            target_sealed: self.sealer.seal(id, target.as_str().as_bytes()),
            external_reference: external,
            not_before: item.not_before,
            state: if needs_approval {
                State::PendingApproval
            } else {
                State::Queued
            },
            traceparent: traceparent.map(str::to_string),
        })
    }
}

/// 409 naming the open request for the same target.
pub fn duplicate(existing: Uuid) -> ApiError {
    ApiError::conflict(
        "duplicate_request",
        format!("an open erasure request for this target exists: {existing}"),
    )
    .with_details(json!({"existing_id": existing}))
}

/// What an idempotent submission answered.
pub enum Submitted {
    Created(Box<ErasureRequest>),
    /// The first answer to the same Idempotency-Key and body, as it was given.
    Replayed {
        status: u16,
        response: serde_json::Value,
    },
}

/// Submits one request under the client's Idempotency-Key: the first submission of a key is
/// inserted and its answer kept with the body's digest, in one transaction; a later one with the
/// same body gets that answer again, with another body a 422. A duplicate of an open request is a
/// 409 and keeps nothing.
pub async fn submit_idempotent(
    state: &App,
    principal: &Principal,
    item: CreateRequest,
    key: &str,
    body: &[u8],
) -> Result<Submitted, ApiError> {
    let (scope, target_id) = (item.scope, item.target_id.clone());
    let new = state
        .prepare(item, crate::telemetry::traceparent().as_deref())
        .map_err(ApiError::fields)?;
    let digest = state.pseudonyms.digest(body);
    let mut tx = state.db.begin().await?;
    if let Some(first) = idempotency::take(&mut tx, principal.key_id, key, &digest).await? {
        if !state.pseudonyms.digests(body).contains(&first.body_digest) {
            return Err(ApiError::client(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different body",
            ));
        }
        return Ok(Submitted::Replayed {
            status: first.status as u16,
            response: first.response,
        });
    }
    // Looked up once a replay is ruled out.
    if let Some(existing) = open_under_old_key(state, scope, &target_id).await? {
        return Err(duplicate(existing));
    }
    let inserted = requests::insert_many(
        &mut tx,
        std::slice::from_ref(&new),
        principal.key_id,
        &principal.actor(),
        None,
        Utc::now(),
    )
    .await
    .map_err(duplicate_race)?;
    let created = match inserted.into_iter().next() {
        Some(Inserted::Created(created)) => created,
        Some(Inserted::DuplicateOf(existing)) => return Err(duplicate(existing)),
        None => return Err(anyhow::anyhow!("intake returned nothing").into()),
    };
    let response = serde_json::to_value(&created).map_err(anyhow::Error::from)?;
    idempotency::accepted(&mut tx, principal.key_id, key, &response).await?;
    tx.commit().await?;
    state.ready.ring();
    Ok(Submitted::Created(created))
}

/// Submits one request without an idempotency key (the API's and the console's one way): it is
/// validated, checked against open requests under older pseudonym key versions, and committed
/// with whatever other single requests arrive meanwhile; the writer wakes the workers. Answers
/// the new request or the open one it duplicates.
pub async fn submit_one(
    state: &App,
    principal: &Principal,
    item: CreateRequest,
) -> Result<Inserted, ApiError> {
    let (scope, target_id) = (item.scope, item.target_id.clone());
    let new = state
        .prepare(item, crate::telemetry::traceparent().as_deref())
        .map_err(ApiError::fields)?;
    if let Some(existing) = open_under_old_key(state, scope, &target_id).await? {
        return Ok(Inserted::DuplicateOf(existing));
    }
    state
        .intake
        .submit(Submission {
            item: new,
            requested_by: principal.key_id,
            actor: principal.actor(),
        })
        .await
        .map_err(duplicate_race)
}

/// The open request of a target recorded under an older pseudonym key version: the same
/// target, though the unique index sees only one version's pseudonyms.
async fn open_under_old_key(
    state: &App,
    scope: Scope,
    target_id: &str,
) -> Result<Option<Uuid>, ApiError> {
    Ok(subjects::open_under_old_keys(state, &[(scope, target_id)])
        .await?
        .pop()
        .flatten())
}

/// Two submissions of one target at the same moment: the loser hits the unique index.
fn duplicate_race(e: store::Error) -> ApiError {
    if requests::lost_race(&e) {
        ApiError::conflict(
            "duplicate_request",
            "an open erasure request for this target was just created",
        )
    } else {
        e.into()
    }
}

/// The outcome of one item of a batch.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchItem {
    /// Position in a JSON array (from 0), or the line number in a CSV file (header is line 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// `created`, `duplicate` or `invalid`.
    pub status: String,
    /// The new request, or the existing open one for a duplicate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<BTreeMap<String, String>>,
}

impl BatchItem {
    /// An item not yet decided, at a JSON index or a CSV line.
    fn at(index: Option<usize>, line: Option<u64>) -> Self {
        Self {
            index,
            line,
            status: String::new(),
            id: None,
            fields: None,
        }
    }

    /// A duplicate of the open request `existing`.
    fn duplicate_of(&mut self, existing: Uuid) {
        self.status = "duplicate".into();
        self.id = Some(existing);
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResult {
    /// Every request created by this call carries this batch id.
    pub batch_id: Uuid,
    pub created: usize,
    pub duplicates: usize,
    pub invalid: usize,
    pub items: Vec<BatchItem>,
}

/// Largest number of items in a batch.
pub const MAX_BATCH: usize = 10_000;

/// Submits parsed batch items (`parse_json_batch`, `parse_csv_batch`): each is validated on its
/// own and every valid one committed in one transaction under a new batch id.
pub async fn submit_batch(
    state: &App,
    principal: &Principal,
    parsed: Parsed,
) -> Result<BatchResult, ApiError> {
    if parsed.is_empty() {
        return Err(ApiError::bad_request(
            "empty_batch",
            "the batch holds no items",
        ));
    }
    let mut items = Vec::with_capacity(parsed.len());
    let mut news = Vec::new();
    let mut targets = Vec::new();
    let mut slots = Vec::new();
    let traceparent = crate::telemetry::traceparent();
    for (mut item, parsed) in parsed {
        let prepared = parsed.and_then(|p| {
            let target = (p.scope, p.target_id.clone());
            state
                .prepare(p, traceparent.as_deref())
                .map(|new| (new, target))
        });
        match prepared {
            Ok((new, target)) => {
                slots.push(items.len());
                news.push(new);
                targets.push(target);
                items.push(item);
            }
            Err(fields) => {
                item.status = "invalid".into();
                item.fields = Some(fields);
                items.push(item);
            }
        }
    }
    // As for one request: a target with an open request recorded under an older pseudonym key
    // version is a duplicate of it (the insert's conflict only sees the current version).
    let targets: Vec<(Scope, &str)> = targets.iter().map(|(s, t)| (*s, t.as_str())).collect();
    let old_duplicates = subjects::open_under_old_keys(state, &targets).await?;
    let (mut to_insert, mut insert_slots) = (Vec::with_capacity(news.len()), Vec::new());
    for ((slot, new), old) in slots.into_iter().zip(news).zip(old_duplicates) {
        match old {
            Some(existing) => items[slot].duplicate_of(existing),
            None => {
                insert_slots.push(slot);
                to_insert.push(new);
            }
        }
    }
    let batch_id = Uuid::new_v4();
    let actor = principal.actor();
    let mut tx = state.db.begin().await?;
    let inserted = requests::insert_many(
        &mut tx,
        &to_insert,
        principal.key_id,
        &actor,
        Some(batch_id),
        Utc::now(),
    )
    .await?;
    tx.commit().await?;
    if inserted.iter().any(|i| matches!(i, Inserted::Created(_))) {
        state.ready.ring();
    }
    for (slot, outcome) in insert_slots.into_iter().zip(inserted) {
        let item = &mut items[slot];
        match outcome {
            Inserted::Created(request) => {
                item.status = "created".into();
                item.id = Some(request.id);
            }
            Inserted::DuplicateOf(id) => item.duplicate_of(id),
        }
    }
    let count = |status: &str| items.iter().filter(|i| i.status == status).count();
    let (created, duplicates, invalid) = (count("created"), count("duplicate"), count("invalid"));
    Ok(BatchResult {
        batch_id,
        created,
        duplicates,
        invalid,
        items,
    })
}

/// Batch items as read, each with its parsed request or why it is invalid.
pub type Parsed = Vec<(BatchItem, Result<CreateRequest, BTreeMap<String, String>>)>;

fn too_many() -> ApiError {
    ApiError::client(
        StatusCode::PAYLOAD_TOO_LARGE,
        "batch_too_large",
        format!("a batch holds at most {MAX_BATCH} items; split it"),
    )
}

fn invalid_fields(e: ApiError) -> BTreeMap<String, String> {
    match e {
        ApiError::Invalid { fields, .. } => fields,
        other => BTreeMap::from([("item".to_string(), other.to_string())]),
    }
}

pub fn parse_json_batch(bytes: &[u8]) -> Result<Parsed, ApiError> {
    let values: Vec<serde_json::Value> = input::json(bytes).map_err(|_| {
        ApiError::bad_request(
            "invalid_json",
            "the body must be a JSON array of erasure requests",
        )
    })?;
    if values.len() > MAX_BATCH {
        return Err(too_many());
    }
    Ok(values
        .into_iter()
        .enumerate()
        .map(|(index, value)| {
            let item = BatchItem::at(Some(index), None);
            let parsed = if value.is_object() {
                input::from_value::<CreateRequest>(value).map_err(invalid_fields)
            } else {
                Err(BTreeMap::from([(
                    "item".to_string(),
                    "must be a JSON object".to_string(),
                )]))
            };
            (item, parsed)
        })
        .collect())
}

pub fn parse_csv_batch(bytes: &[u8]) -> Result<Parsed, ApiError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(bytes);
    let headers = reader
        .headers()
        .map_err(|_| {
            ApiError::bad_request(
                "invalid_csv",
                "the CSV header line cannot be read (is it UTF-8?)",
            )
        })?
        .clone();
    let column = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let known = ["scope", "target_id", "external_reference", "not_before"];
    if let Some(unknown) = headers
        .iter()
        .find(|h| !known.iter().any(|k| h.eq_ignore_ascii_case(k)))
    {
        let shown = if validate::safe_to_echo(unknown) {
            unknown
        } else {
            "(unnamed column)"
        };
        return Err(ApiError::field(
            format!("csv.{shown}"),
            "unknown column; expected scope,target_id[,external_reference][,not_before]",
        ));
    }
    let (Some(scope_col), Some(target_col)) = (column("scope"), column("target_id")) else {
        return Err(ApiError::bad_request(
            "invalid_csv",
            "the CSV header must name the columns scope and target_id",
        ));
    };
    let (ext_col, nb_col) = (column("external_reference"), column("not_before"));
    // The line a record starts on (the header is line 1), counted in the bytes: csv's own count
    // starts a record where the previous one stopped, a line early after CRLF or a blank line.
    let mut counted = (0usize, 1u64);
    let mut line_at = |position: Option<&csv::Position>| -> u64 {
        let Some(position) = position else { return 0 };
        let mut start = usize::try_from(position.byte())
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        while start < bytes.len() && matches!(bytes[start], b'\r' | b'\n') {
            start += 1;
        }
        if start > counted.0 {
            counted.1 += bytes[counted.0..start]
                .iter()
                .filter(|b| **b == b'\n')
                .count() as u64;
            counted.0 = start;
        }
        counted.1
    };
    let mut out = Vec::new();
    for record in reader.records() {
        if out.len() >= MAX_BATCH {
            return Err(too_many());
        }
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = line_at(e.position());
                let item = BatchItem::at(None, Some(line));
                out.push((
                    item,
                    Err(BTreeMap::from([(
                        "line".to_string(),
                        "unreadable CSV record".to_string(),
                    )])),
                ));
                continue;
            }
        };
        let line = line_at(record.position());
        let item = BatchItem::at(None, Some(line));
        let get = |col: Option<usize>| col.and_then(|c| record.get(c)).filter(|v| !v.is_empty());
        let mut fields = BTreeMap::new();
        let scope = match get(Some(scope_col)) {
            Some(s) => Scope::parse(s).or_else(|| {
                fields.insert("scope".into(), "must be user, connection or account".into());
                None
            }),
            None => {
                fields.insert("scope".into(), "is required".into());
                None
            }
        };
        let not_before = match get(nb_col) {
            None => None,
            Some(t) => DateTime::parse_from_rfc3339(t)
                .map(|d| d.with_timezone(&Utc))
                .map_err(|_| {
                    fields.insert("not_before".into(), "must be an RFC 3339 time".into());
                })
                .ok(),
        };
        let result = match (scope, fields.is_empty()) {
            (Some(scope), true) => Ok(CreateRequest {
                scope,
                target_id: get(Some(target_col)).unwrap_or("").to_string(),
                external_reference: get(ext_col).map(str::to_string),
                not_before,
            }),
            _ => Err(fields),
        };
        out.push((item, result));
    }
    Ok(out)
}

/// Filters and paging of the list.
#[derive(Debug, Deserialize, IntoParams, Default)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    pub state: Option<State>,
    pub scope: Option<Scope>,
    /// Received at or after this time.
    pub received_from: Option<DateTime<Utc>>,
    /// Received before this time.
    pub received_to: Option<DateTime<Utc>>,
    pub due_from: Option<DateTime<Utc>>,
    pub due_to: Option<DateTime<Utc>>,
    /// Only open requests past their due date.
    pub overdue: Option<bool>,
    /// Only open requests due within this many days (overdue ones included).
    #[param(maximum = 3660)]
    pub due_within_days: Option<u32>,
    /// Only open requests at risk: due within `ERASURE_AT_RISK_DAYS` (default 7) days and not
    /// yet overdue.
    pub at_risk: Option<bool>,
    pub batch_id: Option<Uuid>,
    /// Only requests with this `external_reference`.
    #[param(max_length = 128)]
    pub external_reference: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// 1 to 500, default 50.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RequestPage {
    pub items: Vec<ErasureRequest>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

fn parse_cursor(text: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let (micros, id) = text.split_once('_')?;
    let at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
    validate::timestamp(at).ok()?;
    Some((at, Uuid::parse_str(id).ok()?))
}

/// A page of the list: filters validated as the API documents them.
pub async fn list_page(state: &App, q: ListQuery) -> Result<RequestPage, ApiError> {
    let limit = input::page_limit(q.limit, 50, 500)?;
    let filter = list_filter(state, q, limit as i64 + 1)?;
    let mut items = requests::list(&state.db, &filter).await?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items
            .last()
            .map(|r| format!("{}_{}", r.received_at.timestamp_micros(), r.id))
    } else {
        None
    };
    Ok(RequestPage { items, next_cursor })
}

/// The store's filter of a list query (its `limit` aside), validated as the API documents it;
/// at most `limit` rows.
pub fn list_filter(state: &App, q: ListQuery, limit: i64) -> Result<ListFilter, ApiError> {
    let after = match q.cursor.as_deref() {
        None => None,
        Some(c) => Some(
            parse_cursor(c)
                .ok_or_else(|| ApiError::field("cursor", "is not a cursor this service issued"))?,
        ),
    };
    for (name, t) in [
        ("received_from", q.received_from),
        ("received_to", q.received_to),
        ("due_from", q.due_from),
        ("due_to", q.due_to),
    ] {
        if let Some(t) = t {
            validate::timestamp(t).map_err(|why| ApiError::field(name, why))?;
        }
    }
    if q.due_within_days.is_some_and(|d| d > 3660) {
        return Err(ApiError::field("due_within_days", "must be at most 3660"));
    }
    let now = Utc::now();
    let mut due_to = q.due_to;
    let mut open_only = false;
    if q.overdue == Some(true) {
        due_to = Some(due_to.map_or(now, |d| d.min(now)));
        open_only = true;
    }
    if let Some(days) = q.due_within_days {
        let horizon = now + chrono::Duration::days(days as i64);
        due_to = Some(due_to.map_or(horizon, |d| d.min(horizon)));
        open_only = true;
    }
    let filter = ListFilter {
        state: q.state,
        scope: q.scope,
        received_from: q.received_from,
        received_to: q.received_to,
        due_from: q.due_from,
        due_to,
        open_only,
        at_risk_days: (q.at_risk == Some(true)).then_some(state.at_risk_days),
        batch_id: q.batch_id,
        external_reference: q.external_reference,
        after,
        limit,
    };
    Ok(filter)
}

/// The body of hold.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldBody {
    /// GDPR Art. 17(3) ground: art17_3_a .. art17_3_e.
    #[serde(deserialize_with = "input::from_string")]
    pub legal_basis: LegalBasis,
    /// Why, in a few words (no personal data).
    #[schema(min_length = 1, max_length = 500)]
    pub note: String,
}

/// The body of extend.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendBody {
    /// 1 or 2; at most 2 months in total (3 months with the first).
    #[schema(minimum = 1, maximum = 2)]
    pub months: u32,
    #[schema(min_length = 1, max_length = 500)]
    pub reason: String,
}

/// Optional body of approve, cancel, retry and release.
#[derive(Debug, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct NoteBody {
    /// An optional note for the audit log (no personal data).
    #[schema(min_length = 1, max_length = 500)]
    pub note: Option<String>,
}

/// An action by its name in the path.
pub fn action_named(name: &str) -> Result<Action, ApiError> {
    name.parse()
        .map_err(|_| ApiError::not_found("action (approve, cancel, retry, hold, release, extend)"))
}

/// An action's JSON body, validated: `HoldBody` for hold, `ExtendBody` for extend, an optional
/// `NoteBody` otherwise.
pub fn action_details(action: Action, bytes: &[u8]) -> Result<Details, ApiError> {
    let note = |text: &str, field: &str| {
        validate::free_text(text, 500).map_err(|why| ApiError::field(field, why))
    };
    Ok(match action {
        Action::Hold => {
            let body: HoldBody = input::json_object(bytes)?;
            Details {
                legal_basis: Some(body.legal_basis),
                note: Some(note(&body.note, "note")?),
                ..Details::default()
            }
        }
        Action::Extend => {
            let body: ExtendBody = input::json_object(bytes)?;
            if !(1..=2).contains(&body.months) {
                return Err(ApiError::field("months", "must be 1 or 2"));
            }
            Details {
                legal_basis: None,
                note: Some(note(&body.reason, "reason")?),
                months: Some(body.months),
                ..Details::default()
            }
        }
        _ => {
            let body: NoteBody = input::json_or_default(bytes)?;
            Details {
                note: body.note.as_deref().map(|n| note(n, "note")).transpose()?,
                ..Details::default()
            }
        }
    })
}

/// Applies a validated action for `principal`, who must hold one of `Action::roles` (403
/// otherwise), and answers the request as it now is.
pub async fn perform(
    state: &App,
    principal: &Principal,
    id: Uuid,
    action: Action,
    details: Details,
) -> Result<ErasureRequest, ApiError> {
    super::auth::require(principal, action.roles())?;
    let ask = Ask {
        action,
        actor: Who::of(principal.key_id, principal.person),
        key: principal.key_id,
        policy: state.approval,
        details,
    };
    match requests::act(&state.db, id, &ask, state.at_risk_days).await? {
        // These make the request's paused or failed step ready again.
        Ok(State::Queued | State::InProgress)
            if matches!(action, Action::Approve | Action::Release | Action::Retry) =>
        {
            state.ready.ring()
        }
        Ok(_) => {}
        Err(Refusal::NotFound) => return Err(ApiError::not_found("erasure request")),
        Err(Refusal::Denied(refusal)) => return Err(refused(action, refusal)),
    }
    get(state, id).await
}

/// One request with its steps, or 404.
pub async fn get(state: &App, id: Uuid) -> Result<ErasureRequest, ApiError> {
    requests::get(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("erasure request"))
}

/// The answer to an action the domain refused.
pub fn refused(action: Action, refusal: actions::Refusal) -> ApiError {
    use actions::Refusal::*;
    match refusal {
        InvalidTransition(from) => ApiError::conflict(
            "invalid_transition",
            format!(
                "cannot {} a request that is {}",
                action.as_str(),
                from.as_str()
            ),
        )
        .with_details(json!({"state": from})),
        DeletionSent(_) => ApiError::conflict(
            "deletion_sent",
            format!(
                "cannot {} this request: its deletion was already sent to the aggregator",
                action.as_str()
            ),
        )
        .with_details(json!({"state": State::InProgress})),
        ApproverIsRequester(_) => ApiError::client(
            StatusCode::FORBIDDEN,
            "approver_is_requester",
            format!(
                "a second person must {}: this key submitted the request",
                action.as_str()
            ),
        ),
        LegalBasisRequired => ApiError::field("legal_basis", "a hold names its legal basis"),
        ExtensionTooLong { already } => ApiError::field(
            "months",
            format!("at most 2 months of extension in total; {already} already granted"),
        ),
    }
}

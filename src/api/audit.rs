//! `/v1/audit/*` and receipts: the tamper-evident log, its checkpoints and proofs, exports.
//!
//! Handlers only: the log's SQL is `store::audit`/`store::tree`'s, its proofs `audit::log`'s. Never
//! serves an entry to a role other than auditor or admin.

use std::ops::Range;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, get, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::auth::Caller;
use super::error::ErrorBody;
use super::input;
use crate::app::error::ApiError;
use crate::audit::log;
use crate::audit::receipt::{self as receipts, NoReceipt};
use crate::audit::report::{self as page, Report};
use crate::audit::retention;
use crate::domain::Role;
use crate::store;
use crate::store::audit::{HashedLeaf, Leaf};

const AUDITORS: &[Role] = &[Role::Auditor];

/// The newest signed checkpoint of the audit log.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckpointView {
    /// Number of entries (leaves) the checkpoint covers.
    pub size: u64,
    /// Merkle root (RFC 9162), base64.
    pub root_hash: String,
    /// The signed note (C2SP tlog-checkpoint), verifiable with the public key.
    pub note: String,
    pub created_at: DateTime<Utc>,
    /// The verifier key (C2SP vkey) that signs checkpoints.
    pub public_key: String,
}

/// The newest signed checkpoint (signing a new one first if the log grew).
#[utoipa::path(get, path = "/v1/audit/checkpoint", tag = "audit",
    responses((status = 200, body = CheckpointView), (status = 404, description = "The log is empty", body = ErrorBody)),
    security(("bearer" = [])))]
#[get("/v1/audit/checkpoint")]
pub async fn checkpoint(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    caller.require(AUDITORS)?;
    let cp = state
        .audit
        .sync(true)
        .await?
        .ok_or_else(|| ApiError::not_found("checkpoint (the log is empty)"))?;
    Ok(HttpResponse::Ok().json(CheckpointView {
        size: cp.size,
        root_hash: STANDARD.encode(cp.root),
        note: cp.note,
        created_at: cp.created_at,
        public_key: state.audit.signer().verifier_key(),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ConsistencyQuery {
    /// The older tree size.
    pub from: u64,
    /// The newer tree size (default: the newest checkpoint).
    pub to: Option<u64>,
}

/// A consistency proof between two sizes of the log (RFC 9162 2.1.4).
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsistencyView {
    pub from: u64,
    pub to: u64,
    /// Base64 hashes.
    pub proof: Vec<String>,
}

/// Proves that the log of size `to` extends the log of size `from`.
#[utoipa::path(get, path = "/v1/audit/consistency", tag = "audit", params(ConsistencyQuery),
    responses((status = 200, body = ConsistencyView), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
#[get("/v1/audit/consistency")]
pub async fn consistency(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    caller.require(AUDITORS)?;
    let q: ConsistencyQuery = input::query(&req)?;
    let newest = log::latest(&state.db).await?.map_or(0, |c| c.size);
    let to = q.to.unwrap_or(newest);
    if to > newest {
        return Err(ApiError::field(
            "to",
            format!("must be at most the newest checkpoint's size ({newest})"),
        ));
    }
    if q.from == 0 || q.from > to {
        return Err(ApiError::field("from", "must be between 1 and `to`"));
    }
    let proof = log::consistency_proof(&state.db, q.from, to)
        .await?
        .iter()
        .map(|h| STANDARD.encode(h))
        .collect();
    Ok(HttpResponse::Ok().json(ConsistencyView {
        from: q.from,
        to,
        proof,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EntriesQuery {
    /// Only the entries of this request.
    pub request_id: Option<uuid::Uuid>,
    /// Entries with a leaf index above this.
    pub after: Option<u64>,
    /// 1 to 1000, default 100.
    pub limit: Option<u32>,
}

/// Audit log entries (sequenced leaves), oldest first. No personal data: pseudonyms, request
/// ids, key ids, counts.
#[utoipa::path(get, path = "/v1/audit/entries", tag = "audit", params(EntriesQuery),
    responses((status = 200, description = "`{entries: [{leaf_index, entry}], next_after}`"), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
#[get("/v1/audit/entries")]
pub async fn entries(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    caller.require(AUDITORS)?;
    let q: EntriesQuery = input::query(&req)?;
    let limit = crate::app::input::page_limit(q.limit, 100, 1000)?;
    let after = q.after.map_or(-1, |a| a.min(i64::MAX as u64) as i64);
    let leaves = store::audit::leaves_after(&state.db, after, q.request_id, limit as i64).await?;
    let next_after = (leaves.len() == limit as usize)
        .then(|| leaves.last().map(|l| l.leaf_index))
        .flatten();
    let entries: Vec<Value> = leaves
        .into_iter()
        .map(|l| json!({"leaf_index": l.leaf_index, "entry": serde_json::from_str::<Value>(&l.leaf).unwrap_or(Value::Null)}))
        .collect();
    Ok(HttpResponse::Ok().json(json!({"entries": entries, "next_after": next_after})))
}

/// The receipt of a completed erasure: its audit entries, their inclusion proofs and a signed
/// checkpoint. Verify it offline with `erasure audit verify --receipt F --public-key K`.
#[utoipa::path(get, path = "/v1/erasure-requests/{id}/receipt", tag = "audit",
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 200, description = "The receipt (format erasure-receipt/v1)"),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The request is not completed, or not sealed in a checkpoint yet", body = ErrorBody),
    ),
    security(("bearer" = [])))]
#[get("/v1/erasure-requests/{id}/receipt")]
pub async fn receipt(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(AUDITORS)?;
    let id = crate::app::input::path_id(&path)?;
    match receipts::build(&state.db, &state.audit, id).await {
        Ok(body) => Ok(HttpResponse::Ok().json(body)),
        Err(NoReceipt::NotFound) => Err(ApiError::not_found("erasure request")),
        Err(NoReceipt::NotCompleted(now)) => Err(ApiError::conflict(
            "receipt_not_available",
            format!(
                "the request is {}; a receipt proves a completed erasure",
                now.as_str()
            ),
        )),
        Err(NoReceipt::NotSealed) => Err(ApiError::client(
            StatusCode::CONFLICT,
            "not_sealed_yet",
            "some entries of this request are not in a signed checkpoint yet; try again in a few seconds",
        )),
        Err(NoReceipt::Failed(e)) => Err(ApiError::Internal(e)),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// Entries at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Entries before this time.
    pub to: Option<DateTime<Utc>>,
    /// `jsonl` (default; verifiable with `erasure audit verify --export`) or `csv`.
    pub format: Option<String>,
}

/// Leaves read per round trip while streaming an export.
const EXPORT_CHUNK: i64 = 2_000;

/// Export the audit log, streamed. JSON Lines start with a header carrying the signed
/// checkpoint and a range proof, so the export verifies offline; the range is the contiguous run
/// of leaves from the first to the last entry in the time window (entries are sequenced in commit
/// order, so a few neighbours from just outside the window may be included).
#[utoipa::path(get, path = "/v1/audit/export", tag = "audit", params(ExportQuery),
    responses((status = 200, description = "JSON Lines (erasure-export/v1) or CSV"), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
#[get("/v1/audit/export")]
pub async fn export(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    caller.require(AUDITORS)?;
    let q: ExportQuery = input::query(&req)?;
    let csv = match q.format.as_deref() {
        None | Some("jsonl") => false,
        Some("csv") => true,
        Some(_) => return Err(ApiError::field("format", "must be jsonl or csv")),
    };
    for (name, t) in [("from", q.from), ("to", q.to)] {
        if let Some(t) = t {
            crate::domain::validate::timestamp(t).map_err(|why| ApiError::field(name, why))?;
        }
    }
    let cp = state.audit.sync(true).await?;
    let size = cp.as_ref().map_or(0, |c| c.size);
    let Range { start, end } =
        store::audit::leaf_range(&state.db, size as i64, q.from, q.to).await?;
    let head = if csv {
        "leaf_index,at,request_id,subject_ref,actor,event,data,leaf_sha256\n".to_string()
    } else {
        let proof: Vec<String> = log::range_proof(&state.db, start as u64, end as u64, size)
            .await?
            .iter()
            .map(|h| STANDARD.encode(h))
            .collect();
        let header = json!({
            "format": "erasure-export/v1", "start": start, "end": end, "size": size,
            "checkpoint": cp.as_ref().map(|c| c.note.clone()), "range_proof": proof,
        });
        format!("{header}\n")
    };
    let db = state.db.clone();
    let body = futures::stream::unfold(Some((start, Some(head))), move |cursor| {
        let db = db.clone();
        async move {
            let (next, head) = cursor?;
            if let Some(head) = head {
                return Some((Ok(web::Bytes::from(head)), Some((next, None))));
            }
            if next >= end {
                return None;
            }
            let rows = match store::audit::leaves_in(&db, next..end, EXPORT_CHUNK).await {
                Ok(rows) if !rows.is_empty() => rows,
                Ok(_) => return None,
                Err(e) => {
                    tracing::error!(error = %e, "export stream failed");
                    return Some((
                        Err(actix_web::error::ErrorInternalServerError("export failed")),
                        None,
                    ));
                }
            };
            let last = rows.last().map_or(next, |r| r.leaf.leaf_index) + 1;
            let mut chunk = String::new();
            for HashedLeaf {
                leaf: Leaf { leaf_index, leaf },
                leaf_hash,
            } in rows
            {
                if csv {
                    match csv_line(leaf_index, &leaf, &leaf_hash) {
                        Ok(line) => chunk.push_str(&line),
                        // A leaf that cannot be written fails the stream: never a blank row.
                        Err(e) => {
                            tracing::error!(leaf_index, error = %e, "export stream failed");
                            return Some((
                                Err(actix_web::error::ErrorInternalServerError("export failed")),
                                None,
                            ));
                        }
                    }
                } else {
                    chunk.push_str(&json!({"leaf_index": leaf_index, "leaf": leaf}).to_string());
                    chunk.push('\n');
                }
            }
            Some((Ok(web::Bytes::from(chunk)), Some((last, None))))
        }
    });
    let content_type = if csv {
        "text/csv; charset=utf-8"
    } else {
        "application/x-ndjson"
    };
    // A browser saves it as a file (curl ignores this).
    let file = if csv {
        "audit-export.csv"
    } else {
        "audit-export.jsonl"
    };
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((
            "Content-Disposition",
            format!("attachment; filename=\"{file}\""),
        ))
        .insert_header(("X-Checkpoint-Size", size.to_string()))
        .streaming(body))
}

/// One leaf as a CSV row; an error when the leaf is not JSON (the log holds only JSON leaves).
fn csv_line(index: i64, leaf: &str, hash: &[u8]) -> anyhow::Result<String> {
    let entry: Value = serde_json::from_str(leaf)?;
    let field = |name: &str| match &entry[name] {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut writer = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(vec![]);
    writer.write_record([
        index.to_string(),
        field("at"),
        field("request_id"),
        field("subject_ref"),
        field("actor"),
        field("event"),
        field("data"),
        hex::encode(hash),
    ])?;
    Ok(String::from_utf8(writer.into_inner()?)?)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// Start of the period, RFC 3339 (default: 30 days before `to`).
    pub from: Option<DateTime<Utc>>,
    /// End of the period, excluded, RFC 3339 (default: now). At most 366 days after `from`.
    pub to: Option<DateTime<Utc>>,
}

/// The compliance report of a period, a page to hand to an auditor: requests received,
/// completed, failed, on hold and overdue; time to completion (median, 95th percentile, worst)
/// against the one-month deadline; a chart of daily volumes and completion times; the signed
/// checkpoint at the end of the period. Self-contained HTML (inline CSS and SVG, no script); no
/// personal data.
#[utoipa::path(get, path = "/v1/audit/report", tag = "audit", params(ReportQuery),
    responses(
        (status = 200, description = "The report, a self-contained HTML page", content_type = "text/html", body = String),
        (status = 422, description = "Invalid `from` or `to`", body = ErrorBody),
    ),
    security(("bearer" = [])))]
#[get("/v1/audit/report")]
pub async fn report(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    caller.require(AUDITORS)?;
    let q: ReportQuery = input::query(&req)?;
    for (name, t) in [("from", q.from), ("to", q.to)] {
        if let Some(t) = t {
            crate::domain::validate::timestamp(t).map_err(|why| ApiError::field(name, why))?;
        }
    }
    let now = Utc::now();
    let to = q.to.unwrap_or(now);
    let from = q.from.unwrap_or(to - chrono::Duration::days(30));
    if from >= to {
        return Err(ApiError::field("from", "must be before `to`"));
    }
    if to - from > chrono::Duration::days(366) {
        return Err(ApiError::field(
            "to",
            "must be at most 366 days after `from`",
        ));
    }
    let figures = store::audit::report_figures(&state.db, from, to).await?;
    let sealed = if to >= now {
        state.audit.sync(true).await?
    } else {
        log::latest_before(&state.db, to).await?
    };
    let mut acted: Vec<(uuid::Uuid, Vec<String>)> = Vec::new();
    for (person, event, n) in store::audit::people_actions(&state.db, from, to).await? {
        match acted.last_mut() {
            Some((p, events)) if *p == person => events.push(format!("{event} {n}")),
            _ => acted.push((person, vec![format!("{event} {n}")])),
        }
    }
    let ids: Vec<uuid::Uuid> = acted.iter().map(|(p, _)| *p).collect();
    let names = store::people::names(&state.db, &ids).await?;
    let people = acted
        .into_iter()
        .map(|(p, events)| {
            (
                names.get(&p).cloned().unwrap_or_default(),
                store::audit::person_actor(p),
                events.join(", "),
            )
        })
        .collect();
    let html = page::render(&Report {
        people,
        from,
        to,
        generated_at: now,
        figures,
        checkpoint: sealed,
        public_key: state.audit.signer().verifier_key(),
        retention: retention::statement(
            state.retention_days,
            &store::epochs::figures(&state.db).await?,
        ),
    });
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((
            "Content-Security-Policy",
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
        ))
        .insert_header(("Cache-Control", "no-store"))
        .body(html))
}

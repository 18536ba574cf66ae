//! Requests in the console: the list with its filters and paging, the look-up by target (posted,
//! hashed in memory, never echoed), submission of one request or of a CSV/JSON file, a request's
//! page with its timeline and the actions its role may take, each confirmed on a page of its own.

use actix_multipart::Multipart;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use askama::Template;
use futures::StreamExt;
use uuid::Uuid;

use super::dashboard::DueRow;
use super::session::{self, Form, Session, field};
use super::{Chrome, Failure, filters, html, render, see_other};
use crate::api::AppState;
use crate::app::auth::{READERS, allowed};
use crate::app::error::ApiError;
use crate::app::requests::{self as app, CreateRequest, ListQuery, action_named};
use crate::app::subjects::{self, LookupBody, LookupResult};
use crate::domain::{Action, LegalBasis, Role, Scope, State};
use crate::store;
use crate::store::requests::{ErasureRequest, Inserted};

const STATES: [State; 7] = State::ALL;
const SCOPES: [Scope; 3] = [Scope::User, Scope::Connection, Scope::Account];

#[derive(Template)]
#[template(path = "requests.html")]
struct ListPage {
    chrome: Chrome,
    states: Vec<&'static str>,
    scopes: Vec<&'static str>,
    /// The filters as given (non-empty fields only).
    given: Vec<(String, String)>,
    rows: Vec<DueRow>,
    next: Option<String>,
    /// The actions this role may take on every request the filters match (`/requests/bulk`).
    bulk_actions: Vec<&'static str>,
}

impl ListPage {
    fn value(&self, name: &str) -> &str {
        self.given
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    fn checked(&self, name: &str) -> bool {
        self.value(name) == "true"
    }
}

/// The list of requests with its filters (the API's `ListQuery`, by the same names).
#[get("/requests")]
pub async fn list(
    state: web::Data<AppState>,
    req: HttpRequest,
    session: Session,
) -> Result<HttpResponse, Failure> {
    session.require(READERS)?;
    // Empty fields of the filter form mean "any".
    let given: Vec<(String, String)> = form_urlencoded::parse(req.query_string().as_bytes())
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(k, v)| (k.into_owned(), v.trim().to_string()))
        .collect();
    let query_text = serde_urlencoded::to_string(&given).map_err(anyhow::Error::from)?;
    let q: ListQuery = crate::app::input::query_str(&query_text)?;
    let page = app::list_page(&state, q).await?;
    let now = chrono::Utc::now();
    let rows = page
        .items
        .iter()
        .map(|r| DueRow {
            step: current_step(r),
            ..DueRow::new(
                r.id,
                r.scope.as_str(),
                r.state.as_str(),
                r.received_at,
                r.due_at,
                now,
            )
        })
        .collect();
    let next = page.next_cursor.map(|cursor| {
        let mut pairs: Vec<(String, String)> = given
            .iter()
            .filter(|(k, _)| k != "cursor")
            .cloned()
            .collect();
        pairs.push(("cursor".into(), cursor));
        format!(
            "/requests?{}",
            serde_urlencoded::to_string(&pairs).unwrap_or_default()
        )
    });
    let bulk_actions = ACTIONS
        .into_iter()
        .filter(|a| allowed(&session.principal, a.roles()))
        .map(Action::as_str)
        .collect();
    let given = given.into_iter().filter(|(k, _)| k != "cursor").collect();
    render(&ListPage {
        chrome: session.chrome("Requests"),
        states: STATES.iter().map(|s| s.as_str()).collect(),
        scopes: SCOPES.iter().map(|s| s.as_str()).collect(),
        given,
        rows,
        next,
        bulk_actions,
    })
}

/// The step an open request is at.
fn current_step(r: &ErasureRequest) -> &'static str {
    if !State::OPEN.contains(&r.state) {
        return "";
    }
    r.steps
        .iter()
        .find(|s| !matches!(s.state, crate::domain::StepState::Succeeded))
        .map_or("", |s| s.kind.as_str())
}

#[derive(Template)]
#[template(path = "lookup.html")]
struct LookupPage {
    chrome: Chrome,
    scope: &'static str,
    found: LookupResult,
}

/// The look-up by target: the id comes in this form's body, is hashed into its pseudonyms in
/// memory, and is neither stored, logged nor shown.
#[post("/requests/search")]
pub async fn search(
    state: web::Data<AppState>,
    Form { session, fields }: Form,
) -> Result<HttpResponse, Failure> {
    session.require(READERS)?;
    let scope = scope_field(&fields)?;
    let found = subjects::find(
        &state,
        LookupBody {
            scope,
            target_id: field(&fields, "target_id").unwrap_or("").to_string(),
        },
    )
    .await?;
    render(&LookupPage {
        chrome: session.chrome("Look-up"),
        scope: scope.as_str(),
        found,
    })
}

fn scope_field(fields: &[(String, String)]) -> Result<Scope, Failure> {
    field(fields, "scope")
        .and_then(Scope::parse)
        .ok_or_else(|| {
            Failure(ApiError::field(
                "scope",
                "must be user, connection or account",
            ))
        })
}

#[derive(Template)]
#[template(path = "submit.html")]
struct SubmitPage {
    chrome: Chrome,
    scopes: Vec<&'static str>,
}

/// The forms to submit one erasure or a file of them.
#[get("/requests/new")]
pub async fn new_form(session: Session) -> Result<HttpResponse, Failure> {
    session.require(&[Role::Requester])?;
    render(&SubmitPage {
        chrome: session.chrome("Submit"),
        scopes: SCOPES.iter().map(|s| s.as_str()).collect(),
    })
}

#[derive(Template)]
#[template(path = "duplicate.html")]
struct DuplicatePage {
    chrome: Chrome,
    existing: Uuid,
}

/// Submits one erasure (as `POST /v1/erasure-requests` without an idempotency key).
#[post("/requests/new")]
pub async fn submit(
    state: web::Data<AppState>,
    Form { session, fields }: Form,
) -> Result<HttpResponse, Failure> {
    let principal = session.require(&[Role::Requester])?;
    let not_before = match field(&fields, "not_before") {
        None => None,
        Some(text) => Some(
            chrono::DateTime::parse_from_rfc3339(text)
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|_| ApiError::field("not_before", "must be an RFC 3339 time"))?,
        ),
    };
    let item = CreateRequest {
        scope: scope_field(&fields)?,
        target_id: field(&fields, "target_id").unwrap_or("").to_string(),
        external_reference: field(&fields, "external_reference").map(str::to_string),
        not_before,
    };
    match app::submit_one(&state, principal, item).await? {
        Inserted::Created(created) => Ok(see_other(&format!(
            "/requests/{}?done=submitted",
            created.id
        ))),
        Inserted::DuplicateOf(existing) => {
            let page = DuplicatePage {
                chrome: session.chrome("Duplicate"),
                existing,
            };
            Ok(html(
                StatusCode::CONFLICT,
                page.render().map_err(anyhow::Error::from)?,
            ))
        }
    }
}

/// Reads the upload form: its CSRF token and its file (at most the API's batch body).
async fn read_upload(mut form: Multipart) -> Result<(Option<String>, Vec<u8>), Failure> {
    let (mut csrf, mut file) = (None, Vec::new());
    while let Some(part) = form.next().await {
        let mut part = part.map_err(|e| ApiError::bad_request("invalid_form", e.to_string()))?;
        let name = part.name().unwrap_or("").to_string();
        let mut bytes = Vec::new();
        while let Some(chunk) = part.next().await {
            let chunk = chunk.map_err(|e| ApiError::bad_request("invalid_form", e.to_string()))?;
            if bytes.len() + chunk.len() > crate::api::input::MAX_BATCH_BODY {
                return Err(Failure(ApiError::client(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "file_too_large",
                    "the file is larger than 16 MiB; split it",
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        match name.as_str() {
            "csrf" => csrf = Some(String::from_utf8_lossy(&bytes).into_owned()),
            "file" => file = bytes,
            _ => {}
        }
    }
    Ok((csrf, file))
}

/// Submits a CSV or JSON file of up to 10,000 erasures (as `POST /v1/erasure-requests/batch`),
/// and shows each line's outcome.
#[post("/requests/upload")]
pub async fn upload(
    state: web::Data<AppState>,
    req: HttpRequest,
    session: Session,
    form: Multipart,
) -> Result<HttpResponse, Failure> {
    // The origin first: a cross-site post is refused before its body is read.
    session::same_origin(&req)?;
    let (csrf, file) = read_upload(form).await?;
    session.check_form(&req, csrf.as_deref())?;
    let principal = session.require(&[Role::Requester])?;
    let json = file.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    let parsed = if json {
        app::parse_json_batch(&file)?
    } else {
        app::parse_csv_batch(&file)?
    };
    let result = app::submit_batch(&state, principal, parsed).await?;
    let op = crate::app::bulk::record_upload(&state, principal, &result).await?;
    super::bulk::upload_result(&state, session, op).await
}

/// A step as the request page shows it.
struct StepRow {
    kind: &'static str,
    state: &'static str,
    attempts: i32,
    last_error: String,
    run_at: String,
}

#[derive(Template)]
#[template(path = "request.html")]
struct RequestPage {
    chrome: Chrome,
    r: ErasureRequest,
    done: Option<&'static str>,
    steps: Vec<StepRow>,
    events: Vec<crate::store::audit::Event>,
    actions: Vec<&'static str>,
    re_erasures: Vec<(Uuid, State)>,
    may_receipt: bool,
    may_restore: bool,
}

fn request_id(text: &str) -> Result<Uuid, Failure> {
    Ok(crate::app::input::path_id(text)?)
}

async fn request_or_404(state: &AppState, id: Uuid) -> Result<ErasureRequest, Failure> {
    Ok(app::get(state, id).await?)
}

/// Every action, in the order pages offer them.
const ACTIONS: [Action; 6] = [
    Action::Approve,
    Action::Hold,
    Action::Release,
    Action::Extend,
    Action::Retry,
    Action::Cancel,
];

/// The actions `principal` may take on a request in `now`.
fn actions_for(principal: &crate::store::keys::Principal, now: State) -> Vec<Action> {
    ACTIONS
        .into_iter()
        .filter(|a| allowed(principal, a.roles()) && a.allowed_from().contains(&now))
        .collect()
}

/// One request: its facts, steps, timeline from the audit log, linked re-erasures, the receipt
/// and the actions this role may take.
#[get("/requests/{id}")]
pub async fn detail(
    state: web::Data<AppState>,
    req: HttpRequest,
    session: Session,
    path: web::Path<String>,
) -> Result<HttpResponse, Failure> {
    session.require(READERS)?;
    let id = request_id(&path)?;
    let r = request_or_404(&state, id).await?;
    let done = form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "done")
        .and_then(|(_, v)| match v.as_ref() {
            "submitted" => Some("Submitted."),
            "approve" => Some("Approved."),
            "hold" => Some("Placed on hold."),
            "release" => Some("Released."),
            "extend" => Some("Extended."),
            "retry" => Some("Retried."),
            "cancel" => Some("Cancelled."),
            _ => None,
        });
    let steps = r
        .steps
        .iter()
        .map(|s| StepRow {
            kind: s.kind.as_str(),
            state: s.state.as_str(),
            attempts: s.attempts,
            last_error: s.last_error.clone().unwrap_or_default(),
            run_at: s.run_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        })
        .collect();
    let mut events = store::audit::events_of(&state.db, id).await?;
    super::name_people(&state, events.iter_mut().map(|e| &mut e.actor)).await?;
    let re_erasures = store::requests::re_erasures_of(&state.db, id).await?;
    let actions = actions_for(&session.principal, r.state)
        .into_iter()
        .map(Action::as_str)
        .collect();
    render(&RequestPage {
        chrome: session.chrome(format!("Request {id}")),
        done,
        steps,
        events,
        actions,
        re_erasures,
        may_receipt: allowed(&session.principal, &[Role::Auditor]) && r.state == State::Completed,
        may_restore: allowed(&session.principal, &[Role::Approver]) && r.scope == Scope::Connection,
        r,
    })
}

#[derive(Template)]
#[template(path = "confirm.html")]
struct ConfirmPage {
    chrome: Chrome,
    id: Uuid,
    action: &'static str,
    state: &'static str,
    bases: Vec<(&'static str, &'static str)>,
}

/// Asks to confirm an action, with the fields it needs (a legal basis and note for hold, months
/// and a reason for extend, an optional note otherwise).
#[get("/requests/{id}/{action}")]
pub async fn confirm(
    state: web::Data<AppState>,
    session: Session,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Failure> {
    let (id, action) = path.into_inner();
    let action = action_named(&action)?;
    session.require(action.roles())?;
    let id = request_id(&id)?;
    let r = request_or_404(&state, id).await?;
    render(&ConfirmPage {
        chrome: session.chrome(format!("{} {id}", action.as_str())),
        id,
        action: action.as_str(),
        state: r.state.as_str(),
        bases: legal_bases(),
    })
}

/// The legal bases a hold may name, with their descriptions (the confirmation pages' choices).
pub fn legal_bases() -> Vec<(&'static str, &'static str)> {
    LegalBasis::ALL
        .iter()
        .map(|b| (b.as_str(), b.describe()))
        .collect()
}

/// Takes a confirmed action (as `POST /v1/erasure-requests/{id}/{action}`).
#[post("/requests/{id}/{action}")]
pub async fn act(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    Form { session, fields }: Form,
) -> Result<HttpResponse, Failure> {
    let (id, action) = path.into_inner();
    let action = action_named(&action)?;
    let principal = session.require(action.roles())?;
    let id = request_id(&id)?;
    let details = action_details(action, &fields)?;
    app::perform(&state, principal, id, action, details).await?;
    Ok(see_other(&format!(
        "/requests/{id}?done={}",
        action.as_str()
    )))
}

/// An action's details from a form's fields, as the API's JSON body, so that both are validated
/// by the same code (`app::requests::action_details`).
pub fn action_details(
    action: Action,
    fields: &[(String, String)],
) -> Result<crate::domain::actions::Details, Failure> {
    let mut body = serde_json::Map::new();
    for name in ["legal_basis", "note", "reason"] {
        if let Some(value) = field(fields, name) {
            body.insert(name.into(), value.into());
        }
    }
    if let Some(months) = field(fields, "months") {
        body.insert(
            "months".into(),
            months
                .parse::<u32>()
                .map(Into::into)
                .unwrap_or_else(|_| months.into()),
        );
    }
    let bytes = serde_json::to_vec(&body).map_err(anyhow::Error::from)?;
    Ok(app::action_details(action, &bytes)?)
}

//! Bulk actions in the console: act on every request a filtered list matches, after a
//! confirmation that says how many (`/requests/bulk`), and the paged result of a bulk operation or
//! an upload (`/bulk/{id}`). Acts through the use cases (`app::bulk`).

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use askama::Template;

use super::requests::{action_details, legal_bases};
use super::session::{Form, Session, field};
use super::{Chrome, Failure, render, see_other};
use crate::api::AppState;
use crate::app::auth::READERS;
use crate::app::bulk::{self, ItemsQuery};
use crate::app::input;
use crate::app::requests::{ListQuery, action_named};
use crate::domain::Action;
use crate::store::bulk::{Item, Operation};

/// Form fields that are not the list's filters.
const NOT_FILTERS: [&str; 7] = [
    "csrf",
    "action",
    "cursor",
    "legal_basis",
    "note",
    "reason",
    "months",
];

/// The list's filters among `pairs` (non-empty ones only), and the query they make.
fn filters_of(pairs: &[(String, String)]) -> Result<(Vec<(String, String)>, ListQuery), Failure> {
    let filters: Vec<(String, String)> = pairs
        .iter()
        .filter(|(k, v)| !NOT_FILTERS.contains(&k.as_str()) && !v.trim().is_empty())
        .map(|(k, v)| (k.clone(), v.trim().to_string()))
        .collect();
    let text = serde_urlencoded::to_string(&filters).map_err(anyhow::Error::from)?;
    Ok((filters, input::query_str(&text)?))
}

fn action_of(pairs: &[(String, String)]) -> Result<Action, Failure> {
    Ok(action_named(field(pairs, "action").unwrap_or(""))?)
}

#[derive(Template)]
#[template(path = "bulk_confirm.html")]
struct ConfirmPage {
    chrome: Chrome,
    action: &'static str,
    count: usize,
    filters: Vec<(String, String)>,
    bases: Vec<(&'static str, &'static str)>,
}

/// Asks to confirm an action on every request the list's filters match, saying how many.
#[get("/requests/bulk")]
pub async fn confirm(
    state: web::Data<AppState>,
    req: HttpRequest,
    session: Session,
) -> Result<HttpResponse, Failure> {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(req.query_string().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let action = action_of(&pairs)?;
    session.require(action.roles())?;
    let (filters, query) = filters_of(&pairs)?;
    let count = bulk::selection(&state, None, Some(query)).await?.len();
    render(&ConfirmPage {
        chrome: session.chrome(format!("{} {count} requests", action.as_str())),
        action: action.as_str(),
        count,
        filters,
        bases: legal_bases(),
    })
}

/// Takes a confirmed action on every request the filters match now (as `POST
/// /v1/bulk-actions`), then shows its result.
#[post("/requests/bulk")]
pub async fn act(
    state: web::Data<AppState>,
    Form { session, fields }: Form,
) -> Result<HttpResponse, Failure> {
    let action = action_of(&fields)?;
    let principal = session.require(action.roles())?;
    let details = action_details(action, &fields)?;
    let (_, query) = filters_of(&fields)?;
    let ids = bulk::selection(&state, None, Some(query)).await?;
    let op = bulk::act_on_all(&state, principal, action, details, ids).await?;
    Ok(see_other(&format!("/bulk/{}", op.id)))
}

#[derive(Template)]
#[template(path = "bulk.html")]
pub struct ResultPage {
    chrome: Chrome,
    op: Operation,
    /// The filter of the items shown (`attention`, `done`, ...), if any.
    shown: Option<String>,
    /// Items by result.
    counts: Vec<(String, i64)>,
    items: Vec<Item>,
    next: Option<String>,
}

impl ResultPage {
    /// How many items have `result`.
    fn count(&self, result: &str) -> i64 {
        self.counts
            .iter()
            .find(|(r, _)| r == result)
            .map_or(0, |(_, n)| *n)
    }
}

/// The result of a bulk operation or an upload: its counts and each item's, a page at a time.
#[get("/bulk/{id}")]
pub async fn show(
    state: web::Data<AppState>,
    req: HttpRequest,
    session: Session,
    path: web::Path<String>,
) -> Result<HttpResponse, Failure> {
    session.require(READERS)?;
    let op = bulk::operation(&state, &path).await?;
    let q: ItemsQuery = input::query_str(req.query_string())?;
    result_page(&state, session, op, q).await
}

/// The page of an operation's items that `q` asks for.
pub async fn result_page(
    state: &AppState,
    session: Session,
    op: Operation,
    q: ItemsQuery,
) -> Result<HttpResponse, Failure> {
    let page = bulk::item_page(state, op.id, &q).await?;
    let next = page.next_after.map(|after| {
        let mut pairs = vec![("after".to_string(), after.to_string())];
        if let Some(only) = &q.result {
            pairs.push(("result".into(), only.clone()));
        }
        format!(
            "/bulk/{}?{}",
            op.id,
            serde_urlencoded::to_string(&pairs).unwrap_or_default()
        )
    });
    let title = if op.action == "submit" {
        "Upload".to_string()
    } else {
        format!("Bulk {}", op.action)
    };
    let counts = crate::store::bulk::counts(&state.db, op.id).await?;
    render(&ResultPage {
        chrome: session.chrome(title),
        op,
        shown: q.result,
        counts,
        items: page.items,
        next,
    })
}

/// The page an upload shows at once: its counts and the lines that need attention.
pub async fn upload_result(
    state: &AppState,
    session: Session,
    op: Operation,
) -> Result<HttpResponse, Failure> {
    let q = ItemsQuery {
        result: Some("attention".into()),
        ..ItemsQuery::default()
    };
    result_page(state, session, op, q).await
}

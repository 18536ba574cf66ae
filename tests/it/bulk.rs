//! Bulk actions (`POST /v1/bulk-actions`, the console's "act on all") and paged results of bulk
//! operations and uploads: each item decided as a single action would be, four eyes by item.

use crate::common;

use common::console::Console;
use common::{Options, TestApp};
use erasure::config::ApprovalPolicy;
use serde_json::{Value, json};

async fn submit_as(app: &TestApp, key: &str, target: u64) -> String {
    let (status, body) = app
        .post(
            "/v1/erasure-requests",
            key,
            json!({"scope": "account", "target_id": target.to_string()}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    body["id"].as_str().unwrap().to_string()
}

/// Every item of an operation, read `limit` at a time.
async fn all_items(app: &TestApp, op: &str, limit: u32, only: Option<&str>) -> Vec<Value> {
    let mut items = Vec::new();
    let mut after = 0;
    loop {
        let mut path = format!("/v1/bulk-actions/{op}/items?limit={limit}&after={after}");
        if let Some(only) = only {
            path.push_str(&format!("&result={only}"));
        }
        let (status, page) = app.get(&path, &app.auditor).await;
        assert_eq!(status, 200, "{page}");
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_after"].as_i64() {
            Some(next) => after = next,
            None => return items,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_action_decides_each_request_as_a_single_action_would_and_pages_its_items() {
    let app = TestApp::spawn(Options {
        approval: ApprovalPolicy::All,
        ..Options::no_worker()
    })
    .await;
    let mut theirs = Vec::new();
    for n in 0..25 {
        theirs.push(submit_as(&app, &app.requester, 8_100_000 + n).await);
    }
    // The admin asked for five itself: four eyes refuse its approval of those.
    let mut own = Vec::new();
    for n in 0..5 {
        own.push(submit_as(&app, &app.admin, 8_200_000 + n).await);
    }
    let unknown = [
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    ];
    let mut ids: Vec<&String> = theirs.iter().chain(&own).chain(&unknown).collect();
    ids.push(&theirs[0]);

    // Refusals of the whole operation come before anything is applied.
    for (key, body, status) in [
        (
            &app.requester,
            json!({"action": "approve", "ids": ids}),
            403,
        ),
        (&app.admin, json!({"action": "approve"}), 422),
        (
            &app.admin,
            json!({"action": "approve", "ids": ids, "filter": {"state": "queued"}}),
            422,
        ),
        (
            &app.admin,
            json!({"action": "approve", "filter": {"state": "queued", "limit": 5}}),
            422,
        ),
        (
            &app.admin,
            json!({"action": "extend", "ids": ids, "months": 3, "reason": "complex"}),
            422,
        ),
        (&app.admin, json!({"action": "erase", "ids": ids}), 422),
    ] {
        let (got, answer) = app.post("/v1/bulk-actions", key, body.clone()).await;
        assert_eq!(got, status, "{body} -> {answer}");
    }
    let too_many: Vec<String> = (0..10_001)
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    let (status, answer) = app
        .post(
            "/v1/bulk-actions",
            &app.admin,
            json!({"action": "approve", "ids": too_many}),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["fields"]["ids"].as_str().unwrap().contains("10000"),
        "{answer}"
    );

    let (status, op) = app
        .post(
            "/v1/bulk-actions",
            &app.admin,
            json!({"action": "approve", "ids": ids, "note": "quarterly clean-up"}),
        )
        .await;
    assert_eq!(status, 200, "{op}");
    let op_id = op["id"].as_str().unwrap().to_string();
    assert_eq!(
        (
            op["total"].as_i64(),
            op["done"].as_i64(),
            op["refused"].as_i64()
        ),
        (Some(32), Some(25), Some(7)),
        "a repeated id counts once: {op}"
    );
    assert!(op["finished_at"].is_string(), "{op}");

    // Each item, in order, a page at a time; the refused ones say why.
    let items = all_items(&app, &op_id, 10, None).await;
    let ordinals: Vec<i64> = items
        .iter()
        .map(|i| i["ordinal"].as_i64().unwrap())
        .collect();
    assert_eq!(ordinals, (1..=32).collect::<Vec<_>>());
    for (item, id) in items.iter().zip(&ids) {
        assert_eq!(item["request_id"].as_str(), Some(id.as_str()));
    }
    let refused = all_items(&app, &op_id, 3, Some("refused")).await;
    let why: Vec<(&str, &str)> = refused
        .iter()
        .map(|i| {
            (
                i["request_id"].as_str().unwrap(),
                i["error"].as_str().unwrap(),
            )
        })
        .collect();
    let mut expected: Vec<(&str, &str)> = own
        .iter()
        .map(|id| (id.as_str(), "approver_is_requester"))
        .collect();
    expected.extend(unknown.iter().map(|id| (id.as_str(), "not_found")));
    assert_eq!(why, expected);
    for id in &theirs {
        let (_, r) = app
            .get(&format!("/v1/erasure-requests/{id}"), &app.auditor)
            .await;
        assert_eq!(r["state"], "queued", "{r}");
    }
    for id in &own {
        let (_, r) = app
            .get(&format!("/v1/erasure-requests/{id}"), &app.auditor)
            .await;
        assert_eq!(r["state"], "pending_approval", "{r}");
    }

    // One audit entry per request, naming the operation, and one for the operation.
    let approved: Vec<(Value,)> =
        sqlx::query_as("select data from audit_entries where event = 'approved' order by id")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(approved.len(), 25);
    assert!(
        approved
            .iter()
            .all(|(d,)| d["bulk_operation"] == op_id.as_str())
    );
    let (data,): (Value,) =
        sqlx::query_as("select data from audit_entries where event = 'bulk_operation'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(
        (&data["operation"], &data["done"], &data["refused"]),
        (&json!(op_id), &json!(25), &json!(7))
    );

    // By filter: every queued request is held, with its legal basis.
    let (status, held) = app
        .post(
            "/v1/bulk-actions",
            &app.admin,
            json!({"action": "hold", "filter": {"state": "queued", "scope": "account"},
                   "legal_basis": "art17_3_e", "note": "litigation pending"}),
        )
        .await;
    assert_eq!(status, 200, "{held}");
    assert_eq!(
        (held["total"].as_i64(), held["done"].as_i64()),
        (Some(25), Some(25))
    );
    let (_, page) = app
        .get("/v1/erasure-requests?state=on_hold&limit=100", &app.auditor)
        .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 25);
    let (status, page) = app
        .get(
            &format!("/v1/bulk-actions/{op_id}/items?result=maybe"),
            &app.auditor,
        )
        .await;
    assert_eq!(status, 422, "{page}");
    let (status, _) = app
        .get(
            &format!("/v1/bulk-actions/{}", uuid::Uuid::new_v4()),
            &app.auditor,
        )
        .await;
    assert_eq!(status, 404);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_acts_on_all_a_filter_matches_and_pages_results_and_uploads() {
    let app = TestApp::spawn(Options {
        approval: ApprovalPolicy::All,
        ..Options::no_worker()
    })
    .await;
    let officer = Console::sign_in(&app, &app.requester).await;
    let approver = Console::sign_in(&app, &app.approver).await;

    // An upload of 200 lines: its page shows the counts and the 10 lines that need attention;
    // every line is on the paged result, 100 at a time.
    let later = (chrono::Utc::now() + chrono::Duration::days(300)).to_rfc3339();
    let open = app.submit_later("account", "987650001").await;
    let (status, page) = officer
        .upload(common::upload_of_200(6_000_000, "987650001", &later))
        .await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("<b id=\"created\">190</b>"), "{page}");
    assert!(page.contains("<b id=\"duplicates\">4</b>"), "{page}");
    assert!(page.contains("<b id=\"invalid\">6</b>"), "{page}");
    assert_eq!(page.matches("<tr class=\"item-").count(), 10, "{page}");
    assert!(
        page.contains(&format!("/requests/{open}")),
        "the duplicate links the open one"
    );
    assert!(!page.contains("6000001"), "no target id on the page");
    let at = page.find("href=\"/bulk/").unwrap() + 6;
    let op = &page[at..at + "/bulk/".len() + 36];
    let (_, first) = officer.get(op).await;
    assert_eq!(first.matches("<tr class=\"item-").count(), 100);
    assert!(
        first.contains(&format!("<a href=\"{op}?after=100\" rel=\"next\">")),
        "{first}"
    );
    let (_, second) = officer.get(&format!("{op}?after=100")).await;
    assert_eq!(second.matches("<tr class=\"item-").count(), 100);
    assert!(!second.contains("rel=\"next\""), "200 lines: two pages");

    // The approver filters the list, is told how many the action would take, and confirms.
    let (_, waiting) = app
        .get(
            "/v1/erasure-requests?state=pending_approval&scope=account&limit=500",
            &app.auditor,
        )
        .await;
    let n = waiting["items"].as_array().unwrap().len();
    assert!(n >= 190, "{n}");
    let (_, list) = approver
        .get("/requests?state=pending_approval&scope=account")
        .await;
    assert!(list.contains("action=\"/requests/bulk\""), "{list}");
    let (status, confirm) = approver
        .get("/requests/bulk?action=approve&state=pending_approval&scope=account")
        .await;
    assert_eq!(status, 200, "{confirm}");
    assert!(
        confirm.contains(&format!("id=\"bulk-count\">{n} request(s)")),
        "{confirm}"
    );
    let (status, location, body) = approver
        .post(
            "/requests/bulk",
            &[
                ("action", "approve"),
                ("state", "pending_approval"),
                ("scope", "account"),
            ],
        )
        .await;
    assert_eq!(status, 303, "{body}");
    let (_, result) = approver.get(&location).await;
    assert!(
        result.contains(&format!("<b id=\"done\">{n}</b>")),
        "{result}"
    );
    assert!(result.contains("<b id=\"refused\">0</b>"), "{result}");
    // A requester has no bulk approval.
    let (status, _) = officer
        .get("/requests/bulk?action=approve&state=queued")
        .await;
    assert_eq!(status, 403);
    app.stop().await;
}

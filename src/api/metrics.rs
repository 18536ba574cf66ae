//! `GET /metrics` in the Prometheus text format: figures read from the database at scrape time
//! (the same from every process), then this process's own (upstream calls, attempts, limiter,
//! breaker; see `crate::metrics`). Labels are states and results only: never personal data.

use std::fmt::Write;

use actix_web::{HttpResponse, get, web};

use super::AppState;
use super::error::ApiError;
use crate::metrics::header;
use crate::store::guard::RECURRING;

/// Metrics for Prometheus.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
#[get("/metrics")]
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let db = &state.db;
    let mut out = String::new();

    let by_state: Vec<(String, String, i64)> = sqlx::query_as(
        "select state, scope, count(*) from erasure_requests group by state, scope order by 1, 2",
    )
    .fetch_all(db)
    .await?;
    header(
        &mut out,
        "erasure_requests",
        "gauge",
        "Erasure requests by state and scope.",
    );
    for (state, scope, n) in by_state {
        let _ = writeln!(
            out,
            "erasure_requests{{state=\"{state}\",scope=\"{scope}\"}} {n}"
        );
    }

    let (overdue, due_soon): (i64, i64) = sqlx::query_as(
        "select count(*) filter (where due_at < now()), \
                count(*) filter (where due_at >= now() and due_at < now() + interval '7 days') \
         from erasure_requests where state not in ('completed', 'cancelled')",
    )
    .fetch_one(db)
    .await?;
    header(
        &mut out,
        "erasure_requests_overdue",
        "gauge",
        "Open requests past their due date (one month after receipt, moved by extensions).",
    );
    let _ = writeln!(out, "erasure_requests_overdue {overdue}");
    header(
        &mut out,
        "erasure_requests_due_within_7_days",
        "gauge",
        "Open requests due within the next 7 days.",
    );
    let _ = writeln!(out, "erasure_requests_due_within_7_days {due_soon}");

    let (queued, running, retrying, paused): (i64, i64, i64, i64) = sqlx::query_as(
        "select count(*) filter (where state = 'ready' and last_error is null), \
                count(*) filter (where state = 'running'), \
                count(*) filter (where state = 'ready' and last_error is not null), \
                count(*) filter (where state = 'paused') \
         from steps where state in ('ready', 'running', 'paused')",
    )
    .fetch_one(db)
    .await?;
    header(
        &mut out,
        "erasure_jobs",
        "gauge",
        "Step jobs: queued (ready, never failed), running (leased), retrying (ready again after a failure), paused (held or awaiting approval).",
    );
    for (state, n) in [
        ("queued", queued),
        ("running", running),
        ("retrying", retrying),
        ("paused", paused),
    ] {
        let _ = writeln!(out, "erasure_jobs{{state=\"{state}\"}} {n}");
    }

    let (entries, leaves, checkpoint_age): (i64, i64, Option<f64>) = sqlx::query_as(
        "select (select coalesce(max(id), 0) from audit_entries), \
                (select coalesce(max(leaf_index) + 1, 0) from audit_leaves), \
                (select extract(epoch from now() - max(created_at))::float8 from audit_checkpoints)",
    )
    .fetch_one(db)
    .await?;
    header(
        &mut out,
        "erasure_audit_entries",
        "gauge",
        "Audit entries written (highest entry id).",
    );
    let _ = writeln!(out, "erasure_audit_entries {entries}");
    header(
        &mut out,
        "erasure_audit_tree_size",
        "gauge",
        "Audit entries sequenced into the Merkle tree.",
    );
    let _ = writeln!(out, "erasure_audit_tree_size {leaves}");
    if let Some(age) = checkpoint_age {
        header(
            &mut out,
            "erasure_audit_checkpoint_age_seconds",
            "gauge",
            "Seconds since the last signed checkpoint.",
        );
        let _ = writeln!(out, "erasure_audit_checkpoint_age_seconds {age}");
    }

    let (resurrections, recurring): (i64, i64) = sqlx::query_as(
        "select (select count(*) from resurrections), \
                (select count(*) from (select connection_ref from resurrections \
                 where connection_ref is not null group by connection_ref \
                 having count(*) >= $1) c)",
    )
    .bind(RECURRING)
    .fetch_one(db)
    .await?;
    header(
        &mut out,
        "erasure_resurrections_total",
        "counter",
        "Erased accounts listed again upstream (and erased again).",
    );
    let _ = writeln!(out, "erasure_resurrections_total {resurrections}");
    header(
        &mut out,
        "erasure_resurrection_recurring_connections",
        "gauge",
        "Connections whose erased accounts came back repeatedly: erase the connection instead.",
    );
    let _ = writeln!(
        out,
        "erasure_resurrection_recurring_connections {recurring}"
    );

    let restorations: Vec<(String, i64)> =
        sqlx::query_as("select state, count(*) from restorations group by state order by 1")
            .fetch_all(db)
            .await?;
    header(
        &mut out,
        "erasure_restorations",
        "gauge",
        "Restorations by state.",
    );
    for (state, n) in restorations {
        let _ = writeln!(out, "erasure_restorations{{state=\"{state}\"}} {n}");
    }

    let last: Option<(String, f64, i64)> = sqlx::query_as(
        "select state, extract(epoch from finished_at)::float8, found from reverifications \
         where finished_at is not null order by id desc limit 1",
    )
    .fetch_optional(db)
    .await?;
    header(
        &mut out,
        "erasure_reverification_failing",
        "gauge",
        "1 when the last re-verification found erased targets upstream again or could not finish.",
    );
    let failing = last.as_ref().is_some_and(|(state, ..)| state != "passed");
    let _ = writeln!(out, "erasure_reverification_failing {}", u8::from(failing));
    if let Some((_, finished, found)) = last {
        header(
            &mut out,
            "erasure_reverification_last_finished_seconds",
            "gauge",
            "When the last re-verification finished (Unix time).",
        );
        let _ = writeln!(
            out,
            "erasure_reverification_last_finished_seconds {finished}"
        );
        header(
            &mut out,
            "erasure_reverification_last_found",
            "gauge",
            "Erased targets the last re-verification found upstream again.",
        );
        let _ = writeln!(out, "erasure_reverification_last_found {found}");
    }

    let cursor: i64 = crate::store::guard::cursor(db).await?;
    header(
        &mut out,
        "erasure_upstream_event_cursor",
        "gauge",
        "Id of the last upstream event the guard applied.",
    );
    let _ = writeln!(out, "erasure_upstream_event_cursor {cursor}");

    crate::metrics::global().render(&mut out);

    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(out))
}

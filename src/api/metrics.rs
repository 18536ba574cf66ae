//! `GET /metrics` in the Prometheus text format: figures read from the database at scrape time
//! through `crate::store::metrics` (the same from every process), then this process's own
//! (upstream calls, attempts, limiter, breaker; see `crate::metrics`). No SQL here, and labels
//! are states and results only: never personal data.

use std::fmt::Write;

use actix_web::{HttpResponse, get, web};

use super::AppState;
use super::error::ApiError;
use crate::metrics::header;
use crate::store;

/// Metrics for Prometheus.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
#[get("/metrics")]
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let f = store::metrics::figures(&state.db).await?;
    let mut out = String::new();

    header(
        &mut out,
        "erasure_requests",
        "gauge",
        "Erasure requests by state and scope.",
    );
    for (state, scope, n) in &f.requests {
        let _ = writeln!(
            out,
            "erasure_requests{{state=\"{}\",scope=\"{}\"}} {n}",
            state.as_str(),
            scope.as_str()
        );
    }
    header(
        &mut out,
        "erasure_requests_overdue",
        "gauge",
        "Open requests past their due date (one month after receipt, moved by extensions).",
    );
    let _ = writeln!(out, "erasure_requests_overdue {}", f.overdue);
    header(
        &mut out,
        "erasure_requests_due_within_7_days",
        "gauge",
        "Open requests due within the next 7 days.",
    );
    let _ = writeln!(
        out,
        "erasure_requests_due_within_7_days {}",
        f.due_within_7_days
    );

    header(
        &mut out,
        "erasure_jobs",
        "gauge",
        "Step jobs: queued (ready, never failed), running (leased), retrying (ready again after a failure), paused (held or awaiting approval).",
    );
    for (state, n) in [
        ("queued", f.jobs.queued),
        ("running", f.jobs.running),
        ("retrying", f.jobs.retrying),
        ("paused", f.jobs.paused),
    ] {
        let _ = writeln!(out, "erasure_jobs{{state=\"{state}\"}} {n}");
    }

    header(
        &mut out,
        "erasure_audit_entries",
        "gauge",
        "Audit entries written (highest entry id).",
    );
    let _ = writeln!(out, "erasure_audit_entries {}", f.audit_entries);
    header(
        &mut out,
        "erasure_audit_tree_size",
        "gauge",
        "Audit entries sequenced into the Merkle tree.",
    );
    let _ = writeln!(out, "erasure_audit_tree_size {}", f.audit_tree_size);
    if let Some(age) = f.checkpoint_age_seconds {
        header(
            &mut out,
            "erasure_audit_checkpoint_age_seconds",
            "gauge",
            "Seconds since the last signed checkpoint.",
        );
        let _ = writeln!(out, "erasure_audit_checkpoint_age_seconds {age}");
    }

    header(
        &mut out,
        "erasure_resurrections_total",
        "counter",
        "Erased accounts listed again upstream (and erased again).",
    );
    let _ = writeln!(out, "erasure_resurrections_total {}", f.resurrections);
    header(
        &mut out,
        "erasure_resurrection_recurring_connections",
        "gauge",
        "Connections whose erased accounts came back repeatedly: erase the connection instead.",
    );
    let _ = writeln!(
        out,
        "erasure_resurrection_recurring_connections {}",
        f.recurring_connections
    );

    header(
        &mut out,
        "erasure_restorations",
        "gauge",
        "Restorations by state.",
    );
    for (state, n) in &f.restorations {
        let _ = writeln!(
            out,
            "erasure_restorations{{state=\"{}\"}} {n}",
            state.as_str()
        );
    }

    header(
        &mut out,
        "erasure_reverification_failing",
        "gauge",
        "1 when the last re-verification found erased targets upstream again or could not finish.",
    );
    let failing = f.last_reverification.is_some_and(|last| !last.passed);
    let _ = writeln!(out, "erasure_reverification_failing {}", u8::from(failing));
    if let Some(last) = f.last_reverification {
        header(
            &mut out,
            "erasure_reverification_last_finished_seconds",
            "gauge",
            "When the last re-verification finished (Unix time).",
        );
        let _ = writeln!(
            out,
            "erasure_reverification_last_finished_seconds {}",
            last.finished_at
        );
        header(
            &mut out,
            "erasure_reverification_last_found",
            "gauge",
            "Erased targets the last re-verification found upstream again.",
        );
        let _ = writeln!(out, "erasure_reverification_last_found {}", last.found);
    }

    header(
        &mut out,
        "erasure_upstream_event_cursor",
        "gauge",
        "Id of the last upstream event the guard applied.",
    );
    let _ = writeln!(out, "erasure_upstream_event_cursor {}", f.event_cursor);

    crate::metrics::global().render(&mut out);

    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(out))
}

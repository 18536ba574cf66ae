//! `GET /metrics` in the OpenMetrics text format: reads the database's figures through
//! `crate::store::metrics` (the same from every process) and answers them with this process's own
//! (upstream calls, attempts, limiter, breaker, heap), rendered with `prometheus-client`. No SQL
//! here, and never a label from personal data: labels are states, scopes and results only.

use std::fmt::{self, Write};

use actix_web::{HttpResponse, get, web};
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::{Registry, Unit};

use super::AppState;
use crate::app::error::ApiError;
use crate::domain::{Scope, State};
use crate::metrics::{CONTENT_TYPE, PREFIX, global, label_values};
use crate::store;
use crate::store::metrics::{Figures, RestorationState};
use crate::store::webhooks::SubscriptionState;

/// Metrics for Prometheus.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "OpenMetrics text format",
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8")))]
#[get("/metrics")]
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let figures = store::metrics::figures(&state.db, state.at_risk_days).await?;
    Ok(HttpResponse::Ok()
        .content_type(CONTENT_TYPE)
        .body(exposition(&figures)))
}

/// The step jobs' states as `erasure_jobs` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
enum JobState {
    Queued,
    Running,
    Retrying,
    Paused,
}

impl JobState {
    fn as_str(self) -> &'static str {
        self.into()
    }
}

label_values!(JobState, State, Scope, RestorationState, SubscriptionState);

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    state: State,
    scope: Scope,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct JobLabels {
    state: JobState,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SubscriptionLabels {
    state: SubscriptionState,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RestorationLabels {
    state: RestorationState,
}

/// The whole `/metrics` exposition: the database's figures, then this process's metrics, then
/// `# EOF`.
pub fn exposition(figures: &Figures) -> String {
    let mut out = String::new();
    encode_registry(&mut out, &figures_registry(figures))
        .and_then(|()| global().encode(&mut out))
        .and_then(|()| encode_eof(&mut out))
        .expect("writing to a String cannot fail");
    out
}

/// The database's figures on a registry of their own, made for this scrape: each scrape sets its
/// own values and label sets (a state with no request disappears, as it does from the query),
/// and concurrent scrapes share nothing.
fn figures_registry(f: &Figures) -> Registry {
    let mut r = Registry::with_prefix(PREFIX);

    let requests = Family::<RequestLabels, Gauge>::default();
    for &(state, scope, n) in &f.requests {
        requests
            .get_or_create(&RequestLabels { state, scope })
            .set(n);
    }
    r.register("requests", "Erasure requests by state and scope", requests);
    r.register(
        "requests_overdue",
        "Open requests past their due date (one month after receipt, moved by extensions)",
        ConstGauge::new(f.overdue),
    );
    r.register(
        "requests_due_within_7_days",
        "Open requests due within the next 7 days",
        ConstGauge::new(f.due_within_7_days),
    );
    r.register(
        "requests_at_risk",
        "Open requests at risk: due within ERASURE_AT_RISK_DAYS days (default 7), not yet overdue",
        ConstGauge::new(f.at_risk),
    );

    let jobs = Family::<JobLabels, Gauge>::default();
    for (state, n) in [
        (JobState::Queued, f.jobs.queued),
        (JobState::Running, f.jobs.running),
        (JobState::Retrying, f.jobs.retrying),
        (JobState::Paused, f.jobs.paused),
    ] {
        jobs.get_or_create(&JobLabels { state }).set(n);
    }
    r.register(
        "jobs",
        "Step jobs: queued (ready, never failed), running (leased), retrying (ready again after a failure), paused (held or awaiting approval)",
        jobs,
    );

    r.register(
        "audit_entries",
        "Audit entries written (highest entry id)",
        ConstGauge::new(f.audit_entries),
    );
    r.register(
        "audit_tree_size",
        "Audit entries sequenced into the Merkle tree",
        ConstGauge::new(f.audit_tree_size),
    );
    if let Some(age) = f.checkpoint_age_seconds {
        r.register_with_unit(
            "audit_checkpoint_age",
            "Seconds since the last signed checkpoint",
            Unit::Seconds,
            ConstGauge::new(age),
        );
    }

    r.register(
        "resurrections",
        "Erased accounts listed again upstream (and erased again)",
        ConstCounter::new(u64::try_from(f.resurrections).unwrap_or(0)),
    );
    r.register(
        "resurrection_recurring_connections",
        "Connections whose erased accounts came back repeatedly: erase the connection instead",
        ConstGauge::new(f.recurring_connections),
    );

    let restorations = Family::<RestorationLabels, Gauge>::default();
    for &(state, n) in &f.restorations {
        restorations
            .get_or_create(&RestorationLabels { state })
            .set(n);
    }
    r.register("restorations", "Restorations by state", restorations);

    let failing = f
        .last_reverification
        .as_ref()
        .is_some_and(|last| !last.passed());
    r.register(
        "reverification_failing",
        "1 when the last re-verification found erased targets upstream again or could not finish",
        ConstGauge::new(i64::from(failing)),
    );
    if let Some(last) = &f.last_reverification {
        r.register_with_unit(
            "reverification_last_finished",
            "When the last re-verification finished (Unix time)",
            Unit::Seconds,
            ConstGauge::new(last.finished_at.timestamp_micros() as f64 / 1e6),
        );
        r.register(
            "reverification_last_found",
            "Erased targets the last re-verification found upstream again",
            ConstGauge::new(last.found),
        );
    }

    r.register(
        "upstream_paused",
        "1 while all upstream work is paused (POST /v1/pause), else 0",
        ConstGauge::new(i64::from(f.paused_since.is_some())),
    );
    if let Some(since) = f.paused_since {
        r.register(
            "upstream_paused_since_seconds",
            "When upstream work was paused (Unix time); absent while it runs",
            ConstGauge::new(since.timestamp() as f64),
        );
    }
    r.register(
        "upstream_event_cursor",
        "Id of the last upstream event the guard applied",
        ConstGauge::new(f.event_cursor),
    );
    r.register(
        "pseudonym_epochs_live",
        "Pseudonym key epochs whose key exists (their requests can be found by target)",
        ConstGauge::new(f.epochs.live),
    );
    r.register(
        "pseudonym_epochs_destroyed",
        "Pseudonym key epochs whose key retention destroyed",
        ConstGauge::new(f.epochs.destroyed),
    );

    // Every state is shown, so that an alert on `disabled` > 0 has a series to read.
    let subscriptions = Family::<SubscriptionLabels, Gauge>::default();
    for state in [
        SubscriptionState::Enabled,
        SubscriptionState::Paused,
        SubscriptionState::Disabled,
    ] {
        let n = f
            .webhooks
            .subscriptions
            .iter()
            .find(|(s, _)| *s == state)
            .map_or(0, |(_, n)| *n);
        subscriptions
            .get_or_create(&SubscriptionLabels { state })
            .set(n);
    }
    r.register(
        "webhook_subscriptions",
        "Webhook subscriptions by state; disabled: the service gave up on an event after retrying it for more than 3 days (alert on it)",
        subscriptions,
    );
    r.register(
        "webhook_events_pending",
        "Webhook events not delivered yet",
        ConstGauge::new(f.webhooks.pending),
    );
    if let Some(age) = f.webhooks.oldest_pending_age_seconds {
        r.register_with_unit(
            "webhook_oldest_pending_age",
            "Seconds since the oldest undelivered event of an enabled subscription occurred",
            Unit::Seconds,
            ConstGauge::new(age),
        );
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::metrics::Jobs;
    use crate::store::reverify::LastRun;

    #[test]
    fn database_figures_keep_their_names_and_labels() {
        let figures = Figures {
            requests: vec![
                (State::Completed, Scope::User, 3),
                (State::PendingApproval, Scope::Account, 1),
            ],
            overdue: 2,
            due_within_7_days: 4,
            at_risk: 3,
            jobs: Jobs {
                queued: 5,
                running: 6,
                retrying: 7,
                paused: 8,
            },
            audit_entries: 9,
            audit_tree_size: 8,
            checkpoint_age_seconds: Some(2.5),
            resurrections: 2,
            recurring_connections: 1,
            restorations: vec![(RestorationState::TimedOut, 1)],
            last_reverification: Some(LastRun {
                state: "failed".into(),
                finished_at: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
                found: 3,
            }),
            event_cursor: 42,
            paused_since: None,
            webhooks: crate::store::webhooks::Figures {
                subscriptions: vec![(SubscriptionState::Disabled, 2)],
                pending: 7,
                oldest_pending_age_seconds: Some(1.5),
            },
            epochs: crate::store::epochs::Figures {
                live: 3,
                destroyed: 1,
                oldest_live_start: None,
            },
        };
        let out = exposition(&figures);
        for needed in [
            "erasure_webhook_subscriptions{state=\"disabled\"} 2\n",
            "erasure_webhook_subscriptions{state=\"enabled\"} 0\n",
            "erasure_webhook_events_pending 7\n",
            "erasure_webhook_oldest_pending_age_seconds 1.5\n",
            "erasure_requests{state=\"completed\",scope=\"user\"} 3\n",
            "erasure_requests{state=\"pending_approval\",scope=\"account\"} 1\n",
            "erasure_requests_overdue 2\n",
            "erasure_requests_due_within_7_days 4\n",
            "erasure_requests_at_risk 3\n",
            "erasure_jobs{state=\"queued\"} 5\n",
            "erasure_jobs{state=\"paused\"} 8\n",
            "erasure_audit_entries 9\n",
            "erasure_audit_tree_size 8\n",
            "erasure_audit_checkpoint_age_seconds 2.5\n",
            "erasure_resurrections_total 2\n",
            "# TYPE erasure_resurrections counter\n",
            "erasure_resurrection_recurring_connections 1\n",
            "erasure_restorations{state=\"timed_out\"} 1\n",
            "erasure_reverification_failing 1\n",
            "erasure_reverification_last_finished_seconds 1700000000.0\n",
            "erasure_reverification_last_found 3\n",
            "erasure_upstream_event_cursor 42\n",
            "erasure_pseudonym_epochs_live 3\n",
            "erasure_pseudonym_epochs_destroyed 1\n",
            "erasure_circuit_breaker_state ",
        ] {
            assert!(out.contains(needed), "{needed} missing from:\n{out}");
        }
        assert!(out.ends_with("\n# EOF\n") && out.matches("# EOF").count() == 1);

        let quiet = exposition(&Figures::default());
        assert!(quiet.contains("erasure_reverification_failing 0\n"));
        assert!(!quiet.contains("erasure_audit_checkpoint_age_seconds"));
        assert!(!quiet.contains("erasure_reverification_last_found"));
    }
}

//! `GET /metrics` in the OpenMetrics text format: reads the database's figures through
//! `crate::store::metrics` (the same from every process) and answers them with this process's own
//! (upstream calls, attempts, limiter, breaker, heap), rendered by `crate::metrics`. No SQL here,
//! and never a label from personal data: labels are states, scopes and results only.

use actix_web::{HttpResponse, get, web};

use super::AppState;
use super::error::ApiError;
use crate::metrics::{CONTENT_TYPE, exposition};
use crate::store;

/// Metrics for Prometheus.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "OpenMetrics text format",
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8")))]
#[get("/metrics")]
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let figures = store::metrics::figures(&state.db).await?;
    Ok(HttpResponse::Ok()
        .content_type(CONTENT_TYPE)
        .body(exposition(&figures)))
}

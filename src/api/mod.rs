//! The HTTP API (actix-web): handlers by resource, errors as JSON, the OpenAPI document.
//!
//! Handlers parse, authorise, call one use case (`app`) and answer: they never write SQL and
//! never call the aggregator (`tests/it/layers.rs`). Reads that only present what the store holds
//! (the audit log's proofs, metrics, health) call the store directly.

pub mod audit;
pub mod auth;
pub mod bulk;
pub mod error;
pub mod health;
pub mod input;
pub mod limits;
pub mod metrics;
pub mod pause;
pub mod requests;
pub mod restorations;
pub mod subjects;
pub mod webhooks;

use actix_web::dev::Server;
use actix_web::{App, HttpResponse, HttpServer, web};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use crate::app;
use crate::app::error::ApiError;
use crate::config::HttpLimits;
use error::CommonResponses;

/// What every handler shares: the use cases' `App` (through `Deref`) and the HTTP limits.
pub struct AppState {
    pub app: app::App,
    pub limits: HttpLimits,
    /// Request rate per API key.
    pub rates: std::sync::Arc<limits::KeyRates>,
}

impl std::ops::Deref for AppState {
    type Target = app::App;

    fn deref(&self) -> &app::App {
        &self.app
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "erasure",
        description = "GDPR Art. 17 erasure orchestration for the Oxlin (Linxo Connect) aggregator. \
            Send `Authorization: Bearer <API key>`; errors are `{error, message, fields?}`."
    ),
    paths(
        requests::create, requests::batch, requests::list, requests::get_one, requests::act,
        bulk::create, bulk::get_one, bulk::item_list,
        subjects::lookup,
        restorations::create, restorations::get_one,
        audit::receipt, audit::checkpoint, audit::consistency, audit::entries, audit::export,
        audit::report,
        webhooks::create, webhooks::list, webhooks::get_one, webhooks::change, webhooks::rotate,
        webhooks::test, webhooks::deliveries, webhooks::redeliver,
        pause::status, pause::pause, pause::resume,
        health::healthz, health::readyz, metrics::metrics,
    ),
    components(schemas(crate::app::requests::HoldBody, crate::app::requests::ExtendBody, crate::app::requests::NoteBody, crate::domain::Action)),
    modifiers(&BearerAuth, &CommonResponses, &Webhooks),
    tags((name = "erasure requests"), (name = "subjects"), (name = "restorations"), (name = "audit"), (name = "webhooks"), (name = "operations"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("API key")
                    .build(),
            ),
        );
    }
}

/// The document's `webhooks` (OpenAPI 3.1): one entry per type a subscription may ask for, its
/// body the envelope `{type, timestamp, data}` with `data` made from the same types as the
/// outbox's payloads (`domain::events`), signed as Standard Webhooks.
struct Webhooks;

impl Modify for Webhooks {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use crate::domain::events::{
            RequestEventData, RestorationAccounts, RestorationEventData, WebhookType,
        };
        use utoipa::PartialSchema;
        use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
        use utoipa::openapi::request_body::RequestBodyBuilder;
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        use utoipa::openapi::{
            ContentBuilder, PathItem, PathsBuilder, Ref, Required, ResponseBuilder,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, schema) in [
            ("RequestEventData", RequestEventData::schema()),
            ("RestorationEventData", RestorationEventData::schema()),
            ("RestorationAccounts", RestorationAccounts::schema()),
        ] {
            components.schemas.insert(name.to_string(), schema);
        }
        let mut paths = PathsBuilder::new();
        for kind in WebhookType::all() {
            let data = if kind.is_restoration() {
                "RestorationEventData"
            } else {
                "RequestEventData"
            };
            let envelope = ObjectBuilder::new()
                .property(
                    "type",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some([kind.as_str()])),
                )
                .required("type")
                .property(
                    "timestamp",
                    ObjectBuilder::new().schema_type(Type::String).format(Some(
                        utoipa::openapi::SchemaFormat::KnownFormat(
                            utoipa::openapi::KnownFormat::DateTime,
                        ),
                    )),
                )
                .required("timestamp")
                .property("data", Ref::from_schema_name(data))
                .required("data");
            let header = |name: &str, what: &str| {
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Header)
                    .required(Required::True)
                    .description(Some(what))
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                    .build()
            };
            let operation = OperationBuilder::new()
                .summary(Some(kind.describe()))
                .tag("webhooks")
                .parameter(header(
                    "webhook-id",
                    "The event's id, the same at every attempt.",
                ))
                .parameter(header("webhook-timestamp", "Unix seconds of this attempt."))
                .parameter(header(
                    "webhook-signature",
                    "`v1,<base64 HMAC-SHA256 of id.timestamp.body>` (Standard Webhooks).",
                ))
                .request_body(Some(
                    RequestBodyBuilder::new()
                        .content(
                            "application/json",
                            ContentBuilder::new().schema(Some(envelope)).build(),
                        )
                        .required(Some(Required::True))
                        .build(),
                ))
                .response(
                    "2XX",
                    ResponseBuilder::new()
                        .description("Received; any other answer is retried on the schedule."),
                )
                .build();
            paths = paths.path(kind.as_str(), PathItem::new(HttpMethod::Post, operation));
        }
        openapi.webhooks = Some(paths.build());
    }
}

/// The OpenAPI document as committed in `openapi/openapi.json`.
pub fn openapi_json() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serialises");
    text.push('\n');
    text
}

async fn not_found(req: actix_web::HttpRequest) -> HttpResponse {
    unrouted(&req)
}

/// Unknown routes: 405 with `Allow` when the path is documented with other methods, else 404.
pub(crate) fn unrouted(req: &actix_web::HttpRequest) -> HttpResponse {
    use actix_web::ResponseError;
    let allowed = documented_methods(req.path());
    if allowed.is_empty() {
        return ApiError::not_found("route").error_response();
    }
    let allow = allowed.join(", ");
    let mut reply = ApiError::client(
        actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("this route answers {allow}"),
    )
    .error_response();
    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&allow) {
        reply
            .headers_mut()
            .insert(actix_web::http::header::ALLOW, value);
    }
    reply
}

/// The methods the OpenAPI document lists for a path (`{param}` matches one segment).
fn documented_methods(path: &str) -> Vec<String> {
    static ROUTES: std::sync::OnceLock<Vec<(String, Vec<String>)>> = std::sync::OnceLock::new();
    let routes = ROUTES.get_or_init(|| {
        let doc: serde_json::Value =
            serde_json::from_str(&openapi_json()).expect("the OpenAPI document is JSON");
        doc["paths"]
            .as_object()
            .map(|paths| {
                paths
                    .iter()
                    .map(|(template, item)| {
                        let methods = item
                            .as_object()
                            .map(|ops| ops.keys().map(|m| m.to_uppercase()).collect())
                            .unwrap_or_default();
                        (template.clone(), methods)
                    })
                    .collect()
            })
            .unwrap_or_default()
    });
    let segments: Vec<&str> = path.split('/').collect();
    // How well a template matches: the number of literal segments, as actix prefers literal
    // routes (`/batch`) over parameters (`/{id}`); `None` when it does not match.
    let score = |template: &str| -> Option<usize> {
        let parts: Vec<&str> = template.split('/').collect();
        if parts.len() != segments.len() {
            return None;
        }
        let mut literal = 0;
        for (p, s) in parts.iter().zip(&segments) {
            if p == s {
                literal += 1;
            } else if !p.starts_with('{') || s.is_empty() {
                return None;
            }
        }
        Some(literal)
    };
    let scored: Vec<(usize, &Vec<String>)> = routes
        .iter()
        .filter_map(|(template, methods)| score(template).map(|n| (n, methods)))
        .collect();
    let best = scored.iter().map(|(n, _)| *n).max();
    scored
        .into_iter()
        .filter(|(n, _)| Some(*n) == best)
        .flat_map(|(_, methods)| methods.iter().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Adds every route to an actix app.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(health::healthz)
        .service(health::readyz)
        .service(requests::batch)
        .service(requests::create)
        .service(requests::list)
        .service(requests::get_one)
        .service(requests::act)
        .service(bulk::create)
        .service(bulk::get_one)
        .service(bulk::item_list)
        .service(audit::receipt)
        .service(audit::checkpoint)
        .service(audit::consistency)
        .service(audit::entries)
        .service(audit::export)
        .service(audit::report)
        .service(subjects::lookup)
        .service(restorations::create)
        .service(restorations::get_one)
        .service(webhooks::create)
        .service(webhooks::list)
        .service(webhooks::get_one)
        .service(webhooks::change)
        .service(webhooks::rotate)
        .service(webhooks::test)
        .service(webhooks::deliveries)
        .service(webhooks::redeliver)
        .service(pause::status)
        .service(pause::pause)
        .service(pause::resume)
        .service(metrics::metrics)
        .service(
            SwaggerUi::new("/swagger-ui/{_:.*}").url("/api-docs/openapi.json", ApiDoc::openapi()),
        );
}

/// Starts the HTTP server on a bound listener; each worker thread makes its own state. `pages`
/// adds the routes served beside the API (the console's, from the layer above).
pub fn serve(
    listener: std::net::TcpListener,
    limits: &HttpLimits,
    state: impl Fn() -> AppState + Clone + Send + 'static,
    workers: usize,
    pages: impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
) -> anyhow::Result<Server> {
    let request_timeout = limits.request_timeout;
    let cap = limits.max_connections_per_ip;
    let connections = limits::Connections::default();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(state()))
            .wrap(actix_web::middleware::from_fn(limits::check))
            .wrap_fn(request_span)
            .configure(routes)
            .configure(pages.clone())
            .default_service(web::to(not_found))
    })
    .workers(workers.max(1))
    .client_request_timeout(request_timeout)
    .on_connect(move |conn, ext| limits::on_connect(&connections, cap, conn, ext))
    .shutdown_timeout(10)
    .disable_signals()
    .listen(listener)?
    .run();
    Ok(server)
}

/// A worker process's own small server: `/metrics` (its upstream calls, attempts, limiter and
/// breaker) and health, nothing else.
pub fn serve_metrics(listener: std::net::TcpListener, state: AppState) -> anyhow::Result<Server> {
    let state = web::Data::new(state);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .service(health::healthz)
            .service(health::readyz)
            .service(metrics::metrics)
            .default_service(web::to(not_found))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run();
    Ok(server)
}

/// A span per HTTP request with its own id (the client's `X-Request-Id` when it is a plain token,
/// otherwise a new UUID), returned in `X-Request-Id`: every log line of the request carries it.
/// The path is not logged (it may carry identifiers): only the route template.
///
/// With traces on (`telemetry`), the span is the server span of the call: it continues the
/// caller's `traceparent`, is named `<method> <route template>` and holds the method, the route
/// template and the status (semantic conventions of HTTP), and its trace id shows in the logs.
fn request_span<S, B>(
    req: actix_web::dev::ServiceRequest,
    srv: &S,
) -> impl std::future::Future<Output = Result<actix_web::dev::ServiceResponse<B>, actix_web::Error>>
+ use<S, B>
where
    S: actix_web::dev::Service<
            actix_web::dev::ServiceRequest,
            Response = actix_web::dev::ServiceResponse<B>,
            Error = actix_web::Error,
        >,
{
    use tracing::Instrument;
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    // Probes and scrapes (`/healthz`, `/readyz`, `/metrics`: every few seconds from every
    // monitor) are not traced.
    let probe = matches!(req.path(), "/healthz" | "/readyz" | "/metrics");
    let span = if crate::telemetry::enabled() && probe {
        tracing::info_span!(target: crate::telemetry::UNTRACED, "http", request_id = %id)
    } else if crate::telemetry::enabled() {
        // The span's fields are what the logs show too: the attributes of the trace alone are
        // set on the trace's span (`telemetry::server_span`), not formatted into every line.
        let span = tracing::info_span!(
            "http",
            request_id = %id,
            trace_id = tracing::field::Empty,
            otel.kind = "server",
        );
        crate::telemetry::server_span(&span, req.method().as_str(), req.headers());
        span
    } else {
        tracing::info_span!("http", request_id = %id)
    };
    let traced = (crate::telemetry::enabled() && !probe).then(|| span.clone());
    let started = std::time::Instant::now();
    let call = {
        let _entered = span.enter();
        srv.call(req)
    };
    async move {
        let mut res = call.await?;
        let matched = res.request().match_pattern();
        let route = matched.as_deref().unwrap_or("unmatched");
        tracing::info!(
            method = %res.request().method(),
            route = %route,
            status = res.status().as_u16(),
            duration_ms = started.elapsed().as_secs_f64() * 1000.0,
            "http request"
        );
        if let Some(span) = traced {
            crate::telemetry::server_span_ends(
                &span,
                res.request().method().as_str(),
                matched.as_deref(),
                res.status().as_u16(),
            );
        }
        if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&id) {
            res.headers_mut().insert(
                actix_web::http::header::HeaderName::from_static("x-request-id"),
                value,
            );
        }
        Ok(res)
    }
    .instrument(span)
}

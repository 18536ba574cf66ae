//! Logs and traces through `tracing`. Logs: human-readable by default, JSON with `--log-format
//! json`; `RUST_LOG` chooses what is shown (default `info`). Traces: exported over OTLP/HTTP
//! (protobuf) when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set,
//! configured by the standard `OTEL_*` variables; without it nothing of OpenTelemetry is installed
//! and no span is made for it (docs/operations.md, "Traces").
//!
//! One trace follows an erasure request: the API call that created it (continuing the caller's
//! `traceparent`), then each step a worker runs, each upstream call and each webhook delivery of
//! its events, whose spans take the request's stored `traceparent` as their parent.
//!
//! Nothing logged or exported may carry personal data or a secret: spans hold route templates,
//! methods, statuses, counts, request ids and hosts, never a target id, an upstream id, a
//! pseudonym, a key, a token or a URL's path (tests search `RUST_LOG=trace` logs and the exported
//! spans for planted canaries).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing::subscriber::Interest;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, dynamic_filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The name traces carry when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` names
/// the service.
pub const SERVICE_NAME: &str = "erasure";

/// Whether spans are exported (set once by `init`).
static ENABLED: AtomicBool = AtomicBool::new(false);

/// True when traces are exported: callers make their spans and read trace contexts only then.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// What `init` installed; `shutdown` exports the spans still queued.
#[must_use = "call shutdown() before the process exits, or queued spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is queued (within the exporter's time-out) and stops exporting. Call it
    /// before the process exits.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        // The batch processor's thread sends through this runtime: wait for it off its workers.
        let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(e)) = done {
            eprintln!("warning: the last traces could not be exported: {e}");
        }
    }
}

/// Installs the global subscriber: logs to stderr (so that stdout carries only what a command
/// prints for scripts: an API key, the OpenAPI document) and, when an OTLP endpoint is
/// configured, the exporter of traces. Refuses an OTLP configuration it cannot honour (a
/// protocol other than `http/protobuf`). A second call installs nothing.
pub fn init(format: LogFormat) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let Some(export) = Export::from_env(|name| std::env::var(name).ok())? else {
        // Traces off: the logs alone, filtered for the whole subscriber, as without tracing.
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        let _ = match format {
            LogFormat::Text => builder.try_init(),
            LogFormat::Json => builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .try_init(),
        };
        return Ok(Telemetry { provider: None });
    };
    let provider = export.provider()?;
    // Traces on: the logs and the exporter each filter what they see (`RUST_LOG` for the logs,
    // `exported` for the traces).
    let logs: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_filter(filter)
            .boxed(),
    };
    // A filter that is asked at each span and event of this crate (`Interest::sometimes`), not
    // one whose answer is cached per call site: with two per-layer filters that both always
    // enable a call site, tracing-subscriber skips asking them and a span could reach the
    // exporter's layer with another call site's stale verdict (the steps' spans went missing).
    let ours = dynamic_filter_fn(|meta, _| exported(meta))
        .with_max_level_hint(LevelFilter::INFO)
        .with_callsite_filter(|meta| {
            if exported(meta) {
                Interest::sometimes()
            } else {
                Interest::never()
            }
        });
    let traces = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("erasure"))
        // Each span says what it is by its own attributes; the source file, the thread and
        // busy/idle times would only add bytes and time to every span.
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        // Nothing here reads OpenTelemetry's current context (spans find their parents through
        // `tracing`): entering a span need not make it current there too.
        .with_context_activation(false)
        .with_filter(ours);
    let installed = tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init()
        .is_ok();
    if !installed {
        return Ok(Telemetry { provider: None });
    }
    ENABLED.store(true, Ordering::Relaxed);
    Ok(Telemetry {
        provider: Some(provider),
    })
}

/// The target of spans that are logged but never exported (health probes, metrics scrapes).
pub const UNTRACED: &str = "erasure::untraced";

/// What is exported: this crate's spans at `info` and above, and within them its log lines at
/// `warn` and above (as span events), whatever `RUST_LOG` shows; never `UNTRACED` spans, nor the
/// libraries' spans and lines (the exporter's own HTTP calls among them).
fn exported(meta: &tracing::Metadata<'_>) -> bool {
    let target = meta.target();
    let level = if meta.is_span() {
        tracing::Level::INFO
    } else {
        tracing::Level::WARN
    };
    (target == "erasure" || target.starts_with("erasure::"))
        && target != UNTRACED
        && *meta.level() <= level
}

/// The trace exporter's settings, from the standard variables.
#[derive(Debug, Clone, PartialEq)]
struct Export {
    /// Time-out of one export (`OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, `OTEL_EXPORTER_OTLP_TIMEOUT`,
    /// milliseconds; 10 s).
    timeout: Duration,
}

impl Export {
    /// `None` when traces are off: no endpoint, `OTEL_SDK_DISABLED=true` or
    /// `OTEL_TRACES_EXPORTER=none`. The endpoint itself, the headers, the batch and the sampler
    /// are read by the OpenTelemetry SDK from their standard variables.
    fn from_env(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<Export>> {
        let set = |name: &str| {
            var(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        if set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"))
            .is_none()
        {
            return Ok(None);
        }
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        match set("OTEL_TRACES_EXPORTER").as_deref() {
            None | Some("otlp") => {}
            Some("none") => return Ok(None),
            Some(other) => anyhow::bail!(
                "OTEL_TRACES_EXPORTER={other} is not supported: traces are exported over OTLP \
                 (`otlp`) or not at all (`none`)"
            ),
        }
        for name in [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ] {
            match set(name).as_deref() {
                None => continue,
                Some("http/protobuf") => break,
                Some(other) => anyhow::bail!(
                    "{name}={other} is not supported: this build exports traces over \
                     OTLP/HTTP with protobuf only (`http/protobuf`, a collector's port 4318)"
                ),
            }
        }
        let timeout = match set("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
            .map(|v| ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", v))
            .or_else(|| {
                set("OTEL_EXPORTER_OTLP_TIMEOUT").map(|v| ("OTEL_EXPORTER_OTLP_TIMEOUT", v))
            }) {
            None => Duration::from_secs(10),
            Some((name, ms)) => match ms.parse::<u64>() {
                Ok(ms) if ms > 0 => Duration::from_millis(ms),
                _ => anyhow::bail!("{name} must be a number of milliseconds, e.g. 10000"),
            },
        };
        Ok(Some(Export { timeout }))
    }

    /// The tracer provider: a batch processor (`OTEL_BSP_*`) exporting through the service's
    /// HTTP client, with the resource of `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`
    /// (`service.name` is `erasure` when neither names it).
    fn provider(&self) -> anyhow::Result<SdkTracerProvider> {
        use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
        let client = reqwest::Client::builder()
            .timeout(self.timeout)
            .user_agent(concat!("erasure/", env!("CARGO_PKG_VERSION"), " otlp"))
            .build()?;
        let sender = Sender {
            client,
            runtime: tokio::runtime::Handle::try_current().map_err(|_| {
                anyhow::anyhow!("traces are exported from a Tokio runtime: none is running")
            })?,
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(sender)
            .with_protocol(Protocol::HttpBinary)
            .with_timeout(self.timeout)
            .build()
            .map_err(|e| anyhow::anyhow!("the OTLP trace exporter: {e}"))?;
        let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.trim().is_empty())
            || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| {
                v.split(',')
                    .any(|kv| kv.trim().starts_with("service.name="))
            });
        let mut resource = opentelemetry_sdk::Resource::builder();
        if !named {
            resource = resource.with_service_name(SERVICE_NAME);
        }
        let resource = resource
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .build();
        Ok(SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build())
    }
}

/// Sends the exporter's requests with the service's own `reqwest` (rustls; no second HTTP or
/// TLS stack) on the runtime that started it: the batch processor runs on a thread of its own,
/// outside any runtime.
#[derive(Debug)]
struct Sender {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Sender {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let (parts, body) = request.into_parts();
        let request = self
            .client
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body)
            .build()?;
        let client = self.client.clone();
        let (status, headers, body) = self
            .runtime
            .spawn(async move {
                let reply = client.execute(request).await?;
                let (status, headers) = (reply.status(), reply.headers().clone());
                // A collector answers a small protobuf message; more is not read.
                let body = reply.bytes().await?;
                Ok::<_, reqwest::Error>((status, headers, body.slice(..body.len().min(1 << 20))))
            })
            .await??;
        let mut response = http::Response::new(body);
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Ok(response)
    }
}

/// The W3C `traceparent` of the current span (`00-<trace id>-<span id>-<flags>`), to keep with
/// what the span created (an erasure request): later work continues its trace. `None` when
/// traces are off or the span is not traced.
pub fn traceparent() -> Option<String> {
    if !enabled() {
        return None;
    }
    let context = Span::current().context();
    let span = context.span();
    let sc = span.span_context();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// Makes `span` continue the trace of a stored `traceparent` (as its parent), and records its
/// trace id in its `trace_id` field (logs show it) when it declares one. Does nothing when
/// traces are off; a malformed or missing `traceparent` leaves the span a root.
pub fn continue_trace(span: &Span, traceparent: Option<&str>) {
    if !enabled() || span.is_disabled() {
        return;
    }
    if let Some(parent) = traceparent {
        continue_from(span, &One(parent));
    }
    record_trace_id(span);
}

/// Makes `span` the server span of an HTTP call: it continues the caller's trace when the request
/// carries a valid W3C `traceparent` (and `tracestate`) header, has the method as its name (until
/// `server_span_ends` knows the route) and as `http.request.method`, and records its trace id in
/// its `trace_id` field. Does nothing when traces are off.
pub fn server_span(span: &Span, method: &str, headers: &actix_web::http::header::HeaderMap) {
    if !enabled() || span.is_disabled() {
        return;
    }
    if headers.contains_key("traceparent") {
        continue_from(span, &Headers(headers));
    }
    span.set_attribute("http.request.method", method.to_string());
    record_trace_id(span);
}

/// The end of a server span (`server_span`): named `<method> <route template>` when a route
/// matched (never the path, which may hold ids), with `http.route` and
/// `http.response.status_code`; an error for a 5xx.
pub fn server_span_ends(span: &Span, method: &str, route: Option<&str>, status: u16) {
    if !enabled() || span.is_disabled() {
        return;
    }
    let context = span.context();
    let otel = context.span();
    if let Some(route) = route {
        // The span started when the call came in: a name recorded now would not apply.
        otel.update_name(format!("{method} {route}"));
        otel.set_attribute(opentelemetry::KeyValue::new(
            "http.route",
            route.to_string(),
        ));
    }
    otel.set_attribute(opentelemetry::KeyValue::new(
        "http.response.status_code",
        i64::from(status),
    ));
    if status >= 500 {
        otel.set_status(opentelemetry::trace::Status::error(""));
    }
}

fn continue_from(span: &Span, carrier: &dyn Extractor) {
    let parent = TraceContextPropagator::new().extract(carrier);
    if parent.span().span_context().is_valid() {
        // Only fails for a span already started, which a new one is not.
        let _ = span.set_parent(parent);
    }
}

fn record_trace_id(span: &Span) {
    let context = span.context();
    let trace_id = context.span().span_context().trace_id();
    if trace_id != opentelemetry::trace::TraceId::INVALID {
        span.record("trace_id", tracing::field::display(trace_id));
    }
}

/// A stored `traceparent` as a propagation carrier.
struct One<'a>(&'a str);

impl Extractor for One<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == "traceparent").then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}

/// An HTTP request's headers as a propagation carrier.
struct Headers<'a>(&'a actix_web::http::header::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The host of a URL, for a span (never its path or query, which may carry ids or secrets).
pub fn host_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn export(vars: &[(&str, &str)]) -> anyhow::Result<Option<Export>> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Export::from_env(|name| vars.get(name).cloned())
    }

    #[test]
    fn traces_are_off_without_an_endpoint_or_when_disabled() {
        assert_eq!(export(&[]).unwrap(), None);
        assert_eq!(
            export(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]).unwrap(),
            None
        );
        assert_eq!(export(&[("OTEL_SERVICE_NAME", "x")]).unwrap(), None);
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        assert_eq!(
            export(&[endpoint]).unwrap(),
            Some(Export {
                timeout: Duration::from_secs(10)
            })
        );
        assert!(
            export(&[(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://127.0.0.1:4318/v1/traces"
            )])
            .unwrap()
            .is_some()
        );
        assert_eq!(
            export(&[endpoint, ("OTEL_SDK_DISABLED", "TRUE")]).unwrap(),
            None
        );
        assert_eq!(
            export(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]).unwrap(),
            None
        );
    }

    #[test]
    fn only_http_protobuf_is_accepted_with_a_clear_error() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        assert!(
            export(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")])
                .unwrap()
                .is_some()
        );
        let e = export(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).unwrap_err();
        assert!(e.to_string().contains("http/protobuf"), "{e}");
        // The signal's own variable wins over the general one.
        assert!(
            export(&[
                endpoint,
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ])
            .unwrap()
            .is_some()
        );
        let e = export(&[
            endpoint,
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
        ])
        .unwrap_err();
        assert!(
            e.to_string().contains("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"),
            "{e}"
        );
        let e = export(&[endpoint, ("OTEL_TRACES_EXPORTER", "zipkin")]).unwrap_err();
        assert!(e.to_string().contains("zipkin"), "{e}");
    }

    #[test]
    fn the_export_time_out_is_in_milliseconds() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        let got = export(&[endpoint, ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500")])
            .unwrap()
            .unwrap();
        assert_eq!(got.timeout, Duration::from_millis(2500));
        let e = export(&[endpoint, ("OTEL_EXPORTER_OTLP_TIMEOUT", "2s")]).unwrap_err();
        assert!(e.to_string().contains("milliseconds"), "{e}");
    }

    /// Records the metadata of the spans and events made under it.
    struct Seen(std::sync::Mutex<Vec<&'static tracing::Metadata<'static>>>);

    impl tracing::Subscriber for Seen {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            self.0.lock().unwrap().push(span.metadata());
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            self.0.lock().unwrap().push(event.metadata());
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    #[test]
    fn only_this_crates_spans_and_warnings_are_exported() {
        let seen = std::sync::Arc::new(Seen(Default::default()));
        tracing::subscriber::with_default(seen.clone(), || {
            let _ = tracing::info_span!("a");
            let _ = tracing::debug_span!("b");
            let _ = tracing::info_span!(target: UNTRACED, "c");
            let _ = tracing::info_span!(target: "erasure_sim", "d");
            let _ = tracing::info_span!(target: "reqwest", "e");
            tracing::warn!("f");
            tracing::info!("g");
            tracing::error!(target: "opentelemetry_sdk", "h");
        });
        let names: Vec<&str> = seen
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|m| exported(m))
            .map(|m| {
                if m.is_span() {
                    m.name()
                } else {
                    m.level().as_str()
                }
            })
            .collect();
        assert_eq!(names, ["a", "WARN"]);
    }

    #[test]
    fn hosts_only() {
        assert_eq!(
            host_of("https://hooks.example.com:8443/secret/path?token=x"),
            "hooks.example.com"
        );
        assert_eq!(host_of("not a url"), "");
    }
}

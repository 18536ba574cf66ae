//! Logs through `tracing`: human-readable by default, JSON with `--log-format json`; `RUST_LOG`
//! chooses what is shown (default `info`).
//!
//! Nothing logged may carry personal data or a secret (a test searches `RUST_LOG=trace` logs for
//! planted canaries).

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the global subscriber (once; later calls do nothing). Logs go to stderr so that
/// stdout carries only what a command prints for scripts (an API key, the OpenAPI document).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
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
}

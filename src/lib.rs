//! erasure: GDPR erasure orchestration for the Oxlin (Linxo Connect) aggregator.
//!
//! The parts and the direction of their imports: README, "Where to change what" (held by
//! `tests/it/layers.rs`).

// jemalloc returns freed memory to the system over time and reports what is live (`/metrics`,
// `erasure_heap_bytes`), so a long run shows whether memory grows because of a leak or not. The
// binary sets its options (`MALLOC_CONF` in `src/main.rs`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

pub mod api;
pub mod app;
pub mod audit;
pub mod config;
pub mod console;
#[cfg(feature = "sim")]
pub mod demo;
pub mod domain;
pub mod engine;
pub mod guard;
pub mod jobs;
pub mod metrics;
pub mod secrets;
pub mod service;
pub mod store;
pub mod telemetry;
pub mod upstream;
pub mod webhooks;

/// The aggregator simulator (crate `erasure-sim`), in builds with the `sim` feature.
#[cfg(feature = "sim")]
pub use erasure_sim as sim;

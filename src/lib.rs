//! erasure: GDPR erasure orchestration for the Oxlin (Linxo Connect) aggregator.

pub mod api;
pub mod audit;
pub mod config;
pub mod demo;
pub mod domain;
pub mod engine;
pub mod guard;
pub mod metrics;
pub mod service;
pub mod sim;
pub mod store;
pub mod telemetry;
pub mod upstream;

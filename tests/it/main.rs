//! The service's integration tests, in one binary (linking one test binary per file was most of
//! CI's time): each file of `tests/it/` is a module, `common/` is the harness (a fresh database
//! per test, the simulator and the service on port 0), `driver` drives headless Chromium for the
//! browser tests. A test's name is `<file>::<test>` (`cargo test --test it api::`).
//!
//! Tests run in parallel threads of this one process: a test may not rely on being alone in its
//! process (global metrics count every test's calls; each test has its own database and ports).

mod common;
#[path = "../browser/driver.rs"]
mod driver;

mod api;
mod audit;
mod audit_deploy;
mod audit_report;
mod audit_tree;
mod authz;
mod bad_day;
mod browser;
mod bulk;
mod configuration;
mod console;
mod engine;
mod erasure;
mod guard;
mod layers;
mod openapi;
mod otel;
mod pause;
mod pooler;
mod retention;
mod security;
mod shared_cap;
mod sim;
mod status;
mod webhooks;

//! What every background job shares: the one backoff of retries, the one way to run a task
//! periodically until shutdown, and the one way to hold a job's lease while working (when to
//! renew it). Pure scheduling: no SQL and no upstream calls (the queues' claims and leases are
//! SQL in `store::lease`, described per queue by `store::steps`, `store::restorations` and
//! `store::webhooks`); never imports `store`: a lease is renewed through a closure.

pub mod backoff;
pub mod lease;
pub mod periodic;
pub mod slot;

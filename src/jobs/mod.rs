//! What every background job shares: the one backoff of retries and the one way to run a task
//! periodically until shutdown. Pure scheduling: no SQL and no upstream calls (the queues' claims
//! and leases are SQL in `store::steps`, `store::restorations` and `store::webhooks`).

pub mod backoff;
pub mod periodic;
pub mod slot;

//! A job's worker slot, lent back while the job waits: a step that waits for a `Retry-After` or
//! a retry's delay longer than [`LEND_AFTER`] gives its slot to another step meanwhile, and takes
//! one again when due (before its next call). The slot is task-local, so the upstream client
//! waits through [`wait`] and [`wait_until`] without knowing the engine.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Waits shorter than this keep the slot (lending it costs a wake-up and a wait for it back).
pub const LEND_AFTER: Duration = Duration::from_millis(200);

/// The slot a job runs in.
struct Lender {
    slots: Arc<Semaphore>,
    held: Mutex<Option<OwnedSemaphorePermit>>,
}

tokio::task_local! {
    static SLOT: Lender;
}

/// Runs `job` in `permit`, a slot of `slots`; the slot is released when the job ends (or while it
/// waits long).
pub async fn run_in<F: Future>(
    slots: Arc<Semaphore>,
    permit: OwnedSemaphorePermit,
    job: F,
) -> F::Output {
    let lender = Lender {
        slots,
        held: Mutex::new(Some(permit)),
    };
    SLOT.scope(lender, job).await
}

/// Sleeps `delay`; see [`wait_until`].
pub async fn wait(delay: Duration) {
    wait_until(Instant::now() + delay).await
}

/// Sleeps until `until`. In a job run by [`run_in`], a wait longer than [`LEND_AFTER`] gives the
/// job's slot back for its duration and takes one again before returning.
pub async fn wait_until(until: Instant) {
    let long = until.saturating_duration_since(Instant::now()) > LEND_AFTER;
    let lent = long
        && SLOT
            .try_with(|lender| {
                lender
                    .held
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take()
                    .is_some()
            })
            .unwrap_or(false);
    tokio::time::sleep_until(until).await;
    if lent {
        let slots = SLOT.with(|lender| lender.slots.clone());
        if let Ok(permit) = slots.acquire_owned().await {
            SLOT.with(|lender| {
                *lender.held.lock().unwrap_or_else(PoisonError::into_inner) = Some(permit);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_long_wait_lends_the_slot_and_a_short_one_keeps_it() {
        let slots = Arc::new(Semaphore::new(1));
        let permit = slots.clone().acquire_owned().await.unwrap();
        let job = tokio::spawn(run_in(slots.clone(), permit, async {
            wait(Duration::from_millis(50)).await;
            wait(Duration::from_secs(5)).await;
        }));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(slots.available_permits(), 0, "a short wait keeps the slot");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(slots.available_permits(), 1, "a long wait lends it");
        // Another job takes the lent slot; the waiting one takes it back once it is free.
        let other = slots.clone().acquire_owned().await.unwrap();
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(!job.is_finished(), "it waits for a slot before going on");
        drop(other);
        job.await.unwrap();
        assert_eq!(slots.available_permits(), 1, "released when the job ends");
    }
}

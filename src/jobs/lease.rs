//! Holding a lease while working: the one rule of when a job's lease is renewed (a third of the
//! lease after it was last renewed), and [`hold`], which runs a job's work while renewing its
//! lease in the same future (no detached task: a worker that dies or is aborted stops renewing at
//! once, and the queue's rescue hands the job to another).
//!
//! Pure scheduling: no SQL (the renewal is the caller's closure, `store::lease` underneath).

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How long after its last renewal a lease of `lease` is renewed: a third of it, so that two
/// renewals may fail before it lapses.
pub fn renew_after(lease: Duration) -> Duration {
    lease / 3
}

/// How holding a lease while working ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Held<T> {
    /// The work finished while the lease was held.
    Done(T),
    /// A renewal found the lease no longer held: the work was dropped.
    Lost,
    /// `stop` came first: the work was dropped.
    Stopped,
}

/// Runs `work`, calling `renew` every [`renew_after`]`(lease)` until it ends. `renew` answers
/// whether the lease is still held (a renewal that failed for another reason answers true, and
/// the next one is tried as planned). A large `work` is best pinned by the caller and passed as
/// `Pin<&mut _>`: the future of `hold` then holds a reference, not a second copy of its size.
pub async fn hold<W, R, Fut>(
    work: W,
    lease: Duration,
    stop: &CancellationToken,
    mut renew: R,
) -> Held<W::Output>
where
    W: Future,
    R: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    tokio::pin!(work);
    let mut every = tokio::time::interval(renew_after(lease));
    every.tick().await;
    loop {
        tokio::select! {
            done = &mut work => return Held::Done(done),
            _ = stop.cancelled() => return Held::Stopped,
            _ = every.tick() => if !renew().await {
                return Held::Lost;
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_lease_is_renewed_while_the_work_lasts_and_lost_or_stopped_ends_it() {
        let stop = CancellationToken::new();
        let lease = Duration::from_secs(30);
        let mut renewals = 0;
        let work = tokio::time::sleep(Duration::from_secs(35));
        let held = hold(work, lease, &stop, || {
            renewals += 1;
            async { true }
        });
        assert_eq!(held.await, Held::Done(()));
        assert_eq!(renewals, 3, "at 10, 20 and 30 s");

        let lost = hold(std::future::pending::<()>(), lease, &stop, || async {
            false
        });
        assert_eq!(lost.await, Held::Lost);

        stop.cancel();
        let stopped = hold(std::future::pending::<()>(), lease, &stop, || async {
            true
        });
        assert_eq!(stopped.await, Held::Stopped);
    }
}

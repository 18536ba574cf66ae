//! One periodic task: runs a round every `period` until `stop`; a round's error is logged and the
//! next round comes as planned (a background task never ends on an error).

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// When the first round runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum First {
    /// At once, then every period.
    Now,
    /// After one period.
    AfterPeriod,
}

/// Runs `round` every `period` until `stop` (a round in progress finishes first); a round that
/// fails is logged with `what` and does not stop the next.
pub async fn every<F, Fut>(
    what: &'static str,
    period: Duration,
    first: First,
    stop: CancellationToken,
    mut round: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    if first == First::AfterPeriod && !pause(period, &stop).await {
        return;
    }
    loop {
        if let Err(e) = round().await {
            tracing::warn!(task = what, error = %format!("{e:#}"), "background round failed");
        }
        if !pause(period, &stop).await {
            return;
        }
    }
}

/// Waits `period`; false when `stop` came first.
async fn pause(period: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(period) => true,
        _ = stop.cancelled() => false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn rounds_go_on_after_a_failure_and_stop_at_shutdown() {
        let stop = CancellationToken::new();
        let rounds = Arc::new(AtomicU32::new(0));
        let task = tokio::spawn({
            let (stop, rounds) = (stop.clone(), rounds.clone());
            every(
                "test",
                Duration::from_secs(10),
                First::Now,
                stop,
                move || {
                    let n = rounds.fetch_add(1, Ordering::SeqCst);
                    async move {
                        anyhow::ensure!(n != 0, "the first round fails");
                        Ok(())
                    }
                },
            )
        });
        tokio::time::sleep(Duration::from_secs(25)).await;
        assert_eq!(rounds.load(Ordering::SeqCst), 3, "at 0, 10 and 20 s");
        stop.cancel();
        task.await.unwrap();
        let later = tokio::spawn(every(
            "test",
            Duration::from_secs(10),
            First::AfterPeriod,
            stop.clone(),
            || async { Ok(()) },
        ));
        later.await.unwrap();
    }
}

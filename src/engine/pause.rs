//! Follows the pause switch (`store::pause`) in this process: within [`FOLLOW_EVERY`] of a change
//! made by any process, this process's upstream client holds or lets go the calls it has not sent
//! (`Upstream::hold`), and its workers stop or resume claiming steps. Read at start too, so a
//! paused deployment stays paused through restarts.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::jobs::periodic::{self, First};
use crate::store::{self, Db};
use crate::upstream::Upstream;

/// How often each process reads the switch: a pause holds every process's calls within a second.
pub const FOLLOW_EVERY: Duration = Duration::from_millis(250);

/// Reads the switch and applies it to `upstream`.
pub async fn apply(db: &Db, upstream: &Upstream) -> anyhow::Result<()> {
    let pause = store::pause::current(db).await?;
    if pause.paused != upstream.on_hold() {
        upstream.hold(pause.paused);
        if pause.paused {
            tracing::warn!("upstream work paused: no upstream call starts until it is resumed");
        } else {
            tracing::info!("upstream work resumed");
        }
    }
    Ok(())
}

/// Applies the switch every [`FOLLOW_EVERY`] until `stop`.
pub async fn follow(db: Db, upstream: Arc<Upstream>, stop: CancellationToken) {
    periodic::every("pause", FOLLOW_EVERY, First::AfterPeriod, stop, || {
        apply(&db, &upstream)
    })
    .await
}

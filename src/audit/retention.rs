//! Retention of erasure records: once every request made under a pseudonym epoch is closed, and
//! it and the epoch ended more than `ERASURE_RETENTION_DAYS` ago, the epoch's key is destroyed
//! (`store::epochs::destroy_if_expired`), with a `pseudonym_epoch_destroyed` audit entry naming
//! the epoch and how many requests it covered. The requests, their states, times and the audit
//! log stay as they are, and every receipt, export and proof still verifies; nothing links them
//! to a person any more. Run daily by the workers and by `erasure retention run [--as-of T]
//! [--dry-run] [--yes]`; any number of runs at once destroy each epoch once.
//!
//! As of a time `T`, the rule is evaluated as it will stand then: an epoch with no later one yet
//! ends `ERASURE_PSEUDONYM_EPOCH_DAYS` after it started. A run as of a future time destroys now
//! keys that are only due then (the current epoch's among them), so it needs a confirmation
//! (`confirmation_needed`); `--dry-run` says what a run would destroy and changes nothing.

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::jobs::periodic::{self, First};

use super::pseudonym::Pseudonymizer;
use super::seal::Sealer;
use crate::config::RetentionSettings;
pub use crate::store::epochs::Apply;
use crate::store::{Db, Sessions, epochs};

/// What the status page and the report say of the retention: how long records are kept and
/// since when they are held.
pub fn statement(retention_days: u32, f: &epochs::Figures) -> String {
    let since = f.oldest_live_start.map_or_else(
        || "none yet".to_string(),
        |t| t.format("%Y-%m-%d").to_string(),
    );
    format!(
        "Retention: erasure records can be linked to their target for {retention_days} days after \
         their request closes; then the key of their pseudonym epoch is destroyed. Oldest live \
         pseudonym epoch: started {since} ({} live, {} destroyed).",
        f.live, f.destroyed
    )
}

/// An epoch this run destroyed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destroyed {
    pub epoch: i32,
    /// Requests pseudonymised under it.
    pub requests: i64,
}

/// Why a run as of `as_of` must not go ahead without a confirmation: it is in the future (it
/// would destroy now keys only due then, perhaps the one in use). `None` for a dry run, or as of
/// now or earlier.
pub fn confirmation_needed(
    as_of: DateTime<Utc>,
    now: DateTime<Utc>,
    apply: Apply,
) -> Option<String> {
    (apply == Apply::Destroy && as_of > now).then(|| {
        format!(
            "--as-of {} is in the future: this run would destroy now the pseudonym keys that are \
             only due for destruction then (the key in use among them), and a destroyed key \
             cannot be brought back. Run it with --dry-run to see what it would destroy, or add \
             --yes to destroy them now.",
            as_of.to_rfc3339()
        )
    })
}

/// Destroys every epoch past its retention as of `as_of` (normally now), or with
/// `Apply::DryRun` only answers which it would destroy.
pub async fn run_once(
    db: &Db,
    sessions: &Sessions,
    retention_days: u32,
    epoch_days: u32,
    as_of: DateTime<Utc>,
    apply: Apply,
) -> anyhow::Result<Vec<Destroyed>> {
    let cutoff = as_of - chrono::Duration::days(i64::from(retention_days));
    let mut destroyed = Vec::new();
    for epoch in epochs::ended_by(db, cutoff, epoch_days).await? {
        if let Some(requests) =
            epochs::destroy_if_expired(db, epoch, cutoff, epoch_days, retention_days, as_of, apply)
                .await?
        {
            if apply == Apply::Destroy {
                tracing::info!(epoch, requests, "pseudonym epoch destroyed (retention)");
            }
            destroyed.push(Destroyed { epoch, requests });
        }
    }
    if !destroyed.is_empty() && apply == Apply::Destroy {
        compact(sessions).await;
    }
    Ok(destroyed)
}

/// Tries to compact `pseudonym_epochs` this many times, about 25 s in all.
const COMPACT_ATTEMPTS: u64 = 30;

/// Rewrites `pseudonym_epochs` so that the destroyed keys leave its file too. Each try waits for
/// its lock only briefly (`store::epochs::compact`), so that it never holds up the table's readers
/// for long; another retention run in its transaction (or a slow reader) can keep the lock from
/// it for longer than one try, so it tries again for about 25 s, pausing up to a second between
/// tries (5 tries in 1.5 s were seen to miss it on a loaded machine).
async fn compact(sessions: &Sessions) {
    // Once, before the tries: a try that waits for its lock again need not wait for these again.
    match epochs::older_transactions_ended(sessions).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            "transactions older than the destruction still run: the compaction may keep a \
             destroyed key on disk until autovacuum or the next run"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot see the database's older transactions"),
    }
    for attempt in 1..=COMPACT_ATTEMPTS {
        match epochs::compact(sessions).await {
            Ok(()) => return,
            Err(e) if attempt == COMPACT_ATTEMPTS => {
                tracing::warn!(error = %e, "pseudonym_epochs not compacted: run VACUUM FULL on it")
            }
            Err(_) => {
                let pause = (100 * attempt).min(1000);
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await
            }
        }
    }
}

/// Runs the retention every `settings.run_every` (first at start), then reloads this process's
/// keys at once when it destroyed one.
pub async fn run(
    db: Db,
    sessions: Sessions,
    sealer: Sealer,
    pseudonyms: Pseudonymizer,
    settings: RetentionSettings,
    stop: CancellationToken,
) {
    let Some(every) = settings.run_every else {
        return;
    };
    periodic::every("retention", every, First::Now, stop, || async {
        let destroyed = run_once(
            &db,
            &sessions,
            settings.retention_days,
            settings.epoch_days,
            Utc::now(),
            Apply::Destroy,
        )
        .await?;
        if !destroyed.is_empty() {
            super::epochs::refresh_or_warn(&db, &sealer, &pseudonyms, settings.epoch_days).await;
        }
        Ok(())
    })
    .await
}

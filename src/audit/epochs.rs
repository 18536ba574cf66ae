//! Pseudonym key epochs: new pseudonyms are made under the key of the epoch that started last; a
//! new epoch, with a random key, starts every `ERASURE_PSEUDONYM_EPOCH_DAYS`. Keys are kept in
//! `pseudonym_epochs`, sealed with `ERASURE_DATA_KEY` (`pseudonym-epoch:<version>` as associated
//! data), and derived from nothing that lives on, so that destroying one (`audit::retention`) is
//! final. Configured keys (`ERASURE_PSEUDONYM_KEY`, `ERASURE_PSEUDONYM_OLD_KEYS`) are migrated
//! into epochs of their versions once.
//!
//! Every process keeps the live keys in its `Pseudonymizer` and reloads them every
//! `RetentionSettings::refresh` (a destroyed key leaves its memory then; look-ups also check
//! liveness in the database: `store::epochs::live_versions`). Never logs or returns a key.

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::jobs::periodic::{self, First};

use super::pseudonym::Pseudonymizer;
use super::seal::Sealer;
use crate::config::RetentionSettings;
use crate::secrets::{Key32, Keys};
use crate::store::{Db, epochs};

fn aad(version: i32) -> Vec<u8> {
    format!("pseudonym-epoch:{version}").into_bytes()
}

fn open(sealer: &Sealer, version: i32, sealed: &[u8]) -> anyhow::Result<Key32> {
    let bytes = zeroize::Zeroizing::new(
        sealer
            .open_with(&aad(version), sealed)
            .with_context(|| format!("the key of pseudonym epoch {version}"))?,
    );
    let bytes: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .context("a pseudonym epoch's key is not 32 bytes")?;
    Ok(Key32::from_bytes(bytes))
}

/// Migrates the configured keys into epochs, starts a new epoch when one is due (or none is
/// live), and answers this process's pseudonymizer with every live key.
pub async fn start(
    db: &Db,
    sealer: &Sealer,
    keys: &Keys,
    epoch_days: u32,
) -> anyhow::Result<Pseudonymizer> {
    import(db, sealer, keys).await?;
    let (current, old) = prepare(db, sealer, epoch_days).await?;
    Ok(Pseudonymizer::new(current.1, current.0).with_old_keys(&old))
}

/// Starts a new epoch when due and reloads the live keys into `pseudonyms` (in every clone).
pub async fn refresh(
    db: &Db,
    sealer: &Sealer,
    pseudonyms: &Pseudonymizer,
    epoch_days: u32,
) -> anyhow::Result<()> {
    let (current, old) = prepare(db, sealer, epoch_days).await?;
    pseudonyms.replace(current, &old);
    Ok(())
}

/// `refresh`, or a warning that says why not (the keys loaded before stay in use).
pub async fn refresh_or_warn(
    db: &Db,
    sealer: &Sealer,
    pseudonyms: &Pseudonymizer,
    epoch_days: u32,
) {
    if let Err(e) = refresh(db, sealer, pseudonyms, epoch_days).await {
        tracing::warn!(error = %format!("{e:#}"), "pseudonym epochs not reloaded");
    }
}

/// Refreshes every `settings.refresh` until `stop`.
pub async fn run(
    db: Db,
    sealer: Sealer,
    pseudonyms: Pseudonymizer,
    settings: RetentionSettings,
    stop: CancellationToken,
) {
    periodic::every("epochs", settings.refresh, First::AfterPeriod, stop, || {
        refresh(&db, &sealer, &pseudonyms, settings.epoch_days)
    })
    .await
}

/// Configured keys become epochs of their versions (older ones starting with the first request,
/// the current one now); a version already stored must have the same key.
async fn import(db: &Db, sealer: &Sealer, keys: &Keys) -> anyhow::Result<()> {
    let mut configured: Vec<(u32, &Key32, bool)> = keys
        .pseudonym_old
        .iter()
        .map(|(v, k)| (*v, k, false))
        .collect();
    if let Some(key) = &keys.pseudonym {
        configured.push((keys.pseudonym_version, key, true));
    }
    if configured.is_empty() {
        return Ok(());
    }
    let mut tx = db.begin().await?;
    epochs::lock(&mut tx).await?;
    let stored = epochs::all(&mut tx).await?;
    let first_request = epochs::first_request_at(&mut tx).await?;
    for (version, key, current) in configured {
        let version = i32::try_from(version).context("a pseudonym key version is too large")?;
        match stored.iter().find(|e| e.version == version) {
            None => {
                let sealed = sealer.seal_with(&aad(version), key.bytes());
                let starts_at = (!current).then_some(first_request);
                epochs::insert(&mut tx, version, &sealed, "configured", starts_at).await?;
                tracing::info!(version, "configured pseudonym key migrated into an epoch");
            }
            Some(e) => match &e.key_sealed {
                None => tracing::warn!(
                    version,
                    "the configured pseudonym key of this version belongs to an epoch retention \
                     destroyed: it is not used; remove it from the configuration"
                ),
                Some(sealed) => {
                    if open(sealer, version, sealed)? != *key {
                        anyhow::bail!(
                            "pseudonym key version {version} is configured with another key than \
                             the database's epoch {version}: epochs rotate by themselves \
                             (ERASURE_PSEUDONYM_EPOCH_DAYS); configure the key it had, or none"
                        );
                    }
                }
            },
        }
    }
    tx.commit().await?;
    Ok(())
}

type Ring = ((u32, Key32), Vec<(u32, Key32)>);

/// Starts a new epoch with a random key when the last one is `epoch_days` old (or none is
/// live), once for every process, then reads the live keys: the last started one is current.
async fn prepare(db: &Db, sealer: &Sealer, epoch_days: u32) -> anyhow::Result<Ring> {
    let mut tx = db.begin().await?;
    if epochs::new_epoch_due(&mut tx, epoch_days).await? {
        epochs::lock(&mut tx).await?;
        if epochs::new_epoch_due(&mut tx, epoch_days).await? {
            let version = epochs::next_version(&mut tx).await?;
            let key = Key32::random();
            let sealed = sealer.seal_with(&aad(version), key.bytes());
            epochs::insert(&mut tx, version, &sealed, "random", None).await?;
            tracing::info!(version, "a new pseudonym epoch started");
        }
    }
    tx.commit().await?;
    let live = epochs::live(db).await?;
    let mut current = None;
    let mut old = Vec::with_capacity(live.len());
    for e in live {
        let Some(sealed) = &e.key_sealed else {
            continue;
        };
        let key = open(sealer, e.version, sealed)?;
        let version = e.version as u32;
        if e.started {
            old.extend(current.replace((version, key)));
        } else {
            old.push((version, key));
        }
    }
    let current = current.context("no pseudonym epoch has started")?;
    Ok((current, old))
}

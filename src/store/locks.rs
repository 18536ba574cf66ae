//! Every PostgreSQL advisory lock of the service, in one place: which work each one makes
//! one-process-at-a-time, its key, and the one way to take it. Transaction-scoped locks end with
//! their transaction; the event stream reader's is the only one held by a session (its
//! connection), for as long as that process reads.

use sqlx::PgConnection;

/// The work a lock serialises across processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    /// Sequencing the audit log and signing checkpoints (`audit::log`).
    AuditWriter,
    /// Reading the upstream event stream (`guard::events`): one reader at a time.
    EventReader,
    /// Changing the processes' shares of the upstream caps (`engine::shares`).
    Shares,
    /// Creating and destroying pseudonym key epochs (`audit::epochs`, retention).
    Epochs,
}

impl Lock {
    /// The lock's key: "erasure" and a number, or "epochs".
    fn key(self) -> i64 {
        match self {
            Lock::AuditWriter => 0x6572_6173_7572_6501,
            Lock::EventReader => 0x6572_6173_7572_6502,
            Lock::Shares => 0x6572_6173_7572_6503,
            Lock::Epochs => 0x6570_6f63_6873,
        }
    }
}

/// Takes `lock` for the rest of the transaction, waiting for it.
pub async fn for_transaction(tx: &mut PgConnection, lock: Lock) -> sqlx::Result<()> {
    sqlx::query("select pg_advisory_xact_lock($1)")
        .bind(lock.key())
        .execute(tx)
        .await?;
    Ok(())
}

/// Takes `lock` for the rest of the transaction if it is free: false at once when another
/// process holds it.
pub async fn try_for_transaction(tx: &mut PgConnection, lock: Lock) -> sqlx::Result<bool> {
    sqlx::query_scalar("select pg_try_advisory_xact_lock($1)")
        .bind(lock.key())
        .fetch_one(tx)
        .await
}

/// Takes `lock` for this connection's session if it is free: true when the connection now holds
/// it (until it closes).
pub async fn try_for_session(conn: &mut PgConnection, lock: Lock) -> sqlx::Result<bool> {
    sqlx::query_scalar("select pg_try_advisory_lock($1)")
        .bind(lock.key())
        .fetch_one(conn)
        .await
}

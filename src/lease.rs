//! The maintenance lease: what replaces the session-level advisory locks (leader and maintenance
//! lock) behind a transaction-mode pooler, where no session outlives a transaction.
//!
//! One row, `partkeeper.leases` named [`MAINTENANCE`], says who may change the database:
//! `holder` (one id per process), `token` (raised by one on every take-over: the fencing token)
//! and `expires_at` (server clock only, so client clocks never matter). The daemon's leader
//! holds it for as long as it leads and renews it every heartbeat; a one-shot `maintain` takes
//! it for its pass. A lease that is not renewed expires after its TTL and may then be taken.
//!
//! Fencing: every DDL step's transaction first reads the row `FOR KEY SHARE` and checks holder,
//! token and expiry ([`check_fence`]); a take-over reads it `FOR UPDATE` ([`try_take`]), which
//! waits for any step still running under the old token. So a step runs only while its lease is
//! valid, and a new holder starts only after the old holder's step has ended: a stale leader
//! can never act. The holder's own renewal is a plain `UPDATE` (`FOR NO KEY UPDATE`), which a
//! step's `FOR KEY SHARE` does not block.

use std::time::Duration;

use sqlx::{Connection, Executor, PgConnection};

use crate::pooler::GuardError;

/// The lease that allows maintenance on this database.
pub const MAINTENANCE: &str = "maintenance";
/// The daemon's lease: renewed every heartbeat (1 s), taken over this long after its leader
/// stopped renewing (a crash, `kill -9`, a lost network).
pub const LEADER_TTL: Duration = Duration::from_secs(5);
/// A one-shot `maintain`'s lease, renewed by each of its steps.
pub const COMMAND_TTL: Duration = Duration::from_secs(60);
/// A take-over waits at most this long for a step still running under the old token.
const TAKE_LOCK_TIMEOUT: Duration = Duration::from_millis(500);
/// A renewal may queue behind a take-over attempt (at most [`TAKE_LOCK_TIMEOUT`]); it must
/// still answer within the heartbeat's 3 s.
const RENEW_LOCK_TIMEOUT: Duration = Duration::from_secs(2);

const CREATE: &str = "
CREATE SCHEMA IF NOT EXISTS partkeeper;
CREATE TABLE IF NOT EXISTS partkeeper.leases (
    name       text PRIMARY KEY,
    holder     text NOT NULL,
    token      bigint NOT NULL,
    expires_at timestamptz NOT NULL
)";

/// A lease this process holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub holder: String,
    pub token: i64,
    /// `Some(ttl)`: each step renews the lease (a one-shot command, which has no heartbeat).
    pub renew: Option<Duration>,
}

tokio::task_local! {
    /// The lease the DDL steps of this task run under (behind a transaction pooler).
    pub static FENCE: Held;
}

/// This process's holder id: host (when known), pid and a random part, so a restarted process
/// never passes for its predecessor.
pub fn new_holder() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    format!(
        "{host}{}pid {} #{:08x}",
        if host.is_empty() { "" } else { " " },
        std::process::id(),
        fastrand::u32(..)
    )
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("cannot create partkeeper.leases, the table that replaces advisory locks behind a transaction pooler: {0}. Grant this user CREATE on the database, or create it once as an owner:{CREATE}")]
    Create(String),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// Creates the lease table if it is missing (two processes may race: the loser sees it made).
pub async fn ensure_table(conn: &mut PgConnection) -> Result<(), LeaseError> {
    for attempt in 0..2 {
        let mut tx = conn.begin().await?;
        let exists: bool =
            sqlx::query_scalar("SELECT to_regclass('partkeeper.leases') IS NOT NULL")
                .persistent(false)
                .fetch_one(&mut *tx)
                .await?;
        if exists {
            tx.commit().await?;
            return Ok(());
        }
        crate::pg::set_local_timeouts(&mut tx, TAKE_LOCK_TIMEOUT, Duration::from_secs(10)).await?;
        // `executor.execute(raw_sql(..))`: see `execute::run_step` (rust-lang/rust#110338).
        let created = tx.execute(sqlx::raw_sql(CREATE)).await;
        match created {
            Ok(_) => {
                tx.commit().await?;
                return Ok(());
            }
            // A concurrent CREATE won the race (unique_violation / duplicate object).
            Err(e)
                if attempt == 0
                    && matches!(
                        crate::pg::sqlstate(&e).as_deref(),
                        Some("23505" | "42P06" | "42P07")
                    ) => {}
            Err(e) => return Err(LeaseError::Create(crate::pg::describe(&e))),
        }
    }
    Ok(())
}

/// Takes the lease if it is free or expired (raising the token), in one transaction. `None`:
/// someone else holds it (or a step under the old token is still running).
pub async fn try_take(
    conn: &mut PgConnection,
    holder: &str,
    ttl: Duration,
) -> Result<Option<i64>, sqlx::Error> {
    let mut tx = conn.begin().await?;
    crate::pg::set_local_timeouts(&mut tx, TAKE_LOCK_TIMEOUT, Duration::from_secs(10)).await?;
    let ttl_ms = ttl.as_millis() as i64;
    let inserted: Option<i64> = sqlx::query_scalar(
        "INSERT INTO partkeeper.leases (name, holder, token, expires_at)
         VALUES ($1, $2, 1, clock_timestamp() + $3 * interval '1 millisecond')
         ON CONFLICT (name) DO NOTHING RETURNING token",
    )
    .bind(MAINTENANCE)
    .bind(holder)
    .bind(ttl_ms)
    .persistent(false)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(token) = inserted {
        tx.commit().await?;
        return Ok(Some(token));
    }
    // FOR UPDATE waits for steps holding the row FOR KEY SHARE (see the module docs).
    let free: Option<i64> = match sqlx::query_scalar(
        "SELECT token FROM partkeeper.leases
          WHERE name = $1 AND (expires_at <= clock_timestamp() OR holder = $2) FOR UPDATE",
    )
    .bind(MAINTENANCE)
    .bind(holder)
    .persistent(false)
    .fetch_optional(&mut *tx)
    .await
    {
        Ok(v) => v,
        Err(e) if crate::pg::is_retryable(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(_) = free else {
        tx.commit().await?;
        return Ok(None);
    };
    let token: i64 = sqlx::query_scalar(
        "UPDATE partkeeper.leases
            SET holder = $2, token = token + 1,
                expires_at = clock_timestamp() + $3 * interval '1 millisecond'
          WHERE name = $1 RETURNING token",
    )
    .bind(MAINTENANCE)
    .bind(holder)
    .bind(ttl_ms)
    .persistent(false)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(token))
}

/// Extends a lease this process holds. `false`: it is no longer ours (taken over).
pub async fn renew(
    conn: &mut PgConnection,
    held: &Held,
    ttl: Duration,
) -> Result<bool, sqlx::Error> {
    let mut tx = conn.begin().await?;
    crate::pg::set_local_timeouts(&mut tx, RENEW_LOCK_TIMEOUT, Duration::from_secs(10)).await?;
    let renewed = renew_in(&mut tx, held, ttl).await?;
    tx.commit().await?;
    Ok(renewed)
}

async fn renew_in(
    conn: &mut PgConnection,
    held: &Held,
    ttl: Duration,
) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "UPDATE partkeeper.leases SET expires_at = clock_timestamp() + $4 * interval '1 millisecond'
          WHERE name = $1 AND holder = $2 AND token = $3",
    )
    .bind(MAINTENANCE)
    .bind(&held.holder)
    .bind(held.token)
    .bind(ttl.as_millis() as i64)
    .persistent(false)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Gives the lease back: it expires now (the row and its token stay, so tokens only grow).
pub async fn release(conn: &mut PgConnection, held: &Held) -> Result<(), sqlx::Error> {
    let mut tx = conn.begin().await?;
    crate::pg::set_local_timeouts(&mut tx, RENEW_LOCK_TIMEOUT, Duration::from_secs(10)).await?;
    sqlx::query(
        "UPDATE partkeeper.leases SET expires_at = clock_timestamp()
          WHERE name = $1 AND holder = $2 AND token = $3",
    )
    .bind(MAINTENANCE)
    .bind(&held.holder)
    .bind(held.token)
    .persistent(false)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Inside a step's transaction: the task's lease ([`FENCE`]) is still valid, and stays so until
/// the step commits (the row is locked `FOR KEY SHARE`, or renewed when the holder has no
/// heartbeat).
pub async fn check_fence(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    let Ok(held) = FENCE.try_with(Held::clone) else {
        return Err(GuardError::NoLease.into_sqlx());
    };
    let valid = match held.renew {
        Some(ttl) => {
            let n = sqlx::query(
                "UPDATE partkeeper.leases SET expires_at = clock_timestamp() + $4 * interval '1 millisecond'
                  WHERE name = $1 AND holder = $2 AND token = $3 AND expires_at > clock_timestamp()",
            )
            .bind(MAINTENANCE)
            .bind(&held.holder)
            .bind(held.token)
            .bind(ttl.as_millis() as i64)
            .persistent(false)
            .execute(conn)
            .await?
            .rows_affected();
            n == 1
        }
        None => sqlx::query_scalar::<_, bool>(
            "SELECT true FROM partkeeper.leases
              WHERE name = $1 AND holder = $2 AND token = $3 AND expires_at > clock_timestamp()
                FOR KEY SHARE",
        )
        .bind(MAINTENANCE)
        .bind(&held.holder)
        .bind(held.token)
        .persistent(false)
        .fetch_optional(conn)
        .await?
        .is_some(),
    };
    if valid {
        Ok(())
    } else {
        Err(GuardError::LeaseLost.into_sqlx())
    }
}

/// A one-shot maintenance pass behind a transaction pooler: under the daemon's lease when it
/// runs one ([`FENCE`] already set), else under a lease of its own, taken within `lock_wait`
/// and given back at the end.
pub async fn maintain_pass(
    conn: &mut PgConnection,
    db: &crate::config::DatabaseConfig,
    policies: &[crate::config::TablePolicy],
    opts: &crate::maintain::Options,
    started: std::time::Instant,
) -> Result<crate::maintain::PassReport, crate::error::Error> {
    use crate::maintain::{pass_locked, skipped, PassReport};
    let deadline = crate::pg::reply_deadline(db);
    let report = |tables| PassReport {
        tables,
        skipped: None,
        dry_run: false,
        duration_ms: started.elapsed().as_millis() as u64,
    };
    if FENCE.try_with(|_| ()).is_ok() {
        let mut lost = false;
        return Ok(report(
            pass_locked(conn, db, policies, opts, &mut lost).await?,
        ));
    }
    match crate::pg::answered(deadline, async { Ok(ensure_table(conn).await) }).await? {
        Ok(()) => {}
        Err(LeaseError::Sql(e)) => return Err(e.into()),
        Err(e @ LeaseError::Create(_)) => return Err(crate::error::Error::Failed(e.to_string())),
    }
    let holder = new_holder();
    let give_up = std::time::Instant::now() + opts.lock_wait;
    let token = loop {
        match crate::pg::answered(deadline, try_take(conn, &holder, COMMAND_TTL)).await? {
            Some(token) => break token,
            None if std::time::Instant::now() >= give_up => return Ok(skipped(started)),
            None => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let held = Held {
        holder,
        token,
        renew: Some(COMMAND_TTL),
    };
    let mut lost = false;
    let result = FENCE
        .scope(
            held.clone(),
            pass_locked(conn, db, policies, opts, &mut lost),
        )
        .await;
    if !lost {
        let _ = crate::pg::answered(deadline, release(conn, &held)).await;
    }
    Ok(report(result?))
}

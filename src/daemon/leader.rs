//! Leader election, per database: the instance whose dedicated session holds the session-level
//! advisory lock [`LEADER_LOCK`] in that database leads it, and only the leader runs its
//! maintenance (advisory locks belong to a database, so each configured database has its own).
//!
//! Every [`HEARTBEAT`] the session either tries the lock (a follower) or checks in `pg_locks` that
//! it still holds it (the leader). The server releases a session lock when the session ends, so
//! a leader that crashes, is killed or loses its connection stops leading at once and a
//! follower takes over within a heartbeat. Losing the session means losing leadership: this
//! instance steps down and reconnects with backoff. The check against `pg_locks` (rather than a
//! bare `SELECT 1`) also catches a pooler that moved us to another server session, which is
//! why the lock is not used behind a transaction-mode pooler (see docs/daemon.md).
//!
//! Behind a transaction-mode pooler (`database.pooler = "transaction"`) no session outlives a
//! transaction, so the lock is replaced by the maintenance lease ([`crate::lease`]): the
//! heartbeat takes it when it is free or expired and renews it while leading; a leader that
//! stops renewing (crash, `kill -9`) is replaced [`crate::lease::LEADER_TTL`] later, and its
//! fencing token keeps it from acting after that.
//!
//! The heartbeat doubles as the readiness probe of the primary (`/readyz`).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sqlx::{Connection, PgConnection};
use tokio::sync::oneshot;

use crate::config::Pooler;
use crate::execute::LEADER_LOCK;
use crate::lease;
use crate::pg::{self, Failure};

use super::state::DbState;

/// How often the session checks or tries the lock. It bounds how long a follower takes to
/// notice that the leader is gone, and how stale `/readyz` can be.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A heartbeat query that takes longer than this counts as a lost session.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound on giving the lock back at shutdown.
pub const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether this session holds the leader lock (the advisory key split as `pg_locks` shows it).
const HOLDS_SQL: &str = "
SELECT EXISTS (
  SELECT 1 FROM pg_locks
   WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
     AND objsubid = 1 AND ((classid::int8 << 32) | objid::int8) = $1)";

/// Runs until `release` fires, then gives the lock back and closes the session.
pub async fn run(database: Arc<DbState>, mut release: oneshot::Receiver<()>) {
    let db = database.config.database.clone();
    let holder = lease::new_holder();
    let mut conn: Option<PgConnection> = None;
    let mut failures: u32 = 0;
    loop {
        let outcome = if db.pooler == Pooler::Transaction {
            lease_heartbeat(&database, &db, &holder, &mut conn).await
        } else {
            heartbeat(&database, &db, &mut conn).await
        };
        let pause = match outcome {
            Ok(()) => {
                failures = 0;
                database.primary_answered(Utc::now());
                HEARTBEAT
            }
            Err(f) => {
                conn = None;
                failures += 1;
                if failures == 1 {
                    tracing::warn!(reason = %f.internal, "the primary does not answer; retrying with backoff");
                }
                database.primary_failed(Utc::now(), f.external);
                if database.is_leader() {
                    tracing::error!("lost leadership with the session that held the leader lock; maintenance stops until it is taken again");
                    database.set_leader(false);
                    database.set_lease(None);
                }
                pg::backoff(failures).min(pg::MAX_BACKOFF)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = &mut release => break,
        }
    }
    if let Some(mut c) = conn.take() {
        let was_leader = database.is_leader();
        database.set_leader(false);
        let held = database.lease();
        database.set_lease(None);
        let give_back = async {
            if let Some(held) = held {
                let _ = lease::release(&mut c, &held).await;
            } else if was_leader {
                let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                    .bind(LEADER_LOCK)
                    .execute(&mut c)
                    .await;
            }
            let _ = c.close().await;
        };
        if tokio::time::timeout(RELEASE_TIMEOUT, give_back)
            .await
            .is_err()
        {
            tracing::warn!("could not release the leader lock in time; the server releases it when the connection ends");
        } else if was_leader {
            tracing::info!("released the leader lock");
        }
    }
}

/// Connects if needed, then tries the lock (follower) or checks that it is still held (leader).
async fn heartbeat(
    database: &DbState,
    db: &crate::config::DatabaseConfig,
    conn: &mut Option<PgConnection>,
) -> Result<(), Failure> {
    if conn.is_none() {
        let c = pg::try_connect(
            &db.url,
            "partkeeper leader",
            db.lock_timeout,
            HEARTBEAT_TIMEOUT,
            db.connect_timeout,
            db.pooler,
        )
        .await?;
        *conn = Some(c);
    }
    let c = conn.as_mut().expect("connected above");
    let leading = database.is_leader();
    let sql = if leading {
        HOLDS_SQL
    } else {
        "SELECT pg_try_advisory_lock($1)"
    };
    let held: bool = match tokio::time::timeout(
        HEARTBEAT_TIMEOUT,
        sqlx::query_scalar(sql).bind(LEADER_LOCK).fetch_one(c),
    )
    .await
    {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return Err(Failure::from_sqlx(&e, &[&db.url])),
        Err(_) => return Err(Failure::timeout("heartbeat", HEARTBEAT_TIMEOUT)),
    };
    match (leading, held) {
        (false, true) => {
            tracing::info!("took the leader lock: this instance now runs maintenance");
            database.set_leader(true);
        }
        (true, false) => {
            tracing::error!(
                "this session no longer holds the leader lock although it is still connected: \
                 is a transaction-mode pooler (PgBouncer pool_mode=transaction) between partkeeper \
                 and PostgreSQL? Set database.pooler = \"transaction\" (leader election by \
                 lease), or connect directly or through a session-mode pool"
            );
            database.set_leader(false);
            // Start over on a fresh session.
            *conn = None;
        }
        _ => {}
    }
    Ok(())
}

/// [`heartbeat`] behind a transaction pooler: takes the lease (follower) or renews it (leader).
async fn lease_heartbeat(
    database: &DbState,
    db: &crate::config::DatabaseConfig,
    holder: &str,
    conn: &mut Option<PgConnection>,
) -> Result<(), Failure> {
    let fail = |e: &sqlx::Error| Failure::from_sqlx(e, &[&db.url]);
    if conn.is_none() {
        let mut c = pg::try_connect(
            &db.url,
            "partkeeper leader",
            db.lock_timeout,
            HEARTBEAT_TIMEOUT,
            db.connect_timeout,
            db.pooler,
        )
        .await?;
        match tokio::time::timeout(HEARTBEAT_TIMEOUT, lease::ensure_table(&mut c)).await {
            Ok(Ok(())) => {}
            Ok(Err(lease::LeaseError::Sql(e))) => return Err(fail(&e)),
            Ok(Err(e)) => {
                return Err(Failure {
                    external: "cannot create the lease table partkeeper.leases".into(),
                    internal: e.to_string(),
                })
            }
            Err(_) => return Err(Failure::timeout("heartbeat", HEARTBEAT_TIMEOUT)),
        }
        *conn = Some(c);
    }
    let c = conn.as_mut().expect("connected above");
    let current = database.lease().filter(|_| database.is_leader());
    let work = async {
        match &current {
            Some(held) => lease::renew(c, held, lease::LEADER_TTL)
                .await
                .map(|ok| ok.then(|| held.clone())),
            None => lease::try_take(c, holder, lease::LEADER_TTL)
                .await
                .map(|t| {
                    t.map(|token| lease::Held {
                        holder: holder.to_string(),
                        token,
                        renew: None,
                    })
                }),
        }
    };
    let now_held = match tokio::time::timeout(HEARTBEAT_TIMEOUT, work).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return Err(fail(&e)),
        Err(_) => return Err(Failure::timeout("heartbeat", HEARTBEAT_TIMEOUT)),
    };
    match (current.is_some(), now_held) {
        (false, Some(held)) => {
            tracing::info!(
                token = held.token,
                "took the maintenance lease: this instance now runs maintenance"
            );
            database.set_lease(Some(held));
            database.set_leader(true);
        }
        (true, None) => {
            tracing::error!("the maintenance lease was taken over by another instance (this one did not renew it in time); maintenance stops here");
            database.set_leader(false);
            database.set_lease(None);
        }
        _ => {}
    }
    Ok(())
}

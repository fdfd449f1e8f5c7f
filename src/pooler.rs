//! Working through a connection pooler (`database.pooler`): the session settings applied with
//! `SET` / `SET LOCAL` instead of startup options, read transactions that keep a transaction
//! pooler on one server session, and the guard at the start of every DDL step that checks that
//! `lock_timeout` and `statement_timeout` are really in force (and, behind a transaction
//! pooler, that this process still holds the maintenance lease).
//!
//! Behind a transaction-mode pooler a server session is ours only inside a transaction, so every
//! query there runs inside an explicit one, as an unnamed statement (`persistent(false)`): a
//! named statement would outlive its transaction on a session another client gets next.

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use sqlx::{Connection, PgConnection, Postgres, Transaction};

use crate::config::{DatabaseConfig, Pooler};

/// Why a DDL step was not run. Carried inside `sqlx::Error::Configuration` through the step
/// runner, which turns it back into [`crate::execute::ExecError::Guard`].
#[derive(Debug, Clone, thiserror::Error)]
pub enum GuardError {
    #[error("lock_timeout is {lock_found} and statement_timeout is {statement_found} in the step's transaction, not the configured {lock_expected} and {statement_expected}: something between partkeeper and PostgreSQL changed them, so no DDL was run. Check database.pooler and the pooler's settings")]
    TimeoutsNotInForce {
        lock_expected: String,
        lock_found: String,
        statement_expected: String,
        statement_found: String,
    },
    #[error("`{0}` cannot run inside a transaction, and behind a transaction pooler (database.pooler = \"transaction\") lock_timeout cannot be guaranteed outside one: nothing was run. Finish it over a direct or session-mode connection")]
    OutsideTransaction(String),
    #[error("this process no longer holds the maintenance lease (another instance took it over, or it expired): the step was not run")]
    LeaseLost,
    #[error("behind a transaction pooler a DDL step needs the maintenance lease, and none is held: nothing was run")]
    NoLease,
}

impl GuardError {
    pub fn into_sqlx(self) -> sqlx::Error {
        sqlx::Error::Configuration(Box::new(self))
    }

    /// The guard's refusal inside a driver error, if that is what it is.
    pub fn from_sqlx(e: &sqlx::Error) -> Option<GuardError> {
        match e {
            sqlx::Error::Configuration(b) => b.downcast_ref::<GuardError>().cloned(),
            _ => None,
        }
    }
}

/// Applies [`crate::pg::session_settings`] on `conn`: for the session (`local = false`, right
/// after connecting through a session pooler) or for the current transaction only. One round
/// trip; names and values are bind parameters.
pub async fn set_session(
    conn: &mut PgConnection,
    lock_timeout: Duration,
    statement_timeout: Duration,
    local: bool,
) -> Result<(), sqlx::Error> {
    let (names, values): (Vec<&str>, Vec<String>) =
        crate::pg::session_settings(lock_timeout, statement_timeout)
            .into_iter()
            .unzip();
    sqlx::query("SELECT count(set_config(n, v, $3)) FROM unnest($1::text[], $2::text[]) AS s(n, v)")
        .bind(names)
        .bind(values)
        .bind(local)
        .persistent(false)
        .execute(conn)
        .await
        .map(|_| ())
}

/// A connection to read from: the connection itself, or behind a transaction pooler a
/// transaction on it with the session settings `SET LOCAL` (so the reads see UTC and ISO dates
/// and stay on one server session). [`Reader::done`] ends it.
pub enum Reader<'c> {
    Direct(&'c mut PgConnection),
    Pooled(Transaction<'c, Postgres>),
}

impl Reader<'_> {
    pub async fn done(self) -> Result<(), sqlx::Error> {
        match self {
            Reader::Direct(_) => Ok(()),
            Reader::Pooled(tx) => tx.commit().await,
        }
    }
}

impl Deref for Reader<'_> {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        match self {
            Reader::Direct(c) => c,
            Reader::Pooled(tx) => tx,
        }
    }
}

impl DerefMut for Reader<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        match self {
            Reader::Direct(c) => c,
            Reader::Pooled(tx) => &mut *tx,
        }
    }
}

pub async fn reader(
    conn: &mut PgConnection,
    pooler: Pooler,
    lock_timeout: Duration,
    statement_timeout: Duration,
) -> Result<Reader<'_>, sqlx::Error> {
    if pooler != Pooler::Transaction {
        return Ok(Reader::Direct(conn));
    }
    let mut tx = conn.begin().await?;
    set_session(&mut tx, lock_timeout, statement_timeout, true).await?;
    Ok(Reader::Pooled(tx))
}

/// [`reader`] with the database's own timeouts.
pub async fn db_reader<'c>(
    conn: &'c mut PgConnection,
    db: &DatabaseConfig,
) -> Result<Reader<'c>, sqlx::Error> {
    reader(conn, db.pooler, db.lock_timeout, db.statement_timeout).await
}

/// Checks, in the transaction (or, for a statement that cannot run in one, the session) about
/// to run DDL, that both timeouts are the configured ones. `pg_settings` gives them in ms.
pub async fn verify_timeouts(
    conn: &mut PgConnection,
    lock_timeout: Duration,
    statement_timeout: Duration,
) -> Result<(), sqlx::Error> {
    let (lock, statement): (String, String) = sqlx::query_as(
        "SELECT (SELECT setting FROM pg_settings WHERE name = 'lock_timeout'),
                (SELECT setting FROM pg_settings WHERE name = 'statement_timeout')",
    )
    .persistent(false)
    .fetch_one(conn)
    .await?;
    let ms = |d: Duration| d.as_millis().to_string();
    if lock == ms(lock_timeout) && statement == ms(statement_timeout) {
        return Ok(());
    }
    let shown = |s: &str| {
        if s == "0" {
            "0 (no limit)".to_string()
        } else {
            format!("{s}ms")
        }
    };
    Err(GuardError::TimeoutsNotInForce {
        lock_expected: format!("{}ms", ms(lock_timeout)),
        lock_found: shown(&lock),
        statement_expected: format!("{}ms", ms(statement_timeout)),
        statement_found: shown(&statement),
    }
    .into_sqlx())
}

/// At the start of a step's transaction, after its `SET LOCAL` timeouts: the session settings
/// (behind a transaction pooler), the timeouts verified, and the lease checked (ditto).
pub async fn guard_step(conn: &mut PgConnection, db: &DatabaseConfig) -> Result<(), sqlx::Error> {
    if db.pooler == Pooler::Transaction {
        set_session(conn, db.lock_timeout, db.statement_timeout, true).await?;
    }
    verify_timeouts(conn, db.lock_timeout, db.statement_timeout).await?;
    if db.pooler == Pooler::Transaction {
        crate::lease::check_fence(conn).await?;
    }
    Ok(())
}

/// Before a statement that cannot run inside a transaction (`DETACH ... CONCURRENTLY`): its
/// session's timeouts verified; behind a transaction pooler it is refused (the next statement
/// may run on another server session, whatever we set).
pub async fn guard_outside_transaction(
    conn: &mut PgConnection,
    db: &DatabaseConfig,
    statement: &str,
) -> Result<(), sqlx::Error> {
    if db.pooler == Pooler::Transaction {
        return Err(GuardError::OutsideTransaction(statement.to_string()).into_sqlx());
    }
    verify_timeouts(conn, db.lock_timeout, db.statement_timeout).await
}

/// The server version the planner should assume: behind a transaction pooler, one without
/// `DETACH ... CONCURRENTLY` (see [`guard_outside_transaction`]), so the plan detaches inside a
/// transaction under `lock_timeout` instead.
pub fn planning_version(version: i32, pooler: Pooler) -> i32 {
    if pooler == Pooler::Transaction {
        version.min(crate::plan::DETACH_CONCURRENTLY_SINCE - 1)
    } else {
        version
    }
}

/// A connection failure's text, with what to do when a pooler refused our startup parameters.
pub fn hint(reason: String, pooler: Pooler) -> String {
    if pooler == Pooler::None && reason.contains("unsupported startup parameter") {
        format!("{reason}. A connection pooler (PgBouncer?) is in between: set database.pooler = \"session\" or \"transaction\" (its pool_mode)")
    } else {
        reason
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pooler_refusing_startup_parameters_gets_a_hint_only_without_pooler_set() {
        let r = "unsupported startup parameter: extra_float_digits".to_string();
        assert!(hint(r.clone(), Pooler::None).contains("database.pooler"));
        assert_eq!(hint(r.clone(), Pooler::Session), r);
        assert_eq!(hint("refused".into(), Pooler::None), "refused");
    }

    #[test]
    fn behind_a_transaction_pooler_the_plan_never_detaches_concurrently() {
        assert!(
            planning_version(150000, Pooler::Transaction) < crate::plan::DETACH_CONCURRENTLY_SINCE
        );
        assert_eq!(planning_version(150000, Pooler::Session), 150000);
        assert_eq!(planning_version(130000, Pooler::Transaction), 130000);
    }

    #[test]
    fn a_guard_refusal_survives_the_trip_through_the_driver_error() {
        let e = GuardError::LeaseLost.into_sqlx();
        assert!(matches!(
            GuardError::from_sqlx(&e),
            Some(GuardError::LeaseLost)
        ));
        assert!(!crate::pg::is_connection_lost(&e));
        assert!(!crate::pg::is_retryable(&e));
    }
}

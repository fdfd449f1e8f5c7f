//! The one transaction runner: every short transaction partkeeper runs against the application's
//! tables goes through [`Runner`]. An attempt opens a transaction, sets its timeouts with
//! `SET LOCAL` (lock_timeout, statement_timeout and, unless told otherwise,
//! idle_in_transaction_session_timeout), runs the caller's body with every round trip within the
//! reply deadline, and commits. A lock not granted in time (or a lost deadlock or serialization
//! failure) rolls the attempt back and it is run again after a pause (exponential backoff with
//! jitter), up to a bounded number of attempts. [`Runner::in_savepoint`] does the same inside a
//! caller's long transaction, repeating behind a savepoint. Errors carry the step's name and
//! the server's error as their source.

use std::time::Duration;

use sqlx::{Connection, PgConnection};

use crate::config::DatabaseConfig;
use crate::pg;

/// What a body knows about its attempt.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    /// Attempts that failed before this one (0 for the first).
    pub failed: u32,
    /// Bound on each round trip ([`pg::reply_deadline`]).
    pub deadline: Duration,
}

/// A successful run.
#[derive(Debug)]
pub struct Done<T> {
    pub value: T,
    /// Attempts rolled back because a lock was not granted in time (or a deadlock was lost).
    pub lock_waits: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum TxError {
    #[error("{step}: a lock was not granted within lock_timeout ({}) in {attempts} attempt(s): another session holds a conflicting lock (a long transaction, or DDL queued behind one). {}", humantime::format_duration(*.lock_timeout), pg::describe(.source))]
    LockTimeout {
        step: String,
        attempts: u32,
        lock_timeout: Duration,
        #[source]
        source: sqlx::Error,
    },
    #[error("{step}: lost the connection to PostgreSQL ({}); the server rolls the unfinished transaction back", pg::describe(.source))]
    ConnectionLost {
        step: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("{step}: {}", pg::describe(.source))]
    Failed {
        step: String,
        #[source]
        source: sqlx::Error,
    },
}

impl TxError {
    pub fn step(&self) -> &str {
        match self {
            TxError::LockTimeout { step, .. }
            | TxError::ConnectionLost { step, .. }
            | TxError::Failed { step, .. } => step,
        }
    }

    /// The server's (or the driver's) error.
    pub fn sqlx(&self) -> &sqlx::Error {
        match self {
            TxError::LockTimeout { source, .. }
            | TxError::ConnectionLost { source, .. }
            | TxError::Failed { source, .. } => source,
        }
    }

    pub fn is_lock_timeout(&self) -> bool {
        matches!(self, TxError::LockTimeout { .. })
    }
}

/// How one step's transactions run: its name (for logs and errors), timeouts and retries.
#[derive(Debug, Clone)]
pub struct Runner {
    name: String,
    deadline: Duration,
    lock_timeout: Duration,
    statement_timeout: Duration,
    idle_timeout: bool,
    attempts: u32,
    pause: fn(u32) -> Duration,
}

impl Runner {
    /// A step under the configuration's timeouts, `database.lock_retries` attempts, backoff
    /// from [`pg::backoff`].
    pub fn step(name: impl Into<String>, db: &DatabaseConfig) -> Runner {
        Runner {
            name: name.into(),
            deadline: pg::reply_deadline(db),
            lock_timeout: db.lock_timeout,
            statement_timeout: db.statement_timeout,
            idle_timeout: true,
            attempts: db.lock_retries.max(1),
            pause: pg::backoff,
        }
    }

    pub fn lock_timeout(mut self, d: Duration) -> Runner {
        self.lock_timeout = d;
        self
    }

    /// statement_timeout of each statement of the step (it bounds how long the step can hold
    /// the locks it took).
    pub fn statement_timeout(mut self, d: Duration) -> Runner {
        self.statement_timeout = d;
        self
    }

    pub fn attempts(mut self, n: u32) -> Runner {
        self.attempts = n.max(1);
        self
    }

    /// The pause before attempt `n + 1` after `n` failed ones.
    pub fn pause(mut self, f: fn(u32) -> Duration) -> Runner {
        self.pause = f;
        self
    }

    /// No idle_in_transaction_session_timeout (a transaction that deliberately waits between
    /// statements).
    pub fn without_idle_timeout(mut self) -> Runner {
        self.idle_timeout = false;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Opens one transaction with the step's timeouts, for a caller that runs a single long
    /// transaction itself (no retries: `--offline`, whose lock waits retry behind savepoints with
    /// [`Runner::in_savepoint`]). Returns it with the attempt's deadline.
    pub async fn begin<'c>(
        &self,
        conn: &'c mut PgConnection,
    ) -> Result<(sqlx::Transaction<'c, sqlx::Postgres>, Attempt), TxError> {
        let at = Attempt {
            failed: 0,
            deadline: self.deadline,
        };
        let opened = async {
            let mut tx = pg::answered(self.deadline, conn.begin()).await?;
            pg::answered(self.deadline, self.set_local(&mut tx)).await?;
            Ok(tx)
        }
        .await;
        let mut failed = 0;
        match opened {
            Ok(tx) => Ok((tx, at)),
            Err(e) => match self.judge::<()>(Err(e), &mut failed) {
                Some(Err(e)) => Err(e),
                _ => unreachable!("an error is judged an error"),
            },
        }
    }

    /// Runs `body` in its own transaction until it commits, fails with an error that a retry
    /// would not cure, or has met a lock timeout `attempts` times.
    pub async fn run<T, F>(&self, conn: &mut PgConnection, mut body: F) -> Result<Done<T>, TxError>
    where
        F: AsyncFnMut(&mut PgConnection, Attempt) -> Result<T, sqlx::Error>,
    {
        self.retrying(async |at| {
            let mut tx = pg::answered(self.deadline, conn.begin()).await?;
            pg::answered(self.deadline, self.set_local(&mut tx)).await?;
            let value = body(&mut tx, at).await?;
            pg::answered(self.deadline, tx.commit()).await?;
            Ok(value)
        })
        .await
    }

    /// Like [`Runner::run`], inside the caller's open transaction: each attempt behind a
    /// savepoint, rolled back to it on a lock timeout, so the work before it is kept. The
    /// caller's transaction has its timeouts set already.
    pub async fn in_savepoint<T, F>(
        &self,
        conn: &mut PgConnection,
        mut body: F,
    ) -> Result<Done<T>, TxError>
    where
        F: AsyncFnMut(&mut PgConnection, Attempt) -> Result<T, sqlx::Error>,
    {
        self.retrying(async |at| {
            exec(conn, at, "SAVEPOINT partkeeper_step").await?;
            match body(&mut *conn, at).await {
                Ok(v) => {
                    exec(conn, at, "RELEASE SAVEPOINT partkeeper_step").await?;
                    Ok(v)
                }
                Err(e) => {
                    if pg::is_retryable(&e) {
                        exec(conn, at, "ROLLBACK TO SAVEPOINT partkeeper_step").await?;
                    }
                    Err(e)
                }
            }
        })
        .await
    }

    /// The retry loop of both: `attempt` until it succeeds, fails for good, or has met a lock
    /// timeout `attempts` times, pausing between attempts.
    async fn retrying<T>(
        &self,
        mut attempt: impl AsyncFnMut(Attempt) -> Result<T, sqlx::Error>,
    ) -> Result<Done<T>, TxError> {
        let mut failed = 0;
        loop {
            let at = Attempt {
                failed,
                deadline: self.deadline,
            };
            let result = attempt(at).await;
            match self.judge(result, &mut failed) {
                Some(r) => return r,
                None => tokio::time::sleep((self.pause)(failed)).await,
            }
        }
    }

    /// `Some` when the run is over; `None` to retry (and `failed` counts the attempt).
    fn judge<T>(
        &self,
        result: Result<T, sqlx::Error>,
        failed: &mut u32,
    ) -> Option<Result<Done<T>, TxError>> {
        let step = || self.name.clone();
        match result {
            Ok(value) => Some(Ok(Done {
                value,
                lock_waits: *failed,
            })),
            Err(e) if pg::is_retryable(&e) => {
                *failed += 1;
                if *failed >= self.attempts {
                    return Some(Err(TxError::LockTimeout {
                        step: step(),
                        attempts: *failed,
                        lock_timeout: self.lock_timeout,
                        source: e,
                    }));
                }
                tracing::info!(step = %self.name, attempt = *failed, error = %pg::describe(&e), "lock not granted in time; retrying");
                None
            }
            Err(e) if pg::is_connection_lost(&e) => Some(Err(TxError::ConnectionLost {
                step: step(),
                source: e,
            })),
            Err(e) => Some(Err(TxError::Failed {
                step: step(),
                source: e,
            })),
        }
    }

    async fn set_local(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        if self.idle_timeout {
            pg::set_local_step_timeouts(conn, self.lock_timeout, self.statement_timeout).await
        } else {
            pg::set_local_timeouts(conn, self.lock_timeout, self.statement_timeout).await
        }
    }
}

/// One statement (simple protocol, no parameters: DDL rendered with quoted identifiers) within
/// the attempt's deadline.
pub async fn exec(conn: &mut PgConnection, at: Attempt, sql: &str) -> Result<(), sqlx::Error> {
    tracing::debug!(sql = %sql, "exec");
    pg::answered(at.deadline, sqlx::raw_sql(sql).execute(&mut *conn))
        .await
        .map(|_| ())
}

/// One statement through the extended protocol (unnamed, not kept): the server refuses more than
/// one statement, so text inside it (an operator's expression) cannot end it and start another.
pub async fn exec_one(conn: &mut PgConnection, at: Attempt, sql: &str) -> Result<(), sqlx::Error> {
    tracing::debug!(sql = %sql, "exec (extended protocol)");
    pg::answered(
        at.deadline,
        sqlx::query(sql).persistent(false).execute(&mut *conn),
    )
    .await
    .map(|_| ())
}

/// Statements in order, each within the attempt's deadline.
pub async fn exec_all(
    conn: &mut PgConnection,
    at: Attempt,
    statements: &[String],
) -> Result<(), sqlx::Error> {
    for st in statements {
        exec(conn, at, st).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock_timeout_error() -> sqlx::Error {
        // The driver's own error type carries no SQLSTATE; build a server error by hand is not
        // possible from outside sqlx, so the classification is exercised with non-server errors
        // here and with a real server in tests/integration.
        sqlx::Error::RowNotFound
    }

    #[test]
    fn an_error_that_a_retry_would_not_cure_ends_the_run_at_once() {
        let r = Runner {
            name: "probe".into(),
            deadline: Duration::from_secs(1),
            lock_timeout: Duration::from_secs(1),
            statement_timeout: Duration::from_secs(1),
            idle_timeout: true,
            attempts: 5,
            pause: pg::backoff,
        };
        let mut failed = 0;
        let out = r.judge::<()>(Err(lock_timeout_error()), &mut failed);
        let err = out.expect("over").unwrap_err();
        assert_eq!(err.step(), "probe");
        assert!(err.to_string().starts_with("probe: "), "{err}");
        assert!(std::error::Error::source(&err).is_some());
        assert_eq!(failed, 0);
    }
}

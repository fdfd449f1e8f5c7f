//! Why a DDL step was not run: the refusals of the pooler guard (`pooler::guard_step`) and of
//! the lease check (`lease::check_fence`). Its own module, below both, so that neither imports
//! the other back.

/// Why a DDL step was not run. Carried inside `sqlx::Error::Configuration` through the step
/// runner, which turns it back into `execute::ExecError::Guard`.
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

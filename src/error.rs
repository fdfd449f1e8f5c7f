//! The top-level error, and the one place that maps failures to exit codes:
//! 0 success; 1 a runtime failure or a problem found by `check`; 2 usage, configuration or
//! connection error (nothing was changed).

use crate::config::ConfigError;
use crate::pg::ConnectError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The configuration names something the database does not have (or has in another form).
    #[error("{0}")]
    Mismatch(String),
    /// A command-line argument is wrong.
    #[error("{0}")]
    Usage(String),
    /// Work was attempted and at least part of it failed.
    #[error("{0}")]
    Failed(String),
    /// `check` (or `migrate verify`) found problems; they were printed already.
    #[error("{0}")]
    ProblemsFound(String),
    #[error("database error: {}", crate::pg::describe(.0))]
    Database(#[source] sqlx::Error),
    #[error("lost the connection to PostgreSQL: {}", crate::pg::describe(.0))]
    ConnectionLost(#[source] sqlx::Error),
    /// A transaction step failed (its name, and the server's error as the source).
    #[error(transparent)]
    Step(#[from] crate::tx::TxError),
    /// Boxed: its variants carry the step's error and names, and `Result<_, Error>` is returned
    /// everywhere.
    #[error(transparent)]
    Migrate(Box<crate::migrate::error::MigrateError>),
    #[error(transparent)]
    Bench(crate::bench::error::BenchError),
    /// A command over several databases: those that failed, each named with its own error.
    #[error("{} database(s) not OK: {}", .0.len(), .0.iter().map(|(db, e)| format!("{db} ({e})")).collect::<Vec<_>>().join("; "))]
    Databases(Vec<(String, Error)>),
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) | Error::Connect(_) | Error::Mismatch(_) | Error::Usage(_) => 2,
            Error::Migrate(m) if m.is_usage() => 2,
            Error::Failed(_)
            | Error::ProblemsFound(_)
            | Error::Database(_)
            | Error::ConnectionLost(_)
            | Error::Step(_)
            | Error::Migrate(_)
            | Error::Bench(_) => 1,
            // The worst: a database that could not be reached outranks one with problems.
            Error::Databases(failed) => {
                failed.iter().map(|(_, e)| e.exit_code()).max().unwrap_or(1)
            }
        }
    }
}

impl From<crate::migrate::indexes::IndexError> for Error {
    fn from(e: crate::migrate::indexes::IndexError) -> Self {
        crate::migrate::error::MigrateError::from(e).into()
    }
}

impl From<crate::migrate::fill::FillError> for Error {
    fn from(e: crate::migrate::fill::FillError) -> Self {
        crate::migrate::error::MigrateError::from(e).into()
    }
}

impl From<crate::bounds::BoundsError> for Error {
    fn from(e: crate::bounds::BoundsError) -> Self {
        crate::migrate::error::MigrateError::from(e).into()
    }
}

impl From<crate::bench::error::BenchError> for Error {
    fn from(e: crate::bench::error::BenchError) -> Self {
        match e {
            crate::bench::error::BenchError::Query { source, .. }
                if crate::pg::is_connection_lost(&source) =>
            {
                Error::ConnectionLost(source)
            }
            other => Error::Bench(other),
        }
    }
}

impl From<crate::migrate::error::MigrateError> for Error {
    fn from(e: crate::migrate::error::MigrateError) -> Self {
        Error::Migrate(Box::new(e))
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        if crate::pg::is_connection_lost(&e) {
            Error::ConnectionLost(e)
        } else {
            Error::Database(e)
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

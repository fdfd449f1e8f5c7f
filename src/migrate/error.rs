//! The migration's typed errors: each says what to do, and keeps the server's error (or the
//! step's) as its source. Exit 2 for a bad argument, 1 otherwise.

use crate::ident::QualifiedName;

/// What can go wrong in a migration step, each with what to do about it; the server's error (or
/// the step's) is kept as the source.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("the migration's blueprint has no key type; run `migrate plan` to see why")]
    NoKeyType,
    #[error("the state row vanished after the build (was partkeeper.migrations changed by hand?); run `migrate run` again")]
    StateVanished,
    #[error("the recorded migration has a key type partkeeper does not know ({0}); finish it with the partkeeper version that started it, or `migrate rollback`")]
    UnknownKeyType(String),
    #[error("rendering a partition: {0}")]
    Render(#[from] crate::bounds::BoundsError),
    #[error("{0}")]
    Resolve(String),
    #[error(transparent)]
    Indexes(Box<crate::migrate::indexes::IndexError>),
    #[error(transparent)]
    Fill(#[from] crate::migrate::fill::FillError),
    #[error("the copy could not lock its next batch after {attempts} attempts: application transactions keep the rows locked ({}). Progress is saved; run `migrate run` again", crate::pg::describe(.source))]
    CopyLocked {
        attempts: u32,
        #[source]
        source: sqlx::Error,
    },
    #[error("a copy batch failed: {}. Progress before it is saved; run `migrate run` again", crate::pg::describe(.source))]
    Copy {
        #[source]
        source: sqlx::Error,
    },
    #[error("the copy lost its connection to PostgreSQL: {}. The unfinished batch is rolled back and the progress before it is saved; run `migrate run` again", crate::pg::describe(.source))]
    CopyConnectionLost {
        #[source]
        source: sqlx::Error,
    },
    #[error("could not add the sync trigger to {table} within lock_timeout: a long transaction holds the table. Nothing was changed; run again")]
    BuildLocked {
        table: QualifiedName,
        #[source]
        source: Box<crate::tx::TxError>,
    },
    #[error("building {table} failed, nothing was changed: {}", crate::pg::describe(.source.sqlx()))]
    Build {
        table: QualifiedName,
        #[source]
        source: Box<crate::tx::TxError>,
    },
    #[error("rows written during the migration have {key} values far outside the table's range (more than {max} new partitions would be needed); fix them in {table} or set default_partition = true, then run again")]
    FarOutside {
        key: String,
        max: usize,
        table: QualifiedName,
    },
    #[error("creating a partition for rows written during the migration: {0}")]
    Cover(#[source] crate::execute::ExecError),
    #[error("could not lock {table} for the swap within lock_timeout after {attempts} attempt(s): a long transaction or pending DDL holds it. The copy is complete and kept in step; run `migrate run` again to retry the swap")]
    SwapLocked {
        table: QualifiedName,
        attempts: u32,
        #[source]
        source: Box<crate::tx::TxError>,
    },
    #[error("`{lock}` was not granted within lock_timeout after {attempts} attempts; nothing was changed. Stop the sessions holding the table or raise database.lock_timeout")]
    OfflineLocked {
        lock: String,
        attempts: u32,
        #[source]
        source: Box<crate::tx::TxError>,
    },
    #[error("could not lock {table} and {backup} within lock_timeout after {attempts} attempt(s); nothing was changed, run `migrate rollback` again")]
    SwapBackLocked {
        table: QualifiedName,
        backup: QualifiedName,
        attempts: u32,
        #[source]
        source: Box<crate::tx::TxError>,
    },
    #[error("could not lock {table} to drop the migration's objects within lock_timeout; run the command again ({})", crate::pg::describe(.source.sqlx()))]
    CleanupLocked {
        table: QualifiedName,
        #[source]
        source: Box<crate::tx::TxError>,
    },
    #[error("could not drop the migration's objects: {}. If another object now depends on {partitioned}, drop that first", crate::pg::describe(.source.sqlx()))]
    Cleanup {
        partitioned: QualifiedName,
        #[source]
        source: Box<crate::tx::TxError>,
    },
    #[error("the migration of {0} has not swapped yet (it is copying); finish it with `migrate run`, or abandon it with `migrate rollback`")]
    NotSwapped(QualifiedName),
    #[error("could not lock {0} within lock_timeout to drop the sync trigger; nothing was changed, run `migrate finalize` again")]
    FinalizeLocked(QualifiedName, #[source] Box<crate::tx::TxError>),
    #[error("finalize failed, nothing was changed: {}. If an object was created on {backup} since the swap, drop it or move it first", crate::pg::describe(.source.sqlx()))]
    Finalize {
        backup: QualifiedName,
        #[source]
        source: Box<crate::tx::TxError>,
    },
    #[error("{writers} transaction(s) that were writing when the copy ended are still open after statement_timeout; the copy is complete, run `migrate run` again once they end")]
    SettleTimeout { writers: i64 },
}

impl MigrateError {
    /// A bad argument: exit 2, nothing was changed.
    pub fn is_usage(&self) -> bool {
        matches!(self, MigrateError::Fill(_))
    }
}

impl From<crate::migrate::indexes::IndexError> for MigrateError {
    fn from(e: crate::migrate::indexes::IndexError) -> Self {
        MigrateError::Indexes(Box::new(e))
    }
}

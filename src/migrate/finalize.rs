//! `finalize`: the migration is accepted. The reverse trigger, the backup, the sync functions and
//! the state row are dropped in one transaction (and the `partkeeper` schema when nothing else
//! is in it). Idempotent: with nothing recorded there is nothing to do.

use sqlx::PgConnection;

use super::error::MigrateError;
use super::state::{Phase, State};
use super::{rollback, sync, REVERSE_TRIGGER, REVERSE_TRUNCATE_TRIGGER};
use crate::config::DatabaseConfig;
use crate::error::Error;

#[derive(Debug, Clone)]
pub enum Outcome {
    NothingToDo,
    Finalized,
    /// A rolled-back migration's leftovers were dropped.
    CleanedUp,
}

pub async fn run(
    conn: &mut PgConnection,
    db: &DatabaseConfig,
    state: Option<State>,
) -> Result<Outcome, Error> {
    let Some(state) = state else {
        return Ok(Outcome::NothingToDo);
    };
    let b = &state.blueprint;
    match state.phase {
        Phase::Copying => Err(MigrateError::NotSwapped(b.original.clone()).into()),
        Phase::RolledBack => {
            rollback::cleanup(conn, db, b, false).await?;
            Ok(Outcome::CleanedUp)
        }
        Phase::Swapped => {
            let mut statements =
                sync::drop_triggers(&b.original, [REVERSE_TRIGGER, REVERSE_TRUNCATE_TRIGGER]);
            statements.push(format!("DROP TABLE IF EXISTS {}", b.backup.quoted()));
            statements.extend(super::build::drop_gone_table(b));
            statements.extend(rollback::drop_functions(b));
            match rollback::drop_with_state(conn, db, b, &statements).await {
                Ok(()) => Ok(Outcome::Finalized),
                Err(e) if e.is_lock_timeout() => {
                    Err(MigrateError::FinalizeLocked(b.original.clone(), Box::new(e)).into())
                }
                Err(e) => Err(MigrateError::Finalize {
                    backup: b.backup.clone(),
                    source: Box::new(e),
                }
                .into()),
            }
        }
    }
}

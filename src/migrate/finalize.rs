//! `finalize`: the migration is accepted. The reverse trigger, the backup, the sync functions and
//! the state row are dropped in one transaction (and the `partkeeper` schema when nothing else
//! is in it). Idempotent: with nothing recorded there is nothing to do.

use sqlx::PgConnection;

use super::state::{Phase, State};
use super::{rollback, sync, REVERSE_TRIGGER, REVERSE_TRUNCATE_TRIGGER};
use crate::config::DatabaseConfig;
use crate::error::Error;
use crate::pg;

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
        Phase::Copying => Err(Error::Failed(format!(
            "the migration of {} has not swapped yet (it is copying); finish it with `migrate run`, or abandon it with `migrate rollback`",
            b.original
        ))),
        Phase::RolledBack => {
            rollback::cleanup(conn, db, b, false).await?;
            Ok(Outcome::CleanedUp)
        }
        Phase::Swapped => {
            let mut statements = sync::drop_triggers(&b.original, [REVERSE_TRIGGER, REVERSE_TRUNCATE_TRIGGER]);
            statements.push(format!("DROP TABLE IF EXISTS {}", b.backup.quoted()));
            statements.extend(super::build::drop_gone_table(b));
            statements.extend(rollback::drop_functions(b));
            match rollback::drop_with_state(conn, db, b, &statements).await {
                Ok(()) => Ok(Outcome::Finalized),
                Err(e) if pg::is_retryable(&e) => Err(Error::Failed(format!(
                    "could not lock {} within lock_timeout to drop the sync trigger; nothing was changed, run `migrate finalize` again",
                    b.original
                ))),
                Err(e) => Err(Error::Failed(format!(
                    "finalize failed, nothing was changed: {}. If an object was created on {} since the swap, drop it or move it first",
                    pg::describe(&e),
                    b.backup
                ))),
            }
        }
    }
}

//! `finalize`: the migration is accepted. The reverse trigger, the backup, the sync functions and
//! the state row are dropped in one transaction (and the `partkeeper` schema when nothing else
//! is in it). Idempotent: with nothing recorded there is nothing to do.

use sqlx::{Connection, PgConnection};

use super::state::{self, Phase, State};
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
            statements.extend(rollback::drop_functions(b));
            // Every round trip within the deadline; a stalled session holding the locks is ended by
            // the server (idle_in_transaction_session_timeout).
            let deadline = pg::reply_deadline(db);
            let mut waits = 0;
            loop {
                let attempt = async {
                    let mut tx = pg::answered(deadline, conn.begin()).await?;
                    pg::answered(
                        deadline,
                        pg::set_local_step_timeouts(&mut tx, db.lock_timeout, db.statement_timeout),
                    )
                    .await?;
                    for s in &statements {
                        pg::answered(deadline, sqlx::raw_sql(s).execute(&mut *tx)).await?;
                    }
                    pg::answered(deadline, state::remove(&mut tx, &b.original)).await?;
                    pg::answered(deadline, tx.commit()).await
                };
                match attempt.await {
                    Ok(()) => return Ok(Outcome::Finalized),
                    Err(e) if pg::is_retryable(&e) && waits + 1 < db.lock_retries.max(1) => {
                        waits += 1;
                        tokio::time::sleep(pg::backoff(waits)).await;
                    }
                    Err(e) if pg::is_retryable(&e) => {
                        return Err(Error::Failed(format!(
                            "could not lock {} within lock_timeout to drop the sync trigger; nothing was changed, run `migrate finalize` again",
                            b.original
                        )))
                    }
                    Err(e) => {
                        return Err(Error::Failed(format!(
                            "finalize failed, nothing was changed: {}. If an object was created on {} since the swap, drop it or move it first",
                            pg::describe(&e),
                            b.backup
                        )))
                    }
                }
            }
        }
    }
}

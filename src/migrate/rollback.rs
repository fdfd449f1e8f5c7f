//! `rollback`: the original plain table returns under its name with every row, including those
//! written after the swap (the reverse trigger kept it in step), then the partitioned copy and
//! every helper object are dropped. Before the swap it simply abandons the migration. Idempotent:
//! each phase picks up where an interrupted rollback stopped.

use sqlx::PgConnection;

use super::error::MigrateError;
use super::state::{self, Phase, State};
use super::{swap, sync, Blueprint, FORWARD_TRIGGER, FORWARD_TRUNCATE_TRIGGER};
use crate::config::DatabaseConfig;
use crate::error::Error;
use crate::pg;
use crate::tx::{self, TxError};

#[derive(Debug, Clone)]
pub enum Outcome {
    NothingToDo,
    /// The migration was still copying; it was abandoned.
    Abandoned,
    /// The original is back; the lock was held this long.
    SwappedBack {
        lock_held_ms: u128,
    },
    /// An earlier rollback had swapped back; its clean-up is now done.
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
        Phase::Copying => {
            cleanup(conn, db, b, true).await?;
            Ok(Outcome::Abandoned)
        }
        Phase::Swapped => {
            let out = swap::back(conn, db, b).await?;
            let deadline = crate::pg::reply_deadline(db);
            crate::pg::answered(deadline, super::foreign_keys::validate(conn, &b.original)).await?;
            cleanup(conn, db, b, false).await?;
            Ok(Outcome::SwappedBack {
                lock_held_ms: out.lock_held.as_millis(),
            })
        }
        Phase::RolledBack => {
            cleanup(conn, db, b, false).await?;
            Ok(Outcome::CleanedUp)
        }
    }
}

/// Drops the partitioned copy, the sync functions and the state row in one transaction. With
/// `forward_triggers`, the forward triggers on the original go too (a rollback before the swap).
pub async fn cleanup(
    conn: &mut PgConnection,
    db: &DatabaseConfig,
    b: &Blueprint,
    forward_triggers: bool,
) -> Result<(), Error> {
    let mut statements = Vec::new();
    if forward_triggers {
        statements.extend(sync::drop_triggers(
            &b.original,
            [FORWARD_TRIGGER, FORWARD_TRUNCATE_TRIGGER],
        ));
    }
    statements.push(format!("DROP TABLE IF EXISTS {}", b.partitioned.quoted()));
    statements.extend(super::build::drop_gone_table(b));
    statements.extend(drop_functions(b));
    drop_with_state(conn, db, b, &statements)
        .await
        .map_err(|e| {
            if e.is_lock_timeout() {
                MigrateError::CleanupLocked {
                    table: b.original.clone(),
                    source: Box::new(e),
                }
            } else {
                MigrateError::Cleanup {
                    partitioned: b.partitioned.clone(),
                    source: Box::new(e),
                }
            }
            .into()
        })
}

/// Runs `statements` and removes the migration's state row in one transaction (rollback's and
/// finalize's clean-ups): every round trip within the reply deadline, a stalled session holding
/// the locks ended by the server (idle_in_transaction_session_timeout), lock timeouts retried with
/// backoff. The last error is returned for the caller to word.
pub(super) async fn drop_with_state(
    conn: &mut PgConnection,
    db: &DatabaseConfig,
    b: &Blueprint,
    statements: &[String],
) -> Result<(), TxError> {
    tx::Runner::step(
        format!("drop the migration's objects of {}", b.original),
        db,
    )
    .run(conn, async |c, at| {
        tx::exec_all(c, at, statements).await?;
        pg::answered(at.deadline, state::remove(c, &b.original)).await
    })
    .await
    .map(|_| ())
}

pub fn drop_functions(b: &Blueprint) -> Vec<String> {
    vec![
        format!("DROP FUNCTION IF EXISTS {}()", b.forward_function.quoted()),
        format!("DROP FUNCTION IF EXISTS {}()", b.reverse_function.quoted()),
    ]
}

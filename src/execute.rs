//! The executor: the only code that changes the database for maintenance. Each action's steps run
//! as their own transactions under `lock_timeout`, retried with backoff and jitter when a lock is
//! not granted, so application queries never queue behind us for longer than `lock_timeout`.
//! Coordination between instances is a PostgreSQL advisory lock.

use std::time::{Duration, Instant};

use sqlx::{Connection, Executor, PgConnection};

use crate::catalog::ManagedTable;
use crate::config::DatabaseConfig;
use crate::ddl::{Step, Template};
use crate::pg;

/// Advisory-lock key held during a maintenance pass ("partkeep" in ASCII): one pass per database.
pub const MAINTENANCE_LOCK: i64 = 0x7061_7274_6b65_6570;
/// Advisory-lock key held by the daemon's leader for as long as it leads.
pub const LEADER_LOCK: i64 = MAINTENANCE_LOCK + 1;
/// How often a waiting instance retries the maintenance lock.
const LOCK_POLL: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
pub struct StepOutcome {
    pub lock_waits: u32,
    /// Rows moved out of the default partition, when the step moved any.
    pub rows_moved: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("could not get the lock for `{statement}` within lock_timeout ({}) in {attempts} attempt(s): another session holds a conflicting lock on that table (a long transaction, or DDL queued behind one); the next run will try again", humantime::format_duration(*.lock_timeout))]
    LockTimeout {
        /// The statement that waited: it names the table and the lock.
        statement: String,
        attempts: u32,
        lock_timeout: Duration,
    },
    #[error("`{statement}` failed: {reason}")]
    Statement { statement: String, reason: String },
    /// The server went away, or stopped answering, in the middle of the step.
    #[error("lost the connection to PostgreSQL during `{statement}`: {reason}. The server rolls back the unfinished step; the next run picks up from here")]
    ConnectionLost { statement: String, reason: String },
    /// The step was not run: its timeouts (or lease) were not in force ([`crate::pooler`]).
    #[error("`{statement}` was not run: {reason}")]
    Guard {
        statement: String,
        reason: crate::pooler::GuardError,
    },
}

/// Reads what a new partition must inherit from its parent (and from the newest partition).
pub async fn read_template(
    conn: &mut PgConnection,
    table: &ManagedTable,
) -> Result<Template, sqlx::Error> {
    let newest = table
        .partitions
        .iter()
        .rev()
        .find(|p| !p.detach_pending)
        .map(|p| p.name.quoted())
        .unwrap_or_default();
    type Row = (
        String,
        String,
        String,
        Option<String>,
        Vec<String>,
        Vec<String>,
        Vec<String>,
    );
    let (owner, current_user, replident, tablespace, reloptions, publications, columns): Row =
        sqlx::query_as(
            r#"
        SELECT pg_get_userbyid(c.relowner)::text,
               current_user::text,
               c.relreplident::text,
               (SELECT spcname::text FROM pg_tablespace WHERE oid = c.reltablespace AND c.reltablespace <> 0),
               COALESCE((SELECT t.reloptions FROM pg_class t WHERE $2 <> '' AND t.oid = to_regclass($2)), '{}')::text[],
               COALESCE((SELECT array_agg(p.pubname::text) FROM pg_publication_rel pr
                          JOIN pg_publication p ON p.oid = pr.prpubid
                         WHERE $2 <> '' AND pr.prrelid = to_regclass($2)), '{}'),
               COALESCE((SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
                          WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                            AND COALESCE((to_jsonb(a) ->> 'attgenerated'), '') = ''), '{}')
          FROM pg_class c WHERE c.oid = to_regclass($1)
        "#,
        )
        .bind(table.name.quoted())
        .bind(&newest)
        .persistent(false)
        .fetch_one(&mut *conn)
        .await?;
    let grants: Vec<(Option<String>, String, bool)> = sqlx::query_as(
        r#"
        SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee)::text END,
               a.privilege_type::text, a.is_grantable
          FROM pg_class c, aclexplode(c.relacl) a
         WHERE c.oid = to_regclass($1)
         ORDER BY 1 NULLS FIRST, 2
        "#,
    )
    .bind(table.name.quoted())
    .persistent(false)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Template {
        owner,
        current_user,
        grants,
        replica_identity: replident,
        reloptions,
        tablespace,
        publications,
        columns,
        template: None,
    })
}

/// Runs the steps of one action in order, each with bounded lock-timeout retries.
pub async fn run_steps(
    conn: &mut PgConnection,
    db: &DatabaseConfig,
    steps: &[Step],
) -> Result<StepOutcome, ExecError> {
    let mut total = StepOutcome {
        lock_waits: 0,
        rows_moved: 0,
    };
    for step in steps {
        let mut waits = 0;
        let result = loop {
            match run_step(&mut *conn, db, step).await {
                Ok(moved) => break Ok(moved),
                // Only whole transactions are repeated. A statement outside one (DETACH ...
                // CONCURRENTLY) may have committed its first half before timing out; repeating
                // it fails ("already pending detach"), so the next pass, which re-reads the
                // catalog, finalizes it instead.
                Err((e, _))
                    if pg::is_retryable(&e)
                        && step.transactional
                        && waits + 1 < db.lock_retries.max(1) =>
                {
                    waits += 1;
                    let pause = pg::backoff(waits);
                    tracing::info!(attempt = waits, ?pause, error = %pg::describe(&e), "lock not granted in time; retrying");
                    tokio::time::sleep(pause).await;
                }
                Err((e, failed)) => {
                    if pg::is_retryable(&e) {
                        waits += 1;
                    }
                    break Err((e, failed));
                }
            }
        };
        total.lock_waits += waits;
        match result {
            Ok(moved) => total.rows_moved += moved,
            Err((e, failed)) => {
                // Name the statement that failed (it says which table and which lock), not the
                // first of the step.
                let statement = failed
                    .and_then(|i| step.statements.get(i))
                    .cloned()
                    .unwrap_or_else(|| step.statements.join("; "));
                if let Some(reason) = crate::pooler::GuardError::from_sqlx(&e) {
                    let statement = first_line(&statement);
                    return Err(ExecError::Guard { statement, reason });
                }
                return Err(if pg::is_retryable(&e) {
                    ExecError::LockTimeout {
                        statement: first_line(&statement),
                        attempts: waits,
                        lock_timeout: db.lock_timeout,
                    }
                } else if pg::is_connection_lost(&e) {
                    ExecError::ConnectionLost {
                        statement: first_line(&statement),
                        reason: pg::describe(&e),
                    }
                } else {
                    ExecError::Statement {
                        statement: first_line(&statement),
                        reason: pg::describe(&e),
                    }
                });
            }
        }
    }
    Ok(total)
}

/// One attempt of one step; returns the rows moved out of a default partition, or the error
/// with the index of the statement that failed (`None`: BEGIN, SET or COMMIT).
///
/// `executor.execute(raw_sql(..))` rather than `raw_sql(..).execute(executor)` (the same call
/// inside sqlx): the latter's future cannot be proven `Send` for every lifetime, which forbids
/// running a pass in a spawned task (rust-lang/rust#110338).
async fn run_step(
    conn: &mut PgConnection,
    db: &DatabaseConfig,
    step: &Step,
) -> Result<u64, (sqlx::Error, Option<usize>)> {
    // Every round trip is bounded on our side too: a stalled network never hangs the pass.
    let deadline = pg::reply_deadline(db);
    let mut moved = 0;
    if !step.transactional {
        for (i, s) in step.statements.iter().enumerate() {
            pg::answered(
                deadline,
                crate::pooler::guard_outside_transaction(conn, db, &first_line(s)),
            )
            .await
            .map_err(|e| (e, Some(i)))?;
            pg::answered(deadline, conn.execute(sqlx::raw_sql(s)))
                .await
                .map_err(|e| (e, Some(i)))?;
        }
        return Ok(0);
    }
    let mut tx = pg::answered(deadline, conn.begin())
        .await
        .map_err(|e| (e, None))?;
    pg::answered(
        deadline,
        pg::set_local_step_timeouts(&mut tx, db.lock_timeout, db.statement_timeout),
    )
    .await
    .map_err(|e| (e, None))?;
    // Never DDL without its timeouts (nor, behind a transaction pooler, without the lease).
    pg::answered(deadline, crate::pooler::guard_step(&mut tx, db))
        .await
        .map_err(|e| (e, None))?;
    for (i, s) in step.statements.iter().enumerate() {
        let r = pg::answered(deadline, tx.execute(sqlx::raw_sql(s)))
            .await
            .map_err(|e| (e, Some(i)))?;
        if s.starts_with("WITH moved AS") {
            moved += r.rows_affected();
        }
    }
    pg::answered(deadline, tx.commit())
        .await
        .map_err(|e| (e, None))?;
    Ok(moved)
}

fn first_line(s: &str) -> String {
    const MAX: usize = 200;
    if s.len() <= MAX {
        s.to_string()
    } else {
        let mut cut = MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}…", &s[..cut])
    }
}

/// Takes the session-level maintenance lock on `conn`, waiting up to `wait`. `false` means
/// another instance holds it.
pub async fn acquire_maintenance_lock(
    conn: &mut PgConnection,
    wait: Duration,
) -> Result<bool, sqlx::Error> {
    let deadline = Instant::now() + wait;
    loop {
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(MAINTENANCE_LOCK)
            .fetch_one(&mut *conn)
            .await?;
        if got {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(LOCK_POLL).await;
    }
}

pub async fn release_maintenance_lock(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(MAINTENANCE_LOCK)
        .execute(conn)
        .await
        .map(|_| ())
}

//! The executor: the only code that changes the database for maintenance. Each action's steps run
//! as their own transactions under `lock_timeout`, retried with backoff and jitter when a lock is
//! not granted, so application queries never queue behind us for longer than `lock_timeout`.
//! Coordination between instances is a PostgreSQL advisory lock.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;
use sqlx::{Executor, PgConnection};

use crate::catalog::ManagedTable;
use crate::config::DatabaseConfig;
use crate::ddl::{Step, Template};
use crate::pg;
use crate::tx;

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

/// Runs the steps of one action in order: each transactional step through the one transaction
/// runner ([`tx::Runner`]: timeouts, bounded lock-timeout retries with backoff), each statement
/// outside a transaction once.
pub async fn run_steps(
    conn: &mut PgConnection,
    db: &DatabaseConfig,
    steps: &[Step],
) -> Result<StepOutcome, ExecError> {
    let mut total = StepOutcome {
        lock_waits: 0,
        rows_moved: 0,
    };
    // Shared with each attempt's future, which owns what it uses (see `tx::Runner::run_send`).
    let shared = Arc::new(db.clone());
    for step in steps {
        if !step.transactional {
            // Only whole transactions are repeated. A statement outside one (DETACH ...
            // CONCURRENTLY) may have committed its first half before timing out; repeating
            // it fails ("already pending detach"), so the next pass, which re-reads the
            // catalog, finalizes it instead.
            if let Err((e, failed)) = run_outside_transaction(&mut *conn, db, step).await {
                let attempts = u32::from(pg::is_retryable(&e));
                return Err(exec_error(step, failed, &e, attempts, db));
            }
            continue;
        }
        let at_statement = Arc::new(AtomicUsize::new(NO_STATEMENT));
        let runner = tx::Runner::step("maintenance step", db);
        match runner
            .run_send(&mut *conn, step_body(step, &shared, &at_statement))
            .await
        {
            Ok(done) => {
                total.lock_waits += done.lock_waits;
                total.rows_moved += done.value;
            }
            Err(e) => {
                let failed =
                    Some(at_statement.load(Ordering::Relaxed)).filter(|&i| i != NO_STATEMENT);
                let attempts = match &e {
                    tx::TxError::LockTimeout { attempts, .. } => *attempts,
                    _ => 0,
                };
                return Err(exec_error(step, failed, e.sqlx(), attempts, db));
            }
        }
    }
    Ok(total)
}

/// `at_statement` holds no statement: the attempt failed in BEGIN, SET, the guard or COMMIT.
const NO_STATEMENT: usize = usize::MAX;

/// One attempt of a transactional step, inside the transaction the runner opened with its
/// timeouts; returns the rows moved out of a default partition. `at_statement` records which
/// statement is running, so an error names it.
///
/// `executor.execute(raw_sql(..))` rather than `raw_sql(..).execute(executor)` (the same call
/// inside sqlx): the latter's future cannot be proven `Send` for every lifetime, which forbids
/// running a pass in a spawned task (rust-lang/rust#110338).
fn step_body(
    step: &Step,
    db: &Arc<DatabaseConfig>,
    at_statement: &Arc<AtomicUsize>,
) -> impl for<'c> FnMut(&'c mut PgConnection, tx::Attempt) -> BoxFuture<'c, Result<u64, sqlx::Error>>
       + Send
       + 'static {
    let statements: Arc<[String]> = step.statements.clone().into();
    let db = Arc::clone(db);
    let at_statement = Arc::clone(at_statement);
    move |conn, at| {
        let (statements, db, at_statement) = (statements.clone(), db.clone(), at_statement.clone());
        async move {
            at_statement.store(NO_STATEMENT, Ordering::Relaxed);
            // Never DDL without its timeouts (nor, behind a transaction pooler, without the
            // lease): checked after the runner's SET LOCAL.
            pg::answered(at.deadline, crate::pooler::guard_step(conn, &db)).await?;
            let mut moved = 0;
            for (i, s) in statements.iter().enumerate() {
                at_statement.store(i, Ordering::Relaxed);
                let r = pg::answered(at.deadline, conn.execute(sqlx::raw_sql(s))).await?;
                if s.starts_with("WITH moved AS") {
                    moved += r.rows_affected();
                }
            }
            at_statement.store(NO_STATEMENT, Ordering::Relaxed);
            Ok(moved)
        }
        .boxed()
    }
}

/// The statements of a step that cannot run in a transaction, each once, each after its
/// session's timeouts are verified; the error comes with the index of the statement.
async fn run_outside_transaction(
    conn: &mut PgConnection,
    db: &DatabaseConfig,
    step: &Step,
) -> Result<(), (sqlx::Error, Option<usize>)> {
    // Every round trip is bounded on our side too: a stalled network never hangs the pass.
    let deadline = pg::reply_deadline(db);
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
    Ok(())
}

/// The error of a failed step, naming the statement that failed (it says which table and which
/// lock), not the first of the step; `attempts` that met a lock timeout.
fn exec_error(
    step: &Step,
    failed: Option<usize>,
    e: &sqlx::Error,
    attempts: u32,
    db: &DatabaseConfig,
) -> ExecError {
    let statement = failed
        .and_then(|i| step.statements.get(i))
        .cloned()
        .unwrap_or_else(|| step.statements.join("; "));
    let statement = first_line(&statement);
    if let Some(reason) = crate::pooler::GuardError::from_sqlx(e) {
        ExecError::Guard { statement, reason }
    } else if pg::is_retryable(e) {
        ExecError::LockTimeout {
            statement,
            attempts,
            lock_timeout: db.lock_timeout,
        }
    } else if pg::is_connection_lost(e) {
        ExecError::ConnectionLost {
            statement,
            reason: pg::describe(e),
        }
    } else {
        ExecError::Statement {
            statement,
            reason: pg::describe(e),
        }
    }
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

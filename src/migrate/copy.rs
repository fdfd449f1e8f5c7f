//! The online backfill: existing rows move to the new table in primary-key order, one batch per
//! transaction, each batch committed together with its position in the state row. The batch
//! inserts `ON CONFLICT DO NOTHING`; it reads without row locks, and [`settle`] then removes the
//! copies of rows deleted while it ran (see the design note in `mod.rs` for why that and the sync
//! trigger never disagree). Migrations recorded by earlier versions read `FOR SHARE` instead.
//! A batch that meets a lock is rolled back and retried.

use std::time::{Duration, Instant};

use sqlx::PgConnection;

use super::error::MigrateError;
use super::progress::Progress;
use super::state;
use super::Blueprint;
use crate::config::DatabaseConfig;
use crate::error::Error;
use crate::ident::quote_ident;
use crate::pg;
use crate::tx::{self, TxError};

/// Lock wait of a copy batch. Below PostgreSQL's default `deadlock_timeout` (1 s), so that in a
/// lock cycle with an application transaction the batch gives up first and the application
/// never sees a deadlock error because of us.
pub const COPY_LOCK_TIMEOUT: Duration = Duration::from_millis(200);
/// Consecutive failed attempts of one batch before the copy gives up (the next `run` resumes).
const MAX_ATTEMPTS: u32 = 60;
/// After this many consecutive lock failures the batch is halved (down to [`MIN_BATCH`]): a
/// smaller batch holds fewer row locks and meets fewer writers.
const HALVE_AFTER: u32 = 3;
const MIN_BATCH: i64 = 100;

#[derive(Debug, Clone, Default)]
pub struct CopyOutcome {
    pub rows_copied: i64,
    pub rows_filled: i64,
    pub batches: u64,
    pub retries: u32,
}

/// The batch statement. `$1`: text of the last copied primary key (NULL for the first batch),
/// `$2`: batch size. Returns rows read, rows inserted, NULL keys filled, the batch's last key.
pub fn batch_sql(b: &Blueprint, first: bool, upsert: bool) -> String {
    let pk_cols: Vec<String> =
        b.pk.iter()
            .map(|c| format!("o.{}", quote_ident(c)))
            .collect();
    let after = if first {
        "WHERE $1::text[] IS NULL".to_string()
    } else {
        let bound: Vec<String> = b
            .pk_types
            .iter()
            .enumerate()
            .map(|(i, t)| format!("($1::text[])[{}]::{t}", i + 1))
            .collect();
        format!("WHERE ({}) > ({})", pk_cols.join(", "), bound.join(", "))
    };
    let order = pk_cols.join(", ");
    let desc: Vec<String> =
        b.pk.iter()
            .map(|c| format!("s.{} DESC", quote_ident(c)))
            .collect();
    let last: Vec<String> =
        b.pk.iter()
            .map(|c| format!("s.{}::text", quote_ident(c)))
            .collect();
    format!(
        "WITH src AS MATERIALIZED (
           SELECT o.* FROM {orig} o {after} ORDER BY {order} LIMIT $2{lock}
         ), ins AS (
           INSERT INTO {new} ({cols}){overriding} SELECT {select} FROM src s
           {conflict} RETURNING 1
         )
         SELECT (SELECT count(*) FROM src)::int8,
                (SELECT count(*) FROM ins)::int8,
                (SELECT count(*) FROM src s WHERE s.{key} IS NULL)::int8,
                (SELECT ARRAY[{last}] FROM src s ORDER BY {desc} LIMIT 1)",
        orig = b.original.quoted(),
        new = b.partitioned.quoted(),
        cols = Blueprint::list(&b.columns),
        overriding = b.overriding_clause(),
        select = b.select_list("s."),
        conflict = if upsert {
            format!("ON CONFLICT ({}) DO NOTHING", Blueprint::list(&b.new_pk))
        } else {
            String::new()
        },
        key = b.key_quoted(),
        last = last.join(", "),
        desc = desc.join(", "),
        lock = if b.gone.is_some() { "" } else { " FOR SHARE" },
    )
}

/// After the last batch: brings the rows of every key the forward trigger recorded during the
/// copy ([`Blueprint::gone`]: deleted, moved to another key, or changed before they were copied)
/// up to date. Such a row may have been read by a batch before its writer committed. First it
/// waits until every transaction that was writing when the copy ended has ended (a writer whose
/// trigger ran before the last batch committed is one of them). Then, in chunks of
/// [`SETTLE_CHUNK`] keys, each in a short transaction that holds the original's writers back
/// (`EXCLUSIVE`: reads go on) under `lock_timeout`: the copies that the original no longer has
/// under that key are deleted, and the original's current rows upserted. Resumable: a chunk's
/// keys are removed from the table in the chunk's transaction. Returns the keys settled.
pub async fn settle(
    conn: &mut PgConnection,
    db: &DatabaseConfig,
    b: &Blueprint,
) -> Result<u64, Error> {
    let Some(gone) = &b.gone else {
        return Ok(0);
    };
    wait_for_writers(conn, db).await?;
    let sql = settle_sql(b, gone);
    let lock = format!("LOCK TABLE {} IN EXCLUSIVE MODE", b.original.quoted());
    let runner = tx::Runner::step("bring rows written during the copy up to date", db);
    let mut settled = 0u64;
    loop {
        let done = runner
            .run(conn, async |c, at| {
                tx::exec(c, at, &lock).await?;
                pg::answered(
                    at.deadline,
                    sqlx::query_scalar::<_, i64>(&sql)
                        .bind(SETTLE_CHUNK)
                        .persistent(false)
                        .fetch_one(c),
                )
                .await
            })
            .await?;
        settled += done.value as u64;
        if done.value < SETTLE_CHUNK {
            break;
        }
    }
    if settled > 0 {
        tracing::info!(
            keys = settled,
            "brought rows written during the copy up to date"
        );
    }
    Ok(settled)
}

/// Keys per settle transaction: small enough that writers wait only milliseconds for it.
pub const SETTLE_CHUNK: i64 = 1000;
const SETTLE_POLL: Duration = Duration::from_millis(20);

/// Waits until the transactions of this database that hold a transaction id now have ended.
async fn wait_for_writers(conn: &mut PgConnection, db: &DatabaseConfig) -> Result<(), Error> {
    let deadline = pg::reply_deadline(db);
    let writers: (Vec<i32>, Vec<String>) = pg::answered(
        deadline,
        sqlx::query_as(
            "SELECT coalesce(array_agg(pid), '{}'), coalesce(array_agg(backend_xid::text), '{}')
               FROM pg_stat_activity
              WHERE datname = current_database() AND backend_xid IS NOT NULL AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut *conn),
    )
    .await?;
    let until = Instant::now() + db.statement_timeout;
    loop {
        let left: i64 = pg::answered(
            deadline,
            sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity a
                   JOIN unnest($1::int4[], $2::text[]) w(pid, xid) ON a.pid = w.pid AND a.backend_xid::text = w.xid",
            )
            .bind(&writers.0)
            .bind(&writers.1)
            .fetch_one(&mut *conn),
        )
        .await?;
        if left == 0 {
            return Ok(());
        }
        if Instant::now() >= until {
            return Err(MigrateError::SettleTimeout { writers: left }.into());
        }
        tokio::time::sleep(SETTLE_POLL).await;
    }
}

/// The statement of one [`settle`] chunk (`$1`: keys per chunk): takes up to `$1` recorded keys
/// off the table, deletes their copies that the original does not have under the same key, and
/// upserts the original's rows. Returns the number of keys taken.
pub fn settle_sql(b: &Blueprint, gone: &crate::ident::QualifiedName) -> String {
    let pk = |q: &str| {
        b.pk.iter()
            .map(|c| format!("{q}{}", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "WITH k AS (
           DELETE FROM {gone} g WHERE g.ctid = ANY (ARRAY(SELECT ctid FROM {gone} LIMIT $1))
           RETURNING {g_pk}
         ), d AS (
           DELETE FROM {new} n USING (SELECT DISTINCT {k_pk} FROM k) kk
            WHERE ({n_pk}) = ({kk_pk})
              AND NOT EXISTS (SELECT 1 FROM {orig} o WHERE ({o_pk}) = ({n_pk})
                                 AND {filled} IS NOT DISTINCT FROM n.{key})
           RETURNING 1
         ), u AS (
           INSERT INTO {new} ({cols}){overriding} SELECT {select} FROM {orig} s
            WHERE ({s_pk}) IN (SELECT {k_pk} FROM k)
           ON CONFLICT ({conflict}) DO {set}
           RETURNING 1
         )
         SELECT (SELECT count(*) FROM k) + 0 * ((SELECT count(*) FROM d) + (SELECT count(*) FROM u))",
        new = b.partitioned.quoted(),
        orig = b.original.quoted(),
        gone = gone.quoted(),
        g_pk = pk("g."),
        k_pk = pk(""),
        kk_pk = pk("kk."),
        n_pk = pk("n."),
        o_pk = pk("o."),
        s_pk = pk("s."),
        filled = b.filled_key("o."),
        key = b.key_quoted(),
        cols = Blueprint::list(&b.columns),
        overriding = b.overriding_clause(),
        select = b.select_list("s."),
        conflict = Blueprint::list(&b.new_pk),
        set = b.update_set(&b.new_pk),
    )
}

/// Copies from the saved position to the end of the table.
pub async fn run(
    conn: &mut PgConnection,
    db: &DatabaseConfig,
    b: &Blueprint,
    mut last_pk: Option<Vec<String>>,
    batch_size: i64,
    progress: &mut Progress,
) -> Result<CopyOutcome, Error> {
    let mut out = CopyOutcome::default();
    // A plain INSERT first: `ON CONFLICT` costs a speculative insertion per row (half as much
    // again as the insert). A batch that meets a row the trigger wrote first fails with a unique
    // violation and is run again with `ON CONFLICT DO NOTHING`. Migrations recorded by earlier
    // versions (no gone table) always upsert.
    let plain = [batch_sql(b, true, false), batch_sql(b, false, false)];
    let upserting = [batch_sql(b, true, true), batch_sql(b, false, true)];
    let mut upsert = b.gone.is_none();
    // A batch that meets a lock gives up within COPY_LOCK_TIMEOUT and is retried; the server
    // ends a stalled batch's session after a second (idle_in_transaction_session_timeout from
    // the step's lock timeout), releasing what it holds.
    let runner = tx::Runner::step("copy batch", db)
        .lock_timeout(COPY_LOCK_TIMEOUT)
        .attempts(MAX_ATTEMPTS)
        .pause(pause);
    let mut size = batch_size.max(1);
    loop {
        let done = runner
            .run(conn, async |c, at| {
                if at.failed > 0 && at.failed % HALVE_AFTER == 0 {
                    // A smaller batch holds fewer locks and meets fewer writers.
                    size = (size / 2).max(MIN_BATCH.min(batch_size));
                }
                let pk = last_pk.as_deref();
                let [first_sql, next_sql] = if upsert { &upserting } else { &plain };
                batch(c, at, b, first_sql, next_sql, pk, size).await
            })
            .await;
        let done = match done {
            Err(TxError::Failed { source, .. })
                if !upsert && pg::sqlstate(&source).as_deref() == Some(UNIQUE_VIOLATION) =>
            {
                upsert = true;
                continue;
            }
            other => other,
        };
        upsert = b.gone.is_none();
        let done = done.map_err(|e| match e {
            TxError::LockTimeout {
                attempts, source, ..
            } => MigrateError::CopyLocked { attempts, source },
            TxError::ConnectionLost { source, .. } => MigrateError::CopyConnectionLost { source },
            TxError::Failed { source, .. } => MigrateError::Copy { source },
        })?;
        let (read, inserted, filled, last) = done.value;
        out.retries += done.lock_waits;
        if size < batch_size && done.lock_waits == 0 {
            size = (size * 2).min(batch_size);
        }
        out.batches += 1;
        out.rows_copied += inserted;
        out.rows_filled += filled;
        progress.advance(read as u64);
        match last {
            Some(l) if read > 0 => last_pk = Some(l),
            _ => break,
        }
        if read < size {
            // A short batch reached the end; rows inserted since are the trigger's.
            break;
        }
    }
    Ok(out)
}

/// SQLSTATE of a duplicate key.
const UNIQUE_VIOLATION: &str = "23505";

/// Pause before a batch's next attempt: short (the lock it met is an application's row or
/// statement), growing, with jitter.
fn pause(failed: u32) -> Duration {
    Duration::from_millis(20 * u64::from(failed.min(25))).mul_f64(0.5 + fastrand::f64())
}

/// One batch, inside the runner's transaction, with its progress recorded in the same
/// transaction. A crash loses at most the newest batches together with their recorded positions,
/// which is safe: the next run copies them again.
async fn batch(
    conn: &mut PgConnection,
    at: tx::Attempt,
    b: &Blueprint,
    first_sql: &str,
    next_sql: &str,
    last_pk: Option<&[String]>,
    size: i64,
) -> Result<(i64, i64, i64, Option<Vec<String>>), sqlx::Error> {
    pg::answered(
        at.deadline,
        sqlx::query("SELECT set_config('synchronous_commit', 'off', true)").execute(&mut *conn),
    )
    .await?;
    let query = match last_pk {
        None => sqlx::query_as(first_sql).bind(None::<Vec<String>>),
        Some(pk) => sqlx::query_as(next_sql).bind(pk.to_vec()),
    }
    .bind(size);
    let row: (i64, i64, i64, Option<Vec<String>>) =
        pg::answered(at.deadline, query.fetch_one(&mut *conn)).await?;
    if let Some(last) = &row.3 {
        pg::answered(
            at.deadline,
            state::record_batch(conn, &b.original, last, row.1, row.2),
        )
        .await?;
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::tests::pricing_blueprint;

    #[test]
    fn settling_deletes_stale_copies_and_upserts_current_rows_of_recorded_keys() {
        let b = pricing_blueprint(None);
        let sql = settle_sql(&b, b.gone.as_ref().unwrap());
        assert!(
            sql.contains("DELETE FROM \"partkeeper\".\"public_pricing_data_gone\" g"),
            "{sql}"
        );
        assert!(
            sql.contains("NOT EXISTS (SELECT 1 FROM \"public\".\"pricing_data\" o WHERE (o.\"id\") = (n.\"id\")"),
            "{sql}"
        );
        assert!(
            sql.contains("ON CONFLICT (\"id\", \"date\") DO UPDATE SET"),
            "{sql}"
        );
    }

    #[test]
    fn batches_walk_the_primary_key_and_lock_what_they_read_only_without_a_gone_table() {
        let sql = batch_sql(&pricing_blueprint(None), false, true);
        assert!(
            sql.contains("WHERE (o.\"id\") > (($1::text[])[1]::bigint)"),
            "{sql}"
        );
        assert!(sql.contains("ORDER BY o.\"id\" LIMIT $2\n"), "{sql}");
        let mut earlier = pricing_blueprint(None);
        earlier.gone = None;
        assert!(
            batch_sql(&earlier, false, true).contains("ORDER BY o.\"id\" LIMIT $2 FOR SHARE"),
            "{sql}"
        );
        assert!(
            sql.contains("ON CONFLICT (\"id\", \"date\") DO NOTHING"),
            "{sql}"
        );
        assert!(!batch_sql(&pricing_blueprint(None), false, false).contains("ON CONFLICT"));
        let first = batch_sql(&pricing_blueprint(None), true, true);
        assert!(
            first.contains("WHERE $1::text[] IS NULL ORDER BY"),
            "{first}"
        );
    }
}

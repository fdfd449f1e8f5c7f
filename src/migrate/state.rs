//! Resumable progress: one row per migration in `partkeeper.migrations`, written in the same
//! transaction as the work it records, so the row never claims more than was committed. Also the
//! per-table advisory lock that keeps two `migrate` commands off the same table.

use std::time::{Duration, Instant};

use sqlx::PgConnection;

use super::{Blueprint, Mode, STATE_SCHEMA};
use crate::ident::{quote_ident, QualifiedName};

/// First half of the advisory-lock key of a migration ("pkmg"); the second is a hash of the name.
const LOCK_CLASS: i32 = 0x706b_6d67;
/// How long a command waits for the table's migration lock. A killed `run` leaves a server
/// backend that still holds it until its current statement ends, so a restarted run waits a bit.
pub const LOCK_WAIT: Duration = Duration::from_secs(60);
const LOCK_POLL: Duration = Duration::from_millis(250);

/// Where a migration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Built; rows are being copied (sync triggers active).
    Copying,
    /// The partitioned table has the name; the backup is kept in step.
    Swapped,
    /// Swapped back; the partitioned copy and helpers still need dropping.
    RolledBack,
}

impl Phase {
    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::Copying => "copying",
            Phase::Swapped => "swapped",
            Phase::RolledBack => "rolled_back",
        }
    }

    fn parse(s: &str) -> Option<Phase> {
        match s {
            "copying" => Some(Phase::Copying),
            "swapped" => Some(Phase::Swapped),
            "rolled_back" => Some(Phase::RolledBack),
            _ => None,
        }
    }
}

/// One migration's state row.
#[derive(Debug, Clone)]
pub struct State {
    pub phase: Phase,
    pub mode: Mode,
    pub blueprint: Blueprint,
    /// Text of each primary-key column of the last copied row; `None` before the first batch.
    pub last_pk: Option<Vec<String>>,
    pub rows_copied: i64,
    pub rows_filled: i64,
    pub copy_done: bool,
    pub analyzed: bool,
}

const CREATE: &str = r#"
CREATE TABLE IF NOT EXISTS partkeeper.migrations (
  table_schema text NOT NULL,
  table_name   text NOT NULL,
  phase        text NOT NULL CHECK (phase IN ('copying', 'swapped', 'rolled_back')),
  mode         text NOT NULL,
  blueprint    jsonb NOT NULL,
  last_pk      text[],
  rows_copied  bigint NOT NULL DEFAULT 0,
  rows_filled  bigint NOT NULL DEFAULT 0,
  copy_done    boolean NOT NULL DEFAULT false,
  analyzed     boolean NOT NULL DEFAULT false,
  started_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now(),
  swapped_at   timestamptz,
  PRIMARY KEY (table_schema, table_name)
)"#;

/// Creates the schema and the state table (inside the caller's transaction).
pub async fn ensure_schema(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(&format!(
        "CREATE SCHEMA IF NOT EXISTS {}",
        quote_ident(STATE_SCHEMA)
    ))
    .execute(&mut *conn)
    .await?;
    sqlx::raw_sql(CREATE).execute(&mut *conn).await?;
    Ok(())
}

/// The state of `table`'s migration, if one is recorded.
pub async fn load(
    conn: &mut PgConnection,
    table: &QualifiedName,
) -> Result<Option<State>, sqlx::Error> {
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass('partkeeper.migrations') IS NOT NULL")
            .persistent(false)
            .fetch_one(&mut *conn)
            .await?;
    if !exists {
        return Ok(None);
    }
    type Row = (
        String,
        String,
        String,
        Option<Vec<String>>,
        i64,
        i64,
        bool,
        bool,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT phase, mode, blueprint::text, last_pk, rows_copied, rows_filled, copy_done, analyzed
           FROM partkeeper.migrations WHERE table_schema = $1 AND table_name = $2",
    )
    .bind(&table.schema)
    .bind(&table.name)
    .persistent(false)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((phase, mode, blueprint, last_pk, rows_copied, rows_filled, copy_done, analyzed)) =
        row
    else {
        return Ok(None);
    };
    let decode =
        |what: &str| sqlx::Error::Decode(format!("partkeeper.migrations: bad {what}").into());
    Ok(Some(State {
        phase: Phase::parse(&phase).ok_or_else(|| decode("phase"))?,
        mode: if mode == "offline" {
            Mode::Offline
        } else {
            Mode::Online
        },
        blueprint: serde_json::from_str(&blueprint).map_err(|_| decode("blueprint"))?,
        last_pk,
        rows_copied,
        rows_filled,
        copy_done,
        analyzed,
    }))
}

/// Records a new migration (inside the build transaction).
pub async fn insert(
    conn: &mut PgConnection,
    phase: Phase,
    mode: Mode,
    blueprint: &Blueprint,
) -> Result<(), sqlx::Error> {
    let json = serde_json::to_string(blueprint).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query(
        "INSERT INTO partkeeper.migrations (table_schema, table_name, phase, mode, blueprint, swapped_at)
         VALUES ($1, $2, $3, $4, $5::jsonb, CASE WHEN $3 = 'swapped' THEN now() END)",
    )
    .bind(&blueprint.original.schema)
    .bind(&blueprint.original.name)
    .bind(phase.as_str())
    .bind(match mode {
        Mode::Online => "online",
        Mode::Offline => "offline",
    })
    .bind(json)
    .persistent(false)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Records one copied batch (inside the batch's transaction).
pub async fn record_batch(
    conn: &mut PgConnection,
    table: &QualifiedName,
    last_pk: &[String],
    copied: i64,
    filled: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE partkeeper.migrations
            SET last_pk = $3, rows_copied = rows_copied + $4, rows_filled = rows_filled + $5, updated_at = now()
          WHERE table_schema = $1 AND table_name = $2",
    )
    .bind(&table.schema)
    .bind(&table.name)
    .bind(last_pk)
    .bind(copied)
    .bind(filled)
    .persistent(false)
    .execute(conn)
    .await
    .map(|_| ())
}

pub async fn mark_copy_done(
    conn: &mut PgConnection,
    table: &QualifiedName,
) -> Result<(), sqlx::Error> {
    set(conn, table, "copy_done = true").await
}

pub async fn set_phase(
    conn: &mut PgConnection,
    table: &QualifiedName,
    phase: Phase,
) -> Result<(), sqlx::Error> {
    let extra = if phase == Phase::Swapped {
        ", swapped_at = now()"
    } else {
        ""
    };
    sqlx::query(&format!(
        "UPDATE partkeeper.migrations SET phase = $3, updated_at = now(){extra}
          WHERE table_schema = $1 AND table_name = $2"
    ))
    .bind(&table.schema)
    .bind(&table.name)
    .bind(phase.as_str())
    .persistent(false)
    .execute(conn)
    .await
    .map(|_| ())
}

pub async fn mark_analyzed(
    conn: &mut PgConnection,
    table: &QualifiedName,
) -> Result<(), sqlx::Error> {
    set(conn, table, "analyzed = true").await
}

async fn set(
    conn: &mut PgConnection,
    table: &QualifiedName,
    assignment: &'static str,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "UPDATE partkeeper.migrations SET {assignment}, updated_at = now()
          WHERE table_schema = $1 AND table_name = $2"
    ))
    .bind(&table.schema)
    .bind(&table.name)
    .persistent(false)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Deletes the row; drops the schema when no other migration remains in it (and it holds
/// nothing else).
pub async fn remove(conn: &mut PgConnection, table: &QualifiedName) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM partkeeper.migrations WHERE table_schema = $1 AND table_name = $2")
        .bind(&table.schema)
        .bind(&table.name)
        .persistent(false)
        .execute(&mut *conn)
        .await?;
    let others: i64 = sqlx::query_scalar("SELECT count(*) FROM partkeeper.migrations")
        .persistent(false)
        .fetch_one(&mut *conn)
        .await?;
    let foreign: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = 'partkeeper' AND c.relname <> 'migrations' AND c.relkind IN ('r','p','v','m','S','f'))
              + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                  WHERE n.nspname = 'partkeeper')",
    )
    .persistent(false)
    .fetch_one(&mut *conn)
    .await?;
    if others == 0 && foreign == 0 {
        sqlx::raw_sql("DROP TABLE partkeeper.migrations; DROP SCHEMA partkeeper")
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Takes the table's session-level migration lock on `conn`, waiting up to `wait`.
pub async fn lock(
    conn: &mut PgConnection,
    table: &QualifiedName,
    wait: Duration,
) -> Result<bool, sqlx::Error> {
    let deadline = Instant::now() + wait;
    let mut said = false;
    loop {
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
            .bind(LOCK_CLASS)
            .bind(table.to_string())
            .persistent(false)
            .fetch_one(&mut *conn)
            .await?;
        if got {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        if !said {
            tracing::info!(table = %table, "another partkeeper migrate holds this table; waiting");
            said = true;
        }
        tokio::time::sleep(LOCK_POLL).await;
    }
}

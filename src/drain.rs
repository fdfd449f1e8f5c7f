//! `partkeeper drain`: moves the rows of new periods out of the default partition into partitions
//! of their own, for periods that `maintain` leaves alone (more rows than `default_move_limit`).
//!
//! PostgreSQL cannot attach a partition while the default holds rows of its range, and rows in a
//! table that is not attached are not visible through the parent. So no mode both keeps every row
//! visible throughout and lets writes go on; the operator chooses ([`Mode`]):
//!
//! * `online` (default): the five short transactions of [`crate::default_partition`], the move in
//!   batches. Writes never wait longer than `lock_timeout` (each batch holds only row locks; the
//!   table-level locks are brief and taken under `lock_timeout`). The cost: the period's rows are
//!   not visible through the parent from their batch's commit until the attach commits (about the
//!   move plus one scan of the default), and an INSERT of that period in the meantime reports 0
//!   rows (the redirect trigger).
//! * `atomic`: one transaction — the move and ATTACH's scan of the default — under SHARE ROW
//!   EXCLUSIVE on the parent. Every row stays visible throughout; writes to the table wait for
//!   the whole transaction (the move plus one scan of the default), which can exceed
//!   `lock_timeout`.
//!
//! Both costs are estimated before anything changes, from the rows and rates measured on the
//! server: a read of up to [`SCAN_SAMPLE`] rows of the default (scan rate) and a move of up to
//! [`MOVE_SAMPLE`] rows into a temporary table, rolled back (move rate).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection};

use crate::bounds::render_literal;
use crate::catalog::ManagedTable;
use crate::config::DatabaseConfig;
use crate::ddl::{self, Step, Template};
use crate::default_partition;
use crate::execute::{self, ExecError};
use crate::ident::{quote_ident, QualifiedName};

/// Rows read from the default to measure its scan rate.
pub const SCAN_SAMPLE: i64 = 200_000;
/// Rows moved (and rolled back) to measure the move rate.
pub const MOVE_SAMPLE: i64 = 5_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Writes go on; the period's rows are invisible through the parent until the attach
    Online,
    /// One transaction: every row stays visible; writes wait for the whole move and scan
    Atomic,
}

/// One period to drain.
#[derive(Debug, Clone)]
pub struct Period {
    pub partition: QualifiedName,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Exact count of its rows in the default.
    pub rows: u64,
    pub resume: bool,
}

/// Measured rates and the default's size, for the estimates.
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    pub default_rows: i64,
    pub scan_rows_per_sec: f64,
    pub move_rows_per_sec: f64,
}

impl Rates {
    pub fn scan(&self) -> Duration {
        secs(self.default_rows.max(0) as f64 / self.scan_rows_per_sec)
    }
    pub fn moving(&self, rows: u64) -> Duration {
        secs(rows as f64 / self.move_rows_per_sec)
    }
}

fn secs(s: f64) -> Duration {
    if s.is_finite() && s >= 0.0 {
        Duration::from_secs_f64(s)
    } else {
        Duration::ZERO
    }
}

/// The periods with rows in the default: the planned creates (current period through
/// `premake`), counted exactly.
pub async fn periods(
    conn: &mut PgConnection,
    table: &ManagedTable,
    policy: &crate::config::TablePolicy,
    now: DateTime<Utc>,
    version: i32,
) -> Result<Vec<Period>, sqlx::Error> {
    let mut actions = crate::plan::plan(table, policy, now, version).actions;
    actions.retain(|a| matches!(a, crate::plan::Action::Create { .. }));
    let planned: Vec<QualifiedName> = actions.iter().map(|a| a.partition().clone()).collect();
    let facts = default_partition::read_facts(conn, table, &planned).await?;
    let mut out = Vec::new();
    for a in actions {
        if let crate::plan::Action::Create {
            partition,
            from,
            to,
        } = a
        {
            let rows = default_partition::rows_in_range(conn, table, from, to, u64::MAX).await?;
            let resume = facts.resumes(&partition);
            if rows > 0 || resume {
                out.push(Period {
                    partition,
                    from,
                    to,
                    rows,
                    resume,
                });
            }
        }
    }
    Ok(out)
}

/// Measures the scan and move rates (changes nothing: the sample move is rolled back).
pub async fn measure(
    conn: &mut PgConnection,
    table: &ManagedTable,
    tpl: &Template,
    sample: Option<&Period>,
) -> Result<Rates, sqlx::Error> {
    let default = table
        .default
        .as_ref()
        .map(|d| d.name.clone())
        .unwrap_or_else(|| table.name.clone());
    let default_rows = default_partition::default_rows(conn, std::slice::from_ref(&default))
        .await?
        .first()
        .map(|r| r.0)
        .unwrap_or(0);
    let started = Instant::now();
    let read: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM (SELECT 1 FROM {} LIMIT {SCAN_SAMPLE}) s",
        default.quoted()
    ))
    .persistent(false)
    .fetch_one(&mut *conn)
    .await?;
    let scan_rows_per_sec = read.max(1) as f64 / started.elapsed().as_secs_f64().max(1e-6);
    let mut move_rows_per_sec = scan_rows_per_sec / 20.0;
    if let Some(p) = sample {
        let key = quote_ident(&table.column);
        let lit =
            |v| render_literal(v, table.key_type).map_err(|e| sqlx::Error::Protocol(e.to_string()));
        let (lo, hi) = (lit(p.from)?, lit(p.to)?);
        let cols = tpl
            .columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        let mut tx = conn.begin().await?;
        sqlx::raw_sql(&format!(
            "CREATE TEMPORARY TABLE partkeeper_drain_sample (LIKE {} INCLUDING INDEXES) ON COMMIT DROP",
            table.name.quoted()
        ))
        .execute(&mut *tx)
        .await?;
        let started = Instant::now();
        let moved = sqlx::raw_sql(&format!(
            "WITH moved AS (DELETE FROM {d} WHERE ctid = ANY (ARRAY(SELECT ctid FROM {d} WHERE {key} >= {lo} AND {key} < {hi} LIMIT {MOVE_SAMPLE})) RETURNING {cols}) \
             INSERT INTO partkeeper_drain_sample ({cols}) SELECT {cols} FROM moved",
            d = default.quoted()
        ))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let took = started.elapsed().as_secs_f64().max(1e-6);
        tx.rollback().await?;
        if moved > 0 {
            move_rows_per_sec = moved as f64 / took;
        }
    }
    Ok(Rates {
        default_rows,
        scan_rows_per_sec,
        move_rows_per_sec,
    })
}

/// What each mode is expected to cost for `p`, as printed before anything changes.
pub fn expectation(
    p: &Period,
    rates: &Rates,
    table: &ManagedTable,
    lock_timeout: Duration,
) -> String {
    let moving = rates.moving(p.rows);
    let scan = rates.scan();
    let fmt = |d: Duration| format!("{:.1} s", d.as_secs_f64());
    format!(
        "{} row(s) of {} for {}:\n  \
         online: writes never wait longer than lock_timeout ({}); the period's rows are not visible through {} for about {} (move {} + one scan of the default's ~{} rows {}), and an INSERT of that period meanwhile reports 0 rows\n  \
         atomic: every row stays visible; writes to {} pause for about {} (move {} + scan {})",
        p.rows,
        ddl::describe_range(p.from, p.to, table.key_type),
        p.partition,
        humantime::format_duration(lock_timeout),
        table.name,
        fmt(moving + scan),
        fmt(moving),
        rates.default_rows,
        fmt(scan),
        table.name,
        fmt(moving + scan),
        fmt(moving),
        fmt(scan),
    )
}

/// The SQL steps of draining `p` in `mode` (what `--dry-run` prints; the online move is shown
/// once, and runs repeatedly until no row is left).
pub fn steps(
    p: &Period,
    mode: Mode,
    table: &ManagedTable,
    tpl: &Template,
    batch: u64,
    exclude_state: Option<bool>,
) -> Result<Vec<Step>, crate::bounds::BoundsError> {
    match (mode, p.resume) {
        (Mode::Atomic, false) => ddl::render(
            &crate::plan::Action::Create {
                partition: p.partition.clone(),
                from: p.from,
                to: p.to,
            },
            table,
            tpl,
        ),
        _ => default_partition::online_steps(
            table,
            tpl,
            &p.partition,
            p.from,
            p.to,
            p.resume,
            Some(batch),
        )
        .map(|s| s.for_pass(exclude_state)),
    }
}

/// Progress on stderr: a redrawn bar on a terminal, a plain line every few seconds otherwise.
pub struct Bar {
    tty: bool,
    total: u64,
    done: u64,
    started: Instant,
    shown: Option<Instant>,
}

impl Bar {
    pub fn new(total: u64) -> Bar {
        Bar {
            tty: std::io::stderr().is_terminal(),
            total,
            done: 0,
            started: Instant::now(),
            shown: None,
        }
    }

    pub fn advance(&mut self, rows: u64) {
        self.done += rows;
        self.total = self.total.max(self.done);
        let every = if self.tty {
            Duration::from_millis(150)
        } else {
            Duration::from_secs(2)
        };
        if self.shown.is_none_or(|t| t.elapsed() >= every) {
            self.show();
        }
    }

    pub fn finish(&mut self) {
        self.show();
        if self.tty {
            eprintln!();
        }
    }

    fn show(&mut self) {
        self.shown = Some(Instant::now());
        let pct = if self.total == 0 {
            100.0
        } else {
            self.done as f64 * 100.0 / self.total as f64
        };
        let rate = self.done as f64 / self.started.elapsed().as_secs_f64().max(1e-6);
        let mut err = std::io::stderr().lock();
        if self.tty {
            let filled = ((pct / 100.0) * 30.0) as usize;
            let bar: String = (0..30)
                .map(|i| if i < filled { '#' } else { '-' })
                .collect();
            let _ = write!(
                err,
                "\rmoving [{bar}] {pct:5.1}% {} / {} rows  {rate:.0} rows/s   ",
                self.done, self.total
            );
        } else {
            let _ = writeln!(
                err,
                "moving: {} / {} rows ({pct:.1}%), {rate:.0} rows/s",
                self.done, self.total
            );
        }
        let _ = err.flush();
    }
}

/// Runs the drain of one period; returns the rows moved.
pub async fn run_period(
    conn: &mut PgConnection,
    db: &DatabaseConfig,
    p: &Period,
    mode: Mode,
    table: &ManagedTable,
    tpl: &Template,
    batch: u64,
) -> Result<u64, ExecError> {
    let facts = default_partition::read_facts(conn, table, std::slice::from_ref(&p.partition))
        .await
        .map_err(|e| ExecError::Statement {
            statement: "read the default partition's helpers".into(),
            reason: crate::pg::describe(&e),
        })?;
    let exclude = facts.exclude_state(&p.partition);
    let rendered =
        steps(p, mode, table, tpl, batch, exclude).map_err(|e| ExecError::Statement {
            statement: "render".into(),
            reason: e.to_string(),
        })?;
    let mut bar = Bar::new(p.rows);
    if mode == Mode::Atomic && !p.resume {
        eprintln!(
            "moving {} rows in one transaction (no progress until it commits)...",
            p.rows
        );
        let out = execute::run_steps(conn, db, &rendered).await?;
        bar.advance(out.rows_moved);
        bar.finish();
        return Ok(out.rows_moved);
    }
    // prepare, then the batched move until nothing is left, then the rest.
    let mut it = rendered.into_iter();
    let prepare = it.next().into_iter().collect::<Vec<_>>();
    let move_step = it.next().into_iter().collect::<Vec<_>>();
    execute::run_steps(conn, db, &prepare).await?;
    let mut moved = 0;
    loop {
        let n = execute::run_steps(conn, db, &move_step).await?.rows_moved;
        moved += n;
        bar.advance(n);
        if n < batch {
            break;
        }
    }
    bar.finish();
    let rest: Vec<Step> = it.collect();
    execute::run_steps(conn, db, &rest).await?;
    Ok(moved)
}

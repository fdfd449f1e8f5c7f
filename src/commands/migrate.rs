//! `partkeeper migrate plan|run|verify|rollback|finalize`: turns the arguments into library calls
//! (`crate::migrate`) and prints the outcome. Exit 1 for a blocked plan, a failed step or a verify
//! difference; 2 for usage, configuration or connection errors (nothing changed).

use crate::cli::{MigrateArgs, MigrateStep};
use crate::config::{Config, TablePolicy};
use crate::error::{Error, Result};
use crate::migrate::plan::{self, Preflight};
use crate::migrate::run::{self as migrate_run, Outcome, Prepared};
use crate::migrate::state::{self, Phase};
use crate::migrate::{finalize, rollback, verify, Mode};
use crate::pg;

pub async fn run(cfg: Config, args: MigrateArgs) -> Result<i32> {
    let policy = cfg
        .select_tables(Some(&args.table))?
        .into_iter()
        .next()
        .ok_or_else(|| Error::Usage("--table matched nothing".into()))?;
    if args.batch_size == 0 {
        return Err(Error::Usage("--batch-size must be at least 1".into()));
    }
    let mode = if args.offline {
        Mode::Offline
    } else {
        Mode::Online
    };
    // A migration holds session advisory locks and long transactions: no transaction pooler.
    if cfg.database.pooler == crate::config::Pooler::Transaction
        && !matches!(args.step, MigrateStep::Plan | MigrateStep::Verify)
    {
        return Err(Error::Usage(
            "`migrate run`, `rollback` and `finalize` need a direct or session-mode connection (they hold a session-level lock for their whole run), and database.pooler = \"transaction\": nothing was changed. Run them with a configuration whose database.url reaches PostgreSQL directly or through a session-mode pool (database.pooler = \"none\" or \"session\")".into(),
        ));
    }
    let mut conn = super::common::connect(&cfg).await?;
    // Every round trip is bounded on our side too (as in maintain): a stalled network fails the
    // command (exit 1) instead of hanging it; the state row keeps the migration resumable.
    let deadline = pg::reply_deadline(&cfg.database);
    match args.step {
        MigrateStep::Plan => {
            // Behind a transaction pooler the plan reads in one transaction
            // ([`crate::pooler::Reader`]), ended here so the pooler can reuse its session.
            let mut reader =
                pg::answered(deadline, crate::pooler::db_reader(&mut conn, &cfg.database)).await?;
            let planned = plan_step(&mut reader, &cfg, &policy, &args, mode).await;
            let _ = pg::answered(deadline, reader.done()).await;
            planned
        }
        MigrateStep::Verify => verify_step(&mut conn, &cfg.database, &policy).await,
        step => {
            if !pg::answered(
                deadline + state::LOCK_WAIT,
                state::lock(&mut conn, &policy.name, state::LOCK_WAIT),
            )
            .await?
            {
                return Err(Error::Failed(format!(
                    "another `partkeeper migrate` is working on {} (it holds the migration lock); wait for it to finish",
                    policy.name
                )));
            }
            match step {
                MigrateStep::Run => run_step(&mut conn, &cfg, &policy, &args, mode).await,
                MigrateStep::Rollback => {
                    let s = pg::answered(deadline, state::load(&mut conn, &policy.name)).await?;
                    match rollback::run(&mut conn, &cfg.database, s).await? {
                        rollback::Outcome::NothingToDo => {
                            println!("{}: no migration in progress; nothing to roll back", policy.name)
                        }
                        rollback::Outcome::Abandoned => println!(
                            "{}: the unfinished migration was abandoned; the partitioned copy, sync triggers and state are dropped, the table is as it was",
                            policy.name
                        ),
                        rollback::Outcome::SwappedBack { lock_held_ms } => println!(
                            "{}: rolled back; the original plain table is back with every row, including writes made since the swap (locks held {lock_held_ms} ms). The partitioned copy was dropped",
                            policy.name
                        ),
                        rollback::Outcome::CleanedUp => println!(
                            "{}: rollback completed; the partitioned copy and helpers are dropped",
                            policy.name
                        ),
                    }
                    Ok(0)
                }
                MigrateStep::Finalize => {
                    let s = pg::answered(deadline, state::load(&mut conn, &policy.name)).await?;
                    match finalize::run(&mut conn, &cfg.database, s).await? {
                        finalize::Outcome::NothingToDo => println!(
                            "{}: no migration to finalize; nothing to do",
                            policy.name
                        ),
                        finalize::Outcome::Finalized => println!(
                            "{}: finalized; the backup, sync trigger, functions and migration state are dropped",
                            policy.name
                        ),
                        finalize::Outcome::CleanedUp => println!(
                            "{}: the rolled-back migration's leftovers are dropped",
                            policy.name
                        ),
                    }
                    Ok(0)
                }
                MigrateStep::Plan | MigrateStep::Verify => unreachable!("handled above"),
            }
        }
    }
}

async fn plan_step(
    conn: &mut sqlx::PgConnection,
    cfg: &Config,
    policy: &TablePolicy,
    args: &MigrateArgs,
    mode: Mode,
) -> Result<i32> {
    let deadline = pg::reply_deadline(&cfg.database);
    if let Some(s) = pg::answered(deadline, state::load(conn, &policy.name)).await? {
        println!(
            "{}: a migration is recorded, phase {}; `migrate run` continues it, `migrate rollback` undoes it",
            policy.name,
            s.phase.as_str()
        );
        return Ok(0);
    }
    let prepared = migrate_run::prepare(
        conn,
        &cfg.database,
        policy,
        &plan::Options {
            fill: args.fill_null_with.clone(),
            mode,
            now: chrono::Utc::now(),
        },
    )
    .await?;
    print_plan(policy, &prepared, args, mode);
    if prepared.preflight.blocked() {
        Err(Error::ProblemsFound(format!(
            "the conversion of {} is blocked ({} problem(s) above); nothing was changed",
            policy.name,
            prepared.preflight.blockers.len()
        )))
    } else {
        Ok(0)
    }
}

fn print_plan(policy: &TablePolicy, p: &Prepared, args: &MigrateArgs, mode: Mode) {
    let inv = &p.inventory;
    let pf: &Preflight = &p.preflight;
    println!(
        "Migration plan for {} → PARTITION BY RANGE ({}), {}, premake {}{}",
        policy.name,
        policy.column,
        policy.interval,
        policy.premake,
        if policy.default_partition {
            ", with a default partition"
        } else {
            ""
        }
    );
    println!("  server: PostgreSQL {}", inv.server_version);
    println!(
        "  size: ~{} rows, table {}, indexes {}",
        inv.rows_estimate.max(0.0) as i64,
        human_bytes(inv.table_bytes),
        human_bytes(inv.index_bytes)
    );
    let need = (inv.table_bytes + inv.index_bytes) as u64;
    match &inv.free_disk {
        Some((dir, free)) => println!(
            "  disk: {} free at {dir}; the copy needs about {} more (plus WAL)",
            human_bytes(*free as i64),
            human_bytes(need as i64)
        ),
        None => println!(
            "  disk: free space not visible from here (run as a superuser beside the server to see it); the copy needs about {} more (plus WAL)",
            human_bytes(need as i64)
        ),
    }
    println!(
        "  estimated time: ~{} ({} copy)",
        human_secs(pf.estimate_secs),
        match mode {
            Mode::Online => "online",
            Mode::Offline => "offline",
        }
    );
    if let Some(f) = &p.facts {
        println!(
            "  key {}: {} .. {}; {} row(s) with NULL {}",
            policy.column,
            f.min_key_text.as_deref().unwrap_or("(no rows)"),
            f.max_key_text.as_deref().unwrap_or("(no rows)"),
            f.null_keys,
            policy.column
        );
    }
    if let (Some(first), Some(last)) = (pf.partitions.first(), pf.partitions.last()) {
        println!(
            "  partitions: {} ({} .. {}) + {} default{}",
            pf.partitions.len(),
            first.name.name,
            last.name.name,
            if policy.default_partition {
                "a"
            } else {
                "a temporary"
            },
            if policy.default_partition {
                ""
            } else {
                " (catches rows written outside the range during the copy; dropped empty at the swap)"
            }
        );
    }
    if !pf.carried.is_empty() {
        println!("\nDependent objects (carried over):");
        for c in &pf.carried {
            println!("  - {c}");
        }
    }
    if !pf.none_found.is_empty() {
        println!("  (none found: {})", pf.none_found.join(", "));
    }
    if let Some(b) = &pf.blueprint {
        println!("\nSteps:");
        let steps = match mode {
            Mode::Online => vec![
                format!("create {} beside {} with its partitions, keys and indexes, plus sync triggers (one transaction)", b.partitioned, b.original),
                format!("copy rows in primary-key order, {} per batch, while triggers mirror every INSERT/UPDATE/DELETE{}", args.batch_size, if b.fill.is_some() { "; NULL keys filled" } else { "" }),
                format!("swap in one short transaction under lock_timeout: {} becomes {}, the new table takes the name; views, grants, policies, sequence ownership follow", b.original, b.backup),
                format!("keep {} in step with later writes until `migrate finalize` (so `migrate rollback` loses nothing)", b.backup),
                "ANALYZE".to_string(),
            ],
            Mode::Offline => vec![
                format!("create {} with its partitions (one transaction with everything below)", b.partitioned),
                format!("lock {} against writes, INSERT ... SELECT every row, then build keys and indexes", b.original),
                format!("swap: {} becomes {}, the new table takes the name", b.original, b.backup),
                "ANALYZE".to_string(),
            ],
        };
        for (i, s) in steps.iter().enumerate() {
            println!("  {}. {s}", i + 1);
        }
    }
    if !pf.warnings.is_empty() {
        println!("\nWhat changes:");
        for w in &pf.warnings {
            println!("  - {w}");
        }
    }
    if !pf.blockers.is_empty() {
        println!("\nBLOCKED:");
        for b in &pf.blockers {
            println!("  - {b}");
        }
    } else {
        println!(
            "\nReady: run `partkeeper migrate run --table {}`",
            policy.name.as_written()
        );
    }
}

async fn run_step(
    conn: &mut sqlx::PgConnection,
    cfg: &Config,
    policy: &TablePolicy,
    args: &MigrateArgs,
    mode: Mode,
) -> Result<i32> {
    let outcome = migrate_run::run(
        conn,
        &cfg.database,
        policy,
        &migrate_run::Options {
            mode,
            batch_size: args.batch_size.min(i64::MAX as u64) as i64,
            fill: args.fill_null_with.clone(),
            now: chrono::Utc::now(),
        },
    )
    .await?;
    match outcome {
        Outcome::AlreadyPartitioned => {
            println!("{}: already partitioned; nothing to do", policy.name);
            Ok(0)
        }
        Outcome::AlreadySwapped => {
            println!(
                "{}: already migrated (swapped); nothing to do. Next: `migrate verify`, then `migrate finalize` (or `migrate rollback`)",
                policy.name
            );
            Ok(0)
        }
        Outcome::RolledBack => Err(Error::Failed(format!(
            "{}: a rollback swapped back but did not finish cleaning up; run `migrate rollback` again first",
            policy.name
        ))),
        Outcome::Blocked(p) => {
            println!("{}: cannot convert; nothing was changed:", policy.name);
            for b in &p.preflight.blockers {
                println!("  - {b}");
            }
            Err(Error::ProblemsFound(format!(
                "the conversion of {} is blocked; see `partkeeper migrate plan --table {}`",
                policy.name,
                policy.name.as_written()
            )))
        }
        Outcome::Migrated(s) => {
            println!(
                "{}: migrated{}: {} row(s) copied in {:.1}s{}{}, {} partition(s){}; swap held its locks {} ms{}; total {:.1}s",
                policy.name,
                if s.resumed { " (resumed)" } else { "" },
                s.rows_copied,
                s.copy_secs,
                if s.rows_filled > 0 {
                    format!(", {} NULL key(s) filled", s.rows_filled)
                } else {
                    String::new()
                },
                if s.index_secs > 0.0 {
                    format!(", indexes built after the copy in {:.1}s", s.index_secs)
                } else {
                    String::new()
                },
                s.partitions,
                if s.extra_partitions > 0 {
                    format!(" + {} for rows written during the copy", s.extra_partitions)
                } else {
                    String::new()
                },
                s.lock_held.as_millis(),
                if s.lock_waits > 0 {
                    format!(" after {} lock wait(s)", s.lock_waits)
                } else {
                    String::new()
                },
                s.total_secs
            );
            println!(
                "Next: `partkeeper migrate verify --table {0}`, then `migrate finalize` (or `migrate rollback`, which loses nothing)",
                policy.name.as_written()
            );
            Ok(0)
        }
    }
}

async fn verify_step(
    conn: &mut sqlx::PgConnection,
    db: &crate::config::DatabaseConfig,
    policy: &TablePolicy,
) -> Result<i32> {
    let deadline = pg::reply_deadline(db);
    // Behind a transaction pooler the reads share one transaction ([`crate::pooler::Reader`]);
    // the comparison then runs in its own snapshot.
    let mut reader = pg::answered(deadline, crate::pooler::db_reader(conn, db)).await?;
    let Some(s) = pg::answered(deadline, state::load(&mut reader, &policy.name)).await? else {
        return Err(Error::Usage(format!(
            "{}: no migration is recorded, so there is nothing to compare (after `finalize` the backup is gone)",
            policy.name
        )));
    };
    let b = &s.blueprint;
    let (partitioned, plain) = match s.phase {
        Phase::Copying => (b.partitioned.clone(), b.original.clone()),
        Phase::Swapped => (b.original.clone(), b.backup.clone()),
        Phase::RolledBack => {
            return Err(Error::Usage(format!(
                "{}: the migration was rolled back; nothing to verify",
                policy.name
            )))
        }
    };
    let mut scoped = policy.clone();
    scoped.name = partitioned.clone();
    let rows = pg::answered(
        deadline,
        crate::catalog::read(&mut reader, &[(partitioned.clone(), b.key.clone())], false),
    )
    .await?;
    pg::answered(deadline, reader.done()).await?;
    let managed = crate::catalog::resolve(&rows[0], &scoped).map_err(Error::Failed)?;
    let report = verify::compare(conn, deadline, b, &partitioned, &plain, &managed).await?;
    let differing = report.differing();
    let total: i64 = report.periods.iter().map(|p| p.partitioned.rows).sum();
    for p in &report.periods {
        println!(
            "{:<40} {:>12} {:>12}  {}",
            p.period,
            p.partitioned.rows,
            p.plain.rows,
            if p.matches() { "ok" } else { "DIFFERS" }
        );
    }
    if differing.is_empty() {
        println!(
            "{}: {} and {} hold the same {} row(s) in {} period(s) (counts and checksums match)",
            policy.name,
            partitioned,
            plain,
            total,
            report.periods.len()
        );
        Ok(0)
    } else {
        Err(Error::ProblemsFound(format!(
            "{} and {} differ in {} period(s): {}",
            partitioned,
            plain,
            differing.len(),
            differing
                .iter()
                .map(|p| format!(
                    "{} ({} vs {} rows{})",
                    p.period,
                    p.partitioned.rows,
                    p.plain.rows,
                    if p.partitioned.rows == p.plain.rows {
                        ", contents differ"
                    } else {
                        ""
                    }
                ))
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}

fn human_bytes(b: i64) -> String {
    let b = b.max(0) as f64;
    match b {
        x if x >= 1e9 => format!("{:.1} GB", x / 1e9),
        x if x >= 1e6 => format!("{:.1} MB", x / 1e6),
        x if x >= 1e3 => format!("{:.0} kB", x / 1e3),
        x => format!("{x} B"),
    }
}

fn human_secs(s: f64) -> String {
    if s < 1.0 {
        "under a second".into()
    } else if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 7200.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

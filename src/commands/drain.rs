//! `partkeeper drain --table T [--dry-run] [--mode online|atomic]`: moves the rows of new periods
//! out of the default partition (the ones `maintain` leaves above `default_move_limit`), after
//! printing the write pause (or invisibility) each mode is expected to cause.

use crate::catalog;
use crate::cli::DrainArgs;
use crate::config::Config;
use crate::drain::{self, Mode};
use crate::error::{Error, Result};

pub async fn run(cfg: Config, args: DrainArgs) -> Result<i32> {
    if args.batch_size == 0 {
        return Err(Error::Usage(
            "--batch-size 0: give the rows moved per transaction, e.g. --batch-size 10000".into(),
        ));
    }
    let policies = cfg.select_tables(Some(&args.table))?;
    let policy = &policies[0];
    let now = super::common::parse_now(args.now.as_deref(), cfg.schedule.timezone)?;
    let mut conn = super::common::connect(&cfg).await?;
    let deadline = crate::pg::reply_deadline(&cfg.database);
    let version = crate::pg::answered(deadline, crate::pg::server_version(&mut conn)).await?;
    let table = match crate::pg::answered(
        deadline,
        catalog::read_managed(&mut conn, std::slice::from_ref(policy), false),
    )
    .await?
    .pop()
    {
        Some(Ok(t)) => t,
        Some(Err(e)) => {
            return Err(Error::Mismatch(format!(
                "the configuration does not match the database (nothing was changed): {e}"
            )))
        }
        None => return Err(Error::Mismatch(format!("table {} not found", policy.name))),
    };
    if table.default.is_none() {
        println!("{}: no default partition: nothing to drain", table.name);
        return Ok(0);
    }
    let periods = crate::pg::answered(
        deadline,
        drain::periods(&mut conn, &table, policy, now, version),
    )
    .await?;
    if periods.is_empty() {
        println!(
            "{}: no rows of the current or next {} period(s) sit in the default partition: nothing to drain",
            table.name, policy.premake
        );
        return Ok(0);
    }
    let tpl =
        crate::pg::answered(deadline, crate::execute::read_template(&mut conn, &table)).await?;
    let rates = crate::pg::answered(
        deadline,
        drain::measure(&mut conn, &table, &tpl, periods.first()),
    )
    .await?;
    println!(
        "measured: default scan {:.0} rows/s, move {:.0} rows/s; the default holds ~{} rows",
        rates.scan_rows_per_sec, rates.move_rows_per_sec, rates.default_rows
    );
    for p in &periods {
        println!(
            "{}",
            drain::expectation(p, &rates, &table, cfg.database.lock_timeout)
        );
    }
    let mode_name = match args.mode {
        Mode::Online => "online",
        Mode::Atomic => "atomic",
    };
    if args.dry_run {
        println!("-- --dry-run: nothing changed; mode {mode_name} would run:");
        for p in &periods {
            let steps = drain::steps(p, args.mode, &table, &tpl, args.batch_size, None)
                .map_err(|e| Error::Failed(format!("cannot render the SQL: {e}")))?;
            println!("-- {}: {} row(s)", p.partition, p.rows);
            for step in steps {
                println!("BEGIN;");
                for s in &step.statements {
                    println!("{s};");
                }
                println!("COMMIT;");
            }
        }
        return Ok(0);
    }
    if !crate::pg::answered(
        deadline,
        crate::execute::acquire_maintenance_lock(&mut conn, crate::maintain::LOCK_WAIT),
    )
    .await?
    {
        return Err(Error::Failed(
            "another partkeeper instance is maintaining this database right now; nothing done, try again".into(),
        ));
    }
    // Another instance may have created a partition meanwhile: plan again under the lock.
    let mut failed = None;
    let mut total = 0;
    for p in &periods {
        let taken = crate::pg::answered(
            deadline,
            catalog::existing_relations(&mut conn, std::slice::from_ref(&p.partition)),
        )
        .await?;
        if !taken.is_empty() && !p.resume {
            failed = Some(format!(
                "cannot create {}: a relation with that name already exists; rename or drop it",
                p.partition
            ));
            break;
        }
        println!("{}: draining {} row(s) ({mode_name})", p.partition, p.rows);
        let started = std::time::Instant::now();
        match drain::run_period(
            &mut conn,
            &cfg.database,
            p,
            args.mode,
            &table,
            &tpl,
            args.batch_size,
        )
        .await
        {
            Ok(n) => {
                total += n;
                tracing::info!(table = %table.name, partition = %p.partition, rows_moved = n, mode = mode_name, duration_ms = started.elapsed().as_millis() as u64, "drained");
                println!(
                    "{}: attached, {n} row(s) moved in {:.1} s",
                    p.partition,
                    started.elapsed().as_secs_f64()
                );
            }
            Err(e) => {
                failed = Some(format!("{}: {e}", p.partition));
                break;
            }
        }
    }
    let _ = crate::pg::answered(
        deadline,
        crate::execute::release_maintenance_lock(&mut conn),
    )
    .await;
    match failed {
        None => {
            println!("{}: {total} row(s) moved out of the default partition", table.name);
            Ok(0)
        }
        Some(e) => Err(Error::Failed(format!(
            "drain failed: {e}. Rows are never lost: a half-done online drain is finished by the next `partkeeper drain` or `maintain`"
        ))),
    }
}

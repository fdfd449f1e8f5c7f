//! `partkeeper maintain`: one pass now, each action printed; `--dry-run` prints the SQL instead.

use crate::cli::MaintainArgs;
use crate::config::{Config, Fleet};
use crate::error::{Error, Result};

use super::common::Selected;
use crate::maintain::{self, Options, PassReport};

pub async fn run(fleet: Fleet, args: MaintainArgs) -> Result<i32> {
    let selected = Selected::from(&fleet, args.database.as_deref(), args.table.as_deref())?;
    let failed = selected
        .each(true, |cfg| database(cfg, &args))
        .await
        .into_iter()
        .filter_map(|(cfg, r)| r.err().map(|e| (cfg.database.name.clone(), e)))
        .collect();
    selected.verdict(failed)
}

async fn database(cfg: &Config, args: &MaintainArgs) -> Result<i32> {
    let policies = cfg.select_tables(args.table.as_deref())?;
    let now = super::common::parse_now(args.now.as_deref(), cfg.schedule.timezone)?;
    let mut conn = super::common::connect(cfg).await?;
    let report = maintain::run_pass(
        &mut conn,
        &cfg.database,
        &policies,
        &Options {
            now,
            dry_run: args.dry_run,
            strict: true,
            lock_wait: maintain::LOCK_WAIT,
        },
    )
    .await?;
    print_report(&report);
    if report.succeeded() {
        Ok(0)
    } else {
        let failed: Vec<String> = report
            .tables
            .iter()
            .filter(|t| !t.succeeded())
            .map(|t| t.table.to_string())
            .collect();
        Err(Error::Failed(format!(
            "maintenance failed for {}; see above. Nothing half-done is lost: an action is one transaction, and the next run finishes what was cut short (a DETACH CONCURRENTLY, or an online attach next to a big default partition)",
            failed.join(", ")
        )))
    }
}

fn print_report(report: &PassReport) {
    if let Some(why) = &report.skipped {
        println!("{why}");
        return;
    }
    for t in &report.tables {
        for note in &t.notes {
            println!("{}: note: {note}", t.table);
        }
        if t.actions.is_empty() && t.error.is_none() {
            println!("{}: nothing to do", t.table);
        }
        for a in &t.actions {
            if report.dry_run {
                println!(
                    "-- {}: would {} {}",
                    t.table,
                    a.action.verb(),
                    a.action.partition()
                );
                for h in &a.hooks {
                    println!("-- would run hook {h}");
                }
                for step in &a.steps {
                    if step.transactional {
                        println!("BEGIN;");
                    }
                    for s in &step.statements {
                        println!("{s};");
                    }
                    if step.transactional {
                        println!("COMMIT;");
                    }
                }
                continue;
            }
            match &a.error {
                None => println!(
                    "{}: {} {} ok ({} ms{}{})",
                    t.table,
                    a.action.verb(),
                    a.action.partition(),
                    a.duration_ms,
                    if a.lock_waits > 0 {
                        format!(", {} lock wait(s)", a.lock_waits)
                    } else {
                        String::new()
                    },
                    if a.rows_moved > 0 {
                        format!(", {} row(s) moved from the default partition", a.rows_moved)
                    } else {
                        String::new()
                    },
                ),
                Some(e) => println!(
                    "{}: {} {} FAILED: {e}",
                    t.table,
                    a.action.verb(),
                    a.action.partition()
                ),
            }
        }
        if let Some(e) = &t.error {
            println!("{}: FAILED: {e}", t.table);
        }
    }
}

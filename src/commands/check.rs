//! `partkeeper check`: read-only verdict per table; exit 1 when anything is wrong.

use crate::catalog;
use crate::check::TableHealth;
use crate::cli::{CheckArgs, OutputFormat};
use crate::config::{Config, Fleet};
use crate::error::{Error, Result};

use super::common::Selected;

pub async fn run(fleet: Fleet, args: CheckArgs) -> Result<i32> {
    let selected = Selected::from(&fleet, args.database.as_deref(), args.table.as_deref())?;
    let text = args.format == OutputFormat::Text;
    let outcomes = selected
        .each(text, |cfg| async {
            let health = assess(cfg, &args).await?;
            if text {
                print_text(&health);
            }
            Ok(health)
        })
        .await;
    let mut failed = Vec::new();
    let mut json = Vec::new();
    for (cfg, outcome) in outcomes {
        let name = cfg.database.name.clone();
        let health = match outcome {
            Ok(h) => h,
            // The part 1 form: nothing printed but the error, as before.
            Err(e) if !selected.named => return Err(e),
            Err(e) => {
                failed.push((name, e));
                continue;
            }
        };
        json.extend(health.iter().map(|h| {
            let mut v = serde_json::to_value(h).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("database".into(), name.clone().into());
            }
            v
        }));
        let bad = health.iter().filter(|h| !h.healthy()).count();
        if bad > 0 {
            failed.push((
                name,
                Error::ProblemsFound(format!(
                    "{bad} table(s) need attention; `partkeeper maintain --dry-run` shows what maintain would do"
                )),
            ));
        }
    }
    if !text {
        println!(
            "{}",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        );
    }
    selected.verdict(failed)
}

/// The verdict on every selected table of one database (read-only).
async fn assess(cfg: &Config, args: &CheckArgs) -> Result<Vec<TableHealth>> {
    let policies = cfg.select_tables(args.table.as_deref())?;
    let now = super::common::parse_now(args.now.as_deref(), cfg.schedule.timezone)?;
    let mut conn = super::common::connect(cfg).await?;
    let deadline = crate::pg::reply_deadline(&cfg.database);
    // Behind a transaction pooler, one read transaction ([`crate::pooler::Reader`]).
    let mut conn =
        crate::pg::answered(deadline, crate::pooler::db_reader(&mut conn, &cfg.database)).await?;
    let version = crate::pg::answered(deadline, crate::pg::server_version(&mut conn)).await?;
    let mut resolved =
        crate::pg::answered(deadline, catalog::read_managed(&mut conn, &policies, false)).await?;
    let extras = crate::pg::answered(
        deadline,
        crate::lifecycle_pass::read_all(&mut conn, &policies, &mut resolved),
    )
    .await?;
    let mut mismatches = Vec::new();
    let mut tables = Vec::new();
    for r in resolved {
        match r {
            Ok(t) => tables.push(t),
            Err(e) => mismatches.push(e),
        }
    }
    if !mismatches.is_empty() {
        return Err(Error::Mismatch(format!(
            "the configuration does not match the database:\n  - {}",
            mismatches.join("\n  - ")
        )));
    }
    let pairs: Vec<_> = tables.iter().zip(policies.iter()).collect();
    let mut health: Vec<TableHealth> = crate::pg::answered(
        deadline,
        crate::default_partition::assess_all(&mut conn, &pairs, now, version),
    )
    .await?;
    for ((h, t), (p, x)) in health
        .iter_mut()
        .zip(&tables)
        .zip(policies.iter().zip(&extras))
    {
        crate::pg::answered(
            deadline,
            crate::lifecycle_pass::assess(&mut conn, t, p, x, version, h),
        )
        .await?;
    }
    crate::pg::answered(deadline, conn.done()).await?;
    Ok(health)
}

fn print_text(health: &[TableHealth]) {
    for h in health {
        if h.healthy() {
            println!(
                "{}: OK ({} partitions, {} ahead)",
                h.table, h.partitions, h.future_partitions
            );
        } else {
            println!("{}: {} problem(s)", h.table, h.problems.len());
            for p in &h.problems {
                println!("  - {p}");
            }
        }
        for n in &h.notes {
            println!("  note: {n}");
        }
        if !h.archived.is_empty() {
            println!("  archived ({}, not part of the table):", h.archived.len());
            for a in &h.archived {
                println!("    {}", a.name);
            }
        }
    }
}

//! `partkeeper check`: read-only verdict per table; exit 1 when anything is wrong.

use crate::catalog;
use crate::check::TableHealth;
use crate::cli::{CheckArgs, OutputFormat};
use crate::config::Config;
use crate::error::{Error, Result};

pub async fn run(cfg: Config, args: CheckArgs) -> Result<i32> {
    let policies = cfg.select_tables(args.table.as_deref())?;
    let now = super::parse_now(args.now.as_deref(), cfg.schedule.timezone)?;
    let mut conn = super::connect(&cfg).await?;
    let deadline = crate::pg::reply_deadline(&cfg.database);
    let version = crate::pg::answered(deadline, crate::pg::server_version(&mut conn)).await?;
    let resolved =
        crate::pg::answered(deadline, catalog::read_managed(&mut conn, &policies, false)).await?;
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
    let health: Vec<TableHealth> = crate::pg::answered(
        deadline,
        crate::default_partition::assess_all(&mut conn, &pairs, now, version),
    )
    .await?;
    match args.format {
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&health).unwrap_or_default()
        ),
        OutputFormat::Text => {
            for h in &health {
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
            }
        }
    }
    let bad = health.iter().filter(|h| !h.healthy()).count();
    if bad == 0 {
        Ok(0)
    } else {
        Err(Error::ProblemsFound(format!(
            "{bad} table(s) need attention; `partkeeper maintain --dry-run` shows what maintain would do"
        )))
    }
}

//! `partkeeper status`: every partition with bounds, size and estimated rows.

use serde::Serialize;

use crate::bounds::BoundValue;
use crate::catalog::{self, Partition};
use crate::cli::{StatusArgs, StatusFormat};
use crate::config::Config;
use crate::error::{Error, Result};

#[derive(Serialize)]
struct TableStatus<'a> {
    table: String,
    partitions: Vec<PartitionStatus<'a>>,
    total_bytes: i64,
}

#[derive(Serialize)]
struct PartitionStatus<'a> {
    name: String,
    bounds: &'a str,
    size_bytes: i64,
    rows_estimate: f64,
    default: bool,
}

pub async fn run(cfg: Config, args: StatusArgs) -> Result<i32> {
    let policies = cfg.select_tables(args.table.as_deref())?;
    let mut conn = super::connect(&cfg).await?;
    let resolved = catalog::read_managed(&mut conn, &policies, true).await?;
    let mut out = Vec::new();
    for r in &resolved {
        let t = r.as_ref().map_err(|e| Error::Mismatch(e.clone()))?;
        let parts: Vec<&Partition> = t.partitions.iter().chain(t.default.iter()).collect();
        out.push(TableStatus {
            table: t.name.to_string(),
            total_bytes: parts.iter().filter_map(|p| p.size_bytes).sum(),
            partitions: parts
                .iter()
                .map(|p| PartitionStatus {
                    name: p.name.to_string(),
                    bounds: &p.bound_sql,
                    size_bytes: p.size_bytes.unwrap_or(0),
                    rows_estimate: p.rows_estimate.max(0.0),
                    default: p.from == BoundValue::MinValue
                        && p.to == BoundValue::MaxValue
                        && p.bound_sql == "DEFAULT",
                })
                .collect(),
        });
    }
    match args.format {
        StatusFormat::Json => {
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default())
        }
        StatusFormat::Table => {
            for t in &out {
                println!(
                    "{} ({} partitions, {})",
                    t.table,
                    t.partitions.len(),
                    human_bytes(t.total_bytes)
                );
                println!(
                    "  {:<40} {:>10} {:>12}  bounds",
                    "partition", "size", "rows (est.)"
                );
                for p in &t.partitions {
                    println!(
                        "  {:<40} {:>10} {:>12}  {}",
                        p.name,
                        human_bytes(p.size_bytes),
                        p.rows_estimate as i64,
                        p.bounds
                    );
                }
            }
        }
    }
    Ok(0)
}

pub fn human_bytes(n: i64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

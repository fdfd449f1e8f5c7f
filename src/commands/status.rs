//! `partkeeper status`: every partition with bounds, size and estimated rows; then replication
//! lag, from each configured replica's end and from the primary's (`pg_stat_replication`).

use serde::Serialize;

use crate::bounds::BoundValue;
use crate::catalog::{self, Partition};
use crate::cli::{StatusArgs, StatusFormat};
use crate::config::{Config, Fleet};
use crate::error::{Error, Result};

use super::common::Selected;
use crate::replication::{self, ReplicaProbe, ReplicaView, StandbyView};

#[derive(Serialize)]
struct TableStatus<'a> {
    table: String,
    partitions: Vec<PartitionStatus<'a>>,
    total_bytes: i64,
    /// `retention_mode = "archive"`: archived partitions, no longer part of the table.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    archived: Vec<crate::archive::Archived>,
}

#[derive(Serialize)]
struct PartitionStatus<'a> {
    name: String,
    bounds: &'a str,
    size_bytes: i64,
    rows_estimate: f64,
    default: bool,
}

pub async fn run(fleet: Fleet, args: StatusArgs) -> Result<i32> {
    let selected = Selected::from(&fleet, args.database.as_deref(), args.table.as_deref())?;
    let table = args.format == StatusFormat::Table;
    let outcomes = selected.each(table, |cfg| database(cfg, &args)).await;
    if !selected.named {
        // The part 1 form: one database, printed exactly as before.
        for (_, outcome) in outcomes {
            if let Some(v) = outcome? {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            }
        }
        return Ok(0);
    }
    // A fleet: one JSON document listing every database, those that failed with their error.
    let mut failed = Vec::new();
    let mut databases = Vec::new();
    for (cfg, outcome) in outcomes {
        let name = cfg.database.name.clone();
        match outcome {
            Ok(json) => databases.extend(json.map(|mut v| {
                if let Some(o) = v.as_object_mut() {
                    o.insert("database".into(), name.clone().into());
                }
                v
            })),
            Err(e) => {
                databases.push(serde_json::json!({"database": name, "error": e.to_string()}));
                failed.push((name, e));
            }
        }
    }
    if !table {
        let doc = serde_json::json!({ "databases": databases });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    }
    selected.verdict(failed)
}

/// One database: printed as a table, or its JSON document returned.
async fn database(cfg: &Config, args: &StatusArgs) -> Result<Option<serde_json::Value>> {
    let policies = cfg.select_tables(args.table.as_deref())?;
    let mut conn = super::common::connect(cfg).await?;
    // Behind a transaction pooler, one read transaction ([`crate::pooler::Reader`]).
    let mut conn = crate::pooler::db_reader(&mut conn, &cfg.database).await?;
    let resolved = catalog::read_managed(&mut conn, &policies, true).await?;
    let mut out = Vec::new();
    for (r, policy) in resolved.iter().zip(&policies) {
        let t = r.as_ref().map_err(|e| Error::Mismatch(e.clone()))?;
        let archived = if policy.retention_mode == crate::config::RetentionMode::Archive {
            crate::archive::list(&mut conn, &t.name, &policy.lifecycle.archive_schema).await?
        } else {
            Vec::new()
        };
        let parts: Vec<&Partition> = t.partitions.iter().chain(t.default.iter()).collect();
        out.push(TableStatus {
            table: t.name.to_string(),
            total_bytes: parts.iter().filter_map(|p| p.size_bytes).sum(),
            archived,
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
    let standbys = match replication::standbys(&mut conn).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %crate::pg::describe(&e), "cannot read pg_stat_replication");
            Vec::new()
        }
    };
    conn.done().await?;
    let replicas = futures::future::join_all(
        cfg.replicas
            .iter()
            .cloned()
            .map(|r| async move { ReplicaProbe::new(r).probe().await }),
    )
    .await;
    match args.format {
        StatusFormat::Json => {
            return Ok(Some(serde_json::json!({
                "tables": out,
                "replicas": replicas,
                "standbys": standbys,
            })))
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
                if !t.archived.is_empty() {
                    println!("  archived (not part of the table)");
                    for a in &t.archived {
                        println!(
                            "  {:<40} {:>10} {:>12}",
                            a.name.to_string(),
                            human_bytes(a.size_bytes),
                            a.rows_estimate as i64
                        );
                    }
                }
            }
            print_replication(&replicas, &standbys);
        }
    }
    Ok(None)
}

fn print_replication(replicas: &[ReplicaView], standbys: &[StandbyView]) {
    if replicas.is_empty() && standbys.is_empty() {
        println!("replicas: none configured, and no standby streams from the primary");
        return;
    }
    if !replicas.is_empty() {
        println!("replicas (as each one sees itself)");
        for r in replicas {
            let state = if !r.up {
                format!("DOWN ({})", r.error.as_deref().unwrap_or("no answer"))
            } else if r.in_recovery == Some(false) {
                "up, NOT a standby (promoted, or the url names a primary)".to_string()
            } else {
                format!(
                    "up, lag {}, {} not replayed",
                    r.lag_seconds
                        .map(|s| format!("{s:.1} s"))
                        .unwrap_or_else(|| "unknown".into()),
                    human_bytes(r.lag_bytes.unwrap_or(0))
                )
            };
            println!("  {:<24} {:<32} {state}", r.name, r.target);
        }
    }
    if !standbys.is_empty() {
        println!("standbys (as the primary sees them)");
        for s in standbys {
            println!(
                "  {:<24} {:<32} {}, replay lag {:.1} s, {} not replayed",
                s.name,
                s.client_addr.as_deref().unwrap_or("local"),
                s.state,
                s.lag_seconds,
                s.lag_bytes
                    .map(human_bytes)
                    .unwrap_or_else(|| "? (grant pg_monitor to see positions)".into()),
            );
        }
    }
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

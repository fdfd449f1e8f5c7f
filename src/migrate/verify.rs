//! `verify`: the partitioned table against the plain one (the backup after the swap, the original
//! before it), per period: row count and an order-independent checksum of the row contents (the
//! sum of a 64-bit hash of each row's text). Both sides are read in one REPEATABLE READ snapshot,
//! and the sync triggers write both tables in the writer's transaction, so a busy table compares
//! equal too. The plain side's NULL keys are filled as the copy filled them.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::{Connection, PgConnection};

use super::Blueprint;
use crate::bounds::{render_literal, BoundValue};
use crate::catalog::ManagedTable;
use crate::ident::QualifiedName;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeriodSum {
    pub rows: i64,
    /// Sum of `hashtextextended(row::text, 0)` as exact decimal text.
    pub checksum: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PeriodReport {
    /// The partition's name, or the range when no partition covers it.
    pub period: String,
    pub partitioned: PeriodSum,
    pub plain: PeriodSum,
}

impl PeriodReport {
    pub fn matches(&self) -> bool {
        self.partitioned == self.plain
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub partitioned: QualifiedName,
    pub plain: QualifiedName,
    pub periods: Vec<PeriodReport>,
}

impl Report {
    pub fn differing(&self) -> Vec<&PeriodReport> {
        self.periods.iter().filter(|p| !p.matches()).collect()
    }
}

/// Boundaries of the partitions (sorted, distinct) and a label per bucket of `width_bucket`:
/// bucket 0 is below the first boundary, bucket i lies between boundaries i-1 and i.
pub fn buckets(
    table: &ManagedTable,
) -> Result<(Vec<String>, Vec<String>), crate::bounds::BoundsError> {
    let mut edges: Vec<chrono::DateTime<chrono::Utc>> = Vec::new();
    for p in &table.partitions {
        for v in [p.from, p.to] {
            if let BoundValue::Value(t) = v {
                edges.push(t);
            }
        }
    }
    edges.sort();
    edges.dedup();
    let text = |t| render_literal(t, table.key_type).map(|s| s.trim_matches('\'').to_string());
    let thresholds = edges
        .iter()
        .map(|t| text(*t))
        .collect::<Result<Vec<_>, _>>()?;
    let mut labels = Vec::with_capacity(edges.len() + 1);
    labels.push(match thresholds.first() {
        Some(first) => format!("before {first}"),
        None => "all rows".to_string(),
    });
    for w in edges.windows(2) {
        let name = table
            .partitions
            .iter()
            .find(|p| p.from == BoundValue::Value(w[0]) && p.to == BoundValue::Value(w[1]))
            .map(|p| p.name.name.clone());
        labels.push(name.unwrap_or_else(|| {
            format!(
                "[{}, {}) (no partition)",
                text(w[0]).unwrap_or_default(),
                text(w[1]).unwrap_or_default()
            )
        }));
    }
    if let Some(last) = thresholds.last() {
        labels.push(format!("from {last} on"));
    }
    Ok((thresholds, labels))
}

fn sums_sql(b: &Blueprint, table: &QualifiedName) -> String {
    format!(
        "SELECT width_bucket(k, (SELECT $1::text[]::{kt}[]))::int4 AS bucket, count(*)::int8,
                COALESCE(sum(hashtextextended(r, 0)::numeric), 0)::text
           FROM (SELECT {key} AS k, ROW({cols})::text AS r FROM {table}) s
          GROUP BY 1",
        kt = b.key_sql_type,
        key = b.filled_key(""),
        cols = b.select_list(""),
        table = table.quoted()
    )
}

/// Compares `partitioned` and `plain` in one snapshot.
pub async fn compare(
    conn: &mut PgConnection,
    deadline: std::time::Duration,
    b: &Blueprint,
    partitioned: &QualifiedName,
    plain: &QualifiedName,
    managed: &ManagedTable,
) -> Result<Report, crate::error::Error> {
    let (thresholds, labels) = buckets(managed)?;
    // Each round trip within `deadline` ([`crate::pg::reply_deadline`]).
    let mut tx = crate::pg::answered(deadline, conn.begin()).await?;
    crate::pg::answered(
        deadline,
        sqlx::raw_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx),
    )
    .await?;
    let mut sides = Vec::new();
    for t in [partitioned, plain] {
        let sql = sums_sql(b, t);
        let rows: Vec<(i32, i64, String)> = crate::pg::answered(
            deadline,
            sqlx::query_as(&sql)
                .bind(&thresholds)
                .persistent(false)
                .fetch_all(&mut *tx),
        )
        .await?;
        sides.push(
            rows.into_iter()
                .map(|(bucket, rows, checksum)| (bucket, PeriodSum { rows, checksum }))
                .collect::<BTreeMap<i32, PeriodSum>>(),
        );
    }
    crate::pg::answered(deadline, tx.commit()).await?;
    let empty = PeriodSum {
        rows: 0,
        checksum: "0".into(),
    };
    let mut all: Vec<i32> = sides[0].keys().chain(sides[1].keys()).copied().collect();
    all.sort();
    all.dedup();
    let periods = all
        .into_iter()
        .map(|bucket| PeriodReport {
            period: labels
                .get(bucket as usize)
                .cloned()
                .unwrap_or_else(|| format!("bucket {bucket}")),
            partitioned: sides[0]
                .get(&bucket)
                .cloned()
                .unwrap_or_else(|| empty.clone()),
            plain: sides[1]
                .get(&bucket)
                .cloned()
                .unwrap_or_else(|| empty.clone()),
        })
        .collect();
    Ok(Report {
        partitioned: partitioned.clone(),
        plain: plain.clone(),
        periods,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bounds::KeyType;
    use crate::catalog::Partition;
    use chrono::{TimeZone, Utc};

    fn part(name: &str, from: (i32, u32), to: (i32, u32)) -> Partition {
        Partition {
            name: QualifiedName::new("public", name),
            from: BoundValue::Value(Utc.with_ymd_and_hms(from.0, from.1, 1, 0, 0, 0).unwrap()),
            to: BoundValue::Value(Utc.with_ymd_and_hms(to.0, to.1, 1, 0, 0, 0).unwrap()),
            rows_estimate: 0.0,
            size_bytes: None,
            detach_pending: false,
            bound_sql: String::new(),
        }
    }

    #[test]
    fn buckets_are_named_after_partitions_and_gaps_are_shown() {
        let t = ManagedTable {
            name: QualifiedName::new("public", "t"),
            column: "date".into(),
            key_type: KeyType::Date,
            owner: String::new(),
            partitions: vec![
                part("t_2026_01", (2026, 1), (2026, 2)),
                part("t_2026_03", (2026, 3), (2026, 4)),
            ],
            default: None,
            values: None,
        };
        let (thr, labels) = buckets(&t).unwrap();
        assert_eq!(
            thr,
            vec!["2026-01-01", "2026-02-01", "2026-03-01", "2026-04-01"]
        );
        assert_eq!(labels[0], "before 2026-01-01");
        assert_eq!(labels[1], "t_2026_01");
        assert_eq!(labels[2], "[2026-02-01, 2026-03-01) (no partition)");
        assert_eq!(labels[3], "t_2026_03");
        assert_eq!(labels[4], "from 2026-04-01 on");
    }
}

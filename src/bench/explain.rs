//! Reads the output of `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)`: times, shared buffers, rows,
//! and which relations the plan scanned. Pure: the samples in `testdata/` were captured from
//! PostgreSQL 15 and drive the tests.

use std::collections::BTreeSet;

use serde_json::Value;

/// The figures of one EXPLAIN ANALYZE run.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanFigures {
    pub planning_ms: f64,
    pub execution_ms: f64,
    /// Shared buffers found in cache during execution (the top node counts its whole subtree).
    pub shared_hit: u64,
    /// Shared buffers read from the OS or disk during execution.
    pub shared_read: u64,
    /// Rows the top node returned.
    pub rows: u64,
    /// Every relation a scan node names (`Relation Name`), executed or not.
    pub relations_in_plan: BTreeSet<String>,
    /// Relations whose scan ran at least once (`Actual Loops` > 0). Partitions pruned when the
    /// plan was made are absent from the plan; partitions pruned at run time (a parameter known
    /// only during execution) stay in the plan with zero loops, or are counted in
    /// `Subplans Removed`.
    pub relations_scanned: BTreeSet<String>,
    /// Sum of `Subplans Removed` over Append and Merge Append nodes (pruned at executor start).
    pub subplans_removed: u64,
}

impl PlanFigures {
    /// How many of `own` (the table itself, or its partitions) the plan executed.
    pub fn scanned_among(&self, own: &BTreeSet<String>) -> usize {
        self.relations_scanned.intersection(own).count()
    }

    /// How many of `own` appear in the plan at all.
    pub fn planned_among(&self, own: &BTreeSet<String>) -> usize {
        self.relations_in_plan.intersection(own).count()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("EXPLAIN output is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("EXPLAIN output lacks {0:?}; was it run with ANALYZE, BUFFERS and FORMAT JSON?")]
    Missing(&'static str),
}

/// Parses the text of the single `QUERY PLAN` value.
pub fn parse(text: &str) -> Result<PlanFigures, ExplainError> {
    let value: Value = serde_json::from_str(text)?;
    // The output is a one-element array; accept the bare object too.
    let top = match &value {
        Value::Array(items) => items.first().ok_or(ExplainError::Missing("Plan"))?,
        other => other,
    };
    let plan = top.get("Plan").ok_or(ExplainError::Missing("Plan"))?;
    let number = |v: &Value, key: &'static str| v.get(key).and_then(Value::as_f64);
    let count = |v: &Value, key: &'static str| v.get(key).and_then(whole);
    let mut figures = PlanFigures {
        planning_ms: number(top, "Planning Time").ok_or(ExplainError::Missing("Planning Time"))?,
        execution_ms: number(top, "Execution Time")
            .ok_or(ExplainError::Missing("Execution Time"))?,
        shared_hit: count(plan, "Shared Hit Blocks")
            .ok_or(ExplainError::Missing("Shared Hit Blocks"))?,
        shared_read: count(plan, "Shared Read Blocks")
            .ok_or(ExplainError::Missing("Shared Read Blocks"))?,
        rows: count(plan, "Actual Rows").ok_or(ExplainError::Missing("Actual Rows"))?,
        relations_in_plan: BTreeSet::new(),
        relations_scanned: BTreeSet::new(),
        subplans_removed: 0,
    };
    walk(plan, &mut figures);
    Ok(figures)
}

/// A count as EXPLAIN prints it: an integer, or since PostgreSQL 18 a number with decimals
/// (`"Actual Rows": 31.00`, an average per loop).
fn whole(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f.round() as u64))
}

/// Visits every node: children are in `Plans` (InitPlans and SubPlans included).
fn walk(node: &Value, figures: &mut PlanFigures) {
    if let Some(name) = node.get("Relation Name").and_then(Value::as_str) {
        figures.relations_in_plan.insert(name.to_string());
        let loops = node.get("Actual Loops").and_then(whole).unwrap_or(0);
        if loops > 0 {
            figures.relations_scanned.insert(name.to_string());
        }
    }
    if let Some(removed) = node.get("Subplans Removed").and_then(whole) {
        figures.subplans_removed += removed;
    }
    if let Some(children) = node.get("Plans").and_then(Value::as_array) {
        for child in children {
            walk(child, figures);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN_PROPERTY_MONTH: &str = include_str!("testdata/plain_property_month.json");
    const PART_PROPERTY_MONTH: &str = include_str!("testdata/part_property_month.json");
    const PART_ANALYTICS: &str = include_str!("testdata/part_analytics.json");
    const PART_RUNTIME_PRUNED: &str = include_str!("testdata/part_runtime_pruned.json");

    /// The partitioned sample table: 2024-01 .. 2025-03 monthly, plus a default partition.
    fn partitions() -> BTreeSet<String> {
        let mut names: BTreeSet<String> = (0..15)
            .map(|i| format!("pricing_part_{}_{:02}", 2024 + i / 12, i % 12 + 1))
            .collect();
        names.insert("pricing_part_default".into());
        names
    }

    #[test]
    fn a_plain_table_is_one_relation() {
        let f = parse(PLAIN_PROPERTY_MONTH).unwrap();
        assert_eq!(f.relations_scanned.len(), 1);
        assert!(f.relations_scanned.contains("pricing_data"));
        assert_eq!(f.rows, 31);
        assert_eq!((f.shared_hit, f.shared_read), (4, 0));
        assert_eq!(f.planning_ms, 0.366);
        assert_eq!(f.execution_ms, 0.081);
        assert_eq!(f.subplans_removed, 0);
    }

    #[test]
    fn a_one_month_range_scans_one_partition_and_prunes_the_default() {
        let f = parse(PART_PROPERTY_MONTH).unwrap();
        let own = partitions();
        assert_eq!(f.scanned_among(&own), 1);
        assert_eq!(f.planned_among(&own), 1);
        assert!(f.relations_scanned.contains("pricing_part_2025_01"));
        // The bitmap heap scan's figures include its index scan child.
        assert_eq!((f.shared_hit, f.shared_read), (1, 2));
        assert_eq!(f.rows, 31);
    }

    #[test]
    fn three_months_of_analytics_scan_three_partitions() {
        let f = parse(PART_ANALYTICS).unwrap();
        let scanned: Vec<&str> = f.relations_scanned.iter().map(String::as_str).collect();
        assert_eq!(
            scanned,
            [
                "pricing_part_2024_10",
                "pricing_part_2024_11",
                "pricing_part_2024_12"
            ]
        );
        assert_eq!((f.shared_hit, f.shared_read), (21, 0));
        assert_eq!(f.rows, 20);
    }

    #[test]
    fn partitions_pruned_at_run_time_stay_in_the_plan_but_are_not_counted_as_scanned() {
        // `date >= (SELECT ...) AND date < '2025-02-01'`: the constant upper bound prunes 2025-02
        // and 2025-03 when planning; the lower bound is known only during execution, so the 13
        // months up to 2025-01 and the default stay planned, and all but one show
        // `Actual Loops: 0` ("never executed").
        let f = parse(PART_RUNTIME_PRUNED).unwrap();
        let own = partitions();
        assert_eq!(f.planned_among(&own), 14);
        assert_eq!(f.scanned_among(&own), 1);
        assert!(f.relations_scanned.contains("pricing_part_2025_01"));
        assert_eq!((f.shared_hit, f.shared_read), (4, 1));
        assert_eq!(f.rows, 10);
    }

    #[test]
    fn relations_of_other_tables_are_not_counted_as_partitions() {
        let f = parse(PLAIN_PROPERTY_MONTH).unwrap();
        assert_eq!(f.scanned_among(&partitions()), 0);
    }

    #[test]
    fn output_without_analyze_is_refused_with_a_reason() {
        let err = parse(r#"[{"Plan": {"Node Type": "Seq Scan", "Relation Name": "t"}}]"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ANALYZE"), "{err}");
        assert!(parse("not json").is_err());
    }

    #[test]
    fn postgresql_18_fractional_row_counts_are_read() {
        let json = r#"[{"Plan": {"Node Type": "Seq Scan", "Relation Name": "pricing_data_2026_11",
            "Actual Rows": 31.00, "Actual Loops": 1, "Shared Hit Blocks": 3, "Shared Read Blocks": 0},
            "Planning Time": 0.05, "Execution Time": 0.02}]"#;
        let f = parse(json).unwrap();
        assert_eq!(f.rows, 31);
        assert!(f.relations_scanned.contains("pricing_data_2026_11"));
    }
}

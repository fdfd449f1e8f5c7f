//! Health verdicts, for `check` and for the metrics: coverage from the current period through
//! `premake` ahead, gaps and overlaps, rows in the default partition, partitions past retention.
//! Pure: the problems are what the planner would fix, so `check` and `maintain` never disagree.

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;

use crate::bounds::{BoundValue, KeyType};
use crate::catalog::ManagedTable;
use crate::config::TablePolicy;
use crate::coverage;
use crate::ddl::describe_range;
use crate::ident::QualifiedName;
use crate::plan::{self, Action, Clock};

#[derive(Debug, Clone, Serialize)]
pub struct TableHealth {
    pub table: QualifiedName,
    /// Partitions including the default one.
    pub partitions: usize,
    /// Partitions that start after the current period.
    pub future_partitions: usize,
    /// Unix time where the gap-free coverage starting at the current period ends
    /// (`None`: it never ends, a MAXVALUE partition covers everything ahead).
    pub coverage_end: Option<i64>,
    /// Integer keys: the key value where that coverage ends (`None`: it never ends); for them
    /// `coverage_end` is not set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coverage_end_value: Option<i64>,
    /// Whether the key is a plain integer (its coverage is a value, not a time).
    #[serde(skip)]
    pub integer_key: bool,
    pub next_partition_missing: bool,
    pub default_partition: Option<QualifiedName>,
    pub default_rows: Option<i64>,
    /// Rows of periods that `maintain` leaves in the default for `partkeeper drain` (each period
    /// counted up to `default_move_limit + 1`).
    #[serde(default)]
    pub default_rows_waiting: u64,
    pub problems: Vec<String>,
    pub notes: Vec<String>,
    /// `retention_mode = "archive"`: partitions already archived (not part of the table).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub archived: Vec<crate::archive::Archived>,
}

impl TableHealth {
    pub fn healthy(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Judges one table as of `now`. `default_rows` is the exact count of its default partition.
pub fn assess(
    table: &ManagedTable,
    policy: &TablePolicy,
    now: DateTime<Utc>,
    server_version: i32,
    default_rows: Option<i64>,
) -> TableHealth {
    let clock = Clock::new(policy, table.key_type, plan::position(table, policy, now));
    let integer_key = clock.values.is_some();
    let ranges: Vec<coverage::Range> = table.partitions.iter().map(|p| (p.from, p.to)).collect();
    let next = clock.period(1);
    let mut problems = Vec::new();

    let plan = plan::plan(table, policy, now, server_version);
    for a in &plan.actions {
        problems.push(match a {
            Action::Create { partition, from, to } => format!(
                "no partition covers {} (maintain would create {})",
                describe_range(*from, *to, table.key_type),
                partition
            ),
            Action::CreateDefault { partition } => format!(
                "default_partition = true but there is no default partition (maintain would create {partition})"
            ),
            Action::Drop { partition, .. } | Action::Detach { partition, .. } => format!(
                "{partition} is past retention ({}); maintain would {} it",
                policy.retention.map(|r| r.to_string()).unwrap_or_default(),
                a.verb()
            ),
            Action::Archive {
                partition, schema, ..
            } => format!(
                "{partition} is past retention ({}); maintain would archive it into schema {schema}",
                policy.retention.map(|r| r.to_string()).unwrap_or_default(),
            ),
            Action::AddIndex {
                partition,
                template_index,
                ..
            } => format!(
                "{partition} lacks the template's index {template_index}; maintain would add it"
            ),
            Action::FinalizeDetach { partition, .. } => format!(
                "{partition} is stuck half-detached (an interrupted DETACH CONCURRENTLY); maintain would finalize it"
            ),
        });
    }
    for (i, j) in coverage::overlaps(&ranges) {
        problems.push(format!(
            "partitions {} and {} overlap",
            table.partitions[i].name, table.partitions[j].name
        ));
    }
    if let (Some(d), Some(n)) = (&table.default, default_rows) {
        if n > 0 {
            problems.push(format!(
                "{n} row(s) sit in the default partition {}: their ranges have no partition. maintain moves rows into partitions it creates; for older ranges create partitions by hand",
                d.name
            ));
        }
    }

    TableHealth {
        table: table.name.clone(),
        partitions: table.partitions.len() + usize::from(table.default.is_some()),
        future_partitions: table
            .partitions
            .iter()
            .filter(|p| p.from >= BoundValue::Value(next))
            .count(),
        coverage_end: match coverage::coverage_end(&ranges, clock.current) {
            _ if integer_key => None,
            BoundValue::Value(t) => Some(to_instant(t, table.key_type, policy).timestamp()),
            BoundValue::MaxValue => None,
            BoundValue::MinValue => {
                Some(to_instant(clock.current, table.key_type, policy).timestamp())
            }
        },
        coverage_end_value: match coverage::coverage_end(&ranges, clock.current) {
            BoundValue::Value(t) if integer_key => crate::keys::point_int(t),
            BoundValue::MinValue if integer_key => crate::keys::point_int(clock.current),
            _ => None,
        },
        integer_key,
        next_partition_missing: !coverage::uncovered(&ranges, next, clock.period(2)).is_empty(),
        default_partition: table.default.as_ref().map(|d| d.name.clone()),
        default_rows,
        default_rows_waiting: 0,
        problems,
        notes: plan.notes,
        archived: Vec::new(),
    }
}

/// A key value as a real instant: naive keys are wall-clock times of the policy's zone.
pub fn to_instant(t: DateTime<Utc>, key: KeyType, policy: &TablePolicy) -> DateTime<Utc> {
    match key {
        // Epoch and uuid points are instants; integer points are not times at all (callers
        // report them by value).
        KeyType::TimestampTz | KeyType::Epoch(..) | KeyType::Uuid | KeyType::Int(_) => t,
        KeyType::Date | KeyType::Timestamp => policy
            .timezone
            .from_local_datetime(&t.naive_utc())
            .earliest()
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::{Interval, Retention};
    use crate::catalog::Partition;
    use crate::config::RetentionMode;

    fn at(y: i32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).unwrap()
    }

    fn part(name: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> Partition {
        Partition {
            name: QualifiedName::new("public", name),
            from: BoundValue::Value(from),
            to: BoundValue::Value(to),
            rows_estimate: 0.0,
            size_bytes: None,
            detach_pending: false,
            bound_sql: String::new(),
        }
    }

    fn policy() -> TablePolicy {
        TablePolicy {
            name: QualifiedName::new("public", "t"),
            column: "d".into(),
            interval: Interval::Month.into(),
            retention_values: None,
            epoch: None,
            start: 0,
            premake: 2,
            retention: Some(Retention::parse("12 months").unwrap()),
            retention_mode: RetentionMode::Drop,
            default_partition: false,
            timezone: chrono_tz::Tz::UTC,
            default_move_limit: crate::config::DEFAULT_MOVE_LIMIT as u64,
            lifecycle: Default::default(),
        }
    }

    fn table(parts: Vec<Partition>) -> ManagedTable {
        ManagedTable {
            name: QualifiedName::new("public", "t"),
            column: "d".into(),
            key_type: KeyType::Date,
            owner: String::new(),
            partitions: parts,
            default: None,
            values: None,
        }
    }

    #[test]
    fn a_complete_table_is_healthy() {
        let t = table(vec![
            part("t_2026_11", at(2026, 11), at(2026, 12)),
            part("t_2026_12", at(2026, 12), at(2027, 1)),
            part("t_2027_01", at(2027, 1), at(2027, 2)),
        ]);
        let h = assess(
            &t,
            &policy(),
            at(2026, 11) + chrono::Duration::days(3),
            150000,
            None,
        );
        assert!(h.healthy(), "{:?}", h.problems);
        assert_eq!(h.future_partitions, 2);
        assert_eq!(h.coverage_end, Some(at(2027, 2).timestamp()));
        assert!(!h.next_partition_missing);
    }

    #[test]
    fn a_missing_next_partition_is_named() {
        let t = table(vec![
            part("t_2026_11", at(2026, 11), at(2026, 12)),
            part("t_2027_01", at(2027, 1), at(2027, 2)),
        ]);
        let h = assess(&t, &policy(), at(2026, 11), 150000, None);
        assert!(h.next_partition_missing);
        assert_eq!(h.coverage_end, Some(at(2026, 12).timestamp()));
        assert!(
            h.problems.iter().any(|p| p.contains("t_2026_12")),
            "{:?}",
            h.problems
        );
    }

    #[test]
    fn expired_partitions_and_default_rows_are_problems() {
        let mut t = table(vec![
            part("t_2020_01", at(2020, 1), at(2020, 2)),
            part("t_2026_11", at(2026, 11), at(2026, 12)),
            part("t_2026_12", at(2026, 12), at(2027, 1)),
            part("t_2027_01", at(2027, 1), at(2027, 2)),
        ]);
        t.default = Some(part("t_default", at(2000, 1), at(2000, 2)));
        let h = assess(&t, &policy(), at(2026, 11), 150000, Some(7));
        assert_eq!(h.partitions, 5);
        assert!(h
            .problems
            .iter()
            .any(|p| p.contains("t_2020_01") && p.contains("retention")));
        assert!(h.problems.iter().any(|p| p.contains("7 row(s)")));
    }
}

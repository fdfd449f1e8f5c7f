//! The planner: `(catalog state, policy, now) -> actions`. Pure — no I/O, no clock — so every
//! calendar and retention rule is tested without a database, and `--dry-run` is the plan printed.
//!
//! Rules: partitions are made by the clock (current period through `premake` ahead), never by
//! the newest data; only retention removes partitions, judged by each partition's real bounds;
//! the default partition is never removed; a gap partly covered by a hand-made partition is filled
//! exactly, without overlapping it.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::bounds::{BoundValue, KeyType};
use crate::calendar::{self, Interval};
use crate::catalog::ManagedTable;
use crate::config::{RetentionMode, TablePolicy};
use crate::coverage;
use crate::ident::{derived_name, QualifiedName};
use crate::keys::{self, Width};

/// First server version (server_version_num) with `DETACH PARTITION ... CONCURRENTLY`.
pub const DETACH_CONCURRENTLY_SINCE: i32 = 140000;

/// How a table sees time: naive keys (date, timestamp) are planned on the wall clock of the
/// configured zone, treated as UTC; timestamptz, epoch and uuid keys on real instants in the
/// configured zone. Integer keys have no clock: their "now" is the point of max(key) (see
/// `position`), and their periods are `width` values counted from `origin`.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub tz: Tz,
    /// The calendar interval (for integer keys unused, and `Interval::Day`).
    pub interval: Interval,
    /// `now` in the table's calendar.
    pub now: DateTime<Utc>,
    /// Start of the period containing `now`.
    pub current: DateTime<Utc>,
    /// Integer keys: (width, origin) of the periods, in key values.
    pub values: Option<(i64, i64)>,
}

impl Clock {
    /// For integer keys `now` is the table's position (`position`), not the time.
    pub fn new(policy: &TablePolicy, key: KeyType, now: DateTime<Utc>) -> Clock {
        if let (KeyType::Int(_), Width::Values(width)) = (key, policy.interval) {
            let at = keys::point_int(now).unwrap_or(policy.start);
            let (current, _) = keys::int_period(at, width, policy.start);
            return Clock {
                tz: Tz::UTC,
                interval: Interval::Day,
                now,
                current: keys::int_point(current),
                values: Some((width, policy.start)),
            };
        }
        // The catalog refuses an integer interval on any other key, so this is a calendar one.
        let interval = policy.interval.calendar().unwrap_or(Interval::Day);
        let (tz, now) = match key {
            KeyType::TimestampTz | KeyType::Epoch(..) | KeyType::Uuid | KeyType::Int(_) => {
                (policy.timezone, now)
            }
            KeyType::Date | KeyType::Timestamp => (
                Tz::UTC,
                now.with_timezone(&policy.timezone).naive_local().and_utc(),
            ),
        };
        Clock {
            tz,
            interval,
            now,
            current: calendar::period_start(now, interval, tz),
            values: None,
        }
    }

    /// Start of the period `n` periods after the current one.
    pub fn period(&self, n: i32) -> DateTime<Utc> {
        self.period_after_n(self.current, n)
    }

    /// Start of the period after the one starting at `start`.
    pub fn period_after(&self, start: DateTime<Utc>) -> DateTime<Utc> {
        match self.values {
            Some((width, origin)) => {
                let at = keys::point_int(start).unwrap_or(0);
                keys::int_point(keys::int_period(at, width, origin).1)
            }
            None => calendar::add_periods(start, self.interval, 1, self.tz),
        }
    }

    /// Start of the period `n` periods after the one starting at `start`.
    pub fn period_after_n(&self, start: DateTime<Utc>, n: i32) -> DateTime<Utc> {
        match self.values {
            Some((width, _)) => {
                let at = keys::point_int(start).unwrap_or(0);
                let moved = i128::from(at) + i128::from(n) * i128::from(width);
                keys::int_point(moved.clamp(i64::MIN.into(), i64::MAX.into()) as i64)
            }
            None => calendar::add_periods(start, self.interval, n, self.tz),
        }
    }

    /// Start of the period holding `point`.
    pub fn period_of(&self, point: DateTime<Utc>) -> DateTime<Utc> {
        match self.values {
            Some((width, origin)) => {
                let at = keys::point_int(point).unwrap_or(0);
                keys::int_point(keys::int_period(at, width, origin).0)
            }
            None => calendar::period_start(point, self.interval, self.tz),
        }
    }

    pub fn suffix(&self, start: DateTime<Utc>) -> String {
        match self.values {
            Some(_) => {
                let lower = keys::point_int(start).unwrap_or(0);
                if lower < 0 {
                    format!("pm{}", lower.unsigned_abs())
                } else {
                    format!("p{lower}")
                }
            }
            None => calendar::partition_suffix(start, self.interval, self.tz),
        }
    }
}

/// Where a table stands on its key line: `now` for calendar keys; for integer keys the point of
/// max(key), or of `start` while the table is empty.
pub fn position(table: &ManagedTable, policy: &TablePolicy, now: DateTime<Utc>) -> DateTime<Utc> {
    match table.key_type {
        KeyType::Int(_) => keys::int_point(
            table
                .values
                .as_ref()
                .and_then(|v| v.max)
                .unwrap_or(policy.start),
        ),
        _ => now,
    }
}

/// An integer table catches up on at most this many periods per pass beyond its `premake + 1`,
/// so that one stray huge id cannot make a pass create millions of partitions.
pub const MAX_CATCH_UP: u32 = 100;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// `CREATE TABLE` + `ATTACH PARTITION`, moving any rows of that range out of the default.
    Create {
        partition: QualifiedName,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
    CreateDefault {
        partition: QualifiedName,
    },
    /// Detach then drop.
    Drop {
        partition: QualifiedName,
        concurrently: bool,
    },
    Detach {
        partition: QualifiedName,
        concurrently: bool,
    },
    /// Moves the partition to the archive schema (keeping its name) and detaches it there, so a
    /// pass cut short between the two leaves a partition the next pass still finds and finishes.
    /// `pending`: an interrupted `DETACH ... CONCURRENTLY` is finalized instead of started.
    Archive {
        partition: QualifiedName,
        schema: String,
        concurrently: bool,
        pending: bool,
    },
    /// Adds a template index missing on an existing partition (`CREATE INDEX CONCURRENTLY`);
    /// `drop_invalid`: an invalid one of that name, left by an interrupted build, goes first.
    AddIndex {
        partition: QualifiedName,
        index: String,
        template_index: String,
        create: String,
        drop_invalid: bool,
    },
    /// Completes an interrupted `DETACH ... CONCURRENTLY`.
    FinalizeDetach {
        partition: QualifiedName,
        then_drop: bool,
    },
}

impl Action {
    pub fn partition(&self) -> &QualifiedName {
        match self {
            Action::Create { partition, .. }
            | Action::CreateDefault { partition }
            | Action::Drop { partition, .. }
            | Action::Detach { partition, .. }
            | Action::Archive { partition, .. }
            | Action::AddIndex { partition, .. }
            | Action::FinalizeDetach { partition, .. } => partition,
        }
    }

    /// The verb for logs and output.
    pub fn verb(&self) -> &'static str {
        match self {
            Action::Create { .. } | Action::CreateDefault { .. } => "create",
            Action::Drop { .. } => "drop",
            Action::Detach { .. } => "detach",
            Action::Archive { .. } => "archive",
            Action::AddIndex { .. } => "add-index",
            Action::FinalizeDetach {
                then_drop: true, ..
            } => "finalize-detach-and-drop",
            Action::FinalizeDetach { .. } => "finalize-detach",
        }
    }

    /// The relations this action creates (checked for name collisions before any DDL).
    pub fn creates(&self) -> Option<&QualifiedName> {
        match self {
            Action::Create { partition, .. } | Action::CreateDefault { partition } => {
                Some(partition)
            }
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TablePlan {
    pub actions: Vec<Action>,
    /// Things the user should know that need no action (e.g. a wide legacy partition kept).
    pub notes: Vec<String>,
}

/// Decides what to do for one table.
pub fn plan(
    table: &ManagedTable,
    policy: &TablePolicy,
    now: DateTime<Utc>,
    server_version: i32,
) -> TablePlan {
    let now = position(table, policy, now);
    let clock = Clock::new(policy, table.key_type, now);
    let mut out = TablePlan::default();
    let ranges: Vec<coverage::Range> = table.partitions.iter().map(|p| (p.from, p.to)).collect();

    // Periods that must exist: the current one and `premake` after it. Integer keys have no
    // clock to keep partitions ahead of the data: when the ids outran the partitions, the
    // periods between the highest partition below and the current one are made too (at most
    // MAX_CATCH_UP of them per pass).
    let next = |at| clock.period_after(at);
    let mut pieces = Vec::new();
    if clock.values.is_some() {
        let below = table
            .partitions
            .iter()
            .filter_map(|p| match p.to {
                BoundValue::Value(to) if to <= clock.current => Some(to),
                _ => None,
            })
            .max();
        if let Some(top) = below {
            let from = clock.period_of(top);
            let mut until = from;
            let mut behind = 0;
            while until < clock.current && behind < MAX_CATCH_UP {
                until = next(until);
                behind += 1;
            }
            if until < clock.current {
                out.notes.push(format!(
                    "max({}) = {} is more than {MAX_CATCH_UP} periods above the highest partition below it (ending at {}); this pass makes the {MAX_CATCH_UP} periods after that one and the {} at max({}) and later; the rest follow on later passes. If that value is a stray, fix it",
                    table.column,
                    keys::point_int(now).unwrap_or(0),
                    keys::point_int(top).unwrap_or(0),
                    policy.premake + 1,
                    table.column,
                ));
            }
            pieces.extend(
                coverage::cover(&ranges, from, until.min(clock.current), usize::MAX, next)
                    .unwrap_or_default(),
            );
        }
    }
    let window = policy.premake as usize + 1;
    let end = clock.period(window as i32);
    pieces.extend(
        coverage::cover(&ranges, clock.period(0), end, usize::MAX, next).unwrap_or_default(),
    );
    for piece in pieces {
        let suffix = piece.suffix(clock.suffix(piece.period));
        out.actions.push(Action::Create {
            partition: table.name.sibling(derived_name(&table.name.name, &suffix)),
            from: piece.from,
            to: piece.to,
        });
    }

    if let Some(v) = table.values.as_ref().filter(|v| !v.indexed) {
        out.notes.push(format!(
            "no index leads with {}: max({}) is read by scanning the default and the highest partitions on every pass{}; create one, e.g. CREATE INDEX ON {} ({})",
            table.column,
            table.column,
            if v.max.is_none() { " (the table is empty now)" } else { "" },
            table.name.quoted(),
            crate::ident::quote_ident(&table.column),
        ));
    }

    let will_have_default = table.default.is_some() || policy.default_partition;
    if policy.default_partition && table.default.is_none() {
        out.actions.push(Action::CreateDefault {
            partition: table
                .name
                .sibling(derived_name(&table.name.name, "default")),
        });
    }
    if !policy.default_partition && table.default.is_some() {
        out.notes.push(format!(
            "default_partition = false, but {} exists; partkeeper never drops a default partition (it may hold rows): drop it by hand once it is empty",
            table.default.as_ref().map(|d| d.name.to_string()).unwrap_or_default()
        ));
    }
    // PostgreSQL refuses DETACH CONCURRENTLY when a default partition exists.
    let concurrently = server_version >= DETACH_CONCURRENTLY_SINCE && !will_have_default;

    let cutoff = match clock.values {
        // Integer keys: expired when the upper bound is at or below max(key) - retention; an
        // empty table expires nothing.
        Some(_) => policy.retention_values.and_then(|n| {
            let max = table.values.as_ref().and_then(|v| v.max)?;
            Some(keys::int_point(max.saturating_sub(n)))
        }),
        None => policy
            .retention
            .map(|r| calendar::retention_cutoff(clock.now, r, clock.interval, clock.tz)),
    };
    let expired = |to: &BoundValue| match (cutoff, to) {
        (Some(c), BoundValue::Value(t)) => *t <= c,
        (Some(_), BoundValue::MinValue) => true,
        _ => false,
    };
    for p in &table.partitions {
        if p.detach_pending && policy.retention_mode == RetentionMode::Archive && expired(&p.to) {
            out.actions.push(Action::Archive {
                partition: p.name.clone(),
                schema: policy.lifecycle.archive_schema.clone(),
                concurrently,
                pending: true,
            });
            continue;
        }
        if p.detach_pending {
            out.actions.push(Action::FinalizeDetach {
                partition: p.name.clone(),
                then_drop: policy.retention_mode == RetentionMode::Drop && expired(&p.to),
            });
            continue;
        }
        if expired(&p.to) {
            out.actions.push(match policy.retention_mode {
                RetentionMode::Drop => Action::Drop {
                    partition: p.name.clone(),
                    concurrently,
                },
                RetentionMode::Detach => Action::Detach {
                    partition: p.name.clone(),
                    concurrently,
                },
                RetentionMode::Archive => Action::Archive {
                    partition: p.name.clone(),
                    schema: policy.lifecycle.archive_schema.clone(),
                    concurrently,
                    pending: false,
                },
            });
        } else if let (Some(c), BoundValue::Value(_) | BoundValue::MinValue) = (cutoff, p.from) {
            if p.from < BoundValue::Value(c) {
                out.notes.push(format!(
                    "kept {}: it reaches past the retention cutoff {} ({}), so it may still hold rows inside the retention window",
                    p.name,
                    match clock.values {
                        Some(_) => keys::point_int(c).unwrap_or(0).to_string(),
                        None => c.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                    },
                    match policy.retention_values {
                        Some(n) => format!("{n} values"),
                        None => policy.retention.map(|r| r.to_string()).unwrap_or_default(),
                    },
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::Retention;
    use crate::catalog::Partition;
    use chrono::TimeZone;

    fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).unwrap()
    }

    fn policy(interval: &str, premake: u32, retention: Option<&str>) -> TablePolicy {
        TablePolicy {
            name: QualifiedName::new("public", "pricing_data"),
            column: "date".into(),
            interval: Interval::parse(interval).unwrap().into(),
            retention_values: None,
            epoch: None,
            start: 0,
            premake,
            retention: retention.map(|r| Retention::parse(r).unwrap()),
            retention_mode: RetentionMode::Drop,
            default_partition: false,
            timezone: Tz::UTC,
            default_move_limit: crate::config::DEFAULT_MOVE_LIMIT as u64,
            lifecycle: Default::default(),
        }
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

    fn table(key: KeyType, parts: Vec<Partition>) -> ManagedTable {
        ManagedTable {
            name: QualifiedName::new("public", "pricing_data"),
            column: "date".into(),
            key_type: key,
            owner: "app".into(),
            partitions: parts,
            default: None,
            values: None,
        }
    }

    /// Applies a plan to a table as the executor would (for idempotence checks).
    fn apply(t: &mut ManagedTable, p: &TablePlan) {
        for a in &p.actions {
            match a {
                Action::Create {
                    partition,
                    from,
                    to,
                } => t.partitions.push(part(&partition.name, *from, *to)),
                Action::Drop { partition, .. }
                | Action::Detach { partition, .. }
                | Action::Archive { partition, .. }
                | Action::FinalizeDetach { partition, .. } => {
                    t.partitions.retain(|x| &x.name != partition)
                }
                Action::AddIndex { .. } => {}
                Action::CreateDefault { partition } => {
                    let mut d = part(&partition.name, at(2000, 1, 1), at(2000, 1, 2));
                    (d.from, d.to) = (BoundValue::MinValue, BoundValue::MaxValue);
                    t.default = Some(d);
                }
            }
        }
        t.partitions.sort_by_key(|p| p.from);
    }

    fn names(p: &TablePlan) -> Vec<String> {
        p.actions
            .iter()
            .map(|a| format!("{} {}", a.verb(), a.partition().name))
            .collect()
    }

    #[test]
    fn a_fresh_table_gets_the_current_month_and_premake_more() {
        let p = plan(
            &table(KeyType::Date, vec![]),
            &policy("1 month", 3, None),
            at(2026, 11, 25),
            150000,
        );
        assert_eq!(
            names(&p),
            [
                "create pricing_data_2026_11",
                "create pricing_data_2026_12",
                "create pricing_data_2027_01",
                "create pricing_data_2027_02"
            ]
        );
    }

    #[test]
    fn a_second_plan_after_the_first_has_nothing_to_do() {
        let pol = policy("1 month", 3, Some("36 months"));
        let mut t = table(KeyType::Date, vec![]);
        let first = plan(&t, &pol, at(2026, 11, 25), 150000);
        apply(&mut t, &first);
        assert!(plan(&t, &pol, at(2026, 11, 25), 150000).actions.is_empty());
    }

    #[test]
    fn future_data_does_not_create_partitions() {
        // A partition far in the future (made by hand for a stray row) changes nothing.
        let t = table(
            KeyType::Date,
            vec![part("pricing_data_2097_01", at(2097, 1, 1), at(2097, 2, 1))],
        );
        let p = plan(&t, &policy("1 month", 1, None), at(2026, 11, 25), 150000);
        assert_eq!(
            names(&p),
            ["create pricing_data_2026_11", "create pricing_data_2026_12"]
        );
    }

    #[test]
    fn lowering_premake_never_drops_future_partitions() {
        let pol = policy("1 month", 6, Some("12 months"));
        let mut t = table(KeyType::Date, vec![]);
        let first = plan(&t, &pol, at(2026, 11, 25), 150000);
        apply(&mut t, &first);
        let p = plan(
            &t,
            &policy("1 month", 1, Some("12 months")),
            at(2026, 11, 25),
            150000,
        );
        assert!(p.actions.is_empty(), "{:?}", p.actions);
    }

    #[test]
    fn retention_drops_only_partitions_wholly_before_the_cutoff() {
        let parts = vec![
            part("pricing_data_2023_09", at(2023, 9, 1), at(2023, 10, 1)),
            part("pricing_data_2023_10", at(2023, 10, 1), at(2023, 11, 1)),
            part("pricing_data_2023_11", at(2023, 11, 1), at(2023, 12, 1)),
        ];
        let p = plan(
            &table(KeyType::Date, parts),
            &policy("1 month", 0, Some("36 months")),
            at(2026, 11, 25),
            150000,
        );
        assert!(names(&p).contains(&"drop pricing_data_2023_09".to_string()));
        assert!(names(&p).contains(&"drop pricing_data_2023_10".to_string()));
        assert!(!names(&p).contains(&"drop pricing_data_2023_11".to_string()));
    }

    #[test]
    fn a_wide_legacy_partition_reaching_into_the_window_is_kept_and_said_so() {
        let parts = vec![part("legacy_history", at(2019, 1, 1), at(2024, 1, 1))];
        let p = plan(
            &table(KeyType::Date, parts),
            &policy("1 month", 0, Some("36 months")),
            at(2026, 11, 25),
            150000,
        );
        assert!(!names(&p).iter().any(|n| n.contains("legacy")));
        assert!(
            p.notes.iter().any(|n| n.contains("legacy_history")),
            "{:?}",
            p.notes
        );
    }

    #[test]
    fn a_period_partly_covered_by_a_hand_made_partition_gets_only_the_gap() {
        let parts = vec![part("nov_first_half", at(2026, 11, 1), at(2026, 11, 16))];
        let p = plan(
            &table(KeyType::Date, parts),
            &policy("1 month", 0, None),
            at(2026, 11, 25),
            150000,
        );
        assert_eq!(
            p.actions,
            vec![Action::Create {
                partition: QualifiedName::new("public", "pricing_data_2026_11"),
                from: at(2026, 11, 16),
                to: at(2026, 12, 1)
            }]
        );
    }

    #[test]
    fn archive_mode_archives_expired_partitions_and_finishes_an_interrupted_detach() {
        let mut pending = part("pending", at(2020, 2, 1), at(2020, 3, 1));
        pending.detach_pending = true;
        let parts = vec![part("old", at(2020, 1, 1), at(2020, 2, 1)), pending];
        let mut pol = policy("1 month", 0, Some("1 year"));
        pol.retention_mode = RetentionMode::Archive;
        pol.lifecycle.archive_schema = "cold".into();
        let p = plan(&table(KeyType::Date, parts), &pol, at(2026, 11, 25), 150000);
        let archives: Vec<_> = p
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Archive {
                    partition,
                    schema,
                    pending,
                    ..
                } => Some((partition.name.as_str(), schema.as_str(), *pending)),
                _ => None,
            })
            .collect();
        assert_eq!(
            archives,
            [("old", "cold", false), ("pending", "cold", true)]
        );
    }

    #[test]
    fn detach_is_concurrent_only_without_a_default_and_on_14_or_later() {
        let parts = vec![part("old", at(2020, 1, 1), at(2020, 2, 1))];
        let mut pol = policy("1 month", 0, Some("1 year"));
        pol.retention_mode = RetentionMode::Detach;
        let t = table(KeyType::Date, parts);
        let concurrent = |p: &TablePlan| {
            p.actions.iter().any(|a| {
                matches!(
                    a,
                    Action::Detach {
                        concurrently: true,
                        ..
                    }
                )
            })
        };
        assert!(concurrent(&plan(&t, &pol, at(2026, 11, 25), 140000)));
        assert!(!concurrent(&plan(&t, &pol, at(2026, 11, 25), 130000)));
        pol.default_partition = true;
        assert!(!concurrent(&plan(&t, &pol, at(2026, 11, 25), 170000)));
    }

    #[test]
    fn the_default_partition_is_created_when_wanted_and_never_expired() {
        let mut pol = policy("1 month", 0, Some("1 month"));
        pol.default_partition = true;
        let mut t = table(KeyType::Date, vec![]);
        let p = plan(&t, &pol, at(2026, 11, 25), 150000);
        assert!(names(&p).contains(&"create pricing_data_default".to_string()));
        t.default = Some(part("pricing_data_default", at(2000, 1, 1), at(2000, 1, 2)));
        apply(&mut t, &p);
        let p = plan(&t, &pol, at(2030, 1, 1), 150000);
        assert!(
            !names(&p).iter().any(|n| n.contains("default")),
            "{:?}",
            names(&p)
        );
    }

    #[test]
    fn timestamptz_periods_start_at_local_midnight_of_the_configured_zone() {
        let mut pol = policy("1 month", 0, None);
        pol.timezone = "Europe/Paris".parse().unwrap();
        let p = plan(
            &table(KeyType::TimestampTz, vec![]),
            &pol,
            at(2026, 11, 25),
            150000,
        );
        assert_eq!(
            p.actions[0],
            Action::Create {
                partition: QualifiedName::new("public", "pricing_data_2026_11"),
                from: Utc.with_ymd_and_hms(2026, 10, 31, 23, 0, 0).unwrap(),
                to: Utc.with_ymd_and_hms(2026, 11, 30, 23, 0, 0).unwrap(),
            }
        );
    }

    #[test]
    fn date_keys_follow_the_wall_clock_of_the_configured_zone() {
        // 23:30 UTC on Dec 31 is already January 1st in Paris.
        let mut pol = policy("1 month", 0, None);
        pol.timezone = "Europe/Paris".parse().unwrap();
        let now = Utc.with_ymd_and_hms(2026, 12, 31, 23, 30, 0).unwrap();
        let p = plan(&table(KeyType::Date, vec![]), &pol, now, 150000);
        assert_eq!(names(&p), ["create pricing_data_2027_01"]);
    }

    #[test]
    fn interrupted_concurrent_detaches_are_finalized() {
        let mut old = part("old", at(2020, 1, 1), at(2020, 2, 1));
        old.detach_pending = true;
        let p = plan(
            &table(KeyType::Date, vec![old]),
            &policy("1 month", 0, Some("1 year")),
            at(2026, 11, 25),
            150000,
        );
        assert!(p.actions.contains(&Action::FinalizeDetach {
            partition: QualifiedName::new("public", "old"),
            then_drop: true
        }));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// Hand-made partitions already in the table: cut points at random instants (midnight
        /// for date keys) within five years of `now`, each piece between two of them kept or not
        /// (gaps), neighbours sometimes merged (wide legacy partitions), the first sometimes
        /// reaching down to MINVALUE and the last up to MAXVALUE. Never overlapping, as the
        /// catalog guarantees.
        fn existing(now: DateTime<Utc>, key: KeyType) -> impl Strategy<Value = Vec<Partition>> {
            let five_years = 5 * 366 * 86400i64;
            (
                prop::collection::vec(-five_years..five_years, 2..14),
                prop::collection::vec(0u8..4, 14),
                any::<bool>(),
                any::<bool>(),
            )
                .prop_map(move |(offsets, kinds, from_min, to_max)| {
                    let mut cuts: Vec<DateTime<Utc>> = offsets
                        .iter()
                        .map(|o| {
                            let t = now + chrono::Duration::seconds(*o);
                            match key {
                                KeyType::Date => {
                                    t.date_naive().and_time(chrono::NaiveTime::MIN).and_utc()
                                }
                                _ => t,
                            }
                        })
                        .collect();
                    cuts.sort();
                    cuts.dedup();
                    let mut parts: Vec<Partition> = Vec::new();
                    for (i, w) in cuts.windows(2).enumerate() {
                        // 0: gap; 1: extend the previous partition if it ends here (wide); else own.
                        match kinds[i] {
                            0 => {}
                            1 if parts
                                .last()
                                .is_some_and(|p| p.to == BoundValue::Value(w[0])) =>
                            {
                                parts.last_mut().unwrap().to = BoundValue::Value(w[1]);
                            }
                            _ => parts.push(part(&format!("hand_{i}"), w[0], w[1])),
                        }
                    }
                    if let (true, Some(first)) = (from_min, parts.first_mut()) {
                        first.from = BoundValue::MinValue;
                    }
                    if let (true, Some(last)) = (to_max, parts.last_mut()) {
                        last.to = BoundValue::MaxValue;
                    }
                    parts
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn from_any_existing_partitions_a_plan_keeps_the_default_and_the_window_and_converges(
                iv in intervals(),
                premake in 0u32..6,
                ret in prop::option::of(1u32..40),
                detach in any::<bool>(),
                (now, key, mut parts) in (
                    946_684_800i64..4_102_444_800i64,
                    prop_oneof![Just(KeyType::Date), Just(KeyType::Timestamp), Just(KeyType::TimestampTz)],
                )
                    .prop_flat_map(|(secs, key)| {
                        let now = DateTime::from_timestamp(secs, 0).unwrap();
                        (Just(now), Just(key), existing(now, key))
                    }),
                tz in prop_oneof![Just("UTC"), Just("Europe/Paris"), Just("America/Sao_Paulo"), Just("Asia/Kolkata")],
                (has_default, wants_default) in (any::<bool>(), any::<bool>()),
                pending in any::<prop::sample::Index>(),
            ) {
                let mut pol = policy(iv, premake, None);
                pol.retention = ret.map(|r| Retention::parse(&format!("{r} months")).unwrap());
                pol.retention_mode = if detach { RetentionMode::Detach } else { RetentionMode::Drop };
                pol.timezone = tz.parse().unwrap();
                pol.default_partition = wants_default;
                let clock = Clock::new(&pol, key, now);
                // An interrupted DETACH CONCURRENTLY, on a partition behind the current period
                // (in the window the planner would fill its range only on the next pass).
                if let Some(i) = (!parts.is_empty()).then(|| pending.index(parts.len())) {
                    if parts[i].to <= BoundValue::Value(clock.current) {
                        parts[i].detach_pending = true;
                    }
                }
                let mut t = table(key, parts);
                let default_name = QualifiedName::new("public", "pricing_data_default");
                if has_default {
                    let mut d = part("pricing_data_default", now, now);
                    (d.from, d.to) = (BoundValue::MinValue, BoundValue::MaxValue);
                    t.default = Some(d);
                }
                let before = t.partitions.clone();
                let cutoff = pol.retention.map(|r| calendar::retention_cutoff(clock.now, r, clock.interval, clock.tz));

                let p = plan(&t, &pol, now, 150000);
                let mut created = std::collections::BTreeSet::new();
                for a in &p.actions {
                    match a {
                        Action::Drop { partition, .. } | Action::Detach { partition, .. } | Action::Archive { partition, .. } => {
                            prop_assert_ne!(partition, &default_name, "the default partition is never removed");
                            let old = before.iter().find(|x| &x.name == partition).unwrap();
                            let c = cutoff.expect("without retention nothing is removed");
                            prop_assert!(old.to <= BoundValue::Value(c), "{} ends after the cutoff {}", partition, c);
                        }
                        Action::FinalizeDetach { partition, then_drop } => {
                            prop_assert_ne!(partition, &default_name);
                            let old = before.iter().find(|x| &x.name == partition).unwrap();
                            prop_assert!(old.detach_pending);
                            if *then_drop {
                                prop_assert!(old.to <= BoundValue::Value(cutoff.unwrap()));
                            }
                        }
                        Action::Create { partition, from, to } => {
                            prop_assert!(from < to);
                            prop_assert!(created.insert(partition.clone()), "{} twice in one plan", partition);
                        }
                        Action::CreateDefault { partition } => {
                            prop_assert!(!has_default && wants_default);
                            prop_assert!(created.insert(partition.clone()));
                        }
                        Action::AddIndex { .. } => prop_assert!(false, "the planner never adds indexes"),
                    }
                }
                apply(&mut t, &p);
                prop_assert_eq!(t.default.is_some(), has_default || wants_default);
                let ranges: Vec<_> = t.partitions.iter().map(|p| (p.from, p.to)).collect();
                prop_assert!(coverage::overlaps(&ranges).is_empty(), "{:?}", ranges);
                prop_assert!(
                    coverage::uncovered(&ranges, clock.current, clock.period(premake as i32 + 1)).is_empty(),
                    "gaps in [current, current + premake]: {:?}", ranges
                );
                let again = plan(&t, &pol, now, 150000);
                prop_assert!(again.actions.is_empty(), "not idempotent: {:?}", again.actions);
            }
        }

        fn intervals() -> impl Strategy<Value = &'static str> {
            prop_oneof![
                Just("1 day"),
                Just("1 week"),
                Just("1 month"),
                Just("3 months"),
                Just("1 year")
            ]
        }

        proptest! {
            #[test]
            fn plans_are_idempotent_gap_free_and_never_drop_inside_retention(
                iv in intervals(),
                premake in 0u32..8,
                ret in 1u32..40,
                secs in 946_684_800i64..4_102_444_800i64,
                later in 0i64..(400 * 86400),
                tz in prop_oneof![Just("UTC"), Just("Europe/Paris"), Just("America/Sao_Paulo"), Just("Asia/Kolkata")],
                key in prop_oneof![Just(KeyType::Date), Just(KeyType::Timestamp), Just(KeyType::TimestampTz)],
            ) {
                let mut pol = policy(iv, premake, None);
                pol.retention = Some(Retention::parse(&format!("{ret} months")).unwrap());
                pol.timezone = tz.parse().unwrap();
                let now = DateTime::from_timestamp(secs, 0).unwrap();
                let mut t = table(key, vec![]);
                let first = plan(&t, &pol, now, 150000);
                apply(&mut t, &first);
                prop_assert!(plan(&t, &pol, now, 150000).actions.is_empty());
                // Time passes: the table is kept gap-free from the current period on, and only
                // partitions wholly before the cutoff go.
                let now2 = now + chrono::Duration::seconds(later);
                let clock = Clock::new(&pol, key, now2);
                let cutoff = calendar::retention_cutoff(clock.now, pol.retention.unwrap(), clock.interval, clock.tz);
                let second = plan(&t, &pol, now2, 150000);
                for a in &second.actions {
                    if let Action::Drop { partition, .. } = a {
                        let p = t.partitions.iter().find(|p| &p.name == partition).unwrap();
                        prop_assert!(p.to <= BoundValue::Value(cutoff));
                    }
                }
                apply(&mut t, &second);
                let ranges: Vec<_> = t.partitions.iter().map(|p| (p.from, p.to)).collect();
                prop_assert!(coverage::overlaps(&ranges).is_empty());
                prop_assert!(coverage::uncovered(&ranges, clock.current, clock.period(premake as i32 + 1)).is_empty());
                prop_assert!(plan(&t, &pol, now2, 150000).actions.is_empty());
            }
        }
    }
}

#[cfg(test)]
mod integer_tests {
    use super::*;
    use crate::catalog::{KeyValues, Partition};
    use crate::keys::{int_point, IntWidth};

    fn policy(width: i64, premake: u32, retention: Option<i64>) -> TablePolicy {
        TablePolicy {
            name: QualifiedName::new("public", "events"),
            column: "id".into(),
            interval: Width::Values(width),
            premake,
            retention: None,
            retention_values: retention,
            epoch: None,
            start: 0,
            retention_mode: RetentionMode::Drop,
            default_partition: false,
            timezone: Tz::UTC,
            default_move_limit: crate::config::DEFAULT_MOVE_LIMIT as u64,
            lifecycle: Default::default(),
        }
    }

    fn table(parts: &[(i64, i64)], max: Option<i64>, indexed: bool) -> ManagedTable {
        ManagedTable {
            name: QualifiedName::new("public", "events"),
            column: "id".into(),
            key_type: KeyType::Int(IntWidth::BigInt),
            owner: "app".into(),
            partitions: parts
                .iter()
                .map(|&(a, b)| Partition {
                    name: QualifiedName::new("public", format!("events_p{a}")),
                    from: BoundValue::Value(int_point(a)),
                    to: BoundValue::Value(int_point(b)),
                    rows_estimate: 0.0,
                    size_bytes: None,
                    detach_pending: false,
                    bound_sql: String::new(),
                })
                .collect(),
            default: None,
            values: Some(KeyValues { max, indexed }),
        }
    }

    /// "create events_p1000 [1000, 2000)" per action, with the bounds as integers.
    fn described(p: &TablePlan) -> Vec<String> {
        p.actions
            .iter()
            .map(|a| match a {
                Action::Create {
                    partition,
                    from,
                    to,
                } => format!(
                    "create {} [{}, {})",
                    partition.name,
                    keys::point_int(*from).unwrap(),
                    keys::point_int(*to).unwrap()
                ),
                other => format!("{} {}", other.verb(), other.partition().name),
            })
            .collect()
    }

    // The wall clock plays no part for integer keys.
    fn now() -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + chrono::TimeDelta::days(20_000)
    }

    #[test]
    fn an_empty_table_starts_at_start_and_negative_lowers_are_named_m() {
        let mut pol = policy(1000, 2, None);
        let p = plan(&table(&[], None, true), &pol, now(), 150000);
        assert_eq!(
            described(&p),
            [
                "create events_p0 [0, 1000)",
                "create events_p1000 [1000, 2000)",
                "create events_p2000 [2000, 3000)"
            ]
        );
        pol.start = -1500;
        let p = plan(&table(&[], None, true), &pol, now(), 150000);
        assert_eq!(
            described(&p)[..2],
            [
                "create events_pm1500 [-1500, -500)",
                "create events_pm500 [-500, 500)"
            ]
        );
    }

    #[test]
    fn the_period_holding_max_and_premake_after_it_exist_and_a_second_pass_does_nothing() {
        let pol = policy(1000, 2, None);
        let mut t = table(&[(0, 1000), (1000, 2000), (2000, 3000)], Some(1999), true);
        let p = plan(&t, &pol, now(), 150000);
        assert_eq!(described(&p), ["create events_p3000 [3000, 4000)"]);
        t.partitions
            .push(table(&[(3000, 4000)], None, true).partitions[0].clone());
        assert!(plan(&t, &pol, now(), 150000).actions.is_empty());
    }

    #[test]
    fn ids_that_outran_the_partitions_get_the_periods_in_between() {
        let pol = policy(1000, 1, None);
        let t = table(&[(0, 1000), (1000, 2000)], Some(4500), true);
        assert_eq!(
            described(&plan(&t, &pol, now(), 150000)),
            [
                "create events_p2000 [2000, 3000)",
                "create events_p3000 [3000, 4000)",
                "create events_p4000 [4000, 5000)",
                "create events_p5000 [5000, 6000)"
            ]
        );
    }

    #[test]
    fn a_stray_huge_id_creates_a_bounded_number_of_partitions_and_says_so() {
        let pol = policy(1000, 3, None);
        let t = table(&[(0, 1000)], Some(i64::MAX / 2), true);
        let p = plan(&t, &pol, now(), 150000);
        assert_eq!(p.actions.len(), MAX_CATCH_UP as usize + 4);
        assert!(p.notes.iter().any(|n| n.contains("stray")), "{:?}", p.notes);
        // The catch-up continues from the top of the partitions.
        assert_eq!(described(&p)[0], "create events_p1000 [1000, 2000)");
    }

    #[test]
    fn retention_expires_by_value_below_max() {
        let pol = policy(1000, 0, Some(1500));
        let t = table(&[(0, 1000), (1000, 2000), (2000, 3000)], Some(2500), true);
        // max - retention = 1000: [0, 1000) ends at or below it; [1000, 2000) does not.
        assert_eq!(
            described(&plan(&t, &pol, now(), 150000)),
            ["drop events_p0"]
        );
        let empty = table(&[(0, 1000)], None, true);
        assert!(plan(&empty, &pol, now(), 150000)
            .actions
            .iter()
            .all(|a| a.verb() == "create"));
    }

    #[test]
    fn a_missing_index_on_the_key_is_noted() {
        let p = plan(
            &table(&[], None, false),
            &policy(10, 0, None),
            now(),
            150000,
        );
        assert!(
            p.notes.iter().any(|n| n.contains("no index leads with id")),
            "{:?}",
            p.notes
        );
    }
}

//! Results: per-class summaries of the timed runs, the JSON file `--save` writes and
//! `--compare` reads, and the before/after table in the runbook's layout (metric, before, after,
//! improvement) as text or markdown. Pure: no database, no files.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::explain::PlanFigures;
use super::queries::{Parameters, Skipped};

/// Version of the saved file's layout; a file with another version is refused.
pub const FORMAT_VERSION: u32 = 1;

/// Untimed runs before the timed ones: they load the table's pages into the cache and the
/// catalog into the backend, so the timed runs measure a warm server.
pub const WARMUP_RUNS: u32 = 1;

/// Everything one `bench` run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    pub format: u32,
    /// `schema.table`.
    pub table: String,
    pub taken_at: DateTime<Utc>,
    /// `SELECT version()`.
    pub server_version: String,
    pub layout: Layout,
    pub warmup_runs: u32,
    pub runs: u32,
    pub parameters: Parameters,
    pub classes: Vec<ClassResult>,
    pub skipped: Vec<Skipped>,
}

/// The table's form when it was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub partitioned: bool,
    /// Leaf partitions (the default one included); 0 for a plain table.
    pub partitions: usize,
}

impl Layout {
    pub fn describe(&self) -> String {
        if self.partitioned {
            format!("partitioned, {} partitions", self.partitions)
        } else {
            "plain table (not partitioned)".into()
        }
    }
}

/// One query class over the timed runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassResult {
    pub key: String,
    pub label: String,
    /// The SQL as run, with `$n` where the parameters went.
    pub sql: String,
    pub execution_ms: Summary,
    pub planning_ms: Summary,
    /// Median shared buffers hit during execution (8 kB blocks).
    pub shared_hit: u64,
    /// Median shared buffers read during execution.
    pub shared_read: u64,
    pub rows: u64,
    /// Relations of this table whose scan ran: its partitions, or the table itself when plain.
    pub partitions_scanned: usize,
    /// Relations of this table in the plan, run or not (more than scanned when pruned at run time).
    pub partitions_planned: usize,
    /// Names of the relations scanned.
    pub scanned: Vec<String>,
}

impl ClassResult {
    pub fn buffers(&self) -> u64 {
        self.shared_hit + self.shared_read
    }
}

/// Median and nearest-rank 95th percentile of the timed runs, with the runs themselves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub median: f64,
    pub p95: f64,
    pub samples: Vec<f64>,
}

impl Summary {
    pub fn of(samples: &[f64]) -> Summary {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        Summary {
            median: median(&sorted),
            p95: nearest_rank(&sorted, 0.95),
            samples: samples.to_vec(),
        }
    }
}

fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The smallest sample with at least `q` of the samples at or below it (so with 5 runs the p95
/// is the slowest run).
fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median_u64(values: impl Iterator<Item = u64>) -> u64 {
    let mut v: Vec<u64> = values.collect();
    v.sort_unstable();
    match v.len() {
        0 => 0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2,
    }
}

/// Summarises the timed runs of one class. `own` holds the relations that count as the table:
/// its leaf partitions, or its own name when plain.
pub fn summarize(
    key: &str,
    label: &str,
    sql: &str,
    runs: &[PlanFigures],
    own: &BTreeSet<String>,
) -> ClassResult {
    let scanned: BTreeSet<String> = runs
        .iter()
        .flat_map(|r| r.relations_scanned.intersection(own).cloned())
        .collect();
    let planned = runs.iter().map(|r| r.planned_among(own)).max().unwrap_or(0);
    ClassResult {
        key: key.into(),
        label: label.into(),
        sql: sql.into(),
        execution_ms: Summary::of(&runs.iter().map(|r| r.execution_ms).collect::<Vec<_>>()),
        planning_ms: Summary::of(&runs.iter().map(|r| r.planning_ms).collect::<Vec<_>>()),
        shared_hit: median_u64(runs.iter().map(|r| r.shared_hit)),
        shared_read: median_u64(runs.iter().map(|r| r.shared_read)),
        rows: runs.last().map(|r| r.rows).unwrap_or(0),
        partitions_scanned: scanned.len(),
        partitions_planned: planned.max(scanned.len()),
        scanned: scanned.into_iter().collect(),
    }
}

/// `1 (not partitioned)`, `1 of 40`, `1 of 40 (14 planned)`.
pub fn partitions_cell(layout: &Layout, c: &ClassResult) -> String {
    if !layout.partitioned {
        return format!("{} (not partitioned)", c.partitions_scanned);
    }
    let mut s = format!("{} of {}", c.partitions_scanned, layout.partitions);
    if c.partitions_planned > c.partitions_scanned {
        s.push_str(&format!(" ({} planned)", c.partitions_planned));
    }
    s
}

pub fn fmt_ms(ms: f64) -> String {
    if ms < 1.0 {
        format!("{ms:.3} ms")
    } else if ms < 100.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

/// How much faster `after` is: `5.0x faster`, `1.3x slower`, `no change`.
pub fn speedup(before: f64, after: f64) -> String {
    if before <= 0.0 || after <= 0.0 {
        return "n/a".into();
    }
    let r = before / after;
    if (r - 1.0).abs() < 0.05 {
        "no change".into()
    } else if r > 1.0 {
        format!("{r:.1}x faster")
    } else {
        format!("{:.1}x slower", 1.0 / r)
    }
}

/// `70% reduction`, `25% increase`, `no change`.
pub fn reduction(before: u64, after: u64) -> String {
    if before == 0 {
        return if after == 0 { "no change" } else { "n/a" }.into();
    }
    let pct = (1.0 - after as f64 / before as f64) * 100.0;
    if pct.abs() < 0.5 {
        "no change".into()
    } else if pct > 0.0 {
        format!("{pct:.0}% reduction")
    } else {
        format!("{:.0}% increase", -pct)
    }
}

/// One line of a results table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub metric: String,
    /// A detail of the class above it (indented).
    pub detail: bool,
    pub cells: Vec<String>,
}

/// A table with a title block and footnotes, rendered as text or markdown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub header: Vec<String>,
    pub columns: Vec<String>,
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

/// The runbook's before/after table: per class the median time, then its p95, planning time,
/// buffers, partitions scanned and rows; at the end the buffer usage of all classes together.
pub fn compare(before: &BenchReport, after: &BenchReport) -> Table {
    let mut rows = Vec::new();
    let row = |metric: &str, detail: bool, b: String, a: String, imp: String| Row {
        metric: metric.into(),
        detail,
        cells: vec![b, a, imp],
    };
    let mut keys: Vec<&ClassResult> = before.classes.iter().collect();
    keys.extend(
        after
            .classes
            .iter()
            .filter(|a| !before.classes.iter().any(|b| b.key == a.key)),
    );
    let (mut buffers_before, mut buffers_after) = (0, 0);
    for class in keys {
        let b = before.classes.iter().find(|c| c.key == class.key);
        let a = after.classes.iter().find(|c| c.key == class.key);
        let (b, a) = match (b, a) {
            (Some(b), Some(a)) => (b, a),
            (b, a) => {
                let missing = if b.is_none() { before } else { after };
                let why = missing
                    .skipped
                    .iter()
                    .find(|s| s.key == class.key)
                    .map(|s| format!("skipped: {}", s.reason))
                    .unwrap_or_else(|| "not measured".into());
                let cell = |c: Option<&ClassResult>| {
                    c.map(|c| fmt_ms(c.execution_ms.median))
                        .unwrap_or_else(|| "—".into())
                };
                rows.push(row(&class.label, false, cell(b), cell(a), why));
                continue;
            }
        };
        buffers_before += b.buffers();
        buffers_after += a.buffers();
        rows.push(row(
            &class.label,
            false,
            fmt_ms(b.execution_ms.median),
            fmt_ms(a.execution_ms.median),
            speedup(b.execution_ms.median, a.execution_ms.median),
        ));
        rows.push(row(
            "p95",
            true,
            fmt_ms(b.execution_ms.p95),
            fmt_ms(a.execution_ms.p95),
            speedup(b.execution_ms.p95, a.execution_ms.p95),
        ));
        rows.push(row(
            "planning",
            true,
            fmt_ms(b.planning_ms.median),
            fmt_ms(a.planning_ms.median),
            speedup(b.planning_ms.median, a.planning_ms.median),
        ));
        rows.push(row(
            "buffers (hit + read)",
            true,
            format!("{} + {}", b.shared_hit, b.shared_read),
            format!("{} + {}", a.shared_hit, a.shared_read),
            reduction(b.buffers(), a.buffers()),
        ));
        rows.push(row(
            "partitions scanned",
            true,
            partitions_cell(&before.layout, b),
            partitions_cell(&after.layout, a),
            pruning(&after.layout, a),
        ));
        rows.push(row(
            "rows",
            true,
            b.rows.to_string(),
            a.rows.to_string(),
            if a.rows == b.rows {
                "same".into()
            } else {
                "differ: not the same data?".into()
            },
        ));
    }
    let pct = |n: u64| {
        if buffers_before == 0 {
            format!("{n}")
        } else {
            format!("{:.0}% ({n})", n as f64 * 100.0 / buffers_before as f64)
        }
    };
    rows.push(row(
        "Buffer usage (all queries)",
        false,
        pct(buffers_before),
        pct(buffers_after),
        reduction(buffers_before, buffers_after),
    ));
    Table {
        header: vec![
            format!("Table {}", after.table),
            format!(
                "Before: {}, {}{}",
                stamp(before.taken_at),
                if before.table != after.table {
                    format!("measured on {}, ", before.table)
                } else {
                    String::new()
                },
                before.layout.describe(),
            ),
            format!(
                "After:  {}, {}",
                stamp(after.taken_at),
                after.layout.describe()
            ),
            format!("Server: {}", short_version(&after.server_version)),
            format!(
                "Median of {} runs after {} warm-up (before: {} runs); {}",
                after.runs,
                after.warmup_runs,
                before.runs,
                describe_parameters(&after.parameters)
            ),
        ],
        columns: ["Metric", "Before", "After", "Improvement"]
            .map(String::from)
            .to_vec(),
        rows,
        notes: footnotes(),
    }
}

fn pruning(layout: &Layout, c: &ClassResult) -> String {
    if !layout.partitioned {
        String::new()
    } else if c.partitions_scanned < layout.partitions {
        format!(
            "pruned to {} of {}",
            c.partitions_scanned, layout.partitions
        )
    } else {
        "no pruning".into()
    }
}

/// The results of one run, one line per class.
pub fn single(report: &BenchReport) -> Table {
    let mut rows: Vec<Row> = report
        .classes
        .iter()
        .map(|c| Row {
            metric: c.label.clone(),
            detail: false,
            cells: vec![
                fmt_ms(c.execution_ms.median),
                fmt_ms(c.execution_ms.p95),
                fmt_ms(c.planning_ms.median),
                format!("{} + {}", c.shared_hit, c.shared_read),
                c.rows.to_string(),
                partitions_cell(&report.layout, c),
            ],
        })
        .collect();
    for s in &report.skipped {
        rows.push(Row {
            metric: s.label.clone(),
            detail: false,
            cells: vec![format!("skipped: {}", s.reason)],
        });
    }
    Table {
        header: vec![
            format!("Table {}: {}", report.table, report.layout.describe()),
            format!("Server: {}", short_version(&report.server_version)),
            format!(
                "Median of {} runs after {} warm-up; {}",
                report.runs,
                report.warmup_runs,
                describe_parameters(&report.parameters)
            ),
        ],
        columns: [
            "Query",
            "Median",
            "p95",
            "Planning",
            "Buffers (hit + read)",
            "Rows",
            "Partitions scanned",
        ]
        .map(String::from)
        .to_vec(),
        rows,
        notes: footnotes(),
    }
}

fn footnotes() -> Vec<String> {
    vec![
        "Times are EXPLAIN ANALYZE's execution and planning times on the server (no network, no client).".into(),
        "Buffers: shared blocks (8 kB) found in cache + read from disk during execution, median of the runs.".into(),
        "Partitions scanned: partitions of the table whose scan ran (Actual Loops > 0) of all its partitions; \
         \"planned\" counts those left in the plan and pruned at run time. A plain table is a single relation."
            .into(),
    ]
}

fn describe_parameters(p: &Parameters) -> String {
    if let Some(r) = &p.ranges {
        let ranges = format!(
            "key ranges: one period [{}, {}), periods [{}, {}), newest period [{}, {})",
            r.period.0, r.period.1, r.periods.0, r.periods.1, r.recent.0, r.recent.1
        );
        return match &p.property {
            Some(prop) => format!("property {prop:?}, {ranges}"),
            None => ranges,
        };
    }
    match &p.property {
        Some(prop) => format!("property {prop:?}, reference day {}", p.reference),
        None => format!("reference day {}", p.reference),
    }
}

fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// `PostgreSQL 15.20 (Debian ...) on x86_64-pc-linux-gnu, compiled by ...` → up to the first comma.
fn short_version(v: &str) -> &str {
    v.split(" on ").next().unwrap_or(v).trim()
}

impl Table {
    pub fn to_text(&self) -> String {
        let mut widths: Vec<usize> = self.columns.iter().map(|c| c.chars().count()).collect();
        let metric = |r: &Row| {
            if r.detail {
                format!("  {}", r.metric)
            } else {
                r.metric.clone()
            }
        };
        for r in &self.rows {
            widths[0] = widths[0].max(metric(r).chars().count());
            // A row with a single cell (a skipped class) spans the remaining columns.
            if r.cells.len() + 1 == widths.len() {
                for (i, c) in r.cells.iter().enumerate() {
                    widths[i + 1] = widths[i + 1].max(c.chars().count());
                }
            }
        }
        let line = |cells: Vec<String>| {
            let last = cells.len() - 1;
            let mut s = String::new();
            for (i, c) in cells.into_iter().enumerate() {
                if i == last {
                    s.push_str(&c);
                } else {
                    let pad = widths[i].saturating_sub(c.chars().count());
                    s.push_str(&c);
                    s.push_str(&" ".repeat(pad + 2));
                }
            }
            s.trim_end().to_string()
        };
        let mut out = String::new();
        for h in &self.header {
            out.push_str(h);
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&line(self.columns.clone()));
        out.push('\n');
        for r in &self.rows {
            let mut cells = vec![metric(r)];
            cells.extend(r.cells.iter().cloned());
            out.push_str(&line(cells));
            out.push('\n');
        }
        out.push('\n');
        for n in &self.notes {
            out.push_str(n);
            out.push('\n');
        }
        out
    }

    pub fn to_markdown(&self) -> String {
        let cell = |s: &str| s.replace('|', "\\|");
        let mut out = String::new();
        for h in &self.header {
            out.push_str(&format!("{}  \n", cell(h.trim())));
        }
        out.push('\n');
        out.push_str(&format!(
            "| {} |\n|{}|\n",
            self.columns.join(" | "),
            self.columns
                .iter()
                .enumerate()
                .map(|(i, _)| if i == 0 { "---" } else { "---:" })
                .collect::<Vec<_>>()
                .join("|")
        ));
        for r in &self.rows {
            let metric = if r.detail {
                format!("↳ {}", r.metric)
            } else {
                format!("**{}**", r.metric)
            };
            let mut cells: Vec<String> = vec![cell(&metric)];
            cells.extend(r.cells.iter().map(|c| cell(c)));
            while cells.len() < self.columns.len() {
                cells.push(String::new());
            }
            out.push_str(&format!("| {} |\n", cells.join(" | ")));
        }
        out.push('\n');
        for n in &self.notes {
            out.push_str(&format!("- {}\n", cell(n)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, TimeZone};

    fn figures(exec: f64, hit: u64, read: u64, scanned: &[&str], planned: &[&str]) -> PlanFigures {
        PlanFigures {
            planning_ms: 0.1,
            execution_ms: exec,
            shared_hit: hit,
            shared_read: read,
            rows: 31,
            relations_in_plan: planned.iter().map(|s| s.to_string()).collect(),
            relations_scanned: scanned.iter().map(|s| s.to_string()).collect(),
            subplans_removed: 0,
        }
    }

    fn own(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn median_and_nearest_rank_p95() {
        let s = Summary::of(&[5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!((s.median, s.p95), (3.0, 5.0));
        let s = Summary::of(&[4.0, 1.0, 3.0, 2.0]);
        assert_eq!((s.median, s.p95), (2.5, 4.0));
        let twenty: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(Summary::of(&twenty).p95, 19.0);
        assert_eq!(Summary::of(&[]).median, 0.0);
    }

    #[test]
    fn a_summary_counts_only_the_tables_own_relations() {
        let runs = [
            figures(2.0, 10, 5, &["p_2025_01", "other"], &["p_2025_01", "other"]),
            figures(1.0, 14, 1, &["p_2025_01", "other"], &["p_2025_01", "other"]),
            figures(3.0, 12, 0, &["p_2025_01", "other"], &["p_2025_01", "other"]),
        ];
        let c = summarize(
            "k",
            "K",
            "SELECT 1",
            &runs,
            &own(&["p_2025_01", "p_2025_02"]),
        );
        assert_eq!(c.partitions_scanned, 1);
        assert_eq!(c.scanned, ["p_2025_01"]);
        assert_eq!((c.shared_hit, c.shared_read), (12, 1));
        assert_eq!(c.execution_ms.median, 2.0);
    }

    #[test]
    fn partition_cells_say_what_was_scanned_of_what() {
        let runs = [figures(1.0, 1, 1, &["p1"], &["p1", "p2", "p3"])];
        let c = summarize("k", "K", "", &runs, &own(&["p1", "p2", "p3", "p4"]));
        let partitioned = Layout {
            partitioned: true,
            partitions: 4,
        };
        assert_eq!(partitions_cell(&partitioned, &c), "1 of 4 (3 planned)");
        let plain = Layout {
            partitioned: false,
            partitions: 0,
        };
        let c = summarize("k", "K", "", &runs, &own(&["p1"]));
        assert_eq!(partitions_cell(&plain, &c), "1 (not partitioned)");
    }

    #[test]
    fn improvements_read_like_the_runbook() {
        assert_eq!(speedup(250.0, 50.0), "5.0x faster");
        assert_eq!(speedup(1.0, 1.3), "1.3x slower");
        assert_eq!(speedup(1.0, 1.01), "no change");
        assert_eq!(reduction(100, 30), "70% reduction");
        assert_eq!(reduction(100, 125), "25% increase");
        assert_eq!(reduction(0, 0), "no change");
    }

    fn report(partitioned: bool, exec: f64, buffers: u64, scanned: &[&str]) -> BenchReport {
        let owned = if partitioned {
            own(&["t_2025_01", "t_2025_02", "t_default"])
        } else {
            own(&["t"])
        };
        let class = summarize(
            "property_date_range",
            "Property + date range query",
            "SELECT",
            &[figures(exec, buffers, 0, scanned, scanned)],
            &owned,
        );
        BenchReport {
            format: FORMAT_VERSION,
            table: "public.t".into(),
            taken_at: Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap(),
            server_version: "PostgreSQL 15.20 (Debian) on x86_64-pc-linux-gnu, compiled by gcc"
                .into(),
            layout: Layout {
                partitioned,
                partitions: if partitioned { 3 } else { 0 },
            },
            warmup_runs: 1,
            runs: 1,
            parameters: Parameters {
                reference: NaiveDate::from_ymd_opt(2025, 3, 1).unwrap(),
                property: Some("p-1".into()),
                ranges: None,
            },
            classes: vec![class],
            skipped: vec![Skipped {
                key: "analytics_aggregation".into(),
                label: "Analytics aggregation".into(),
                reason: "the table has no \"price\" column".into(),
            }],
        }
    }

    #[test]
    fn the_comparison_has_the_runbook_columns_and_partition_counts_from_the_plans() {
        let before = report(false, 10.0, 100, &["t"]);
        let after = report(true, 2.0, 30, &["t_2025_01"]);
        let table = compare(&before, &after);
        assert_eq!(table.columns, ["Metric", "Before", "After", "Improvement"]);
        let find = |m: &str| table.rows.iter().find(|r| r.metric == m).unwrap();
        assert_eq!(
            find("Property + date range query").cells,
            ["10.00 ms", "2.00 ms", "5.0x faster"]
        );
        assert_eq!(
            find("partitions scanned").cells,
            ["1 (not partitioned)", "1 of 3", "pruned to 1 of 3"]
        );
        assert_eq!(
            find("Buffer usage (all queries)").cells,
            ["100% (100)", "30% (30)", "70% reduction"]
        );
        let text = table.to_text();
        assert!(
            text.contains("Before: 2025-03-01 12:00:00 UTC, plain table"),
            "{text}"
        );
        assert!(
            text.contains("Server: PostgreSQL 15.20 (Debian)\n"),
            "{text}"
        );
        let md = table.to_markdown();
        assert!(
            md.contains("| Metric | Before | After | Improvement |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| ↳ partitions scanned | 1 (not partitioned) | 1 of 3 | pruned to 1 of 3 |"
            ),
            "{md}"
        );
    }

    #[test]
    fn a_class_measured_on_one_side_only_says_why() {
        let before = report(false, 10.0, 100, &["t"]);
        let mut after = report(true, 2.0, 30, &["t_2025_01"]);
        after.classes.clear();
        after.skipped[0].key = "property_date_range".into();
        let table = compare(&before, &after);
        assert_eq!(table.rows[0].cells[1], "—");
        assert!(
            table.rows[0].cells[2].starts_with("skipped: "),
            "{:?}",
            table.rows[0]
        );
    }

    #[test]
    fn the_saved_file_round_trips() {
        let r = report(true, 2.0, 30, &["t_2025_01"]);
        let json = serde_json::to_string_pretty(&r).unwrap();
        let back: BenchReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn the_single_run_table_lists_skipped_classes_with_their_reason() {
        let text = single(&report(false, 1.5, 4, &["t"])).to_text();
        assert!(text.contains("1 (not partitioned)"), "{text}");
        assert!(
            text.contains("skipped: the table has no \"price\" column"),
            "{text}"
        );
    }
}

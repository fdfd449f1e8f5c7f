//! The Prometheus metrics of `partkeeper run` (names, types and labels as in the SPEC).
//!
//! Two kinds, kept apart:
//! - Facts about the database (partitions, sizes, coverage, replicas) come from the latest
//!   refresh [`Snapshot`] and are rendered as const metric families, as postgres_exporter
//!   does: nothing outlives the snapshot, so the series of a dropped partition disappear with
//!   it, and a scrape never queries the database. The text of one snapshot's facts is encoded
//!   at the first scrape that sees it and reused until the next refresh; the few gauges about
//!   this process (`up`, `leader`, ...) come from [`StateCollector`] at every scrape.
//! - What this process did (maintenance runs, partitions created, pass durations) is counted
//!   in ordinary counters and a histogram, fed by the [`PassReport`]s of the passes it ran.
//!   Counters start at 0 for every configured table, so `increase()` sees the first failure.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, IntCounterVec, Opts, Registry, TextEncoder,
};
use tokio::sync::watch;

use crate::maintain::PassReport;
use crate::plan::Action;
use crate::snapshot::Snapshot;

/// Every metric name starts with this.
pub const PREFIX: &str = "partkeeper_";

/// `maintenance_duration_seconds` buckets: a pass with nothing to do takes tens of milliseconds;
/// one that moves rows out of a default partition can take minutes.
const PASS_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// The `result` label of `maintenance_runs_total`: a fixed set, never free text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunResult {
    Success,
    Failure,
}

impl RunResult {
    pub fn as_str(self) -> &'static str {
        match self {
            RunResult::Success => "success",
            RunResult::Failure => "failure",
        }
    }
}

/// Name, type and labels of each metric (without the prefix): the SPEC's table plus two about
/// the refresh itself. Tests check the output against it.
pub const METRICS: &[(&str, MetricType, &[&str])] = &[
    ("build_info", MetricType::GAUGE, &["version"]),
    ("up", MetricType::GAUGE, &[]),
    ("leader", MetricType::GAUGE, &[]),
    ("partitions", MetricType::GAUGE, &["table"]),
    (
        "partition_size_bytes",
        MetricType::GAUGE,
        &["table", "partition"],
    ),
    (
        "partition_rows_estimate",
        MetricType::GAUGE,
        &["table", "partition"],
    ),
    ("table_size_bytes", MetricType::GAUGE, &["table"]),
    ("future_partitions", MetricType::GAUGE, &["table"]),
    (
        "coverage_end_timestamp_seconds",
        MetricType::GAUGE,
        &["table"],
    ),
    ("coverage_end_value", MetricType::GAUGE, &["table"]),
    ("next_partition_missing", MetricType::GAUGE, &["table"]),
    ("default_partition_rows", MetricType::GAUGE, &["table"]),
    ("default_rows_waiting", MetricType::GAUGE, &["table"]),
    (
        "maintenance_runs_total",
        MetricType::COUNTER,
        &["table", "result"],
    ),
    (
        "maintenance_last_success_timestamp_seconds",
        MetricType::GAUGE,
        &["table"],
    ),
    ("maintenance_duration_seconds", MetricType::HISTOGRAM, &[]),
    ("partitions_created_total", MetricType::COUNTER, &["table"]),
    ("partitions_dropped_total", MetricType::COUNTER, &["table"]),
    ("partitions_detached_total", MetricType::COUNTER, &["table"]),
    ("partitions_archived_total", MetricType::COUNTER, &["table"]),
    ("replication_lag_seconds", MetricType::GAUGE, &["replica"]),
    ("replication_lag_bytes", MetricType::GAUGE, &["replica"]),
    ("replica_up", MetricType::GAUGE, &["replica"]),
    ("refresh_duration_seconds", MetricType::GAUGE, &[]),
    ("refresh_success_timestamp_seconds", MetricType::GAUGE, &[]),
];

/// The registry and the counters fed by maintenance passes.
pub struct Metrics {
    registry: Registry,
    runs: IntCounterVec,
    created: IntCounterVec,
    dropped: IntCounterVec,
    detached: IntCounterVec,
    archived: IntCounterVec,
    last_success: GaugeVec,
    duration: Histogram,
    snapshot: Arc<RwLock<Arc<Snapshot>>>,
    /// The encoded facts of one snapshot (see [`Metrics::facts_text`]).
    facts: Mutex<Option<(Arc<Snapshot>, Arc<str>)>>,
    /// Set while the leader session's heartbeat fails (see [`Metrics::heartbeat`]).
    heartbeat_failing: Arc<AtomicBool>,
}

impl Metrics {
    /// `tables` are the configured tables' labels (`schema.table`); their counters start at 0.
    pub fn new(
        tables: &[String],
        snapshot: Arc<RwLock<Arc<Snapshot>>>,
        leader: watch::Receiver<bool>,
    ) -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(format!("{PREFIX}{name}"), help), labels)
                .expect("valid counter definition");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric name");
            c
        };
        let runs = counter(
            "maintenance_runs_total",
            "Maintenance runs per table, by result (success or failure).",
            &["table", "result"],
        );
        let created = counter(
            "partitions_created_total",
            "Partitions created by maintenance.",
            &["table"],
        );
        let dropped = counter(
            "partitions_dropped_total",
            "Expired partitions dropped by maintenance.",
            &["table"],
        );
        let detached = counter(
            "partitions_detached_total",
            "Expired partitions detached by maintenance.",
            &["table"],
        );
        let archived = counter(
            "partitions_archived_total",
            "Expired partitions detached and moved to the archive schema by maintenance.",
            &["table"],
        );
        let last_success = GaugeVec::new(
            Opts::new(
                format!("{PREFIX}maintenance_last_success_timestamp_seconds"),
                "Unix time of the end of the last successful maintenance run of the table by this instance.",
            ),
            &["table"],
        )
        .expect("valid gauge definition");
        registry
            .register(Box::new(last_success.clone()))
            .expect("unique metric name");
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                format!("{PREFIX}maintenance_duration_seconds"),
                "Duration of one maintenance pass over all tables.",
            )
            .buckets(PASS_BUCKETS.to_vec()),
        )
        .expect("valid histogram definition");
        registry
            .register(Box::new(duration.clone()))
            .expect("unique metric name");
        let heartbeat_failing = Arc::new(AtomicBool::new(false));
        let mut state = StateCollector::new(Arc::clone(&snapshot), leader);
        state.heartbeat_failing = Arc::clone(&heartbeat_failing);
        registry
            .register(Box::new(state))
            .expect("unique metric names");
        for t in tables {
            for r in [RunResult::Success, RunResult::Failure] {
                runs.with_label_values(&[t.as_str(), r.as_str()]);
            }
            for c in [&created, &dropped, &detached, &archived] {
                c.with_label_values(&[t.as_str()]);
            }
        }
        Metrics {
            registry,
            runs,
            created,
            dropped,
            detached,
            archived,
            last_success,
            duration,
            snapshot,
            facts: Mutex::new(None),
            heartbeat_failing,
        }
    }

    /// The verdict of the leader session's heartbeat (every second, bounded by its timeout):
    /// while it fails, `up` is 0 whatever the last refresh found, so that `up` follows
    /// `/readyz` within seconds instead of waiting for a refresh stuck on a dead network.
    pub fn heartbeat(&self, answered: bool) {
        self.heartbeat_failing.store(!answered, Ordering::Relaxed);
    }

    /// Counts one pass. A pass skipped because another instance held the maintenance lock did
    /// nothing and is not counted.
    pub fn record_pass(&self, report: &PassReport, finished: DateTime<Utc>) {
        if report.skipped.is_some() {
            return;
        }
        self.duration.observe(report.duration_ms as f64 / 1000.0);
        for t in &report.tables {
            let table = t.table.to_string();
            let result = if t.succeeded() {
                RunResult::Success
            } else {
                RunResult::Failure
            };
            self.runs
                .with_label_values(&[table.as_str(), result.as_str()])
                .inc();
            if result == RunResult::Success {
                self.last_success
                    .with_label_values(&[table.as_str()])
                    .set(finished.timestamp() as f64);
            }
            for a in t.actions.iter().filter(|a| a.error.is_none()) {
                let counter = match a.action {
                    Action::Create { .. } | Action::CreateDefault { .. } => &self.created,
                    Action::Drop { .. } => &self.dropped,
                    Action::FinalizeDetach {
                        then_drop: true, ..
                    } => &self.dropped,
                    Action::Detach { .. } | Action::FinalizeDetach { .. } => &self.detached,
                    Action::Archive { .. } => &self.archived,
                    Action::AddIndex { .. } => continue,
                };
                counter.with_label_values(&[table.as_str()]).inc();
            }
        }
    }

    /// Counts a pass that failed as a whole (the connection was lost, the catalog could not be
    /// read): a failure for every table it was to maintain.
    pub fn record_failed_pass(&self, tables: &[String], seconds: f64) {
        self.duration.observe(seconds);
        for t in tables {
            self.runs
                .with_label_values(&[t.as_str(), RunResult::Failure.as_str()])
                .inc();
        }
    }

    /// The Prometheus text exposition of everything: the registry (counters, histogram, the
    /// small state gauges) encoded now, then the snapshot's facts, encoded once per snapshot.
    pub fn render(&self) -> String {
        let facts = self.facts_text();
        let mut text = encode(&self.registry.gather());
        text.reserve(facts.len());
        text.push_str(&facts);
        text
    }

    /// The facts of the current snapshot as text, encoded at the first scrape that sees that
    /// snapshot and reused until the next refresh: with thousands of partitions, encoding is
    /// most of a scrape's cost, and the text cannot change between refreshes.
    fn facts_text(&self) -> Arc<str> {
        let snapshot = current(&self.snapshot);
        let mut cache = self.facts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((of, text)) = cache.as_ref() {
            if Arc::ptr_eq(of, &snapshot) {
                return Arc::clone(text);
            }
        }
        let text: Arc<str> = encode(&snapshot_families(&snapshot)).into();
        *cache = Some((snapshot, Arc::clone(&text)));
        text
    }

    /// `maintenance_runs_total{table,result}` (for `/status` and tests).
    pub fn runs(&self, table: &str, result: RunResult) -> u64 {
        self.runs.with_label_values(&[table, result.as_str()]).get()
    }
}

/// The small gauges about this process's state (`build_info`, `up`, `leader`, the refresh's
/// duration and time), read at scrape time as const metrics.
pub struct StateCollector {
    snapshot: Arc<RwLock<Arc<Snapshot>>>,
    leader: watch::Receiver<bool>,
    heartbeat_failing: Arc<AtomicBool>,
    descs: Vec<Desc>,
}

impl StateCollector {
    pub fn new(
        snapshot: Arc<RwLock<Arc<Snapshot>>>,
        leader: watch::Receiver<bool>,
    ) -> StateCollector {
        let descs = METRICS
            .iter()
            .filter(|(name, _, _)| STATE_METRICS.contains(name))
            .map(|(name, _, labels)| {
                Desc::new(
                    format!("{PREFIX}{name}"),
                    help(name).to_string(),
                    labels.iter().map(|l| l.to_string()).collect(),
                    Default::default(),
                )
                .expect("valid metric description")
            })
            .collect();
        StateCollector {
            snapshot,
            leader,
            heartbeat_failing: Arc::default(),
            descs,
        }
    }
}

impl Collector for StateCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        state_families(
            &current(&self.snapshot),
            *self.leader.borrow(),
            self.heartbeat_failing.load(Ordering::Relaxed),
        )
    }
}

/// Clones the `Arc` and lets go of the lock at once: a refresh never waits for a scrape.
fn current(cell: &RwLock<Arc<Snapshot>>) -> Arc<Snapshot> {
    Arc::clone(&cell.read().unwrap_or_else(|p| p.into_inner()))
}

/// The gauges of [`StateCollector`].
const STATE_METRICS: &[&str] = &[
    "build_info",
    "up",
    "leader",
    "refresh_duration_seconds",
    "refresh_success_timestamp_seconds",
];

fn encode(families: &[MetricFamily]) -> String {
    let families: Vec<&MetricFamily> = families
        .iter()
        .filter(|f| !f.get_metric().is_empty())
        .collect();
    let mut buf = Vec::with_capacity(4096);
    for f in families {
        if let Err(e) = TextEncoder::new().encode(std::slice::from_ref(f), &mut buf) {
            tracing::error!(error = %e, family = f.name(), "cannot encode a metric family");
        }
    }
    let text = String::from_utf8(buf).unwrap_or_default();
    // The encoder prints infinity as Rust does ("inf"); Prometheus reads that, but the
    // exposition format's spelling is "+Inf" (unbounded coverage).
    if text.contains(" inf\n") {
        text.replace(" inf\n", " +Inf\n")
    } else {
        text
    }
}

fn gauge_family(name: &str, samples: Vec<proto::Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(format!("{PREFIX}{name}"));
    f.set_help(help(name).to_string());
    f.set_field_type(MetricType::GAUGE);
    f.set_metric(samples);
    f
}

/// `build_info`, `up`, `leader` and the refresh gauges (pure). `up` needs both the last refresh
/// and the last heartbeat to have reached the primary.
pub fn state_families(s: &Snapshot, leader: bool, heartbeat_failing: bool) -> Vec<MetricFamily> {
    let one = |v: f64| vec![sample(&[], v)];
    let mut out = vec![
        gauge_family(
            "build_info",
            vec![sample(&[("version", env!("CARGO_PKG_VERSION"))], 1.0)],
        ),
        gauge_family(
            "up",
            one(f64::from(u8::from(s.primary_up && !heartbeat_failing))),
        ),
        gauge_family("leader", one(f64::from(u8::from(leader)))),
    ];
    if let Some(d) = s.duration_seconds {
        out.push(gauge_family("refresh_duration_seconds", one(d)));
    }
    if let Some(at) = s.tables_read_at {
        out.push(gauge_family(
            "refresh_success_timestamp_seconds",
            one(at.timestamp() as f64),
        ));
    }
    out
}

fn help(name: &str) -> &'static str {
    match name {
        "build_info" => "Always 1; the version label names the running partkeeper.",
        "up" => "1 if the last refresh reached the primary database and its last heartbeat (every second) did not fail.",
        "leader" => "1 if this instance holds the leader lock and runs maintenance.",
        "partitions" => "Partitions of the table, the default partition included.",
        "partition_size_bytes" => "Total relation size of the partition (pg_total_relation_size).",
        "partition_rows_estimate" => "Planner row estimate of the partition (reltuples; 0 when never analyzed).",
        "table_size_bytes" => "Total size of all partitions of the table.",
        "future_partitions" => "Partitions that start after the current period.",
        "coverage_end_timestamp_seconds" => "Unix time where the gap-free coverage starting at the current period ends (+Inf: unbounded).",
        "coverage_end_value" => "Integer keys: the key value where the gap-free coverage starting at the period of max(key) ends (+Inf: unbounded).",
        "next_partition_missing" => "1 if no partition covers the next period.",
        "default_partition_rows" => "Rows in the default partition: exact up to 100000, above an estimate scaled from reltuples like the planner's.",
        "default_rows_waiting" => "Rows of new periods left in the default partition for `partkeeper drain` (more than default_move_limit; each period counted up to default_move_limit + 1).",
        "replication_lag_seconds" => "Replay delay of the replica; 0 when it has replayed everything it received.",
        "replication_lag_bytes" => "WAL bytes the replica has not replayed yet.",
        "replica_up" => "1 if the replica answered the last probe (or streams, as seen by the primary).",
        "refresh_duration_seconds" => "Duration of the last refresh of the database facts behind these metrics.",
        "refresh_success_timestamp_seconds" => "Unix time of the last refresh that read the tables on the primary.",
        _ => "partkeeper metric.",
    }
}

/// The snapshot's facts about tables, partitions and replicas as metric families (pure).
pub fn snapshot_families(s: &Snapshot) -> Vec<MetricFamily> {
    let mut out = Vec::new();
    let mut family =
        |name: &str, samples: Vec<proto::Metric>| out.push(gauge_family(name, samples));
    let tables: Vec<_> = s
        .tables
        .iter()
        .filter_map(|t| Some((t, t.health.as_ref()?)))
        .collect();
    let per_table =
        |f: &dyn Fn(&crate::snapshot::TableFacts, &crate::check::TableHealth) -> Option<f64>| {
            tables
                .iter()
                .filter_map(|(t, h)| Some(sample(&[("table", &t.table)], f(t, h)?)))
                .collect::<Vec<_>>()
        };
    family("partitions", per_table(&|_, h| Some(h.partitions as f64)));
    family(
        "table_size_bytes",
        per_table(&|t, _| Some(t.partitions.iter().map(|p| p.size_bytes as f64).sum())),
    );
    family(
        "future_partitions",
        per_table(&|_, h| Some(h.future_partitions as f64)),
    );
    family(
        "coverage_end_timestamp_seconds",
        per_table(&|_, h| {
            (!h.integer_key).then(|| h.coverage_end.map_or(f64::INFINITY, |t| t as f64))
        }),
    );
    // Integer keys have no time: their coverage ends at a key value instead.
    family(
        "coverage_end_value",
        per_table(&|_, h| {
            h.integer_key
                .then(|| h.coverage_end_value.map_or(f64::INFINITY, |v| v as f64))
        }),
    );
    family(
        "next_partition_missing",
        per_table(&|_, h| Some(f64::from(u8::from(h.next_partition_missing)))),
    );
    family(
        "default_partition_rows",
        per_table(&|_, h| h.default_rows.map(|n| n as f64)),
    );
    family(
        "default_rows_waiting",
        per_table(&|_, h| {
            h.default_partition
                .as_ref()
                .map(|_| h.default_rows_waiting as f64)
        }),
    );
    let per_partition = |f: &dyn Fn(&crate::snapshot::PartitionFacts) -> f64| {
        tables
            .iter()
            .flat_map(|(t, _)| {
                t.partitions
                    .iter()
                    .map(|p| sample(&[("table", &t.table), ("partition", &p.name)], f(p)))
            })
            .collect::<Vec<_>>()
    };
    family(
        "partition_size_bytes",
        per_partition(&|p| p.size_bytes as f64),
    );
    family(
        "partition_rows_estimate",
        per_partition(&|p| p.rows_estimate),
    );

    let lag = s.lag_series();
    family(
        "replica_up",
        lag.iter()
            .map(|l| sample(&[("replica", &l.replica)], f64::from(u8::from(l.up))))
            .collect(),
    );
    family(
        "replication_lag_seconds",
        lag.iter()
            .filter_map(|l| Some(sample(&[("replica", &l.replica)], l.seconds?)))
            .collect(),
    );
    family(
        "replication_lag_bytes",
        lag.iter()
            .filter_map(|l| Some(sample(&[("replica", &l.replica)], l.bytes? as f64)))
            .collect(),
    );
    out
}

fn sample(labels: &[(&str, &str)], value: f64) -> proto::Metric {
    let pairs = labels
        .iter()
        .map(|(k, v)| {
            let mut p = proto::LabelPair::default();
            p.set_name(k.to_string());
            p.set_value(v.to_string());
            p
        })
        .collect();
    let mut g = proto::Gauge::default();
    g.set_value(value);
    let mut m = proto::Metric::from_gauge(g);
    m.set_label(pairs);
    m
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::check::TableHealth;
    use crate::ident::QualifiedName;
    use crate::maintain::{ActionReport, TableReport};
    use crate::replication::ReplicaView;
    use crate::snapshot::{PartitionFacts, TableFacts};

    fn part(name: &str, size: i64) -> PartitionFacts {
        PartitionFacts {
            name: format!("public.{name}"),
            bounds: String::new(),
            size_bytes: size,
            rows_estimate: 10.0,
            default: false,
        }
    }

    fn snapshot(parts: Vec<PartitionFacts>, coverage_end: Option<i64>) -> Snapshot {
        Snapshot {
            primary_up: true,
            tables: vec![TableFacts {
                table: "public.t".into(),
                error: None,
                health: Some(TableHealth {
                    table: QualifiedName::new("public", "t"),
                    partitions: parts.len(),
                    future_partitions: 1,
                    coverage_end,
                    coverage_end_value: None,
                    integer_key: false,
                    next_partition_missing: false,
                    default_partition: None,
                    default_rows: None,
                    default_rows_waiting: 0,
                    problems: Vec::new(),
                    notes: Vec::new(),
                    archived: Vec::new(),
                }),
                partitions: parts,
            }],
            replicas: vec![ReplicaView {
                name: "r1".into(),
                target: "h:5432/d".into(),
                up: false,
                in_recovery: None,
                lag_seconds: None,
                lag_bytes: None,
                error: Some("no answer".into()),
            }],
            ..Snapshot::default()
        }
    }

    fn metrics(s: Snapshot) -> (Metrics, Arc<RwLock<Arc<Snapshot>>>) {
        let cell = Arc::new(RwLock::new(Arc::new(s)));
        let (_tx, rx) = watch::channel(true);
        (
            Metrics::new(&["public.t".into()], Arc::clone(&cell), rx),
            cell,
        )
    }

    /// Issue 14: a refresh stuck on a dead network leaves `primary_up` true for up to
    /// `PRIMARY_TIMEOUT`; the heartbeat's failure turns `up` to 0 at once.
    #[test]
    fn up_is_0_while_the_heartbeat_fails_whatever_the_last_refresh_found() {
        let (m, _cell) = metrics(snapshot(vec![part("t_a", 100)], Some(10)));
        assert!(m.render().contains("\npartkeeper_up 1\n"));
        m.heartbeat(false);
        assert!(m.render().contains("\npartkeeper_up 0\n"));
        m.heartbeat(true);
        assert!(m.render().contains("\npartkeeper_up 1\n"));
    }

    #[test]
    fn a_dropped_partition_s_series_disappear_at_the_next_snapshot() {
        let (m, cell) = metrics(snapshot(vec![part("t_a", 100), part("t_b", 200)], Some(10)));
        let text = m.render();
        assert!(
            text.contains("partkeeper_table_size_bytes{table=\"public.t\"} 300"),
            "{text}"
        );
        assert!(text.contains("partition=\"public.t_a\""), "{text}");
        *cell.write().unwrap() = Arc::new(snapshot(vec![part("t_b", 200)], Some(10)));
        let text = m.render();
        assert!(!text.contains("public.t_a"), "{text}");
        assert!(
            text.contains("partkeeper_partitions{table=\"public.t\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn unbounded_coverage_is_infinity_and_an_unreachable_replica_has_no_lag_series() {
        let (m, _) = metrics(snapshot(vec![part("t_a", 1)], None));
        let text = m.render();
        assert!(
            text.contains("partkeeper_coverage_end_timestamp_seconds{table=\"public.t\"} +Inf"),
            "{text}"
        );
        assert!(
            text.contains("partkeeper_replica_up{replica=\"r1\"} 0"),
            "{text}"
        );
        assert!(
            !text.contains("partkeeper_replication_lag_seconds{"),
            "{text}"
        );
        assert!(text.contains("\npartkeeper_leader 1\n"), "{text}");
    }

    #[test]
    fn archives_count_as_archived_and_a_failed_hook_as_a_failed_run() {
        let (m, _) = metrics(Snapshot::default());
        let now = Utc.with_ymd_and_hms(2026, 11, 1, 2, 0, 0).unwrap();
        let p = |n: &str| QualifiedName::new("public", n);
        let archive = |n: &str, error: Option<&str>| ActionReport {
            action: Action::Archive {
                partition: p(n),
                schema: "archive".into(),
                concurrently: false,
                pending: false,
            },
            error: error.map(String::from),
            duration_ms: 1,
            lock_waits: 0,
            rows_moved: 0,
            hooks: Vec::new(),
            steps: Vec::new(),
        };
        let table = |actions| TableReport {
            table: p("t"),
            actions,
            notes: Vec::new(),
            error: None,
            duration_ms: 1,
        };
        let report = PassReport {
            tables: vec![table(vec![archive("t_2020_01", None)])],
            skipped: None,
            dry_run: false,
            duration_ms: 1,
        };
        m.record_pass(&report, now);
        let failed = PassReport {
            tables: vec![table(vec![archive(
                "t_2020_02",
                Some("kept public.t_2020_02: the before_expire hook exited with status 1"),
            )])],
            skipped: None,
            dry_run: false,
            duration_ms: 1,
        };
        m.record_pass(&failed, now);
        assert_eq!(m.runs("public.t", RunResult::Success), 1);
        assert_eq!(m.runs("public.t", RunResult::Failure), 1);
        let text = m.render();
        assert!(
            text.contains("partkeeper_partitions_archived_total{table=\"public.t\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("partkeeper_partitions_detached_total{table=\"public.t\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn passes_feed_the_counters_and_the_histogram() {
        let (m, _) = metrics(Snapshot::default());
        let now = Utc.with_ymd_and_hms(2026, 11, 1, 2, 0, 0).unwrap();
        let action = |a: Action, error: Option<&str>| ActionReport {
            action: a,
            error: error.map(String::from),
            duration_ms: 1,
            lock_waits: 0,
            rows_moved: 0,
            hooks: Vec::new(),
            steps: Vec::new(),
        };
        let p = |n: &str| QualifiedName::new("public", n);
        let report = PassReport {
            tables: vec![TableReport {
                table: p("t"),
                actions: vec![
                    action(
                        Action::Create {
                            partition: p("t_2026_12"),
                            from: now,
                            to: now,
                        },
                        None,
                    ),
                    action(
                        Action::CreateDefault {
                            partition: p("t_default"),
                        },
                        None,
                    ),
                    action(
                        Action::Create {
                            partition: p("t_2027_01"),
                            from: now,
                            to: now,
                        },
                        Some("lock timeout"),
                    ),
                ],
                notes: Vec::new(),
                error: None,
                duration_ms: 3,
            }],
            skipped: None,
            dry_run: false,
            duration_ms: 1500,
        };
        m.record_pass(&report, now);
        m.record_failed_pass(&["public.t".into()], 0.2);
        let skipped = PassReport {
            tables: Vec::new(),
            skipped: Some("another instance".into()),
            dry_run: false,
            duration_ms: 5000,
        };
        m.record_pass(&skipped, now);
        assert_eq!(m.runs("public.t", RunResult::Failure), 2);
        assert_eq!(m.runs("public.t", RunResult::Success), 0);
        let text = m.render();
        assert!(
            text.contains("partkeeper_partitions_created_total{table=\"public.t\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("partkeeper_maintenance_duration_seconds_count 2"),
            "{text}"
        );
        assert!(
            !text.contains("partkeeper_maintenance_last_success_timestamp_seconds{"),
            "no success yet: {text}"
        );
    }
}

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
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
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
/// the refresh itself. Every one but `build_info` also carries `database` ([`labels_of`]).
/// Tests check the output against it.
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

/// Families whose every series carries the `database` label: all but `build_info`.
fn per_database(name: &str) -> bool {
    name != "build_info"
}

/// The labels of `name` as rendered: `database` first (label names sort so), then the SPEC's.
pub fn labels_of(name: &str, labels: &[&'static str]) -> Vec<&'static str> {
    let mut out = Vec::with_capacity(labels.len() + 1);
    if per_database(name) {
        out.push("database");
    }
    out.extend_from_slice(labels);
    out
}

/// The one registry of the process: counters and the histogram fed by the passes of every
/// database, the state gauges, and the facts of each database's latest snapshot. Cheap to
/// clone (one `Arc`).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    runs: IntCounterVec,
    created: IntCounterVec,
    dropped: IntCounterVec,
    detached: IntCounterVec,
    archived: IntCounterVec,
    last_success: GaugeVec,
    duration: HistogramVec,
    /// In the order the databases were added (the configuration's).
    sources: Arc<RwLock<Vec<Arc<Source>>>>,
}

/// What the metrics read of one database: its latest snapshot, its leadership and heartbeat.
struct Source {
    name: String,
    snapshot: Arc<RwLock<Arc<Snapshot>>>,
    leader: watch::Receiver<bool>,
    /// Set while the leader session's heartbeat fails (see [`DbMetrics::heartbeat`]).
    heartbeat_failing: AtomicBool,
    /// The encoded facts of one snapshot (see [`Source::facts_text`]).
    facts: Mutex<Option<EncodedFacts>>,
}

/// A snapshot and its facts as text.
type EncodedFacts = (Arc<Snapshot>, Arc<[FamilyText]>);

/// One family of a database's facts as text: its `# HELP`/`# TYPE` lines and its samples,
/// apart, so that the samples of every database go under one header.
struct FamilyText {
    header: String,
    samples: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with no database yet (see [`Metrics::database`]).
    pub fn new() -> Metrics {
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
            &["database", "table", "result"],
        );
        let created = counter(
            "partitions_created_total",
            "Partitions created by maintenance.",
            &["database", "table"],
        );
        let dropped = counter(
            "partitions_dropped_total",
            "Expired partitions dropped by maintenance.",
            &["database", "table"],
        );
        let detached = counter(
            "partitions_detached_total",
            "Expired partitions detached by maintenance.",
            &["database", "table"],
        );
        let archived = counter(
            "partitions_archived_total",
            "Expired partitions detached and moved to the archive schema by maintenance.",
            &["database", "table"],
        );
        let last_success = GaugeVec::new(
            Opts::new(
                format!("{PREFIX}maintenance_last_success_timestamp_seconds"),
                "Unix time of the end of the last successful maintenance run of the table by this instance.",
            ),
            &["database", "table"],
        )
        .expect("valid gauge definition");
        registry
            .register(Box::new(last_success.clone()))
            .expect("unique metric name");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                format!("{PREFIX}maintenance_duration_seconds"),
                "Duration of one maintenance pass over all tables of the database.",
            )
            .buckets(PASS_BUCKETS.to_vec()),
            &["database"],
        )
        .expect("valid histogram definition");
        registry
            .register(Box::new(duration.clone()))
            .expect("unique metric name");
        let sources = Arc::new(RwLock::new(Vec::new()));
        registry
            .register(Box::new(StateCollector::new(Arc::clone(&sources))))
            .expect("unique metric names");
        Metrics {
            inner: Arc::new(Inner {
                registry,
                runs,
                created,
                dropped,
                detached,
                archived,
                last_success,
                duration,
                sources,
            }),
        }
    }

    /// Adds a database: `tables` are its configured tables' labels (`schema.table`), whose
    /// counters start at 0; `snapshot` and `leader` are read at each scrape.
    pub fn database(
        &self,
        name: &str,
        tables: &[String],
        snapshot: Arc<RwLock<Arc<Snapshot>>>,
        leader: watch::Receiver<bool>,
    ) -> DbMetrics {
        let i = &self.inner;
        for t in tables {
            for r in [RunResult::Success, RunResult::Failure] {
                i.runs.with_label_values(&[name, t.as_str(), r.as_str()]);
            }
            for c in [&i.created, &i.dropped, &i.detached, &i.archived] {
                c.with_label_values(&[name, t.as_str()]);
            }
        }
        i.duration.with_label_values(&[name]);
        let source = Arc::new(Source {
            name: name.to_string(),
            snapshot,
            leader,
            heartbeat_failing: AtomicBool::new(false),
            facts: Mutex::new(None),
        });
        i.sources
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::clone(&source));
        DbMetrics {
            metrics: self.clone(),
            source,
            tables: tables.to_vec(),
        }
    }

    /// The Prometheus text exposition of everything: the registry (counters, histogram, the
    /// small state gauges) encoded now, then every database's facts, each encoded once per
    /// snapshot, grouped by family under one header.
    pub fn render(&self) -> String {
        let sources = self
            .inner
            .sources
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let facts: Vec<Arc<[FamilyText]>> = sources.iter().map(|s| s.facts_text()).collect();
        let mut text = encode(&self.inner.registry.gather());
        let families = facts.iter().map(|f| f.len()).max().unwrap_or(0);
        for i in 0..families {
            let of_family = || facts.iter().filter_map(|f| f.get(i));
            let Some(first) = of_family().find(|f| !f.samples.is_empty()) else {
                continue;
            };
            text.push_str(&first.header);
            for f in of_family() {
                text.push_str(&f.samples);
            }
        }
        text
    }
}

/// One database's handle on the [`Metrics`]: what its tasks record.
pub struct DbMetrics {
    metrics: Metrics,
    source: Arc<Source>,
    tables: Vec<String>,
}

impl DbMetrics {
    pub fn name(&self) -> &str {
        &self.source.name
    }

    /// The verdict of the leader session's heartbeat (every second, bounded by its timeout):
    /// while it fails, `up` is 0 whatever the last refresh found, so that `up` follows
    /// `/readyz` within seconds instead of waiting for a refresh stuck on a dead network.
    pub fn heartbeat(&self, answered: bool) {
        self.source
            .heartbeat_failing
            .store(!answered, Ordering::Relaxed);
    }

    /// Counts one pass. A pass skipped because another instance held the maintenance lock did
    /// nothing and is not counted.
    pub fn record_pass(&self, report: &PassReport, finished: DateTime<Utc>) {
        if report.skipped.is_some() {
            return;
        }
        let i = &self.metrics.inner;
        let db = self.name();
        i.duration
            .with_label_values(&[db])
            .observe(report.duration_ms as f64 / 1000.0);
        for t in &report.tables {
            let table = t.table.to_string();
            let result = if t.succeeded() {
                RunResult::Success
            } else {
                RunResult::Failure
            };
            i.runs
                .with_label_values(&[db, table.as_str(), result.as_str()])
                .inc();
            if result == RunResult::Success {
                i.last_success
                    .with_label_values(&[db, table.as_str()])
                    .set(finished.timestamp() as f64);
            }
            for a in t.actions.iter().filter(|a| a.error.is_none()) {
                let counter = match a.action {
                    Action::Create { .. } | Action::CreateDefault { .. } => &i.created,
                    Action::Drop { .. } => &i.dropped,
                    Action::FinalizeDetach {
                        then_drop: true, ..
                    } => &i.dropped,
                    Action::Detach { .. } | Action::FinalizeDetach { .. } => &i.detached,
                    Action::Archive { .. } => &i.archived,
                    Action::AddIndex { .. } => continue,
                };
                counter.with_label_values(&[db, table.as_str()]).inc();
            }
        }
    }

    /// Counts a pass that failed as a whole (the connection was lost, the catalog could not be
    /// read): a failure for every configured table of the database.
    pub fn record_failed_pass(&self, seconds: f64) {
        let i = &self.metrics.inner;
        let db = self.name();
        i.duration.with_label_values(&[db]).observe(seconds);
        for t in &self.tables {
            i.runs
                .with_label_values(&[db, t.as_str(), RunResult::Failure.as_str()])
                .inc();
        }
    }

    /// Counts a scheduled pass that could not start (the primary does not answer): a failure
    /// for every configured table, no duration.
    pub fn record_missed_pass(&self) {
        let i = &self.metrics.inner;
        for t in &self.tables {
            i.runs
                .with_label_values(&[self.name(), t.as_str(), RunResult::Failure.as_str()])
                .inc();
        }
    }

    /// `maintenance_runs_total{database,table,result}` (for tests).
    pub fn runs(&self, table: &str, result: RunResult) -> u64 {
        self.metrics
            .inner
            .runs
            .with_label_values(&[self.name(), table, result.as_str()])
            .get()
    }
}

impl Source {
    /// The facts of the current snapshot as text, encoded at the first scrape that sees that
    /// snapshot and reused until the next refresh: with thousands of partitions, encoding is
    /// most of a scrape's cost, and the text cannot change between refreshes.
    fn facts_text(&self) -> Arc<[FamilyText]> {
        let snapshot = current(&self.snapshot);
        let mut cache = self.facts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((of, text)) = cache.as_ref() {
            if Arc::ptr_eq(of, &snapshot) {
                return Arc::clone(text);
            }
        }
        let text: Arc<[FamilyText]> = snapshot_families(&snapshot, &self.name)
            .iter()
            .map(|f| {
                let encoded = encode(std::slice::from_ref(f));
                let (header, samples): (Vec<&str>, Vec<&str>) =
                    encoded.lines().partition(|l| l.starts_with('#'));
                let join = |lines: Vec<&str>| lines.iter().map(|l| format!("{l}\n")).collect();
                FamilyText {
                    header: join(header),
                    samples: join(samples),
                }
            })
            .collect();
        *cache = Some((snapshot, Arc::clone(&text)));
        text
    }
}

/// The small gauges about this process's state (`build_info` once; `up`, `leader`, the
/// refresh's duration and time per database), read at scrape time as const metrics.
struct StateCollector {
    sources: Arc<RwLock<Vec<Arc<Source>>>>,
    descs: Vec<Desc>,
}

impl StateCollector {
    fn new(sources: Arc<RwLock<Vec<Arc<Source>>>>) -> StateCollector {
        let descs = METRICS
            .iter()
            .filter(|(name, _, _)| STATE_METRICS.contains(name))
            .map(|(name, _, labels)| {
                Desc::new(
                    format!("{PREFIX}{name}"),
                    help(name).to_string(),
                    labels_of(name, labels)
                        .iter()
                        .map(|l| l.to_string())
                        .collect(),
                    Default::default(),
                )
                .expect("valid metric description")
            })
            .collect();
        StateCollector { sources, descs }
    }
}

impl Collector for StateCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let sources = self.sources.read().unwrap_or_else(|p| p.into_inner());
        let states: Vec<DatabaseState> = sources
            .iter()
            .map(|s| DatabaseState {
                name: s.name.clone(),
                snapshot: current(&s.snapshot),
                leader: *s.leader.borrow(),
                heartbeat_failing: s.heartbeat_failing.load(Ordering::Relaxed),
            })
            .collect();
        state_families(&states)
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

/// What the state gauges of one database are made of.
pub struct DatabaseState {
    pub name: String,
    pub snapshot: Arc<Snapshot>,
    pub leader: bool,
    pub heartbeat_failing: bool,
}

/// `build_info`, then `up`, `leader` and the refresh gauges of each database (pure). `up` needs
/// both the last refresh and the last heartbeat to have reached the primary.
pub fn state_families(databases: &[DatabaseState]) -> Vec<MetricFamily> {
    let per_db = |f: &dyn Fn(&DatabaseState) -> Option<f64>| {
        databases
            .iter()
            .filter_map(|d| Some(sample(&[("database", &d.name)], f(d)?)))
            .collect::<Vec<_>>()
    };
    let flag = |b: bool| f64::from(u8::from(b));
    vec![
        gauge_family(
            "build_info",
            vec![sample(&[("version", env!("CARGO_PKG_VERSION"))], 1.0)],
        ),
        gauge_family(
            "up",
            per_db(&|d| Some(flag(d.snapshot.primary_up && !d.heartbeat_failing))),
        ),
        gauge_family("leader", per_db(&|d| Some(flag(d.leader)))),
        gauge_family(
            "refresh_duration_seconds",
            per_db(&|d| d.snapshot.duration_seconds),
        ),
        gauge_family(
            "refresh_success_timestamp_seconds",
            per_db(&|d| d.snapshot.tables_read_at.map(|at| at.timestamp() as f64)),
        ),
    ]
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

/// The snapshot's facts about tables, partitions and replicas of `database` as metric families
/// (pure), always the same families in the same order, empty ones included.
pub fn snapshot_families(s: &Snapshot, database: &str) -> Vec<MetricFamily> {
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
                .filter_map(|(t, h)| {
                    Some(sample(
                        &[("database", database), ("table", &t.table)],
                        f(t, h)?,
                    ))
                })
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
                t.partitions.iter().map(|p| {
                    sample(
                        &[
                            ("database", database),
                            ("table", &t.table),
                            ("partition", &p.name),
                        ],
                        f(p),
                    )
                })
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
            .map(|l| {
                sample(
                    &[("database", database), ("replica", &l.replica)],
                    f64::from(u8::from(l.up)),
                )
            })
            .collect(),
    );
    family(
        "replication_lag_seconds",
        lag.iter()
            .filter_map(|l| {
                Some(sample(
                    &[("database", database), ("replica", &l.replica)],
                    l.seconds?,
                ))
            })
            .collect(),
    );
    family(
        "replication_lag_bytes",
        lag.iter()
            .filter_map(|l| {
                Some(sample(
                    &[("database", database), ("replica", &l.replica)],
                    l.bytes? as f64,
                ))
            })
            .collect(),
    );
    out
}

/// One gauge sample; its labels sorted by name, as the registry's own are.
fn sample(labels: &[(&str, &str)], value: f64) -> proto::Metric {
    let mut labels = labels.to_vec();
    labels.sort_by_key(|(k, _)| *k);
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

    fn metrics(s: Snapshot) -> (DbMetrics, Arc<RwLock<Arc<Snapshot>>>) {
        let cell = Arc::new(RwLock::new(Arc::new(s)));
        let (_tx, rx) = watch::channel(true);
        (
            Metrics::new().database("app", &["public.t".into()], Arc::clone(&cell), rx),
            cell,
        )
    }

    impl DbMetrics {
        fn render(&self) -> String {
            self.metrics.render()
        }
    }

    /// Issue 14: a refresh stuck on a dead network leaves `primary_up` true for up to
    /// `PRIMARY_TIMEOUT`; the heartbeat's failure turns `up` to 0 at once.
    #[test]
    fn up_is_0_while_the_heartbeat_fails_whatever_the_last_refresh_found() {
        let (m, _cell) = metrics(snapshot(vec![part("t_a", 100)], Some(10)));
        assert!(m.render().contains("\npartkeeper_up{database=\"app\"} 1\n"));
        m.heartbeat(false);
        assert!(m.render().contains("\npartkeeper_up{database=\"app\"} 0\n"));
        m.heartbeat(true);
        assert!(m.render().contains("\npartkeeper_up{database=\"app\"} 1\n"));
    }

    #[test]
    fn a_dropped_partition_s_series_disappear_at_the_next_snapshot() {
        let (m, cell) = metrics(snapshot(vec![part("t_a", 100), part("t_b", 200)], Some(10)));
        let text = m.render();
        assert!(
            text.contains("partkeeper_table_size_bytes{database=\"app\",table=\"public.t\"} 300"),
            "{text}"
        );
        assert!(text.contains("partition=\"public.t_a\""), "{text}");
        *cell.write().unwrap() = Arc::new(snapshot(vec![part("t_b", 200)], Some(10)));
        let text = m.render();
        assert!(!text.contains("public.t_a"), "{text}");
        assert!(
            text.contains("partkeeper_partitions{database=\"app\",table=\"public.t\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn unbounded_coverage_is_infinity_and_an_unreachable_replica_has_no_lag_series() {
        let (m, _) = metrics(snapshot(vec![part("t_a", 1)], None));
        let text = m.render();
        assert!(
            text.contains("partkeeper_coverage_end_timestamp_seconds{database=\"app\",table=\"public.t\"} +Inf"),
            "{text}"
        );
        assert!(
            text.contains("partkeeper_replica_up{database=\"app\",replica=\"r1\"} 0"),
            "{text}"
        );
        assert!(
            !text.contains("partkeeper_replication_lag_seconds{"),
            "{text}"
        );
        assert!(
            text.contains("\npartkeeper_leader{database=\"app\"} 1\n"),
            "{text}"
        );
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
            text.contains(
                "partkeeper_partitions_archived_total{database=\"app\",table=\"public.t\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "partkeeper_partitions_detached_total{database=\"app\",table=\"public.t\"} 0"
            ),
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
        m.record_failed_pass(0.2);
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
            text.contains(
                "partkeeper_partitions_created_total{database=\"app\",table=\"public.t\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains("partkeeper_maintenance_duration_seconds_count{database=\"app\"} 2"),
            "{text}"
        );
        assert!(
            !text.contains("partkeeper_maintenance_last_success_timestamp_seconds{"),
            "no success yet: {text}"
        );
    }

    /// Issue 13: two databases under one header per family, each series labelled with its
    /// database, `build_info` once; one database's state never shows in the other's series.
    #[test]
    fn every_database_has_its_own_series_under_one_header_per_family() {
        let m = Metrics::new();
        let (_tx, rx) = watch::channel(true);
        let (_tx2, rx2) = watch::channel(false);
        let cell = |s| Arc::new(RwLock::new(Arc::new(s)));
        let a = m.database(
            "billing",
            &["public.t".into()],
            cell(snapshot(vec![part("t_a", 100)], Some(10))),
            rx,
        );
        let b = m.database(
            "orders",
            &["public.t".into()],
            cell(snapshot(vec![part("t_a", 7)], Some(10))),
            rx2,
        );
        b.heartbeat(false);
        a.record_failed_pass(0.1);
        let text = m.render();
        for (family, count) in [
            ("partkeeper_partition_size_bytes", 1),
            ("partkeeper_up", 1),
            ("partkeeper_build_info", 1),
        ] {
            assert_eq!(
                text.matches(&format!("# TYPE {family} ")).count(),
                count,
                "{text}"
            );
        }
        for want in [
            "partkeeper_up{database=\"billing\"} 1\n",
            "partkeeper_up{database=\"orders\"} 0\n",
            "partkeeper_leader{database=\"billing\"} 1\n",
            "partkeeper_leader{database=\"orders\"} 0\n",
            "partkeeper_table_size_bytes{database=\"billing\",table=\"public.t\"} 100\n",
            "partkeeper_table_size_bytes{database=\"orders\",table=\"public.t\"} 7\n",
            "partkeeper_replica_up{database=\"orders\",replica=\"r1\"} 0\n",
            "partkeeper_maintenance_runs_total{database=\"billing\",result=\"failure\",table=\"public.t\"} 1\n",
            "partkeeper_maintenance_runs_total{database=\"orders\",result=\"failure\",table=\"public.t\"} 0\n",
            "partkeeper_maintenance_duration_seconds_count{database=\"orders\"} 0\n",
        ] {
            assert!(text.contains(want), "{want} in {text}");
        }
        assert_eq!(b.runs("public.t", RunResult::Failure), 0);
        assert_eq!(a.runs("public.t", RunResult::Failure), 1);
    }
}

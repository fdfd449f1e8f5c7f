//! `partkeeper run` against real PostgreSQL: metrics (names, types, labels, values, promtool),
//! scheduled maintenance, replication lag from a streaming replica, a primary going away and
//! coming back, leader election between two daemons, and a clean stop on SIGTERM.
//!
//! Every daemon listens on `127.0.0.1:0`; the test reads the port it got from its log.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use partkeeper::execute::LEADER_LOCK;

use crate::common::http::RunningDaemon as Running;
use crate::common::writer::{Pace, Statement};
use crate::common::{eventually, shared, Cli, Cluster, TestDb, Writer, PATIENCE};

/// "Within a few seconds": readiness must notice a stopped primary this fast (heartbeat 1 s).
const NOTICE: Duration = Duration::from_secs(8);

/// A monthly table on `date` with 3 periods ahead and a default partition.
pub(crate) const TABLE_SQL: &str = "CREATE TABLE public.pricing_data (id bigint, date date NOT NULL, price numeric) PARTITION BY RANGE (date)";

fn config(url: &str, schedule: &str, extra: &str) -> String {
    format!(
        r#"
[database]
url = "{url}"
connect_timeout = "2s"

[server]
listen = "127.0.0.1:0"

[schedule]
maintenance = "{schedule}"
timezone = "UTC"
run_on_start = true
metrics_refresh = "1s"

[[tables]]
name = "public.pricing_data"
column = "date"
interval = "1 month"
premake = 3
retention = "24 months"
retention_mode = "drop"
default_partition = true
{extra}
"#
    )
}

/// Every two seconds, so that tests see scheduled ticks quickly.
pub(crate) const OFTEN: &str = "*/2 * * * * *";
/// Once a year: only the run-on-start pass happens during a test.
const RARELY: &str = "0 0 1 1 *";

impl Running {
    /// Waits until `/metrics` satisfies `f`; returns that scrape.
    pub(crate) async fn metrics_until(&self, what: &str, f: impl Fn(&Metrics) -> bool) -> Metrics {
        let last = RefCell::new(None);
        let (last_ref, f) = (&last, &f);
        eventually(PATIENCE, what, || async move {
            let Some((200, body)) = self.get("/metrics").await else {
                return false;
            };
            let m = Metrics::parse(&body);
            let ok = f(&m);
            *last_ref.borrow_mut() = Some(m);
            ok
        })
        .await;
        last.into_inner().expect("set by the last poll")
    }

    pub(crate) async fn status_code_until(
        &self,
        path: &str,
        code: u16,
        deadline: Duration,
    ) -> String {
        let body = RefCell::new(String::new());
        let body_ref = &body;
        eventually(
            deadline,
            &format!("{path} to answer {code}"),
            || async move {
                match self.get(path).await {
                    Some((c, b)) => {
                        *body_ref.borrow_mut() = b;
                        c == code
                    }
                    None => false,
                }
            },
        )
        .await;
        body.into_inner()
    }
}

/// A parsed scrape: samples by name, and the `# TYPE` of each family.
pub(crate) struct Metrics {
    pub(crate) text: String,
    pub(crate) types: HashMap<String, String>,
    pub(crate) samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Metrics {
    pub(crate) fn parse(text: &str) -> Metrics {
        let mut types = HashMap::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split_whitespace();
                if let (Some(n), Some(t)) = (parts.next(), parts.next()) {
                    types.insert(n.to_string(), t.to_string());
                }
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("name and value");
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("value in {line:?}")),
            };
            let (name, labels) = match series.split_once('{') {
                None => (series.to_string(), BTreeMap::new()),
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').expect("closing brace");
                    let labels = body
                        .split("\",")
                        .filter(|p| !p.is_empty())
                        .map(|p| {
                            let (k, v) = p.split_once("=\"").expect("label=\"value\"");
                            (k.to_string(), v.trim_end_matches('"').to_string())
                        })
                        .collect();
                    (name.to_string(), labels)
                }
            };
            samples.push((name, labels, value));
        }
        Metrics {
            text: text.to_string(),
            types,
            samples,
        }
    }

    /// The value of the series `name` whose labels include `labels`.
    pub(crate) fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| *v)
    }

    pub(crate) fn series(&self, name: &str) -> Vec<&BTreeMap<String, String>> {
        self.samples
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, l, _)| l)
            .collect()
    }

    fn table(&self, name: &str) -> Option<f64> {
        self.get(name, &[("table", "public.pricing_data")])
    }

    fn successes(&self) -> f64 {
        self.get(
            "partkeeper_maintenance_runs_total",
            &[("table", "public.pricing_data"), ("result", "success")],
        )
        .unwrap_or(0.0)
    }
}

async fn pricing_db(cluster: &Cluster) -> TestDb {
    let db = cluster.create_database().await;
    db.exec(TABLE_SQL).await;
    db
}

/// Name of this month's + `ahead` partition, e.g. `pricing_data_2027_01`.
async fn month_partition(db: &TestDb, ahead: i32) -> String {
    db.query_scalar(&format!(
        "SELECT 'pricing_data_' || to_char(date_trunc('month', now()) + interval '{ahead} months', 'YYYY_MM')"
    ))
    .await
}

async fn relation_exists(db: &TestDb, name: &str) -> bool {
    db.query_scalar(&format!("SELECT to_regclass('public.{name}') IS NOT NULL"))
        .await
}

pub(crate) fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (apt-get install prometheus; scripts/test.sh installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool output");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- metrics ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn every_spec_metric_is_exposed_with_its_type_and_labels_and_matches_the_catalog() {
    let db = pricing_db(shared()).await;
    // Rows far in the past have no partition and stay in the default one.
    let replica = Cluster::start_replica(shared());
    let toml = config(
        &db.url(),
        RARELY,
        &format!(
            "[[replicas]]\nname = \"r1\"\nurl = \"{}\"\n",
            replica.url(db.name())
        ),
    );
    let daemon = Running::start(&toml).await;
    let next = month_partition(&db, 1).await;
    let m = daemon
        .metrics_until("the first pass and a refresh after it", |m| {
            m.successes() >= 1.0
                && m.table("partkeeper_partitions") == Some(5.0)
                && m.get("partkeeper_replica_up", &[("replica", "r1")]) == Some(1.0)
        })
        .await;
    db.exec("INSERT INTO pricing_data VALUES (1, '2001-01-01', 1), (2, '2001-02-01', 2), (3, '2001-03-01', 3)")
        .await;

    // Every metric the Grafana dashboard and the alert rules use is one this daemon exposes.
    let missing: Vec<String> = crate::deploy::referenced_metric_names()
        .into_iter()
        .filter(|name| !m.types.contains_key(name))
        // Only integer-keyed tables export it (tests/integration/keys.rs shows it).
        .filter(|name| name != "partkeeper_coverage_end_value")
        .collect();
    assert!(
        missing.is_empty(),
        "used by deploy/grafana or deploy/prometheus but not exposed: {missing:?}\n{}",
        m.text
    );

    // Names, types and labels, exactly as the SPEC lists them.
    for (name, kind, labels) in partkeeper::metrics::METRICS {
        if *name == "coverage_end_value" {
            continue; // integer keys only, see above
        }
        let full = format!("partkeeper_{name}");
        let want = match kind {
            prometheus::proto::MetricType::COUNTER => "counter",
            prometheus::proto::MetricType::GAUGE => "gauge",
            prometheus::proto::MetricType::HISTOGRAM => "histogram",
            _ => unreachable!(),
        };
        assert_eq!(
            m.types.get(&full).map(String::as_str),
            Some(want),
            "{full}\n{}",
            m.text
        );
        let sample_name = if want == "histogram" {
            format!("{full}_count")
        } else {
            full.clone()
        };
        let series = m.series(&sample_name);
        assert!(
            !series.is_empty(),
            "{sample_name} has no series\n{}",
            m.text
        );
        // The SPEC's labels plus `database` (issue 13), named after the URL's database.
        let mut want: Vec<&str> = partkeeper::metrics::labels_of(name, labels);
        want.sort();
        for s in series {
            let keys: Vec<&str> = s.keys().map(String::as_str).collect();
            assert_eq!(keys, want, "labels of {sample_name}");
            if let Some(database) = s.get("database") {
                assert_eq!(database, db.name(), "{sample_name}");
            }
        }
    }
    for spec_name in [
        "build_info",
        "up",
        "leader",
        "partitions",
        "partition_size_bytes",
        "partition_rows_estimate",
        "table_size_bytes",
        "future_partitions",
        "coverage_end_timestamp_seconds",
        "next_partition_missing",
        "default_partition_rows",
        "maintenance_runs_total",
        "maintenance_last_success_timestamp_seconds",
        "maintenance_duration_seconds",
        "partitions_created_total",
        "partitions_dropped_total",
        "partitions_detached_total",
        "replication_lag_seconds",
        "replication_lag_bytes",
        "replica_up",
    ] {
        assert!(
            m.types.contains_key(&format!("partkeeper_{spec_name}")),
            "SPEC metric {spec_name} missing\n{}",
            m.text
        );
    }
    promtool_check(&m.text);

    // Values, against the catalog.
    let m = daemon
        .metrics_until("the default partition's rows to be counted", |m| {
            m.table("partkeeper_default_partition_rows") == Some(3.0)
        })
        .await;
    assert_eq!(m.get("partkeeper_up", &[]), Some(1.0));
    assert_eq!(m.get("partkeeper_leader", &[]), Some(1.0));
    assert_eq!(
        m.get(
            "partkeeper_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.table("partkeeper_partitions_created_total"),
        Some(5.0),
        "4 months and the default"
    );
    assert_eq!(m.table("partkeeper_future_partitions"), Some(3.0));
    assert_eq!(m.table("partkeeper_next_partition_missing"), Some(0.0));
    let coverage_end: f64 = db
        .query_scalar("SELECT extract(epoch FROM date_trunc('month', now() AT TIME ZONE 'UTC') + interval '4 months')::float8")
        .await;
    assert_eq!(
        m.table("partkeeper_coverage_end_timestamp_seconds"),
        Some(coverage_end)
    );
    assert!(m
        .get("partkeeper_replication_lag_bytes", &[("replica", "r1")])
        .is_some());
    assert!(m
        .get("partkeeper_replication_lag_seconds", &[("replica", "r1")])
        .is_some());
    assert!(
        m.table("partkeeper_maintenance_last_success_timestamp_seconds")
            .unwrap()
            > 0.0
    );

    // Sizes and estimates as the catalog has them (after ANALYZE, reltuples is exact here).
    db.exec("ANALYZE pricing_data").await;
    let catalog: Vec<(String, i64, f32)> = {
        let mut conn = db.connect().await;
        sqlx::query_as(
            "SELECT n.nspname || '.' || c.relname, pg_total_relation_size(c.oid), c.reltuples
               FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE i.inhparent = 'public.pricing_data'::regclass",
        )
        .fetch_all(&mut conn)
        .await
        .expect("read the catalog")
    };
    assert_eq!(catalog.len(), 5);
    let total: i64 = catalog.iter().map(|(_, s, _)| s).sum();
    let catalog = &catalog;
    let m = daemon
        .metrics_until("sizes and estimates to match the catalog", |m| {
            m.table("partkeeper_table_size_bytes") == Some(total as f64)
                && catalog.iter().all(|(p, size, rows)| {
                    let l = [("table", "public.pricing_data"), ("partition", p.as_str())];
                    m.get("partkeeper_partition_size_bytes", &l) == Some(*size as f64)
                        && m.get("partkeeper_partition_rows_estimate", &l)
                            == Some(f64::from(rows.max(0.0)))
                })
        })
        .await;
    assert_eq!(
        m.get(
            "partkeeper_partition_rows_estimate",
            &[("partition", "public.pricing_data_default")]
        ),
        Some(3.0)
    );

    // A hand-dropped next partition shows at the next refresh (this schedule does not fire).
    db.exec(&format!("DROP TABLE {next}")).await;
    let m = daemon
        .metrics_until("next_partition_missing to turn 1", |m| {
            m.table("partkeeper_next_partition_missing") == Some(1.0)
        })
        .await;
    assert_eq!(m.table("partkeeper_partitions"), Some(4.0));
    assert_eq!(m.table("partkeeper_future_partitions"), Some(2.0));
    let next_start: f64 = db
        .query_scalar("SELECT extract(epoch FROM date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month')::float8")
        .await;
    assert_eq!(
        m.table("partkeeper_coverage_end_timestamp_seconds"),
        Some(next_start)
    );
    assert!(
        !m.text.contains(&next),
        "the dropped partition's series must disappear"
    );
    drop(replica);
}

#[tokio::test]
async fn a_partition_dropped_by_hand_is_back_after_the_next_scheduled_tick() {
    let db = pricing_db(shared()).await;
    let daemon = Running::start(&config(&db.url(), OFTEN, "")).await;
    let next = month_partition(&db, 1).await;
    let before = daemon
        .metrics_until("a successful pass", |m| m.successes() >= 1.0)
        .await;
    assert!(relation_exists(&db, &next).await);

    db.exec(&format!("DROP TABLE {next}")).await;
    let (db_ref, name) = (&db, next.as_str());
    eventually(
        PATIENCE,
        "the dropped partition to be made again",
        || async move { relation_exists(db_ref, name).await },
    )
    .await;
    let after = daemon
        .metrics_until("the counters to show the repair", |m| {
            m.table("partkeeper_partitions_created_total")
                .unwrap_or(0.0)
                > before
                    .table("partkeeper_partitions_created_total")
                    .unwrap_or(0.0)
        })
        .await;
    assert!(after.successes() > before.successes());
    assert_eq!(
        after.get(
            "partkeeper_maintenance_runs_total",
            &[("table", "public.pricing_data"), ("result", "failure")]
        ),
        Some(0.0)
    );
    let log = daemon.daemon.stderr();
    assert!(
        log.contains(&format!("partition=public.{next}")) && log.contains("action=\"create\""),
        "one log line per action with table and partition:\n{log}"
    );
}

#[tokio::test]
async fn replica_lag_rises_under_write_load_returns_to_zero_and_a_stopped_replica_is_down() {
    let primary = Cluster::start();
    let db = pricing_db(&primary).await;
    db.exec("CREATE TABLE load (x int)").await;
    let replica = Cluster::start_replica(&primary);
    // Name the replica as the primary knows it, so it shows as one series.
    let app: String = db
        .query_scalar("SELECT application_name::text FROM pg_stat_replication LIMIT 1")
        .await;
    let extra = format!(
        "[[replicas]]\nname = \"{app}\"\nurl = \"{}\"\n",
        replica.url(db.name())
    );
    let toml = config(&db.url(), RARELY, &extra);
    let daemon = Running::start(&toml).await;
    let lag = |m: &Metrics, what: &str| m.get(what, &[("replica", app.as_str())]);
    daemon
        .metrics_until("the replica to be up and caught up", |m| {
            lag(m, "partkeeper_replica_up") == Some(1.0)
                && lag(m, "partkeeper_replication_lag_bytes") == Some(0.0)
                && lag(m, "partkeeper_replication_lag_seconds") == Some(0.0)
        })
        .await;

    // Replay paused while writes go on: a replica that falls behind, deterministically. One
    // commit replayed first, so that the replica knows the time of its last replayed transaction.
    db.exec("INSERT INTO load VALUES (0)").await;
    replica.wait_for_replay().await;
    replica
        .exec(db.name(), "SELECT pg_wal_replay_pause()")
        .await;
    // Its errors do not matter: it only makes WAL for the replica to fall behind on.
    let writes = Writer::start_each(
        db.connect_options(),
        vec![Statement::fixed(
            "INSERT INTO load SELECT generate_series(1, 500)",
        )],
        Pace::pause(Duration::from_millis(50)),
    )
    .await;
    let m = daemon
        .metrics_until("lag to show under write load", |m| {
            lag(m, "partkeeper_replication_lag_bytes").unwrap_or(0.0) > 0.0
                && lag(m, "partkeeper_replication_lag_seconds").unwrap_or(0.0) > 0.0
        })
        .await;
    assert_eq!(
        m.series("partkeeper_replica_up").len(),
        1,
        "one series per replica"
    );
    writes.stop().await;
    replica
        .exec(db.name(), "SELECT pg_wal_replay_resume()")
        .await;
    daemon
        .metrics_until("lag to return to 0 when writes stop", |m| {
            lag(m, "partkeeper_replication_lag_bytes") == Some(0.0)
                && lag(m, "partkeeper_replication_lag_seconds") == Some(0.0)
        })
        .await;

    let cli = Cli::new().config(&toml);
    let status = cli.run_async(["status"]).await;
    status.assert_success();
    assert!(
        status
            .stdout
            .lines()
            .any(|l| l.contains(&app) && l.contains("up, lag 0.0 s, 0 B not replayed")),
        "{status}"
    );
    assert!(
        status
            .stdout
            .contains("standbys (as the primary sees them)"),
        "{status}"
    );
    let json = cli.run_async(["status", "--format", "json"]).await;
    json.assert_success();
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON on stdout");
    let seen = &v["replicas"][0];
    assert_eq!(seen["up"], true, "{json}");
    assert_eq!(seen["lag_seconds"], 0.0, "{json}");
    assert_eq!(seen["lag_bytes"], 0, "{json}");

    replica.stop();
    daemon
        .metrics_until("the stopped replica to be down", |m| {
            lag(m, "partkeeper_replica_up") == Some(0.0)
        })
        .await;
    let status = cli.run_async(["status"]).await;
    status.assert_success();
    assert!(
        status
            .stdout
            .lines()
            .any(|l| l.contains(&app) && l.contains("DOWN (connection failed")),
        "{status}"
    );
    let mut d = daemon;
    assert!(d.daemon.is_running());
    d.status_code_until("/healthz", 200, NOTICE).await;
    d.status_code_until("/readyz", 200, NOTICE).await;
    let (_, status) = d.get("/status").await.expect("/status answers");
    assert!(status.contains("\"up\":false"), "{status}");
    assert!(
        !status.contains("postgres://"),
        "no URL in /status: {status}"
    );
}

#[tokio::test]
async fn a_primary_down_at_start_or_later_makes_readyz_503_and_it_recovers_without_a_restart() {
    let primary = Cluster::start();
    let db = pricing_db(&primary).await;
    primary.stop();

    let mut daemon = Running::start(&config(&db.url(), OFTEN, "")).await;
    let reason = daemon.status_code_until("/readyz", 503, NOTICE).await;
    assert!(reason.contains("does not answer"), "{reason}");
    assert!(!reason.contains("postgres://"), "{reason}");
    daemon.status_code_until("/healthz", 200, NOTICE).await;

    primary.start_again();
    daemon.status_code_until("/readyz", 200, PATIENCE).await;
    let before = daemon
        .metrics_until("maintenance once the primary is back", |m| {
            m.successes() >= 1.0 && m.get("partkeeper_up", &[]) == Some(1.0)
        })
        .await;

    primary.stop();
    let started = Instant::now();
    daemon.status_code_until("/readyz", 503, NOTICE).await;
    let noticed = started.elapsed();
    daemon.status_code_until("/healthz", 200, NOTICE).await;
    daemon
        .metrics_until("up to turn 0", |m| m.get("partkeeper_up", &[]) == Some(0.0))
        .await;
    assert!(daemon.daemon.is_running());

    primary.start_again();
    daemon.status_code_until("/readyz", 200, PATIENCE).await;
    daemon
        .metrics_until("maintenance to succeed again", |m| {
            m.successes() > before.successes() && m.get("partkeeper_up", &[]) == Some(1.0)
        })
        .await;
    assert!(daemon.daemon.is_running());
    assert!(noticed < NOTICE, "{noticed:?}");
}

#[tokio::test]
async fn of_two_daemons_exactly_one_leads_and_the_other_takes_over_when_it_is_killed() {
    let db = pricing_db(shared()).await;
    let toml = config(&db.url(), OFTEN, "");
    let a = Running::start(&toml).await;
    let b = Running::start(&toml).await;
    let leader_of = |m: &Metrics| m.get("partkeeper_leader", &[]);
    let seen = RefCell::new(None);
    {
        let (a, b, seen) = (&a, &b, &seen);
        eventually(
            PATIENCE,
            "both daemons to report, one as leader",
            || async move {
                let (Some((200, ta)), Some((200, tb))) =
                    (a.get("/metrics").await, b.get("/metrics").await)
                else {
                    return false;
                };
                let (ma, mb) = (Metrics::parse(&ta), Metrics::parse(&tb));
                let up = |m: &Metrics| m.get("partkeeper_up", &[]) == Some(1.0);
                let leaders = leader_of(&ma).unwrap_or(0.0) + leader_of(&mb).unwrap_or(0.0);
                let ok = up(&ma) && up(&mb) && leaders == 1.0;
                *seen.borrow_mut() = Some((ma, mb));
                ok
            },
        )
        .await;
    }
    let (ma, mb) = seen.into_inner().expect("set by the last poll");
    let (leader, follower, follower_before) = if leader_of(&ma) == Some(1.0) {
        (a, b, mb)
    } else {
        (b, a, ma)
    };
    assert_eq!(
        follower_before.successes(),
        0.0,
        "only the leader maintains"
    );

    leader.daemon.kill();
    follower
        .metrics_until("the follower to take over and maintain", |m| {
            leader_of(m) == Some(1.0) && m.successes() >= 1.0
        })
        .await;
    let next = month_partition(&db, 1).await;
    db.exec(&format!("DROP TABLE {next}")).await;
    let (db_ref, name) = (&db, next.as_str());
    eventually(
        PATIENCE,
        "the new leader to repair the table",
        || async move { relation_exists(db_ref, name).await },
    )
    .await;
}

#[tokio::test]
async fn sigterm_exits_0_within_10_seconds_and_releases_the_leader_lock() {
    let db = pricing_db(shared()).await;
    let daemon = Running::start(&config(&db.url(), OFTEN, "")).await;
    daemon
        .metrics_until("leadership and a pass", |m| {
            m.get("partkeeper_leader", &[]) == Some(1.0) && m.successes() >= 1.0
        })
        .await;
    let held = format!(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
            AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND ((classid::int8 << 32) | objid::int8) = {LEADER_LOCK}"
    );
    assert_eq!(db.query_scalar::<i64>(&held).await, 1);

    let started = Instant::now();
    daemon.daemon.terminate();
    let out = daemon.daemon.wait(Duration::from_secs(10)).await;
    out.assert_success();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(db.query_scalar::<i64>(&held).await, 0, "{out}");
    assert!(out.stderr.contains("released the leader lock"), "{out}");
}

#[tokio::test]
async fn sigterm_during_a_pass_blocked_on_a_lock_still_exits_0_within_10_seconds() {
    let db = pricing_db(shared()).await;
    // A lock_timeout longer than the shutdown's grace period, so the pass must be cancelled.
    let toml = config(&db.url(), OFTEN, "").replace(
        "connect_timeout = \"2s\"",
        "connect_timeout = \"2s\"\nlock_timeout = \"30s\"",
    );
    let daemon = Running::start(&toml).await;
    daemon
        .metrics_until("a first pass", |m| m.successes() >= 1.0)
        .await;
    let next = month_partition(&db, 1).await;
    db.exec(&format!("DROP TABLE {next}")).await;
    // An application transaction holding the table: the repair waits behind it.
    let mut app = db
        .hold("LOCK TABLE pricing_data IN ACCESS EXCLUSIVE MODE")
        .await;
    db.until_partkeeper_waits_for_a_lock().await;

    let started = Instant::now();
    daemon.daemon.terminate();
    let out = daemon.daemon.wait(Duration::from_secs(10)).await;
    let took = started.elapsed();
    out.assert_success();
    assert!(took < Duration::from_secs(10), "{took:?}");
    let db_ref = &db;
    eventually(
        NOTICE,
        "the daemon's sessions to end with it",
        || async move {
            db_ref
                .try_query_scalar::<i64>(
                    "SELECT count(*) FROM pg_stat_activity
                      WHERE (application_name = 'partkeeper' OR application_name LIKE 'partkeeper %')
                        AND datname = current_database()",
                )
                .await
                .is_ok_and(|n| n == 0)
        },
    )
    .await;
    assert!(out.stderr.contains("cancelling it"), "{out}");
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut app)
        .await
        .expect("rollback");
    assert!(
        !relation_exists(&db, &next).await,
        "the half-done repair was rolled back"
    );
}

#[tokio::test]
async fn a_primary_restart_mid_pass_fails_that_pass_cleanly_and_the_next_one_succeeds() {
    let primary = Cluster::start();
    let db = pricing_db(&primary).await;
    // Long enough that the pass is still waiting for its lock when the primary restarts.
    let toml = config(&db.url(), OFTEN, "").replace(
        "connect_timeout = \"2s\"",
        "connect_timeout = \"2s\"\nlock_timeout = \"30s\"",
    );
    let mut daemon = Running::start(&toml).await;
    let before = daemon
        .metrics_until("a first pass", |m| m.successes() >= 1.0)
        .await;
    let next = month_partition(&db, 1).await;
    db.exec(&format!("DROP TABLE {next}")).await;
    let app = db
        .hold("LOCK TABLE pricing_data IN ACCESS EXCLUSIVE MODE")
        .await;
    db.until_partkeeper_waits_for_a_lock().await;

    primary.restart();
    drop(app);
    let failure = |m: &Metrics| {
        m.get(
            "partkeeper_maintenance_runs_total",
            &[("table", "public.pricing_data"), ("result", "failure")],
        )
        .unwrap_or(0.0)
    };
    daemon
        .metrics_until(
            "the interrupted pass to count as failed, then a pass to succeed",
            |m| failure(m) >= 1.0 && m.successes() > before.successes(),
        )
        .await;
    let (db_ref, name) = (&db, next.as_str());
    eventually(
        PATIENCE,
        "the next pass to repair the table",
        || async move { relation_exists(db_ref, name).await },
    )
    .await;
    assert!(daemon.daemon.is_running());
    daemon.status_code_until("/readyz", 200, PATIENCE).await;
    let log = daemon.daemon.stderr();
    assert!(log.contains("maintenance pass failed"), "{log}");
}

#[tokio::test]
async fn a_table_locked_by_the_application_keeps_its_last_facts_and_up_stays_1() {
    let db = pricing_db(shared()).await;
    let daemon = Running::start(&config(&db.url(), RARELY, "")).await;
    daemon
        .metrics_until("the table's facts", |m| {
            m.table("partkeeper_partitions") == Some(5.0)
        })
        .await;
    let mut app = db.connect().await;
    sqlx::raw_sql("BEGIN; LOCK TABLE pricing_data IN ACCESS EXCLUSIVE MODE")
        .execute(&mut app)
        .await
        .expect("lock the table");
    let status = RefCell::new(String::new());
    let (status_ref, d) = (&status, &daemon);
    eventually(
        PATIENCE,
        "/status to say the tables could not be read",
        || async move {
            match d.get("/status").await {
                Some((200, body)) => {
                    let blocked = body.contains(
                        "\"tables_error\":\"a lock was not granted in time [SQLSTATE 55P03]\"",
                    );
                    *status_ref.borrow_mut() = body;
                    blocked
                }
                _ => false,
            }
        },
    )
    .await;
    let m = daemon.metrics_until("a scrape", |_| true).await;
    assert_eq!(
        m.get("partkeeper_up", &[]),
        Some(1.0),
        "{}",
        status.borrow()
    );
    assert_eq!(m.table("partkeeper_partitions"), Some(5.0));
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut app)
        .await
        .expect("rollback");
    daemon
        .metrics_until("fresh facts once the lock is gone", |m| {
            m.get("partkeeper_refresh_success_timestamp_seconds", &[])
                .unwrap_or(0.0)
                >= chrono::Utc::now().timestamp() as f64 - 2.0
        })
        .await;
}

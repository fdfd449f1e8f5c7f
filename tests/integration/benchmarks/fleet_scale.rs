//! Benchmark of fleet mode (issue 13), ignored by default: one server holding N databases of 20
//! monthly tables × 44 partitions (+ default) each, all copied from one template database.
//!
//! ```text
//! cargo test --release --test integration benchmarks::fleet_scale -- --ignored --nocapture --test-threads 1
//! FLEET_SIZES=1,10 cargo test --release ...   # other sizes (default 1,10,25,50)
//! ```
//!
//! * `fleet_bench_maintain_*`: a whole-process no-op `partkeeper maintain` over all N databases
//!   (median of [`CLI_RUNS`], the sizes taking turns).
//! * `fleet_bench_daemon_*`: one fresh `partkeeper run` per N: how long from the process start
//!   until `/metrics` (polled every 250 ms) shows every database refreshed and through its
//!   start-up pass; each database's refresh and no-op pass durations (its own metrics); the
//!   daemon's server connections (`pg_stat_activity`, sampled through a whole refresh cycle); its
//!   RSS once every database has refreshed twice; one scrape's cost.
//!
//! Printed per N and per added database, so that linear growth (or worse) shows. Only structural
//! facts are asserted: every database reached, and no more connections per database than the
//! README's "Connections" paragraph promises. PostgreSQL shares the machine with the daemon.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sqlx::Connection;

use super::maintain::{table_with_partitions_sql, PAST, PREMAKE};
use crate::common::http::{http_ok_body, listen_port};
use crate::common::{pg_major, Cli, Cluster, Daemon};

const TABLES: usize = 20;
const DEFAULT_SIZES: &[usize] = &[1, 10, 25, 50];
/// Range partitions per table (40 past months, the current one, 3 ahead) plus the default.
const PARTITIONS_PER_TABLE: i64 = PAST as i64 + 1 + PREMAKE as i64 + 1;
/// A daemon's connections to one primary at most: heartbeat, refresh, pass (README "Connections").
const CONNECTIONS_PER_DATABASE: i64 = 3;
/// Server connections beyond the daemon's: the harness's own and slack.
const CONNECTION_SLACK: usize = 30;
const CLI_RUNS: usize = 5;
/// `metrics_refresh`: long enough that a refresh of every database fits in one cycle on a
/// loaded 2-core machine.
const REFRESH: &str = "20s";
const REFRESH_EVERY: Duration = Duration::from_secs(20);
/// Everything a daemon is waited for (first refreshes, a second cycle, shutdown).
const DAEMON_DEADLINE: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_millis(250);
/// How often the benchmark scrapes, once a cycle is over, until every database has refreshed.
const SCRAPE_EVERY: Duration = Duration::from_secs(2);
const TEMPLATE: &str = "fleet_template";

/// `FLEET_SIZES=1,10,25,50` (the default).
fn sizes() -> Vec<usize> {
    match std::env::var("FLEET_SIZES") {
        Ok(s) => s
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("FLEET_SIZES={s}: a list like 1,10,25,50"))
            })
            .collect(),
        Err(_) => DEFAULT_SIZES.to_vec(),
    }
}

/// A throwaway cluster with `fleet_001` … `fleet_<max>` made from one template.
struct Fleet {
    cluster: Cluster,
    names: Vec<String>,
}

impl Fleet {
    async fn create(max: usize) -> Fleet {
        let started = Instant::now();
        let connections = max * CONNECTIONS_PER_DATABASE as usize + CONNECTION_SLACK;
        let cluster = Cluster::builder()
            .setting("max_connections", &connections.max(100).to_string())
            .start();
        cluster
            .exec("postgres", &format!("CREATE DATABASE {TEMPLATE}"))
            .await;
        let mut conn = cluster.connect(TEMPLATE).await;
        for i in 1..=TABLES {
            sqlx::raw_sql(&table_with_partitions_sql(i))
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("create table t{i} in the template: {e}"));
        }
        // A template may have no session while it is copied.
        conn.close().await.expect("close the template session");
        let template = started.elapsed();
        // FILE_COPY copies files instead of WAL-logging every block (PG 15+ default).
        let strategy = if pg_major() >= 15 {
            " STRATEGY = FILE_COPY"
        } else {
            ""
        };
        let names: Vec<String> = (1..=max).map(|k| format!("fleet_{k:03}")).collect();
        for name in &names {
            cluster
                .exec(
                    "postgres",
                    &format!("CREATE DATABASE {name} TEMPLATE {TEMPLATE}{strategy}"),
                )
                .await;
        }
        let partitions: i64 = cluster
            .query_scalar(
                &names[max - 1],
                "SELECT count(*) FROM pg_class WHERE relispartition AND relkind = 'r'",
            )
            .await;
        assert_eq!(partitions, TABLES as i64 * PARTITIONS_PER_TABLE);
        println!(
            "\n=== set-up: {max} databases × {TABLES} tables × {PARTITIONS_PER_TABLE} partitions \
             (default included): template {:.1?}, copies {:.1?} ({:.0} ms each), max_connections {}",
            template,
            started.elapsed() - template,
            (started.elapsed() - template).as_secs_f64() * 1000.0 / max as f64,
            connections.max(100)
        );
        Fleet { cluster, names }
    }

    /// A `[[databases]]` configuration of the first `n` databases.
    fn config(&self, n: usize) -> String {
        let mut toml = format!(
            r#"[database]
statement_timeout = "30min"
[server]
listen = "127.0.0.1:0"
[schedule]
maintenance = "0 3 * * *"
run_on_start = true
metrics_refresh = "{REFRESH}"
"#
        );
        for name in &self.names[..n] {
            toml.push_str(&format!(
                "\n[[databases]]\nname = \"{name}\"\nurl = \"{}\"\n",
                self.cluster.url(name)
            ));
            for i in 1..=TABLES {
                toml.push_str(&format!(
                    "[[databases.tables]]\nname = \"public.t{i}\"\ncolumn = \"date\"\n\
                     interval = \"1 month\"\npremake = {PREMAKE}\ndefault_partition = true\n"
                ));
            }
        }
        toml
    }

    /// The daemon's server connections per database right now (the harness's are named apart).
    async fn daemon_connections(&self) -> BTreeMap<String, i64> {
        let mut conn = self.cluster.connect("postgres").await;
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT datname::text, count(*) FROM pg_stat_activity
              WHERE backend_type = 'client backend'
                AND application_name LIKE 'partkeeper%'
                AND application_name <> 'partkeeper-harness'
              GROUP BY datname",
        )
        .fetch_all(&mut conn)
        .await
        .expect("read pg_stat_activity");
        let _ = conn.close().await;
        rows.into_iter().collect()
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::max)
}

/// One sample per `(label set, value)` of metric `name` (exactly that name, no suffix).
fn samples(body: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => r.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            let labels = labels
                .split("\",")
                .filter_map(|kv| kv.split_once("=\""))
                .map(|(k, v)| (k.to_string(), v.trim_end_matches('"').to_string()))
                .collect();
            Some((labels, value.trim().parse().ok()?))
        })
        .collect()
}

/// Values of `name` by its `database` label. A daemon from before fleet mode exposes no label:
/// with one database configured, the value is that database's.
fn by_database(body: &str, name: &str, only: &str) -> BTreeMap<String, f64> {
    samples(body, name)
        .into_iter()
        .map(|(labels, v)| {
            let db = labels.get("database").cloned();
            (db.unwrap_or_else(|| only.to_string()), v)
        })
        .collect()
}

/// Tables of each database whose maintenance succeeded at least once.
fn tables_maintained(body: &str, only: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (labels, v) in samples(body, "partkeeper_maintenance_runs_total") {
        if labels.get("result").map(String::as_str) == Some("success") && v >= 1.0 {
            let db = labels.get("database").cloned();
            *out.entry(db.unwrap_or_else(|| only.to_string()))
                .or_default() += 1;
        }
    }
    out
}

fn proc_status_kib(pid: i32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// utime + stime of `pid`, in seconds.
fn proc_cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the ")" that closes the command name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> f64 {
        fields
            .get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let ticks = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0);
    (field(14) + field(15)) / ticks
}

/// Prints one figure per N and, below, what each added database cost between two sizes.
fn print_growth(what: &str, unit: &str, rows: &[(usize, f64)]) {
    let mut line = format!("{what:<34}");
    for (n, v) in rows {
        line.push_str(&format!(" N={n}: {v:.2} {unit};"));
    }
    println!("{line}");
    let mut line = format!("{:<34}", "  per added database");
    for pair in rows.windows(2) {
        let ((a, va), (b, vb)) = (pair[0], pair[1]);
        line.push_str(&format!(
            " {a}→{b}: {:+.3} {unit};",
            (vb - va) / (b - a) as f64
        ));
    }
    if rows.len() > 1 {
        println!("{line}");
    }
}

#[tokio::test]
#[ignore = "benchmark: cargo test --release --test integration benchmarks::fleet_scale -- --ignored --nocapture --test-threads 1"]
async fn fleet_bench_maintain_over_many_databases() {
    let sizes = sizes();
    let fleet = Fleet::create(*sizes.iter().max().expect("a size")).await;
    let clis: Vec<Cli> = sizes
        .iter()
        .map(|&n| {
            Cli::new()
                .config(&fleet.config(n))
                .timeout(Duration::from_secs(600))
        })
        .collect();
    // Round after round over every size, so that a burst of load on the shared machine falls on
    // all sizes alike instead of on one.
    let mut times = vec![Vec::new(); sizes.len()];
    for _ in 0..CLI_RUNS {
        for (k, (&n, cli)) in sizes.iter().zip(&clis).enumerate() {
            let started = Instant::now();
            let out = cli.run_async(["-q", "maintain"]).await;
            times[k].push(started.elapsed().as_secs_f64());
            out.assert_success();
            // Every database reached, and nothing to do in any of its tables.
            assert_eq!(out.stdout.matches("== database ").count(), n, "{out}");
            assert_eq!(
                out.stdout.matches("nothing to do").count(),
                n * TABLES,
                "not a no-op: {out}"
            );
        }
    }
    println!(
        "\n=== no-op `partkeeper maintain` over N databases (whole process, median of {CLI_RUNS}, \
         sizes interleaved)"
    );
    println!(
        "{:>4} {:>12} {:>16} {:>16}",
        "N", "wall", "per database", "per partition"
    );
    let mut rows = Vec::new();
    for (&n, t) in sizes.iter().zip(times) {
        let wall = median(t);
        let partitions = (n * TABLES) as f64 * PARTITIONS_PER_TABLE as f64;
        println!(
            "{n:>4} {:>9.1} ms {:>13.1} ms {:>13.1} µs",
            wall * 1000.0,
            wall * 1000.0 / n as f64,
            wall * 1e6 / partitions
        );
        rows.push((n, wall * 1000.0));
    }
    print_growth("maintain wall time", "ms", &rows);
}

/// What one daemon showed for one fleet size.
struct DaemonRun {
    n: usize,
    all_refreshed_s: f64,
    all_maintained_s: f64,
    refresh_s: Vec<f64>,
    pass_ms: Vec<f64>,
    rss_mib: f64,
    peak_rss_mib: f64,
    cpu_percent: f64,
    connections_steady: i64,
    connections_peak: i64,
    per_database_peak: i64,
    scrape_ms: f64,
    series: usize,
}

/// Starts `partkeeper run`; a daemon that exits at once (a configuration it refuses) fails the
/// benchmark with its log.
async fn start_daemon(toml: &str) -> (Daemon, u16) {
    let mut daemon = Cli::new().config(toml).spawn(["run"]);
    let started = Instant::now();
    loop {
        if let Some(port) = listen_port(&daemon.stderr()) {
            return (daemon, port);
        }
        assert!(
            daemon.is_running(),
            "the daemon exited at start:\n{}",
            daemon.stderr()
        );
        assert!(
            started.elapsed() < DAEMON_DEADLINE,
            "the daemon logged no address:\n{}",
            daemon.stderr()
        );
        tokio::time::sleep(POLL).await;
    }
}

async fn measure_daemon(fleet: &Fleet, n: usize) -> DaemonRun {
    let names = &fleet.names[..n];
    let only = names[0].as_str();
    let spawned = Instant::now();
    let (mut daemon, port) = start_daemon(&fleet.config(n)).await;
    let pid = daemon.pid().as_raw();
    let started = Instant::now();
    let scrape = || http_ok_body(port, "/metrics", Duration::from_secs(30));
    let mut connections_peak = 0;
    let mut per_database_peak = 0;
    let mut sample_connections = |c: &BTreeMap<String, i64>| {
        connections_peak = connections_peak.max(c.values().sum::<i64>());
        per_database_peak = per_database_peak.max(c.values().copied().max().unwrap_or(0));
    };

    // First: every database refreshed and through its start-up pass, every table maintained.
    // The refresh timestamp is the refresh's start in whole seconds: the poll times it instead.
    let mut all_refreshed_s = None;
    let (first, all_maintained_s) = loop {
        sample_connections(&fleet.daemon_connections().await);
        if let Some(body) = scrape().await {
            let refreshed =
                by_database(&body, "partkeeper_refresh_success_timestamp_seconds", only);
            let passes = by_database(&body, "partkeeper_maintenance_duration_seconds_count", only);
            let tables = tables_maintained(&body, only);
            if all_refreshed_s.is_none() && names.iter().all(|d| refreshed.contains_key(d)) {
                all_refreshed_s = Some(spawned.elapsed().as_secs_f64());
            }
            let done = names.iter().all(|d| {
                refreshed.contains_key(d)
                    && passes.get(d).is_some_and(|&c| c >= 1.0)
                    && tables.get(d) == Some(&TABLES)
            });
            if done {
                break (body, spawned.elapsed().as_secs_f64());
            }
        }
        assert!(
            daemon.is_running(),
            "the daemon exited:\n{}",
            daemon.stderr()
        );
        assert!(
            started.elapsed() < DAEMON_DEADLINE,
            "not every database refreshed and maintained within {DAEMON_DEADLINE:?}"
        );
        tokio::time::sleep(POLL).await;
    };
    let first_refresh = by_database(&first, "partkeeper_refresh_success_timestamp_seconds", only);
    let all_refreshed_s = all_refreshed_s.expect("seen when the loop ended");
    let ups = by_database(&first, "partkeeper_up", only);
    for d in names {
        assert_eq!(
            ups.get(d.as_str()),
            Some(&1.0),
            "partkeeper_up of database {d}"
        );
    }
    let pass_sum = by_database(&first, "partkeeper_maintenance_duration_seconds_sum", only);
    let pass_count = by_database(
        &first,
        "partkeeper_maintenance_duration_seconds_count",
        only,
    );
    let pass_ms: Vec<f64> = names
        .iter()
        .map(|d| pass_sum[d.as_str()] / pass_count[d.as_str()] * 1000.0)
        .collect();

    // Then a whole second refresh cycle: connections sampled throughout, RSS at its end.
    // The daemon's CPU time is read before each scrape, and scrapes wait for the cycle's end:
    // what is measured is the refresh cycle, not the benchmark's scrapes of it.
    let cpu_before = proc_cpu_seconds(pid);
    let cycle_started = Instant::now();
    let mut scraped = Instant::now();
    let (second, cpu_percent) = loop {
        sample_connections(&fleet.daemon_connections().await);
        if cycle_started.elapsed() >= REFRESH_EVERY && scraped.elapsed() >= SCRAPE_EVERY {
            let cpu = (proc_cpu_seconds(pid) - cpu_before) / cycle_started.elapsed().as_secs_f64();
            scraped = Instant::now();
            if let Some(body) = scrape().await {
                let now = by_database(&body, "partkeeper_refresh_success_timestamp_seconds", only);
                if names.iter().all(|d| now.get(d) > first_refresh.get(d)) {
                    break (body, cpu * 100.0);
                }
            }
        }
        assert!(
            daemon.is_running(),
            "the daemon exited:\n{}",
            daemon.stderr()
        );
        assert!(
            started.elapsed() < DAEMON_DEADLINE,
            "not every database refreshed a second time within {DAEMON_DEADLINE:?}"
        );
        tokio::time::sleep(POLL).await;
    };
    let rss_mib = proc_status_kib(pid, "VmRSS:") as f64 / 1024.0;
    let steady = fleet.daemon_connections().await;
    sample_connections(&steady);
    for d in names {
        assert!(
            steady.get(d.as_str()).is_some_and(|&c| c >= 1),
            "no daemon connection to database {d} (its heartbeat's is held for good): {steady:?}"
        );
    }
    let refresh = by_database(&second, "partkeeper_refresh_duration_seconds", only);
    let refresh_s: Vec<f64> = names.iter().map(|d| refresh[d.as_str()]).collect();

    let mut scrapes = Vec::new();
    let mut series = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let body = scrape().await.expect("a scrape");
        scrapes.push(t.elapsed().as_secs_f64() * 1000.0);
        series = body.lines().filter(|l| !l.starts_with('#')).count();
    }
    let peak_rss_mib = proc_status_kib(pid, "VmHWM:") as f64 / 1024.0;
    daemon.terminate();
    daemon.wait(DAEMON_DEADLINE).await.assert_success();
    assert!(
        per_database_peak <= CONNECTIONS_PER_DATABASE,
        "{per_database_peak} connections to one database (at most {CONNECTIONS_PER_DATABASE} promised)"
    );
    DaemonRun {
        n,
        all_refreshed_s,
        all_maintained_s,
        refresh_s,
        pass_ms,
        rss_mib,
        peak_rss_mib,
        cpu_percent,
        connections_steady: steady.values().sum(),
        connections_peak,
        per_database_peak,
        scrape_ms: median(scrapes),
        series,
    }
}

#[tokio::test]
#[ignore = "benchmark: cargo test --release --test integration benchmarks::fleet_scale -- --ignored --nocapture --test-threads 1"]
async fn fleet_bench_daemon_over_many_databases() {
    let sizes = sizes();
    let fleet = Fleet::create(*sizes.iter().max().expect("a size")).await;
    let mut runs = Vec::new();
    for &n in &sizes {
        runs.push(measure_daemon(&fleet, n).await);
    }
    println!(
        "\n=== `partkeeper run` over N databases (one fresh daemon per N; metrics_refresh = {REFRESH}; \
         every database refreshes and runs its start-up pass at the same time)"
    );
    println!(
        "{:>4} {:>14} {:>16} {:>18} {:>19}",
        "N", "all refreshed", "all passes done", "refresh/db p50/max", "no-op pass/db p50/max"
    );
    for r in &runs {
        println!(
            "{:>4} {:>12.2} s {:>14.2} s {:>8.3}/{:<7.3}s {:>8.0}/{:<7.0}ms",
            r.n,
            r.all_refreshed_s,
            r.all_maintained_s,
            median(r.refresh_s.clone()),
            max(&r.refresh_s),
            median(r.pass_ms.clone()),
            max(&r.pass_ms),
        );
    }
    println!(
        "{:>4} {:>10} {:>10} {:>10} {:>16} {:>12} {:>10} {:>9} {:>9}",
        "N",
        "RSS",
        "peak RSS",
        "RSS/N",
        "connections st/pk",
        "per db st/pk",
        "CPU/cycle",
        "scrape",
        "series"
    );
    for r in &runs {
        let n = r.n as f64;
        println!(
            "{:>4} {:>6.1} MiB {:>6.1} MiB {:>6.2} MiB {:>8}/{:<7} {:>5.2}/{:<5.2} {:>8.2} % {:>6.1} ms {:>9}",
            r.n,
            r.rss_mib,
            r.peak_rss_mib,
            r.rss_mib / n,
            r.connections_steady,
            r.connections_peak,
            r.connections_steady as f64 / n,
            r.connections_peak as f64 / n,
            r.cpu_percent,
            r.scrape_ms,
            r.series
        );
    }
    let growth = |f: fn(&DaemonRun) -> f64| runs.iter().map(|r| (r.n, f(r))).collect::<Vec<_>>();
    print_growth("steady RSS", "MiB", &growth(|r| r.rss_mib));
    print_growth(
        "connections (steady)",
        "",
        &growth(|r| r.connections_steady as f64),
    );
    print_growth(
        "connections (peak)",
        "",
        &growth(|r| r.connections_peak as f64),
    );
    print_growth(
        "time until all refreshed",
        "s",
        &growth(|r| r.all_refreshed_s),
    );
    print_growth(
        "time until all passes done",
        "s",
        &growth(|r| r.all_maintained_s),
    );
    let worst = runs.iter().map(|r| r.per_database_peak).max().unwrap_or(0);
    println!("most connections to one database at any sample: {worst} (at most {CONNECTIONS_PER_DATABASE} promised)");
}

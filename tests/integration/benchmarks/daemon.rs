//! Benchmark of `partkeeper run` with 4,000 partitions under management (ignored by default):
//! `/metrics` latency under 50 concurrent scrapers (wrk), the duration of one refresh, idle RSS
//! and idle CPU; then the same facts scraped through `prometheus-postgres-exporter` with an
//! equivalent custom query, side by side.
//!
//! ```text
//! apt-get install -y wrk prometheus-postgres-exporter
//! cargo build --release --bin partkeeper
//! PARTKEEPER_BENCH_BIN=target/release/partkeeper \
//!   cargo test --test integration benchmarks::daemon -- --ignored --nocapture
//! ```
//!
//! Both servers, wrk and PostgreSQL share the machine, so the figures are for comparing the two
//! designs on the same box, not absolute capacity.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{eventually, Cli, Cluster, Daemon, PATIENCE};

const PARTITIONS: i64 = 4_000;
/// Partitions created per transaction while setting up (each holds a lock until commit).
const SETUP_BATCH: i64 = 500;
const ROWS: i64 = 200_000;
const SCRAPERS: u32 = 50;
const WRK_SECONDS: u32 = 10;
/// The idle window over which CPU time is measured; it covers two refreshes.
const IDLE_WINDOW: Duration = Duration::from_secs(30);
const REFRESH: &str = "15s";

const EXPORTER_QUERIES: &str = r#"
partkeeper_partition:
  query: |
    SELECT pn.nspname || '.' || pc.relname AS table,
           n.nspname || '.' || c.relname AS partition,
           pg_total_relation_size(c.oid)::float8 AS size_bytes,
           greatest(c.reltuples, 0)::float8 AS rows_estimate
      FROM pg_inherits i
      JOIN pg_class c ON c.oid = i.inhrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_class pc ON pc.oid = i.inhparent
      JOIN pg_namespace pn ON pn.oid = pc.relnamespace
     WHERE i.inhparent = 'public.events'::regclass
  metrics:
    - table:
        usage: "LABEL"
        description: "schema.table"
    - partition:
        usage: "LABEL"
        description: "schema.partition"
    - size_bytes:
        usage: "GAUGE"
        description: "pg_total_relation_size of the partition"
    - rows_estimate:
        usage: "GAUGE"
        description: "reltuples of the partition"
partkeeper_table:
  query: |
    SELECT 'public.events' AS table,
           count(*)::float8 AS partitions,
           sum(pg_total_relation_size(i.inhrelid))::float8 AS size_bytes
      FROM pg_inherits i WHERE i.inhparent = 'public.events'::regclass
  metrics:
    - table:
        usage: "LABEL"
        description: "schema.table"
    - partitions:
        usage: "GAUGE"
        description: "partitions of the table"
    - size_bytes:
        usage: "GAUGE"
        description: "all partitions together"
"#;

struct Wrk {
    p50_ms: f64,
    p99_ms: f64,
    requests_per_s: f64,
    errors: String,
}

fn wrk(port: u16) -> Wrk {
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{SCRAPERS}"),
            &format!("-d{WRK_SECONDS}s"),
            "--timeout",
            "30s",
            "--latency",
            &format!("http://127.0.0.1:{port}/metrics"),
        ])
        .output()
        .expect("run wrk (apt-get install -y wrk)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let value = |prefix: &str| -> f64 {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in wrk output:\n{text}"));
        let v = line[prefix.len()..]
            .split_whitespace()
            .next()
            .unwrap_or("0");
        parse_ms(v)
    };
    Wrk {
        p50_ms: value("50%"),
        p99_ms: value("99%"),
        requests_per_s: {
            let line = text
                .lines()
                .find(|l| l.starts_with("Requests/sec:"))
                .unwrap_or("Requests/sec: 0");
            line["Requests/sec:".len()..].trim().parse().unwrap_or(0.0)
        },
        errors: text
            .lines()
            .filter(|l| l.contains("Socket errors") || l.contains("Non-2xx"))
            .map(str::trim)
            .collect::<Vec<_>>()
            .join("; "),
    }
}

/// wrk prints `850.00us`, `3.21ms`, `1.20s`.
fn parse_ms(v: &str) -> f64 {
    let num = |s: &str| s.parse::<f64>().unwrap_or(f64::NAN);
    if let Some(x) = v.strip_suffix("us") {
        num(x) / 1000.0
    } else if let Some(x) = v.strip_suffix("ms") {
        num(x)
    } else if let Some(x) = v.strip_suffix('s') {
        num(x) * 1000.0
    } else if let Some(x) = v.strip_suffix('m') {
        num(x) * 60_000.0
    } else {
        num(v)
    }
}

async fn get(port: u16, path: &str) -> Option<String> {
    crate::common::http::http_ok_body(port, path, Duration::from_secs(60)).await
}

fn gauge(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Median of `n` sequential scrapes, in milliseconds.
async fn single_scrape_ms(port: u16, n: usize) -> f64 {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        get(port, "/metrics").await.expect("a scrape");
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    times[n / 2]
}

fn proc_rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// utime + stime in clock ticks.
fn proc_cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the ")" that closes the command name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let f = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    f(14) + f(15)
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn wait_for(port: u16, what: &str, needle: &str) -> String {
    let body = std::cell::RefCell::new(String::new());
    let body_ref = &body;
    eventually(Duration::from_secs(120), what, || async move {
        match get(port, "/metrics").await {
            Some(b) if b.contains(needle) => {
                *body_ref.borrow_mut() = b;
                true
            }
            _ => false,
        }
    })
    .await;
    body.into_inner()
}

fn daemon_port(d: &Daemon) -> Option<u16> {
    let log = d.stderr();
    let at = log.find("listen=127.0.0.1:")? + "listen=127.0.0.1:".len();
    log[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}

#[tokio::test]
#[ignore = "benchmark: cargo test --test integration benchmarks::daemon -- --ignored --nocapture"]
async fn daemon_bench_metrics_for_4000_partitions_against_postgres_exporter() {
    let cluster = Cluster::builder()
        .setting("max_locks_per_transaction", "128")
        .start();
    let db = cluster.create_database().await;
    let setup = Instant::now();
    db.exec(
        "CREATE TABLE events (id bigint, day date NOT NULL, payload text) PARTITION BY RANGE (day)",
    )
    .await;
    let first_day = format!("current_date - {}", PARTITIONS - 10);
    let mut start = 0;
    while start < PARTITIONS {
        let end = (start + SETUP_BATCH).min(PARTITIONS);
        db.exec(&format!(
            "DO $$ DECLARE d date; BEGIN
               FOR i IN {start}..{last} LOOP
                 d := {first_day} + i;
                 EXECUTE format('CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
                                'events_' || to_char(d, 'YYYY_MM_DD'), d, d + 1);
               END LOOP; END $$",
            last = end - 1
        ))
        .await;
        start = end;
    }
    db.exec(&format!(
        "CREATE TABLE events_default PARTITION OF events DEFAULT;
         INSERT INTO events SELECT g, {first_day} + (g % {PARTITIONS})::int, 'x' FROM generate_series(1, {ROWS}) g;
         ANALYZE events;"
    ))
    .await;
    let setup = setup.elapsed();

    let toml = format!(
        r#"
[database]
url = "{url}"
[server]
listen = "127.0.0.1:0"
[schedule]
maintenance = "0 3 * * *"
run_on_start = true
metrics_refresh = "{REFRESH}"
[[tables]]
name = "public.events"
column = "day"
interval = "1 day"
premake = 7
default_partition = true
"#,
        url = db.url()
    );
    // Absolute: the daemon runs in a directory of its own.
    let bin = std::env::var("PARTKEEPER_BENCH_BIN")
        .map(|b| {
            std::fs::canonicalize(&b)
                .unwrap_or_else(|e| panic!("PARTKEEPER_BENCH_BIN={b}: {e}"))
                .display()
                .to_string()
        })
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_partkeeper").to_string());
    let mut daemon = Cli::program(&bin).config(&toml).spawn(["run"]);
    let port = {
        let d = &daemon;
        let found = std::cell::Cell::new(None);
        let f = &found;
        eventually(PATIENCE, "the daemon's address", || {
            f.set(daemon_port(d));
            async move { f.get().is_some() }
        })
        .await;
        found.get().expect("checked")
    };
    let pid = daemon.pid().as_raw();
    let body = wait_for(
        port,
        "the first refresh with every partition",
        &format!(
            "partkeeper_partitions{{database=\"{}\",table=\"public.events\"}} 4001",
            db.name()
        ),
    )
    .await;
    let series = body.lines().filter(|l| !l.starts_with('#')).count();
    let refresh_s = gauge(&body, "partkeeper_refresh_duration_seconds").unwrap_or(f64::NAN);
    let single_ms = single_scrape_ms(port, 21).await;

    // Idle: no scrapes, the refresh running on its own cadence.
    let rss_idle = proc_rss_kib(pid);
    let t0 = proc_cpu_ticks(pid);
    tokio::time::sleep(IDLE_WINDOW).await;
    let idle_cpu =
        (proc_cpu_ticks(pid) - t0) as f64 / clock_ticks_per_second() / IDLE_WINDOW.as_secs_f64()
            * 100.0;
    let body = get(port, "/metrics").await.expect("a scrape");
    let refresh_later_s = gauge(&body, "partkeeper_refresh_duration_seconds").unwrap_or(f64::NAN);

    let ours = tokio::task::spawn_blocking(move || wrk(port))
        .await
        .expect("wrk");
    let rss_after = proc_rss_kib(pid);
    assert!(daemon.is_running());
    daemon.terminate();
    daemon.wait(Duration::from_secs(10)).await.assert_success();

    // The same facts through postgres_exporter: one query per scrape.
    let queries = tempfile::NamedTempFile::new().expect("a temp file");
    std::fs::write(queries.path(), EXPORTER_QUERIES).expect("write queries.yaml");
    let exporter_port = free_port();
    let exporter = Cli::program("prometheus-postgres-exporter")
        .env(
            "DATA_SOURCE_NAME",
            format!(
                "{}?sslmode=disable",
                db.url().replace("postgres://", "postgresql://")
            ),
        )
        .spawn([
            format!("--web.listen-address=127.0.0.1:{exporter_port}"),
            format!("--extend.query-path={}", queries.path().display()),
            "--disable-default-metrics".into(),
            "--disable-settings-metrics".into(),
            "--no-collector.database".into(),
            "--no-collector.bgwriter".into(),
            "--log.level=warn".into(),
        ]);
    let exporter_body = wait_for(
        exporter_port,
        "postgres_exporter to serve the custom query",
        "partkeeper_table_partitions",
    )
    .await;
    let exporter_series = exporter_body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .count();
    let exporter_single_ms = single_scrape_ms(exporter_port, 5).await;
    let theirs = tokio::task::spawn_blocking(move || wrk(exporter_port))
        .await
        .expect("wrk");
    let exporter_rss = proc_rss_kib(exporter.pid().as_raw());
    drop(exporter);

    println!("\n=== partkeeper run with {PARTITIONS} partitions (+ default), {ROWS} rows; setup {setup:.1?}");
    println!("binary: {bin}");
    println!("refresh duration (catalog + sizes + default count + assess): {refresh_s:.3} s first, {refresh_later_s:.3} s later");
    println!(
        "idle RSS: {:.1} MiB; after the wrk run: {:.1} MiB",
        rss_idle as f64 / 1024.0,
        rss_after as f64 / 1024.0
    );
    println!(
        "idle CPU: {idle_cpu:.2} % of one core over {IDLE_WINDOW:?} (metrics_refresh = {REFRESH})"
    );
    println!();
    println!(
        "{:<44} {:>10} {:>10} {:>10} {:>11} {:>8}",
        "/metrics", "single", "p50 (50c)", "p99 (50c)", "req/s (50c)", "series"
    );
    println!(
        "{:<44} {:>8.2}ms {:>8.2}ms {:>8.2}ms {:>11.0} {:>8}",
        "partkeeper (snapshot, no query per scrape)",
        single_ms,
        ours.p50_ms,
        ours.p99_ms,
        ours.requests_per_s,
        series
    );
    println!(
        "{:<44} {:>8.2}ms {:>8.2}ms {:>8.2}ms {:>11.0} {:>8}",
        "postgres_exporter 0.11 (custom query)",
        exporter_single_ms,
        theirs.p50_ms,
        theirs.p99_ms,
        theirs.requests_per_s,
        exporter_series
    );
    println!(
        "postgres_exporter RSS after its wrk run: {:.1} MiB",
        exporter_rss as f64 / 1024.0
    );
    for (who, w) in [("partkeeper", &ours), ("postgres_exporter", &theirs)] {
        if !w.errors.is_empty() {
            println!("{who} wrk errors: {}", w.errors);
        }
    }
}

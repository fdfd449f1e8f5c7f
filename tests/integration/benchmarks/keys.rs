//! Benchmark for SPEC part 2 keys, ignored by default; it prints figures and asserts only that
//! every pass is a no-op:
//!
//! ```text
//! cargo test --release --test integration benchmarks::keys -- --ignored --nocapture --test-threads 1
//! ```
//!
//! In one cluster and one run: 100 monthly `date` tables of 44 partitions (part 1's benchmark
//! shape, for comparison), 100 hourly `timestamptz` tables kept 90 days with a week premade
//! (2,329 partitions each), and 100 `bigint` id tables of 44 partitions with an index on the key.
//! Each figure is the median of whole `partkeeper maintain --now T` processes that find nothing
//! to do; per partition managed it is divided by the range partitions of those tables.

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::PgConnection;

use crate::common::{Cli, Cluster, TestDb};

const TABLES: usize = 100;
const RUNS: usize = 5;
/// The evaluation time of every pass (an hour start, so the grid is easy to write down).
const NOW: &str = "2026-12-01T10:30:00Z";
/// Hourly: 90 days kept (2,160 partitions back), the current hour, a week ahead.
const HOURS_BACK: i64 = 90 * 24;
const HOURS_AHEAD: i64 = 7 * 24;

async fn exec(conn: &mut PgConnection, sql: &str) {
    sqlx::raw_sql(sql)
        .execute(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", &sql[..sql.len().min(400)]));
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn time_noop(cli: &Cli) -> Duration {
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let started = Instant::now();
        let out = cli.run_async(["-q", "maintain", "--now", NOW]).await;
        times.push(started.elapsed());
        out.assert_success();
        assert_eq!(
            out.stdout.matches("nothing to do").count(),
            TABLES,
            "not a no-op: {out}"
        );
    }
    median(times)
}

fn config(db: &TestDb, prefix: &str, body: &str) -> String {
    let mut toml = format!(
        "[database]\nurl = \"{}\"\nstatement_timeout = \"30min\"\n",
        db.url()
    );
    for i in 1..=TABLES {
        toml.push_str(&format!(
            "\n[[tables]]\nname = \"public.{prefix}{i}\"\n{body}default_partition = true\n"
        ));
    }
    toml
}

fn report(what: &str, took: Duration, partitions: usize) {
    println!(
        "{what}: no-op maintain median of {RUNS}: {:.1} ms; {partitions} range partitions; {:.2} µs per partition",
        took.as_secs_f64() * 1000.0,
        took.as_secs_f64() * 1e6 / partitions as f64
    );
}

async fn monthly(db: &TestDb, conn: &mut PgConnection) -> Duration {
    // Monthly, as in benchmarks::maintain: 40 months back, the current one, 3 ahead.
    let started = Instant::now();
    for i in 1..=TABLES {
        let mut sql = format!(
            "CREATE TABLE m{i} (id bigint NOT NULL, date date NOT NULL, price numeric) PARTITION BY RANGE (date);
             CREATE TABLE m{i}_default PARTITION OF m{i} DEFAULT;"
        );
        let first = chrono::NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        let shift = |n: i32| {
            if n >= 0 {
                first + chrono::Months::new(n as u32)
            } else {
                first - chrono::Months::new((-n) as u32)
            }
        };
        for k in -40i32..=3 {
            sql.push_str(&format!(
                "CREATE TABLE m{i}_{} PARTITION OF m{i} FOR VALUES FROM ('{}') TO ('{}');",
                shift(k).format("%Y_%m"),
                shift(k),
                shift(k + 1)
            ));
        }
        exec(conn, &sql).await;
    }
    println!("setup monthly: {:?}", started.elapsed());
    let cli = Cli::new().config(&config(
        db,
        "m",
        "column = \"date\"\ninterval = \"1 month\"\npremake = 3\n",
    ));
    let took = time_noop(&cli).await;
    report("monthly date, 100 x 44", took, TABLES * 44);
    took
}

fn cluster() -> Cluster {
    Cluster::builder()
        .setting("max_locks_per_transaction", "512")
        .start()
}

#[tokio::test]
#[ignore = "benchmark; run with --release --ignored --nocapture"]
async fn bench_keys_integer_tables_against_monthly() {
    let cluster = cluster();
    let db = cluster.create_database().await;
    let mut conn = db.connect().await;
    let monthly_time = monthly(&db, &mut conn).await;
    // Integer ids: 44 partitions of 1,000,000 ids, an index on the key, max(id) in the 41st.
    let started = Instant::now();
    for i in 1..=TABLES {
        let mut sql = format!(
            "CREATE TABLE n{i} (id bigint NOT NULL, v text) PARTITION BY RANGE (id);
             CREATE INDEX ON n{i} (id);
             CREATE TABLE n{i}_default PARTITION OF n{i} DEFAULT;"
        );
        for k in 0..44i64 {
            sql.push_str(&format!(
                "CREATE TABLE n{i}_p{} PARTITION OF n{i} FOR VALUES FROM ({}) TO ({});",
                k * 1_000_000,
                k * 1_000_000,
                (k + 1) * 1_000_000
            ));
        }
        sql.push_str(&format!(
            "INSERT INTO n{i} SELECT g, 'x' FROM generate_series(0, 40999999, 10000) g;"
        ));
        exec(&mut conn, &sql).await;
    }
    exec(&mut conn, "ANALYZE").await;
    println!("setup integer: {:?}", started.elapsed());
    let integer = Cli::new().config(&config(
        &db,
        "n",
        "column = \"id\"\ninterval = 1000000\npremake = 3\n",
    ));
    let integer_time = time_noop(&integer).await;
    report(
        "bigint ids, 100 x 44, max(id) through an index",
        integer_time,
        TABLES * 44,
    );
    println!(
        "integer / monthly: {:.2}x",
        integer_time.as_secs_f64() / monthly_time.as_secs_f64()
    );
}

#[tokio::test]
#[ignore = "benchmark; run with --release --ignored --nocapture"]
async fn bench_keys_hourly_tables_against_monthly() {
    let cluster = cluster();
    let db = cluster.create_database().await;
    let mut conn = db.connect().await;
    let now: DateTime<Utc> = DateTime::parse_from_rfc3339(NOW).unwrap().to_utc();
    let monthly_time = monthly(&db, &mut conn).await;
    // Hourly timestamptz, 90 days kept, a week ahead.
    let started = Instant::now();
    let current = now - TimeDelta::minutes(30);
    let hourly_parts = (HOURS_BACK + 1 + HOURS_AHEAD) as usize;
    for i in 1..=TABLES {
        let mut sql = format!(
            "CREATE TABLE h{i} (id bigint NOT NULL, at timestamptz NOT NULL, v numeric) PARTITION BY RANGE (at);
             CREATE TABLE h{i}_default PARTITION OF h{i} DEFAULT;"
        );
        for k in -HOURS_BACK..=HOURS_AHEAD {
            let from = current + TimeDelta::hours(k);
            let to = from + TimeDelta::hours(1);
            sql.push_str(&format!(
                "CREATE TABLE h{i}_{} PARTITION OF h{i} FOR VALUES FROM ('{}') TO ('{}');",
                from.format("%Y_%m_%d_%H%M"),
                from.format("%Y-%m-%d %H:%M:%S+00"),
                to.format("%Y-%m-%d %H:%M:%S+00")
            ));
        }
        exec(&mut conn, &sql).await;
        if i % 10 == 0 {
            println!("  hourly setup: {i} tables in {:?}", started.elapsed());
        }
    }
    println!("setup hourly: {:?}", started.elapsed());
    let hourly = Cli::new().config(&config(
        &db,
        "h",
        "column = \"at\"\ninterval = \"1 hour\"\npremake = 168\nretention = \"90 days\"\nretention_mode = \"drop\"\ntimezone = \"UTC\"\n",
    ));
    let hourly_time = time_noop(&hourly).await;
    report(
        "hourly timestamptz, 100 x 2,329",
        hourly_time,
        TABLES * hourly_parts,
    );
    let per = |d: Duration, n: usize| d.as_secs_f64() / n as f64;
    println!(
        "hourly per partition / monthly per partition: {:.2}x",
        per(hourly_time, TABLES * hourly_parts) / per(monthly_time, TABLES * 44)
    );
}

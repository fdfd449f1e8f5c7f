//! Benchmarks, ignored by default; they print figures and assert only that things work:
//!
//! ```text
//! cargo test --release --test integration benchmarks::maintain -- --ignored --nocapture --test-threads 1
//! ```
//!
//! 100 monthly tables of 44 partitions each: a whole-process no-op `partkeeper maintain` (median
//! of several runs), the catalog read alone, and pg_partman's `run_maintenance()` on the very same
//! tables when the extension is installed (`apt-get install postgresql-15-partman`). Then 1,000
//! such tables on the server's default `max_locks_per_transaction`.

use std::time::{Duration, Instant};

use chrono::{Datelike, Months, NaiveDate, Utc};
use sqlx::PgConnection;

use crate::common::{Cli, Cluster, TestDb};

/// Runs per figure; the median is printed.
const RUNS: usize = 7;
/// Months before the current one, so that each table has 40 + 1 + 3 = 44 range partitions.
const PAST: u32 = 40;
const PREMAKE: u32 = 3;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn first_of_month(months_from_now: i64) -> NaiveDate {
    let today = Utc::now().date_naive();
    let first = NaiveDate::from_ymd_opt(today.year(), today.month(), 1).unwrap();
    if months_from_now >= 0 {
        first + Months::new(months_from_now as u32)
    } else {
        first - Months::new((-months_from_now) as u32)
    }
}

/// Table `t<i>`: the runbook's columns, one index, partitioned by month on `date`.
fn table_sql(i: usize) -> String {
    format!(
        "CREATE TABLE t{i} (id bigint NOT NULL, \"propertyId\" text, date date NOT NULL, price numeric) \
         PARTITION BY RANGE (date); CREATE INDEX ON t{i} (\"propertyId\", date);"
    )
}

/// `t<i>` with its default and 44 monthly partitions, in one transaction.
fn table_with_partitions_sql(i: usize) -> String {
    let mut sql = table_sql(i);
    sql.push_str(&format!(
        "CREATE TABLE t{i}_default PARTITION OF t{i} DEFAULT;"
    ));
    for k in -(PAST as i64)..=(PREMAKE as i64) {
        let (from, to) = (first_of_month(k), first_of_month(k + 1));
        sql.push_str(&format!(
            "CREATE TABLE t{i}_{} PARTITION OF t{i} FOR VALUES FROM ('{from}') TO ('{to}');",
            from.format("%Y_%m")
        ));
    }
    sql
}

fn config(db: &TestDb, tables: usize) -> String {
    let mut toml = format!(
        "[database]\nurl = \"{}\"\nstatement_timeout = \"30min\"\n",
        db.url()
    );
    for i in 1..=tables {
        toml.push_str(&format!(
            "\n[[tables]]\nname = \"public.t{i}\"\ncolumn = \"date\"\ninterval = \"1 month\"\npremake = {PREMAKE}\ndefault_partition = true\n"
        ));
    }
    toml
}

async fn exec(conn: &mut PgConnection, sql: &str) {
    sqlx::raw_sql(sql)
        .execute(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", &sql[..sql.len().min(400)]));
}

async fn partition_count(conn: &mut PgConnection) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pg_class WHERE relispartition AND relkind = 'r'")
        .fetch_one(conn)
        .await
        .unwrap()
}

/// Median wall time of a whole `partkeeper maintain` process that has nothing to do.
async fn time_noop_maintain(cli: &Cli, tables: usize) -> Duration {
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let started = Instant::now();
        let out = cli.run_async(["-q", "maintain"]).await;
        times.push(started.elapsed());
        out.assert_success();
        assert_eq!(
            out.stdout.matches("nothing to do").count(),
            tables,
            "not a no-op: {out}"
        );
    }
    median(times)
}

/// Median time of the one-round-trip catalog read, from the library, without sizes.
async fn time_catalog_read(db: &TestDb, toml: &str, sizes: bool) -> (Duration, usize) {
    let cfg = partkeeper::config::parse_str(toml, &Default::default()).unwrap();
    let mut conn = partkeeper::pg::connect(&cfg.database).await.unwrap();
    let mut times = Vec::new();
    let mut partitions = 0;
    for _ in 0..RUNS {
        let started = Instant::now();
        let tables = partkeeper::catalog::read_managed(&mut conn, &cfg.tables, sizes)
            .await
            .unwrap_or_else(|e| panic!("catalog read on {}: {e}", db.name()));
        times.push(started.elapsed());
        partitions = tables
            .iter()
            .map(|t| t.as_ref().unwrap().partitions.len())
            .sum();
    }
    (median(times), partitions)
}

#[tokio::test]
#[ignore = "benchmark; run with --release --ignored --nocapture"]
async fn bench_100_monthly_tables_of_44_partitions_against_pg_partman() {
    const TABLES: usize = 100;
    let cluster = Cluster::start();
    let db = cluster.create_database().await;
    let mut conn = db.connect().await;
    let partman = crate::common::partman_installed();
    let started = Instant::now();
    if partman {
        // pg_partman makes the partitions itself, so both tools look at the very same tables.
        exec(
            &mut conn,
            "CREATE SCHEMA partman; CREATE EXTENSION pg_partman SCHEMA partman;",
        )
        .await;
        for i in 1..=TABLES {
            exec(&mut conn, &table_sql(i)).await;
            exec(
                &mut conn,
                &format!(
                    "SELECT partman.create_parent(p_parent_table => 'public.t{i}', p_control => 'date', \
                     p_type => 'native', p_interval => '1 month', p_premake => {PREMAKE}, \
                     p_start_partition => '{}', p_jobmon => false)",
                    first_of_month(-(PAST as i64))
                ),
            )
            .await;
        }
    } else {
        println!("pg_partman is not installed: apt-get install postgresql-15-partman to compare");
        for i in 1..=TABLES {
            exec(&mut conn, &table_with_partitions_sql(i)).await;
        }
    }
    let n = partition_count(&mut conn).await;
    println!(
        "setup: {TABLES} tables, {n} partitions (default included) in {:?}",
        started.elapsed()
    );
    assert_eq!(n, (TABLES * (44 + 1)) as i64);

    let toml = config(&db, TABLES);
    let cli = Cli::new().config(&toml);
    let maintain = time_noop_maintain(&cli, TABLES).await;
    let (read, parts) = time_catalog_read(&db, &toml, false).await;
    let (read_sizes, _) = time_catalog_read(&db, &toml, true).await;
    println!(
        "partkeeper maintain (whole process, no-op), median of {RUNS}: {}",
        ms(maintain)
    );
    println!(
        "catalog read alone, {parts} range partitions, no sizes, median of {RUNS}: {}",
        ms(read)
    );
    println!(
        "catalog read with sizes (as status does), median of {RUNS}: {}",
        ms(read_sizes)
    );

    if partman {
        let mut times = Vec::new();
        for _ in 0..RUNS {
            let started = Instant::now();
            exec(
                &mut conn,
                "SELECT partman.run_maintenance(p_analyze := false, p_jobmon := false)",
            )
            .await;
            times.push(started.elapsed());
        }
        assert_eq!(
            partition_count(&mut conn).await,
            n,
            "run_maintenance was not a no-op"
        );
        let partman = median(times);
        println!(
            "pg_partman run_maintenance() (no-op), median of {RUNS}: {}",
            ms(partman)
        );
        println!(
            "ratio pg_partman / partkeeper: {:.1}x (whole process), {:.1}x (catalog read alone)",
            partman.as_secs_f64() / maintain.as_secs_f64(),
            partman.as_secs_f64() / read.as_secs_f64()
        );
    }
}

#[tokio::test]
#[ignore = "benchmark; run with --release --ignored --nocapture"]
async fn bench_1000_monthly_tables_of_44_partitions_on_default_max_locks() {
    const TABLES: usize = 1000;
    let cluster = Cluster::start();
    let db = cluster.create_database().await;
    let mut conn = db.connect().await;
    let locks: String = sqlx::query_scalar("SHOW max_locks_per_transaction")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let started = Instant::now();
    for i in 1..=TABLES {
        exec(&mut conn, &table_with_partitions_sql(i)).await;
    }
    let n = partition_count(&mut conn).await;
    println!(
        "setup: {TABLES} tables, {n} partitions in {:?}; max_locks_per_transaction = {locks}",
        started.elapsed()
    );

    let toml = config(&db, TABLES);
    let cli = Cli::new().config(&toml);
    let started = Instant::now();
    let out = cli.run_async(["-q", "maintain"]).await;
    println!(
        "partkeeper maintain (no-op) on {n} partitions: exit {:?} in {}",
        out.code(),
        ms(started.elapsed())
    );
    out.assert_success();
    let (read, parts) = time_catalog_read(&db, &toml, false).await;
    println!(
        "catalog read alone, {parts} range partitions, median of {RUNS}: {}",
        ms(read)
    );

    // A month later every table needs one partition more: 1,000 creations, each its own
    // transaction, each moving rows out of a default partition (there are none).
    let next = first_of_month(1).format("%Y-%m-%d").to_string();
    let started = Instant::now();
    let out = cli.run_async(["-q", "maintain", "--now", &next]).await;
    println!(
        "partkeeper maintain creating {TABLES} partitions: exit {:?} in {}",
        out.code(),
        ms(started.elapsed())
    );
    out.assert_success();
    let started = Instant::now();
    let check = cli.run_async(["-q", "check", "--now", &next]).await;
    println!(
        "partkeeper check: exit {:?} in {}",
        check.code(),
        ms(started.elapsed())
    );
    check.assert_success();
    let started = Instant::now();
    let status = cli.run_async(["-q", "status", "--format", "json"]).await;
    println!(
        "partkeeper status (sizes of every partition): exit {:?} in {}{}",
        status.code(),
        ms(started.elapsed()),
        if status.success() {
            String::new()
        } else {
            format!("\n{}", status.stderr.trim())
        }
    );
    status.assert_success();
}

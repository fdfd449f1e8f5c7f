//! Migration benchmark (ignored by default; it takes minutes):
//!
//! ```sh
//! PARTKEEPER_BENCH_ROWS=10000000 cargo test --release --test integration benchmarks::migrate -- --ignored --nocapture
//! ```
//!
//! The runbook's `pricing_data`, one row per property per day from three years back to two
//! months ahead, in a throwaway cluster. Figures, all from the same run and cluster, each method
//! on its own copy of the same database: a bare `INSERT INTO <partitioned, indexed> SELECT *
//! FROM <plain>` (the floor any copy pays), `migrate run --offline`, `migrate run` online with a
//! single-row writer measuring its latency (p50/p99/max, and the same writer before the
//! migration as the baseline), and pg_partman 4.7's `partition_data_proc` (when
//! `postgresql-15-partman` is installed) with the same writer on the source table. For each:
//! wall time, WAL written (`pg_current_wal_lsn()` before and after), and the partitioned table's
//! index size, against the same indexes rebuilt fresh (`REINDEX TABLE`) for online. Then the
//! swap's lock hold time over 10 online runs of a smaller table with the same partition layout.

use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;
use sqlx::PgConnection;

use crate::common::writer::{Pace, Write};
use crate::common::{fixtures, Cli, Cluster, Writer};

/// Days from three years back to two months ahead.
const DAYS: i64 = 3 * 365 + 61;

/// The CLI: `PARTKEEPER_BENCH_BIN` (a copy of the binary, so that rebuilding the worktree during
/// a long run does not change the program measured), else the test build's.
fn bench_cli() -> Cli {
    match std::env::var_os("PARTKEEPER_BENCH_BIN") {
        Some(p) => Cli::program(p),
        None => Cli::new(),
    }
}

fn config(url: &str) -> String {
    format!(
        "[database]\nurl = \"{url}\"\nlock_timeout = \"2s\"\nstatement_timeout = \"2h\"\n\n\
         [[tables]]\nname = \"public.pricing_data\"\ncolumn = \"date\"\ninterval = \"1 month\"\npremake = 3\ndefault_partition = false\n"
    )
}

async fn load(cluster: &Cluster, db: &str, rows: i64) {
    let properties = (rows / DAYS).max(1);
    cluster.exec(db, fixtures::PLAIN_PRICING_DATA).await;
    cluster
        .exec(
            db,
            &format!(
                r#"INSERT INTO pricing_data ("propertyId", date, price, "minPrice", "maxPrice", occupancy, "demandScore", source, "createdAt", "updatedAt")
                   SELECT 'prop-' || p, current_date - {back} + d, 50 + (p * 7 + d) % 400, 40, 600,
                          ((p + d) % 100) / 100.0, ((p * d) % 1000) / 100.0, 'pricelabs',
                          now() - make_interval(days => {back} - d), now()
                     FROM generate_series(0, {last}) d, generate_series(1, {properties}) p"#,
                back = 3 * 365,
                last = DAYS - 1,
            ),
        )
        .await;
    cluster.exec(db, fixtures::PRICING_DATA_INDEXES).await;
    cluster.exec(db, "VACUUM ANALYZE pricing_data").await;
}

async fn copy_db(cluster: &Cluster, from: &str, to: &str) {
    cluster
        .exec(
            "postgres",
            &format!("CREATE DATABASE {to} TEMPLATE {from} STRATEGY FILE_COPY"),
        )
        .await;
}

async fn drop_db(cluster: &Cluster, name: &str) {
    cluster
        .exec(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        )
        .await;
}

/// Single-row writes: an UPDATE of a random row or an INSERT.
struct SingleRows {
    rng: fastrand::Rng,
    max_id: i64,
}

impl Write for SingleRows {
    fn write<'a>(
        &'a mut self,
        c: &'a mut PgConnection,
        _round: u64,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        async move {
            if self.rng.bool() {
                sqlx::query(
                    "UPDATE pricing_data SET price = price + 1, \"updatedAt\" = now() WHERE id = $1",
                )
                .bind(self.rng.i64(1..self.max_id))
                .execute(c)
                .await
            } else {
                sqlx::query(r#"INSERT INTO pricing_data ("propertyId", date, price) VALUES ('bench', current_date, 1)"#)
                    .execute(c)
                    .await
            }
            .map(|_| ())
        }
        .boxed()
    }
}

/// One [`SingleRows`] writer on `opts`, 5 ms between statements.
async fn latency_writer(opts: sqlx::postgres::PgConnectOptions, max_id: i64) -> Writer<SingleRows> {
    let write = SingleRows {
        rng: fastrand::Rng::with_seed(1),
        max_id,
    };
    Writer::start_each(opts, vec![write], Pace::pause(Duration::from_millis(5))).await
}

fn percentile(lat: &mut [Duration], p: f64) -> Duration {
    if lat.is_empty() {
        return Duration::ZERO;
    }
    lat.sort();
    lat[((lat.len() as f64 - 1.0) * p).round() as usize]
}

fn show(label: &str, lat: &mut [Duration]) {
    println!(
        "  {label}: {} writes, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        lat.len(),
        percentile(lat, 0.50).as_secs_f64() * 1e3,
        percentile(lat, 0.99).as_secs_f64() * 1e3,
        lat.iter().max().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
}

/// Bytes of WAL since `from` (an LSN as text).
async fn wal_since(cluster: &Cluster, from: &str) -> i64 {
    cluster
        .query_scalar(
            "postgres",
            &format!("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{from}')::int8"),
        )
        .await
}

async fn lsn(cluster: &Cluster) -> String {
    cluster
        .query_scalar("postgres", "SELECT pg_current_wal_lsn()::text")
        .await
}

/// Bytes of every index on the leaves of partitioned table `t` (or on `t` when plain).
async fn index_bytes(cluster: &Cluster, db: &str, t: &str) -> i64 {
    cluster
        .query_scalar(
            db,
            &format!(
                "SELECT CASE WHEN c.relkind = 'p'
                        THEN (SELECT coalesce(sum(pg_indexes_size(relid)), 0) FROM pg_partition_tree(c.oid) WHERE isleaf)
                        ELSE pg_indexes_size(c.oid) END::int8
                   FROM pg_class c WHERE c.oid = '{t}'::regclass"
            ),
        )
        .await
}

fn mb(bytes: i64) -> String {
    format!("{:.0} MB", bytes as f64 / 1048576.0)
}

/// "swap held its locks N ms" from `migrate run` output.
fn swap_ms(stdout: &str) -> Option<u64> {
    let rest = stdout.split("swap held its locks ").nth(1)?;
    rest.split(' ').next()?.parse().ok()
}

#[tokio::test]
#[ignore = "benchmark: minutes of work; run with --ignored --nocapture"]
async fn migrate_bench() {
    let rows: i64 = std::env::var("PARTKEEPER_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let cluster = Cluster::builder()
        .setting("shared_buffers", "1GB")
        .setting("maintenance_work_mem", "512MB")
        .setting("work_mem", "64MB")
        .setting("max_wal_size", "3GB")
        .setting("checkpoint_timeout", "30min")
        .setting("synchronous_commit", "on")
        .start();
    println!(
        "\n== migrate benchmark: ~{rows} rows, PostgreSQL cluster on port {} ==",
        cluster.port()
    );

    let t = Instant::now();
    cluster.exec("postgres", "CREATE DATABASE base").await;
    load(&cluster, "base", rows).await;
    let size: String = cluster
        .query_scalar(
            "base",
            "SELECT pg_size_pretty(pg_total_relation_size('pricing_data'))",
        )
        .await;
    let count: i64 = cluster
        .query_scalar("base", "SELECT count(*) FROM pricing_data")
        .await;
    println!(
        "load: {count} rows, {size} with indexes, in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // Baseline: partitioned table with the same partitions and indexes, one INSERT ... SELECT.
    copy_db(&cluster, "base", "baseline").await;
    cluster
        .exec(
            "baseline",
            r#"CREATE TABLE p (LIKE pricing_data INCLUDING DEFAULTS) PARTITION BY RANGE (date);
               DO $$ DECLARE m date; BEGIN
                 FOR m IN SELECT generate_series(date_trunc('month', current_date - 3 * 365),
                                                 date_trunc('month', current_date) + interval '3 months', interval '1 month')::date LOOP
                   EXECUTE format('CREATE TABLE %I PARTITION OF p FOR VALUES FROM (%L) TO (%L)',
                                  'p_' || to_char(m, 'YYYY_MM'), m, (m + interval '1 month')::date);
                 END LOOP; END $$;
               ALTER TABLE p ADD PRIMARY KEY (id, date);
               CREATE INDEX ON p ("propertyId", date);
               CREATE INDEX ON p (date);"#,
        )
        .await;
    let l = lsn(&cluster).await;
    let t = Instant::now();
    cluster
        .exec("baseline", "INSERT INTO p SELECT * FROM pricing_data")
        .await;
    let baseline = t.elapsed();
    let wal = wal_since(&cluster, &l).await;
    let idx = index_bytes(&cluster, "baseline", "p").await;
    drop_db(&cluster, "baseline").await;
    println!(
        "baseline INSERT INTO <partitioned, indexed> SELECT * FROM <plain>: {:.1} s, WAL {}, indexes {}",
        baseline.as_secs_f64(),
        mb(wal),
        mb(idx)
    );

    // Offline.
    copy_db(&cluster, "base", "offline").await;
    let cli = bench_cli()
        .config(&config(&cluster.url("offline")))
        .timeout(Duration::from_secs(7200));
    let l = lsn(&cluster).await;
    let t = Instant::now();
    let out = cli
        .run_async([
            "migrate",
            "run",
            "--offline",
            "--table",
            "public.pricing_data",
        ])
        .await;
    let offline = t.elapsed();
    out.assert_success();
    let wal = wal_since(&cluster, &l).await;
    let idx = index_bytes(&cluster, "offline", "pricing_data").await;
    print!("  {}", out.stdout.lines().next().unwrap_or_default());
    println!();
    println!(
        "migrate run --offline: {:.1} s wall ({:.2}x the baseline), swap lock {} ms, WAL {}, indexes {}",
        offline.as_secs_f64(),
        offline.as_secs_f64() / baseline.as_secs_f64(),
        swap_ms(&out.stdout).unwrap_or(0),
        mb(wal),
        mb(idx)
    );
    drop_db(&cluster, "offline").await;

    // Online, with a single-row writer; its latency before the migration is the baseline.
    copy_db(&cluster, "base", "online").await;
    let max_id: i64 = cluster
        .query_scalar("online", "SELECT max(id) FROM pricing_data")
        .await;
    let opts = cluster.connect_options("online");
    let before = latency_writer(opts.clone(), max_id).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let mut quiet = before.stop().await.latencies;
    let during = latency_writer(opts, max_id).await;
    let cli = bench_cli()
        .config(&config(&cluster.url("online")))
        .timeout(Duration::from_secs(7200));
    let l = lsn(&cluster).await;
    let t = Instant::now();
    let out = cli
        .run_async(["migrate", "run", "--table", "public.pricing_data"])
        .await;
    let online = t.elapsed();
    let during = during.stop().await;
    out.assert_success();
    let wal = wal_since(&cluster, &l).await;
    println!("  {}", out.stdout.lines().next().unwrap_or_default());
    let (mut busy, errors) = (during.latencies, during.errors);
    println!(
        "migrate run (online): {:.1} s wall ({:.2}x the baseline), swap lock {} ms, WAL {} (writer's included); writer errors: {}",
        online.as_secs_f64(),
        online.as_secs_f64() / baseline.as_secs_f64(),
        swap_ms(&out.stdout).unwrap_or(0),
        mb(wal),
        errors.len()
    );
    for line in out
        .stderr
        .lines()
        .filter(|l| l.contains("built in") || l.contains("index"))
    {
        println!("    {}", line.trim());
    }
    show("writer before the migration", &mut quiet);
    show("writer during the online migration", &mut busy);
    let v = Instant::now();
    cli.run_async(["migrate", "verify", "--table", "public.pricing_data"])
        .await
        .assert_success();
    println!("migrate verify: {:.1} s", v.elapsed().as_secs_f64());
    let after = index_bytes(&cluster, "online", "pricing_data").await;
    cluster.exec("online", "REINDEX TABLE pricing_data").await;
    let fresh = index_bytes(&cluster, "online", "pricing_data").await;
    println!(
        "online indexes: {} after the migration, {} rebuilt fresh (REINDEX TABLE): {:.3}x",
        mb(after),
        mb(fresh),
        after as f64 / fresh as f64
    );
    drop_db(&cluster, "online").await;

    // pg_partman 4.7: the partitioned table made by create_parent (with the same indexes), then
    // partition_data_proc moving the rows out of the plain table one month per transaction
    // (p_wait 0: no pause between batches), the single-row writer writing the source meanwhile.
    if crate::common::partman_installed() {
        copy_db(&cluster, "base", "partman").await;
        cluster
            .exec(
                "partman",
                "CREATE SCHEMA partman; CREATE EXTENSION pg_partman SCHEMA partman;",
            )
            .await;
        let opts = cluster.connect_options("partman");
        let during = latency_writer(opts, max_id).await;
        let l = lsn(&cluster).await;
        let t = Instant::now();
        cluster
            .exec(
                "partman",
                r#"CREATE TABLE p (LIKE pricing_data INCLUDING DEFAULTS) PARTITION BY RANGE (date);
                   ALTER TABLE p ADD PRIMARY KEY (id, date);
                   CREATE INDEX ON p ("propertyId", date);
                   CREATE INDEX ON p (date);
                   SELECT partman.create_parent(p_parent_table => 'public.p', p_control => 'date',
                     p_type => 'native', p_interval => 'monthly', p_premake => 3,
                     p_start_partition => date_trunc('month', current_date - 3 * 365)::date::text);"#,
            )
            .await;
        let setup = t.elapsed();
        cluster
            .exec(
                "partman",
                "CALL partman.partition_data_proc('public.p', p_interval => '1 month', p_batch => 100000, p_wait => 0, p_source_table => 'public.pricing_data', p_quiet => true)",
            )
            .await;
        let moved = t.elapsed();
        cluster.exec("partman", "ANALYZE p").await;
        let partman = t.elapsed();
        let during = during.stop().await;
        let wal = wal_since(&cluster, &l).await;
        let (mut busy, errors) = (during.latencies, during.errors);
        let idx = index_bytes(&cluster, "partman", "p").await;
        let dead = index_bytes(&cluster, "partman", "pricing_data").await;
        let left: i64 = cluster
            .query_scalar("partman", "SELECT count(*) FROM ONLY pricing_data")
            .await;
        println!(
            "pg_partman 4.7 partition_data_proc: {:.1} s wall ({:.2}x the baseline; set-up {:.1} s, move {:.1} s, ANALYZE {:.1} s), WAL {}, indexes {}, dead index left on the emptied source {}, rows left in the source (the writer's inserts) {left}; writer errors: {}",
            partman.as_secs_f64(),
            partman.as_secs_f64() / baseline.as_secs_f64(),
            setup.as_secs_f64(),
            (moved - setup).as_secs_f64(),
            (partman - moved).as_secs_f64(),
            mb(wal),
            mb(idx),
            mb(dead),
            errors.len()
        );
        show("writer (on the source table) during pg_partman", &mut busy);
        println!(
            "online vs pg_partman: {:.2}x the time",
            online.as_secs_f64() / partman.as_secs_f64()
        );
        drop_db(&cluster, "partman").await;
    } else {
        println!("pg_partman: not installed (apt-get install postgresql-15-partman); skipped");
    }

    // Swap lock hold: 10 online runs of a smaller table with the same 3-years-plus partitions.
    cluster.exec("postgres", "CREATE DATABASE small").await;
    load(&cluster, "small", 200_000).await;
    let mut held = Vec::new();
    for i in 0..10 {
        let name = format!("swap{i}");
        copy_db(&cluster, "small", &name).await;
        let cli = bench_cli().config(&config(&cluster.url(&name)));
        let out = cli
            .run_async(["migrate", "run", "--table", "public.pricing_data"])
            .await;
        out.assert_success();
        held.push(swap_ms(&out.stdout).unwrap_or(0));
        drop_db(&cluster, &name).await;
    }
    held.sort();
    println!(
        "swap lock hold over 10 runs (40 partitions, 3 indexes): min {} ms, median {} ms, max {} ms ({held:?})",
        held[0], held[5], held[9]
    );
}

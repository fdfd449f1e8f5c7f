//! Lock safety: `maintain` never makes the application wait much longer than `lock_timeout`,
//! gives up naming the lock it could not get, and finishes on the next run; two `maintain`
//! processes at once leave exactly the right partitions.

use std::time::{Duration, Instant};

use sqlx::PgConnection;

use crate::common::fixtures::{self, count, partition_names, pricing_db, MONTHLY};
use crate::common::writer::{Pace, Report, Statement};
use crate::common::{Cli, Output, TestDb, Writer};

/// Dates of application rows that land in existing monthly partitions.
const MONTHS: &[&str] = &["2026-11-10", "2026-12-10"];

const LOCK_TIMEOUT: Duration = Duration::from_millis(200);

/// Headroom over `lock_timeout` for an application statement on a loaded 2-core machine: the
/// bound is about "waits for lock_timeout, not for the blocker", not about milliseconds.
const SLACK: Duration = Duration::from_secs(2);

/// An application statement waiting this long is stuck behind the blocker, not behind us.
const STUCK: Duration = Duration::from_secs(15);

/// `pricing_data` configured with `tables`, a 200 ms lock timeout and three attempts per step.
fn cli(db: &TestDb, tables: &str) -> Cli {
    Cli::new().config(&fixtures::config(db, tables).replace(
        "lock_timeout = \"1s\"",
        &format!(
            "lock_timeout = \"{}ms\"\nlock_retries = 3",
            LOCK_TIMEOUT.as_millis()
        ),
    ))
}

async fn release(mut conn: PgConnection) {
    sqlx::raw_sql("COMMIT").execute(&mut conn).await.unwrap();
}

/// Runs `maintain` with `args` in the background while the application inserts rows one at a
/// time, dated in turn from `dates` (say, one for the default partition and one for a month);
/// measures each. What the application saw is reported from the start of `maintain` to its end.
async fn maintain_under_load(
    db: &TestDb,
    cli: &Cli,
    args: &[&str],
    dates: &[&str],
) -> (Output, Report) {
    let spawned = Instant::now();
    let proc = cli.spawn(args);
    let app = Writer::start_each(
        db.connect_options(),
        vec![Statement::cycling(
            "INSERT INTO pricing_data (\"propertyId\", date) VALUES ('app', $1::date)",
            dates,
        )],
        // Fail, not hang, if maintain queues the application behind the blocker for good.
        Pace::pause(Duration::from_millis(15)).stuck_after(STUCK),
    )
    .await;
    let out = proc.wait(Duration::from_secs(120)).await;
    let ended = Instant::now();
    let app = app.stop().await;
    // The phase this is about: inserts while maintain ran.
    assert!(
        app.written_between(spawned, ended) > 0,
        "no insert ran during maintain: {out}"
    );
    (out, app)
}

#[track_caller]
fn assert_app_not_held_up(latency: &Report, out: &Output) {
    assert!(
        latency.errors.is_empty(),
        "the application's inserts failed: {:?}\n{out}",
        latency.first_errors(5)
    );
    assert!(
        latency.longest() < LOCK_TIMEOUT + SLACK,
        "an application insert waited {:?} (lock_timeout {LOCK_TIMEOUT:?}): {out}",
        latency.longest()
    );
}

#[tokio::test]
async fn a_session_holding_the_default_partition_makes_maintain_give_up_without_holding_up_inserts()
{
    let db = pricing_db().await;
    let cli = cli(&db, MONTHLY);
    cli.run_async(["maintain", "--now", "2026-11-25"])
        .await
        .assert_success();
    let blocker = db
        .hold("LOCK TABLE pricing_data_default IN ACCESS SHARE MODE")
        .await;

    // A month later, March 2027 is due; creating it must lock the default partition.
    let started = Instant::now();
    let (out, latency) = maintain_under_load(
        &db,
        &cli,
        &["maintain", "--now", "2026-12-25"],
        &["2001-01-01", "2026-12-10"],
    )
    .await;
    let took = started.elapsed();
    out.assert_code(1);
    assert!(
        out.stdout.contains(
            "could not get the lock for `LOCK TABLE \"public\".\"pricing_data_default\" IN ACCESS EXCLUSIVE MODE` within lock_timeout (200ms)"
        ),
        "{out}"
    );
    assert_app_not_held_up(&latency, &out);
    println!(
        "lock held by another session: maintain gave up in {took:?}; {} inserts, worst {:?}",
        latency.statements,
        latency.longest()
    );
    let leftover: i64 = db
        .query_scalar("SELECT count(*) FROM pg_class WHERE relname = 'pricing_data_2027_03'")
        .await;
    assert_eq!(leftover, 0, "a failed step must leave nothing behind");

    release(blocker).await;
    cli.run_async(["maintain", "--now", "2026-12-25"])
        .await
        .assert_success();
    assert!(partition_names(&db)
        .await
        .contains(&"pricing_data_2027_03".to_string()));
    assert_eq!(count(&db, "pricing_data").await, latency.written as i64);
}

#[tokio::test]
async fn an_open_read_transaction_does_not_stop_partitions_being_created_without_a_default() {
    let db = pricing_db().await;
    let tables = MONTHLY.replace("default_partition = true", "default_partition = false");
    let cli = cli(&db, &tables);
    cli.run_async(["maintain", "--now", "2026-11-25"])
        .await
        .assert_success();
    // A report that reads the whole table in one long transaction.
    let reader = db.hold("SELECT count(*) FROM pricing_data").await;

    let (out, latency) =
        maintain_under_load(&db, &cli, &["maintain", "--now", "2026-12-25"], MONTHS).await;
    out.assert_success();
    assert!(
        out.stdout.contains("create public.pricing_data_2027_03 ok"),
        "{out}"
    );
    assert_app_not_held_up(&latency, &out);
    release(reader).await;
}

/// The six months before November 2026, made by hand, then everything `MONTHLY` wants.
async fn table_with_old_months(db: &TestDb, cli: &Cli) {
    let mut sql = String::new();
    for m in 5..=10 {
        sql.push_str(&format!(
            "CREATE TABLE pricing_data_2026_{m:02} PARTITION OF pricing_data \
             FOR VALUES FROM ('2026-{m:02}-01') TO ('2026-{:02}-01');\n",
            m + 1
        ));
    }
    db.exec(&sql).await;
    cli.run_async(["maintain", "--now", "2026-11-25"])
        .await
        .assert_success();
}

#[tokio::test]
async fn retention_behind_an_open_read_transaction_gives_up_and_finishes_on_the_next_run() {
    let db = pricing_db().await;
    table_with_old_months(&db, &cli(&db, MONTHLY)).await;
    let cli = cli(
        &db,
        &format!("{MONTHLY}retention = \"3 months\"\nretention_mode = \"drop\"\n"),
    );
    let reader = db.hold("SELECT count(*) FROM pricing_data").await;

    let (out, latency) =
        maintain_under_load(&db, &cli, &["maintain", "--now", "2026-11-25"], MONTHS).await;
    out.assert_code(1);
    assert!(
        out.stdout.contains(
            "could not get the lock for `ALTER TABLE \"public\".\"pricing_data\" DETACH PARTITION \"public\".\"pricing_data_2026_05\"`"
        ),
        "{out}"
    );
    assert_app_not_held_up(&latency, &out);
    assert!(partition_names(&db)
        .await
        .contains(&"pricing_data_2026_05".to_string()));

    release(reader).await;
    cli.run_async(["maintain", "--now", "2026-11-25"])
        .await
        .assert_success();
    let names = partition_names(&db).await;
    assert_eq!(
        names.first().map(String::as_str),
        Some("pricing_data_2026_08"),
        "{names:?}"
    );
}

#[tokio::test]
async fn a_concurrent_detach_interrupted_by_a_reader_is_finalized_on_the_next_run() {
    let db = pricing_db().await;
    let version: String = db.query_scalar("SHOW server_version_num").await;
    if version.parse::<i32>().unwrap() < 140000 {
        // No DETACH CONCURRENTLY before 14: partkeeper detaches plainly there, which
        // retention_behind_an_open_read_transaction_gives_up_and_finishes_on_the_next_run covers.
        eprintln!("skipped: PostgreSQL {version} has no DETACH ... CONCURRENTLY");
        return;
    }
    let no_default = MONTHLY.replace("default_partition = true", "default_partition = false");
    table_with_old_months(&db, &cli(&db, &no_default)).await;
    let cli = cli(
        &db,
        &format!("{no_default}retention = \"3 months\"\nretention_mode = \"detach\"\n"),
    );
    let reader = db.hold("SELECT count(*) FROM pricing_data").await;

    let (out, latency) =
        maintain_under_load(&db, &cli, &["maintain", "--now", "2026-11-25"], MONTHS).await;
    out.assert_code(1);
    assert!(
        out.stdout.contains("DETACH PARTITION \"public\".\"pricing_data_2026_05\" CONCURRENTLY` within lock_timeout"),
        "{out}"
    );
    assert!(
        out.stdout
            .contains("2 more action(s) left for the next run"),
        "{out}"
    );
    assert_app_not_held_up(&latency, &out);
    let check = cli.run_async(["check", "--now", "2026-11-25"]).await;
    check.assert_code(1);
    assert!(
        check
            .stdout
            .contains("pricing_data_2026_05 is stuck half-detached"),
        "{check}"
    );

    release(reader).await;
    let out = cli.run_async(["maintain", "--now", "2026-11-25"]).await;
    out.assert_success();
    let names = partition_names(&db).await;
    assert_eq!(
        names.first().map(String::as_str),
        Some("pricing_data_2026_08"),
        "{names:?} {out}"
    );
    let detached: i64 = db
        .query_scalar("SELECT count(*) FROM pg_class WHERE relname IN ('pricing_data_2026_05', 'pricing_data_2026_06', 'pricing_data_2026_07') AND NOT relispartition")
        .await;
    assert_eq!(detached, 3);
    cli.run_async(["check", "--now", "2026-11-25"])
        .await
        .assert_success();
}

#[tokio::test]
async fn two_maintain_processes_at_once_leave_exactly_the_right_partitions() {
    let db = pricing_db().await;
    let tables = format!("{MONTHLY}retention = \"2 months\"\nretention_mode = \"drop\"\n");
    let cli = cli(&db, &tables);
    for (round, now) in [
        "2026-01-15",
        "2026-02-15",
        "2026-03-15",
        "2026-05-15",
        "2026-09-15",
    ]
    .into_iter()
    .enumerate()
    {
        let a = cli.spawn(["maintain", "--now", now]);
        let b = cli.spawn(["maintain", "--now", now]);
        let (a, b) = (
            a.wait(Duration::from_secs(60)).await,
            b.wait(Duration::from_secs(60)).await,
        );
        a.assert_success();
        b.assert_success();
        // Current month, three ahead, the two before it kept by retention, and the default.
        let month = |k: i32| {
            let start = chrono::NaiveDate::parse_from_str(now, "%Y-%m-%d").unwrap();
            let d = if k >= 0 {
                start.checked_add_months(chrono::Months::new(k as u32))
            } else {
                start.checked_sub_months(chrono::Months::new((-k) as u32))
            };
            d.unwrap().format("pricing_data_%Y_%m").to_string()
        };
        let mut expected: Vec<String> = (-2..=3)
            .map(month)
            .filter(|m| m.as_str() >= "pricing_data_2026_01") // the first round's month
            .collect();
        expected.push("pricing_data_default".into());
        assert_eq!(
            partition_names(&db).await,
            expected,
            "round {round}\n{a}\n{b}"
        );
    }
}

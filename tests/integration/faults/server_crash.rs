//! The server crashes (immediate-mode stop) in the middle of a `maintain` pass: at a create step
//! waiting for the default partition's lock, in the middle of moving rows out of the default, in
//! the middle of a concurrent detach, and at arbitrary moments. Afterwards nothing is half-built,
//! no row is lost or doubled, and the next run finishes the work.

use std::time::{Duration, Instant};

use super::{
    cli_with_lock_timeout, partkeeper_session, pricing_db_on, rows_fingerprint,
    unattached_partition_tables, until_connected, NOTICE_CRASH,
};
use crate::common::fixtures::{partition_names, MONTHLY};
use crate::common::{eventually, pg_major, Cli, Cluster, Output, TestDb, PATIENCE};

/// Long enough that no step gives up on a lock before the test has crashed the server under it.
const PATIENT_LOCK_TIMEOUT: &str = "60s";

/// `rows` rows per day (`propertyId` p0, p1, ...) from `from` until `to` (exclusive) written
/// straight into the default partition, which exists before any month does.
fn fill_default(from: &str, to: &str, rows: u32) -> String {
    format!(
        "INSERT INTO pricing_data (\"propertyId\", date, price)
         SELECT 'p' || p, d::date, 1
           FROM generate_series(DATE '{from}', DATE '{to}' - 1, interval '1 day') d,
                generate_series(1, {rows}) p"
    )
}

/// Makes deleting the marker row (price = -1) from the default partition sleep while
/// `crash_switch.armed` is true: a deterministic "this step is half done and holds its locks".
const SLOW_MARKER: &str = r#"
CREATE TABLE crash_switch (armed boolean NOT NULL);
INSERT INTO crash_switch VALUES (true);
CREATE FUNCTION slow_marker() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.price = -1 AND (SELECT armed FROM crash_switch) THEN
    PERFORM pg_sleep(600);
  END IF;
  RETURN OLD;
END $$;
CREATE TRIGGER slow_marker BEFORE DELETE ON pricing_data_default
  FOR EACH ROW EXECUTE FUNCTION slow_marker();
"#;

/// Crashes the server, checks that the command running against it exits with an error that says
/// the connection went, and starts the server again.
async fn crash_under(cluster: &Cluster, running: crate::common::Daemon) -> Output {
    cluster.kill();
    let out = running.wait(NOTICE_CRASH).await;
    assert_ne!(
        out.code(),
        Some(0),
        "maintain cannot succeed without its server: {out}"
    );
    assert!(
        out.stdout.contains("connection") || out.stderr.contains("connection"),
        "the failure should say the connection went: {out}"
    );
    cluster.start_again();
    println!("{out}");
    out
}

/// The invariants after any crash: no table built but not attached, rows as they were.
async fn assert_nothing_half_done(db: &TestDb, rows: (i64, i64), crash: &Output) {
    assert_eq!(
        unattached_partition_tables(db).await,
        Vec::<String>::new(),
        "a rolled-back create left its table behind:\n{crash}"
    );
    assert_eq!(
        rows_fingerprint(db).await,
        rows,
        "rows lost or doubled:\n{crash}"
    );
}

/// Reruns `maintain` (now that the server is back) and checks that it completes and that `check`
/// agrees.
async fn assert_next_run_finishes(cli: &Cli, now: &str, db: &TestDb, rows: (i64, i64)) {
    let out = cli.run_async(["maintain", "--now", now]).await;
    out.assert_success();
    assert_eq!(unattached_partition_tables(db).await, Vec::<String>::new());
    assert_eq!(rows_fingerprint(db).await, rows, "{out}");
    cli.run_async(["check", "--now", now])
        .await
        .assert_success();
    let again = cli.run_async(["maintain", "--now", now]).await;
    assert!(again.stdout.contains("nothing to do"), "{again}");
}

#[tokio::test]
async fn a_server_crash_while_a_create_waits_for_the_default_partitions_lock_leaves_nothing_half_built(
) {
    let cluster = Cluster::start();
    let db = pricing_db_on(&cluster).await;
    let cli = cli_with_lock_timeout(&db, MONTHLY, PATIENT_LOCK_TIMEOUT);
    cli.run_async(["maintain", "--now", "2026-11-25"])
        .await
        .assert_success();
    db.exec(&fill_default("2027-03-01", "2027-04-01", 10)).await;
    let rows = rows_fingerprint(&db).await;

    // A month later March 2027 is due: its table is created in the step's transaction, then the
    // step waits for the default partition, which a report is reading.
    let reader = db.hold("SELECT count(*) FROM pricing_data_default").await;
    let maintain = cli.spawn(["maintain", "--now", "2026-12-25"]);
    eventually(PATIENCE, "maintain to wait for the default's lock", || {
        partkeeper_session(&db, "wait_event_type = 'Lock'")
    })
    .await;
    let crash = crash_under(&cluster, maintain).await;
    drop(reader);

    assert_nothing_half_done(&db, rows, &crash).await;
    assert!(
        !partition_names(&db)
            .await
            .contains(&"pricing_data_2027_03".to_string()),
        "{crash}"
    );
    assert_next_run_finishes(&cli, "2026-12-25", &db, rows).await;
    let march: i64 = db
        .query_scalar("SELECT count(*) FROM pricing_data_2027_03")
        .await;
    assert_eq!(march, 31 * 10, "March's rows moved out of the default");
}

#[tokio::test]
async fn a_server_crash_in_the_middle_of_moving_rows_out_of_the_default_loses_none() {
    let cluster = Cluster::start();
    let db = pricing_db_on(&cluster).await;
    db.exec("CREATE TABLE pricing_data_default PARTITION OF pricing_data DEFAULT")
        .await;
    // Rows of the four months the first pass creates, already in the default; the marker sits in
    // December, so November's create commits and December's is cut short halfway through.
    db.exec(&fill_default("2026-11-01", "2027-03-01", 20)).await;
    db.exec(
        "INSERT INTO pricing_data (\"propertyId\", date, price) VALUES ('marker', '2026-12-15', -1)",
    )
    .await;
    db.exec(SLOW_MARKER).await;
    let rows = rows_fingerprint(&db).await;
    let cli = cli_with_lock_timeout(&db, MONTHLY, PATIENT_LOCK_TIMEOUT);

    let maintain = cli.spawn(["maintain", "--now", "2026-11-25"]);
    eventually(PATIENCE, "maintain to be moving December's rows", || {
        partkeeper_session(&db, "wait_event = 'PgSleep'")
    })
    .await;
    let crash = crash_under(&cluster, maintain).await;
    assert!(
        crash
            .stdout
            .contains("create public.pricing_data_2026_11 ok"),
        "November was done before the crash: {crash}"
    );

    assert_nothing_half_done(&db, rows, &crash).await;
    assert_eq!(
        partition_names(&db).await,
        ["pricing_data_2026_11", "pricing_data_default"],
        "only the committed create is there: {crash}"
    );
    db.exec("UPDATE crash_switch SET armed = false").await;
    assert_next_run_finishes(&cli, "2026-11-25", &db, rows).await;
    let in_default: i64 = db
        .query_scalar("SELECT count(*) FROM pricing_data_default")
        .await;
    assert_eq!(in_default, 0, "every row found its month");
}

#[tokio::test]
async fn a_server_crash_during_a_concurrent_detach_is_finalized_by_the_next_run() {
    if pg_major() < 14 {
        eprintln!("DETACH PARTITION ... CONCURRENTLY needs PostgreSQL 14; skipped");
        return;
    }
    let cluster = Cluster::start();
    let db = pricing_db_on(&cluster).await;
    let no_default = MONTHLY.replace("default_partition = true", "default_partition = false");
    for m in 5..=10 {
        db.exec(&format!(
            "CREATE TABLE pricing_data_2026_{m:02} PARTITION OF pricing_data \
             FOR VALUES FROM ('2026-{m:02}-01') TO ('2026-{:02}-01');
             INSERT INTO pricing_data (\"propertyId\", date) VALUES ('a', '2026-{m:02}-03');",
            m + 1
        ))
        .await;
    }
    let cli = cli_with_lock_timeout(
        &db,
        &format!("{no_default}retention = \"3 months\"\nretention_mode = \"detach\"\n"),
        PATIENT_LOCK_TIMEOUT,
    );
    // The detach's second half waits for every transaction that may still see the partition.
    let reader = db.hold("SELECT count(*) FROM pricing_data").await;
    let maintain = cli.spawn(["maintain", "--now", "2026-11-25"]);
    eventually(PATIENCE, "the detach to wait for the reader", || async {
        partkeeper_session(
            &db,
            "query LIKE '%DETACH PARTITION%CONCURRENTLY%' AND wait_event_type = 'Lock'",
        )
        .await
    })
    .await;
    let crash = crash_under(&cluster, maintain).await;
    drop(reader);

    let pending: i64 = db
        .query_scalar("SELECT count(*) FROM pg_inherits WHERE inhdetachpending")
        .await;
    assert_eq!(
        pending, 1,
        "the crash left the first half of the detach: {crash}"
    );
    let check = cli.run_async(["check", "--now", "2026-11-25"]).await;
    assert!(check.stdout.contains("stuck half-detached"), "{check}");

    let out = cli.run_async(["maintain", "--now", "2026-11-25"]).await;
    out.assert_success();
    assert_eq!(
        partition_names(&db).await.first().map(String::as_str),
        Some("pricing_data_2026_08"),
        "{out}"
    );
    let detached: i64 = db
        .query_scalar(
            "SELECT count(*) FROM pg_class WHERE relname IN ('pricing_data_2026_05', \
             'pricing_data_2026_06', 'pricing_data_2026_07') AND NOT relispartition",
        )
        .await;
    assert_eq!(detached, 3, "{out}");
    let total: i64 = db
        .query_scalar(
            "SELECT (SELECT count(*) FROM pricing_data) + (SELECT count(*) FROM pricing_data_2026_05) \
             + (SELECT count(*) FROM pricing_data_2026_06) + (SELECT count(*) FROM pricing_data_2026_07)",
        )
        .await;
    assert_eq!(total, 6, "every row is in the table or a detached month");
    cli.run_async(["check", "--now", "2026-11-25"])
        .await
        .assert_success();
}

/// Delays after which `server_crashes_at_arbitrary_moments...` crashes the server: the first
/// from the start of the process (before maintain has connected), the others from the moment its
/// session shows on the server (a whole pass then takes some 100-300 ms here: timed from the
/// start of the process, every crash landed before the connection or after the pass).
const CRASH_AFTER_MS: &[u64] = &[0, 0, 30, 80, 200];

#[tokio::test]
async fn server_crashes_at_arbitrary_moments_of_a_pass_never_leave_it_half_done() {
    let cluster = Cluster::start();
    let db = pricing_db_on(&cluster).await;
    db.exec("CREATE TABLE pricing_data_default PARTITION OF pricing_data DEFAULT")
        .await;
    // Enough rows in the default that moving each month takes a while, yet few enough that
    // each create is the inline one transaction (at most `INLINE_MOVE_ROWS`, 10,000, a month).
    db.exec(&fill_default("2026-11-01", "2027-03-01", 300))
        .await;
    let rows = rows_fingerprint(&db).await;
    let cli = cli_with_lock_timeout(&db, MONTHLY, PATIENT_LOCK_TIMEOUT);

    let mut seen = Vec::new();
    let mut mid_pass = 0;
    for (round, &delay) in CRASH_AFTER_MS.iter().enumerate() {
        let started = Instant::now();
        let mut maintain = cli.spawn(["maintain", "--now", "2026-11-25"]);
        if round > 0 {
            until_connected(&db, &mut maintain).await;
        }
        tokio::time::sleep(Duration::from_millis(delay)).await;
        cluster.kill();
        let out = maintain.wait(NOTICE_CRASH).await;
        cluster.start_again();
        assert_nothing_half_done(&db, rows, &out).await;
        let names = partition_names(&db).await;
        // Where the crash landed, from the exit code: 2, before maintain could connect; 1, in
        // the pass (it lost its connection); 0, after the pass.
        let landed = match out.code() {
            Some(2) => "before the pass",
            Some(1) => {
                mid_pass += 1;
                "in the pass"
            }
            Some(0) => "after the pass",
            _ => panic!("maintain neither finished nor failed as expected: {out}"),
        };
        seen.push(format!(
            "crash at {:?}: {landed}, {} partition(s) attached",
            started.elapsed(),
            names.len()
        ));
        if out.success() {
            // The pass beat the crash: nothing left to interrupt.
            break;
        }
    }
    println!("{}", seen.join("\n"));
    assert!(
        mid_pass > 0,
        "no crash landed in the middle of a pass:\n{}",
        seen.join("\n")
    );
    assert_next_run_finishes(&cli, "2026-11-25", &db, rows).await;
    assert_eq!(partition_names(&db).await.len(), 5);
}

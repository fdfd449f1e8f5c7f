//! Lock storms: sessions that keep taking conflicting locks on a managed table (long read
//! transactions, a queued `LOCK TABLE ... IN ACCESS EXCLUSIVE MODE`, a pending `ALTER TABLE`)
//! while `maintain` runs in a loop and the application inserts one row at a time. The
//! application's worst insert is compared with a baseline run of the same storm without
//! `partkeeper`: our DDL may add about `lock_timeout` to it, not queue the application behind the
//! storm for good. `maintain` retries, names the lock it could not get, and finishes once the
//! storm is over.

use std::time::{Duration, Instant};

use chrono::{Months, NaiveDate};
use sqlx::{Executor, PgConnection};

use crate::common::fixtures::{self, partition_names, pricing_db, MONTHLY};
use crate::common::writer::{Pace, Statement};
use crate::common::{Cli, Output, TestDb, Writer};

const LOCK_TIMEOUT: Duration = Duration::from_millis(200);

/// How long each phase (baseline, then with `maintain`) lasts.
const PHASE: Duration = Duration::from_secs(4);

/// The application's worst insert with `maintain` running may be at most this many times
/// (baseline worst + lock_timeout): a ratio, because absolute times on a loaded 2-core machine
/// say little, and generous, because a storm's worst moment is itself random.
const RATIO: u32 = 3;

/// An application insert stuck this long is queued for good, not delayed.
const STUCK: Duration = Duration::from_secs(20);

/// How long each storm session holds its lock, and how long it pauses between two.
const READ_HOLD: Duration = Duration::from_millis(300);
const EXCLUSIVE_HOLD: Duration = Duration::from_millis(100);
const EXCLUSIVE_PAUSE: Duration = Duration::from_millis(400);

/// The first `--now`; each `maintain` of the loop goes one month further, so that each has a
/// partition to create (and rows to move out of the default).
const FIRST_NOW: &str = "2026-11-25";

fn cli(db: &TestDb) -> Cli {
    Cli::new().config(&fixtures::config(db, MONTHLY).replace(
        "lock_timeout = \"1s\"",
        &format!(
            "lock_timeout = \"{}ms\"\nlock_retries = 3",
            LOCK_TIMEOUT.as_millis()
        ),
    ))
}

/// `FIRST_NOW` plus `months`.
fn now_plus(months: u32) -> String {
    NaiveDate::parse_from_str(FIRST_NOW, "%Y-%m-%d")
        .unwrap()
        .checked_add_months(Months::new(months))
        .unwrap()
        .format("%Y-%m-%d")
        .to_string()
}

/// One storm session: `sql` in a transaction held for `hold`, then a pause, until `until`.
/// Its own errors (a deadlock the server broke, say) are part of the storm, not of the test.
async fn storm_session(
    mut conn: PgConnection,
    sql: &'static str,
    hold: Duration,
    pause: Duration,
    start_after: Duration,
    until: Instant,
) -> u32 {
    tokio::time::sleep(start_after).await;
    let mut rounds = 0;
    while Instant::now() < until {
        let script = format!(
            "BEGIN; {sql}; SELECT pg_sleep({}); ROLLBACK;",
            hold.as_secs_f64()
        );
        if conn.execute(sqlx::raw_sql(&script)).await.is_err() {
            let _ = conn.execute("ROLLBACK").await;
        }
        rounds += 1;
        tokio::time::sleep(pause).await;
    }
    rounds
}

/// Starts the storm on `db` until `until`: two readers taking turns so that the table is almost
/// always being read, a queued exclusive lock on the default partition and a pending ALTER on
/// the parent, which queue behind the readers and the application behind them.
async fn storm(db: &TestDb, until: Instant) -> Vec<tokio::task::JoinHandle<u32>> {
    let sessions: [(&'static str, Duration, Duration, Duration); 4] = [
        (
            "SELECT count(*) FROM pricing_data",
            READ_HOLD,
            Duration::from_millis(20),
            Duration::ZERO,
        ),
        (
            "SELECT count(*) FROM pricing_data",
            READ_HOLD,
            Duration::from_millis(20),
            READ_HOLD / 2,
        ),
        (
            "LOCK TABLE pricing_data_default IN ACCESS EXCLUSIVE MODE",
            EXCLUSIVE_HOLD,
            EXCLUSIVE_PAUSE,
            Duration::from_millis(100),
        ),
        (
            "ALTER TABLE pricing_data ALTER COLUMN price SET DEFAULT 0",
            EXCLUSIVE_HOLD,
            EXCLUSIVE_PAUSE,
            Duration::from_millis(300),
        ),
    ];
    let mut tasks = Vec::new();
    for (sql, hold, pause, start_after) in sessions {
        let conn = db.connect().await;
        tasks.push(tokio::spawn(storm_session(
            conn,
            sql,
            hold,
            pause,
            start_after,
            until,
        )));
    }
    tasks
}

/// The application's inserts during one phase.
#[derive(Debug, Default)]
struct Latencies(Vec<Duration>);

impl Latencies {
    fn worst(&self) -> Duration {
        self.0.iter().copied().max().unwrap_or_default()
    }

    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.0.clone();
        sorted.sort();
        sorted
            .get(((sorted.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or_default()
    }

    fn summary(&self) -> String {
        format!(
            "{} inserts, p50 {:?}, p99 {:?}, worst {:?}",
            self.0.len(),
            self.percentile(0.5),
            self.percentile(0.99),
            self.worst()
        )
    }
}

/// The application: one row at a time, alternately into the default partition (which
/// `maintain` must lock to create a partition) and into the current month, until stopped.
async fn application(db: &TestDb) -> Writer {
    Writer::start_each(
        db.connect_options(),
        vec![Statement::cycling(
            "INSERT INTO pricing_data (\"propertyId\", date) VALUES ('app', $1::date)",
            &["2001-01-01", "2026-11-10"],
        )],
        Pace::pause(Duration::from_millis(10)).stuck_after(STUCK),
    )
    .await
}

/// The application's latencies at `until`; every insert must have succeeded.
async fn application_until(app: Writer, until: Instant) -> Latencies {
    tokio::time::sleep_until(until.into()).await;
    let seen = app.stop().await;
    assert!(
        seen.errors.is_empty(),
        "the application's inserts failed: {:?}",
        seen.first_errors(5)
    );
    Latencies(seen.latencies)
}

/// `maintain` again and again until `until`, one month further each time; returns the outputs
/// and the month offset reached.
async fn maintain_loop(cli: &Cli, until: Instant) -> (Vec<Output>, u32) {
    let mut outputs = Vec::new();
    let mut month = 0;
    while Instant::now() < until {
        month += 1;
        let out = cli.run_async(["maintain", "--now", &now_plus(month)]).await;
        assert!(
            out.code() == Some(0) || out.code() == Some(1),
            "a storm is no reason for a usage or connection error: {out}"
        );
        outputs.push(out);
    }
    (outputs, month)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_lock_storm_maintain_adds_at_most_about_lock_timeout_to_the_applications_worst_insert(
) {
    let db = pricing_db().await;
    let cli = cli(&db);
    cli.run_async(["maintain", "--now", FIRST_NOW])
        .await
        .assert_success();

    // Baseline: the storm and the application, no partkeeper.
    let until = Instant::now() + PHASE;
    let storm_tasks = storm(&db, until).await;
    let baseline = application_until(application(&db).await, until).await;
    for t in storm_tasks {
        t.await.unwrap();
    }

    // The same storm with maintain running in a loop.
    let until = Instant::now() + PHASE;
    let storm_tasks = storm(&db, until).await;
    let app = application(&db).await;
    let (outputs, months) = maintain_loop(&cli, until).await;
    let with_partkeeper = application_until(app, until).await;
    for t in storm_tasks {
        t.await.unwrap();
    }

    let retried = outputs
        .iter()
        .filter(|o| o.stdout.contains("lock wait(s)"))
        .count();
    let gave_up: Vec<&Output> = outputs.iter().filter(|o| !o.success()).collect();
    println!(
        "baseline (storm only): {}\nwith maintain: {}\nmaintain: {} run(s), {} succeeded after retrying, {} gave up",
        baseline.summary(),
        with_partkeeper.summary(),
        outputs.len(),
        retried,
        gave_up.len()
    );
    let bound = (baseline.worst() + LOCK_TIMEOUT) * RATIO;
    assert!(
        with_partkeeper.worst() <= bound,
        "the application's worst insert went from {:?} (storm only) to {:?} with maintain, over {RATIO} x (baseline + lock_timeout {LOCK_TIMEOUT:?})",
        baseline.worst(),
        with_partkeeper.worst()
    );
    assert!(
        retried + gave_up.len() > 0,
        "the storm never made maintain wait; it is not a storm:\n{}",
        outputs.last().map(ToString::to_string).unwrap_or_default()
    );
    for out in &gave_up {
        assert!(
            out.stdout.contains("could not get the lock for `")
                && out.stdout.contains("within lock_timeout (200ms) in 3 attempt(s)"),
            "a failed run names the statement (table and lock) it could not get, and its attempts: {out}"
        );
    }

    // The storm is over: the next run does everything that was left.
    let now = now_plus(months);
    let out = cli.run_async(["maintain", "--now", &now]).await;
    out.assert_success();
    let names = partition_names(&db).await;
    for k in 0..=3 {
        let month = NaiveDate::parse_from_str(&now, "%Y-%m-%d")
            .unwrap()
            .checked_add_months(Months::new(k))
            .unwrap()
            .format("pricing_data_%Y_%m")
            .to_string();
        assert!(names.contains(&month), "{month} missing: {names:?}\n{out}");
    }
    db.exec("DELETE FROM pricing_data WHERE date = '2001-01-01'")
        .await;
    cli.run_async(["check", "--now", &now])
        .await
        .assert_success();
}

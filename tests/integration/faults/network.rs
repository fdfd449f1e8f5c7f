//! The network between `partkeeper` and PostgreSQL stalls (bytes stop, sockets stay open) or is
//! cut (connections closed, new ones refused), through a [`Proxy`]. Commands fail within their
//! timeouts with a clear message instead of hanging, and leave no lock behind them.

use std::time::{Duration, Instant};

use super::{
    config_with_lock_timeout, daemon_config, http_get_within, partkeeper_session, RunningDaemon,
};
use crate::common::fixtures::{self, partition_names, pricing_db, MONTHLY};
use crate::common::http::single_value;
use crate::common::{eventually, Cli, Proxy, TestDb, PATIENCE};

/// Small timeouts, so that giving up is quick to see: connect within 2 s; the server cancels a
/// statement after 5 s.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// The DDL waits up to this long for a lock.
const LOCK_TIMEOUT: Duration = Duration::from_secs(3);

/// Headroom for process start, scheduling on a loaded 2-core machine and the proxy.
const SLACK: Duration = Duration::from_secs(5);

/// A CLI for `db` whose database URL goes through `proxy`, with the timeouts above.
fn cli_through(proxy: &Proxy, db: &TestDb) -> Cli {
    let lock_timeout = format!("{}s", LOCK_TIMEOUT.as_secs());
    let config = config_with_lock_timeout(db, MONTHLY, &lock_timeout)
        .replace(
            "connect_timeout = \"5s\"",
            &format!(
                "connect_timeout = \"{}s\"\nstatement_timeout = \"{}s\"",
                CONNECT_TIMEOUT.as_secs(),
                STATEMENT_TIMEOUT.as_secs()
            ),
        )
        .replace(
            &format!("127.0.0.1:{}", db_port(db)),
            &format!("127.0.0.1:{}", proxy.port()),
        );
    assert!(config.contains(&proxy.port().to_string()), "{config}");
    Cli::new().config(&config)
}

fn db_port(db: &TestDb) -> u16 {
    url::Url::parse(&db.url())
        .ok()
        .and_then(|u| u.port())
        .expect("a test database URL has a port")
}

#[tokio::test]
async fn maintain_through_a_stalled_network_gives_up_at_connect_timeout_with_exit_2() {
    let db = pricing_db().await;
    let proxy = Proxy::start(db_port(&db));
    let cli = cli_through(&proxy, &db).timeout(CONNECT_TIMEOUT + SLACK * 2);
    proxy.stall();

    let started = Instant::now();
    let out = cli.run_async(["maintain", "--now", "2026-11-25"]).await;
    let took = started.elapsed();
    out.assert_code(2);
    assert!(
        out.stderr.contains("did not answer within 2s"),
        "the message should say the server did not answer: {out}"
    );
    assert!(took < CONNECT_TIMEOUT + SLACK, "took {took:?}: {out}");
    assert!(partition_names(&db).await.is_empty(), "nothing was changed");
}

#[tokio::test]
async fn check_through_a_cut_network_exits_2_quickly() {
    let db = pricing_db().await;
    let proxy = Proxy::start(db_port(&db));
    let cli = cli_through(&proxy, &db);
    cli.run_async(["maintain", "--now", "2026-11-25"])
        .await
        .assert_success();
    proxy.cut();

    let started = Instant::now();
    let out = cli.run_async(["check", "--now", "2026-11-25"]).await;
    let took = started.elapsed();
    out.assert_code(2);
    assert!(out.stderr.contains("cannot connect"), "{out}");
    assert!(took < Duration::from_secs(20), "took {took:?}: {out}");

    proxy.resume();
    cli.run_async(["check", "--now", "2026-11-25"])
        .await
        .assert_success();
}

#[tokio::test]
async fn maintain_stalled_in_the_middle_of_a_step_fails_within_its_timeouts_and_leaves_no_lock_behind(
) {
    let db = pricing_db().await;
    let proxy = Proxy::start(db_port(&db));
    let cli = cli_through(&proxy, &db);
    cli.run_async(["maintain", "--now", "2026-11-25"])
        .await
        .assert_success();

    // March 2027 is due a month later; its step waits for the default partition, which a report
    // is reading. The network stalls while it waits; then the report ends, so the server grants
    // the lock and answers into the stalled network.
    let mut reader = db.hold("SELECT count(*) FROM pricing_data_default").await;
    let maintain = cli.spawn(["maintain", "--now", "2026-12-25"]);
    eventually(PATIENCE, "maintain to wait for the default's lock", || {
        partkeeper_session(&db, "wait_event_type = 'Lock'")
    })
    .await;
    proxy.stall();
    let stalled = Instant::now();
    sqlx::raw_sql("COMMIT").execute(&mut reader).await.unwrap();
    eventually(PATIENCE, "the server to grant maintain the lock", || {
        partkeeper_session(&db, "state LIKE 'idle in transaction%'")
    })
    .await;

    // The application writes to the default partition, which the stalled session has locked.
    let mut app = db.connect().await;
    let insert =
        sqlx::query("INSERT INTO pricing_data (\"propertyId\", date) VALUES ('app', '2027-03-10')")
            .execute(&mut app);
    tokio::time::timeout(LOCK_TIMEOUT + SLACK, insert)
        .await
        .unwrap_or_else(|_| {
            panic!("the application waited more than lock_timeout + slack behind a stalled session")
        })
        .expect("the application's insert");
    let app_waited = stalled.elapsed();

    let out = maintain
        .wait(STATEMENT_TIMEOUT + CONNECT_TIMEOUT + SLACK)
        .await;
    let took = stalled.elapsed();
    out.assert_code(1);
    assert!(
        took < STATEMENT_TIMEOUT + CONNECT_TIMEOUT + SLACK,
        "maintain took {took:?} to give up: {out}"
    );
    assert!(
        out.stdout.contains("no answer from PostgreSQL"),
        "the message should say the server stopped answering: {out}"
    );
    println!("stalled network: application waited {app_waited:?}, maintain gave up after {took:?}\n{out}");

    proxy.resume();
    let out = cli.run_async(["maintain", "--now", "2026-12-25"]).await;
    out.assert_success();
    assert!(
        out.stdout.contains("create public.pricing_data_2027_03 ok"),
        "{out}"
    );
    let march: i64 = db
        .query_scalar("SELECT count(*) FROM pricing_data_2027_03")
        .await;
    assert_eq!(march, 1, "the application's row moved to its month");
    cli.run_async(["check", "--now", "2026-12-25"])
        .await
        .assert_success();
}

/// Once a year: only the run-on-start pass happens during a test.
const RARELY: &str = "0 0 1 1 *";

/// "Within a few seconds": `/readyz` must turn 503 this soon after the network goes.
const NOTICE: Duration = Duration::from_secs(8);

/// During a fault every HTTP answer must come within this: probes and scrapes never wait on
/// the database.
const HTTP_PROMPT: Duration = Duration::from_secs(1);

/// How long the tests keep probing a daemon whose network is down after it has turned unready:
/// long enough for a refresh and a heartbeat to hang if anything could.
const KEEP_PROBING: Duration = Duration::from_secs(4);

/// Probes `/healthz`, `/readyz`, `/metrics` and `/status` in turn while the network is down:
/// every answer within [`HTTP_PROMPT`], `/healthz` always 200. Returns how long `/readyz` took
/// to turn 503, after which probing goes on for [`KEEP_PROBING`].
async fn probe_through_the_fault(daemon: &RunningDaemon, fault: &str) -> Duration {
    let started = Instant::now();
    let mut unready_after = None;
    let mut answers = 0;
    loop {
        for path in ["/healthz", "/readyz", "/metrics", "/status"] {
            let asked = Instant::now();
            let answer = http_get_within(daemon.port, path, HTTP_PROMPT).await;
            let Some((code, body)) = answer else {
                panic!(
                    "{fault}: {path} gave no answer within {HTTP_PROMPT:?} ({:?} into the fault)\n{}",
                    started.elapsed(),
                    daemon.daemon.stderr()
                );
            };
            assert!(asked.elapsed() < HTTP_PROMPT);
            answers += 1;
            match path {
                "/healthz" => assert_eq!(code, 200, "{fault}: /healthz {body}"),
                "/readyz" if code == 503 && unready_after.is_none() => {
                    unready_after = Some(started.elapsed());
                    assert!(!body.contains(&proxy_free_marker()), "{body}");
                }
                "/metrics" | "/status" => assert_eq!(code, 200, "{fault}: {path} {body}"),
                _ => {}
            }
        }
        match unready_after {
            Some(t) if started.elapsed() >= t + KEEP_PROBING => break,
            None if started.elapsed() > NOTICE => panic!(
                "{fault}: /readyz still 200 after {NOTICE:?} ({answers} answers)\n{}",
                daemon.daemon.stderr()
            ),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    unready_after.expect("checked in the loop")
}

/// Nothing a probe says may show the password.
fn proxy_free_marker() -> String {
    crate::common::fixtures::PASSWORD.to_string()
}

/// A daemon on `db` whose database connections go through `proxy`, ready.
async fn ready_daemon_through(proxy: &Proxy, db: &TestDb) -> RunningDaemon {
    let url = proxy.route(&crate::common::fixtures::url_with_password(db));
    let daemon = RunningDaemon::start(&daemon_config(&url, RARELY, "1s")).await;
    let d = &daemon;
    eventually(
        PATIENCE,
        "the daemon to be ready and to have maintained",
        || async move {
            d.get("/readyz").await.is_some_and(|(c, _)| c == 200)
                && d.get("/metrics").await.is_some_and(|(_, m)| {
                    single_value(&m, "partkeeper_up") == Some(1.0)
                        && single_value(&m, "partkeeper_leader") == Some(1.0)
                })
        },
    )
    .await;
    daemon
}

/// After `resume`, the daemon is ready again by itself and its refresh reaches the primary.
async fn assert_recovers(daemon: &RunningDaemon, fault: &str) {
    let started = Instant::now();
    eventually(
        PATIENCE,
        &format!("the daemon to recover after the {fault}"),
        || async move {
            daemon.get("/readyz").await.is_some_and(|(c, _)| c == 200)
                && daemon.get("/metrics").await.is_some_and(|(_, m)| {
                    single_value(&m, "partkeeper_up") == Some(1.0)
                        && single_value(&m, "partkeeper_leader") == Some(1.0)
                })
        },
    )
    .await;
    println!(
        "{fault}: ready and leading again {:?} after resume",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_behind_a_stalled_network_turns_unready_keeps_answering_and_recovers_by_itself()
{
    let db = pricing_db().await;
    let proxy = Proxy::start(db_port(&db));
    let daemon = ready_daemon_through(&proxy, &db).await;

    proxy.stall();
    let unready = probe_through_the_fault(&daemon, "stall").await;
    println!("stall: /readyz 503 after {unready:?}");

    proxy.resume();
    assert_recovers(&daemon, "stall").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_behind_a_cut_network_turns_unready_keeps_answering_and_recovers_by_itself() {
    let db = pricing_db().await;
    let proxy = Proxy::start(db_port(&db));
    let daemon = ready_daemon_through(&proxy, &db).await;

    proxy.cut();
    let unready = probe_through_the_fault(&daemon, "cut").await;
    println!("cut: /readyz 503 after {unready:?}");
    let d = &daemon;
    eventually(
        NOTICE,
        "partkeeper_up to say the primary is gone",
        || async move {
            d.get("/metrics")
                .await
                .is_some_and(|(_, m)| single_value(&m, "partkeeper_up") == Some(0.0))
        },
    )
    .await;

    proxy.resume();
    assert_recovers(&daemon, "cut").await;
}

/// Every two seconds, so that passes keep coming during a test.
const OFTEN: &str = "*/2 * * * * *";

/// `partkeeper_maintenance_runs_total{table="public.pricing_data",result}` from a scrape.
fn runs(metrics: &str, result: &str) -> f64 {
    let (table, result) = (
        "table=\"public.pricing_data\"",
        format!("result=\"{result}\""),
    );
    metrics
        .lines()
        .filter(|l| l.starts_with("partkeeper_maintenance_runs_total{"))
        .filter(|l| l.contains(table) && l.contains(&result))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_pass_caught_by_a_stalled_network_fails_in_time_and_the_next_ones_go_on() {
    let db = pricing_db().await;
    let proxy = Proxy::start(db_port(&db));
    let url = proxy.route(&crate::common::fixtures::url_with_password(&db));
    let daemon = RunningDaemon::start(&daemon_config(&url, OFTEN, "1s")).await;
    let d = &daemon;
    eventually(PATIENCE, "a first successful pass", || async move {
        d.get("/metrics")
            .await
            .is_some_and(|(_, m)| runs(&m, "success") >= 1.0)
    })
    .await;

    // The next pass has a partition to create, and waits for the default partition that a
    // report is reading; the network stalls while it waits, then the report ends.
    let next = chrono::Utc::now()
        .date_naive()
        .checked_add_months(chrono::Months::new(1))
        .unwrap()
        .format("pricing_data_%Y_%m")
        .to_string();
    // The drop needs the default's lock too, so the reader starts after it; a pass that slips
    // in between re-creates the partition, and then the test tries again.
    let mut reader = loop {
        db.exec(&format!("DROP TABLE IF EXISTS {next}")).await;
        let reader = db
            .hold("LOCK TABLE pricing_data_default IN ACCESS SHARE MODE")
            .await;
        if !partition_names(&db).await.contains(&next) {
            break reader;
        }
    };
    eventually(PATIENCE, "a pass to wait for the default's lock", || {
        partkeeper_session(&db, "wait_event_type = 'Lock' AND query LIKE 'LOCK TABLE%'")
    })
    .await;
    let failures = runs(&daemon.get("/metrics").await.expect("metrics").1, "failure");
    proxy.stall();
    let stalled = Instant::now();
    sqlx::raw_sql("COMMIT").execute(&mut reader).await.unwrap();

    // The daemon stays alive and answers; the stalled pass fails by itself (the server has
    // granted the lock and its answer is stuck in the network).
    let _ = probe_through_the_fault(&daemon, "stall during a pass").await;
    eventually(
        STATEMENT_TIMEOUT + CONNECT_TIMEOUT + SLACK,
        "the stalled pass to be counted as failed",
        || async move {
            d.get("/metrics")
                .await
                .is_some_and(|(_, m)| runs(&m, "failure") > failures)
        },
    )
    .await;
    let gave_up = stalled.elapsed();
    let log = daemon.daemon.stderr();
    assert!(
        log.contains("lost the connection to PostgreSQL during `LOCK TABLE")
            && log.contains("no answer from PostgreSQL within 7s"),
        "the pass failed for the stall, and says so:\n{log}"
    );
    assert_eq!(
        daemon.get("/healthz").await.map(|(c, _)| c),
        Some(200),
        "the scheduler is alive"
    );

    proxy.resume();
    let (_, now) = daemon.get("/metrics").await.expect("metrics");
    let successes = runs(&now, "success");
    eventually(
        PATIENCE,
        "a later pass to create the dropped partition",
        || async move {
            d.get("/metrics")
                .await
                .is_some_and(|(_, m)| runs(&m, "success") > successes)
        },
    )
    .await;
    assert!(
        partition_names(&db).await.contains(&next),
        "{}",
        daemon.daemon.stderr()
    );
    println!("a pass caught by the stall failed {gave_up:?} after it began");
}

const MIGRATE_ROWS: i64 = 20_000;

const MIGRATE_RUN: [&str; 6] = [
    "migrate",
    "run",
    "--table",
    "public.pricing_data",
    "--batch-size",
    "100",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_run_stalled_in_the_middle_of_the_copy_fails_within_its_timeouts_and_run_again_finishes(
) {
    let db = crate::common::shared().create_database().await;
    db.exec(&fixtures::plain_pricing_data()).await;
    db.exec(&format!(
        r#"INSERT INTO pricing_data ("propertyId", date, price)
           SELECT 'p' || (g % 50), current_date - 400 + (g % 460), (g % 500) + 0.25
             FROM generate_series(1, {MIGRATE_ROWS}) g;
           ANALYZE pricing_data;"#
    ))
    .await;
    let proxy = Proxy::start(db_port(&db));
    let cli = cli_through(&proxy, &db);

    // A run stopped halfway through its copy (built, the first half copied), then an
    // application transaction locks the new table's parent (SHARE), so the resumed copy's next
    // batch waits for it, retrying. The network stalls while the copy waits; then the
    // transaction ends, so the server finishes the batch (or its lock wait times out) and
    // answers into the stalled network: our session sits idle in its transaction, holding the
    // batch's rows, inserted into the new table and not committed.
    let prep = Cli::new().config(&config_with_lock_timeout(&db, MONTHLY, "100ms"));
    crate::common::fixtures::migration_stopped_mid_copy(&db, &prep, MIGRATE_ROWS / 2).await;
    let mut row_lock = db
        .hold("LOCK TABLE ONLY pricing_data_partitioned IN SHARE MODE")
        .await;
    let migrate = cli.spawn(MIGRATE_RUN);
    let copying = Instant::now();
    while !partkeeper_session(&db, "wait_event_type = 'Lock'").await {
        assert!(
            copying.elapsed() < PATIENCE,
            "the copy never waited for the lock"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    proxy.stall();
    let stalled = Instant::now();
    sqlx::raw_sql("COMMIT")
        .execute(&mut row_lock)
        .await
        .unwrap();
    let copy_done: bool = db
        .query_scalar("SELECT copy_done FROM partkeeper.migrations")
        .await;
    assert!(!copy_done, "the stall must come in the middle of the copy");
    let last: i64 = db
        .query_scalar("SELECT COALESCE(last_pk[1]::int8, 0) FROM partkeeper.migrations")
        .await;

    // The application writes: a new row, and the row after the copy's saved position, which a
    // stalled batch has inserted into the new table (the forward trigger's upsert of it waits for
    // that batch). Neither waits for long: the server ends a stalled batch's session after
    // idle_in_transaction_session_timeout.
    let mut app = db.connect().await;
    let writes = async {
        sqlx::raw_sql(&format!(
            "INSERT INTO pricing_data (\"propertyId\", date, price) VALUES ('app', current_date, 1);
             UPDATE pricing_data SET price = price + 1 WHERE id = {}",
            last + 1
        ))
        .execute(&mut app)
        .await
    };
    // Well before migrate gives up (7 s), whose exit would also end the session: the server
    // must end it first, after 1 s (a batch's idle_in_transaction_session_timeout).
    let app_patience = Duration::from_secs(4);
    tokio::time::timeout(app_patience, writes)
        .await
        .unwrap_or_else(|_| {
            panic!("the application waited more than {app_patience:?} behind a stalled copy")
        })
        .expect("the application's writes");
    let app_waited = stalled.elapsed();

    let out = migrate
        .wait(STATEMENT_TIMEOUT + CONNECT_TIMEOUT + SLACK)
        .await;
    let took = stalled.elapsed();
    out.assert_code(1);
    assert!(
        took < STATEMENT_TIMEOUT + CONNECT_TIMEOUT + SLACK,
        "migrate took {took:?} to give up: {out}"
    );
    let said = out.to_string();
    assert!(
        said.contains("no answer from PostgreSQL within 7s")
            && said.contains("run `migrate run` again"),
        "the message should say the server stopped answering and what to do: {out}"
    );
    println!(
        "stalled copy: application waited {app_waited:?}, migrate gave up after {took:?}\n{out}"
    );

    proxy.resume();
    let out = cli.run_async(MIGRATE_RUN).await;
    out.assert_success();
    assert!(out.stdout.contains("migrated (resumed)"), "{out}");
    cli.run_async(["migrate", "verify", "--table", "public.pricing_data"])
        .await
        .assert_success();
    let rows: i64 = db.query_scalar("SELECT count(*) FROM pricing_data").await;
    assert_eq!(rows, MIGRATE_ROWS + 1, "every row, and the application's");
}

/// Issue 14: `partkeeper_up` follows the heartbeat. Before, a refresh waiting on the stalled
/// network (up to its 30 s deadline) kept `up` at 1 while `/readyz` already said 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partkeeper_up_turns_0_within_seconds_of_a_stall_as_readyz_does() {
    let db = pricing_db().await;
    let proxy = Proxy::start(db_port(&db));
    let daemon = ready_daemon_through(&proxy, &db).await;

    proxy.stall();
    let started = Instant::now();
    let d = &daemon;
    eventually(
        NOTICE,
        "partkeeper_up 0 after the network stalled",
        || async move {
            d.get("/metrics")
                .await
                .is_some_and(|(_, m)| single_value(&m, "partkeeper_up") == Some(0.0))
        },
    )
    .await;
    let down_after = started.elapsed();
    let readyz = daemon.get("/readyz").await.map(|(c, _)| c);
    assert_eq!(readyz, Some(503), "/readyz agrees with up 0");
    println!("stall: partkeeper_up 0 after {down_after:?}");

    proxy.resume();
    assert_recovers(&daemon, "stall").await;
}

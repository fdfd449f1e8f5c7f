//! The network between `partkeeper` and PostgreSQL stalls (bytes stop, sockets stay open) or is
//! cut (connections closed, new ones refused), through a [`Proxy`]. Commands fail within their
//! timeouts with a clear message instead of hanging, and leave no lock behind them.

use std::time::{Duration, Instant};

use sqlx::PgConnection;

use super::{config_with_lock_timeout, partkeeper_session};
use crate::common::fixtures::{partition_names, pricing_db, MONTHLY};
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

/// A session holding `sql`'s lock in an open transaction.
async fn hold(db: &TestDb, sql: &str) -> PgConnection {
    let mut conn = db.connect().await;
    sqlx::raw_sql(&format!("BEGIN; {sql}"))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    conn
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
    let mut reader = hold(&db, "SELECT count(*) FROM pricing_data_default").await;
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

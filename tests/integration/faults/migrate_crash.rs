//! The server crashes (immediate-mode stop) in the middle of `migrate run`: during the copy,
//! while the swap waits for its lock, and at arbitrary moments. Afterwards the table holds
//! exactly its rows, nothing is half-built (either no migration, or a recorded one with its
//! table), and `migrate run` again finishes with identical content that `migrate verify` accepts.
//! (The migrate tests kill the process; these kill the server under it.)

use std::time::Duration;

use super::{partkeeper_session, until_connected, NOTICE_CRASH};
use crate::common::fixtures;
use crate::common::{eventually, Cli, Cluster, Output, TestDb, PATIENCE};

const ROWS: i64 = 20_000;

const RUN: [&str; 6] = [
    "migrate",
    "run",
    "--table",
    "public.pricing_data",
    "--batch-size",
    "500",
];

/// A database on `cluster` holding `rows` rows from about 13 months back to 2 months ahead.
async fn plain_pricing_data(cluster: &Cluster, rows: i64) -> TestDb {
    let db = cluster.create_database().await;
    db.exec(&fixtures::plain_pricing_data()).await;
    db.exec(&format!(
        r#"INSERT INTO pricing_data ("propertyId", date, price)
           SELECT 'p' || (g % 50), current_date - 400 + (g % 460), (g % 500) + 0.25
             FROM generate_series(1, {rows}) g;
           ANALYZE pricing_data;"#
    ))
    .await;
    db
}

fn cli(db: &TestDb, lock_timeout: &str) -> Cli {
    Cli::new().config(&format!(
        r#"
[database]
url = "{}"
lock_timeout = "{lock_timeout}"
connect_timeout = "5s"

[[tables]]
name = "public.pricing_data"
column = "date"
interval = "1 month"
premake = 3
default_partition = true
"#,
        db.url()
    ))
}

/// Row count and an order-independent checksum of every row of `table`.
async fn content(db: &TestDb, table: &str) -> (i64, i64) {
    let mut conn = db.connect().await;
    sqlx::query_as(&format!(
        r#"SELECT count(*)::int8, COALESCE(sum(hashtext((id, "propertyId", date, price, "createdAt")::text)::int8), 0)::int8 FROM {table}"#
    ))
    .fetch_one(&mut conn)
    .await
    .unwrap_or_else(|e| panic!("read {table}: {e}"))
}

async fn relkind(db: &TestDb, table: &str) -> Option<String> {
    db.query_scalar(&format!(
        "SELECT (SELECT relkind::text FROM pg_class WHERE oid = to_regclass('{table}'))"
    ))
    .await
}

/// The recorded phase (`copying`, `copying+copied`, `swapped+copied`), or `None` when no
/// migration was recorded.
async fn phase(db: &TestDb) -> Option<String> {
    db.try_query_scalar(
        "SELECT phase || CASE WHEN copy_done THEN '+copied' ELSE '' END FROM partkeeper.migrations",
    )
    .await
    .ok()
}

/// Helper objects a migration makes; none may exist unless a migration is recorded.
async fn helpers(db: &TestDb) -> Vec<String> {
    db.query_scalar::<Vec<String>>(
        "SELECT ARRAY(
           SELECT 'relation ' || relname FROM pg_class
            WHERE relname IN ('pricing_data_backup', 'pricing_data_partitioned')
           UNION ALL SELECT 'trigger ' || tgname FROM pg_trigger WHERE tgname LIKE 'partkeeper%')",
    )
    .await
}

/// After a crash: the application's table holds exactly its rows, and the migration is either
/// not there at all or recorded with what its phase needs. Returns the phase.
async fn assert_consistent(db: &TestDb, before: (i64, i64), crash: &Output) -> String {
    let recorded = phase(db).await;
    match recorded.as_deref() {
        None => assert_eq!(
            helpers(db).await,
            Vec::<String>::new(),
            "no migration recorded, yet helpers exist: {crash}"
        ),
        Some("copying" | "copying+copied") => {
            assert_eq!(relkind(db, "pricing_data").await.as_deref(), Some("r"));
            assert_eq!(
                relkind(db, "pricing_data_partitioned").await.as_deref(),
                Some("p"),
                "copying without its table: {crash}"
            );
        }
        Some("swapped+copied") => {
            assert_eq!(relkind(db, "pricing_data").await.as_deref(), Some("p"));
            assert_eq!(content(db, "pricing_data_backup").await, before);
        }
        Some(other) => panic!("unexpected phase {other}: {crash}"),
    }
    assert_eq!(
        content(db, "pricing_data").await,
        before,
        "the application's table changed: {crash}"
    );
    recorded.unwrap_or_else(|| "nothing".into())
}

/// `migrate run` again finishes; the partitioned table and the backup hold the same rows as
/// before, and `migrate verify` agrees.
async fn assert_run_again_finishes(cli: &Cli, db: &TestDb, before: (i64, i64)) {
    let out = cli.run_async(RUN).await;
    out.assert_success();
    assert_eq!(
        relkind(db, "pricing_data").await.as_deref(),
        Some("p"),
        "{out}"
    );
    assert_eq!(content(db, "pricing_data").await, before, "{out}");
    assert_eq!(content(db, "pricing_data_backup").await, before, "{out}");
    cli.run_async(["migrate", "verify", "--table", "public.pricing_data"])
        .await
        .assert_success();
}

/// Crashes the server under `running` and starts it again; returns what the command printed.
async fn crash_under(cluster: &Cluster, running: crate::common::Daemon) -> Output {
    cluster.kill();
    let out = running.wait(NOTICE_CRASH).await;
    assert_ne!(
        out.code(),
        Some(0),
        "migrate cannot succeed without its server: {out}"
    );
    cluster.start_again();
    println!("{out}");
    out
}

#[tokio::test]
async fn a_server_crash_during_the_copy_or_while_the_swap_waits_leaves_a_migration_that_run_finishes(
) {
    let cluster = Cluster::start();

    // During the copy: a run stopped halfway through it, then an application transaction
    // locks the new table's parent (SHARE), so the resumed copy is stuck there, retrying.
    let db = plain_pricing_data(&cluster, ROWS).await;
    let before = content(&db, "pricing_data").await;
    let cli = cli(&db, "30s");
    crate::common::fixtures::migration_stopped_mid_copy(&db, &self::cli(&db, "100ms"), ROWS / 2)
        .await;
    let row_lock = db
        .hold("LOCK TABLE ONLY pricing_data_partitioned IN SHARE MODE")
        .await;
    let migrate = cli.spawn(RUN);
    eventually(PATIENCE, "the copy to wait for the lock", || async {
        db.query_scalar::<bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                             WHERE datname = current_database() AND application_name = 'partkeeper'
                               AND wait_event_type = 'Lock')",
        )
        .await
    })
    .await;
    let crash = crash_under(&cluster, migrate).await;
    drop(row_lock);
    assert_eq!(assert_consistent(&db, before, &crash).await, "copying");
    assert_run_again_finishes(&cli, &db, before).await;

    // While the swap waits for its lock: a report is reading the table.
    let db = plain_pricing_data(&cluster, ROWS).await;
    let before = content(&db, "pricing_data").await;
    let cli = self::cli(&db, "30s");
    let reader = db.hold("SELECT count(*) FROM pricing_data").await;
    let migrate = cli.spawn(RUN);
    eventually(PATIENCE, "the swap to wait for its lock", || {
        partkeeper_session(&db, "wait_event_type = 'Lock' AND query LIKE 'LOCK TABLE%'")
    })
    .await;
    let crash = crash_under(&cluster, migrate).await;
    drop(reader);
    assert_eq!(
        assert_consistent(&db, before, &crash).await,
        "copying+copied"
    );
    assert_run_again_finishes(&cli, &db, before).await;
}

/// Delays after which the arbitrary-moment test crashes the server, from before the build to
/// the copy's end: the first from the start of the process (before it has connected), the
/// others from the moment its session shows on the server.
const CRASH_AFTER_MS: &[u64] = &[0, 0, 30, 45, 60, 75, 90, 120, 160, 250, 400];

#[tokio::test]
async fn server_crashes_at_arbitrary_moments_of_migrate_run_then_run_again_gives_identical_content()
{
    let cluster = Cluster::start();
    // Three times the rows, so that several crashes land before the run is done.
    let db = plain_pricing_data(&cluster, 3 * ROWS).await;
    let before = content(&db, "pricing_data").await;
    let cli = cli(&db, "2s");
    let mut seen = Vec::new();
    let mut mid_copy = 0;
    for (round, &delay) in CRASH_AFTER_MS.iter().enumerate() {
        let mut migrate = cli.spawn(RUN);
        if round > 0 {
            until_connected(&db, &mut migrate).await;
        }
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let copied_before: Option<i64> = db
            .try_query_scalar("SELECT rows_copied FROM partkeeper.migrations")
            .await
            .ok();
        cluster.kill();
        let out = migrate.wait(NOTICE_CRASH).await;
        cluster.start_again();
        let phase = assert_consistent(&db, before, &out).await;
        // In the middle of the copy: still copying, and it had copied rows when the server went.
        if phase == "copying" && copied_before.is_some_and(|n| n > 0) {
            mid_copy += 1;
        }
        seen.push(format!(
            "crash after {delay} ms (round {round}): exit {:?}, {phase}, {copied_before:?} row(s) copied",
            out.code(),
        ));
        if out.success() {
            break;
        }
    }
    println!("{}", seen.join("\n"));
    assert!(
        mid_copy > 0,
        "no crash landed in the middle of the copy:\n{}",
        seen.join("\n")
    );
    assert_run_again_finishes(&cli, &db, before).await;
}

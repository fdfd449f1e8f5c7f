//! Fault tests (issue 7): the server crashing under `maintain` (and `migrate run`), the network
//! stalling or cutting between `partkeeper` and the server (through [`Proxy`]), and lock storms
//! on a managed table. Each group is a module below; what they share is here (the soak
//! benchmark, in `benchmarks::soak`, starts its daemon with [`daemon_config`] too).
//!
//! The crash tests start private clusters ([`Cluster::start`]); the others use the shared one.
//!
//! [`Proxy`]: crate::common::Proxy
//! [`Cluster::start`]: crate::common::Cluster::start

mod lock_storm;
mod migrate_crash;
mod network;
mod server_crash;

use std::time::Duration;

use crate::common::fixtures::{self, PRICING_DATA};
pub(crate) use crate::common::http::{http_get_within, RunningDaemon};
use crate::common::{Cli, Cluster, TestDb};

/// A fresh database on `cluster` holding the runbook's empty `pricing_data`.
async fn pricing_db_on(cluster: &Cluster) -> TestDb {
    let db = cluster.create_database().await;
    db.exec(PRICING_DATA).await;
    db
}

/// The fixtures' configuration for `db` and `tables` with `lock_timeout` replaced.
fn config_with_lock_timeout(db: &TestDb, tables: &str, lock_timeout: &str) -> String {
    fixtures::config(db, tables).replace(
        "lock_timeout = \"1s\"",
        &format!("lock_timeout = \"{lock_timeout}\""),
    )
}

/// A CLI for `db` and `tables` whose DDL waits up to `lock_timeout` for a lock.
fn cli_with_lock_timeout(db: &TestDb, tables: &str, lock_timeout: &str) -> Cli {
    Cli::new().config(&config_with_lock_timeout(db, tables, lock_timeout))
}

/// Row count and sum of ids of `pricing_data`: a cheap fingerprint of "no row lost or doubled".
async fn rows_fingerprint(db: &TestDb) -> (i64, i64) {
    let count: i64 = db.query_scalar("SELECT count(*) FROM pricing_data").await;
    let sum: i64 = db
        .query_scalar("SELECT COALESCE(sum(id), 0)::bigint FROM pricing_data")
        .await;
    (count, sum)
}

/// Tables named like partitions of `pricing_data` that are not attached to it: what a create
/// that was cut short would leave if its steps were not one transaction.
async fn unattached_partition_tables(db: &TestDb) -> Vec<String> {
    let mut conn = db.connect().await;
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'public' AND c.relname LIKE 'pricing\\_data\\_%'
            AND c.relkind = 'r' AND NOT c.relispartition
          ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .expect("list unattached pricing_data_* tables")
}

/// Whether a `partkeeper` session on the server is in `state` (an SQL condition on
/// `pg_stat_activity`), e.g. `wait_event_type = 'Lock'`.
async fn partkeeper_session(db: &TestDb, state: &str) -> bool {
    db.try_query_scalar::<bool>(&format!(
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                         WHERE application_name = 'partkeeper' AND datname = current_database()
                           AND {state})"
    ))
    .await
    .unwrap_or(false)
}

/// Polls (every 2 ms, up to a minute) until `command` has a session on the server, or has
/// ended: crashes timed from there land in its work, whatever the process took to start.
async fn until_connected(db: &TestDb, command: &mut crate::common::Daemon) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while command.is_running()
        && std::time::Instant::now() < deadline
        && !partkeeper_session(db, "true").await
    {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// How long a `partkeeper` command may take to notice that the server is gone and exit.
const NOTICE_CRASH: Duration = Duration::from_secs(20);

/// A daemon configuration for `url`: HTTP on a free port of 127.0.0.1, maintenance on cron
/// `schedule`, the catalog re-read every `refresh`, `pricing_data` monthly with a default.
pub(crate) fn daemon_config(url: &str, schedule: &str, refresh: &str) -> String {
    format!(
        r#"
[database]
url = "{url}"
connect_timeout = "2s"
statement_timeout = "5s"
lock_timeout = "1s"

[server]
listen = "127.0.0.1:0"

[schedule]
maintenance = "{schedule}"
timezone = "UTC"
run_on_start = true
metrics_refresh = "{refresh}"
{}"#,
        fixtures::MONTHLY
    )
}

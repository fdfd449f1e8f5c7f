//! Tests of the test harness itself: clusters, databases, replicas, polling, process control.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::common::{eventually, pg_major, shared, Cli, Cluster, PATIENCE};

#[tokio::test]
async fn a_shared_cluster_database_answers_select_1() {
    let db = shared().create_database().await;
    assert_eq!(db.query_scalar::<i32>("SELECT 1").await, 1);
}

#[tokio::test]
async fn the_server_runs_the_major_version_pg_major_reports() {
    // Version-dependent harness and test code branches on pg_major(), read from the binaries in
    // pg_bin_dir() (PARTKEEPER_PG_BIN): it must be what the running server says it is.
    let db = shared().create_database().await;
    let version: String = db.query_scalar("SHOW server_version_num").await;
    let version: u32 = version.parse().expect("server_version_num is a number");
    assert_eq!(version / 10000, pg_major(), "server_version_num {version}");
}

#[tokio::test]
async fn two_databases_on_the_shared_cluster_are_isolated() {
    let (a, b) = (
        shared().create_database().await,
        shared().create_database().await,
    );
    assert_ne!(a.name(), b.name());
    a.exec("CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
        .await;
    let seen_from_b: i64 = b
        .query_scalar("SELECT count(*) FROM pg_tables WHERE tablename = 't'")
        .await;
    assert_eq!(seen_from_b, 0);
    // The same name is free in the other database.
    b.exec("CREATE TABLE t (x int)").await;
}

#[tokio::test]
async fn a_private_cluster_keeps_committed_rows_through_a_crash_and_a_restart() {
    let cluster = Cluster::start();
    let db = cluster.create_database().await;
    db.exec("CREATE TABLE t AS SELECT generate_series(1, 1000) AS x")
        .await;

    cluster.kill();
    assert!(db.try_query_scalar::<i32>("SELECT 1").await.is_err());
    cluster.start_again();
    assert_eq!(db.query_scalar::<i64>("SELECT count(*) FROM t").await, 1000);
    assert!(
        cluster
            .log_contents()
            .contains("automatic recovery in progress"),
        "kill() should look like a crash to the server:\n{}",
        cluster.log_contents()
    );

    cluster.restart();
    assert_eq!(db.query_scalar::<i64>("SELECT count(*) FROM t").await, 1000);
}

#[tokio::test]
async fn a_replica_streams_rows_written_on_the_primary() {
    let primary = Cluster::start();
    let db = primary.create_database().await;
    db.exec("CREATE TABLE t (x int)").await;
    let replica = Cluster::start_replica(&primary);
    assert_ne!(replica.port(), primary.port());
    assert!(
        replica
            .query_scalar::<bool>(db.name(), "SELECT pg_is_in_recovery()")
            .await
    );

    db.exec("INSERT INTO t VALUES (42)").await;
    let (replica, name) = (&replica, db.name());
    eventually(PATIENCE, "the row to reach the replica", || async move {
        replica
            .try_query_scalar::<i64>(name, "SELECT count(*) FROM t WHERE x = 42")
            .await
            .is_ok_and(|n| n == 1)
    })
    .await;
}

#[tokio::test]
#[should_panic(expected = "waiting for the impossible")]
async fn eventually_names_what_it_waited_for_when_time_runs_out() {
    eventually(Duration::from_millis(50), "the impossible", || async {
        false
    })
    .await;
}

#[tokio::test]
async fn a_background_process_stops_on_sigterm_and_its_output_is_readable() {
    let script = r#"trap 'echo bye; exit 0' TERM; echo ready; while :; do sleep 0.02; done"#;
    let daemon = Cli::program("sh").spawn(["-c", script]);
    let ready = &daemon;
    eventually(PATIENCE, "the process to say ready", || async move {
        ready.stdout().contains("ready")
    })
    .await;

    daemon.signal(Signal::SIGTERM);
    let output = daemon.wait(PATIENCE).await;
    output.assert_success();
    assert_eq!(output.stdout, "ready\nbye\n");
}

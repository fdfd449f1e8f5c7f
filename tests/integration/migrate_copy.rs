//! The online copy's own guarantees, each provoked on purpose: the non-unique indexes are built
//! per partition after the copy (as small as a fresh build, valid at the swap, CONCURRENTLY when
//! a plain build would hold writers back longer than lock_timeout), and a row deleted while a
//! batch reads it (the copy takes no row locks) is not left behind in the new table.

use std::time::Duration;

use sqlx::Connection;

use crate::common::eventually;
use crate::migrate::{config, pricing_data};

/// Bytes of the non-unique indexes on the partitions of `pricing_data`.
const PLAIN_INDEX_BYTES: &str = "SELECT coalesce(sum(pg_relation_size(x.indexrelid)), 0)::int8
   FROM pg_partition_tree('pricing_data') t JOIN pg_index x ON x.indrelid = t.relid
  WHERE t.isleaf AND NOT x.indisunique";

/// Indexes of `pricing_data` and its partitions that are not valid.
async fn invalid_indexes(db: &crate::common::TestDb) -> i64 {
    db.query_scalar(
        "SELECT count(*) FROM pg_partition_tree('pricing_data') t JOIN pg_index x ON x.indrelid = t.relid WHERE NOT x.indisvalid",
    )
    .await
}

#[tokio::test]
async fn online_indexes_are_built_per_partition_after_the_copy_as_small_as_a_fresh_build() {
    let (db, cli) = pricing_data(20_000, 0, true).await;
    let run = cli.run(["migrate", "run", "--table", "public.pricing_data"]);
    run.assert_success();
    assert!(
        run.stderr.contains("building the indexes per partition"),
        "the index phase did not run: {run}"
    );
    // Every index of the new table is valid, and every partition (the default one too) has both
    // non-unique indexes, attached to the parent's.
    assert_eq!(invalid_indexes(&db).await, 0);
    let missing: i64 = db
        .query_scalar(
            "SELECT count(*) FROM pg_partition_tree('pricing_data') t
              WHERE t.isleaf AND (SELECT count(*) FROM pg_index x WHERE x.indrelid = t.relid AND NOT x.indisunique) <> 2",
        )
        .await;
    assert_eq!(missing, 0);
    let names: Vec<String> = db
        .query_scalar(
            "SELECT array_agg(indexname::text ORDER BY indexname) FROM pg_indexes WHERE tablename = 'pricing_data'",
        )
        .await;
    assert_eq!(
        names,
        [
            "idx_pricing_data_date",
            "idx_pricing_data_property_date",
            "pricing_data_pkey"
        ]
    );
    let built: i64 = db.query_scalar(PLAIN_INDEX_BYTES).await;
    db.exec("REINDEX TABLE pricing_data").await;
    let fresh: i64 = db.query_scalar(PLAIN_INDEX_BYTES).await;
    assert!(
        (built as f64) <= fresh as f64 * 1.05,
        "indexes {built} bytes after the migration, {fresh} rebuilt fresh"
    );
    cli.run(["migrate", "verify", "--table", "public.pricing_data"])
        .assert_success();
}

#[tokio::test]
async fn a_partition_too_big_to_index_within_lock_timeout_is_indexed_concurrently() {
    let (db, _) = pricing_data(60_000, 0, false).await;
    // A plain build holds writers of the partition back for as long as it runs; 1 ms is less
    // than any of these builds takes, so each is cancelled and built CONCURRENTLY instead.
    let cli = crate::common::Cli::new().config(&config(&db, false).replace(
        "lock_timeout = \"2s\"",
        "lock_timeout = \"1ms\"\nlock_retries = 20",
    ));
    let run = cli.run(["migrate", "run", "--table", "public.pricing_data"]);
    run.assert_success();
    assert!(
        run.stderr.contains("building CONCURRENTLY"),
        "no partition was indexed concurrently: {run}"
    );
    assert_eq!(invalid_indexes(&db).await, 0);
    cli.run(["migrate", "verify", "--table", "public.pricing_data"])
        .assert_success();
}

#[tokio::test]
async fn a_row_deleted_while_a_batch_reads_it_is_not_left_in_the_new_table() {
    let (db, _) = pricing_data(5_000, 0, true).await;
    // First run: built and copied, then the swap gives up (a reader holds the table).
    let cli = crate::common::Cli::new().config(&config(&db, true).replace(
        "lock_timeout = \"2s\"",
        "lock_timeout = \"100ms\"\nlock_retries = 1",
    ));
    let mut reader = db.connect().await;
    sqlx::raw_sql("BEGIN; SELECT count(*) FROM pricing_data")
        .execute(&mut reader)
        .await
        .unwrap();
    cli.run(["migrate", "run", "--table", "public.pricing_data"])
        .assert_code(1);
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut reader)
        .await
        .unwrap();
    // Back to the moment before row 42 was copied: it is not in the new table yet, and the
    // recorded position is just before it.
    db.exec(
        "DELETE FROM pricing_data_partitioned WHERE id >= 42;
         UPDATE partkeeper.migrations SET last_pk = '{41}', copy_done = false",
    )
    .await;
    // A writer deletes row 42 and keeps its transaction open: its trigger found nothing to
    // delete in the new table.
    let mut deleter = db.connect().await;
    sqlx::raw_sql("BEGIN; DELETE FROM pricing_data WHERE id = 42")
        .execute(&mut deleter)
        .await
        .unwrap();
    let cli = crate::common::Cli::new().config(&config(&db, true));
    let mut run = cli.spawn(["migrate", "run", "--table", "public.pricing_data"]);
    // The copy reads row 42 (its delete is not committed) and inserts it; the run then waits
    // for the deleter before it settles.
    eventually(Duration::from_secs(60), "the copy has copied row 42", || async {
        db.query_scalar::<bool>(
            "SELECT copy_done AND EXISTS (SELECT 1 FROM pricing_data_partitioned WHERE id = 42) FROM partkeeper.migrations",
        )
        .await
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(run.is_running(), "the run did not wait for the deleter");
    // Still before the settle (the phase this test is about): the copy of row 42 is still there.
    let still: bool = db
        .query_scalar("SELECT EXISTS (SELECT 1 FROM pricing_data_partitioned WHERE id = 42)")
        .await;
    assert!(still, "the run settled row 42 before its deleter committed");
    sqlx::raw_sql("COMMIT").execute(&mut deleter).await.unwrap();
    deleter.close().await.unwrap();
    let out = run.wait(Duration::from_secs(60)).await;
    out.assert_success();
    let left: i64 = db
        .query_scalar("SELECT count(*) FROM pricing_data WHERE id = 42")
        .await;
    assert_eq!(left, 0, "row 42 came back in the partitioned table");
    cli.run(["migrate", "verify", "--table", "public.pricing_data"])
        .assert_success();
}

#[tokio::test]
async fn a_fill_that_is_not_one_expression_is_refused_with_exit_2_and_nothing_changes() {
    let (db, cli) = pricing_data(200, 5, true).await;
    for fill in [
        "now()::date); DROP TABLE pricing_data; SELECT (now()",
        "now()::date -- the rest is a comment",
        "$x$ now() $x$::date",
        "now()::date, 1",
    ] {
        for command in ["plan", "run"] {
            let out = cli.run([
                "migrate",
                command,
                "--table",
                "public.pricing_data",
                "--fill-null-with",
                fill,
            ]);
            out.assert_code(2);
            assert!(out.stderr.contains("--fill-null-with"), "{out}");
        }
    }
    let left: Vec<String> = db
        .query_scalar(
            "SELECT ARRAY(SELECT relname::text FROM pg_class WHERE relname LIKE 'pricing_data_%' AND relkind IN ('r', 'p')
                 UNION ALL SELECT nspname::text FROM pg_namespace WHERE nspname = 'partkeeper')",
        )
        .await;
    assert!(left.is_empty(), "{left:?}");
    let rows: i64 = db.query_scalar("SELECT count(*) FROM pricing_data").await;
    assert_eq!(rows, 200);
}

//! `partkeeper maintain` against real PostgreSQL: what it creates, that it converges, that it
//! repairs, that it keeps data, and that it stays out of the application's way.

use crate::common::fixtures::{
    self, count, partition_names, partitions, parts, pricing_db, schema_snapshot, MONTHLY,
};

#[tokio::test]
async fn a_fresh_table_gets_the_current_month_through_premake_and_a_default() {
    let db = pricing_db().await;
    let cli = fixtures::cli(&db, MONTHLY);

    let out = cli.run_async(["maintain", "--now", "2026-11-25"]).await;
    out.assert_success();
    assert_eq!(
        partitions(&db, "pricing_data").await,
        parts(&[
            (
                "pricing_data_2026_11",
                "FOR VALUES FROM ('2026-11-01') TO ('2026-12-01')"
            ),
            (
                "pricing_data_2026_12",
                "FOR VALUES FROM ('2026-12-01') TO ('2027-01-01')"
            ),
            (
                "pricing_data_2027_01",
                "FOR VALUES FROM ('2027-01-01') TO ('2027-02-01')"
            ),
            (
                "pricing_data_2027_02",
                "FOR VALUES FROM ('2027-02-01') TO ('2027-03-01')"
            ),
            ("pricing_data_default", "DEFAULT"),
        ]),
        "{out}"
    );
    assert!(
        out.stdout.contains("create public.pricing_data_2026_11"),
        "{out}"
    );

    let before = schema_snapshot(&db).await;
    let again = cli.run_async(["maintain", "--now", "2026-11-25"]).await;
    again.assert_success();
    assert!(again.stdout.contains("nothing to do"), "{again}");
    assert_eq!(schema_snapshot(&db).await, before);

    cli.run_async(["check", "--now", "2026-11-25"])
        .await
        .assert_success();
}

#[tokio::test]
async fn on_the_real_clock_maintain_then_check_agree() {
    let db = pricing_db().await;
    let cli = fixtures::cli(&db, MONTHLY);
    cli.run_async(["maintain"]).await.assert_success();
    let names = partition_names(&db).await;
    assert_eq!(names.len(), 5, "{names:?}");
    let this_month = chrono::Utc::now().format("pricing_data_%Y_%m").to_string();
    assert!(names.contains(&this_month), "{names:?}");
    cli.run_async(["check"]).await.assert_success();
    let again = cli.run_async(["maintain"]).await;
    assert!(again.stdout.contains("nothing to do"), "{again}");
}

#[tokio::test]
async fn a_hand_dropped_next_partition_is_reported_shown_and_repaired() {
    let db = pricing_db().await;
    let cli = fixtures::cli(&db, MONTHLY);
    cli.run_async(["maintain", "--now", "2026-11-25"])
        .await
        .assert_success();
    db.exec("DROP TABLE pricing_data_2026_12").await;

    let check = cli.run_async(["check", "--now", "2026-11-25"]).await;
    check.assert_code(1);
    assert!(check.stdout.contains("pricing_data_2026_12"), "{check}");

    let before = schema_snapshot(&db).await;
    let dry = cli
        .run_async(["maintain", "--dry-run", "--now", "2026-11-25"])
        .await;
    dry.assert_success();
    assert!(
        dry.stdout
            .contains("CREATE TABLE \"public\".\"pricing_data_2026_12\""),
        "{dry}"
    );
    assert!(
        dry.stdout
            .contains("FOR VALUES FROM ('2026-12-01') TO ('2027-01-01')"),
        "{dry}"
    );
    assert_eq!(
        schema_snapshot(&db).await,
        before,
        "--dry-run changed the database"
    );

    cli.run_async(["maintain", "--now", "2026-11-25"])
        .await
        .assert_success();
    assert!(partition_names(&db)
        .await
        .contains(&"pricing_data_2026_12".to_string()));
    cli.run_async(["check", "--now", "2026-11-25"])
        .await
        .assert_success();
    assert_eq!(count(&db, "pricing_data").await, 0);
}

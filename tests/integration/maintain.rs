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

/// Months May to October 2026 made by hand, two rows each, plus a default partition holding one
/// row from 2001: the state retention is judged on.
async fn six_old_months(db: &crate::common::TestDb) {
    let mut sql =
        String::from("CREATE TABLE pricing_data_default PARTITION OF pricing_data DEFAULT;\n");
    for m in 5..=10 {
        sql.push_str(&format!(
            "CREATE TABLE pricing_data_2026_{m:02} PARTITION OF pricing_data \
             FOR VALUES FROM ('2026-{m:02}-01') TO ('2026-{:02}-01');\n\
             INSERT INTO pricing_data (\"propertyId\", date) VALUES ('a', '2026-{m:02}-01'), ('b', '2026-{m:02}-28');\n",
            m + 1
        ));
    }
    sql.push_str("INSERT INTO pricing_data (\"propertyId\", date) VALUES ('old', '2001-01-01');");
    db.exec(&sql).await;
}

fn with_retention(mode: &str) -> String {
    MONTHLY.replace("premake = 3", "premake = 1")
        + &format!("retention = \"3 months\"\nretention_mode = \"{mode}\"\n")
}

#[tokio::test]
async fn retention_drop_removes_exactly_the_expired_partitions() {
    let db = pricing_db().await;
    six_old_months(&db).await;
    let cli = fixtures::cli(&db, &with_retention("drop"));

    let check = cli.run_async(["check", "--now", "2026-11-25"]).await;
    check.assert_code(1);
    for m in ["05", "06", "07"] {
        assert!(
            check
                .stdout
                .contains(&format!("pricing_data_2026_{m} is past retention")),
            "{check}"
        );
    }

    let out = cli.run_async(["maintain", "--now", "2026-11-25"]).await;
    out.assert_success();
    // The cutoff is 1 August (25 November minus 3 months, down to the month start): August
    // still holds days inside the window, so it stays.
    assert_eq!(
        partition_names(&db).await,
        [
            "pricing_data_2026_08",
            "pricing_data_2026_09",
            "pricing_data_2026_10",
            "pricing_data_2026_11",
            "pricing_data_2026_12",
            "pricing_data_default"
        ],
        "{out}"
    );
    let gone: i64 = db
        .query_scalar("SELECT count(*) FROM pg_class WHERE relname IN ('pricing_data_2026_05', 'pricing_data_2026_06', 'pricing_data_2026_07')")
        .await;
    assert_eq!(gone, 0, "{out}");
    assert_eq!(count(&db, "pricing_data").await, 7);
    assert_eq!(count(&db, "pricing_data_default").await, 1);
    for m in ["08", "09", "10"] {
        assert_eq!(count(&db, &format!("pricing_data_2026_{m}")).await, 2);
    }
    // Only the 2001 row in the default is left to see to.
    let check = cli.run_async(["check", "--now", "2026-11-25"]).await;
    check.assert_code(1);
    assert!(
        check.stdout.contains("1 problem(s)")
            && check
                .stdout
                .contains("1 row(s) sit in the default partition"),
        "{check}"
    );
}

#[tokio::test]
async fn retention_detach_keeps_the_expired_partitions_as_plain_tables() {
    let db = pricing_db().await;
    six_old_months(&db).await;
    let cli = fixtures::cli(&db, &with_retention("detach"));
    let out = cli.run_async(["maintain", "--now", "2026-11-25"]).await;
    out.assert_success();
    assert_eq!(
        partition_names(&db).await,
        [
            "pricing_data_2026_08",
            "pricing_data_2026_09",
            "pricing_data_2026_10",
            "pricing_data_2026_11",
            "pricing_data_2026_12",
            "pricing_data_default"
        ],
        "{out}"
    );
    for m in ["05", "06", "07"] {
        let table = format!("pricing_data_2026_{m}");
        let (kind, is_partition): (String, bool) =
            sqlx::query_as("SELECT relkind::text, relispartition FROM pg_class WHERE relname = $1")
                .bind(&table)
                .fetch_one(&mut db.connect().await)
                .await
                .unwrap();
        assert_eq!((kind.as_str(), is_partition), ("r", false), "{table}");
        assert_eq!(count(&db, &table).await, 2, "{table}");
    }
    assert_eq!(count(&db, "pricing_data").await, 7);
    assert_eq!(count(&db, "pricing_data_default").await, 1);
    let again = cli.run_async(["maintain", "--now", "2026-11-25"]).await;
    assert!(again.stdout.contains("nothing to do"), "{again}");
}

#[tokio::test]
async fn rows_in_the_default_for_a_new_range_move_into_the_new_partition() {
    let db = pricing_db().await;
    db.exec(
        "CREATE TABLE pricing_data_default PARTITION OF pricing_data DEFAULT;
         INSERT INTO pricing_data (\"propertyId\", date, price)
         SELECT 'p' || g, date '2026-11-01' + (g % 30), g FROM generate_series(1, 300) g;
         INSERT INTO pricing_data (\"propertyId\", date) VALUES
           ('dec', '2026-12-31'), ('feb', '2027-02-01'), ('old', '2001-01-01');",
    )
    .await;
    let sum_before: String = db
        .query_scalar("SELECT sum(price)::text || '/' || sum(id)::text FROM pricing_data")
        .await;
    let cli = fixtures::cli(&db, MONTHLY);

    let out = cli.run_async(["maintain", "--now", "2026-11-25"]).await;
    out.assert_success();
    assert!(out.stdout.contains("300 row(s) moved"), "{out}");
    assert_eq!(count(&db, "pricing_data").await, 303);
    assert_eq!(count(&db, "pricing_data_2026_11").await, 300);
    assert_eq!(count(&db, "pricing_data_2026_12").await, 1);
    assert_eq!(count(&db, "pricing_data_2027_02").await, 1);
    assert_eq!(count(&db, "pricing_data_default").await, 1);
    let sum_after: String = db
        .query_scalar("SELECT sum(price)::text || '/' || sum(id)::text FROM pricing_data")
        .await;
    assert_eq!(sum_after, sum_before);
    // No helper constraint is left behind on the new partitions.
    let leftovers: i64 = db
        .query_scalar("SELECT count(*) FROM pg_constraint WHERE conname = 'partkeeper_bound_check'")
        .await;
    assert_eq!(leftovers, 0);
}

#[tokio::test]
async fn hand_made_partitions_with_odd_names_and_wide_bounds_are_judged_by_their_bounds() {
    let db = pricing_db().await;
    db.exec(
        "CREATE TABLE prehistory PARTITION OF pricing_data FOR VALUES FROM (MINVALUE) TO ('2000-01-01');
         CREATE TABLE ancient_stuff PARTITION OF pricing_data FOR VALUES FROM ('2000-01-01') TO ('2019-01-01');
         CREATE TABLE legacy_history PARTITION OF pricing_data FOR VALUES FROM ('2019-01-01') TO ('2026-10-01');
         CREATE TABLE \"Oct + half Nov!\" PARTITION OF pricing_data FOR VALUES FROM ('2026-10-01') TO ('2026-11-16');
         INSERT INTO pricing_data (\"propertyId\", date) VALUES ('l', '2020-06-01'), ('o', '2026-11-10');",
    )
    .await;
    let tables = MONTHLY
        .replace("premake = 3", "premake = 1")
        .replace("default_partition = true", "default_partition = false")
        + "retention = \"36 months\"\nretention_mode = \"drop\"\n";
    let cli = fixtures::cli(&db, &tables);

    let out = cli.run_async(["maintain", "--now", "2026-11-25"]).await;
    out.assert_success();
    assert!(
        out.stdout.contains("note: kept public.legacy_history"),
        "{out}"
    );
    assert_eq!(
        partitions(&db, "pricing_data").await,
        parts(&[
            (
                "Oct + half Nov!",
                "FOR VALUES FROM ('2026-10-01') TO ('2026-11-16')"
            ),
            (
                "legacy_history",
                "FOR VALUES FROM ('2019-01-01') TO ('2026-10-01')"
            ),
            (
                "pricing_data_2026_11",
                "FOR VALUES FROM ('2026-11-16') TO ('2026-12-01')"
            ),
            (
                "pricing_data_2026_12",
                "FOR VALUES FROM ('2026-12-01') TO ('2027-01-01')"
            ),
        ]),
        "{out}"
    );
    assert_eq!(count(&db, "pricing_data").await, 2);
    let check = cli.run_async(["check", "--now", "2026-11-25"]).await;
    check.assert_success();
    assert!(check.stdout.contains("legacy_history"), "{check}");
}

#[tokio::test]
async fn new_partitions_get_the_parents_indexes_owner_and_grants() {
    let db = pricing_db().await;
    let tag = db.name().split('_').next().unwrap().to_string();
    let (owner, reader) = (format!("{tag}_owner"), format!("{tag}_reader"));
    db.exec(&format!(
        "CREATE ROLE {owner}; CREATE ROLE {reader};
         ALTER TABLE pricing_data OWNER TO {owner};
         GRANT SELECT ON pricing_data TO {reader};
         GRANT INSERT, UPDATE ON pricing_data TO PUBLIC;"
    ))
    .await;
    fixtures::cli(&db, MONTHLY)
        .run_async(["maintain", "--now", "2026-11-25"])
        .await
        .assert_success();

    let mut conn = db.connect().await;
    let rows: Vec<(String, String, i64, i64, String)> = sqlx::query_as(
        "SELECT c.relname::text, pg_get_userbyid(c.relowner)::text,
                (SELECT count(*) FROM pg_index x WHERE x.indrelid = c.oid),
                (SELECT count(*) FROM pg_index x JOIN pg_inherits i ON i.inhrelid = x.indexrelid
                  WHERE x.indrelid = c.oid),
                COALESCE(c.relacl::text, '')
           FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
          WHERE i.inhparent = 'pricing_data'::regclass ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(rows.len(), 5);
    for (name, part_owner, indexes, attached, acl) in &rows {
        assert_eq!(part_owner, &owner, "{name}");
        assert_eq!(
            (*indexes, *attached),
            (3, 3),
            "{name}: primary key and both indexes"
        );
        assert!(acl.contains(&format!("{reader}=r/")), "{name}: {acl}");
        assert!(acl.contains("=aw/"), "{name}: PUBLIC insert+update: {acl}");
    }
    // The reader can read a new partition directly, not only through the parent.
    db.exec(&format!(
        "INSERT INTO pricing_data (\"propertyId\", date) VALUES ('x', '2026-12-03');
         SET ROLE {reader}; SELECT count(*) FROM pricing_data_2026_12; RESET ROLE;"
    ))
    .await;
}

#[tokio::test]
async fn quoted_names_with_capitals_and_spaces_work_end_to_end() {
    let db = crate::common::shared().create_database().await;
    db.exec(
        "CREATE SCHEMA \"Billing\";
         CREATE TABLE \"Billing\".\"Invoice Events\" (id bigint, \"createdAt\" timestamptz NOT NULL)
           PARTITION BY RANGE (\"createdAt\");",
    )
    .await;
    let tables = "\n[[tables]]\nname = '\"Billing\".\"Invoice Events\"'\ncolumn = '\"createdAt\"'\ninterval = \"1 month\"\npremake = 1\n";
    let cli = fixtures::cli(&db, tables);
    let out = cli.run_async(["maintain", "--now", "2026-11-25"]).await;
    out.assert_success();
    assert!(
        out.stdout
            .contains("Billing.Invoice Events: create Billing.Invoice Events_2026_11 ok"),
        "{out}"
    );
    assert_eq!(
        partitions(&db, "\"Billing\".\"Invoice Events\"").await,
        parts(&[
            (
                "Invoice Events_2026_11",
                "FOR VALUES FROM ('2026-11-01 00:00:00+00') TO ('2026-12-01 00:00:00+00')"
            ),
            (
                "Invoice Events_2026_12",
                "FOR VALUES FROM ('2026-12-01 00:00:00+00') TO ('2027-01-01 00:00:00+00')"
            ),
            ("Invoice Events_default", "DEFAULT"),
        ])
    );
    db.exec("INSERT INTO \"Billing\".\"Invoice Events\" VALUES (1, '2026-11-30 12:00:00+00')")
        .await;
    cli.run_async([
        "check",
        "--now",
        "2026-11-25",
        "--table",
        "\"Billing\".\"Invoice Events\"",
    ])
    .await
    .assert_success();
}

#[tokio::test]
async fn an_ordinary_role_that_owns_the_table_can_maintain_it() {
    let db = pricing_db().await;
    let tag = db.name().split('_').next().unwrap().to_string();
    let (app, reader) = (format!("{tag}_app"), format!("{tag}_ro"));
    db.exec(&format!(
        "CREATE ROLE {app} LOGIN; CREATE ROLE {reader};
         GRANT CREATE ON SCHEMA public TO {app};
         ALTER TABLE pricing_data OWNER TO {app};
         GRANT SELECT ON pricing_data TO {reader};"
    ))
    .await;
    let config = fixtures::config(
        &db,
        &format!("{MONTHLY}retention = \"3 months\"\nretention_mode = \"drop\"\n"),
    )
    .replacen("//postgres:", &format!("//{app}:"), 1);
    let cli = crate::common::Cli::new().config(&config);
    cli.run_async(["maintain", "--now", "2026-11-25"])
        .await
        .assert_success();
    let out = cli.run_async(["maintain", "--now", "2027-06-25"]).await;
    out.assert_success();
    assert!(
        out.stdout.contains("drop public.pricing_data_2026_11 ok"),
        "{out}"
    );
    let owners: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT pg_get_userbyid(c.relowner)::text FROM pg_inherits i
           JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'pricing_data'::regclass",
    )
    .fetch_all(&mut db.connect().await)
    .await
    .unwrap();
    assert_eq!(owners, [app]);
    db.exec(&format!(
        "SET ROLE {reader}; SELECT count(*) FROM pricing_data_2027_09;"
    ))
    .await;
}

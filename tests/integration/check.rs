//! The read-only commands against real PostgreSQL: `check` (verdicts, exit codes, JSON),
//! `status` (every partition with bounds, size and rows) and `config validate` (redacted).

use crate::common::fixtures::{
    self, assert_no_password, pricing_db, schema_snapshot, MONTHLY, PASSWORD,
};
use crate::common::TestDb;

async fn maintained(now: &str) -> TestDb {
    let db = pricing_db().await;
    fixtures::cli(&db, MONTHLY)
        .run_async(["maintain", "--now", now])
        .await
        .assert_success();
    db
}

#[tokio::test]
async fn check_on_a_healthy_table_exits_0_and_reports_in_json() {
    let db = maintained("2026-11-25").await;
    let out = fixtures::cli(&db, MONTHLY)
        .run_async(["check", "--now", "2026-11-25", "--format", "json"])
        .await;
    out.assert_success();
    let health: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON on stdout");
    let t = &health[0];
    assert_eq!(t["table"]["name"], "pricing_data", "{out}");
    assert_eq!(t["partitions"], 5);
    assert_eq!(t["future_partitions"], 3);
    assert_eq!(t["next_partition_missing"], false);
    assert_eq!(t["default_rows"], 0);
    assert_eq!(t["problems"].as_array().map(Vec::len), Some(0));
    // Coverage runs gap-free to 1 March 2027.
    assert_eq!(t["coverage_end"], 1_803_859_200);
}

#[tokio::test]
async fn check_names_a_gap_in_the_middle_and_changes_nothing() {
    let db = maintained("2026-11-25").await;
    db.exec("DROP TABLE pricing_data_2027_01").await;
    let before = schema_snapshot(&db).await;
    let out = fixtures::cli(&db, MONTHLY)
        .run_async(["check", "--now", "2026-11-25"])
        .await;
    out.assert_code(1);
    assert!(
        out.stdout
            .contains("no partition covers ['2027-01-01', '2027-02-01') (maintain would create public.pricing_data_2027_01)"),
        "{out}"
    );
    assert!(out.stderr.contains("maintain --dry-run"), "{out}");
    assert_eq!(schema_snapshot(&db).await, before);
}

#[tokio::test]
async fn check_reports_rows_stranded_in_the_default_partition() {
    let db = maintained("2026-11-25").await;
    db.exec("INSERT INTO pricing_data (\"propertyId\", date) VALUES ('a', '2020-01-01'), ('b', '2030-01-01')")
        .await;
    let out = fixtures::cli(&db, MONTHLY)
        .run_async(["check", "--now", "2026-11-25", "--format", "json"])
        .await;
    out.assert_code(1);
    let health: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON on stdout");
    assert_eq!(health[0]["default_rows"], 2, "{out}");
}

#[tokio::test]
async fn check_a_month_later_says_the_next_partition_is_missing() {
    let db = maintained("2026-11-25").await;
    let out = fixtures::cli(&db, MONTHLY)
        .run_async(["check", "--now", "2027-01-15", "--format", "json"])
        .await;
    out.assert_code(1);
    let health: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    // January is current and February exists; March and April (premake 3) do not.
    assert_eq!(health[0]["next_partition_missing"], false, "{out}");
    assert_eq!(health[0]["future_partitions"], 1, "{out}");
    let out = fixtures::cli(&db, MONTHLY)
        .run_async(["check", "--now", "2027-02-15", "--format", "json"])
        .await;
    let health: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(health[0]["next_partition_missing"], true, "{out}");
}

#[tokio::test]
async fn status_lists_every_partition_with_bounds_size_and_rows() {
    let db = maintained("2026-11-25").await;
    db.exec(
        "INSERT INTO pricing_data (\"propertyId\", date)
         SELECT 'p', date '2026-11-01' + (g % 20) FROM generate_series(1, 500) g;
         ANALYZE pricing_data;",
    )
    .await;
    let cli = fixtures::cli(&db, MONTHLY);

    let out = cli.run_async(["status"]).await;
    out.assert_success();
    assert_no_password(&out);
    assert!(
        out.stdout.contains("public.pricing_data (5 partitions"),
        "{out}"
    );
    assert!(
        out.stdout
            .lines()
            .any(|l| l.contains("public.pricing_data_2026_11")
                && l.contains(" 500 ")
                && l.contains("FOR VALUES FROM ('2026-11-01') TO ('2026-12-01')")),
        "{out}"
    );

    let json = cli.run_async(["status", "--format", "json"]).await;
    json.assert_success();
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON on stdout");
    let parts = v["tables"][0]["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 5);
    let nov = parts
        .iter()
        .find(|p| p["name"] == "public.pricing_data_2026_11")
        .unwrap();
    assert_eq!(nov["rows_estimate"], 500.0);
    assert!(nov["size_bytes"].as_i64().unwrap() > 8192, "{json}");
    let default = parts.iter().find(|p| p["default"] == true).unwrap();
    assert_eq!(default["name"], "public.pricing_data_default");
    assert_eq!(v["replicas"], serde_json::json!([]));
    assert!(v["tables"][0]["total_bytes"].as_i64().unwrap() >= nov["size_bytes"].as_i64().unwrap());
}

#[tokio::test]
async fn config_validate_prints_the_configuration_with_the_password_redacted() {
    let db = pricing_db().await;
    let out = fixtures::cli(&db, MONTHLY)
        .run_async(["config", "validate"])
        .await;
    out.assert_success();
    assert_no_password(&out);
    assert!(out.stdout.contains("postgres:***@127.0.0.1"), "{out}");
    assert!(
        out.stdout.contains("name = \"public.pricing_data\""),
        "{out}"
    );
    assert!(out.stdout.contains("premake = 3"), "{out}");
    assert!(
        out.stderr.contains("configuration is valid (1 table(s))"),
        "{out}"
    );
}

#[tokio::test]
async fn config_validate_shows_environment_overrides_still_redacted() {
    let db = pricing_db().await;
    let out = fixtures::cli(&db, MONTHLY)
        .env(
            "DATABASE_URL",
            format!("postgres://app:{PASSWORD}@db.example:6432/prod"),
        )
        .env("PARTKEEPER__DATABASE__LOCK_TIMEOUT", "750ms")
        .run_async(["config", "validate"])
        .await;
    out.assert_success();
    assert_no_password(&out);
    assert!(out.stdout.contains("app:***@db.example:6432/prod"), "{out}");
    assert!(out.stdout.contains("lock_timeout = \"750ms\""), "{out}");
}

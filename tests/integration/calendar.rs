//! Calendar edges through `--now`, checked against the bounds PostgreSQL stored: year end, leap
//! day, ISO weeks, quarters, and timestamptz keys in a database whose TimeZone is not UTC.

use crate::common::fixtures::{self, partitions, parts, pricing_db};
use crate::common::{shared, TestDb};

/// `pricing_data` with one policy line replaced (e.g. the interval), premake 1, no default.
fn policy(interval: &str, premake: u32) -> String {
    fixtures::MONTHLY
        .replace("\"1 month\"", &format!("\"{interval}\""))
        .replace("premake = 3", &format!("premake = {premake}"))
        .replace("default_partition = true", "default_partition = false")
}

async fn maintain_at(db: &TestDb, tables: &str, now: &str) {
    fixtures::cli(db, tables)
        .run_async(["maintain", "--now", now])
        .await
        .assert_success();
}

#[tokio::test]
async fn monthly_partitions_cross_the_year_end() {
    let db = pricing_db().await;
    maintain_at(&db, &policy("1 month", 1), "2026-12-31").await;
    assert_eq!(
        partitions(&db, "pricing_data").await,
        parts(&[
            (
                "pricing_data_2026_12",
                "FOR VALUES FROM ('2026-12-01') TO ('2027-01-01')"
            ),
            (
                "pricing_data_2027_01",
                "FOR VALUES FROM ('2027-01-01') TO ('2027-02-01')"
            ),
        ])
    );
}

#[tokio::test]
async fn a_date_key_follows_the_wall_clock_of_the_schedule_zone() {
    // 23:30 UTC on 31 December is already 1 January in Paris.
    let db = pricing_db().await;
    let tables = format!("{}timezone = \"Europe/Paris\"\n", policy("1 month", 0));
    maintain_at(&db, &tables, "2026-12-31T23:30:00Z").await;
    assert_eq!(
        partitions(&db, "pricing_data").await,
        parts(&[(
            "pricing_data_2027_01",
            "FOR VALUES FROM ('2027-01-01') TO ('2027-02-01')"
        )])
    );
}

#[tokio::test]
async fn daily_partitions_include_the_29th_of_february() {
    let db = pricing_db().await;
    maintain_at(&db, &policy("1 day", 2), "2028-02-28").await;
    assert_eq!(
        partitions(&db, "pricing_data").await,
        parts(&[
            (
                "pricing_data_2028_02_28",
                "FOR VALUES FROM ('2028-02-28') TO ('2028-02-29')"
            ),
            (
                "pricing_data_2028_02_29",
                "FOR VALUES FROM ('2028-02-29') TO ('2028-03-01')"
            ),
            (
                "pricing_data_2028_03_01",
                "FOR VALUES FROM ('2028-03-01') TO ('2028-03-02')"
            ),
        ])
    );
    db.exec("INSERT INTO pricing_data (\"propertyId\", date) VALUES ('p', '2028-02-29')")
        .await;
    let home: String = db
        .query_scalar("SELECT tableoid::regclass::text FROM pricing_data")
        .await;
    assert_eq!(home, "pricing_data_2028_02_29");
}

#[tokio::test]
async fn weekly_partitions_are_iso_weeks_across_the_year_end() {
    // Friday 1 January 2027 belongs to ISO week 53 of 2026, which began on Monday 28 December.
    let db = pricing_db().await;
    maintain_at(&db, &policy("1 week", 1), "2027-01-01").await;
    assert_eq!(
        partitions(&db, "pricing_data").await,
        parts(&[
            (
                "pricing_data_2026_w53",
                "FOR VALUES FROM ('2026-12-28') TO ('2027-01-04')"
            ),
            (
                "pricing_data_2027_w01",
                "FOR VALUES FROM ('2027-01-04') TO ('2027-01-11')"
            ),
        ])
    );
}

#[tokio::test]
async fn the_iso_week_that_starts_in_december_is_named_after_the_next_year() {
    // Wednesday 31 December 2025 is in ISO week 1 of 2026 (Monday 29 December to 4 January).
    let db = pricing_db().await;
    maintain_at(&db, &policy("1 week", 0), "2025-12-31").await;
    assert_eq!(
        partitions(&db, "pricing_data").await,
        parts(&[(
            "pricing_data_2026_w01",
            "FOR VALUES FROM ('2025-12-29') TO ('2026-01-05')"
        )])
    );
}

#[tokio::test]
async fn quarterly_partitions_start_on_quarter_days() {
    let db = pricing_db().await;
    maintain_at(&db, &policy("3 months", 1), "2026-12-15").await;
    assert_eq!(
        partitions(&db, "pricing_data").await,
        parts(&[
            (
                "pricing_data_2026_q4",
                "FOR VALUES FROM ('2026-10-01') TO ('2027-01-01')"
            ),
            (
                "pricing_data_2027_q1",
                "FOR VALUES FROM ('2027-01-01') TO ('2027-04-01')"
            ),
        ])
    );
}

#[tokio::test]
async fn yearly_partitions_are_calendar_years() {
    let db = pricing_db().await;
    maintain_at(&db, &policy("1 year", 1), "2026-06-30").await;
    assert_eq!(
        partitions(&db, "pricing_data").await,
        parts(&[
            (
                "pricing_data_2026",
                "FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')"
            ),
            (
                "pricing_data_2027",
                "FOR VALUES FROM ('2027-01-01') TO ('2028-01-01')"
            ),
        ])
    );
}

/// A timestamptz-keyed table in a database whose TimeZone is New York, so that any bound written
/// or read in the session's zone instead of an explicit one would come out shifted.
async fn events_db() -> TestDb {
    let db = shared().create_database().await;
    db.exec(&format!(
        "ALTER DATABASE \"{}\" SET timezone = 'America/New_York';
         CREATE TABLE events (id bigint, at timestamptz NOT NULL, payload text) PARTITION BY RANGE (at);",
        db.name()
    ))
    .await;
    db
}

fn events(interval: &str, premake: u32, zone: &str) -> String {
    format!(
        "\n[[tables]]\nname = \"events\"\ncolumn = \"at\"\ninterval = \"{interval}\"\npremake = {premake}\ndefault_partition = false\ntimezone = \"{zone}\"\n"
    )
}

#[tokio::test]
async fn timestamptz_bounds_are_utc_midnights_when_the_zone_is_utc_whatever_the_server_says() {
    let db = events_db().await;
    // (sqlx itself sends TimeZone=UTC at startup; psql and most drivers would get New York.)
    let setting: String = db
        .query_scalar(
            "SELECT array_to_string(setconfig, ',') FROM pg_db_role_setting
              WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .await;
    assert_eq!(setting, "TimeZone=America/New_York");
    let tables = events("1 month", 1, "UTC");
    maintain_at(&db, &tables, "2026-11-25").await;
    assert_eq!(
        partitions(&db, "events").await,
        parts(&[
            (
                "events_2026_11",
                "FOR VALUES FROM ('2026-11-01 00:00:00+00') TO ('2026-12-01 00:00:00+00')"
            ),
            (
                "events_2026_12",
                "FOR VALUES FROM ('2026-12-01 00:00:00+00') TO ('2027-01-01 00:00:00+00')"
            ),
        ])
    );
    let cli = fixtures::cli(&db, &tables);
    let again = cli.run_async(["maintain", "--now", "2026-11-25"]).await;
    assert!(again.stdout.contains("nothing to do"), "{again}");
    cli.run_async(["check", "--now", "2026-11-25"])
        .await
        .assert_success();
}

#[tokio::test]
async fn timestamptz_bounds_are_paris_midnights_in_winter_and_in_summer() {
    let db = events_db().await;
    let tables = events("1 month", 1, "Europe/Paris");
    maintain_at(&db, &tables, "2026-11-25").await;
    maintain_at(&db, &tables, "2026-07-15").await;
    assert_eq!(
        partitions(&db, "events").await,
        parts(&[
            (
                "events_2026_07",
                "FOR VALUES FROM ('2026-06-30 22:00:00+00') TO ('2026-07-31 22:00:00+00')"
            ),
            (
                "events_2026_08",
                "FOR VALUES FROM ('2026-07-31 22:00:00+00') TO ('2026-08-31 22:00:00+00')"
            ),
            (
                "events_2026_11",
                "FOR VALUES FROM ('2026-10-31 23:00:00+00') TO ('2026-11-30 23:00:00+00')"
            ),
            (
                "events_2026_12",
                "FOR VALUES FROM ('2026-11-30 23:00:00+00') TO ('2026-12-31 23:00:00+00')"
            ),
        ])
    );
    // Half past midnight on 1 December in Paris, written by a New York session, lands in December.
    db.exec(
        "SET TimeZone = 'America/New_York'; INSERT INTO events VALUES (1, '2026-12-01 00:30:00+01', 'x')",
    )
    .await;
    let home: String = db
        .query_scalar("SELECT tableoid::regclass::text FROM events")
        .await;
    assert_eq!(home, "events_2026_12");
    let cli = fixtures::cli(&db, &tables);
    cli.run_async(["check", "--now", "2026-11-25"])
        .await
        .assert_success();
}

#[tokio::test]
async fn daily_timestamptz_partitions_are_23_hours_long_on_the_spring_dst_change() {
    // Paris moves its clocks forward on Sunday 29 March 2026.
    let db = events_db().await;
    maintain_at(&db, &events("1 day", 2, "Europe/Paris"), "2026-03-28").await;
    assert_eq!(
        partitions(&db, "events").await,
        parts(&[
            (
                "events_2026_03_28",
                "FOR VALUES FROM ('2026-03-27 23:00:00+00') TO ('2026-03-28 23:00:00+00')"
            ),
            (
                "events_2026_03_29",
                "FOR VALUES FROM ('2026-03-28 23:00:00+00') TO ('2026-03-29 22:00:00+00')"
            ),
            (
                "events_2026_03_30",
                "FOR VALUES FROM ('2026-03-29 22:00:00+00') TO ('2026-03-30 22:00:00+00')"
            ),
        ])
    );
}

#[tokio::test]
async fn timestamp_keys_get_wall_clock_bounds_of_the_configured_zone() {
    let db = shared().create_database().await;
    db.exec("CREATE TABLE readings (at timestamp NOT NULL, v int) PARTITION BY RANGE (at)")
        .await;
    let tables = "\n[[tables]]\nname = \"readings\"\ncolumn = \"at\"\ninterval = \"1 day\"\npremake = 1\ndefault_partition = false\ntimezone = \"Asia/Kolkata\"\n";
    // 20:00 UTC on 31 December is already 1 January (01:30) in Kolkata.
    maintain_at(&db, tables, "2026-12-31T20:00:00Z").await;
    assert_eq!(
        partitions(&db, "readings").await,
        parts(&[
            (
                "readings_2027_01_01",
                "FOR VALUES FROM ('2027-01-01 00:00:00') TO ('2027-01-02 00:00:00')"
            ),
            (
                "readings_2027_01_02",
                "FOR VALUES FROM ('2027-01-02 00:00:00') TO ('2027-01-03 00:00:00')"
            ),
        ])
    );
}

//! Bad input, one case per test: `partkeeper` exits 2, says what is wrong, changes nothing, and
//! never prints the password from `database.url`.

use std::time::{Duration, Instant};

use crate::common::fixtures::{self, assert_no_password, pricing_db, schema_snapshot, MONTHLY};
use crate::common::{Cli, Output, TestDb};

/// Runs `maintain --now 2026-11-25` (and `check`) with `config` on `db` and returns maintain's
/// output, after asserting exit 2 for both, no password anywhere, and an unchanged schema.
pub(crate) async fn refused(db: &TestDb, config: &str, message: &str) -> Output {
    let before = schema_snapshot(db).await;
    let cli = Cli::new().config(config);
    let out = cli.run_async(["maintain", "--now", "2026-11-25"]).await;
    out.assert_code(2);
    assert_no_password(&out);
    assert!(
        out.stderr.contains(message),
        "expected {message:?} in {out}"
    );
    let check = cli.run_async(["check"]).await;
    check.assert_code(2);
    assert_no_password(&check);
    assert!(
        check.stderr.contains(message),
        "expected {message:?} in {check}"
    );
    assert_eq!(
        schema_snapshot(db).await,
        before,
        "the database changed: {out}"
    );
    out
}

/// The fixture configuration for `pricing_data` with `from` replaced by `to` (which must occur).
pub(crate) fn edited(db: &TestDb, from: &str, to: &str) -> String {
    let config = fixtures::config(db, MONTHLY);
    assert!(
        config.contains(from),
        "{from:?} is not in the fixture config"
    );
    config.replacen(from, to, 1)
}

#[tokio::test]
async fn an_invalid_cron_expression_is_refused() {
    let db = pricing_db().await;
    let config = edited(
        &db,
        "[schedule]\n",
        "[schedule]\nmaintenance = \"0 25 * * *\"\n",
    );
    refused(&db, &config, "schedule.maintenance = \"0 25 * * *\"").await;
}

#[tokio::test]
async fn a_cron_expression_with_the_wrong_number_of_fields_is_refused() {
    let db = pricing_db().await;
    let config = edited(&db, "[schedule]\n", "[schedule]\nmaintenance = \"daily\"\n");
    refused(&db, &config, "standard 5-field cron expression").await;
}

#[tokio::test]
async fn an_unknown_key_is_refused_not_ignored() {
    let db = pricing_db().await;
    let config = edited(&db, "premake = 3", "premak = 3");
    refused(&db, &config, "unknown field `premak`").await;
}

#[tokio::test]
async fn a_missing_table_is_refused() {
    let db = pricing_db().await;
    let config = edited(&db, "public.pricing_data", "public.pricing_dat");
    refused(&db, &config, "table public.pricing_dat does not exist").await;
}

#[tokio::test]
async fn a_table_whose_name_differs_only_in_case_gets_the_quoted_form_as_a_hint() {
    let db = pricing_db().await;
    db.exec("CREATE TABLE \"PricingData\" (date date NOT NULL) PARTITION BY RANGE (date)")
        .await;
    let config = edited(&db, "public.pricing_data", "PricingData");
    refused(
        &db,
        &config,
        "table public.pricingdata does not exist, but public.\"PricingData\" does",
    )
    .await;
    // ...and the hinted form works.
    let fixed = edited(&db, "\"public.pricing_data\"", "'public.\"PricingData\"'");
    Cli::new()
        .config(&fixed)
        .run_async(["maintain", "--now", "2026-11-25"])
        .await
        .assert_success();
}

#[tokio::test]
async fn a_table_that_is_not_partitioned_is_refused() {
    let db = pricing_db().await;
    db.exec("CREATE TABLE plain_prices (id int, date date)")
        .await;
    let config = edited(&db, "public.pricing_data", "public.plain_prices");
    refused(&db, &config, "table public.plain_prices is not partitioned").await;
}

#[tokio::test]
async fn a_table_partitioned_by_a_non_time_column_is_refused() {
    let db = pricing_db().await;
    db.exec("CREATE TABLE by_number (n int, date date) PARTITION BY RANGE (n)")
        .await;
    let config = edited(&db, "public.pricing_data", "public.by_number")
        .replace("column = \"date\"", "column = \"n\"");
    // Part 2: an integer key takes an integer interval (or epoch); a calendar one is refused.
    refused(
        &db,
        &config,
        "its key n is of type integer: write an integer interval",
    )
    .await;
}

#[tokio::test]
async fn a_column_that_is_not_the_partition_key_is_refused() {
    let db = pricing_db().await;
    let config = edited(&db, "column = \"date\"", "column = '\"createdAt\"'");
    refused(
        &db,
        &config,
        "column for public.pricing_data is \"createdAt\", but the table is partitioned by \"date\"; set column = 'date'",
    )
    .await;
}

#[tokio::test]
async fn a_column_that_does_not_exist_is_refused() {
    let db = pricing_db().await;
    let config = edited(&db, "column = \"date\"", "column = \"day\"");
    refused(&db, &config, "(and has no such column)").await;
}

#[tokio::test]
async fn an_unsupported_interval_is_refused() {
    let db = pricing_db().await;
    let config = edited(&db, "\"1 month\"", "\"7 hours\"");
    refused(&db, &config, "tables[0].interval").await;
}

#[tokio::test]
async fn a_negative_premake_is_refused() {
    let db = pricing_db().await;
    let config = edited(&db, "premake = 3", "premake = -1");
    refused(&db, &config, "tables[0].premake = -1").await;
}

#[tokio::test]
async fn a_zero_retention_is_refused() {
    let db = pricing_db().await;
    let config = edited(&db, "premake = 3", "premake = 3\nretention = \"0 months\"");
    refused(&db, &config, "tables[0].retention").await;
}

#[tokio::test]
async fn a_negative_retention_is_refused() {
    let db = pricing_db().await;
    let config = edited(&db, "premake = 3", "premake = 3\nretention = \"-3 months\"");
    refused(&db, &config, "tables[0].retention").await;
}

#[tokio::test]
async fn an_unknown_retention_mode_is_refused() {
    let db = pricing_db().await;
    let config = edited(
        &db,
        "premake = 3",
        "premake = 3\nretention = \"3 months\"\nretention_mode = \"delete\"",
    );
    refused(&db, &config, "tables[0].retention_mode = \"delete\"").await;
}

#[tokio::test]
async fn a_table_name_carrying_sql_is_refused() {
    let db = pricing_db().await;
    let config = edited(
        &db,
        "\"public.pricing_data\"",
        "\"public.pricing_data; DROP TABLE pricing_data\"",
    );
    refused(&db, &config, "tables[0].name").await;
}

#[tokio::test]
async fn a_quoted_table_name_carrying_sql_is_only_a_name() {
    // Valid as an identifier, so it is looked up as one: no such table, and nothing dropped.
    let db = pricing_db().await;
    let config = edited(
        &db,
        "\"public.pricing_data\"",
        "'\"pricing_data\"\"; DROP TABLE pricing_data; --\"'",
    );
    refused(&db, &config, "does not exist").await;
}

#[tokio::test]
async fn a_column_name_carrying_sql_is_refused() {
    let db = pricing_db().await;
    let config = edited(
        &db,
        "column = \"date\"",
        "column = \"date) TO (now()); DROP TABLE pricing_data; --\"",
    );
    refused(&db, &config, "tables[0].column").await;
}

#[tokio::test]
async fn an_unreachable_database_is_reported_quickly() {
    let db = pricing_db().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let config = fixtures::config(&db, MONTHLY)
        .replace(&format!(":{}/", url_port(&db)), &format!(":{closed}/"));
    let started = Instant::now();
    let out = Cli::new()
        .config(&config)
        .run_async(["maintain", "--now", "2026-11-25"])
        .await;
    assert!(started.elapsed() < Duration::from_secs(20), "{out}");
    out.assert_code(2);
    assert_no_password(&out);
    assert!(
        out.stderr.contains(&format!(
            "cannot connect to PostgreSQL at 127.0.0.1:{closed}"
        )),
        "{out}"
    );
}

#[tokio::test]
async fn a_server_that_never_answers_is_given_up_on_at_connect_timeout() {
    // A listener that accepts the TCP connection and then says nothing.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let db = pricing_db().await;
    let config = fixtures::config(&db, MONTHLY)
        .replace(&format!(":{}/", url_port(&db)), &format!(":{port}/"))
        .replace("connect_timeout = \"5s\"", "connect_timeout = \"1s\"");
    let started = Instant::now();
    let out = Cli::new().config(&config).run_async(["check"]).await;
    assert!(started.elapsed() < Duration::from_secs(20), "{out}");
    out.assert_code(2);
    assert_no_password(&out);
    assert!(out.stderr.contains("did not answer within"), "{out}");
    drop(silent);
}

#[tokio::test]
async fn a_database_the_server_refuses_is_reported_without_the_password() {
    let db = pricing_db().await;
    let config =
        fixtures::config(&db, MONTHLY).replace(&format!("/{}\"", db.name()), "/no_such_database\"");
    let out = Cli::new()
        .config(&config)
        .run_async(["maintain", "--now", "2026-11-25"])
        .await;
    out.assert_code(2);
    assert_no_password(&out);
    assert!(out.stderr.contains("no_such_database"), "{out}");
}

#[tokio::test]
async fn a_garbage_now_is_refused() {
    let db = pricing_db().await;
    let before = schema_snapshot(&db).await;
    let cli = fixtures::cli(&db, MONTHLY);
    for cmd in ["maintain", "check"] {
        let out = cli.run_async([cmd, "--now", "next tuesday"]).await;
        out.assert_code(2);
        assert_no_password(&out);
        assert!(
            out.stderr.contains("--now \"next tuesday\" is not a time"),
            "{out}"
        );
    }
    assert_eq!(schema_snapshot(&db).await, before);
}

#[tokio::test]
async fn an_unconfigured_table_is_refused() {
    let db = pricing_db().await;
    let out = fixtures::cli(&db, MONTHLY)
        .run_async(["maintain", "--table", "public.other"])
        .await;
    out.assert_code(2);
    assert!(
        out.stderr.contains("configured: public.pricing_data"),
        "{out}"
    );
    assert!(fixtures::partition_names(&db).await.is_empty());
}

#[tokio::test]
async fn a_missing_configuration_file_says_how_to_give_one() {
    let out = Cli::new().run_async(["check"]).await;
    out.assert_code(2);
    assert!(out.stderr.contains("PARTKEEPER_CONFIG"), "{out}");
}

fn url_port(db: &TestDb) -> u16 {
    db.url()
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap()
}

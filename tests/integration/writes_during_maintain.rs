//! Application writes into ranges that maintenance is creating right then, next to a default
//! partition: none may fail and none may be lost. (An INSERT already routed to the default
//! partition when a new partition is attached would otherwise fail its partition check.)

use crate::common::fixtures::{cli, pricing_db};
use crate::common::Writer;

const DAILY: &str = r#"
[[tables]]
name = "public.pricing_data"
column = "date"
interval = "1 day"
premake = 40
default_partition = true
"#;

#[tokio::test]
async fn inserts_into_ranges_being_created_never_fail_and_are_never_lost() {
    let db = pricing_db().await;
    let cli = cli(&db, DAILY);
    // The default partition exists first: the writers' days are all still in it.
    cli.run_async(["maintain", "--now", "2029-10-01"])
        .await
        .assert_success();
    // Four writers; days spread over the ranges the passes below create.
    let writer = Writer::start(
        &db,
        4,
        "INSERT INTO pricing_data (\"propertyId\", date, price) VALUES ('p', DATE '2030-01-01' + ($1 % 160)::int, 1)",
    )
    .await;
    // Four passes, each creating 41 daily partitions next to the default while rows arrive.
    for now in ["2030-01-01", "2030-02-11", "2030-03-24", "2030-05-04"] {
        cli.run_async(["maintain", "--now", now])
            .await
            .assert_success();
    }
    let written = writer.stop().await;
    assert!(
        written.errors.is_empty(),
        "failed inserts: {:?}",
        written.first_errors(5)
    );
    let rows: i64 = db.query_scalar("SELECT count(*) FROM pricing_data").await;
    assert_eq!(rows as u64, written.written);
    // Every row sits in the partition for its day: the default keeps only days past the last pass.
    let misplaced: i64 = db
        .query_scalar("SELECT count(*) FROM pricing_data_default WHERE date < DATE '2030-06-14'")
        .await;
    assert_eq!(misplaced, 0);
}

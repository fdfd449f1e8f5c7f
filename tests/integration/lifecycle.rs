//! The retention lifecycle against real PostgreSQL: `retention_mode = "archive"`, the hooks (the
//! shipped pg_dump hook round-trips a partition; a failing or hung hook keeps it), the template
//! table's indexes on every partition, and expiry of a partition referenced by a foreign key.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::fixtures::{self, assert_no_password, partition_names, pricing_db, MONTHLY};
use crate::common::{pg_bin_dir, pg_major, shared, TestDb};

/// Expired by any `--now` in 2026 with a 12-month retention.
const OLD_JAN: &str = "CREATE TABLE pricing_data_2020_01 PARTITION OF pricing_data FOR VALUES FROM ('2020-01-01') TO ('2020-02-01');
INSERT INTO pricing_data (\"propertyId\", date, price)
  SELECT 'p' || g, DATE '2020-01-01' + (g % 31), g / 7.0 FROM generate_series(1, 500) g;";

const OLD_FEB: &str = "CREATE TABLE pricing_data_2020_02 PARTITION OF pricing_data FOR VALUES FROM ('2020-02-01') TO ('2020-03-01');
INSERT INTO pricing_data (\"propertyId\", date, price)
  SELECT 'q' || g, DATE '2020-02-01' + (g % 29), g FROM generate_series(1, 300) g;";

/// `(rows, md5 of every row in id order)` of a relation: equal means the same rows.
async fn fingerprint(db: &TestDb, relation: &str) -> (i64, String) {
    let rows: i64 = db
        .query_scalar(&format!("SELECT count(*) FROM {relation}"))
        .await;
    let sum: String = db
        .query_scalar(&format!(
            "SELECT md5(string_agg(t::text, ',' ORDER BY t.id)) FROM {relation} t"
        ))
        .await;
    (rows, sum)
}

async fn is_partition(db: &TestDb, relation: &str) -> Option<bool> {
    db.query_scalar(&format!(
        "SELECT (SELECT relispartition FROM pg_class WHERE oid = to_regclass('{relation}'))"
    ))
    .await
}

fn policy(extra: &str) -> String {
    format!("{MONTHLY}retention = \"12 months\"\n{extra}")
}

// ---------------------------------------------------------------------------------------------
// Archive

#[tokio::test]
async fn archive_moves_an_expired_partition_with_all_its_rows_and_a_second_pass_does_nothing() {
    let db = pricing_db().await;
    db.exec(OLD_JAN).await;
    let before = fingerprint(&db, "pricing_data_2020_01").await;
    assert_eq!(before.0, 500);
    let cli = fixtures::cli(&db, &policy("retention_mode = \"archive\"\n"));

    let dry = cli
        .run_async(["maintain", "--dry-run", "--now", "2026-11-25"])
        .await;
    dry.assert_success();
    assert!(
        dry.stdout
            .contains("would archive public.pricing_data_2020_01"),
        "{dry}"
    );
    assert!(dry.stdout.contains("SET SCHEMA \"archive\""), "{dry}");
    assert_eq!(
        is_partition(&db, "public.pricing_data_2020_01").await,
        Some(true)
    );

    let out = cli.run_async(["maintain", "--now", "2026-11-25"]).await;
    out.assert_success();
    assert!(
        out.stdout
            .contains("archive public.pricing_data_2020_01 ok"),
        "{out}"
    );
    assert!(!partition_names(&db)
        .await
        .contains(&"pricing_data_2020_01".to_string()));
    assert_eq!(is_partition(&db, "public.pricing_data_2020_01").await, None);
    assert_eq!(
        is_partition(&db, "archive.pricing_data_2020_01").await,
        Some(false)
    );
    assert_eq!(
        fingerprint(&db, "archive.pricing_data_2020_01").await,
        before
    );
    let owner: String = db
        .query_scalar(
            "SELECT pg_get_userbyid(nspowner)::text FROM pg_namespace WHERE nspname = 'archive'",
        )
        .await;
    assert_eq!(
        owner, "postgres",
        "the archive schema is owned like the table"
    );

    let again = cli.run_async(["maintain", "--now", "2026-11-25"]).await;
    again.assert_success();
    assert!(again.stdout.contains("nothing to do"), "{again}");
    assert_eq!(
        fingerprint(&db, "archive.pricing_data_2020_01").await,
        before
    );

    let status = cli.run_async(["status"]).await;
    status.assert_success();
    let at = status.stdout.find("archived").expect("an archived section");
    assert!(
        status.stdout[at..].contains("archive.pricing_data_2020_01"),
        "{status}"
    );
    let check = cli.run_async(["check", "--now", "2026-11-25"]).await;
    check.assert_success();
    assert!(
        check.stdout.contains("archived (1, not part of the table)"),
        "{check}"
    );
    assert!(
        check.stdout.contains("archive.pricing_data_2020_01"),
        "{check}"
    );
}

#[tokio::test]
async fn archive_without_a_default_detaches_concurrently_and_finishes_a_move_cut_short() {
    if pg_major() < 14 {
        eprintln!(
            "DETACH CONCURRENTLY needs PostgreSQL 14; this server is {}",
            pg_major()
        );
        return;
    }
    let db = pricing_db().await;
    db.exec(OLD_JAN).await;
    db.exec(OLD_FEB).await;
    let jan = fingerprint(&db, "pricing_data_2020_01").await;
    let feb = fingerprint(&db, "pricing_data_2020_02").await;
    // A pass stopped after the move and before the detach: still a partition, in the archive
    // schema.
    db.exec("CREATE SCHEMA cold; ALTER TABLE pricing_data_2020_02 SET SCHEMA cold")
        .await;
    let config = policy("retention_mode = \"archive\"\narchive_schema = \"cold\"\n")
        .replace("default_partition = true", "default_partition = false");
    let cli = fixtures::cli(&db, &config);
    let out = cli.run_async(["maintain", "--now", "2026-11-25"]).await;
    out.assert_success();
    assert!(
        out.stdout
            .contains("archive public.pricing_data_2020_01 ok"),
        "{out}"
    );
    assert!(
        out.stdout.contains("archive cold.pricing_data_2020_02 ok"),
        "{out}"
    );
    assert_eq!(
        is_partition(&db, "cold.pricing_data_2020_01").await,
        Some(false)
    );
    assert_eq!(
        is_partition(&db, "cold.pricing_data_2020_02").await,
        Some(false)
    );
    assert_eq!(fingerprint(&db, "cold.pricing_data_2020_01").await, jan);
    assert_eq!(fingerprint(&db, "cold.pricing_data_2020_02").await, feb);
    let again = cli.run_async(["maintain", "--now", "2026-11-25"]).await;
    assert!(again.stdout.contains("nothing to do"), "{again}");
}

#[tokio::test]
async fn archive_finishes_a_concurrent_detach_that_was_cancelled_halfway() {
    if pg_major() < 14 {
        eprintln!(
            "DETACH CONCURRENTLY needs PostgreSQL 14; this server is {}",
            pg_major()
        );
        return;
    }
    use sqlx::{Connection, Executor};
    let db = pricing_db().await;
    db.exec(OLD_JAN).await;
    let jan = fingerprint(&db, "pricing_data_2020_01").await;
    // The detach's second transaction waits for this reader; cancelling it there leaves the
    // partition "detach pending", as a crash would.
    let mut reader = db.connect().await;
    sqlx::raw_sql("BEGIN; SELECT count(*) FROM pricing_data")
        .execute(&mut reader)
        .await
        .unwrap();
    let mut detacher = db.connect().await;
    let detach = tokio::spawn(async move {
        // `conn.execute(raw_sql(..))`: the other form's future is not provably Send.
        let r = detacher
            .execute(sqlx::raw_sql(
                "ALTER TABLE pricing_data DETACH PARTITION pricing_data_2020_01 CONCURRENTLY",
            ))
            .await;
        let _ = detacher.close().await;
        r.map(|_| ())
    });
    crate::common::eventually(crate::common::PATIENCE, "the detach to wait for the reader", || async {
        db.query_scalar::<bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query LIKE 'ALTER TABLE%DETACH%' AND wait_event_type = 'Lock')",
        )
        .await
    })
    .await;
    db.exec("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE 'ALTER TABLE%DETACH%' AND pid <> pg_backend_pid()")
        .await;
    assert!(detach.await.unwrap().is_err(), "the detach was cancelled");
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut reader)
        .await
        .unwrap();
    let pending: i64 = db
        .query_scalar("SELECT count(*) FROM pg_inherits WHERE inhdetachpending")
        .await;
    assert_eq!(pending, 1);

    let config = policy("retention_mode = \"archive\"\n")
        .replace("default_partition = true", "default_partition = false");
    let cli = fixtures::cli(&db, &config);
    let check = cli.run_async(["check", "--now", "2026-11-25"]).await;
    assert!(
        check.stdout.contains("maintain would archive it"),
        "{check}"
    );
    let out = cli.run_async(["maintain", "--now", "2026-11-25"]).await;
    out.assert_success();
    assert!(
        out.stdout
            .contains("archive public.pricing_data_2020_01 ok"),
        "{out}"
    );
    assert_eq!(
        is_partition(&db, "archive.pricing_data_2020_01").await,
        Some(false)
    );
    assert_eq!(fingerprint(&db, "archive.pricing_data_2020_01").await, jan);
    let pending: i64 = db
        .query_scalar("SELECT count(*) FROM pg_inherits WHERE inhdetachpending")
        .await;
    assert_eq!(pending, 0);
}

#[tokio::test]
async fn a_name_taken_in_the_archive_schema_stops_the_table_before_any_change() {
    let db = pricing_db().await;
    db.exec(OLD_JAN).await;
    db.exec("CREATE SCHEMA archive; CREATE TABLE archive.pricing_data_2020_01 (x int)")
        .await;
    let cli = fixtures::cli(&db, &policy("retention_mode = \"archive\"\n"));
    let out = cli.run_async(["maintain", "--now", "2026-11-25"]).await;
    out.assert_code(1);
    assert!(
        out.stdout
            .contains("archive.pricing_data_2020_01 already exists there"),
        "{out}"
    );
    assert_eq!(
        is_partition(&db, "public.pricing_data_2020_01").await,
        Some(true)
    );
    assert_eq!(fixtures::count(&db, "pricing_data_2020_01").await, 500);
}

#[tokio::test]
async fn drop_mode_still_drops() {
    let db = pricing_db().await;
    db.exec(OLD_JAN).await;
    let cli = fixtures::cli(&db, &policy("retention_mode = \"drop\"\n"));
    let out = cli.run_async(["maintain", "--now", "2026-11-25"]).await;
    out.assert_success();
    assert!(
        out.stdout.contains("drop public.pricing_data_2020_01 ok"),
        "{out}"
    );
    assert_eq!(is_partition(&db, "public.pricing_data_2020_01").await, None);
    assert_eq!(
        is_partition(&db, "archive.pricing_data_2020_01").await,
        None
    );
}

// ---------------------------------------------------------------------------------------------
// Hooks

fn shipped_hook() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/hooks/pg-dump-partition.sh")
}

/// `pg_dump`/`pg_restore` of the server's version when the harness has them, else from PATH.
fn pg_tool(name: &str) -> PathBuf {
    let p = pg_bin_dir().join(name);
    if p.is_file() {
        p
    } else {
        PathBuf::from(name)
    }
}

/// Major version of a client program (`pg_dump (PostgreSQL) 15.20` → 15).
fn tool_major(tool: &Path) -> Option<u32> {
    let out = Command::new(tool).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().last()?;
    version.split(['.', ' ']).next()?.parse().ok()
}

#[tokio::test]
async fn the_shipped_pg_dump_hook_writes_a_dump_that_restores_the_same_rows() {
    // pg_dump refuses a server newer than itself; the version matrix's binaries hold no pg_dump.
    match tool_major(&pg_tool("pg_dump")) {
        Some(v) if v >= pg_major() => {}
        found => {
            eprintln!(
                "no pg_dump of PostgreSQL {} or newer here (found {found:?}); the hook test does not apply",
                pg_major()
            );
            return;
        }
    }
    let db = pricing_db().await;
    db.exec(OLD_JAN).await;
    let before = fingerprint(&db, "pricing_data_2020_01").await;
    let dumps = tempfile::tempdir().unwrap();
    let config = policy(&format!(
        "retention_mode = \"drop\"\n[tables.hooks]\nbefore_expire = [{:?}, {:?}]\n",
        shipped_hook().display().to_string(),
        dumps.path().display().to_string()
    ));
    let cli = fixtures::cli(&db, &config)
        .env("PG_DUMP", pg_tool("pg_dump"))
        .env("PG_RESTORE", pg_tool("pg_restore"));

    let dry = cli
        .run_async(["maintain", "--dry-run", "--now", "2026-11-25"])
        .await;
    dry.assert_success();
    assert!(
        dry.stdout.contains("would run hook before_expire:")
            && dry
                .stdout
                .contains("PARTKEEPER_PARTITION=public.pricing_data_2020_01"),
        "{dry}"
    );
    assert_eq!(
        std::fs::read_dir(dumps.path()).unwrap().count(),
        0,
        "a dry run runs no hook"
    );

    let out = cli.run_async(["maintain", "--now", "2026-11-25"]).await;
    out.assert_success();
    assert_no_password(&out);
    assert!(
        out.stderr.contains("pg-dump-partition: wrote"),
        "the hook's output is logged: {out}"
    );
    assert_eq!(is_partition(&db, "public.pricing_data_2020_01").await, None);

    let dir = dumps.path().join(db.name());
    let dump = dir.join("public.pricing_data_2020_01.dump");
    assert!(dump.is_file(), "no dump in {}: {out}", dir.display());
    let sha = Command::new("sha256sum")
        .args(["-c", "public.pricing_data_2020_01.dump.sha256"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        sha.status.success(),
        "{}",
        String::from_utf8_lossy(&sha.stdout)
    );

    // Restored alone into a fresh database: the dump's ATTACH entries need the parent, which is
    // not there, so they are left out (as the README says).
    let fresh = shared().create_database().await;
    let list = Command::new(pg_tool("pg_restore"))
        .arg("--list")
        .arg(&dump)
        .output()
        .unwrap();
    let entries: String = String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter(|l| !l.contains(" ATTACH "))
        .map(|l| format!("{l}\n"))
        .collect();
    let list_file = dumps.path().join("restore.list");
    std::fs::write(&list_file, entries).unwrap();
    let restore = Command::new(pg_tool("pg_restore"))
        .arg("--exit-on-error")
        .arg("--no-owner")
        .arg("-L")
        .arg(&list_file)
        .arg("-d")
        .arg(fresh.url())
        .arg(&dump)
        .output()
        .unwrap();
    assert!(
        restore.status.success(),
        "pg_restore: {}",
        String::from_utf8_lossy(&restore.stderr)
    );
    assert_eq!(
        fingerprint(&fresh, "public.pricing_data_2020_01").await,
        before
    );
}

#[tokio::test]
async fn after_create_runs_for_each_new_partition_with_its_environment() {
    let db = pricing_db().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("created.log");
    let hook = format!(
        "[tables.hooks]\nafter_create = [\"/bin/sh\", \"-c\", \"echo \\\"$PARTKEEPER_ACTION|$PARTKEEPER_TABLE|$PARTKEEPER_PARTITION|$PARTKEEPER_FROM|$PARTKEEPER_TO|$PARTKEEPER_DATABASE\\\" >> {}\"]\n",
        log.display()
    );
    let cli = fixtures::cli(&db, &format!("{MONTHLY}{hook}"));
    let out = cli.run_async(["maintain", "--now", "2026-11-25"]).await;
    out.assert_success();
    let lines = std::fs::read_to_string(&log).unwrap();
    let name = db.name();
    assert_eq!(
        lines.lines().collect::<Vec<_>>(),
        [
            format!("create|public.pricing_data|public.pricing_data_2026_11|2026-11-01|2026-12-01|{name}"),
            format!("create|public.pricing_data|public.pricing_data_2026_12|2026-12-01|2027-01-01|{name}"),
            format!("create|public.pricing_data|public.pricing_data_2027_01|2027-01-01|2027-02-01|{name}"),
            format!("create|public.pricing_data|public.pricing_data_2027_02|2027-02-01|2027-03-01|{name}"),
            format!("create|public.pricing_data|public.pricing_data_default|||{name}"),
        ],
        "{out}"
    );

    // A failing after_create leaves the partition (it exists) and fails the pass.
    db.exec("DROP TABLE pricing_data_2027_02").await;
    let failing = fixtures::cli(
        &db,
        &format!("{MONTHLY}[tables.hooks]\nafter_create = [\"/bin/false\"]\n"),
    );
    let out = failing.run_async(["maintain", "--now", "2026-11-25"]).await;
    out.assert_code(1);
    assert!(
        out.stdout
            .contains("public.pricing_data_2027_02 was created, but the after_create hook"),
        "{out}"
    );
    assert!(partition_names(&db)
        .await
        .contains(&"pricing_data_2027_02".to_string()));
}

/// Two tables with an expired partition each; `pricing_data` has `hook`, `other` none.
async fn two_tables(hook: &str) -> (TestDb, String) {
    let db = pricing_db().await;
    db.exec(OLD_JAN).await;
    db.exec(
        "CREATE TABLE other (id int, d date NOT NULL) PARTITION BY RANGE (d);
         CREATE TABLE other_2020_01 PARTITION OF other FOR VALUES FROM ('2020-01-01') TO ('2020-02-01');
         INSERT INTO other VALUES (1, '2020-01-02')",
    )
    .await;
    let tables = format!(
        "{}\n[[tables]]\nname = \"public.other\"\ncolumn = \"d\"\ninterval = \"1 month\"\nretention = \"12 months\"\nretention_mode = \"drop\"\n",
        policy(&format!("retention_mode = \"drop\"\n{hook}"))
    );
    let config = fixtures::config(&db, &tables);
    (db, config)
}

#[tokio::test]
async fn a_before_expire_hook_that_exits_1_keeps_the_partition_and_fails_only_its_table() {
    let (db, config) = two_tables(
        "[tables.hooks]\nbefore_expire = [\"/bin/sh\", \"-c\", \"echo connecting to $DATABASE_URL; echo no space left >&2; exit 1\"]\n",
    )
    .await;
    let cli = crate::common::Cli::new().config(&config);
    let out = cli.run_async(["maintain", "--now", "2026-11-25"]).await;
    out.assert_code(1);
    assert!(
        out.stdout.contains("kept public.pricing_data_2020_01"),
        "{out}"
    );
    assert!(
        out.stdout.contains("exited with status 1: no space left"),
        "{out}"
    );
    assert!(
        out.stderr
            .contains("maintenance failed for public.pricing_data;"),
        "{out}"
    );
    assert_eq!(fixtures::count(&db, "pricing_data_2020_01").await, 500);
    assert_eq!(
        is_partition(&db, "public.other_2020_01").await,
        None,
        "{out}"
    );
    // The new partitions of the failing table were still made (creates come first).
    assert!(partition_names(&db)
        .await
        .contains(&"pricing_data_2026_11".to_string()));
}

#[tokio::test]
async fn a_hook_past_hook_timeout_is_killed_keeps_the_partition_and_counts_a_failure() {
    let (db, config) = two_tables(
        "hook_timeout = \"1s\"\n[tables.hooks]\nbefore_expire = [\"/bin/sleep\", \"60\"]\n",
    )
    .await;
    // The daemon counts passes: run it once (run_on_start) with a schedule that never fires.
    let config = config.replace(
        "[schedule]\ntimezone = \"UTC\"\n",
        "[schedule]\ntimezone = \"UTC\"\nmaintenance = \"0 0 1 1 *\"\nmetrics_refresh = \"1s\"\n\n[server]\nlisten = \"127.0.0.1:0\"\n",
    );
    let running = crate::common::http::RunningDaemon::start(&config).await;
    let body = std::cell::RefCell::new(String::new());
    crate::common::eventually(
        crate::common::PATIENCE,
        "the pass to be counted",
        || async {
            if let Some((200, b)) = running.get("/metrics").await {
                *body.borrow_mut() = b;
            }
            body.borrow().contains(
                &format!("partkeeper_maintenance_runs_total{{database=\"{}\",result=\"failure\",table=\"public.pricing_data\"}} 1", db.name()),
            )
        },
    )
    .await;
    let body = body.into_inner();
    assert!(
        body.contains(
            &format!("partkeeper_maintenance_runs_total{{database=\"{}\",result=\"success\",table=\"public.other\"}} 1", db.name())
        ),
        "{body}"
    );
    assert!(
        body.contains(&format!(
            "partkeeper_partitions_dropped_total{{database=\"{}\",table=\"public.other\"}} 1",
            db.name()
        )),
        "{body}"
    );
    assert!(
        body.contains(&format!("partkeeper_partitions_dropped_total{{database=\"{}\",table=\"public.pricing_data\"}} 0", db.name())),
        "{body}"
    );
    running.daemon.terminate();
    let log = running.daemon.stderr();
    assert!(log.contains("hook_timeout (1s)"), "{log}");
    assert_eq!(fixtures::count(&db, "pricing_data_2020_01").await, 500);
    assert_eq!(is_partition(&db, "public.other_2020_01").await, None);
    // The killed hook left no process behind.
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|c| c.as_slice() == b"/bin/sleep\x0060\x00")
        .map(|c| String::from_utf8_lossy(&c).into_owned())
        .collect();
    assert!(left.is_empty(), "the hook still runs: {left:?}");
}

// ---------------------------------------------------------------------------------------------
// Template

const TEMPLATE: &str =
    "CREATE TABLE pricing_data_template (LIKE pricing_data) WITH (fillfactor = 70);
CREATE UNIQUE INDEX pricing_data_template_id_key ON pricing_data_template (id);";

#[tokio::test]
async fn a_template_unique_index_on_id_is_on_every_partition_and_rejects_a_duplicate() {
    let db = pricing_db().await;
    // Made before the template was configured: maintain must add the index to it.
    db.exec("CREATE TABLE pricing_data_2026_10 PARTITION OF pricing_data FOR VALUES FROM ('2026-10-01') TO ('2026-11-01')")
        .await;
    db.exec(TEMPLATE).await;
    let cli = fixtures::cli(
        &db,
        &format!("{MONTHLY}template = \"public.pricing_data_template\"\n"),
    );
    let dry = cli
        .run_async(["maintain", "--dry-run", "--now", "2026-11-25"])
        .await;
    dry.assert_success();
    assert!(
        dry.stdout.contains("CREATE UNIQUE INDEX \"pricing_data_2026_11_id_key\" ON \"public\".\"pricing_data_2026_11\" USING btree (id)"),
        "{dry}"
    );
    let check = cli.run_async(["check", "--now", "2026-11-25"]).await;
    check.assert_code(1);
    assert!(
        check
            .stdout
            .contains("public.pricing_data_2026_10 lacks the index pricing_data_template_id_key"),
        "{check}"
    );

    let out = cli.run_async(["maintain", "--now", "2026-11-25"]).await;
    out.assert_success();
    assert!(
        out.stdout
            .contains("add-index public.pricing_data_2026_10 ok"),
        "{out}"
    );
    let without: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
          WHERE i.inhparent = 'pricing_data'::regclass
            AND NOT EXISTS (SELECT 1 FROM pg_index x WHERE x.indrelid = c.oid AND x.indisunique AND x.indisvalid
                              AND x.indnatts = 1 AND pg_get_indexdef(x.indexrelid) LIKE '%USING btree (id)')",
    )
    .fetch_all(&mut db.connect().await)
    .await
    .unwrap();
    assert!(
        without.is_empty(),
        "partitions without a unique index on id: {without:?}"
    );
    let partitions = partition_names(&db).await.len();
    assert_eq!(partitions, 6, "2026_10, 4 new, default");
    let fillfactor: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c WHERE c.relname IN ('pricing_data_2026_11', 'pricing_data_2027_02', 'pricing_data_default')
            AND 'fillfactor=70' = ANY (c.reloptions)",
    )
    .fetch_all(&mut db.connect().await)
    .await
    .unwrap();
    assert_eq!(
        fillfactor.len(),
        3,
        "storage options of the template: {fillfactor:?}"
    );

    db.exec("INSERT INTO pricing_data (id, \"propertyId\", date) VALUES (42, 'a', '2026-11-02')")
        .await;
    let dup = db
        .try_query_scalar::<i32>(
            "WITH i AS (INSERT INTO pricing_data (id, \"propertyId\", date) VALUES (42, 'b', '2026-11-20') RETURNING 1) SELECT 1 FROM i",
        )
        .await
        .expect_err("a duplicate id within a partition must fail");
    assert!(
        dup.to_string().contains("pricing_data_2026_11_id_key"),
        "{dup}"
    );
    cli.run_async(["check", "--now", "2026-11-25"])
        .await
        .assert_success();
    let again = cli.run_async(["maintain", "--now", "2026-11-25"]).await;
    assert!(again.stdout.contains("nothing to do"), "{again}");
}

#[tokio::test]
async fn a_template_primary_key_becomes_each_partitions_primary_key_when_the_parent_has_none() {
    let db = shared().create_database().await;
    db.exec(
        "CREATE TABLE events (id bigint NOT NULL, d date NOT NULL, body text) PARTITION BY RANGE (d);
         CREATE TABLE events_template (LIKE events);
         ALTER TABLE events_template ADD PRIMARY KEY (id);",
    )
    .await;
    let cli = fixtures::cli(
        &db,
        "[[tables]]\nname = \"public.events\"\ncolumn = \"d\"\ninterval = \"1 month\"\npremake = 1\ndefault_partition = false\ntemplate = \"public.events_template\"\n",
    );
    cli.run_async(["maintain", "--now", "2026-11-25"])
        .await
        .assert_success();
    let keys: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text || ' ' || pg_get_constraintdef(k.oid)
           FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
           JOIN pg_constraint k ON k.conrelid = c.oid AND k.contype = 'p'
          WHERE i.inhparent = 'events'::regclass ORDER BY 1",
    )
    .fetch_all(&mut db.connect().await)
    .await
    .unwrap();
    assert_eq!(
        keys,
        [
            "events_2026_11 PRIMARY KEY (id)",
            "events_2026_12 PRIMARY KEY (id)"
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// A table referenced by a foreign key

const BOOKINGS: &str =
    "CREATE TABLE bookings (id int PRIMARY KEY, price_id bigint, price_date date,
    FOREIGN KEY (price_id, price_date) REFERENCES pricing_data (id, date));";

#[tokio::test]
async fn expiry_of_a_referenced_partition_is_refused_while_rows_point_at_it_and_loses_nothing() {
    let db = pricing_db().await;
    db.exec(OLD_JAN).await;
    db.exec(BOOKINGS).await;
    db.exec("INSERT INTO bookings SELECT 1, id, date FROM pricing_data WHERE date = '2020-01-05' LIMIT 1")
        .await;
    let before = fingerprint(&db, "pricing_data_2020_01").await;
    for mode in ["drop", "archive"] {
        let cli = fixtures::cli(&db, &policy(&format!("retention_mode = \"{mode}\"\n")))
            .timeout(Duration::from_secs(60));
        let dry = cli
            .run_async(["maintain", "--dry-run", "--now", "2026-11-25"])
            .await;
        assert!(
            dry.stdout
                .contains("bookings_price_id_price_date_fkey on public.bookings")
                && dry.stdout.contains("SHARE lock")
                && dry
                    .stdout
                    .contains("stays ACCESS EXCLUSIVE-locked during that scan"),
            "{dry}"
        );
        let out = cli.run_async(["maintain", "--now", "2026-11-25"]).await;
        out.assert_code(1);
        assert!(
            out.stdout.contains("kept public.pricing_data_2020_01: rows of public.bookings still reference it through foreign key bookings_price_id_price_date_fkey"),
            "{out}"
        );
        assert_eq!(
            is_partition(&db, "public.pricing_data_2020_01").await,
            Some(true)
        );
        assert_eq!(fingerprint(&db, "pricing_data_2020_01").await, before);
        assert_eq!(fixtures::count(&db, "bookings").await, 1);
        let check = cli.run_async(["check", "--now", "2026-11-25"]).await;
        assert!(
            check
                .stdout
                .contains("PostgreSQL scans each referencing table"),
            "{check}"
        );
    }
    // Once nothing references it, it expires.
    db.exec("DELETE FROM bookings").await;
    let cli = fixtures::cli(&db, &policy("retention_mode = \"drop\"\n"));
    cli.run_async(["maintain", "--now", "2026-11-25"])
        .await
        .assert_success();
    assert_eq!(is_partition(&db, "public.pricing_data_2020_01").await, None);
}

#[tokio::test]
async fn expiry_waits_for_a_busy_referencing_table_only_up_to_lock_timeout() {
    use sqlx::Connection;
    let db = pricing_db().await;
    db.exec(OLD_JAN).await;
    db.exec(BOOKINGS).await;
    // An application transaction writing to bookings: PostgreSQL's check at DETACH needs a SHARE
    // lock on it, which waits for this one.
    let mut app = db.connect().await;
    sqlx::raw_sql("BEGIN; LOCK TABLE bookings IN ROW EXCLUSIVE MODE")
        .execute(&mut app)
        .await
        .unwrap();
    let config = fixtures::config(&db, &policy("retention_mode = \"drop\"\n")).replacen(
        "lock_timeout = \"1s\"\n",
        "lock_timeout = \"1s\"\nlock_retries = 2\n",
        1,
    );
    let cli = crate::common::Cli::new()
        .config(&config)
        .timeout(Duration::from_secs(60));
    let started = std::time::Instant::now();
    let out = cli.run_async(["maintain", "--now", "2026-11-25"]).await;
    let took = started.elapsed();
    out.assert_code(1);
    assert!(out.stdout.contains("within lock_timeout"), "{out}");
    assert_eq!(
        is_partition(&db, "public.pricing_data_2020_01").await,
        Some(true)
    );
    assert_eq!(fixtures::count(&db, "pricing_data_2020_01").await, 500);
    sqlx::raw_sql("COMMIT").execute(&mut app).await.unwrap();
    let _ = app.close().await;
    eprintln!("maintain gave up on the busy referencing table after {took:?}");
    // Once the application's transaction is over, the next run expires it.
    cli.run_async(["maintain", "--now", "2026-11-25"])
        .await
        .assert_success();
    assert_eq!(is_partition(&db, "public.pricing_data_2020_01").await, None);
}

#[tokio::test]
async fn a_row_referencing_the_partition_added_after_the_look_is_still_refused_by_postgres() {
    // partkeeper's look is lock-free; PostgreSQL's own check at DETACH is what guarantees no row
    // is lost. Simulate the race: a before_expire hook inserts the referencing row.
    let db = pricing_db().await;
    db.exec(OLD_JAN).await;
    db.exec(BOOKINGS).await;
    let psql = pg_tool("psql").display().to_string();
    let hook = format!(
        "[tables.hooks]\nbefore_expire = [{psql:?}, \"-X\", \"-q\", \"-c\", \"INSERT INTO bookings SELECT 7, id, date FROM pricing_data WHERE date = '2020-01-09' LIMIT 1\", {:?}]\n",
        db.url()
    );
    let cli = fixtures::cli(&db, &policy(&format!("retention_mode = \"drop\"\n{hook}")))
        .timeout(Duration::from_secs(60));
    let out = cli.run_async(["maintain", "--now", "2026-11-25"]).await;
    out.assert_code(1);
    assert!(
        out.stdout.contains("violates foreign key constraint"),
        "{out}"
    );
    assert_eq!(fixtures::count(&db, "bookings").await, 1);
    assert_eq!(fixtures::count(&db, "pricing_data_2020_01").await, 500);
    assert_eq!(
        is_partition(&db, "public.pricing_data_2020_01").await,
        Some(true)
    );
}

// ---------------------------------------------------------------------------------------------
// Bad configuration: exit 2 naming the key, nothing changed

use crate::bad_input::{edited, refused};

#[tokio::test]
async fn a_bad_archive_schema_is_refused() {
    let db = pricing_db().await;
    let config = edited(&db, "premake = 3", "premake = 3\narchive_schema = \"a.b\"");
    refused(&db, &config, "tables[0].archive_schema").await;
}

#[tokio::test]
async fn a_bad_template_name_is_refused() {
    let db = pricing_db().await;
    let config = edited(&db, "premake = 3", "premake = 3\ntemplate = \"a.b.c\"");
    refused(&db, &config, "tables[0].template").await;
}

#[tokio::test]
async fn a_missing_template_table_is_refused() {
    let db = pricing_db().await;
    let config = edited(
        &db,
        "premake = 3",
        "premake = 3\ntemplate = \"public.no_such_template\"",
    );
    refused(
        &db,
        &config,
        "tables[].template public.no_such_template of public.pricing_data does not exist",
    )
    .await;
}

#[tokio::test]
async fn a_template_with_other_columns_is_refused() {
    let db = pricing_db().await;
    db.exec("CREATE TABLE tpl (id int, extra text)").await;
    let config = edited(&db, "premake = 3", "premake = 3\ntemplate = \"public.tpl\"");
    let out = refused(
        &db,
        &config,
        "tables[].template public.tpl does not match public.pricing_data",
    )
    .await;
    assert!(
        out.stderr.contains("id integer (the table has bigint)"),
        "{out}"
    );
    assert!(
        out.stderr
            .contains("extra text (the table has no such column)"),
        "{out}"
    );
}

#[tokio::test]
async fn an_empty_hook_is_refused() {
    let db = pricing_db().await;
    let config = fixtures::config(
        &db,
        &format!("{MONTHLY}[tables.hooks]\nbefore_expire = []\n"),
    );
    refused(&db, &config, "tables[0].hooks.before_expire is empty").await;
}

#[tokio::test]
async fn an_unknown_hook_is_refused() {
    let db = pricing_db().await;
    let config = fixtures::config(
        &db,
        &format!("{MONTHLY}[tables.hooks]\nbefore_drop = [\"/bin/true\"]\n"),
    );
    refused(&db, &config, "unknown field `before_drop`").await;
}

#[tokio::test]
async fn a_bad_hook_timeout_is_refused() {
    let db = pricing_db().await;
    let config = edited(
        &db,
        "premake = 3",
        "premake = 3\nhook_timeout = \"forever\"",
    );
    refused(&db, &config, "tables[0].hook_timeout = \"forever\"").await;
}

#[tokio::test]
async fn a_hook_that_is_not_a_list_is_refused() {
    let db = pricing_db().await;
    let config = fixtures::config(
        &db,
        &format!("{MONTHLY}[tables.hooks]\nafter_create = \"/bin/true --flag\"\n"),
    );
    refused(&db, &config, "after_create").await;
}

// ---------------------------------------------------------------------------------------------
// migrate with a foreign key into the table

async fn fk_target(db: &TestDb, table: &str) -> (String, bool) {
    let mut c = db.connect().await;
    sqlx::query_as(&format!(
        "SELECT confrelid::regclass::text || ' ' || (SELECT relkind::text FROM pg_class WHERE oid = confrelid), convalidated
           FROM pg_constraint WHERE conrelid = '{table}'::regclass AND contype = 'f' AND conparentid = 0"
    ))
    .fetch_one(&mut c)
    .await
    .unwrap()
}

#[tokio::test]
async fn migrate_carries_a_foreign_key_into_the_table_and_it_stays_enforced() {
    let db = shared().create_database().await;
    db.exec(
        "CREATE TABLE pricing_data (id bigserial, date date NOT NULL, price numeric, PRIMARY KEY (id, date));
         INSERT INTO pricing_data (date, price) SELECT current_date - (g % 400), g FROM generate_series(1, 3000) g;
         CREATE TABLE bookings (id serial PRIMARY KEY, price_id bigint, price_date date,
           CONSTRAINT bookings_price_fk FOREIGN KEY (price_id, price_date) REFERENCES pricing_data ON DELETE CASCADE);
         INSERT INTO bookings (price_id, price_date) SELECT id, date FROM pricing_data WHERE id % 30 = 0;",
    )
    .await;
    let cli = crate::common::Cli::new().config(&format!(
        "[database]\nurl = \"{}\"\nlock_timeout = \"2s\"\n\n[[tables]]\nname = \"public.pricing_data\"\ncolumn = \"date\"\ninterval = \"1 month\"\npremake = 3\ndefault_partition = true\n",
        db.url()
    ));
    let plan = cli
        .run_async(["migrate", "plan", "--table", "public.pricing_data"])
        .await;
    plan.assert_success();
    assert!(
        plan.stdout
            .contains("foreign key bookings_price_fk on bookings"),
        "{plan}"
    );
    let run = cli
        .run_async(["migrate", "run", "--table", "public.pricing_data"])
        .await;
    run.assert_success();
    assert_eq!(
        fk_target(&db, "bookings").await,
        ("pricing_data p".to_string(), true),
        "the foreign key points at the partitioned table, validated: {run}"
    );
    assert_eq!(fixtures::count(&db, "bookings").await, 100);

    let violating = db
        .try_query_scalar::<i32>(
            "WITH i AS (INSERT INTO bookings (price_id, price_date) VALUES (999999, current_date) RETURNING 1) SELECT 1 FROM i",
        )
        .await
        .expect_err("a booking of a price that does not exist must fail after the swap");
    assert!(
        violating.to_string().contains("bookings_price_fk"),
        "{violating}"
    );
    db.exec("INSERT INTO bookings (price_id, price_date) SELECT id, date FROM pricing_data WHERE id = 31")
        .await;
    // ON DELETE CASCADE came along too.
    db.exec("DELETE FROM pricing_data WHERE id = 30").await;
    assert_eq!(fixtures::count(&db, "bookings").await, 100);

    let back = cli
        .run_async(["migrate", "rollback", "--table", "public.pricing_data"])
        .await;
    back.assert_success();
    assert_eq!(
        fk_target(&db, "bookings").await,
        ("pricing_data r".to_string(), true),
        "rollback points it back at the plain table: {back}"
    );
    assert!(db
        .try_query_scalar::<i32>(
            "WITH i AS (INSERT INTO bookings (price_id, price_date) VALUES (999999, current_date) RETURNING 1) SELECT 1 FROM i",
        )
        .await
        .is_err());
}

#[tokio::test]
async fn migrate_finalize_keeps_the_moved_foreign_key() {
    let db = shared().create_database().await;
    db.exec(
        "CREATE TABLE pricing_data (id bigserial, date date NOT NULL, PRIMARY KEY (id, date));
         INSERT INTO pricing_data (date) SELECT current_date - (g % 100) FROM generate_series(1, 500) g;
         CREATE TABLE bookings (id serial PRIMARY KEY, price_id bigint, price_date date,
           FOREIGN KEY (price_id, price_date) REFERENCES pricing_data);
         INSERT INTO bookings (price_id, price_date) SELECT id, date FROM pricing_data WHERE id % 10 = 0;",
    )
    .await;
    let cli = crate::common::Cli::new().config(&format!(
        "[database]\nurl = \"{}\"\n\n[[tables]]\nname = \"public.pricing_data\"\ncolumn = \"date\"\ninterval = \"1 month\"\n",
        db.url()
    ));
    for step in ["run", "verify", "finalize"] {
        cli.run_async(["migrate", step, "--table", "public.pricing_data"])
            .await
            .assert_success();
    }
    assert_eq!(
        fk_target(&db, "bookings").await,
        ("pricing_data p".to_string(), true)
    );
    let backup: Option<String> = db
        .query_scalar("SELECT to_regclass('pricing_data_backup')::text")
        .await;
    assert_eq!(backup, None);
    assert!(db
        .try_query_scalar::<i32>(
            "WITH i AS (INSERT INTO bookings (price_id, price_date) VALUES (-1, current_date) RETURNING 1) SELECT 1 FROM i",
        )
        .await
        .is_err());
}

#[tokio::test]
async fn migrate_still_refuses_a_foreign_key_over_the_id_alone_and_says_why() {
    let db = shared().create_database().await;
    db.exec(
        "CREATE TABLE pricing_data (id bigserial PRIMARY KEY, date date NOT NULL);
         CREATE TABLE bookings (id serial PRIMARY KEY, price_id bigint REFERENCES pricing_data);",
    )
    .await;
    let cli = crate::common::Cli::new().config(&format!(
        "[database]\nurl = \"{}\"\n\n[[tables]]\nname = \"public.pricing_data\"\ncolumn = \"date\"\ninterval = \"1 month\"\n",
        db.url()
    ));
    let plan = cli
        .run_async(["migrate", "plan", "--table", "public.pricing_data"])
        .await;
    plan.assert_code(1);
    assert!(
        plan.stdout
            .contains("must reference its whole primary key including date")
            && plan.stdout.contains("over (id, date)"),
        "{plan}"
    );
}

// ---------------------------------------------------------------------------------------------
// Through a transaction pooler

#[tokio::test]
async fn through_a_transaction_pooler_archive_template_and_the_foreign_key_look_work() {
    let db = pricing_db().await;
    db.exec(OLD_JAN).await;
    db.exec(TEMPLATE).await;
    db.exec(BOOKINGS).await;
    let jan = fingerprint(&db, "pricing_data_2020_01").await;
    let bouncer =
        crate::common::pgbouncer::PgBouncer::builder(shared().port(), "transaction").start();
    let config = format!(
        "[database]\nurl = \"{}\"\npooler = \"transaction\"\nconnect_timeout = \"5s\"\n\n[schedule]\ntimezone = \"UTC\"\n{}",
        bouncer.url(db.name()),
        policy("retention_mode = \"archive\"\ntemplate = \"public.pricing_data_template\"\n")
    );
    let cli = crate::common::Cli::new().config(&config);
    let dry = cli
        .run_async(["maintain", "--dry-run", "--now", "2026-11-25"])
        .await;
    dry.assert_success();
    assert!(
        dry.stdout.contains("bookings_price_id_price_date_fkey"),
        "{dry}"
    );
    let out = cli.run_async(["maintain", "--now", "2026-11-25"]).await;
    out.assert_success();
    assert_eq!(
        is_partition(&db, "archive.pricing_data_2020_01").await,
        Some(false)
    );
    assert_eq!(fingerprint(&db, "archive.pricing_data_2020_01").await, jan);
    let with_index: i64 = db
        .query_scalar(
            "SELECT count(*) FROM pg_inherits i JOIN pg_index x ON x.indrelid = i.inhrelid
              WHERE i.inhparent = 'pricing_data'::regclass AND x.indisunique AND x.indnatts = 1",
        )
        .await;
    assert_eq!(with_index, 5, "4 new partitions and the default: {out}");
    let check = cli.run_async(["check", "--now", "2026-11-25"]).await;
    check.assert_success();
    assert!(
        check.stdout.contains("archive.pricing_data_2020_01"),
        "{check}"
    );
    cli.run_async(["status"]).await.assert_success();

    // An old partition without the template's index: the pooler cannot build it concurrently,
    // so maintain says what to do instead of failing, and check reports it.
    db.exec("CREATE TABLE pricing_data_2026_10 PARTITION OF pricing_data FOR VALUES FROM ('2026-10-01') TO ('2026-11-01')")
        .await;
    let out = cli.run_async(["maintain", "--now", "2026-11-25"]).await;
    out.assert_success();
    assert!(
        out.stdout
            .contains("public.pricing_data_2026_10 lacks the index pricing_data_template_id_key")
            && out
                .stdout
                .contains("over a direct or session-mode connection"),
        "{out}"
    );
    cli.run_async(["check", "--now", "2026-11-25"])
        .await
        .assert_code(1);
    let direct = fixtures::cli(
        &db,
        &policy("retention_mode = \"archive\"\ntemplate = \"public.pricing_data_template\"\n"),
    );
    let out = direct.run_async(["maintain", "--now", "2026-11-25"]).await;
    out.assert_success();
    assert!(
        out.stdout
            .contains("add-index public.pricing_data_2026_10 ok"),
        "{out}"
    );
    cli.run_async(["check", "--now", "2026-11-25"])
        .await
        .assert_success();
}

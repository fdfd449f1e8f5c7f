//! `partkeeper migrate` against real PostgreSQL, on the runbook's `pricing_data`: plan and run
//! with NULL keys, concurrent writers during an online run, SIGKILL at random points, rollback
//! after writes made since the swap, finalize.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;
use sqlx::{PgConnection, Row};

use crate::common::writer::{Failure, Pace, Write};
use crate::common::{fixtures, shared, Cli, TestDb, Writer};

/// Every column, the key filled as `--fill-null-with '"createdAt"::date'` fills it.
const ROW_TEXT: &str = r#"ROW(id, "propertyId", COALESCE(date, "createdAt"::date), price, "minPrice", "maxPrice",
  occupancy, "demandScore", source, "createdAt", "updatedAt")::text"#;

const FILL: &str = "\"createdAt\"::date";

pub(crate) fn config(db: &TestDb, default_partition: bool) -> String {
    format!(
        r#"
[database]
url = "{}"
lock_timeout = "2s"

[[tables]]
name = "public.pricing_data"
column = "date"
interval = "1 month"
premake = 3
default_partition = {default_partition}
"#,
        db.url()
    )
}

/// `rows` rows over 50 properties, dates from about 14 months back to 2 months ahead (future
/// rows included), `nulls` of them with a NULL date.
pub(crate) async fn pricing_data(rows: i64, nulls: i64, default_partition: bool) -> (TestDb, Cli) {
    let db = shared().create_database().await;
    db.exec(&fixtures::plain_pricing_data()).await;
    db.exec(&format!(
        r#"INSERT INTO pricing_data ("propertyId", date, price, "minPrice", "maxPrice", occupancy, "demandScore", source, "createdAt")
           SELECT 'p' || (g % 50), current_date - 420 + (g % 480), (g % 500) + 0.25, 10, 900, (g % 100) / 100.0,
                  (g % 7) / 3.0, CASE WHEN g % 3 = 0 THEN 'csv' END, now() - make_interval(days => g % 30)
             FROM generate_series(1, {rows}) g;
           UPDATE pricing_data SET date = NULL WHERE id <= {nulls};
           ANALYZE pricing_data;"#
    ))
    .await;
    let cli = Cli::new().config(&config(&db, default_partition));
    (db, cli)
}

/// Row count and an order-independent checksum of every row's contents.
async fn content(db: &TestDb, table: &str) -> (i64, i64) {
    let mut c = db.connect().await;
    let row = sqlx::query(&format!(
        "SELECT count(*)::int8, COALESCE(sum(hashtext({ROW_TEXT})::int8), 0)::int8 FROM {table}"
    ))
    .fetch_one(&mut c)
    .await
    .unwrap();
    (row.get(0), row.get(1))
}

async fn relkind(db: &TestDb, table: &str) -> Option<String> {
    db.query_scalar(&format!(
        "SELECT (SELECT relkind::text FROM pg_class WHERE oid = to_regclass('{table}'))"
    ))
    .await
}

/// Objects a finished (or abandoned) migration must not leave behind.
async fn leftovers(db: &TestDb) -> Vec<String> {
    db.query_scalar::<Vec<String>>(
        "SELECT ARRAY(
           SELECT 'relation ' || relname FROM pg_class
            WHERE relname IN ('pricing_data_backup', 'pricing_data_partitioned')
           UNION ALL SELECT 'trigger ' || tgname FROM pg_trigger WHERE tgname LIKE 'partkeeper%'
           UNION ALL SELECT 'function ' || proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname = 'partkeeper'
           UNION ALL SELECT 'schema ' || nspname FROM pg_namespace WHERE nspname = 'partkeeper')",
    )
    .await
}

async fn as_role<T>(db: &TestDb, role: &str, sql: &str) -> T
where
    T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
{
    let mut c = db.connect().await;
    sqlx::raw_sql(&format!("SET ROLE {role}"))
        .execute(&mut c)
        .await
        .unwrap();
    sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
}

/// A role name unique to this test's database (roles are shared by the whole cluster).
fn role(db: &TestDb, what: &str) -> String {
    format!("{what}_{}", db.name().split('_').next().unwrap_or("x"))
}

#[tokio::test]
async fn migrating_pricing_data_with_null_dates_keeps_rows_views_grants_policies_and_ids() {
    let (db, cli) = pricing_data(20_000, 7, false).await;
    let (reader, tenant) = (role(&db, "reader"), role(&db, "tenant"));
    db.exec(&format!(
        r#"CREATE ROLE {reader}; CREATE ROLE {tenant};
           GRANT SELECT ON pricing_data TO {reader};
           GRANT SELECT ON pricing_data TO {tenant};
           ALTER TABLE pricing_data ENABLE ROW LEVEL SECURITY;
           CREATE POLICY tenant_p1 ON pricing_data FOR SELECT TO {tenant} USING ("propertyId" = 'p1');
           CREATE POLICY reader_all ON pricing_data FOR SELECT TO {reader} USING (true);
           CREATE VIEW pricing_recent AS SELECT "propertyId", date, price FROM pricing_data WHERE date >= current_date - 30;
           COMMENT ON TABLE pricing_data IS 'daily prices';"#
    ))
    .await;
    let before = content(&db, "pricing_data").await;
    // The view as it will answer once the NULL dates are filled.
    let recent: i64 = db
        .query_scalar(r#"SELECT count(*) FROM pricing_data WHERE COALESCE(date, "createdAt"::date) >= current_date - 30"#)
        .await;
    let p1_rows: i64 = db
        .query_scalar("SELECT count(*) FROM pricing_data WHERE \"propertyId\" = 'p1'")
        .await;

    // Plan: blocked by the NULL dates, says what to do, changes nothing.
    let plan = cli.run(["migrate", "plan", "--table", "public.pricing_data"]);
    plan.assert_code(1);
    assert!(plan.stdout.contains("7 row(s) have a NULL date"), "{plan}");
    assert!(plan.stdout.contains("--fill-null-with"), "{plan}");
    assert!(plan.stdout.contains("view public.pricing_recent"), "{plan}");
    assert!(plan.stdout.contains("policy tenant_p1"), "{plan}");
    assert!(
        plan.stdout
            .contains("id alone is no longer enforced unique"),
        "{plan}"
    );
    assert_eq!(relkind(&db, "pricing_data").await.as_deref(), Some("r"));
    assert!(leftovers(&db).await.is_empty());

    // Run without a fill: refused, nothing changed.
    let refused = cli.run(["migrate", "run", "--table", "public.pricing_data"]);
    assert!(matches!(refused.code(), Some(1 | 2)), "{refused}");
    assert!(refused.stdout.contains("NULL date"), "{refused}");
    assert!(
        leftovers(&db).await.is_empty(),
        "{:?}",
        leftovers(&db).await
    );

    // A fill that is not SQL over the table is a usage error.
    let bad = cli.run([
        "migrate",
        "run",
        "--table",
        "public.pricing_data",
        "--fill-null-with",
        "nosuchcolumn",
    ]);
    bad.assert_code(2);

    let plan = cli.run([
        "migrate",
        "plan",
        "--table",
        "public.pricing_data",
        "--fill-null-with",
        FILL,
    ]);
    plan.assert_success();

    let run = cli.run([
        "migrate",
        "run",
        "--table",
        "public.pricing_data",
        "--fill-null-with",
        FILL,
    ]);
    run.assert_success();
    assert!(run.stdout.contains("7 NULL key(s) filled"), "{run}");

    assert_eq!(relkind(&db, "pricing_data").await.as_deref(), Some("p"));
    assert_eq!(
        relkind(&db, "pricing_data_backup").await.as_deref(),
        Some("r")
    );
    assert_eq!(content(&db, "pricing_data").await, before);
    let nulls: i64 = db
        .query_scalar("SELECT count(*) FROM pricing_data WHERE date IS NULL")
        .await;
    assert_eq!(nulls, 0);
    // Future-dated rows have partitions of their own, not the default.
    let in_default: i64 = db
        .query_scalar(
            "SELECT count(*) FROM pricing_data WHERE tableoid::regclass::text LIKE '%default%'",
        )
        .await;
    assert_eq!(in_default, 0);

    // The view answers, from the new table.
    assert_eq!(
        db.query_scalar::<i64>("SELECT count(*) FROM pricing_recent")
            .await,
        recent
    );
    let on_new: bool = db
        .query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
                             WHERE r.ev_class = 'pricing_recent'::regclass AND d.refobjid = 'pricing_data'::regclass)",
        )
        .await;
    assert!(on_new, "the view should depend on the partitioned table");

    // Grants and row-level security follow.
    assert_eq!(
        as_role::<i64>(&db, &reader, "SELECT count(*) FROM pricing_data").await,
        before.0
    );
    assert_eq!(
        as_role::<i64>(&db, &tenant, "SELECT count(*) FROM pricing_data").await,
        p1_rows
    );
    let comment: Option<String> = db
        .query_scalar("SELECT obj_description('pricing_data'::regclass, 'pg_class')")
        .await;
    assert_eq!(comment.as_deref(), Some("daily prices"));
    // Index names moved to the new table.
    let idx: String = db
        .query_scalar("SELECT indrelid::regclass::text FROM pg_index WHERE indexrelid = 'idx_pricing_data_date'::regclass")
        .await;
    assert_eq!(idx, "pricing_data");

    // The id sequence follows: an INSERT without an id gets a fresh one.
    let max_id: i64 = db
        .query_scalar("SELECT max(id) FROM pricing_data_backup")
        .await;
    let id: i64 = db
        .query_scalar(r#"INSERT INTO pricing_data ("propertyId", date, price) VALUES ('p1', current_date, 1) RETURNING id"#)
        .await;
    assert!(id > max_id, "{id} <= {max_id}");
    let owner: String = db
        .query_scalar("SELECT d.refobjid::regclass::text FROM pg_depend d WHERE d.objid = 'pricing_data_id_seq'::regclass AND d.deptype = 'a'")
        .await;
    assert_eq!(owner, "pricing_data");

    cli.run(["migrate", "verify", "--table", "public.pricing_data"])
        .assert_success();
    // A second run is a no-op that says so.
    let again = cli.run([
        "migrate",
        "run",
        "--table",
        "public.pricing_data",
        "--fill-null-with",
        FILL,
    ]);
    again.assert_success();
    assert!(again.stdout.contains("already migrated"), "{again}");
}

fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(d) => d.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// What one writer's successful statements imply: id → (date, price), None when deleted.
type Expected = BTreeMap<i64, Option<(Option<chrono::NaiveDate>, String)>>;

async fn snapshot(db: &TestDb, table: &str) -> BTreeMap<i64, (Option<chrono::NaiveDate>, String)> {
    let mut c = db.connect().await;
    sqlx::query_as::<_, (i64, Option<chrono::NaiveDate>, String)>(&format!(
        "SELECT id, date, price::text FROM {table}"
    ))
    .fetch_all(&mut c)
    .await
    .unwrap()
    .into_iter()
    .map(|(id, d, p)| (id, (d, p)))
    .collect()
}

/// Writes to `pricing_data`: inserts (once `far` is set some far in the future, where only the
/// temporary default partition takes them during the copy), updates (some move the row to
/// another month) and deletes, only on ids `id % writers == me` plus its own inserts. `expected`
/// is what its successful statements imply.
struct MixedWrites {
    me: i64,
    writers: i64,
    max_id: i64,
    far: Arc<AtomicBool>,
    rng: fastrand::Rng,
    mine: Vec<i64>,
    expected: Expected,
}

impl Write for MixedWrites {
    fn write<'a>(
        &'a mut self,
        c: &'a mut PgConnection,
        _round: u64,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        async move {
            let rng = &mut self.rng;
            let op = rng.u32(0..10);
            if op < 4 {
                let days = if self.far.load(Ordering::Relaxed) && rng.u32(0..10) == 0 {
                    rng.i64(500..540)
                } else {
                    rng.i64(-400..60)
                };
                let price = format!("{}.50", rng.u32(1..999));
                let (id, date): (i64, Option<chrono::NaiveDate>) = sqlx::query_as(
                    r#"INSERT INTO pricing_data ("propertyId", date, price) VALUES ('w', current_date + $1::int, $2::numeric)
                       RETURNING id, date"#,
                )
                .bind(days as i32)
                .bind(&price)
                .fetch_one(&mut *c)
                .await?;
                self.mine.push(id);
                self.expected.insert(id, Some((date, price)));
            } else {
                let id = if !self.mine.is_empty() && rng.bool() {
                    self.mine[rng.usize(0..self.mine.len())]
                } else {
                    rng.i64(0..self.max_id / self.writers) * self.writers + self.me
                };
                if op < 8 {
                    let price = format!("{}.75", rng.u32(1..999));
                    let shift = if rng.bool() { rng.i64(-20..20) } else { 0 };
                    let row: Option<(Option<chrono::NaiveDate>,)> = sqlx::query_as(
                        "UPDATE pricing_data SET price = $2::numeric, date = date + $3::int, \"updatedAt\" = now()
                          WHERE id = $1 RETURNING date",
                    )
                    .bind(id)
                    .bind(&price)
                    .bind(shift as i32)
                    .fetch_optional(&mut *c)
                    .await?;
                    if let Some((date,)) = row {
                        self.expected.insert(id, Some((date, price)));
                    }
                } else {
                    let gone = sqlx::query("DELETE FROM pricing_data WHERE id = $1")
                        .bind(id)
                        .execute(&mut *c)
                        .await?;
                    if gone.rows_affected() > 0 {
                        self.expected.insert(id, None);
                    }
                }
            }
            Ok(())
        }
        .boxed()
    }
}

/// `writers` [`MixedWrites`] tasks on `db`, each pausing 1 ms between statements.
async fn start_writers(
    db: &TestDb,
    writers: i64,
    max_id: i64,
    far: &Arc<AtomicBool>,
) -> Writer<MixedWrites> {
    let writes = (0..writers)
        .map(|me| MixedWrites {
            me,
            writers,
            max_id,
            far: far.clone(),
            rng: fastrand::Rng::with_seed(me as u64),
            mine: Vec::new(),
            expected: Expected::new(),
        })
        .collect();
    Writer::start_each(
        db.connect_options(),
        writes,
        Pace::pause(Duration::from_millis(1)),
    )
    .await
}

/// Applies what a writer's statements imply to `state`.
fn apply(state: &mut BTreeMap<i64, (Option<chrono::NaiveDate>, String)>, expected: Expected) {
    for (id, row) in expected {
        match row {
            Some(r) => state.insert(id, r),
            None => state.remove(&id),
        };
    }
}

#[tokio::test]
async fn concurrent_writers_see_no_errors_and_their_writes_survive_an_online_run() {
    let (db, cli) = pricing_data(30_000, 0, false).await;
    let max_id: i64 = db.query_scalar("SELECT max(id) FROM pricing_data").await;
    let mut state = snapshot(&db, "pricing_data").await;
    let far = Arc::new(AtomicBool::new(false));
    let writers = start_writers(&db, 3, max_id, &far).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let run = cli.spawn([
        "migrate",
        "run",
        "--table",
        "public.pricing_data",
        "--batch-size",
        "1000",
    ]);
    // Once the copy is under way (the build has recorded the migration), rows beyond every
    // partition arrive: the temporary default partition takes them, and the swap gives them
    // partitions of their own.
    crate::common::eventually(
        Duration::from_secs(60),
        "the migration to be recorded",
        || async {
            db.try_query_scalar::<i64>("SELECT count(*) FROM partkeeper.migrations")
                .await
                .is_ok_and(|n| n == 1)
        },
    )
    .await;
    far.store(true, Ordering::Relaxed);
    let run = run.wait(Duration::from_secs(120)).await;
    // Writes after the swap go on (they reach the backup through the reverse trigger).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let writers = writers.stop_each().await;
    run.assert_success();
    let swapped_at: chrono::DateTime<chrono::Utc> = db
        .query_scalar("SELECT swapped_at FROM partkeeper.migrations")
        .await;
    // Each phase this test means to write in was written in: rows beyond every partition
    // between the build and the swap, and rows after the swap, in the table and the backup.
    let (far_during_copy, after_swap, after_swap_in_backup): (i64, i64, i64) = {
        let mut c = db.connect().await;
        sqlx::query_as(
            r#"SELECT (SELECT count(*) FROM pricing_data p WHERE p.date >= current_date + 500
                         AND p."createdAt" > m.started_at AND p."createdAt" < m.swapped_at),
                      (SELECT count(*) FROM pricing_data p WHERE p."createdAt" > m.swapped_at),
                      (SELECT count(*) FROM pricing_data_backup b WHERE b."createdAt" > m.swapped_at)
                 FROM partkeeper.migrations m"#,
        )
        .fetch_one(&mut c)
        .await
        .unwrap()
    };
    assert!(
        far_during_copy > 0,
        "no row beyond every partition was written during the copy\n{run}"
    );
    assert!(
        after_swap > 0 && after_swap_in_backup > 0,
        "no write after the swap ({after_swap} in the table, {after_swap_in_backup} in the backup)\n{run}"
    );
    let mut statements = 0;
    for (w, report) in writers {
        // Lock timeouts are retried by applications. After the swap, a row beyond every
        // partition is refused by the partitioned table itself (no default partition is
        // configured), as it would be after any conversion.
        let unexpected: Vec<&Failure> = report
            .errors
            .iter()
            .filter(|f| {
                let code = f.sqlstate.as_deref();
                !(code == Some("55P03") || (code == Some("23514") && f.at >= swapped_at))
            })
            .collect();
        assert!(
            unexpected.is_empty(),
            "writer errors: {unexpected:#?}\n{run}"
        );
        statements += report.statements;
        apply(&mut state, w.expected);
    }
    assert!(
        statements > 100,
        "the writers barely ran ({statements} statements)"
    );
    assert_eq!(relkind(&db, "pricing_data").await.as_deref(), Some("p"));
    let live = snapshot(&db, "pricing_data").await;
    assert_eq!(live.len(), state.len());
    assert!(
        live == state,
        "the partitioned table differs from what the writers' statements imply"
    );
    assert_eq!(
        snapshot(&db, "pricing_data_backup").await,
        state,
        "backup out of step"
    );
    assert_eq!(relkind(&db, "pricing_data_default").await, None, "{run}");
    cli.run(["migrate", "verify", "--table", "public.pricing_data"])
        .assert_success();
}

/// Where a killed `migrate run` left the migration, once its server session has ended (a killed
/// client's backend goes on with the statement, or the COMMIT, it was sent and may commit after
/// the client is gone): `nothing`, `built` (recorded, no row copied yet), `mid-copy`, `copied`
/// (not swapped yet) or `swapped`.
async fn phase_after_kill(db: &TestDb) -> String {
    crate::common::eventually(
        Duration::from_secs(60),
        "the killed run's server session has ended",
        || async {
            db.query_scalar::<i64>(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE datname = current_database() AND application_name = 'partkeeper'",
            )
            .await
                == 0
        },
    )
    .await;
    db.try_query_scalar::<String>(
        "SELECT CASE WHEN phase = 'swapped' THEN 'swapped' WHEN copy_done THEN 'copied'
                     WHEN rows_copied > 0 THEN 'mid-copy' ELSE 'built' END
           FROM partkeeper.migrations",
    )
    .await
    .unwrap_or_else(|_| "nothing".into())
}

/// Polls (every 5 ms, up to a minute) until the run of `child` has copied rows but not all of
/// them; `false` when the run ended first.
async fn until_mid_copy(db: &TestDb, child: &mut crate::common::Daemon) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.is_running() && Instant::now() < deadline {
        let copying = db
            .try_query_scalar::<bool>(
                "SELECT rows_copied > 0 AND NOT copy_done FROM partkeeper.migrations",
            )
            .await
            .unwrap_or(false);
        if copying {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

#[tokio::test]
async fn killing_run_at_random_points_then_running_again_gives_identical_content() {
    let (db, cli) = pricing_data(20_000, 0, false).await;
    let before = content(&db, "pricing_data").await;
    let args = [
        "migrate",
        "run",
        "--table",
        "public.pricing_data",
        "--batch-size",
        "500",
    ];
    // How long an uninterrupted run takes here (on an identical copy), to spread the kills over
    // it whatever the machine's speed: fixed delays stop landing when the code gets faster.
    let whole = {
        let (twin, twin_cli) = pricing_data(20_000, 0, false).await;
        let started = Instant::now();
        twin_cli.run_async(args).await.assert_success();
        drop(twin);
        started.elapsed()
    };
    let mut rng = fastrand::Rng::with_seed(7);
    let mut kills = 0;
    let mut seen = BTreeMap::<String, u32>::new();
    for round in 0..10 {
        let started = Instant::now();
        let mut child = cli.spawn(args);
        // The first three rounds kill within the first fifth of a whole run: no run can get
        // further than that, so at least half of the work is left each time and these three
        // kills always land. Later rounds reach anywhere in a run (the swap and after).
        let reach = if round < 3 {
            0.2
        } else {
            (0.3 + 0.1 * round as f64).min(1.0)
        };
        let delay = whole.mul_f64(rng.f64() * reach);
        if round == 1 && !seen.contains_key("mid-copy") {
            // Random delays can miss the copy on a fast machine (PostgreSQL 18 once went seven
            // rounds without one); the phase resuming is about is aimed at once.
            until_mid_copy(&db, &mut child).await;
        } else {
            tokio::time::sleep(delay).await;
        }
        if child.is_running() {
            child.kill();
            kills += 1;
        }
        let out = child.wait(Duration::from_secs(60)).await;
        // Judged only once the killed run's server session has ended.
        let landed = phase_after_kill(&db).await;
        // Nothing half-built: either nothing at all, or a recorded migration with its table.
        let recorded: Option<String> = db
            .try_query_scalar("SELECT phase || CASE WHEN copy_done THEN '+copied' ELSE '' END FROM partkeeper.migrations")
            .await
            .ok();
        let built = relkind(&db, "pricing_data_partitioned").await.is_some();
        match recorded.as_deref() {
            None => assert!(
                !built && leftovers(&db).await.is_empty(),
                "round {round} after {:?}: {:?}",
                started.elapsed(),
                leftovers(&db).await
            ),
            Some("copying" | "copying+copied") => {
                assert!(built, "round {round}: copying without a table")
            }
            Some("swapped+copied") => {}
            Some(other) => panic!("round {round}: unexpected phase {other}"),
        }
        *seen.entry(landed).or_insert(0) += 1;
        if out.success() {
            break;
        }
    }
    println!("rounds per phase a kill left: {seen:?}");
    assert!(
        kills >= 3,
        "only {kills} kills landed (phases seen: {seen:?})"
    );
    assert!(
        seen.len() >= 2,
        "every kill landed in the same phase: {seen:?}"
    );
    // The phase resuming is about: a kill in the middle of the copy.
    assert!(
        seen.contains_key("mid-copy"),
        "no kill landed in the middle of the copy: {seen:?}"
    );
    let last = cli.run(args);
    last.assert_success();
    assert_eq!(relkind(&db, "pricing_data").await.as_deref(), Some("p"));
    assert_eq!(content(&db, "pricing_data").await, before);
    assert_eq!(content(&db, "pricing_data_backup").await, before);
    cli.run(["migrate", "verify", "--table", "public.pricing_data"])
        .assert_success();
}

#[tokio::test]
async fn rollback_after_writes_since_the_swap_brings_back_every_row_and_finalize_leaves_nothing() {
    let (db, cli) = pricing_data(20_000, 0, true).await;
    cli.run(["migrate", "run", "--table", "public.pricing_data"])
        .assert_success();
    db.exec(
        r#"INSERT INTO pricing_data ("propertyId", date, price) SELECT 'after', current_date, 5 FROM generate_series(1, 100);
           UPDATE pricing_data SET price = 42 WHERE id % 100 = 0;
           UPDATE pricing_data SET date = date + 45 WHERE id % 250 = 1;
           DELETE FROM pricing_data WHERE id % 333 = 0;"#,
    )
    .await;
    let after_writes = content(&db, "pricing_data").await;
    cli.run(["migrate", "verify", "--table", "public.pricing_data"])
        .assert_success();

    let rb = cli.run(["migrate", "rollback", "--table", "public.pricing_data"]);
    rb.assert_success();
    assert!(rb.stdout.contains("rolled back"), "{rb}");
    assert_eq!(relkind(&db, "pricing_data").await.as_deref(), Some("r"));
    assert_eq!(content(&db, "pricing_data").await, after_writes);
    assert!(
        leftovers(&db).await.is_empty(),
        "{:?}",
        leftovers(&db).await
    );
    let idx: String = db
        .query_scalar("SELECT indrelid::regclass::text FROM pg_index WHERE indexrelid = 'pricing_data_pkey'::regclass")
        .await;
    assert_eq!(idx, "pricing_data");
    // Ids go on from the sequence, past everything written during the migration.
    db.exec(
        r#"INSERT INTO pricing_data ("propertyId", date, price) VALUES ('again', current_date, 1)"#,
    )
    .await;
    cli.run(["migrate", "rollback", "--table", "public.pricing_data"])
        .assert_success();

    // Migrate again, then accept it.
    let again = cli.run(["migrate", "run", "--table", "public.pricing_data"]);
    again.assert_success();
    let fin = cli.run(["migrate", "finalize", "--table", "public.pricing_data"]);
    fin.assert_success();
    assert!(
        leftovers(&db).await.is_empty(),
        "{:?}\n{again}\n{fin}",
        leftovers(&db).await
    );
    assert_eq!(relkind(&db, "pricing_data").await.as_deref(), Some("p"));
    db.exec(
        r#"INSERT INTO pricing_data ("propertyId", date, price) VALUES ('later', current_date, 1)"#,
    )
    .await;
    cli.run(["migrate", "finalize", "--table", "public.pricing_data"])
        .assert_success();
    cli.run(["migrate", "rollback", "--table", "public.pricing_data"])
        .assert_success();
    let run = cli.run(["migrate", "run", "--table", "public.pricing_data"]);
    run.assert_success();
    assert!(run.stdout.contains("already partitioned"), "{run}");
}

#[tokio::test]
async fn an_offline_run_converts_in_one_transaction() {
    let (db, cli) = pricing_data(20_000, 3, true).await;
    let before = content(&db, "pricing_data").await;
    let run = cli.run([
        "migrate",
        "run",
        "--offline",
        "--table",
        "public.pricing_data",
        "--fill-null-with",
        FILL,
    ]);
    run.assert_success();
    assert_eq!(relkind(&db, "pricing_data").await.as_deref(), Some("p"));
    assert_eq!(content(&db, "pricing_data").await, before);
    cli.run(["migrate", "verify", "--table", "public.pricing_data"])
        .assert_success();
    db.exec("UPDATE pricing_data SET price = price + 1 WHERE id < 100")
        .await;
    cli.run(["migrate", "verify", "--table", "public.pricing_data"])
        .assert_success();
}

#[tokio::test]
async fn verify_names_the_period_that_differs() {
    let (db, cli) = pricing_data(5_000, 0, true).await;
    cli.run(["migrate", "run", "--table", "public.pricing_data"])
        .assert_success();
    db.exec(
        "ALTER TABLE pricing_data DISABLE TRIGGER partkeeper_sync_reverse;
         UPDATE pricing_data SET price = 1 WHERE id = 10;
         ALTER TABLE pricing_data ENABLE TRIGGER partkeeper_sync_reverse;",
    )
    .await;
    let month: String = db
        .query_scalar("SELECT tableoid::regclass::text FROM pricing_data WHERE id = 10")
        .await;
    let v = cli.run(["migrate", "verify", "--table", "public.pricing_data"]);
    v.assert_code(1);
    assert!(v.stderr.contains(&format!("{month} (")), "{v}");
}

#[tokio::test]
async fn user_triggers_fire_once_on_the_live_table_and_never_for_mirrored_rows() {
    let (db, cli) = pricing_data(5_000, 0, true).await;
    db.exec(
        r#"CREATE TABLE audit (n bigserial, op text, id bigint);
           CREATE FUNCTION audit_row() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN INSERT INTO audit (op, id) VALUES (TG_OP, NEW.id); RETURN NULL; END $$;
           CREATE TRIGGER pricing_audit AFTER INSERT ON pricing_data FOR EACH ROW EXECUTE FUNCTION audit_row();"#,
    )
    .await;
    let audited = || async { db.query_scalar::<i64>("SELECT count(*) FROM audit").await };
    cli.run(["migrate", "run", "--table", "public.pricing_data"])
        .assert_success();
    // The copy did not fire it on the new table.
    assert_eq!(audited().await, 0);
    db.exec(
        r#"INSERT INTO pricing_data ("propertyId", date, price) VALUES ('x', current_date, 1)"#,
    )
    .await;
    // Once on the live table; the mirrored row in the backup does not fire it again.
    assert_eq!(audited().await, 1);
    cli.run(["migrate", "rollback", "--table", "public.pricing_data"])
        .assert_success();
    db.exec(
        r#"INSERT INTO pricing_data ("propertyId", date, price) VALUES ('y', current_date, 1)"#,
    )
    .await;
    assert_eq!(audited().await, 2);
    let enabled: String = db
        .query_scalar("SELECT tgenabled::text FROM pg_trigger WHERE tgname = 'pricing_audit' AND tgrelid = 'pricing_data'::regclass")
        .await;
    assert_eq!(enabled, "O");
}

#[tokio::test]
async fn a_repeatable_read_writer_gets_a_serialization_failure_instead_of_leaving_a_row_behind() {
    let (db, _) = pricing_data(5_000, 0, true).await;
    // The swap cannot get its lock while the writer's transaction reads the table, and gives up
    // at once, so the migration stays between copy and swap.
    let cli = Cli::new().config(&format!(
        "{}\n",
        config(&db, true).replace(
            "lock_timeout = \"2s\"",
            "lock_timeout = \"100ms\"\nlock_retries = 1"
        )
    ));
    let mut writer = db.connect().await;
    sqlx::raw_sql("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM pricing_data")
        .execute(&mut writer)
        .await
        .unwrap();
    let run = cli.run(["migrate", "run", "--table", "public.pricing_data"]);
    run.assert_code(1);
    assert!(
        run.stderr
            .contains("run `migrate run` again to retry the swap"),
        "{run}"
    );
    // Row 42 was copied after the writer's snapshot: deleting it must not silently miss the copy.
    let err = sqlx::query("DELETE FROM pricing_data WHERE id = 42")
        .execute(&mut writer)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("40001"), "{err}");
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut writer)
        .await
        .unwrap();
    // The application retries, now with a fresh snapshot.
    sqlx::raw_sql(
        "BEGIN ISOLATION LEVEL REPEATABLE READ; DELETE FROM pricing_data WHERE id = 42; COMMIT",
    )
    .execute(&mut writer)
    .await
    .unwrap();
    cli.run(["migrate", "verify", "--table", "public.pricing_data"])
        .assert_success();
    cli.run(["migrate", "run", "--table", "public.pricing_data"])
        .assert_success();
    let left: i64 = db
        .query_scalar("SELECT count(*) FROM pricing_data WHERE id = 42")
        .await;
    assert_eq!(left, 0);
    cli.run(["migrate", "verify", "--table", "public.pricing_data"])
        .assert_success();
}

#[tokio::test]
async fn an_identity_key_on_timestamptz_by_week_in_a_quoted_schema_continues_after_the_swap_and_rollback(
) {
    let db = shared().create_database().await;
    db.exec(
        r#"CREATE SCHEMA "Billing"; SET search_path = "Billing";
           CREATE TABLE "Events" (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, at timestamptz NOT NULL, payload text);
           INSERT INTO "Events" (at, payload) SELECT now() - make_interval(hours => g), 'e' || g FROM generate_series(1, 3000) g;
           CREATE VIEW "Recent" AS SELECT id, at FROM "Events" WHERE at > now() - interval '1 day';"#,
    )
    .await;
    let cli = Cli::new().config(&format!(
        "[database]\nurl = \"{}\"\n\n[[tables]]\nname = '\"Billing\".\"Events\"'\ncolumn = \"at\"\ninterval = \"1 week\"\npremake = 2\ndefault_partition = false\n",
        db.url()
    ));
    let table = r#""Billing"."Events""#;
    cli.run(["migrate", "run", "--table", table])
        .assert_success();
    assert_eq!(
        relkind(&db, r#""Billing"."Events""#).await.as_deref(),
        Some("p")
    );
    let on_new: bool = db
        .query_scalar(
            r#"SELECT EXISTS (SELECT 1 FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
                WHERE r.ev_class = '"Billing"."Recent"'::regclass AND d.refobjid = '"Billing"."Events"'::regclass)"#,
        )
        .await;
    assert!(on_new, "the view should read the partitioned table");
    let id: i64 = db
        .query_scalar(r#"INSERT INTO "Billing"."Events" (at) VALUES (now()) RETURNING id"#)
        .await;
    assert_eq!(id, 3001);
    cli.run(["migrate", "verify", "--table", table])
        .assert_success();
    cli.run(["migrate", "rollback", "--table", table])
        .assert_success();
    assert_eq!(
        relkind(&db, r#""Billing"."Events""#).await.as_deref(),
        Some("r")
    );
    let id: i64 = db
        .query_scalar(r#"INSERT INTO "Billing"."Events" (at) VALUES (now()) RETURNING id"#)
        .await;
    assert_eq!(id, 3002);
    let rows: i64 = db
        .query_scalar(r#"SELECT count(*) FROM "Billing"."Events""#)
        .await;
    assert_eq!(rows, 3002);
}

#[tokio::test]
async fn runs_killed_while_writers_write_resume_without_losing_a_write() {
    let (db, cli) = pricing_data(20_000, 0, true).await;
    let max_id: i64 = db.query_scalar("SELECT max(id) FROM pricing_data").await;
    let mut state = snapshot(&db, "pricing_data").await;
    let far = Arc::new(AtomicBool::new(true));
    let writers = start_writers(&db, 2, max_id, &far).await;
    let args = [
        "migrate",
        "run",
        "--table",
        "public.pricing_data",
        "--batch-size",
        "300",
    ];
    let mut rng = fastrand::Rng::with_seed(11);
    let mut kills = 0;
    let mut seen = BTreeMap::<String, u32>::new();
    for round in 0..6 {
        let mut child = cli.spawn(args);
        // The first two kills come within 30 ms of the start, well before any run can finish
        // (a whole run takes about a second here), so they always land; the third waits until
        // the copy is under way (the phase that matters: rows half copied while writers write);
        // later ones go anywhere.
        if round == 2 {
            until_mid_copy(&db, &mut child).await;
        } else {
            let reach = if round < 2 { 30 } else { 60 + round * 60 };
            tokio::time::sleep(Duration::from_millis(rng.u64(0..=reach))).await;
        }
        if child.is_running() {
            child.kill();
            kills += 1;
        }
        let out = child.wait(Duration::from_secs(60)).await;
        *seen.entry(phase_after_kill(&db).await).or_insert(0) += 1;
        if out.success() {
            break;
        }
    }
    println!("rounds per phase a kill left: {seen:?}");
    let last = cli.run_async(args).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let writers = writers.stop_each().await;
    last.assert_success();
    for (w, report) in writers {
        let unexpected: Vec<&Failure> = report
            .errors
            .iter()
            .filter(|f| f.sqlstate.as_deref() != Some("55P03"))
            .collect();
        assert!(unexpected.is_empty(), "writer errors: {unexpected:#?}");
        apply(&mut state, w.expected);
    }
    assert!(kills >= 2, "only {kills} kills landed ({seen:?})");
    // The phase this test is about: a kill in the middle of the copy while writers write.
    assert!(
        seen.contains_key("mid-copy"),
        "no kill landed in the middle of the copy: {seen:?}"
    );
    assert!(snapshot(&db, "pricing_data").await == state, "writes lost");
    assert!(
        snapshot(&db, "pricing_data_backup").await == state,
        "backup out of step"
    );
    cli.run(["migrate", "verify", "--table", "public.pricing_data"])
        .assert_success();
}

#[tokio::test]
async fn an_inbound_foreign_key_and_a_materialized_view_block_with_what_to_do() {
    let (db, cli) = pricing_data(1_000, 0, true).await;
    db.exec(
        "CREATE TABLE bookings (id int PRIMARY KEY, price_id bigint REFERENCES pricing_data (id));
         CREATE MATERIALIZED VIEW price_summary AS SELECT \"propertyId\", avg(price) FROM pricing_data GROUP BY 1;",
    )
    .await;
    let plan = cli.run(["migrate", "plan", "--table", "public.pricing_data"]);
    plan.assert_code(1);
    assert!(
        plan.stdout
            .contains("foreign key bookings_price_id_fkey on bookings references"),
        "{plan}"
    );
    assert!(
        plan.stdout
            .contains("DROP CONSTRAINT bookings_price_id_fkey"),
        "{plan}"
    );
    assert!(
        plan.stdout
            .contains("materialized view public.price_summary"),
        "{plan}"
    );
    let run = cli.run(["migrate", "run", "--table", "public.pricing_data"]);
    run.assert_code(1);
    assert_eq!(relkind(&db, "pricing_data").await.as_deref(), Some("r"));
    assert!(
        leftovers(&db).await.is_empty(),
        "{:?}",
        leftovers(&db).await
    );
}

#[tokio::test]
async fn a_rollback_while_writers_write_brings_back_every_write() {
    let (db, cli) = pricing_data(10_000, 0, true).await;
    let max_id: i64 = db.query_scalar("SELECT max(id) FROM pricing_data").await;
    let mut state = snapshot(&db, "pricing_data").await;
    let far = Arc::new(AtomicBool::new(false));
    let writers = start_writers(&db, 2, max_id, &far).await;
    cli.run_async(["migrate", "run", "--table", "public.pricing_data"])
        .await
        .assert_success();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let swapped_at: chrono::DateTime<chrono::Utc> = db
        .query_scalar("SELECT swapped_at FROM partkeeper.migrations")
        .await;
    let rollback_at: chrono::DateTime<chrono::Utc> = db.query_scalar("SELECT now()").await;
    cli.run_async(["migrate", "rollback", "--table", "public.pricing_data"])
        .await
        .assert_success();
    let rolled_back_at: chrono::DateTime<chrono::Utc> = db.query_scalar("SELECT now()").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The writes this test is about landed: between the swap and the rollback (on the new table,
    // mirrored into the backup) and after the rollback.
    let written = |from: chrono::DateTime<chrono::Utc>,
                   to: Option<chrono::DateTime<chrono::Utc>>| {
        let db = &db;
        async move {
            let mut c = db.connect().await;
            sqlx::query_scalar::<_, i64>(
                r#"SELECT count(*) FROM pricing_data WHERE "createdAt" > $1 AND ($2::timestamptz IS NULL OR "createdAt" < $2)"#,
            )
            .bind(from)
            .bind(to)
            .fetch_one(&mut c)
            .await
            .unwrap()
        }
    };
    let between = written(swapped_at, Some(rollback_at)).await;
    let after = written(rolled_back_at, None).await;
    assert!(
        between > 0 && after > 0,
        "inserts between the swap and the rollback: {between}, after the rollback: {after}"
    );
    for (w, report) in writers.stop_each().await {
        let unexpected: Vec<&Failure> = report
            .errors
            .iter()
            .filter(|f| f.sqlstate.as_deref() != Some("55P03"))
            .collect();
        assert!(unexpected.is_empty(), "writer errors: {unexpected:#?}");
        apply(&mut state, w.expected);
    }
    assert_eq!(relkind(&db, "pricing_data").await.as_deref(), Some("r"));
    assert!(
        snapshot(&db, "pricing_data").await == state,
        "writes lost by the rollback"
    );
    assert!(
        leftovers(&db).await.is_empty(),
        "{:?}",
        leftovers(&db).await
    );
}

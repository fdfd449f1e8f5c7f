//! Through a real PgBouncer (Debian's, started by the test with its default settings unless a
//! test says otherwise): session and transaction pooling, one-shot commands and daemons, the
//! lease that replaces advisory locks behind a transaction pooler, and a pool of 3 server
//! connections shared by two daemons.

use std::time::{Duration, Instant};

use crate::common::http::RunningDaemon as Running;
use crate::common::pgbouncer::PgBouncer;
use crate::common::{eventually, shared, Cli, TestDb, PATIENCE};

const TABLE_SQL: &str = "CREATE TABLE public.pricing_data (id bigint, date date NOT NULL, price numeric) PARTITION BY RANGE (date)";

const TABLE: &str = r#"
[[tables]]
name = "public.pricing_data"
column = "date"
interval = "1 month"
premake = 3
default_partition = true
"#;

/// A one-shot configuration through `url` with `database.pooler = pooler` (`None`: unset).
fn command_config(url: &str, pooler: Option<&str>, extra_db: &str) -> String {
    let pooler = pooler
        .map(|p| format!("pooler = \"{p}\"\n"))
        .unwrap_or_default();
    format!(
        "[database]\nurl = \"{url}\"\n{pooler}connect_timeout = \"5s\"\n{extra_db}\n[schedule]\ntimezone = \"UTC\"\n{TABLE}"
    )
}

/// A daemon configuration: a pass every 2 s, metrics every second.
fn daemon_config(url: &str, pooler: &str) -> String {
    format!(
        r#"
[database]
url = "{url}"
pooler = "{pooler}"
connect_timeout = "5s"

[server]
listen = "127.0.0.1:0"

[schedule]
maintenance = "*/2 * * * * *"
timezone = "UTC"
run_on_start = true
metrics_refresh = "1s"
{TABLE}"#
    )
}

async fn pricing_db() -> TestDb {
    let db = shared().create_database().await;
    db.exec(TABLE_SQL).await;
    db
}

async fn partition_count(db: &TestDb) -> i64 {
    db.query_scalar(
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'public.pricing_data'::regclass",
    )
    .await
}

/// Name of this month's + `ahead` partition, e.g. `pricing_data_2027_01`.
async fn month_partition(db: &TestDb, ahead: i32) -> String {
    db.query_scalar(&format!(
        "SELECT 'pricing_data_' || to_char(date_trunc('month', now()) + interval '{ahead} months', 'YYYY_MM')"
    ))
    .await
}

async fn relation_exists(db: &TestDb, name: &str) -> bool {
    db.query_scalar(&format!("SELECT to_regclass('public.{name}') IS NOT NULL"))
        .await
}

/// The value of a one-series sample (`partkeeper_leader`, `partkeeper_up`) in a scrape.
fn sample(text: &str, name: &str) -> Option<f64> {
    crate::common::http::single_value(text, name)
}

/// Successful passes of `pricing_data` in a scrape.
fn successes(text: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix("partkeeper_maintenance_runs_total{")?;
            (rest.contains("result=\"success\"") && rest.contains("public.pricing_data"))
                .then(|| l.rsplit_once(' ')?.1.parse().ok())
                .flatten()
        })
        .unwrap_or(0.0)
}

async fn scrape(d: &Running) -> String {
    match d.get("/metrics").await {
        Some((200, body)) => body,
        _ => String::new(),
    }
}

/// maintain, check and status through `url`: partitions made, all healthy, listed.
async fn one_shot_commands_work(db: &TestDb, url: &str, pooler: &str) {
    let cli = Cli::new().config(&command_config(url, Some(pooler), ""));
    let out = cli.run_async(["maintain"]).await;
    out.assert_success();
    // Default, this month, three ahead (and none twice).
    assert_eq!(partition_count(db).await, 5, "{out}");
    let out = cli.run_async(["maintain"]).await;
    out.assert_success();
    assert_eq!(
        partition_count(db).await,
        5,
        "a second pass changes nothing: {out}"
    );
    let out = cli.run_async(["check"]).await;
    out.assert_success();
    assert!(out.stdout.contains("public.pricing_data: OK"), "{out}");
    let out = cli.run_async(["status"]).await;
    out.assert_success();
    let next = month_partition(db, 1).await;
    assert!(out.stdout.contains(&next), "{out}");
    assert!(out.stdout.contains("pricing_data_default"), "{out}");
}

#[tokio::test]
async fn session_mode_with_default_settings_maintain_check_and_status_work() {
    let db = pricing_db().await;
    let bouncer = PgBouncer::builder(shared().port(), "session").start();
    let url = bouncer.url(db.name());

    // Without the setting, PgBouncer refuses the startup options; the message says what to set.
    let out = Cli::new()
        .config(&command_config(&url, None, ""))
        .run_async(["maintain"])
        .await;
    out.assert_code(2);
    assert!(
        out.stderr.contains("unsupported startup parameter"),
        "{out}"
    );
    assert!(out.stderr.contains("database.pooler"), "{out}");
    assert_eq!(partition_count(&db).await, 0, "nothing changed");

    one_shot_commands_work(&db, &url, "session").await;
}

/// Through PgBouncer in `mode`: a lock held by the application makes the step that needs it give
/// up after `lock_timeout`, leaving nothing behind; once it is released the step succeeds.
async fn a_held_lock_makes_the_step_give_up_after_lock_timeout(mode: &str) {
    let db = pricing_db().await;
    let bouncer = PgBouncer::builder(shared().port(), mode).start();
    let cli = Cli::new().config(&command_config(
        &bouncer.url(db.name()),
        Some(mode),
        "lock_timeout = \"300ms\"\nlock_retries = 1\n",
    ));
    cli.run_async(["maintain", "--now", "2026-11-25"])
        .await
        .assert_success();
    // The application (directly on the server) reads the default partition and stays in its
    // transaction: creating the next month must lock it.
    let mut blocker = db.connect().await;
    sqlx::raw_sql("BEGIN; LOCK TABLE pricing_data_default IN ACCESS SHARE MODE")
        .execute(&mut blocker)
        .await
        .unwrap();
    let started = Instant::now();
    let out = cli.run_async(["maintain", "--now", "2026-12-25"]).await;
    let took = started.elapsed();
    out.assert_code(1);
    assert!(
        out.stdout.contains("could not get the lock for `LOCK TABLE \"public\".\"pricing_data_default\" IN ACCESS EXCLUSIVE MODE` within lock_timeout (300ms)"),
        "{out}"
    );
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(!relation_exists(&db, "pricing_data_2027_03").await);
    println!(
        "through PgBouncer ({mode}): gave up after lock_timeout; the whole command took {took:?}"
    );
    sqlx::raw_sql("COMMIT").execute(&mut blocker).await.unwrap();
    cli.run_async(["maintain", "--now", "2026-12-25"])
        .await
        .assert_success();
    assert!(relation_exists(&db, "pricing_data_2027_03").await);
}

#[tokio::test]
async fn session_mode_a_held_lock_makes_the_step_give_up_after_lock_timeout_through_the_pooler() {
    a_held_lock_makes_the_step_give_up_after_lock_timeout("session").await;
}

#[tokio::test]
async fn transaction_mode_a_held_lock_makes_the_step_give_up_after_lock_timeout_through_the_pooler()
{
    a_held_lock_makes_the_step_give_up_after_lock_timeout("transaction").await;
}

#[tokio::test]
async fn transaction_mode_retention_detaches_inside_a_transaction_never_concurrently() {
    let db = pricing_db().await;
    let bouncer = PgBouncer::builder(shared().port(), "transaction").start();
    // No default partition: with one, PostgreSQL never detaches concurrently anyway.
    let policy = |cfg: String| {
        cfg.replace(
            "premake = 3",
            "premake = 3\nretention = \"3 months\"\nretention_mode = \"drop\"",
        )
        .replace("default_partition = true", "default_partition = false")
    };
    let cli = Cli::new().config(&policy(command_config(
        &bouncer.url(db.name()),
        Some("transaction"),
        "",
    )));
    cli.run_async(["maintain", "--now", "2026-01-15"])
        .await
        .assert_success();
    assert!(relation_exists(&db, "pricing_data_2026_01").await);
    let dry = cli
        .run_async(["maintain", "--now", "2026-12-15", "--dry-run"])
        .await;
    dry.assert_success();
    assert!(dry.stdout.contains("DETACH PARTITION"), "{dry}");
    assert!(!dry.stdout.contains("CONCURRENTLY"), "{dry}");
    if crate::common::pg_major() >= 14 {
        // A direct connection plans the same detach concurrently.
        let direct = Cli::new()
            .config(&policy(command_config(&db.url(), None, "")))
            .run_async(["maintain", "--now", "2026-12-15", "--dry-run"])
            .await;
        direct.assert_success();
        assert!(direct.stdout.contains("CONCURRENTLY"), "{direct}");
    }
    cli.run_async(["maintain", "--now", "2026-12-15"])
        .await
        .assert_success();
    assert!(!relation_exists(&db, "pricing_data_2026_01").await);
    assert!(relation_exists(&db, "pricing_data_2027_03").await);
}

#[tokio::test]
async fn session_mode_the_daemon_leads_and_maintains() {
    let db = pricing_db().await;
    let bouncer = PgBouncer::builder(shared().port(), "session").start();
    let d = Running::start(&daemon_config(&bouncer.url(db.name()), "session")).await;
    let d_ref = &d;
    eventually(PATIENCE, "the daemon to lead and maintain", || async move {
        let m = scrape(d_ref).await;
        sample(&m, "partkeeper_leader") == Some(1.0)
            && sample(&m, "partkeeper_up") == Some(1.0)
            && successes(&m) >= 1.0
    })
    .await;
    assert_eq!(partition_count(&db).await, 5);
    // The daemon's connections, sampled at the pooler while it ticks (a pass every 2 s, a
    // refresh every second): never more than the three the README states. Counted as PgBouncer
    // clients: on the server a connection the pooler is still resetting (DISCARD ALL) after the
    // refresh gave it back can stand beside its successor for a moment under load.
    let mut most = 0;
    for _ in 0..60 {
        most = most.max(bouncer.clients(db.name()));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("session pooler: at most {most} client connection(s) for one daemon in 3 s");
    assert!((1..=3).contains(&most), "{most}");
}

#[tokio::test]
async fn transaction_mode_maintain_check_status_migrate_plan_and_verify_work_and_migrate_run_is_refused(
) {
    let db = pricing_db().await;
    let bouncer = PgBouncer::builder(shared().port(), "transaction").start();
    let url = bouncer.url(db.name());
    one_shot_commands_work(&db, &url, "transaction").await;

    // The one-shot pass took the lease and gave it back.
    let (token, free): (i64, bool) = sqlx::query_as(
        "SELECT token, expires_at <= clock_timestamp() FROM partkeeper.leases WHERE name = 'maintenance'",
    )
    .fetch_one(&mut db.connect().await)
    .await
    .unwrap();
    assert!(token >= 2 && free, "token {token}, free {free}");

    // migrate: plan and verify read through the pooler; run refuses before changing anything.
    db.exec(
        "CREATE TABLE public.plain (id bigint PRIMARY KEY, d date NOT NULL, v text);
         INSERT INTO public.plain SELECT g, current_date - (g % 90), 'v' || g FROM generate_series(1, 500) g",
    )
    .await;
    let plain_cfg = |url: &str, pooler: &str| {
        command_config(url, Some(pooler), "").replace(
            "name = \"public.pricing_data\"\ncolumn = \"date\"",
            "name = \"public.plain\"\ncolumn = \"d\"",
        )
    };
    let through = Cli::new().config(&plain_cfg(&url, "transaction"));
    let out = through
        .run_async(["migrate", "plan", "--table", "public.plain"])
        .await;
    out.assert_success();
    assert!(out.stdout.contains("server: PostgreSQL"), "{out}");
    let before: i64 = db.query_scalar("SELECT count(*) FROM pg_class").await;
    let out = through
        .run_async(["migrate", "run", "--table", "public.plain"])
        .await;
    out.assert_code(2);
    assert!(
        out.stderr
            .contains("need a direct or session-mode connection"),
        "{out}"
    );
    let after: i64 = db.query_scalar("SELECT count(*) FROM pg_class").await;
    assert_eq!(before, after, "nothing changed");
    // Run directly, then verify through the transaction pooler.
    Cli::new()
        .config(&plain_cfg(&db.url(), "none"))
        .run_async(["migrate", "run", "--table", "public.plain"])
        .await
        .assert_success();
    let out = through
        .run_async(["migrate", "verify", "--table", "public.plain"])
        .await;
    out.assert_success();
    assert!(!out.stdout.contains("DIFFERS"), "{out}");
}

/// Two daemons behind `bouncer` (in `mode`): exactly one leads and maintains; `kill -9` of the
/// leader and the other takes over; no step ever fails on something already made.
async fn two_daemons_one_leads_and_the_other_takes_over(
    db: &TestDb,
    bouncer: &PgBouncer,
    mode: &str,
) {
    let toml = daemon_config(&bouncer.url(db.name()), mode);
    let a = Running::start(&toml).await;
    let b = Running::start(&toml).await;
    let (a_ref, b_ref) = (&a, &b);
    eventually(
        PATIENCE,
        "both up, exactly one leading and maintaining",
        || async move {
            let (ma, mb) = (scrape(a_ref).await, scrape(b_ref).await);
            let up = |m: &str| sample(m, "partkeeper_up") == Some(1.0);
            let leaders = sample(&ma, "partkeeper_leader").unwrap_or(0.0)
                + sample(&mb, "partkeeper_leader").unwrap_or(0.0);
            up(&ma) && up(&mb) && leaders == 1.0 && successes(&ma) + successes(&mb) >= 2.0
        },
    )
    .await;
    // Both heartbeats answer (readiness is the heartbeat's), whatever the pool size.
    for d in [&a, &b] {
        let (code, body) = d.get("/readyz").await.expect("an answer");
        assert_eq!(code, 200, "{body}");
    }
    let (ma, mb) = (scrape(&a).await, scrape(&b).await);
    let (leader, follower, follower_metrics) = if sample(&ma, "partkeeper_leader") == Some(1.0) {
        (a, b, mb)
    } else {
        (b, a, ma)
    };
    assert_eq!(
        successes(&follower_metrics),
        0.0,
        "only the leader maintains"
    );
    assert_eq!(partition_count(db).await, 5);
    let token_before: i64 = if mode == "transaction" {
        db.query_scalar("SELECT token FROM partkeeper.leases WHERE name = 'maintenance'")
            .await
    } else {
        0
    };

    leader.daemon.kill();
    let killed = Instant::now();
    let f = &follower;
    eventually(
        PATIENCE,
        "the follower to take over and maintain",
        || async move {
            let m = scrape(f).await;
            sample(&m, "partkeeper_leader") == Some(1.0) && successes(&m) >= 1.0
        },
    )
    .await;
    println!(
        "took over {:?} after kill -9 of the leader",
        killed.elapsed()
    );
    if mode == "transaction" {
        let token_after: i64 = db
            .query_scalar("SELECT token FROM partkeeper.leases WHERE name = 'maintenance'")
            .await;
        assert!(
            token_after > token_before,
            "{token_before} -> {token_after}"
        );
    }

    // The new leader repairs what goes missing.
    let next = month_partition(db, 1).await;
    db.exec(&format!("DROP TABLE {next}")).await;
    let (db_ref, name) = (db, next.as_str());
    eventually(
        PATIENCE,
        "the new leader to repair the table",
        || async move { relation_exists(db_ref, name).await },
    )
    .await;
    assert_eq!(partition_count(db).await, 5);
    for d in [&leader, &follower] {
        let log = d.daemon.stderr();
        assert!(!log.contains("already exists"), "{log}");
        assert!(!log.contains("prepared statement"), "{log}");
    }
    follower.daemon.terminate();
}

#[tokio::test]
async fn transaction_mode_of_two_daemons_exactly_one_maintains_and_the_other_takes_over_after_kill_9(
) {
    let db = pricing_db().await;
    let bouncer = PgBouncer::builder(shared().port(), "transaction").start();
    two_daemons_one_leads_and_the_other_takes_over(&db, &bouncer, "transaction").await;
}

#[tokio::test]
async fn session_mode_a_pool_of_3_server_connections_for_two_daemons_still_maintains() {
    let db = pricing_db().await;
    let bouncer = PgBouncer::builder(shared().port(), "session")
        .setting("default_pool_size", "3")
        .start();
    two_daemons_one_leads_and_the_other_takes_over(&db, &bouncer, "session").await;
}

#[tokio::test]
async fn transaction_mode_a_pool_of_3_server_connections_for_two_daemons_still_maintains() {
    let db = pricing_db().await;
    let bouncer = PgBouncer::builder(shared().port(), "transaction")
        .setting("default_pool_size", "3")
        .start();
    two_daemons_one_leads_and_the_other_takes_over(&db, &bouncer, "transaction").await;
    // Never more than 3 server connections for this database, by construction of the pool.
    let servers: i64 = db
        .query_scalar(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND pid <> pg_backend_pid()",
            db.name()
        ))
        .await;
    assert!(servers <= 3, "{servers} server connections");
}

#[tokio::test]
async fn transaction_mode_a_maintain_skips_while_another_holds_the_lease_and_runs_once_it_expires()
{
    // A one-shot maintain while a (fake) leader holds a valid lease: it waits, then skips.
    let db = pricing_db().await;
    let bouncer = PgBouncer::builder(shared().port(), "transaction").start();
    let cli = Cli::new().config(&command_config(
        &bouncer.url(db.name()),
        Some("transaction"),
        "",
    ));
    cli.run_async(["maintain"]).await.assert_success();
    db.exec(
        "UPDATE partkeeper.leases SET holder = 'someone else', token = token + 1,
                expires_at = clock_timestamp() + interval '1 hour'",
    )
    .await;
    db.exec(&format!("DROP TABLE {}", month_partition(&db, 3).await))
        .await;
    let out = cli.run_async(["maintain"]).await;
    assert!(
        out.stdout
            .contains("another partkeeper instance is maintaining")
            || out
                .stderr
                .contains("another partkeeper instance is maintaining"),
        "{out}"
    );
    assert_eq!(
        partition_count(&db).await,
        4,
        "nothing done while another holds the lease"
    );
    db.exec("UPDATE partkeeper.leases SET expires_at = clock_timestamp()")
        .await;
    cli.run_async(["maintain"]).await.assert_success();
    assert_eq!(partition_count(&db).await, 5);
}

/// A `DatabaseConfig` for `url` with `pooler`, as a configuration file would give it.
fn db_config(url: &str, pooler: &str) -> partkeeper::config::DatabaseConfig {
    let text =
        format!("[database]\nurl = \"{url}\"\npooler = \"{pooler}\"\nlock_timeout = \"300ms\"\n");
    partkeeper::config::parse_str(&text, &Default::default())
        .expect("a valid configuration")
        .database
}

#[tokio::test]
async fn the_fencing_token_keeps_a_stale_holder_from_running_a_step_and_a_take_over_waits_for_its_step(
) {
    use partkeeper::ddl::Step;
    use partkeeper::execute::{self, ExecError};
    use partkeeper::lease::{self, Held, FENCE};
    use partkeeper::pooler::GuardError;
    use sqlx::Connection;

    let db = pricing_db().await;
    let bouncer = PgBouncer::builder(shared().port(), "transaction").start();
    let cfg = db_config(&bouncer.url(db.name()), "transaction");
    let mut a = partkeeper::pg::connect(&cfg).await.unwrap();
    let mut b = partkeeper::pg::connect(&cfg).await.unwrap();
    lease::ensure_table(&mut a).await.unwrap();
    let token = lease::try_take(&mut a, "A", lease::LEADER_TTL)
        .await
        .unwrap()
        .expect("a free lease is taken");
    let held_a = Held {
        holder: "A".into(),
        token,
        renew: None,
    };
    assert_eq!(
        lease::try_take(&mut b, "B", lease::LEADER_TTL)
            .await
            .unwrap(),
        None
    );

    // A step of A's is under way (its transaction checked the lease) when the lease expires:
    // B cannot take over until that step has ended.
    let mut step = a.begin().await.unwrap();
    FENCE
        .scope(held_a.clone(), lease::check_fence(&mut step))
        .await
        .unwrap();
    db.exec("UPDATE partkeeper.leases SET expires_at = clock_timestamp()")
        .await;
    assert_eq!(
        lease::try_take(&mut b, "B", lease::LEADER_TTL)
            .await
            .unwrap(),
        None,
        "a take-over must wait for the step still running under the old token"
    );
    step.commit().await.unwrap();
    let token_b = lease::try_take(&mut b, "B", lease::LEADER_TTL)
        .await
        .unwrap()
        .expect("taken once the old step ended");
    assert_eq!(token_b, token + 1);

    // A, now stale, tries a DDL step: refused before any statement runs.
    let create = [Step {
        transactional: true,
        statements: vec!["CREATE TABLE public.made_by_a (id int)".into()],
    }];
    let e = FENCE
        .scope(held_a, execute::run_steps(&mut a, &cfg, &create))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            ExecError::Guard {
                reason: GuardError::LeaseLost,
                ..
            }
        ),
        "{e}"
    );
    assert!(!relation_exists(&db, "made_by_a").await);
    // Without any lease, nothing runs either.
    let e = execute::run_steps(&mut a, &cfg, &create).await.unwrap_err();
    assert!(
        matches!(
            &e,
            ExecError::Guard {
                reason: GuardError::NoLease,
                ..
            }
        ),
        "{e}"
    );
    // B, the holder, runs it.
    let held_b = Held {
        holder: "B".into(),
        token: token_b,
        renew: None,
    };
    FENCE
        .scope(held_b, execute::run_steps(&mut b, &cfg, &create))
        .await
        .unwrap();
    assert!(relation_exists(&db, "made_by_a").await);
}

#[tokio::test]
async fn a_step_whose_session_lacks_the_configured_timeouts_runs_nothing() {
    use partkeeper::pooler::{self, GuardError};

    let db = pricing_db().await;
    let mut conn = db.connect().await;
    let ms = Duration::from_millis;
    pooler::verify_timeouts(&mut conn, ms(0), ms(0))
        .await
        .expect("a fresh session has neither timeout");
    sqlx::raw_sql("SET lock_timeout = '300ms'; SET statement_timeout = '5s'")
        .execute(&mut conn)
        .await
        .unwrap();
    pooler::verify_timeouts(&mut conn, ms(300), ms(5000))
        .await
        .unwrap();
    sqlx::raw_sql("SET lock_timeout = 0")
        .execute(&mut conn)
        .await
        .unwrap();
    let e = pooler::verify_timeouts(&mut conn, ms(300), ms(5000))
        .await
        .unwrap_err();
    let Some(g @ GuardError::TimeoutsNotInForce { .. }) = GuardError::from_sqlx(&e) else {
        panic!("{e}");
    };
    assert!(
        g.to_string().contains("lock_timeout is 0 (no limit)"),
        "{g}"
    );
    // The step guard of a non-transactional statement behind a transaction pooler refuses it.
    let cfg = db_config(&db.url(), "transaction");
    let e = pooler::guard_outside_transaction(
        &mut conn,
        &cfg,
        "ALTER TABLE t DETACH PARTITION p CONCURRENTLY",
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            GuardError::from_sqlx(&e),
            Some(GuardError::OutsideTransaction(_))
        ),
        "{e}"
    );
}

#[tokio::test]
async fn an_unknown_pooler_value_is_refused_with_exit_2_and_the_values_it_takes() {
    let db = pricing_db().await;
    let out = Cli::new()
        .config(&command_config(&db.url(), Some("pgbouncer"), ""))
        .run_async(["maintain"])
        .await;
    out.assert_code(2);
    assert!(
        out.stderr
            .contains("database.pooler = \"pgbouncer\" is not one of \"none\""),
        "{out}"
    );
    assert_eq!(partition_count(&db).await, 0, "nothing changed");
}

//! Issue 13, fleet mode: one `partkeeper run` over several databases on real PostgreSQL. Each
//! database is maintained, led and reported on its own: a dead cluster never holds back the
//! databases of another, leadership is per database, and the part 1 form gives the same
//! partitions and series as before, plus the `database` label.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::common::http::RunningDaemon as Running;
use crate::common::{eventually, shared, Cluster, Proxy, TestDb, PATIENCE};
use crate::daemon::{promtool_check, Metrics, OFTEN, TABLE_SQL};

/// How long a follower may take to lead the databases of a leader killed with SIGKILL: the
/// server ends the dead session's locks at once, and the follower tries every second.
const FAILOVER: Duration = Duration::from_secs(10);
/// How long the cadence of a database is watched, before and during another's outage.
const WINDOW: Duration = Duration::from_secs(8);

/// The table every test database holds and its policy (as in daemon.rs).
const TABLE: &str = r#"name = "public.pricing_data"
column = "date"
interval = "1 month"
premake = 3
retention = "24 months"
retention_mode = "drop"
default_partition = true
"#;

const DEFAULTS: &str = r#"
[server]
listen = "127.0.0.1:0"

[database]
connect_timeout = "2s"

[schedule]
maintenance = "*/2 * * * * *"
timezone = "UTC"
run_on_start = true
metrics_refresh = "1s"
"#;

/// A `[[databases]]` configuration of `(name, database)` pairs.
fn fleet_config(databases: &[(&str, &TestDb)]) -> String {
    let urls: Vec<(&str, String)> = databases.iter().map(|(n, db)| (*n, db.url())).collect();
    fleet_config_urls(&urls)
}

/// A `[[databases]]` configuration of `(name, URL)` pairs.
fn fleet_config_urls(databases: &[(&str, String)]) -> String {
    let mut toml = DEFAULTS.replace("*/2 * * * * *", OFTEN);
    for (name, url) in databases {
        toml.push_str(&format!(
            "\n[[databases]]\nname = \"{name}\"\nurl = \"{url}\"\n[[databases.tables]]\n{TABLE}"
        ));
    }
    toml
}

/// The part 1 form (`[database]` + `[[tables]]`) of one database.
fn part1_config(db: &TestDb) -> String {
    DEFAULTS.replace(
        "[database]\n",
        &format!("[database]\nurl = \"{}\"\n", db.url()),
    ) + &format!("\n[[tables]]\n{TABLE}")
}

async fn pricing_db(cluster: &Cluster) -> TestDb {
    let db = cluster.create_database().await;
    db.exec(TABLE_SQL).await;
    db
}

/// Three databases on the shared cluster, their names, and the fleet configuration of them.
async fn three_databases() -> ([TestDb; 3], [&'static str; 3], String) {
    let dbs = [
        pricing_db(shared()).await,
        pricing_db(shared()).await,
        pricing_db(shared()).await,
    ];
    let names = ["first", "second", "third"];
    let toml = fleet_config(&[
        (names[0], &dbs[0]),
        (names[1], &dbs[1]),
        (names[2], &dbs[2]),
    ]);
    (dbs, names, toml)
}

fn on(database: &str) -> (&'static str, &str) {
    ("database", database)
}

fn value(m: &Metrics, name: &str, database: &str) -> Option<f64> {
    m.get(name, &[on(database)])
}

fn runs(m: &Metrics, database: &str, result: &str) -> f64 {
    m.get(
        "partkeeper_maintenance_runs_total",
        &[
            on(database),
            ("table", "public.pricing_data"),
            ("result", result),
        ],
    )
    .unwrap_or(0.0)
}

fn partitions(m: &Metrics, database: &str) -> Option<f64> {
    m.get(
        "partkeeper_partitions",
        &[on(database), ("table", "public.pricing_data")],
    )
}

/// Name of this month's + `ahead` partition, e.g. `pricing_data_2027_01`.
async fn month_partition(db: &TestDb, ahead: i32) -> String {
    db.query_scalar(&format!(
        "SELECT 'pricing_data_' || to_char(date_trunc('month', now()) + interval '{ahead} months', 'YYYY_MM')"
    ))
    .await
}

async fn partition_names(db: &TestDb) -> Vec<String> {
    db.query_scalar::<Vec<String>>(
        "SELECT coalesce(array_agg(c.relname::text ORDER BY c.relname), '{}')
           FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
          WHERE i.inhparent = 'public.pricing_data'::regclass",
    )
    .await
}

/// The daemon's sessions on the current database (the harness's own are `partkeeper-harness`).
const SESSIONS: &str = "SELECT count(*) FROM pg_stat_activity
                         WHERE datname = current_database()
                           AND application_name LIKE 'partkeeper%'
                           AND application_name <> 'partkeeper-harness'";

/// What a database did while it was watched: its distinct refresh times, the longest gap
/// between two of them, and its successful passes.
#[derive(Debug)]
struct Cadence {
    refreshes: usize,
    longest_gap: f64,
    passes: f64,
}

/// Watches `database` for [`WINDOW`], scraping every 200 ms.
async fn watch(d: &Running, database: &str) -> Cadence {
    let started = Instant::now();
    let mut seen = BTreeSet::new();
    let (mut first, mut last) = (None, 0.0);
    while started.elapsed() < WINDOW {
        if let Some((200, body)) = d.get("/metrics").await {
            let m = Metrics::parse(&body);
            if let Some(at) = value(&m, "partkeeper_refresh_success_timestamp_seconds", database) {
                seen.insert(at as i64);
            }
            let passes = runs(&m, database, "success");
            first.get_or_insert(passes);
            last = passes;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let times: Vec<i64> = seen.into_iter().collect();
    Cadence {
        refreshes: times.len(),
        longest_gap: times
            .windows(2)
            .map(|w| (w[1] - w[0]) as f64)
            .fold(0.0, f64::max),
        passes: last - first.unwrap_or(last),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_cluster_never_holds_back_another_s_database_and_its_own_recover_without_a_restart()
{
    let doomed = Cluster::start();
    let (one, two) = (pricing_db(&doomed).await, pricing_db(&doomed).await);
    let healthy = pricing_db(shared()).await;
    let daemon = Running::start(&fleet_config(&[
        ("doomed-1", &one),
        ("doomed-2", &two),
        ("healthy", &healthy),
    ]))
    .await;
    let names = ["doomed-1", "doomed-2", "healthy"];
    daemon
        .metrics_until("every database maintained and up", |m| {
            names.iter().all(|n| {
                runs(m, n, "success") >= 1.0
                    && partitions(m, n) == Some(5.0)
                    && value(m, "partkeeper_up", n) == Some(1.0)
                    && value(m, "partkeeper_leader", n) == Some(1.0)
            })
        })
        .await;
    for db in [&one, &two, &healthy] {
        let ahead = month_partition(db, 3).await;
        assert!(
            partition_names(db).await.contains(&ahead),
            "{ahead} in {}",
            db.name()
        );
    }

    // Connections stay bounded per database: leader, refresh and a pass's own (README).
    let mut most = 0;
    for _ in 0..40 {
        for db in [&one, &two, &healthy] {
            most = most.max(db.query_scalar::<i64>(SESSIONS).await);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("at most {most} daemon sessions on one database");
    assert!((1..=3).contains(&most), "{most} sessions on one database");

    // Every log line of a database's tasks names it.
    let log = daemon.daemon.stderr();
    assert!(
        log.lines()
            .any(|l| l.contains("database=doomed-2") && l.contains("maintenance pass succeeded")),
        "{log}"
    );

    let before = watch(&daemon, "healthy").await;
    doomed.kill();
    let down = daemon
        .metrics_until("the dead cluster's databases to report up 0", |m| {
            value(m, "partkeeper_up", "doomed-1") == Some(0.0)
                && value(m, "partkeeper_up", "doomed-2") == Some(0.0)
        })
        .await;
    assert_eq!(value(&down, "partkeeper_up", "healthy"), Some(1.0));
    let during = watch(&daemon, "healthy").await;
    println!("healthy database before the outage: {before:?}; during it: {during:?}");
    assert_same_cadence(&before, &during);
    let failed = daemon
        .metrics_until(
            "failed passes counted for the dead cluster's databases",
            |m| runs(m, "doomed-1", "failure") >= 1.0 && runs(m, "doomed-2", "failure") >= 1.0,
        )
        .await;
    assert_eq!(runs(&failed, "healthy", "failure"), 0.0);
    let (code, body) = daemon.get("/readyz").await.expect("/readyz answers");
    assert_eq!(code, 200, "one database answers: {body}");
    assert!(body.contains("healthy: ready"), "{body}");
    assert!(
        body.contains("doomed-1: the primary database does not answer"),
        "{body}"
    );
    let (code, _) = daemon
        .get("/readyz?database=doomed-2")
        .await
        .expect("answer");
    assert_eq!(code, 503);
    assert_eq!(daemon.get("/healthz").await.map(|(c, _)| c), Some(200));

    // Back: up again and maintained, by the same process.
    let next = month_partition(&healthy, 1).await;
    doomed.start_again();
    let successes = |m: &Metrics| {
        (
            runs(m, "doomed-1", "success"),
            runs(m, "doomed-2", "success"),
        )
    };
    let (s1, s2) = successes(&failed);
    daemon
        .metrics_until("the restarted cluster's databases up and maintained", |m| {
            let (n1, n2) = successes(m);
            n1 > s1
                && n2 > s2
                && value(m, "partkeeper_up", "doomed-1") == Some(1.0)
                && value(m, "partkeeper_up", "doomed-2") == Some(1.0)
        })
        .await;
    one.exec(&format!("DROP TABLE {next}")).await;
    let db = &one;
    let next = next.as_str();
    eventually(PATIENCE, "a dropped partition to be back", || async move {
        partition_names(db).await.iter().any(|p| p == next)
    })
    .await;
}

/// Asserts that `during` kept the cadence of `before`, give or take: a database that waited on
/// another would refresh and pass less often, or with a longer gap. Intervals are compared, not
/// absolute times.
fn assert_same_cadence(before: &Cadence, during: &Cadence) {
    assert!(
        during.passes >= 1.0 && during.passes * 2.0 >= before.passes,
        "passes of the healthy database stalled: before {before:?}, during {during:?}"
    );
    assert!(
        during.refreshes * 2 >= before.refreshes
            && during.longest_gap <= (2.0 * before.longest_gap).max(3.0),
        "refreshes of the healthy database stalled: before {before:?}, during {during:?}"
    );
}

/// A database whose network swallows every packet (its heartbeat, refresh and pass wait on
/// their deadlines, 3 s to 30 s) is the harder case: nothing fails fast. The other database's
/// passes and refreshes keep their cadence all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_database_never_delays_another_s_passes_or_refreshes() {
    let (stalled, healthy) = (pricing_db(shared()).await, pricing_db(shared()).await);
    let proxy = Proxy::start(
        url::Url::parse(&stalled.url())
            .ok()
            .and_then(|u| u.port())
            .expect("a port"),
    );
    let daemon = Running::start(&fleet_config_urls(&[
        ("stalled", proxy.route(&stalled.url())),
        ("healthy", healthy.url()),
    ]))
    .await;
    daemon
        .metrics_until("both databases maintained and up", |m| {
            ["stalled", "healthy"]
                .iter()
                .all(|n| runs(m, n, "success") >= 1.0 && value(m, "partkeeper_up", n) == Some(1.0))
        })
        .await;
    let before = watch(&daemon, "healthy").await;
    proxy.stall();
    daemon
        .metrics_until("the stalled database to report up 0", |m| {
            value(m, "partkeeper_up", "stalled") == Some(0.0)
        })
        .await;
    let during = watch(&daemon, "healthy").await;
    println!("healthy database before the stall: {before:?}; during it: {during:?}");
    assert_same_cadence(&before, &during);
    let (code, body) = daemon.get("/readyz").await.expect("/readyz answers");
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        daemon.get("/readyz?database=stalled").await.map(|(c, _)| c),
        Some(503)
    );

    proxy.resume();
    daemon
        .metrics_until("the stalled database back", |m| {
            value(m, "partkeeper_up", "stalled") == Some(1.0)
                && value(m, "partkeeper_leader", "stalled") == Some(1.0)
        })
        .await;
}

/// A pass that waits on an application's lock in one database (lock_timeout 30 s, longer than
/// the window watched) holds only that database's pass: the other database's passes and
/// refreshes keep their cadence, and the blocked repair is done once the lock is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_blocked_on_a_lock_never_delays_another_database() {
    let (blocked, healthy) = (pricing_db(shared()).await, pricing_db(shared()).await);
    let toml = fleet_config(&[("blocked", &blocked), ("healthy", &healthy)]).replace(
        "connect_timeout = \"2s\"",
        "connect_timeout = \"2s\"\nlock_timeout = \"30s\"",
    );
    let daemon = Running::start(&toml).await;
    daemon
        .metrics_until("both databases maintained", |m| {
            ["blocked", "healthy"]
                .iter()
                .all(|n| runs(m, n, "success") >= 1.0)
        })
        .await;
    let before = watch(&daemon, "healthy").await;

    let next = month_partition(&blocked, 1).await;
    blocked.exec(&format!("DROP TABLE {next}")).await;
    let mut app = blocked
        .hold("LOCK TABLE pricing_data IN ACCESS EXCLUSIVE MODE")
        .await;
    blocked.until_partkeeper_waits_for_a_lock().await;
    let during = watch(&daemon, "healthy").await;
    // The phase the test is about: the blocked pass was still waiting when the window closed.
    assert!(
        blocked.partkeeper_lock_waits().await > 0,
        "the blocked pass stopped waiting during the window"
    );
    println!("healthy database before the lock: {before:?}; while blocked: {during:?}");
    assert_same_cadence(&before, &during);

    sqlx::raw_sql("ROLLBACK")
        .execute(&mut app)
        .await
        .expect("release the lock");
    let db = &blocked;
    let next = &next;
    eventually(PATIENCE, "the blocked database repaired", || async move {
        partition_names(db).await.contains(next)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_daemons_over_three_databases_each_database_has_one_leader_and_survives_a_kill() {
    let (_dbs, names, toml) = three_databases().await;
    let a = Running::start(&toml).await;
    let b = Running::start(&toml).await;
    let leader = |m: &Metrics, n: &str| value(m, "partkeeper_leader", n).unwrap_or(0.0);
    let seen = RefCell::new(None);
    {
        let (a, b, seen) = (&a, &b, &seen);
        eventually(PATIENCE, "exactly one leader per database", || async move {
            let (Some((200, ta)), Some((200, tb))) =
                (a.get("/metrics").await, b.get("/metrics").await)
            else {
                return false;
            };
            let (ma, mb) = (Metrics::parse(&ta), Metrics::parse(&tb));
            let ok = names.iter().all(|n| {
                leader(&ma, n) + leader(&mb, n) == 1.0
                    && value(&ma, "partkeeper_up", n) == Some(1.0)
                    && value(&mb, "partkeeper_up", n) == Some(1.0)
            });
            *seen.borrow_mut() = Some((ma, mb));
            ok
        })
        .await;
    }
    let (ma, mb) = seen.into_inner().expect("set by the last poll");
    let led_by_a: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| leader(&ma, n) == 1.0)
        .collect();
    println!("a leads {led_by_a:?}; b leads the others");
    // Only the leader of a database maintains it.
    for n in names {
        let follower = if led_by_a.contains(&n) { &mb } else { &ma };
        assert_eq!(runs(follower, n, "success"), 0.0, "{n}");
    }
    // Kill the one that leads something (a, unless b took everything).
    let (victim, survivor, survivor_before) = if led_by_a.is_empty() {
        (b, a, ma)
    } else {
        (a, b, mb)
    };
    let killed_led: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| leader(&survivor_before, n) == 0.0)
        .collect();
    assert!(!killed_led.is_empty());
    victim.daemon.kill();
    let killed_at = Instant::now();
    let s = &survivor;
    eventually(
        FAILOVER,
        "the survivor to lead every database",
        || async move {
            s.get("/metrics").await.is_some_and(|(_, t)| {
                let m = Metrics::parse(&t);
                names.iter().all(|n| leader(&m, n) == 1.0)
            })
        },
    )
    .await;
    println!(
        "took over {killed_led:?} {:?} after the kill",
        killed_at.elapsed()
    );
    survivor
        .metrics_until("the survivor to maintain what it took over", |m| {
            killed_led.iter().all(|n| runs(m, n, "success") >= 1.0)
        })
        .await;
}

/// The series of a scrape without their values and without the `database` label.
fn series_shapes(m: &Metrics) -> BTreeSet<(String, BTreeMap<String, String>)> {
    m.samples
        .iter()
        .map(|(name, labels, _)| {
            let mut labels = labels.clone();
            labels.remove("database");
            (name.clone(), labels)
        })
        .collect()
}

#[tokio::test]
async fn the_part1_form_gives_the_same_partitions_and_series_as_a_fleet_of_one_plus_the_label() {
    let (old, new) = (pricing_db(shared()).await, pricing_db(shared()).await);
    let part1 = Running::start(&part1_config(&old)).await;
    let fleet = Running::start(&fleet_config(&[("renamed", &new)])).await;
    let ready = |n: &str| {
        let n = n.to_string();
        move |m: &Metrics| {
            runs(m, &n, "success") >= 1.0
                && partitions(m, &n) == Some(5.0)
                && m.get(
                    "partkeeper_maintenance_last_success_timestamp_seconds",
                    &[on(&n)],
                )
                .is_some()
        }
    };
    // The part 1 form's `database` label is the URL's database name.
    let m_old = part1
        .metrics_until("the part 1 daemon's first pass", ready(old.name()))
        .await;
    let m_new = fleet
        .metrics_until("the fleet daemon's first pass", ready("renamed"))
        .await;
    assert_eq!(partition_names(&old).await, partition_names(&new).await);
    assert_eq!(series_shapes(&m_old), series_shapes(&m_new));

    // Every series has the SPEC's labels plus `database` (but build_info), with the right name.
    for (m, name) in [(&m_old, old.name()), (&m_new, "renamed")] {
        for (series, labels, _) in &m.samples {
            let family = series
                .trim_start_matches("partkeeper_")
                .trim_end_matches("_bucket")
                .trim_end_matches("_count")
                .trim_end_matches("_sum");
            let (_, _, spec) = partkeeper::metrics::METRICS
                .iter()
                .find(|(n, _, _)| *n == family)
                .unwrap_or_else(|| panic!("{series} is not in metrics::METRICS"));
            let mut want: BTreeSet<&str> = partkeeper::metrics::labels_of(family, spec)
                .into_iter()
                .collect();
            if series.ends_with("_bucket") {
                want.insert("le");
            }
            let keys: BTreeSet<&str> = labels.keys().map(String::as_str).collect();
            assert_eq!(keys, want, "{series}");
            if family != "build_info" {
                assert_eq!(labels.get("database").map(String::as_str), Some(name));
            }
        }
        promtool_check(&m.text);
    }

    // /status: the part 1 form keeps its top-level fields beside `databases`.
    let (v_old, v_new) = (status(&part1).await, status(&fleet).await);
    assert_eq!(v_old["leader"], true, "{v_old}");
    assert_eq!(v_old["tables"], v_old["databases"][0]["tables"]);
    assert_eq!(v_old["databases"][0]["name"], old.name());
    assert!(v_new.get("tables").is_none(), "{v_new}");
    assert_eq!(v_new["databases"][0]["name"], "renamed");
    assert_eq!(v_new["databases"][0]["leader"], true);
    let (code, body) = part1.get("/readyz").await.expect("answer");
    assert_eq!((code, body.as_str()), (200, "ready\n"));
}

async fn status(d: &Running) -> serde_json::Value {
    let (_, body) = d.get("/status").await.expect("/status answers");
    serde_json::from_str(&body).expect("JSON")
}

/// Shutdown with a pass blocked on a lock in each of three databases: the passes are stopped in
/// parallel, so the process still exits 0 within its 10 s (one after the other, each pass's 4 s
/// of grace and its cancellation would take longer), and every half-done repair rolls back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_pass_blocked_in_every_database_still_exits_0_within_10_seconds() {
    let (dbs, names, toml) = three_databases().await;
    // A lock_timeout longer than the shutdown's grace period, so each pass must be cancelled.
    let toml = toml.replace(
        "connect_timeout = \"2s\"",
        "connect_timeout = \"2s\"\nlock_timeout = \"30s\"",
    );
    let daemon = Running::start(&toml).await;
    daemon
        .metrics_until("a first pass of every database", |m| {
            names.iter().all(|n| runs(m, n, "success") >= 1.0)
        })
        .await;
    let mut apps = Vec::new();
    let mut dropped = Vec::new();
    for db in &dbs {
        let next = month_partition(db, 1).await;
        db.exec(&format!("DROP TABLE {next}")).await;
        dropped.push(next);
        // An application transaction holding the table: the repair waits behind it.
        apps.push(
            db.hold("LOCK TABLE pricing_data IN ACCESS EXCLUSIVE MODE")
                .await,
        );
    }
    for db in &dbs {
        db.until_partkeeper_waits_for_a_lock().await;
    }

    let started = Instant::now();
    daemon.daemon.terminate();
    let out = daemon.daemon.wait(Duration::from_secs(10)).await;
    let took = started.elapsed();
    out.assert_success();
    println!("stopped with three blocked passes in {took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(out.stderr.matches("cancelling it").count(), 3, "{out}");
    for mut app in apps {
        sqlx::raw_sql("ROLLBACK")
            .execute(&mut app)
            .await
            .expect("rollback");
    }
    for (db, next) in dbs.iter().zip(&dropped) {
        assert!(
            !partition_names(db).await.contains(next),
            "the half-done repair of {next} in {} was rolled back",
            db.name()
        );
    }
}

/// Hooks are told the database's configured name (`[[databases]].name`) in
/// `PARTKEEPER_DATABASE`, not the database name in its URL.
#[tokio::test]
async fn a_hook_sees_the_configured_database_name() {
    let db = pricing_db(shared()).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("created.log");
    let toml = fleet_config(&[("billing", &db)]).replace(
        "default_partition = true\n",
        &format!(
            "default_partition = true\n[databases.tables.hooks]\nafter_create = [\"/bin/sh\", \"-c\", \"echo \\\"$PARTKEEPER_PARTITION|$PARTKEEPER_DATABASE\\\" >> {}\"]\n",
            log.display()
        ),
    );
    let out = crate::common::Cli::new()
        .config(&toml)
        .run_async(["maintain", "--now", "2026-11-25"])
        .await;
    out.assert_success();
    let lines = std::fs::read_to_string(&log).unwrap();
    assert!(
        lines.contains("public.pricing_data_2026_11|billing\n"),
        "{lines}\n{out}"
    );
    assert!(!lines.contains(db.name()), "{lines}");
}

//! The shipped alert rules in a real Prometheus scraping live daemons (issue 14). Each test
//! starts its own Prometheus (common/prometheus.rs) with deploy/prometheus/alerts.yml, every
//! `for:` shortened to one second and nothing else changed, scraping and evaluating every
//! second, and reads what fires from `/api/v1/alerts`. Also: Prometheus scraping over TLS with
//! basic auth (and client certificates) is `up`, and is refused a wrong password.
//!
//! Every alert of the file fires in one of these tests (see [`FIRED_BY`]), except those in
//! [`NOT_HERE`], which the README explains.

use std::time::Duration;

use partkeeper::execute::LEADER_LOCK;
use sqlx::PgConnection;

use crate::common::fixtures::{self, pricing_db, MONTHLY};
use crate::common::http::RunningDaemon;
use crate::common::prometheus::{self, free_port, Prometheus};
use crate::common::tls::{Pki, PASSWORD, USER};
use crate::common::writer::{Pace, Statement};
use crate::common::{eventually, Cli, Cluster, Writer, PATIENCE};

/// Which test makes each shipped alert fire.
const FIRED_BY: &[(&str, &str)] = &[
    (
        "PartkeeperPartitionCreationFailed",
        "replica_lag_replica_down_and_failing_maintenance_fire",
    ),
    (
        "PartkeeperMaintenanceStale",
        "stale_maintenance_no_leader_and_down_fire",
    ),
    (
        "PartkeeperNextPartitionMissing",
        "next_partition_alert_fires_after_a_hand_drop_and_resolves_after_maintain",
    ),
    (
        "PartkeeperCoverageEndingSoon",
        "next_partition_alert_fires_after_a_hand_drop_and_resolves_after_maintain",
    ),
    (
        "PartkeeperRowsInDefaultPartition",
        "next_partition_alert_fires_after_a_hand_drop_and_resolves_after_maintain",
    ),
    (
        "PartkeeperDefaultRowsWaiting",
        "next_partition_alert_fires_after_a_hand_drop_and_resolves_after_maintain",
    ),
    (
        "PartkeeperReplicationLagCritical",
        "replica_lag_replica_down_and_failing_maintenance_fire",
    ),
    (
        "PartkeeperReplicationLagWarning",
        "replica_lag_replica_down_and_failing_maintenance_fire",
    ),
    (
        "PartkeeperReplicaDown",
        "replica_lag_replica_down_and_failing_maintenance_fire",
    ),
    (
        "PartkeeperDown",
        "stale_maintenance_no_leader_and_down_fire",
    ),
    (
        "PartkeeperNoLeader",
        "stale_maintenance_no_leader_and_down_fire",
    ),
];

/// Alerts no test here can fire, each explained in the README ("Alerts proven in a real
/// Prometheus").
const NOT_HERE: &[&str] = &[
    // Needs a partition over 10 GB: minutes of disk writes in every CI run.
    "PartkeeperPartitionTooLarge",
];

/// Generous bounds for one alert: a scrape, a refresh and an evaluation a second each, on a
/// loaded two-core machine.
const FIRE_WITHIN: Duration = Duration::from_secs(30);

fn shipped_rules() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus/alerts.yml");
    prometheus::rules_with_short_for(&std::fs::read_to_string(path).unwrap())
}

fn alert_names(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|n| n.trim().to_string())
        .collect()
}

/// A plain-HTTP scrape job for the daemons on `ports`.
fn job(name: &str, ports: &[u16]) -> String {
    let targets: Vec<String> = ports.iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
    format!(
        "  - job_name: {name}\n    static_configs: [{{targets: [{}]}}]\n",
        targets.join(", ")
    )
}

/// A daemon configuration: `url`, maintenance on `schedule`, refresh every second, `extra`
/// (tables, replicas, schedule keys) appended.
fn daemon_config(url: &str, schedule: &str, schedule_extra: &str, extra: &str) -> String {
    format!(
        "[database]\nurl = \"{url}\"\nconnect_timeout = \"2s\"\nlock_timeout = \"1s\"\n\n\
         [server]\nlisten = \"127.0.0.1:0\"\n\n[schedule]\nmaintenance = \"{schedule}\"\n\
         timezone = \"UTC\"\nmetrics_refresh = \"1s\"\n{schedule_extra}\n{extra}"
    )
}

/// Once a year (January 1st): no scheduled pass during a test.
const FAR_AWAY: &str = "0 0 1 1 *";

#[test]
fn every_shipped_alert_fires_in_one_of_these_tests_or_the_readme_says_why_not() {
    let names = alert_names(&shipped_rules());
    assert!(names.len() >= 10, "{names:?}");
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for name in &names {
        let fired = FIRED_BY.iter().any(|(a, _)| a == name);
        let explained = NOT_HERE.contains(&name.as_str());
        assert!(
            fired ^ explained,
            "{name}: fire it in a test here (FIRED_BY) or explain in the README why not (NOT_HERE)"
        );
        if explained {
            assert!(
                readme.contains(&format!("`{name}`"))
                    && readme.contains("Alerts proven in a real Prometheus"),
                "the README must say why {name} is not fired here"
            );
        }
    }
    for (alert, _) in FIRED_BY {
        assert!(
            names.iter().any(|n| n == alert),
            "{alert} is not in alerts.yml"
        );
    }
}

#[test]
fn the_test_copy_of_the_rules_differs_only_in_for() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus/alerts.yml");
    let shipped = std::fs::read_to_string(path).unwrap();
    let copy = shipped_rules();
    let (a, b): (Vec<&str>, Vec<&str>) = (shipped.lines().collect(), copy.lines().collect());
    assert_eq!(a.len(), b.len());
    let changed: Vec<(&&str, &&str)> = a.iter().zip(&b).filter(|(x, y)| x != y).collect();
    assert_eq!(
        changed.len(),
        alert_names(&copy).len(),
        "one `for:` per rule"
    );
    for (x, y) in changed {
        assert!(
            x.trim().starts_with("for: ") && y.trim() == "for: 1s",
            "{x:?} -> {y:?}"
        );
    }
}

/// The user's scenario: next month's partition dropped by hand on a daemon whose schedule is
/// far away; the alert fires; `partkeeper maintain` creates it again; the alert resolves. The
/// same daemon also shows a row in the default partition, a daily table with only two days
/// made ahead, and a table whose next month waits in its default partition for `drain` (more
/// rows there than its `default_move_limit`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_partition_alert_fires_after_a_hand_drop_and_resolves_after_maintain() {
    let db = pricing_db().await;
    // The `database` label of the daemon's series.
    let db_label = db.name().to_string();
    let db_label = db_label.as_str();
    db.exec("CREATE TABLE events (id bigint, at date NOT NULL) PARTITION BY RANGE (at)")
        .await;
    let daily = "\n[[tables]]\nname = \"public.events\"\ncolumn = \"at\"\ninterval = \"1 day\"\npremake = 2\n";
    db.exec(
        "CREATE TABLE waiting (id bigint, at date NOT NULL) PARTITION BY RANGE (at);
         CREATE TABLE waiting_default PARTITION OF waiting DEFAULT;
         INSERT INTO waiting (id, at)
         SELECT g, (date_trunc('month', now()) + interval '1 month')::date FROM generate_series(1, 5) g",
    )
    .await;
    let waiting = "\n[[tables]]\nname = \"public.waiting\"\ncolumn = \"at\"\ninterval = \"1 month\"\npremake = 2\ndefault_partition = true\ndefault_move_limit = 1\n";
    let toml = daemon_config(
        &fixtures::url_with_password(&db),
        FAR_AWAY,
        "run_on_start = true",
        &format!("{MONTHLY}{daily}{waiting}"),
    );
    let daemon = RunningDaemon::start(&toml).await;
    let d = &daemon;
    eventually(PATIENCE, "the start-up pass to have made the partitions", || async move {
        d.get("/metrics").await.is_some_and(|(_, m)| {
            m.contains(&format!("partkeeper_next_partition_missing{{database=\"{}\",table=\"public.pricing_data\"}} 0", db_label))
                && m.contains(&format!("partkeeper_maintenance_runs_total{{database=\"{}\",result=\"success\",table=\"public.pricing_data\"}} 1", db_label))
        })
    })
    .await;
    let prom = Prometheus::start(
        &job("partkeeper", &[daemon.port]),
        Some(&shipped_rules()),
        &[],
    )
    .await;
    let table = [("table", "public.pricing_data")];
    eventually(PATIENCE, "Prometheus to scrape the daemon", || async {
        prom.targets().await.iter().any(|t| t.health == "up")
    })
    .await;
    assert!(!prom.firing("PartkeeperNextPartitionMissing", &table).await);

    let next: String = db
        .query_scalar(
            "SELECT 'pricing_data_' || to_char(date_trunc('month', now()) + interval '1 month', 'YYYY_MM')",
        )
        .await;
    db.exec(&format!("DROP TABLE {next}")).await;
    db.exec(
        "INSERT INTO pricing_data (\"propertyId\", date, price) VALUES ('p1', '2001-01-01', 1)",
    )
    .await;
    let fired = prom
        .until_all_fired(
            &[
                ("PartkeeperNextPartitionMissing", &table),
                ("PartkeeperRowsInDefaultPartition", &table),
                (
                    "PartkeeperCoverageEndingSoon",
                    &[("table", "public.events")],
                ),
                (
                    "PartkeeperDefaultRowsWaiting",
                    &[("table", "public.waiting")],
                ),
            ],
            FIRE_WITHIN,
        )
        .await;
    println!("live prometheus: after dropping {next}, fired after {fired:?}");

    Cli::new()
        .config(&toml)
        .run_async(["maintain"])
        .await
        .assert_success();
    let resolved = prom
        .until_resolved("PartkeeperNextPartitionMissing", &table, FIRE_WITHIN)
        .await;
    println!(
        "live prometheus: PartkeeperNextPartitionMissing resolved {resolved:?} after maintain"
    );
    assert!(
        prom.firing("PartkeeperRowsInDefaultPartition", &table)
            .await
    );
}

/// A streaming replica whose replay is paused falls behind (warning past 10 s, critical past
/// 60 s), then is stopped (down). Meanwhile a second daemon fails every pass on a table that
/// is not partitioned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_lag_replica_down_and_failing_maintenance_fire() {
    let primary = Cluster::start();
    let db = primary.create_database().await;
    // The `database` label of the daemon's series.
    let db_label = db.name().to_string();
    let db_label = db_label.as_str();
    db.exec(fixtures::PRICING_DATA).await;
    db.exec("CREATE TABLE load (x int)").await;
    let replica = Cluster::start_replica(&primary);
    let replicas = format!(
        "\n[[replicas]]\nname = \"replica-1\"\nurl = \"{}\"\n",
        replica.url(db.name())
    );
    let lagging = RunningDaemon::start(&daemon_config(
        &db.url(),
        FAR_AWAY,
        "run_on_start = true",
        &format!("{MONTHLY}{replicas}"),
    ))
    .await;
    let other = pricing_db().await;
    other
        .exec("CREATE TABLE plain (id bigint, d date NOT NULL)")
        .await;
    let failing_table =
        "\n[[tables]]\nname = \"public.plain\"\ncolumn = \"d\"\ninterval = \"1 month\"\n";
    let failing = RunningDaemon::start(&daemon_config(
        &other.url(),
        "*/2 * * * * *",
        "run_on_start = true",
        failing_table,
    ))
    .await;
    let prom = Prometheus::start(
        &(job("partkeeper", &[lagging.port]) + &job("partkeeper-failing", &[failing.port])),
        Some(&shipped_rules()),
        &[],
    )
    .await;
    let r = &lagging;
    eventually(
        PATIENCE,
        "the replica to be up and caught up",
        || async move {
            r.get("/metrics").await.is_some_and(|(_, m)| {
                m.contains(&format!(
                    "partkeeper_replica_up{{database=\"{}\",replica=\"replica-1\"}} 1",
                    db_label
                )) && m.contains(&format!(
                    "partkeeper_replication_lag_bytes{{database=\"{}\",replica=\"replica-1\"}} 0",
                    db_label
                ))
            })
        },
    )
    .await;

    // One commit replayed, then replay paused and more written: the replica falls behind by the
    // age of that commit, a second more each second.
    db.exec("INSERT INTO load VALUES (0)").await;
    replica.wait_for_replay().await;
    replica
        .exec(db.name(), "SELECT pg_wal_replay_pause()")
        .await;
    // Its errors do not matter: it only makes WAL for the replica to fall behind on.
    let writes = Writer::start_each(
        db.connect_options(),
        vec![Statement::fixed("INSERT INTO load VALUES (1)")],
        Pace::pause(Duration::from_millis(500)),
    )
    .await;
    let one = [("replica", "replica-1")];
    let fired = prom
        .until_all_fired(
            &[
                ("PartkeeperReplicationLagWarning", &one),
                ("PartkeeperReplicationLagCritical", &one),
                (
                    "PartkeeperPartitionCreationFailed",
                    &[("table", "public.plain")],
                ),
            ],
            // Lag over 60 s, then the minute-aligned subquery of the failure rule.
            Duration::from_secs(100),
        )
        .await;
    println!("live prometheus: fired after {fired:?}");
    writes.stop().await;

    replica.stop();
    let down = prom
        .until_firing("PartkeeperReplicaDown", &one, FIRE_WITHIN)
        .await;
    println!("live prometheus: PartkeeperReplicaDown fired {down:?} after the replica stopped");
}

/// A daemon that never leads (another session holds the leader lock) has run no pass; one whose
/// primary does not answer reports up 0; then both stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_maintenance_no_leader_and_down_fire() {
    let db = pricing_db().await;
    let mut holder: PgConnection = db.connect().await;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(LEADER_LOCK)
        .execute(&mut holder)
        .await
        .unwrap();
    let follower = RunningDaemon::start(&daemon_config(
        &db.url(),
        FAR_AWAY,
        "run_on_start = true",
        MONTHLY,
    ))
    .await;
    let nowhere = format!("postgres://postgres@127.0.0.1:{}/nowhere", free_port());
    let orphan = RunningDaemon::start(&daemon_config(&nowhere, FAR_AWAY, "", MONTHLY)).await;
    let prom = Prometheus::start(
        &(job("partkeeper", &[follower.port]) + &job("partkeeper-orphan", &[orphan.port])),
        Some(&shipped_rules()),
        &[],
    )
    .await;
    let fired = prom
        .until_all_fired(
            &[
                ("PartkeeperMaintenanceStale", &[]),
                ("PartkeeperNoLeader", &[]),
                (
                    "PartkeeperDown",
                    &[("reason", "primary database unreachable")],
                ),
            ],
            FIRE_WITHIN,
        )
        .await;
    println!("live prometheus: fired after {fired:?}");

    orphan.daemon.terminate();
    prom.until_firing(
        "PartkeeperDown",
        &[("reason", "scrape failed")],
        FIRE_WITHIN,
    )
    .await;
    follower.daemon.terminate();
    // Both targets down: their series go stale, and no partkeeper metric is left at all.
    prom.until_firing(
        "PartkeeperDown",
        &[("reason", "no partkeeper metrics")],
        FIRE_WITHIN,
    )
    .await;
    drop(holder);
}

/// Prometheus scrapes a daemon over TLS with basic auth as it would any exporter: up; with a
/// wrong password or none, refused with 401. A second daemon also requires a client
/// certificate, which Prometheus presents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_over_tls_with_basic_auth_and_is_refused_a_wrong_password() {
    let db = pricing_db().await;
    let pki = Pki::new();
    let toml = daemon_config(&db.url(), FAR_AWAY, "run_on_start = true", MONTHLY);
    let web = pki.web_config("web.yml", None);
    let secured =
        RunningDaemon::start_with(&toml, &["--web.config.file", web.to_str().unwrap()]).await;
    let mtls_web = pki.web_config("mtls.yml", Some("RequireAndVerifyClientCert"));
    let mtls =
        RunningDaemon::start_with(&toml, &["--web.config.file", mtls_web.to_str().unwrap()]).await;
    let tls_job = |name: &str, port: u16, auth: &str, cert: bool| {
        let cert = if cert {
            ", cert_file: client.crt, key_file: client.key"
        } else {
            ""
        };
        format!(
            "  - job_name: {name}\n    scheme: https\n    tls_config: {{ca_file: ca.crt{cert}}}\n{auth}    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
        )
    };
    let right = format!("    basic_auth: {{username: {USER}, password: {PASSWORD}}}\n");
    let wrong = format!("    basic_auth: {{username: {USER}, password: wrong-{PASSWORD}}}\n");
    let jobs = [
        tls_job("partkeeper-tls", secured.port, &right, false),
        tls_job("partkeeper-tls-wrong-password", secured.port, &wrong, false),
        tls_job("partkeeper-tls-no-credentials", secured.port, "", false),
        tls_job("partkeeper-mtls", mtls.port, &right, true),
    ]
    .concat();
    let files = [
        ("ca.crt", pki.path("ca.crt")),
        ("client.crt", pki.path("client.crt")),
        ("client.key", pki.path("client.key")),
    ];
    let files: Vec<(&str, &std::path::Path)> =
        files.iter().map(|(n, p)| (*n, p.as_path())).collect();
    let prom = Prometheus::start(&jobs, None, &files).await;
    let expected = [
        ("partkeeper-tls", "up", ""),
        ("partkeeper-tls-wrong-password", "down", "401"),
        ("partkeeper-tls-no-credentials", "down", "401"),
        ("partkeeper-mtls", "up", ""),
    ];
    let prom_ref = &prom;
    eventually(
        PATIENCE,
        "each target's health as expected",
        || async move {
            let targets = prom_ref.targets().await;
            expected.iter().all(|(job, health, error)| {
                targets
                    .iter()
                    .any(|t| t.job == *job && t.health == *health && t.last_error.contains(error))
            })
        },
    )
    .await;
    let targets = prom.targets().await;
    println!("live prometheus over TLS: {targets:?}");
    for t in &targets {
        assert!(!t.last_error.contains(PASSWORD), "{t:?}");
    }
}

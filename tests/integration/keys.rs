//! SPEC part 2 "Keys and intervals" on real PostgreSQL: for each key kind (date, timestamptz in a
//! DST zone, bigint epoch milliseconds, uuid v7, bigint ids) and for 15 minutes, 1 hour, 6 hours,
//! 2 weeks and 6 months, `maintain` creates exactly the expected partitions, rows at period
//! boundaries land in the right one, `check` exits 0, retention expires exactly the expected
//! ones and a second pass does nothing. Bad key/interval combinations exit 2 naming the key.
//!
//! The expected periods are written out by hand from the calendar (America/New_York, around the
//! 2026-11-01 fall-back at 06:00 UTC, when 01:00-02:00 happened twice), not computed by
//! partkeeper's code.

use chrono::{DateTime, TimeDelta, Utc};

use crate::common::fixtures::{self, partitions, Part};
use crate::common::{shared, TestDb};

/// `--now` of the first pass: 01:50 EDT, ten minutes before the clock goes back.
const T0: &str = "2026-11-01T05:50:00Z";

/// One interval's scenario: the periods (name suffix, UTC start, UTC end) the first pass makes
/// with premake 2, and a later `--now` at which retention "1 day" expires exactly the first.
struct Scenario {
    interval: &'static str,
    periods: [(&'static str, &'static str, &'static str); 3],
    expire_at: &'static str,
}

const SCENARIOS: [Scenario; 5] = [
    Scenario {
        interval: "15 minutes",
        // 01:45 EDT runs until 02:00 EST: the repeated hour belongs to it.
        periods: [
            (
                "2026_11_01_0145",
                "2026-11-01T05:45:00Z",
                "2026-11-01T07:00:00Z",
            ),
            (
                "2026_11_01_0200",
                "2026-11-01T07:00:00Z",
                "2026-11-01T07:15:00Z",
            ),
            (
                "2026_11_01_0215",
                "2026-11-01T07:15:00Z",
                "2026-11-01T07:30:00Z",
            ),
        ],
        expire_at: "2026-11-02T07:05:00Z",
    },
    Scenario {
        interval: "1 hour",
        periods: [
            (
                "2026_11_01_0100",
                "2026-11-01T05:00:00Z",
                "2026-11-01T07:00:00Z",
            ),
            (
                "2026_11_01_0200",
                "2026-11-01T07:00:00Z",
                "2026-11-01T08:00:00Z",
            ),
            (
                "2026_11_01_0300",
                "2026-11-01T08:00:00Z",
                "2026-11-01T09:00:00Z",
            ),
        ],
        expire_at: "2026-11-02T07:05:00Z",
    },
    Scenario {
        interval: "6 hours",
        // Midnight EDT to 06:00 EST: seven hours.
        periods: [
            (
                "2026_11_01_0000",
                "2026-11-01T04:00:00Z",
                "2026-11-01T11:00:00Z",
            ),
            (
                "2026_11_01_0600",
                "2026-11-01T11:00:00Z",
                "2026-11-01T17:00:00Z",
            ),
            (
                "2026_11_01_1200",
                "2026-11-01T17:00:00Z",
                "2026-11-01T23:00:00Z",
            ),
        ],
        expire_at: "2026-11-02T11:05:00Z",
    },
    Scenario {
        interval: "2 weeks",
        // Two-week periods from Monday 1970-01-05: 2026-10-26 is one of their Mondays.
        periods: [
            ("2026_10_26", "2026-10-26T04:00:00Z", "2026-11-09T05:00:00Z"),
            ("2026_11_09", "2026-11-09T05:00:00Z", "2026-11-23T05:00:00Z"),
            ("2026_11_23", "2026-11-23T05:00:00Z", "2026-12-07T05:00:00Z"),
        ],
        expire_at: "2026-11-10T12:00:00Z",
    },
    Scenario {
        interval: "6 months",
        periods: [
            ("2026_07", "2026-07-01T04:00:00Z", "2027-01-01T05:00:00Z"),
            ("2027_01", "2027-01-01T05:00:00Z", "2027-07-01T04:00:00Z"),
            ("2027_07", "2027-07-01T04:00:00Z", "2028-01-01T05:00:00Z"),
        ],
        expire_at: "2027-01-02T12:00:00Z",
    },
];

/// How a key kind stores an instant: the column, its bound text as `pg_get_expr` prints it (read
/// with TimeZone UTC), and SQL literals for the first and the last value of a period.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Date,
    TimestampTz,
    EpochMillis,
    Uuid,
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// The smallest UUIDv7 of a millisecond: 48-bit ms, version 7, variant 10, the rest zero.
fn uuid_of_ms(ms: i64, tail: &str) -> String {
    let hex = format!("{ms:012x}");
    format!("{}-{}-{tail}", &hex[..8], &hex[8..])
}

impl Kind {
    fn column(self) -> &'static str {
        match self {
            Kind::Date => "k date NOT NULL",
            Kind::TimestampTz => "k timestamptz NOT NULL",
            Kind::EpochMillis => "k bigint NOT NULL",
            Kind::Uuid => "k uuid NOT NULL",
        }
    }

    fn extra_config(self) -> &'static str {
        match self {
            Kind::EpochMillis => "epoch = \"milliseconds\"\n",
            _ => "",
        }
    }

    /// `pg_get_expr` text of a bound at `t` (a bigint prints quoted, as the catalog has it).
    fn bound(self, t: DateTime<Utc>) -> String {
        match self {
            Kind::Date => format!("'{}'", t.format("%Y-%m-%d")),
            Kind::TimestampTz => format!("'{}'", t.format("%Y-%m-%d %H:%M:%S+00")),
            Kind::EpochMillis => format!("'{}'", t.timestamp_millis()),
            Kind::Uuid => format!(
                "'{}'",
                uuid_of_ms(t.timestamp_millis(), "7000-8000-000000000000")
            ),
        }
    }

    /// SQL for the first key value of a period starting at `from`, and the last one before `to`.
    fn edges(self, from: DateTime<Utc>, to: DateTime<Utc>, pg18: bool) -> Vec<String> {
        match self {
            Kind::Date => vec![
                format!("'{}'::date", from.format("%Y-%m-%d")),
                format!("'{}'::date", (to - TimeDelta::days(1)).format("%Y-%m-%d")),
            ],
            Kind::TimestampTz => vec![
                format!("'{}'::timestamptz", from.to_rfc3339()),
                format!(
                    "'{}'::timestamptz",
                    (to - TimeDelta::microseconds(1)).to_rfc3339()
                ),
            ],
            Kind::EpochMillis => vec![
                from.timestamp_millis().to_string(),
                (to.timestamp_millis() - 1).to_string(),
            ],
            // UUIDv7 values written by the test: a random-looking first one of the first
            // millisecond, and the largest of the last millisecond.
            Kind::Uuid => {
                let mut v = vec![
                    format!(
                        "'{}'::uuid",
                        uuid_of_ms(from.timestamp_millis(), "7c1d-9a2b-3c4d5e6f7081")
                    ),
                    format!(
                        "'{}'::uuid",
                        uuid_of_ms(to.timestamp_millis() - 1, "7fff-bfff-ffffffffffff")
                    ),
                ];
                // PostgreSQL 18 makes them itself, shifted to the wanted time. The shift is
                // taken from now() (the transaction's start), so the value lands a little after
                // the target: exact at the lower edge, half a second inside the upper one.
                if pg18 {
                    v.push(format!(
                        "uuidv7('{}'::timestamptz - now())",
                        from.to_rfc3339()
                    ));
                    v.push(format!(
                        "uuidv7('{}'::timestamptz - now())",
                        (to - TimeDelta::milliseconds(500)).to_rfc3339()
                    ));
                }
                v
            }
        }
    }
}

fn config(db: &TestDb, kind: Kind, interval: &str, retention: Option<&str>) -> String {
    fixtures::config(
        db,
        &format!(
            "[[tables]]\nname = \"public.k\"\ncolumn = \"k\"\ninterval = \"{interval}\"\npremake = 2\ndefault_partition = false\nretention_mode = \"drop\"\ntimezone = \"America/New_York\"\n{}{}",
            kind.extra_config(),
            retention.map(|r| format!("retention = \"{r}\"\n")).unwrap_or_default()
        ),
    )
}

fn cli(db: &TestDb, kind: Kind, interval: &str, retention: Option<&str>) -> crate::common::Cli {
    crate::common::Cli::new().config(&config(db, kind, interval, retention))
}

async fn home_of(db: &TestDb, value_sql: &str) -> String {
    db.query_scalar(&format!(
        "INSERT INTO k VALUES ({value_sql}) RETURNING tableoid::regclass::text"
    ))
    .await
}

/// Runs every scenario that applies to `kind`, each in its own database.
async fn scenarios_for(kind: Kind) {
    let server_version: i32 = {
        let db = shared().create_database().await;
        db.query_scalar("SELECT current_setting('server_version_num')::int")
            .await
    };
    let pg18 = server_version >= 180000;
    for s in &SCENARIOS {
        // A date holds whole days: sub-daily intervals are refused for it (see bad_values).
        if kind == Kind::Date && !s.interval.contains("week") && !s.interval.contains("month") {
            continue;
        }
        let what = format!("{} / {}", kind.column(), s.interval);
        let db = shared().create_database().await;
        db.exec(&format!(
            "CREATE TABLE k ({}) PARTITION BY RANGE (k)",
            kind.column()
        ))
        .await;

        // 1. maintain creates exactly the expected partitions.
        cli(&db, kind, s.interval, None)
            .run_async(["maintain", "--now", T0])
            .await
            .assert_success();
        let expected: Vec<Part> = s
            .periods
            .iter()
            .map(|&(suffix, from, to)| {
                let (from, to) = if kind == Kind::Date {
                    // Dates are wall-clock days of the zone: local midnights, not instants.
                    (day_of(from), day_of(to))
                } else {
                    (at(from), at(to))
                };
                Part {
                    name: format!("k_{suffix}"),
                    bound: format!(
                        "FOR VALUES FROM ({}) TO ({})",
                        kind.bound(from),
                        kind.bound(to)
                    ),
                }
            })
            .collect();
        let mut want = expected.clone();
        want.sort();
        assert_eq!(partitions(&db, "k").await, want, "{what}");

        // 2. Rows at both edges of every period land in that period's partition.
        for &(suffix, from, to) in &s.periods {
            let (from, to) = if kind == Kind::Date {
                (day_of(from), day_of(to))
            } else {
                (at(from), at(to))
            };
            for value in kind.edges(from, to, pg18) {
                assert_eq!(
                    home_of(&db, &value).await,
                    format!("k_{suffix}"),
                    "{what}: {value}"
                );
            }
        }

        // 3. check agrees; a second pass does nothing.
        cli(&db, kind, s.interval, None)
            .run_async(["check", "--now", T0])
            .await
            .assert_success();
        let again = cli(&db, kind, s.interval, None)
            .run_async(["maintain", "--now", T0])
            .await;
        again.assert_success();
        assert!(again.stdout.contains("nothing to do"), "{what}: {again}");

        // 4. Retention "1 day" at `expire_at` drops exactly the first period's partition.
        cli(&db, kind, s.interval, Some("1 day"))
            .run_async(["maintain", "--now", s.expire_at])
            .await
            .assert_success();
        let after: Vec<String> = partitions(&db, "k")
            .await
            .into_iter()
            .map(|p| p.name)
            .collect();
        let gone: Vec<&str> = expected
            .iter()
            .map(|p| p.name.as_str())
            .filter(|n| !after.iter().any(|a| a == n))
            .collect();
        assert_eq!(gone, [expected[0].name.as_str()], "{what}: left {after:?}");
        let third = cli(&db, kind, s.interval, Some("1 day"))
            .run_async(["maintain", "--now", s.expire_at])
            .await;
        assert!(third.stdout.contains("nothing to do"), "{what}: {third}");
        cli(&db, kind, s.interval, Some("1 day"))
            .run_async(["check", "--now", s.expire_at])
            .await
            .assert_success();
    }
}

/// The New York calendar day that starts at the instant `s` (a local midnight), dressed as UTC
/// midnight: how a date bound is written.
fn day_of(s: &str) -> DateTime<Utc> {
    at(s)
        .with_timezone(&chrono_tz::America::New_York)
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
}

#[tokio::test]
async fn date_keys_by_two_weeks_and_six_months() {
    scenarios_for(Kind::Date).await;
}

#[tokio::test]
async fn timestamptz_keys_in_a_dst_zone() {
    scenarios_for(Kind::TimestampTz).await;
}

#[tokio::test]
async fn bigint_epoch_millisecond_keys() {
    scenarios_for(Kind::EpochMillis).await;
}

#[tokio::test]
async fn uuid_v7_keys() {
    scenarios_for(Kind::Uuid).await;
}

fn id_config(db: &TestDb, extra: &str) -> String {
    fixtures::config(
        db,
        &format!(
            "[[tables]]\nname = \"public.ids\"\ncolumn = \"id\"\ninterval = 1000\npremake = 2\ndefault_partition = true\nretention_mode = \"drop\"\n{extra}"
        ),
    )
}

async fn names(db: &TestDb, table: &str) -> Vec<String> {
    partitions(db, table)
        .await
        .into_iter()
        .map(|p| p.name)
        .collect()
}

#[tokio::test]
async fn bigint_ids_follow_max_id_and_expire_by_value() {
    let db = shared().create_database().await;
    db.exec(
        "CREATE TABLE ids (id bigint NOT NULL, note text) PARTITION BY RANGE (id);
         CREATE INDEX ON ids (id);",
    )
    .await;
    let run = |extra: &'static str, cmd: &'static str| {
        let cli = crate::common::Cli::new().config(&id_config(&db, extra));
        async move { cli.run_async([cmd]).await }
    };

    // An empty table starts at `start` (0).
    run("", "maintain").await.assert_success();
    assert_eq!(
        partitions(&db, "ids").await,
        fixtures::parts(&[
            ("ids_default", "DEFAULT"),
            ("ids_p0", "FOR VALUES FROM ('0') TO ('1000')"),
            ("ids_p1000", "FOR VALUES FROM ('1000') TO ('2000')"),
            ("ids_p2000", "FOR VALUES FROM ('2000') TO ('3000')"),
        ])
    );
    let insert = |id: i64| {
        let db = &db;
        async move {
            db.query_scalar::<String>(&format!(
                "INSERT INTO ids VALUES ({id}) RETURNING tableoid::regclass::text"
            ))
            .await
        }
    };
    assert_eq!(insert(0).await, "ids_p0");
    assert_eq!(insert(999).await, "ids_p0");
    run("", "check").await.assert_success();
    assert!(run("", "maintain").await.stdout.contains("nothing to do"));

    // The ids move on: max(id) in p2000 needs p3000 and p4000 ahead, and an id that outran the
    // premade range sits in the default. The next pass follows max(id), fills the periods in
    // between, moves the row out of the default, and keeps premake after it.
    assert_eq!(insert(1000).await, "ids_p1000");
    assert_eq!(insert(2999).await, "ids_p2000");
    assert_eq!(insert(5500).await, "ids_default");
    run("", "check").await.assert_code(1);
    run("", "maintain").await.assert_success();
    assert_eq!(
        names(&db, "ids").await,
        [
            "ids_default",
            "ids_p0",
            "ids_p1000",
            "ids_p2000",
            "ids_p3000",
            "ids_p4000",
            "ids_p5000",
            "ids_p6000",
            "ids_p7000"
        ]
    );
    let in_default: i64 = db.query_scalar("SELECT count(*) FROM ids_default").await;
    assert_eq!(in_default, 0);
    let home: String = db
        .query_scalar("SELECT tableoid::regclass::text FROM ids WHERE id = 5500")
        .await;
    assert_eq!(home, "ids_p5000");
    run("", "check").await.assert_success();

    // retention = 2500: upper bounds at or below 5500 - 2500 = 3000 expire: p0, p1000, p2000.
    run("retention = 2500\n", "maintain").await.assert_success();
    assert_eq!(
        names(&db, "ids").await,
        [
            "ids_default",
            "ids_p3000",
            "ids_p4000",
            "ids_p5000",
            "ids_p6000",
            "ids_p7000"
        ]
    );
    let second = run("retention = 2500\n", "maintain").await;
    assert!(second.stdout.contains("nothing to do"), "{second}");
    run("retention = 2500\n", "check").await.assert_success();
}

#[tokio::test]
async fn an_integer_key_without_an_index_still_works_and_check_says_so() {
    let db = shared().create_database().await;
    db.exec("CREATE TABLE ids (id integer NOT NULL) PARTITION BY RANGE (id)")
        .await;
    db.exec("CREATE TABLE ids_old PARTITION OF ids FOR VALUES FROM (-500) TO (0)")
        .await;
    db.exec("INSERT INTO ids VALUES (-3)").await;
    let cli = crate::common::Cli::new().config(&id_config(&db, "start = -500\n"));
    let out = cli.run_async(["maintain"]).await;
    out.assert_success();
    assert!(out.stdout.contains("no index leads with id"), "{out}");
    // Hand-made partitions are recognised by their bounds; the grid starts at -500, and the
    // part of the current period [-500, 500) that ids_old leaves open is filled exactly.
    assert_eq!(
        partitions(&db, "ids").await,
        fixtures::parts(&[
            ("ids_default", "DEFAULT"),
            ("ids_old", "FOR VALUES FROM ('-500') TO (0)"),
            ("ids_pm500", "FOR VALUES FROM (0) TO (500)"),
            ("ids_p500", "FOR VALUES FROM (500) TO (1500)"),
            ("ids_p1500", "FOR VALUES FROM (1500) TO (2500)"),
        ])
    );
    let check = cli.run_async(["check"]).await;
    check.assert_success();
    assert!(check.stdout.contains("no index leads with id"), "{check}");
}

#[tokio::test]
async fn bad_key_and_interval_combinations_exit_2_naming_the_key() {
    let db = shared().create_database().await;
    db.exec(
        "CREATE TABLE d (k date NOT NULL) PARTITION BY RANGE (k);
         CREATE TABLE ts (k timestamp NOT NULL) PARTITION BY RANGE (k);",
    )
    .await;
    let cases = [
        (
            "d",
            "interval = \"7 hours\"",
            "tables[0].interval",
            "use 1, 2, 3, 4, 6, 8 or 12 hours",
        ),
        (
            "d",
            "interval = 0",
            "tables[0].interval",
            "positive integer",
        ),
        (
            "d",
            "interval = \"1 day\"\nepoch = \"seconds\"",
            "tables[].epoch",
            "remove it",
        ),
        (
            "ts",
            "interval = 1000",
            "tables[].interval",
            "calendar interval",
        ),
        (
            "d",
            "interval = \"1 hour\"",
            "tables[].interval",
            "whole days",
        ),
    ];
    for (table, lines, key, hint) in cases {
        let before = fixtures::schema_snapshot(&db).await;
        let cfg = fixtures::config(
            &db,
            &format!("[[tables]]\nname = \"public.{table}\"\ncolumn = \"k\"\n{lines}\n"),
        );
        let out = crate::common::Cli::new()
            .config(&cfg)
            .run_async(["maintain"])
            .await;
        out.assert_code(2);
        let said = format!("{}{}", out.stdout, out.stderr);
        assert!(said.contains(key) && said.contains(hint), "{lines}: {out}");
        assert_eq!(fixtures::schema_snapshot(&db).await, before, "{lines}");
    }
}

#[tokio::test]
async fn the_daemon_exports_coverage_by_value_for_integer_keys_and_by_time_for_epoch_keys() {
    let db = shared().create_database().await;
    // The `database` label of the daemon's series.
    let db_label = db.name().to_string();
    let db_label = db_label.as_str();
    db.exec(
        "CREATE TABLE ids (id bigint NOT NULL) PARTITION BY RANGE (id);
         CREATE INDEX ON ids (id);
         CREATE TABLE ev (ms bigint NOT NULL) PARTITION BY RANGE (ms);",
    )
    .await;
    let toml = format!(
        r#"
[database]
url = "{}"
connect_timeout = "2s"

[server]
listen = "127.0.0.1:0"

[schedule]
maintenance = "0 0 1 1 *"
timezone = "UTC"
run_on_start = true
metrics_refresh = "1s"

[[tables]]
name = "public.ids"
column = "id"
interval = 1000
premake = 2
default_partition = false

[[tables]]
name = "public.ev"
column = "ms"
interval = "1 hour"
epoch = "milliseconds"
premake = 2
default_partition = false
"#,
        db.url()
    );
    let daemon = crate::common::http::RunningDaemon::start(&toml).await;
    let body = std::cell::RefCell::new(String::new());
    let (body_ref, daemon_ref) = (&body, &daemon);
    crate::common::eventually(
        crate::common::PATIENCE,
        "the coverage gauges after the first pass",
        || async move {
            let Some((200, text)) = daemon_ref.get("/metrics").await else {
                return false;
            };
            *body_ref.borrow_mut() = text.clone();
            // The empty id table has p0, p1000, p2000: coverage ends at 3000.
            text.contains(&format!(
                "partkeeper_coverage_end_value{{database=\"{}\",table=\"public.ids\"}} 3000",
                db_label
            )) && text.contains(&format!(
                "partkeeper_coverage_end_timestamp_seconds{{database=\"{}\",table=\"public.ev\"}}",
                db_label
            ))
        },
    )
    .await;
    let text = body.into_inner();
    assert!(
        !text.contains(&format!(
            "partkeeper_coverage_end_timestamp_seconds{{database=\"{}\",table=\"public.ids\"}}",
            db_label
        )),
        "{text}"
    );
    assert!(
        !text.contains(&format!(
            "partkeeper_coverage_end_value{{database=\"{}\",table=\"public.ev\"}}",
            db_label
        )),
        "{text}"
    );
    // The epoch table's coverage is a time: three hours from the current one, so 2-3 h ahead.
    let line = text
        .lines()
        .find(|l| {
            l.starts_with(&format!(
                "partkeeper_coverage_end_timestamp_seconds{{database=\"{}\",table=\"public.ev\"}}",
                db_label
            ))
        })
        .unwrap();
    let end: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    let ahead = end - Utc::now().timestamp() as f64;
    assert!(
        (2.0 * 3600.0 - 5.0..=3.0 * 3600.0 + 5.0).contains(&ahead),
        "{line}"
    );
}

#[tokio::test]
async fn max_id_below_the_highest_partitions_is_still_found() {
    // Five partitions, the only row in the lowest, premake 0: the two highest partitions that
    // are asked first are empty, so the whole table is asked. Were max(id) missed, the empty-table
    // rule (the period of `start`, 100000) would create a partition.
    let db = shared().create_database().await;
    let mut sql = "CREATE TABLE ids (id bigint NOT NULL) PARTITION BY RANGE (id);".to_string();
    for k in 0..5 {
        sql.push_str(&format!(
            "CREATE TABLE ids_p{0} PARTITION OF ids FOR VALUES FROM ({0}) TO ({1});",
            k * 1000,
            (k + 1) * 1000
        ));
    }
    sql.push_str("INSERT INTO ids VALUES (10);");
    db.exec(&sql).await;
    let cfg = fixtures::config(
        &db,
        "[[tables]]\nname = \"public.ids\"\ncolumn = \"id\"\ninterval = 1000\nstart = 100000\npremake = 0\ndefault_partition = false\n",
    );
    let out = crate::common::Cli::new()
        .config(&cfg)
        .run_async(["maintain"])
        .await;
    out.assert_success();
    assert!(out.stdout.contains("nothing to do"), "{out}");
}

/// The runbook's `pricing_data` as a plain table (bigserial primary key on `id`), with rows.
fn plain_pricing() -> String {
    fixtures::plain_pricing_data()
        + r#"
INSERT INTO pricing_data ("propertyId", date, price)
  SELECT 'p' || (g % 50), DATE '2026-01-01' + (g % 300), (g % 500) + 0.25
    FROM generate_series(1, 25000) g;
"#
}

#[tokio::test]
async fn migrate_converts_the_runbook_table_by_an_id_range() {
    for mode in ["--offline", "online"] {
        convert_by_id(mode).await;
    }
}

async fn convert_by_id(mode: &str) {
    let db = shared().create_database().await;
    db.exec(&plain_pricing()).await;
    let before: (i64, i64) = {
        let sum: i64 = db
            .query_scalar("SELECT sum(hashtext(ROW(id, \"propertyId\", date, price)::text)::int8)::int8 FROM pricing_data")
            .await;
        (
            db.query_scalar("SELECT count(*) FROM pricing_data").await,
            sum,
        )
    };
    let cli = crate::common::Cli::new().config(&fixtures::config(
        &db,
        "[[tables]]\nname = \"public.pricing_data\"\ncolumn = \"id\"\ninterval = 10000\npremake = 2\ndefault_partition = true\n",
    ));
    let plan = cli
        .run_async(["migrate", "plan", "--table", "public.pricing_data"])
        .await;
    plan.assert_success();
    // The primary key leads with id, so maintain will read max(id) through it.
    assert!(!plan.stdout.contains("no index leads"), "{plan}");
    // ids 1..25000 in periods of 10,000: p0, p10000, p20000, then 2 ahead of max(id).
    assert!(
        plan.stdout
            .contains("partitions: 5 (pricing_data_p0 .. pricing_data_p40000)"),
        "{plan}"
    );
    let mut args = vec!["migrate", "run", "--table", "public.pricing_data"];
    if mode == "--offline" {
        args.push(mode);
    }
    cli.run_async(args).await.assert_success();
    assert_eq!(
        partitions(&db, "pricing_data").await,
        fixtures::parts(&[
            ("pricing_data_default", "DEFAULT"),
            ("pricing_data_p0", "FOR VALUES FROM ('0') TO ('10000')"),
            (
                "pricing_data_p10000",
                "FOR VALUES FROM ('10000') TO ('20000')"
            ),
            (
                "pricing_data_p20000",
                "FOR VALUES FROM ('20000') TO ('30000')"
            ),
            (
                "pricing_data_p30000",
                "FOR VALUES FROM ('30000') TO ('40000')"
            ),
            (
                "pricing_data_p40000",
                "FOR VALUES FROM ('40000') TO ('50000')"
            ),
        ])
    );
    let after: (i64, i64) = {
        let sum: i64 = db
            .query_scalar("SELECT sum(hashtext(ROW(id, \"propertyId\", date, price)::text)::int8)::int8 FROM pricing_data")
            .await;
        (
            db.query_scalar("SELECT count(*) FROM pricing_data").await,
            sum,
        )
    };
    assert_eq!(after, before);
    cli.run_async(["migrate", "verify", "--table", "public.pricing_data"])
        .await
        .assert_success();
    // The converted table is maintained by max(id): nothing to do, check healthy.
    let again = cli.run_async(["maintain"]).await;
    again.assert_success();
    assert!(again.stdout.contains("nothing to do"), "{again}");
    cli.run_async(["check"]).await.assert_success();
}

#[tokio::test]
async fn migrate_converts_by_epoch_milliseconds_and_by_uuid_v7() {
    // Each row keeps its time in `at` as well, to check its partition against.
    let kinds = [
        (
            "k bigint NOT NULL",
            "(extract(epoch FROM at) * 1000)::int8",
            "epoch = \"milliseconds\"\n",
        ),
        (
            "k uuid NOT NULL",
            "(lpad(to_hex((extract(epoch FROM at) * 1000)::int8), 12, '0') || '7abc8def0123456789ab')::uuid",
            "",
        ),
    ];
    for (column, value, extra) in kinds {
        let db = shared().create_database().await;
        db.exec(&format!(
            "CREATE TABLE ev (id bigserial PRIMARY KEY, at timestamptz NOT NULL, {column});
             INSERT INTO ev (at, k)
               SELECT at, {value}
                 FROM (SELECT TIMESTAMPTZ '2026-01-01 00:00:00+00' + g * INTERVAL '97 minutes' AS at
                         FROM generate_series(0, 3000) g) s;"
        ))
        .await;
        let cli = crate::common::Cli::new().config(&fixtures::config(
            &db,
            &format!(
                "[[tables]]\nname = \"public.ev\"\ncolumn = \"k\"\ninterval = \"1 month\"\npremake = 1\ndefault_partition = true\ntimezone = \"UTC\"\n{extra}"
            ),
        ));
        let before: i64 = db
            .query_scalar("SELECT sum(hashtext(ROW(id, at, k)::text)::int8)::int8 FROM ev")
            .await;
        cli.run_async(["migrate", "plan", "--table", "public.ev"])
            .await
            .assert_success();
        cli.run_async(["migrate", "run", "--offline", "--table", "public.ev"])
            .await
            .assert_success();
        let after: i64 = db
            .query_scalar("SELECT sum(hashtext(ROW(id, at, k)::text)::int8)::int8 FROM ev")
            .await;
        assert_eq!(after, before, "{column}");
        // Every row sits in the partition of its month (the data runs 2026-01 to 2026-07).
        let misplaced: i64 = db
            .query_scalar(
                "SELECT count(*) FROM ev WHERE tableoid::regclass::text <> 'ev_' || to_char(at AT TIME ZONE 'UTC', 'YYYY_MM')",
            )
            .await;
        assert_eq!(misplaced, 0, "{column}");
        cli.run_async(["migrate", "verify", "--table", "public.ev"])
            .await
            .assert_success();
        let again = cli.run_async(["maintain"]).await;
        again.assert_success();
        assert!(again.stdout.contains("nothing to do"), "{column}: {again}");
        cli.run_async(["check"]).await.assert_success();
    }
}

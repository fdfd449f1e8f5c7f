//! `partkeeper bench`: measured on a small `pricing_data` before and after a monthly
//! conversion made by hand in SQL (not with `migrate`, so these tests stand on their own), the
//! saved file, the before/after table with partition counts read from the plans, and the chart.

use serde_json::Value;

use crate::common::fixtures;
use crate::common::{shared, Cli, TestDb};

/// The runbook's table, filled the way the application writes it: property after property
/// (one CSV upload each), one row per day from 2024-01-01 to 2025-02-03 (400 days × 12).
fn plain_pricing_data() -> String {
    fixtures::plain_pricing_data()
        + r#"
INSERT INTO pricing_data ("propertyId", date, price, "minPrice", "maxPrice", occupancy, source)
SELECT 'prop-' || lpad(p::text, 2, '0'), d::date, 100 + p + extract(dow FROM d),
       90 + p, 200 + p, 0.5, 'csv'
  FROM generate_series(1, 12) AS p
 CROSS JOIN LATERAL generate_series(date '2024-01-01', date '2025-02-03', interval '1 day') AS d
 ORDER BY p, d;
ANALYZE pricing_data;
"#
}
/// The runbook's conversion, by hand: the plain table becomes `pricing_data_backup` and a copy
/// partitioned by month (2024-01 .. 2025-02, 14 partitions, plus a default one) takes its name.
const CONVERT_BY_HAND: &str = r#"
BEGIN;
ALTER TABLE pricing_data RENAME TO pricing_data_backup;
CREATE TABLE pricing_data (LIKE pricing_data_backup INCLUDING DEFAULTS) PARTITION BY RANGE (date);
DO $$
DECLARE m date;
BEGIN
  FOR m IN SELECT generate_series(date '2024-01-01', date '2025-02-01', interval '1 month')::date LOOP
    EXECUTE format('CREATE TABLE %I PARTITION OF pricing_data FOR VALUES FROM (%L) TO (%L)',
                   'pricing_data_' || to_char(m, 'YYYY_MM'), m, (m + interval '1 month')::date);
  END LOOP;
END $$;
CREATE TABLE pricing_data_default PARTITION OF pricing_data DEFAULT;
INSERT INTO pricing_data SELECT * FROM pricing_data_backup;
ALTER TABLE pricing_data ADD PRIMARY KEY (id, date);
CREATE INDEX ON pricing_data ("propertyId", date);
CREATE INDEX ON pricing_data (date);
COMMIT;
ANALYZE pricing_data;
"#;

const PARTITIONS: usize = 15;

const CLASSES: [&str; 4] = [
    "Property + date range query",
    "Analytics aggregation",
    "Recent data fetch",
    "Property, no date filter",
];

fn config(db: &TestDb, table: &str, column: &str, extra: &str) -> String {
    format!(
        "[database]\nurl = \"{}\"\n\n[[tables]]\nname = '{table}'\ncolumn = '{column}'\ninterval = \"1 month\"\n{extra}",
        db.url()
    )
}

/// The cells of a text-table row: columns are separated by two spaces or more.
fn cells(line: &str) -> Vec<String> {
    line.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(String::from)
        .collect()
}

/// The detail row `metric` under the class `class` in `bench --compare`'s text output.
fn detail(stdout: &str, class: &str, metric: &str) -> Vec<String> {
    let mut lines = stdout.lines().skip_while(|l| !l.starts_with(class)).skip(1);
    let line = lines
        .find(|l| l.trim_start().starts_with(metric))
        .unwrap_or_else(|| panic!("no {metric:?} row under {class:?} in:\n{stdout}"));
    cells(line)
}

#[tokio::test]
async fn bench_compares_the_plain_table_with_its_monthly_partitioned_copy() {
    let db = shared().create_database().await;
    db.exec(&plain_pricing_data()).await;
    let cli = Cli::new().config(&config(&db, "public.pricing_data", "date", ""));

    let out = cli.run([
        "bench",
        "--table",
        "public.pricing_data",
        "--runs",
        "3",
        "--save",
        "before.json",
    ]);
    out.assert_success();
    assert!(
        out.stdout.contains("plain table (not partitioned)"),
        "{out}"
    );
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(cli.dir().join("before.json")).unwrap())
            .unwrap();
    assert_eq!(saved["table"], "public.pricing_data");
    assert_eq!(saved["layout"]["partitioned"], false);
    assert_eq!(saved["runs"], 3);
    assert!(saved["server_version"]
        .as_str()
        .unwrap()
        .starts_with("PostgreSQL"));
    // The reference day is the newest date; the property is one of the table's own.
    assert_eq!(saved["parameters"]["reference"], "2025-02-03");
    assert!(saved["parameters"]["property"]
        .as_str()
        .unwrap()
        .starts_with("prop-"));
    let classes = saved["classes"].as_array().unwrap();
    assert_eq!(classes.len(), 4, "{saved:#}");
    for c in classes {
        assert_eq!(c["partitions_scanned"], 1, "{c:#}");
        assert_eq!(c["scanned"][0], "pricing_data", "{c:#}");
        assert_eq!(c["execution_ms"]["samples"].as_array().unwrap().len(), 3);
        assert!(
            !c["sql"].as_str().unwrap().contains("prop-"),
            "values are bound: {c:#}"
        );
    }

    db.exec(CONVERT_BY_HAND).await;
    let out = cli.run([
        "bench",
        "--table",
        "public.pricing_data",
        "--runs",
        "3",
        "--compare",
        "before.json",
        "--chart",
        "out.svg",
    ]);
    out.assert_success();
    let stdout = &out.stdout;
    assert!(
        cells(stdout.lines().find(|l| l.starts_with("Metric")).unwrap())
            == ["Metric", "Before", "After", "Improvement"],
        "{stdout}"
    );
    let plain = "1 (not partitioned)".to_string();
    let expected = [
        // January 2025 only: the default partition is pruned too.
        (CLASSES[0], 1),
        // October to December 2024.
        (CLASSES[1], 3),
        // 2025-01-28 .. 2025-02-03 straddles a month boundary.
        (CLASSES[2], 2),
        // No partition key in the query: every partition is scanned.
        (CLASSES[3], PARTITIONS),
    ];
    for (class, scanned) in expected {
        let row = detail(stdout, class, "partitions scanned");
        assert_eq!(row[1], plain, "{class}: {row:?}\n{stdout}");
        assert_eq!(
            row[2],
            format!("{scanned} of {PARTITIONS}"),
            "{class}: {row:?}\n{stdout}"
        );
        let rows = detail(stdout, class, "rows");
        assert_eq!(rows[1], rows[2], "same data, same answer: {rows:?}");
        assert_eq!(rows[3], "same");
    }
    assert_eq!(
        detail(stdout, CLASSES[0], "partitions scanned")[3],
        format!("pruned to 1 of {PARTITIONS}")
    );
    assert_eq!(
        detail(stdout, CLASSES[3], "partitions scanned")[3],
        "no pruning"
    );
    assert!(stdout.contains("Buffer usage (all queries)"), "{stdout}");

    let svg = std::fs::read_to_string(cli.dir().join("out.svg")).unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("{e}:\n{svg}"));
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    for side in ["before", "after"] {
        let bars: Vec<&str> = doc
            .descendants()
            .filter(|n| n.attribute("class") == Some(&format!("bar {side}")))
            .map(|n| n.attribute("data-class").unwrap())
            .collect();
        assert_eq!(
            bars,
            [
                "property_date_range",
                "analytics_aggregation",
                "recent_data",
                "property_no_date"
            ],
            "{side}"
        );
    }

    let out = cli.run([
        "bench",
        "--table",
        "public.pricing_data",
        "--runs",
        "1",
        "--compare",
        "before.json",
        "--format",
        "markdown",
    ]);
    out.assert_success();
    assert!(
        out.stdout
            .contains("| Metric | Before | After | Improvement |"),
        "{out}"
    );
    assert!(
        out.stdout.contains(&format!(
            "| ↳ partitions scanned | 1 (not partitioned) | 1 of {PARTITIONS} | pruned to 1 of {PARTITIONS} |"
        )),
        "{out}"
    );
}

#[tokio::test]
async fn bench_without_property_id_keeps_the_recent_fetch_and_the_operators_queries() {
    let db = shared().create_database().await;
    db.exec(
        r#"CREATE TABLE "Events" (id bigint, "createdAt" timestamptz NOT NULL, payload text)
             PARTITION BY RANGE ("createdAt");
           CREATE TABLE "Events_2025_01" PARTITION OF "Events"
             FOR VALUES FROM ('2025-01-01 00:00+00') TO ('2025-02-01 00:00+00');
           CREATE TABLE "Events_2025_02" PARTITION OF "Events"
             FOR VALUES FROM ('2025-02-01 00:00+00') TO ('2025-03-01 00:00+00');
           INSERT INTO "Events" SELECT n, timestamptz '2025-01-01 00:00+00' + n * interval '1 hour', 'x'
             FROM generate_series(0, 1000) AS n;
           ANALYZE "Events";"#,
    )
    .await;
    let custom = r#"
[[bench]]
table = 'public."Events"'
name = "last day"
sql = "SELECT count(*) FROM {table} WHERE {key} > {reference} - interval '1 day' AND {key} <= {reference}"
"#;
    let cli = Cli::new().config(&config(&db, "public.\"Events\"", "\"createdAt\"", custom));
    let out = cli.run(["bench", "--table", "public.\"Events\"", "--runs", "2"]);
    out.assert_success();
    let line = |label: &str| {
        cells(
            out.stdout
                .lines()
                .find(|l| l.starts_with(label))
                .unwrap_or_else(|| panic!("no {label:?} line in {out}")),
        )
    };
    // 1001 hours from 2025-01-01: the newest is 2025-02-11 16:00, so the reference day is
    // 2025-02-11 and the last seven days lie in February.
    let recent = line("Recent data fetch");
    assert_eq!(recent.last().unwrap(), "1 of 2", "{recent:?}");
    assert_eq!(recent[5], "100", "{recent:?}");
    let custom = line("last day");
    assert_eq!(custom[5], "1", "count(*) returns one row: {custom:?}");
    assert_eq!(custom.last().unwrap(), "1 of 2", "{custom:?}");
    for class in [CLASSES[0], CLASSES[1], CLASSES[3]] {
        let row = line(class);
        assert_eq!(
            row[1], "skipped: the table has no \"propertyId\" column",
            "{row:?}"
        );
    }
}

#[tokio::test]
async fn bench_queries_run_read_only() {
    let db = shared().create_database().await;
    db.exec(&plain_pricing_data()).await;
    let custom = r#"
[[bench]]
table = "public.pricing_data"
name = "sneaky delete"
sql = "WITH gone AS (DELETE FROM {table} RETURNING 1) SELECT count(*) FROM gone"
"#;
    let cli = Cli::new().config(&config(&db, "public.pricing_data", "date", custom));
    let out = cli.run(["bench", "--table", "public.pricing_data", "--runs", "1"]);
    out.assert_code(1);
    assert!(out.stderr.contains("sneaky delete"), "{out}");
    assert!(out.stderr.contains("read-only transaction"), "{out}");
    let rows: i64 = db.query_scalar("SELECT count(*) FROM pricing_data").await;
    assert_eq!(rows, 400 * 12);
}

#[tokio::test]
async fn bench_usage_errors_exit_2_before_measuring() {
    let db = shared().create_database().await;
    let cli = Cli::new().config(&config(&db, "public.pricing_data", "date", ""));
    std::fs::write(cli.dir().join("not-json.json"), "{").unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["--chart", "x.svg"], "--compare"),
        (&["--compare", "missing.json"], "missing.json"),
        (&["--compare", "not-json.json"], "not a saved bench result"),
        (&["--runs", "0"], "--runs"),
        (&["--table", "public.other"], "public.other"),
    ];
    for (args, expected) in cases {
        let mut all = vec!["bench"];
        if !args.contains(&"--table") {
            all.extend(["--table", "public.pricing_data"]);
        }
        all.extend(args);
        let out = cli.run(&all);
        out.assert_code(2);
        assert!(out.stderr.contains(expected), "{args:?}: {out}");
    }
    // The table does not exist: a mismatch between configuration and database, also exit 2.
    let out = cli.run(["bench", "--table", "public.pricing_data"]);
    out.assert_code(2);
    assert!(out.stderr.contains("does not exist"), "{out}");
}

/// `scanned` of the saved class `key`, and its partition count.
fn scanned(saved: &Value, key: &str) -> (u64, Vec<String>) {
    let class = saved["classes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["key"] == key)
        .unwrap_or_else(|| panic!("no class {key} in {saved:#}"));
    let names = class["scanned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    (class["partitions_scanned"].as_u64().unwrap(), names)
}

fn bench_saved(cli: &Cli, table: &str) -> Value {
    let out = cli.run([
        "bench", "--table", table, "--runs", "1", "--save", "run.json",
    ]);
    out.assert_success();
    serde_json::from_str(&std::fs::read_to_string(cli.dir().join("run.json")).unwrap()).unwrap()
}

#[tokio::test]
async fn bench_asks_an_id_keyed_table_about_ranges_of_its_partition_grid() {
    let db = shared().create_database().await;
    // Ids 0..4099 in periods of 1000: five partitions, the newest holds 4000..4099.
    db.exec(
        r#"CREATE TABLE items (id bigint NOT NULL, "propertyId" text, price numeric)
             PARTITION BY RANGE (id);
           DO $$ BEGIN FOR p IN 0..4 LOOP
             EXECUTE format('CREATE TABLE %I PARTITION OF items FOR VALUES FROM (%s) TO (%s)',
                            'items_p' || p * 1000, p * 1000, (p + 1) * 1000);
           END LOOP; END $$;
           INSERT INTO items SELECT n, 'prop-' || n % 5, n FROM generate_series(0, 4099) AS n;
           CREATE INDEX ON items (id);
           ANALYZE items;"#,
    )
    .await;
    let cli = Cli::new().config(&format!(
        "[database]\nurl = \"{}\"\n\n[[tables]]\nname = 'public.items'\ncolumn = 'id'\ninterval = 1000\n",
        db.url()
    ));
    let saved = bench_saved(&cli, "public.items");
    let ranges = &saved["parameters"]["ranges"];
    assert_eq!(ranges["newest"], 4099, "{saved:#}");
    assert_eq!(
        ranges["period"],
        serde_json::json!([3000, 4000]),
        "{saved:#}"
    );
    assert_eq!(ranges["periods"], serde_json::json!([1000, 4000]));
    assert_eq!(ranges["recent"], serde_json::json!([4000, 4100]));
    assert_eq!(
        scanned(&saved, "property_date_range"),
        (1, vec!["items_p3000".to_string()])
    );
    assert_eq!(scanned(&saved, "analytics_aggregation").0, 3);
    assert_eq!(
        scanned(&saved, "recent_data"),
        (1, vec!["items_p4000".to_string()])
    );
    assert_eq!(scanned(&saved, "property_no_date").0, 5);
    let out = cli.run(["bench", "--table", "public.items", "--runs", "1"]);
    out.assert_success();
    assert!(
        out.stdout.contains("Property + key range (one period)"),
        "{out}"
    );
    assert!(out.stdout.contains("one period [3000, 4000)"), "{out}");

    // An integer key with a calendar interval and no epoch is a mismatch: exit 2, what to set.
    let cli = Cli::new().config(&config(&db, "public.items", "id", ""));
    let out = cli.run(["bench", "--table", "public.items"]);
    out.assert_code(2);
    assert!(out.stderr.contains("tables[].epoch"), "{out}");
}

#[tokio::test]
async fn bench_asks_epoch_and_uuidv7_tables_the_date_windows_as_key_values() {
    let db = shared().create_database().await;
    // One row an hour from 2025-01-01 00:00 UTC for 1500 hours (to 2025-03-04 11:00), in monthly
    // partitions by Unix milliseconds and by UUIDv7 (the smallest of each month's first
    // millisecond as bounds, the row's millisecond as the value's first 48 bits).
    db.exec(
        r#"CREATE TABLE events (ts bigint NOT NULL, "propertyId" text, price numeric)
             PARTITION BY RANGE (ts);
           CREATE TABLE ids (id uuid NOT NULL, "propertyId" text, price numeric)
             PARTITION BY RANGE (id);
           CREATE FUNCTION ms(t timestamptz) RETURNS bigint
             LANGUAGE sql AS 'SELECT (extract(epoch FROM t) * 1000)::bigint';
           CREATE FUNCTION v7(ms bigint, n bigint) RETURNS uuid LANGUAGE sql AS
             $$SELECT (lpad(to_hex(ms), 12, '0') || '7' || lpad(to_hex(n % 4096), 3, '0') || '8'
                       || lpad(to_hex(n), 15, '0'))::uuid$$;
           DO $$ DECLARE m timestamptz; BEGIN
             FOR m IN SELECT generate_series(timestamptz '2025-01-01 00:00+00',
                                             timestamptz '2025-03-01 00:00+00', interval '1 month') LOOP
               EXECUTE format('CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%s) TO (%s)',
                 'events_' || to_char(m AT TIME ZONE 'UTC', 'YYYY_MM'), ms(m), ms(m + interval '1 month'));
               EXECUTE format('CREATE TABLE %I PARTITION OF ids FOR VALUES FROM (%L) TO (%L)',
                 'ids_' || to_char(m AT TIME ZONE 'UTC', 'YYYY_MM'), v7(ms(m), 0), v7(ms(m + interval '1 month'), 0));
             END LOOP; END $$;
           INSERT INTO events SELECT ms(timestamptz '2025-01-01 00:00+00' + n * interval '1 hour'),
                                     'prop-' || n % 5, n FROM generate_series(0, 1499) AS n;
           INSERT INTO ids SELECT v7(ts, ts / 3600000), "propertyId", price FROM events;
           ANALYZE events; ANALYZE ids;"#,
    )
    .await;
    let cli = Cli::new().config(&format!(
        "[database]\nurl = \"{url}\"\n\n[[tables]]\nname = 'public.events'\ncolumn = 'ts'\ninterval = \"1 month\"\nepoch = \"milliseconds\"\n\n\
         [[tables]]\nname = 'public.ids'\ncolumn = 'id'\ninterval = \"1 month\"\n",
        url = db.url()
    ));
    for table in ["events", "ids"] {
        let saved = bench_saved(&cli, &format!("public.{table}"));
        // The newest row is at 2025-03-04 11:00: the month asked about is February.
        assert_eq!(saved["parameters"]["reference"], "2025-03-04", "{saved:#}");
        assert!(saved["parameters"].get("ranges").is_none(), "{saved:#}");
        assert_eq!(
            scanned(&saved, "property_date_range"),
            (1, vec![format!("{table}_2025_02")]),
            "{saved:#}"
        );
        // Three months before March: December (no partition), January and February.
        assert_eq!(scanned(&saved, "analytics_aggregation").0, 2, "{saved:#}");
        // 2025-02-26 .. 2025-03-05: the end of February and March.
        assert_eq!(scanned(&saved, "recent_data").0, 2, "{saved:#}");
        assert_eq!(scanned(&saved, "property_no_date").0, 3, "{saved:#}");
    }
}

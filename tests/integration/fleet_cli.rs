//! The commands over several databases (`[[databases]]`): `maintain`, `check` and `status` go
//! over every database unless `--database` names one, check every one even when another cannot
//! be reached, and name those that are not OK; commands about one table need `--database`.

use crate::common::fixtures::{
    assert_no_password, partition_names, pricing_db, schema_snapshot, url_with_password, PASSWORD,
};
use crate::common::{Cli, TestDb};

/// The runbook's policy, under one `[[databases]]` entry.
const TABLE: &str = r#"
[[databases.tables]]
name = "public.pricing_data"
column = "date"
interval = "1 month"
premake = 3
"#;

/// A fleet configuration: each `(name, url)` one `[[databases]]` entry holding [`TABLE`].
fn fleet_config(dbs: &[(&str, String)]) -> String {
    let mut out = String::from(
        "[database]\nlock_timeout = \"1s\"\nconnect_timeout = \"3s\"\n\n[schedule]\ntimezone = \"UTC\"\n",
    );
    for (name, url) in dbs {
        out.push_str(&format!(
            "\n[[databases]]\nname = \"{name}\"\nurl = \"{url}\"\n{TABLE}"
        ));
    }
    out
}

async fn three() -> (Vec<TestDb>, Cli) {
    let dbs = vec![pricing_db().await, pricing_db().await, pricing_db().await];
    let cli = Cli::new().config(&fleet_config(&[
        ("alpha", url_with_password(&dbs[0])),
        ("beta", url_with_password(&dbs[1])),
        ("gamma", url_with_password(&dbs[2])),
    ]));
    (dbs, cli)
}

const EXPECTED: [&str; 5] = [
    "pricing_data_2026_11",
    "pricing_data_2026_12",
    "pricing_data_2027_01",
    "pricing_data_2027_02",
    "pricing_data_default",
];

#[tokio::test]
async fn maintain_goes_over_every_database_and_check_names_the_one_that_is_wrong() {
    let (dbs, cli) = three().await;
    let out = cli.run_async(["maintain", "--now", "2026-11-25"]).await;
    out.assert_success();
    for name in ["alpha", "beta", "gamma"] {
        assert!(
            out.stdout.contains(&format!("== database {name} ==")),
            "{out}"
        );
    }
    for db in &dbs {
        assert_eq!(partition_names(db).await, EXPECTED, "{out}");
    }

    let out = cli.run_async(["check", "--now", "2026-11-25"]).await;
    out.assert_success();

    dbs[1].exec("DROP TABLE pricing_data_2027_01").await;
    let out = cli.run_async(["check", "--now", "2026-11-25"]).await;
    out.assert_code(1);
    assert!(out.stderr.contains("1 database(s) not OK: beta ("), "{out}");
    assert!(
        !out.stderr.contains("alpha (") && !out.stderr.contains("gamma ("),
        "{out}"
    );
    assert!(out.stdout.contains("pricing_data_2027_01"), "{out}");

    // One JSON document, each table with its database.
    let out = cli
        .run_async(["check", "--now", "2026-11-25", "--format", "json"])
        .await;
    out.assert_code(1);
    let tables: serde_json::Value = serde_json::from_str(&out.stdout).expect("one JSON document");
    let verdicts: Vec<(String, usize)> = tables
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["database"].as_str().unwrap().to_string(),
                t["problems"].as_array().unwrap().len(),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        [("alpha".into(), 0), ("beta".into(), 1), ("gamma".into(), 0)],
        "{out}"
    );

    cli.run_async(["check", "--now", "2026-11-25", "--database", "alpha"])
        .await
        .assert_success();
    cli.run_async(["check", "--now", "2026-11-25", "--database", "beta"])
        .await
        .assert_code(1);

    let out = cli.run_async(["status", "--format", "json"]).await;
    out.assert_success();
    let status: serde_json::Value = serde_json::from_str(&out.stdout).expect("one JSON document");
    let names: Vec<&str> = status["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["database"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "beta", "gamma"], "{out}");
    assert_eq!(
        status["databases"][1]["tables"][0]["partitions"]
            .as_array()
            .map(Vec::len),
        Some(4),
        "{out}"
    );

    // --database with --table repairs that one database only.
    let before = schema_snapshot(&dbs[0]).await;
    cli.run_async([
        "maintain",
        "--now",
        "2026-11-25",
        "--database",
        "beta",
        "--table",
        "public.pricing_data",
    ])
    .await
    .assert_success();
    assert_eq!(partition_names(&dbs[1]).await, EXPECTED);
    assert_eq!(schema_snapshot(&dbs[0]).await, before);
    assert_no_password(&out);
}

#[tokio::test]
async fn a_database_that_cannot_be_reached_is_named_and_the_others_are_still_checked() {
    let db = pricing_db().await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cli = Cli::new().config(&fleet_config(&[
        (
            "gone",
            format!("postgres://postgres:{PASSWORD}@127.0.0.1:{closed}/gone"),
        ),
        ("here", url_with_password(&db)),
    ]));
    cli.run_async(["maintain", "--now", "2026-11-25", "--database", "here"])
        .await
        .assert_success();
    let out = cli.run_async(["check", "--now", "2026-11-25"]).await;
    // Unreachable (2) outranks problems (1); the reachable database was still checked.
    out.assert_code(2);
    assert!(out.stdout.contains("== database here =="), "{out}");
    assert!(out.stdout.contains("public.pricing_data: OK"), "{out}");
    assert!(out.stderr.contains("database gone: "), "{out}");
    assert!(out.stderr.contains("1 database(s) not OK: gone ("), "{out}");
    assert_no_password(&out);

    // A pass over all databases still maintains the reachable one.
    db.exec("DROP TABLE pricing_data_2027_02").await;
    let out = cli.run_async(["maintain", "--now", "2026-11-25"]).await;
    assert_ne!(out.code(), Some(0), "{out}");
    assert!(out.stderr.contains("gone ("), "{out}");
    assert_eq!(partition_names(&db).await, EXPECTED, "{out}");
}

#[tokio::test]
async fn commands_about_one_table_need_the_database_when_several_are_configured() {
    let (dbs, cli) = three().await;
    let before: Vec<_> = futures::future::join_all(dbs.iter().map(schema_snapshot)).await;
    let table = ["--table", "public.pricing_data"];
    let cases: Vec<Vec<&str>> = vec![
        [&["maintain"][..], &table].concat(),
        [&["check"][..], &table].concat(),
        [&["status"][..], &table].concat(),
        [&["migrate", "plan"][..], &table].concat(),
        [&["drain", "--dry-run"][..], &table].concat(),
        [&["bench"][..], &table].concat(),
    ];
    for args in cases {
        let out = cli.run_async(&args).await;
        out.assert_code(2);
        assert!(
            out.stderr
                .contains("3 databases are configured (alpha, beta, gamma): pass --database NAME"),
            "{args:?}: {out}"
        );
    }
    for args in [
        vec!["maintain", "--database", "delta"],
        vec!["check", "--database", "delta"],
        vec![
            "migrate",
            "plan",
            "--database",
            "delta",
            "--table",
            "public.pricing_data",
        ],
    ] {
        let out = cli.run_async(&args).await;
        out.assert_code(2);
        assert!(
            out.stderr.contains(
                "--database delta: no such database in the configuration; configured: alpha, beta, gamma"
            ),
            "{args:?}: {out}"
        );
    }
    let after: Vec<_> = futures::future::join_all(dbs.iter().map(schema_snapshot)).await;
    assert_eq!(before, after);
}

#[tokio::test]
async fn config_validate_prints_each_database_redacted_and_refuses_a_bad_one_by_name() {
    let (dbs, cli) = three().await;
    let out = cli.run_async(["config", "validate"]).await;
    out.assert_success();
    assert_no_password(&out);
    let rendered: toml::Table = toml::from_str(
        out.stdout
            .split("\n# database")
            .next()
            .expect("the TOML comes first"),
    )
    .expect("valid TOML");
    assert_eq!(rendered["databases"].as_array().map(Vec::len), Some(3));
    assert!(out.stdout.contains("# database \"gamma\""), "{out}");
    assert!(
        out.stderr
            .contains("configuration is valid (3 database(s): alpha, beta, gamma; 3 table(s))"),
        "{out}"
    );

    // The second entry's table gets a wrong interval.
    let bad = std::fs::read_to_string(cli.config_path()).unwrap();
    let mut parts: Vec<&str> = bad.split("[[databases]]").collect();
    let fixed = parts[2].replace("interval = \"1 month\"", "interval = \"1 fortnight\"");
    parts[2] = &fixed;
    let bad = parts.join("[[databases]]");
    let before = schema_snapshot(&dbs[1]).await;
    let out = Cli::new().config(&bad).run_async(["maintain"]).await;
    out.assert_code(2);
    assert!(
        out.stderr
            .contains("database \"beta\" (databases[1]): tables[0].interval"),
        "{out}"
    );
    assert_no_password(&out);
    assert_eq!(schema_snapshot(&dbs[1]).await, before);
}

//! Identifiers at the edges: quotes, spaces, capitals, unicode and names near PostgreSQL's 63-byte
//! limit. Partition names derived from them must neither collide nor be truncated into each other.

use crate::common::{shared, Cli, TestDb};

/// `"` doubled inside a double-quoted SQL identifier.
fn q(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// A TOML basic string holding `s`.
fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn config(db: &TestDb, tables: &[(&str, &str, &str)]) -> String {
    let mut out = format!(
        "[database]\nurl = \"{}\"\nlock_timeout = \"2s\"\n",
        db.url()
    );
    for (schema, table, column) in tables {
        out.push_str(&format!(
            "[[tables]]\nname = {}\ncolumn = {}\ninterval = \"1 day\"\npremake = 2\ndefault_partition = true\n",
            toml_str(&format!("{}.{}", q(schema), q(table))),
            toml_str(&q(column)),
        ));
    }
    out
}

async fn partitions_of(db: &TestDb, schema: &str, table: &str) -> Vec<String> {
    let mut conn = db.connect().await;
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
          WHERE i.inhparent = format('%I.%I', $1::text, $2::text)::regclass ORDER BY 1",
    )
    .bind(schema)
    .bind(table)
    .fetch_all(&mut conn)
    .await
    .unwrap()
}

#[tokio::test]
async fn quotes_spaces_capitals_and_unicode_are_managed_as_written() {
    let db = shared().create_database().await;
    let (schema, table, column) = ("Billing \"EU\"", "Invoice Évents.v2", "createdAt");
    db.exec(&format!(
        "CREATE SCHEMA {s}; CREATE TABLE {s}.{t} (id bigint, {c} timestamptz NOT NULL) PARTITION BY RANGE ({c})",
        s = q(schema),
        t = q(table),
        c = q(column)
    ))
    .await;
    let cli = Cli::new().config(&config(&db, &[(schema, table, column)]));
    cli.run(["maintain", "--now", "2026-11-25"])
        .assert_success();
    let parts = partitions_of(&db, schema, table).await;
    assert_eq!(
        parts,
        [
            "Invoice Évents.v2_2026_11_25",
            "Invoice Évents.v2_2026_11_26",
            "Invoice Évents.v2_2026_11_27",
            "Invoice Évents.v2_default"
        ]
    );
    // A second pass finds nothing to do, and check agrees.
    let again = cli.run(["maintain", "--now", "2026-11-25"]);
    again.assert_success();
    assert!(again.stdout.contains("nothing to do"), "{again}");
    cli.run(["check", "--now", "2026-11-25"]).assert_success();
    // Output and labels show the name unquoted.
    assert!(
        again.stdout.contains("Billing \"EU\".Invoice Évents.v2"),
        "{again}"
    );
}

#[tokio::test]
async fn long_names_sharing_a_prefix_get_distinct_partition_names_within_63_bytes() {
    let db = shared().create_database().await;
    // 63 bytes each, the longest PostgreSQL keeps; identical for their first 60.
    let prefix = "x".repeat(60);
    let names = [format!("{prefix}_aa"), format!("{prefix}_bb")];
    for n in &names {
        assert_eq!(n.len(), 63);
        db.exec(&format!(
            "CREATE TABLE {} (d date NOT NULL) PARTITION BY RANGE (d)",
            q(n)
        ))
        .await;
    }
    let tables: Vec<(&str, &str, &str)> =
        names.iter().map(|n| ("public", n.as_str(), "d")).collect();
    let cli = Cli::new().config(&config(&db, &tables));
    cli.run(["maintain", "--now", "2026-02-28"])
        .assert_success();

    let a = partitions_of(&db, "public", &names[0]).await;
    let b = partitions_of(&db, "public", &names[1]).await;
    assert_eq!(a.len(), 4, "{a:?}");
    assert_eq!(b.len(), 4, "{b:?}");
    for p in a.iter().chain(&b) {
        assert!(p.len() <= 63, "{p} is {} bytes", p.len());
    }
    assert!(
        a.iter().all(|p| !b.contains(p)),
        "collision: {a:?} vs {b:?}"
    );
    // The period stays readable at the end of every name.
    assert!(a.iter().any(|p| p.ends_with("_2026_03_01")), "{a:?}");
    cli.run(["maintain", "--now", "2026-02-28"])
        .assert_success();
    cli.run(["check", "--now", "2026-02-28"]).assert_success();
}

#[tokio::test]
async fn a_name_that_differs_only_in_case_gets_the_quoted_form_as_a_hint() {
    let db = shared().create_database().await;
    db.exec("CREATE TABLE \"Events\" (d date NOT NULL) PARTITION BY RANGE (d)")
        .await;
    let toml = format!(
        "[database]\nurl = \"{}\"\n[[tables]]\nname = \"public.Events\"\ncolumn = \"d\"\ninterval = \"1 month\"\n",
        db.url()
    );
    let out = Cli::new().config(&toml).run(["maintain"]);
    out.assert_code(2);
    assert!(out.stderr.contains("\"Events\""), "{out}");
    assert!(partitions_of(&db, "public", "Events").await.is_empty());
}

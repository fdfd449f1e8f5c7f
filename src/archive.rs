//! `retention_mode = "archive"`: the SQL that moves an expired partition into the archive schema
//! and detaches it, the check for a name already taken there, and the list of archived tables
//! that `status` and `check` show apart from the live partitions.
//!
//! Order: with `DETACH ... CONCURRENTLY` (two transactions of its own, never inside a block)
//! the partition first moves to the archive schema while still attached, then is detached. A
//! pass cut short between the two leaves a partition of the table that sits in the archive
//! schema: the next pass, which re-reads the catalog, sees it still expired and only detaches it.
//! The other order would leave a plain table in the live schema that nothing links to the
//! partitioned table any more. Without CONCURRENTLY both happen in one transaction.

use serde::Serialize;
use sqlx::PgConnection;

use crate::ident::{quote_ident, QualifiedName};
use crate::step::Step;

/// The steps of one `Action::Archive`.
pub fn steps(
    parent: &QualifiedName,
    owner: &str,
    partition: &QualifiedName,
    schema: &str,
    concurrently: bool,
    pending: bool,
) -> Vec<Step> {
    let moved = QualifiedName::new(schema, partition.name.clone());
    let mut prepare = Vec::new();
    if partition.schema != schema {
        // Owned like the table, so its owner (and whoever may read it) keeps the archive.
        prepare.push(if owner.is_empty() {
            format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(schema))
        } else {
            format!(
                "CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}",
                quote_ident(schema),
                quote_ident(owner)
            )
        });
        prepare.push(format!(
            "ALTER TABLE {} SET SCHEMA {}",
            partition.quoted(),
            quote_ident(schema)
        ));
    }
    let detach = |suffix: &str| {
        format!(
            "ALTER TABLE {} DETACH PARTITION {}{suffix}",
            parent.quoted(),
            moved.quoted()
        )
    };
    let (tx, bare) = (Step::tx, Step::bare);
    let mut out = Vec::new();
    if pending || concurrently {
        if !prepare.is_empty() {
            out.push(tx(prepare));
        }
        out.push(bare(detach(if pending {
            " FINALIZE"
        } else {
            " CONCURRENTLY"
        })));
    } else {
        // One transaction: detached and moved together, or neither.
        let mut s = Vec::new();
        if let Some(create) = prepare.first() {
            s.push(create.clone());
        }
        s.push(format!(
            "ALTER TABLE {} DETACH PARTITION {}",
            parent.quoted(),
            partition.quoted()
        ));
        if let Some(mv) = prepare.get(1) {
            s.push(mv.clone());
        }
        out.push(tx(s));
    }
    out
}

/// Relations in the archive schema whose names a move would need (the partition and its
/// indexes, which follow it): `(wanted, what is there)`. Found before any DDL.
pub async fn clashes(
    conn: &mut PgConnection,
    moves: &[(QualifiedName, String)],
) -> Result<Vec<String>, sqlx::Error> {
    let mut out = Vec::new();
    for (partition, schema) in moves {
        if &partition.schema == schema {
            continue;
        }
        let taken: Vec<String> = sqlx::query_scalar(
            r#"
            SELECT format('%s.%s', n.nspname, c.relname)
              FROM pg_class src
              JOIN pg_namespace sn ON sn.oid = src.relnamespace
              LEFT JOIN pg_index i ON i.indrelid = src.oid
              JOIN pg_class want ON want.oid = src.oid OR want.oid = i.indexrelid
              JOIN pg_namespace n ON n.nspname = $3
              JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = want.relname
             WHERE sn.nspname = $1 AND src.relname = $2
             GROUP BY 1 ORDER BY 1
            "#,
        )
        .bind(&partition.schema)
        .bind(&partition.name)
        .bind(schema)
        .persistent(false)
        .fetch_all(&mut *conn)
        .await?;
        out.extend(taken.into_iter().map(|t| {
            format!(
                "cannot archive {partition} into schema {schema}: {t} already exists there; rename or drop it (or set tables[].archive_schema to another schema)"
            )
        }));
    }
    Ok(out)
}

/// A table in the archive schema that once was a partition of the managed table.
#[derive(Debug, Clone, Serialize)]
pub struct Archived {
    pub name: QualifiedName,
    pub size_bytes: i64,
    pub rows_estimate: f64,
}

/// The archived partitions of `table`: plain tables in `schema` named `<table>_...` (partition
/// names are derived from the table's) that are not partitions of anything.
pub async fn list(
    conn: &mut PgConnection,
    table: &QualifiedName,
    schema: &str,
) -> Result<Vec<Archived>, sqlx::Error> {
    let rows: Vec<(String, i64, f64)> = sqlx::query_as(
        r#"
        SELECT c.relname::text, pg_total_relation_size(c.oid), c.reltuples::float8
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relkind = 'r' AND NOT c.relispartition
           AND left(c.relname, length($2) + 1) = $2 || '_'
         ORDER BY c.relname
        "#,
    )
    .bind(schema)
    .bind(&table.name)
    .persistent(false)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, size, rows)| Archived {
            name: QualifiedName::new(schema, name),
            size_bytes: size,
            rows_estimate: rows.max(0.0),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(steps: &[Step]) -> Vec<(bool, String)> {
        steps
            .iter()
            .map(|s| (s.transactional, s.statements.join("; ")))
            .collect()
    }

    #[test]
    fn concurrent_archive_moves_first_then_detaches_outside_a_transaction() {
        let parent = QualifiedName::new("public", "t");
        let p = QualifiedName::new("public", "t_2020_01");
        let s = sql(&steps(&parent, "app", &p, "archive", true, false));
        assert_eq!(
            s,
            [
                (true, "CREATE SCHEMA IF NOT EXISTS \"archive\" AUTHORIZATION \"app\"; ALTER TABLE \"public\".\"t_2020_01\" SET SCHEMA \"archive\"".to_string()),
                (false, "ALTER TABLE \"public\".\"t\" DETACH PARTITION \"archive\".\"t_2020_01\" CONCURRENTLY".to_string()),
            ]
        );
    }

    #[test]
    fn without_concurrently_detach_and_move_are_one_transaction() {
        let parent = QualifiedName::new("public", "t");
        let p = QualifiedName::new("public", "t_2020_01");
        let s = sql(&steps(&parent, "app", &p, "archive", false, false));
        assert_eq!(s.len(), 1);
        assert!(s[0].0);
        assert!(s[0].1.contains("DETACH PARTITION \"public\".\"t_2020_01\"; ALTER TABLE \"public\".\"t_2020_01\" SET SCHEMA \"archive\""), "{}", s[0].1);
    }

    #[test]
    fn a_partition_already_moved_is_only_detached() {
        let parent = QualifiedName::new("public", "t");
        let p = QualifiedName::new("archive", "t_2020_01");
        let s = sql(&steps(&parent, "app", &p, "archive", true, false));
        assert_eq!(s.len(), 1);
        assert!(!s[0].0);
        let s = sql(&steps(&parent, "app", &p, "archive", true, true));
        assert!(s[0].1.ends_with("FINALIZE"), "{}", s[0].1);
    }
}

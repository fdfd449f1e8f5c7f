//! Foreign keys that point at a managed table, and what they mean for expiry.
//!
//! What PostgreSQL does (12+, where a partitioned table can be referenced): the constraint is
//! cloned onto every partition of the referenced table. `DROP TABLE` of an attached partition is
//! refused outright ("other objects depend on it"); partkeeper always detaches first. `DETACH
//! PARTITION` (plain, or the first transaction of `CONCURRENTLY`) runs the referential check
//! `RI_PartitionRemove_Check`: it takes a SHARE lock on each referencing table — writes to it
//! wait, reads go on — and scans it for a row whose key lies in the partition; if it finds one,
//! the detach fails ("removing partition ... violates foreign key constraint") and nothing
//! changes. The lock is taken under `lock_timeout` like every lock of ours, and the scan runs
//! under `statement_timeout`, which bounds how long writers to the referencing table wait.
//!
//! So no row can be lost and nothing hangs; what partkeeper adds is a look beforehand, without
//! any lock, for a referencing row, so that a partition still referenced is refused with a message
//! naming the table, the constraint and a key, before any hook runs or anything moves.

use serde::Serialize;
use sqlx::PgConnection;

use crate::ident::{quote_ident, QualifiedName};

/// A foreign key on another table (or on the table itself) that references the managed table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InboundFk {
    pub name: String,
    pub from_table: QualifiedName,
    /// Referencing columns, in constraint order.
    pub from_columns: Vec<String>,
    /// Referenced columns of the managed table, same order.
    pub to_columns: Vec<String>,
}

/// The foreign keys that reference `table` (the parent's own, not the per-partition clones).
pub async fn read(
    conn: &mut PgConnection,
    table: &QualifiedName,
) -> Result<Vec<InboundFk>, sqlx::Error> {
    /// Constraint, referencing schema and table, their columns, ours.
    type Row = (String, String, String, Vec<String>, Vec<String>);
    let rows: Vec<Row> = sqlx::query_as(
        r#"
        SELECT k.conname::text, fn.nspname::text, f.relname::text,
               ARRAY(SELECT a.attname::text FROM unnest(k.conkey) WITH ORDINALITY u(n, i)
                       JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n ORDER BY u.i),
               ARRAY(SELECT a.attname::text FROM unnest(k.confkey) WITH ORDINALITY u(n, i)
                       JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.n ORDER BY u.i)
          FROM pg_constraint k
          JOIN pg_class f ON f.oid = k.conrelid
          JOIN pg_namespace fn ON fn.oid = f.relnamespace
         WHERE k.contype = 'f' AND k.confrelid = to_regclass($1) AND k.conparentid = 0
         ORDER BY 2, 3, 1
        "#,
    )
    .bind(table.quoted())
    .persistent(false)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, s, t, from_columns, to_columns)| InboundFk {
            name,
            from_table: QualifiedName::new(s, t),
            from_columns,
            to_columns,
        })
        .collect())
}

/// What PostgreSQL will check, and lock, when a partition of `table` is detached or dropped.
/// `blocking`: the detach runs without CONCURRENTLY, so the table itself stays locked meanwhile.
pub fn describe(fks: &[InboundFk], blocking: bool) -> Option<String> {
    if fks.is_empty() {
        return None;
    }
    let mut note = format!(
        "{} foreign key(s) reference this table ({}): before a partition is detached (and so before it is dropped or archived), PostgreSQL scans each referencing table for a row whose key lies in that partition, holding a SHARE lock on it meanwhile (writes to it wait, reads go on; the lock is taken under lock_timeout, the scan is bounded by statement_timeout); a partition still referenced is refused and kept — partkeeper looks for such rows first, without locking, and says which",
        fks.len(),
        fks.iter()
            .map(|f| format!("{} on {}", f.name, f.from_table))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if blocking {
        note.push_str(
            "; this detach runs without CONCURRENTLY (a default partition exists, or PostgreSQL 13), so the table itself stays ACCESS EXCLUSIVE-locked during that scan: an index on the referencing columns keeps it short",
        );
    }
    Some(note)
}

/// The first referencing row found for `partition` through `fk`, shown as its key, if any.
/// Reads without locks; bounded by the session's statement_timeout.
pub async fn referencing_row(
    conn: &mut PgConnection,
    fk: &InboundFk,
    partition: &QualifiedName,
) -> Result<Option<String>, sqlx::Error> {
    let cols = |prefix: &str, cols: &[String]| {
        cols.iter()
            .map(|c| format!("{prefix}.{}", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let from = cols("r", &fk.from_columns);
    let to = cols("p", &fk.to_columns);
    let sql = format!(
        "SELECT ({from})::text FROM {} r WHERE ({from}) IN (SELECT {to} FROM {} p) LIMIT 1",
        fk.from_table.quoted(),
        partition.quoted()
    );
    sqlx::query_scalar(&sql)
        .persistent(false)
        .fetch_optional(conn)
        .await
}

/// Refusal message for a partition that is still referenced.
pub fn refusal(fk: &InboundFk, partition: &QualifiedName, key: &str) -> String {
    format!(
        "kept {partition}: rows of {} still reference it through foreign key {} (e.g. ({}) = {key}); PostgreSQL would refuse to detach it. Delete or re-point those rows (or drop the constraint), and the next run expires it",
        fk.from_table,
        fk.name,
        fk.from_columns.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_foreign_key_no_note() {
        assert!(describe(&[], true).is_none());
        let fk = InboundFk {
            name: "bookings_price_fk".into(),
            from_table: QualifiedName::new("public", "bookings"),
            from_columns: vec!["price_id".into(), "price_date".into()],
            to_columns: vec!["id".into(), "date".into()],
        };
        let d = describe(std::slice::from_ref(&fk), false).unwrap();
        assert!(d.contains("bookings_price_fk on public.bookings") && d.contains("SHARE lock"));
        let r = refusal(
            &fk,
            &QualifiedName::new("public", "p_2020_01"),
            "(7,2020-01-05)",
        );
        assert!(r.contains("kept public.p_2020_01") && r.contains("(price_id, price_date)"));
    }
}

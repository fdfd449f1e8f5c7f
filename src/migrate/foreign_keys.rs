//! Foreign keys of other tables that reference the table being converted ("inbound"): which can
//! follow it to its partitioned form, and how they are moved without a long lock.
//!
//! A foreign key into a partitioned table must reference a unique constraint of it, and those
//! always contain the partition key. So a foreign key over columns that include the key and match
//! the new table's primary key (or a unique constraint of the original that contains the key) is
//! carried; one over `(id)` alone cannot be, and stays a blocker with the advice it had.
//!
//! Moving one: inside the swap transaction — the locks are held there anyway — it is dropped from
//! the referencing table (it pointed at the original by OID) and re-created `NOT VALID` against
//! the table that now has the name: a catalog change, no scan, and enforced for every write from
//! the commit on. After the commit `VALIDATE CONSTRAINT` checks the existing rows under SHARE
//! UPDATE EXCLUSIVE on the referencing table (reads and writes go on) and ROW SHARE on the
//! referenced one. A referencing table that is itself partitioned cannot take a NOT VALID foreign
//! key before PostgreSQL 18; there it is re-created validated inside the swap, which then scans it.
//! `rollback` moves them back the same way.

use sqlx::PgConnection;

use super::inventory::InboundFk;
use crate::ident::{quote_ident, QualifiedName};

/// First server version that accepts a NOT VALID foreign key on a partitioned table.
const NOT_VALID_ON_PARTITIONED_SINCE: u32 = 180000;

/// `Ok(what is carried)` or `Err(blocker)` for one inbound foreign key. `unique_sets` are the
/// column lists of the original's PRIMARY KEY and UNIQUE constraints.
pub fn judge(
    fk: &InboundFk,
    table: &QualifiedName,
    key: &str,
    pk: &[String],
    unique_sets: &[Vec<String>],
) -> Result<String, String> {
    let referenced = referenced_columns(&fk.definition).unwrap_or_default();
    let same = |a: &[String], b: &[String]| {
        let (mut a, mut b) = (a.to_vec(), b.to_vec());
        a.sort();
        b.sort();
        a == b
    };
    let mut new_pk = pk.to_vec();
    if !new_pk.iter().any(|c| c == key) {
        new_pk.push(key.to_string());
    }
    let self_reference = fk.from_table == table.name || fk.from_table == table.to_string();
    let carriable = !referenced.is_empty()
        && referenced.iter().any(|c| c == key)
        && (same(&referenced, &new_pk) || unique_sets.iter().any(|u| same(&referenced, u)));
    if self_reference {
        return Err(format!(
            "foreign key {} of {table} references the table itself ({}); drop it before converting and re-create it afterwards",
            fk.name, fk.definition
        ));
    }
    if fk.definition.ends_with("NOT VALID") {
        return Err(format!(
            "foreign key {} on {} references {table} but is NOT VALID ({}); VALIDATE it first (ALTER TABLE {} VALIDATE CONSTRAINT {}) or drop it",
            fk.name, fk.from_table, fk.definition, fk.from_table, fk.name
        ));
    }
    if !carriable {
        return Err(format!(
            "foreign key {} on {} references {table} ({}); a foreign key into a partitioned table must reference its whole primary key including {key}. Drop it before converting (ALTER TABLE {} DROP CONSTRAINT {}) and re-create it afterwards over ({}) if the referencing table has that column",
            fk.name, fk.from_table, fk.definition, fk.from_table, fk.name,
            new_pk.join(", ")
        ));
    }
    Ok(format!(
        "foreign key {} on {} {} (moved to the new table at the swap, NOT VALID, then validated without blocking writes)",
        fk.name, fk.from_table, fk.definition
    ))
}

/// The referenced columns in `FOREIGN KEY (a) REFERENCES t(x, y) ...`, unquoted.
pub fn referenced_columns(definition: &str) -> Option<Vec<String>> {
    let after = &definition[definition.find(" REFERENCES ")? + " REFERENCES ".len()..];
    let open = skip_name(after)?;
    let inner = open.strip_prefix('(')?;
    let close = inner.find(')')?;
    Some(
        inner[..close]
            .split(", ")
            .map(|c| {
                c.strip_prefix('"')
                    .and_then(|c| c.strip_suffix('"'))
                    .map(|c| c.replace("\"\"", "\""))
                    .unwrap_or_else(|| c.to_string())
            })
            .collect(),
    )
}

/// Skips a (possibly qualified, possibly quoted) relation name; returns what follows it.
fn skip_name(s: &str) -> Option<&str> {
    let mut rest = s;
    loop {
        rest = if let Some(q) = rest.strip_prefix('"') {
            let mut i = 0;
            let b = q.as_bytes();
            loop {
                match b.get(i) {
                    None => return None,
                    Some(b'"') if b.get(i + 1) == Some(&b'"') => i += 2,
                    Some(b'"') => break &q[i + 1..],
                    Some(_) => i += 1,
                }
            }
        } else {
            let end = rest.find(['.', '('])?;
            &rest[end..]
        };
        match rest.strip_prefix('.') {
            Some(r) => rest = r,
            None => return Some(rest),
        }
    }
}

/// One inbound foreign key as it is right now, read inside the swap before the renames.
#[derive(Debug, Clone)]
pub struct Live {
    pub table: QualifiedName,
    pub name: String,
    /// `pg_get_constraintdef`: `FOREIGN KEY (..) REFERENCES t(..) [ON ...]`.
    pub definition: String,
    pub partitioned: bool,
}

/// The foreign keys that reference `table` now (not the per-partition clones PostgreSQL makes).
pub async fn read(
    conn: &mut PgConnection,
    table: &QualifiedName,
) -> Result<Vec<Live>, sqlx::Error> {
    let rows: Vec<(String, String, String, String, bool)> = sqlx::query_as(
        "SELECT n.nspname::text, c.relname::text, k.conname::text, pg_get_constraintdef(k.oid), c.relkind = 'p'
           FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE k.contype = 'f' AND k.confrelid = to_regclass($1) AND k.conparentid = 0
            AND k.conrelid <> k.confrelid
          ORDER BY 1, 2, 3",
    )
    .bind(table.quoted())
    .persistent(false)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(s, t, name, definition, partitioned)| Live {
            table: QualifiedName::new(s, t),
            name,
            definition,
            partitioned,
        })
        .collect())
}

/// Statements, run inside the swap after the renames, that point `fks` at `target` (the table
/// that now has the name). `None` for a definition that cannot be read back (never expected:
/// it comes from pg_get_constraintdef).
pub fn repoint(fks: &[Live], target: &QualifiedName, server_version: u32) -> Vec<String> {
    let mut s = Vec::new();
    for fk in fks {
        let Some(at) = fk.definition.find(" REFERENCES ") else {
            continue;
        };
        let head = &fk.definition[..at];
        let Some(tail) = skip_name(&fk.definition[at + " REFERENCES ".len()..]) else {
            continue;
        };
        let tail = tail.trim_end_matches(" NOT VALID");
        let not_valid = !fk.partitioned || server_version >= NOT_VALID_ON_PARTITIONED_SINCE;
        s.push(format!(
            "ALTER TABLE {} DROP CONSTRAINT {}",
            fk.table.quoted(),
            quote_ident(&fk.name)
        ));
        s.push(format!(
            "ALTER TABLE {} ADD CONSTRAINT {} {head} REFERENCES {}{tail}{}",
            fk.table.quoted(),
            quote_ident(&fk.name),
            target.quoted(),
            if not_valid { " NOT VALID" } else { "" }
        ));
    }
    s
}

/// Validates the NOT VALID foreign keys that reference `table` (those the swap moved: the plan
/// refuses to start while an inbound one is NOT VALID). Each is one statement under the
/// session's lock_timeout and statement_timeout.
pub async fn validate(
    conn: &mut PgConnection,
    table: &QualifiedName,
) -> Result<usize, sqlx::Error> {
    let pending: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT n.nspname::text, c.relname::text, k.conname::text
           FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE k.contype = 'f' AND k.confrelid = to_regclass($1) AND k.conparentid = 0 AND NOT k.convalidated
          ORDER BY 1, 2, 3",
    )
    .bind(table.quoted())
    .persistent(false)
    .fetch_all(&mut *conn)
    .await?;
    for (s, t, name) in &pending {
        let sql = format!(
            "ALTER TABLE {} VALIDATE CONSTRAINT {}",
            QualifiedName::new(s.clone(), t.clone()).quoted(),
            quote_ident(name)
        );
        tracing::info!(constraint = %name, table = %format!("{s}.{t}"), "validating a moved foreign key");
        sqlx::raw_sql(&sql).execute(&mut *conn).await?;
    }
    Ok(pending.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fk(def: &str) -> InboundFk {
        InboundFk {
            name: "bookings_fk".into(),
            from_table: "bookings".into(),
            definition: def.into(),
        }
    }

    #[test]
    fn referenced_columns_are_read_through_quotes() {
        assert_eq!(
            referenced_columns(
                "FOREIGN KEY (a, b) REFERENCES \"S\".\"t.x\"(id, \"Date\") ON DELETE CASCADE"
            ),
            Some(vec!["id".to_string(), "Date".to_string()])
        );
    }

    #[test]
    fn a_key_over_the_new_primary_key_is_carried_and_one_over_id_alone_is_not() {
        let t = QualifiedName::new("public", "pricing_data");
        let pk = vec!["id".to_string()];
        let ok = judge(
            &fk("FOREIGN KEY (pid, pd) REFERENCES pricing_data(id, date)"),
            &t,
            "date",
            &pk,
            &[],
        );
        assert!(ok.unwrap().contains("NOT VALID, then validated"));
        let no = judge(
            &fk("FOREIGN KEY (pid) REFERENCES pricing_data(id)"),
            &t,
            "date",
            &pk,
            &[],
        );
        assert!(no.unwrap_err().contains("DROP CONSTRAINT bookings_fk"));
        let not_valid = judge(
            &fk("FOREIGN KEY (pid, pd) REFERENCES pricing_data(id, date) NOT VALID"),
            &t,
            "date",
            &pk,
            &[],
        );
        assert!(not_valid.unwrap_err().contains("VALIDATE it first"));
    }

    #[test]
    fn repointing_keeps_the_actions_and_adds_not_valid() {
        let live = Live {
            table: QualifiedName::new("public", "bookings"),
            name: "bookings_fk".into(),
            definition: "FOREIGN KEY (pid, pd) REFERENCES pricing_data(id, date) ON DELETE CASCADE"
                .into(),
            partitioned: false,
        };
        let s = repoint(
            std::slice::from_ref(&live),
            &QualifiedName::new("public", "pricing_data"),
            150000,
        );
        assert_eq!(
            s,
            [
                "ALTER TABLE \"public\".\"bookings\" DROP CONSTRAINT \"bookings_fk\"",
                "ALTER TABLE \"public\".\"bookings\" ADD CONSTRAINT \"bookings_fk\" FOREIGN KEY (pid, pd) REFERENCES \"public\".\"pricing_data\"(id, date) ON DELETE CASCADE NOT VALID"
            ]
        );
        let partitioned = Live {
            partitioned: true,
            ..live
        };
        let s = repoint(
            &[partitioned],
            &QualifiedName::new("public", "pricing_data"),
            170000,
        );
        assert!(!s[1].ends_with("NOT VALID"), "{}", s[1]);
    }
}

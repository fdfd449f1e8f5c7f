//! Keys, constraints, columns and indexes: what the new table must hold so that it enforces what
//! the original enforced, and what cannot be carried to a partitioned table.

use super::preflight::Preflight;
use crate::migrate::definition;
use crate::migrate::inventory::Inventory;

/// The primary key: the online copy walks and matches rows by it.
pub(super) fn primary_key(inv: &Inventory, p: &mut Preflight) {
    let t = &inv.table;
    match inv.primary_key() {
        None => p.blockers.push(format!(
            "{t} has no primary key; the online copy walks and matches rows by it. Add one (e.g. ALTER TABLE {t} ADD PRIMARY KEY (id)) and plan again"
        )),
        Some(c) if c.deferrable => p.blockers.push(format!(
            "the primary key {} of {t} is DEFERRABLE, which cannot arbitrate the copy's ON CONFLICT; make it NOT DEFERRABLE first",
            c.name
        )),
        Some(_) => {}
    }
}

/// PRIMARY KEY and UNIQUE constraints (the new table's must contain the partition key),
/// exclusion, check and outbound foreign-key constraints.
pub(super) fn constraints(inv: &Inventory, key: &str, p: &mut Preflight) {
    let t = &inv.table;
    for c in &inv.constraints {
        match c.kind.as_str() {
            "p" | "u" => {
                let has_key = c.columns.iter().any(|x| x == key);
                let what = if c.kind == "p" { "primary key" } else { "unique constraint" };
                if has_key {
                    p.carried.push(format!("{what} {} {}", c.name, c.definition));
                } else {
                    let mut cols = c.columns.clone();
                    cols.push(key.to_string());
                    p.carried.push(format!("{what} {} {}", c.name, c.definition));
                    p.warnings.push(format!(
                        "{what} {} ({}) becomes ({}): on a partitioned table it must contain the partition key, so {} alone is no longer enforced unique across partitions (two rows may share it if their {key} differs); INSERT ... ON CONFLICT ({}) in the application must name ({})",
                        c.name,
                        c.columns.join(", "),
                        cols.join(", "),
                        c.columns.join(", "),
                        c.columns.join(", "),
                        cols.join(", ")
                    ));
                }
            }
            "x" => p.blockers.push(format!(
                "exclusion constraint {} cannot be carried to a partitioned table by partkeeper; drop it (and re-create it per partition) first",
                c.name
            )),
            "c" | "f" if c.definition.ends_with("NOT VALID") => p.blockers.push(format!(
                "constraint {} is NOT VALID ({}); rows that break it could not be copied into a table where it holds. VALIDATE it first (ALTER TABLE {t} VALIDATE CONSTRAINT {}) or drop it",
                c.name, c.definition, c.name
            )),
            "c" => p.carried.push(format!("check constraint {} {}", c.name, c.definition)),
            "f" => p.carried.push(format!(
                "foreign key {} {} (re-created on the new table)",
                c.name, c.definition
            )),
            _ => {}
        }
    }
}

/// NOT NULL and defaults, carried with the columns.
pub(super) fn columns(inv: &Inventory, p: &mut Preflight) {
    for c in inv.columns.iter().filter(|c| c.not_null) {
        p.carried.push(format!("NOT NULL {}", c.name));
    }
    for c in inv.columns.iter().filter(|c| c.default.is_some()) {
        p.carried.push(format!(
            "default {} = {}",
            c.name,
            c.default.clone().unwrap_or_default()
        ));
    }
}

/// Indexes that are not constraints: re-created per partition; unique ones gain the key.
pub(super) fn indexes(inv: &Inventory, p: &mut Preflight) {
    for i in &inv.indexes {
        if !i.valid {
            p.blockers.push(format!(
                "index {} is INVALID (an interrupted CREATE INDEX CONCURRENTLY); drop or REINDEX it first",
                i.name
            ));
            continue;
        }
        if i.constraint {
            continue;
        }
        match (definition::index_tail(i, &inv.printed_name), i.unique) {
            (None, _) => p.blockers.push(format!(
                "cannot read the definition of index {} ({}); drop it before converting and re-create it afterwards",
                i.name, i.definition
            )),
            (Some(tail), true) => match definition::extend_key_list(tail, &inv.printed_key) {
                Some(extended) => {
                    p.carried.push(format!("unique index {} (becomes USING {extended})", i.name));
                    p.warnings.push(format!(
                        "unique index {} gains the partition key: its columns are no longer unique on their own",
                        i.name
                    ));
                }
                None => p.blockers.push(format!(
                    "unique index {} ({}) cannot be extended with the partition key (it indexes an expression); drop it or replace it with a unique constraint over columns",
                    i.name, i.definition
                )),
            },
            (Some(_), false) => p.carried.push(format!("index {}: {}", i.name, i.definition)),
        }
    }
}

/// Foreign keys of other tables that reference this one (see [`crate::migrate::foreign_keys`]).
pub(super) fn inbound_foreign_keys(inv: &Inventory, key: &str, p: &mut Preflight) {
    let t = &inv.table;
    let pk = inv.primary_key();
    let unique_sets: Vec<Vec<String>> = inv
        .constraints
        .iter()
        .filter(|c| c.kind == "p" || c.kind == "u")
        .map(|c| c.columns.clone())
        .collect();
    for fk in &inv.inbound_fks {
        let pk_columns = pk.map(|c| c.columns.clone()).unwrap_or_default();
        match crate::migrate::foreign_keys::judge(fk, t, key, &pk_columns, &unique_sets) {
            Ok(carried) => p.carried.push(carried),
            Err(blocker) => p.blockers.push(blocker),
        }
    }
}

//! The table itself and its partition key: what kind of relation it is, whether the key column
//! exists and has a type partkeeper partitions by, and how maintain will read it.

use super::preflight::Preflight;
use crate::bounds::KeyType;
use crate::config::TablePolicy;
use crate::keys::Width;
use crate::migrate::inventory::Inventory;

/// The partition key as judged: its type and whether it is a plain integer (not epoch) key.
#[derive(Debug, Clone, Copy)]
pub(super) struct Key {
    pub key_type: KeyType,
    pub integer: bool,
}

/// Judges the relation and its key column. `None`: a blocker was recorded that makes every
/// further judgement meaningless, and the preflight ends there.
pub(super) fn judge(inv: &Inventory, policy: &TablePolicy, p: &mut Preflight) -> Option<Key> {
    let t = &inv.table;
    let key = policy.column.as_str();
    match inv.relkind.as_str() {
        "r" => {}
        "p" => {
            p.blockers.push(format!(
                "{t} is already partitioned; nothing to convert (use `partkeeper maintain` and `check` for it)"
            ));
            return None;
        }
        other => {
            p.blockers.push(format!(
                "{t} is not a plain table (relkind {other:?}); only ordinary tables can be converted"
            ));
            return None;
        }
    }
    if inv.is_partition || inv.has_inheritance {
        p.blockers.push(format!(
            "{t} takes part in table inheritance (it has a parent or children); detach them first, partkeeper converts stand-alone tables only"
        ));
    }
    let Some(col) = inv.column(key) else {
        p.blockers.push(format!(
            "{t} has no column {key:?}; set tables[].column to the date, timestamp or timestamptz column to partition by"
        ));
        return None;
    };
    // Every key kind of SPEC part 2, read as maintain reads it (epoch and uuid as instants).
    let integer_key = matches!(policy.interval, Width::Values(_)) && policy.epoch.is_none();
    let Some(column_type) = KeyType::from_pg_type(&col.type_name) else {
        p.blockers.push(format!(
            "the partition key {t}.{key} is of type {}; partkeeper partitions by date, timestamp, timestamptz, smallint, integer, bigint or uuid",
            col.type_name
        ));
        return None;
    };
    let key_type = match crate::catalog::key_for_policy(column_type, &col.type_name, policy) {
        Ok(k) => k,
        Err(e) => {
            p.blockers.push(e);
            return None;
        }
    };
    if integer_key && !inv.indexes.iter().any(|i| leads_with(&i.definition, key)) {
        p.warnings.push(format!(
            "no index leads with {key}: after the conversion maintain reads max({key}) by scanning the default and the highest partitions on every pass; create one, e.g. CREATE INDEX ON {t} ({})",
            crate::ident::quote_ident(key)
        ));
    }
    p.key_type = Some(key_type);
    if !col.generated.is_empty() {
        p.warnings.push(format!(
            "the key {key} is a generated column; its value is computed from the others in both tables"
        ));
    }
    Some(Key {
        key_type,
        integer: integer_key,
    })
}

/// Whether an index (its `CREATE INDEX` text) has `key` as its first column.
fn leads_with(definition: &str, key: &str) -> bool {
    let cols = definition.rsplit_once(" USING ").map_or("", |(_, c)| c);
    let first = cols
        .split_once('(')
        .map_or("", |(_, c)| c)
        .split([',', ')'])
        .next()
        .unwrap_or("")
        .trim();
    first == crate::ident::quote_ident(key) || first == key
}

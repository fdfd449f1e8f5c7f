//! The [`Blueprint`]: every name, column list and object the later steps act on, decided once
//! and stored in the state row.

use super::key::Key;
use super::preflight::Options;
use crate::config::TablePolicy;
use crate::ident::{derived_name, QualifiedName};
use crate::migrate::inventory::Inventory;
use crate::migrate::{Blueprint, IndexNames, Mode, OwnedSequence, UserTrigger, STATE_SCHEMA};

/// The blueprint, or `None` without a primary key (already a blocker: the copy walks by it).
pub(super) fn blueprint(
    inv: &Inventory,
    policy: &TablePolicy,
    opts: &Options,
    k: Key,
    partitioned: QualifiedName,
    user_triggers: Vec<UserTrigger>,
    default_partition: QualifiedName,
) -> Option<Blueprint> {
    let t = &inv.table;
    let key = policy.column.as_str();
    let key_type = k.key_type;
    let pk = inv.primary_key()?;
    let mut new_pk = pk.columns.clone();
    if !new_pk.iter().any(|c| c == key) {
        new_pk.push(key.to_string());
    }
    let sibling = |suffix: &str| t.sibling(derived_name(&t.name, suffix));
    let fn_base = format!("{}_{}", t.schema, t.name);
    Some(Blueprint {
        original: t.clone(),
        partitioned,
        backup: sibling("backup"),
        forward_function: QualifiedName::new(STATE_SCHEMA, derived_name(&fn_base, "forward")),
        reverse_function: QualifiedName::new(STATE_SCHEMA, derived_name(&fn_base, "reverse")),
        key: key.to_string(),
        key_sql_type: key_type.sql_name().to_string(),
        fill: opts.fill.clone(),
        pk: pk.columns.clone(),
        pk_types: pk
            .columns
            .iter()
            .map(|c| {
                inv.column(c)
                    .map(|c| c.type_name.clone())
                    .unwrap_or_default()
            })
            .collect(),
        new_pk,
        columns: inv
            .columns
            .iter()
            .filter(|c| c.generated.is_empty())
            .map(|c| c.name.clone())
            .collect(),
        no_update: inv
            .columns
            .iter()
            .filter(|c| c.identity == "a")
            .map(|c| c.name.clone())
            .collect(),
        overriding: inv.columns.iter().any(|c| c.identity == "a"),
        indexes: inv
            .indexes
            .iter()
            .map(|i| IndexNames {
                original: i.name.clone(),
                building: derived_name(&i.name, "partitioned"),
                backup: derived_name(&i.name, "backup"),
            })
            .collect(),
        sequences: inv
            .sequences
            .iter()
            .map(|s| OwnedSequence {
                sequence: s.sequence.clone(),
                column: s.column.clone(),
                identity: s.dependency == "i",
            })
            .collect(),
        user_triggers,
        publications: inv.publications.clone(),
        default_partition,
        keep_default: policy.default_partition,
        gone: (opts.mode == Mode::Online && copies_without_row_locks(inv))
            .then(|| QualifiedName::new(STATE_SCHEMA, derived_name(&fn_base, "gone"))),
        pause_autovacuum: opts.mode == Mode::Online
            && !inv
                .reloptions
                .iter()
                .any(|o| o.starts_with("autovacuum_enabled=")),
    })
}

/// Whether the online copy may read without row locks ([`Blueprint::gone`]). It then may insert
/// a row version that a writer has since replaced (settled after the copy), which only the
/// primary key tolerates: another unique key or an outbound foreign key could refuse the stale
/// version (a value a writer has since moved to another row, a parent deleted since), so such
/// tables are copied with `FOR SHARE`, which reads only current versions.
pub fn copies_without_row_locks(inv: &Inventory) -> bool {
    !inv.constraints
        .iter()
        .any(|c| c.kind == "u" || c.kind == "f" || c.kind == "x")
        && !inv.indexes.iter().any(|i| i.unique && !i.primary)
}

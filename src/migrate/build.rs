//! Builds the new partitioned table beside the original: the parent (`CREATE TABLE ... (LIKE
//! original) PARTITION BY RANGE`), its keys extended with the partition key, indexes, outbound
//! foreign keys, user triggers (disabled until the swap), then one partition per period made by
//! the same renderer as maintenance (`CREATE TABLE (LIKE)` + `ATTACH`), and a default partition.
//! The statement renderers are pure; [`run`] executes them in the caller's transaction.

use sqlx::PgConnection;

use super::inventory::{Index, Inventory};
use super::plan::PlannedPartition;
use super::Blueprint;
use crate::bounds::KeyType;
use crate::catalog::ManagedTable;
use crate::ddl::{self, Template};
use crate::ident::{quote_ident, quote_literal, QualifiedName};
use crate::plan::Action;

/// The part of `pg_get_indexdef` after `... ON <table> USING `: access method, key list,
/// INCLUDE, WITH and WHERE clauses. `None` when the definition does not have the expected shape.
pub fn index_tail<'a>(i: &'a Index, printed_table: &str) -> Option<&'a str> {
    let prefix = format!(
        "CREATE {}INDEX {} ON {} USING ",
        if i.unique { "UNIQUE " } else { "" },
        i.printed_name,
        printed_table
    );
    i.definition.strip_prefix(&prefix)
}

/// Adds the key to the first parenthesized column list of `def` (an index tail such as
/// `btree (id) INCLUDE (x)` or a constraint such as `PRIMARY KEY (id)`) unless it is there.
/// `None` when the list holds an expression or cannot be found.
pub fn extend_key_list(def: &str, printed_key: &str) -> Option<String> {
    let open = def.find('(')?;
    let close = matching_paren(def, open)?;
    let items = split_top_level(&def[open + 1..close]);
    let mut has_key = false;
    for item in &items {
        let item = item.trim();
        if item.starts_with('(') || first_token(item).contains('(') {
            return None;
        }
        if first_token(item) == printed_key {
            has_key = true;
        }
    }
    if has_key {
        return Some(def.to_string());
    }
    Some(format!("{}, {printed_key}{}", &def[..close], &def[close..]))
}

/// First identifier of an index item (`"createdAt" DESC` → `"createdAt"`).
fn first_token(item: &str) -> &str {
    if let Some(rest) = item.strip_prefix('"') {
        let mut i = 0;
        let bytes = rest.as_bytes();
        while i < bytes.len() {
            if bytes[i] == b'"' {
                if bytes.get(i + 1) == Some(&b'"') {
                    i += 2;
                    continue;
                }
                return &item[..i + 2];
            }
            i += 1;
        }
        item
    } else {
        item.split_whitespace().next().unwrap_or("")
    }
}

/// Index of the `)` closing the `(` at `open`, skipping quoted identifiers and string literals.
fn matching_paren(s: &str, open: usize) -> Option<usize> {
    let mut depth = 0;
    let mut quote: Option<u8> = None;
    for (i, &c) in s.as_bytes().iter().enumerate().skip(open) {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'') => quote = Some(c),
            (None, b'(') => depth += 1,
            (None, b')') => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

fn split_top_level(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start, mut quote) = (0, 0, None::<u8>);
    for (i, &c) in s.as_bytes().iter().enumerate() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'') => quote = Some(c),
            (None, b'(') => depth += 1,
            (None, b')') => depth -= 1,
            (None, b',') if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// A user trigger's definition aimed at `new_table`: the one ` ON <table> ` is replaced.
/// `None` when the table name does not occur exactly once.
pub fn retarget_trigger(def: &str, printed_table: &str, new_table: &str) -> Option<String> {
    let needle = format!(" ON {printed_table} ");
    if def.matches(&needle).count() != 1 {
        return None;
    }
    Some(def.replacen(&needle, &format!(" ON {new_table} "), 1))
}

/// Which parts of the build a mode wants now: offline builds keys and indexes after loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    WithTable,
    Later,
}

/// Statements creating the parent with everything but its partitions.
pub fn parent_statements(inv: &Inventory, b: &Blueprint, keys: Keys) -> Vec<String> {
    let new = b.partitioned.quoted();
    let mut s = vec![format!(
        "CREATE TABLE {new} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED \
         INCLUDING IDENTITY INCLUDING STORAGE INCLUDING COMMENTS INCLUDING STATISTICS) \
         PARTITION BY RANGE ({}){}",
        b.original.quoted(),
        b.key_quoted(),
        inv.tablespace
            .as_ref()
            .map(|t| format!(" TABLESPACE {}", quote_ident(t)))
            .unwrap_or_default()
    )];
    if inv.owner != inv.current_user {
        s.push(format!(
            "ALTER TABLE {new} OWNER TO {}",
            quote_ident(&inv.owner)
        ));
    }
    s.extend(grant_statements(inv, &b.partitioned));
    if let Some(c) = &inv.comment {
        s.push(format!("COMMENT ON TABLE {new} IS {}", quote_literal(c)));
    }
    match inv.replica_identity.as_str() {
        "f" => s.push(format!("ALTER TABLE {new} REPLICA IDENTITY FULL")),
        "n" => s.push(format!("ALTER TABLE {new} REPLICA IDENTITY NOTHING")),
        _ => {}
    }
    for c in inv.constraints.iter().filter(|c| c.kind == "f") {
        s.push(format!(
            "ALTER TABLE {new} ADD CONSTRAINT {} {}",
            quote_ident(&c.name),
            c.definition
        ));
    }
    if keys == Keys::WithTable {
        s.extend(key_statements(inv, b));
    }
    for t in &b.user_triggers {
        s.push(t.create_on_new.clone());
        s.push(t.disable_sql(&b.partitioned));
    }
    s
}

/// Primary key, unique constraints (extended with the partition key) and indexes.
pub fn key_statements(inv: &Inventory, b: &Blueprint) -> Vec<String> {
    let new = b.partitioned.quoted();
    let building = |name: &str| {
        b.indexes
            .iter()
            .find(|i| i.original == name)
            .map(|i| i.building.clone())
            .unwrap_or_else(|| name.to_string())
    };
    let mut s = Vec::new();
    for c in inv
        .constraints
        .iter()
        .filter(|c| c.kind == "p" || c.kind == "u")
    {
        if let Some(def) = extend_key_list(&c.definition, &inv.printed_key) {
            s.push(format!(
                "ALTER TABLE {new} ADD CONSTRAINT {} {def}",
                quote_ident(&building(&c.name))
            ));
        }
    }
    for i in inv.indexes.iter().filter(|i| !i.constraint) {
        let Some(tail) = index_tail(i, &inv.printed_name) else {
            continue;
        };
        let tail = if i.unique {
            match extend_key_list(tail, &inv.printed_key) {
                Some(t) => t,
                None => continue,
            }
        } else {
            tail.to_string()
        };
        s.push(format!(
            "CREATE {}INDEX {} ON {new} USING {tail}",
            if i.unique { "UNIQUE " } else { "" },
            quote_ident(&building(&i.name))
        ));
    }
    s
}

/// Table and column grants of the original, applied to `to` (GRANT is idempotent).
pub fn grant_statements(inv: &Inventory, to: &QualifiedName) -> Vec<String> {
    let who = |g: &Option<String>| {
        g.as_deref()
            .map(quote_ident)
            .unwrap_or_else(|| "PUBLIC".into())
    };
    let mut s: Vec<String> = inv
        .grants
        .iter()
        .filter(|g| crate::ddl::is_privilege(&g.privilege))
        .map(|g| {
            format!(
                "GRANT {} ON {} TO {}{}",
                g.privilege,
                to.quoted(),
                who(&g.grantee),
                if g.grantable {
                    " WITH GRANT OPTION"
                } else {
                    ""
                }
            )
        })
        .collect();
    s.extend(
        inv.column_grants
            .iter()
            .filter(|g| crate::ddl::is_privilege(&g.grant.privilege))
            .map(|g| {
                format!(
                    "GRANT {} ({}) ON {} TO {}{}",
                    g.grant.privilege,
                    quote_ident(&g.column),
                    to.quoted(),
                    who(&g.grant.grantee),
                    if g.grant.grantable {
                        " WITH GRANT OPTION"
                    } else {
                        ""
                    }
                )
            }),
    );
    s
}

/// The new table as maintenance sees it (for the DDL renderer).
pub fn managed(b: &Blueprint, key_type: KeyType, owner: &str, default: bool) -> ManagedTable {
    ManagedTable {
        name: b.partitioned.clone(),
        column: b.key.clone(),
        key_type,
        owner: owner.to_string(),
        partitions: Vec::new(),
        default: default.then(|| crate::catalog::Partition {
            name: b.default_partition.clone(),
            from: crate::bounds::BoundValue::MinValue,
            to: crate::bounds::BoundValue::MaxValue,
            rows_estimate: 0.0,
            size_bytes: None,
            detach_pending: false,
            bound_sql: "DEFAULT".into(),
        }),
    }
}

/// What each partition inherits: owner, grants, storage options and replica identity of the
/// original.
pub fn template(inv: &Inventory, b: &Blueprint) -> Template {
    Template {
        owner: inv.owner.clone(),
        current_user: inv.current_user.clone(),
        grants: inv
            .grants
            .iter()
            .map(|g| (g.grantee.clone(), g.privilege.clone(), g.grantable))
            .collect(),
        replica_identity: inv.replica_identity.clone(),
        reloptions: inv
            .reloptions
            .iter()
            .cloned()
            .chain(
                b.pause_autovacuum
                    .then(|| "autovacuum_enabled=false".to_string()),
            )
            .collect(),
        tablespace: inv.tablespace.clone(),
        publications: Vec::new(),
        columns: b.columns.clone(),
        template: None,
    }
}

/// Statements creating `partitions` and the default partition, rendered as maintenance renders
/// them (before the default exists, so nothing needs moving).
pub fn partition_statements(
    inv: &Inventory,
    b: &Blueprint,
    key_type: KeyType,
    partitions: &[PlannedPartition],
) -> Result<Vec<String>, String> {
    let table = managed(b, key_type, &inv.owner, false);
    let tpl = template(inv, b);
    let mut s = Vec::new();
    let actions = partitions
        .iter()
        .map(|p| Action::Create {
            partition: p.name.clone(),
            from: p.from,
            to: p.to,
        })
        .chain(std::iter::once(Action::CreateDefault {
            partition: b.default_partition.clone(),
        }));
    for action in actions {
        for step in ddl::render(&action, &table, &tpl).map_err(|e| e.to_string())? {
            s.extend(step.statements);
        }
    }
    Ok(s)
}

/// Runs `statements` in order on `conn` (inside the caller's transaction), each answered within
/// `deadline` ([`crate::pg::reply_deadline`]).
pub async fn run(
    conn: &mut PgConnection,
    statements: &[String],
    deadline: std::time::Duration,
) -> Result<(), sqlx::Error> {
    for st in statements {
        tracing::debug!(sql = %st, "build");
        crate::pg::answered(deadline, sqlx::raw_sql(st).execute(&mut *conn)).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_joins_primary_keys_and_unique_lists() {
        assert_eq!(
            extend_key_list("PRIMARY KEY (id)", "date").as_deref(),
            Some("PRIMARY KEY (id, date)")
        );
        assert_eq!(
            extend_key_list("UNIQUE (\"propertyId\", date) INCLUDE (price)", "date").as_deref(),
            Some("UNIQUE (\"propertyId\", date) INCLUDE (price)")
        );
        assert_eq!(
            extend_key_list("btree (\"a,b\" DESC) WHERE (x > 0)", "\"createdAt\"").as_deref(),
            Some("btree (\"a,b\" DESC, \"createdAt\") WHERE (x > 0)")
        );
        assert_eq!(extend_key_list("btree (lower(name))", "date"), None);
        assert_eq!(extend_key_list("btree ((a + b))", "date"), None);
    }

    #[test]
    fn index_definitions_are_read_only_in_the_expected_shape() {
        let i = Index {
            name: "Idx".into(),
            definition:
                "CREATE INDEX \"Idx\" ON public.pricing_data USING btree (\"propertyId\", date)"
                    .into(),
            printed_name: "\"Idx\"".into(),
            unique: false,
            primary: false,
            constraint: false,
            valid: true,
            bytes: 0,
        };
        assert_eq!(
            index_tail(&i, "public.pricing_data"),
            Some("btree (\"propertyId\", date)")
        );
        assert_eq!(index_tail(&i, "public.other"), None);
    }

    #[test]
    fn triggers_are_retargeted_only_when_the_table_appears_once() {
        let def = "CREATE TRIGGER audit AFTER UPDATE ON public.pricing_data FOR EACH ROW EXECUTE FUNCTION audit()";
        assert_eq!(
            retarget_trigger(def, "public.pricing_data", "\"public\".\"new\"").as_deref(),
            Some("CREATE TRIGGER audit AFTER UPDATE ON \"public\".\"new\" FOR EACH ROW EXECUTE FUNCTION audit()")
        );
        assert_eq!(retarget_trigger(def, "public.other", "x"), None);
    }
}

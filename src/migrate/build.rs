//! Builds the new partitioned table beside the original: the parent (`CREATE TABLE ... (LIKE
//! original) PARTITION BY RANGE`), its keys extended with the partition key, indexes, outbound
//! foreign keys, user triggers (disabled until the swap), then one partition per period made by
//! the same renderer as maintenance (`CREATE TABLE (LIKE)` + `ATTACH`), and a default partition.
//! The statement renderers are pure; [`run`] executes them in the caller's transaction.

use sqlx::PgConnection;

use super::definition::{extend_key_list, index_tail};
use super::inventory::Inventory;
use super::plan::PlannedPartition;
use super::Blueprint;
use crate::bounds::KeyType;
use crate::catalog::ManagedTable;
use crate::ddl::{self, Template};
use crate::ident::{quote_ident, quote_literal, QualifiedName};
use crate::plan::Action;

/// Which parts of the build a mode wants now. Online: the primary key and unique keys with the
/// table (the copy's `ON CONFLICT` needs them), the other indexes only on the parent (`ON ONLY`,
/// invalid) and built per partition after the copy ([`super::indexes`]); offline: every key and
/// index after loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    UniqueWithTable,
    Later,
}

/// Which indexes [`key_statements`] renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    All,
    /// Constraints and unique indexes only.
    Unique,
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
    if keys == Keys::UniqueWithTable {
        s.extend(key_statements(inv, b, Which::Unique));
    }
    for t in &b.user_triggers {
        s.push(t.create_on_new.clone());
        s.push(t.disable_sql(&b.partitioned));
    }
    s
}

/// The new table's name for the original's index `name`.
fn building(b: &Blueprint, name: &str) -> String {
    b.indexes
        .iter()
        .find(|i| i.original == name)
        .map(|i| i.building.clone())
        .unwrap_or_else(|| name.to_string())
}

/// Primary key, unique constraints (extended with the partition key) and indexes.
pub fn key_statements(inv: &Inventory, b: &Blueprint, which: Which) -> Vec<String> {
    let new = b.partitioned.quoted();
    let building = |name: &str| building(b, name);
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
    for i in inv
        .indexes
        .iter()
        .filter(|i| !i.constraint && (i.unique || which == Which::All))
    {
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

/// The original's non-unique indexes on the new parent only (`CREATE INDEX ... ON ONLY`): invalid
/// until every partition has its own attached ([`super::indexes`]). Rendered after the
/// partitions, so that attaching them does not build the indexes empty and keep them up during
/// the copy; partitions attached later (rows outside the range, maintenance) get them built.
pub fn parent_only_indexes(inv: &Inventory, b: &Blueprint) -> Vec<String> {
    inv.indexes
        .iter()
        .filter(|i| !i.constraint && !i.unique)
        .filter_map(|i| {
            let tail = index_tail(i, &inv.printed_name)?;
            Some(format!(
                "CREATE INDEX {} ON ONLY {} USING {tail}",
                quote_ident(&building(b, &i.name)),
                b.partitioned.quoted()
            ))
        })
        .collect()
}

/// The table of keys the forward trigger records as gone during the copy ([`Blueprint::gone`]):
/// the original's primary-key columns, no rows.
pub fn gone_table(b: &Blueprint) -> Option<String> {
    let gone = b.gone.as_ref()?;
    Some(format!(
        "CREATE TABLE {} AS SELECT {} FROM {} WITH NO DATA",
        gone.quoted(),
        Blueprint::list(&b.pk),
        b.original.quoted()
    ))
}

/// `DROP TABLE IF EXISTS` of the gone-keys table, when the migration has one.
pub fn drop_gone_table(b: &Blueprint) -> Option<String> {
    b.gone
        .as_ref()
        .map(|g| format!("DROP TABLE IF EXISTS {}", g.quoted()))
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
        values: None,
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
) -> Result<Vec<String>, crate::bounds::BoundsError> {
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
        for step in ddl::render(&action, &table, &tpl)? {
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

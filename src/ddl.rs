//! Renders an action into the exact SQL the executor runs (and `--dry-run` prints). Pure: what it
//! needs from the database arrives as a [`Template`] read beforehand.
//!
//! A new partition is built beside the table (`CREATE TABLE ... (LIKE parent)`) and then attached:
//! `ATTACH PARTITION` takes only SHARE UPDATE EXCLUSIVE on the parent, so application reads and
//! writes go on, where `CREATE TABLE ... PARTITION OF` would take ACCESS EXCLUSIVE.

use chrono::{DateTime, Utc};

use crate::bounds::{render_literal, render_range, BoundsError, KeyType};
use crate::catalog::ManagedTable;
use crate::ident::{quote_ident, QualifiedName};
use crate::plan::Action;

/// Name of the temporary constraint that lets ATTACH skip re-scanning moved rows.
pub const BOUND_CHECK: &str = "partkeeper_bound_check";

/// What a new partition inherits from its parent, read from the catalog before any DDL.
#[derive(Debug, Clone, Default)]
pub struct Template {
    /// Owner of the parent; the new partition gets it when we are not that role.
    pub owner: String,
    pub current_user: String,
    /// (grantee or None for PUBLIC, privilege, grantable) from the parent's ACL.
    pub grants: Vec<(Option<String>, String, bool)>,
    /// `relreplident` of the parent: 'd' default, 'f' full, 'n' nothing, 'i' index.
    pub replica_identity: String,
    /// Storage options of the newest partition (a partitioned parent cannot carry most of them).
    pub reloptions: Vec<String>,
    pub tablespace: Option<String>,
    /// Publications that list the newest partition explicitly (not through its parent).
    pub publications: Vec<String>,
    /// Columns that can be written (no generated columns), in the parent's order.
    pub columns: Vec<String>,
    /// `tables[].template`: indexes every new partition gets before it is attached.
    pub template: Option<crate::template::TemplateSpec>,
}

pub use crate::step::Step;

pub fn render(
    action: &Action,
    table: &ManagedTable,
    tpl: &Template,
) -> Result<Vec<Step>, BoundsError> {
    let parent = table.name.quoted();
    Ok(match action {
        Action::Create {
            partition,
            from,
            to,
        } => {
            vec![Step::tx(create_statements(
                table, tpl, partition, *from, *to,
            )?)]
        }
        Action::CreateDefault { partition } => {
            let mut s = new_table(table, tpl, partition);
            s.push(format!(
                "ALTER TABLE {parent} ATTACH PARTITION {} DEFAULT",
                partition.quoted()
            ));
            s.extend(publications(tpl, partition));
            vec![Step::tx(s)]
        }
        Action::Drop {
            partition,
            concurrently: true,
        } => vec![
            Step::bare(format!(
                "ALTER TABLE {parent} DETACH PARTITION {} CONCURRENTLY",
                partition.quoted()
            )),
            Step::tx(vec![format!("DROP TABLE {}", partition.quoted())]),
        ],
        Action::Drop {
            partition,
            concurrently: false,
        } => vec![Step::tx(vec![
            format!(
                "ALTER TABLE {parent} DETACH PARTITION {}",
                partition.quoted()
            ),
            format!("DROP TABLE {}", partition.quoted()),
        ])],
        Action::Detach {
            partition,
            concurrently,
        } => {
            let sql = format!(
                "ALTER TABLE {parent} DETACH PARTITION {}{}",
                partition.quoted(),
                if *concurrently { " CONCURRENTLY" } else { "" }
            );
            vec![if *concurrently {
                Step::bare(sql)
            } else {
                Step::tx(vec![sql])
            }]
        }
        Action::Archive {
            partition,
            schema,
            concurrently,
            pending,
        } => crate::archive::steps(
            &table.name,
            &table.owner,
            partition,
            schema,
            *concurrently,
            *pending,
        ),
        Action::AddIndex {
            partition,
            index,
            create,
            drop_invalid,
            ..
        } => {
            let mut steps = Vec::new();
            if *drop_invalid {
                steps.push(Step::bare(format!(
                    "DROP INDEX CONCURRENTLY IF EXISTS {}",
                    partition.sibling(index.clone()).quoted()
                )));
            }
            steps.push(Step::bare(create.clone()));
            steps
        }
        Action::FinalizeDetach {
            partition,
            then_drop,
        } => {
            let mut steps = vec![Step::bare(format!(
                "ALTER TABLE {parent} DETACH PARTITION {} FINALIZE",
                partition.quoted()
            ))];
            if *then_drop {
                steps.push(Step::tx(vec![format!("DROP TABLE {}", partition.quoted())]));
            }
            steps
        }
    })
}

fn create_statements(
    table: &ManagedTable,
    tpl: &Template,
    partition: &QualifiedName,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<String>, BoundsError> {
    let parent = table.name.quoted();
    let key = quote_ident(&table.column);
    let (lo, hi) = (
        render_literal(from, table.key_type)?,
        render_literal(to, table.key_type)?,
    );
    let mut s = new_table(table, tpl, partition);
    if let Some(default) = &table.default {
        // Rows of this range that already sit in the default partition move to the new one in
        // the same transaction: nothing is lost and ATTACH then finds none left behind. The
        // default's lock is taken only now, after the new table exists, to hold it briefly.
        let cols = tpl
            .columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        // Writers first: an INSERT already routed to the default partition when the new
        // partition is attached fails its partition check ("violates partition constraint").
        // SHARE ROW EXCLUSIVE on the parent waits for in-flight writes (under lock_timeout) and
        // holds new ones back, reads going on, until the attach commits; they then route anew.
        s.push(format!("LOCK TABLE {parent} IN SHARE ROW EXCLUSIVE MODE"));
        s.push(format!(
            "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
            default.name.quoted()
        ));
        s.push(format!(
            "WITH moved AS (DELETE FROM {} WHERE {key} >= {lo} AND {key} < {hi} RETURNING {cols}) \
             INSERT INTO {} ({cols}) SELECT {cols} FROM moved",
            default.name.quoted(),
            partition.quoted()
        ));
        s.push(format!(
            "ALTER TABLE {} ADD CONSTRAINT {} CHECK ({key} IS NOT NULL AND {key} >= {lo} AND {key} < {hi})",
            partition.quoted(),
            quote_ident(BOUND_CHECK)
        ));
    }
    s.push(format!(
        "ALTER TABLE {parent} ATTACH PARTITION {} FOR VALUES {}",
        partition.quoted(),
        render_range(from, to, table.key_type)?.trim_start_matches("FOR VALUES ")
    ));
    if table.default.is_some() {
        s.push(format!(
            "ALTER TABLE {} DROP CONSTRAINT {}",
            partition.quoted(),
            quote_ident(BOUND_CHECK)
        ));
    }
    s.extend(publications(tpl, partition));
    Ok(s)
}

/// `CREATE TABLE (LIKE parent)` plus what LIKE does not carry: owner, grants, replica identity.
pub fn new_table(table: &ManagedTable, tpl: &Template, partition: &QualifiedName) -> Vec<String> {
    let mut s = Vec::new();
    let with = safe_reloptions(&tpl.reloptions);
    s.push(format!(
        "CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE \
         INCLUDING COMMENTS INCLUDING GENERATED INCLUDING STATISTICS){}{}",
        partition.quoted(),
        table.name.quoted(),
        if with.is_empty() {
            String::new()
        } else {
            format!(" WITH ({})", with.join(", "))
        },
        tpl.tablespace
            .as_ref()
            .map(|t| format!(" TABLESPACE {}", quote_ident(t)))
            .unwrap_or_default()
    ));
    if !tpl.owner.is_empty() && tpl.owner != tpl.current_user {
        s.push(format!(
            "ALTER TABLE {} OWNER TO {}",
            partition.quoted(),
            quote_ident(&tpl.owner)
        ));
    }
    for (grantee, privilege, grantable) in &tpl.grants {
        if grantee.as_deref() == Some(tpl.owner.as_str()) {
            continue; // the owner's own rights come with ownership
        }
        if !is_privilege(privilege) {
            continue;
        }
        s.push(format!(
            "GRANT {privilege} ON {} TO {}{}",
            partition.quoted(),
            grantee
                .as_deref()
                .map(quote_ident)
                .unwrap_or_else(|| "PUBLIC".into()),
            if *grantable { " WITH GRANT OPTION" } else { "" }
        ));
    }
    if let Some(t) = &tpl.template {
        s.extend(t.statements(partition));
    }
    match tpl.replica_identity.as_str() {
        "f" => s.push(format!(
            "ALTER TABLE {} REPLICA IDENTITY FULL",
            partition.quoted()
        )),
        "n" => s.push(format!(
            "ALTER TABLE {} REPLICA IDENTITY NOTHING",
            partition.quoted()
        )),
        _ => {}
    }
    s
}

pub fn publications(tpl: &Template, partition: &QualifiedName) -> Vec<String> {
    tpl.publications
        .iter()
        .map(|p| {
            format!(
                "ALTER PUBLICATION {} ADD TABLE {}",
                quote_ident(p),
                partition.quoted()
            )
        })
        .collect()
}

/// Privilege keywords from `aclexplode` — a fixed set, checked so nothing else is spliced.
pub fn is_privilege(p: &str) -> bool {
    matches!(
        p,
        "SELECT"
            | "INSERT"
            | "UPDATE"
            | "DELETE"
            | "TRUNCATE"
            | "REFERENCES"
            | "TRIGGER"
            | "MAINTAIN"
    )
}

/// `key=value` storage options from `pg_class.reloptions`; anything not of that plain shape is
/// left out rather than spliced.
fn safe_reloptions(opts: &[String]) -> Vec<String> {
    opts.iter()
        .filter(|o| {
            o.split_once('=').is_some_and(|(k, v)| {
                !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.')
                    && !v.is_empty()
                    && v.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
            })
        })
        .cloned()
        .collect()
}

/// A readable one-line description of a range for output.
pub fn describe_range(from: DateTime<Utc>, to: DateTime<Utc>, key: KeyType) -> String {
    let show = |v| render_literal(v, key).unwrap_or_else(|_| v.to_rfc3339());
    format!("[{}, {})", show(from), show(to))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bounds::BoundValue;
    use crate::catalog::Partition;
    use chrono::TimeZone;

    fn table(default: bool) -> ManagedTable {
        ManagedTable {
            name: QualifiedName::new("public", "Pricing Data"),
            column: "createdAt".into(),
            key_type: KeyType::Date,
            owner: "app".into(),
            partitions: vec![],
            default: default.then(|| Partition {
                name: QualifiedName::new("public", "Pricing Data_default"),
                from: BoundValue::MinValue,
                to: BoundValue::MaxValue,
                rows_estimate: 0.0,
                size_bytes: None,
                detach_pending: false,
                bound_sql: "DEFAULT".into(),
            }),
            values: None,
        }
    }

    fn create() -> Action {
        Action::Create {
            partition: QualifiedName::new("public", "Pricing Data_2026_11"),
            from: Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap(),
            to: Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap(),
        }
    }

    #[test]
    fn create_is_create_table_then_attach_in_one_transaction() {
        let steps = render(&create(), &table(false), &Template::default()).unwrap();
        assert_eq!(steps.len(), 1);
        assert!(steps[0].transactional);
        let s = &steps[0].statements;
        assert!(s[0].starts_with(
            "CREATE TABLE \"public\".\"Pricing Data_2026_11\" (LIKE \"public\".\"Pricing Data\""
        ));
        assert_eq!(
            s.last().unwrap(),
            "ALTER TABLE \"public\".\"Pricing Data\" ATTACH PARTITION \"public\".\"Pricing Data_2026_11\" FOR VALUES FROM ('2026-11-01') TO ('2026-12-01')"
        );
        assert!(!s.iter().any(|x| x.contains("PARTITION OF")));
    }

    #[test]
    fn with_a_default_partition_rows_are_moved_before_attaching() {
        let tpl = Template {
            columns: vec!["id".into(), "createdAt".into()],
            ..Template::default()
        };
        let s = &render(&create(), &table(true), &tpl).unwrap()[0].statements;
        let pos = |needle: &str| s.iter().position(|x| x.contains(needle)).unwrap();
        assert!(pos("SHARE ROW EXCLUSIVE") < pos("ACCESS EXCLUSIVE"));
        assert!(pos("ACCESS EXCLUSIVE") < pos("DELETE FROM"));
        assert!(pos("DELETE FROM") < pos("ATTACH PARTITION"));
        assert!(s[pos("DELETE FROM")]
            .contains("\"createdAt\" >= '2026-11-01' AND \"createdAt\" < '2026-12-01'"));
    }

    #[test]
    fn owner_grants_and_replica_identity_follow_the_parent() {
        let tpl = Template {
            owner: "app".into(),
            current_user: "partkeeper".into(),
            grants: vec![
                (Some("reader".into()), "SELECT".into(), false),
                (None, "SELECT".into(), false),
                (Some("x".into()), "DROP TABLE y; --".into(), false),
            ],
            replica_identity: "f".into(),
            ..Template::default()
        };
        let s = render(&create(), &table(false), &tpl).unwrap()[0]
            .statements
            .join("\n");
        assert!(s.contains("OWNER TO \"app\""), "{s}");
        assert!(
            s.contains("GRANT SELECT ON \"public\".\"Pricing Data_2026_11\" TO \"reader\""),
            "{s}"
        );
        assert!(s.contains("TO PUBLIC"), "{s}");
        assert!(!s.contains("DROP TABLE y"), "{s}");
        assert!(s.contains("REPLICA IDENTITY FULL"), "{s}");
    }

    #[test]
    fn drop_detaches_first_and_concurrent_detach_runs_outside_a_transaction() {
        let p = QualifiedName::new("public", "old");
        let steps = render(
            &Action::Drop {
                partition: p.clone(),
                concurrently: true,
            },
            &table(false),
            &Template::default(),
        )
        .unwrap();
        assert!(!steps[0].transactional);
        assert!(steps[0].statements[0].ends_with("CONCURRENTLY"));
        assert_eq!(steps[1].statements, vec!["DROP TABLE \"public\".\"old\""]);
        let steps = render(
            &Action::Drop {
                partition: p,
                concurrently: false,
            },
            &table(false),
            &Template::default(),
        )
        .unwrap();
        assert_eq!(steps.len(), 1);
        assert!(steps[0].statements[0].contains("DETACH PARTITION"));
    }

    #[test]
    fn odd_reloptions_are_not_spliced() {
        let tpl = Template {
            reloptions: vec!["fillfactor=90".into(), "x=1); DROP TABLE t; --".into()],
            ..Template::default()
        };
        let s = &render(&create(), &table(false), &tpl).unwrap()[0].statements[0];
        assert!(s.contains("WITH (fillfactor=90)"), "{s}");
        assert!(!s.contains("DROP"), "{s}");
    }
}

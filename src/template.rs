//! `tables[].template`: pg_partman's template table. Its indexes — above all UNIQUE and PRIMARY
//! KEY indexes that do not contain the partition key, which PostgreSQL cannot have on the parent —
//! and its storage options are given to every new partition inside the transaction that creates
//! it, before ATTACH, so no partition ever exists without them. Partitions made before the
//! template (or by hand) are repaired by `maintain` with `CREATE INDEX CONCURRENTLY`.
//!
//! Definitions come from `pg_get_indexdef` of the template and are re-targeted: the index gets a
//! name derived from the partition's (within 63 bytes) and is built `ON` the partition; the part
//! after `USING` (method, columns, opclasses, INCLUDE, WHERE, WITH) is kept as PostgreSQL printed it.

use serde::Serialize;
use sqlx::PgConnection;

use crate::catalog::ManagedTable;
use crate::ident::{derived_name, quote_ident, QualifiedName, MAX_IDENT_BYTES};
use crate::plan::Action;

/// Longest part of a template index's name kept in the partition's index name, so that the
/// partition's name (which makes it unique) is never cut away.
const MAX_SUFFIX_BYTES: usize = 30;

/// One index of the template table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TemplateIndex {
    /// The template's index name.
    pub name: String,
    pub unique: bool,
    pub primary: bool,
    /// Everything after `USING ` in `pg_get_indexdef`: `btree (id)`, `... WHERE ...`.
    pub using: String,
}

/// What the template gives to new partitions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TemplateSpec {
    pub template: QualifiedName,
    pub indexes: Vec<TemplateIndex>,
    /// `key=value` storage options of the template (`fillfactor`, `autovacuum_*`...).
    pub reloptions: Vec<String>,
    /// The parent already has a primary key (then a template's one becomes a UNIQUE index).
    pub parent_has_primary_key: bool,
}

impl TemplateIndex {
    /// The index's name on `partition`.
    pub fn name_on(&self, template: &QualifiedName, partition: &QualifiedName) -> String {
        let stripped = self
            .name
            .strip_prefix(&format!("{}_", template.name))
            .filter(|s| !s.is_empty())
            .unwrap_or(&self.name);
        let mut cut = stripped.len().min(MAX_SUFFIX_BYTES);
        while !stripped.is_char_boundary(cut) {
            cut -= 1;
        }
        let name = derived_name(&partition.name, &stripped[..cut]);
        debug_assert!(name.len() <= MAX_IDENT_BYTES);
        name
    }

    /// `CREATE [UNIQUE] INDEX [CONCURRENTLY [IF NOT EXISTS]] name ON partition USING ...`.
    pub fn create_sql(
        &self,
        template: &QualifiedName,
        partition: &QualifiedName,
        concurrently: bool,
    ) -> String {
        self.create_named(&self.name_on(template, partition), partition, concurrently)
    }

    fn create_named(&self, name: &str, partition: &QualifiedName, concurrently: bool) -> String {
        format!(
            "CREATE {}INDEX {}{} ON {} USING {}",
            if self.unique { "UNIQUE " } else { "" },
            if concurrently {
                "CONCURRENTLY IF NOT EXISTS "
            } else {
                ""
            },
            quote_ident(name),
            partition.quoted(),
            self.using
        )
    }

    /// Turns the index into the partition's primary key (template PRIMARY KEY, parent without).
    pub fn primary_key_sql(&self, template: &QualifiedName, partition: &QualifiedName) -> String {
        let name = quote_ident(&self.name_on(template, partition));
        format!(
            "ALTER TABLE {} ADD CONSTRAINT {name} PRIMARY KEY USING INDEX {name}",
            partition.quoted()
        )
    }
}

impl TemplateSpec {
    /// Statements that give a new (not yet attached) partition the template's indexes.
    pub fn statements(&self, partition: &QualifiedName) -> Vec<String> {
        let mut s = Vec::new();
        for i in &self.indexes {
            s.push(i.create_sql(&self.template, partition, false));
            if i.primary && !self.parent_has_primary_key {
                s.push(i.primary_key_sql(&self.template, partition));
            }
        }
        s
    }

    /// Template indexes missing (or invalid) on each partition of `table`, as repair actions.
    /// `existing[i]` are the `(name, valid, key)` of the indexes on `partitions[i]` (see
    /// [`partition_indexes`]).
    pub fn repairs(
        &self,
        partitions: &[QualifiedName],
        existing: &[Vec<(String, bool, String)>],
    ) -> Vec<Action> {
        let mut out = Vec::new();
        for (p, have) in partitions.iter().zip(existing) {
            for i in &self.indexes {
                let has = have
                    .iter()
                    .any(|(_, valid, using)| *valid && *using == i.key());
                if has {
                    continue;
                }
                let mut name = i.name_on(&self.template, p);
                // The name held by another (valid) index, e.g. one the parent gave the
                // partition: IF NOT EXISTS would then skip the build every pass.
                if have.iter().any(|(n, valid, _)| n == &name && *valid) {
                    name = derived_name(&name, "tpl");
                }
                let invalid = have.iter().any(|(n, valid, _)| n == &name && !valid);
                out.push(Action::AddIndex {
                    partition: p.clone(),
                    create: i.create_named(&name, p, true),
                    index: name,
                    template_index: i.name.clone(),
                    drop_invalid: invalid,
                });
            }
        }
        out
    }
}

impl TemplateIndex {
    /// What makes two indexes the same: uniqueness and the `USING` part (a non-unique index on
    /// the same columns does not enforce what a UNIQUE one does).
    fn key(&self) -> String {
        index_key(self.unique, &self.using)
    }
}

fn index_key(unique: bool, using: &str) -> String {
    format!("{}{using}", if unique { "UNIQUE " } else { "" })
}

/// Splits `CREATE [UNIQUE] INDEX name ON [ONLY] schema.table USING rest` into `rest`.
pub fn using_part(indexdef: &str) -> Option<&str> {
    let rest = indexdef.strip_prefix("CREATE ")?;
    let rest = rest.strip_prefix("UNIQUE ").unwrap_or(rest);
    let rest = rest.strip_prefix("INDEX ")?;
    let rest = skip_ident(rest)?;
    let rest = rest.strip_prefix(" ON ")?;
    let rest = rest.strip_prefix("ONLY ").unwrap_or(rest);
    let mut rest = skip_ident(rest)?;
    if let Some(r) = rest.strip_prefix('.') {
        rest = skip_ident(r)?;
    }
    rest.strip_prefix(" USING ")
}

/// Skips one identifier as `quote_ident` prints it (plain, or double-quoted with `""` inside).
fn skip_ident(s: &str) -> Option<&str> {
    if let Some(q) = s.strip_prefix('"') {
        let bytes = q.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'"' {
                if bytes.get(i + 1) == Some(&b'"') {
                    i += 2;
                    continue;
                }
                return Some(&q[i + 1..]);
            }
            i += 1;
        }
        None
    } else {
        let end = s.find([' ', '.']).unwrap_or(s.len());
        (end > 0).then(|| &s[end..])
    }
}

/// Reads the template of `table`; the error says what is wrong with it (for exit 2).
pub async fn read(
    conn: &mut PgConnection,
    template: &QualifiedName,
    table: &ManagedTable,
) -> Result<Result<TemplateSpec, String>, sqlx::Error> {
    let found: Option<(String, Vec<String>, bool)> = sqlx::query_as(
        r#"
        SELECT c.relkind::text, COALESCE(c.reloptions, '{}')::text[],
               EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = to_regclass($2) AND k.contype = 'p')
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relname = $3
        "#,
    )
    .bind(&template.schema)
    .bind(table.name.quoted())
    .bind(&template.name)
    .persistent(false)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((relkind, reloptions, parent_has_primary_key)) = found else {
        return Ok(Err(format!(
            "tables[].template {} of {} does not exist; create it (e.g. CREATE TABLE {} (LIKE {})) with the indexes every partition should get, or remove the key",
            template, table.name, template.as_written(), table.name.as_written()
        )));
    };
    if relkind != "r" {
        return Ok(Err(format!(
            "tables[].template {template} of {} is not a plain table (relkind {relkind}); the template must be an ordinary table",
            table.name
        )));
    }
    // Every template column must exist in the table with the same type: its indexes name them.
    let incompatible: Vec<String> = sqlx::query_scalar(
        r#"
        SELECT format('%s %s', t.attname, format_type(t.atttypid, t.atttypmod))
               || COALESCE(' (the table has ' || format_type(p.atttypid, p.atttypmod) || ')', ' (the table has no such column)')
          FROM pg_attribute t
          LEFT JOIN pg_attribute p ON p.attrelid = to_regclass($2) AND p.attname = t.attname
                                  AND p.attnum > 0 AND NOT p.attisdropped
         WHERE t.attrelid = to_regclass($1) AND t.attnum > 0 AND NOT t.attisdropped
           AND (p.attname IS NULL OR p.atttypid <> t.atttypid OR p.atttypmod <> t.atttypmod)
         ORDER BY t.attnum
        "#,
    )
    .bind(template.quoted())
    .bind(table.name.quoted())
    .persistent(false)
    .fetch_all(&mut *conn)
    .await?;
    if !incompatible.is_empty() {
        return Ok(Err(format!(
            "tables[].template {template} does not match {}: column(s) {}; give the template the table's columns (CREATE TABLE {} (LIKE {}))",
            table.name,
            incompatible.join(", "),
            template.as_written(),
            table.name.as_written()
        )));
    }
    let rows: Vec<(String, bool, bool, String)> = sqlx::query_as(
        r#"
        SELECT ic.relname::text, i.indisunique, i.indisprimary, pg_get_indexdef(i.indexrelid)
          FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
         WHERE i.indrelid = to_regclass($1) AND i.indisvalid
         ORDER BY ic.relname
        "#,
    )
    .bind(template.quoted())
    .persistent(false)
    .fetch_all(&mut *conn)
    .await?;
    let mut indexes = Vec::new();
    for (name, unique, primary, def) in rows {
        let Some(using) = using_part(&def) else {
            return Ok(Err(format!(
                "cannot read the definition of index {name} of template {template} ({def:?})"
            )));
        };
        indexes.push(TemplateIndex {
            name,
            unique,
            primary,
            using: using.to_string(),
        });
    }
    Ok(Ok(TemplateSpec {
        template: template.clone(),
        indexes,
        reloptions,
        parent_has_primary_key,
    }))
}

/// `(name, valid, key)` of the indexes of each partition, in one round trip; the key is the
/// `USING` part, prefixed by `UNIQUE ` for a unique index.
pub async fn partition_indexes(
    conn: &mut PgConnection,
    partitions: &[QualifiedName],
) -> Result<Vec<Vec<(String, bool, String)>>, sqlx::Error> {
    let names: Vec<String> = partitions.iter().map(QualifiedName::quoted).collect();
    let rows: Vec<(i64, String, bool, String)> = sqlx::query_as(
        r#"
        SELECT w.ord, ic.relname::text, i.indisvalid, pg_get_indexdef(i.indexrelid)
          FROM unnest($1::text[]) WITH ORDINALITY AS w(rel, ord)
          JOIN pg_index i ON i.indrelid = to_regclass(w.rel)
          JOIN pg_class ic ON ic.oid = i.indexrelid
        "#,
    )
    .bind(&names)
    .persistent(false)
    .fetch_all(conn)
    .await?;
    let mut out = vec![Vec::new(); partitions.len()];
    for (ord, name, valid, def) in rows {
        if let Some(slot) = out.get_mut((ord - 1) as usize) {
            let using = using_part(&def).unwrap_or_default();
            slot.push((
                name,
                valid,
                index_key(def.starts_with("CREATE UNIQUE "), using),
            ));
        }
    }
    Ok(out)
}

/// The partitions a template applies to: every attached one (default included).
pub fn partitions_of(table: &ManagedTable) -> Vec<QualifiedName> {
    table
        .partitions
        .iter()
        .chain(table.default.iter())
        .filter(|p| !p.detach_pending)
        .map(|p| p.name.clone())
        .collect()
}

/// Storage options: the template's win over those copied from the newest partition.
pub fn merge_reloptions(base: &[String], template: &[String]) -> Vec<String> {
    let key = |o: &String| o.split('=').next().unwrap_or_default().to_string();
    let mut out: Vec<String> = base
        .iter()
        .filter(|o| !template.iter().any(|t| key(t) == key(o)))
        .cloned()
        .collect();
    out.extend(template.iter().cloned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_using_part_is_cut_out_of_any_quoting() {
        assert_eq!(
            using_part("CREATE UNIQUE INDEX tpl_id_key ON public.tpl USING btree (id)"),
            Some("btree (id)")
        );
        assert_eq!(
            using_part(
                "CREATE INDEX \"a \"\" USING b\" ON ONLY \"S p\".\"t.x\" USING gin (doc) WHERE (x > 1)"
            ),
            Some("gin (doc) WHERE (x > 1)")
        );
        assert_eq!(using_part("CREATE VIEW v AS SELECT 1"), None);
    }

    #[test]
    fn names_fit_in_63_bytes_and_keep_the_partition_name() {
        let tpl = QualifiedName::new("public", "tpl");
        let i = TemplateIndex {
            name: "tpl_id_key".into(),
            unique: true,
            primary: false,
            using: "btree (id)".into(),
        };
        let short = QualifiedName::new("public", "events_2026_11");
        assert_eq!(i.name_on(&tpl, &short), "events_2026_11_id_key");
        let long = QualifiedName::new("public", format!("{}_2026_11", "e".repeat(60)));
        let n = i.name_on(&tpl, &long);
        assert!(n.len() <= 63, "{n}");
        assert!(n.ends_with("_id_key"), "{n}");
        assert_eq!(
            i.create_sql(&tpl, &short, false),
            "CREATE UNIQUE INDEX \"events_2026_11_id_key\" ON \"public\".\"events_2026_11\" USING btree (id)"
        );
    }

    #[test]
    fn missing_and_invalid_indexes_become_repairs() {
        let tpl = QualifiedName::new("public", "tpl");
        let spec = TemplateSpec {
            template: tpl,
            indexes: vec![TemplateIndex {
                name: "tpl_id_key".into(),
                unique: true,
                primary: false,
                using: "btree (id)".into(),
            }],
            ..TemplateSpec::default()
        };
        let parts = vec![
            QualifiedName::new("public", "t_1"),
            QualifiedName::new("public", "t_2"),
            QualifiedName::new("public", "t_3"),
        ];
        let have = vec![
            vec![
                ("plain".into(), true, "btree (id)".into()),
                ("anything".into(), true, "UNIQUE btree (id)".into()),
            ],
            vec![("plain".into(), true, "btree (id)".into())],
            vec![("t_3_id_key".into(), false, "UNIQUE btree (id)".into())],
        ];
        let r = spec.repairs(&parts, &have);
        assert_eq!(r.len(), 2);
        // A name taken by another index gets a suffix instead of being skipped forever.
        let taken = vec![vec![("t_1_id_key".into(), true, "btree (other)".into())]];
        let r1 = spec.repairs(&parts[..1], &taken);
        assert!(
            matches!(&r1[0], Action::AddIndex { index, .. } if index == "t_1_id_key_tpl"),
            "{r1:?}"
        );
        assert!(
            matches!(&r[0], Action::AddIndex { partition, drop_invalid: false, .. } if partition.name == "t_2")
        );
        assert!(
            matches!(&r[1], Action::AddIndex { partition, drop_invalid: true, .. } if partition.name == "t_3")
        );
    }

    #[test]
    fn template_storage_options_override() {
        let m = merge_reloptions(
            &["fillfactor=100".into(), "autovacuum_enabled=false".into()],
            &["fillfactor=70".into()],
        );
        assert_eq!(m, ["autovacuum_enabled=false", "fillfactor=70"]);
    }
}

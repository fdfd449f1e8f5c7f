//! Reads, never changes: everything the catalog knows about a table that a conversion must carry
//! over or refuse — columns, keys, indexes, constraints, sequences, triggers, dependent views,
//! foreign keys both ways, grants, row-level security, publications — plus the data facts the plan
//! needs (NULL keys, key range, sizes).

use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use crate::ident::QualifiedName;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Inventory {
    pub table: QualifiedName,
    pub exists: bool,
    /// 'r' plain, 'p' partitioned, others refused.
    pub relkind: String,
    pub oid: i64,
    pub owner: String,
    pub current_user: String,
    pub server_version: String,
    pub server_version_num: i32,
    /// `format('%I.%I')` of the table: how `pg_get_*def` print its name.
    pub printed_name: String,
    /// `quote_ident` of the key column, as PostgreSQL prints it inside definitions.
    pub printed_key: String,
    pub is_partition: bool,
    pub has_inheritance: bool,
    pub rls_enabled: bool,
    pub rls_forced: bool,
    /// `relreplident`: d, f, n or i.
    pub replica_identity: String,
    pub comment: Option<String>,
    pub reloptions: Vec<String>,
    pub tablespace: Option<String>,
    pub rows_estimate: f64,
    pub table_bytes: i64,
    pub index_bytes: i64,
    pub columns: Vec<Column>,
    pub constraints: Vec<Constraint>,
    pub indexes: Vec<Index>,
    pub inbound_fks: Vec<InboundFk>,
    pub triggers: Vec<Trigger>,
    pub views: Vec<View>,
    pub sequences: Vec<Sequence>,
    pub grants: Vec<Grant>,
    pub column_grants: Vec<ColumnGrant>,
    pub policies: Vec<Policy>,
    pub publications: Vec<String>,
    /// FOR ALL TABLES / FOR TABLES IN SCHEMA publications (they pick the new table up by themselves).
    pub implicit_publications: Vec<String>,
    pub rules: Vec<String>,
    pub data: Option<DataFacts>,
    /// Data directory and the free bytes on its file system, when partkeeper runs beside the
    /// server and may read the setting.
    pub free_disk: Option<(String, u64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Column {
    pub name: String,
    pub type_name: String,
    pub not_null: bool,
    /// `attidentity`: '' none, 'a' ALWAYS, 'd' BY DEFAULT.
    pub identity: String,
    /// `attgenerated`: '' or 's' (stored).
    pub generated: String,
    pub default: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Constraint {
    pub name: String,
    /// p primary key, u unique, c check, f foreign key, x exclusion, t trigger.
    pub kind: String,
    pub definition: String,
    pub columns: Vec<String>,
    pub deferrable: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Index {
    pub name: String,
    pub definition: String,
    /// `quote_ident(name)`, as `pg_get_indexdef` prints it.
    pub printed_name: String,
    pub unique: bool,
    pub primary: bool,
    /// Backs a PRIMARY KEY, UNIQUE or EXCLUDE constraint (re-created from the constraint).
    pub constraint: bool,
    pub valid: bool,
    pub bytes: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct InboundFk {
    pub name: String,
    pub from_table: String,
    pub definition: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Trigger {
    pub name: String,
    pub definition: String,
    pub enabled: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct View {
    /// `format('%I.%I')`.
    pub name: String,
    /// 'v' view, 'm' materialized view.
    pub kind: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Sequence {
    pub sequence: QualifiedName,
    pub column: String,
    /// 'a' owned (serial), 'i' identity.
    pub dependency: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Grant {
    /// `None` for PUBLIC.
    pub grantee: Option<String>,
    pub privilege: String,
    pub grantable: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ColumnGrant {
    pub column: String,
    pub grant: Grant,
}

#[derive(Debug, Clone, Serialize)]
pub struct Policy {
    pub name: String,
    pub permissive: bool,
    pub roles: Vec<String>,
    /// ALL, SELECT, INSERT, UPDATE, DELETE.
    pub command: String,
    pub using: Option<String>,
    pub with_check: Option<String>,
}

/// Facts read from the rows themselves (full-table aggregates; `plan` and `run` only).
#[derive(Debug, Clone, Default, Serialize)]
pub struct DataFacts {
    pub null_keys: i64,
    /// Key range as seconds since the epoch on the table's calendar (see `bounds`): for date and
    /// timestamp keys the wall-clock value read as UTC.
    pub min_key: Option<f64>,
    pub max_key: Option<f64>,
    pub min_key_text: Option<String>,
    pub max_key_text: Option<String>,
    /// Range of the fill expression over the NULL-key rows, same scale.
    pub min_fill: Option<f64>,
    pub max_fill: Option<f64>,
    /// NULL-key rows the fill expression leaves NULL.
    pub fill_still_null: i64,
}

impl Inventory {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    pub fn primary_key(&self) -> Option<&Constraint> {
        self.constraints.iter().find(|c| c.kind == "p")
    }
}

const TABLE_SQL: &str = r#"
SELECT c.oid::int8, c.relkind::text, pg_get_userbyid(c.relowner)::text, current_user::text,
       current_setting('server_version'), current_setting('server_version_num')::int4,
       format('%I.%I', n.nspname, c.relname), quote_ident($2),
       c.relispartition, (c.relhassubclass OR EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = c.oid)),
       c.relrowsecurity, c.relforcerowsecurity, c.relreplident::text,
       obj_description(c.oid, 'pg_class'), COALESCE(c.reloptions, '{}')::text[],
       (SELECT spcname::text FROM pg_tablespace WHERE oid = c.reltablespace AND c.reltablespace <> 0),
       c.reltuples::float8, pg_table_size(c.oid), pg_indexes_size(c.oid)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = $1 AND c.relname = $3
"#;

/// Reads the catalog side of the inventory (cheap: no table scan).
pub async fn read(
    conn: &mut PgConnection,
    table: &QualifiedName,
    key: &str,
) -> Result<Inventory, sqlx::Error> {
    let mut inv = Inventory {
        table: table.clone(),
        ..Inventory::default()
    };
    let row: Option<PgRow> = sqlx::query(TABLE_SQL)
        .bind(&table.schema)
        .bind(key)
        .bind(&table.name)
        .persistent(false)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(r) = row else {
        let (v, n): (String, i32) = sqlx::query_as(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int4",
        )
        .persistent(false)
        .fetch_one(&mut *conn)
        .await?;
        inv.server_version = v;
        inv.server_version_num = n;
        return Ok(inv);
    };
    inv.exists = true;
    inv.oid = r.try_get(0)?;
    inv.relkind = r.try_get(1)?;
    inv.owner = r.try_get(2)?;
    inv.current_user = r.try_get(3)?;
    inv.server_version = r.try_get(4)?;
    inv.server_version_num = r.try_get(5)?;
    inv.printed_name = r.try_get(6)?;
    inv.printed_key = r.try_get(7)?;
    inv.is_partition = r.try_get(8)?;
    inv.has_inheritance = r.try_get(9)?;
    inv.rls_enabled = r.try_get(10)?;
    inv.rls_forced = r.try_get(11)?;
    inv.replica_identity = r.try_get(12)?;
    inv.comment = r.try_get(13)?;
    inv.reloptions = r.try_get(14)?;
    inv.tablespace = r.try_get(15)?;
    inv.rows_estimate = r.try_get(16)?;
    inv.table_bytes = r.try_get(17)?;
    inv.index_bytes = r.try_get(18)?;
    let oid = inv.oid;

    inv.columns = sqlx::query_as::<_, (String, String, bool, String, String, Option<String>)>(
        "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                a.attidentity::text, a.attgenerated::text, pg_get_expr(d.adbin, d.adrelid)
           FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
          WHERE a.attrelid = $1::int8::oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
    )
    .bind(oid)
    .persistent(false)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(
        |(name, type_name, not_null, identity, generated, default)| Column {
            name,
            type_name,
            not_null,
            identity,
            generated,
            default,
        },
    )
    .collect();

    inv.constraints = sqlx::query_as::<_, (String, String, String, Vec<String>, bool)>(
        "SELECT con.conname::text, con.contype::text, pg_get_constraintdef(con.oid),
                COALESCE((SELECT array_agg(a.attname::text ORDER BY k.i)
                            FROM unnest(con.conkey) WITH ORDINALITY AS k(n, i)
                            JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n), '{}'),
                con.condeferrable
           FROM pg_constraint con WHERE con.conrelid = $1::int8::oid ORDER BY con.contype, con.conname",
    )
    .bind(oid)
    .persistent(false)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|(name, kind, definition, columns, deferrable)| Constraint {
        name,
        kind,
        definition,
        columns,
        deferrable,
    })
    .collect();

    inv.indexes = sqlx::query_as::<_, (String, String, String, bool, bool, bool, bool, i64)>(
        "SELECT ic.relname::text, pg_get_indexdef(i.indexrelid), quote_ident(ic.relname),
                i.indisunique, i.indisprimary,
                EXISTS (SELECT 1 FROM pg_constraint con WHERE con.conindid = i.indexrelid AND con.conrelid = i.indrelid),
                i.indisvalid, pg_relation_size(i.indexrelid)
           FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
          WHERE i.indrelid = $1::int8::oid ORDER BY ic.relname",
    )
    .bind(oid)
    .persistent(false)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(
        |(name, definition, printed_name, unique, primary, constraint, valid, bytes)| Index {
            name,
            definition,
            printed_name,
            unique,
            primary,
            constraint,
            valid,
            bytes,
        },
    )
    .collect();

    inv.inbound_fks = sqlx::query_as::<_, (String, String, String)>(
        "SELECT con.conname::text, con.conrelid::regclass::text, pg_get_constraintdef(con.oid)
           FROM pg_constraint con
          WHERE con.confrelid = $1::int8::oid AND con.contype = 'f' ORDER BY 2, 1",
    )
    .bind(oid)
    .persistent(false)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|(name, from_table, definition)| InboundFk {
        name,
        from_table,
        definition,
    })
    .collect();

    inv.triggers = sqlx::query_as::<_, (String, String, String)>(
        "SELECT t.tgname::text, pg_get_triggerdef(t.oid), t.tgenabled::text
           FROM pg_trigger t
          WHERE t.tgrelid = $1::int8::oid AND NOT t.tgisinternal AND t.tgname NOT LIKE 'partkeeper\\_sync\\_%'
          ORDER BY t.tgname",
    )
    .bind(oid)
    .persistent(false)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|(name, definition, enabled)| Trigger {
        name,
        definition,
        enabled,
    })
    .collect();

    inv.views = read_views(conn, oid)
        .await?
        .into_iter()
        .map(|(_, name, kind, _, _)| View { name, kind })
        .collect();

    inv.sequences = sqlx::query_as::<_, (String, String, String, String)>(
        "SELECT sn.nspname::text, s.relname::text, a.attname::text, d.deptype::text
           FROM pg_depend d
           JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
           JOIN pg_namespace sn ON sn.oid = s.relnamespace
           JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
          WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
            AND d.refobjid = $1::int8::oid AND d.deptype IN ('a', 'i')
          ORDER BY a.attnum",
    )
    .bind(oid)
    .persistent(false)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|(schema, name, column, dependency)| Sequence {
        sequence: QualifiedName::new(schema, name),
        column,
        dependency,
    })
    .collect();

    inv.grants = read_grants(conn, oid).await?;
    inv.column_grants = sqlx::query_as::<_, (String, Option<String>, String, bool)>(
        "SELECT a.attname::text,
                CASE WHEN x.grantee = 0 THEN NULL ELSE pg_get_userbyid(x.grantee)::text END,
                x.privilege_type::text, x.is_grantable
           FROM pg_attribute a, aclexplode(a.attacl) x
          WHERE a.attrelid = $1::int8::oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attacl IS NOT NULL
          ORDER BY a.attnum, 2 NULLS FIRST, 3",
    )
    .bind(oid)
    .persistent(false)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|(column, grantee, privilege, grantable)| ColumnGrant {
        column,
        grant: Grant {
            grantee,
            privilege,
            grantable,
        },
    })
    .collect();

    inv.policies = read_policies(conn, oid).await?;

    inv.publications = sqlx::query_scalar(
        "SELECT p.pubname::text FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
          WHERE pr.prrelid = $1::int8::oid ORDER BY 1",
    )
    .bind(oid)
    .persistent(false)
    .fetch_all(&mut *conn)
    .await?;
    let schema_pubs = if inv.server_version_num >= 150000 {
        " OR EXISTS (SELECT 1 FROM pg_publication_namespace pn WHERE pn.pnpubid = p.oid AND pn.pnnspid = $1::int8::oid)"
    } else {
        ""
    };
    let nsp: i64 =
        sqlx::query_scalar("SELECT relnamespace::int8 FROM pg_class WHERE oid = $1::int8::oid")
            .bind(oid)
            .persistent(false)
            .fetch_one(&mut *conn)
            .await?;
    inv.implicit_publications = sqlx::query_scalar(&format!(
        "SELECT p.pubname::text FROM pg_publication p WHERE p.puballtables{schema_pubs} ORDER BY 1"
    ))
    .bind(nsp)
    .persistent(false)
    .fetch_all(&mut *conn)
    .await?;

    inv.rules = sqlx::query_scalar(
        "SELECT r.rulename::text FROM pg_rewrite r WHERE r.ev_class = $1::int8::oid AND r.rulename <> '_RETURN' ORDER BY 1",
    )
    .bind(oid)
    .persistent(false)
    .fetch_all(&mut *conn)
    .await?;

    inv.free_disk = free_disk(conn).await;
    Ok(inv)
}

/// Views and materialized views that read `oid` directly: (oid, printed name, kind, definition,
/// options).
pub async fn read_views(
    conn: &mut PgConnection,
    oid: i64,
) -> Result<Vec<(i64, String, String, String, Vec<String>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT DISTINCT v.oid::int8, format('%I.%I', vn.nspname, v.relname), v.relkind::text,
                pg_get_viewdef(v.oid), COALESCE(v.reloptions, '{}')::text[]
           FROM pg_depend d
           JOIN pg_rewrite r ON r.oid = d.objid
           JOIN pg_class v ON v.oid = r.ev_class
           JOIN pg_namespace vn ON vn.oid = v.relnamespace
          WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
            AND d.refobjid = $1::int8::oid AND v.oid <> $1::int8::oid
          ORDER BY 1",
    )
    .bind(oid)
    .persistent(false)
    .fetch_all(conn)
    .await
}

pub async fn read_grants(conn: &mut PgConnection, oid: i64) -> Result<Vec<Grant>, sqlx::Error> {
    Ok(sqlx::query_as::<_, (Option<String>, String, bool)>(
        "SELECT CASE WHEN x.grantee = 0 THEN NULL ELSE pg_get_userbyid(x.grantee)::text END,
                x.privilege_type::text, x.is_grantable
           FROM pg_class c, aclexplode(c.relacl) x
          WHERE c.oid = $1::int8::oid AND x.grantee <> c.relowner
          ORDER BY 1 NULLS FIRST, 2",
    )
    .bind(oid)
    .persistent(false)
    .fetch_all(conn)
    .await?
    .into_iter()
    .map(|(grantee, privilege, grantable)| Grant {
        grantee,
        privilege,
        grantable,
    })
    .collect())
}

pub async fn read_policies(conn: &mut PgConnection, oid: i64) -> Result<Vec<Policy>, sqlx::Error> {
    Ok(
        sqlx::query_as::<_, (String, bool, Vec<String>, String, Option<String>, Option<String>)>(
            "SELECT p.polname::text, p.polpermissive,
                    CASE WHEN p.polroles = '{0}' THEN ARRAY['public']
                         ELSE ARRAY(SELECT rolname::text FROM pg_roles WHERE oid = ANY (p.polroles) ORDER BY rolname) END,
                    CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                                  WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
                    pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)
               FROM pg_policy p WHERE p.polrelid = $1::int8::oid ORDER BY 1",
        )
        .bind(oid)
        .persistent(false)
        .fetch_all(conn)
        .await?
        .into_iter()
        .map(
            |(name, permissive, roles, command, using, with_check)| Policy {
                name,
                permissive,
                roles,
                command,
                using,
                with_check,
            },
        )
        .collect(),
    )
}

/// Reads the facts that need a look at the rows: NULL keys, key range, and what the fill
/// expression gives for the NULL-key rows. The range queries use an index on the key when one
/// exists.
pub async fn read_data(
    conn: &mut PgConnection,
    deadline: std::time::Duration,
    inv: &Inventory,
    key: &str,
    key_type: crate::bounds::KeyType,
    fill: Option<&str>,
) -> Result<DataFacts, sqlx::Error> {
    let key_sql_type = key_type.sql_name();
    let t = inv.table.quoted();
    let k = crate::ident::quote_ident(key);
    let epoch = |expr: &str| crate::keys::seconds_sql(key_type, expr);
    let min_max = crate::keys::min_max_sql(key_type, &k);
    let fill_min_max = crate::keys::min_max_sql(key_type, "f");
    let null_keys: i64 = crate::pg::answered(
        deadline,
        sqlx::query_scalar(&format!("SELECT count(*) FROM {t} WHERE {k} IS NULL"))
            .persistent(false)
            .fetch_one(&mut *conn),
    )
    .await?;
    let (min_key, max_key, min_key_text, max_key_text): (
        Option<f64>,
        Option<f64>,
        Option<String>,
        Option<String>,
    ) = crate::pg::answered(
        deadline,
        sqlx::query_as(&format!(
            "SELECT {}, {}, lo::text, hi::text FROM (SELECT {} AS lo, {} AS hi FROM {t}) s",
            epoch("lo"),
            epoch("hi"),
            min_max.0,
            min_max.1,
        ))
        .persistent(false)
        .fetch_one(&mut *conn),
    )
    .await?;
    let mut facts = DataFacts {
        null_keys,
        min_key,
        max_key,
        min_key_text,
        max_key_text,
        ..DataFacts::default()
    };
    if let (Some(fill), true) = (fill, null_keys > 0) {
        let filled = format!("({fill})::{key_sql_type}");
        let (lo, hi, still_null): (Option<f64>, Option<f64>, i64) = crate::pg::answered(
            deadline,
            sqlx::query_as(&format!(
                "SELECT {}, {}, count(*) FILTER (WHERE f IS NULL)
                   FROM (SELECT {filled} AS f FROM {t} WHERE {k} IS NULL) s",
                epoch(&fill_min_max.0),
                epoch(&fill_min_max.1)
            ))
            .persistent(false)
            .fetch_one(&mut *conn),
        )
        .await?;
        facts.min_fill = lo;
        facts.max_fill = hi;
        facts.fill_still_null = still_null;
    }
    Ok(facts)
}

/// Free space beside the data directory, when the server runs on this machine and the setting is
/// readable (superuser or pg_read_all_settings). Anything else: unknown.
async fn free_disk(conn: &mut PgConnection) -> Option<(String, u64)> {
    let dir: String =
        sqlx::query_scalar("SELECT setting FROM pg_settings WHERE name = 'data_directory'")
            .persistent(false)
            .fetch_optional(&mut *conn)
            .await
            .ok()??;
    let stat = nix::sys::statvfs::statvfs(dir.as_str()).ok()?;
    Some((
        dir,
        stat.blocks_available() as u64 * stat.fragment_size() as u64,
    ))
}

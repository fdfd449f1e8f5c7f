//! Reads the database, never changes it: one round trip returns every managed table with its
//! partitions, their bounds (from `pg_get_expr(relpartbound)`, never from names), row estimates
//! and optionally sizes. `resolve` then checks each table against its policy.

use serde::Serialize;
use sqlx::PgConnection;

use crate::bounds::{parse_partition_bound, BoundValue, KeyType, PartitionBound};
use crate::config::TablePolicy;
use crate::ident::{quote_ident, QualifiedName};
use crate::keys::Width;

/// What the catalog says about one configured table.
#[derive(Debug, Clone)]
pub struct TableRow {
    pub name: QualifiedName,
    pub relkind: Option<String>,
    pub strategy: Option<String>,
    pub key_columns: Vec<Option<String>>,
    pub column_type: Option<String>,
    pub columns: Vec<String>,
    pub owner: Option<String>,
    pub partitions: Vec<RawPartition>,
    /// Tables whose names differ only in case (for the "did you mean" hint).
    pub near: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct RawPartition {
    pub schema: String,
    pub name: String,
    pub bound: Option<String>,
    pub rows: Option<f64>,
    pub size: Option<i64>,
    pub detach_pending: bool,
}

/// A managed table that exists, is range-partitioned on the configured column, and whose
/// partition bounds all parsed.
#[derive(Debug, Clone, Serialize)]
pub struct ManagedTable {
    pub name: QualifiedName,
    pub column: String,
    pub key_type: KeyType,
    pub owner: String,
    /// Range partitions, sorted by lower bound.
    pub partitions: Vec<Partition>,
    pub default: Option<Partition>,
    /// Integer keys (without `epoch`): what the table holds, read by `read_values`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values: Option<KeyValues>,
}

/// The facts an integer key is planned by (it has no clock).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KeyValues {
    /// max(key); `None` for an empty table.
    pub max: Option<i64>,
    /// Whether an index leads with the key, so that max(key) is read without a full scan.
    pub indexed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Partition {
    pub name: QualifiedName,
    #[serde(serialize_with = "ser_bound")]
    pub from: BoundValue,
    #[serde(serialize_with = "ser_bound")]
    pub to: BoundValue,
    /// `reltuples`: -1 (PostgreSQL 14+) when never analyzed.
    pub rows_estimate: f64,
    pub size_bytes: Option<i64>,
    /// A `DETACH ... CONCURRENTLY` was interrupted; it must be finalized.
    pub detach_pending: bool,
    pub bound_sql: String,
}

/// The catalog query. `{DETACH}` is `i.inhdetachpending` on PostgreSQL 14+ and `false` before
/// (the column does not exist there). Partitions come back as parallel arrays: measured about
/// 3x cheaper than building JSON objects per partition (4,400 partitions: 36 ms against 104 ms
/// on a loaded 2-core machine). `pg_get_expr(relpartbound, 0)`: a bound holds only constants, so
/// no relation is looked up for it — in a fresh session (every CLI run) that spares loading 4,400
/// relcache entries (cold, 100 tables x 44 partitions: 43 ms -> 20 ms with JIT off).
const CATALOG_SQL: &str = r#"
WITH wanted AS (
  SELECT w.schema, w.name, w.col, w.ord
  FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS w(schema, name, col, ord)
)
SELECT
  w.ord::int8,
  c.relkind::text,
  pt.partstrat::text,
  (SELECT array_agg(a.attname::text ORDER BY k.i)
     FROM unnest(pt.partattrs::int2[]) WITH ORDINALITY AS k(attnum, i)
     LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum),
  (SELECT format_type(a.atttypid, NULL) FROM pg_attribute a
     WHERE a.attrelid = c.oid AND a.attname = w.col AND a.attnum > 0 AND NOT a.attisdropped),
  (SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
     WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
  pg_get_userbyid(c.relowner)::text,
  CASE WHEN c.oid IS NULL THEN
    (SELECT array_agg(format('%s.%s', quote_ident(n2.nspname), quote_ident(c2.relname)))
       FROM pg_class c2 JOIN pg_namespace n2 ON n2.oid = c2.relnamespace
      WHERE lower(n2.nspname) = lower(w.schema) AND lower(c2.relname) = lower(w.name)
        AND c2.relkind IN ('r', 'p'))
  END,
  parts.schemas, parts.names, parts.bounds, parts.tuples, parts.sizes, parts.detach
FROM wanted w
LEFT JOIN pg_namespace n ON n.nspname = w.schema
LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = w.name AND c.relkind IN ('r', 'p')
LEFT JOIN pg_partitioned_table pt ON pt.partrelid = c.oid
LEFT JOIN LATERAL (
  SELECT array_agg(pn.nspname::text) AS schemas,
         array_agg(p.relname::text) AS names,
         array_agg(pg_get_expr(p.relpartbound, 0)) AS bounds,
         array_agg(p.reltuples::float8) AS tuples,
         array_agg(CASE WHEN $4 THEN pg_total_relation_size(p.oid) END) AS sizes,
         array_agg({DETACH}) AS detach
    FROM pg_inherits i
    JOIN pg_class p ON p.oid = i.inhrelid
    JOIN pg_namespace pn ON pn.oid = p.relnamespace
   WHERE i.inhparent = c.oid
) parts ON true
ORDER BY w.ord
"#;

type CatalogRecord = (
    i64,
    Option<String>,
    Option<String>,
    Option<Vec<Option<String>>>,
    Option<String>,
    Option<Vec<String>>,
    Option<String>,
    Option<Vec<String>>,
    Option<Vec<String>>,
    Option<Vec<String>>,
    Option<Vec<Option<String>>>,
    Option<Vec<f64>>,
    Option<Vec<Option<i64>>>,
    Option<Vec<bool>>,
);

/// One round trip for all `tables` (name, configured column). `sizes` adds
/// `pg_total_relation_size` per partition (it stats files, so it is left out where not needed).
pub async fn read(
    conn: &mut PgConnection,
    tables: &[(QualifiedName, String)],
    sizes: bool,
) -> Result<Vec<TableRow>, sqlx::Error> {
    let schemas: Vec<&str> = tables.iter().map(|(q, _)| q.schema.as_str()).collect();
    let names: Vec<&str> = tables.iter().map(|(q, _)| q.name.as_str()).collect();
    let cols: Vec<&str> = tables.iter().map(|(_, c)| c.as_str()).collect();
    // Known from the startup packet: no round trip.
    let detach = if conn.server_version_num().unwrap_or(0) >= 140000 {
        "i.inhdetachpending"
    } else {
        "false"
    };
    let sql = CATALOG_SQL.replace("{DETACH}", detach);
    let rows: Vec<CatalogRecord> = sqlx::query_as(&sql)
        .bind(&schemas)
        .bind(&names)
        .bind(&cols)
        .bind(sizes)
        .persistent(false)
        .fetch_all(conn)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for (
        ord,
        relkind,
        strategy,
        key_columns,
        column_type,
        columns,
        owner,
        near,
        p_schemas,
        p_names,
        p_bounds,
        p_tuples,
        p_sizes,
        p_detach,
    ) in rows
    {
        let (name, _) = &tables[(ord - 1) as usize];
        let p_names = p_names.unwrap_or_default();
        let n = p_names.len();
        let (p_schemas, p_bounds, p_tuples, p_sizes, p_detach) = (
            p_schemas.unwrap_or_default(),
            p_bounds.unwrap_or_default(),
            p_tuples.unwrap_or_default(),
            p_sizes.unwrap_or_default(),
            p_detach.unwrap_or_default(),
        );
        let partitions = (0..n)
            .map(|i| RawPartition {
                schema: p_schemas.get(i).cloned().unwrap_or_default(),
                name: p_names[i].clone(),
                bound: p_bounds.get(i).cloned().flatten(),
                rows: p_tuples.get(i).copied(),
                size: p_sizes.get(i).copied().flatten(),
                detach_pending: p_detach.get(i).copied().unwrap_or(false),
            })
            .collect();
        out.push(TableRow {
            name: name.clone(),
            relkind,
            strategy,
            key_columns: key_columns.unwrap_or_default(),
            column_type,
            columns: columns.unwrap_or_default(),
            owner,
            partitions,
            near: near.unwrap_or_default(),
        });
    }
    Ok(out)
}

/// Reads and resolves the given policies; each table gets its own result.
pub async fn read_managed(
    conn: &mut PgConnection,
    policies: &[TablePolicy],
    sizes: bool,
) -> Result<Vec<Result<ManagedTable, String>>, sqlx::Error> {
    let wanted: Vec<(QualifiedName, String)> = policies
        .iter()
        .map(|p| (p.name.clone(), p.column.clone()))
        .collect();
    let rows = read(conn, &wanted, sizes).await?;
    let mut out: Vec<Result<ManagedTable, String>> = rows
        .iter()
        .zip(policies)
        .map(|(row, policy)| resolve(row, policy))
        .collect();
    let mut integer: Vec<(&mut ManagedTable, u32)> = out
        .iter_mut()
        .zip(policies)
        .filter_map(|(t, p)| Some((t.as_mut().ok()?, p.premake)))
        .filter(|(t, _)| matches!(t.key_type, KeyType::Int(_)))
        .collect();
    read_values(conn, &mut integer).await?;
    Ok(out)
}

/// Fills `values` (max(key), and whether an index leads with the key) of integer-keyed tables,
/// in one round trip for all of them (two when some need the fallback below).
///
/// max(key) of the whole table would make PostgreSQL open every partition (a merge over each
/// one's index, or a scan of each without one). The ids grow upwards, so it is read from the
/// default partition (ids that outran the partitions) and the `premake + 2` highest partitions
/// only, stopping at the first that holds a row (COALESCE evaluates its subqueries lazily). Only
/// when those are all empty is the whole table asked.
pub async fn read_values(
    conn: &mut PgConnection,
    tables: &mut [(&mut ManagedTable, u32)],
) -> Result<(), sqlx::Error> {
    if tables.is_empty() {
        return Ok(());
    }
    let max_of = |rel: &QualifiedName, col: &str| {
        format!(
            "(SELECT max({})::int8 FROM {})",
            quote_ident(col),
            rel.quoted()
        )
    };
    let mut selects = Vec::new();
    for (i, (t, premake)) in tables.iter().enumerate() {
        let mut top: Vec<&Partition> = t.partitions.iter().collect();
        top.sort_by_key(|p| std::cmp::Reverse(p.to));
        let mut tops: Vec<String> = top
            .iter()
            .take(*premake as usize + 2)
            .map(|p| max_of(&p.name, &t.column))
            .collect();
        tops.push("NULL::int8".into());
        let default = t
            .default
            .as_ref()
            .map_or("NULL::int8".to_string(), |d| max_of(&d.name, &t.column));
        selects.push(format!(
            "SELECT {i}::int4, EXISTS (SELECT 1 FROM pg_index x
                 JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = x.indkey[0]
                WHERE x.indrelid = ${}::regclass AND a.attname = ${}),
               {default}, COALESCE({}), {}",
            2 * i + 1,
            2 * i + 2,
            tops.join(", "),
            // Whether partitions below the ones asked could hold the answer.
            top.len() > *premake as usize + 2,
        ));
    }
    let sql = selects.join(" UNION ALL ");
    let mut q = sqlx::query_as::<_, (i32, bool, Option<i64>, Option<i64>, bool)>(&sql);
    for (t, _) in tables.iter() {
        q = q.bind(t.name.quoted()).bind(t.column.clone());
    }
    let rows = q.fetch_all(&mut *conn).await?;
    for (i, indexed, in_default, in_top, more_below) in rows {
        let (t, _) = &mut tables[i as usize];
        let mut max = in_default.max(in_top);
        if in_top.is_none() && more_below {
            let whole: Option<i64> = sqlx::query_scalar(&format!(
                "SELECT max({})::int8 FROM {}",
                quote_ident(&t.column),
                t.name.quoted()
            ))
            .fetch_one(&mut *conn)
            .await?;
            max = whole;
        }
        t.values = Some(KeyValues { max, indexed });
    }
    Ok(())
}

/// The key type a policy reads the column as, or what to change in the configuration.
pub fn key_for_policy(
    column: KeyType,
    type_name: &str,
    policy: &TablePolicy,
) -> Result<KeyType, String> {
    let shown = &policy.name;
    let col = &policy.column;
    match (column, policy.interval, policy.epoch) {
        (KeyType::Int(_), Width::Values(_), None) => Ok(column),
        (KeyType::Int(w), Width::Calendar(_), Some(unit)) => Ok(KeyType::Epoch(w, unit)),
        (KeyType::Int(_), Width::Calendar(iv), None) => Err(format!(
            "tables[].interval for {shown} is \"{iv}\", but its key {col} is of type {type_name}: write an integer interval (e.g. interval = 1000000), or if the column holds Unix time set tables[].epoch = \"seconds\", \"milliseconds\", \"microseconds\" or \"nanoseconds\""
        )),
        (_, _, Some(unit)) => Err(format!(
            "tables[].epoch = \"{unit}\" is set for {shown}, but its key {col} is of type {type_name}; epoch is for integer columns holding Unix time: remove it"
        )),
        (_, Width::Values(n), None) => Err(format!(
            "tables[].interval for {shown} is the integer {n}, but its key {col} is of type {type_name}; write a calendar interval such as interval = \"1 day\" (integer intervals are for smallint, integer and bigint keys)"
        )),
        (KeyType::Date, Width::Calendar(iv), None) if iv.is_sub_daily() => Err(format!(
            "tables[].interval for {shown} is \"{iv}\", but its key {col} is a date, which holds whole days; use \"1 day\" or longer, or a timestamp column"
        )),
        _ => Ok(column),
    }
}

/// Checks the table against its policy; the error says what to fix.
pub fn resolve(row: &TableRow, policy: &TablePolicy) -> Result<ManagedTable, String> {
    let shown = &policy.name;
    let Some(relkind) = row.relkind.as_deref() else {
        return Err(match row.near.as_slice() {
            [] => format!(
                "table {shown} does not exist; check tables[].name (and the database in database.url)"
            ),
            near => format!(
                "table {shown} does not exist, but {} does: names with capitals must be double-quoted, e.g. name = '{}'",
                near.join(", "),
                near[0]
            ),
        });
    };
    if relkind != "p" {
        return Err(format!(
            "table {shown} is not partitioned; convert it first with `partkeeper migrate plan --table {shown}` then `migrate run`"
        ));
    }
    if row.strategy.as_deref() != Some("r") {
        return Err(format!(
            "table {shown} is partitioned by {}, not by RANGE; partkeeper manages range partitions only",
            match row.strategy.as_deref() {
                Some("l") => "LIST",
                Some("h") => "HASH",
                _ => "another strategy",
            }
        ));
    }
    let key = match row.key_columns.as_slice() {
        [Some(col)] => col.clone(),
        [None] => {
            return Err(format!(
                "table {shown} is partitioned by an expression; partkeeper needs a plain column key"
            ))
        }
        _ => {
            return Err(format!(
                "table {shown} has a multi-column partition key; partkeeper needs a single column"
            ))
        }
    };
    if key != policy.column {
        let has_column = row.columns.contains(&policy.column);
        return Err(format!(
            "tables[].column for {shown} is {:?}, but the table is partitioned by {:?}{}; set column = '{}'",
            policy.column,
            key,
            if has_column { "" } else { " (and has no such column)" },
            crate::ident::parse_ident(&key)
                .ok()
                .filter(|k| *k == key)
                .unwrap_or_else(|| quote_ident(&key)),
        ));
    }
    let Some(type_name) = row.column_type.as_deref() else {
        return Err(format!("table {shown} has no column {:?}", policy.column));
    };
    let Some(column_type) = KeyType::from_pg_type(type_name) else {
        return Err(format!(
            "the partition key {shown}.{} is of type {type_name}; partkeeper supports date, timestamp, timestamptz, smallint, integer, bigint and uuid",
            policy.column
        ));
    };
    let key_type = key_for_policy(column_type, type_name, policy)?;
    let mut partitions = Vec::new();
    let mut default = None;
    for p in &row.partitions {
        let name = QualifiedName::new(p.schema.clone(), p.name.clone());
        let text = p.bound.clone().unwrap_or_default();
        let bound = parse_partition_bound(&text, key_type)
            .map_err(|e| format!("cannot read the bounds of partition {name} ({text:?}): {e}"))?;
        let (from, to) = match bound {
            PartitionBound::Default => (BoundValue::MinValue, BoundValue::MaxValue),
            PartitionBound::Range { from, to } => (from, to),
        };
        let part = Partition {
            name,
            from,
            to,
            rows_estimate: p.rows.unwrap_or(-1.0),
            size_bytes: p.size,
            detach_pending: p.detach_pending,
            bound_sql: text,
        };
        if matches!(bound, PartitionBound::Default) {
            default = Some(part);
        } else {
            partitions.push(part);
        }
    }
    partitions.sort_by(|a, b| a.from.cmp(&b.from).then(a.to.cmp(&b.to)));
    Ok(ManagedTable {
        name: policy.name.clone(),
        column: policy.column.clone(),
        key_type,
        owner: row.owner.clone().unwrap_or_default(),
        partitions,
        default,
        values: None,
    })
}

/// Which of `names` already exist as relations (of any kind) — checked before any DDL runs.
pub async fn existing_relations(
    conn: &mut PgConnection,
    names: &[QualifiedName],
) -> Result<Vec<QualifiedName>, sqlx::Error> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let schemas: Vec<&str> = names.iter().map(|q| q.schema.as_str()).collect();
    let rels: Vec<&str> = names.iter().map(|q| q.name.as_str()).collect();
    let found: Vec<(String, String)> = sqlx::query_as(
        "SELECT n.nspname::text, c.relname::text
           FROM unnest($1::text[], $2::text[]) AS w(schema, name)
           JOIN pg_namespace n ON n.nspname = w.schema
           JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = w.name",
    )
    .bind(&schemas)
    .bind(&rels)
    .persistent(false)
    .fetch_all(conn)
    .await?;
    Ok(found
        .into_iter()
        .map(|(s, n)| QualifiedName::new(s, n))
        .collect())
}

/// Exact row counts of the given (default) partitions, in one round trip.
pub async fn count_rows(
    conn: &mut PgConnection,
    relations: &[QualifiedName],
) -> Result<Vec<i64>, sqlx::Error> {
    if relations.is_empty() {
        return Ok(Vec::new());
    }
    let sql = relations
        .iter()
        .enumerate()
        .map(|(i, r)| format!("SELECT {i} AS i, count(*) AS n FROM {}", r.quoted()))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let rows: Vec<(i32, i64)> = sqlx::query_as(&format!("SELECT i, n FROM ({sql}) s ORDER BY i"))
        .persistent(false)
        .fetch_all(conn)
        .await?;
    Ok(rows.into_iter().map(|(_, n)| n).collect())
}

fn ser_bound<S: serde::Serializer>(v: &BoundValue, s: S) -> Result<S::Ok, S::Error> {
    match v {
        BoundValue::MinValue => s.serialize_str("MINVALUE"),
        BoundValue::MaxValue => s.serialize_str("MAXVALUE"),
        BoundValue::Value(t) => s.serialize_str(&t.to_rfc3339()),
    }
}

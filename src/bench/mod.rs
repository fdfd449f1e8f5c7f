//! `partkeeper bench`: the runbook's benchmark queries, measured with
//! `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)`, so that "3-5x faster" and "Partitions scanned: 1"
//! are numbers from this database rather than promises.
//!
//! Design: the pure parts decide and describe — [`queries`] renders the classes to SQL with
//! bind parameters, [`explain`] reads a plan, [`report`] summarises runs and lays out the
//! before/after table, [`chart`] draws it. This file is the thin I/O shell: it reads the table's
//! shape from the catalog, picks the parameters from the table's own data (unless a saved run
//! supplies them, so a comparison asks the same questions twice), and runs each class once to
//! warm up and then `runs` times. The session is read-only: even an operator's `[[bench]]` query
//! cannot change data under EXPLAIN ANALYZE.

pub mod chart;
pub mod error;
pub mod explain;
pub mod queries;
pub mod report;

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use sqlx::postgres::{PgArguments, Postgres};
use sqlx::query::Query;
use sqlx::{PgConnection, Row};

use crate::bounds::KeyType;
use crate::config::{BenchQuery, TablePolicy};
use crate::error::{Error, Result};
use crate::ident::quote_ident;
use error::BenchError;

use queries::{
    key_param, Bind, Parameters, QueryClass, TableShape, ValueRanges, Windows, PROPERTY_COLUMN,
};
use report::{BenchReport, Layout, FORMAT_VERSION, WARMUP_RUNS};

/// Percentage of the table's pages sampled to find a frequent property before falling back to
/// reading the whole month (small tables often yield no sampled page at all).
const PROPERTY_SAMPLE_PERCENT: f64 = 1.0;

/// The table as `bench` sees it.
#[derive(Debug, Clone)]
pub struct Target {
    pub shape: TableShape,
    pub layout: Layout,
    /// Relations that count as the table in a plan: its leaf partitions, or itself when plain.
    pub own: BTreeSet<String>,
    /// Calendar zone of a timestamptz, epoch or uuid key.
    pub timezone: Tz,
    /// Plain integer keys: the partition grid (`tables[].interval` values from `tables[].start`).
    pub grid: Option<(i64, i64)>,
}

const SHAPE_SQL: &str = r#"
SELECT c.relkind::text,
  ARRAY(SELECT a.attname::text FROM pg_attribute a
         WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum),
  ARRAY(SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
         WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum),
  ARRAY(SELECT p.relname::text FROM pg_partition_tree(c.oid) t JOIN pg_class p ON p.oid = t.relid
         WHERE t.isleaf AND t.level > 0 ORDER BY 1)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')
"#;

/// relkind, column names, their types, leaf partition names.
type ShapeRow = (String, Vec<String>, Vec<String>, Vec<String>);

/// Reads the table's columns and partitions; a missing table or key column is a mismatch (exit 2).
pub async fn inspect(conn: &mut PgConnection, policy: &TablePolicy) -> Result<Target> {
    let name = &policy.name;
    let row: Option<ShapeRow> = sqlx::query_as(SHAPE_SQL)
        .bind(&name.schema)
        .bind(&name.name)
        .fetch_optional(&mut *conn)
        .await?;
    let Some((relkind, names, types, leaves)) = row else {
        return Err(Error::Mismatch(format!(
            "table {name} does not exist; check tables[].name (names with capitals are double-quoted) and the database in database.url"
        )));
    };
    let columns: Vec<(String, String)> = names.into_iter().zip(types).collect();
    let Some((_, key_type_name)) = columns.iter().find(|(c, _)| *c == policy.column) else {
        return Err(Error::Mismatch(format!(
            "table {name} has no column {}; set tables[].column to its date or timestamp column",
            quote_ident(&policy.column)
        )));
    };
    let Some(column_type) = KeyType::from_pg_type(key_type_name) else {
        return Err(Error::Mismatch(format!(
            "{name}.{} is of type {key_type_name}; bench needs a date, timestamp, timestamptz, smallint, integer, bigint or uuid key",
            policy.column
        )));
    };
    // The configuration says whether an integer holds Unix time (`epoch`) or plain values.
    let key_type = crate::catalog::key_for_policy(column_type, key_type_name, policy)
        .map_err(Error::Mismatch)?;
    let grid = match (key_type, policy.interval) {
        (KeyType::Int(_), crate::keys::Width::Values(width)) => Some((width, policy.start)),
        _ => None,
    };
    let partitioned = relkind == "p";
    let own = if partitioned {
        leaves.iter().cloned().collect()
    } else {
        BTreeSet::from([name.name.clone()])
    };
    Ok(Target {
        shape: TableShape {
            name: name.clone(),
            key: policy.column.clone(),
            key_type,
            columns,
        },
        layout: Layout {
            partitioned,
            partitions: if partitioned { leaves.len() } else { 0 },
        },
        own,
        timezone: policy.timezone,
        grid,
    })
}

/// The reference day (the newest key value, or `today` when the table holds future rows) and a
/// property with many rows in the month before it.
pub async fn choose_parameters(
    conn: &mut PgConnection,
    target: &Target,
    today: NaiveDate,
) -> Result<Parameters> {
    let table = target.shape.name.quoted();
    let key = quote_ident(&target.shape.key);
    let no_rows = || -> Error {
        BenchError::NoRows {
            table: target.shape.name.to_string(),
            key: key.clone(),
        }
        .into()
    };
    let (reference, ranges) = match (target.shape.key_type, target.grid) {
        (KeyType::Int(_), Some((width, start))) => {
            let (oldest, newest): (Option<i64>, Option<i64>) = sqlx::query_as(&format!(
                "SELECT min({key})::int8, max({key})::int8 FROM {table}"
            ))
            .fetch_one(&mut *conn)
            .await?;
            let (Some(oldest), Some(newest)) = (oldest, newest) else {
                return Err(no_rows());
            };
            (
                today,
                Some(ValueRanges::for_data(oldest, newest, width, start)),
            )
        }
        (KeyType::Epoch(_, unit), _) => {
            let newest: Option<i64> =
                sqlx::query_scalar(&format!("SELECT max({key})::int8 FROM {table}"))
                    .fetch_one(&mut *conn)
                    .await?;
            let instant = crate::keys::epoch_to_instant(newest.ok_or_else(no_rows)?, unit);
            (day_of(instant, target, today).min(today), None)
        }
        (KeyType::Uuid, _) => {
            let (_, max) = crate::bounds::min_max_sql(KeyType::Uuid, &key);
            let newest: Option<String> =
                sqlx::query_scalar(&format!("SELECT ({max})::text FROM {table}"))
                    .fetch_one(&mut *conn)
                    .await?;
            // The first 48 bits of a UUIDv7 are its Unix milliseconds.
            let instant = crate::keys::parse_uuid(&newest.ok_or_else(no_rows)?)
                .and_then(|u| DateTime::from_timestamp_millis((u >> 80) as i64));
            (day_of(instant, target, today).min(today), None)
        }
        _ => {
            let newest: Option<NaiveDate> =
                sqlx::query_scalar(&format!("SELECT max({key})::date FROM {table}"))
                    .fetch_one(&mut *conn)
                    .await?;
            (newest.ok_or_else(no_rows)?.min(today), None)
        }
    };
    if target.shape.property_problem().is_some() {
        return Ok(Parameters {
            reference,
            property: None,
            ranges,
        });
    }
    let property_col = quote_ident(PROPERTY_COLUMN);
    let month = match &ranges {
        Some(r) => [Bind::Value(r.period.0), Bind::Value(r.period.1)],
        None => {
            let m = Windows::for_reference(reference).month;
            [Bind::Day(m.0), Bind::Day(m.1)]
        }
    };
    let (p1, p2) = (key_param(&target.shape, 1), key_param(&target.shape, 2));
    let pick = |sample: &str| {
        format!(
            "SELECT {property_col}::text FROM {table} {sample} \
             WHERE {property_col} IS NOT NULL AND {key} >= {p1} AND {key} < {p2} \
             GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1"
        )
    };
    let sampled = pick(&format!(
        "TABLESAMPLE SYSTEM ({PROPERTY_SAMPLE_PERCENT}) REPEATABLE (0)"
    ));
    let mut property: Option<String> = scalar_binds(sqlx::query_scalar(&sampled), &month, target)
        .fetch_optional(&mut *conn)
        .await?;
    if property.is_none() {
        property = scalar_binds(sqlx::query_scalar(&pick("")), &month, target)
            .fetch_optional(&mut *conn)
            .await?;
    }
    Ok(Parameters {
        reference,
        property,
        ranges,
    })
}

/// The calendar day (in the table's zone) of the newest key's instant; `today` when the value
/// stands for no instant.
fn day_of(instant: Option<DateTime<Utc>>, target: &Target, today: NaiveDate) -> NaiveDate {
    instant
        .map(|t| t.with_timezone(&target.timezone).date_naive())
        .unwrap_or(today)
}

/// Binds each value the way [`bind_all`] does, on a scalar query.
fn scalar_binds<'q, O>(
    mut q: sqlx::query::QueryScalar<'q, Postgres, O, PgArguments>,
    binds: &'q [Bind],
    target: &Target,
) -> sqlx::query::QueryScalar<'q, Postgres, O, PgArguments> {
    for b in binds {
        q = match key_value(b, target) {
            KeyValue::Text(s) => q.bind(s),
            KeyValue::Date(d) => q.bind(d),
            KeyValue::Timestamp(t) => q.bind(t),
            KeyValue::TimestampTz(t) => q.bind(t),
            KeyValue::Int(v) => q.bind(v),
        };
    }
    q
}

enum KeyValue {
    Text(String),
    Date(NaiveDate),
    Timestamp(chrono::NaiveDateTime),
    TimestampTz(DateTime<Utc>),
    Int(i64),
}

/// A bind as the key column's type. A day is its midnight: for timestamptz, epoch and uuid keys
/// midnight in the table's zone, as Unix time in the key's unit for epoch keys and as the
/// smallest UUIDv7 of that millisecond (text, cast in the SQL) for uuid keys, as bounds are.
fn key_value(bind: &Bind, target: &Target) -> KeyValue {
    let day = match bind {
        Bind::Text(s) => return KeyValue::Text(s.clone()),
        Bind::Value(v) => return KeyValue::Int(*v),
        Bind::Day(day) => *day,
    };
    let midnight = day.and_hms_opt(0, 0, 0).expect("midnight exists");
    let instant = || {
        target
            .timezone
            .from_local_datetime(&midnight)
            .earliest()
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|| Utc.from_utc_datetime(&midnight))
    };
    match target.shape.key_type {
        KeyType::Date => KeyValue::Date(day),
        KeyType::Timestamp => KeyValue::Timestamp(midnight),
        KeyType::TimestampTz => KeyValue::TimestampTz(instant()),
        // Midnight is a whole second, so it is a whole number of every unit; only a day beyond
        // the i64 range (nanoseconds after 2262) has no value, and sorts after them all.
        KeyType::Epoch(_, unit) => KeyValue::Int(
            crate::keys::instant_to_epoch(instant(), unit).unwrap_or(if day.year() < 1970 {
                i64::MIN
            } else {
                i64::MAX
            }),
        ),
        // Before 1970 no UUIDv7 exists: the smallest uuid then.
        KeyType::Uuid => KeyValue::Text(crate::keys::uuid_text(
            crate::keys::uuid_floor(instant()).unwrap_or(0),
        )),
        // Plain integer keys are asked with `Bind::Value`; a day of a `[[bench]]` query cannot
        // reach here (its `{reference}` is the newest value then).
        KeyType::Int(_) => KeyValue::Int(crate::keys::point_int(instant()).unwrap_or(0)),
    }
}

fn bind_all<'q>(
    mut q: Query<'q, Postgres, PgArguments>,
    binds: &'q [Bind],
    target: &Target,
) -> Query<'q, Postgres, PgArguments> {
    for b in binds {
        q = match key_value(b, target) {
            KeyValue::Text(s) => q.bind(s),
            KeyValue::Date(d) => q.bind(d),
            KeyValue::Timestamp(t) => q.bind(t),
            KeyValue::TimestampTz(t) => q.bind(t),
            KeyValue::Int(v) => q.bind(v),
        };
    }
    q
}

/// One warm-up run then `runs` timed runs of one class.
pub async fn measure(
    conn: &mut PgConnection,
    target: &Target,
    class: &QueryClass,
    runs: u32,
) -> Result<report::ClassResult> {
    let sql = format!("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {}", class.sql);
    let mut timed = Vec::with_capacity(runs as usize);
    for i in 0..WARMUP_RUNS + runs {
        // Unnamed statements: planned with the actual values each time, as an ad-hoc query is.
        let row = bind_all(sqlx::query(&sql), &class.binds, target)
            .persistent(false)
            .fetch_one(&mut *conn)
            .await
            .map_err(|source| BenchError::Query {
                label: class.label.to_string(),
                sql: class.sql.clone(),
                source,
            })?;
        // The plan is a json value, whose wire form is its text.
        let text: String = row.try_get_unchecked(0)?;
        let figures = explain::parse(&text).map_err(|source| BenchError::Plan {
            label: class.label.to_string(),
            source,
        })?;
        if i >= WARMUP_RUNS {
            timed.push(figures);
        }
    }
    Ok(report::summarize(
        &class.key,
        &class.label,
        &class.sql,
        &timed,
        &target.own,
    ))
}

/// Measures every class on the table. `parameters` come from a saved run when comparing.
pub async fn run(
    conn: &mut PgConnection,
    policy: &TablePolicy,
    custom: &[&BenchQuery],
    runs: u32,
    parameters: Option<Parameters>,
    now: DateTime<Utc>,
) -> Result<BenchReport> {
    sqlx::raw_sql("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        .execute(&mut *conn)
        .await?;
    let server_version: String = sqlx::query_scalar("SELECT version()")
        .fetch_one(&mut *conn)
        .await?;
    let target = inspect(conn, policy).await?;
    let parameters = match parameters {
        Some(p) => p,
        None => choose_parameters(conn, &target, now.date_naive()).await?,
    };
    let (mut classes, mut skipped) = queries::default_classes(&target.shape, &parameters);
    for q in custom {
        match queries::custom_class(&target.shape, &parameters, &q.name, &q.sql) {
            Ok(c) => classes.push(c),
            Err(s) => skipped.push(s),
        }
    }
    for s in &skipped {
        tracing::info!(class = %s.label, reason = %s.reason, "skipped");
    }
    let mut results = Vec::with_capacity(classes.len());
    for class in &classes {
        tracing::info!(class = %class.label, warmup = WARMUP_RUNS, runs, "measuring");
        results.push(measure(conn, &target, class, runs).await?);
    }
    Ok(BenchReport {
        format: FORMAT_VERSION,
        table: policy.name.to_string(),
        taken_at: now,
        server_version,
        layout: target.layout,
        warmup_runs: WARMUP_RUNS,
        runs,
        parameters,
        classes: results,
        skipped,
    })
}

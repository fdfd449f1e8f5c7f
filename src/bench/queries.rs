//! The query classes `bench` measures: the runbook's four defaults and the operator's own
//! (`[[bench]]` in the configuration), rendered to SQL with quoted identifiers and bind
//! parameters for every value. Pure: the table's shape and the parameters come in, SQL comes out.

use chrono::{Datelike, Months, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::bounds::KeyType;
use crate::ident::{quote_ident, QualifiedName};

/// The runbook's property column. The default classes that filter or group by it are skipped on
/// tables without it.
pub const PROPERTY_COLUMN: &str = "propertyId";
/// The value the analytics class averages.
pub const PRICE_COLUMN: &str = "price";
/// Days of "recent data": the reference day and the six before it.
pub const RECENT_DAYS: u64 = 7;
/// Rows the recent-data fetch asks for, as a dashboard page would.
pub const RECENT_LIMIT: i64 = 100;
/// Months the analytics aggregation covers.
pub const ANALYTICS_MONTHS: u32 = 3;

/// Placeholders a `[[bench]]` query may use: `{table}` and `{key}` become quoted identifiers,
/// `{property}` and `{reference}` become bind parameters.
pub const PLACEHOLDERS: [&str; 4] = ["table", "key", "property", "reference"];

/// What `bench` needs to know about the table.
#[derive(Debug, Clone)]
pub struct TableShape {
    pub name: QualifiedName,
    pub key: String,
    pub key_type: KeyType,
    /// Every column with its type as `format_type` prints it.
    pub columns: Vec<(String, String)>,
}

impl TableShape {
    fn column_type(&self, name: &str) -> Option<&str> {
        self.columns
            .iter()
            .find(|(c, _)| c == name)
            .map(|(_, t)| t.as_str())
    }

    /// Why the property classes cannot run here, if they cannot.
    pub fn property_problem(&self) -> Option<String> {
        match self.column_type(PROPERTY_COLUMN) {
            None => Some(format!(
                "the table has no {} column",
                quote_ident(PROPERTY_COLUMN)
            )),
            Some(t) if is_text(t) => None,
            Some(t) => Some(format!(
                "{} is of type {t}; the default classes bind it as text",
                quote_ident(PROPERTY_COLUMN)
            )),
        }
    }
}

fn is_text(pg_type: &str) -> bool {
    pg_type == "text" || pg_type.starts_with("character varying") || pg_type == "citext"
}

/// The values the queries are run with. Saved with the results, and reused by `--compare` so
/// that before and after ask exactly the same questions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parameters {
    /// The newest key value, or today when the table holds future rows: "recent" ends here and
    /// the month windows end at the start of its month.
    pub reference: NaiveDate,
    /// A frequent value of `"propertyId"`, when the table has that column.
    pub property: Option<String>,
    /// Plain integer keys: the key ranges asked about instead of the date windows (`reference`
    /// is then only the day of the run). Absent for every other key and in older saved files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranges: Option<ValueRanges>,
}

/// Half-open ranges of a plain integer key, on the partition grid (`tables[].interval` values
/// counted from `tables[].start`): what the date windows are for time keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueRanges {
    /// The newest key value (`{reference}` of a `[[bench]]` query).
    pub newest: i64,
    /// One whole period: the one before the newest value's period, or that period itself when
    /// no data lies before it (the "one month" of a date key).
    pub period: (i64, i64),
    /// Up to three periods ending where `period` ends, none starting before the oldest value's
    /// period (the "three months" of the analytics class).
    pub periods: (i64, i64),
    /// The newest value's period up to and including the newest value ("recent data").
    pub recent: (i64, i64),
}

impl ValueRanges {
    /// The ranges for data between `oldest` and `newest` on a grid of `width` values from `start`.
    pub fn for_data(oldest: i64, newest: i64, width: i64, start: i64) -> ValueRanges {
        let (current, _) = crate::keys::int_period(newest, width, start);
        let (first, _) = crate::keys::int_period(oldest, width, start);
        let period = if current > first {
            crate::keys::int_period(current - 1, width, start)
        } else {
            crate::keys::int_period(current, width, start)
        };
        let back = i128::from(width.max(1)) * i128::from(ANALYTICS_MONTHS);
        let periods_start = (i128::from(period.1) - back).max(i128::from(first)) as i64;
        ValueRanges {
            newest,
            period,
            periods: (periods_start.min(period.0), period.1),
            recent: (current, newest.saturating_add(1)),
        }
    }
}

/// One value for a bind parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    Text(String),
    /// Midnight of this day, bound as the key column's type (in the table's calendar zone for
    /// timestamptz; as Unix time for epoch keys, as the smallest UUIDv7 of that millisecond for
    /// uuid keys).
    Day(NaiveDate),
    /// A plain integer key value.
    Value(i64),
}

/// The SQL for bind parameter `n` compared with the key: uuid values are bound as text, so they
/// are cast (a constant cast, which partition pruning still sees through).
pub fn key_param(shape: &TableShape, n: usize) -> String {
    match shape.key_type {
        KeyType::Uuid => format!("${n}::uuid"),
        _ => format!("${n}"),
    }
}

/// A query ready to run.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryClass {
    /// Stable name, matched between a saved file and a new run.
    pub key: String,
    pub label: String,
    pub sql: String,
    pub binds: Vec<Bind>,
}

/// A class that could not run on this table, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub key: String,
    pub label: String,
    pub reason: String,
}

/// The half-open windows the default classes ask about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    /// The whole calendar month before the reference day's month.
    pub month: (NaiveDate, NaiveDate),
    /// The three whole months before the reference day's month.
    pub analytics: (NaiveDate, NaiveDate),
    /// The reference day and the six days before it.
    pub recent: (NaiveDate, NaiveDate),
}

impl Windows {
    pub fn for_reference(reference: NaiveDate) -> Windows {
        let this_month = reference.with_day(1).expect("day 1 exists");
        let months_back = |n| this_month - Months::new(n);
        let next_day = reference.succ_opt().unwrap_or(reference);
        Windows {
            month: (months_back(1), this_month),
            analytics: (months_back(ANALYTICS_MONTHS), this_month),
            recent: (next_day - chrono::Days::new(RECENT_DAYS), next_day),
        }
    }
}

/// The runbook's classes: property + one-month range, analytics over three months, recent data,
/// and property without the partition key (what partitioning does not help).
pub fn default_classes(shape: &TableShape, params: &Parameters) -> (Vec<QueryClass>, Vec<Skipped>) {
    let table = shape.name.quoted();
    let key = quote_ident(&shape.key);
    let property = quote_ident(PROPERTY_COLUMN);
    let price = quote_ident(PRICE_COLUMN);
    let w = Windows::for_reference(params.reference);
    let (p1, p2, p3) = (
        key_param(shape, 1),
        key_param(shape, 2),
        key_param(shape, 3),
    );
    // Plain integer keys ask about ranges of values; every other key about days.
    let (month, analytics, recent) = match &params.ranges {
        Some(r) => (
            [Bind::Value(r.period.0), Bind::Value(r.period.1)],
            [Bind::Value(r.periods.0), Bind::Value(r.periods.1)],
            [Bind::Value(r.recent.0), Bind::Value(r.recent.1)],
        ),
        None => (
            [Bind::Day(w.month.0), Bind::Day(w.month.1)],
            [Bind::Day(w.analytics.0), Bind::Day(w.analytics.1)],
            [Bind::Day(w.recent.0), Bind::Day(w.recent.1)],
        ),
    };
    let by_value = params.ranges.is_some();
    let property_problem = shape.property_problem().or_else(|| {
        params
            .property
            .is_none()
            .then(|| format!("no {property} value was found to ask for"))
    });
    let price_problem = shape
        .column_type(PRICE_COLUMN)
        .is_none()
        .then(|| format!("the table has no {price} column"));
    let value = Bind::Text(params.property.clone().unwrap_or_default());
    // (class, why it cannot run here)
    let candidates = [
        (
            QueryClass {
                key: "property_date_range".into(),
                label: if by_value {
                    "Property + key range (one period)".into()
                } else {
                    "Property + date range query".into()
                },
                sql: format!(
                    "SELECT * FROM {table} WHERE {property} = $1 AND {key} >= {p2} AND {key} < {p3}"
                ),
                binds: [vec![value.clone()], month.to_vec()].concat(),
            },
            property_problem.clone(),
        ),
        (
            QueryClass {
                key: "analytics_aggregation".into(),
                label: if by_value {
                    "Analytics aggregation (periods)".into()
                } else {
                    "Analytics aggregation".into()
                },
                sql: format!(
                    "SELECT {property}, avg({price}) AS avg_price, count(*) AS days FROM {table} \
                     WHERE {key} >= {p1} AND {key} < {p2} GROUP BY {property}"
                ),
                binds: analytics.to_vec(),
            },
            property_problem.clone().or(price_problem),
        ),
        (
            QueryClass {
                key: "recent_data".into(),
                label: if by_value {
                    "Recent data fetch (newest period)".into()
                } else {
                    "Recent data fetch".into()
                },
                sql: format!(
                    "SELECT * FROM {table} WHERE {key} >= {p1} AND {key} < {p2} \
                     ORDER BY {key} DESC LIMIT {RECENT_LIMIT}"
                ),
                binds: recent.to_vec(),
            },
            None,
        ),
        (
            QueryClass {
                key: "property_no_date".into(),
                label: "Property, no date filter".into(),
                sql: format!("SELECT * FROM {table} WHERE {property} = $1"),
                binds: vec![value],
            },
            property_problem,
        ),
    ];
    let mut classes = Vec::new();
    let mut skipped = Vec::new();
    for (class, problem) in candidates {
        match problem {
            None => classes.push(class),
            Some(reason) => skipped.push(Skipped {
                key: class.key,
                label: class.label,
                reason,
            }),
        }
    }
    (classes, skipped)
}

/// Why a `[[bench]]` query is refused (shown after the key it concerns).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("is empty; write a SELECT that names the table as {{table}}")]
    Empty,
    #[error("starts with {0}; bench runs only queries (SELECT or WITH), under EXPLAIN ANALYZE in a read-only transaction")]
    NotAQuery(String),
    #[error("uses unknown placeholder(s) {}; the known ones are {}", braced(.0), braced(&PLACEHOLDERS.iter().map(|p| p.to_string()).collect::<Vec<_>>()))]
    UnknownPlaceholders(Vec<String>),
    #[error("does not name the table; write {{table}} where it goes")]
    NoTable,
}

fn braced(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("{{{n}}}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks a `[[bench]]` query as the configuration is validated: a single read query (SELECT or
/// WITH), naming the table through `{table}`, with no unknown placeholder.
pub fn check_template(sql: &str) -> Result<(), TemplateError> {
    let first = sql
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    if first.is_empty() {
        return Err(TemplateError::Empty);
    }
    if first != "SELECT" && first != "WITH" && !first.starts_with("SELECT(") {
        return Err(TemplateError::NotAQuery(first));
    }
    let names = placeholders(sql);
    let unknown: Vec<String> = names
        .iter()
        .filter(|n| !PLACEHOLDERS.contains(&n.as_str()))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return Err(TemplateError::UnknownPlaceholders(unknown));
    }
    if !names.iter().any(|n| n == "table") {
        return Err(TemplateError::NoTable);
    }
    Ok(())
}

/// Renders a checked `[[bench]]` query: identifiers quoted, each value placeholder one bind
/// parameter (numbered in order of first use).
pub fn custom_class(
    shape: &TableShape,
    params: &Parameters,
    name: &str,
    template: &str,
) -> Result<QueryClass, Skipped> {
    let skip = |reason: String| Skipped {
        key: format!("custom:{name}"),
        label: name.to_string(),
        reason,
    };
    let mut binds: Vec<(String, Bind)> = Vec::new();
    let mut sql = String::with_capacity(template.len());
    let mut rest = template;
    while let Some((before, placeholder, after)) = next_placeholder(rest) {
        sql.push_str(before);
        match placeholder {
            "table" => sql.push_str(&shape.name.quoted()),
            "key" => sql.push_str(&quote_ident(&shape.key)),
            "property" | "reference" => {
                let n = match binds.iter().position(|(p, _)| p == placeholder) {
                    Some(i) => i + 1,
                    None => {
                        let value = if placeholder == "reference" {
                            match &params.ranges {
                                Some(r) => Bind::Value(r.newest),
                                None => Bind::Day(params.reference),
                            }
                        } else {
                            if let Some(problem) = shape.property_problem() {
                                return Err(skip(problem));
                            }
                            match &params.property {
                                Some(p) => Bind::Text(p.clone()),
                                None => return Err(skip("no property value was found".into())),
                            }
                        };
                        binds.push((placeholder.to_string(), value));
                        binds.len()
                    }
                };
                if placeholder == "reference" {
                    sql.push_str(&key_param(shape, n));
                } else {
                    sql.push_str(&format!("${n}"));
                }
            }
            other => return Err(skip(format!("unknown placeholder {{{other}}}"))),
        }
        rest = after;
    }
    sql.push_str(rest);
    Ok(QueryClass {
        key: format!("custom:{name}"),
        label: name.to_string(),
        sql,
        binds: binds.into_iter().map(|(_, b)| b).collect(),
    })
}

/// Every `{name}` (lower-case letters and underscores) outside string literals and quoted
/// identifiers; other braces are left alone, so array literals such as `'{a,b}'` pass through.
fn placeholders(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some((_, name, after)) = next_placeholder(rest) {
        out.push(name.to_string());
        rest = after;
    }
    out
}

/// Splits at the first placeholder: (text before, name, text after).
fn next_placeholder(text: &str) -> Option<(&str, &str, &str)> {
    let mut quote: Option<char> = None;
    for (i, c) in text.char_indices() {
        match (quote, c) {
            // A doubled quote inside a literal closes and reopens it, which comes out the same.
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '{') => {
                let tail = &text[i + 1..];
                let len = tail
                    .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                    .unwrap_or(tail.len());
                if len > 0 && tail[len..].starts_with('}') {
                    return Some((&text[..i], &tail[..len], &tail[len + 1..]));
                }
            }
            (None, _) => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn pricing(columns: &[(&str, &str)]) -> TableShape {
        TableShape {
            name: QualifiedName::new("public", "pricing_data"),
            key: "date".into(),
            key_type: KeyType::Date,
            columns: columns
                .iter()
                .map(|(c, t)| (c.to_string(), t.to_string()))
                .collect(),
        }
    }

    fn runbook_shape() -> TableShape {
        pricing(&[
            ("id", "bigint"),
            ("propertyId", "text"),
            ("date", "date"),
            ("price", "numeric(10,2)"),
        ])
    }

    fn params() -> Parameters {
        Parameters {
            reference: day(2025, 3, 15),
            property: Some("prop-7".into()),
            ranges: None,
        }
    }

    #[test]
    fn integer_ranges_follow_the_partition_grid() {
        // Data 0..=4_099 in periods of 1000: the newest period is 4000..5000.
        let r = ValueRanges::for_data(0, 4_099, 1000, 0);
        assert_eq!(r.period, (3000, 4000));
        assert_eq!(r.periods, (1000, 4000));
        assert_eq!(r.recent, (4000, 4100));
        // Only two periods before: the analytics range starts at the oldest one.
        let r = ValueRanges::for_data(1_500, 3_200, 1000, 0);
        assert_eq!((r.period, r.periods), ((2000, 3000), (1000, 3000)));
        // All data in one period: that period is the one asked about.
        let r = ValueRanges::for_data(10, 20, 1000, 5);
        assert_eq!(
            (r.period, r.periods, r.recent),
            ((5, 1005), (5, 1005), (5, 21))
        );
    }

    #[test]
    fn integer_keys_bind_values_and_uuid_keys_cast_their_parameters() {
        let mut p = params();
        p.ranges = Some(ValueRanges::for_data(0, 4_099, 1000, 0));
        let mut shape = runbook_shape();
        shape.key_type = KeyType::Int(crate::keys::IntWidth::BigInt);
        let (classes, _) = default_classes(&shape, &p);
        assert_eq!(classes[0].label, "Property + key range (one period)");
        assert_eq!(
            classes[0].binds,
            [
                Bind::Text("prop-7".into()),
                Bind::Value(3000),
                Bind::Value(4000)
            ]
        );
        let c = custom_class(
            &shape,
            &p,
            "x",
            "SELECT * FROM {table} WHERE {key} = {reference}",
        )
        .unwrap();
        assert_eq!(c.binds, [Bind::Value(4_099)]);
        shape.key_type = KeyType::Uuid;
        let (classes, _) = default_classes(&shape, &params());
        assert!(
            classes[0]
                .sql
                .ends_with(r#""date" >= $2::uuid AND "date" < $3::uuid"#),
            "{}",
            classes[0].sql
        );
    }

    #[test]
    fn windows_are_whole_months_before_the_reference_month() {
        let w = Windows::for_reference(day(2025, 3, 15));
        assert_eq!(w.month, (day(2025, 2, 1), day(2025, 3, 1)));
        assert_eq!(w.analytics, (day(2024, 12, 1), day(2025, 3, 1)));
        assert_eq!(w.recent, (day(2025, 3, 9), day(2025, 3, 16)));
    }

    #[test]
    fn windows_across_a_year_end() {
        let w = Windows::for_reference(day(2026, 1, 1));
        assert_eq!(w.month, (day(2025, 12, 1), day(2026, 1, 1)));
        assert_eq!(w.analytics, (day(2025, 10, 1), day(2026, 1, 1)));
        assert_eq!(w.recent, (day(2025, 12, 26), day(2026, 1, 2)));
    }

    #[test]
    fn the_runbook_shape_gets_all_four_classes_with_values_as_bind_parameters() {
        let (classes, skipped) = default_classes(&runbook_shape(), &params());
        assert!(skipped.is_empty(), "{skipped:?}");
        let keys: Vec<&str> = classes.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "property_date_range",
                "analytics_aggregation",
                "recent_data",
                "property_no_date"
            ]
        );
        let first = &classes[0];
        assert_eq!(
            first.sql,
            r#"SELECT * FROM "public"."pricing_data" WHERE "propertyId" = $1 AND "date" >= $2 AND "date" < $3"#
        );
        assert_eq!(
            first.binds,
            [
                Bind::Text("prop-7".into()),
                Bind::Day(day(2025, 2, 1)),
                Bind::Day(day(2025, 3, 1))
            ]
        );
        for c in &classes {
            assert!(
                !c.sql.contains("prop-7") && !c.sql.contains("2025"),
                "{}",
                c.sql
            );
        }
    }

    #[test]
    fn a_table_without_property_id_keeps_only_the_recent_fetch() {
        let shape = pricing(&[("id", "bigint"), ("date", "date"), ("price", "numeric")]);
        let (classes, skipped) = default_classes(&shape, &params());
        assert_eq!(classes.len(), 1);
        assert_eq!(classes[0].key, "recent_data");
        assert_eq!(skipped.len(), 3);
        assert!(skipped.iter().all(|s| s.reason.contains("propertyId")));
    }

    #[test]
    fn a_non_text_property_id_is_skipped_with_its_type() {
        let shape = pricing(&[("propertyId", "uuid"), ("date", "date"), ("price", "real")]);
        let (_, skipped) = default_classes(&shape, &params());
        assert!(skipped[0].reason.contains("uuid"), "{skipped:?}");
    }

    #[test]
    fn custom_queries_quote_identifiers_and_bind_values_once_each() {
        let c = custom_class(
            &runbook_shape(),
            &params(),
            "upcoming week",
            "SELECT * FROM {table} WHERE \"propertyId\" = {property} AND {key} >= {reference} \
             AND {key} < {reference} + 7 AND tags @> '{a}'::text[] AND x ~ 'a{2}' AND y <> '{key}'",
        )
        .unwrap();
        assert_eq!(
            c.sql,
            "SELECT * FROM \"public\".\"pricing_data\" WHERE \"propertyId\" = $1 AND \"date\" >= $2 \
             AND \"date\" < $2 + 7 AND tags @> '{a}'::text[] AND x ~ 'a{2}' AND y <> '{key}'"
        );
        assert_eq!(
            c.binds,
            [Bind::Text("prop-7".into()), Bind::Day(day(2025, 3, 15))]
        );
        assert_eq!(c.key, "custom:upcoming week");
    }

    #[test]
    fn templates_are_checked_before_anything_runs() {
        assert!(check_template("SELECT count(*) FROM {table}").is_ok());
        assert!(check_template("with x as (select 1) select * from {table}, x").is_ok());
        let cases = [
            ("", "empty"),
            ("DELETE FROM {table}", "DELETE"),
            ("SELECT * FROM pricing_data", "{table}"),
            ("SELECT * FROM {table} WHERE d > {today}", "{today}"),
        ];
        for (sql, expected) in cases {
            let err = check_template(sql).unwrap_err();
            assert!(err.to_string().contains(expected), "{sql}: {err}");
        }
    }
}

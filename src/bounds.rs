//! Partition bounds as PostgreSQL prints them and as partkeeper writes them: parses the text of
//! `pg_get_expr(c.relpartbound, c.oid)` for a RANGE partition on one date, timestamp,
//! timestamptz, integer or uuid column, and renders bound literals for DDL.
//!
//! The catalog is read with `TimeZone=UTC` and `DateStyle=ISO`, but any numeric UTC offset is
//! accepted. Values come back as `DateTime<Utc>` points; for `date` and `timestamp` keys that is
//! the wall-clock value dressed as UTC, as in the calendar module; for integer, epoch and uuid
//! keys see the `keys` module.

use std::fmt;

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Utc};
use serde::{Serialize, Serializer};

use crate::keys::{self, EpochUnit, IntWidth};

/// Type of the partition key column, and for integer columns how their values are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    Date,
    Timestamp,
    TimestampTz,
    /// smallint, integer or bigint partitioned by a number of values.
    Int(IntWidth),
    /// smallint, integer or bigint holding Unix time (`epoch`), partitioned by the calendar.
    Epoch(IntWidth, EpochUnit),
    /// uuid holding UUIDv7 values, partitioned by the calendar of their timestamps.
    Uuid,
}

// The column's type name, as part 1 wrote it ("date", "timestamptz").
impl Serialize for KeyType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.sql_name())
    }
}

impl KeyType {
    /// Reads PostgreSQL's type names as `format_type` prints them ("date",
    /// "timestamp without time zone", "timestamp(3) with time zone") and the short aliases
    /// "timestamp" and "timestamptz".
    pub fn from_pg_type(name: &str) -> Option<KeyType> {
        let name = name.trim().to_ascii_lowercase();
        // A precision such as "(3)" does not change which kind of value the column holds.
        let name = match (name.find('('), name.find(')')) {
            (Some(open), Some(close)) if open < close => {
                format!("{}{}", &name[..open], &name[close + 1..])
            }
            _ => name,
        };
        match name.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["date"] => Some(KeyType::Date),
            ["timestamp"] | ["timestamp", "without", "time", "zone"] => Some(KeyType::Timestamp),
            ["timestamptz"] | ["timestamp", "with", "time", "zone"] => Some(KeyType::TimestampTz),
            ["smallint"] | ["int2"] => Some(KeyType::Int(IntWidth::SmallInt)),
            ["integer"] | ["int"] | ["int4"] => Some(KeyType::Int(IntWidth::Integer)),
            ["bigint"] | ["int8"] => Some(KeyType::Int(IntWidth::BigInt)),
            ["uuid"] => Some(KeyType::Uuid),
            _ => None,
        }
    }

    /// Name to use in SQL casts.
    pub fn sql_name(&self) -> &'static str {
        match self {
            KeyType::Date => "date",
            KeyType::Timestamp => "timestamp",
            KeyType::TimestampTz => "timestamptz",
            KeyType::Int(w) | KeyType::Epoch(w, _) => w.sql_name(),
            KeyType::Uuid => "uuid",
        }
    }

    /// Whether the key's points are instants or wall-clock times, planned on the calendar
    /// (everything but plain integers).
    pub fn is_calendar(&self) -> bool {
        !matches!(self, KeyType::Int(_))
    }

    /// What a literal of this type looks like, for error messages.
    fn example(&self) -> &'static str {
        match self {
            KeyType::Date => "a date like '2026-01-01'",
            KeyType::Timestamp => "a timestamp like '2026-01-01 00:00:00'",
            KeyType::TimestampTz => "a timestamp with offset like '2026-01-01 00:00:00+00'",
            KeyType::Int(_) => "an integer like 1000000",
            KeyType::Epoch(..) => "an integer number of Unix-time units like 1767225600000",
            KeyType::Uuid => "a uuid like '01901234-5678-7000-8000-000000000000'",
        }
    }
}

/// One end of a range bound. The derived order is the one PostgreSQL uses:
/// MINVALUE < every value < MAXVALUE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BoundValue {
    MinValue,
    Value(DateTime<Utc>),
    MaxValue,
}

impl fmt::Display for BoundValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BoundValue::MinValue => f.write_str("MINVALUE"),
            BoundValue::Value(v) => write!(f, "{}", v.to_rfc3339()),
            BoundValue::MaxValue => f.write_str("MAXVALUE"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PartitionBound {
    Default,
    Range { from: BoundValue, to: BoundValue },
}

#[derive(Debug, thiserror::Error)]
pub enum BoundsError {
    #[error(
        "partition bound {found:?} is a {kind} bound; partkeeper manages RANGE-partitioned \
         tables only"
    )]
    NotRange { kind: &'static str, found: String },
    #[error(
        "partition bound {found:?} has {columns} key columns; partkeeper manages tables \
         partitioned on a single date, timestamp or timestamptz column"
    )]
    MultiColumn { columns: usize, found: String },
    #[error("cannot read partition bound {found:?}: expected {expected} at byte {at}")]
    Syntax {
        found: String,
        at: usize,
        expected: &'static str,
    },
    #[error("partition bound value {found:?} is not {expected}, which a {key} key needs")]
    BadValue {
        found: String,
        key: &'static str,
        expected: &'static str,
    },
    #[error(
        "partition bound value {found:?} is a BC date; partkeeper handles years 1 AD and later"
    )]
    BcDate { found: String },
    #[error(
        "{value} is not midnight, but a date partition key holds whole days; align the bound to \
         a day"
    )]
    NotMidnight { value: DateTime<Utc> },
    #[error(
        "{value} has sub-microsecond precision, which PostgreSQL cannot store; round it to \
         microseconds"
    )]
    TooPrecise { value: DateTime<Utc> },
    #[error("{value} is before year 1 AD, which PostgreSQL would write as a BC date")]
    BeforeYearOne { value: DateTime<Utc> },
    #[error("{value} cannot be a {key} partition bound: {why}")]
    NotRepresentable {
        value: String,
        key: &'static str,
        why: String,
    },
    #[error("empty partition range: FROM {from} is not before TO {to}")]
    EmptyRange {
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
}

/// At most this many characters of the input are quoted back in an error.
const EXCERPT_CHARS: usize = 120;

fn excerpt(s: &str) -> String {
    let mut out: String = s.chars().take(EXCERPT_CHARS).collect();
    if s.chars().nth(EXCERPT_CHARS).is_some() {
        out.push('…');
    }
    out
}

/// Parses `pg_get_expr(relpartbound)` output: "DEFAULT" or
/// "FOR VALUES FROM (<v>) TO (<v>)" where each <v> is MINVALUE, MAXVALUE or a quoted literal of
/// the key's type ('infinity' and '-infinity' read as MAXVALUE and MINVALUE).
/// Anything else is an error naming what was found; never panics.
pub fn parse_partition_bound(expr: &str, key: KeyType) -> Result<PartitionBound, BoundsError> {
    let mut cur = Cursor { s: expr, pos: 0 };
    let syntax = |cur: &Cursor, expected| BoundsError::Syntax {
        found: excerpt(expr),
        at: cur.pos,
        expected,
    };
    if cur.keyword("DEFAULT") {
        return if cur.at_end() {
            Ok(PartitionBound::Default)
        } else {
            Err(syntax(&cur, "nothing after DEFAULT"))
        };
    }
    if !(cur.keyword("FOR") && cur.keyword("VALUES")) {
        return Err(syntax(&cur, "DEFAULT or FOR VALUES"));
    }
    let not_range = |kind| BoundsError::NotRange {
        kind,
        found: excerpt(expr),
    };
    if cur.keyword("IN") {
        return Err(not_range("LIST"));
    }
    if cur.keyword("WITH") {
        return Err(not_range("HASH"));
    }
    if !cur.keyword("FROM") {
        return Err(syntax(&cur, "FROM, IN or WITH after FOR VALUES"));
    }
    let from = cur.item_list().map_err(|e| syntax(&cur, e))?;
    if !cur.keyword("TO") {
        return Err(syntax(&cur, "TO"));
    }
    let to = cur.item_list().map_err(|e| syntax(&cur, e))?;
    if !cur.at_end() {
        return Err(syntax(&cur, "the end of the bound after TO (...)"));
    }
    let (from, to) = match (from.as_slice(), to.as_slice()) {
        ([from], [to]) => (from, to),
        _ => {
            return Err(BoundsError::MultiColumn {
                columns: from.len().max(to.len()),
                found: excerpt(expr),
            })
        }
    };
    Ok(PartitionBound::Range {
        from: bound_value(from, key)?,
        to: bound_value(to, key)?,
    })
}

/// One element of a FROM (...) or TO (...) list, before interpretation.
enum Item {
    Bare(String),
    Quoted(String),
}

fn bound_value(item: &Item, key: KeyType) -> Result<BoundValue, BoundsError> {
    match item {
        Item::Bare(word) if word.eq_ignore_ascii_case("MINVALUE") => Ok(BoundValue::MinValue),
        Item::Bare(word) if word.eq_ignore_ascii_case("MAXVALUE") => Ok(BoundValue::MaxValue),
        Item::Bare(word) if matches!(key, KeyType::Int(_) | KeyType::Epoch(..)) => {
            parse_integer(word, key)
        }
        Item::Bare(word) => Err(bad_value(word, key)),
        Item::Quoted(text) => match key {
            KeyType::Int(_) | KeyType::Epoch(..) => parse_integer(text, key),
            KeyType::Uuid => parse_uuid(text),
            _ => parse_literal(text, key),
        },
    }
}

fn bad_value(found: &str, key: KeyType) -> BoundsError {
    BoundsError::BadValue {
        found: excerpt(found),
        key: key.sql_name(),
        expected: key.example(),
    }
}

/// An integer bound (PostgreSQL prints `integer` bounds bare and `bigint`, `smallint` and
/// negative ones quoted).
fn parse_integer(text: &str, key: KeyType) -> Result<BoundValue, BoundsError> {
    let v: i64 = text.trim().parse().map_err(|_| bad_value(text, key))?;
    match key {
        KeyType::Epoch(_, unit) => keys::epoch_to_instant(v, unit)
            .map(BoundValue::Value)
            .ok_or_else(|| bad_value(text, key)),
        _ => Ok(BoundValue::Value(keys::int_point(v))),
    }
}

/// A uuid bound: partkeeper's (the smallest UUIDv7 of a millisecond) or any that cuts UUIDv7
/// values at the same place.
fn parse_uuid(text: &str) -> Result<BoundValue, BoundsError> {
    let u = keys::parse_uuid(text.trim()).ok_or_else(|| bad_value(text, KeyType::Uuid))?;
    keys::uuid_bound_instant(u)
        .map(BoundValue::Value)
        .ok_or_else(|| BoundsError::NotRepresentable {
            value: excerpt(text),
            key: "uuid",
            why: format!(
                "it lies inside a millisecond; partkeeper reads uuid bounds that are the smallest UUIDv7 of a millisecond (like {})",
                keys::uuid_text(keys::uuid_floor(chrono::DateTime::UNIX_EPOCH).unwrap_or(0))
            ),
        })
}

/// Reads an ISO literal: YYYY-MM-DD, then for timestamps " HH:MM:SS[.ffffff]", then for
/// timestamptz an offset "+HH[:MM[:SS]]". Strict per key type, so a value is never read in a
/// zone other than the one it was written in.
fn parse_literal(text: &str, key: KeyType) -> Result<BoundValue, BoundsError> {
    let trimmed = text.trim();
    match trimmed.to_ascii_lowercase().as_str() {
        "infinity" | "+infinity" => return Ok(BoundValue::MaxValue),
        "-infinity" => return Ok(BoundValue::MinValue),
        lower if lower.ends_with(" bc") => {
            return Err(BoundsError::BcDate {
                found: excerpt(text),
            })
        }
        _ => {}
    }
    let bad = || bad_value(text, key);
    let mut sc = Scanner {
        b: trimmed.as_bytes(),
        pos: 0,
    };
    let year = sc.number(4, 6).ok_or_else(bad)?;
    let month = sc.two_digits_after(b'-').ok_or_else(bad)?;
    let day = sc.two_digits_after(b'-').ok_or_else(bad)?;
    let date = i32::try_from(year)
        .ok()
        .filter(|&y| y >= 1)
        .and_then(|y| NaiveDate::from_ymd_opt(y, month, day))
        .ok_or_else(bad)?;
    if key == KeyType::Date {
        if !sc.done() {
            return Err(bad());
        }
        return Ok(BoundValue::Value(date.and_time(NaiveTime::MIN).and_utc()));
    }
    if !(sc.eat(b' ') || sc.eat(b'T')) {
        return Err(bad());
    }
    let hour = sc.number(2, 2).ok_or_else(bad)?;
    let minute = sc.two_digits_after(b':').ok_or_else(bad)?;
    let second = sc.two_digits_after(b':').ok_or_else(bad)?;
    let micros = if sc.eat(b'.') {
        sc.micros().ok_or_else(bad)?
    } else {
        0
    };
    let time = NaiveTime::from_hms_micro_opt(hour, minute, second, micros).ok_or_else(bad)?;
    let mut instant = NaiveDateTime::new(date, time);
    if key == KeyType::TimestampTz {
        let offset = sc.offset().ok_or_else(bad)?;
        instant = instant.checked_sub_offset(offset).ok_or_else(bad)?;
    }
    if !sc.done() {
        return Err(bad());
    }
    Ok(BoundValue::Value(instant.and_utc()))
}

/// SQL literal for DDL, quotes included: '2026-01-01' (date; must be midnight),
/// '2026-01-01 00:00:00' (timestamp), '2026-01-01 00:00:00+00:00' (timestamptz, with an explicit
/// offset so that the server's TimeZone setting cannot change its meaning). Fractional seconds
/// appear only when non-zero.
pub fn render_literal(v: DateTime<Utc>, key: KeyType) -> Result<String, BoundsError> {
    let unrepresentable = |why: String| BoundsError::NotRepresentable {
        value: v.to_rfc3339(),
        key: key.sql_name(),
        why,
    };
    let in_column = |n: i64, w: IntWidth| {
        let (lo, hi) = w.range();
        if (lo..=hi).contains(&n) {
            Ok(n.to_string())
        } else {
            Err(BoundsError::NotRepresentable {
                value: n.to_string(),
                key: key.sql_name(),
                why: format!("a {} holds {lo} to {hi}", w.sql_name()),
            })
        }
    };
    match key {
        KeyType::Int(w) => {
            let n = keys::point_int(v)
                .ok_or_else(|| unrepresentable("it is no integer key value".into()))?;
            return in_column(n, w);
        }
        KeyType::Epoch(w, unit) => {
            let n = keys::instant_to_epoch(v, unit).ok_or_else(|| {
                unrepresentable(format!("it is not a whole number of {unit} since 1970"))
            })?;
            return in_column(n, w);
        }
        KeyType::Uuid => {
            let u = keys::uuid_floor(v)
                .filter(|_| v.timestamp_subsec_nanos() % 1_000_000 == 0)
                .ok_or_else(|| {
                    unrepresentable(
                        "UUIDv7 bounds are whole milliseconds from 1970 to year 10889".into(),
                    )
                })?;
            return Ok(format!("'{}'", keys::uuid_text(u)));
        }
        KeyType::Date | KeyType::Timestamp | KeyType::TimestampTz => {}
    }
    if v.year() < 1 {
        return Err(BoundsError::BeforeYearOne { value: v });
    }
    // Nanoseconds of 1e9 and above are chrono's leap seconds, which PostgreSQL has no room for.
    if v.nanosecond() % 1000 != 0 || v.nanosecond() >= 1_000_000_000 {
        return Err(BoundsError::TooPrecise { value: v });
    }
    let date = format!("{:04}-{:02}-{:02}", v.year(), v.month(), v.day());
    if key == KeyType::Date {
        if v.time() != NaiveTime::MIN {
            return Err(BoundsError::NotMidnight { value: v });
        }
        return Ok(format!("'{date}'"));
    }
    let mut time = format!("{:02}:{:02}:{:02}", v.hour(), v.minute(), v.second());
    let micros = v.nanosecond() / 1000;
    if micros != 0 {
        let frac = format!("{micros:06}");
        time.push('.');
        time.push_str(frac.trim_end_matches('0'));
    }
    let offset = if key == KeyType::TimestampTz {
        "+00:00"
    } else {
        ""
    };
    Ok(format!("'{date} {time}{offset}'"))
}

/// "FOR VALUES FROM (<lit>) TO (<lit>)"; `from` must be before `to`, as PostgreSQL requires.
pub fn render_range(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    key: KeyType,
) -> Result<String, BoundsError> {
    if from >= to {
        return Err(BoundsError::EmptyRange { from, to });
    }
    Ok(format!(
        "FOR VALUES FROM ({}) TO ({})",
        render_literal(from, key)?,
        render_literal(to, key)?
    ))
}

/// Walks the bound expression. `pos` only ever moves past ASCII bytes, or to the end of the
/// input, so slicing at it is always on a character boundary.
struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl Cursor<'_> {
    fn skip_ws(&mut self) {
        while self
            .s
            .as_bytes()
            .get(self.pos)
            .is_some_and(u8::is_ascii_whitespace)
        {
            self.pos += 1;
        }
    }

    fn at_end(&mut self) -> bool {
        self.skip_ws();
        self.pos >= self.s.len()
    }

    /// Consumes `kw` (ASCII, any case) when it is next as a whole word.
    fn keyword(&mut self, kw: &str) -> bool {
        self.skip_ws();
        let bytes = self.s.as_bytes();
        let end = self.pos + kw.len();
        let matches = bytes
            .get(self.pos..end)
            .is_some_and(|w| w.eq_ignore_ascii_case(kw.as_bytes()));
        let whole_word = !bytes
            .get(end)
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_');
        if matches && whole_word {
            self.pos = end;
        }
        matches && whole_word
    }

    fn eat(&mut self, c: u8) -> bool {
        self.skip_ws();
        if self.s.as_bytes().get(self.pos) == Some(&c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// "(" item {"," item} ")"; the error names what was expected.
    fn item_list(&mut self) -> Result<Vec<Item>, &'static str> {
        if !self.eat(b'(') {
            return Err("'('");
        }
        let mut items = Vec::new();
        loop {
            items.push(self.item()?);
            if self.eat(b')') {
                return Ok(items);
            }
            if !self.eat(b',') {
                return Err("',' or ')'");
            }
        }
    }

    fn item(&mut self) -> Result<Item, &'static str> {
        self.skip_ws();
        let bytes = self.s.as_bytes();
        if bytes.get(self.pos) == Some(&b'\'') {
            // A quoted literal; '' inside stands for one quote, as in SQL.
            let mut text = String::new();
            let mut start = self.pos + 1;
            let mut i = start;
            loop {
                match bytes.get(i) {
                    None => return Err("a closing quote"),
                    Some(b'\'') if bytes.get(i + 1) == Some(&b'\'') => {
                        text.push_str(&self.s[start..=i]);
                        i += 2;
                        start = i;
                    }
                    Some(b'\'') => {
                        text.push_str(&self.s[start..i]);
                        self.pos = i + 1;
                        return Ok(Item::Quoted(text));
                    }
                    Some(_) => i += 1,
                }
            }
        }
        let start = self.pos;
        while bytes
            .get(self.pos)
            .is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            self.pos += 1;
        }
        if self.pos == start {
            return Err("a quoted value, MINVALUE or MAXVALUE");
        }
        Ok(Item::Bare(self.s[start..self.pos].to_string()))
    }
}

/// Reads the fixed-width fields of a date/time literal.
struct Scanner<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Scanner<'_> {
    /// Between `min` and `max` ASCII digits.
    fn number(&mut self, min: usize, max: usize) -> Option<u32> {
        let start = self.pos;
        let mut value: u32 = 0;
        while self.pos - start < max {
            match self.b.get(self.pos) {
                Some(d) if d.is_ascii_digit() => {
                    value = value * 10 + u32::from(d - b'0');
                    self.pos += 1;
                }
                _ => break,
            }
        }
        (self.pos - start >= min).then_some(value)
    }

    fn eat(&mut self, c: u8) -> bool {
        let found = self.b.get(self.pos) == Some(&c);
        if found {
            self.pos += 1;
        }
        found
    }

    /// `sep` then two digits, as in "-03" or ":30".
    fn two_digits_after(&mut self, sep: u8) -> Option<u32> {
        if self.eat(sep) {
            self.number(2, 2)
        } else {
            None
        }
    }

    /// The 1 to 6 digits after the decimal point, as microseconds.
    fn micros(&mut self) -> Option<u32> {
        let start = self.pos;
        let digits = self.number(1, 6)?;
        let width = u32::try_from(self.pos - start).ok()?;
        Some(digits * 10u32.pow(6 - width))
    }

    /// "+HH", "+HH:MM" or "+HH:MM:SS" (or '-'), as PostgreSQL prints UTC offsets.
    fn offset(&mut self) -> Option<FixedOffset> {
        let sign = if self.eat(b'+') {
            1
        } else if self.eat(b'-') {
            -1
        } else {
            return None;
        };
        let hours = self.number(2, 2)?;
        let minutes = self.two_digits_after(b':').unwrap_or(0);
        let seconds = self.two_digits_after(b':').unwrap_or(0);
        // PostgreSQL's own limit for offsets is 15:59:59.
        if hours > 15 || minutes > 59 || seconds > 59 {
            return None;
        }
        let secs = i32::try_from(hours * 3600 + minutes * 60 + seconds).ok()?;
        FixedOffset::east_opt(sign * secs)
    }

    fn done(&self) -> bool {
        self.pos == self.b.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// "2026-03-31" or "2026-03-31 22:30:15", read as UTC.
    fn t(s: &str) -> DateTime<Utc> {
        let full = if s.len() == 10 {
            format!("{s} 00:00:00")
        } else {
            s.to_string()
        };
        NaiveDateTime::parse_from_str(&full, "%Y-%m-%d %H:%M:%S")
            .unwrap_or_else(|e| panic!("bad test instant {s:?}: {e}"))
            .and_utc()
    }

    fn v(s: &str) -> BoundValue {
        BoundValue::Value(t(s))
    }

    fn range(from: BoundValue, to: BoundValue) -> PartitionBound {
        PartitionBound::Range { from, to }
    }

    fn value(t: DateTime<Utc>) -> BoundValue {
        BoundValue::Value(t)
    }

    const KEYS: [KeyType; 3] = [KeyType::Date, KeyType::Timestamp, KeyType::TimestampTz];

    #[test]
    fn key_types_from_catalog_names() {
        let cases = [
            ("date", Some(KeyType::Date)),
            ("timestamp without time zone", Some(KeyType::Timestamp)),
            ("timestamp", Some(KeyType::Timestamp)),
            ("timestamp(3) without time zone", Some(KeyType::Timestamp)),
            ("timestamp with time zone", Some(KeyType::TimestampTz)),
            ("TIMESTAMPTZ", Some(KeyType::TimestampTz)),
            ("timestamp(0) with time zone", Some(KeyType::TimestampTz)),
            ("integer", Some(KeyType::Int(IntWidth::Integer))),
            ("bigint", Some(KeyType::Int(IntWidth::BigInt))),
            ("smallint", Some(KeyType::Int(IntWidth::SmallInt))),
            ("uuid", Some(KeyType::Uuid)),
            ("numeric", None),
            ("time with time zone", None),
            ("", None),
            ("timestamp(", None),
        ];
        for (name, want) in cases {
            assert_eq!(KeyType::from_pg_type(name), want, "{name:?}");
        }
        for key in KEYS {
            assert_eq!(KeyType::from_pg_type(key.sql_name()), Some(key));
        }
    }

    #[test]
    fn integer_epoch_and_uuid_bounds_as_postgres_prints_them() {
        let int = KeyType::Int(IntWidth::BigInt);
        let iv = |a: i64, b: i64| range(value(keys::int_point(a)), value(keys::int_point(b)));
        // integer bounds come bare, bigint and negative ones quoted.
        for (expr, want) in [
            ("FOR VALUES FROM (0) TO (1000000)", iv(0, 1_000_000)),
            (
                "FOR VALUES FROM ('1000000') TO ('2000000')",
                iv(1_000_000, 2_000_000),
            ),
            ("FOR VALUES FROM ('-1000') TO (0)", iv(-1000, 0)),
        ] {
            assert_eq!(parse_partition_bound(expr, int).unwrap(), want, "{expr}");
        }
        let got = parse_partition_bound("FOR VALUES FROM (MINVALUE) TO ('5')", int).unwrap();
        assert_eq!(got, range(BoundValue::MinValue, value(keys::int_point(5))));

        let ms = KeyType::Epoch(IntWidth::BigInt, EpochUnit::Milliseconds);
        let got =
            parse_partition_bound("FOR VALUES FROM ('1764547200000') TO ('1764550800000')", ms);
        assert_eq!(
            got.unwrap(),
            range(v("2025-12-01"), v("2025-12-01 01:00:00"))
        );

        let got = parse_partition_bound(
            "FOR VALUES FROM ('019ad735-8400-7000-8000-000000000000') TO ('019ad76c-7280-7000-8000-000000000000')",
            KeyType::Uuid,
        );
        assert_eq!(
            got.unwrap(),
            range(v("2025-12-01"), v("2025-12-01 01:00:00"))
        );
        let inside = parse_partition_bound(
            "FOR VALUES FROM ('019ad735-8400-7000-8000-000000000001') TO (MAXVALUE)",
            KeyType::Uuid,
        );
        assert!(inside
            .unwrap_err()
            .to_string()
            .contains("inside a millisecond"));
    }

    #[test]
    fn integer_epoch_and_uuid_literals_render_and_parse_back() {
        let cases = [
            (
                KeyType::Int(IntWidth::BigInt),
                keys::int_point(-1000),
                "-1000",
            ),
            (
                KeyType::Int(IntWidth::Integer),
                keys::int_point(2_000_000),
                "2000000",
            ),
            (
                KeyType::Epoch(IntWidth::BigInt, EpochUnit::Seconds),
                t("2025-12-01"),
                "1764547200",
            ),
            (
                KeyType::Epoch(IntWidth::BigInt, EpochUnit::Nanoseconds),
                t("2025-12-01"),
                "1764547200000000000",
            ),
            (
                KeyType::Uuid,
                t("2025-12-01"),
                "'019ad735-8400-7000-8000-000000000000'",
            ),
        ];
        for (key, point, want) in cases {
            let lit = render_literal(point, key).unwrap();
            assert_eq!(lit, want);
            let expr = format!("FOR VALUES FROM ({lit}) TO (MAXVALUE)");
            assert_eq!(
                parse_partition_bound(&expr, key).unwrap(),
                range(value(point), BoundValue::MaxValue)
            );
        }
        // Values a column cannot hold are refused before PostgreSQL sees them.
        let small = render_literal(keys::int_point(40_000), KeyType::Int(IntWidth::SmallInt));
        assert!(small.unwrap_err().to_string().contains("-32768 to 32767"));
        let secs = KeyType::Epoch(IntWidth::BigInt, EpochUnit::Seconds);
        assert!(render_literal(
            t("2025-12-01 00:00:00") + chrono::TimeDelta::milliseconds(5),
            secs
        )
        .is_err());
    }

    #[test]
    fn default_partition() {
        for expr in ["DEFAULT", " default "] {
            assert_eq!(
                parse_partition_bound(expr, KeyType::Date).unwrap(),
                PartitionBound::Default
            );
        }
    }

    #[test]
    fn date_bounds() {
        let got = parse_partition_bound(
            "FOR VALUES FROM ('2026-01-01') TO ('2026-02-01')",
            KeyType::Date,
        );
        assert_eq!(got.unwrap(), range(v("2026-01-01"), v("2026-02-01")));
    }

    #[test]
    fn timestamp_bounds() {
        let got = parse_partition_bound(
            "FOR VALUES FROM ('2026-01-01 00:00:00') TO ('2026-02-01 00:00:00')",
            KeyType::Timestamp,
        );
        assert_eq!(got.unwrap(), range(v("2026-01-01"), v("2026-02-01")));
    }

    #[test]
    fn timestamptz_bounds_in_utc() {
        let got = parse_partition_bound(
            "FOR VALUES FROM ('2025-12-31 23:00:00+00') TO ('2026-01-31 23:00:00+00')",
            KeyType::TimestampTz,
        );
        let want = range(v("2025-12-31 23:00:00"), v("2026-01-31 23:00:00"));
        assert_eq!(got.unwrap(), want);
    }

    #[test]
    fn timestamptz_bounds_with_other_offsets() {
        let cases = [
            ("2026-01-01 05:30:00+05:30", t("2026-01-01")),
            ("2026-01-01 00:00:00-03", t("2026-01-01 03:00:00")),
            ("2026-01-01 00:00:00+00:00", t("2026-01-01")),
            ("2026-01-01 13:45:00+13:45", t("2026-01-01")),
            // Local mean time offsets have seconds, e.g. Europe/Paris before 1911.
            ("1900-01-01 00:09:21+00:09:21", t("1900-01-01")),
            ("2026-01-01T00:00:00+00", t("2026-01-01")),
        ];
        for (lit, want) in cases {
            let expr = format!("FOR VALUES FROM ('{lit}') TO (MAXVALUE)");
            let got = parse_partition_bound(&expr, KeyType::TimestampTz).unwrap();
            assert_eq!(got, range(value(want), BoundValue::MaxValue), "{lit}");
        }
    }

    /// Verbatim `pg_get_expr(relpartbound, oid)` output of PostgreSQL 15.20, some read with
    /// TimeZone set to a zone other than UTC.
    #[test]
    fn real_postgres_output() {
        use KeyType::{Date, Timestamp, TimestampTz};
        let min = BoundValue::MinValue;
        let max = BoundValue::MaxValue;
        let year_10000 = NaiveDate::from_ymd_opt(10_000, 1, 1)
            .unwrap()
            .and_time(NaiveTime::MIN);
        let year_10000 = BoundValue::Value(year_10000.and_utc());
        let cases = [
            ("FOR VALUES FROM (MINVALUE) TO ('2020-01-01')", Date, min, v("2020-01-01")),
            ("FOR VALUES FROM ('10000-01-01') TO (MAXVALUE)", Date, year_10000, max),
            (
                "FOR VALUES FROM ('-infinity') TO ('2000-01-01 00:00:00')",
                Timestamp,
                min,
                v("2000-01-01"),
            ),
            (
                "FOR VALUES FROM ('2000-01-01 00:00:00') TO ('infinity')",
                Timestamp,
                v("2000-01-01"),
                max,
            ),
            (
                "FOR VALUES FROM ('2025-12-31 19:30:00-03:30') TO ('2026-01-31 15:00:00.123456-03:30')",
                TimestampTz,
                v("2025-12-31 23:00:00"),
                BoundValue::Value(t("2026-01-31 18:30:00") + chrono::TimeDelta::microseconds(123_456)),
            ),
            (
                "FOR VALUES FROM ('2026-03-01 01:00:00+01') TO ('2026-04-01 02:00:00.12+02')",
                TimestampTz,
                v("2026-03-01"),
                BoundValue::Value(t("2026-04-01") + chrono::TimeDelta::milliseconds(120)),
            ),
            (
                "FOR VALUES FROM ('1900-01-01 00:00:00+00:09:21') TO ('1911-01-01 00:00:00+00:09:21')",
                TimestampTz,
                v("1899-12-31 23:50:39"),
                v("1910-12-31 23:50:39"),
            ),
        ];
        for (expr, key, from, to) in cases {
            let got = parse_partition_bound(expr, key).unwrap();
            assert_eq!(got, range(from, to), "{expr}");
        }
        let rejected = [
            "FOR VALUES FROM ('0044-03-15 BC') TO ('0001-01-01')",
            "FOR VALUES IN ('2026-01-01', '2026-01-02')",
            "FOR VALUES WITH (modulus 4, remainder 0)",
            "FOR VALUES FROM ('2026-01-01', MINVALUE) TO ('2026-02-01', MAXVALUE)",
        ];
        for expr in rejected {
            assert!(parse_partition_bound(expr, Date).is_err(), "{expr}");
        }
    }

    #[test]
    fn fractional_seconds() {
        let half = t("2026-01-01") + chrono::TimeDelta::milliseconds(500);
        let micro = t("2026-01-01") + chrono::TimeDelta::microseconds(123_456);
        let cases = [
            ("'2026-01-01 00:00:00.5+00'", KeyType::TimestampTz, half),
            ("'2026-01-01 00:00:00.5'", KeyType::Timestamp, half),
            ("'2026-01-01 00:00:00.123456'", KeyType::Timestamp, micro),
        ];
        for (lit, key, want) in cases {
            let expr = format!("FOR VALUES FROM (MINVALUE) TO ({lit})");
            let got = parse_partition_bound(&expr, key).unwrap();
            assert_eq!(got, range(BoundValue::MinValue, value(want)), "{lit}");
        }
    }

    #[test]
    fn minvalue_maxvalue_and_infinity() {
        let got = parse_partition_bound(
            "FOR VALUES FROM (MINVALUE) TO ('2020-01-01')",
            KeyType::Date,
        );
        assert_eq!(got.unwrap(), range(BoundValue::MinValue, v("2020-01-01")));
        let got = parse_partition_bound(
            "FOR VALUES FROM ('2020-01-01') TO (MAXVALUE)",
            KeyType::Date,
        );
        assert_eq!(got.unwrap(), range(v("2020-01-01"), BoundValue::MaxValue));
        for key in KEYS {
            let got = parse_partition_bound("FOR VALUES FROM ('-infinity') TO ('infinity')", key);
            assert_eq!(
                got.unwrap(),
                range(BoundValue::MinValue, BoundValue::MaxValue)
            );
        }
    }

    #[test]
    fn bound_values_order_minvalue_first_and_maxvalue_last() {
        let (first, last) = (v("0001-01-01"), v("9999-12-31"));
        assert!(BoundValue::MinValue < first && first < last && last < BoundValue::MaxValue);
    }

    #[test]
    fn keywords_are_case_and_space_insensitive() {
        let got = parse_partition_bound(
            "for  values from( '2026-01-01' )to('2026-02-01')  ",
            KeyType::Date,
        );
        assert_eq!(got.unwrap(), range(v("2026-01-01"), v("2026-02-01")));
    }

    #[test]
    fn list_and_hash_bounds_are_not_range_bounds() {
        let cases = [
            ("FOR VALUES IN ('2026-01-01')", "LIST"),
            ("FOR VALUES WITH (modulus 4, remainder 0)", "HASH"),
        ];
        for (expr, kind) in cases {
            let msg = parse_partition_bound(expr, KeyType::Date)
                .unwrap_err()
                .to_string();
            assert!(msg.contains(kind) && msg.contains("RANGE"), "{msg}");
        }
    }

    #[test]
    fn multi_column_bounds_are_rejected() {
        let expr = "FOR VALUES FROM ('2026-01-01', 1) TO ('2026-02-01', 1)";
        let msg = parse_partition_bound(expr, KeyType::Date)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("2 key columns"), "{msg}");
        let expr = "FOR VALUES FROM ('2026-01-01', MINVALUE) TO ('2026-02-01', MAXVALUE)";
        assert!(matches!(
            parse_partition_bound(expr, KeyType::Date),
            Err(BoundsError::MultiColumn { columns: 2, .. })
        ));
    }

    #[test]
    fn bc_dates_are_rejected() {
        let expr = "FOR VALUES FROM ('0044-03-15 BC') TO ('2026-01-01')";
        let msg = parse_partition_bound(expr, KeyType::Date)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("BC"), "{msg}");
    }

    #[test]
    fn values_of_the_wrong_shape_say_what_was_expected() {
        let cases = [
            ("'2026-01-01 00:00:00'", KeyType::Date, "like '2026-01-01'"),
            (
                "'2026-01-01'",
                KeyType::Timestamp,
                "like '2026-01-01 00:00:00'",
            ),
            (
                "'2026-01-01 00:00:00+00'",
                KeyType::Timestamp,
                "timestamp like",
            ),
            ("'2026-01-01 00:00:00'", KeyType::TimestampTz, "with offset"),
            ("'2026-02-30'", KeyType::Date, "date like"),
            ("'2026-13-01'", KeyType::Date, "date like"),
            ("'0000-01-01'", KeyType::Date, "date like"),
            ("'01/02/2026'", KeyType::Date, "date like"),
            (
                "'2026-01-01 24:00:00'",
                KeyType::Timestamp,
                "timestamp like",
            ),
            (
                "'2026-01-01 00:00:00+16'",
                KeyType::TimestampTz,
                "with offset",
            ),
            (
                "'2026-01-01 00:00:00.1234567'",
                KeyType::Timestamp,
                "timestamp like",
            ),
            ("'999999-01-01'", KeyType::Date, "date like"),
            ("42", KeyType::Date, "date like"),
            ("'x'", KeyType::TimestampTz, "with offset"),
        ];
        for (lit, key, expected) in cases {
            let expr = format!("FOR VALUES FROM ({lit}) TO (MAXVALUE)");
            let msg = parse_partition_bound(&expr, key).unwrap_err().to_string();
            assert!(msg.contains(expected), "{lit} as {key:?}: {msg}");
        }
    }

    #[test]
    fn garbage_is_a_syntax_error_naming_what_was_found() {
        for expr in [
            "",
            "DEFAULT DEFAULT",
            "FOR VALUES",
            "FOR VALUES FROM",
            "FOR VALUES FROM ('2026-01-01')",
            "FOR VALUES FROM ('2026-01-01') TO ('2026-02-01'",
            "FOR VALUES FROM ('2026-01-01) TO ('2026-02-01')",
            "FOR VALUES FROM ('2026-01-01') TO ('2026-02-01') extra",
            "FOR VALUES FROM () TO ()",
            "FORVALUES FROM ('2026-01-01') TO ('2026-02-01')",
            "CHECK (x > 0)",
        ] {
            let err = parse_partition_bound(expr, KeyType::Date).unwrap_err();
            assert!(
                matches!(err, BoundsError::Syntax { .. }),
                "{expr:?}: {err:?}"
            );
            assert!(err.to_string().contains(&format!("{expr:?}")), "{err}");
        }
    }

    #[test]
    fn long_garbage_is_quoted_back_shortened() {
        let expr = "é".repeat(10_000);
        let msg = parse_partition_bound(&expr, KeyType::Date)
            .unwrap_err()
            .to_string();
        assert!(msg.len() < 600, "{}", msg.len());
    }

    #[test]
    fn render_literals_per_key_type() {
        let midnight = t("2026-01-01");
        assert_eq!(
            render_literal(midnight, KeyType::Date).unwrap(),
            "'2026-01-01'"
        );
        assert_eq!(
            render_literal(midnight, KeyType::Timestamp).unwrap(),
            "'2026-01-01 00:00:00'"
        );
        assert_eq!(
            render_literal(midnight, KeyType::TimestampTz).unwrap(),
            "'2026-01-01 00:00:00+00:00'"
        );
        let tenths = t("2025-12-31 23:00:00") + chrono::TimeDelta::microseconds(120_000);
        assert_eq!(
            render_literal(tenths, KeyType::TimestampTz).unwrap(),
            "'2025-12-31 23:00:00.12+00:00'"
        );
        let one_micro = t("2025-12-31 23:00:00") + chrono::TimeDelta::microseconds(1);
        assert_eq!(
            render_literal(one_micro, KeyType::Timestamp).unwrap(),
            "'2025-12-31 23:00:00.000001'"
        );
    }

    #[test]
    fn render_refuses_what_postgres_would_change() {
        let noon = t("2026-01-01 12:00:00");
        assert!(matches!(
            render_literal(noon, KeyType::Date),
            Err(BoundsError::NotMidnight { .. })
        ));
        let nanos = t("2026-01-01") + chrono::TimeDelta::nanoseconds(1);
        assert!(matches!(
            render_literal(nanos, KeyType::Timestamp),
            Err(BoundsError::TooPrecise { .. })
        ));
        assert!(matches!(
            render_literal(t("0000-12-31"), KeyType::Date),
            Err(BoundsError::BeforeYearOne { .. })
        ));
    }

    #[test]
    fn render_range_for_ddl() {
        let got = render_range(t("2026-01-01"), t("2026-02-01"), KeyType::Date).unwrap();
        assert_eq!(got, "FOR VALUES FROM ('2026-01-01') TO ('2026-02-01')");
        let got = render_range(
            t("2025-12-31 23:00:00"),
            t("2026-01-31 23:00:00"),
            KeyType::TimestampTz,
        )
        .unwrap();
        assert_eq!(
            got,
            "FOR VALUES FROM ('2025-12-31 23:00:00+00:00') TO ('2026-01-31 23:00:00+00:00')"
        );
        let msg = render_range(t("2026-02-01"), t("2026-02-01"), KeyType::Date)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("empty partition range"), "{msg}");
    }

    fn micros_instant() -> impl Strategy<Value = DateTime<Utc>> {
        let lo = t("0001-01-01").timestamp();
        let hi = t("9999-12-31 23:59:59").timestamp();
        (lo..hi, 0u32..1_000_000)
            .prop_map(|(s, us)| DateTime::from_timestamp(s, us * 1000).unwrap())
    }

    proptest! {
        #[test]
        fn rendered_bounds_parse_back(
            a in micros_instant(),
            b in micros_instant(),
            key in prop::sample::select(KEYS.to_vec()),
        ) {
            let (a, b) = match key {
                KeyType::Date => (
                    a.date_naive().and_time(NaiveTime::MIN).and_utc(),
                    b.date_naive().and_time(NaiveTime::MIN).and_utc(),
                ),
                _ => (a, b),
            };
            let (from, to) = (a.min(b), a.max(b));
            prop_assume!(from < to);
            let expr = render_range(from, to, key).unwrap();
            prop_assert_eq!(
                parse_partition_bound(&expr, key).unwrap(),
                range(value(from), value(to))
            );
            let open = format!("FOR VALUES FROM (MINVALUE) TO ({})", render_literal(to, key).unwrap());
            prop_assert_eq!(
                parse_partition_bound(&open, key).unwrap(),
                range(BoundValue::MinValue, value(to))
            );
        }

        #[test]
        fn parse_never_panics_on_arbitrary_text(s in ".*", key in prop::sample::select(KEYS.to_vec())) {
            let _ = parse_partition_bound(&s, key);
        }

        #[test]
        fn parse_never_panics_on_near_misses(
            from in "[0-9T :.+'-]{0,32}",
            to in "(MINVALUE|MAXVALUE|'[0-9 :.+-]{0,30}'|[^)]{0,12})",
            key in prop::sample::select(KEYS.to_vec()),
        ) {
            let expr = format!("FOR VALUES FROM ('{from}') TO ({to})");
            let _ = parse_partition_bound(&expr, key);
        }

        #[test]
        fn parse_never_panics_on_out_of_range_fields(
            y in "[0-9]{1,7}", mo in "[0-9]{1,3}", d in "[0-9]{1,3}",
            h in "[0-9]{1,3}", mi in "[0-9]{1,3}", sec in "[0-9]{1,3}",
            frac in "(\\.[0-9]{0,12})?",
            off in "([+-][0-9]{1,4}(:[0-9]{1,3}){0,2})?",
            era in "( BC| AD)?",
            key in prop::sample::select(KEYS.to_vec()),
        ) {
            for literal in [
                format!("{y}-{mo}-{d}{era}"),
                format!("{y}-{mo}-{d} {h}:{mi}:{sec}{frac}{era}"),
                format!("{y}-{mo}-{d} {h}:{mi}:{sec}{frac}{off}{era}"),
            ] {
                let expr = format!("FOR VALUES FROM ('{literal}') TO (MAXVALUE)");
                // What parses is a real instant, which renders back without panicking either.
                if let Ok(PartitionBound::Range { from: BoundValue::Value(t), .. }) =
                    parse_partition_bound(&expr, key)
                {
                    let _ = render_literal(t, key);
                }
            }
        }

        #[test]
        fn key_type_names_never_panic(s in ".{0,40}") {
            let _ = KeyType::from_pg_type(&s);
        }
    }
}

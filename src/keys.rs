//! Partition keys beyond dates and timestamps (SPEC part 2): integer IDs partitioned by a number
//! of values, integers holding Unix time (`epoch`), and UUIDv7. Pure conversions between those
//! key values and the points the planner works with.
//!
//! The planner, the coverage arithmetic and the catalog's bounds all work on one ordered line of
//! `DateTime<Utc>` points (part 1's design). Epoch and UUIDv7 keys *are* instants, so their
//! points are those instants, and the calendar applies to them as to `timestamptz`. A plain
//! integer key is placed on the same line as nanoseconds since 1970 (`int_point`): a bijection
//! of all of `i64` onto instants between 1677 and 2262, which keeps its order, so gaps, overlaps
//! and coverage need no second code path. That mapping never leaves this program: every value
//! that reaches SQL, a name, a log line or a metric goes back through `point_int`.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};

use crate::calendar::Interval;

/// The Unix-time unit an integer key holds (`tables[].epoch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EpochUnit {
    Seconds,
    Milliseconds,
    Microseconds,
    Nanoseconds,
}

impl EpochUnit {
    pub fn parse(s: &str) -> Option<EpochUnit> {
        match s.trim().to_ascii_lowercase().as_str() {
            "seconds" | "s" => Some(EpochUnit::Seconds),
            "milliseconds" | "ms" => Some(EpochUnit::Milliseconds),
            "microseconds" | "us" => Some(EpochUnit::Microseconds),
            "nanoseconds" | "ns" => Some(EpochUnit::Nanoseconds),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            EpochUnit::Seconds => "seconds",
            EpochUnit::Milliseconds => "milliseconds",
            EpochUnit::Microseconds => "microseconds",
            EpochUnit::Nanoseconds => "nanoseconds",
        }
    }

    fn nanos(&self) -> i64 {
        match self {
            EpochUnit::Seconds => 1_000_000_000,
            EpochUnit::Milliseconds => 1_000_000,
            EpochUnit::Microseconds => 1_000,
            EpochUnit::Nanoseconds => 1,
        }
    }
}

impl fmt::Display for EpochUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EpochUnit {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Width of an integer key column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntWidth {
    SmallInt,
    Integer,
    BigInt,
}

impl IntWidth {
    pub fn sql_name(&self) -> &'static str {
        match self {
            IntWidth::SmallInt => "smallint",
            IntWidth::Integer => "integer",
            IntWidth::BigInt => "bigint",
        }
    }

    pub fn range(&self) -> (i64, i64) {
        match self {
            IntWidth::SmallInt => (i16::MIN.into(), i16::MAX.into()),
            IntWidth::Integer => (i32::MIN.into(), i32::MAX.into()),
            IntWidth::BigInt => (i64::MIN, i64::MAX),
        }
    }
}

/// `tables[].interval`: a calendar length, or (integer keys without `epoch`) a number of values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Width {
    Calendar(Interval),
    Values(i64),
}

impl Width {
    /// The calendar interval; integer widths have none (callers dispatch on the key first).
    pub fn calendar(&self) -> Option<Interval> {
        match self {
            Width::Calendar(iv) => Some(*iv),
            Width::Values(_) => None,
        }
    }
}

impl From<Interval> for Width {
    fn from(iv: Interval) -> Width {
        Width::Calendar(iv)
    }
}

impl PartialEq<Interval> for Width {
    fn eq(&self, other: &Interval) -> bool {
        *self == Width::Calendar(*other)
    }
}

impl fmt::Display for Width {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Width::Calendar(iv) => iv.fmt(f),
            Width::Values(n) => write!(f, "{n} values"),
        }
    }
}

// As written in the configuration: "1 month" or 1000000.
impl Serialize for Width {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Width::Calendar(iv) => iv.serialize(s),
            Width::Values(n) => s.serialize_i64(*n),
        }
    }
}

/// SQL giving the position of a key value on the planner's line as `float8`, for range reads
/// (`migrate`): Unix seconds for time-like keys (on the wall clock for `date` and `timestamp`),
/// the value itself for plain integers. `expr` is SQL partkeeper built (a quoted column, an
/// aggregate of it), never user text.
pub fn seconds_sql(key: crate::bounds::KeyType, expr: &str) -> String {
    use crate::bounds::KeyType;
    match key {
        KeyType::Date | KeyType::Timestamp => {
            format!("extract(epoch FROM ({expr})::timestamp)::float8")
        }
        KeyType::TimestampTz => format!("extract(epoch FROM ({expr})::timestamptz)::float8"),
        KeyType::Int(_) => format!("({expr})::float8"),
        KeyType::Epoch(_, unit) => format!("({expr})::float8 / {}", 1_000_000_000 / unit.nanos()),
        // The first 48 bits of a UUIDv7 are its Unix milliseconds.
        KeyType::Uuid => format!(
            "(('x' || substr(replace(({expr})::text, '-', ''), 1, 12))::bit(48)::int8)::float8 / 1000"
        ),
    }
}

/// `min(expr)` and `max(expr)` for a key: PostgreSQL has no min/max for uuid before version 18,
/// so uuids are compared as their text in the "C" collation (lower-case hex at fixed places:
/// the same order as PostgreSQL's byte order) and cast back.
pub fn min_max_sql(key: crate::bounds::KeyType, expr: &str) -> (String, String) {
    match key {
        crate::bounds::KeyType::Uuid => (
            format!("min(({expr})::text COLLATE \"C\")::uuid"),
            format!("max(({expr})::text COLLATE \"C\")::uuid"),
        ),
        _ => (format!("min({expr})"), format!("max({expr})")),
    }
}

/// An integer key value as a point on the planner's line.
pub fn int_point(v: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(v)
}

/// The integer key value of a point; `None` for points no integer maps to (outside 1677-2262,
/// which only a calendar computation could produce).
pub fn point_int(p: DateTime<Utc>) -> Option<i64> {
    p.timestamp_nanos_opt()
}

/// The start of the period of `width` values (counted from `start`) that holds `v`, and the
/// start of the next one; saturating at the ends of `i64`.
pub fn int_period(v: i64, width: i64, start: i64) -> (i64, i64) {
    let w = i128::from(width.max(1));
    let k = (i128::from(v) - i128::from(start)).div_euclid(w);
    let lo = i128::from(start) + k * w;
    let clamp = |x: i128| x.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
    (clamp(lo), clamp(lo + w))
}

/// The Unix time of `t` in `unit`, when `t` is a whole number of units and fits an `i64`.
pub fn instant_to_epoch(t: DateTime<Utc>, unit: EpochUnit) -> Option<i64> {
    let secs = i128::from(t.timestamp());
    let nanos = secs * 1_000_000_000 + i128::from(t.timestamp_subsec_nanos());
    let per = i128::from(unit.nanos());
    (nanos % per == 0)
        .then(|| i64::try_from(nanos / per).ok())
        .flatten()
}

/// The instant an epoch value stands for.
pub fn epoch_to_instant(v: i64, unit: EpochUnit) -> Option<DateTime<Utc>> {
    let per = unit.nanos();
    let secs = v.div_euclid(1_000_000_000 / per);
    let sub = v.rem_euclid(1_000_000_000 / per) * per;
    DateTime::from_timestamp(secs, u32::try_from(sub).ok()?)
}

/// The smallest UUIDv7 of the millisecond holding `t`: the 48-bit Unix-millisecond timestamp,
/// version 7, the RFC 9562 variant, every random bit zero. PostgreSQL compares uuids byte by byte
/// (memcmp), so this sorts before every other UUIDv7 of that millisecond and after all earlier
/// ones. `None` before 1970 or after the year 10889 (48 bits of milliseconds).
pub fn uuid_floor(t: DateTime<Utc>) -> Option<u128> {
    let ms = u64::try_from(t.timestamp_millis()).ok()?;
    if ms >> 48 != 0 {
        return None;
    }
    Some((u128::from(ms) << 80) | (0x7u128 << 76) | (0x8u128 << 60))
}

/// The millisecond a uuid bound stands for, when it is the smallest UUIDv7 of that millisecond,
/// or sorts below it without reaching the one before (e.g. all-zero random bits, version 0): for
/// UUIDv7 values such a bound cuts the line at the same place.
pub fn uuid_bound_instant(u: u128) -> Option<DateTime<Utc>> {
    let ms = (u >> 80) as i64;
    let t = DateTime::from_timestamp_millis(ms)?;
    (u <= uuid_floor(t)?).then_some(t)
}

/// `8-4-4-4-12` lower-case hex, as PostgreSQL prints uuids.
pub fn uuid_text(u: u128) -> String {
    let h = format!("{u:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Reads a uuid in PostgreSQL's output form (`8-4-4-4-12` hex, any case) or as 32 hex digits;
/// the big-endian value, whose order is PostgreSQL's (memcmp) order.
pub fn parse_uuid(text: &str) -> Option<u128> {
    let b = text.as_bytes();
    let hex: String = match b.len() {
        36 if [8, 13, 18, 23].iter().all(|&i| b[i] == b'-') => {
            text.chars().filter(|&c| c != '-').collect()
        }
        32 => text.to_string(),
        _ => return None,
    };
    if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(&hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn integer_periods_count_from_start() {
        assert_eq!(int_period(0, 1000, 0), (0, 1000));
        assert_eq!(int_period(999, 1000, 0), (0, 1000));
        assert_eq!(int_period(1000, 1000, 0), (1000, 2000));
        assert_eq!(int_period(-1, 1000, 0), (-1000, 0));
        assert_eq!(int_period(7, 10, 5), (5, 15));
        assert_eq!(int_period(i64::MAX, 10, 0).1, i64::MAX);
    }

    #[test]
    fn the_smallest_uuidv7_of_a_millisecond() {
        let t = DateTime::from_timestamp_millis(0x0190_1234_5678).unwrap();
        let u = uuid_floor(t).unwrap();
        assert_eq!(uuid_text(u), "01901234-5678-7000-8000-000000000000");
        assert_eq!(uuid_bound_instant(u), Some(t));
        // Version 0 with zero random bits cuts in the same place for v7 data.
        assert_eq!(
            uuid_bound_instant(u & !(0xfu128 << 76) & !(0xfu128 << 60)),
            Some(t)
        );
        // A bound inside the millisecond does not.
        assert_eq!(uuid_bound_instant(u + 1), None);
        assert_eq!(uuid_floor(DateTime::from_timestamp(-1, 0).unwrap()), None);
    }

    proptest! {
        #[test]
        fn integers_keep_their_order_on_the_line(a in any::<i64>(), b in any::<i64>()) {
            prop_assert_eq!(point_int(int_point(a)), Some(a));
            prop_assert_eq!(a.cmp(&b), int_point(a).cmp(&int_point(b)));
        }

        #[test]
        fn integer_periods_tile(v in any::<i64>(), width in 1i64..1_000_000_000_000, start in -1_000_000i64..1_000_000) {
            let (lo, hi) = int_period(v, width, start);
            prop_assert!(lo <= v && (v < hi || hi == i64::MAX));
            if hi < i64::MAX {
                prop_assert_eq!(int_period(hi, width, start).0, hi);
                prop_assert_eq!(int_period(hi - 1, width, start).0, lo);
            }
            // The grid does not depend on which value first asked.
            prop_assert_eq!((lo - start).rem_euclid(width), 0);
        }

        #[test]
        fn epoch_values_round_trip(v in -10_000_000_000i64..10_000_000_000, unit in prop::sample::select(vec![
            EpochUnit::Seconds, EpochUnit::Milliseconds, EpochUnit::Microseconds, EpochUnit::Nanoseconds,
        ])) {
            let t = epoch_to_instant(v, unit).unwrap();
            prop_assert_eq!(instant_to_epoch(t, unit), Some(v));
        }

        #[test]
        fn uuid_text_round_trips(u in any::<u128>()) {
            let text = uuid_text(u);
            prop_assert_eq!(parse_uuid(&text), Some(u));
            prop_assert_eq!(parse_uuid(&text.to_uppercase()), Some(u));
        }

        #[test]
        fn uuid_floors_sort_like_their_instants(a in 0i64..10_000_000_000_000, b in 0i64..10_000_000_000_000) {
            let (ta, tb) = (DateTime::from_timestamp_millis(a).unwrap(), DateTime::from_timestamp_millis(b).unwrap());
            let (ua, ub) = (uuid_floor(ta).unwrap(), uuid_floor(tb).unwrap());
            // u128 order is PostgreSQL's byte order for uuids (big-endian).
            prop_assert_eq!(ua.cmp(&ub), ta.cmp(&tb));
            prop_assert_eq!(uuid_bound_instant(ua), Some(ta));
        }
    }
}

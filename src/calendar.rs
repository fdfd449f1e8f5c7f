//! Calendar arithmetic for partition periods and retention: which period an instant falls in,
//! where the next one starts, what a period's partition is called, and where retention cuts off.
//!
//! Everything here is pure: no clock, no I/O. Instants are `DateTime<Utc>`; the zone decides
//! where local midnights fall. `date` and `timestamp` keys use wall-clock values dressed as UTC
//! with `tz = UTC`; `timestamptz` keys use real instants and the configured zone.
//!
//! A period starts at the earliest instant whose local wall-clock time is at or after the local
//! midnight that opens it. So a midnight skipped by a DST jump starts the period at the first
//! instant after the gap, and a midnight that happens twice starts it at the earlier one.
//! A day skipped entirely (Pacific/Apia jumped over 2011-12-30) would be an empty period; such
//! periods are not counted, so periods always tile time and `add_periods` is invertible.

use std::fmt;
use std::str::FromStr;

use chrono::{
    DateTime, Datelike, Days, Months, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone, Utc,
};
use chrono_tz::{GapInfo, Tz};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Length of one partition; the only lengths partkeeper names partitions for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Interval {
    Day,
    Week,
    Month,
    Quarter,
    Year,
}

/// Accepted interval spellings, quoted in every parse error.
const INTERVAL_FORMS: &str = "\"1 day\", \"1 week\", \"1 month\", \"3 months\" or \"1 year\" \
     (or daily, weekly, monthly, quarterly, yearly)";

impl Interval {
    /// Accepts exactly what a user would write: "1 day", "1 week", "1 month", "3 months",
    /// "1 year" (case-insensitive, flexible whitespace, singular or plural), or the bare words
    /// day/daily, week/weekly, month/monthly, quarter/quarterly, year/yearly.
    pub fn parse(s: &str) -> Result<Self, CalendarError> {
        let norm = s.trim().to_lowercase();
        let (amount, unit) = split_amount(&norm);
        let interval = if amount.is_empty() {
            match unit {
                "day" | "daily" => Some(Interval::Day),
                "week" | "weekly" => Some(Interval::Week),
                "month" | "monthly" => Some(Interval::Month),
                "quarter" | "quarterly" => Some(Interval::Quarter),
                "year" | "yearly" => Some(Interval::Year),
                _ => None,
            }
        } else {
            match (amount.parse::<u32>().ok(), unit) {
                (Some(1), "day" | "days") => Some(Interval::Day),
                (Some(1), "week" | "weeks") => Some(Interval::Week),
                (Some(1), "month" | "months") => Some(Interval::Month),
                (Some(3), "month" | "months") | (Some(1), "quarter" | "quarters") => {
                    Some(Interval::Quarter)
                }
                (Some(1), "year" | "years") => Some(Interval::Year),
                _ => None,
            }
        };
        interval.ok_or_else(|| CalendarError::UnknownInterval {
            input: s.to_string(),
        })
    }

    /// Canonical spelling, as written in the configuration.
    pub fn as_str(&self) -> &'static str {
        match self {
            Interval::Day => "1 day",
            Interval::Week => "1 week",
            Interval::Month => "1 month",
            Interval::Quarter => "3 months",
            Interval::Year => "1 year",
        }
    }
}

impl FromStr for Interval {
    type Err = CalendarError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Interval::parse(s)
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// Serialized as the configuration spelling ("1 month"), so JSON output reads like the config.
impl Serialize for Interval {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Interval {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Interval::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// How long partitions are kept: a whole, positive number of calendar units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub amount: u32,
    pub unit: RetentionUnit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RetentionUnit {
    Day,
    Week,
    Month,
    Year,
}

impl Retention {
    /// "36 months", "90 days", "2 years", "12 weeks", "1 month" (singular or plural,
    /// case-insensitive). Zero, negative or fractional amounts and unknown units are errors.
    pub fn parse(s: &str) -> Result<Self, CalendarError> {
        let bad = |problem: String| CalendarError::InvalidRetention {
            input: s.to_string(),
            problem,
        };
        let norm = s.trim().to_lowercase();
        if norm.is_empty() {
            return Err(bad("it is empty".into()));
        }
        let (amount, unit) = split_amount(&norm);
        if amount.is_empty() {
            return Err(bad("it has no amount".into()));
        }
        if amount.starts_with('-') {
            return Err(bad("the amount must be positive".into()));
        }
        if amount.contains(['.', ',']) {
            return Err(bad("the amount must be a whole number".into()));
        }
        let amount = match amount.parse::<u32>() {
            Ok(0) => return Err(bad("the amount must be at least 1".into())),
            Ok(n) => n,
            Err(_)
                if amount
                    .trim_start_matches('+')
                    .bytes()
                    .all(|b| b.is_ascii_digit()) =>
            {
                return Err(bad(format!("the amount {amount} is too large")))
            }
            Err(_) => return Err(bad(format!("{amount:?} is not a number"))),
        };
        let unit = match unit {
            "day" | "days" => RetentionUnit::Day,
            "week" | "weeks" => RetentionUnit::Week,
            "month" | "months" => RetentionUnit::Month,
            "year" | "years" => RetentionUnit::Year,
            "" => return Err(bad("it has no unit".into())),
            other => return Err(bad(format!("unknown unit {other:?}"))),
        };
        Ok(Retention { amount, unit })
    }
}

impl FromStr for Retention {
    type Err = CalendarError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Retention::parse(s)
    }
}

impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.unit {
            RetentionUnit::Day => "day",
            RetentionUnit::Week => "week",
            RetentionUnit::Month => "month",
            RetentionUnit::Year => "year",
        };
        let plural = if self.amount == 1 { "" } else { "s" };
        write!(f, "{} {unit}{plural}", self.amount)
    }
}

// Serialized as the configuration spelling ("36 months"), like Interval.
impl Serialize for Retention {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Retention {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Retention::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CalendarError {
    #[error("unknown partition interval {input:?}: write {INTERVAL_FORMS}")]
    UnknownInterval { input: String },
    #[error(
        "invalid retention {input:?}: {problem}; write a whole number of days, weeks, months or \
         years, e.g. \"36 months\", \"90 days\", \"12 weeks\" or \"2 years\""
    )]
    InvalidRetention { input: String, problem: String },
}

/// Splits "36 months" into ("36", "months"); the amount is whatever number-like prefix there is,
/// so that "-3", "1.5" and "36months" reach the checks that explain them.
fn split_amount(s: &str) -> (&str, &str) {
    let end = s
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_digit() || matches!(c, '+' | '-' | '.' | ',')))
        .map_or(s.len(), |(i, _)| i);
    (&s[..end], s[end..].trim())
}

/// Instants are clamped to this window, far inside chrono's range, so that adding a zone offset
/// or a few periods can never overflow (chrono panics on some overflows, e.g. `naive_local`).
/// PostgreSQL's own range ends at year 294276; nothing real comes near either limit.
const MIN_DATE: NaiveDate = match NaiveDate::from_ymd_opt(-260_000, 1, 1) {
    Some(d) => d,
    None => NaiveDate::MIN,
};
const MAX_DATE: NaiveDate = match NaiveDate::from_ymd_opt(260_000, 1, 1) {
    Some(d) => d,
    None => NaiveDate::MAX,
};

fn min_instant() -> DateTime<Utc> {
    MIN_DATE.and_time(NaiveTime::MIN).and_utc()
}

fn max_instant() -> DateTime<Utc> {
    MAX_DATE.and_time(NaiveTime::MIN).and_utc()
}

fn clamp(t: DateTime<Utc>) -> DateTime<Utc> {
    t.clamp(min_instant(), max_instant())
}

fn wall_clock(t: DateTime<Utc>, tz: Tz) -> NaiveDateTime {
    t.with_timezone(&tz).naive_local()
}

/// The earliest instant whose wall-clock time in `tz` is at or after `wall`.
fn resolve(wall: NaiveDateTime, tz: Tz) -> DateTime<Utc> {
    match tz.from_local_datetime(&wall) {
        chrono::LocalResult::Single(t) => t.with_timezone(&Utc),
        chrono::LocalResult::Ambiguous(a, b) => a.min(b).with_timezone(&Utc),
        chrono::LocalResult::None => match GapInfo::new(&wall, &tz).and_then(|g| g.end) {
            Some(end) => end.with_timezone(&Utc),
            // Only at the edges of the zone's table. Reading the wall time with the offset of the
            // day before (the one in force before the jump) lands at or just after the gap.
            None => {
                let before = wall.and_utc() - chrono::TimeDelta::days(1);
                let offset = before.with_timezone(&tz).offset().fix();
                wall.checked_sub_offset(offset).unwrap_or(wall).and_utc()
            }
        },
    }
}

/// First day of the period containing `date`.
fn label_of(date: NaiveDate, iv: Interval) -> NaiveDate {
    let first_of = |month: u32| NaiveDate::from_ymd_opt(date.year(), month, 1).unwrap_or(date);
    match iv {
        Interval::Day => date,
        Interval::Week => {
            let back = u64::from(date.weekday().num_days_from_monday());
            date.checked_sub_days(Days::new(back)).unwrap_or(date)
        }
        Interval::Month => first_of(date.month()),
        Interval::Quarter => first_of((date.month() - 1) / 3 * 3 + 1),
        Interval::Year => first_of(1),
    }
}

/// The label `n` periods after `label`, or None when that leaves the supported window.
fn shift_label(label: NaiveDate, iv: Interval, n: i64) -> Option<NaiveDate> {
    let shifted = match iv {
        Interval::Day | Interval::Week => {
            let per = if iv == Interval::Day { 1 } else { 7 };
            let days = Days::new(n.unsigned_abs().checked_mul(per)?);
            if n >= 0 {
                label.checked_add_days(days)
            } else {
                label.checked_sub_days(days)
            }
        }
        Interval::Month | Interval::Quarter | Interval::Year => {
            let per = match iv {
                Interval::Month => 1,
                Interval::Quarter => 3,
                _ => 12,
            };
            let months = Months::new(u32::try_from(n.unsigned_abs().checked_mul(per)?).ok()?);
            if n >= 0 {
                label.checked_add_months(months)
            } else {
                label.checked_sub_months(months)
            }
        }
    }?;
    (MIN_DATE..=MAX_DATE).contains(&shifted).then_some(shifted)
}

fn label_start(label: NaiveDate, tz: Tz) -> DateTime<Utc> {
    resolve(label.and_time(NaiveTime::MIN), tz)
}

/// Start of the period containing `t` (Week = ISO week from Monday 00:00; Quarter = Jan/Apr/Jul/Oct 1st).
pub fn period_start(t: DateTime<Utc>, iv: Interval, tz: Tz) -> DateTime<Utc> {
    let t = clamp(t);
    let mut start = label_start(label_of(wall_clock(t, tz).date(), iv), tz);
    // Almost always done already. But a clock set back across a midnight (00:30 -> 23:30) shows
    // yesterday's date for a while after today's period began; the instant decides, not the wall
    // clock, so move on to the latest start at or before t. A few rounds cover any real zone.
    for _ in 0..4 {
        let next = add_periods(start, iv, 1, tz);
        if next > t || next <= start {
            break;
        }
        start = next;
    }
    start
}

/// The period start `n` periods after `start` (n may be negative); `start` is assumed aligned.
/// Saturates at the edges of the supported window (years -260000..260000).
pub fn add_periods(start: DateTime<Utc>, iv: Interval, n: i32, tz: Tz) -> DateTime<Utc> {
    let start = clamp(start);
    let label = label_of(wall_clock(start, tz).date(), iv);
    let saturated = if n >= 0 { max_instant() } else { min_instant() };
    // Only a day can be skipped whole (a jump of a day or more across the date line), and UTC has
    // no jumps at all; everything else is plain label arithmetic.
    if iv != Interval::Day || tz == Tz::UTC {
        return shift_label(label, iv, i64::from(n)).map_or(saturated, |l| label_start(l, tz));
    }
    let step = if n >= 0 { 1 } else { -1 };
    let (mut label, mut at) = (label, label_start(label, tz));
    for _ in 0..n.unsigned_abs() {
        // Skip labels that start at the same instant: those days never happened locally.
        let mut found = None;
        let mut candidate = label;
        for _ in 0..4 {
            let Some(next) = shift_label(candidate, iv, step) else {
                return saturated;
            };
            let next_at = label_start(next, tz);
            if next_at != at {
                found = Some((next, next_at));
                break;
            }
            candidate = next;
        }
        let Some(found) = found else {
            return saturated;
        };
        (label, at) = found;
    }
    at
}

/// Whether `t` is exactly a period start.
pub fn is_aligned(t: DateTime<Utc>, iv: Interval, tz: Tz) -> bool {
    period_start(t, iv, tz) == t
}

/// Partition-name suffix of the period starting at `start`: "2026" (year), "2026_03" (month),
/// "2026_03_05" (day), "2026_w09" (ISO year and week: 2027-01-01 is in "2026_w53"), "2026_q1".
pub fn partition_suffix(start: DateTime<Utc>, iv: Interval, tz: Tz) -> String {
    let label = label_of(wall_clock(period_start(start, iv, tz), tz).date(), iv);
    let (year, month, day) = (label.year(), label.month(), label.day());
    match iv {
        Interval::Day => format!("{year:04}_{month:02}_{day:02}"),
        Interval::Week => {
            let week = label.iso_week();
            format!("{:04}_w{:02}", week.year(), week.week())
        }
        Interval::Month => format!("{year:04}_{month:02}"),
        Interval::Quarter => format!("{year:04}_q{}", (month - 1) / 3 + 1),
        Interval::Year => format!("{year:04}"),
    }
}

/// `t` minus the retention, on the wall clock of `tz`: days and weeks are calendar days (a DST
/// day counts as one), months and years clamp to the month end (2028-02-29 minus 1 year is
/// 2027-02-28), as chrono's `checked_sub_months` does.
pub fn subtract_retention(t: DateTime<Utc>, r: Retention, tz: Tz) -> DateTime<Utc> {
    let wall = wall_clock(clamp(t), tz);
    let amount = u64::from(r.amount);
    let shifted = match r.unit {
        RetentionUnit::Day => wall.checked_sub_days(Days::new(amount)),
        RetentionUnit::Week => wall.checked_sub_days(Days::new(amount * 7)),
        RetentionUnit::Month => wall.checked_sub_months(Months::new(r.amount)),
        RetentionUnit::Year => r
            .amount
            .checked_mul(12)
            .and_then(|m| wall.checked_sub_months(Months::new(m))),
    };
    match shifted {
        Some(w) if w.date() >= MIN_DATE => clamp(resolve(w, tz)),
        _ => min_instant(),
    }
}

/// Partitions whose upper bound is at or before this instant are expired. Aligned down to a
/// period start, so a partition is only expired once all of it is older than the retention.
pub fn retention_cutoff(now: DateTime<Utc>, r: Retention, iv: Interval, tz: Tz) -> DateTime<Utc> {
    period_start(subtract_retention(now, r, tz), iv, tz)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    fn day(y: i32, mo: u32, d: u32) -> DateTime<Utc> {
        at(y, mo, d, 0, 0, 0)
    }

    fn zone(name: &str) -> Tz {
        name.parse().unwrap()
    }

    const UTC: Tz = Tz::UTC;

    /// The period containing `t`: (start, next start, suffix).
    fn period(t: DateTime<Utc>, iv: Interval, tz: Tz) -> (DateTime<Utc>, DateTime<Utc>, String) {
        let start = period_start(t, iv, tz);
        (
            start,
            add_periods(start, iv, 1, tz),
            partition_suffix(start, iv, tz),
        )
    }

    // --- Interval parsing -------------------------------------------------------------------

    #[test]
    fn interval_accepts_what_users_write() {
        let cases = [
            ("1 day", Interval::Day),
            ("daily", Interval::Day),
            ("Day", Interval::Day),
            ("1 week", Interval::Week),
            ("WEEKLY", Interval::Week),
            ("1 month", Interval::Month),
            ("  1   Months ", Interval::Month),
            ("monthly", Interval::Month),
            ("1month", Interval::Month),
            ("3 months", Interval::Quarter),
            ("quarterly", Interval::Quarter),
            ("1 quarter", Interval::Quarter),
            ("1 year", Interval::Year),
            ("yearly", Interval::Year),
            ("1\tyear", Interval::Year),
        ];
        for (input, want) in cases {
            assert_eq!(Interval::parse(input).unwrap(), want, "{input:?}");
            assert_eq!(input.parse::<Interval>().unwrap(), want, "{input:?}");
        }
    }

    #[test]
    fn interval_canonical_form_parses_back() {
        for iv in ALL_INTERVALS {
            assert_eq!(Interval::parse(iv.as_str()).unwrap(), iv);
            assert_eq!(iv.to_string(), iv.as_str());
        }
        assert_eq!(Interval::Quarter.as_str(), "3 months");
    }

    #[test]
    fn interval_rejects_unsupported_lengths_and_lists_the_accepted_forms() {
        for input in [
            "",
            "2 months",
            "7 days",
            "12 months",
            "0 days",
            "-1 day",
            "1.5 months",
            "hourly",
            "1 hour",
            "month please",
            "1 1 month",
            "fortnightly",
            "1 mon",
        ] {
            let err = Interval::parse(input).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains("\"3 months\"") && msg.contains("\"1 day\""),
                "{msg}"
            );
            assert!(msg.contains(&format!("{input:?}")), "{msg}");
        }
    }

    #[test]
    fn interval_serializes_as_the_config_spelling() {
        assert_eq!(
            serde_json::to_string(&Interval::Quarter).unwrap(),
            "\"3 months\""
        );
        let iv: Interval = serde_json::from_str("\"monthly\"").unwrap();
        assert_eq!(iv, Interval::Month);
        let err = serde_json::from_str::<Interval>("\"2 weeks\"").unwrap_err();
        assert!(err.to_string().contains("\"1 week\""), "{err}");
    }

    // --- Retention parsing ------------------------------------------------------------------

    #[test]
    fn retention_accepts_singular_and_plural_units() {
        let cases = [
            ("36 months", 36, RetentionUnit::Month),
            ("1 month", 1, RetentionUnit::Month),
            ("90 days", 90, RetentionUnit::Day),
            ("1 DAY", 1, RetentionUnit::Day),
            ("2 years", 2, RetentionUnit::Year),
            ("12 weeks", 12, RetentionUnit::Week),
            ("  7   Weeks ", 7, RetentionUnit::Week),
            ("30days", 30, RetentionUnit::Day),
        ];
        for (input, amount, unit) in cases {
            assert_eq!(
                Retention::parse(input).unwrap(),
                Retention { amount, unit },
                "{input:?}"
            );
        }
    }

    #[test]
    fn retention_displays_as_written_and_parses_back() {
        for input in [
            "36 months",
            "1 month",
            "90 days",
            "1 day",
            "2 years",
            "1 week",
        ] {
            let r = Retention::parse(input).unwrap();
            assert_eq!(r.to_string(), input);
            assert_eq!(r.to_string().parse::<Retention>().unwrap(), r);
        }
        let r = Retention::parse("36 months").unwrap();
        assert_eq!(serde_json::to_string(&r).unwrap(), "\"36 months\"");
    }

    #[test]
    fn retention_errors_say_what_is_wrong_and_what_to_write() {
        let cases = [
            ("", "empty"),
            ("   ", "empty"),
            ("0 months", "at least 1"),
            ("-3 months", "positive"),
            ("1.5 months", "whole number"),
            ("1,5 months", "whole number"),
            ("36 fortnights", "unknown unit \"fortnights\""),
            ("36", "no unit"),
            ("months", "no amount"),
            ("thirty six months", "no amount"),
            ("99999999999 days", "too large"),
            ("3+ months", "not a number"),
            ("36 hours", "unknown unit"),
        ];
        for (input, problem) in cases {
            let msg = Retention::parse(input).unwrap_err().to_string();
            assert!(msg.contains(problem), "{input:?}: {msg}");
            assert!(msg.contains("e.g. \"36 months\""), "{input:?}: {msg}");
        }
    }

    // --- Periods in UTC ---------------------------------------------------------------------

    #[test]
    fn month_ends_belong_to_their_own_month() {
        let cases = [
            (
                at(2026, 1, 31, 12, 0, 0),
                day(2026, 1, 1),
                day(2026, 2, 1),
                "2026_01",
            ),
            (
                at(2026, 2, 28, 23, 59, 59),
                day(2026, 2, 1),
                day(2026, 3, 1),
                "2026_02",
            ),
            (
                at(2026, 4, 30, 23, 59, 59),
                day(2026, 4, 1),
                day(2026, 5, 1),
                "2026_04",
            ),
            (day(2026, 5, 1), day(2026, 5, 1), day(2026, 6, 1), "2026_05"),
        ];
        for (t, start, next, suffix) in cases {
            assert_eq!(
                period(t, Interval::Month, UTC),
                (start, next, suffix.into())
            );
        }
    }

    #[test]
    fn last_second_of_the_year() {
        let t = at(2026, 12, 31, 23, 59, 59);
        let month = period(t, Interval::Month, UTC);
        assert_eq!(month, (day(2026, 12, 1), day(2027, 1, 1), "2026_12".into()));
        let year = period(t, Interval::Year, UTC);
        assert_eq!(year, (day(2026, 1, 1), day(2027, 1, 1), "2026".into()));
        let d = period(t, Interval::Day, UTC);
        assert_eq!(d, (day(2026, 12, 31), day(2027, 1, 1), "2026_12_31".into()));
        let q = period(t, Interval::Quarter, UTC);
        assert_eq!(q, (day(2026, 10, 1), day(2027, 1, 1), "2026_q4".into()));
    }

    #[test]
    fn leap_day_2028() {
        let t = at(2028, 2, 29, 12, 0, 0);
        let d = period(t, Interval::Day, UTC);
        assert_eq!(d, (day(2028, 2, 29), day(2028, 3, 1), "2028_02_29".into()));
        let m = period(t, Interval::Month, UTC);
        assert_eq!(m, (day(2028, 2, 1), day(2028, 3, 1), "2028_02".into()));
        let y = period(t, Interval::Year, UTC);
        assert_eq!(y, (day(2028, 1, 1), day(2029, 1, 1), "2028".into()));
        assert_eq!(
            add_periods(day(2028, 2, 28), Interval::Day, 1, UTC),
            day(2028, 2, 29)
        );
        assert_eq!(
            add_periods(day(2028, 3, 1), Interval::Day, -1, UTC),
            day(2028, 2, 29)
        );
    }

    #[test]
    fn one_year_before_a_leap_day_is_the_28th() {
        let one_year = Retention::parse("1 year").unwrap();
        let t = at(2028, 2, 29, 6, 30, 0);
        assert_eq!(
            subtract_retention(t, one_year, UTC),
            at(2027, 2, 28, 6, 30, 0)
        );
        assert_eq!(
            retention_cutoff(t, one_year, Interval::Month, UTC),
            day(2027, 2, 1)
        );
        assert_eq!(
            retention_cutoff(t, one_year, Interval::Day, UTC),
            day(2027, 2, 28)
        );
        let four_years = Retention::parse("4 years").unwrap();
        assert_eq!(
            subtract_retention(t, four_years, UTC),
            at(2024, 2, 29, 6, 30, 0)
        );
    }

    #[test]
    fn months_of_retention_clamp_to_the_month_end() {
        let one_month = Retention::parse("1 month").unwrap();
        assert_eq!(
            subtract_retention(day(2026, 3, 31), one_month, UTC),
            day(2026, 2, 28)
        );
        let r = Retention::parse("36 months").unwrap();
        let now = at(2026, 3, 15, 2, 0, 0);
        assert_eq!(subtract_retention(now, r, UTC), at(2023, 3, 15, 2, 0, 0));
        assert_eq!(
            retention_cutoff(now, r, Interval::Month, UTC),
            day(2023, 3, 1)
        );
        assert_eq!(
            retention_cutoff(now, r, Interval::Year, UTC),
            day(2023, 1, 1)
        );
        let weeks = Retention::parse("2 weeks").unwrap();
        assert_eq!(subtract_retention(now, weeks, UTC), at(2026, 3, 1, 2, 0, 0));
        // 2026-03-01 is a Sunday, so its ISO week began on Monday 2026-02-23.
        assert_eq!(
            retention_cutoff(now, weeks, Interval::Week, UTC),
            day(2026, 2, 23)
        );
    }

    #[test]
    fn huge_retention_saturates_instead_of_panicking() {
        let r = Retention {
            amount: u32::MAX,
            unit: RetentionUnit::Year,
        };
        let cutoff = retention_cutoff(day(2026, 1, 1), r, Interval::Month, UTC);
        assert!(cutoff < day(-200_000, 1, 1));
        let r = Retention {
            amount: u32::MAX,
            unit: RetentionUnit::Week,
        };
        assert!(subtract_retention(day(2026, 1, 1), r, UTC) < day(-10_000, 1, 1));
    }

    #[test]
    fn iso_week_53_of_2026_runs_into_2027() {
        for d in 28..=31 {
            let p = period(at(2026, 12, d, 13, 0, 0), Interval::Week, UTC);
            assert_eq!(p, (day(2026, 12, 28), day(2027, 1, 4), "2026_w53".into()));
        }
        for d in 1..=3 {
            let p = period(at(2027, 1, d, 23, 59, 59), Interval::Week, UTC);
            assert_eq!(p, (day(2026, 12, 28), day(2027, 1, 4), "2026_w53".into()));
        }
        let p = period(day(2027, 1, 4), Interval::Week, UTC);
        assert_eq!(p, (day(2027, 1, 4), day(2027, 1, 11), "2027_w01".into()));
    }

    #[test]
    fn iso_week_edges_in_other_years() {
        assert_eq!(
            partition_suffix(day(2021, 1, 3), Interval::Week, UTC),
            "2020_w53"
        );
        assert_eq!(
            period_start(day(2021, 1, 3), Interval::Week, UTC),
            day(2020, 12, 28)
        );
        assert_eq!(
            partition_suffix(day(2024, 12, 30), Interval::Week, UTC),
            "2025_w01"
        );
        assert_eq!(
            partition_suffix(day(2026, 3, 2), Interval::Week, UTC),
            "2026_w10"
        );
        assert_eq!(
            partition_suffix(day(2026, 2, 23), Interval::Week, UTC),
            "2026_w09"
        );
        // A Sunday belongs to the week that started the Monday before.
        assert_eq!(
            period_start(at(2026, 3, 1, 23, 0, 0), Interval::Week, UTC),
            day(2026, 2, 23)
        );
    }

    #[test]
    fn quarters_start_in_january_april_july_october() {
        let cases = [
            (day(2026, 1, 1), day(2026, 1, 1), day(2026, 4, 1), "2026_q1"),
            (
                at(2026, 3, 31, 23, 59, 59),
                day(2026, 1, 1),
                day(2026, 4, 1),
                "2026_q1",
            ),
            (
                day(2026, 5, 15),
                day(2026, 4, 1),
                day(2026, 7, 1),
                "2026_q2",
            ),
            (
                day(2026, 9, 30),
                day(2026, 7, 1),
                day(2026, 10, 1),
                "2026_q3",
            ),
            (
                day(2026, 11, 2),
                day(2026, 10, 1),
                day(2027, 1, 1),
                "2026_q4",
            ),
        ];
        for (t, start, next, suffix) in cases {
            assert_eq!(
                period(t, Interval::Quarter, UTC),
                (start, next, suffix.into())
            );
        }
        assert_eq!(
            add_periods(day(2026, 1, 1), Interval::Quarter, -1, UTC),
            day(2025, 10, 1)
        );
        assert_eq!(
            add_periods(day(2026, 1, 1), Interval::Quarter, 5, UTC),
            day(2027, 4, 1)
        );
    }

    #[test]
    fn is_aligned_only_at_period_starts() {
        assert!(is_aligned(day(2026, 4, 1), Interval::Quarter, UTC));
        assert!(!is_aligned(day(2026, 5, 1), Interval::Quarter, UTC));
        assert!(is_aligned(day(2026, 5, 1), Interval::Month, UTC));
        assert!(!is_aligned(at(2026, 5, 1, 0, 0, 1), Interval::Month, UTC));
        assert!(is_aligned(day(2026, 3, 2), Interval::Week, UTC));
        assert!(!is_aligned(day(2026, 3, 3), Interval::Week, UTC));
        assert!(!is_aligned(day(2026, 7, 1), Interval::Year, UTC));
    }

    // --- Periods in real zones --------------------------------------------------------------

    #[test]
    fn paris_months_start_at_local_midnight_on_either_side_of_dst() {
        let paris = zone("Europe/Paris");
        // 2026-04-01 00:00 CEST (+02) is 2026-03-31 22:00 UTC.
        let april = period(at(2026, 3, 31, 22, 30, 0), Interval::Month, paris);
        assert_eq!(
            april,
            (
                at(2026, 3, 31, 22, 0, 0),
                at(2026, 4, 30, 22, 0, 0),
                "2026_04".into()
            )
        );
        // One minute earlier it is still March, which began at 00:00 CET (+01).
        let march = period(at(2026, 3, 31, 21, 59, 0), Interval::Month, paris);
        assert_eq!(
            march,
            (
                at(2026, 2, 28, 23, 0, 0),
                at(2026, 3, 31, 22, 0, 0),
                "2026_03".into()
            )
        );
    }

    #[test]
    fn paris_dst_days_last_23_and_25_hours() {
        let paris = zone("Europe/Paris");
        let (start, next, suffix) = period(at(2026, 3, 29, 12, 0, 0), Interval::Day, paris);
        assert_eq!(
            (start, next),
            (at(2026, 3, 28, 23, 0, 0), at(2026, 3, 29, 22, 0, 0))
        );
        assert_eq!(suffix, "2026_03_29");
        let (start, next, _) = period(at(2026, 10, 25, 12, 0, 0), Interval::Day, paris);
        assert_eq!(next - start, chrono::TimeDelta::hours(25));
    }

    #[test]
    fn paris_retention_counts_calendar_days_across_dst() {
        let paris = zone("Europe/Paris");
        let r = Retention::parse("1 day").unwrap();
        // 2026-03-30 12:00 CEST minus one calendar day is 2026-03-29 12:00 CEST: 24 hours earlier,
        // but 2026-03-29 03:00 CEST minus a day is 03:00 CET the day before, only 23 hours.
        assert_eq!(
            subtract_retention(at(2026, 3, 30, 10, 0, 0), r, paris),
            at(2026, 3, 29, 10, 0, 0)
        );
        assert_eq!(
            subtract_retention(at(2026, 3, 29, 1, 0, 0), r, paris),
            at(2026, 3, 28, 2, 0, 0)
        );
        // 02:30 on 2026-03-29 never happened in Paris: the first instant after the gap is used.
        assert_eq!(
            subtract_retention(at(2026, 3, 30, 0, 30, 0), r, paris),
            at(2026, 3, 29, 1, 0, 0)
        );
    }

    #[test]
    fn sao_paulo_midnight_skipped_by_dst_starts_the_day_after_the_gap() {
        let sp = zone("America/Sao_Paulo");
        // 2018-11-04 00:00 (-03) jumped to 01:00 (-02) at 03:00 UTC.
        let (start, next, suffix) = period(at(2018, 11, 4, 12, 0, 0), Interval::Day, sp);
        assert_eq!(
            (start, next),
            (at(2018, 11, 4, 3, 0, 0), at(2018, 11, 5, 2, 0, 0))
        );
        assert_eq!(suffix, "2018_11_04");
        assert!(is_aligned(at(2018, 11, 4, 3, 0, 0), Interval::Day, sp));
        // The day before ends at the gap: 23 hours long.
        let (prev, prev_next, _) = period(at(2018, 11, 3, 12, 0, 0), Interval::Day, sp);
        assert_eq!(
            (prev, prev_next),
            (at(2018, 11, 3, 3, 0, 0), at(2018, 11, 4, 3, 0, 0))
        );
        // The week holding that Sunday still starts at Monday 2018-10-29 00:00 (-03).
        assert_eq!(
            period_start(at(2018, 11, 4, 12, 0, 0), Interval::Week, sp),
            at(2018, 10, 29, 3, 0, 0)
        );
    }

    #[test]
    fn sao_paulo_without_dst_today() {
        let sp = zone("America/Sao_Paulo");
        let p = period(at(2026, 7, 1, 2, 59, 59), Interval::Month, sp);
        assert_eq!(
            p,
            (
                at(2026, 6, 1, 3, 0, 0),
                at(2026, 7, 1, 3, 0, 0),
                "2026_06".into()
            )
        );
        // DST ended 2018-02-18 00:00 (-02) back to 2018-02-17 23:00 (-03): a 25-hour day.
        let (start, next, _) = period(at(2018, 2, 17, 12, 0, 0), Interval::Day, sp);
        assert_eq!(
            (start, next),
            (at(2018, 2, 17, 2, 0, 0), at(2018, 2, 18, 3, 0, 0))
        );
    }

    #[test]
    fn kolkata_half_hour_offset() {
        let kolkata = zone("Asia/Kolkata");
        let p = period(at(2025, 12, 31, 18, 30, 0), Interval::Year, kolkata);
        assert_eq!(
            p,
            (
                at(2025, 12, 31, 18, 30, 0),
                at(2026, 12, 31, 18, 30, 0),
                "2026".into()
            )
        );
        let p = period(at(2025, 12, 31, 18, 29, 59), Interval::Month, kolkata);
        assert_eq!(
            p,
            (
                at(2025, 11, 30, 18, 30, 0),
                at(2025, 12, 31, 18, 30, 0),
                "2025_12".into()
            )
        );
        assert!(!is_aligned(day(2026, 1, 1), Interval::Day, kolkata));
    }

    #[test]
    fn chatham_quarter_to_the_hour_offset_with_dst() {
        let chatham = zone("Pacific/Chatham");
        // January is summer: +13:45.
        let p = period(at(2026, 1, 15, 0, 0, 0), Interval::Month, chatham);
        assert_eq!(
            p,
            (
                at(2025, 12, 31, 10, 15, 0),
                at(2026, 1, 31, 10, 15, 0),
                "2026_01".into()
            )
        );
        // April 2026 starts in summer time (+13:45), May in winter time (+12:45).
        let p = period(at(2026, 4, 15, 0, 0, 0), Interval::Month, chatham);
        assert_eq!(
            p,
            (
                at(2026, 3, 31, 10, 15, 0),
                at(2026, 4, 30, 11, 15, 0),
                "2026_04".into()
            )
        );
    }

    #[test]
    fn havana_skips_midnight_in_march_and_repeats_it_in_november() {
        let havana = zone("America/Havana");
        // 2026-03-08 00:00 (-05) jumped to 01:00 (-04) at 05:00 UTC: the day starts there.
        let (start, next, suffix) = period(at(2026, 3, 8, 12, 0, 0), Interval::Day, havana);
        assert_eq!(
            (start, next),
            (at(2026, 3, 8, 5, 0, 0), at(2026, 3, 9, 4, 0, 0))
        );
        assert_eq!(suffix, "2026_03_08");
        assert_eq!(
            add_periods(at(2026, 3, 9, 4, 0, 0), Interval::Day, -1, havana),
            start
        );
        // 2026-11-01 01:00 (-04) went back to 00:00 (-05): midnight happened twice, at 04:00 and
        // 05:00 UTC. The day starts at the earlier one, and the hour between belongs to it.
        let (start, next, _) = period(at(2026, 11, 1, 4, 30, 0), Interval::Day, havana);
        assert_eq!(
            (start, next),
            (at(2026, 11, 1, 4, 0, 0), at(2026, 11, 2, 5, 0, 0))
        );
        assert_eq!(
            period_start(at(2026, 11, 1, 5, 0, 0), Interval::Day, havana),
            start
        );
        assert_eq!(
            period_start(at(2026, 11, 1, 3, 59, 59), Interval::Day, havana),
            at(2026, 10, 31, 4, 0, 0)
        );
        // The month of November starts at the earlier midnight too.
        assert_eq!(
            period_start(at(2026, 11, 15, 0, 0, 0), Interval::Month, havana),
            at(2026, 11, 1, 4, 0, 0)
        );
    }

    #[test]
    fn santiago_month_starting_on_a_skipped_midnight() {
        let santiago = zone("America/Santiago");
        // 2019-09-08 00:00 (-04) jumped to 01:00 (-03) at 04:00 UTC.
        let (start, _, suffix) = period(at(2019, 9, 8, 12, 0, 0), Interval::Day, santiago);
        assert_eq!(
            (start, suffix.as_str()),
            (at(2019, 9, 8, 4, 0, 0), "2019_09_08")
        );
        // A year later, 2022-09-11 00:00 (-04) jumped at 04:00 UTC, so nothing exists locally
        // between 2022-09-10 24:00 and 01:00; the week starting Monday 09-05 is unaffected.
        let week = period(at(2022, 9, 11, 12, 0, 0), Interval::Week, santiago);
        assert_eq!(week.0, at(2022, 9, 5, 4, 0, 0));
        assert_eq!(week.1, at(2022, 9, 12, 3, 0, 0));
        // DST ending at 24:00 repeats the last hour of Saturday; Sunday starts once.
        let (start, next, _) = period(at(2026, 4, 4, 12, 0, 0), Interval::Day, santiago);
        assert_eq!(
            (start, next),
            (at(2026, 4, 4, 3, 0, 0), at(2026, 4, 5, 4, 0, 0))
        );
    }

    #[test]
    fn apia_never_had_2011_12_30_so_no_period_is_empty() {
        let apia = zone("Pacific/Apia");
        // 2011-12-29 23:59:59 (-10) was followed by 2011-12-31 00:00 (+14) at 10:00 UTC.
        let jump = at(2011, 12, 30, 10, 0, 0);
        let dec29 = period_start(at(2011, 12, 30, 9, 0, 0), Interval::Day, apia);
        assert_eq!(dec29, at(2011, 12, 29, 10, 0, 0));
        assert_eq!(add_periods(dec29, Interval::Day, 1, apia), jump);
        assert_eq!(partition_suffix(jump, Interval::Day, apia), "2011_12_31");
        assert_eq!(add_periods(jump, Interval::Day, -1, apia), dec29);
        assert_eq!(
            add_periods(dec29, Interval::Day, 2, apia),
            at(2011, 12, 31, 10, 0, 0)
        );
        assert_eq!(
            add_periods(at(2011, 12, 31, 10, 0, 0), Interval::Day, -2, apia),
            dec29
        );
    }

    #[test]
    fn extreme_instants_saturate_instead_of_panicking() {
        let paris = zone("Europe/Paris");
        for t in [DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC] {
            for iv in ALL_INTERVALS {
                let s = period_start(t, iv, paris);
                let _ = add_periods(s, iv, i32::MAX, paris);
                let _ = add_periods(s, iv, i32::MIN, paris);
                let _ = partition_suffix(s, iv, paris);
                let _ = is_aligned(t, iv, paris);
            }
        }
    }

    // --- Properties -------------------------------------------------------------------------

    const ALL_INTERVALS: [Interval; 5] = [
        Interval::Day,
        Interval::Week,
        Interval::Month,
        Interval::Quarter,
        Interval::Year,
    ];

    const ZONES: [&str; 10] = [
        "UTC",
        "Europe/Paris",
        "America/Sao_Paulo",
        "Asia/Kolkata",
        "Pacific/Chatham",
        "America/Havana",
        "America/Santiago",
        "Pacific/Apia",
        "Australia/Lord_Howe",
        "America/St_Johns",
    ];

    fn instant() -> impl Strategy<Value = DateTime<Utc>> {
        let lo = day(1900, 1, 1).timestamp();
        let hi = day(2200, 1, 1).timestamp();
        (lo..hi, 0u32..1_000_000)
            .prop_map(|(s, us)| DateTime::from_timestamp(s, us * 1000).unwrap())
    }

    fn interval() -> impl Strategy<Value = Interval> {
        prop::sample::select(ALL_INTERVALS.to_vec())
    }

    fn tz() -> impl Strategy<Value = Tz> {
        prop::sample::select(ZONES.to_vec()).prop_map(zone)
    }

    proptest! {
        #[test]
        fn an_instant_lies_in_its_period(t in instant(), iv in interval(), tz in tz()) {
            let start = period_start(t, iv, tz);
            prop_assert!(start <= t);
            prop_assert!(t < add_periods(start, iv, 1, tz));
        }

        #[test]
        fn period_start_is_idempotent_and_aligned(t in instant(), iv in interval(), tz in tz()) {
            let start = period_start(t, iv, tz);
            prop_assert_eq!(period_start(start, iv, tz), start);
            prop_assert!(is_aligned(start, iv, tz));
            let next = add_periods(start, iv, 1, tz);
            prop_assert!(is_aligned(next, iv, tz));
            prop_assert_eq!(period_start(next, iv, tz), next);
        }

        #[test]
        fn add_periods_is_undone_by_its_negation(
            t in instant(), iv in interval(), tz in tz(), n in -400i32..400,
        ) {
            let start = period_start(t, iv, tz);
            let moved = add_periods(start, iv, n, tz);
            prop_assert!(is_aligned(moved, iv, tz));
            prop_assert_eq!(add_periods(moved, iv, -n, tz), start);
            // Moving n at once is moving by one n times.
            if n.abs() <= 40 {
                let mut stepped = start;
                for _ in 0..n.abs() {
                    stepped = add_periods(stepped, iv, n.signum(), tz);
                }
                prop_assert_eq!(stepped, moved);
            }
        }

        #[test]
        fn consecutive_periods_tile_time(t in instant(), iv in interval(), tz in tz()) {
            let mut start = period_start(t, iv, tz);
            for _ in 0..12 {
                let next = add_periods(start, iv, 1, tz);
                prop_assert!(start < next);
                // No gap: the last instant before `next` is still in this period.
                let last = next - chrono::TimeDelta::nanoseconds(1);
                prop_assert_eq!(period_start(last, iv, tz), start);
                // No overlap: `next` starts a new period.
                prop_assert_eq!(period_start(next, iv, tz), next);
                prop_assert_eq!(add_periods(next, iv, -1, tz), start);
                start = next;
            }
        }

        #[test]
        fn suffixes_are_distinct_and_sort_in_time_order_within_a_year(
            t in instant(), iv in interval(), tz in tz(),
        ) {
            let mut start = period_start(t, iv, tz);
            let mut prev = partition_suffix(start, iv, tz);
            for _ in 0..60 {
                start = add_periods(start, iv, 1, tz);
                let suffix = partition_suffix(start, iv, tz);
                prop_assert_ne!(&suffix, &prev);
                if suffix[..4] == prev[..4] {
                    prop_assert!(prev < suffix, "{} then {}", prev, suffix);
                }
                prev = suffix;
            }
        }

        #[test]
        fn retention_cutoff_is_aligned_and_not_after_the_retention(
            t in instant(), iv in interval(), tz in tz(),
            amount in 1u32..500, unit in prop::sample::select(vec![
                RetentionUnit::Day, RetentionUnit::Week, RetentionUnit::Month, RetentionUnit::Year,
            ]),
        ) {
            let r = Retention { amount, unit };
            let cutoff = retention_cutoff(t, r, iv, tz);
            prop_assert!(is_aligned(cutoff, iv, tz));
            prop_assert!(cutoff <= subtract_retention(t, r, tz));
            prop_assert!(subtract_retention(t, r, tz) < t);
        }

        #[test]
        fn parsers_never_panic(s in ".{0,40}") {
            let _ = Interval::parse(&s);
            let _ = Retention::parse(&s);
        }
    }
}

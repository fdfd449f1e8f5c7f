//! Calendar arithmetic for partition periods and retention: which period an instant falls in,
//! where the next one starts, what a period's partition is called, and where retention cuts off.
//!
//! Everything here is pure: no clock, no I/O. Instants are `DateTime<Utc>`; the zone decides
//! where local midnights fall. `date` and `timestamp` keys use wall-clock values dressed as UTC
//! with `tz = UTC`; `timestamptz` keys use real instants and the configured zone.
//!
//! Every period has a label: the local wall-clock time that opens it (a midnight, or for
//! sub-daily periods a multiple of the period within the day). Labels are aligned so that they
//! never depend on the day partkeeper first ran: minutes and hours from midnight, N days from
//! 1970-01-01, N weeks from Monday 1970-01-05, N months from January, N years from year 0.
//!
//! A period starts at the earliest instant whose local wall-clock time is at or after its label.
//! So a label skipped by a DST jump starts the period at the first instant after the gap, and a
//! label that happens twice starts it at the earlier one. Sub-daily periods follow the same rule:
//! the periods whose labels a spring-forward gap skips are empty, and the hour an autumn
//! fall-back repeats belongs to the period that started before it (which is that much longer).
//! Empty periods (those, or a day skipped entirely: Pacific/Apia jumped over 2011-12-30) are not
//! counted, so periods always tile time and `add_periods` is invertible.

use std::fmt;
use std::str::FromStr;

use chrono::{
    DateTime, Datelike, Days, Months, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeDelta,
    TimeZone, Timelike, Utc,
};
use chrono_tz::{GapInfo, Tz};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The unit of a calendar interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::Minute => "minute",
            Unit::Hour => "hour",
            Unit::Day => "day",
            Unit::Week => "week",
            Unit::Month => "month",
            Unit::Year => "year",
        }
    }
}

/// Length of one partition on the calendar: `count` units, validated (minutes divide an hour,
/// hours a day, months a year).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Interval {
    count: u32,
    unit: Unit,
}

// The five intervals of part 1, under the names the code and tests have always used.
#[allow(non_upper_case_globals)]
impl Interval {
    pub const Day: Interval = Interval {
        count: 1,
        unit: Unit::Day,
    };
    pub const Week: Interval = Interval {
        count: 1,
        unit: Unit::Week,
    };
    pub const Month: Interval = Interval {
        count: 1,
        unit: Unit::Month,
    };
    pub const Quarter: Interval = Interval {
        count: 3,
        unit: Unit::Month,
    };
    pub const Year: Interval = Interval {
        count: 1,
        unit: Unit::Year,
    };
}

/// Accepted interval spellings, quoted in every parse error.
const INTERVAL_FORMS: &str = "\"N minutes\" (N divides 60), \"N hours\" (N divides 24), \
     \"N days\", \"N weeks\", \"N months\" (N divides 12) or \"N years\", e.g. \"1 day\", \
     \"1 week\", \"1 month\", \"3 months\", \"1 year\", \"15 minutes\" or \"6 hours\" \
     (or hourly, daily, weekly, monthly, quarterly, yearly)";

/// Upper limits for the units without a divisibility rule: beyond these a typo is likelier
/// than a wish (and the label arithmetic stays far from overflow).
const MAX_DAYS: u32 = 3660;
const MAX_WEEKS: u32 = 520;
const MAX_YEARS: u32 = 1000;

impl Interval {
    /// Accepts what a user would write: "<N> <unit>" with unit minute(s)/min(s), hour(s),
    /// day(s), week(s), month(s), quarter(s) or year(s) (case-insensitive, flexible whitespace,
    /// singular or plural), or the bare words hour/hourly, day/daily, week/weekly,
    /// month/monthly, quarter/quarterly, year/yearly. The error says what to write instead.
    pub fn parse(s: &str) -> Result<Self, CalendarError> {
        let norm = s.trim().to_lowercase();
        let (amount, unit_word) = split_amount(&norm);
        let unknown = || CalendarError::UnknownInterval {
            input: s.to_string(),
        };
        let (count, unit) = if amount.is_empty() {
            match unit_word {
                "hour" | "hourly" => (1, Unit::Hour),
                "day" | "daily" => (1, Unit::Day),
                "week" | "weekly" => (1, Unit::Week),
                "month" | "monthly" => (1, Unit::Month),
                "quarter" | "quarterly" => (3, Unit::Month),
                "year" | "yearly" => (1, Unit::Year),
                _ => return Err(unknown()),
            }
        } else {
            let Some(n) = amount
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| amount.parse::<u32>().ok())
                .flatten()
            else {
                return Err(unknown());
            };
            match unit_word {
                "minute" | "minutes" | "min" | "mins" => (n, Unit::Minute),
                "hour" | "hours" => (n, Unit::Hour),
                "day" | "days" => (n, Unit::Day),
                "week" | "weeks" => (n, Unit::Week),
                "month" | "months" => (n, Unit::Month),
                "quarter" | "quarters" => (n.checked_mul(3).ok_or_else(unknown)?, Unit::Month),
                "year" | "years" => (n, Unit::Year),
                _ => return Err(unknown()),
            }
        };
        Interval::new(count, unit).map_err(|problem| CalendarError::InvalidInterval {
            input: s.to_string(),
            problem,
        })
    }

    /// `count` units, or what is wrong with that and what to write instead.
    pub fn new(count: u32, unit: Unit) -> Result<Interval, String> {
        let plural = |n: u32| if n == 1 { "" } else { "s" };
        let divisors = |whole: u32| -> String {
            let ds: Vec<String> = (1..whole)
                .filter(|d| whole % d == 0)
                .map(|d| d.to_string())
                .collect();
            let (last, rest) = ds.split_last().expect("whole > 1");
            format!("{} or {last}", rest.join(", "))
        };
        if count == 0 {
            return Err(format!("0 {}s is no length; use at least 1", unit.name()));
        }
        let problem = match unit {
            Unit::Minute if count >= 60 && count % 60 == 0 => Some(format!(
                "write {} hour{} instead of {count} minutes",
                count / 60,
                plural(count / 60)
            )),
            Unit::Minute if 60 % count != 0 => Some(format!(
                "{count} minutes does not divide an hour; use {} minutes",
                divisors(60)
            )),
            Unit::Hour if count >= 24 && count % 24 == 0 => Some(format!(
                "write {} day{} instead of {count} hours",
                count / 24,
                plural(count / 24)
            )),
            Unit::Hour if 24 % count != 0 => Some(format!(
                "{count} hours does not divide a day; use {} hours",
                divisors(24)
            )),
            Unit::Month if 12 % count != 0 => Some(format!(
                "{count} months does not divide a year; use 1, 2, 3, 4, 6 or 12 months"
            )),
            Unit::Day if count > MAX_DAYS => Some(format!("use at most {MAX_DAYS} days")),
            Unit::Week if count > MAX_WEEKS => Some(format!("use at most {MAX_WEEKS} weeks")),
            Unit::Year if count > MAX_YEARS => Some(format!("use at most {MAX_YEARS} years")),
            _ => None,
        };
        match problem {
            Some(p) => Err(p),
            None => Ok(Interval { count, unit }),
        }
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn unit(&self) -> Unit {
        self.unit
    }

    /// Whether periods are shorter than a day (named down to the minute).
    pub fn is_sub_daily(&self) -> bool {
        matches!(self.unit, Unit::Minute | Unit::Hour)
    }

    /// Canonical spelling, as written in the configuration ("1 month", "15 minutes").
    pub fn as_str(&self) -> String {
        let plural = if self.count == 1 { "" } else { "s" };
        format!("{} {}{plural}", self.count, self.unit.name())
    }

    /// Minutes in one sub-daily period.
    fn minutes(&self) -> i64 {
        let per = if self.unit == Unit::Hour { 60 } else { 1 };
        i64::from(self.count) * per
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
        f.write_str(&self.as_str())
    }
}

// Serialized as the configuration spelling ("1 month"), so JSON output reads like the config.
impl Serialize for Interval {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.as_str())
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
    #[error("invalid partition interval {input:?}: {problem}")]
    InvalidInterval { input: String, problem: String },
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

/// The label (opening wall-clock time) of the period containing the wall-clock time `wall`.
fn label_of(wall: NaiveDateTime, iv: Interval) -> NaiveDateTime {
    let date = wall.date();
    let n = i64::from(iv.count);
    let midnight = |d: NaiveDate| d.and_time(NaiveTime::MIN);
    let first_of = |year: i32, month: u32| {
        NaiveDate::from_ymd_opt(year, month, 1).map_or(midnight(date), midnight)
    };
    // Days since an epoch day, rounded down to a multiple of `per` days.
    let aligned_days = |epoch: NaiveDate, per: i64| {
        let since = date.signed_duration_since(epoch).num_days();
        let back = since.rem_euclid(per);
        midnight(
            date.checked_sub_days(Days::new(back as u64))
                .unwrap_or(date),
        )
    };
    match iv.unit {
        Unit::Minute | Unit::Hour => {
            let minute_of_day = i64::from(wall.hour()) * 60 + i64::from(wall.minute());
            let per = iv.minutes();
            midnight(date) + TimeDelta::minutes(minute_of_day / per * per)
        }
        Unit::Day if n == 1 => midnight(date),
        Unit::Day => aligned_days(EPOCH_DAY, n),
        Unit::Week => aligned_days(EPOCH_MONDAY, 7 * n),
        Unit::Month => first_of(date.year(), (date.month() - 1) / iv.count * iv.count + 1),
        Unit::Year => first_of(date.year().div_euclid(iv.count as i32) * iv.count as i32, 1),
    }
}

/// 1970-01-01, from which N-day periods are counted.
const EPOCH_DAY: NaiveDate = match NaiveDate::from_ymd_opt(1970, 1, 1) {
    Some(d) => d,
    None => NaiveDate::MIN,
};
/// Monday 1970-01-05, from which N-week periods are counted (1 week is then the ISO week).
const EPOCH_MONDAY: NaiveDate = match NaiveDate::from_ymd_opt(1970, 1, 5) {
    Some(d) => d,
    None => NaiveDate::MIN,
};

/// The label `n` periods after `label`, or None when that leaves the supported window.
fn shift_label(label: NaiveDateTime, iv: Interval, n: i64) -> Option<NaiveDateTime> {
    let count = u64::from(iv.count);
    let shifted = match iv.unit {
        Unit::Minute | Unit::Hour => {
            let minutes = n.checked_mul(iv.minutes())?;
            label.checked_add_signed(TimeDelta::try_minutes(minutes)?)
        }
        Unit::Day | Unit::Week => {
            let per = if iv.unit == Unit::Day {
                count
            } else {
                7 * count
            };
            let days = Days::new(n.unsigned_abs().checked_mul(per)?);
            if n >= 0 {
                label.checked_add_days(days)
            } else {
                label.checked_sub_days(days)
            }
        }
        Unit::Month | Unit::Year => {
            let per = if iv.unit == Unit::Month {
                count
            } else {
                12 * count
            };
            let months = Months::new(u32::try_from(n.unsigned_abs().checked_mul(per)?).ok()?);
            if n >= 0 {
                label.checked_add_months(months)
            } else {
                label.checked_sub_months(months)
            }
        }
    }?;
    (MIN_DATE..=MAX_DATE)
        .contains(&shifted.date())
        .then_some(shifted)
}

fn label_start(label: NaiveDateTime, tz: Tz) -> DateTime<Utc> {
    resolve(label, tz)
}

/// Whether a period can be empty in `tz` (its label skipped by a jump of the clock): sub-daily
/// periods in any zone with DST, single days in zones that skipped a whole day. Longer periods
/// always keep at least a day.
fn may_be_empty(iv: Interval, tz: Tz) -> bool {
    tz != Tz::UTC && (iv.is_sub_daily() || iv == Interval::Day)
}

/// How many labels a clock jump can skip or repeat: a jump is at most about two days.
fn jump_labels(iv: Interval) -> i64 {
    if iv.is_sub_daily() {
        2 * 24 * 60 / iv.minutes() + 2
    } else {
        4
    }
}

/// Start of the period containing `t`. Week = ISO week, from Monday 00:00;
/// Quarter = from Jan/Apr/Jul/Oct 1st.
pub fn period_start(t: DateTime<Utc>, iv: Interval, tz: Tz) -> DateTime<Utc> {
    let t = clamp(t);
    let label = label_of(wall_clock(t, tz), iv);
    let start = label_start(label, tz);
    // Almost always done already. But a clock set back (America/Goose_Bay, 1988-10-30 00:01 ->
    // 10-29 22:01; or any autumn fall-back for sub-daily periods) shows an earlier label for a
    // while after a later period began; the instant decides, not the wall clock, so move on to
    // the latest start at or before t. Starts never decrease as labels increase, so a binary
    // search over the labels a jump can repeat finds it.
    let start_of = |k: i64| shift_label(label, iv, k).map(|l| label_start(l, tz));
    match start_of(1) {
        Some(next) if next <= t => {}
        _ => return start,
    }
    let (mut lo, mut hi) = (1, jump_labels(iv));
    if start_of(hi).is_some_and(|s| s <= t) {
        return start_of(hi).unwrap_or(start);
    }
    // Invariant: start_of(lo) <= t < start_of(hi).
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if start_of(mid).is_some_and(|s| s <= t) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    start_of(lo).unwrap_or(start)
}

/// Beyond this many periods `add_periods` counts labels instead of walking them one by one, so
/// an empty period (skipped by the clock) is counted. No plan steps that far at once (the planner
/// walks period by period), and the walk stays in the milliseconds.
const WALK_LIMIT: u32 = 100_000;

/// The period start `n` periods after `start` (n may be negative); `start` is assumed aligned.
/// Saturates at the edges of the supported window (years -260000..260000).
pub fn add_periods(start: DateTime<Utc>, iv: Interval, n: i32, tz: Tz) -> DateTime<Utc> {
    let label = label_of(wall_clock(clamp(start), tz), iv);
    // Period starts near the window's edges can lie just outside it; never move the wrong way.
    let saturated = if n >= 0 {
        max_instant().max(start)
    } else {
        min_instant().min(start)
    };
    // Only periods that can be empty need walking; everything else is plain label arithmetic.
    if !may_be_empty(iv, tz) || n.unsigned_abs() > WALK_LIMIT {
        return shift_label(label, iv, i64::from(n)).map_or(saturated, |l| label_start(l, tz));
    }
    let step = if n >= 0 { 1 } else { -1 };
    let mut here = (label, label_start(label, tz));
    for _ in 0..n.unsigned_abs() {
        match next_label(here, iv, step, tz) {
            Some(next) => here = next,
            None => return saturated,
        }
    }
    here.1
}

/// The next (step 1) or previous (step -1) label whose period starts at a different instant
/// than `here`; labels in between never happened on the local clock.
fn next_label(
    here: (NaiveDateTime, DateTime<Utc>),
    iv: Interval,
    step: i64,
    tz: Tz,
) -> Option<(NaiveDateTime, DateTime<Utc>)> {
    let mut label = here.0;
    for _ in 0..jump_labels(iv) {
        label = shift_label(label, iv, step)?;
        let at = label_start(label, tz);
        if at != here.1 {
            return Some((label, at));
        }
    }
    None
}

/// Whether `t` is exactly a period start.
pub fn is_aligned(t: DateTime<Utc>, iv: Interval, tz: Tz) -> bool {
    period_start(t, iv, tz) == t
}

/// Partition-name suffix of the period starting at `start`, from its label: "2026" (years),
/// "2026_03" (months), "2026_q1" (3 months), "2026_03_05" (days, and N weeks by their first
/// day), "2026_w09" (1 week: ISO year and week, 2027-01-01 is in "2026_w53"),
/// "2026_03_05_1430" (minutes and hours). Fixed-width fields, so names sort in time order.
pub fn partition_suffix(start: DateTime<Utc>, iv: Interval, tz: Tz) -> String {
    let label = label_of(wall_clock(period_start(start, iv, tz), tz), iv);
    let (year, month, day) = (label.year(), label.month(), label.day());
    match iv.unit {
        Unit::Minute | Unit::Hour => format!(
            "{year:04}_{month:02}_{day:02}_{:02}{:02}",
            label.hour(),
            label.minute()
        ),
        Unit::Week if iv.count == 1 => {
            let week = label.date().iso_week();
            format!("{:04}_w{:02}", week.year(), week.week())
        }
        Unit::Day | Unit::Week => format!("{year:04}_{month:02}_{day:02}"),
        Unit::Month if iv.count == 3 => format!("{year:04}_q{}", (month - 1) / 3 + 1),
        Unit::Month => format!("{year:04}_{month:02}"),
        Unit::Year => format!("{year:04}"),
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

    const UTC: Tz = Tz::UTC;

    /// "2026-03-31", "2026-03-31 22:30" or "2026-03-31 22:30:15", read as UTC.
    fn t(s: &str) -> DateTime<Utc> {
        let full = match s.len() {
            10 => format!("{s} 00:00:00"),
            16 => format!("{s}:00"),
            _ => s.to_string(),
        };
        NaiveDateTime::parse_from_str(&full, "%Y-%m-%d %H:%M:%S")
            .unwrap_or_else(|e| panic!("bad test instant {s:?}: {e}"))
            .and_utc()
    }

    fn zone(name: &str) -> Tz {
        name.parse().unwrap()
    }

    fn retention(s: &str) -> Retention {
        Retention::parse(s).unwrap()
    }

    /// For each (instant, period start, next period start, suffix), checks the period holding
    /// the instant, and that stepping back from the next start returns to this one.
    #[track_caller]
    fn assert_periods(iv: Interval, tz: Tz, cases: &[(&str, &str, &str, &str)]) {
        for &(instant, start, next, suffix) in cases {
            let got_start = period_start(t(instant), iv, tz);
            let got_next = add_periods(got_start, iv, 1, tz);
            let got_suffix = partition_suffix(got_start, iv, tz);
            assert_eq!(
                (got_start, got_next, got_suffix.as_str()),
                (t(start), t(next), suffix),
                "{iv} in {tz} at {instant}"
            );
            assert_eq!(add_periods(got_next, iv, -1, tz), got_start);
        }
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
            assert_eq!(Interval::parse(&iv.as_str()).unwrap(), iv);
            assert_eq!(iv.to_string(), iv.as_str());
        }
        assert_eq!(Interval::Quarter.as_str(), "3 months");
    }

    #[test]
    fn interval_rejects_what_it_cannot_partition_by_and_says_what_to_write() {
        let cases = [
            ("", "\"1 day\""),
            ("0 days", "use at least 1"),
            ("-1 day", "\"1 day\""),
            ("1.5 months", "\"3 months\""),
            ("month please", "\"N hours\""),
            ("1 1 month", "\"N days\""),
            ("fortnightly", "\"N weeks\""),
            ("1 mon", "\"1 month\""),
            (
                "7 hours",
                "7 hours does not divide a day; use 1, 2, 3, 4, 6, 8 or 12 hours",
            ),
            ("5 months", "use 1, 2, 3, 4, 6 or 12 months"),
            (
                "7 minutes",
                "use 1, 2, 3, 4, 5, 6, 10, 12, 15, 20 or 30 minutes",
            ),
            ("60 minutes", "write 1 hour instead"),
            ("48 hours", "write 2 days instead"),
            ("9999 years", "at most 1000 years"),
            ("99999999999 days", "\"N days\""),
        ];
        for (input, says) in cases {
            let msg = Interval::parse(input).unwrap_err().to_string();
            assert!(msg.contains(says), "{input:?}: {msg}");
            assert!(msg.contains(&format!("{input:?}")), "{msg}");
        }
    }

    #[test]
    fn interval_accepts_the_part_2_forms() {
        let cases = [
            ("15 minutes", 15, Unit::Minute, "15 minutes"),
            ("1 min", 1, Unit::Minute, "1 minute"),
            ("hourly", 1, Unit::Hour, "1 hour"),
            ("6 Hours", 6, Unit::Hour, "6 hours"),
            ("12 hours", 12, Unit::Hour, "12 hours"),
            ("7 days", 7, Unit::Day, "7 days"),
            ("2 weeks", 2, Unit::Week, "2 weeks"),
            ("6 months", 6, Unit::Month, "6 months"),
            ("2 quarters", 6, Unit::Month, "6 months"),
            ("12 months", 12, Unit::Month, "12 months"),
            ("10 years", 10, Unit::Year, "10 years"),
        ];
        for (input, count, unit, canonical) in cases {
            let iv = Interval::parse(input).unwrap();
            assert_eq!((iv.count(), iv.unit()), (count, unit), "{input:?}");
            assert_eq!(iv.to_string(), canonical);
            assert_eq!(Interval::parse(canonical).unwrap(), iv);
        }
    }

    #[test]
    fn interval_serializes_as_the_config_spelling() {
        let json = serde_json::to_string(&Interval::Quarter).unwrap();
        assert_eq!(json, "\"3 months\"");
        let iv: Interval = serde_json::from_str("\"monthly\"").unwrap();
        assert_eq!(iv, Interval::Month);
        let err = serde_json::from_str::<Interval>("\"7 hours\"").unwrap_err();
        assert!(err.to_string().contains("8 or 12 hours"), "{err}");
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
            let want = Retention { amount, unit };
            assert_eq!(Retention::parse(input).unwrap(), want, "{input:?}");
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
            let r = retention(input);
            assert_eq!(r.to_string(), input);
            assert_eq!(r.to_string().parse::<Retention>().unwrap(), r);
        }
        let json = serde_json::to_string(&retention("36 months")).unwrap();
        assert_eq!(json, "\"36 months\"");
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
            ("36 hours", "unknown unit"),
            ("36", "no unit"),
            ("months", "no amount"),
            ("thirty six months", "no amount"),
            ("99999999999 days", "too large"),
            ("3+ months", "not a number"),
        ];
        for (input, problem) in cases {
            let msg = Retention::parse(input).unwrap_err().to_string();
            assert!(msg.contains(problem), "{input:?}: {msg}");
            assert!(msg.contains("e.g. \"36 months\""), "{input:?}: {msg}");
        }
    }

    // --- Periods in UTC (date and timestamp keys) -------------------------------------------

    #[test]
    fn month_ends_belong_to_their_own_month() {
        assert_periods(
            Interval::Month,
            UTC,
            &[
                ("2026-01-31 12:00", "2026-01-01", "2026-02-01", "2026_01"),
                ("2026-02-28 23:59:59", "2026-02-01", "2026-03-01", "2026_02"),
                ("2026-04-30 23:59:59", "2026-04-01", "2026-05-01", "2026_04"),
                ("2026-05-01", "2026-05-01", "2026-06-01", "2026_05"),
            ],
        );
    }

    #[test]
    fn last_second_of_the_year() {
        let last = "2026-12-31 23:59:59";
        assert_periods(
            Interval::Month,
            UTC,
            &[(last, "2026-12-01", "2027-01-01", "2026_12")],
        );
        assert_periods(
            Interval::Year,
            UTC,
            &[(last, "2026-01-01", "2027-01-01", "2026")],
        );
        assert_periods(
            Interval::Day,
            UTC,
            &[(last, "2026-12-31", "2027-01-01", "2026_12_31")],
        );
        assert_periods(
            Interval::Quarter,
            UTC,
            &[(last, "2026-10-01", "2027-01-01", "2026_q4")],
        );
    }

    #[test]
    fn leap_day_2028() {
        let leap = "2028-02-29 12:00";
        assert_periods(
            Interval::Day,
            UTC,
            &[(leap, "2028-02-29", "2028-03-01", "2028_02_29")],
        );
        assert_periods(
            Interval::Month,
            UTC,
            &[(leap, "2028-02-01", "2028-03-01", "2028_02")],
        );
        assert_periods(
            Interval::Year,
            UTC,
            &[(leap, "2028-01-01", "2029-01-01", "2028")],
        );
        assert_eq!(
            add_periods(t("2028-02-28"), Interval::Day, 1, UTC),
            t("2028-02-29")
        );
    }

    #[test]
    fn one_year_before_a_leap_day_is_the_28th() {
        let now = t("2028-02-29 06:30");
        assert_eq!(
            subtract_retention(now, retention("1 year"), UTC),
            t("2027-02-28 06:30")
        );
        assert_eq!(
            subtract_retention(now, retention("4 years"), UTC),
            t("2024-02-29 06:30")
        );
        let cutoff = |iv| retention_cutoff(now, retention("1 year"), iv, UTC);
        assert_eq!(cutoff(Interval::Month), t("2027-02-01"));
        assert_eq!(cutoff(Interval::Day), t("2027-02-28"));
    }

    #[test]
    fn retention_months_clamp_to_the_month_end_and_cutoffs_align_down() {
        assert_eq!(
            subtract_retention(t("2026-03-31"), retention("1 month"), UTC),
            t("2026-02-28")
        );
        let now = t("2026-03-15 02:00");
        let r = retention("36 months");
        assert_eq!(subtract_retention(now, r, UTC), t("2023-03-15 02:00"));
        assert_eq!(
            retention_cutoff(now, r, Interval::Month, UTC),
            t("2023-03-01")
        );
        assert_eq!(
            retention_cutoff(now, r, Interval::Year, UTC),
            t("2023-01-01")
        );
        let r = retention("2 weeks");
        assert_eq!(subtract_retention(now, r, UTC), t("2026-03-01 02:00"));
        // 2026-03-01 is a Sunday, in the ISO week that began on Monday 2026-02-23.
        assert_eq!(
            retention_cutoff(now, r, Interval::Week, UTC),
            t("2026-02-23")
        );
    }

    #[test]
    fn huge_retention_saturates_instead_of_panicking() {
        let forever = |unit| Retention {
            amount: u32::MAX,
            unit,
        };
        let now = t("2026-01-01");
        let cutoff = retention_cutoff(now, forever(RetentionUnit::Year), Interval::Month, UTC);
        assert!(cutoff.year() < -200_000);
        assert!(subtract_retention(now, forever(RetentionUnit::Week), UTC).year() < -10_000);
    }

    #[test]
    fn iso_week_53_of_2026_runs_into_2027() {
        let w53 = ("2026-12-28", "2027-01-04", "2026_w53");
        let cases: Vec<_> = [
            "2026-12-28",
            "2026-12-31 13:00",
            "2027-01-01",
            "2027-01-03 23:59:59",
        ]
        .into_iter()
        .map(|instant| (instant, w53.0, w53.1, w53.2))
        .chain([("2027-01-04", "2027-01-04", "2027-01-11", "2027_w01")])
        .collect();
        assert_periods(Interval::Week, UTC, &cases);
    }

    #[test]
    fn iso_week_edges_in_other_years() {
        assert_periods(
            Interval::Week,
            UTC,
            &[
                ("2021-01-03", "2020-12-28", "2021-01-04", "2020_w53"),
                ("2024-12-30", "2024-12-30", "2025-01-06", "2025_w01"),
                ("2026-02-23", "2026-02-23", "2026-03-02", "2026_w09"),
                // A Sunday belongs to the week that started the Monday before.
                ("2026-03-01 23:00", "2026-02-23", "2026-03-02", "2026_w09"),
                ("2026-03-02", "2026-03-02", "2026-03-09", "2026_w10"),
            ],
        );
    }

    #[test]
    fn quarters_start_in_january_april_july_october() {
        assert_periods(
            Interval::Quarter,
            UTC,
            &[
                ("2026-01-01", "2026-01-01", "2026-04-01", "2026_q1"),
                ("2026-03-31 23:59:59", "2026-01-01", "2026-04-01", "2026_q1"),
                ("2026-05-15", "2026-04-01", "2026-07-01", "2026_q2"),
                ("2026-09-30", "2026-07-01", "2026-10-01", "2026_q3"),
                ("2026-11-02", "2026-10-01", "2027-01-01", "2026_q4"),
            ],
        );
        assert_eq!(
            add_periods(t("2026-01-01"), Interval::Quarter, -1, UTC),
            t("2025-10-01")
        );
        assert_eq!(
            add_periods(t("2026-01-01"), Interval::Quarter, 5, UTC),
            t("2027-04-01")
        );
    }

    #[test]
    fn is_aligned_only_at_period_starts() {
        let cases = [
            ("2026-04-01", Interval::Quarter, true),
            ("2026-05-01", Interval::Quarter, false),
            ("2026-05-01", Interval::Month, true),
            ("2026-05-01 00:00:01", Interval::Month, false),
            ("2026-03-02", Interval::Week, true),
            ("2026-03-03", Interval::Week, false),
            ("2026-07-01", Interval::Year, false),
        ];
        for (instant, iv, aligned) in cases {
            assert_eq!(
                is_aligned(t(instant), iv, UTC),
                aligned,
                "{iv} at {instant}"
            );
        }
    }

    // --- Part 2 intervals ---------------------------------------------------------------------

    fn iv(s: &str) -> Interval {
        Interval::parse(s).unwrap()
    }

    #[test]
    fn sub_daily_periods_are_aligned_from_midnight_and_named_to_the_minute() {
        assert_periods(
            iv("15 minutes"),
            UTC,
            &[
                (
                    "2026-12-01 10:14:59",
                    "2026-12-01 10:00",
                    "2026-12-01 10:15",
                    "2026_12_01_1000",
                ),
                (
                    "2026-12-31 23:59",
                    "2026-12-31 23:45",
                    "2027-01-01",
                    "2026_12_31_2345",
                ),
            ],
        );
        assert_periods(
            iv("6 hours"),
            UTC,
            &[
                (
                    "2026-12-01 05:59",
                    "2026-12-01",
                    "2026-12-01 06:00",
                    "2026_12_01_0000",
                ),
                (
                    "2026-12-01 23:00",
                    "2026-12-01 18:00",
                    "2026-12-02",
                    "2026_12_01_1800",
                ),
            ],
        );
        // Kolkata's hours start at half past the UTC hour.
        assert_periods(
            iv("1 hour"),
            zone("Asia/Kolkata"),
            &[(
                "2026-12-01 10:29",
                "2026-12-01 09:30",
                "2026-12-01 10:30",
                "2026_12_01_1500",
            )],
        );
    }

    #[test]
    fn n_days_count_from_1970_and_n_weeks_from_monday_1970_01_05() {
        // 2026-12-01 is day 20788 since 1970-01-01; 20788 = 7 * 2969 + 5.
        assert_periods(
            iv("7 days"),
            UTC,
            &[("2026-12-01 12:00", "2026-11-26", "2026-12-03", "2026_11_26")],
        );
        // Two-week periods: 2026-11-23 is a Monday 2,028 weeks after 1970-01-05.
        assert_periods(
            iv("2 weeks"),
            UTC,
            &[("2026-12-01", "2026-11-23", "2026-12-07", "2026_11_23")],
        );
        assert_periods(
            iv("6 months"),
            UTC,
            &[
                ("2026-12-01", "2026-07-01", "2027-01-01", "2026_07"),
                ("2027-06-30 23:59", "2027-01-01", "2027-07-01", "2027_01"),
            ],
        );
        assert_periods(
            iv("10 years"),
            UTC,
            &[("2026-12-01", "2020-01-01", "2030-01-01", "2020")],
        );
    }

    #[test]
    fn hours_skipped_by_spring_forward_have_no_period() {
        // Paris, 2026-03-29: at 01:00 UTC the clock jumped from 02:00 to 03:00.
        let paris = zone("Europe/Paris");
        assert_periods(
            iv("1 hour"),
            paris,
            &[
                (
                    "2026-03-29 00:30",
                    "2026-03-29 00:00",
                    "2026-03-29 01:00",
                    "2026_03_29_0100",
                ),
                (
                    "2026-03-29 01:00",
                    "2026-03-29 01:00",
                    "2026-03-29 02:00",
                    "2026_03_29_0300",
                ),
            ],
        );
        assert_periods(
            iv("15 minutes"),
            paris,
            &[(
                "2026-03-29 00:59",
                "2026-03-29 00:45",
                "2026-03-29 01:00",
                "2026_03_29_0145",
            )],
        );
    }

    #[test]
    fn the_hour_repeated_by_fall_back_belongs_to_the_period_before_it() {
        // Paris, 2026-10-25: at 01:00 UTC the clock went back from 03:00 CEST to 02:00 CET.
        let paris = zone("Europe/Paris");
        assert_periods(
            iv("1 hour"),
            paris,
            &[(
                "2026-10-25 01:30",
                "2026-10-25 00:00",
                "2026-10-25 02:00",
                "2026_10_25_0200",
            )],
        );
        assert_periods(
            iv("15 minutes"),
            paris,
            &[(
                "2026-10-25 01:30",
                "2026-10-25 00:45",
                "2026-10-25 02:00",
                "2026_10_25_0245",
            )],
        );
        // New York, 2026-11-01: 02:00 EDT went back to 01:00 EST at 06:00 UTC; the 6-hour
        // period opened at midnight lasts 7 hours.
        assert_periods(
            iv("6 hours"),
            zone("America/New_York"),
            &[(
                "2026-11-01 09:00",
                "2026-11-01 04:00",
                "2026-11-01 11:00",
                "2026_11_01_0000",
            )],
        );
        // Lord Howe moves its clock by half an hour.
        let lh = zone("Australia/Lord_Howe");
        let start = period_start(t("2026-04-04 15:10"), iv("15 minutes"), lh);
        assert!(start <= t("2026-04-04 15:10"));
        assert_eq!(
            add_periods(
                add_periods(start, iv("15 minutes"), 1, lh),
                iv("15 minutes"),
                -1,
                lh
            ),
            start
        );
    }

    /// Around every clock change of 2018-2028 in zones with whole-hour, half-hour and
    /// midnight DST, sub-daily periods tile time, step back and forth, and have distinct names.
    #[test]
    fn sub_daily_periods_tile_every_dst_change_of_2018_2028_in_several_zones() {
        let offset = |at: DateTime<Utc>, tz: Tz| at.with_timezone(&tz).offset().fix();
        let zones = [
            "Europe/Paris",
            "America/New_York",
            "America/Sao_Paulo",
            "Australia/Lord_Howe",
            "America/Havana",
            "Pacific/Chatham",
        ];
        let mut changes = 0;
        for name in zones {
            let tz = zone(name);
            let mut at = t("2018-01-01");
            let mut before = offset(at, tz);
            while at < t("2028-01-01") {
                at += TimeDelta::hours(3);
                if offset(at, tz) == before {
                    continue;
                }
                before = offset(at, tz);
                changes += 1;
                for ivs in ["15 minutes", "1 hour", "6 hours"] {
                    let iv = iv(ivs);
                    let mut start = period_start(at - TimeDelta::hours(3), iv, tz);
                    let mut names = std::collections::BTreeSet::new();
                    while start < at + TimeDelta::hours(3) {
                        let next = add_periods(start, iv, 1, tz);
                        let context = format!("{iv} in {tz} at {start}");
                        assert!(start < next, "{context}");
                        assert_eq!(
                            period_start(next - TimeDelta::nanoseconds(1), iv, tz),
                            start,
                            "{context}"
                        );
                        assert_eq!(period_start(next, iv, tz), next, "{context}");
                        assert_eq!(add_periods(next, iv, -1, tz), start, "{context}");
                        assert!(names.insert(partition_suffix(start, iv, tz)), "{context}");
                        start = next;
                    }
                }
            }
        }
        assert!(changes > 90, "only {changes} clock changes visited");
    }

    // --- Periods in real zones (timestamptz keys) -------------------------------------------

    #[test]
    fn paris_months_start_at_local_midnight_on_either_side_of_dst() {
        assert_periods(
            Interval::Month,
            zone("Europe/Paris"),
            &[
                // 2026-04-01 00:00 CEST (+02) is 22:00 UTC the day before.
                (
                    "2026-03-31 22:30",
                    "2026-03-31 22:00",
                    "2026-04-30 22:00",
                    "2026_04",
                ),
                // A minute earlier it is still March, which began at 00:00 CET (+01).
                (
                    "2026-03-31 21:59",
                    "2026-02-28 23:00",
                    "2026-03-31 22:00",
                    "2026_03",
                ),
            ],
        );
    }

    #[test]
    fn paris_dst_days_last_23_and_25_hours() {
        assert_periods(
            Interval::Day,
            zone("Europe/Paris"),
            &[
                (
                    "2026-03-29 12:00",
                    "2026-03-28 23:00",
                    "2026-03-29 22:00",
                    "2026_03_29",
                ),
                (
                    "2026-10-25 12:00",
                    "2026-10-24 22:00",
                    "2026-10-25 23:00",
                    "2026_10_25",
                ),
            ],
        );
    }

    #[test]
    fn paris_retention_counts_calendar_days_across_dst() {
        let paris = zone("Europe/Paris");
        let day = retention("1 day");
        // 12:00 CEST on 03-30 minus a day is 12:00 CEST on 03-29: 24 hours.
        assert_eq!(
            subtract_retention(t("2026-03-30 10:00"), day, paris),
            t("2026-03-29 10:00")
        );
        // 03:00 CEST on 03-29 minus a day is 03:00 CET on 03-28: 23 hours.
        assert_eq!(
            subtract_retention(t("2026-03-29 01:00"), day, paris),
            t("2026-03-28 02:00")
        );
        // 02:30 on 03-29 never happened in Paris; the first instant after the gap stands in.
        assert_eq!(
            subtract_retention(t("2026-03-30 00:30"), day, paris),
            t("2026-03-29 01:00")
        );
    }

    #[test]
    fn sao_paulo_midnight_skipped_by_dst_starts_the_day_after_the_gap() {
        let sp = zone("America/Sao_Paulo");
        // 2018-11-04 00:00 (-03) jumped to 01:00 (-02) at 03:00 UTC; the day before is 23 hours.
        assert_periods(
            Interval::Day,
            sp,
            &[
                (
                    "2018-11-04 12:00",
                    "2018-11-04 03:00",
                    "2018-11-05 02:00",
                    "2018_11_04",
                ),
                (
                    "2018-11-03 12:00",
                    "2018-11-03 03:00",
                    "2018-11-04 03:00",
                    "2018_11_03",
                ),
            ],
        );
        assert!(is_aligned(t("2018-11-04 03:00"), Interval::Day, sp));
        // The week holding that Sunday still starts on Monday 10-29 at 00:00 (-03).
        let week = period_start(t("2018-11-04 12:00"), Interval::Week, sp);
        assert_eq!(week, t("2018-10-29 03:00"));
    }

    #[test]
    fn sao_paulo_dst_end_and_no_dst_today() {
        assert_periods(
            Interval::Day,
            zone("America/Sao_Paulo"),
            // 2018-02-18 00:00 (-02) went back to 02-17 23:00 (-03): a 25-hour Saturday.
            &[(
                "2018-02-17 12:00",
                "2018-02-17 02:00",
                "2018-02-18 03:00",
                "2018_02_17",
            )],
        );
        assert_periods(
            Interval::Month,
            zone("America/Sao_Paulo"),
            &[(
                "2026-07-01 02:59:59",
                "2026-06-01 03:00",
                "2026-07-01 03:00",
                "2026_06",
            )],
        );
    }

    #[test]
    fn kolkata_half_hour_offset() {
        let kolkata = zone("Asia/Kolkata");
        assert_periods(
            Interval::Year,
            kolkata,
            &[(
                "2025-12-31 18:30",
                "2025-12-31 18:30",
                "2026-12-31 18:30",
                "2026",
            )],
        );
        assert_periods(
            Interval::Month,
            kolkata,
            &[(
                "2025-12-31 18:29:59",
                "2025-11-30 18:30",
                "2025-12-31 18:30",
                "2025_12",
            )],
        );
        assert!(!is_aligned(t("2026-01-01"), Interval::Day, kolkata));
    }

    #[test]
    fn chatham_quarter_to_the_hour_offset_with_dst() {
        assert_periods(
            Interval::Month,
            zone("Pacific/Chatham"),
            &[
                // January is summer there: +13:45.
                (
                    "2026-01-15",
                    "2025-12-31 10:15",
                    "2026-01-31 10:15",
                    "2026_01",
                ),
                // April starts in summer time (+13:45), May in winter time (+12:45).
                (
                    "2026-04-15",
                    "2026-03-31 10:15",
                    "2026-04-30 11:15",
                    "2026_04",
                ),
            ],
        );
    }

    #[test]
    fn havana_skips_midnight_in_march_and_repeats_it_in_november() {
        let havana = zone("America/Havana");
        assert_periods(
            Interval::Day,
            havana,
            &[
                // 2026-03-08 00:00 (-05) jumped to 01:00 (-04) at 05:00 UTC.
                (
                    "2026-03-08 12:00",
                    "2026-03-08 05:00",
                    "2026-03-09 04:00",
                    "2026_03_08",
                ),
                // 2026-11-01 01:00 (-04) went back to 00:00 (-05): midnight happened at 04:00
                // and again at 05:00 UTC. The day starts at the first; the hour between is in it.
                (
                    "2026-11-01 04:30",
                    "2026-11-01 04:00",
                    "2026-11-02 05:00",
                    "2026_11_01",
                ),
                (
                    "2026-11-01 05:00",
                    "2026-11-01 04:00",
                    "2026-11-02 05:00",
                    "2026_11_01",
                ),
                (
                    "2026-11-01 03:59:59",
                    "2026-10-31 04:00",
                    "2026-11-01 04:00",
                    "2026_10_31",
                ),
            ],
        );
        assert_periods(
            Interval::Month,
            havana,
            &[(
                "2026-11-15",
                "2026-11-01 04:00",
                "2026-12-01 05:00",
                "2026_11",
            )],
        );
    }

    #[test]
    fn santiago_dst_at_midnight_both_ways() {
        let santiago = zone("America/Santiago");
        assert_periods(
            Interval::Day,
            santiago,
            &[
                // 2019-09-08 00:00 (-04) jumped to 01:00 (-03) at 04:00 UTC.
                (
                    "2019-09-08 12:00",
                    "2019-09-08 04:00",
                    "2019-09-09 03:00",
                    "2019_09_08",
                ),
                // DST ending at 24:00 repeats Saturday's last hour; Sunday starts once.
                (
                    "2026-04-04 12:00",
                    "2026-04-04 03:00",
                    "2026-04-05 04:00",
                    "2026_04_04",
                ),
            ],
        );
        // The week around a skipped Sunday midnight keeps its Monday starts.
        assert_periods(
            Interval::Week,
            santiago,
            &[(
                "2022-09-11 12:00",
                "2022-09-05 04:00",
                "2022-09-12 03:00",
                "2022_w36",
            )],
        );
    }

    #[test]
    fn goose_bay_set_its_clock_back_across_midnight() {
        // 1988-10-30 00:01 (-02) went back to 10-29 22:01 (-04) at 02:01 UTC: midnight came at
        // 02:00 and again at 04:00 UTC. The 30th began at the first; for the two hours after,
        // the wall clock showed the 29th again, but those instants belong to the 30th.
        assert_periods(
            Interval::Day,
            zone("America/Goose_Bay"),
            &[
                (
                    "1988-10-30 01:59",
                    "1988-10-29 02:00",
                    "1988-10-30 02:00",
                    "1988_10_29",
                ),
                (
                    "1988-10-30 03:00",
                    "1988-10-30 02:00",
                    "1988-10-31 04:00",
                    "1988_10_30",
                ),
            ],
        );
    }

    #[test]
    fn apia_never_had_2011_12_30_so_no_period_is_empty() {
        let apia = zone("Pacific/Apia");
        // 2011-12-29 23:59:59 (-10) was followed by 2011-12-31 00:00 (+14), at 10:00 UTC.
        assert_periods(
            Interval::Day,
            apia,
            &[
                (
                    "2011-12-30 09:00",
                    "2011-12-29 10:00",
                    "2011-12-30 10:00",
                    "2011_12_29",
                ),
                (
                    "2011-12-30 10:00",
                    "2011-12-30 10:00",
                    "2011-12-31 10:00",
                    "2011_12_31",
                ),
            ],
        );
        let dec29 = t("2011-12-29 10:00");
        assert_eq!(
            add_periods(dec29, Interval::Day, 2, apia),
            t("2011-12-31 10:00")
        );
        assert_eq!(
            add_periods(t("2011-12-31 10:00"), Interval::Day, -2, apia),
            dec29
        );
    }

    #[test]
    fn extreme_instants_saturate_instead_of_panicking() {
        let paris = zone("Europe/Paris");
        for instant in [DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC] {
            for iv in ALL_INTERVALS {
                let start = period_start(instant, iv, paris);
                assert!(add_periods(start, iv, i32::MAX, paris) >= start);
                assert!(add_periods(start, iv, i32::MIN, paris) <= start);
                assert!(!partition_suffix(start, iv, paris).is_empty());
                let _ = is_aligned(instant, iv, paris);
            }
        }
    }

    /// Walks every zone chrono-tz knows through 1900-2100 and checks the period invariants
    /// around each clock change. Slow, so run it after upgrading chrono-tz:
    /// `cargo test --release --lib -- --ignored every_zone`.
    #[test]
    #[ignore]
    fn every_zone_keeps_periods_tiled_around_every_clock_change() {
        let offset = |at: DateTime<Utc>, tz: Tz| at.with_timezone(&tz).offset().fix();
        let hour = chrono::TimeDelta::hours(1);
        for tz in chrono_tz::TZ_VARIANTS {
            let mut at = t("1900-01-01");
            let mut before = offset(at, tz);
            while at < t("2100-01-01") {
                at += hour * 6;
                if offset(at, tz) == before {
                    continue;
                }
                before = offset(at, tz);
                for h in -36..36 {
                    let instant = at + hour * h;
                    for iv in ALL_INTERVALS {
                        let start = period_start(instant, iv, tz);
                        let next = add_periods(start, iv, 1, tz);
                        let context = format!("{iv} in {tz} at {instant}");
                        assert!(start <= instant && instant < next, "{context}");
                        assert_eq!(period_start(start, iv, tz), start, "{context}");
                        assert_eq!(add_periods(next, iv, -1, tz), start, "{context}");
                        let suffix = partition_suffix(start, iv, tz);
                        assert_ne!(suffix, partition_suffix(next, iv, tz), "{context}");
                    }
                }
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

    const ZONES: [&str; 12] = [
        "UTC",
        "Europe/Paris",
        "America/Sao_Paulo",
        "Asia/Kolkata",
        "Pacific/Chatham",
        "America/Havana",
        "America/Santiago",
        "Pacific/Apia",
        "Pacific/Kwajalein",
        "Australia/Lord_Howe",
        "America/St_Johns",
        "Asia/Kathmandu",
    ];

    /// Moments when a zone's clock did something unusual, paired with that zone, so the
    /// properties visit them often rather than by luck.
    const ODD_MOMENTS: [(&str, &str); 7] = [
        ("Pacific/Apia", "2011-12-30 10:00"),      // skipped a whole day
        ("Pacific/Kwajalein", "1993-08-21 12:00"), // skipped a whole day
        ("Pacific/Kwajalein", "1969-09-30 13:00"), // repeated most of a day
        ("America/Havana", "2026-11-01 05:00"),    // midnight twice
        ("America/Santiago", "2019-09-08 04:00"),  // no midnight
        ("Australia/Lord_Howe", "2026-10-04 15:30"), // half-hour DST
        ("Pacific/Kiritimati", "1994-12-31 10:00"), // skipped a whole day
    ];

    fn any_instant() -> impl Strategy<Value = DateTime<Utc>> {
        let lo = t("1900-01-01").timestamp();
        let hi = t("2200-01-01").timestamp();
        (lo..hi, 0u32..1_000_000).prop_map(|(s, us)| {
            DateTime::from_timestamp(s, us * 1000).unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
        })
    }

    /// An instant and a zone: uniformly over 1900-2200, or within 20 days of an odd moment.
    fn instant_and_zone() -> impl Strategy<Value = (DateTime<Utc>, Tz)> {
        let uniform = (
            any_instant(),
            prop::sample::select(ZONES.to_vec()).prop_map(zone),
        );
        let odd = (
            prop::sample::select(ODD_MOMENTS.to_vec()),
            -20 * 86_400i64..20 * 86_400,
        )
            .prop_map(|((name, moment), secs)| {
                (t(moment) + chrono::TimeDelta::seconds(secs), zone(name))
            });
        prop_oneof![1 => uniform, 2 => odd]
    }

    /// Part 1's intervals and a spread of part 2's.
    fn interval() -> impl Strategy<Value = Interval> {
        let more = [
            "1 minute",
            "15 minutes",
            "30 minutes",
            "1 hour",
            "2 hours",
            "6 hours",
            "12 hours",
            "2 days",
            "7 days",
            "2 weeks",
            "4 weeks",
            "2 months",
            "6 months",
            "12 months",
            "10 years",
        ];
        let mut all = ALL_INTERVALS.to_vec();
        all.extend(more.iter().map(|s| Interval::parse(s).unwrap()));
        prop::sample::select(all)
    }

    proptest! {
        #[test]
        fn an_instant_lies_in_its_period((t, tz) in instant_and_zone(), iv in interval()) {
            let start = period_start(t, iv, tz);
            prop_assert!(start <= t);
            prop_assert!(t < add_periods(start, iv, 1, tz));
        }

        #[test]
        fn period_start_is_idempotent_and_aligned((t, tz) in instant_and_zone(), iv in interval()) {
            let start = period_start(t, iv, tz);
            prop_assert_eq!(period_start(start, iv, tz), start);
            prop_assert!(is_aligned(start, iv, tz));
            let next = add_periods(start, iv, 1, tz);
            prop_assert!(is_aligned(next, iv, tz));
        }

        #[test]
        fn add_periods_is_undone_by_its_negation(
            (t, tz) in instant_and_zone(), iv in interval(), n in -400i32..400,
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
        fn consecutive_periods_tile_time((t, tz) in instant_and_zone(), iv in interval()) {
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
            (t, tz) in instant_and_zone(), iv in interval(),
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
            (t, tz) in instant_and_zone(), iv in interval(), amount in 1u32..500,
            unit in prop::sample::select(vec![
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
        fn boundaries_do_not_depend_on_the_day_the_walk_started(
            (t, tz) in instant_and_zone(), iv in interval(), later in 0u32..40,
        ) {
            // Walking on from the period of `t` reaches exactly the period of any later instant:
            // there is one grid, whatever day partkeeper first ran.
            let first = period_start(t, iv, tz);
            let target_instant = add_periods(first, iv, later as i32, tz) + chrono::TimeDelta::seconds(1);
            let target = period_start(target_instant, iv, tz);
            let mut walk = first;
            while add_periods(walk, iv, 1, tz) <= target_instant {
                walk = add_periods(walk, iv, 1, tz);
            }
            prop_assert_eq!(walk, target);
        }

        #[test]
        fn partition_names_are_unique_sortable_and_fit_postgres(
            (t, tz) in instant_and_zone(), iv in interval(),
        ) {
            let base = "a_table_name_that_is_long_enough_to_need_shortening_xyz";
            let mut start = period_start(t, iv, tz);
            let mut prev = crate::ident::derived_name(base, &partition_suffix(start, iv, tz));
            for _ in 0..30 {
                start = add_periods(start, iv, 1, tz);
                let name = crate::ident::derived_name(base, &partition_suffix(start, iv, tz));
                prop_assert!(name.len() <= 63, "{}", name);
                prop_assert_ne!(&name, &prev);
                prev = name;
            }
        }

        #[test]
        fn parsers_never_panic(s in ".{0,40}") {
            let _ = Interval::parse(&s);
            let _ = Retention::parse(&s);
        }
    }
}

//! Range arithmetic over partition bounds: what part of a period no partition covers, where the
//! gap-free coverage from a point ends, and which partitions overlap. Pure.

use chrono::{DateTime, Utc};

use crate::bounds::BoundValue;

/// A half-open range `[from, to)` of partition-key values.
pub type Range = (BoundValue, BoundValue);

/// The pieces of `[from, to)` that none of `ranges` covers, in order.
pub fn uncovered(
    ranges: &[Range],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let mut sorted: Vec<&Range> = ranges
        .iter()
        .filter(|(a, b)| *a < BoundValue::Value(to) && *b > BoundValue::Value(from))
        .collect();
    sorted.sort();
    let mut gaps = Vec::new();
    let mut cursor = from;
    for (a, b) in sorted {
        if let BoundValue::Value(start) = a {
            if *start > cursor {
                gaps.push((cursor, (*start).min(to)));
            }
        }
        match b {
            BoundValue::Value(end) => cursor = cursor.max(*end),
            BoundValue::MaxValue => return gaps,
            BoundValue::MinValue => {}
        }
        if cursor >= to {
            return gaps;
        }
    }
    if cursor < to {
        gaps.push((cursor, to));
    }
    gaps
}

/// End of the gap-free coverage that starts at `start`; `start` itself when `start` is not covered.
pub fn coverage_end(ranges: &[Range], start: DateTime<Utc>) -> BoundValue {
    let mut sorted: Vec<&Range> = ranges.iter().collect();
    sorted.sort();
    let mut cursor = BoundValue::Value(start);
    for (a, b) in sorted {
        if *a <= cursor && *b > cursor {
            cursor = *b;
        }
    }
    cursor
}

/// Index pairs of ranges that overlap (PostgreSQL forbids this; seeing one means the bounds were
/// misread, so `check` reports it rather than trusting anything else).
pub fn overlaps(ranges: &[Range]) -> Vec<(usize, usize)> {
    let mut idx: Vec<usize> = (0..ranges.len()).collect();
    idx.sort_by(|&i, &j| ranges[i].cmp(&ranges[j]));
    let mut out = Vec::new();
    for w in idx.windows(2) {
        let (i, j) = (w[0], w[1]);
        if ranges[j].0 < ranges[i].1 {
            out.push((i, j));
        }
    }
    out
}

/// One partition a range needs: the gap `[from, to)` of the period that starts at `period`;
/// `nth` counts the gaps of that period (0 for the first, usually the only one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub period: DateTime<Utc>,
    pub nth: usize,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl Piece {
    /// The partition's name suffix from its period's (`2024_01`, then `2024_01_2`, ...).
    pub fn suffix(&self, period_suffix: String) -> String {
        if self.nth == 0 {
            period_suffix
        } else {
            format!("{period_suffix}_{}", self.nth + 1)
        }
    }
}

/// More than the allowed number of partitions would be needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooMany;

/// The one way a range is covered with partitions, for maintenance and migration alike: each
/// period from `start` (a period's start) until `end`, `next` giving the period after one, minus
/// what `ranges` already cover, in order. `TooMany` past `limit` pieces (or when `next` does not
/// advance).
pub fn cover(
    ranges: &[Range],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    limit: usize,
    next: impl Fn(DateTime<Utc>) -> DateTime<Utc>,
) -> Result<Vec<Piece>, TooMany> {
    let mut pieces = Vec::new();
    let mut period = start;
    while period < end {
        let after = next(period);
        if after <= period {
            return Err(TooMany);
        }
        for (nth, (from, to)) in uncovered(ranges, period, after).into_iter().enumerate() {
            pieces.push(Piece {
                period,
                nth,
                from,
                to,
            });
        }
        if pieces.len() > limit {
            return Err(TooMany);
        }
        period = after;
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, m, 1, 0, 0, 0).unwrap()
    }
    fn r(a: u32, b: u32) -> Range {
        (BoundValue::Value(t(a)), BoundValue::Value(t(b)))
    }

    #[test]
    fn nothing_is_uncovered_when_ranges_tile_the_span() {
        assert!(uncovered(&[r(1, 2), r(2, 4)], t(1), t(4)).is_empty());
    }

    #[test]
    fn gaps_are_found_at_the_edges_and_in_the_middle() {
        let gaps = uncovered(&[r(2, 3), r(5, 6)], t(1), t(7));
        assert_eq!(gaps, vec![(t(1), t(2)), (t(3), t(5)), (t(6), t(7))]);
    }

    #[test]
    fn minvalue_and_maxvalue_cover_everything_beyond() {
        let ranges = [
            (BoundValue::MinValue, BoundValue::Value(t(3))),
            (BoundValue::Value(t(5)), BoundValue::MaxValue),
        ];
        assert_eq!(uncovered(&ranges, t(1), t(12)), vec![(t(3), t(5))]);
    }

    #[test]
    fn coverage_ends_at_the_first_gap() {
        let ranges = [r(1, 2), r(2, 3), r(4, 5)];
        assert_eq!(coverage_end(&ranges, t(1)), BoundValue::Value(t(3)));
        assert_eq!(coverage_end(&ranges, t(3)), BoundValue::Value(t(3)));
        assert_eq!(coverage_end(&ranges, t(6)), BoundValue::Value(t(6)));
    }

    #[test]
    fn overlapping_ranges_are_reported() {
        assert_eq!(overlaps(&[r(1, 3), r(2, 4), r(4, 5)]), vec![(0, 1)]);
        assert!(overlaps(&[r(1, 2), r(2, 3)]).is_empty());
    }

    #[test]
    fn a_range_is_covered_period_by_period_minus_what_exists() {
        use chrono::TimeZone;
        let day = |d: u32| Utc.with_ymd_and_hms(2024, 1, d, 0, 0, 0).unwrap();
        let next = |t: DateTime<Utc>| t + chrono::Duration::days(10);
        // An existing partition covers days 13..15 of the second period.
        let ranges = [(BoundValue::Value(day(13)), BoundValue::Value(day(15)))];
        let pieces = cover(&ranges, day(1), day(21), 10, next).unwrap();
        let spans: Vec<_> = pieces.iter().map(|p| (p.from, p.to, p.nth)).collect();
        assert_eq!(
            spans,
            [
                (day(1), day(11), 0),
                (day(11), day(13), 0),
                (day(15), day(21), 1)
            ]
        );
        assert_eq!(pieces[2].suffix("x".into()), "x_2");
        assert_eq!(cover(&[], day(1), day(31), 2, next), Err(TooMany));
        assert_eq!(cover(&[], day(1), day(31), 5, |t| t), Err(TooMany));
    }
}

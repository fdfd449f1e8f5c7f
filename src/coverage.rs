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
}

//! Rows and partitions: NULL keys, the key range the data spans, the partitions that cover it
//! (plus premake), and the names the conversion needs that are already taken.

use chrono::{DateTime, TimeZone, Utc};

use super::key::Key;
use super::preflight::{names_to_create, Options, PlannedPartition, Preflight, MAX_PARTITIONS};
use crate::config::TablePolicy;
use crate::coverage::{self, TooMany};
use crate::ident::{derived_name, QualifiedName};
use crate::migrate::inventory::{DataFacts, Inventory};
use crate::plan::Clock;

/// Judges the rows (NULL keys, infinite keys) and plans the partitions that cover their range.
pub(super) fn plan(
    inv: &Inventory,
    facts: Option<&DataFacts>,
    policy: &TablePolicy,
    opts: &Options,
    k: Key,
    p: &mut Preflight,
) {
    let t = &inv.table;
    let key = policy.column.as_str();
    let (key_type, integer_key) = (k.key_type, k.integer);
    // Integer keys: the position is max(key) (read below); the clock's current period follows.
    let mut clock = Clock::new(policy, key_type, opts.now);
    let mut lo = None;
    let mut hi = None;
    if let Some(f) = facts {
        if f.null_keys > 0 {
            match &opts.fill {
                None => p.blockers.push(format!(
                    "{} row(s) have a NULL {key}; a partitioned table cannot hold them. Pass --fill-null-with '<SQL expression>' (e.g. --fill-null-with '\"createdAt\"::date') to fill them during the copy, or UPDATE them first",
                    f.null_keys
                )),
                Some(fill) if f.fill_still_null > 0 => p.blockers.push(format!(
                    "--fill-null-with {fill} leaves {} of the {} NULL-key row(s) NULL; use an expression that always gives a value, e.g. COALESCE(..., CURRENT_DATE)",
                    f.fill_still_null, f.null_keys
                )),
                Some(fill) => p.warnings.push(format!(
                    "{} row(s) with a NULL {key} get {fill} in the new table (the backup keeps them NULL)",
                    f.null_keys
                )),
            }
        }
        for v in [f.min_key, f.max_key, f.min_fill, f.max_fill]
            .into_iter()
            .flatten()
        {
            if !v.is_finite() {
                p.blockers.push(format!(
                    "{t}.{key} holds 'infinity' or '-infinity'; no range partition can hold it. Update those rows first"
                ));
                break;
            }
            let at = if integer_key {
                crate::keys::int_point(v.round() as i64)
            } else {
                epoch_to_utc(v)
            };
            lo = Some(lo.map_or(at, |l: DateTime<Utc>| l.min(at)));
            hi = Some(hi.map_or(at, |h: DateTime<Utc>| h.max(at)));
        }
    }
    if integer_key {
        let position = hi.unwrap_or(crate::keys::int_point(policy.start));
        clock = Clock::new(policy, key_type, position);
    }
    let first = lo
        .map(|l| clock.period_of(l))
        .unwrap_or(clock.current)
        .min(clock.current);
    let last_end = {
        let ahead = clock.period(policy.premake as i32 + 1);
        match hi {
            Some(h) => clock.period_after(clock.period_of(h)).max(ahead),
            None => ahead,
        }
    };
    let next = |at| clock.period_after(at);
    let cover = |end| coverage::cover(&[], first, end, MAX_PARTITIONS, next);
    let (pieces, too_many) = match cover(last_end) {
        Ok(pieces) => (pieces, false),
        Err(TooMany) => {
            let end = clock.period_after_n(first, MAX_PARTITIONS as i32);
            (cover(end).unwrap_or_default(), true)
        }
    };
    p.partitions = pieces
        .iter()
        .map(|x| PlannedPartition {
            name: t.sibling(derived_name(&t.name, &x.suffix(clock.suffix(x.period)))),
            from: x.from,
            to: x.to,
        })
        .collect();
    if too_many {
        p.blockers.push(format!(
            "the key range of {t} ({} .. {}) needs more than {MAX_PARTITIONS} partitions of {}; look for outlier values (a mistyped year) and fix them, or choose a longer interval",
            facts.and_then(|f| f.min_key_text.clone()).unwrap_or_default(),
            facts.and_then(|f| f.max_key_text.clone()).unwrap_or_default(),
            policy.interval
        ));
    }
}

/// Blocks when a relation already holds a name the conversion would create.
pub(super) fn check_names(
    inv: &Inventory,
    taken: &[QualifiedName],
    default_partition: &QualifiedName,
    p: &mut Preflight,
) {
    let t = &inv.table;
    let mut wanted: Vec<&QualifiedName> = p.partitions.iter().map(|x| &x.name).collect();
    wanted.push(default_partition);
    let names = names_to_create(t, inv);
    let clashes: Vec<String> = taken
        .iter()
        .filter(|q| wanted.contains(q) || names.contains(q))
        .map(ToString::to_string)
        .collect();
    if !clashes.is_empty() {
        p.blockers.push(format!(
            "these names are needed by the conversion but already taken: {}; rename or drop them (a previous attempt? see `partkeeper migrate rollback`)",
            clashes.join(", ")
        ));
    }
}

/// Seconds since the epoch (on the table's calendar) as an instant.
fn epoch_to_utc(secs: f64) -> DateTime<Utc> {
    let whole = secs.floor();
    let nanos = ((secs - whole) * 1e9) as u32;
    Utc.timestamp_opt(whole as i64, nanos.min(999_999_999))
        .single()
        .unwrap_or_default()
}

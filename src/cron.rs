//! `schedule.maintenance`: a cron expression with crontab(5)'s rules, parsed by croner, and the
//! run times it gives in a time zone (pure: the scheduler, `config validate` and tests use it).
//!
//! crontab(5): "If both fields are restricted (i.e., do not start with *), the command will be
//! run when either field matches the current time." Kubernetes CronJob agrees. Before 0.2,
//! partkeeper left the schedule to tokio-cron-scheduler, which parses every expression with
//! croner's `with_dom_and_dow()` and so required both: `0 0 1 * 1` ran only on a Monday the 1st.
//! We ask croner for its default (either) when both are restricted and for `with_dom_and_dow`
//! (both) when one of them starts with `*`, as cron itself does (`*/2` included, which makes a
//! dom of `*/2` with a dow of `1` mean odd days that are Mondays, as in Vixie cron and cronie).

use chrono::{DateTime, TimeZone, Utc};
use croner::Cron;

/// A parsed, validated `schedule.maintenance`.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
}

impl Schedule {
    /// 5 fields (minute hour day-of-month month day-of-week), or 6 with seconds first.
    pub fn parse(expr: &str) -> Result<Schedule, String> {
        let six = with_seconds(expr).ok_or_else(|| {
            format!(
                "has {} fields; write a standard 5-field cron expression such as \"0 2 * * *\" \
                 (minute hour day-of-month month day-of-week), or 6 fields with seconds first",
                expr.split_whitespace().count()
            )
        })?;
        let fields: Vec<&str> = six.split_whitespace().collect();
        // croner reads `?` as `*`; so do we.
        let starred = |f: &str| f.starts_with('*') || f.starts_with('?');
        let mut parser = Cron::new(&six);
        parser.with_seconds_required();
        if starred(fields[3]) || starred(fields[5]) {
            parser.with_dom_and_dow();
        }
        parser
            .parse()
            .map(|cron| Schedule { cron })
            .map_err(|e| format!("{e}; write e.g. \"0 2 * * *\" for 02:00 every day"))
    }

    /// The first run time strictly after `t`, in `t`'s zone (None: none within croner's
    /// search horizon, e.g. `0 0 30 2 *`).
    pub fn next_after<Z: TimeZone>(&self, t: &DateTime<Z>) -> Option<DateTime<Z>> {
        self.cron.find_next_occurrence(t, false).ok()
    }

    /// The next `n` run times after `from`, in `tz`.
    pub fn upcoming<Z: TimeZone>(&self, from: DateTime<Utc>, tz: &Z, n: usize) -> Vec<DateTime<Z>> {
        let mut out = Vec::with_capacity(n);
        let mut t = from.with_timezone(tz);
        while out.len() < n {
            match self.next_after(&t) {
                Some(next) => {
                    t = next.clone();
                    out.push(next);
                }
                None => break,
            }
        }
        out
    }
}

/// 5-field cron gets a leading `0` seconds field; 6 fields pass as they are.
pub fn with_seconds(expr: &str) -> Option<String> {
    match expr.split_whitespace().count() {
        5 => Some(format!("0 {expr}")),
        6 => Some(expr.split_whitespace().collect::<Vec<_>>().join(" ")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Datelike, Timelike, Weekday};
    use chrono_tz::Tz;

    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn runs(expr: &str, from: &str, n: usize) -> Vec<String> {
        Schedule::parse(expr)
            .unwrap()
            .upcoming(utc(from), &Utc, n)
            .iter()
            .map(|t| t.format("%Y-%m-%d %a %H:%M").to_string())
            .collect()
    }

    /// The example: the 1st of each month and every Monday, not only Mondays the 1st.
    #[test]
    fn first_of_month_or_monday_runs_on_both_as_crontab_5_says() {
        // 2027-02-01 is a Monday; 2027-03-01 a Monday too; 2027-04-01 a Thursday.
        assert_eq!(
            runs("0 0 1 * 1", "2027-01-20T12:00:00Z", 8),
            [
                "2027-01-25 Mon 00:00",
                "2027-02-01 Mon 00:00",
                "2027-02-08 Mon 00:00",
                "2027-02-15 Mon 00:00",
                "2027-02-22 Mon 00:00",
                "2027-03-01 Mon 00:00",
                "2027-03-08 Mon 00:00",
                "2027-03-15 Mon 00:00",
            ]
        );
        // Every 1st of a year of them, whatever its weekday, and every Monday.
        let year =
            Schedule::parse("0 0 1 * 1")
                .unwrap()
                .upcoming(utc("2026-12-31T23:00:00Z"), &Utc, 200);
        let in_2027: Vec<_> = year.iter().filter(|t| t.year() == 2027).collect();
        for month in 1..=12 {
            assert!(
                in_2027.iter().any(|t| t.month() == month && t.day() == 1),
                "no run on 2027-{month:02}-01"
            );
        }
        let mondays = in_2027
            .iter()
            .filter(|t| t.weekday() == Weekday::Mon)
            .count();
        assert_eq!(mondays, 52, "2027 has 52 Mondays");
        assert!(in_2027
            .iter()
            .all(|t| t.day() == 1 || t.weekday() == Weekday::Mon));
        // 12 firsts + 52 Mondays - 3 firsts that are Mondays (February, March, November).
        assert_eq!(in_2027.len(), 61);
    }

    /// crontab(5)'s own example: "30 4 1,15 * 5" runs at 4:30 am on the 1st and 15th of each
    /// month, plus every Friday.
    #[test]
    fn crontab_5_example_1st_and_15th_plus_every_friday() {
        assert_eq!(
            runs("30 4 1,15 * 5", "2027-01-01T05:00:00Z", 6),
            [
                "2027-01-08 Fri 04:30",
                "2027-01-15 Fri 04:30",
                "2027-01-22 Fri 04:30",
                "2027-01-29 Fri 04:30",
                "2027-02-01 Mon 04:30",
                "2027-02-05 Fri 04:30",
            ]
        );
    }

    /// The other examples of crontab(5) (one restricted day field, or none): unchanged.
    #[test]
    fn crontab_5_examples_with_one_day_field() {
        // "run five minutes after midnight, every day"
        assert_eq!(
            runs("5 0 * * *", "2027-01-01T00:10:00Z", 2),
            ["2027-01-02 Sat 00:05", "2027-01-03 Sun 00:05"]
        );
        // "run at 2:15pm on the first of every month"
        assert_eq!(
            runs("15 14 1 * *", "2027-01-01T15:00:00Z", 2),
            ["2027-02-01 Mon 14:15", "2027-03-01 Mon 14:15"]
        );
        // "run at 10 pm on weekdays"
        assert_eq!(
            runs("0 22 * * 1-5", "2027-01-01T23:00:00Z", 3),
            [
                "2027-01-04 Mon 22:00",
                "2027-01-05 Tue 22:00",
                "2027-01-06 Wed 22:00"
            ]
        );
        // "run 23 minutes after midn, 2am, 4am ..., everyday"
        assert_eq!(
            runs("23 0-23/2 * * *", "2027-01-01T00:30:00Z", 2),
            ["2027-01-01 Fri 02:23", "2027-01-01 Fri 04:23"]
        );
        // "run at 5 after 4 every sunday" (names, and 0 and 7 both mean Sunday)
        for expr in ["5 4 * * sun", "5 4 * * 0", "5 4 * * 7"] {
            assert_eq!(
                runs(expr, "2027-01-01T00:00:00Z", 2),
                ["2027-01-03 Sun 04:05", "2027-01-10 Sun 04:05"],
                "{expr}"
            );
        }
    }

    /// A day field that starts with `*` is not "restricted": both must match, as in cron(8).
    #[test]
    fn a_starred_step_keeps_both_fields_required() {
        // Odd days (1, 3, ...) that are Mondays.
        let r = runs("0 0 */2 * 1", "2027-01-01T00:00:00Z", 3);
        assert_eq!(
            r,
            [
                "2027-01-11 Mon 00:00",
                "2027-01-25 Mon 00:00",
                "2027-02-01 Mon 00:00"
            ]
        );
    }

    #[test]
    fn six_fields_have_seconds_first() {
        let s = Schedule::parse("*/10 * * * * *").unwrap();
        let t = s.next_after(&utc("2027-01-01T00:00:01Z")).unwrap();
        assert_eq!(t.second(), 10);
    }

    #[test]
    fn run_times_are_in_the_schedule_zone_across_daylight_saving_time() {
        let paris: Tz = "Europe/Paris".parse().unwrap();
        let s = Schedule::parse("0 2 * * *").unwrap();
        // Europe/Paris leaves summer time on 2027-10-31 at 03:00, back to 02:00: that day's
        // 02:00 happens twice and the pass runs once, at the first; 02:00 is 00:00 UTC before
        // and 01:00 UTC after.
        let got: Vec<String> = s
            .upcoming(utc("2027-10-29T12:00:00Z"), &paris, 3)
            .iter()
            .map(|t| {
                format!(
                    "{} = {}",
                    t.to_rfc3339(),
                    t.with_timezone(&Utc).to_rfc3339()
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                "2027-10-30T02:00:00+02:00 = 2027-10-30T00:00:00+00:00",
                "2027-10-31T02:00:00+02:00 = 2027-10-31T00:00:00+00:00",
                "2027-11-01T02:00:00+01:00 = 2027-11-01T01:00:00+00:00",
            ]
        );
    }

    #[test]
    fn a_run_time_that_does_not_exist_on_the_day_summer_time_starts_is_not_skipped() {
        let paris: Tz = "Europe/Paris".parse().unwrap();
        let s = Schedule::parse("30 2 * * *").unwrap();
        // 2027-03-28: Europe/Paris goes from 02:00 straight to 03:00.
        let got: Vec<String> = s
            .upcoming(utc("2027-03-26T12:00:00Z"), &paris, 3)
            .iter()
            .map(|t| t.to_rfc3339())
            .collect();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], "2027-03-27T02:30:00+01:00");
        assert!(got[1].starts_with("2027-03-28T03:"), "{got:?}");
        assert_eq!(got[2], "2027-03-29T02:30:00+02:00");
    }

    #[test]
    fn bad_expressions_say_what_to_write() {
        for (expr, says) in [
            ("0 2 * *", "has 4 fields"),
            ("61 2 * * *", "0 2 * * *"),
            ("0 2 * * * * *", "has 7 fields"),
        ] {
            let e = Schedule::parse(expr).unwrap_err();
            assert!(e.contains(says), "{expr}: {e}");
        }
    }
}

//! `partkeeper config validate`: the effective configuration, passwords redacted, the next
//! maintenance run times in `schedule.timezone`, and for each table its period and the first
//! three partitions a pass would create now (as TOML comments, so the output stays TOML).

use chrono::{DateTime, Utc};

use crate::bounds::KeyType;
use crate::config::{Config, Fleet, TablePolicy};
use crate::ident::derived_name;
use crate::keys::{self, IntWidth, Width};
use crate::plan::Clock;

use crate::error::Result;

/// How many upcoming run times `config validate` shows.
pub const UPCOMING_RUNS: usize = 5;

pub fn validate(fleet: Fleet) -> Result<i32> {
    // The web configuration file is checked as `run` would read it (exit 2 when it is bad).
    let web = super::run::load_web_config(&fleet.server, &crate::cli::RunArgs::default())?;
    print!("{}", fleet.to_redacted_toml());
    for cfg in &fleet.databases {
        if fleet.listed {
            print!("\n# database {:?}", cfg.database.name);
        }
        print!("{}", upcoming_runs(cfg, Utc::now()));
        for policy in &cfg.tables {
            for line in preview(policy, Utc::now()) {
                println!("# {line}");
            }
        }
    }
    if fleet.server.web_config_file.is_some() {
        eprintln!("web configuration: {}", web.summary);
    }
    let tables: usize = fleet.databases.iter().map(|d| d.tables.len()).sum();
    if fleet.listed {
        eprintln!(
            "configuration is valid ({} database(s): {}; {tables} table(s))",
            fleet.databases.len(),
            fleet.names().join(", ")
        );
    } else {
        eprintln!("configuration is valid ({tables} table(s))");
    }
    Ok(0)
}

/// `# next maintenance runs (<zone>):` and one commented RFC 3339 time a line (pure).
pub fn upcoming_runs(cfg: &Config, now: chrono::DateTime<Utc>) -> String {
    let s = &cfg.schedule;
    let tz = s.timezone;
    let mut out = format!(
        "\n# next maintenance runs of {:?} ({}):\n",
        s.maintenance,
        tz.name()
    );
    // Validated already; an error here would be a bug, shown rather than hidden.
    match crate::cron::Schedule::parse(&s.maintenance) {
        Ok(cron) => {
            let runs = cron.upcoming(now, &tz, UPCOMING_RUNS);
            if runs.is_empty() {
                out.push_str("#   none: no date matches this expression\n");
            }
            for t in runs {
                out.push_str(&format!("#   {}  {}\n", t.to_rfc3339(), t.format("%a")));
            }
        }
        Err(e) => out.push_str(&format!("#   cannot compute: {e}\n")),
    }
    out
}

/// The effective period of `policy` and the first three partitions from the period of `now`
/// (integer keys: from `start`, as for an empty table). Without the database the column type
/// is unknown: calendar keys are shown as instants in the table's zone, as for `timestamptz`,
/// epoch and uuid keys (`date` and `timestamp` keys get the same names and wall-clock bounds).
pub fn preview(policy: &TablePolicy, now: DateTime<Utc>) -> Vec<String> {
    let (key, now, period) = match (policy.interval, policy.epoch) {
        (Width::Values(n), _) => (
            KeyType::Int(IntWidth::BigInt),
            keys::int_point(policy.start),
            format!(
                "{n} key values from {} (the period holding max(key) is current)",
                policy.start
            ),
        ),
        (Width::Calendar(iv), epoch) => (
            epoch.map_or(KeyType::TimestampTz, |u| {
                KeyType::Epoch(IntWidth::BigInt, u)
            }),
            now,
            format!("{iv} in {}{}", policy.timezone.name(), alignment(iv)),
        ),
    };
    let clock = Clock::new(policy, key, now);
    let show = |t: DateTime<Utc>| match clock.values {
        Some(_) => keys::point_int(t).unwrap_or(0).to_string(),
        None => t.with_timezone(&policy.timezone).to_rfc3339(),
    };
    let mut out = vec![format!(
        "{}: period {period}; first partitions:",
        policy.name
    )];
    let mut start = clock.current;
    for _ in 0..3 {
        let end = clock.period_after(start);
        out.push(format!(
            "  {} [{}, {})",
            derived_name(&policy.name.name, &clock.suffix(start)),
            show(start),
            show(end)
        ));
        start = end;
    }
    out
}

fn alignment(iv: crate::calendar::Interval) -> &'static str {
    use crate::calendar::Unit;
    match iv.unit() {
        Unit::Minute | Unit::Hour => ", aligned from local midnight",
        Unit::Day if iv.count() > 1 => ", counted from 1970-01-01",
        Unit::Week if iv.count() > 1 => ", counted from Monday 1970-01-05",
        Unit::Week => ", ISO weeks from Monday",
        Unit::Month if iv.count() > 1 => ", aligned from January",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn the_next_five_runs_are_listed_in_the_schedule_zone_first_of_month_or_monday() {
        let toml = r#"
[database]
url = "postgres://u@h/d"
[schedule]
maintenance = "0 0 1 * 1"
timezone = "Europe/Paris"
"#;
        let cfg = crate::config::parse_str(toml, &HashMap::new()).unwrap();
        let now = chrono::DateTime::parse_from_rfc3339("2027-03-25T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            upcoming_runs(&cfg, now),
            "\n# next maintenance runs of \"0 0 1 * 1\" (Europe/Paris):\n\
             #   2027-03-29T00:00:00+02:00  Mon\n\
             #   2027-04-01T00:00:00+02:00  Thu\n\
             #   2027-04-05T00:00:00+02:00  Mon\n\
             #   2027-04-12T00:00:00+02:00  Mon\n\
             #   2027-04-19T00:00:00+02:00  Mon\n"
        );
    }

    #[test]
    fn validate_previews_the_period_and_the_first_three_partitions() {
        let cfg = crate::config::parse_str(
            "[database]\nurl = \"postgres://u@h/db\"\n[[tables]]\nname = \"public.ev\"\ncolumn = \"at\"\ninterval = \"6 hours\"\ntimezone = \"Europe/Paris\"\n[[tables]]\nname = \"public.ids\"\ncolumn = \"id\"\ninterval = 1000000\nstart = -1000000\n",
            &Default::default(),
        )
        .unwrap();
        let now = DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            preview(&cfg.tables[0], now),
            [
                "public.ev: period 6 hours in Europe/Paris, aligned from local midnight; first partitions:",
                "  ev_2026_12_01_0600 [2026-12-01T06:00:00+01:00, 2026-12-01T12:00:00+01:00)",
                "  ev_2026_12_01_1200 [2026-12-01T12:00:00+01:00, 2026-12-01T18:00:00+01:00)",
                "  ev_2026_12_01_1800 [2026-12-01T18:00:00+01:00, 2026-12-02T00:00:00+01:00)",
            ]
        );
        assert_eq!(
            preview(&cfg.tables[1], now)[1..],
            [
                "  ids_pm1000000 [-1000000, 0)",
                "  ids_p0 [0, 1000000)",
                "  ids_p1000000 [1000000, 2000000)",
            ]
        );
    }
}

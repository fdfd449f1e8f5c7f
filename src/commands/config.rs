//! `partkeeper config validate`: the effective configuration, passwords redacted, and the next
//! maintenance run times in `schedule.timezone` (as TOML comments, so the output stays TOML).

use chrono::Utc;

use crate::config::Config;
use crate::error::Result;

/// How many upcoming run times `config validate` shows.
pub const UPCOMING_RUNS: usize = 5;

pub fn validate(cfg: Config) -> Result<i32> {
    // The web configuration file is checked as `run` would read it (exit 2 when it is bad).
    let web = super::run::load_web_config(&cfg, &crate::cli::RunArgs::default())?;
    print!("{}", cfg.to_redacted_toml());
    print!("{}", upcoming_runs(&cfg, Utc::now()));
    if cfg.server.web_config_file.is_some() {
        eprintln!("web configuration: {}", web.summary);
    }
    eprintln!("configuration is valid ({} table(s))", cfg.tables.len());
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
}

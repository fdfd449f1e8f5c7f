//! Command implementations: each file turns one subcommand's arguments into library calls and
//! prints the outcome. Shared here: loading the configuration, `--now`, connecting.

mod bench;
mod check;
mod config;
mod drain;
mod maintain;
mod migrate;
mod run;
mod status;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

use crate::cli::{Cli, Command, ConfigCommand};
use crate::config::{Config, Fleet};
use crate::error::{Error, Result};

pub async fn dispatch(cli: Cli) -> Result<i32> {
    let config_path = cli.config.clone();
    let load = || crate::config::load(config_path.as_deref()).map_err(Error::from);
    match cli.command {
        Command::Config(ConfigCommand::Validate) => config::validate(load()?),
        Command::Maintain(args) => maintain::run(load()?, args).await,
        Command::Check(args) => check::run(load()?, args).await,
        Command::Status(args) => status::run(load()?, args).await,
        Command::Migrate(args) => {
            let fleet = load()?;
            migrate::run(fleet.one(args.database.as_deref())?.clone(), args).await
        }
        Command::Bench(args) => {
            let fleet = load()?;
            bench::run(fleet.one(args.database.as_deref())?.clone(), args).await
        }
        Command::Drain(args) => {
            let fleet = load()?;
            drain::run(fleet.one(args.database.as_deref())?.clone(), args).await
        }
        Command::Run(args) => run::run(load()?, args).await,
        Command::Demo(args) => {
            let duration = match args.duration.as_deref() {
                None => None,
                Some(d) => Some(humantime::parse_duration(d).map_err(|e| {
                    Error::Usage(format!("--duration {d:?}: {e}; write e.g. 20s or 5min"))
                })?),
            };
            crate::demo::run(crate::demo::DemoOptions {
                database_url: args.database_url,
                listen: args.listen,
                duration,
            })
            .await
        }
    }
}

/// Runs `one` on each database `--database` selects (all by default). With several, a header
/// names each before its output and every one is done even when another fails; the error then
/// names those that failed, and the exit code is the worst of theirs.
pub async fn each_database<'a, F, Fut>(
    fleet: &'a Fleet,
    wanted: Option<&str>,
    mut one: F,
) -> Result<i32>
where
    F: FnMut(&'a Config) -> Fut,
    Fut: std::future::Future<Output = Result<i32>>,
{
    let selected = fleet.select(wanted)?;
    if let [only] = selected.as_slice() {
        if !fleet.listed || wanted.is_some() {
            return one(only).await;
        }
    }
    let mut failed = Vec::new();
    for (i, cfg) in selected.into_iter().enumerate() {
        if i > 0 {
            println!();
        }
        println!("== database {} ==", cfg.database.name);
        if let Err(e) = one(cfg).await {
            eprintln!("database {}: {e}", cfg.database.name);
            failed.push((cfg.database.name.clone(), e));
        }
    }
    if failed.is_empty() {
        Ok(0)
    } else {
        Err(Error::Databases(failed))
    }
}

/// `--now`: RFC 3339, or `YYYY-MM-DD` meaning midnight in the configured time zone.
pub fn parse_now(text: Option<&str>, tz: Tz) -> Result<DateTime<Utc>> {
    let Some(text) = text.map(str::trim) else {
        return Ok(Utc::now());
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        if let Some(t) = tz
            .from_local_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default())
            .earliest()
        {
            return Ok(t.with_timezone(&Utc));
        }
    }
    Err(Error::Usage(format!(
        "--now {text:?} is not a time; write RFC 3339 (2027-01-01T00:00:00Z) or a date (2027-01-01)"
    )))
}

/// Connects to the primary (exit 2 when it cannot).
pub async fn connect(cfg: &Config) -> Result<sqlx::PgConnection> {
    Ok(crate::pg::connect(&cfg.database).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_accepts_rfc3339_and_dates_in_the_configured_zone() {
        let paris: Tz = "Europe/Paris".parse().unwrap();
        assert_eq!(
            parse_now(Some("2027-01-01"), paris).unwrap(),
            Utc.with_ymd_and_hms(2026, 12, 31, 23, 0, 0).unwrap()
        );
        assert_eq!(
            parse_now(Some("2027-01-01T00:00:00Z"), paris).unwrap(),
            Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap()
        );
        let e = parse_now(Some("tomorrow"), Tz::UTC).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }
}

//! What several commands share: `--now`, connecting, going over the selected databases.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

use crate::config::{Config, Fleet};
use crate::error::{Error, Result};

/// The databases a command works on, and whether its output names each.
pub struct Selected<'a> {
    pub databases: Vec<&'a Config>,
    /// A `[[databases]]` configuration: a header per database, every database done even when
    /// another fails, the failures named at the end. The part 1 form reads exactly as before.
    pub named: bool,
}

impl<'a> Selected<'a> {
    /// `--database NAME`, else every database; a command given `--table` is about one table,
    /// so with several databases configured it needs `--database`.
    pub fn from(
        fleet: &'a Fleet,
        database: Option<&str>,
        table: Option<&str>,
    ) -> Result<Selected<'a>> {
        let databases = if table.is_some() {
            vec![fleet.one(database)?]
        } else {
            fleet.select(database)?
        };
        Ok(Selected {
            databases,
            named: fleet.listed,
        })
    }

    /// Runs `one` on each database in order, a `== database NAME ==` header before each when
    /// named and `header` (text output), every one even when another fails; the outcomes.
    pub async fn each<T, F, Fut>(&self, header: bool, mut one: F) -> Vec<(&'a Config, Result<T>)>
    where
        F: FnMut(&'a Config) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut out = Vec::new();
        for (i, cfg) in self.databases.iter().copied().enumerate() {
            if self.named && header {
                if i > 0 {
                    println!();
                }
                println!("== database {} ==", cfg.database.name);
            }
            let outcome = one(cfg).await;
            if let (true, Err(e)) = (self.named, &outcome) {
                eprintln!("database {}: {e}", cfg.database.name);
            }
            out.push((cfg, outcome));
        }
        out
    }

    /// The end of the command: 0 when no database failed; in the part 1 form the one failure
    /// itself; else the failed databases, each named, with the worst exit code among them.
    pub fn verdict(&self, mut failed: Vec<(String, Error)>) -> Result<i32> {
        match failed.len() {
            0 => Ok(0),
            1 if !self.named => Err(failed.remove(0).1),
            _ => Err(Error::Databases(failed)),
        }
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

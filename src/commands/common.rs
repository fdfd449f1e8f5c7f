//! What several commands share: `--now`, connecting, going over the selected databases.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

use crate::config::{Config, Fleet};
use crate::error::{Error, Result};

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

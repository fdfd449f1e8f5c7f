//! Scheduled maintenance: a job on `schedule.maintenance` in `schedule.timezone`, plus a pass
//! whenever this instance becomes leader (`run_on_start`).
//!
//! A pass runs only on the leader, one at a time (a tick that finds a pass still running is
//! skipped), on a connection of its own. Its outcome is counted and logged; a failed or even
//! panicking pass never takes the process down, and the next tick simply tries again: every pass
//! re-reads the catalog, so there is nothing to resume.
//!
//! The run times come from [`crate::cron::Schedule`] (crontab(5)'s rules, computed in the zone,
//! so daylight saving time needs nothing special); the supervisor loop below starts each pass
//! when its time has come. It replaced tokio-cron-scheduler, which always requires both
//! day-of-month and day-of-week to match and fixes the zone's UTC offset when a job is made.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use sqlx::Connection;
use tokio::sync::watch;
use tracing::Instrument;

use crate::cron::Schedule;
use crate::maintain::{self, Options, PassReport};
use crate::pg;

use super::state::DbState;
use super::summary::PassSummary;

/// How often the supervisor checks in (for `/status` and `/healthz`) when no run is due sooner.
pub const SUPERVISE_EVERY: Duration = Duration::from_secs(1);
/// The shortest sleep between two looks at the clock (no busy loop right before a run time).
const MIN_PAUSE: Duration = Duration::from_millis(10);

/// The schedule and its next run time.
pub struct Scheduler {
    cron: Schedule,
    tz: Tz,
    next: Option<DateTime<Utc>>,
}

impl Scheduler {
    /// Computes the first run time and reports the scheduler as ticking.
    pub fn start(database: &DbState) -> Result<Scheduler, String> {
        let cron = Schedule::parse(&database.config.schedule.maintenance)?;
        let tz = database.config.schedule.timezone;
        let now = Utc::now();
        let next = next_run(&cron, tz, now);
        database.scheduler_ticking(true);
        database.scheduler_checked(now, next);
        tracing::info!(
            schedule = %database.config.schedule.maintenance,
            timezone = tz.name(),
            next = describe_next(next, tz).as_deref().unwrap_or("never"),
            "maintenance scheduled"
        );
        Ok(Scheduler { cron, tz, next })
    }

    /// Starts a pass at each run time and keeps `/status` and `/healthz` informed until
    /// shutdown.
    pub async fn supervise(mut self, database: Arc<DbState>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let now = Utc::now();
            if self.next.is_some_and(|due| now >= due) {
                // Spawned: a long pass must not stop this loop from checking in.
                tokio::spawn(maintain_now(Arc::clone(&database), "schedule").in_current_span());
                self.next = next_run(&self.cron, self.tz, now);
            }
            database.scheduler_checked(now, self.next);
            let pause = self
                .next
                .and_then(|due| (due - now).to_std().ok())
                .map_or(SUPERVISE_EVERY, |d| d.min(SUPERVISE_EVERY))
                .max(MIN_PAUSE);
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
        }
        database.scheduler_ticking(false);
    }
}

fn next_run(cron: &Schedule, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    cron.next_after(&after.with_timezone(&tz))
        .map(|t| t.with_timezone(&Utc))
}

/// Runs a pass when this instance leads, is not stopping and has no pass running.
pub async fn maintain_now(database: Arc<DbState>, trigger: &'static str) {
    if database.is_shutting_down() {
        return;
    }
    if !database.is_leader() {
        // The leader that lost the primary counts the passes the outage prevents, so that
        // failures show in `maintenance_runs_total` as they would for a pass that began.
        match database.missed_pass() {
            Some(why) if trigger == "schedule" => {
                let now = Utc::now();
                database.metrics.record_missed_pass();
                tracing::warn!(trigger, error = %why, "maintenance pass failed; the next one will try again");
                database.pass_finished(PassSummary::failed(now, now, why));
            }
            _ => tracing::debug!(trigger, "not the leader; no maintenance here"),
        }
        return;
    }
    let Ok(_one_at_a_time) = database.pass_lock.try_lock() else {
        tracing::info!(
            trigger,
            "the previous maintenance pass is still running; skipping this one"
        );
        return;
    };
    let started_at = Utc::now();
    let clock = Instant::now();
    database.pass_started(started_at);
    // Spawned so that a panic inside the pass is caught here and counted, not fatal, and so
    // that a shutdown can abort it.
    let task = tokio::spawn(run_pass(Arc::clone(&database)).in_current_span());
    database.set_pass_task(Some(task.abort_handle()));
    let outcome = task.await;
    database.set_pass_task(None);
    database.set_pass_backend(None);
    let seconds = clock.elapsed().as_secs_f64();
    let finished_at = Utc::now();
    let summary = match outcome {
        Ok(Ok(report)) => {
            database.metrics.record_pass(&report, finished_at);
            log_pass(trigger, &report);
            PassSummary::from_report(started_at, finished_at, &report)
        }
        Ok(Err(error)) => {
            database.metrics.record_failed_pass(seconds);
            tracing::warn!(trigger, error = %error, duration_ms = (seconds * 1000.0) as u64, "maintenance pass failed; the next one will try again");
            PassSummary::failed(started_at, finished_at, error)
        }
        Err(join) if join.is_cancelled() => {
            database.metrics.record_failed_pass(seconds);
            tracing::warn!(
                trigger,
                "maintenance pass stopped by the shutdown; its open transaction rolls back"
            );
            PassSummary::failed(started_at, finished_at, "stopped by the shutdown".into())
        }
        Err(join) => {
            database.metrics.record_failed_pass(seconds);
            tracing::error!(trigger, error = %join, "maintenance pass panicked; the next one will try again");
            PassSummary::failed(started_at, finished_at, "internal error (panic)".into())
        }
    };
    database.pass_finished(summary);
}

/// One pass on a connection of its own; its server pid is published so that a shutdown can
/// cancel a statement that runs too long.
async fn run_pass(database: Arc<DbState>) -> Result<PassReport, String> {
    let db = &database.config.database;
    // Named as `partkeeper maintain` is: the session that runs DDL.
    let mut conn = pg::try_connect(
        &db.url,
        "partkeeper",
        db.lock_timeout,
        db.statement_timeout,
        db.connect_timeout,
        db.pooler,
    )
    .await
    .map_err(|f| format!("cannot connect to the primary: {}", f.internal))?;
    let options = Options {
        now: Utc::now(),
        dry_run: false,
        strict: false,
        lock_wait: maintain::LOCK_WAIT,
    };
    // Behind a transaction pooler the server session changes with every transaction: there is
    // no pid to cancel (a shutdown stops the pass instead), and the pass runs under the
    // leader's lease, checked by each step.
    let result = if db.pooler == crate::config::Pooler::Transaction {
        let Some(held) = database.lease() else {
            let _ = tokio::time::timeout(Duration::from_secs(1), conn.close()).await;
            return Err("this instance no longer holds the maintenance lease".into());
        };
        crate::lease::FENCE
            .scope(
                held,
                maintain::run_pass(&mut conn, db, &database.config.tables, &options),
            )
            .await
    } else {
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| pg::describe(&e))?;
        database.set_pass_backend(Some(pid));
        maintain::run_pass(&mut conn, db, &database.config.tables, &options).await
    };
    database.set_pass_backend(None);
    let _ = tokio::time::timeout(Duration::from_secs(1), conn.close()).await;
    result.map_err(|e| crate::logging::chain(&e))
}

fn log_pass(trigger: &str, report: &PassReport) {
    if let Some(why) = &report.skipped {
        tracing::info!(trigger, "{why}");
        return;
    }
    let actions: usize = report.tables.iter().map(|t| t.actions.len()).sum();
    let failed: Vec<String> = report
        .tables
        .iter()
        .filter(|t| !t.succeeded())
        .map(|t| t.table.to_string())
        .collect();
    for t in report.tables.iter().filter(|t| t.error.is_some()) {
        tracing::warn!(table = %t.table, error = t.error.as_deref().unwrap_or_default(), "table not maintained");
    }
    if failed.is_empty() {
        tracing::info!(
            trigger,
            tables = report.tables.len(),
            actions,
            duration_ms = report.duration_ms,
            "maintenance pass succeeded"
        );
    } else {
        tracing::warn!(trigger, tables = report.tables.len(), actions, failed = %failed.join(", "), duration_ms = report.duration_ms, "maintenance pass failed for some tables");
    }
}

/// When the next scheduled pass is due, if the scheduler knows.
pub fn describe_next(next: Option<DateTime<Utc>>, tz: Tz) -> Option<String> {
    next.map(|t| t.with_timezone(&tz).to_rfc3339())
}

//! The verdicts behind `/healthz` and `/readyz`, per database and for the process. They read
//! the state the tasks keep up to date and never query a database.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::state::{lock, Daemon, DbState};

/// `/readyz` turns 503 when the primary's last answer is older than this, even if no heartbeat
/// failed (a stuck heartbeat is a failed one).
const READY_STALE: Duration = Duration::from_secs(10);
/// `/healthz` turns 503 when the scheduler supervisor has not checked in for this long, or when
/// a tick is overdue by this much.
const LIVE_STALE: Duration = Duration::from_secs(30);

impl DbState {
    /// Not stopping, and the scheduler of this database ticks.
    pub fn liveness(&self, now: DateTime<Utc>) -> Result<(), String> {
        if self.is_shutting_down() {
            return Err("shutting down".into());
        }
        let s = lock(&self.scheduler).clone();
        if !s.ticking {
            return Err("the maintenance scheduler is not running".into());
        }
        let stale = chrono::Duration::from_std(LIVE_STALE).unwrap_or_default();
        if let Some(at) = s.checked_at.filter(|at| now - *at > stale) {
            return Err(format!(
                "the scheduler supervisor last checked in at {at}; it is stuck"
            ));
        }
        if let Some(next) = s.next_tick.filter(|next| now - *next > stale) {
            return Err(format!(
                "the scheduled maintenance due at {next} has not started; the scheduler is stuck"
            ));
        }
        Ok(())
    }

    /// The primary of this database answered the last heartbeat, recently.
    pub fn readiness(&self, now: DateTime<Utc>) -> Result<(), String> {
        if self.is_shutting_down() {
            return Err("shutting down".into());
        }
        let p = lock(&self.primary).clone();
        match (p.up, p.last_answer) {
            (true, Some(at))
                if now - at <= chrono::Duration::from_std(READY_STALE).unwrap_or_default() =>
            {
                Ok(())
            }
            (true, Some(at)) => Err(format!("the primary database has not answered since {at}")),
            (_, _) => Err(format!(
                "the primary database does not answer: {}",
                p.error.as_deref().unwrap_or("no connection yet")
            )),
        }
    }
}

/// The process's readiness: ready when at least one database's primary answers, and each
/// database's verdict.
pub struct Readiness {
    pub ready: bool,
    pub databases: Vec<(String, Result<(), String>)>,
}

impl Daemon {
    /// `/healthz`: alive, not stopping, and the scheduler of every database ticks.
    pub fn liveness(&self, now: DateTime<Utc>) -> Result<(), String> {
        if self.is_shutting_down() {
            return Err("shutting down".into());
        }
        let failing: Vec<String> = self
            .databases
            .iter()
            .filter_map(|d| Some((d, d.liveness(now).err()?)))
            .map(|(d, why)| self.named(d.name(), &why))
            .collect();
        if failing.is_empty() {
            Ok(())
        } else {
            Err(failing.join("\n"))
        }
    }

    /// `/readyz`: at least one database's primary answers (so one database decides alone).
    pub fn readiness(&self, now: DateTime<Utc>) -> Readiness {
        let databases: Vec<_> = self
            .databases
            .iter()
            .map(|d| (d.name().to_string(), d.readiness(now)))
            .collect();
        Readiness {
            ready: !self.is_shutting_down() && databases.iter().any(|(_, r)| r.is_ok()),
            databases,
        }
    }

    /// A database's message as the process-wide answers show it: prefixed with its name when
    /// several can be configured (`[[databases]]`), alone for the part 1 form, as before.
    pub fn named(&self, name: &str, message: &str) -> String {
        if self.listed {
            format!("{name}: {message}")
        } else {
            message.to_string()
        }
    }
}

impl Readiness {
    /// One line per database: `ready` or why not.
    pub fn body(&self, daemon: &Daemon) -> String {
        self.databases
            .iter()
            .map(|(name, r)| {
                let state = match r {
                    Ok(()) => "ready",
                    Err(why) => why.as_str(),
                };
                format!("{}\n", daemon.named(name, state))
            })
            .collect()
    }
}

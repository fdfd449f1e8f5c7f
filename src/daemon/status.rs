//! `/status`: what the daemon knows, as typed JSON, grouped by database. For the part 1 form
//! the one database's fields also stay at the top level, where readers of the single-database
//! daemon find them.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::replication::{ReplicaView, StandbyView};
use crate::snapshot::{Snapshot, TableFacts};

use super::schedule;
use super::state::{lock, Daemon, DbState, PrimaryProbe};
use super::summary::PassSummary;

/// The whole answer.
#[derive(Serialize)]
pub struct Status<'a> {
    pub version: &'static str,
    pub started_at: DateTime<Utc>,
    pub now: DateTime<Utc>,
    /// At least one database's primary answers (as `/readyz`).
    pub ready: bool,
    pub databases: &'a [DatabaseStatus],
    /// The part 1 form: its one database's fields, also here.
    #[serde(flatten)]
    pub single: Option<&'a DatabaseDetail>,
}

/// One database.
#[derive(Serialize)]
pub struct DatabaseStatus {
    /// The `database` label.
    pub name: String,
    /// Its primary answered the last heartbeat, recently (as `/readyz?database=NAME`).
    pub ready: bool,
    #[serde(flatten)]
    pub detail: DatabaseDetail,
}

/// What the part 1 daemon showed at the top level of `/status`.
#[derive(Serialize)]
pub struct DatabaseDetail {
    pub leader: bool,
    pub primary: PrimaryProbe,
    pub maintenance: MaintenanceStatus,
    pub refresh: RefreshStatus,
    pub tables: Vec<TableFacts>,
    pub replicas: Vec<ReplicaView>,
    pub standbys: Vec<StandbyView>,
}

#[derive(Serialize)]
pub struct MaintenanceStatus {
    pub schedule: String,
    pub timezone: &'static str,
    /// The next scheduled pass, in the schedule's zone.
    pub next: Option<String>,
    pub running_since: Option<DateTime<Utc>>,
    pub last: Option<PassSummary>,
}

#[derive(Serialize)]
pub struct RefreshStatus {
    pub refreshed_at: Option<DateTime<Utc>>,
    pub duration_seconds: Option<f64>,
    pub primary_up: bool,
    pub error: Option<String>,
    pub tables_error: Option<String>,
    pub tables_read_at: Option<DateTime<Utc>>,
}

impl DbState {
    pub fn status(&self, now: DateTime<Utc>) -> DatabaseStatus {
        let snap: Arc<Snapshot> = self.snapshot();
        let m = lock(&self.maintenance).clone();
        let s = lock(&self.scheduler).clone();
        let tz = self.config.schedule.timezone;
        DatabaseStatus {
            name: self.name().to_string(),
            ready: self.readiness(now).is_ok(),
            detail: DatabaseDetail {
                leader: self.is_leader(),
                primary: lock(&self.primary).clone(),
                maintenance: MaintenanceStatus {
                    schedule: self.config.schedule.maintenance.clone(),
                    timezone: tz.name(),
                    next: schedule::describe_next(s.next_tick, tz),
                    running_since: m.running_since,
                    last: m.last,
                },
                refresh: RefreshStatus {
                    refreshed_at: snap.refreshed_at,
                    duration_seconds: snap.duration_seconds,
                    primary_up: snap.primary_up,
                    error: snap.primary_error.clone(),
                    tables_error: snap.tables_error.clone(),
                    tables_read_at: snap.tables_read_at,
                },
                tables: snap.tables.clone(),
                replicas: snap.replicas.clone(),
                standbys: snap.standbys.clone(),
            },
        }
    }
}

impl Daemon {
    /// Each database's part of `/status`, in the configuration's order.
    pub fn database_statuses(&self, now: DateTime<Utc>) -> Vec<DatabaseStatus> {
        self.databases.iter().map(|d| d.status(now)).collect()
    }

    /// `/status`, over `databases` (from [`Daemon::database_statuses`]).
    pub fn status<'a>(&self, now: DateTime<Utc>, databases: &'a [DatabaseStatus]) -> Status<'a> {
        let single = match databases {
            [only] if !self.listed => Some(&only.detail),
            _ => None,
        };
        Status {
            version: env!("CARGO_PKG_VERSION"),
            started_at: self.started_at,
            now,
            ready: self.readiness(now).ready,
            databases,
            single,
        }
    }
}

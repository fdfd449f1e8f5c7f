//! The daemon's shared state: one [`DbState`] per configured database (what its leader,
//! scheduler, passes and refresh know), and the [`Daemon`] that holds them with the process's
//! one metrics registry and shutdown signal. Tasks of one database touch only its `DbState`;
//! no lock is ever held across databases.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::watch;

use crate::config::{Config, Fleet};
use crate::metrics::{DbMetrics, Metrics};
use crate::snapshot::Snapshot;

use super::summary::PassSummary;

/// One database's state, shared by its tasks and the HTTP handlers.
pub struct DbState {
    pub config: Arc<Config>,
    pub metrics: DbMetrics,
    snapshot: Arc<RwLock<Arc<Snapshot>>>,
    leader: watch::Sender<bool>,
    pub(super) primary: Mutex<PrimaryProbe>,
    /// While the primary does not answer: whether this instance stands for the leader, whose
    /// scheduled passes then count as failed (it led when the primary stopped answering, or
    /// never reached it). A follower does not, so one outage is counted once, not per instance.
    stands_in: AtomicBool,
    pub(super) maintenance: Mutex<MaintenanceState>,
    pub(super) scheduler: Mutex<SchedulerState>,
    /// Held for the length of a maintenance pass: one at a time.
    pub pass_lock: tokio::sync::Mutex<()>,
    pub(super) pass_backend: Mutex<Option<i32>>,
    /// The maintenance lease this instance holds as leader (transaction pooler only).
    lease: Mutex<Option<crate::lease::Held>>,
    pub(super) pass_task: Mutex<Option<tokio::task::AbortHandle>>,
    shutdown: watch::Receiver<bool>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PrimaryProbe {
    pub up: bool,
    pub checked_at: Option<DateTime<Utc>>,
    pub last_answer: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct MaintenanceState {
    pub running_since: Option<DateTime<Utc>>,
    pub last: Option<PassSummary>,
}

#[derive(Debug, Clone, Default)]
pub struct SchedulerState {
    pub ticking: bool,
    pub checked_at: Option<DateTime<Utc>>,
    pub next_tick: Option<DateTime<Utc>>,
}

impl DbState {
    /// The state of `config`'s database, its series added to `metrics`; `shutdown` turns true
    /// when the process stops.
    pub fn new(config: Config, metrics: &Metrics, shutdown: watch::Receiver<bool>) -> Arc<DbState> {
        let config = Arc::new(config);
        let snapshot = Arc::new(RwLock::new(Arc::new(Snapshot::default())));
        let (leader, leader_rx) = watch::channel(false);
        let tables: Vec<String> = config.tables.iter().map(|t| t.name.to_string()).collect();
        let metrics = metrics.database(
            &config.database.name,
            &tables,
            Arc::clone(&snapshot),
            leader_rx,
        );
        Arc::new(DbState {
            config,
            metrics,
            snapshot,
            leader,
            primary: Mutex::default(),
            stands_in: AtomicBool::new(false),
            maintenance: Mutex::default(),
            scheduler: Mutex::default(),
            pass_lock: tokio::sync::Mutex::new(()),
            pass_backend: Mutex::default(),
            lease: Mutex::default(),
            pass_task: Mutex::default(),
            shutdown,
        })
    }

    /// The `database` label.
    pub fn name(&self) -> &str {
        &self.config.database.name
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshot.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn set_snapshot(&self, snap: Snapshot) {
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(snap);
    }

    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.send_replace(leader);
    }

    /// Changes of leadership, for the run-on-start trigger.
    pub fn leadership(&self) -> watch::Receiver<bool> {
        self.leader.subscribe()
    }

    pub fn primary_answered(&self, at: DateTime<Utc>) {
        let mut p = lock(&self.primary);
        if !p.up && p.checked_at.is_some() {
            tracing::info!("the primary answers again");
        }
        self.metrics.heartbeat(true);
        self.stands_in.store(false, Ordering::Relaxed);
        *p = PrimaryProbe {
            up: true,
            checked_at: Some(at),
            last_answer: Some(at),
            error: None,
        };
    }

    /// Called before leadership is given up, so that a leader that loses the primary keeps
    /// standing in for the leader (see [`DbState::missed_pass`]).
    pub fn primary_failed(&self, at: DateTime<Utc>, reason: String) {
        let mut p = lock(&self.primary);
        self.metrics.heartbeat(false);
        if self.is_leader() || p.last_answer.is_none() {
            self.stands_in.store(true, Ordering::Relaxed);
        }
        p.up = false;
        p.checked_at = Some(at);
        p.error = Some(reason);
    }

    /// Why a scheduled pass cannot run and counts as failed: the primary does not answer and
    /// this instance stands for the leader. `None` when it runs, or is another instance's.
    pub fn missed_pass(&self) -> Option<String> {
        let p = lock(&self.primary);
        (!p.up && p.checked_at.is_some() && self.stands_in.load(Ordering::Relaxed)).then(|| {
            format!(
                "the primary database does not answer: {}",
                p.error.as_deref().unwrap_or("no connection yet")
            )
        })
    }

    pub fn scheduler_ticking(&self, ticking: bool) {
        lock(&self.scheduler).ticking = ticking;
    }

    pub fn scheduler_checked(&self, at: DateTime<Utc>, next: Option<DateTime<Utc>>) {
        let mut s = lock(&self.scheduler);
        s.checked_at = Some(at);
        s.next_tick = next;
    }

    pub fn pass_started(&self, at: DateTime<Utc>) {
        lock(&self.maintenance).running_since = Some(at);
    }

    pub fn pass_finished(&self, summary: PassSummary) {
        let mut m = lock(&self.maintenance);
        m.running_since = None;
        m.last = Some(summary);
    }

    pub fn set_pass_backend(&self, pid: Option<i32>) {
        *lock(&self.pass_backend) = pid;
    }

    pub fn lease(&self) -> Option<crate::lease::Held> {
        lock(&self.lease).clone()
    }

    pub fn set_lease(&self, held: Option<crate::lease::Held>) {
        *lock(&self.lease) = held;
    }

    pub fn set_pass_task(&self, task: Option<tokio::task::AbortHandle>) {
        *lock(&self.pass_task) = task;
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }
}

/// The whole process: every database's state, the one registry, the shutdown signal.
pub struct Daemon {
    /// In the configuration's order; names unique.
    pub databases: Vec<Arc<DbState>>,
    pub metrics: Metrics,
    /// Configured as `[[databases]]` (false: the part 1 form, whose `/status` keeps its
    /// top-level fields).
    pub listed: bool,
    shutdown: watch::Sender<bool>,
    pub started_at: DateTime<Utc>,
}

impl Daemon {
    pub fn new(fleet: Fleet) -> Arc<Daemon> {
        let metrics = Metrics::new();
        let shutdown = watch::channel(false).0;
        let databases = fleet
            .databases
            .into_iter()
            .map(|c| DbState::new(c, &metrics, shutdown.subscribe()))
            .collect();
        Arc::new(Daemon {
            databases,
            metrics,
            listed: fleet.listed,
            shutdown,
            started_at: Utc::now(),
        })
    }

    /// The database named `name`.
    pub fn find(&self, name: &str) -> Option<&Arc<DbState>> {
        self.databases.iter().find(|d| d.name() == name)
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Tells every task of every database to stop.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }
}

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

//! The daemon behind `partkeeper run`: scheduled maintenance, metrics and health over HTTP.
//!
//! # Design
//!
//! Four tasks share one [`Shared`] state and never call each other:
//!
//! - **leader** ([`leader`]): a dedicated session that holds the advisory lock `LEADER_LOCK`
//!   while this instance leads. Its heartbeat, every second, is also the readiness probe of the
//!   primary. Losing the session is losing leadership; it reconnects with backoff.
//! - **schedule** ([`schedule`]): the cron schedule, with crontab(5)'s rules ([`crate::cron`]).
//!   At each run time (and when leadership is gained, with `run_on_start`) the leader runs one
//!   maintenance pass on a connection of its own. The pass is a reconciler: it re-reads the
//!   catalog and does what the plan says, so a failed pass needs no recovery, only the next tick.
//! - **refresh** ([`refresh`]): every `metrics_refresh` it reads the catalog, sizes, default-row
//!   counts and replication state into an immutable snapshot swapped behind an `Arc`.
//! - **http** ([`http`]): answers from the shared state and the latest snapshot only. A scrape
//!   never queries the database, and a dead database never makes a probe hang.
//!
//! Every database call is bounded (connect timeouts, heartbeat and refresh deadlines), so a
//! database that is down or unreachable makes the daemon report it, never stall or exit.
//!
//! Shutdown (SIGTERM/SIGINT): stop scheduling and refreshing, give a running pass
//! [`PASS_GRACE`] to finish, then cancel its statement (its transaction rolls back), give the
//! leader lock back, stop the HTTP server. The whole takes well under ten seconds.

pub mod basic_auth;
pub mod http;
pub mod leader;
pub mod refresh;
pub mod schedule;
pub mod serve;
pub mod web_config;

use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::maintain::PassReport;
use crate::metrics::Metrics;
use crate::pg;
use refresh::{Refresher, Snapshot};

/// How long a shutdown waits for a running maintenance pass before cancelling its statement.
pub const PASS_GRACE: Duration = Duration::from_secs(4);
/// Bound on cancelling the pass's statement, then on waiting for the pass to end.
pub const CANCEL_GRACE: Duration = Duration::from_millis(1500);
/// A whole shutdown fits in this: under the 10 s that service managers commonly allow before
/// SIGKILL (Kubernetes gives 30 s by default, `docker stop` 10 s).
pub const SHUTDOWN_BUDGET: Duration = Duration::from_secs(9);
/// Bound on each remaining step of a shutdown (tasks ending, HTTP connections closing).
const STEP_TIMEOUT: Duration = Duration::from_millis(500);
/// `/readyz` turns 503 when the primary's last answer is older than this, even if no heartbeat
/// failed (a stuck heartbeat is a failed one).
const READY_STALE: Duration = Duration::from_secs(10);
/// `/healthz` turns 503 when the scheduler supervisor has not checked in for this long, or when
/// a tick is overdue by this much.
const LIVE_STALE: Duration = Duration::from_secs(30);

/// State shared by the daemon's tasks and HTTP handlers.
pub struct Shared {
    pub config: Arc<Config>,
    pub metrics: Metrics,
    snapshot: Arc<RwLock<Arc<Snapshot>>>,
    leader: watch::Sender<bool>,
    primary: Mutex<PrimaryProbe>,
    maintenance: Mutex<MaintenanceState>,
    scheduler: Mutex<SchedulerState>,
    /// Held for the length of a maintenance pass: one at a time.
    pub pass_lock: tokio::sync::Mutex<()>,
    pass_backend: Mutex<Option<i32>>,
    /// The maintenance lease this instance holds as leader (transaction pooler only).
    lease: Mutex<Option<crate::lease::Held>>,
    pass_task: Mutex<Option<tokio::task::AbortHandle>>,
    shutdown: watch::Sender<bool>,
    started_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PrimaryProbe {
    pub up: bool,
    pub checked_at: Option<DateTime<Utc>>,
    pub last_answer: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default)]
struct MaintenanceState {
    running_since: Option<DateTime<Utc>>,
    last: Option<PassSummary>,
}

#[derive(Debug, Clone, Default)]
struct SchedulerState {
    ticking: bool,
    checked_at: Option<DateTime<Utc>>,
    next_tick: Option<DateTime<Utc>>,
}

/// A finished pass, as `/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PassSummary {
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// `success`, `failure` or `skipped` (another instance held the maintenance lock).
    pub result: &'static str,
    pub error: Option<String>,
    pub tables: Vec<TableOutcome>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TableOutcome {
    pub table: String,
    pub result: &'static str,
    pub error: Option<String>,
    pub actions: Vec<ActionOutcome>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ActionOutcome {
    pub action: &'static str,
    pub partition: String,
    pub duration_ms: u64,
    pub error: Option<String>,
}

impl PassSummary {
    pub fn from_report(
        started_at: DateTime<Utc>,
        finished_at: DateTime<Utc>,
        r: &PassReport,
    ) -> PassSummary {
        let result = match (&r.skipped, r.succeeded()) {
            (Some(_), _) => "skipped",
            (None, true) => "success",
            (None, false) => "failure",
        };
        PassSummary {
            started_at,
            finished_at,
            result,
            error: r.skipped.clone(),
            tables: r
                .tables
                .iter()
                .map(|t| TableOutcome {
                    table: t.table.to_string(),
                    result: if t.succeeded() { "success" } else { "failure" },
                    error: t.error.clone(),
                    actions: t
                        .actions
                        .iter()
                        .map(|a| ActionOutcome {
                            action: a.action.verb(),
                            partition: a.action.partition().to_string(),
                            duration_ms: a.duration_ms,
                            error: a.error.clone(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    pub fn failed(
        started_at: DateTime<Utc>,
        finished_at: DateTime<Utc>,
        error: String,
    ) -> PassSummary {
        PassSummary {
            started_at,
            finished_at,
            result: "failure",
            error: Some(error),
            tables: Vec::new(),
        }
    }
}

impl Shared {
    pub fn new(config: Config) -> Arc<Shared> {
        let config = Arc::new(config);
        let snapshot = Arc::new(RwLock::new(Arc::new(Snapshot::default())));
        let (leader, leader_rx) = watch::channel(false);
        let tables: Vec<String> = config.tables.iter().map(|t| t.name.to_string()).collect();
        let metrics = Metrics::new(&tables, Arc::clone(&snapshot), leader_rx);
        Arc::new(Shared {
            config,
            metrics,
            snapshot,
            leader,
            primary: Mutex::default(),
            maintenance: Mutex::default(),
            scheduler: Mutex::default(),
            pass_lock: tokio::sync::Mutex::new(()),
            pass_backend: Mutex::default(),
            lease: Mutex::default(),
            pass_task: Mutex::default(),
            shutdown: watch::channel(false).0,
            started_at: Utc::now(),
        })
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
        *p = PrimaryProbe {
            up: true,
            checked_at: Some(at),
            last_answer: Some(at),
            error: None,
        };
    }

    pub fn primary_failed(&self, at: DateTime<Utc>, reason: String) {
        let mut p = lock(&self.primary);
        self.metrics.heartbeat(false);
        p.up = false;
        p.checked_at = Some(at);
        p.error = Some(reason);
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

    fn stop_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// `/healthz`: alive, not stopping, and the scheduler ticks.
    pub fn liveness(&self, now: DateTime<Utc>) -> std::result::Result<(), String> {
        if self.is_shutting_down() {
            return Err("shutting down".into());
        }
        let s = lock(&self.scheduler).clone();
        if !s.ticking {
            return Err("the maintenance scheduler is not running".into());
        }
        let stale = chrono::Duration::from_std(LIVE_STALE).unwrap_or_default();
        match s.checked_at {
            Some(at) if now - at > stale => {
                return Err(format!(
                    "the scheduler supervisor last checked in at {at}; it is stuck"
                ))
            }
            _ => {}
        }
        if let Some(next) = s.next_tick {
            if now - next > stale {
                return Err(format!(
                    "the scheduled maintenance due at {next} has not started; the scheduler is stuck"
                ));
            }
        }
        Ok(())
    }

    /// `/readyz`: the primary answered the last heartbeat, recently.
    pub fn readiness(&self, now: DateTime<Utc>) -> std::result::Result<(), String> {
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

    /// `/status`.
    pub fn status(&self, now: DateTime<Utc>) -> serde_json::Value {
        let snap = self.snapshot();
        let primary = lock(&self.primary).clone();
        let m = lock(&self.maintenance).clone();
        let s = lock(&self.scheduler).clone();
        let tz = self.config.schedule.timezone;
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "started_at": self.started_at,
            "now": now,
            "leader": self.is_leader(),
            "ready": self.readiness(now).is_ok(),
            "primary": primary,
            "maintenance": {
                "schedule": self.config.schedule.maintenance,
                "timezone": tz.name(),
                "next": schedule::describe_next(s.next_tick, tz),
                "running_since": m.running_since,
                "last": m.last,
            },
            "refresh": {
                "refreshed_at": snap.refreshed_at,
                "duration_seconds": snap.duration_seconds,
                "primary_up": snap.primary_up,
                "error": snap.primary_error,
                "tables_error": snap.tables_error,
                "tables_read_at": snap.tables_read_at,
            },
            "tables": snap.tables,
            "replicas": snap.replicas,
            "standbys": snap.standbys,
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs the daemon on `listener` until `stop` completes, then shuts down cleanly.
pub async fn run(
    config: Config,
    listener: TcpListener,
    stop: impl Future<Output = ()>,
) -> Result<()> {
    run_secured(config, listener, web_config::WebSecurity::none(), stop).await
}

/// [`run`] with TLS and basic auth as `web` says (`--web.config.file`).
pub async fn run_secured(
    config: Config,
    listener: TcpListener,
    web: web_config::WebSecurity,
    stop: impl Future<Output = ()>,
) -> Result<()> {
    if config.tables.is_empty() {
        tracing::warn!(
            "no [[tables]] configured: the daemon will only report replication and health"
        );
    }
    let shared = Shared::new(config);

    let (release_tx, release_rx) = oneshot::channel();
    let leader_task = tokio::spawn(leader::run(Arc::clone(&shared), release_rx));
    let refresh_task = tokio::spawn(refresh::run(
        Arc::clone(&shared),
        Refresher::new(Arc::clone(&shared.config)),
        shared.stop_signal(),
    ));
    let scheduler = schedule::Scheduler::start(&shared)
        .map_err(|e| Error::Failed(format!("cannot start the maintenance scheduler: {e}")))?;
    let supervisor = tokio::spawn(scheduler.supervise(Arc::clone(&shared), shared.stop_signal()));
    let on_leadership = tokio::spawn(run_when_leading(Arc::clone(&shared)));
    let router = serve::secured(http::app(Arc::clone(&shared)), &web);
    let server = tokio::spawn(serve::serve(
        listener,
        router,
        web.tls,
        shared.stop_signal(),
    ));

    stop.await;
    let deadline = tokio::time::Instant::now() + SHUTDOWN_BUDGET;
    let left =
        |step: Duration| step.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
    tracing::info!("stopping: no new maintenance; a running pass may finish");
    shared.shutdown.send_replace(true);
    wait_for_pass(&shared).await;
    let _ = tokio::time::timeout(left(STEP_TIMEOUT), on_leadership).await;
    let _ = release_tx.send(());
    let _ = tokio::time::timeout(left(leader::RELEASE_TIMEOUT), leader_task).await;
    let _ = tokio::time::timeout(left(STEP_TIMEOUT), supervisor).await;
    let _ = tokio::time::timeout(left(STEP_TIMEOUT), refresh_task).await;
    match tokio::time::timeout(left(STEP_TIMEOUT), server).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "the HTTP server stopped with an error"),
        Err(_) => tracing::info!("closed the remaining HTTP connections"),
        _ => {}
    }
    tracing::info!("stopped");
    Ok(())
}

/// With `run_on_start`, a pass each time this instance becomes leader: at start, and when it
/// takes over from a leader that went away (possibly in the middle of a pass).
async fn run_when_leading(shared: Arc<Shared>) {
    if !shared.config.schedule.run_on_start {
        return;
    }
    let mut leadership = shared.leadership();
    let mut stop = shared.stop_signal();
    loop {
        tokio::select! {
            gained = leadership.wait_for(|l| *l) => if gained.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
        // Not raced against the stop signal: a pass under way holds the pass lock, which the
        // shutdown waits for (dropping this future would let go of it early).
        schedule::maintain_now(Arc::clone(&shared), "leadership").await;
        tokio::select! {
            lost = leadership.wait_for(|l| !*l) => if lost.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Lets a running pass finish within [`PASS_GRACE`]; else cancels its statement (the server
/// rolls its transaction back), and stops the pass if that did not end it.
async fn wait_for_pass(shared: &Shared) {
    if tokio::time::timeout(PASS_GRACE, shared.pass_lock.lock())
        .await
        .is_ok()
    {
        return;
    }
    let pid = *lock(&shared.pass_backend);
    tracing::warn!(
        backend_pid = pid,
        "the maintenance pass is still running after {PASS_GRACE:?}; cancelling it"
    );
    if let Some(pid) = pid {
        let db = &shared.config.database;
        let cancel = async {
            let mut c = pg::try_connect(
                &db.url,
                "partkeeper",
                db.lock_timeout,
                CANCEL_GRACE,
                CANCEL_GRACE,
                db.pooler,
            )
            .await?;
            sqlx::query("SELECT pg_cancel_backend($1)")
                .bind(pid)
                .execute(&mut c)
                .await
                .map_err(|e| pg::Failure::from_sqlx(&e, &[&db.url]))
        };
        match tokio::time::timeout(CANCEL_GRACE, cancel).await {
            Ok(Ok(_)) => {}
            Ok(Err(f)) => {
                tracing::warn!(reason = %f.internal, "cannot cancel the pass's statement")
            }
            Err(_) => tracing::warn!("cannot cancel the pass's statement: no answer in time"),
        }
    }
    // The cancelled statement fails the pass, which closes its connection itself.
    if tokio::time::timeout(CANCEL_GRACE, shared.pass_lock.lock())
        .await
        .is_ok()
    {
        return;
    }
    // Between statements (a backoff before a retry) there was nothing to cancel: stop the pass;
    // dropping its connection ends the server session, which rolls back.
    if let Some(task) = lock(&shared.pass_task).take() {
        task.abort();
    }
    if tokio::time::timeout(STEP_TIMEOUT, shared.pass_lock.lock())
        .await
        .is_err()
    {
        tracing::warn!("the pass did not end; exiting anyway: the server rolls its transaction back when the connection closes");
    }
}

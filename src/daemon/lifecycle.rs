//! Starting and stopping the daemon: per database its leader, refresh, scheduler and
//! run-on-leadership tasks, one HTTP server for the process, and a shutdown that stops the
//! passes of every database in parallel within [`SHUTDOWN_BUDGET`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::config::Fleet;
use crate::error::{Error, Result};
use crate::pg;

use super::refresh::{self, Refresher};
use super::state::{lock, Daemon, DbState};
use super::{http, leader, schedule, serve, web_config};

/// How long a shutdown waits for a running maintenance pass before cancelling its statement.
pub const PASS_GRACE: Duration = Duration::from_secs(4);
/// Bound on cancelling the pass's statement, then on waiting for the pass to end.
pub const CANCEL_GRACE: Duration = Duration::from_millis(1500);
/// A whole shutdown fits in this: under the 10 s that service managers commonly allow before
/// SIGKILL (Kubernetes gives 30 s by default, `docker stop` 10 s).
pub const SHUTDOWN_BUDGET: Duration = Duration::from_secs(9);
/// Bound on each remaining step of a shutdown (tasks ending, HTTP connections closing).
const STEP_TIMEOUT: Duration = Duration::from_millis(500);

/// Runs the daemon on `listener` until `stop` completes, then shuts down cleanly.
pub async fn run(
    fleet: Fleet,
    listener: TcpListener,
    stop: impl Future<Output = ()>,
) -> Result<()> {
    run_secured(fleet, listener, web_config::WebSecurity::none(), stop).await
}

/// The tasks of one database.
struct DbTasks {
    db: Arc<DbState>,
    release: oneshot::Sender<()>,
    leader: JoinHandle<()>,
    refresh: JoinHandle<()>,
    supervisor: JoinHandle<()>,
    on_leadership: JoinHandle<()>,
}

/// [`run`] with TLS and basic auth as `web` says (`--web.config.file`).
pub async fn run_secured(
    fleet: Fleet,
    listener: TcpListener,
    web: web_config::WebSecurity,
    stop: impl Future<Output = ()>,
) -> Result<()> {
    let daemon = Daemon::new(fleet);
    let mut tasks = Vec::with_capacity(daemon.databases.len());
    let count = daemon.databases.len();
    for (i, db) in daemon.databases.iter().enumerate() {
        tasks.push(start(db, refresh::Phase { index: i, count })?);
    }
    let router = serve::secured(http::app(Arc::clone(&daemon)), &web);
    let server = tokio::spawn(serve::serve(
        listener,
        router,
        web.tls,
        daemon.stop_signal(),
    ));

    stop.await;
    let deadline = tokio::time::Instant::now() + SHUTDOWN_BUDGET;
    tracing::info!("stopping: no new maintenance; a running pass may finish");
    daemon.begin_shutdown();
    // Every database at once: many databases take no longer than one.
    futures::future::join_all(tasks.into_iter().map(|t| {
        let span = span_of(&t.db);
        stop_database(t, deadline).instrument(span)
    }))
    .await;
    match tokio::time::timeout(left(deadline, STEP_TIMEOUT), server).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "the HTTP server stopped with an error"),
        Err(_) => tracing::info!("closed the remaining HTTP connections"),
        _ => {}
    }
    tracing::info!("stopped");
    Ok(())
}

/// The log span of a database's tasks: every line they write names it.
fn span_of(db: &DbState) -> tracing::Span {
    tracing::info_span!("db", database = %db.name())
}

/// Starts the tasks of one database. They share nothing with another database's but the
/// metrics registry and the shutdown signal.
fn start(db: &Arc<DbState>, phase: refresh::Phase) -> Result<DbTasks> {
    let span = span_of(db);
    let _entered = span.enter();
    if db.config.tables.is_empty() {
        tracing::warn!(
            "no tables configured: the daemon will only report replication and health of this database"
        );
    }
    let (release, release_rx) = oneshot::channel();
    let leader = tokio::spawn(leader::run(Arc::clone(db), release_rx).instrument(span.clone()));
    let refresh = tokio::spawn(
        refresh::run(
            Arc::clone(db),
            Refresher::new(Arc::clone(&db.config)),
            phase,
            db.stop_signal(),
        )
        .instrument(span.clone()),
    );
    let scheduler = schedule::Scheduler::start(db).map_err(|e| {
        Error::Failed(format!(
            "cannot start the maintenance scheduler of database {}: {e}",
            db.name()
        ))
    })?;
    let supervisor = tokio::spawn(
        scheduler
            .supervise(Arc::clone(db), db.stop_signal())
            .instrument(span.clone()),
    );
    let on_leadership = tokio::spawn(run_when_leading(Arc::clone(db)).instrument(span.clone()));
    Ok(DbTasks {
        db: Arc::clone(db),
        release,
        leader,
        refresh,
        supervisor,
        on_leadership,
    })
}

fn left(deadline: tokio::time::Instant, step: Duration) -> Duration {
    step.min(deadline.saturating_duration_since(tokio::time::Instant::now()))
}

/// Stops one database's tasks: its pass (given [`PASS_GRACE`]), then the rest, each bounded.
async fn stop_database(t: DbTasks, deadline: tokio::time::Instant) {
    wait_for_pass(&t.db).await;
    let _ = tokio::time::timeout(left(deadline, STEP_TIMEOUT), t.on_leadership).await;
    let _ = t.release.send(());
    let _ = tokio::time::timeout(left(deadline, leader::RELEASE_TIMEOUT), t.leader).await;
    let _ = tokio::time::timeout(left(deadline, STEP_TIMEOUT), t.supervisor).await;
    let _ = tokio::time::timeout(left(deadline, STEP_TIMEOUT), t.refresh).await;
}

/// With `run_on_start`, a pass each time this instance becomes leader of the database: at
/// start, and when it takes over from a leader that went away (possibly in the middle of a
/// pass).
async fn run_when_leading(db: Arc<DbState>) {
    if !db.config.schedule.run_on_start {
        return;
    }
    let mut leadership = db.leadership();
    let mut stop = db.stop_signal();
    loop {
        tokio::select! {
            gained = leadership.wait_for(|l| *l) => if gained.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
        // Not raced against the stop signal: a pass under way holds the pass lock, which the
        // shutdown waits for (dropping this future would let go of it early).
        schedule::maintain_now(Arc::clone(&db), "leadership").await;
        tokio::select! {
            lost = leadership.wait_for(|l| !*l) => if lost.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Lets a running pass finish within [`PASS_GRACE`]; else cancels its statement (the server
/// rolls its transaction back), and stops the pass if that did not end it.
async fn wait_for_pass(db: &DbState) {
    if tokio::time::timeout(PASS_GRACE, db.pass_lock.lock())
        .await
        .is_ok()
    {
        return;
    }
    let pid = *lock(&db.pass_backend);
    tracing::warn!(
        backend_pid = pid,
        "the maintenance pass is still running after {PASS_GRACE:?}; cancelling it"
    );
    if let Some(pid) = pid {
        let c = &db.config.database;
        let cancel = async {
            let mut conn = pg::try_connect(
                &c.url,
                "partkeeper",
                c.lock_timeout,
                CANCEL_GRACE,
                CANCEL_GRACE,
                c.pooler,
            )
            .await?;
            sqlx::query("SELECT pg_cancel_backend($1)")
                .bind(pid)
                .execute(&mut conn)
                .await
                .map_err(|e| pg::Failure::from_sqlx(&e, &[&c.url]))
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
    if tokio::time::timeout(CANCEL_GRACE, db.pass_lock.lock())
        .await
        .is_ok()
    {
        return;
    }
    // Between statements (a backoff before a retry) there was nothing to cancel: stop the pass;
    // dropping its connection ends the server session, which rolls back.
    if let Some(task) = lock(&db.pass_task).take() {
        task.abort();
    }
    if tokio::time::timeout(STEP_TIMEOUT, db.pass_lock.lock())
        .await
        .is_err()
    {
        tracing::warn!("the pass did not end; exiting anyway: the server rolls its transaction back when the connection closes");
    }
}

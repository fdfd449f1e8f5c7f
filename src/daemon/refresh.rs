//! The refresh loop: every `schedule.metrics_refresh` it reads the database facts behind
//! `/metrics` and `/status` (catalog with sizes and row estimates, bounded default-partition row
//! counts, the health verdict of `check::assess`, the standbys the primary sees, each configured
//! replica's own view) into an immutable [`Snapshot`], and swaps it in behind an `Arc`. Scrapes
//! read the latest snapshot and never wait for the database.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection};
use tokio::sync::watch;

use crate::catalog;
use crate::config::Config;
use crate::pg::{self, Failure};
use crate::pooler;
use crate::replication::{self, ReplicaProbe, StandbyView};

use super::state::DbState;

/// Bound on the primary's part of one refresh (catalog, sizes, default-row counts, standbys).
/// Thousands of partitions take well under a second; a hung network must not freeze the facts
/// for longer than this.
pub const PRIMARY_TIMEOUT: Duration = Duration::from_secs(30);
/// `lock_timeout` of the refresh session. Sizes and the default partition's count need a share
/// lock on each partition; behind an application's exclusive lock, a refresh gives up after this
/// and keeps the last facts rather than queueing.
pub const REFRESH_LOCK_TIMEOUT: Duration = Duration::from_secs(2);

pub use crate::snapshot::{PartitionFacts, Snapshot, TableFacts};

/// Keeps the connections between refreshes and the facts of the last good one.
pub struct Refresher {
    config: Arc<Config>,
    conn: Option<PgConnection>,
    replicas: Vec<ReplicaProbe>,
    last: Snapshot,
}

impl Refresher {
    pub fn new(config: Arc<Config>) -> Refresher {
        let replicas = config
            .replicas
            .iter()
            .cloned()
            .map(ReplicaProbe::new)
            .collect();
        Refresher {
            config,
            conn: None,
            replicas,
            last: Snapshot::default(),
        }
    }

    /// One refresh. The primary and the replicas are read at the same time; each is bounded.
    pub async fn refresh(&mut self) -> Snapshot {
        let started = Instant::now();
        let now = Utc::now();
        let config = Arc::clone(&self.config);
        let (primary, replicas) = futures::join!(
            read_primary(&config, &mut self.conn, now),
            futures::future::join_all(self.replicas.iter_mut().map(|r| r.probe())),
        );
        let mut snap = Snapshot {
            refreshed_at: Some(now),
            duration_seconds: None,
            primary_up: false,
            primary_error: None,
            tables_error: None,
            tables_read_at: self.last.tables_read_at,
            tables: self.last.tables.clone(),
            standbys: self.last.standbys.clone(),
            replicas,
        };
        match primary {
            Ok((tables, standbys)) => {
                snap.primary_up = true;
                snap.tables_read_at = Some(now);
                snap.tables = tables;
                snap.standbys = standbys;
            }
            Err(Miss::Unreachable(f)) => {
                self.conn = None;
                if self.last.primary_up || self.last.refreshed_at.is_none() {
                    tracing::warn!(reason = %f.internal, "refresh: cannot reach the primary; metrics keep the last facts read and report up 0");
                }
                snap.primary_error = Some(f.external);
            }
            Err(Miss::Unread(f)) => {
                snap.primary_up = true;
                if self.last.tables_error.as_deref() != Some(f.external.as_str()) {
                    tracing::warn!(reason = %f.internal, "refresh: cannot read the tables; metrics keep the last facts read");
                }
                snap.tables_error = Some(f.external);
            }
        }
        snap.duration_seconds = Some(started.elapsed().as_secs_f64());
        self.last = snap.clone();
        snap
    }

    pub async fn close(&mut self) {
        if let Some(conn) = self.conn.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), conn.close()).await;
        }
        for r in &mut self.replicas {
            r.close().await;
        }
    }
}

/// Why the primary's part of a refresh failed.
enum Miss {
    /// No connection, a lost one, or no answer in time: the primary is down for the metrics.
    Unreachable(Failure),
    /// The primary answered but the tables could not be read (a lock held too long, a
    /// permission): the facts of the last refresh are kept.
    Unread(Failure),
}

async fn read_primary(
    config: &Config,
    slot: &mut Option<PgConnection>,
    now: DateTime<Utc>,
) -> Result<(Vec<TableFacts>, Vec<StandbyView>), Miss> {
    let db = &config.database;
    let work = async {
        if slot.is_none() {
            let conn = pg::try_connect(
                &db.url,
                "partkeeper refresh",
                REFRESH_LOCK_TIMEOUT,
                PRIMARY_TIMEOUT,
                db.connect_timeout,
                db.pooler,
            )
            .await
            .map_err(Miss::Unreachable)?;
            *slot = Some(conn);
        }
        let conn = slot.as_mut().expect("connected above");
        let read = async {
            // Behind a transaction pooler, one read transaction ([`crate::pooler::Reader`]).
            let mut r =
                pooler::reader(conn, db.pooler, REFRESH_LOCK_TIMEOUT, PRIMARY_TIMEOUT).await?;
            let facts = read_tables(&mut r, config, now).await?;
            r.done().await?;
            Ok(facts)
        };
        read.await.map_err(|e| {
            let f = Failure::from_sqlx(&e, &[&db.url]);
            if pg::is_connection_lost(&e) {
                Miss::Unreachable(f)
            } else {
                Miss::Unread(f)
            }
        })
    };
    let result = match tokio::time::timeout(PRIMARY_TIMEOUT, work).await {
        Ok(r) => r,
        Err(_) => Err(Miss::Unreachable(Failure::timeout(
            "refresh",
            PRIMARY_TIMEOUT,
        ))),
    };
    // Behind a session pooler a connection holds a server connection for its whole life: give
    // it back between refreshes, so that a small pool is left to the heartbeats (which hold
    // theirs) and the maintenance pass.
    if db.pooler == crate::config::Pooler::Session {
        if let Some(conn) = slot.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), conn.close()).await;
        }
    }
    result
}

async fn read_tables(
    conn: &mut PgConnection,
    config: &Config,
    now: DateTime<Utc>,
) -> Result<(Vec<TableFacts>, Vec<StandbyView>), sqlx::Error> {
    let version = pg::server_version(conn).await?;
    let resolved = catalog::read_managed(conn, &config.tables, true).await?;
    // Bounded work per table: the default's rows are counted exactly up to 100,000 and
    // estimated above; periods waiting for `drain` are counted up to default_move_limit + 1.
    let ok: Vec<_> = config
        .tables
        .iter()
        .zip(&resolved)
        .filter_map(|(p, r)| Some((r.as_ref().ok()?, p)))
        .collect();
    let mut healths = crate::default_partition::assess_all(conn, &ok, now, version)
        .await?
        .into_iter();
    let mut tables = Vec::with_capacity(resolved.len());
    for (policy, r) in config.tables.iter().zip(resolved) {
        let label = policy.name.to_string();
        let t = match r {
            Ok(t) => t,
            Err(e) => {
                tables.push(TableFacts {
                    table: label,
                    error: Some(e),
                    partitions: Vec::new(),
                    health: None,
                });
                continue;
            }
        };
        let Some(health) = healths.next() else {
            continue;
        };
        let partitions = t
            .partitions
            .iter()
            .map(|p| (p, false))
            .chain(t.default.iter().map(|p| (p, true)))
            .map(|(p, default)| PartitionFacts {
                name: p.name.to_string(),
                bounds: p.bound_sql.clone(),
                size_bytes: p.size_bytes.unwrap_or(0),
                rows_estimate: p.rows_estimate.max(0.0),
                default,
            })
            .collect();
        tables.push(TableFacts {
            table: label,
            error: None,
            partitions,
            health: Some(health),
        });
    }
    let standbys = replication::standbys(conn).await?;
    Ok((tables, standbys))
}

/// Refreshes every `metrics_refresh` until shutdown; the first one right away.
/// Where a database's refreshes fall within the period: database `index` of `count`.
#[derive(Debug, Clone, Copy)]
pub struct Phase {
    pub index: usize,
    pub count: usize,
}

impl Phase {
    /// The delay of this database's second refresh past one period: databases started together
    /// would otherwise refresh at the same instant forever, a burst of `count` catalog reads on
    /// a shared server every period, where spread over the period they are a steady trickle.
    pub fn offset(&self, period: Duration) -> Duration {
        if self.count <= 1 {
            return Duration::ZERO;
        }
        period.mul_f64(self.index as f64 / self.count as f64)
    }
}

pub async fn run(
    database: Arc<DbState>,
    mut refresher: Refresher,
    phase: Phase,
    mut shutdown: watch::Receiver<bool>,
) {
    let period = database.config.schedule.metrics_refresh;
    let mut every = tokio::time::interval(period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first = true;
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
        if std::mem::take(&mut first) {
            // The first refresh is at once (readiness and metrics need it); the rest keep this
            // database's phase.
            every.reset_at(tokio::time::Instant::now() + period + phase.offset(period));
        }
        let snap = tokio::select! {
            s = refresher.refresh() => s,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        tracing::debug!(
            up = snap.primary_up,
            duration_ms = snap.duration_seconds.unwrap_or(0.0) * 1000.0,
            "refreshed"
        );
        database.set_snapshot(snap);
    }
    refresher.close().await;
}

#[cfg(test)]
mod phase_tests {
    use super::*;

    #[test]
    fn databases_spread_their_refreshes_over_the_period() {
        let period = Duration::from_secs(30);
        let offsets: Vec<Duration> = (0..3)
            .map(|index| Phase { index, count: 3 }.offset(period))
            .collect();
        assert_eq!(
            offsets,
            [0, 10, 20].map(Duration::from_secs),
            "each database a third of the period after the previous"
        );
        assert_eq!(Phase { index: 0, count: 1 }.offset(period), Duration::ZERO);
    }
}

//! Replication lag, measured from both ends.
//!
//! - The primary's view (`pg_stat_replication`): every standby streaming from it, its state,
//!   `replay_lag`, and the WAL bytes sent but not replayed (`sent_lsn - replay_lsn`).
//! - Each configured replica's own view, on its own connection: received minus replayed WAL
//!   bytes, and the age of the last replayed transaction. That age is reported as 0 when replay
//!   has caught up with what was received, because on an idle primary the last transaction is
//!   old and the replica would otherwise look as far behind as the primary is idle.
//!
//! An unreachable replica is a fact to report (`up = false`), never an error; connecting and
//! querying are bounded by [`REPLICA_TIMEOUT`] so a dead replica never stalls a refresh.

use std::time::Duration;

use serde::Serialize;
use sqlx::{Connection, PgConnection};

use crate::config::ReplicaConfig;
use crate::pg;

/// Connect and query deadline for one replica probe. A replica on the same network answers in
/// milliseconds; a dead one must not hold the metrics back for longer than this.
pub const REPLICA_TIMEOUT: Duration = Duration::from_secs(2);

/// A standby as the primary sees it (one row of `pg_stat_replication`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StandbyView {
    /// `application_name` from the standby's `primary_conninfo`.
    pub name: String,
    pub client_addr: Option<String>,
    /// `streaming`, `catchup`, `startup`, `backup`, `stopping`.
    pub state: String,
    /// `replay_lag` in seconds; 0 when the primary shows none (caught up and idle).
    pub lag_seconds: f64,
    /// `sent_lsn - replay_lsn`; `None` when the role may not see the positions (grant
    /// `pg_monitor` to partkeeper's user).
    pub lag_bytes: Option<i64>,
}

/// A configured replica as it sees itself.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplicaView {
    pub name: String,
    /// `host:port/db`, never the password.
    pub target: String,
    pub up: bool,
    /// `false` means the server answers but is not a standby (promoted, or the wrong URL).
    pub in_recovery: Option<bool>,
    pub lag_seconds: Option<f64>,
    pub lag_bytes: Option<i64>,
    /// Why `up` is false, fit to show on `/status` (no URL, no password).
    pub error: Option<String>,
}

/// What a replica's positions say, as read by [`REPLICA_SQL`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplicaPositions {
    pub in_recovery: bool,
    /// `receive - replay` in bytes; `None` when nothing was received by streaming yet.
    pub unreplayed_bytes: Option<i64>,
    /// Seconds since the last replayed transaction committed on the primary.
    pub last_replay_age: Option<f64>,
}

const REPLICA_SQL: &str = "
SELECT pg_is_in_recovery(),
       pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::int8,
       EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8";

const STANDBYS_SQL: &str = "
SELECT COALESCE(application_name, '')::text,
       client_addr::text,
       COALESCE(state, '')::text,
       EXTRACT(EPOCH FROM replay_lag)::float8,
       pg_wal_lsn_diff(sent_lsn, replay_lsn)::int8
  FROM pg_stat_replication
 ORDER BY application_name, pid";

/// Lag seconds and bytes from a replica's positions (pure).
///
/// Bytes: received but not yet replayed, never negative (replay can run ahead of the receive
/// position when WAL came from the archive or from `pg_wal` at start-up). Seconds: 0 once
/// everything received is replayed; otherwise the age of the last replayed transaction, and
/// unknown (`None`) when the replica is behind but has replayed no transaction since it started.
pub fn replica_lag(p: ReplicaPositions) -> (Option<f64>, i64) {
    if !p.in_recovery {
        return (Some(0.0), 0);
    }
    let bytes = p.unreplayed_bytes.unwrap_or(0).max(0);
    let seconds = if bytes == 0 {
        Some(0.0)
    } else {
        p.last_replay_age.map(|s| s.max(0.0))
    };
    (seconds, bytes)
}

/// One `replica` label's worth of metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct LagSeries {
    pub replica: String,
    pub up: bool,
    /// `None` when unknown (the replica did not answer): the series is left out, not faked.
    pub seconds: Option<f64>,
    pub bytes: Option<i64>,
}

/// Which series `/metrics` shows (pure). Every configured replica, measured from its own end.
/// Standbys that the primary reports and that are not configured, measured from the primary's
/// end and named by their `application_name`; a standby whose `application_name` is the name
/// of a configured replica is that replica, and shows once.
pub fn lag_series(replicas: &[ReplicaView], standbys: &[StandbyView]) -> Vec<LagSeries> {
    let mut out: Vec<LagSeries> = replicas
        .iter()
        .map(|r| LagSeries {
            replica: r.name.clone(),
            up: r.up,
            seconds: r.lag_seconds,
            bytes: r.lag_bytes,
        })
        .collect();
    for s in standbys {
        if s.name.is_empty() || out.iter().any(|l| l.replica == s.name) {
            continue;
        }
        out.push(LagSeries {
            replica: s.name.clone(),
            up: s.state == "streaming",
            seconds: Some(s.lag_seconds),
            bytes: s.lag_bytes,
        });
    }
    out
}

/// Every standby streaming from the primary `conn` is connected to.
pub async fn standbys(conn: &mut PgConnection) -> Result<Vec<StandbyView>, sqlx::Error> {
    type Row = (String, Option<String>, String, Option<f64>, Option<i64>);
    let rows: Vec<Row> = sqlx::query_as(STANDBYS_SQL)
        .persistent(false)
        .fetch_all(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(name, client_addr, state, lag, bytes)| StandbyView {
            name,
            client_addr,
            state,
            lag_seconds: lag.unwrap_or(0.0).max(0.0),
            lag_bytes: bytes.map(|b| b.max(0)),
        })
        .collect())
}

/// One configured replica and the connection kept to it between probes.
pub struct ReplicaProbe {
    config: ReplicaConfig,
    conn: Option<PgConnection>,
}

impl ReplicaProbe {
    pub fn new(config: ReplicaConfig) -> ReplicaProbe {
        ReplicaProbe { config, conn: None }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Reads the replica's positions, reconnecting when needed, within [`REPLICA_TIMEOUT`] each
    /// for connecting and for the query.
    pub async fn probe(&mut self) -> ReplicaView {
        let mut view = ReplicaView {
            name: self.config.name.clone(),
            target: self.config.url.host_label(),
            up: false,
            in_recovery: None,
            lag_seconds: None,
            lag_bytes: None,
            error: None,
        };
        match self.positions().await {
            Ok(p) => {
                let (seconds, bytes) = replica_lag(p);
                view.up = true;
                view.in_recovery = Some(p.in_recovery);
                view.lag_seconds = seconds;
                view.lag_bytes = Some(bytes);
                if !p.in_recovery {
                    view.error = Some(
                        "the server answers but is not in recovery: promoted, or the url names a primary"
                            .into(),
                    );
                }
            }
            Err(failure) => {
                self.conn = None;
                tracing::debug!(replica = %self.config.name, target = %view.target, reason = %failure.internal, "replica probe failed");
                view.error = Some(failure.external);
            }
        }
        view
    }

    async fn positions(&mut self) -> Result<ReplicaPositions, pg::Failure> {
        if self.conn.is_none() {
            let conn = pg::try_connect(
                &self.config.url,
                "partkeeper replica probe",
                REPLICA_TIMEOUT,
                REPLICA_TIMEOUT,
                REPLICA_TIMEOUT,
                crate::config::Pooler::None,
            )
            .await?;
            self.conn = Some(conn);
        }
        let conn = self.conn.as_mut().expect("connected above");
        let query = sqlx::query_as::<_, (bool, Option<i64>, Option<f64>)>(REPLICA_SQL);
        match tokio::time::timeout(REPLICA_TIMEOUT, query.fetch_one(conn)).await {
            Ok(Ok((in_recovery, unreplayed_bytes, last_replay_age))) => Ok(ReplicaPositions {
                in_recovery,
                unreplayed_bytes,
                last_replay_age,
            }),
            Ok(Err(e)) => Err(pg::Failure::from_sqlx(&e, &[&self.config.url])),
            Err(_) => Err(pg::Failure::timeout("query", REPLICA_TIMEOUT)),
        }
    }

    /// Closes the connection politely (at shutdown).
    pub async fn close(&mut self) {
        if let Some(conn) = self.conn.take() {
            let _ = tokio::time::timeout(REPLICA_TIMEOUT, conn.close()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(bytes: Option<i64>, age: Option<f64>) -> ReplicaPositions {
        ReplicaPositions {
            in_recovery: true,
            unreplayed_bytes: bytes,
            last_replay_age: age,
        }
    }

    fn standby(name: &str, state: &str) -> StandbyView {
        StandbyView {
            name: name.into(),
            client_addr: None,
            state: state.into(),
            lag_seconds: 1.5,
            lag_bytes: Some(64),
        }
    }

    fn replica(name: &str, up: bool) -> ReplicaView {
        ReplicaView {
            name: name.into(),
            target: "h:5432/db".into(),
            up,
            in_recovery: up.then_some(true),
            lag_seconds: up.then_some(0.0),
            lag_bytes: up.then_some(0),
            error: None,
        }
    }

    #[test]
    fn a_configured_replica_named_like_its_standby_shows_once_from_its_own_end() {
        let series = lag_series(
            &[replica("r1", true)],
            &[standby("r1", "streaming"), standby("other", "catchup")],
        );
        assert_eq!(series.len(), 2);
        assert_eq!(series[0].replica, "r1");
        assert_eq!(series[0].seconds, Some(0.0));
        assert_eq!(series[1].replica, "other");
        assert!(!series[1].up, "catchup is not streaming");
        assert_eq!(series[1].bytes, Some(64));
    }

    #[test]
    fn an_unreachable_replica_is_down_with_unknown_lag() {
        let series = lag_series(&[replica("r1", false)], &[]);
        assert_eq!(
            series,
            vec![LagSeries {
                replica: "r1".into(),
                up: false,
                seconds: None,
                bytes: None
            }]
        );
    }

    #[test]
    fn an_idle_caught_up_replica_has_no_lag_however_old_the_last_transaction() {
        assert_eq!(replica_lag(at(Some(0), Some(86_400.0))), (Some(0.0), 0));
    }

    #[test]
    fn a_replica_behind_reports_the_age_of_its_last_replayed_transaction() {
        assert_eq!(replica_lag(at(Some(8192), Some(3.5))), (Some(3.5), 8192));
    }

    #[test]
    fn replay_ahead_of_receive_is_no_lag() {
        assert_eq!(replica_lag(at(Some(-120), Some(9.0))), (Some(0.0), 0));
    }

    #[test]
    fn a_replica_that_never_streamed_or_was_promoted_shows_no_lag() {
        assert_eq!(replica_lag(at(None, None)), (Some(0.0), 0));
        let promoted = ReplicaPositions {
            in_recovery: false,
            unreplayed_bytes: None,
            last_replay_age: Some(50.0),
        };
        assert_eq!(replica_lag(promoted), (Some(0.0), 0));
    }

    #[test]
    fn behind_without_any_replayed_transaction_is_an_unknown_delay_not_zero() {
        assert_eq!(replica_lag(at(Some(4096), None)), (None, 4096));
    }
}

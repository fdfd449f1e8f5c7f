//! The database facts behind `/metrics` and `/status`, as the daemon's refresh loop
//! (`daemon::refresh`) last read them. Their own module, below both the daemon and
//! `metrics`, so that metrics does not import the daemon that imports it.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::check::TableHealth;
use crate::replication::{self, LagSeries, ReplicaView, StandbyView};

/// What the last refresh found. Immutable: a new refresh makes a new one.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    /// When the last refresh started; `None` before the first one.
    pub refreshed_at: Option<DateTime<Utc>>,
    pub duration_seconds: Option<f64>,
    /// Whether the last refresh reached the primary.
    pub primary_up: bool,
    /// Why it did not (short, safe to show).
    pub primary_error: Option<String>,
    /// Why the primary answered but the tables could not be read this time (a lock held for
    /// longer than the refresh's lock_timeout, say): `tables` are from `tables_read_at`.
    pub tables_error: Option<String>,
    /// When `tables` and `standbys` were read: the last refresh that reached the primary. While
    /// the primary is unreachable they keep the values read then.
    pub tables_read_at: Option<DateTime<Utc>>,
    pub tables: Vec<TableFacts>,
    pub standbys: Vec<StandbyView>,
    pub replicas: Vec<ReplicaView>,
}

impl Snapshot {
    /// The `replica` series of `/metrics` (see [`replication::lag_series`]).
    pub fn lag_series(&self) -> Vec<LagSeries> {
        replication::lag_series(&self.replicas, &self.standbys)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TableFacts {
    /// `schema.table`, the metric label.
    pub table: String,
    /// Why the table could not be read against its policy (missing, not partitioned, ...).
    pub error: Option<String>,
    /// Range partitions by lower bound, then the default partition.
    pub partitions: Vec<PartitionFacts>,
    pub health: Option<TableHealth>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PartitionFacts {
    /// `schema.partition`, the metric label.
    pub name: String,
    pub bounds: String,
    pub size_bytes: i64,
    /// `reltuples`, 0 when the partition was never analyzed.
    pub rows_estimate: f64,
    pub default: bool,
}

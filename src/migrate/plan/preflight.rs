//! What the judgements of `plan/` share: the options they judge with and the outcome they fill.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::bounds::KeyType;
use crate::ident::{derived_name, QualifiedName};
use crate::migrate::inventory::Inventory;
use crate::migrate::{Blueprint, Mode};

/// More partitions than this for one table means an outlier key (a typo'd year 2205) rather
/// than real data; the user should look before thousands of tables are made.
pub const MAX_PARTITIONS: usize = 2000;

/// Copy throughput used for the time estimate, in bytes of table + indexes per second, measured
/// by `tests/integration/benchmarks/migrate.rs` (10 million rows, 1.6 GB, 2 cores): online 68–82 s
/// (row locks, sync triggers, indexes kept up during the copy, ANALYZE), offline 24–28 s
/// (indexes built once after the load). Rounded down, so the estimate errs on the long side.
pub const ONLINE_BYTES_PER_SEC: f64 = 20.0e6;
pub const OFFLINE_BYTES_PER_SEC: f64 = 55.0e6;

#[derive(Debug, Clone)]
pub struct Options {
    pub fill: Option<String>,
    pub mode: Mode,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedPartition {
    pub name: QualifiedName,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Preflight {
    /// Each says what is wrong and what to do about it. Any blocker: nothing is changed.
    pub blockers: Vec<String>,
    /// What the conversion changes or cannot carry over by itself.
    pub warnings: Vec<String>,
    /// What will be carried over, one line per object.
    pub carried: Vec<String>,
    /// Kinds of dependent object that were looked for and not found.
    pub none_found: Vec<&'static str>,
    pub key_type: Option<KeyType>,
    pub partitions: Vec<PlannedPartition>,
    pub blueprint: Option<Blueprint>,
    pub estimate_secs: f64,
}

impl Preflight {
    pub fn blocked(&self) -> bool {
        !self.blockers.is_empty()
    }
}

/// Names the migration would create, for the collision check (read before judging).
pub fn names_to_create(table: &QualifiedName, inv: &Inventory) -> Vec<QualifiedName> {
    let mut names = vec![
        table.sibling(partitioned_name(table)),
        table.sibling(derived_name(&table.name, "backup")),
    ];
    for i in &inv.indexes {
        names.push(table.sibling(derived_name(&i.name, "partitioned")));
        names.push(table.sibling(derived_name(&i.name, "backup")));
    }
    names
}

pub(super) fn partitioned_name(table: &QualifiedName) -> String {
    derived_name(&table.name, "partitioned")
}

//! The daemon behind `partkeeper run`: scheduled maintenance of every configured database,
//! metrics and health over HTTP.
//!
//! # Design
//!
//! Each database ([`state::DbState`]) has four tasks that share its state and never call each
//! other, nor touch another database's state:
//!
//! - **leader** ([`leader`]): a dedicated session that holds the advisory lock `LEADER_LOCK`
//!   while this instance leads that database (advisory locks are per database, so leadership is
//!   per database and may be split across instances). Its heartbeat, every second, is also the
//!   readiness probe of the primary. Losing the session is losing leadership; it reconnects
//!   with backoff.
//! - **schedule** ([`schedule`]): the database's cron schedule, with crontab(5)'s rules
//!   ([`crate::cron`]). At each run time (and when leadership is gained, with `run_on_start`)
//!   the leader runs one maintenance pass on a connection of its own. The pass is a reconciler:
//!   it re-reads the catalog and does what the plan says, so a failed pass needs no recovery,
//!   only the next tick.
//! - **refresh** ([`refresh`]): every `metrics_refresh` it reads the catalog, sizes,
//!   default-row counts and replication state into an immutable snapshot swapped behind an
//!   `Arc`.
//! - **run on leadership** ([`lifecycle`]): the `run_on_start` pass.
//!
//! One **http** server ([`http`]) and one metrics registry ([`crate::metrics`]) serve the
//! process ([`state::Daemon`]); they answer from the databases' state and latest snapshots
//! only. A scrape never queries a database, and a dead database never makes a probe hang.
//!
//! Every database call is bounded (connect timeouts, heartbeat and refresh deadlines), and no
//! lock is held across databases, so a database that is down, slow or blocked is reported and
//! never stalls another database, or makes the process exit.
//!
//! Shutdown (SIGTERM/SIGINT), for every database at once: stop scheduling and refreshing, give
//! a running pass [`PASS_GRACE`] to finish, then cancel its statement (its transaction rolls
//! back), give the leader lock back; then stop the HTTP server. The whole takes well under
//! ten seconds.

pub mod basic_auth;
pub mod http;
pub mod leader;
pub mod lifecycle;
pub mod probes;
pub mod refresh;
pub mod schedule;
pub mod serve;
pub mod state;
pub mod status;
pub mod summary;
pub mod web_config;

pub use lifecycle::{run, run_secured, CANCEL_GRACE, PASS_GRACE, SHUTDOWN_BUDGET};
pub use state::{Daemon, DbState, PrimaryProbe};
pub use summary::{ActionOutcome, PassSummary, TableOutcome};

//! One maintenance pass: take the advisory lock, read the catalog, plan each table, check the new
//! names, run the actions. Every table gets its own report, so one table's failure never stops the
//! others. The outcome is data; callers (CLI, daemon) decide what to print, log and count.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;

use crate::catalog::{self, ManagedTable};
use crate::config::{DatabaseConfig, TablePolicy};
use crate::ddl::{self, Step};
use crate::default_partition;
use crate::error::Error;
use crate::execute;
use crate::ident::QualifiedName;
use crate::plan::{self, Action};

/// How long a second instance waits for the maintenance lock before saying another one works.
pub const LOCK_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Serialize)]
pub struct ActionReport {
    pub action: Action,
    /// `None` on success.
    pub error: Option<String>,
    pub duration_ms: u64,
    pub lock_waits: u32,
    pub rows_moved: u64,
    /// The hooks run around the action (with `--dry-run`, those that would run).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<String>,
    /// The SQL (with `--dry-run`, what would run).
    #[serde(skip)]
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TableReport {
    pub table: QualifiedName,
    pub actions: Vec<ActionReport>,
    pub notes: Vec<String>,
    /// A failure that stopped this table before or between actions.
    pub error: Option<String>,
    pub duration_ms: u64,
}

impl TableReport {
    pub fn succeeded(&self) -> bool {
        self.error.is_none() && self.actions.iter().all(|a| a.error.is_none())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PassReport {
    pub tables: Vec<TableReport>,
    /// Set when another instance held the maintenance lock, so this pass did nothing.
    pub skipped: Option<String>,
    pub dry_run: bool,
    pub duration_ms: u64,
}

impl PassReport {
    pub fn succeeded(&self) -> bool {
        self.tables.iter().all(TableReport::succeeded)
    }
}

pub struct Options {
    pub now: DateTime<Utc>,
    pub dry_run: bool,
    /// CLI: a table that does not match its configuration stops the pass before any change
    /// (exit 2). Daemon: it becomes that table's failure and the others go on.
    pub strict: bool,
    pub lock_wait: Duration,
}

/// Runs one pass on `conn` (which holds the advisory lock for the duration of the pass).
pub async fn run_pass(
    conn: &mut PgConnection,
    db: &DatabaseConfig,
    policies: &[TablePolicy],
    opts: &Options,
) -> Result<PassReport, Error> {
    let started = Instant::now();
    if db.pooler == crate::config::Pooler::Transaction && !opts.dry_run {
        return pass_under_lease(conn, db, policies, opts, started).await;
    }
    let deadline = crate::pg::reply_deadline(db);
    if !opts.dry_run
        && !crate::pg::answered(
            deadline + opts.lock_wait,
            execute::acquire_maintenance_lock(conn, opts.lock_wait),
        )
        .await?
    {
        return Ok(skipped(started));
    }
    let mut lost = false;
    let result = pass_locked(conn, db, policies, opts, &mut lost).await;
    // A lost connection took the lock with it; a stalled one would only make us wait again.
    if !opts.dry_run && !lost {
        let _ = crate::pg::answered(deadline, execute::release_maintenance_lock(conn)).await;
    }
    let tables = result?;
    Ok(PassReport {
        tables,
        skipped: None,
        dry_run: opts.dry_run,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

/// The report of a pass that found another instance maintaining.
fn skipped(started: Instant) -> PassReport {
    PassReport {
        tables: Vec::new(),
        skipped: Some(
            "another partkeeper instance is maintaining this database right now; nothing done"
                .into(),
        ),
        dry_run: false,
        duration_ms: started.elapsed().as_millis() as u64,
    }
}

/// A one-shot maintenance pass behind a transaction pooler: under the daemon's lease when it
/// runs one ([`crate::lease::FENCE`] already set), else under a lease of its own, taken within `lock_wait`
/// and given back at the end.
async fn pass_under_lease(
    conn: &mut PgConnection,
    db: &DatabaseConfig,
    policies: &[TablePolicy],
    opts: &Options,
    started: Instant,
) -> Result<PassReport, Error> {
    use crate::lease::{self, Held, LeaseError, COMMAND_TTL, FENCE};
    let deadline = crate::pg::reply_deadline(db);
    let report = |tables| PassReport {
        tables,
        skipped: None,
        dry_run: false,
        duration_ms: started.elapsed().as_millis() as u64,
    };
    if FENCE.try_with(|_| ()).is_ok() {
        let mut lost = false;
        return Ok(report(
            pass_locked(conn, db, policies, opts, &mut lost).await?,
        ));
    }
    match crate::pg::answered(deadline, async { Ok(lease::ensure_table(conn).await) }).await? {
        Ok(()) => {}
        Err(LeaseError::Sql(e)) => return Err(e.into()),
        Err(e @ LeaseError::Create(_)) => return Err(Error::Failed(e.to_string())),
    }
    let holder = lease::new_holder();
    let give_up = std::time::Instant::now() + opts.lock_wait;
    let token = loop {
        match crate::pg::answered(deadline, lease::try_take(conn, &holder, COMMAND_TTL)).await? {
            Some(token) => break token,
            None if std::time::Instant::now() >= give_up => return Ok(skipped(started)),
            None => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let held = Held {
        holder,
        token,
        renew: Some(COMMAND_TTL),
    };
    let mut lost = false;
    let result = FENCE
        .scope(
            held.clone(),
            pass_locked(conn, db, policies, opts, &mut lost),
        )
        .await;
    if !lost {
        let _ = crate::pg::answered(deadline, lease::release(conn, &held)).await;
    }
    Ok(report(result?))
}

async fn pass_locked(
    conn: &mut PgConnection,
    db: &DatabaseConfig,
    policies: &[TablePolicy],
    opts: &Options,
    connection_lost: &mut bool,
) -> Result<Vec<TableReport>, Error> {
    let deadline = crate::pg::reply_deadline(db);
    let mut lost = |e: sqlx::Error| {
        *connection_lost = crate::pg::is_connection_lost(&e);
        Error::from(e)
    };
    // Behind a transaction pooler the reads share one transaction ([`crate::pooler::Reader`]).
    let mut reader = crate::pg::answered(deadline, crate::pooler::db_reader(conn, db))
        .await
        .map_err(&mut lost)?;
    let version = crate::pg::answered(deadline, crate::pg::server_version(&mut reader))
        .await
        .map_err(&mut lost)?;
    let mut resolved = crate::pg::answered(
        deadline,
        catalog::read_managed(&mut reader, policies, false),
    )
    .await
    .map_err(&mut lost)?;
    let extras = crate::pg::answered(
        deadline,
        crate::lifecycle_pass::read_all(&mut reader, policies, &mut resolved),
    )
    .await
    .map_err(&mut lost)?;
    crate::pg::answered(deadline, reader.done())
        .await
        .map_err(&mut lost)?;
    let version = crate::pooler::planning_version(version, db.pooler);
    if opts.strict {
        let problems: Vec<String> = resolved
            .iter()
            .filter_map(|r| r.as_ref().err().cloned())
            .collect();
        if !problems.is_empty() {
            return Err(Error::Mismatch(format!(
                "the configuration does not match the database (nothing was changed):\n  - {}",
                problems.join("\n  - ")
            )));
        }
    }
    let mut reports = Vec::new();
    for ((policy, table), extras) in policies.iter().zip(resolved).zip(&extras) {
        let started = Instant::now();
        let mut report = match table {
            // A lost (or stalled) connection fails every later table too, each after its own
            // wait: say so once instead.
            _ if *connection_lost => TableReport {
                table: policy.name.clone(),
                actions: Vec::new(),
                notes: Vec::new(),
                error: Some("not attempted: the connection to PostgreSQL was lost earlier in this pass; the next run will do it".into()),
                duration_ms: 0,
            },
            Ok(table) => {
                let (report, lost) =
                    maintain_table(conn, db, &table, policy, extras, version, opts).await;
                *connection_lost = lost;
                report
            }
            Err(e) => TableReport {
                table: policy.name.clone(),
                actions: Vec::new(),
                notes: Vec::new(),
                error: Some(e),
                duration_ms: 0,
            },
        };
        report.duration_ms = started.elapsed().as_millis() as u64;
        reports.push(report);
    }
    Ok(reports)
}

/// The default partition's triage ([`default_partition::triage`]) as one step of the
/// transaction runner: its facts, and `planned` with the creates whose period has too many rows
/// in the default taken out.
async fn read_default(
    conn: &mut PgConnection,
    db: &DatabaseConfig,
    table: &ManagedTable,
    policy: &TablePolicy,
    planned: &[Action],
) -> Result<(default_partition::Triage, Vec<Action>), crate::tx::TxError> {
    use futures::FutureExt;
    // Shared with each attempt's future, which owns what it uses (see `tx::Runner::run_send`).
    let shared = Arc::new((
        table.clone(),
        db.clone(),
        planned.to_vec(),
        policy.default_move_limit,
    ));
    let runner = crate::tx::Runner::step(
        format!("reading the default partition of {}", table.name),
        db,
    );
    let done = runner
        .run_send(&mut *conn, move |conn, at| {
            let shared = Arc::clone(&shared);
            async move {
                let (table, db, planned, limit) = &*shared;
                let mut actions = planned.clone();
                crate::pg::answered(at.deadline, async {
                    // Behind a transaction pooler the session settings hold only per transaction.
                    if db.pooler == crate::config::Pooler::Transaction {
                        crate::pg::set_session(conn, db.lock_timeout, db.statement_timeout, true)
                            .await?;
                    }
                    default_partition::triage(conn, table, *limit, &mut actions).await
                })
                .await
                .map(|t| (t, actions))
            }
            .boxed()
        })
        .await?;
    Ok(done.value)
}

/// One table's actions; the flag says the connection was lost, so the pass must stop.
async fn maintain_table(
    conn: &mut PgConnection,
    db: &DatabaseConfig,
    table: &ManagedTable,
    policy: &TablePolicy,
    extras: &crate::lifecycle_pass::Extras,
    version: i32,
    opts: &Options,
) -> (TableReport, bool) {
    let deadline = crate::pg::reply_deadline(db);
    let mut plan = plan::plan(table, policy, opts.now, version);
    let mut extras = extras.clone();
    let extended = crate::pg::answered(deadline, async {
        // Behind a transaction pooler, reads in one transaction ([`crate::pooler::Reader`]).
        let mut reader = crate::pooler::db_reader(conn, db).await?;
        let problem = crate::lifecycle_pass::extend_plan(
            &mut reader,
            table,
            &mut extras,
            &mut plan,
            db.pooler,
        )
        .await?;
        reader.done().await?;
        Ok::<_, sqlx::Error>(problem)
    })
    .await;
    let mut report = TableReport {
        table: table.name.clone(),
        actions: Vec::new(),
        notes: plan.notes.clone(),
        error: None,
        duration_ms: 0,
    };
    match extended {
        Ok(None) => {}
        Ok(Some(problem)) => {
            report.error = Some(problem);
            return (report, false);
        }
        Err(e) => {
            report.error = Some(crate::pg::describe(&e));
            return (report, crate::pg::is_connection_lost(&e));
        }
    }
    // Next to a default partition: periods with too many rows there wait for `drain`, big
    // defaults are attached online, helpers of an interrupted attach are resumed or removed.
    // Reading the default takes a share lock on it: the read is a step of the transaction
    // runner, retried under a lock storm like any step, and a last failure says which lock it
    // could not get.
    let triage = match read_default(conn, db, table, policy, &plan.actions).await {
        Ok((triage, actions)) => {
            plan.actions = actions;
            triage
        }
        Err(e) => {
            report.error = Some(match &e {
                crate::tx::TxError::LockTimeout { attempts, .. } => {
                    execute::ExecError::LockTimeout {
                        statement: format!(
                            "SELECT ... FROM {} (its rows of the periods to create, its size and helpers)",
                            table
                                .default
                                .as_ref()
                                .map(|d| d.name.quoted())
                                .unwrap_or_default()
                        ),
                        attempts: *attempts,
                        lock_timeout: db.lock_timeout,
                    }
                    .to_string()
                }
                _ => e.to_string(),
            });
            return (report, crate::pg::is_connection_lost(e.sqlx()));
        }
    };
    for (m, w) in triage
        .messages(table, policy.default_move_limit)
        .into_iter()
        .zip(&triage.waiting)
    {
        tracing::warn!(table = %table.name, partition = %w.0, rows_at_least = w.3, limit = policy.default_move_limit, "rows of a new period wait in the default partition; left for `partkeeper drain`");
        report.notes.push(m);
    }
    let cleanup = default_partition::cleanup_steps(table, &triage.facts);
    if !cleanup.is_empty() {
        let what = cleanup.join("; ");
        if opts.dry_run {
            report.notes.push(format!(
                "would remove helpers left by an interrupted attach: {what}"
            ));
        } else {
            let step = Step {
                transactional: true,
                statements: cleanup,
            };
            match execute::run_steps(conn, db, std::slice::from_ref(&step)).await {
                Ok(_) => {
                    tracing::info!(table = %table.name, removed = %what, "removed helpers left by an interrupted attach");
                    report.notes.push(format!(
                        "removed helpers left by an interrupted attach: {what}"
                    ));
                }
                Err(e) => {
                    report.error = Some(format!(
                        "cannot remove helpers left by an interrupted attach: {e}"
                    ));
                    return (
                        report,
                        matches!(e, execute::ExecError::ConnectionLost { .. }),
                    );
                }
            }
        }
    }
    if plan.actions.is_empty() {
        return (report, false);
    }
    // Name collisions are found before any DDL runs.
    let new_names: Vec<QualifiedName> = plan
        .actions
        .iter()
        .filter_map(|a| a.creates().cloned())
        .collect();
    let reads = async {
        let mut reader = crate::pooler::db_reader(conn, db).await?;
        // An interrupted attach's own table is resumed, not a collision.
        let taken: Vec<QualifiedName> = catalog::existing_relations(&mut reader, &new_names)
            .await?
            .into_iter()
            .filter(|t| !triage.facts.resumes(t))
            .collect();
        let template = if new_names.is_empty() || !taken.is_empty() {
            ddl::Template::default()
        } else {
            match execute::read_template(&mut reader, table).await {
                Ok(t) => t,
                Err(e) => return Ok((taken, Err(e))),
            }
        };
        reader.done().await?;
        Ok::<_, sqlx::Error>((taken, Ok(template)))
    };
    let template = match crate::pg::answered(deadline, reads).await {
        Ok((taken, _)) if !taken.is_empty() => {
            report.error = Some(format!(
                "cannot create {}: a relation with that name already exists but is not a partition covering that range; rename or drop it, or attach it yourself",
                taken.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            ));
            return (report, false);
        }
        Ok((_, Ok(template))) => template,
        Ok((_, Err(e))) => {
            report.error = Some(format!(
                "cannot read {}: {}",
                table.name,
                crate::pg::describe(&e)
            ));
            return (report, crate::pg::is_connection_lost(&e));
        }
        Err(e) => {
            report.error = Some(crate::pg::describe(&e));
            return (report, crate::pg::is_connection_lost(&e));
        }
    };
    let mut template = template;
    if let Some(spec) = &extras.template {
        template.reloptions =
            crate::template::merge_reloptions(&template.reloptions, &spec.reloptions);
        template.template = Some(spec.clone());
    }
    let total = plan.actions.len();
    let mut hook_failed = 0;
    for (done, action) in plan.actions.into_iter().enumerate() {
        let started = Instant::now();
        if hook_failed > 0 && crate::lifecycle_pass::is_expiry(&action) {
            hook_failed += 1;
            continue;
        }
        let rendered = match (&action, triage.route_of(action.partition())) {
            (
                Action::Create {
                    partition,
                    from,
                    to,
                },
                default_partition::Route::Online { resume },
            ) => default_partition::online_steps(
                table, &template, partition, *from, *to, resume, None,
            )
            .map(|s| s.for_pass(triage.facts.exclude_state(partition))),
            _ => ddl::render(&action, table, &template),
        };
        let steps = rendered.as_ref().cloned().unwrap_or_default();
        let hook = crate::lifecycle_pass::hook_for(&action, table, policy, db);
        let mut locked_out = false;
        let mut lost = false;
        let (error, lock_waits, rows_moved) = if let Err(e) = &rendered {
            (Some(format!("cannot render the SQL: {e}")), 0, 0)
        } else if opts.dry_run {
            (None, 0, 0)
        } else if let Err(refused) =
            crate::lifecycle_pass::before(conn, &action, &extras, hook.as_ref(), db).await
        {
            if refused.hook_failed {
                hook_failed = 1;
            }
            (Some(refused.message), 0, 0)
        } else {
            match execute::run_steps(conn, db, &steps).await {
                Ok(o) => match crate::lifecycle_pass::after(&action, hook.as_ref(), db).await {
                    Ok(()) => (None, o.lock_waits, o.rows_moved),
                    Err(e) => (Some(e), o.lock_waits, o.rows_moved),
                },
                Err(e) => {
                    locked_out = matches!(e, execute::ExecError::LockTimeout { .. });
                    lost = matches!(e, execute::ExecError::ConnectionLost { .. });
                    (Some(e.to_string()), 0, 0)
                }
            }
        };
        let duration_ms = started.elapsed().as_millis() as u64;
        if !opts.dry_run {
            match &error {
                None => {
                    tracing::info!(table = %table.name, partition = %action.partition(), action = action.verb(), duration_ms, lock_waits, rows_moved, "done")
                }
                Some(e) => {
                    tracing::warn!(table = %table.name, partition = %action.partition(), action = action.verb(), duration_ms, error = %e, "failed")
                }
            }
        }
        report.actions.push(ActionReport {
            action,
            error,
            duration_ms,
            lock_waits,
            rows_moved,
            hooks: hook.iter().map(|h| h.describe()).collect(),
            steps,
        });
        // The other actions of this table need the same locks: waiting for each in turn would
        // only make the pass longer. The next pass does them.
        let left = total - done - 1;
        if locked_out && left > 0 {
            report.error = Some(format!(
                "{left} more action(s) left for the next run after the lock timeout"
            ));
            break;
        }
        if lost {
            if left > 0 {
                report.error = Some(format!(
                    "{left} more action(s) left for the next run: the connection is gone"
                ));
            }
            return (report, true);
        }
    }
    if hook_failed > 1 {
        report.error = Some(format!(
            "{} more expiry action(s) left for the next run after the before_expire hook failed",
            hook_failed - 1
        ));
    }
    (report, false)
}

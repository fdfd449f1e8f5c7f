//! `migrate run`, step by step: preflight, build, copy, give out-of-range rows their partitions,
//! swap, ANALYZE — each step resumable from the state row. Also `--offline`: the same build and
//! swap around one locked `INSERT ... SELECT`, all in one transaction.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::build::{self, Keys};
use super::error::MigrateError;
use super::inventory::{self, DataFacts, Inventory};
use super::plan::{self, Preflight};
use super::progress::Progress;
use super::state::{self, Phase, State};
use super::{copy, fill, indexes, swap, sync, Blueprint, Mode};
use crate::bounds::KeyType;
use crate::catalog;
use crate::config::{DatabaseConfig, TablePolicy};
use crate::coverage;
use crate::ddl;
use crate::error::Error;
use crate::ident::derived_name;
use crate::pg;
use crate::plan::{Action, Clock};
use crate::tx;

/// What `plan` and `run` know before changing anything.
pub struct Prepared {
    pub inventory: Inventory,
    pub facts: Option<DataFacts>,
    pub preflight: Preflight,
}

#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub resumed: bool,
    pub rows_copied: i64,
    pub rows_filled: i64,
    pub partitions: usize,
    pub extra_partitions: usize,
    pub copy_secs: f64,
    /// Building the non-unique indexes per partition after the copy (online).
    pub index_secs: f64,
    pub total_secs: f64,
    pub lock_held: Duration,
    pub lock_waits: u32,
    pub copy_retries: u32,
}

pub enum Outcome {
    /// The table is partitioned and no migration is recorded.
    AlreadyPartitioned,
    /// The recorded migration has swapped already.
    AlreadySwapped,
    /// A rollback swapped back but did not finish cleaning up.
    RolledBack,
    Blocked(Box<Prepared>),
    Migrated(Summary),
}

/// Reads the inventory and the data facts and judges them. Changes nothing.
pub async fn prepare(
    conn: &mut PgConnection,
    db: &DatabaseConfig,
    policy: &TablePolicy,
    opts: &plan::Options,
) -> Result<Prepared, Error> {
    if let Some(fill) = &opts.fill {
        fill::check_shape(fill)?;
    }
    // Catalog reads (cheap) under one deadline each, the row scans each under their own.
    let deadline = pg::reply_deadline(db);
    let inv = pg::answered(
        deadline,
        inventory::read(conn, &policy.name, &policy.column),
    )
    .await?;
    if !inv.exists {
        return Err(Error::Mismatch(format!(
            "table {} does not exist; check tables[].name (and the database in database.url)",
            policy.name
        )));
    }
    let key_type = inv.column(&policy.column).and_then(|c| {
        let column = KeyType::from_pg_type(&c.type_name)?;
        Some(catalog::key_for_policy(column, &c.type_name, policy).unwrap_or(column))
    });
    let mut facts = None;
    if let (Some(kt), "r") = (key_type, inv.relkind.as_str()) {
        if let Some(fill) = &opts.fill {
            fill::check_on_server(conn, deadline, &policy.name, fill, kt.sql_name()).await?;
        }
        facts = Some(
            inventory::read_data(
                conn,
                deadline,
                &inv,
                &policy.column,
                kt,
                opts.fill.as_deref(),
            )
            .await?,
        );
    }
    let first = plan::judge(&inv, facts.as_ref(), policy, opts, &[]);
    let mut wanted = plan::names_to_create(&policy.name, &inv);
    wanted.extend(first.partitions.iter().map(|p| p.name.clone()));
    wanted.push(
        policy
            .name
            .sibling(derived_name(&policy.name.name, "default")),
    );
    let taken = pg::answered(deadline, catalog::existing_relations(conn, &wanted)).await?;
    let preflight = plan::judge(&inv, facts.as_ref(), policy, opts, &taken);
    Ok(Prepared {
        inventory: inv,
        facts,
        preflight,
    })
}

pub struct Options {
    pub mode: Mode,
    pub batch_size: i64,
    pub fill: Option<String>,
    pub now: DateTime<Utc>,
}

pub async fn run(
    conn: &mut PgConnection,
    db: &DatabaseConfig,
    policy: &TablePolicy,
    opts: &Options,
) -> Result<Outcome, Error> {
    let started = Instant::now();
    let deadline = pg::reply_deadline(db);
    let existing = pg::answered(deadline, state::load(conn, &policy.name)).await?;
    let mut summary = Summary::default();
    let state = match existing {
        Some(s) if s.phase == Phase::Swapped => {
            if !s.analyzed {
                analyze(conn, deadline, &s.blueprint).await?;
            }
            return Ok(Outcome::AlreadySwapped);
        }
        Some(s) if s.phase == Phase::RolledBack => return Ok(Outcome::RolledBack),
        Some(s) => {
            if opts.mode == Mode::Offline {
                tracing::warn!(
                    "an online migration of {} is in progress; it continues online",
                    policy.name
                );
            }
            summary.resumed = true;
            s
        }
        None => {
            let prepared = prepare(
                conn,
                db,
                policy,
                &plan::Options {
                    fill: opts.fill.clone(),
                    mode: opts.mode,
                    now: opts.now,
                },
            )
            .await?;
            if prepared.inventory.relkind == "p" && prepared.preflight.blocked() {
                return Ok(Outcome::AlreadyPartitioned);
            }
            if prepared.preflight.blocked() {
                return Ok(Outcome::Blocked(Box::new(prepared)));
            }
            let Some(bp) = prepared.preflight.blueprint.clone() else {
                return Ok(Outcome::Blocked(Box::new(prepared)));
            };
            summary.partitions = prepared.preflight.partitions.len();
            if opts.mode == Mode::Offline {
                return offline(conn, db, policy, &prepared, &bp, summary, started).await;
            }
            build_online(conn, db, &prepared, &bp).await?;
            pg::answered(deadline, state::load(conn, &policy.name))
                .await?
                .ok_or(MigrateError::StateVanished)?
        }
    };
    let bp = state.blueprint.clone();
    let key_type = KeyType::from_pg_type(&bp.key_sql_type)
        .map(|k| catalog::key_for_policy(k, &bp.key_sql_type, policy).unwrap_or(k))
        .ok_or_else(|| MigrateError::UnknownKeyType(bp.key_sql_type.clone()))?;

    if !state.copy_done {
        let copy_started = Instant::now();
        let total: f64 = pg::answered(
            deadline,
            sqlx::query_scalar(
                "SELECT GREATEST(reltuples, 0)::float8 FROM pg_class WHERE oid = to_regclass($1)",
            )
            .bind(bp.original.quoted())
            .fetch_one(&mut *conn),
        )
        .await?;
        let mut progress = Progress::new(total as u64, state.rows_copied.max(0) as u64);
        let out = copy::run(
            conn,
            db,
            &bp,
            state.last_pk.clone(),
            opts.batch_size,
            &mut progress,
        )
        .await?;
        progress.finish();
        pg::answered(deadline, state::mark_copy_done(conn, &bp.original)).await?;
        summary.copy_secs = copy_started.elapsed().as_secs_f64();
        summary.copy_retries = out.retries;
    }
    // Copies of rows deleted while the copy read them go (idempotent on resume).
    copy::settle(conn, db, &bp).await?;
    // The non-unique indexes, per partition, now that the rows are in (idempotent on resume).
    let built = indexes::build_after_copy(conn, db, &bp).await?;
    summary.index_secs = built.secs;
    let after = pg::answered(deadline, state::load(conn, &bp.original)).await?;
    if let Some(s) = &after {
        summary.rows_copied = s.rows_copied;
        summary.rows_filled = s.rows_filled;
    }

    // The swap reads the original's grants, policies and RLS as they are now.
    let inv = pg::answered(deadline, inventory::read(conn, &bp.original, &bp.key)).await?;
    loop {
        match swap::online(conn, db, &inv, &bp).await? {
            swap::Attempt::Done(out) => {
                summary.lock_held = out.lock_held;
                summary.lock_waits = out.lock_waits;
                break;
            }
            swap::Attempt::DefaultHasRows => {
                summary.extra_partitions += cover_default_rows(
                    conn,
                    db,
                    policy,
                    &inv,
                    &bp,
                    key_type,
                    Within::OwnTransactions,
                )
                .await?;
            }
        }
    }
    tracing::info!(table = %bp.original, lock_held_ms = summary.lock_held.as_millis() as u64, "swapped");
    analyze(conn, deadline, &bp).await?;
    summary.total_secs = started.elapsed().as_secs_f64();
    Ok(Outcome::Migrated(summary))
}

/// The new parent (keys as `keys` says) and its partitions, as both modes build them.
fn table_statements(prepared: &Prepared, bp: &Blueprint, keys: Keys) -> Result<Vec<String>, Error> {
    let inv = &prepared.inventory;
    let key_type = prepared.preflight.key_type.ok_or(MigrateError::NoKeyType)?;
    let mut statements = build::parent_statements(inv, bp, keys);
    let partitions = &prepared.preflight.partitions;
    statements.extend(build::partition_statements(inv, bp, key_type, partitions)?);
    Ok(statements)
}

/// The build transaction: new table, partitions, the non-unique indexes on the parent only
/// (built per partition after the copy), sync functions, state row, and last the forward
/// triggers (the only statement that waits for the application's writers), then commit.
async fn build_online(
    conn: &mut PgConnection,
    db: &DatabaseConfig,
    prepared: &Prepared,
    bp: &Blueprint,
) -> Result<(), Error> {
    let inv = &prepared.inventory;
    let mut statements = table_statements(prepared, bp, Keys::UniqueWithTable)?;
    statements.extend(build::parent_only_indexes(inv, bp));
    statements.extend(build::gone_table(bp));
    statements.push(sync::reverse_function(bp));
    // Through the extended protocol (one statement): its body carries the fill expression.
    let forward = sync::forward_function(bp);
    let triggers = sync::forward_triggers(bp, &bp.original);
    // The server ends a stalled session of ours that holds the original's lock
    // (idle_in_transaction_session_timeout, about lock_timeout).
    let step = format!(
        "building {} (nothing is changed unless it completes)",
        bp.partitioned
    );
    tx::Runner::step(step, db)
        .run(conn, async |c, at| {
            pg::answered(at.deadline, state::ensure_schema(c)).await?;
            tx::exec_all(c, at, &statements).await?;
            tx::exec_one(c, at, &forward).await?;
            pg::answered(
                at.deadline,
                state::insert(c, Phase::Copying, Mode::Online, bp),
            )
            .await?;
            tx::exec_all(c, at, &triggers).await
        })
        .await
        .map_err(|e| {
            if e.is_lock_timeout() {
                MigrateError::BuildLocked {
                    table: bp.original.clone(),
                    source: Box::new(e),
                }
            } else {
                MigrateError::Build {
                    table: bp.partitioned.clone(),
                    source: Box::new(e),
                }
            }
        })?;
    tracing::info!(table = %bp.original, partitions = prepared.preflight.partitions.len(), "built {}", bp.partitioned);
    Ok(())
}

/// Gives the rows that landed in the default partition partitions of their own (moving them as
/// maintenance does). `Within::CallersTransaction` runs the statements in the caller's
/// transaction (offline); `Within::OwnTransactions` goes through the executor, one partition per
/// transaction with lock-timeout retries (online). Returns the number of partitions created.
async fn cover_default_rows(
    conn: &mut PgConnection,
    db: &DatabaseConfig,
    policy: &TablePolicy,
    inv: &Inventory,
    bp: &Blueprint,
    key_type: KeyType,
    within: Within,
) -> Result<usize, Error> {
    let integer_key = matches!(key_type, KeyType::Int(_));
    let epoch = crate::keys::seconds_sql(key_type, "{}");
    let k = bp.key_quoted();
    let deadline = pg::reply_deadline(db);
    let (lo, hi): (Option<f64>, Option<f64>) = pg::answered(
        deadline,
        sqlx::query_as(&format!(
            "SELECT {}, {} FROM {}",
            epoch.replace("{}", &crate::keys::min_max_sql(key_type, &k).0),
            epoch.replace("{}", &crate::keys::min_max_sql(key_type, &k).1),
            bp.default_partition.quoted()
        ))
        .fetch_one(&mut *conn),
    )
    .await?;
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return Ok(0);
    };
    let mut scoped = policy.clone();
    scoped.name = bp.partitioned.clone();
    let rows = pg::answered(
        deadline,
        catalog::read(conn, &[(bp.partitioned.clone(), bp.key.clone())], false),
    )
    .await?;
    let table = catalog::resolve(&rows[0], &scoped).map_err(MigrateError::Resolve)?;
    let clock = Clock::new(policy, key_type, Utc::now());
    let to_utc = |s: f64| {
        if integer_key {
            crate::keys::int_point(s.round() as i64)
        } else {
            DateTime::<Utc>::from_timestamp(s.floor() as i64, 0).unwrap_or_default()
        }
    };
    let actions = default_cover(bp, &table, &clock, to_utc(lo), to_utc(hi))?;
    let tpl = build::template(inv, bp);
    for action in &actions {
        let mut steps = ddl::render(action, &table, &tpl)?;
        // Writers reach the new table through the forward trigger. One that routed its row to
        // the default partition just before the new partition is attached would fail on the
        // default's changed constraint; holding the original's writers back for the moment of
        // the move (reads go on) keeps that race away from the application.
        for step in steps.iter_mut().filter(|s| s.transactional) {
            step.statements.insert(
                0,
                format!("LOCK TABLE {} IN EXCLUSIVE MODE", bp.original.quoted()),
            );
        }
        if within == Within::CallersTransaction {
            for step in &steps {
                build::run(conn, &step.statements, deadline).await?;
            }
        } else {
            crate::execute::run_steps(conn, db, &steps)
                .await
                .map_err(MigrateError::Cover)?;
        }
        tracing::info!(partition = %action.partition(), "created a partition for rows written during the migration");
    }
    Ok(actions.len())
}

/// Partitions for rows that landed in the default partition, with keys from `lo` to `hi`: every
/// period between them that `table`'s partitions do not cover (pure; [`coverage::cover`]).
pub fn default_cover(
    bp: &Blueprint,
    table: &crate::catalog::ManagedTable,
    clock: &Clock,
    lo: DateTime<Utc>,
    hi: DateTime<Utc>,
) -> Result<Vec<Action>, MigrateError> {
    // Through the clock, so that integer keys count periods of values (SPEC part 2).
    let start = clock.period_of(lo);
    let end = clock.period_after(clock.period_of(hi));
    let ranges: Vec<coverage::Range> = table.partitions.iter().map(|p| (p.from, p.to)).collect();
    let pieces = coverage::cover(&ranges, start, end, plan::MAX_PARTITIONS, |t| {
        clock.period_after(t)
    })
    .map_err(|_| MigrateError::FarOutside {
        key: bp.key.clone(),
        max: plan::MAX_PARTITIONS,
        table: bp.original.clone(),
    })?;
    Ok(pieces
        .iter()
        .map(|p| Action::Create {
            partition: bp.original.sibling(derived_name(
                &bp.original.name,
                &p.suffix(clock.suffix(p.period)),
            )),
            from: p.from,
            to: p.to,
        })
        .collect())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Within {
    CallersTransaction,
    OwnTransactions,
}

/// `--offline`: one transaction from build to swap; writers wait, readers go on until the swap.
async fn offline(
    conn: &mut PgConnection,
    db: &DatabaseConfig,
    policy: &TablePolicy,
    prepared: &Prepared,
    bp: &Blueprint,
    mut summary: Summary,
    started: Instant,
) -> Result<Outcome, Error> {
    let inv = &prepared.inventory;
    let key_type = prepared.preflight.key_type.ok_or(MigrateError::NoKeyType)?;
    let mut statements = table_statements(prepared, bp, Keys::Later)?;
    statements.push(sync::reverse_function(bp));
    // Every round trip within the deadline, but no idle_in_transaction_session_timeout: this one
    // long transaction deliberately sleeps between lock attempts (swap::lock_with_savepoint) and
    // would be ended, its copy thrown away. A stalled network here fails the command; the
    // server keeps the session (and its SHARE lock) until TCP keepalive notices the dead peer.
    let deadline = pg::reply_deadline(db);
    let (mut tx, _) = crate::tx::Runner::step("the offline migration", db)
        .without_idle_timeout()
        .begin(conn)
        .await?;
    pg::answered(deadline, state::ensure_schema(&mut tx)).await?;
    build::run(&mut tx, &statements, deadline).await?;
    swap::lock_with_savepoint(
        &mut tx,
        db,
        &format!("LOCK TABLE {} IN SHARE MODE", bp.original.quoted()),
    )
    .await?;
    let copy_started = Instant::now();
    let copy = format!(
        "INSERT INTO {} ({}){} SELECT {} FROM {} o",
        bp.partitioned.quoted(),
        Blueprint::list(&bp.columns),
        bp.overriding_clause(),
        bp.select_list("o."),
        bp.original.quoted()
    );
    // Extended protocol: the statement carries the fill expression, and is one statement.
    let copied = pg::answered(
        deadline,
        sqlx::query(&copy).persistent(false).execute(&mut *tx),
    )
    .await?
    .rows_affected();
    if !bp.keep_default && pg::answered(deadline, swap::default_has_rows(&mut tx, bp)).await? {
        summary.extra_partitions += cover_default_rows(
            &mut tx,
            db,
            policy,
            inv,
            bp,
            key_type,
            Within::CallersTransaction,
        )
        .await?;
    }
    build::run(
        &mut tx,
        &build::key_statements(inv, bp, build::Which::All),
        deadline,
    )
    .await?;
    summary.copy_secs = copy_started.elapsed().as_secs_f64();
    let out = swap::offline(&mut tx, db, inv, bp).await?;
    pg::answered(
        deadline,
        state::insert(&mut tx, Phase::Swapped, Mode::Offline, bp),
    )
    .await?;
    let swap_done = Instant::now();
    pg::answered(deadline, tx.commit()).await?;
    summary.lock_held = out.lock_held + swap_done.elapsed();
    summary.lock_waits = out.lock_waits;
    summary.rows_copied = copied as i64;
    summary.rows_filled = prepared.facts.as_ref().map_or(0, |f| f.null_keys);
    analyze(conn, deadline, bp).await?;
    summary.total_secs = started.elapsed().as_secs_f64();
    Ok(Outcome::Migrated(summary))
}

/// After the swap: autovacuum back on for the partitions it was paused on, then ANALYZE. Neither
/// blocks the application's reads or writes; both are idempotent (a resumed run repeats them).
async fn analyze(conn: &mut PgConnection, deadline: Duration, bp: &Blueprint) -> Result<(), Error> {
    if bp.pause_autovacuum {
        let paused: Vec<String> = pg::answered(
            deadline,
            sqlx::query_scalar(
                "SELECT format('%I.%I', n.nspname, c.relname)
                   FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE i.inhparent = to_regclass($1) AND 'autovacuum_enabled=false' = ANY (c.reloptions)",
            )
            .bind(bp.original.quoted())
            .fetch_all(&mut *conn),
        )
        .await?;
        for p in paused {
            let reset = format!("ALTER TABLE {p} RESET (autovacuum_enabled)");
            pg::answered(deadline, sqlx::raw_sql(&reset).execute(&mut *conn)).await?;
        }
    }
    pg::answered(deadline, super::foreign_keys::validate(conn, &bp.original)).await?;
    let analyze = format!("ANALYZE {}", bp.original.quoted());
    pg::answered(deadline, sqlx::raw_sql(&analyze).execute(&mut *conn)).await?;
    pg::answered(deadline, state::mark_analyzed(conn, &bp.original)).await?;
    Ok(())
}

/// For the state-less commands: the recorded migration of the policy's table.
pub async fn load_state(
    conn: &mut PgConnection,
    policy: &TablePolicy,
) -> Result<Option<State>, Error> {
    Ok(state::load(conn, &policy.name).await?)
}

//! The lifecycle settings inside one maintenance pass: what is read for a table before it is
//! planned (its template, the foreign keys into it), what is added to its plan (template indexes
//! to repair, name clashes in the archive schema, what PostgreSQL will check on expiry), and what
//! runs around each action (the referencing-row look, the hooks). maintain.rs calls these at
//! fixed points so that its own loop stays as it was.

use sqlx::PgConnection;

use crate::catalog::ManagedTable;
use crate::config::{DatabaseConfig, TablePolicy};
use crate::hooks::{self, HookCall, HookKind};
use crate::inbound_fk::{self, InboundFk};
use crate::plan::{Action, TablePlan};
use crate::template::{self, TemplateSpec};

/// What a table's lifecycle needs from the catalog, read once per pass.
#[derive(Debug, Clone, Default)]
pub struct Extras {
    pub template: Option<TemplateSpec>,
    pub inbound_fks: Vec<InboundFk>,
}

/// Reads the extras of a table. `Ok(Err(..))`: the configuration does not match the database
/// (a missing or incompatible template), which the CLI reports with exit 2 before any change.
pub async fn read(
    conn: &mut PgConnection,
    table: &ManagedTable,
    policy: &TablePolicy,
) -> Result<Result<Extras, String>, sqlx::Error> {
    let template = match &policy.lifecycle.template {
        None => None,
        Some(t) => match template::read(conn, t, table).await? {
            Ok(spec) => Some(spec),
            Err(e) => return Ok(Err(e)),
        },
    };
    // Foreign keys are read only where an expiry needs them (extend_plan, assess): a no-op pass
    // stays one catalog round trip per database.
    Ok(Ok(Extras {
        template,
        inbound_fks: Vec::new(),
    }))
}

/// Adds to `plan` the template indexes missing on existing partitions and, when it expires a
/// partition, the note on what PostgreSQL checks for the foreign keys into the table (read into
/// `extras` for [`before`]). Returns a problem that must stop this
/// table before any DDL (a name already taken in the archive schema).
pub async fn extend_plan(
    conn: &mut PgConnection,
    table: &ManagedTable,
    extras: &mut Extras,
    plan: &mut TablePlan,
    pooler: crate::config::Pooler,
) -> Result<Option<String>, sqlx::Error> {
    if let Some(spec) = &extras.template {
        // A partition on its way out does not need the index first.
        let leaving: Vec<_> = plan
            .actions
            .iter()
            .filter(|a| is_expiry(a))
            .map(|a| a.partition().clone())
            .collect();
        let missing: Vec<Action> = repairs(conn, table, spec)
            .await?
            .into_iter()
            .filter(|a| !leaving.contains(a.partition()))
            .collect();
        if pooler == crate::config::Pooler::Transaction {
            // CREATE INDEX CONCURRENTLY cannot run inside a transaction, and behind a
            // transaction pooler nothing runs outside one: say so instead of failing every pass.
            for a in &missing {
                if let Action::AddIndex {
                    partition,
                    template_index,
                    ..
                } = a
                {
                    plan.notes.push(format!(
                        "{partition} lacks the index {template_index} of template {}; CREATE INDEX CONCURRENTLY cannot run through a transaction pooler: run `partkeeper maintain` once over a direct or session-mode connection to add it",
                        spec.template
                    ));
                }
            }
        } else {
            plan.actions.extend(missing);
        }
    }
    if plan.actions.iter().any(is_expiry) {
        extras.inbound_fks = inbound_fk::read(conn, &table.name).await?;
        let blocking = plan.actions.iter().any(|a| {
            matches!(
                a,
                Action::Drop {
                    concurrently: false,
                    ..
                } | Action::Detach {
                    concurrently: false,
                    ..
                } | Action::Archive {
                    concurrently: false,
                    pending: false,
                    ..
                }
            )
        });
        if let Some(note) = inbound_fk::describe(&extras.inbound_fks, blocking) {
            plan.notes.push(note);
        }
    }
    let moves: Vec<_> = plan
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Archive {
                partition, schema, ..
            } => Some((partition.clone(), schema.clone())),
            _ => None,
        })
        .collect();
    let clashes = crate::archive::clashes(conn, &moves).await?;
    Ok((!clashes.is_empty()).then(|| clashes.join("; ")))
}

/// Template indexes missing on the partitions of `table`, as actions (for maintain and check).
pub async fn repairs(
    conn: &mut PgConnection,
    table: &ManagedTable,
    spec: &TemplateSpec,
) -> Result<Vec<Action>, sqlx::Error> {
    let partitions = template::partitions_of(table);
    let existing = template::partition_indexes(conn, &partitions).await?;
    Ok(spec.repairs(&partitions, &existing))
}

/// Whether `action` takes a partition out of the table.
pub fn is_expiry(action: &Action) -> bool {
    matches!(
        action,
        Action::Drop { .. }
            | Action::Detach { .. }
            | Action::Archive { .. }
            | Action::FinalizeDetach {
                then_drop: true,
                ..
            }
    )
}

/// The hook `action` calls, if the table configures one.
pub fn hook_for(
    action: &Action,
    table: &ManagedTable,
    policy: &TablePolicy,
    db: &DatabaseConfig,
) -> Option<HookCall> {
    hooks::for_action(action, table, &policy.lifecycle.hooks, &db.name)
}

/// Why an action did not start.
#[derive(Debug)]
pub struct Refused {
    pub message: String,
    /// The hook failed: the table's later expiries would likely fail the same way (and each wait
    /// up to hook_timeout), so they are left for the next run.
    pub hook_failed: bool,
}

/// Reads the extras of every resolved table; a table whose template is wrong becomes an error.
pub async fn read_all(
    conn: &mut PgConnection,
    policies: &[TablePolicy],
    resolved: &mut [Result<ManagedTable, String>],
) -> Result<Vec<Extras>, sqlx::Error> {
    let mut out = Vec::with_capacity(resolved.len());
    for (policy, r) in policies.iter().zip(resolved.iter_mut()) {
        let Ok(table) = r else {
            out.push(Extras::default());
            continue;
        };
        match read(conn, table, policy).await? {
            Ok(e) => out.push(e),
            Err(problem) => {
                *r = Err(problem);
                out.push(Extras::default());
            }
        }
    }
    Ok(out)
}

/// Runs before an action's SQL: for an expiry, the look for referencing rows, then the
/// `before_expire` hook. An error keeps the partition: the action is not run.
pub async fn before(
    conn: &mut PgConnection,
    action: &Action,
    extras: &Extras,
    hook: Option<&HookCall>,
    db: &DatabaseConfig,
) -> Result<(), Refused> {
    let refused = |message: String| Refused {
        message,
        hook_failed: false,
    };
    if is_expiry(action) && !matches!(action, Action::FinalizeDetach { .. }) {
        for fk in &extras.inbound_fks {
            let deadline = crate::pg::reply_deadline(db);
            // Behind a transaction pooler in a transaction of its own, with the timeouts set.
            let look = async {
                let mut reader = crate::pooler::db_reader(conn, db).await?;
                let row = inbound_fk::referencing_row(&mut reader, fk, action.partition()).await?;
                reader.done().await?;
                Ok::<_, sqlx::Error>(row)
            };
            match crate::pg::answered(deadline, look).await {
                Ok(None) => {}
                Ok(Some(key)) => {
                    return Err(refused(inbound_fk::refusal(fk, action.partition(), &key)))
                }
                Err(e) => {
                    return Err(refused(format!(
                        "kept {}: cannot look for rows of {} that reference it: {}",
                        action.partition(),
                        fk.from_table,
                        crate::pg::describe(&e)
                    )))
                }
            }
        }
    }
    match hook {
        Some(h) if h.kind == HookKind::BeforeExpire => hooks::run(h, &db.url)
            .await
            .map(|_| ())
            .map_err(|e| Refused {
                message: format!("kept {}: {e}", action.partition()),
                hook_failed: true,
            }),
        _ => Ok(()),
    }
}

/// Runs after an action's SQL succeeded: the `after_create` hook.
pub async fn after(
    action: &Action,
    hook: Option<&HookCall>,
    db: &DatabaseConfig,
) -> Result<(), String> {
    match hook {
        Some(h) if h.kind == HookKind::AfterCreate => hooks::run(h, &db.url)
            .await
            .map(|_| ())
            .map_err(|e| format!("{} was created, but {e}", action.partition())),
        _ => Ok(()),
    }
}

/// What `check` adds for the lifecycle settings: partitions missing a template index (problems),
/// the archived partitions (listed apart) and what expiry of a referenced partition involves.
pub async fn assess(
    conn: &mut PgConnection,
    table: &ManagedTable,
    policy: &TablePolicy,
    extras: &Extras,
    server_version: i32,
    health: &mut crate::check::TableHealth,
) -> Result<(), sqlx::Error> {
    if let Some(spec) = &extras.template {
        for a in repairs(conn, table, spec).await? {
            if let Action::AddIndex {
                partition,
                template_index,
                ..
            } = &a
            {
                health.problems.push(format!(
                    "{partition} lacks the index {template_index} of template {}; maintain would add it (CREATE INDEX CONCURRENTLY)",
                    spec.template
                ));
            }
        }
    }
    if policy.retention.is_some() {
        let fks = inbound_fk::read(conn, &table.name).await?;
        let blocking = table.default.is_some()
            || policy.default_partition
            || server_version < crate::plan::DETACH_CONCURRENTLY_SINCE;
        if let Some(note) = inbound_fk::describe(&fks, blocking) {
            health.notes.push(note);
        }
    }
    if policy.retention_mode == crate::config::RetentionMode::Archive {
        health.archived =
            crate::archive::list(conn, &table.name, &policy.lifecycle.archive_schema).await?;
    }
    Ok(())
}

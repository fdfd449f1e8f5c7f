//! The swap, both ways, in one short transaction: lock both tables, rename, move index names,
//! sequence ownership, dependent views, grants, policies, publications and triggers over, and
//! record the new phase. Everything slow happened before; inside the lock there are only catalog
//! updates, so the lock is held for milliseconds. A lock not granted within `lock_timeout` rolls
//! the attempt back and it is retried with backoff, as maintenance DDL is.

use std::time::{Duration, Instant};

use sqlx::PgConnection;

use super::error::MigrateError;
use super::inventory::{self, Inventory};
use super::state::{self, Phase};
use super::{
    sync, Blueprint, FORWARD_TRIGGER, FORWARD_TRUNCATE_TRIGGER, REVERSE_TRIGGER,
    REVERSE_TRUNCATE_TRIGGER,
};
use crate::config::DatabaseConfig;
use crate::error::Error;
use crate::ident::{quote_ident, quote_literal, QualifiedName};
use crate::pg;
use crate::tx::{self, TxError};

#[derive(Debug, Clone)]
pub struct SwapOutcome {
    /// From the moment the locks were granted to the commit.
    pub lock_held: Duration,
    pub lock_waits: u32,
}

pub enum Attempt {
    Done(SwapOutcome),
    /// Rows arrived in the temporary default partition; they need partitions of their own first.
    DefaultHasRows,
}

/// A view to re-create: printed name, options, definition (read while the locks are held).
pub type ViewDef = (String, Vec<String>, String);

/// Catalog statements of the forward swap (the locks are already held).
pub fn forward_statements(
    inv: &Inventory,
    b: &Blueprint,
    views: &[ViewDef],
    with_forward_triggers: bool,
) -> Vec<String> {
    let live = &b.original;
    let mut s = Vec::new();
    if with_forward_triggers {
        s.extend(sync::drop_triggers(
            &b.original,
            [FORWARD_TRIGGER, FORWARD_TRUNCATE_TRIGGER],
        ));
        s.extend(super::build::drop_gone_table(b));
    }
    s.push(rename_table(&b.original, &b.backup.name));
    s.push(rename_table(&b.partitioned, &live.name));
    for i in &b.indexes {
        s.push(rename_index(live, &i.original, &i.backup));
        s.push(rename_index(live, &i.building, &i.original));
    }
    s.extend(sequence_statements(b, live, &b.backup));
    s.extend(view_statements(views));
    s.extend(super::build::grant_statements(inv, live));
    if inv.rls_enabled {
        s.push(format!(
            "ALTER TABLE {} ENABLE ROW LEVEL SECURITY",
            live.quoted()
        ));
    }
    if inv.rls_forced {
        s.push(format!(
            "ALTER TABLE {} FORCE ROW LEVEL SECURITY",
            live.quoted()
        ));
    }
    for p in &inv.policies {
        s.push(policy_statement(p, live));
    }
    for p in &b.publications {
        s.push(format!(
            "ALTER PUBLICATION {} ADD TABLE {}",
            quote_ident(p),
            live.quoted()
        ));
        s.push(format!(
            "ALTER PUBLICATION {} DROP TABLE {}",
            quote_ident(p),
            b.backup.quoted()
        ));
    }
    for t in &b.user_triggers {
        s.extend(t.enable_sql(live));
        s.push(t.disable_sql(&b.backup));
    }
    s.extend(sync::reverse_triggers(b, live));
    if !b.keep_default {
        s.push(format!(
            "ALTER TABLE {} DETACH PARTITION {}",
            live.quoted(),
            b.default_partition.quoted()
        ));
        s.push(format!("DROP TABLE {}", b.default_partition.quoted()));
    }
    s
}

/// Catalog statements of the swap back (`rollback`). `published_live` are the publications that
/// list the partitioned table now.
pub fn back_statements(b: &Blueprint, views: &[ViewDef], published_live: &[String]) -> Vec<String> {
    let live = &b.original;
    let mut s = sync::drop_triggers(live, [REVERSE_TRIGGER, REVERSE_TRUNCATE_TRIGGER]);
    s.push(rename_table(live, &b.partitioned.name));
    s.push(rename_table(&b.backup, &live.name));
    for i in &b.indexes {
        s.push(rename_index(live, &i.original, &i.building));
        s.push(rename_index(live, &i.backup, &i.original));
    }
    s.extend(sequence_statements(b, live, &b.partitioned));
    s.extend(view_statements(views));
    for p in published_live {
        s.push(format!(
            "ALTER PUBLICATION {} DROP TABLE {}",
            quote_ident(p),
            b.partitioned.quoted()
        ));
    }
    for p in &b.publications {
        s.push(format!(
            "ALTER PUBLICATION {} ADD TABLE {}",
            quote_ident(p),
            live.quoted()
        ));
    }
    for t in &b.user_triggers {
        s.extend(t.enable_sql(live));
    }
    s
}

fn rename_table(from: &QualifiedName, to: &str) -> String {
    format!(
        "ALTER TABLE {} RENAME TO {}",
        from.quoted(),
        quote_ident(to)
    )
}

fn rename_index(schema_of: &QualifiedName, from: &str, to: &str) -> String {
    format!(
        "ALTER INDEX {} RENAME TO {}",
        schema_of.sibling(from).quoted(),
        quote_ident(to)
    )
}

/// Owned sequences follow `live` (ids keep coming from the same sequence); an identity column's
/// own sequence is moved past the other table's, so no id is handed out twice.
fn sequence_statements(b: &Blueprint, live: &QualifiedName, other: &QualifiedName) -> Vec<String> {
    b.sequences
        .iter()
        .map(|seq| {
            if seq.identity {
                format!(
                    "SELECT setval(pg_get_serial_sequence({live}, {col}), v) FROM \
                     (SELECT pg_sequence_last_value(pg_get_serial_sequence({other}, {col})::regclass) AS v) s \
                     WHERE v IS NOT NULL",
                    live = quote_literal(&live.quoted()),
                    other = quote_literal(&other.quoted()),
                    col = quote_literal(&seq.column)
                )
            } else {
                format!(
                    "ALTER SEQUENCE {} OWNED BY {}.{}",
                    seq.sequence.quoted(),
                    live.quoted(),
                    quote_ident(&seq.column)
                )
            }
        })
        .collect()
}

/// `CREATE OR REPLACE VIEW` from definitions read before the renames: their table names now
/// resolve to the table that took the name.
fn view_statements(views: &[ViewDef]) -> Vec<String> {
    views
        .iter()
        .map(|(name, opts, def)| {
            let opts: Vec<&String> = opts.iter().filter(|o| plain_option(o)).collect();
            format!(
                "CREATE OR REPLACE VIEW {name}{} AS {}",
                if opts.is_empty() {
                    String::new()
                } else {
                    format!(
                        " WITH ({})",
                        opts.iter()
                            .map(|o| o.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                },
                def.trim().trim_end_matches(';')
            )
        })
        .collect()
}

/// `key=value` with nothing that could end the clause.
fn plain_option(o: &str) -> bool {
    o.split_once('=').is_some_and(|(k, v)| {
        !k.is_empty()
            && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            && !v.is_empty()
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    })
}

fn policy_statement(p: &inventory::Policy, on: &QualifiedName) -> String {
    let roles: Vec<String> = p
        .roles
        .iter()
        .map(|r| {
            if r == "public" {
                "PUBLIC".to_string()
            } else {
                quote_ident(r)
            }
        })
        .collect();
    format!(
        "CREATE POLICY {} ON {} AS {} FOR {} TO {}{}{}",
        quote_ident(&p.name),
        on.quoted(),
        if p.permissive {
            "PERMISSIVE"
        } else {
            "RESTRICTIVE"
        },
        p.command,
        roles.join(", "),
        p.using
            .as_ref()
            .map(|q| format!(" USING ({q})"))
            .unwrap_or_default(),
        p.with_check
            .as_ref()
            .map(|q| format!(" WITH CHECK ({q})"))
            .unwrap_or_default()
    )
}

async fn views_of(
    conn: &mut PgConnection,
    table: &QualifiedName,
) -> Result<Vec<ViewDef>, sqlx::Error> {
    let oid: Option<i64> = sqlx::query_scalar("SELECT to_regclass($1)::oid::int8")
        .bind(table.quoted())
        .fetch_one(&mut *conn)
        .await?;
    let Some(oid) = oid else {
        return Ok(Vec::new());
    };
    Ok(inventory::read_views(conn, oid)
        .await?
        .into_iter()
        .filter(|(_, _, kind, _, _)| kind == "v")
        .map(|(_, name, _, def, opts)| (name, opts, def))
        .collect())
}

/// The online swap: its own transaction, retried on lock timeouts (autovacuum workers on the
/// tables cancelled before each attempt).
pub async fn online(
    conn: &mut PgConnection,
    db: &DatabaseConfig,
    inv: &Inventory,
    b: &Blueprint,
) -> Result<Attempt, Error> {
    let done = tx::Runner::step(format!("swap {} into place", b.partitioned), db)
        .run(conn, async |c, at| {
            // Behind a savepoint: a refused cancel (not permitted) must not abort the swap.
            tx::exec(c, at, "SAVEPOINT partkeeper_autovacuum").await?;
            let undo = if cancel_autovacuum(c, db, &[&b.original, &b.partitioned]).await {
                "RELEASE SAVEPOINT partkeeper_autovacuum"
            } else {
                "ROLLBACK TO SAVEPOINT partkeeper_autovacuum"
            };
            tx::exec(c, at, undo).await?;
            let locked = lock_both(c, at, &b.original, &b.partitioned).await?;
            if !b.keep_default && pg::answered(at.deadline, default_has_rows(c, b)).await? {
                return Ok(None);
            }
            let views = pg::answered(at.deadline, views_of(c, &b.original)).await?;
            let fks = pg::answered(at.deadline, super::foreign_keys::read(c, &b.original)).await?;
            tx::exec_all(c, at, &forward_statements(inv, b, &views, true)).await?;
            let version = c.server_version_num().unwrap_or(0);
            let repoint = super::foreign_keys::repoint(&fks, &b.original, version);
            tx::exec_all(c, at, &repoint).await?;
            pg::answered(
                at.deadline,
                state::set_phase(c, &b.original, Phase::Swapped),
            )
            .await?;
            Ok(Some(locked))
        })
        .await
        .map_err(|e| match e {
            TxError::LockTimeout { attempts, .. } => MigrateError::SwapLocked {
                table: b.original.clone(),
                attempts,
                source: Box::new(e),
            }
            .into(),
            other => Error::from(other),
        })?;
    Ok(match done.value {
        Some(locked) => Attempt::Done(SwapOutcome {
            lock_held: locked.elapsed(),
            lock_waits: done.lock_waits,
        }),
        None => Attempt::DefaultHasRows,
    })
}

/// Cancels autovacuum workers holding locks on `tables` or their partitions, as PostgreSQL itself
/// does once a lock request has waited `deadlock_timeout` — but before the swap queues up, so the
/// application's writers do not wait behind it meanwhile. Never one that prevents wraparound
/// (PostgreSQL does not cancel those either): the swap then waits for it within `lock_timeout`
/// and retries, or gives up. Needs superuser (or, on recent servers,
/// pg_signal_autovacuum_worker); without it nothing happens and the lock wait does it.
/// Returns false when a query failed (its error is logged; the caller rolls back to a savepoint).
async fn cancel_autovacuum(
    conn: &mut PgConnection,
    db: &DatabaseConfig,
    tables: &[&QualifiedName],
) -> bool {
    let names: Vec<String> = tables.iter().map(|t| t.quoted()).collect();
    let deadline = pg::reply_deadline(db);
    let workers = sqlx::query_as::<_, (i32, String)>(
        "SELECT DISTINCT l.pid, coalesce(a.query, '') FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
          WHERE a.backend_type = 'autovacuum worker' AND l.locktype = 'relation'
            AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND l.relation IN (SELECT to_regclass(n) FROM unnest($1::text[]) n
                               UNION ALL SELECT i.inhrelid FROM pg_inherits i
                                WHERE i.inhparent IN (SELECT to_regclass(n) FROM unnest($1::text[]) n))",
    )
    .bind(&names)
    .fetch_all(&mut *conn);
    let workers = match pg::answered(deadline, workers).await {
        Ok(w) => w,
        Err(e) => {
            tracing::debug!(error = %pg::describe(&e), "could not list autovacuum workers");
            return false;
        }
    };
    let (spared, cancel): (Vec<_>, Vec<_>) = workers
        .into_iter()
        .partition(|(_, query)| prevents_wraparound(query));
    for (pid, query) in &spared {
        tracing::info!(pid, query = %query, "an autovacuum to prevent wraparound holds the table; the swap waits for it (within lock_timeout)");
    }
    if cancel.is_empty() {
        return true;
    }
    let pids: Vec<i32> = cancel.iter().map(|(pid, _)| *pid).collect();
    let query = sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FILTER (WHERE pg_cancel_backend(pid)) FROM unnest($1::int4[]) pid",
    )
    .bind(&pids)
    .fetch_one(&mut *conn);
    match pg::answered(deadline, query).await {
        Ok(n) => {
            if n > 0 {
                tracing::info!(
                    workers = n,
                    "cancelled autovacuum on the tables before the swap"
                );
            }
            true
        }
        Err(e) => {
            tracing::debug!(error = %pg::describe(&e), "could not cancel autovacuum (not permitted?)");
            false
        }
    }
}

/// Whether an autovacuum worker's `pg_stat_activity.query` is an anti-wraparound vacuum
/// (`autovacuum: VACUUM public.t (to prevent wraparound)`, also with ANALYZE).
pub fn prevents_wraparound(query: &str) -> bool {
    query.starts_with("autovacuum: ") && query.trim_end().ends_with("(to prevent wraparound)")
}

/// Locks both tables ACCESS EXCLUSIVE (inside the runner's transaction, under its
/// lock_timeout); returns when the locks were granted.
async fn lock_both(
    conn: &mut PgConnection,
    at: tx::Attempt,
    first: &QualifiedName,
    second: &QualifiedName,
) -> Result<Instant, sqlx::Error> {
    let lock = format!(
        "LOCK TABLE {}, {} IN ACCESS EXCLUSIVE MODE",
        first.quoted(),
        second.quoted()
    );
    tx::exec(conn, at, &lock).await?;
    Ok(Instant::now())
}

pub async fn default_has_rows(conn: &mut PgConnection, b: &Blueprint) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "SELECT EXISTS (SELECT 1 FROM {})",
        b.default_partition.quoted()
    ))
    .fetch_one(conn)
    .await
}

/// The offline swap inside the caller's (long) transaction: the upgrade to ACCESS EXCLUSIVE is
/// retried behind a savepoint, so a lock timeout does not throw the copy away.
pub async fn offline(
    conn: &mut PgConnection,
    db: &DatabaseConfig,
    inv: &Inventory,
    b: &Blueprint,
) -> Result<SwapOutcome, Error> {
    let waits = lock_with_savepoint(
        conn,
        db,
        &format!(
            "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
            b.original.quoted()
        ),
    )
    .await?;
    let locked = Instant::now();
    let at = tx::Attempt {
        failed: 0,
        deadline: pg::reply_deadline(db),
    };
    let views = pg::answered(at.deadline, views_of(conn, &b.original)).await?;
    let fks = pg::answered(at.deadline, super::foreign_keys::read(conn, &b.original)).await?;
    tx::exec_all(conn, at, &forward_statements(inv, b, &views, false)).await?;
    let version = conn.server_version_num().unwrap_or(0);
    let repoint = super::foreign_keys::repoint(&fks, &b.original, version);
    tx::exec_all(conn, at, &repoint).await?;
    Ok(SwapOutcome {
        lock_held: locked.elapsed(),
        lock_waits: waits,
    })
}

/// Runs a LOCK statement inside the current transaction, retrying lock timeouts behind a
/// savepoint. Returns the number of lock waits.
pub async fn lock_with_savepoint(
    conn: &mut PgConnection,
    db: &DatabaseConfig,
    lock: &str,
) -> Result<u32, Error> {
    tx::Runner::step(format!("`{lock}`"), db)
        .in_savepoint(conn, async |c, at| tx::exec(c, at, lock).await)
        .await
        .map(|d| d.lock_waits)
        .map_err(|e| match e {
            TxError::LockTimeout { attempts, .. } => MigrateError::OfflineLocked {
                lock: lock.to_string(),
                attempts,
                source: Box::new(e),
            }
            .into(),
            other => other.into(),
        })
}

/// The swap back (`rollback`), its own transaction, retried on lock timeouts.
pub async fn back(
    conn: &mut PgConnection,
    db: &DatabaseConfig,
    b: &Blueprint,
) -> Result<SwapOutcome, Error> {
    let done = tx::Runner::step(format!("swap {} back", b.backup), db)
        .run(conn, async |c, at| {
            let locked = lock_both(c, at, &b.original, &b.backup).await?;
            let views = pg::answered(at.deadline, views_of(c, &b.original)).await?;
            let published: Vec<String> = pg::answered(
                at.deadline,
                sqlx::query_scalar(
                    "SELECT p.pubname::text FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
                      WHERE pr.prrelid = to_regclass($1)",
                )
                .bind(b.original.quoted())
                .fetch_all(&mut *c),
            )
            .await?;
            let fks = pg::answered(at.deadline, super::foreign_keys::read(c, &b.original)).await?;
            tx::exec_all(c, at, &back_statements(b, &views, &published)).await?;
            let version = c.server_version_num().unwrap_or(0);
            let repoint = super::foreign_keys::repoint(&fks, &b.original, version);
            tx::exec_all(c, at, &repoint).await?;
            pg::answered(at.deadline, state::set_phase(c, &b.original, Phase::RolledBack)).await?;
            Ok(locked)
        })
        .await
        .map_err(|e| match e {
            TxError::LockTimeout { attempts, .. } => MigrateError::SwapBackLocked {
                table: b.original.clone(),
                backup: b.backup.clone(),
                attempts,
                source: Box::new(e),
            }
            .into(),
            other => Error::from(other),
        })?;
    Ok(SwapOutcome {
        lock_held: done.value.elapsed(),
        lock_waits: done.lock_waits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::tests::pricing_blueprint;
    use crate::migrate::{IndexNames, OwnedSequence};

    fn blueprint() -> Blueprint {
        let mut b = pricing_blueprint(None);
        b.indexes = vec![IndexNames {
            original: "pricing_data_pkey".into(),
            building: "pricing_data_pkey_partitioned".into(),
            backup: "pricing_data_pkey_backup".into(),
        }];
        b.sequences = vec![OwnedSequence {
            sequence: QualifiedName::new("public", "pricing_data_id_seq"),
            column: "id".into(),
            identity: false,
        }];
        b
    }

    #[test]
    fn the_forward_swap_renames_then_repoints_everything() {
        let inv = Inventory {
            rls_enabled: true,
            ..Inventory::default()
        };
        let views = vec![(
            "public.v".to_string(),
            vec!["security_barrier=true".to_string()],
            " SELECT id FROM pricing_data;".to_string(),
        )];
        let s = forward_statements(&inv, &blueprint(), &views, true);
        let pos = |needle: &str| {
            s.iter()
                .position(|x| x.contains(needle))
                .unwrap_or_else(|| panic!("{needle} not in {s:#?}"))
        };
        assert!(
            pos("DROP TRIGGER IF EXISTS \"partkeeper_sync_forward\"")
                < pos("RENAME TO \"pricing_data_backup\"")
        );
        assert!(
            pos("RENAME TO \"pricing_data_backup\"")
                < pos("\"pricing_data_partitioned\" RENAME TO \"pricing_data\"")
        );
        assert!(
            pos("\"pricing_data_pkey\" RENAME TO \"pricing_data_pkey_backup\"")
                < pos("\"pricing_data_pkey_partitioned\" RENAME TO \"pricing_data_pkey\"")
        );
        assert!(pos("OWNED BY \"public\".\"pricing_data\".\"id\"") > 0);
        assert_eq!(
            s[pos("CREATE OR REPLACE VIEW")],
            "CREATE OR REPLACE VIEW public.v WITH (security_barrier=true) AS SELECT id FROM pricing_data"
        );
        assert!(pos("ENABLE ROW LEVEL SECURITY") > 0);
        assert!(pos("CREATE TRIGGER \"partkeeper_sync_reverse\"") > 0);
        assert!(
            pos("DETACH PARTITION \"public\".\"pricing_data_default\"")
                < pos("DROP TABLE \"public\".\"pricing_data_default\"")
        );
    }

    #[test]
    fn the_swap_back_mirrors_the_forward_one() {
        let s = back_statements(&blueprint(), &[], &[]);
        assert!(s[0].starts_with("DROP TRIGGER IF EXISTS \"partkeeper_sync_reverse\""));
        assert!(s.contains(
            &"ALTER TABLE \"public\".\"pricing_data\" RENAME TO \"pricing_data_partitioned\""
                .to_string()
        ));
        assert!(s.contains(
            &"ALTER TABLE \"public\".\"pricing_data_backup\" RENAME TO \"pricing_data\""
                .to_string()
        ));
        assert!(s.contains(
            &"ALTER INDEX \"public\".\"pricing_data_pkey_backup\" RENAME TO \"pricing_data_pkey\""
                .to_string()
        ));
    }

    #[test]
    fn anti_wraparound_autovacuums_are_told_apart() {
        assert!(prevents_wraparound(
            "autovacuum: VACUUM public.pricing_data (to prevent wraparound)"
        ));
        assert!(prevents_wraparound(
            "autovacuum: VACUUM ANALYZE public.\"Events\" (to prevent wraparound)"
        ));
        assert!(!prevents_wraparound(
            "autovacuum: VACUUM public.pricing_data"
        ));
        assert!(!prevents_wraparound(
            "autovacuum: ANALYZE public.pricing_data"
        ));
        assert!(!prevents_wraparound("SELECT '(to prevent wraparound)'"));
    }

    #[test]
    fn odd_view_options_are_not_spliced() {
        assert!(plain_option("check_option=local"));
        assert!(!plain_option("x=1) AS SELECT 1; --"));
    }
}

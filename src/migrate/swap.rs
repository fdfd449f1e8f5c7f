//! The swap, both ways, in one short transaction: lock both tables, rename, move index names,
//! sequence ownership, dependent views, grants, policies, publications and triggers over, and
//! record the new phase. Everything slow happened before; inside the lock there are only catalog
//! updates, so the lock is held for milliseconds. A lock not granted within `lock_timeout` rolls
//! the attempt back and it is retried with backoff, as maintenance DDL is.

use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};

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

async fn run_all(
    conn: &mut PgConnection,
    statements: &[String],
    deadline: Duration,
) -> Result<(), sqlx::Error> {
    for st in statements {
        tracing::debug!(sql = %st, "swap");
        pg::answered(deadline, sqlx::raw_sql(st).execute(&mut *conn)).await?;
    }
    Ok(())
}

/// The online swap: its own transaction, retried on lock timeouts.
pub async fn online(
    conn: &mut PgConnection,
    db: &DatabaseConfig,
    inv: &Inventory,
    b: &Blueprint,
) -> Result<Attempt, Error> {
    let mut waits = 0;
    loop {
        cancel_autovacuum(conn, db, &[&b.original, &b.partitioned]).await;
        match online_attempt(conn, db, inv, b).await {
            Ok(Some(held)) => {
                return Ok(Attempt::Done(SwapOutcome {
                    lock_held: held,
                    lock_waits: waits,
                }))
            }
            Ok(None) => return Ok(Attempt::DefaultHasRows),
            Err(e) if pg::is_retryable(&e) && waits + 1 < db.lock_retries.max(1) => {
                waits += 1;
                let pause = pg::backoff(waits);
                tracing::info!(attempt = waits, ?pause, error = %pg::describe(&e), "swap: lock not granted in time; retrying");
                tokio::time::sleep(pause).await;
            }
            Err(e) if pg::is_retryable(&e) => {
                return Err(Error::Failed(format!(
                    "could not lock {} for the swap within lock_timeout after {} attempt(s): a long transaction or pending DDL holds it. The copy is complete and kept in step; run `migrate run` again to retry the swap",
                    b.original,
                    waits + 1
                )))
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Cancels autovacuum workers holding locks on `tables` or their partitions, as PostgreSQL itself
/// does once a lock request has waited `deadlock_timeout` — but before the swap queues up, so the
/// application's writers do not wait behind it meanwhile. Needs superuser (or, on recent
/// servers, pg_signal_autovacuum_worker); without it nothing happens and the lock wait does it.
async fn cancel_autovacuum(
    conn: &mut PgConnection,
    db: &DatabaseConfig,
    tables: &[&QualifiedName],
) {
    let names: Vec<String> = tables.iter().map(|t| t.quoted()).collect();
    let query = sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FILTER (WHERE pg_cancel_backend(pid)) FROM (
           SELECT DISTINCT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
            WHERE a.backend_type = 'autovacuum worker' AND l.locktype = 'relation'
              AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
              AND l.relation IN (SELECT to_regclass(n) FROM unnest($1::text[]) n
                                 UNION ALL SELECT i.inhrelid FROM pg_inherits i
                                  WHERE i.inhparent IN (SELECT to_regclass(n) FROM unnest($1::text[]) n))) w",
    )
    .bind(&names)
    .fetch_one(&mut *conn);
    match pg::answered(pg::reply_deadline(db), query).await {
        Ok(n) if n > 0 => tracing::info!(
            workers = n,
            "cancelled autovacuum on the tables before the swap"
        ),
        Ok(_) => {}
        Err(e) => {
            tracing::debug!(error = %pg::describe(&e), "could not cancel autovacuum (not permitted?)")
        }
    }
}

/// Opens a swap transaction (either direction): every round trip within the reply deadline, the
/// step timeouts set (so the server ends a stalled session of ours that holds the locks after
/// about lock_timeout), and both tables locked ACCESS EXCLUSIVE. Returns the transaction, the
/// deadline for its later round trips, and when the locks were granted.
async fn begin_locked<'c>(
    conn: &'c mut PgConnection,
    db: &DatabaseConfig,
    first: &QualifiedName,
    second: &QualifiedName,
) -> Result<(sqlx::Transaction<'c, sqlx::Postgres>, Duration, Instant), sqlx::Error> {
    let deadline = pg::reply_deadline(db);
    let mut tx = pg::answered(deadline, conn.begin()).await?;
    pg::answered(
        deadline,
        pg::set_local_step_timeouts(&mut tx, db.lock_timeout, db.statement_timeout),
    )
    .await?;
    let lock = format!(
        "LOCK TABLE {}, {} IN ACCESS EXCLUSIVE MODE",
        first.quoted(),
        second.quoted()
    );
    pg::answered(deadline, sqlx::raw_sql(&lock).execute(&mut *tx)).await?;
    Ok((tx, deadline, Instant::now()))
}

async fn online_attempt(
    conn: &mut PgConnection,
    db: &DatabaseConfig,
    inv: &Inventory,
    b: &Blueprint,
) -> Result<Option<Duration>, sqlx::Error> {
    let (mut tx, deadline, locked) = begin_locked(conn, db, &b.original, &b.partitioned).await?;
    if !b.keep_default && pg::answered(deadline, default_has_rows(&mut tx, b)).await? {
        return Ok(None);
    }
    let views = pg::answered(deadline, views_of(&mut tx, &b.original)).await?;
    let fks = pg::answered(deadline, super::foreign_keys::read(&mut tx, &b.original)).await?;
    run_all(&mut tx, &forward_statements(inv, b, &views, true), deadline).await?;
    let version = tx.server_version_num().unwrap_or(0);
    run_all(
        &mut tx,
        &super::foreign_keys::repoint(&fks, &b.original, version),
        deadline,
    )
    .await?;
    pg::answered(
        deadline,
        state::set_phase(&mut tx, &b.original, Phase::Swapped),
    )
    .await?;
    pg::answered(deadline, tx.commit()).await?;
    Ok(Some(locked.elapsed()))
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
    let deadline = pg::reply_deadline(db);
    let views = pg::answered(deadline, views_of(conn, &b.original)).await?;
    let fks = pg::answered(deadline, super::foreign_keys::read(conn, &b.original)).await?;
    run_all(conn, &forward_statements(inv, b, &views, false), deadline).await?;
    let version = conn.server_version_num().unwrap_or(0);
    run_all(
        conn,
        &super::foreign_keys::repoint(&fks, &b.original, version),
        deadline,
    )
    .await?;
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
    let deadline = pg::reply_deadline(db);
    let mut waits = 0;
    loop {
        pg::answered(
            deadline,
            sqlx::raw_sql("SAVEPOINT partkeeper_lock").execute(&mut *conn),
        )
        .await?;
        match pg::answered(deadline, sqlx::raw_sql(lock).execute(&mut *conn)).await {
            Ok(_) => {
                pg::answered(
                    deadline,
                    sqlx::raw_sql("RELEASE SAVEPOINT partkeeper_lock").execute(&mut *conn),
                )
                .await?;
                return Ok(waits);
            }
            Err(e) if pg::is_retryable(&e) && waits + 1 < db.lock_retries.max(1) => {
                pg::answered(
                    deadline,
                    sqlx::raw_sql("ROLLBACK TO SAVEPOINT partkeeper_lock").execute(&mut *conn),
                )
                .await?;
                waits += 1;
                let pause = pg::backoff(waits);
                tracing::info!(attempt = waits, ?pause, "lock not granted in time; retrying");
                tokio::time::sleep(pause).await;
            }
            Err(e) if pg::is_retryable(&e) => {
                return Err(Error::Failed(format!(
                    "`{lock}` was not granted within lock_timeout after {} attempts; nothing was changed. Stop the sessions holding the table or raise database.lock_timeout",
                    waits + 1
                )))
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The swap back (`rollback`), its own transaction, retried on lock timeouts.
pub async fn back(
    conn: &mut PgConnection,
    db: &DatabaseConfig,
    b: &Blueprint,
) -> Result<SwapOutcome, Error> {
    let mut waits = 0;
    loop {
        match back_attempt(conn, db, b).await {
            Ok(held) => {
                return Ok(SwapOutcome {
                    lock_held: held,
                    lock_waits: waits,
                })
            }
            Err(e) if pg::is_retryable(&e) && waits + 1 < db.lock_retries.max(1) => {
                waits += 1;
                let pause = pg::backoff(waits);
                tracing::info!(attempt = waits, ?pause, error = %pg::describe(&e), "swap back: lock not granted in time; retrying");
                tokio::time::sleep(pause).await;
            }
            Err(e) if pg::is_retryable(&e) => {
                return Err(Error::Failed(format!(
                    "could not lock {} and {} within lock_timeout after {} attempt(s); nothing was changed, run `migrate rollback` again",
                    b.original,
                    b.backup,
                    waits + 1
                )))
            }
            Err(e) => return Err(e.into()),
        }
    }
}

async fn back_attempt(
    conn: &mut PgConnection,
    db: &DatabaseConfig,
    b: &Blueprint,
) -> Result<Duration, sqlx::Error> {
    let (mut tx, deadline, locked) = begin_locked(conn, db, &b.original, &b.backup).await?;
    let views = pg::answered(deadline, views_of(&mut tx, &b.original)).await?;
    let published: Vec<String> = pg::answered(
        deadline,
        sqlx::query_scalar(
            "SELECT p.pubname::text FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
              WHERE pr.prrelid = to_regclass($1)",
        )
        .bind(b.original.quoted())
        .fetch_all(&mut *tx),
    )
    .await?;
    let fks = pg::answered(deadline, super::foreign_keys::read(&mut tx, &b.original)).await?;
    run_all(&mut tx, &back_statements(b, &views, &published), deadline).await?;
    let version = tx.server_version_num().unwrap_or(0);
    run_all(
        &mut tx,
        &super::foreign_keys::repoint(&fks, &b.original, version),
        deadline,
    )
    .await?;
    pg::answered(
        deadline,
        state::set_phase(&mut tx, &b.original, Phase::RolledBack),
    )
    .await?;
    pg::answered(deadline, tx.commit()).await?;
    Ok(locked.elapsed())
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
    fn odd_view_options_are_not_spliced() {
        assert!(plain_option("check_option=local"));
        assert!(!plain_option("x=1) AS SELECT 1; --"));
    }
}

//! The default partition at any size: attaching a partition next to a big default without
//! scanning it under a lock that blocks writes, bounded counts of its rows, and the helper objects
//! of an interrupted attach (found, finished or removed by the next pass).
//!
//! `ALTER TABLE ... ATTACH PARTITION` must prove that the default holds no row of the new range.
//! It scans the default under ACCESS EXCLUSIVE (and partkeeper holds writes back with SHARE ROW
//! EXCLUSIVE on the parent meanwhile, see `ddl.rs`) unless a *validated* CHECK on the default
//! already implies it. So, when the default is big ([`SMALL_DEFAULT_BYTES`]), a create is five
//! short transactions instead of one ([`online_steps`]):
//!
//! 1. prepare: the new table (with the parent's indexes and a CHECK of its bounds), and a BEFORE
//!    INSERT trigger on the default that sends rows of the new range to the new table;
//! 2. move: rows of the range already in the default go to the new table (RowExclusive only;
//!    writes go on);
//! 3. exclude: `CHECK (key IS NULL OR key < lo OR key >= hi) NOT VALID` on the default — exactly
//!    the negation PostgreSQL derives for the default (`get_proposed_default_constraint`), so its
//!    predicate prover accepts it; NULL keys pass it and stay in the default;
//! 4. validate: `VALIDATE CONSTRAINT` scans the default under SHARE UPDATE EXCLUSIVE: reads and
//!    writes go on;
//! 5. attach: SHARE ROW EXCLUSIVE on the parent (in-flight writes finish, new ones wait for this
//!    short transaction), ATTACH — PostgreSQL logs "updated partition constraint for default
//!    partition ... is implied by existing constraints" and skips its scan — then the helpers go.
//!
//! Why the trigger: a NOT VALID check is enforced on new rows, so from step 3 until step 5
//! commits, an application INSERT of a row of the new range would fail with a check violation.
//! The trigger sends such rows to the new table instead, so no write fails and none waits on the
//! scan. The price, only for rows of the new period written during those seconds: the INSERT
//! reports 0 rows (a BEFORE trigger that returns NULL: no RETURNING row), and rows moved or sent
//! to the new table are not visible through the parent until the attach commits. Holding writes
//! instead would make them wait for the whole scan; leaving the period alone would leave the
//! application's current rows in the default. A small default is scanned inline (the old single
//! transaction, nothing invisible, a pause of milliseconds).
//!
//! Crash safety: every helper is named `partkeeper_*` after the partition. An unattached table
//! carrying [`ddl::BOUND_CHECK`] under a planned partition's name is an attach in progress: the
//! next pass resumes it (its rows are kept); helpers on the default that belong to no such table
//! are dropped ([`cleanup_steps`]).

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;

use crate::bounds::{render_literal, render_range, BoundsError};
use crate::catalog::ManagedTable;
use crate::ddl::{self, Step, Template};
use crate::ident::{quote_ident, quote_literal, short_hash, QualifiedName};

/// Up to this size (and [`INLINE_MOVE_ROWS`]) the default is scanned inline by ATTACH in the
/// create's one transaction:
/// measured 48 ms to validate a 13 MB default (300,000 rows) on a loaded 2-core machine, so 8 MiB
/// costs writes some 30 ms — less than the five transactions of the online path.
pub const SMALL_DEFAULT_BYTES: i64 = 8 * 1024 * 1024;
/// Up to this many rows of the new range are moved inside the inline create's transaction, while
/// writes wait: measured about 6 µs a row (61,144 rows in 357 ms with an application writer), so
/// some 60 ms. More go the online way, whose move holds no table lock.
pub const INLINE_MOVE_ROWS: u64 = 10_000;
/// `default_partition_rows` is exact up to this many rows, an estimate above.
pub const EXACT_ROWS_UP_TO: i64 = 100_000;

const EXCLUDE: &str = "exclude";
const REDIRECT: &str = "redirect";

/// `partkeeper_<kind>_<partition>`, or with a hash of the partition's name when that is too long
/// for PostgreSQL's 63 bytes. Stable: the next pass finds the same names.
pub fn helper_name(kind: &str, partition: &QualifiedName) -> String {
    let full = format!("partkeeper_{kind}_{}", partition.name);
    if full.len() <= 63 {
        full
    } else {
        format!("partkeeper_{kind}_{}", short_hash(&partition.quoted()))
    }
}

/// What the catalog says about the default partition's size and the helpers on it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DefaultFacts {
    pub size_bytes: i64,
    /// Planned partitions that exist as unattached tables carrying [`ddl::BOUND_CHECK`]: attaches
    /// that were interrupted and will be resumed.
    pub in_progress: Vec<QualifiedName>,
    /// `partkeeper_*` constraints on the default: (name, validated).
    pub constraints: Vec<(String, bool)>,
    /// `partkeeper_*` triggers on the default.
    pub triggers: Vec<String>,
    /// `partkeeper_redirect_*` functions in the table's schema that no trigger uses.
    pub orphan_functions: Vec<QualifiedName>,
}

impl DefaultFacts {
    pub fn resumes(&self, partition: &QualifiedName) -> bool {
        self.in_progress.contains(partition)
    }

    /// Is the exclusion check for `partition` there, and is it validated?
    pub fn exclude_state(&self, partition: &QualifiedName) -> Option<bool> {
        let name = helper_name(EXCLUDE, partition);
        self.constraints
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }
}

/// Reads [`DefaultFacts`] for `table` (which has a default partition); `planned` are the
/// partitions the plan would create.
pub async fn read_facts(
    conn: &mut PgConnection,
    table: &ManagedTable,
    planned: &[QualifiedName],
) -> Result<DefaultFacts, sqlx::Error> {
    let Some(default) = &table.default else {
        return Ok(DefaultFacts::default());
    };
    let (size_bytes, constraints, triggers, functions): (
        i64,
        Vec<String>,
        Vec<String>,
        Vec<String>,
    ) = sqlx::query_as(
        r#"
        SELECT pg_relation_size(c.oid),
               COALESCE((SELECT array_agg(k.conname::text || ':' || k.convalidated::text ORDER BY k.conname)
                           FROM pg_constraint k
                          WHERE k.conrelid = c.oid AND k.conname LIKE 'partkeeper\_%'), '{}'),
               COALESCE((SELECT array_agg(t.tgname::text ORDER BY t.tgname) FROM pg_trigger t
                          WHERE t.tgrelid = c.oid AND t.tgname LIKE 'partkeeper\_%'), '{}'),
               COALESCE((SELECT array_agg(p.proname::text ORDER BY p.proname) FROM pg_proc p
                          WHERE p.pronamespace = (SELECT oid FROM pg_namespace WHERE nspname = $2)
                            AND p.proname LIKE 'partkeeper\_redirect\_%'
                            AND NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgfoid = p.oid)), '{}')
          FROM pg_class c WHERE c.oid = to_regclass($1)
        "#,
    )
    .bind(default.name.quoted())
    .bind(&table.name.schema)
    .persistent(false)
    .fetch_one(&mut *conn)
    .await?;
    let schemas: Vec<&str> = planned.iter().map(|q| q.schema.as_str()).collect();
    let names: Vec<&str> = planned.iter().map(|q| q.name.as_str()).collect();
    let in_progress: Vec<(String, String)> = sqlx::query_as(
        "SELECT n.nspname::text, c.relname::text
           FROM unnest($1::text[], $2::text[]) AS w(schema, name)
           JOIN pg_namespace n ON n.nspname = w.schema
           JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = w.name
          WHERE c.relkind = 'r' AND NOT c.relispartition
            AND EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = c.oid AND k.conname = $3)",
    )
    .bind(&schemas)
    .bind(&names)
    .bind(ddl::BOUND_CHECK)
    .persistent(false)
    .fetch_all(&mut *conn)
    .await?;
    Ok(DefaultFacts {
        size_bytes,
        in_progress: in_progress
            .into_iter()
            .map(|(s, n)| QualifiedName::new(s, n))
            .collect(),
        constraints: constraints
            .iter()
            .filter_map(|c| {
                let (name, valid) = c.rsplit_once(':')?;
                Some((name.to_string(), valid == "true"))
            })
            .collect(),
        triggers,
        orphan_functions: functions
            .into_iter()
            .map(|f| table.name.sibling(f))
            .collect(),
    })
}

/// Rows of `[from, to)` in the default, counted up to `cap` (so the work is bounded: the scan
/// stops at the `cap`-th row found; with an index on the key it reads only those).
pub async fn rows_in_range(
    conn: &mut PgConnection,
    table: &ManagedTable,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    cap: u64,
) -> Result<u64, sqlx::Error> {
    let Some(default) = &table.default else {
        return Ok(0);
    };
    // The bounds as constants (rendered from our own calendar, as in the DDL): the planner
    // then estimates the range from statistics and picks the key's index when there is one.
    let lit = |v: DateTime<Utc>| {
        render_literal(v, table.key_type).map_err(|e| sqlx::Error::Protocol(e.to_string()))
    };
    let key = quote_ident(&table.column);
    let n: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM (SELECT 1 FROM {} WHERE {key} >= {} AND {key} < {} LIMIT $1) s",
        default.name.quoted(),
        lit(from)?,
        lit(to)?
    ))
    .bind(cap.min(i64::MAX as u64) as i64)
    .persistent(false)
    .fetch_one(&mut *conn)
    .await?;
    Ok(n as u64)
}

/// How one create next to a default partition goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The old single transaction: move and ATTACH's scan inline (small default).
    Inline,
    /// The five short transactions of [`online_steps`]; `resume` when a crash left them half done.
    Online { resume: bool },
    /// More rows of the period than `default_move_limit`: left for `partkeeper drain`.
    Waiting { rows_at_least: u64 },
}

/// Chooses the route for a create of `partition` whose range holds `rows` rows in the default
/// (counted up to `limit + 1`).
pub fn route(facts: &DefaultFacts, partition: &QualifiedName, rows: u64, limit: u64) -> Route {
    if rows > limit {
        Route::Waiting {
            rows_at_least: rows,
        }
    } else if facts.resumes(partition) {
        Route::Online { resume: true }
    } else if facts.size_bytes <= SMALL_DEFAULT_BYTES && rows <= INLINE_MOVE_ROWS {
        Route::Inline
    } else {
        Route::Online { resume: false }
    }
}

/// The steps of an online create, in order; each is one transaction.
#[derive(Debug, Clone)]
pub struct OnlineSteps {
    pub prepare: Step,
    /// Moves every row of the range (or, with a batch size, at most that many per run).
    pub move_rows: Step,
    pub exclude: Step,
    pub validate: Step,
    pub attach: Step,
}

impl OnlineSteps {
    /// All steps for one maintenance action: `exclude`/`validate` left out when the catalog says
    /// they are done already (a resumed attach).
    pub fn for_pass(self, exclude_state: Option<bool>) -> Vec<Step> {
        let mut v = vec![self.prepare, self.move_rows];
        match exclude_state {
            None => v.extend([self.exclude, self.validate]),
            Some(false) => v.push(self.validate),
            Some(true) => {}
        }
        v.push(self.attach);
        v
    }
}

fn tx(statements: Vec<String>) -> Step {
    Step {
        transactional: true,
        statements,
    }
}

/// Renders [`OnlineSteps`] for creating `partition` for `[from, to)` next to `table`'s default.
/// `resume`: the table exists already (an interrupted attach); `batch`: rows per move.
pub fn online_steps(
    table: &ManagedTable,
    tpl: &Template,
    partition: &QualifiedName,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    resume: bool,
    batch: Option<u64>,
) -> Result<OnlineSteps, BoundsError> {
    let default = table
        .default
        .as_ref()
        .map(|d| d.name.quoted())
        .unwrap_or_default();
    let parent = table.name.quoted();
    let new = partition.quoted();
    let key = quote_ident(&table.column);
    let (lo, hi) = (
        render_literal(from, table.key_type)?,
        render_literal(to, table.key_type)?,
    );
    let range = render_range(from, to, table.key_type)?;
    let exclude = quote_ident(&helper_name(EXCLUDE, partition));
    let trigger = quote_ident(&helper_name(REDIRECT, partition));
    let function = table
        .name
        .sibling(helper_name(REDIRECT, partition))
        .quoted();
    let cols = tpl
        .columns
        .iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ");

    let mut prepare = Vec::new();
    if !resume {
        // The parent's indexes come with the table (ATTACH adopts them): rows sent here before
        // the attach are checked for uniqueness at once, and ATTACH builds nothing under lock.
        let like = format!("(LIKE {parent} ");
        prepare.extend(ddl::new_table(table, tpl, partition).into_iter().map(|s| {
            if s.starts_with("CREATE TABLE") {
                s.replacen(&like, &format!("(LIKE {parent} INCLUDING INDEXES "), 1)
            } else {
                s
            }
        }));
        prepare.push(format!(
            "ALTER TABLE {new} ADD CONSTRAINT {} CHECK ({key} IS NOT NULL AND {key} >= {lo} AND {key} < {hi})",
            quote_ident(ddl::BOUND_CHECK)
        ));
    }
    // Generic body, fixed text: the target and the columns arrive as trigger arguments (quoted
    // identifiers, written by us). search_path pinned so nothing of the caller's is resolved.
    prepare.push(format!(
        "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog AS $partkeeper$
BEGIN
  EXECUTE format('INSERT INTO %s (%s) SELECT %s FROM (SELECT ($1).*) r', TG_ARGV[0], TG_ARGV[1], TG_ARGV[1]) USING NEW;
  RETURN NULL;
END
$partkeeper$"
    ));
    prepare.push(format!("DROP TRIGGER IF EXISTS {trigger} ON {default}"));
    prepare.push(format!(
        "CREATE TRIGGER {trigger} BEFORE INSERT ON {default} FOR EACH ROW \
         WHEN (NEW.{key} >= {lo} AND NEW.{key} < {hi}) EXECUTE FUNCTION {function}({}, {})",
        quote_literal(&new),
        quote_literal(&cols)
    ));

    let mut moving = format!("WITH moved AS (DELETE FROM {default} WHERE ");
    match batch {
        None => {
            let _ = write!(moving, "{key} >= {lo} AND {key} < {hi}");
        }
        Some(n) => {
            let _ = write!(
                moving,
                "ctid = ANY (ARRAY(SELECT ctid FROM {default} WHERE {key} >= {lo} AND {key} < {hi} LIMIT {n}))"
            );
        }
    }
    let _ = write!(
        moving,
        " RETURNING {cols}) INSERT INTO {new} ({cols}) SELECT {cols} FROM moved"
    );

    let mut attach = vec![
        format!("LOCK TABLE {parent} IN SHARE ROW EXCLUSIVE MODE"),
        format!("ALTER TABLE {parent} ATTACH PARTITION {new} {range}"),
        format!("DROP TRIGGER IF EXISTS {trigger} ON {default}"),
        format!("DROP FUNCTION IF EXISTS {function}()"),
        format!("ALTER TABLE {default} DROP CONSTRAINT IF EXISTS {exclude}"),
        format!(
            "ALTER TABLE {new} DROP CONSTRAINT IF EXISTS {}",
            quote_ident(ddl::BOUND_CHECK)
        ),
    ];
    attach.extend(ddl::publications(tpl, partition));

    Ok(OnlineSteps {
        prepare: tx(prepare),
        move_rows: tx(vec![moving]),
        exclude: tx(vec![
            format!("ALTER TABLE {default} DROP CONSTRAINT IF EXISTS {exclude}"),
            format!(
                "ALTER TABLE {default} ADD CONSTRAINT {exclude} CHECK ({key} IS NULL OR {key} < {lo} OR {key} >= {hi}) NOT VALID"
            ),
        ]),
        validate: tx(vec![format!(
            "ALTER TABLE {default} VALIDATE CONSTRAINT {exclude}"
        )]),
        attach: tx(attach),
    })
}

/// What a pass decided about the creates next to one table's default partition.
#[derive(Debug, Clone, Default)]
pub struct Triage {
    pub facts: DefaultFacts,
    /// The route of each create left in the plan.
    pub routes: Vec<(QualifiedName, Route)>,
    /// Periods left for `partkeeper drain`: (partition, from, to, rows counted up to limit + 1).
    pub waiting: Vec<(QualifiedName, DateTime<Utc>, DateTime<Utc>, u64)>,
}

impl Triage {
    pub fn route_of(&self, partition: &QualifiedName) -> Route {
        self.routes
            .iter()
            .find(|(p, _)| p == partition)
            .map(|(_, r)| *r)
            .unwrap_or(Route::Inline)
    }

    /// The rows waiting in all (each period counted up to `limit + 1`).
    pub fn rows_waiting(&self) -> u64 {
        self.waiting.iter().map(|w| w.3).sum()
    }

    /// The problem `check` reports and the note `maintain` prints for each waiting period.
    pub fn messages(&self, table: &ManagedTable, limit: u64) -> Vec<String> {
        let default = table
            .default
            .as_ref()
            .map(|d| d.name.to_string())
            .unwrap_or_default();
        self.waiting
            .iter()
            .map(|(p, from, to, rows)| {
                format!(
                    "{} row(s) of {} wait in the default partition {default} (default_move_limit = {limit}): {p} is not created until they are moved; run `partkeeper drain --table {}` (try --dry-run first)",
                    if *rows > limit { format!("more than {limit}") } else { rows.to_string() },
                    crate::ddl::describe_range(*from, *to, table.key_type),
                    table.name
                )
            })
            .collect()
    }
}

/// Reads the default's facts, counts each planned create's rows in the default (bounded by the
/// limit) and routes it; creates above the limit are taken out of `actions`.
pub async fn triage(
    conn: &mut PgConnection,
    table: &ManagedTable,
    limit: u64,
    actions: &mut Vec<crate::plan::Action>,
) -> Result<Triage, sqlx::Error> {
    use crate::plan::Action;
    if table.default.is_none() {
        return Ok(Triage::default());
    }
    let planned: Vec<QualifiedName> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Create { partition, .. } => Some(partition.clone()),
            _ => None,
        })
        .collect();
    let facts = read_facts(conn, table, &planned).await?;
    let mut out = Triage {
        facts,
        ..Triage::default()
    };
    let mut kept = Vec::with_capacity(actions.len());
    for a in actions.drain(..) {
        if let Action::Create {
            partition,
            from,
            to,
        } = &a
        {
            let rows = rows_in_range(conn, table, *from, *to, limit.saturating_add(1)).await?;
            let r = route(&out.facts, partition, rows, limit);
            if let Route::Waiting { rows_at_least } = r {
                out.waiting
                    .push((partition.clone(), *from, *to, rows_at_least));
                continue;
            }
            out.routes.push((partition.clone(), r));
        }
        kept.push(a);
    }
    *actions = kept;
    Ok(out)
}

/// Puts what [`triage`] found into a health verdict: each waiting period's problem replaces the
/// planner's "maintain would create" (maintain will not), and an interrupted attach is a problem
/// until the next pass finishes it.
pub fn apply_to_health(
    health: &mut crate::check::TableHealth,
    triage: &Triage,
    table: &ManagedTable,
    limit: u64,
) {
    for (p, ..) in &triage.waiting {
        let planned = format!("(maintain would create {p})");
        health.problems.retain(|x| !x.ends_with(&planned));
    }
    health.problems.extend(triage.messages(table, limit));
    health.default_rows_waiting = triage.rows_waiting();
    for p in &triage.facts.in_progress {
        health.problems.push(format!(
            "{p} is an interrupted attach (a table not yet attached, holding the rows of its period that were moved or written meanwhile; they are not visible through {} until it is attached): `partkeeper maintain` finishes it",
            table.name
        ));
    }
}

/// The health of every resolved table the way `check` and the refresher report it: the pure
/// verdict plus the default partition's bounded row count, waiting periods and leftovers.
pub async fn assess_all(
    conn: &mut PgConnection,
    tables: &[(&ManagedTable, &crate::config::TablePolicy)],
    now: DateTime<Utc>,
    version: i32,
) -> Result<Vec<crate::check::TableHealth>, sqlx::Error> {
    let defaults: Vec<QualifiedName> = tables
        .iter()
        .filter_map(|(t, _)| t.default.as_ref().map(|d| d.name.clone()))
        .collect();
    let mut counts = default_rows(conn, &defaults).await?.into_iter();
    let mut out = Vec::with_capacity(tables.len());
    for (t, policy) in tables {
        let rows = t
            .default
            .as_ref()
            .and_then(|_| counts.next())
            .map(|(n, _)| n);
        let mut health = crate::check::assess(t, policy, now, version, rows);
        if t.default.is_some() {
            let mut actions = crate::plan::plan(t, policy, now, version).actions;
            let tr = triage(conn, t, policy.default_move_limit, &mut actions).await?;
            apply_to_health(&mut health, &tr, t, policy.default_move_limit);
        }
        out.push(health);
    }
    Ok(out)
}

/// Drops helpers of interrupted attaches that no planned create resumes: exclusion checks and
/// redirect triggers on the default, and redirect functions no trigger uses. Empty when there
/// is nothing to clean.
pub fn cleanup_steps(table: &ManagedTable, facts: &DefaultFacts) -> Vec<String> {
    let Some(default) = &table.default else {
        return Vec::new();
    };
    let kept = |kind: &str, name: &str| {
        facts
            .in_progress
            .iter()
            .any(|p| helper_name(kind, p) == name)
    };
    let mut s = Vec::new();
    for t in &facts.triggers {
        if t.starts_with("partkeeper_redirect_") && !kept(REDIRECT, t) {
            s.push(format!(
                "DROP TRIGGER IF EXISTS {} ON {}",
                quote_ident(t),
                default.name.quoted()
            ));
        }
    }
    for (c, _) in &facts.constraints {
        if c.starts_with("partkeeper_exclude_") && !kept(EXCLUDE, c) {
            s.push(format!(
                "ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}",
                default.name.quoted(),
                quote_ident(c)
            ));
        }
    }
    for f in &facts.orphan_functions {
        if !kept(REDIRECT, &f.name) {
            s.push(format!("DROP FUNCTION IF EXISTS {}()", f.quoted()));
        }
    }
    s
}

/// Rows in each of `defaults`, with bounded work: exact up to [`EXACT_ROWS_UP_TO`] (a count over
/// a `LIMIT` subquery, which stops reading there); above, an estimate: the live-tuple count of the
/// statistics system (`n_live_tup`, kept current by every insert and delete), else the planner's
/// way (`reltuples / relpages` scaled to the relation's current size); never less than the exact
/// lower bound. When `n_live_tup` is already far above the bound the count is skipped (a stats
/// reset only makes it smaller, so it never hides a small default). Returns (rows, exact).
pub async fn default_rows(
    conn: &mut PgConnection,
    defaults: &[QualifiedName],
) -> Result<Vec<(i64, bool)>, sqlx::Error> {
    if defaults.is_empty() {
        return Ok(Vec::new());
    }
    let cap = EXACT_ROWS_UP_TO + 1;
    let names: Vec<String> = defaults.iter().map(QualifiedName::quoted).collect();
    let stats: Vec<(String, i64, f64)> = sqlx::query_as(
        "SELECT w.name, COALESCE(pg_stat_get_live_tuples(c.oid), 0)::int8,
                CASE WHEN c.relpages > 0 AND c.reltuples >= 0
                     THEN c.reltuples / c.relpages * (pg_relation_size(c.oid) / current_setting('block_size')::float8)
                     ELSE -1 END::float8
           FROM unnest($1::text[]) AS w(name) JOIN pg_class c ON c.oid = to_regclass(w.name)",
    )
    .bind(&names)
    .persistent(false)
    .fetch_all(&mut *conn)
    .await?;
    let stat = |q: &str| {
        stats
            .iter()
            .find(|(n, ..)| n == q)
            .map(|(_, live, planner)| (*live, *planner))
            .unwrap_or((0, -1.0))
    };
    let estimate = |q: &str| {
        let (live, planner) = stat(q);
        if live > 0 {
            live
        } else {
            planner.round() as i64
        }
    };
    let to_count: Vec<&QualifiedName> = defaults
        .iter()
        .filter(|d| stat(&d.quoted()).0 <= 2 * cap)
        .collect();
    let counts: Vec<(i32, i64)> = if to_count.is_empty() {
        Vec::new()
    } else {
        let sql = to_count
            .iter()
            .enumerate()
            .map(|(i, r)| {
                format!(
                    "SELECT {i} AS i, (SELECT count(*) FROM (SELECT 1 FROM {} LIMIT {cap}) s) AS n",
                    r.quoted()
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        sqlx::query_as(&format!("SELECT i, n FROM ({sql}) s ORDER BY i"))
            .persistent(false)
            .fetch_all(&mut *conn)
            .await?
    };
    Ok(defaults
        .iter()
        .map(|d| {
            let q = d.quoted();
            let counted = to_count
                .iter()
                .position(|c| c.quoted() == q)
                .and_then(|i| counts.get(i))
                .map(|(_, n)| *n);
            match counted {
                Some(n) if n < cap => (n, true),
                _ => (estimate(&q).max(cap), false),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bounds::{BoundValue, KeyType};
    use crate::catalog::Partition;
    use chrono::TimeZone;

    fn table() -> ManagedTable {
        ManagedTable {
            name: QualifiedName::new("public", "ev"),
            column: "d".into(),
            key_type: KeyType::Date,
            owner: "app".into(),
            partitions: vec![],
            default: Some(Partition {
                name: QualifiedName::new("public", "ev_default"),
                from: BoundValue::MinValue,
                to: BoundValue::MaxValue,
                rows_estimate: 0.0,
                size_bytes: None,
                detach_pending: false,
                bound_sql: "DEFAULT".into(),
            }),
            values: None,
        }
    }

    fn steps(resume: bool, batch: Option<u64>) -> OnlineSteps {
        let tpl = Template {
            columns: vec!["id".into(), "d".into()],
            ..Template::default()
        };
        online_steps(
            &table(),
            &tpl,
            &QualifiedName::new("public", "ev_2026_12"),
            Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap(),
            resume,
            batch,
        )
        .unwrap()
    }

    #[test]
    fn the_exclusion_check_is_the_negated_partition_constraint_and_lets_null_keys_stay() {
        let s = steps(false, None);
        let add = &s.exclude.statements[1];
        assert!(
            add.ends_with(
                "CHECK (\"d\" IS NULL OR \"d\" < '2026-12-01' OR \"d\" >= '2027-01-01') NOT VALID"
            ),
            "{add}"
        );
        assert!(add.contains("\"partkeeper_exclude_ev_2026_12\""));
        assert_eq!(
            s.validate.statements,
            ["ALTER TABLE \"public\".\"ev_default\" VALIDATE CONSTRAINT \"partkeeper_exclude_ev_2026_12\""]
        );
    }

    #[test]
    fn the_attach_holds_writes_only_in_its_own_short_transaction_and_removes_every_helper() {
        let s = steps(false, None);
        let a = &s.attach.statements;
        assert!(a[0].starts_with("LOCK TABLE \"public\".\"ev\" IN SHARE ROW EXCLUSIVE MODE"));
        assert_eq!(
            a[1],
            "ALTER TABLE \"public\".\"ev\" ATTACH PARTITION \"public\".\"ev_2026_12\" FOR VALUES FROM ('2026-12-01') TO ('2027-01-01')"
        );
        let rest = a[2..].join("\n");
        for helper in [
            "DROP TRIGGER IF EXISTS \"partkeeper_redirect_ev_2026_12\"",
            "DROP FUNCTION IF EXISTS \"public\".\"partkeeper_redirect_ev_2026_12\"()",
            "DROP CONSTRAINT IF EXISTS \"partkeeper_exclude_ev_2026_12\"",
            "DROP CONSTRAINT IF EXISTS \"partkeeper_bound_check\"",
        ] {
            assert!(rest.contains(helper), "{helper} missing from\n{rest}");
        }
        assert!(!s
            .prepare
            .statements
            .iter()
            .chain(&s.move_rows.statements)
            .any(|x| x.contains("LOCK TABLE")));
    }

    #[test]
    fn a_resumed_attach_keeps_its_table_and_skips_what_is_done() {
        let fresh = steps(false, None);
        assert!(fresh.prepare.statements[0].contains("INCLUDING INDEXES"));
        let resumed = steps(true, None);
        assert!(!resumed
            .prepare
            .statements
            .iter()
            .any(|s| s.starts_with("CREATE TABLE") || s.contains("ADD CONSTRAINT")));
        assert_eq!(resumed.clone().for_pass(Some(true)).len(), 3);
        assert_eq!(resumed.clone().for_pass(Some(false)).len(), 4);
        assert_eq!(resumed.for_pass(None).len(), 5);
    }

    #[test]
    fn a_batched_move_takes_at_most_the_batch() {
        let s = steps(false, Some(5000));
        assert!(s.move_rows.statements[0].contains("LIMIT 5000"));
        assert!(s.move_rows.statements[0].starts_with("WITH moved AS"));
    }

    #[test]
    fn routes() {
        let p = QualifiedName::new("public", "ev_2026_12");
        let mut f = DefaultFacts::default();
        assert_eq!(route(&f, &p, 0, 100), Route::Inline);
        assert_eq!(
            route(&f, &p, 101, 100),
            Route::Waiting { rows_at_least: 101 }
        );
        f.size_bytes = SMALL_DEFAULT_BYTES + 1;
        assert_eq!(route(&f, &p, 100, 100), Route::Online { resume: false });
        f.size_bytes = 0;
        assert_eq!(
            route(&f, &p, INLINE_MOVE_ROWS + 1, 100_000),
            Route::Online { resume: false }
        );
        f.in_progress.push(p.clone());
        assert_eq!(route(&f, &p, 0, 100), Route::Online { resume: true });
    }

    #[test]
    fn helpers_of_no_planned_attach_are_cleaned_up_and_the_others_kept() {
        let kept = QualifiedName::new("public", "ev_2026_12");
        let f = DefaultFacts {
            in_progress: vec![kept.clone()],
            constraints: vec![
                ("partkeeper_exclude_ev_2026_12".into(), true),
                ("partkeeper_exclude_ev_2027_01".into(), false),
            ],
            triggers: vec![
                "partkeeper_redirect_ev_2026_12".into(),
                "partkeeper_redirect_ev_2027_01".into(),
            ],
            orphan_functions: vec![QualifiedName::new(
                "public",
                "partkeeper_redirect_ev_2027_01",
            )],
            ..DefaultFacts::default()
        };
        let s = cleanup_steps(&table(), &f).join("\n");
        assert!(!s.contains("2026_12"), "{s}");
        assert_eq!(s.matches("2027_01").count(), 3, "{s}");
    }

    #[test]
    fn long_names_get_a_hash() {
        let long = QualifiedName::new("public", "x".repeat(60));
        let n = helper_name("redirect", &long);
        assert!(
            n.len() <= 63 && n.starts_with("partkeeper_redirect_"),
            "{n}"
        );
        assert_eq!(n, helper_name("redirect", &long));
    }
}

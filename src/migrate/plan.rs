//! Preflight: judges an [`Inventory`] against the table's policy and the command-line options.
//! Pure — the catalog was read beforehand — so every blocker and every carried-over object is
//! unit-tested without a database. The outcome is blockers (with what to do), warnings (what
//! will change), the partitions to create, and the [`Blueprint`] the later steps act on.

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;

use super::definition;
use super::inventory::{DataFacts, Inventory};
use super::{Blueprint, IndexNames, Mode, OwnedSequence, UserTrigger, STATE_SCHEMA};
use crate::bounds::KeyType;
use crate::config::TablePolicy;
use crate::coverage::{self, TooMany};
use crate::ident::{derived_name, QualifiedName};
use crate::keys::Width;
use crate::plan::Clock;

/// More partitions than this for one table means an outlier key (a typo'd year 2205) rather
/// than real data; the user should look before thousands of tables are made.
pub const MAX_PARTITIONS: usize = 2000;

/// Copy throughput used for the time estimate, in bytes of table + indexes per second, measured
/// by `tests/integration/migrate_bench.rs` (10 million rows, 1.6 GB, 2 cores): online 68–82 s
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

fn partitioned_name(table: &QualifiedName) -> String {
    derived_name(&table.name, "partitioned")
}

/// Judges the inventory. `taken` are relations that already exist under names the migration
/// would create (from [`names_to_create`] and the partition names).
pub fn judge(
    inv: &Inventory,
    facts: Option<&DataFacts>,
    policy: &TablePolicy,
    opts: &Options,
    taken: &[QualifiedName],
) -> Preflight {
    let mut p = Preflight {
        blockers: Vec::new(),
        warnings: Vec::new(),
        carried: Vec::new(),
        none_found: Vec::new(),
        key_type: None,
        partitions: Vec::new(),
        blueprint: None,
        estimate_secs: 0.0,
    };
    let t = &inv.table;
    let key = policy.column.as_str();
    match inv.relkind.as_str() {
        "r" => {}
        "p" => {
            p.blockers.push(format!(
                "{t} is already partitioned; nothing to convert (use `partkeeper maintain` and `check` for it)"
            ));
            return p;
        }
        other => {
            p.blockers.push(format!(
                "{t} is not a plain table (relkind {other:?}); only ordinary tables can be converted"
            ));
            return p;
        }
    }
    if inv.is_partition || inv.has_inheritance {
        p.blockers.push(format!(
            "{t} takes part in table inheritance (it has a parent or children); detach them first, partkeeper converts stand-alone tables only"
        ));
    }
    let Some(col) = inv.column(key) else {
        p.blockers.push(format!(
            "{t} has no column {key:?}; set tables[].column to the date, timestamp or timestamptz column to partition by"
        ));
        return p;
    };
    // maintain manages integer, epoch and uuid keys (SPEC part 2); the conversion still reads
    // the data range as time, so it takes the three time types only.
    // Every key kind of SPEC part 2, read as maintain reads it (epoch and uuid as instants).
    let integer_key = matches!(policy.interval, Width::Values(_)) && policy.epoch.is_none();
    let Some(column_type) = KeyType::from_pg_type(&col.type_name) else {
        p.blockers.push(format!(
            "the partition key {t}.{key} is of type {}; partkeeper partitions by date, timestamp, timestamptz, smallint, integer, bigint or uuid",
            col.type_name
        ));
        return p;
    };
    let key_type = match crate::catalog::key_for_policy(column_type, &col.type_name, policy) {
        Ok(k) => k,
        Err(e) => {
            p.blockers.push(e);
            return p;
        }
    };
    if integer_key
        && !inv.indexes.iter().any(|i| {
            let cols = i.definition.rsplit_once(" USING ").map_or("", |(_, c)| c);
            let first = cols
                .split_once('(')
                .map_or("", |(_, c)| c)
                .split([',', ')'])
                .next()
                .unwrap_or("")
                .trim();
            first == crate::ident::quote_ident(key) || first == key
        })
    {
        p.warnings.push(format!(
            "no index leads with {key}: after the conversion maintain reads max({key}) by scanning the default and the highest partitions on every pass; create one, e.g. CREATE INDEX ON {t} ({})",
            crate::ident::quote_ident(key)
        ));
    }
    p.key_type = Some(key_type);
    if !col.generated.is_empty() {
        p.warnings.push(format!(
            "the key {key} is a generated column; its value is computed from the others in both tables"
        ));
    }

    // Keys: the new table's PRIMARY KEY and UNIQUE constraints must contain the partition key.
    let pk = inv.primary_key();
    match pk {
        None => p.blockers.push(format!(
            "{t} has no primary key; the online copy walks and matches rows by it. Add one (e.g. ALTER TABLE {t} ADD PRIMARY KEY (id)) and plan again"
        )),
        Some(c) if c.deferrable => p.blockers.push(format!(
            "the primary key {} of {t} is DEFERRABLE, which cannot arbitrate the copy's ON CONFLICT; make it NOT DEFERRABLE first",
            c.name
        )),
        Some(_) => {}
    }
    for c in &inv.constraints {
        match c.kind.as_str() {
            "p" | "u" => {
                let has_key = c.columns.iter().any(|x| x == key);
                let what = if c.kind == "p" { "primary key" } else { "unique constraint" };
                if has_key {
                    p.carried.push(format!("{what} {} {}", c.name, c.definition));
                } else {
                    let mut cols = c.columns.clone();
                    cols.push(key.to_string());
                    p.carried.push(format!("{what} {} {}", c.name, c.definition));
                    p.warnings.push(format!(
                        "{what} {} ({}) becomes ({}): on a partitioned table it must contain the partition key, so {} alone is no longer enforced unique across partitions (two rows may share it if their {key} differs); INSERT ... ON CONFLICT ({}) in the application must name ({})",
                        c.name,
                        c.columns.join(", "),
                        cols.join(", "),
                        c.columns.join(", "),
                        c.columns.join(", "),
                        cols.join(", ")
                    ));
                }
            }
            "x" => p.blockers.push(format!(
                "exclusion constraint {} cannot be carried to a partitioned table by partkeeper; drop it (and re-create it per partition) first",
                c.name
            )),
            "c" | "f" if c.definition.ends_with("NOT VALID") => p.blockers.push(format!(
                "constraint {} is NOT VALID ({}); rows that break it could not be copied into a table where it holds. VALIDATE it first (ALTER TABLE {t} VALIDATE CONSTRAINT {}) or drop it",
                c.name, c.definition, c.name
            )),
            "c" => p.carried.push(format!("check constraint {} {}", c.name, c.definition)),
            "f" => p.carried.push(format!(
                "foreign key {} {} (re-created on the new table)",
                c.name, c.definition
            )),
            _ => {}
        }
    }
    for c in inv.columns.iter().filter(|c| c.not_null) {
        p.carried.push(format!("NOT NULL {}", c.name));
    }
    for c in inv.columns.iter().filter(|c| c.default.is_some()) {
        p.carried.push(format!(
            "default {} = {}",
            c.name,
            c.default.clone().unwrap_or_default()
        ));
    }
    for i in &inv.indexes {
        if !i.valid {
            p.blockers.push(format!(
                "index {} is INVALID (an interrupted CREATE INDEX CONCURRENTLY); drop or REINDEX it first",
                i.name
            ));
            continue;
        }
        if i.constraint {
            continue;
        }
        match (definition::index_tail(i, &inv.printed_name), i.unique) {
            (None, _) => p.blockers.push(format!(
                "cannot read the definition of index {} ({}); drop it before converting and re-create it afterwards",
                i.name, i.definition
            )),
            (Some(tail), true) => match definition::extend_key_list(tail, &inv.printed_key) {
                Some(extended) => {
                    p.carried.push(format!("unique index {} (becomes USING {extended})", i.name));
                    p.warnings.push(format!(
                        "unique index {} gains the partition key: its columns are no longer unique on their own",
                        i.name
                    ));
                }
                None => p.blockers.push(format!(
                    "unique index {} ({}) cannot be extended with the partition key (it indexes an expression); drop it or replace it with a unique constraint over columns",
                    i.name, i.definition
                )),
            },
            (Some(_), false) => p.carried.push(format!("index {}: {}", i.name, i.definition)),
        }
    }
    let unique_sets: Vec<Vec<String>> = inv
        .constraints
        .iter()
        .filter(|c| c.kind == "p" || c.kind == "u")
        .map(|c| c.columns.clone())
        .collect();
    for fk in &inv.inbound_fks {
        let pk_columns = pk.map(|c| c.columns.clone()).unwrap_or_default();
        match super::foreign_keys::judge(fk, t, key, &pk_columns, &unique_sets) {
            Ok(carried) => p.carried.push(carried),
            Err(blocker) => p.blockers.push(blocker),
        }
    }
    let partitioned = t.sibling(partitioned_name(t));
    let mut user_triggers = Vec::new();
    for tr in &inv.triggers {
        match definition::retarget_trigger(&tr.definition, &inv.printed_name, &partitioned.quoted()) {
            Some(create_on_new) => {
                p.carried.push(format!("trigger {}: {}", tr.name, tr.definition));
                user_triggers.push(UserTrigger {
                    name: tr.name.clone(),
                    enabled: tr.enabled.clone(),
                    create_on_new,
                });
            }
            None => p.blockers.push(format!(
                "cannot re-create trigger {} ({}) automatically; drop it before converting and re-create it afterwards",
                tr.name, tr.definition
            )),
        }
    }
    if !user_triggers.is_empty() {
        p.warnings.push(
            "user triggers are re-created on the new table; while the backup is kept they are disabled on it, so rows mirrored into it do not fire them twice"
                .into(),
        );
    }
    for v in &inv.views {
        if v.kind == "m" {
            p.blockers.push(format!(
                "materialized view {} reads {t}; it would keep reading the backup. Drop it before converting and re-create it afterwards",
                v.name
            ));
        } else {
            p.carried.push(format!(
                "view {} (re-pointed at the new table inside the swap)",
                v.name
            ));
        }
    }
    for r in &inv.rules {
        p.blockers.push(format!(
            "rule {r} on {t} cannot be carried over; drop it before converting and re-create it afterwards"
        ));
    }
    for s in &inv.sequences {
        if s.dependency == "i" {
            p.carried.push(format!(
                "identity column {} (the new table's identity continues from {})",
                s.column, s.sequence
            ));
        } else {
            p.carried.push(format!(
                "sequence {} owned by {} (ownership moves to the new table; ids continue)",
                s.sequence, s.column
            ));
        }
    }
    p.carried.push(format!("owner {}", inv.owner));
    for g in &inv.grants {
        p.carried.push(format!(
            "grant {} to {}{}",
            g.privilege,
            g.grantee.as_deref().unwrap_or("PUBLIC"),
            if g.grantable {
                " with grant option"
            } else {
                ""
            }
        ));
    }
    for g in &inv.column_grants {
        p.carried.push(format!(
            "grant {} ({}) to {}",
            g.grant.privilege,
            g.column,
            g.grant.grantee.as_deref().unwrap_or("PUBLIC")
        ));
    }
    if inv.rls_enabled {
        p.carried.push(format!(
            "row-level security enabled{}",
            if inv.rls_forced { " and forced" } else { "" }
        ));
    }
    for pol in &inv.policies {
        p.carried.push(format!(
            "policy {} {} FOR {} TO {}",
            pol.name,
            if pol.permissive {
                "PERMISSIVE"
            } else {
                "RESTRICTIVE"
            },
            pol.command,
            pol.roles.join(", ")
        ));
    }
    if inv.rls_forced {
        p.warnings.push(
            "FORCE ROW LEVEL SECURITY: the sync functions run as the migrating role; if that role is neither a superuser nor allowed by the policies, mirrored writes fail. Run the migration as a superuser or the table owner with BYPASSRLS"
                .into(),
        );
    }
    for pubname in &inv.publications {
        p.carried.push(format!("publication {pubname}"));
    }
    if !inv.publications.is_empty() || !inv.implicit_publications.is_empty() {
        p.warnings.push(format!(
            "{t} is published ({}); subscribers see a new table after the swap: create it on the subscriber as partitioned (or publish with publish_via_partition_root) and refresh the subscription",
            inv.publications.iter().chain(&inv.implicit_publications).cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    match inv.replica_identity.as_str() {
        "f" | "n" | "d" => {}
        _ => p.warnings.push(
            "REPLICA IDENTITY USING INDEX is not carried over; the new table uses its primary key"
                .into(),
        ),
    }
    if let Some(c) = &inv.comment {
        p.carried.push(format!("comment {c:?}"));
    }
    if !inv.reloptions.is_empty() {
        p.carried.push(format!(
            "storage options {} (on every partition)",
            inv.reloptions.join(", ")
        ));
    }

    let kinds: [(&'static str, bool); 12] = [
        (
            "unique constraints",
            !inv.constraints.iter().any(|c| c.kind == "u"),
        ),
        (
            "check constraints",
            !inv.constraints.iter().any(|c| c.kind == "c"),
        ),
        (
            "foreign keys out",
            !inv.constraints.iter().any(|c| c.kind == "f"),
        ),
        ("foreign keys in", inv.inbound_fks.is_empty()),
        ("triggers", inv.triggers.is_empty()),
        ("views", inv.views.is_empty()),
        (
            "identity columns or owned sequences",
            inv.sequences.is_empty(),
        ),
        (
            "grants to other roles",
            inv.grants.is_empty() && inv.column_grants.is_empty(),
        ),
        (
            "row-level security or policies",
            !inv.rls_enabled && inv.policies.is_empty(),
        ),
        (
            "publications",
            inv.publications.is_empty() && inv.implicit_publications.is_empty(),
        ),
        ("comment", inv.comment.is_none()),
        ("storage options", inv.reloptions.is_empty()),
    ];
    p.none_found = kinds
        .iter()
        .filter(|(_, none)| *none)
        .map(|(k, _)| *k)
        .collect();
    if inv.replica_identity == "d" {
        p.none_found.push("non-default replica identity");
    }

    // Rows: NULL keys, range, partitions.
    // Integer keys: the position is max(key) (read below); the clock's current period follows.
    let mut clock = Clock::new(policy, key_type, opts.now);
    let mut lo = None;
    let mut hi = None;
    if let Some(f) = facts {
        if f.null_keys > 0 {
            match &opts.fill {
                None => p.blockers.push(format!(
                    "{} row(s) have a NULL {key}; a partitioned table cannot hold them. Pass --fill-null-with '<SQL expression>' (e.g. --fill-null-with '\"createdAt\"::date') to fill them during the copy, or UPDATE them first",
                    f.null_keys
                )),
                Some(fill) if f.fill_still_null > 0 => p.blockers.push(format!(
                    "--fill-null-with {fill} leaves {} of the {} NULL-key row(s) NULL; use an expression that always gives a value, e.g. COALESCE(..., CURRENT_DATE)",
                    f.fill_still_null, f.null_keys
                )),
                Some(fill) => p.warnings.push(format!(
                    "{} row(s) with a NULL {key} get {fill} in the new table (the backup keeps them NULL)",
                    f.null_keys
                )),
            }
        }
        for v in [f.min_key, f.max_key, f.min_fill, f.max_fill]
            .into_iter()
            .flatten()
        {
            if !v.is_finite() {
                p.blockers.push(format!(
                    "{t}.{key} holds 'infinity' or '-infinity'; no range partition can hold it. Update those rows first"
                ));
                break;
            }
            let at = if integer_key {
                crate::keys::int_point(v.round() as i64)
            } else {
                epoch_to_utc(v)
            };
            lo = Some(lo.map_or(at, |l: DateTime<Utc>| l.min(at)));
            hi = Some(hi.map_or(at, |h: DateTime<Utc>| h.max(at)));
        }
    }
    if integer_key {
        let position = hi.unwrap_or(crate::keys::int_point(policy.start));
        clock = Clock::new(policy, key_type, position);
    }
    let first = lo
        .map(|l| clock.period_of(l))
        .unwrap_or(clock.current)
        .min(clock.current);
    let last_end = {
        let ahead = clock.period(policy.premake as i32 + 1);
        match hi {
            Some(h) => clock.period_after(clock.period_of(h)).max(ahead),
            None => ahead,
        }
    };
    let next = |at| clock.period_after(at);
    let cover = |end| coverage::cover(&[], first, end, MAX_PARTITIONS, next);
    let (pieces, too_many) = match cover(last_end) {
        Ok(pieces) => (pieces, false),
        Err(TooMany) => {
            let end = clock.period_after_n(first, MAX_PARTITIONS as i32);
            (cover(end).unwrap_or_default(), true)
        }
    };
    p.partitions = pieces
        .iter()
        .map(|x| PlannedPartition {
            name: t.sibling(derived_name(&t.name, &x.suffix(clock.suffix(x.period)))),
            from: x.from,
            to: x.to,
        })
        .collect();
    if too_many {
        p.blockers.push(format!(
            "the key range of {t} ({} .. {}) needs more than {MAX_PARTITIONS} partitions of {}; look for outlier values (a mistyped year) and fix them, or choose a longer interval",
            facts.and_then(|f| f.min_key_text.clone()).unwrap_or_default(),
            facts.and_then(|f| f.max_key_text.clone()).unwrap_or_default(),
            policy.interval
        ));
    }
    let default_partition = t.sibling(derived_name(&t.name, "default"));
    let mut wanted: Vec<&QualifiedName> = p.partitions.iter().map(|x| &x.name).collect();
    wanted.push(&default_partition);
    let names = names_to_create(t, inv);
    let clashes: Vec<String> = taken
        .iter()
        .filter(|q| wanted.contains(q) || names.contains(q))
        .map(ToString::to_string)
        .collect();
    if !clashes.is_empty() {
        p.blockers.push(format!(
            "these names are needed by the conversion but already taken: {}; rename or drop them (a previous attempt? see `partkeeper migrate rollback`)",
            clashes.join(", ")
        ));
    }

    let bytes = (inv.table_bytes + inv.index_bytes) as f64;
    p.estimate_secs = bytes
        / match opts.mode {
            Mode::Online => ONLINE_BYTES_PER_SEC,
            Mode::Offline => OFFLINE_BYTES_PER_SEC,
        };

    let Some(pk) = pk else {
        return p;
    };
    let mut new_pk = pk.columns.clone();
    if !new_pk.iter().any(|c| c == key) {
        new_pk.push(key.to_string());
    }
    let sibling = |suffix: &str| t.sibling(derived_name(&t.name, suffix));
    let fn_base = format!("{}_{}", t.schema, t.name);
    p.blueprint = Some(Blueprint {
        original: t.clone(),
        partitioned,
        backup: sibling("backup"),
        forward_function: QualifiedName::new(STATE_SCHEMA, derived_name(&fn_base, "forward")),
        reverse_function: QualifiedName::new(STATE_SCHEMA, derived_name(&fn_base, "reverse")),
        key: key.to_string(),
        key_sql_type: key_type.sql_name().to_string(),
        fill: opts.fill.clone(),
        pk: pk.columns.clone(),
        pk_types: pk
            .columns
            .iter()
            .map(|c| {
                inv.column(c)
                    .map(|c| c.type_name.clone())
                    .unwrap_or_default()
            })
            .collect(),
        new_pk,
        columns: inv
            .columns
            .iter()
            .filter(|c| c.generated.is_empty())
            .map(|c| c.name.clone())
            .collect(),
        no_update: inv
            .columns
            .iter()
            .filter(|c| c.identity == "a")
            .map(|c| c.name.clone())
            .collect(),
        overriding: inv.columns.iter().any(|c| c.identity == "a"),
        indexes: inv
            .indexes
            .iter()
            .map(|i| IndexNames {
                original: i.name.clone(),
                building: derived_name(&i.name, "partitioned"),
                backup: derived_name(&i.name, "backup"),
            })
            .collect(),
        sequences: inv
            .sequences
            .iter()
            .map(|s| OwnedSequence {
                sequence: s.sequence.clone(),
                column: s.column.clone(),
                identity: s.dependency == "i",
            })
            .collect(),
        user_triggers,
        publications: inv.publications.clone(),
        default_partition,
        keep_default: policy.default_partition,
        gone: (opts.mode == Mode::Online && copies_without_row_locks(inv))
            .then(|| QualifiedName::new(STATE_SCHEMA, derived_name(&fn_base, "gone"))),
        pause_autovacuum: opts.mode == Mode::Online
            && !inv
                .reloptions
                .iter()
                .any(|o| o.starts_with("autovacuum_enabled=")),
    });
    p
}

/// Whether the online copy may read without row locks ([`Blueprint::gone`]). It then may insert
/// a row version that a writer has since replaced (settled after the copy), which only the
/// primary key tolerates: another unique key or an outbound foreign key could refuse the stale
/// version (a value a writer has since moved to another row, a parent deleted since), so such
/// tables are copied with `FOR SHARE`, which reads only current versions.
pub fn copies_without_row_locks(inv: &Inventory) -> bool {
    !inv.constraints
        .iter()
        .any(|c| c.kind == "u" || c.kind == "f" || c.kind == "x")
        && !inv.indexes.iter().any(|i| i.unique && !i.primary)
}

/// Seconds since the epoch (on the table's calendar) as an instant.
fn epoch_to_utc(secs: f64) -> DateTime<Utc> {
    let whole = secs.floor();
    let nanos = ((secs - whole) * 1e9) as u32;
    Utc.timestamp_opt(whole as i64, nanos.min(999_999_999))
        .single()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::Interval;
    use crate::config::RetentionMode;
    use crate::migrate::inventory::{Column, Constraint, InboundFk, Index};
    use chrono_tz::Tz;

    fn policy() -> TablePolicy {
        TablePolicy {
            name: QualifiedName::new("public", "pricing_data"),
            column: "date".into(),
            interval: Interval::Month.into(),
            retention_values: None,
            epoch: None,
            start: 0,
            premake: 3,
            retention: None,
            retention_mode: RetentionMode::Drop,
            default_partition: false,
            timezone: Tz::UTC,
            default_move_limit: crate::config::DEFAULT_MOVE_LIMIT as u64,
            lifecycle: Default::default(),
        }
    }

    fn col(name: &str, ty: &str) -> Column {
        Column {
            name: name.into(),
            type_name: ty.into(),
            not_null: name == "id",
            identity: String::new(),
            generated: String::new(),
            default: None,
        }
    }

    fn inventory() -> Inventory {
        Inventory {
            table: QualifiedName::new("public", "pricing_data"),
            exists: true,
            relkind: "r".into(),
            owner: "app".into(),
            printed_name: "public.pricing_data".into(),
            printed_key: "date".into(),
            replica_identity: "d".into(),
            columns: vec![
                col("id", "bigint"),
                col("date", "date"),
                col("price", "numeric(10,2)"),
            ],
            constraints: vec![Constraint {
                name: "pricing_data_pkey".into(),
                kind: "p".into(),
                definition: "PRIMARY KEY (id)".into(),
                columns: vec!["id".into()],
                deferrable: false,
            }],
            indexes: vec![Index {
                name: "idx_pricing_data_date".into(),
                definition:
                    "CREATE INDEX idx_pricing_data_date ON public.pricing_data USING btree (date)"
                        .into(),
                printed_name: "idx_pricing_data_date".into(),
                unique: false,
                primary: false,
                constraint: false,
                valid: true,
                bytes: 0,
            }],
            ..Inventory::default()
        }
    }

    fn opts(fill: Option<&str>) -> Options {
        Options {
            fill: fill.map(Into::into),
            mode: Mode::Online,
            now: Utc.with_ymd_and_hms(2026, 3, 15, 12, 0, 0).unwrap(),
        }
    }

    fn facts(nulls: i64) -> DataFacts {
        DataFacts {
            null_keys: nulls,
            min_key: Some(
                Utc.with_ymd_and_hms(2025, 11, 20, 0, 0, 0)
                    .unwrap()
                    .timestamp() as f64,
            ),
            max_key: Some(
                Utc.with_ymd_and_hms(2026, 9, 2, 0, 0, 0)
                    .unwrap()
                    .timestamp() as f64,
            ),
            ..DataFacts::default()
        }
    }

    #[test]
    fn a_clean_table_gets_a_blueprint_with_the_key_added_to_the_primary_key() {
        let p = judge(&inventory(), Some(&facts(0)), &policy(), &opts(None), &[]);
        assert!(p.blockers.is_empty(), "{:?}", p.blockers);
        let b = p.blueprint.unwrap();
        assert_eq!(b.new_pk, vec!["id", "date"]);
        assert_eq!(b.partitioned.name, "pricing_data_partitioned");
        assert_eq!(b.backup.name, "pricing_data_backup");
        assert!(p
            .warnings
            .iter()
            .any(|w| w.contains("id alone is no longer enforced unique")));
    }

    #[test]
    fn partitions_span_the_data_and_premake_including_future_rows() {
        let p = judge(&inventory(), Some(&facts(0)), &policy(), &opts(None), &[]);
        let names: Vec<&str> = p.partitions.iter().map(|x| x.name.name.as_str()).collect();
        assert_eq!(names.first(), Some(&"pricing_data_2025_11"));
        // Data reaches September 2026, beyond premake (June 2026).
        assert_eq!(names.last(), Some(&"pricing_data_2026_09"));
        assert_eq!(names.len(), 11);
    }

    #[test]
    fn null_keys_block_unless_a_fill_is_given() {
        let p = judge(&inventory(), Some(&facts(3)), &policy(), &opts(None), &[]);
        assert!(
            p.blockers.iter().any(|b| b.contains("--fill-null-with")),
            "{:?}",
            p.blockers
        );
        let p = judge(
            &inventory(),
            Some(&facts(3)),
            &policy(),
            &opts(Some("\"createdAt\"::date")),
            &[],
        );
        assert!(p.blockers.is_empty(), "{:?}", p.blockers);
        let still = DataFacts {
            fill_still_null: 1,
            ..facts(3)
        };
        let p = judge(
            &inventory(),
            Some(&still),
            &policy(),
            &opts(Some("NULL")),
            &[],
        );
        assert!(p.blockers.iter().any(|b| b.contains("leaves 1")));
    }

    #[test]
    fn inbound_foreign_keys_and_matviews_block_with_advice() {
        let mut inv = inventory();
        inv.inbound_fks.push(InboundFk {
            name: "bookings_price_fk".into(),
            from_table: "bookings".into(),
            definition: "FOREIGN KEY (price_id) REFERENCES pricing_data(id)".into(),
        });
        inv.views.push(crate::migrate::inventory::View {
            name: "public.mv".into(),
            kind: "m".into(),
        });
        let p = judge(&inv, Some(&facts(0)), &policy(), &opts(None), &[]);
        assert!(p
            .blockers
            .iter()
            .any(|b| b.contains("DROP CONSTRAINT bookings_price_fk")));
        assert!(p
            .blockers
            .iter()
            .any(|b| b.contains("materialized view public.mv")));
    }

    #[test]
    fn an_already_partitioned_or_keyless_table_is_refused() {
        let mut inv = inventory();
        inv.relkind = "p".into();
        let p = judge(&inv, None, &policy(), &opts(None), &[]);
        assert!(p.blockers[0].contains("already partitioned"));
        let mut inv = inventory();
        inv.constraints.clear();
        let p = judge(&inv, None, &policy(), &opts(None), &[]);
        assert!(p.blockers.iter().any(|b| b.contains("no primary key")));
        assert!(p.blueprint.is_none());
    }

    #[test]
    fn not_valid_constraints_block() {
        let mut inv = inventory();
        inv.constraints.push(Constraint {
            name: "price_positive".into(),
            kind: "c".into(),
            definition: "CHECK ((price > (0)::numeric)) NOT VALID".into(),
            columns: vec!["price".into()],
            deferrable: false,
        });
        let p = judge(&inv, Some(&facts(0)), &policy(), &opts(None), &[]);
        assert!(p
            .blockers
            .iter()
            .any(|b| b.contains("VALIDATE CONSTRAINT price_positive")));
    }

    #[test]
    fn taken_names_block() {
        let taken = [QualifiedName::new("public", "pricing_data_backup")];
        let p = judge(
            &inventory(),
            Some(&facts(0)),
            &policy(),
            &opts(None),
            &taken,
        );
        assert!(p
            .blockers
            .iter()
            .any(|b| b.contains("already taken: public.pricing_data_backup")));
    }

    #[test]
    fn outlier_keys_do_not_make_thousands_of_partitions() {
        let mut f = facts(0);
        f.max_key = Some(
            Utc.with_ymd_and_hms(2999, 1, 1, 0, 0, 0)
                .unwrap()
                .timestamp() as f64,
        );
        let p = judge(&inventory(), Some(&f), &policy(), &opts(None), &[]);
        assert!(p.blockers.iter().any(|b| b.contains("outlier")));
    }
}

//! Preflight: judges an [`Inventory`] against the table's policy and the command-line options.
//! Pure — the catalog was read beforehand — so every blocker and every carried-over object is
//! unit-tested without a database. The outcome is blockers (with what to do), warnings (what
//! will change), the partitions to create, and the [`Blueprint`] the later steps act on.
//!
//! [`judge`] runs one judgement per concern, in the order their lines are shown, each in a file
//! of `plan/`: `key` (the relation and its partition key), `constraints` (keys, constraints,
//! columns, indexes, inbound foreign keys), `dependents` (triggers, views, rules, sequences,
//! grants, row-level security, publications, storage), `partitions` (rows, partitions, taken
//! names) and `blueprint`; what they share (the options, the outcome) is in `preflight`, so
//! none of them imports this module back.

mod blueprint;
mod constraints;
mod dependents;
mod key;
mod partitions;
mod preflight;

use super::inventory::{DataFacts, Inventory};
use super::Mode;
use crate::config::TablePolicy;
use crate::ident::{derived_name, QualifiedName};

pub use blueprint::copies_without_row_locks;
use preflight::partitioned_name;
pub use preflight::{
    names_to_create, Options, PlannedPartition, Preflight, MAX_PARTITIONS, OFFLINE_BYTES_PER_SEC,
    ONLINE_BYTES_PER_SEC,
};

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
    // Without a convertible relation and key nothing else can be judged.
    let Some(k) = key::judge(inv, policy, &mut p) else {
        return p;
    };

    // Keys: the new table's PRIMARY KEY and UNIQUE constraints must contain the partition key.
    constraints::primary_key(inv, &mut p);
    constraints::constraints(inv, key, &mut p);
    constraints::columns(inv, &mut p);
    constraints::indexes(inv, &mut p);
    constraints::inbound_foreign_keys(inv, key, &mut p);

    let partitioned = t.sibling(partitioned_name(t));
    let user_triggers = dependents::triggers(inv, &partitioned, &mut p);
    dependents::views_and_rules(inv, &mut p);
    dependents::ownership_and_access(inv, &mut p);
    dependents::replication_and_storage(inv, &mut p);
    p.none_found = dependents::none_found(inv);

    // Rows: NULL keys, range, partitions.
    partitions::plan(inv, facts, policy, opts, k, &mut p);
    let default_partition = t.sibling(derived_name(&t.name, "default"));
    partitions::check_names(inv, taken, &default_partition, &mut p);

    p.estimate_secs = estimate_secs(inv, opts.mode);
    p.blueprint = blueprint::blueprint(
        inv,
        policy,
        opts,
        k,
        partitioned,
        user_triggers,
        default_partition,
    );
    p
}

/// Seconds the copy is expected to take, from the table's and its indexes' size.
fn estimate_secs(inv: &Inventory, mode: Mode) -> f64 {
    let bytes = (inv.table_bytes + inv.index_bytes) as f64;
    bytes
        / match mode {
            Mode::Online => ONLINE_BYTES_PER_SEC,
            Mode::Offline => OFFLINE_BYTES_PER_SEC,
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::Interval;
    use crate::config::RetentionMode;
    use crate::migrate::inventory::{Column, Constraint, InboundFk, Index};
    use chrono::TimeZone;
    use chrono::Utc;
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

//! `migrate`: converting a plain table into a range-partitioned one, online, resumably and
//! reversibly. This is the runbook's migration automated, minus its two hazards: the runbook
//! blocks writes for the whole copy, and its rollback drops every write made after the swap.
//!
//! # Design
//!
//! **Decide, then act.** [`inventory`] reads everything the catalog knows about the table (one
//! connection, no changes); [`plan`] judges it (pure) into blockers, warnings and a
//! [`Blueprint`]: every name, column list and statement the migration will use. The blueprint is
//! stored in the state row, so a resumed run, a rollback or a finalize works from the same
//! decisions as the run that started, whatever the catalog looks like after a swap.
//!
//! **Steps, each one transaction** (through [`crate::tx::Runner`]: SET LOCAL timeouts, retries
//! with backoff). `build` creates `<table>_partitioned` (partitions made by the same renderer as
//! maintenance, PK and unique keys extended with the partition key, the other indexes on the
//! parent only, outbound FKs, user triggers created disabled), the forward sync trigger and the
//! state row, all in one transaction: a crash leaves either nothing or a complete build. `copy`
//! then moves rows in primary-key order, one batch per transaction, the batch and its progress
//! (`last_pk`) committed together; `settle` brings rows written during the copy up to date;
//! [`indexes`] builds the other indexes per partition. `swap` is one short transaction under
//! `lock_timeout`, retried with backoff.
//!
//! **Why the copy and the trigger never disagree.** The forward trigger applies every write on
//! the original to the new table inside the writer's own transaction: an INSERT is upserted; an
//! UPDATE that keeps the key updates the copied row in place, or, when the row is not copied yet,
//! only records its key ([`Blueprint::gone`]); a DELETE or a change of key deletes the copy and
//! records the key. The copier reads without row locks (locking every row it read dirtied every
//! page of the original and cost a third of the copy) and inserts plainly; a batch that meets a
//! row the trigger wrote first (a unique violation) runs again with `ON CONFLICT DO NOTHING`, and
//! a batch inserting a row a writer is writing waits for that writer. So a copied row can only be
//! stale when a writer changed or deleted it after the batch read it and before the batch
//! committed, and then its key is recorded: the writer's trigger ran before the batch committed
//! and found no copy. After the last batch, `copy::settle` waits for every transaction that was
//! writing then (each such trigger has run by the time it ends), and then, holding writers back
//! for a moment per chunk, deletes the copies of recorded keys that the original no longer has
//! under that key and upserts the original's current rows. Inserting rows ahead of the copy is
//! avoided on purpose: keys to the right of the copy's position would split every primary-key
//! page the copy fills before them in half. Only the primary key tolerates a stale row for that
//! moment; a table with another unique key or an outbound foreign key is copied as before this
//! scheme (`FOR SHARE`, current versions only, always upserting, no `gone` table), as are
//! migrations recorded by earlier versions. A writer at REPEATABLE READ cannot see a row copied
//! after its snapshot; before deleting it its trigger first upserts the old row, which turns that
//! case into a serialization failure (which such writers retry) instead of a row silently left
//! behind. The copier's waits run under a short lock timeout (`copy::COPY_LOCK_TIMEOUT`, below
//! `deadlock_timeout`), so in a lock cycle with an application transaction the copier is the one
//! that backs off and retries.
//!
//! **Out-of-range rows.** During an online migration the new table always has a default
//! partition, so a writer inserting a date no partition covers yet never fails because of us.
//! Before the swap its rows get partitions of their own (moved by the maintenance renderer), and a
//! default that the policy does not want is dropped empty inside the swap.
//!
//! **Rollback loses nothing.** The swap renames the original to `<table>_backup` and installs a
//! reverse trigger on the new table that mirrors every later write into the backup. `rollback`
//! swaps back; `finalize` drops the backup and every helper object.
//!
//! **Resumable.** `run` reads the state row and continues: nothing → build; `copying` → copy from
//! `last_pk`, settle, build the partition indexes still missing (read from the catalog), then
//! swap; `swapped` → nothing to do. Killing the process at any point leaves a state that `run`
//! finishes with identical content.

pub mod build;
pub mod copy;
pub mod definition;
pub mod error;
pub mod fill;
pub mod finalize;
pub mod foreign_keys;
pub mod indexes;
pub mod inventory;
pub mod plan;
pub mod progress;
pub mod rollback;
pub mod run;
pub mod state;
pub mod swap;
pub mod sync;
pub mod verify;

use serde::{Deserialize, Serialize};

use crate::ident::{quote_ident, QualifiedName};

/// Schema that holds the state table and the sync functions while a migration is in progress.
pub const STATE_SCHEMA: &str = "partkeeper";

/// Trigger names: fixed, because trigger names are per table. They sort after most user
/// triggers, and AFTER ROW triggers see the row as user BEFORE triggers left it.
pub const FORWARD_TRIGGER: &str = "partkeeper_sync_forward";
pub const FORWARD_TRUNCATE_TRIGGER: &str = "partkeeper_sync_forward_truncate";
pub const REVERSE_TRIGGER: &str = "partkeeper_sync_reverse";
pub const REVERSE_TRUNCATE_TRIGGER: &str = "partkeeper_sync_reverse_truncate";

/// Whether the copy runs beside the application (triggers + batches) or in a maintenance window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Online,
    Offline,
}

/// Every decision the migration acts on, made once by [`plan`] and stored in the state row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blueprint {
    pub original: QualifiedName,
    /// The new table while it is built (and again after a rollback, until it is dropped).
    pub partitioned: QualifiedName,
    pub backup: QualifiedName,
    pub forward_function: QualifiedName,
    pub reverse_function: QualifiedName,
    pub key: String,
    /// `date`, `timestamp` or `timestamptz`.
    pub key_sql_type: String,
    /// SQL expression that fills a NULL key, as given with `--fill-null-with`.
    pub fill: Option<String>,
    /// Primary key of the original.
    pub pk: Vec<String>,
    /// SQL types of `pk` (`format_type`), to read a saved position back.
    pub pk_types: Vec<String>,
    /// Primary key of the new table: `pk` plus the key when it was not part of it.
    pub new_pk: Vec<String>,
    /// Columns that can be written (generated columns excluded), in table order.
    pub columns: Vec<String>,
    /// Columns whose value must not be set by `ON CONFLICT DO UPDATE` (identity ALWAYS).
    pub no_update: Vec<String>,
    /// `OVERRIDING SYSTEM VALUE` is needed (a GENERATED ALWAYS identity column exists).
    pub overriding: bool,
    pub indexes: Vec<IndexNames>,
    pub sequences: Vec<OwnedSequence>,
    pub user_triggers: Vec<UserTrigger>,
    /// Publications that list the original by name (not FOR ALL TABLES).
    pub publications: Vec<String>,
    /// The default partition of the new table.
    pub default_partition: QualifiedName,
    /// Whether the policy keeps a default partition; if not it exists only during the copy.
    pub keep_default: bool,
    /// The new partitions are built with `autovacuum_enabled=false` (reset after the swap): an
    /// autovacuum worker on a freshly filled partition would make the swap wait for it (until
    /// `deadlock_timeout` cancels it), and the application's writers queue behind the swap.
    pub pause_autovacuum: bool,
    /// Online: the table where the forward trigger records the primary key of every row it
    /// deletes from the original (or moves to another key) while the copy runs, so that the copy
    /// can read without row locks (the copy's settle phase removes what it copied of those rows).
    /// `None` for migrations recorded by earlier versions, whose copy locks the rows it reads.
    #[serde(default)]
    pub gone: Option<QualifiedName>,
}

/// An index of the original and its counterpart on the new table. `building` is the new index's
/// name until the swap, when it takes `original` and the original's index becomes `backup`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexNames {
    pub original: String,
    pub building: String,
    pub backup: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedSequence {
    pub sequence: QualifiedName,
    pub column: String,
    /// An identity column's own sequence (the new table has its own, moved forward at the swap).
    pub identity: bool,
}

/// A user trigger of the original, re-created on the new table (disabled until the swap).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserTrigger {
    pub name: String,
    /// `pg_trigger.tgenabled`: O (origin), A (always), R (replica), D (disabled).
    pub enabled: String,
    /// `CREATE TRIGGER ... ON <new table> ...`.
    pub create_on_new: String,
}

impl UserTrigger {
    /// `ALTER TABLE t ENABLE ... TRIGGER x` restoring the original's mode (None when disabled).
    pub fn enable_sql(&self, table: &QualifiedName) -> Option<String> {
        let how = match self.enabled.as_str() {
            "O" => "ENABLE",
            "A" => "ENABLE ALWAYS",
            "R" => "ENABLE REPLICA",
            _ => return None,
        };
        Some(format!(
            "ALTER TABLE {} {how} TRIGGER {}",
            table.quoted(),
            quote_ident(&self.name)
        ))
    }

    pub fn disable_sql(&self, table: &QualifiedName) -> String {
        format!(
            "ALTER TABLE {} DISABLE TRIGGER {}",
            table.quoted(),
            quote_ident(&self.name)
        )
    }
}

impl Blueprint {
    pub fn key_quoted(&self) -> String {
        quote_ident(&self.key)
    }

    /// `"a", "b"` for a list of column names.
    pub fn list(cols: &[String]) -> String {
        cols.iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The key as written into the new table: the fill expression replaces a NULL.
    /// Column references inside the fill resolve against the row source of the statement.
    pub fn filled_key(&self, qualifier: &str) -> String {
        let key = format!("{qualifier}{}", self.key_quoted());
        match &self.fill {
            Some(fill) => format!("COALESCE({key}, ({fill})::{})", self.key_sql_type),
            None => key,
        }
    }

    /// The select list that turns a row of the original (aliased `qualifier`) into a row of the
    /// new table: every writable column, the key filled.
    pub fn select_list(&self, qualifier: &str) -> String {
        self.columns
            .iter()
            .map(|c| {
                if *c == self.key {
                    self.filled_key(qualifier)
                } else {
                    format!("{qualifier}{}", quote_ident(c))
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `SET a = EXCLUDED.a, ...` for every writable column outside the conflict target.
    pub fn update_set(&self, conflict: &[String]) -> String {
        let set: Vec<String> = self
            .columns
            .iter()
            .filter(|c| !conflict.contains(c) && !self.no_update.contains(c))
            .map(|c| format!("{0} = EXCLUDED.{0}", quote_ident(c)))
            .collect();
        if set.is_empty() {
            "NOTHING".to_string()
        } else {
            format!("UPDATE SET {}", set.join(", "))
        }
    }

    pub fn overriding_clause(&self) -> &'static str {
        if self.overriding {
            " OVERRIDING SYSTEM VALUE"
        } else {
            ""
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The runbook's `pricing_data`, as `plan` would describe it.
    pub fn pricing_blueprint(fill: Option<&str>) -> Blueprint {
        let q = |n: &str| QualifiedName::new("public", n);
        Blueprint {
            original: q("pricing_data"),
            partitioned: q("pricing_data_partitioned"),
            backup: q("pricing_data_backup"),
            forward_function: QualifiedName::new(STATE_SCHEMA, "public_pricing_data_forward"),
            reverse_function: QualifiedName::new(STATE_SCHEMA, "public_pricing_data_reverse"),
            key: "date".into(),
            key_sql_type: "date".into(),
            fill: fill.map(Into::into),
            pk: vec!["id".into()],
            pk_types: vec!["bigint".into()],
            new_pk: vec!["id".into(), "date".into()],
            columns: ["id", "propertyId", "date", "price", "createdAt"]
                .map(String::from)
                .to_vec(),
            no_update: vec![],
            overriding: false,
            indexes: vec![],
            sequences: vec![],
            user_triggers: vec![],
            publications: vec![],
            default_partition: q("pricing_data_default"),
            keep_default: false,
            pause_autovacuum: true,
            gone: Some(QualifiedName::new(STATE_SCHEMA, "public_pricing_data_gone")),
        }
    }

    #[test]
    fn the_filled_key_coalesces_with_the_fill_cast_to_the_key_type() {
        let b = pricing_blueprint(Some("\"createdAt\"::date"));
        assert_eq!(
            b.select_list("s."),
            "s.\"id\", s.\"propertyId\", COALESCE(s.\"date\", (\"createdAt\"::date)::date), s.\"price\", s.\"createdAt\""
        );
        let plain = pricing_blueprint(None);
        assert!(plain.select_list("").contains(", \"date\", "));
    }

    #[test]
    fn upserts_leave_the_conflict_target_alone() {
        let b = pricing_blueprint(None);
        let set = b.update_set(&b.new_pk);
        assert!(set.starts_with("UPDATE SET \"propertyId\" = EXCLUDED.\"propertyId\""));
        assert!(!set.contains("\"id\" ="));
        assert!(!set.contains("\"date\" ="));
    }
}

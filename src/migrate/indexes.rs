//! The online migration's non-unique indexes, built after the copy. The build creates them on the
//! new parent only (`CREATE INDEX ... ON ONLY`, invalid), so the copy does not keep them up row
//! by row (out-of-order inserts left them 1.27× the size of a fresh build, and cost time). Once
//! the copy is done, each partition gets its own index, attached to the parent's; when the last
//! one is attached, PostgreSQL marks the parent's index valid. The application keeps writing
//! meanwhile (the sync trigger writes every partition), so a partition's index is built plainly
//! only when that fits within `lock_timeout`, and `CONCURRENTLY` otherwise (see [`build_one`]).
//!
//! Resumable without state of its own: every round reads from the catalog which partitions
//! still lack an attached index; a `CONCURRENTLY` build killed halfway leaves an invalid index
//! under the same name, which is dropped and built again.

use std::time::{Duration, Instant};

use sqlx::PgConnection;

use super::Blueprint;
use crate::config::DatabaseConfig;
use crate::ident::{derived_name, quote_ident, QualifiedName};
use crate::pg;
use crate::tx::{self, TxError};

/// An index of the new parent that some partition still lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub parent_index: QualifiedName,
    /// `btree (...) ...`: what follows `USING` in the parent index's definition.
    pub tail: String,
    pub partition: QualifiedName,
    /// The partition's index when it exists already (from a run that was stopped).
    pub existing_valid: Option<bool>,
    pub heap_bytes: i64,
}

#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Partition indexes built with a plain `CREATE INDEX` (fits within lock_timeout).
    pub plain: usize,
    pub concurrently: usize,
    pub secs: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("building index {index} on {partition}: {source}. The copy is complete and kept in step; run `migrate run` again to continue with the indexes")]
    Build {
        index: QualifiedName,
        partition: QualifiedName,
        #[source]
        source: sqlx::Error,
    },
    #[error(transparent)]
    Attach(#[from] TxError),
    #[error("reading the new table's indexes: {0}")]
    Catalog(#[source] sqlx::Error),
    #[error("index {0} is still not valid after every partition got its own; run `migrate run` again, or `migrate rollback`")]
    StillInvalid(QualifiedName),
}

/// Name of `parent_index`'s counterpart on `partition`: stable, so a resumed run finds the index
/// a stopped one left.
pub fn partition_index_name(partition: &QualifiedName, parent_index: &str) -> String {
    derived_name(
        &format!(
            "{}_{}",
            partition.name,
            parent_index.trim_end_matches("_partitioned")
        ),
        "idx",
    )
}

/// What is left to build: each invalid index of the new parent, for each leaf partition without
/// an index attached to it.
pub async fn pending(conn: &mut PgConnection, b: &Blueprint) -> Result<Vec<Pending>, sqlx::Error> {
    let rows: Vec<(String, String, String, String, String, i64)> = sqlx::query_as(
        r#"
        WITH parent AS (SELECT to_regclass($1) AS oid),
             idx AS (
               SELECT x.indexrelid, ci.relname::text AS name, n.nspname::text AS schema,
                      pg_get_indexdef(x.indexrelid) AS def,
                      format('CREATE INDEX %s ON ONLY %s.%s USING ', quote_ident(ci.relname),
                             quote_ident(pn.nspname), quote_ident(pc.relname)) AS prefix
                 FROM parent, pg_index x
                 JOIN pg_class ci ON ci.oid = x.indexrelid
                 JOIN pg_namespace n ON n.oid = ci.relnamespace
                 JOIN pg_class pc ON pc.oid = x.indrelid
                 JOIN pg_namespace pn ON pn.oid = pc.relnamespace
                WHERE x.indrelid = parent.oid AND NOT x.indisvalid AND NOT x.indisunique),
             part AS (
               SELECT c.oid, c.relname::text AS name, n.nspname::text AS schema
                 FROM parent, pg_inherits i
                 JOIN pg_class c ON c.oid = i.inhrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE i.inhparent = parent.oid AND c.relkind = 'r')
        SELECT idx.schema, idx.name, substr(idx.def, length(idx.prefix) + 1), part.schema, part.name,
               pg_relation_size(part.oid)
          FROM idx CROSS JOIN part
         WHERE starts_with(idx.def, idx.prefix)
           AND NOT EXISTS (SELECT 1 FROM pg_inherits ii JOIN pg_index y ON y.indexrelid = ii.inhrelid
                            WHERE ii.inhparent = idx.indexrelid AND y.indrelid = part.oid)
         ORDER BY part.name, idx.name
        "#,
    )
    .bind(b.partitioned.quoted())
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for (schema, name, tail, pschema, pname, heap_bytes) in rows {
        let partition = QualifiedName::new(&pschema, &pname);
        let own = partition_index_name(&partition, &name);
        let existing: Option<bool> = sqlx::query_scalar(
            "SELECT x.indisvalid FROM pg_index x WHERE x.indexrelid = to_regclass($1)",
        )
        .bind(partition.sibling(own).quoted())
        .fetch_optional(&mut *conn)
        .await?;
        out.push(Pending {
            parent_index: QualifiedName::new(&schema, &name),
            tail,
            partition,
            existing_valid: existing,
            heap_bytes,
        });
    }
    Ok(out)
}

/// Builds and attaches every pending partition index, then checks that the parent's indexes
/// are valid.
pub async fn build_after_copy(
    conn: &mut PgConnection,
    db: &DatabaseConfig,
    b: &Blueprint,
) -> Result<Outcome, IndexError> {
    let started = Instant::now();
    let deadline = pg::reply_deadline(db);
    let todo = pg::answered(deadline, pending(conn, b))
        .await
        .map_err(IndexError::Catalog)?;
    if !todo.is_empty() {
        tracing::info!(table = %b.partitioned, indexes = todo.len(), "building the indexes per partition");
    }
    let mut out = Outcome::default();
    let mut rate = Rate::default();
    for p in &todo {
        match build_one(conn, db, p, &mut rate).await? {
            How::Plain => out.plain += 1,
            How::Concurrently => out.concurrently += 1,
            How::AttachedOnly => {}
        }
    }
    let invalid: Option<String> = pg::answered(
        deadline,
        sqlx::query_scalar(
            "SELECT ci.relname::text FROM pg_index x JOIN pg_class ci ON ci.oid = x.indexrelid
              WHERE x.indrelid = to_regclass($1) AND NOT x.indisvalid LIMIT 1",
        )
        .bind(b.partitioned.quoted())
        .fetch_optional(&mut *conn),
    )
    .await
    .map_err(IndexError::Catalog)?;
    if let Some(name) = invalid {
        return Err(IndexError::StillInvalid(b.partitioned.sibling(name)));
    }
    out.secs = started.elapsed().as_secs_f64();
    Ok(out)
}

/// How one partition's index was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    Plain,
    Concurrently,
    AttachedOnly,
}

/// Bytes of heap per second of the plain builds so far: predicts whether the next one fits in
/// `lock_timeout`.
#[derive(Debug, Default)]
struct Rate {
    bytes: f64,
    secs: f64,
}

impl Rate {
    /// Whether a plain build of `bytes` is expected to take longer than `budget`. Unknown
    /// (no build yet) counts as fitting: the first build finds out, under its statement timeout.
    fn too_slow(&self, bytes: i64, budget: Duration) -> bool {
        self.secs > 0.0
            && self.bytes > 0.0
            && bytes as f64 / (self.bytes / self.secs) > budget.as_secs_f64()
    }
}

/// One partition's index, attached to the parent's. A plain `CREATE INDEX` (one pass, no waits
/// for older snapshots) in its own transaction, when it can finish within `lock_timeout`: it
/// holds SHARE on the partition, so a writer of that partition (through the sync trigger) waits
/// for it, and never longer than `lock_timeout` — its statement_timeout, and the transaction's
/// only statement. Otherwise (a partition too big, or a plain build cancelled at that bound)
/// `CREATE INDEX CONCURRENTLY`, which writers do not wait for. Then the attach, in a short
/// transaction of its own.
async fn build_one(
    conn: &mut PgConnection,
    db: &DatabaseConfig,
    p: &Pending,
    rate: &mut Rate,
) -> Result<How, IndexError> {
    let own = p
        .partition
        .sibling(partition_index_name(&p.partition, &p.parent_index.name));
    let create = format!(
        "CREATE INDEX {} ON {} USING {}",
        quote_ident(&own.name),
        p.partition.quoted(),
        p.tail
    );
    let attach = format!(
        "ALTER INDEX {} ATTACH PARTITION {}",
        p.parent_index.quoted(),
        own.quoted()
    );
    let name = format!("index {} on {}", p.parent_index.name, p.partition);
    let budget = db.lock_timeout;
    let how = match p.existing_valid {
        Some(true) => How::AttachedOnly,
        None if !rate.too_slow(p.heap_bytes, budget) => {
            let started = Instant::now();
            let plain = tx::Runner::step(name.clone(), db)
                .statement_timeout(budget)
                .run(conn, async |c, at| tx::exec(c, at, &create).await)
                .await;
            match plain {
                Ok(_) => {
                    rate.bytes += p.heap_bytes as f64;
                    rate.secs += started.elapsed().as_secs_f64();
                    How::Plain
                }
                Err(e) if pg::sqlstate(e.sqlx()).as_deref() == Some(QUERY_CANCELED) => {
                    tracing::info!(index = %own, "a plain build would hold writers back longer than lock_timeout; building CONCURRENTLY");
                    How::Concurrently
                }
                Err(e) => return Err(e.into()),
            }
        }
        Some(false) => How::Concurrently,
        None => {
            tracing::info!(index = %own, "at the rate of the plain builds so far, a plain build would hold writers back longer than lock_timeout; building CONCURRENTLY");
            How::Concurrently
        }
    };
    if how == How::Concurrently {
        concurrently(conn, db, p, &own, &create).await?;
    }
    tx::Runner::step(format!("attach {name}"), db)
        .run(conn, async |c, at| tx::exec(c, at, &attach).await)
        .await?;
    Ok(how)
}

/// SQLSTATE of a statement cancelled by statement_timeout.
const QUERY_CANCELED: &str = "57014";

/// `CREATE INDEX CONCURRENTLY` (after dropping an invalid one a stopped run left). It waits for
/// transactions that started before it (writers of the partition, older snapshots): waits that
/// hold no lock the application needs (it takes SHARE UPDATE EXCLUSIVE, which writes do not
/// conflict with). So its lock waits are bounded by statement_timeout, not lock_timeout: a report
/// query running longer than lock_timeout delays the migration instead of failing it.
async fn concurrently(
    conn: &mut PgConnection,
    db: &DatabaseConfig,
    p: &Pending,
    own: &QualifiedName,
    create: &str,
) -> Result<(), IndexError> {
    let fail = |source| IndexError::Build {
        index: p.parent_index.clone(),
        partition: p.partition.clone(),
        source,
    };
    let statements = [
        format!("DROP INDEX CONCURRENTLY IF EXISTS {}", own.quoted()),
        create.replacen("CREATE INDEX ", "CREATE INDEX CONCURRENTLY ", 1),
    ];
    let deadline = pg::reply_deadline(db);
    pg::answered(
        deadline,
        sqlx::raw_sql("SET lock_timeout = 0").execute(&mut *conn),
    )
    .await
    .map_err(fail)?;
    let mut result = Ok(());
    for st in &statements {
        tracing::debug!(sql = %st, "index");
        if let Err(e) = pg::answered(deadline, sqlx::raw_sql(st).execute(&mut *conn)).await {
            result = Err(e);
            break;
        }
    }
    let reset = pg::answered(
        deadline,
        sqlx::query("SELECT set_config('lock_timeout', $1, false)")
            .bind(format!("{}ms", db.lock_timeout.as_millis()))
            .execute(&mut *conn),
    )
    .await;
    result.map_err(fail)?;
    reset.map_err(fail)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_index_name_is_stable_and_fits() {
        let p = QualifiedName::new("public", "pricing_data_2024_01");
        assert_eq!(
            partition_index_name(&p, "idx_pricing_data_date_partitioned"),
            "pricing_data_2024_01_idx_pricing_data_date_idx"
        );
        let long = QualifiedName::new("public", "x".repeat(60));
        let n = partition_index_name(&long, "idx_pricing_data_date_partitioned");
        assert!(n.len() <= 63, "{n}");
        assert_eq!(
            n,
            partition_index_name(&long, "idx_pricing_data_date_partitioned")
        );
    }
}

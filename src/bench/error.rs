//! What can fail while measuring, kept typed with its cause (the top-level error wraps it).

use super::explain;

/// What can fail while measuring, with the query it concerns; the cause is kept as the source.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("table {table} has no rows with a {key}; bench measures queries on real data")]
    NoRows { table: String, key: String },
    #[error("{label} ({sql}): {}", crate::pg::describe(.source))]
    Query {
        label: String,
        sql: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("{label}: {source}")]
    Plan {
        label: String,
        #[source]
        source: explain::ExplainError,
    },
}

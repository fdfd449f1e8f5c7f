//! A finished maintenance pass as `/status` shows it (per table and per action).

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::maintain::PassReport;

/// A finished pass, as `/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PassSummary {
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// `success`, `failure` or `skipped` (another instance held the maintenance lock).
    pub result: &'static str,
    pub error: Option<String>,
    pub tables: Vec<TableOutcome>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TableOutcome {
    pub table: String,
    pub result: &'static str,
    pub error: Option<String>,
    pub actions: Vec<ActionOutcome>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ActionOutcome {
    pub action: &'static str,
    pub partition: String,
    pub duration_ms: u64,
    pub error: Option<String>,
}

impl PassSummary {
    pub fn from_report(
        started_at: DateTime<Utc>,
        finished_at: DateTime<Utc>,
        r: &PassReport,
    ) -> PassSummary {
        let result = match (&r.skipped, r.succeeded()) {
            (Some(_), _) => "skipped",
            (None, true) => "success",
            (None, false) => "failure",
        };
        PassSummary {
            started_at,
            finished_at,
            result,
            error: r.skipped.clone(),
            tables: r
                .tables
                .iter()
                .map(|t| TableOutcome {
                    table: t.table.to_string(),
                    result: if t.succeeded() { "success" } else { "failure" },
                    error: t.error.clone(),
                    actions: t
                        .actions
                        .iter()
                        .map(|a| ActionOutcome {
                            action: a.action.verb(),
                            partition: a.action.partition().to_string(),
                            duration_ms: a.duration_ms,
                            error: a.error.clone(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    pub fn failed(
        started_at: DateTime<Utc>,
        finished_at: DateTime<Utc>,
        error: String,
    ) -> PassSummary {
        PassSummary {
            started_at,
            finished_at,
            result: "failure",
            error: Some(error),
            tables: Vec::new(),
        }
    }
}

//! A step of rendered DDL: one transaction, or one statement that must run outside a
//! transaction block. Its own module, below `ddl` (which renders steps) and `archive` (which
//! renders the archive's steps and is called by `ddl`), so that neither imports the other back.

/// One transaction (or one statement that must run outside a transaction block).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub transactional: bool,
    pub statements: Vec<String>,
}

impl Step {
    pub fn tx(statements: Vec<String>) -> Step {
        Step {
            transactional: true,
            statements,
        }
    }
    pub fn bare(statement: String) -> Step {
        Step {
            transactional: false,
            statements: vec![statement],
        }
    }
}

//! `partkeeper config validate`: the effective configuration, passwords redacted.

use crate::config::Config;
use crate::error::Result;

pub fn validate(cfg: Config) -> Result<i32> {
    print!("{}", cfg.to_redacted_toml());
    eprintln!("configuration is valid ({} table(s))", cfg.tables.len());
    Ok(0)
}

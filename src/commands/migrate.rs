//! `partkeeper migrate`: not built yet in this revision (see the open issues).

use crate::config::Config;
use crate::error::{Error, Result};

pub async fn run(_cfg: Config, _args: crate::cli::MigrateArgs) -> Result<i32> {
    Err(Error::Usage(
        "`partkeeper migrate` is not available in this build yet".into(),
    ))
}

//! `partkeeper bench`: not built yet in this revision (see the open issues).

use crate::config::Config;
use crate::error::{Error, Result};

pub async fn run(_cfg: Config, _args: crate::cli::BenchArgs) -> Result<i32> {
    Err(Error::Usage(
        "`partkeeper bench` is not available in this build yet".into(),
    ))
}

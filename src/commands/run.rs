//! `partkeeper run`: not built yet in this revision (see the open issues).

use crate::config::Config;
use crate::error::{Error, Result};

pub async fn run(_cfg: Config) -> Result<i32> {
    Err(Error::Usage(
        "`partkeeper run` is not available in this build yet".into(),
    ))
}

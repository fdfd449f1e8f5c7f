//! Command implementations: each file turns one subcommand's arguments into library calls and
//! prints the outcome; what several share (`--now`, connecting, going over the databases) is in
//! `common`. Here: loading the configuration and dispatching.

mod bench;
mod check;
mod common;
mod config;
mod drain;
mod maintain;
mod migrate;
mod run;
mod status;

use crate::cli::{Cli, Command, ConfigCommand};
use crate::error::{Error, Result};

pub async fn dispatch(cli: Cli) -> Result<i32> {
    let config_path = cli.config.clone();
    let load = || crate::config::load(config_path.as_deref()).map_err(Error::from);
    match cli.command {
        Command::Config(ConfigCommand::Validate) => config::validate(load()?),
        Command::Maintain(args) => maintain::run(load()?, args).await,
        Command::Check(args) => check::run(load()?, args).await,
        Command::Status(args) => status::run(load()?, args).await,
        Command::Migrate(args) => {
            let fleet = load()?;
            migrate::run(fleet.one(args.database.as_deref())?.clone(), args).await
        }
        Command::Bench(args) => {
            let fleet = load()?;
            bench::run(fleet.one(args.database.as_deref())?.clone(), args).await
        }
        Command::Drain(args) => {
            let fleet = load()?;
            drain::run(fleet.one(args.database.as_deref())?.clone(), args).await
        }
        Command::Run(args) => run::run(load()?, args).await,
        Command::Demo(args) => {
            let duration = match args.duration.as_deref() {
                None => None,
                Some(d) => Some(humantime::parse_duration(d).map_err(|e| {
                    Error::Usage(format!("--duration {d:?}: {e}; write e.g. 20s or 5min"))
                })?),
            };
            crate::demo::run(crate::demo::DemoOptions {
                database_url: args.database_url,
                listen: args.listen,
                duration,
            })
            .await
        }
    }
}

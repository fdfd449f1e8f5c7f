//! Command-line definitions (clap). Each argument's `///` comment is its `--help` text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "partkeeper",
    version,
    about = "Keeps PostgreSQL range-partitioned tables healthy: online migration, maintenance, metrics"
)]
pub struct Cli {
    /// Configuration file [default: $PARTKEEPER_CONFIG, else config/partkeeper.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Log format
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// More log output (-v debug, -vv trace)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Less log output (warnings and errors only)
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The daemon: scheduled maintenance, metrics and health over HTTP; stops on SIGTERM/SIGINT
    Run(RunArgs),
    /// One maintenance pass now: create future partitions, expire old ones
    Maintain(MaintainArgs),
    /// Read-only health verdict per table; exit 1 when anything is wrong
    Check(CheckArgs),
    /// Every partition with its bounds, size and estimated rows, plus replica lag
    Status(StatusArgs),
    /// Convert a plain table into a range-partitioned one, online and reversibly
    Migrate(MigrateArgs),
    /// Run the runbook's benchmark queries with EXPLAIN (ANALYZE, BUFFERS)
    Bench(BenchArgs),
    /// Move rows of new periods out of the default partition (those maintain leaves above default_move_limit)
    Drain(DrainArgs),
    /// Configuration commands
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Try partkeeper: a throwaway PostgreSQL, sample data, an online migration, the daemon
    Demo(DemoArgs),
}

#[derive(Debug, Default, Args)]
pub struct RunArgs {
    /// Web configuration (TLS, basic auth) in the Prometheus exporter-toolkit format; overrides
    /// server.web_config_file
    #[arg(long = "web.config.file", value_name = "PATH")]
    pub web_config_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Use this server instead of starting a throwaway one (a database is created and dropped)
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// HTTP address of the demo daemon
    #[arg(long, default_value = "127.0.0.1:9790")]
    pub listen: String,
    /// Stop by itself after this long (e.g. 20s, 5min); default: until Ctrl-C
    #[arg(long, value_name = "DURATION")]
    pub duration: Option<String>,
}

#[derive(Debug, Args)]
pub struct MaintainArgs {
    /// The database (its `name` in the configuration); required when several are configured and --table is given; default: all
    #[arg(long, value_name = "NAME")]
    pub database: Option<String>,
    /// Print the exact SQL that would run, change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Only this table (as written in the configuration, e.g. public.pricing_data)
    #[arg(long, value_name = "T")]
    pub table: Option<String>,
    /// Evaluate the policy as if the time were TIME (RFC 3339 or YYYY-MM-DD)
    #[arg(long, value_name = "TIME")]
    pub now: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusFormat {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Only this database (its `name` in the configuration); default: all
    #[arg(long, value_name = "NAME")]
    pub database: Option<String>,
    /// Only this table
    #[arg(long, value_name = "T")]
    pub table: Option<String>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
    /// Judge as if the time were TIME (RFC 3339 or YYYY-MM-DD)
    #[arg(long, value_name = "TIME")]
    pub now: Option<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this database (its `name` in the configuration); default: all
    #[arg(long, value_name = "NAME")]
    pub database: Option<String>,
    /// Only this table
    #[arg(long, value_name = "T")]
    pub table: Option<String>,
    #[arg(long, value_enum, default_value_t = StatusFormat::Table)]
    pub format: StatusFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MigrateStep {
    Plan,
    Run,
    Verify,
    Rollback,
    Finalize,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The database (its `name` in the configuration); required when several are configured
    #[arg(long, value_name = "NAME")]
    pub database: Option<String>,
    /// plan | run | verify | rollback | finalize
    #[arg(value_enum)]
    pub step: MigrateStep,
    /// The table to convert (as written in the configuration)
    #[arg(long, value_name = "T")]
    pub table: String,
    /// Maintenance-window mode: lock the table and copy in one go (faster, writes blocked)
    #[arg(long)]
    pub offline: bool,
    /// Rows copied per batch
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub batch_size: u64,
    /// SQL expression that fills NULL partition keys, e.g. '"createdAt"::date'
    #[arg(long, value_name = "SQL")]
    pub fill_null_with: Option<String>,
}

#[derive(Debug, Args)]
pub struct DrainArgs {
    /// The database (its `name` in the configuration); required when several are configured
    #[arg(long, value_name = "NAME")]
    pub database: Option<String>,
    /// The table (as written in the configuration)
    #[arg(long, value_name = "T")]
    pub table: String,
    /// Print the expected costs and the SQL, change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// online: writes go on, the period's rows are invisible through the table until the attach;
    /// atomic: one transaction, rows always visible, writes wait for the move and one scan
    #[arg(long, value_enum, default_value_t = crate::drain::Mode::Online)]
    pub mode: crate::drain::Mode,
    /// Rows moved per transaction (online mode)
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub batch_size: u64,
    /// Evaluate the periods as if the time were TIME (RFC 3339 or YYYY-MM-DD)
    #[arg(long, value_name = "TIME")]
    pub now: Option<String>,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The database (its `name` in the configuration); required when several are configured
    #[arg(long, value_name = "NAME")]
    pub database: Option<String>,
    /// The table to benchmark
    #[arg(long, value_name = "T")]
    pub table: String,
    /// Timed runs per query (after one warm-up)
    #[arg(long, default_value_t = 5)]
    pub runs: u32,
    /// Save the results as JSON
    #[arg(long, value_name = "FILE")]
    pub save: Option<PathBuf>,
    /// Compare with results saved earlier (before/after table)
    #[arg(long, value_name = "FILE")]
    pub compare: Option<PathBuf>,
    /// Write a bar chart of the comparison as SVG
    #[arg(long, value_name = "FILE")]
    pub chart: Option<PathBuf>,
    /// Comparison output format
    #[arg(long, value_enum, default_value_t = BenchFormat::Text)]
    pub format: BenchFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchFormat {
    Text,
    Markdown,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Parse and validate the configuration; print it with secrets redacted
    Validate,
}

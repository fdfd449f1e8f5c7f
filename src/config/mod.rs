//! Configuration: the TOML file, `PARTKEEPER__SECTION__KEY` environment overrides and
//! `DATABASE_URL`, parsed into [`RawConfig`] (unknown keys denied) and validated
//! ([`validate`]) into a [`Fleet`] of one [`Config`] per database, whose types make an unchecked
//! value impossible to use. `parse_fleet` and `parse_str` are pure; `load` adds I/O.

mod fleet;
mod validate;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono_tz::Tz;
use serde::{Deserialize, Serialize, Serializer};

use crate::calendar::Retention;
use crate::ident::{self, QualifiedName};
use crate::keys::{EpochUnit, Width};
use crate::secret::SecretUrl;

pub use fleet::Fleet;
pub use validate::validate;

/// Where the configuration is read from when neither `--config` nor `PARTKEEPER_CONFIG` is given.
pub const DEFAULT_PATH: &str = "config/partkeeper.toml";
/// Short enough that an application never waits long behind our DDL.
pub const DEFAULT_LOCK_TIMEOUT: &str = "3s";
pub const DEFAULT_STATEMENT_TIMEOUT: &str = "10min";
/// Bounds how long a command waits for an unreachable server before exiting 2.
pub const DEFAULT_CONNECT_TIMEOUT: &str = "10s";
/// Attempts per DDL statement that hits lock_timeout, with backoff and jitter between them.
pub const DEFAULT_LOCK_RETRIES: u32 = 5;
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9790";
/// Hourly: partitions are made months ahead, so an hourly reconcile heals a hand-dropped one quickly.
pub const DEFAULT_SCHEDULE: &str = "0 * * * *";
pub const DEFAULT_METRICS_REFRESH: &str = "30s";
pub const DEFAULT_PREMAKE: i64 = 3;
/// A premake beyond this is almost certainly a typo (and would create thousands of tables).
pub const MAX_PREMAKE: i64 = 1000;
/// Rows of a new period moved out of the default partition inline by a maintenance pass.
pub const DEFAULT_MOVE_LIMIT: i64 = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {source}. Pass --config <path> or set PARTKEEPER_CONFIG")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the configuration cannot be parsed: {0}")]
    Parse(String),
    #[error("the configuration has {} problem(s):\n  - {}", .0.len(), .0.join("\n  - "))]
    Invalid(Vec<String>),
}

// ---------------------------------------------------------------------------------------------
// Raw layer: what the file says, nothing checked but the shape.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub database: RawDatabase,
    #[serde(default)]
    pub replicas: Vec<RawReplica>,
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub schedule: RawSchedule,
    #[serde(default)]
    pub tables: Vec<RawTable>,
    #[serde(default)]
    pub bench: Vec<RawBenchQuery>,
    /// The fleet form: one entry per database (then `[database]` holds only defaults).
    #[serde(default)]
    pub databases: Vec<RawFleetDatabase>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDatabase {
    /// The `database` label (default: the database name in the URL).
    pub name: Option<String>,
    pub url: Option<String>,
    pub lock_timeout: Option<String>,
    pub statement_timeout: Option<String>,
    pub connect_timeout: Option<String>,
    pub lock_retries: Option<i64>,
    pub pooler: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReplica {
    pub name: String,
    pub url: Option<String>,
    /// The name of an environment variable holding the URL (instead of `url`).
    pub url_env: Option<String>,
}

/// One `[[databases]]` entry: a database with its own connection, replicas and tables; the
/// connection keys and `schedule` override the top-level `[database]` and `[schedule]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFleetDatabase {
    pub name: String,
    pub url: Option<String>,
    pub url_env: Option<String>,
    pub lock_timeout: Option<String>,
    pub statement_timeout: Option<String>,
    pub connect_timeout: Option<String>,
    pub lock_retries: Option<i64>,
    pub pooler: Option<String>,
    #[serde(default)]
    pub schedule: RawSchedule,
    #[serde(default)]
    pub replicas: Vec<RawReplica>,
    #[serde(default)]
    pub tables: Vec<RawTable>,
    #[serde(default)]
    pub bench: Vec<RawBenchQuery>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    pub web_config_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSchedule {
    pub maintenance: Option<String>,
    pub timezone: Option<String>,
    pub run_on_start: Option<bool>,
    pub metrics_refresh: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTable {
    pub name: String,
    pub column: String,
    pub interval: RawScalar,
    pub premake: Option<i64>,
    pub retention: Option<RawScalar>,
    pub epoch: Option<String>,
    pub start: Option<i64>,
    pub retention_mode: Option<String>,
    pub default_partition: Option<bool>,
    pub timezone: Option<String>,
    pub default_move_limit: Option<i64>,
    pub archive_schema: Option<String>,
    pub template: Option<String>,
    pub hooks: Option<crate::lifecycle::RawHooks>,
    pub hook_timeout: Option<String>,
}

/// A value that may be written as a TOML integer or a string (`interval`, `retention`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawScalar {
    Int(i64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBenchQuery {
    pub table: String,
    pub name: String,
    pub sql: String,
}

// ---------------------------------------------------------------------------------------------
// Validated layer.

/// One database and everything partkeeper does in it. A [`Fleet`] holds one per database; the
/// part 1 form is a fleet of one.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub database: DatabaseConfig,
    pub replicas: Vec<ReplicaConfig>,
    pub server: ServerConfig,
    pub schedule: ScheduleConfig,
    pub tables: Vec<TablePolicy>,
    /// Extra `partkeeper bench` query classes (`[[bench]]`), checked but not yet rendered.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bench: Vec<BenchQuery>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DatabaseConfig {
    /// The `database` label, `--database` value and `PARTKEEPER_DATABASE` of hooks.
    pub name: String,
    pub url: SecretUrl,
    #[serde(serialize_with = "ser_duration")]
    pub lock_timeout: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub statement_timeout: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub connect_timeout: Duration,
    pub lock_retries: u32,
    /// What sits between partkeeper and PostgreSQL (`database.pooler`).
    pub pooler: Pooler,
}

/// `database.pooler`: how partkeeper talks to the server (see the README, "Connection poolers").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooler {
    /// A direct connection (or a pooler that passes startup parameters through): the session
    /// settings travel as startup `options`, exactly as before this setting existed.
    #[default]
    None,
    /// A session-mode pooler (PgBouncer `pool_mode = session`): no startup parameter a pooler
    /// rejects; the session settings are `SET` once after connecting.
    Session,
    /// A transaction-mode pooler: unnamed statements only, every query inside an explicit
    /// transaction with its settings `SET LOCAL`, and leases instead of session advisory locks.
    Transaction,
}

impl Pooler {
    pub fn parse(s: &str) -> Option<Pooler> {
        match s {
            "none" => Some(Pooler::None),
            "session" => Some(Pooler::Session),
            "transaction" => Some(Pooler::Transaction),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplicaConfig {
    pub name: String,
    pub url: SecretUrl,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// TLS and basic auth for the HTTP server: an exporter-toolkit web configuration file
    /// (relative to the working directory), read by `run` and `config validate`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub web_config_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScheduleConfig {
    /// As written by the user (5 or 6 fields).
    pub maintenance: String,
    #[serde(serialize_with = "ser_tz")]
    pub timezone: Tz,
    pub run_on_start: bool,
    #[serde(serialize_with = "ser_duration")]
    pub metrics_refresh: Duration,
}

impl ScheduleConfig {
    /// The 6-field form (seconds first) that the scheduler needs.
    pub fn cron_with_seconds(&self) -> String {
        with_seconds(&self.maintenance).unwrap_or_else(|| self.maintenance.clone())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RetentionMode {
    /// `DROP TABLE`: the data is gone.
    Drop,
    /// `DETACH PARTITION`: the table stays, outside the partitioned table.
    Detach,
    /// Detached and moved to `archive_schema`, keeping its name.
    Archive,
}

#[derive(Debug, Clone, Serialize)]
pub struct TablePolicy {
    #[serde(serialize_with = "ser_qualified")]
    pub name: QualifiedName,
    pub column: String,
    pub interval: Width,
    pub premake: u32,
    #[serde(serialize_with = "ser_opt_display")]
    pub retention: Option<Retention>,
    /// Integer keys: partitions whose upper bound is at or below max(key) minus this expire.
    #[serde(rename = "retention", skip_serializing_if = "Option::is_none")]
    pub retention_values: Option<i64>,
    /// Integer keys holding Unix time in this unit, partitioned by the calendar.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<EpochUnit>,
    /// Integer keys: where the grid of periods starts (and the current period of an empty table).
    #[serde(skip_serializing_if = "is_zero")]
    pub start: i64,
    pub retention_mode: RetentionMode,
    pub default_partition: bool,
    /// Calendar zone for timestamptz bounds; defaults to `schedule.timezone`.
    #[serde(serialize_with = "ser_tz")]
    pub timezone: Tz,
    /// Rows of a new period found in the default partition that a pass moves inline; above it
    /// the period waits for `partkeeper drain`.
    pub default_move_limit: u64,
    /// Archive schema, template table and hooks.
    #[serde(flatten)]
    pub lifecycle: crate::lifecycle::Lifecycle,
}

/// A query class of the operator's, measured by `partkeeper bench --table <table>` next to the
/// runbook's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BenchQuery {
    /// One of the configured tables.
    #[serde(serialize_with = "ser_qualified")]
    pub table: QualifiedName,
    /// The label in bench's output; unique per table.
    pub name: String,
    /// A SELECT (or WITH) with placeholders: `{table}` and `{key}` become quoted identifiers,
    /// `{property}` and `{reference}` bind parameters (see `bench::queries::PLACEHOLDERS`).
    pub sql: String,
}

impl Config {
    /// The effective configuration as TOML, passwords replaced by `***`.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// The policies selected by `--table` (all when `None`). The name is matched as written.
    pub fn select_tables(&self, table: Option<&str>) -> Result<Vec<TablePolicy>, ConfigError> {
        let Some(wanted) = table else {
            return Ok(self.tables.clone());
        };
        let parsed = ident::parse_qualified(wanted)
            .map_err(|e| ConfigError::Invalid(vec![format!("--table: {e}")]))?;
        match self.tables.iter().find(|t| t.name == parsed) {
            Some(t) => Ok(vec![t.clone()]),
            None => {
                let known: Vec<String> = self.tables.iter().map(|t| t.name.to_string()).collect();
                Err(ConfigError::Invalid(vec![format!(
                    "--table {wanted}: no such table in the configuration; configured: {}",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )]))
            }
        }
    }
}

/// Parses configuration text of one database (the part 1 form, or a fleet of one) with the
/// given environment (pure: tests pass a map).
pub fn parse_str(text: &str, env: &HashMap<String, String>) -> Result<Config, ConfigError> {
    parse_fleet(text, env)?.into_single()
}

/// Parses configuration text, either form, with the given environment (pure: tests pass a map).
pub fn parse_fleet(text: &str, env: &HashMap<String, String>) -> Result<Fleet, ConfigError> {
    // The file alone, strictly typed first: the config crate below converts loosely
    // (`premake = 3.5` became 3, `run_on_start = 7` true) and loses positions; the toml crate
    // refuses wrong types and names the line. A quoted line may hold a connection string.
    let strict = toml::from_str::<RawConfig>(text).map_err(|e| {
        ConfigError::Parse(crate::secret::mask_passwords(
            explain_parse_error(e.to_string().trim_end()).as_str(),
        ))
    })?;
    // DATABASE_URL is part 1's `database.url`; a fleet names each database's URL itself, so an
    // environment left over from a single-database deployment changes nothing there.
    let database_url = if strict.databases.is_empty() {
        env.get("DATABASE_URL").filter(|v| !v.is_empty()).cloned()
    } else {
        None
    };
    let overrides: HashMap<String, String> = env
        .iter()
        .filter(|(k, _)| k.starts_with("PARTKEEPER__"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let builder = ::config::Config::builder()
        .add_source(::config::File::from_str(text, ::config::FileFormat::Toml))
        .add_source(
            ::config::Environment::with_prefix("PARTKEEPER")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(overrides)),
        )
        .set_override_option("database.url", database_url)
        .map_err(|e| ConfigError::Parse(e.to_string()))?;
    let raw: RawConfig = builder
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| {
            let msg = match toml::from_str::<toml::Table>(text) {
                // The config crate loses the position of some TOML errors ("number too large
                // to fit in target type"); the toml crate's message shows the line, key and all.
                Err(located) => located.to_string(),
                Ok(_) => explain_parse_error(&e.to_string()),
            };
            // A line quoted back may hold a connection string that did not parse as a URL.
            ConfigError::Parse(crate::secret::mask_passwords(msg.trim_end()))
        })?;
    validate(raw, env)
}

/// Reads the file (`--config`, else `PARTKEEPER_CONFIG`, else the default path) and the process
/// environment.
pub fn load(path: Option<&Path>) -> Result<Fleet, ConfigError> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let path = resolve_path(path, &env);
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    parse_fleet(&text, &env)
}

pub fn resolve_path(path: Option<&Path>, env: &HashMap<String, String>) -> PathBuf {
    path.map(Path::to_path_buf)
        .or_else(|| {
            env.get("PARTKEEPER_CONFIG")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
}

/// serde says "unknown field `premak`, expected one of ..."; add what to do about it.
fn explain_parse_error(msg: &str) -> String {
    // The config crate writes `tables[0]premake`; everything else says `tables[0].premake`.
    let mut dotted = String::with_capacity(msg.len());
    let mut chars = msg.chars().peekable();
    while let Some(c) = chars.next() {
        dotted.push(c);
        if c == ']'
            && chars
                .peek()
                .is_some_and(|n| n.is_ascii_alphabetic() || *n == '_')
        {
            dotted.push('.');
        }
    }
    let msg = dotted.as_str();
    if msg.contains("unknown field") {
        format!("{msg}. Unknown keys are refused so that a typo is not silently ignored: fix or remove the key")
    } else if msg.contains("missing field") {
        format!("{msg}. Add the key (see config/partkeeper.toml for an example)")
    } else {
        msg.to_string()
    }
}

fn with_seconds(expr: &str) -> Option<String> {
    crate::cron::with_seconds(expr)
}

/// Validates with the same parser the scheduler uses, so what passes here also runs.
pub fn check_cron(expr: &str) -> Result<(), String> {
    crate::cron::Schedule::parse(expr).map(|_| ())
}

fn ser_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}
fn is_zero(n: &i64) -> bool {
    *n == 0
}
fn ser_tz<S: Serializer>(tz: &Tz, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(tz.name())
}
fn ser_opt_display<S: Serializer, T: std::fmt::Display>(
    v: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}
fn ser_qualified<S: Serializer>(q: &QualifiedName, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&q.as_written())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::Interval;

    const GOOD: &str = r#"
[database]
url = "postgres://partkeeper:s3cret@localhost:5432/app"
lock_timeout = "3s"
statement_timeout = "10min"

[[replicas]]
name = "replica-1"
url = "postgres://partkeeper:s3cret@replica-1:5432/app"

[server]
listen = "0.0.0.0:9790"

[schedule]
maintenance = "0 2 * * *"
timezone = "UTC"
run_on_start = true
metrics_refresh = "30s"

[[tables]]
name = "public.pricing_data"
column = "date"
interval = "1 month"
premake = 3
retention = "36 months"
retention_mode = "drop"
default_partition = true
"#;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn problems(text: &str) -> String {
        match parse_str(text, &env(&[])) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_spec_example_parses() {
        let c = parse_str(GOOD, &env(&[])).unwrap();
        assert_eq!(c.database.lock_timeout, Duration::from_secs(3));
        assert_eq!(c.database.statement_timeout, Duration::from_secs(600));
        assert_eq!(c.tables.len(), 1);
        let t = &c.tables[0];
        assert_eq!(t.name, QualifiedName::new("public", "pricing_data"));
        assert_eq!(t.interval, Interval::Month);
        assert_eq!(t.premake, 3);
        assert_eq!(t.retention_mode, RetentionMode::Drop);
        assert_eq!(c.schedule.cron_with_seconds(), "0 0 2 * * *");
        assert_eq!(c.replicas[0].name, "replica-1");
    }

    #[test]
    fn environment_overrides_the_file() {
        let c = parse_str(
            GOOD,
            &env(&[
                ("PARTKEEPER__SERVER__LISTEN", "127.0.0.1:1234"),
                ("PARTKEEPER__DATABASE__LOCK_TIMEOUT", "750ms"),
                ("DATABASE_URL", "postgres://other@db:5432/x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:1234");
        assert_eq!(c.database.lock_timeout, Duration::from_millis(750));
        assert_eq!(c.database.url.host_label(), "db:5432/x");
    }

    #[test]
    fn unknown_keys_are_errors() {
        let msg = problems(&GOOD.replace("premake = 3", "premak = 3"));
        assert!(msg.contains("premak"), "{msg}");
        let msg = problems(&format!("{GOOD}\n[extra]\nx = 1\n"));
        assert!(msg.contains("extra"), "{msg}");
    }

    #[test]
    fn each_bad_value_names_its_key() {
        let cases = [
            (
                "maintenance = \"0 2 * * *\"",
                "maintenance = \"every day\"",
                "schedule.maintenance",
            ),
            (
                "maintenance = \"0 2 * * *\"",
                "maintenance = \"0 25 * * *\"",
                "schedule.maintenance",
            ),
            (
                "interval = \"1 month\"",
                "interval = \"7 hours\"",
                "tables[0].interval",
            ),
            ("premake = 3", "premake = -1", "tables[0].premake"),
            (
                "interval = \"1 month\"",
                "interval = 0",
                "tables[0].interval",
            ),
            (
                "interval = \"1 month\"",
                "interval = \"1000\"",
                "tables[0].interval",
            ),
            (
                "interval = \"1 month\"",
                "interval = \"1 month\"\nepoch = \"hours\"",
                "tables[0].epoch",
            ),
            (
                "interval = \"1 month\"",
                "interval = 1000\nepoch = \"seconds\"",
                "tables[0].epoch",
            ),
            (
                "interval = \"1 month\"",
                "interval = \"1 month\"\nstart = 5",
                "tables[0].start",
            ),
            (
                "retention = \"36 months\"",
                "retention = 1000",
                "tables[0].retention",
            ),
            (
                "retention = \"36 months\"",
                "retention = \"0 months\"",
                "tables[0].retention",
            ),
            (
                "retention = \"36 months\"",
                "retention = \"-3 months\"",
                "tables[0].retention",
            ),
            (
                "retention_mode = \"drop\"",
                "retention_mode = \"delete\"",
                "tables[0].retention_mode",
            ),
            (
                "timezone = \"UTC\"",
                "timezone = \"Mars/Olympus\"",
                "schedule.timezone",
            ),
            (
                "lock_timeout = \"3s\"",
                "lock_timeout = \"soon\"",
                "database.lock_timeout",
            ),
            (
                "listen = \"0.0.0.0:9790\"",
                "listen = \"nowhere\"",
                "server.listen",
            ),
            (
                "name = \"public.pricing_data\"",
                "name = \"public.x; drop table y\"",
                "tables[0].name",
            ),
            ("column = \"date\"", "column = \"a.b\"", "tables[0].column"),
            (
                "url = \"postgres://partkeeper:s3cret@localhost:5432/app\"",
                "url = \"mysql://x\"",
                "database.url",
            ),
        ];
        for (from, to, key) in cases {
            assert!(GOOD.contains(from), "{from}");
            let msg = problems(&GOOD.replacen(from, to, 1));
            assert!(msg.contains(key), "{to}: {msg}");
            assert!(!msg.contains("s3cret"), "{msg}");
        }
    }

    #[test]
    fn type_errors_name_the_key_as_the_other_messages_do() {
        // The file's own type errors quote the line, the key and the column.
        let msg = problems(&GOOD.replace("premake = 3", "premake = \"three\""));
        assert!(
            msg.contains("premake = \"three\"") && msg.contains("line 24"),
            "{msg}"
        );
        let msg = problems(&GOOD.replace("premake = 3", "premake = 123456789012345678901234"));
        assert!(msg.contains("premake = 123456789012345678901234"), "{msg}");
        assert!(msg.contains("line 24"), "{msg}");
    }

    #[test]
    fn a_url_line_toml_cannot_read_is_quoted_without_its_password() {
        let msg = problems(&GOOD.replace(
            "url = \"postgres://partkeeper:s3cret@localhost:5432/app\"",
            "url = \"postgres://partkeeper:s3cret@localhost:5432/app",
        ));
        assert!(msg.contains("line 3"), "{msg}");
        assert!(!msg.contains("s3cret"), "{msg}");
        assert!(msg.contains("postgres://partkeeper:***@localhost"), "{msg}");
    }

    #[test]
    fn wrong_types_in_the_file_are_errors_not_conversions() {
        for (from, to) in [
            ("premake = 3", "premake = 3.5"),
            ("run_on_start = true", "run_on_start = 7"),
            ("name = \"public.pricing_data\"", "name = 1"),
            ("lock_timeout = \"3s\"", "lock_timeout = 3"),
        ] {
            assert!(GOOD.contains(from), "{from}");
            let msg = problems(&GOOD.replacen(from, to, 1));
            let key = to.split(' ').next().unwrap();
            assert!(msg.contains(key) && msg.contains("line"), "{to}: {msg}");
            assert!(!msg.contains("s3cret"), "{msg}");
        }
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let msg = problems(
            &GOOD
                .replace("premake = 3", "premake = -2")
                .replace("interval = \"1 month\"", "interval = \"fortnight\""),
        );
        assert!(msg.contains("premake") && msg.contains("interval"), "{msg}");
    }

    #[test]
    fn a_missing_url_says_where_to_set_it() {
        let msg = problems(&GOOD.replace(
            "url = \"postgres://partkeeper:s3cret@localhost:5432/app\"\n",
            "",
        ));
        assert!(msg.contains("DATABASE_URL"), "{msg}");
    }

    #[test]
    fn six_field_cron_is_accepted() {
        let c = parse_str(
            &GOOD.replace("\"0 2 * * *\"", "\"*/10 * * * * *\""),
            &env(&[]),
        )
        .unwrap();
        assert_eq!(c.schedule.cron_with_seconds(), "*/10 * * * * *");
    }

    #[test]
    fn the_redacted_rendering_hides_passwords() {
        let c = parse_str(GOOD, &env(&[])).unwrap();
        let out = c.to_redacted_toml();
        assert!(!out.contains("s3cret"), "{out}");
        assert!(out.contains("***"), "{out}");
        assert!(out.contains("pricing_data"), "{out}");
    }

    #[test]
    fn defaults_fill_what_is_left_out() {
        let c = parse_str(
            "[database]\nurl = \"postgres://u@h/d\"\n[[tables]]\nname = \"t\"\ncolumn = \"d\"\ninterval = \"1 day\"\n",
            &env(&[]),
        )
        .unwrap();
        assert_eq!(c.tables[0].premake, 3);
        assert_eq!(c.tables[0].retention_mode, RetentionMode::Detach);
        assert!(c.tables[0].default_partition);
        assert_eq!(c.server.listen.to_string(), DEFAULT_LISTEN);
    }

    #[test]
    fn bench_queries_are_optional_and_checked_like_every_other_key() {
        assert!(parse_str(GOOD, &env(&[])).unwrap().bench.is_empty());
        let with = |block: &str| format!("{GOOD}\n{block}");
        let c = parse_str(
            &with(
                "[[bench]]\ntable = \"public.pricing_data\"\nname = \"upcoming week\"\n\
                 sql = \"SELECT * FROM {table} WHERE {key} >= {reference}\"\n",
            ),
            &env(&[]),
        )
        .unwrap();
        assert_eq!(
            c.bench,
            [BenchQuery {
                table: QualifiedName::new("public", "pricing_data"),
                name: "upcoming week".into(),
                sql: "SELECT * FROM {table} WHERE {key} >= {reference}".into(),
            }]
        );
        assert!(c.to_redacted_toml().contains("[[bench]]"));
        let cases = [
            (
                "table = \"public.other\"\nname = \"a\"\nsql = \"SELECT 1 FROM {table}\"",
                "bench[0].table",
            ),
            (
                "table = \"pricing_data\"\nname = \" \"\nsql = \"SELECT 1 FROM {table}\"",
                "bench[0].name",
            ),
            (
                "table = \"pricing_data\"\nname = \"a\"\nsql = \"DELETE FROM {table}\"",
                "bench[0].sql",
            ),
            (
                "table = \"pricing_data\"\nname = \"a\"\nsql = \"SELECT {today} FROM {table}\"",
                "{today}",
            ),
            (
                "table = \"pricing_data\"\nname = \"a\"\nsql = \"SELECT 1 FROM {table}\"\nruns = 3",
                "runs",
            ),
        ];
        for (body, expected) in cases {
            let msg = problems(&with(&format!("[[bench]]\n{body}\n")));
            assert!(msg.contains(expected), "{body}: {msg}");
        }
        let twice =
            "[[bench]]\ntable = \"pricing_data\"\nname = \"a\"\nsql = \"SELECT 1 FROM {table}\"\n";
        let msg = problems(&with(&format!("{twice}{twice}")));
        assert!(msg.contains("used twice"), "{msg}");
    }

    #[test]
    fn table_selection_matches_names_as_sql_reads_them() {
        let c = parse_str(GOOD, &env(&[])).unwrap();
        assert_eq!(c.select_tables(Some("PRICING_DATA")).unwrap().len(), 1);
        let err = c
            .select_tables(Some("public.other"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("public.pricing_data"), "{err}");
    }

    mod props {
        //! Fuzzing by property (`cargo fuzz` needs a nightly toolchain): parsing never panics,
        //! and when one key is wrong the error names it.
        use super::*;
        use proptest::prelude::*;

        /// GOOD as data: (section header, [(key, value as TOML)]).
        const DOC: &[(&str, &[(&str, &str)])] = &[
            (
                "[database]",
                &[
                    ("url", "\"postgres://partkeeper:s3cret@localhost:5432/app\""),
                    ("lock_timeout", "\"3s\""),
                    ("statement_timeout", "\"10min\""),
                    ("connect_timeout", "\"10s\""),
                    ("lock_retries", "5"),
                ],
            ),
            (
                "[[replicas]]",
                &[
                    ("name", "\"replica-1\""),
                    ("url", "\"postgres://partkeeper:s3cret@replica-1:5432/app\""),
                ],
            ),
            ("[server]", &[("listen", "\"0.0.0.0:9790\"")]),
            (
                "[schedule]",
                &[
                    ("maintenance", "\"0 2 * * *\""),
                    ("timezone", "\"UTC\""),
                    ("run_on_start", "true"),
                    ("metrics_refresh", "\"30s\""),
                ],
            ),
            (
                "[[tables]]",
                &[
                    ("name", "\"public.pricing_data\""),
                    ("column", "\"date\""),
                    ("interval", "\"1 month\""),
                    ("premake", "3"),
                    ("retention", "\"36 months\""),
                    ("retention_mode", "\"drop\""),
                    ("default_partition", "true"),
                    ("timezone", "\"UTC\""),
                ],
            ),
        ];

        /// Every (section, key) of DOC, as indexes.
        fn keys() -> Vec<(usize, usize)> {
            DOC.iter()
                .enumerate()
                .flat_map(|(s, (_, ks))| (0..ks.len()).map(move |k| (s, k)))
                .collect()
        }

        /// DOC with key `(section, key)` given `value` (or left out when `None`), plus `extra`
        /// (an unknown key) at the end of that section.
        fn render(at: (usize, usize), value: Option<&str>, extra: Option<&str>) -> String {
            let mut out = String::new();
            for (s, (header, ks)) in DOC.iter().enumerate() {
                out.push_str(header);
                out.push('\n');
                for (k, (key, good)) in ks.iter().enumerate() {
                    match ((s, k) == at, value) {
                        (false, _) => out.push_str(&format!("{key} = {good}\n")),
                        (true, Some(v)) => out.push_str(&format!("{key} = {v}\n")),
                        (true, None) => {}
                    }
                }
                if let (true, Some(x)) = (s == at.0, extra) {
                    out.push_str(&format!("{x} = 1\n"));
                }
            }
            out
        }

        /// Any TOML value, weighted towards near misses of what the keys expect.
        fn toml_value() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<String>().prop_map(|s| toml::Value::String(s).to_string()),
                "-?[0-9]{0,4} ?(ms|s|sec|min|h|day|days|week|weeks|month|months|year|years|fortnight)?"
                    .prop_map(|s| toml::Value::String(s).to_string()),
                "[0-9*/,-]{1,4}( [0-9*/,-]{1,4}){0,7}".prop_map(|s| toml::Value::String(s).to_string()),
                "[a-zA-Z_/+-]{0,20}".prop_map(|s| toml::Value::String(s).to_string()),
                "[\"a-zA-Z_. ;]{0,30}".prop_map(|s| toml::Value::String(s).to_string()),
                "[a-z]{0,8}://[a-z:@/0-9.]{0,30}".prop_map(|s| toml::Value::String(s).to_string()),
                any::<i64>().prop_map(|i| i.to_string()),
                "[1-9][0-9]{19,30}",
                any::<f64>().prop_map(|f| toml::Value::Float(f).to_string()),
                "[0-9]{1,3}e[0-9]{3,4}",
                any::<bool>().prop_map(|b| b.to_string()),
                Just("[]".to_string()),
                Just("[1, \"a\"]".to_string()),
                Just("{ a = 1 }".to_string()),
                Just("1979-05-27T07:32:00Z".to_string()),
            ]
        }

        /// Environment maps: known overrides with any value, and arbitrary names.
        fn env_map() -> impl Strategy<Value = HashMap<String, String>> {
            let name = prop_oneof![
                Just("DATABASE_URL".to_string()),
                Just("PARTKEEPER__DATABASE__LOCK_TIMEOUT".to_string()),
                Just("PARTKEEPER__DATABASE__LOCK_RETRIES".to_string()),
                Just("PARTKEEPER__SERVER__LISTEN".to_string()),
                Just("PARTKEEPER__SCHEDULE__RUN_ON_START".to_string()),
                Just("PARTKEEPER__SCHEDULE__MAINTENANCE".to_string()),
                "PARTKEEPER__[A-Z_]{0,24}",
                "PARTKEEPER(_{0,3}[A-Z0-9]{0,6}){0,4}",
                ".{0,20}",
            ];
            prop::collection::hash_map(name, ".{0,40}", 0..6)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn parsing_never_panics_on_arbitrary_text_and_environment(text in ".{0,400}", env in env_map()) {
                let _ = parse_str(&text, &env);
            }

            #[test]
            fn parsing_never_panics_on_toml_shaped_garbage(
                lines in prop::collection::vec(
                    (prop_oneof![Just("".to_string()), "\\[{1,2}[a-z_.]{0,12}\\]{1,2}".prop_map(|h| format!("{h}\n"))],
                     "[a-z_\"]{0,14}", toml_value()),
                    0..12,
                ),
                env in env_map(),
            ) {
                let text: String = lines.iter().map(|(h, k, v)| format!("{h}{k} = {v}\n")).collect();
                let _ = parse_str(&text, &env);
            }

            #[test]
            fn a_wrong_value_gets_an_error_that_names_its_key(
                at in prop::sample::select(keys()),
                value in prop::option::weighted(0.9, toml_value()),
            ) {
                let (header, ks) = DOC[at.0];
                let key = ks[at.1].0;
                let text = render(at, value.as_deref(), None);
                if let Err(e) = parse_str(&text, &HashMap::new()) {
                    let msg = e.to_string();
                    prop_assert!(msg.contains(key), "{} {} = {:?}: {}", header, key, value, msg);
                    prop_assert!(!msg.contains("s3cret"), "{}", msg);
                }
            }

            #[test]
            fn an_unknown_key_is_named_in_the_error(
                at in prop::sample::select(keys()),
                extra in "[a-z][a-z_]{0,12}",
            ) {
                let known: Vec<&str> = DOC[at.0].1.iter().map(|(k, _)| *k).collect();
                prop_assume!(!known.contains(&extra.as_str()));
                let msg = match parse_str(&render(at, Some(DOC[at.0].1[at.1].1), Some(&extra)), &HashMap::new()) {
                    Ok(_) => return Err(TestCaseError::fail(format!("`{extra}` was accepted"))),
                    Err(e) => e.to_string(),
                };
                prop_assert!(msg.contains(&format!("`{extra}`")), "{}", msg);
            }

            #[test]
            fn a_broken_url_line_never_shows_its_password(
                cut in 0usize..60,
                tail in "[ \"#=\\[\\]a-z0-9]{0,12}",
            ) {
                let good = "\"postgres://partkeeper:s3cret@localhost:5432/app\"";
                let broken = format!("{}{tail}", &good[..cut.min(good.len())]);
                let text = render((0, 0), Some(&broken), None);
                if let Err(e) = parse_str(&text, &HashMap::new()) {
                    let msg = e.to_string();
                    prop_assert!(!msg.contains("s3cret"), "{}", msg);
                }
            }

            #[test]
            fn a_wrong_environment_override_gets_an_error_that_names_its_key(
                at in prop::sample::select(keys()),
                value in ".{0,30}",
            ) {
                let (header, ks) = DOC[at.0];
                prop_assume!(!header.starts_with("[["));
                let section = header.trim_matches(|c| c == '[' || c == ']');
                let key = ks[at.1].0;
                let var = format!("PARTKEEPER__{}__{}", section.to_uppercase(), key.to_uppercase());
                let env: HashMap<String, String> = [(var.clone(), value.clone())].into();
                if let Err(e) = parse_str(&render(at, Some(ks[at.1].1), None), &env) {
                    let msg = e.to_string();
                    prop_assert!(msg.contains(key), "{}={:?}: {}", var, value, msg);
                }
            }
        }
    }
}

//! From [`RawConfig`] to [`Fleet`]: one function per section, every problem collected (not just
//! the first) and named by its key, with what to write instead.
//!
//! The part 1 form (`[database]`, `[[replicas]]`, `[[tables]]`) is one database; the fleet form
//! lists `[[databases]]`, each with its own connection, replicas, tables and optional overrides of
//! the top-level `[database]` settings and `[schedule]`. Both go through the same functions, so a
//! table means the same in either form.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use chrono_tz::Tz;

use super::*;
use crate::calendar::{Interval, Retention};
use crate::ident::{self, QualifiedName};
use crate::keys::{EpochUnit, Width};
use crate::secret::SecretUrl;

/// Where a key lives, for messages: part 1's sections, or one `[[databases]]` entry.
struct Scope {
    /// Before every message of one fleet entry: `database "billing" (databases[1]): `.
    label: String,
    /// The prefix of the connection keys: `database.` in part 1, none inside `[[databases]]`.
    section: &'static str,
}

impl Scope {
    fn part1() -> Scope {
        Scope {
            label: String::new(),
            section: "database.",
        }
    }

    fn entry(i: usize, name: &str) -> Scope {
        Scope {
            label: format!("database {name:?} (databases[{i}]): "),
            section: "",
        }
    }

    /// A key of the database's own part: `tables[0].interval`, `schedule.timezone`.
    fn key(&self, k: &str) -> String {
        format!("{}{k}", self.label)
    }

    /// A connection key: `database.lock_timeout` in part 1, `lock_timeout` in an entry.
    fn db_key(&self, k: &str) -> String {
        format!("{}{}{k}", self.label, self.section)
    }
}

/// The connection settings `[database]` and each `[[databases]]` entry share.
struct Settings {
    lock_timeout: Duration,
    statement_timeout: Duration,
    connect_timeout: Duration,
    lock_retries: u32,
    pooler: Pooler,
}

impl Settings {
    fn built_in() -> Settings {
        let d = |t: &str| humantime::parse_duration(t).expect("built-in default");
        Settings {
            lock_timeout: d(DEFAULT_LOCK_TIMEOUT),
            statement_timeout: d(DEFAULT_STATEMENT_TIMEOUT),
            connect_timeout: d(DEFAULT_CONNECT_TIMEOUT),
            lock_retries: DEFAULT_LOCK_RETRIES,
            pooler: Pooler::None,
        }
    }
}

/// Checks every value, collecting all problems so the user can fix them in one go.
pub fn validate(raw: RawConfig, env: &HashMap<String, String>) -> Result<Fleet, ConfigError> {
    let mut problems = Vec::new();
    let p = &mut problems;
    let server = server(&raw.server, p);
    let schedule = schedule(&Scope::part1(), &raw.schedule, None, p);
    let listed = !raw.databases.is_empty();
    let databases = if listed {
        fleet(raw, env, &server, &schedule, p)
    } else {
        single(raw, env, &server, schedule, p).into_iter().collect()
    };
    if !problems.is_empty() {
        return Err(ConfigError::Invalid(problems));
    }
    Ok(Fleet {
        server,
        databases,
        listed,
    })
}

/// The part 1 form: `[database]` + `[[replicas]]` + `[[tables]]`, one database.
fn single(
    raw: RawConfig,
    env: &HashMap<String, String>,
    server: &ServerConfig,
    schedule: ScheduleConfig,
    p: &mut Vec<String>,
) -> Option<Config> {
    let scope = Scope::part1();
    let url = match raw.database.url.as_deref().map(str::trim) {
        Some(u) if !u.is_empty() => SecretUrl::parse(u)
            .map_err(|e| p.push(format!("database.url: {e}")))
            .ok(),
        _ => {
            p.push(
                "database.url is not set: set it in the file or the DATABASE_URL environment variable \
                 (postgres://user:password@host:5432/dbname)"
                    .into(),
            );
            None
        }
    };
    let name = match raw.database.name.as_deref() {
        Some(n) => database_label(&scope.db_key("name"), n, p),
        None => url.as_ref().map(crate::hooks::database_name),
    };
    let settings = settings(&scope, &raw.database, &Settings::built_in(), p);
    let replicas = replicas(&scope, raw.replicas, env, p);
    let tables = tables(&scope, raw.tables, schedule.timezone, p);
    let bench = bench(&scope, raw.bench, &tables, p);
    Some(Config {
        database: database(name?, url?, settings),
        replicas,
        server: server.clone(),
        schedule,
        tables,
        bench,
    })
}

/// The fleet form: `[[databases]]`, each a database of its own; the top-level `[database]` and
/// `[schedule]` give the defaults its entries may override.
fn fleet(
    raw: RawConfig,
    env: &HashMap<String, String>,
    server: &ServerConfig,
    schedule_defaults: &ScheduleConfig,
    p: &mut Vec<String>,
) -> Vec<Config> {
    if raw.database.url.is_some() {
        p.push(
            "database.url cannot be used with [[databases]]: give each [[databases]] entry its own \
             url or url_env ([database] then holds only the defaults of the other keys)"
                .into(),
        );
    }
    if raw.database.name.is_some() {
        p.push(
            "database.name cannot be used with [[databases]]: set name in each [[databases]] entry"
                .into(),
        );
    }
    for (section, used) in [
        ("tables", !raw.tables.is_empty()),
        ("replicas", !raw.replicas.is_empty()),
        ("bench", !raw.bench.is_empty()),
    ] {
        if used {
            p.push(format!(
                "[[{section}]] cannot be used with [[databases]]: move each entry under the \
                 [[databases.{section}]] of its database"
            ));
        }
    }
    let defaults = settings(&Scope::part1(), &raw.database, &Settings::built_in(), p);

    let mut names = BTreeSet::new();
    let mut servers: BTreeMap<String, String> = BTreeMap::new();
    let mut out = Vec::new();
    for (i, d) in raw.databases.into_iter().enumerate() {
        let name = database_label(&format!("databases[{i}].name"), &d.name, p);
        if let Some(n) = &name {
            if !names.insert(n.clone()) {
                p.push(format!(
                    "databases[{i}].name = {n:?} is used twice; each database needs its own name (its `database` label)"
                ));
            }
        }
        let scope = Scope::entry(i, &d.name);
        let url = secret_url(&scope.key("url"), d.url, d.url_env, env, p);
        if let (Some(u), Some(n)) = (&url, &name) {
            // Two entries on one database would contend for one leader lock and double every
            // series: almost certainly a copy-paste slip.
            if let Some(other) = servers.insert(u.host_label(), n.clone()) {
                p.push(format!(
                    "{}url points at the same database as {other:?} ({}); list each database once",
                    scope.label,
                    u.host_label()
                ));
            }
        }
        let connection = RawDatabase {
            name: None,
            url: None,
            lock_timeout: d.lock_timeout,
            statement_timeout: d.statement_timeout,
            connect_timeout: d.connect_timeout,
            lock_retries: d.lock_retries,
            pooler: d.pooler,
        };
        let settings = settings(&scope, &connection, &defaults, p);
        let schedule = schedule(&scope, &d.schedule, Some(schedule_defaults), p);
        let replicas = replicas(&scope, d.replicas, env, p);
        let tables = tables(&scope, d.tables, schedule.timezone, p);
        let bench = bench(&scope, d.bench, &tables, p);
        if let (Some(name), Some(url)) = (name, url) {
            out.push(Config {
                database: database(name, url, settings),
                replicas,
                server: server.clone(),
                schedule,
                tables,
                bench,
            });
        }
    }
    out
}

fn database(name: String, url: SecretUrl, s: Settings) -> DatabaseConfig {
    DatabaseConfig {
        name,
        url,
        lock_timeout: s.lock_timeout,
        statement_timeout: s.statement_timeout,
        connect_timeout: s.connect_timeout,
        lock_retries: s.lock_retries,
        pooler: s.pooler,
    }
}

/// A database's name is its `database` label and what `--database` matches: short and plain.
fn database_label(key: &str, name: &str, p: &mut Vec<String>) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Some(name.to_string())
    } else {
        p.push(format!(
            "{key} = {name:?}: use 1 to 63 letters, digits, '_', '-' or '.' (it becomes the \
             `database` label and the value of --database)"
        ));
        None
    }
}

/// `url` or `url_env` (the name of an environment variable holding the URL): exactly one.
fn secret_url(
    key: &str,
    url: Option<String>,
    url_env: Option<String>,
    env: &HashMap<String, String>,
    p: &mut Vec<String>,
) -> Option<SecretUrl> {
    let text = match (url, url_env) {
        (Some(_), Some(_)) => {
            p.push(format!("{key}: set url or url_env, not both"));
            return None;
        }
        (None, None) => {
            p.push(format!(
                "{key} is not set: write url = \"postgres://user:password@host:5432/dbname\" or \
                 url_env = \"NAME\" (an environment variable holding it)"
            ));
            return None;
        }
        (Some(u), None) => u,
        (None, Some(var)) => match env.get(var.trim()).filter(|v| !v.trim().is_empty()) {
            Some(v) => v.clone(),
            None => {
                p.push(format!(
                    "{key}_env = {var:?}: the environment variable is not set; export it \
                     (postgres://user:password@host:5432/dbname)"
                ));
                return None;
            }
        },
    };
    SecretUrl::parse(&text)
        .map_err(|e| p.push(format!("{key}: {e}")))
        .ok()
}

fn duration(key: &str, text: Option<&str>, p: &mut Vec<String>) -> Option<Duration> {
    let text = text?;
    match humantime::parse_duration(text.trim()) {
        Ok(d) if d.is_zero() => {
            p.push(format!("{key} = {text:?} must be longer than zero"));
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            p.push(format!(
                "{key} = {text:?} is not a duration ({e}); write e.g. \"3s\", \"500ms\", \"5min\""
            ));
            None
        }
    }
}

/// The connection settings: each key as written, else `defaults`.
fn settings(
    scope: &Scope,
    raw: &RawDatabase,
    defaults: &Settings,
    p: &mut Vec<String>,
) -> Settings {
    let mut d = |k: &str, v: &Option<String>, default: Duration| {
        duration(&scope.db_key(k), v.as_deref(), p).unwrap_or(default)
    };
    let lock_timeout = d("lock_timeout", &raw.lock_timeout, defaults.lock_timeout);
    let statement_timeout = d(
        "statement_timeout",
        &raw.statement_timeout,
        defaults.statement_timeout,
    );
    let connect_timeout = d(
        "connect_timeout",
        &raw.connect_timeout,
        defaults.connect_timeout,
    );
    let lock_retries = match raw.lock_retries {
        None => defaults.lock_retries,
        Some(n) if (1..=100).contains(&n) => n as u32,
        Some(n) => {
            p.push(format!(
                "{} = {n} must be between 1 and 100",
                scope.db_key("lock_retries")
            ));
            defaults.lock_retries
        }
    };
    let pooler = match raw.pooler.as_deref() {
        None => defaults.pooler,
        Some(v) => Pooler::parse(v).unwrap_or_else(|| {
            p.push(format!(
                "{} = {v:?} is not one of \"none\" (a direct connection), \"session\" or \"transaction\" (the pool_mode of the PgBouncer in between)",
                scope.db_key("pooler")
            ));
            Pooler::None
        }),
    };
    Settings {
        lock_timeout,
        statement_timeout,
        connect_timeout,
        lock_retries,
        pooler,
    }
}

fn server(raw: &RawServer, p: &mut Vec<String>) -> ServerConfig {
    let listen_text = raw.listen.clone().unwrap_or_else(|| DEFAULT_LISTEN.into());
    let listen = match SocketAddr::from_str(listen_text.trim()) {
        Ok(a) => a,
        Err(_) => {
            p.push(format!(
                "server.listen = {listen_text:?} is not an address; write host:port, e.g. \"0.0.0.0:9790\" or \"127.0.0.1:9790\""
            ));
            SocketAddr::from(([0, 0, 0, 0], 9790))
        }
    };
    ServerConfig {
        listen,
        web_config_file: raw
            .web_config_file
            .as_deref()
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from),
    }
}

/// `[schedule]`, or a database's `[databases.schedule]` over the top-level one (`base`).
fn schedule(
    scope: &Scope,
    raw: &RawSchedule,
    base: Option<&ScheduleConfig>,
    p: &mut Vec<String>,
) -> ScheduleConfig {
    let maintenance = match (&raw.maintenance, base) {
        (Some(m), _) => {
            let m = m.trim().to_string();
            if let Err(e) = check_cron(&m) {
                p.push(format!(
                    "{} = {m:?}: {e}",
                    scope.key("schedule.maintenance")
                ));
            }
            m
        }
        (None, Some(b)) => b.maintenance.clone(),
        (None, None) => DEFAULT_SCHEDULE.into(),
    };
    let timezone = match (&raw.timezone, base) {
        (Some(z), _) => parse_tz(&scope.key("schedule.timezone"), z, &mut |s| p.push(s)),
        (None, Some(b)) => b.timezone,
        (None, None) => Tz::UTC,
    };
    let default_refresh = base.map(|b| b.metrics_refresh).unwrap_or_else(|| {
        humantime::parse_duration(DEFAULT_METRICS_REFRESH).expect("built-in default")
    });
    let metrics_refresh = duration(
        &scope.key("schedule.metrics_refresh"),
        raw.metrics_refresh.as_deref(),
        p,
    )
    .unwrap_or(default_refresh);
    ScheduleConfig {
        maintenance,
        timezone,
        run_on_start: raw
            .run_on_start
            .or(base.map(|b| b.run_on_start))
            .unwrap_or(true),
        metrics_refresh,
    }
}

fn replicas(
    scope: &Scope,
    raw: Vec<RawReplica>,
    env: &HashMap<String, String>,
    p: &mut Vec<String>,
) -> Vec<ReplicaConfig> {
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let key = |k: &str| scope.key(&format!("replicas[{i}].{k}"));
        if r.name.trim().is_empty() {
            p.push(format!(
                "{} is empty; give each replica a name for its metric label",
                key("name")
            ));
        } else if !names.insert(r.name.clone()) {
            p.push(format!(
                "{} {:?} is used twice; names must be unique",
                key("name"),
                r.name
            ));
        }
        if let Some(url) = secret_url(&key("url"), r.url, r.url_env, env, p) {
            out.push(ReplicaConfig { name: r.name, url });
        }
    }
    out
}

fn tables(scope: &Scope, raw: Vec<RawTable>, zone: Tz, p: &mut Vec<String>) -> Vec<TablePolicy> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, t) in raw.into_iter().enumerate() {
        let key = |k: &str| scope.key(&format!("tables[{i}].{k}"));
        if let Ok(n) = ident::parse_qualified(&t.name) {
            if !seen.insert(n) {
                p.push(format!(
                    "{} = {:?} is configured twice",
                    key("name"),
                    t.name
                ));
            }
        }
        out.extend(table(&key, t, zone, p));
    }
    out
}

/// One `[[tables]]` entry; `None` when a key it cannot do without is wrong (already reported).
fn table(
    key: &dyn Fn(&str) -> String,
    t: RawTable,
    zone: Tz,
    p: &mut Vec<String>,
) -> Option<TablePolicy> {
    let name = ident::parse_qualified(&t.name)
        .map_err(|e| p.push(format!("{}: {e}", key("name"))))
        .ok();
    let column = ident::parse_ident(&t.column)
        .map_err(|e| p.push(format!("{}: {e}", key("column"))))
        .ok();
    let interval = interval(key, &t.interval, p);
    let integer = matches!(interval, Some(Width::Values(_)));
    let epoch = epoch(key, t.epoch.as_deref(), interval.as_ref(), p);
    if t.start.is_some() && matches!(interval, Some(Width::Calendar(_))) {
        p.push(format!(
            "{}: start sets where integer intervals begin; calendar intervals are aligned by the calendar, so remove it",
            key("start")
        ));
    }
    let (retention, retention_values) = retention(key, t.retention.as_ref(), integer, p);
    let premake = match t.premake.unwrap_or(DEFAULT_PREMAKE) {
        n if (0..=MAX_PREMAKE).contains(&n) => n as u32,
        n => {
            p.push(format!(
                "{} = {n}: premake counts periods to create ahead of the current one; use 0 to {MAX_PREMAKE}",
                key("premake")
            ));
            0
        }
    };
    let retention_mode = match t.retention_mode.as_deref().map(str::trim) {
        None | Some("detach") => RetentionMode::Detach,
        Some("drop") => RetentionMode::Drop,
        Some("archive") => RetentionMode::Archive,
        Some(other) => {
            p.push(format!(
                "{} = {other:?}: write \"drop\" (delete expired partitions), \"detach\" (keep them as plain tables) or \"archive\" (detach and move them to archive_schema)",
                key("retention_mode")
            ));
            RetentionMode::Detach
        }
    };
    let timezone = match t.timezone.as_deref() {
        Some(z) => parse_tz(&key("timezone"), z, &mut |s| p.push(s)),
        None => zone,
    };
    let default_move_limit = match t.default_move_limit.unwrap_or(DEFAULT_MOVE_LIMIT) {
        n if n >= 0 => n as u64,
        n => {
            p.push(format!(
                "{} = {n}: the rows of a new period moved out of the default partition inline; use 0 (always leave them to `partkeeper drain`) or more",
                key("default_move_limit")
            ));
            0
        }
    };
    let lifecycle = crate::lifecycle::validate(
        key,
        t.archive_schema.as_deref(),
        t.template.as_deref(),
        t.hooks,
        t.hook_timeout.as_deref(),
        &mut |s| p.push(s),
    );
    Some(TablePolicy {
        name: name?,
        column: column?,
        interval: interval?,
        premake,
        retention,
        retention_values,
        epoch,
        start: t.start.unwrap_or(0),
        retention_mode,
        default_partition: t.default_partition.unwrap_or(true),
        timezone,
        default_move_limit,
        lifecycle,
    })
}

fn interval(key: &dyn Fn(&str) -> String, raw: &RawScalar, p: &mut Vec<String>) -> Option<Width> {
    match raw {
        RawScalar::Text(text) => match Interval::parse(text) {
            Ok(iv) => Some(Width::Calendar(iv)),
            Err(_) if text.trim().parse::<i64>().is_ok() => {
                p.push(format!(
                    "{} = {text:?}: an integer interval is written without quotes, interval = {}",
                    key("interval"),
                    text.trim()
                ));
                None
            }
            Err(e) => {
                p.push(format!("{}: {e}", key("interval")));
                None
            }
        },
        RawScalar::Int(n) if *n > 0 => Some(Width::Values(*n)),
        RawScalar::Int(n) => {
            p.push(format!(
                "{} = {n}: an integer interval is how many key values one partition holds; use a positive integer such as 1000000 (or a calendar interval such as \"1 day\" for time keys)",
                key("interval")
            ));
            None
        }
    }
}

fn epoch(
    key: &dyn Fn(&str) -> String,
    raw: Option<&str>,
    interval: Option<&Width>,
    p: &mut Vec<String>,
) -> Option<EpochUnit> {
    let raw = raw?;
    if let Some(Width::Values(n)) = interval {
        p.push(format!(
            "{}: a column holding Unix time ({}) is partitioned by the calendar; write a calendar interval such as interval = \"1 day\", or remove epoch to partition by {n} values",
            key("epoch"),
            key("epoch"),
        ));
    }
    let unit = EpochUnit::parse(raw);
    if unit.is_none() {
        p.push(format!(
            "{} = {raw:?}: write \"seconds\", \"milliseconds\", \"microseconds\" or \"nanoseconds\" (the Unix-time unit the integer column holds)",
            key("epoch")
        ));
    }
    unit
}

/// `retention`: a calendar length for calendar intervals, a number of key values for integer ones.
fn retention(
    key: &dyn Fn(&str) -> String,
    raw: Option<&RawScalar>,
    integer: bool,
    p: &mut Vec<String>,
) -> (Option<Retention>, Option<i64>) {
    match raw {
        None => (None, None),
        Some(RawScalar::Int(n)) if integer && *n > 0 => (None, Some(*n)),
        Some(RawScalar::Int(n)) if integer => {
            p.push(format!(
                "{} = {n}: use a positive number of key values (partitions whose upper bound is at or below max(key) minus it expire)",
                key("retention")
            ));
            (None, None)
        }
        Some(RawScalar::Int(n)) => {
            p.push(format!(
                "{} = {n}: an integer retention goes with an integer interval; for a calendar interval write e.g. retention = \"36 months\"",
                key("retention")
            ));
            (None, None)
        }
        Some(RawScalar::Text(r)) if integer => {
            p.push(format!(
                "{} = {r:?}: with an integer interval, retention is a number of key values, e.g. retention = 100000000",
                key("retention")
            ));
            (None, None)
        }
        Some(RawScalar::Text(r)) => match Retention::parse(r) {
            Ok(r) => (Some(r), None),
            Err(e) => {
                p.push(format!("{}: {e}", key("retention")));
                (None, None)
            }
        },
    }
}

/// `[[bench]]`: query classes of configured tables, names unique per table.
fn bench(
    scope: &Scope,
    raw: Vec<RawBenchQuery>,
    tables: &[TablePolicy],
    p: &mut Vec<String>,
) -> Vec<BenchQuery> {
    let configured: BTreeSet<&QualifiedName> = tables.iter().map(|t| &t.name).collect();
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for (i, b) in raw.into_iter().enumerate() {
        let key = |k: &str| scope.key(&format!("bench[{i}].{k}"));
        let table = match ident::parse_qualified(&b.table) {
            Ok(t) if configured.contains(&t) => Some(t),
            Ok(_) => {
                p.push(format!(
                    "{} = {:?} is not one of the configured tables; add it under [[tables]] or fix the name",
                    key("table"),
                    b.table
                ));
                None
            }
            Err(e) => {
                p.push(format!("{}: {e}", key("table")));
                None
            }
        };
        let name = b.name.trim().to_string();
        if name.is_empty() {
            p.push(format!(
                "{} is empty; give the query a label for bench's output",
                key("name")
            ));
        } else if let Some(t) = &table {
            if !names.insert((t.clone(), name.clone())) {
                p.push(format!(
                    "{} = {name:?} is used twice for {t}; names must be unique per table",
                    key("name")
                ));
            }
        }
        if let Err(e) = crate::bench::queries::check_template(&b.sql) {
            p.push(format!("{} {e}", key("sql")));
        }
        if let Some(table) = table {
            out.push(BenchQuery {
                table,
                name,
                sql: b.sql.trim().to_string(),
            });
        }
    }
    out
}

fn parse_tz(key: &str, text: &str, p: &mut dyn FnMut(String)) -> Tz {
    match text.trim().parse::<Tz>() {
        Ok(tz) => tz,
        Err(_) => {
            p(format!(
                "{key} = {text:?} is not a time zone; write an IANA name such as \"UTC\" or \"Europe/Paris\""
            ));
            Tz::UTC
        }
    }
}

//! The databases a configuration names, and how commands pick among them (`--database`).

use serde::Serialize;

use super::{Config, ConfigError, ServerConfig};

/// Everything one configuration file describes: the HTTP server and one [`Config`] per
/// database. The part 1 form (`[database]` + `[[tables]]`) is a fleet of one.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub server: ServerConfig,
    /// In the order written; names unique.
    pub databases: Vec<Config>,
    /// Written as `[[databases]]` (false: the part 1 form).
    pub listed: bool,
}

impl Fleet {
    pub fn names(&self) -> Vec<&str> {
        self.databases
            .iter()
            .map(|d| d.database.name.as_str())
            .collect()
    }

    /// The one database a command works on: `--database NAME`, or the only one configured.
    pub fn one(&self, wanted: Option<&str>) -> Result<&Config, ConfigError> {
        match (wanted, self.databases.as_slice()) {
            (Some(w), _) => self.find(w),
            (None, [only]) => Ok(only),
            (None, _) => Err(ConfigError::Invalid(vec![format!(
                "{} databases are configured ({}): pass --database NAME to say which",
                self.databases.len(),
                self.names().join(", ")
            )])),
        }
    }

    /// The databases a command about all of them works on: `--database NAME`, else all.
    pub fn select(&self, wanted: Option<&str>) -> Result<Vec<&Config>, ConfigError> {
        match wanted {
            Some(w) => Ok(vec![self.find(w)?]),
            None => Ok(self.databases.iter().collect()),
        }
    }

    fn find(&self, wanted: &str) -> Result<&Config, ConfigError> {
        self.databases
            .iter()
            .find(|d| d.database.name == wanted)
            .ok_or_else(|| {
                ConfigError::Invalid(vec![format!(
                    "--database {wanted}: no such database in the configuration; configured: {}",
                    self.names().join(", ")
                )])
            })
    }

    /// A configuration of exactly one database (tests and library users of the part 1 form).
    pub fn into_single(mut self) -> Result<Config, ConfigError> {
        if self.databases.len() == 1 {
            return Ok(self.databases.remove(0));
        }
        Err(ConfigError::Invalid(vec![format!(
            "expected one database, the configuration has {} ({})",
            self.databases.len(),
            self.names().join(", ")
        )]))
    }

    /// The effective configuration as TOML, passwords replaced by `***`: the part 1 form as
    /// before, a fleet as `[server]` and one `[[databases]]` entry per database with every
    /// default filled in.
    pub fn to_redacted_toml(&self) -> String {
        if !self.listed {
            if let [only] = self.databases.as_slice() {
                return only.to_redacted_toml();
            }
        }
        #[derive(Serialize)]
        struct View<'a> {
            server: &'a ServerConfig,
            databases: Vec<toml::Table>,
        }
        let entry = |c: &Config| -> Result<toml::Table, toml::ser::Error> {
            let mut t = toml::Table::try_from(c)?;
            t.remove("server");
            // The connection keys sit directly in the entry, as they are written.
            if let Some(toml::Value::Table(db)) = t.remove("database") {
                let mut out = db;
                out.extend(t);
                return Ok(out);
            }
            Ok(t)
        };
        let rendered = self
            .databases
            .iter()
            .map(entry)
            .collect::<Result<Vec<_>, _>>()
            .and_then(|databases| {
                toml::to_string_pretty(&View {
                    server: &self.server,
                    databases,
                })
            });
        rendered.unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use crate::config::{parse_fleet, parse_str, Pooler};

    const FLEET: &str = r#"
[database]
lock_timeout = "2s"

[schedule]
maintenance = "0 * * * *"

[[databases]]
name = "billing"
url_env = "BILLING_DATABASE_URL"
lock_timeout = "500ms"
[[databases.replicas]]
name = "billing-replica-1"
url_env = "BILLING_REPLICA_URL"
[[databases.tables]]
name = "public.invoices"
column = "created_at"
interval = "1 month"

[[databases]]
name = "events"
url = "postgres://pk:hunter2@events-db:5432/events"
pooler = "transaction"
[databases.schedule]
maintenance = "*/10 * * * *"
timezone = "Europe/Paris"
[[databases.tables]]
name = "public.events"
column = "at"
interval = "1 day"
"#;

    fn env() -> HashMap<String, String> {
        [
            (
                "BILLING_DATABASE_URL",
                "postgres://pk:s3cret@billing-db:5432/billing",
            ),
            (
                "BILLING_REPLICA_URL",
                "postgres://pk:s3cret@billing-replica:5432/billing",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn problems(text: &str, env: &HashMap<String, String>) -> String {
        match parse_fleet(text, env) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn each_database_takes_the_defaults_it_does_not_override() {
        let f = parse_fleet(FLEET, &env()).unwrap();
        assert!(f.listed);
        assert_eq!(f.names(), ["billing", "events"]);
        let billing = &f.databases[0];
        assert_eq!(billing.database.lock_timeout, Duration::from_millis(500));
        assert_eq!(billing.database.url.host_label(), "billing-db:5432/billing");
        assert_eq!(billing.replicas[0].name, "billing-replica-1");
        assert_eq!(billing.schedule.maintenance, "0 * * * *");
        assert_eq!(billing.tables[0].timezone, chrono_tz::UTC);
        let events = &f.databases[1];
        assert_eq!(events.database.lock_timeout, Duration::from_secs(2));
        assert_eq!(events.database.pooler, Pooler::Transaction);
        assert_eq!(events.schedule.maintenance, "*/10 * * * *");
        // A table's zone follows its database's schedule.
        assert_eq!(events.tables[0].timezone, chrono_tz::Europe::Paris);
        assert_eq!(billing.server.listen, f.server.listen);
    }

    #[test]
    fn the_part1_form_is_one_database_named_after_its_url() {
        let text = r#"
[database]
url = "postgres://pk:pw@db:5432/app"
[[tables]]
name = "public.pricing_data"
column = "date"
interval = "1 month"
"#;
        let f = parse_fleet(text, &HashMap::new()).unwrap();
        assert!(!f.listed);
        assert_eq!(f.names(), ["app"]);
        assert_eq!(f.one(None).unwrap().tables.len(), 1);
        let named = text.replace("[database]\n", "[database]\nname = \"pricing\"\n");
        assert_eq!(
            parse_str(&named, &HashMap::new()).unwrap().database.name,
            "pricing"
        );
        // DATABASE_URL keeps overriding database.url in this form.
        let env: HashMap<String, String> = [(
            "DATABASE_URL".to_string(),
            "postgres://x@other:5432/other".to_string(),
        )]
        .into();
        assert_eq!(parse_fleet(text, &env).unwrap().names(), ["other"]);
    }

    #[test]
    fn a_part1_replica_may_take_its_url_from_the_environment() {
        let text = r#"
[database]
url = "postgres://pk:pw@db:5432/app"
[[replicas]]
name = "r1"
url_env = "R1_URL"
"#;
        let env: HashMap<String, String> = [(
            "R1_URL".to_string(),
            "postgres://pk:pw@r1:5432/app".to_string(),
        )]
        .into();
        let c = parse_str(text, &env).unwrap();
        assert_eq!(c.replicas[0].url.host_label(), "r1:5432/app");
        let e = parse_str(text, &HashMap::new()).unwrap_err().to_string();
        assert!(
            e.contains("replicas[0].url_env = \"R1_URL\": the environment variable is not set"),
            "{e}"
        );
    }

    #[test]
    fn database_url_from_the_environment_does_not_reach_a_fleet() {
        let mut env = env();
        env.insert(
            "DATABASE_URL".into(),
            "postgres://x@elsewhere:5432/x".into(),
        );
        let f = parse_fleet(FLEET, &env).unwrap();
        assert_eq!(
            f.databases[0].database.url.host_label(),
            "billing-db:5432/billing"
        );
    }

    #[test]
    fn problems_name_the_database_and_the_key() {
        let bad = FLEET
            .replace("interval = \"1 day\"", "interval = \"1 fortnight\"")
            .replace("lock_timeout = \"500ms\"", "lock_timeout = \"soon\"");
        let e = problems(&bad, &env());
        assert!(
            e.contains("database \"events\" (databases[1]): tables[0].interval"),
            "{e}"
        );
        assert!(
            e.contains("database \"billing\" (databases[0]): lock_timeout = \"soon\""),
            "{e}"
        );
        let e = problems(FLEET, &HashMap::new());
        assert!(
            e.contains("url_env = \"BILLING_DATABASE_URL\": the environment variable is not set"),
            "{e}"
        );
        assert!(
            e.contains("replicas[0].url_env = \"BILLING_REPLICA_URL\""),
            "{e}"
        );
    }

    #[test]
    fn names_are_required_plain_and_unique_and_urls_distinct() {
        let twice = FLEET.replace("name = \"events\"", "name = \"billing\"");
        assert!(problems(&twice, &env()).contains("databases[1].name = \"billing\" is used twice"));
        let odd = FLEET.replace("name = \"events\"", "name = \"ev ents\"");
        assert!(problems(&odd, &env()).contains("databases[1].name = \"ev ents\": use 1 to 63"));
        let same = FLEET.replace("events-db:5432/events", "billing-db:5432/billing");
        assert!(problems(&same, &env()).contains("points at the same database as \"billing\""));
        let both = FLEET.replace(
            "url_env = \"BILLING_DATABASE_URL\"",
            "url_env = \"BILLING_DATABASE_URL\"\nurl = \"postgres://a@b/c\"",
        );
        assert!(problems(&both, &env()).contains("url: set url or url_env, not both"));
        let neither = FLEET.replace("url_env = \"BILLING_DATABASE_URL\"\n", "");
        assert!(problems(&neither, &env()).contains("(databases[0]): url is not set"));
    }

    #[test]
    fn part1_sections_cannot_be_mixed_into_a_fleet() {
        let mixed = format!(
            "{FLEET}\n[[tables]]\nname = \"public.t\"\ncolumn = \"c\"\ninterval = \"1 day\"\n"
        );
        let e = problems(&mixed, &env());
        assert!(
            e.contains("[[tables]] cannot be used with [[databases]]"),
            "{e}"
        );
        let url = FLEET.replace("lock_timeout = \"2s\"", "url = \"postgres://a@b/c\"");
        assert!(problems(&url, &env()).contains("database.url cannot be used with [[databases]]"));
    }

    #[test]
    fn commands_pick_one_database_by_name() {
        let f = parse_fleet(FLEET, &env()).unwrap();
        assert_eq!(f.one(Some("events")).unwrap().database.name, "events");
        let e = f.one(None).unwrap_err().to_string();
        assert!(
            e.contains("2 databases are configured (billing, events): pass --database NAME"),
            "{e}"
        );
        let e = f.one(Some("nope")).unwrap_err().to_string();
        assert!(e.contains("--database nope: no such database in the configuration; configured: billing, events"), "{e}");
        assert_eq!(f.select(None).unwrap().len(), 2);
        assert_eq!(f.select(Some("billing")).unwrap().len(), 1);
    }

    #[test]
    fn the_rendered_fleet_is_valid_toml_without_passwords() {
        let f = parse_fleet(FLEET, &env()).unwrap();
        let text = f.to_redacted_toml();
        assert!(
            !text.contains("s3cret") && !text.contains("hunter2"),
            "{text}"
        );
        let back: toml::Table = toml::from_str(&text).unwrap();
        let dbs = back["databases"].as_array().unwrap();
        assert_eq!(dbs.len(), 2);
        assert_eq!(dbs[1]["name"].as_str(), Some("events"));
        assert_eq!(dbs[1]["lock_timeout"].as_str(), Some("2s"));
        assert!(dbs[1]["url"].as_str().unwrap().contains("***"));
        assert_eq!(dbs[1]["tables"].as_array().unwrap().len(), 1);
    }
}

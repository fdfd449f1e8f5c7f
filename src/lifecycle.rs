//! What happens to a partition around its life beyond create and expire: the archive schema,
//! the template table and the hooks of one table (`archive_schema`, `template`,
//! `[tables.hooks]`), parsed from the file and validated here so config.rs only gains fields.

use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};

use crate::ident::{self, QualifiedName};

/// Where `retention_mode = "archive"` moves expired partitions when `archive_schema` is not set.
pub const DEFAULT_ARCHIVE_SCHEMA: &str = "archive";
/// A hook that dumps a large partition may take long; thirty minutes bounds a hung one.
pub const DEFAULT_HOOK_TIMEOUT: &str = "30min";

/// `[tables.hooks]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHooks {
    pub before_expire: Option<Vec<String>>,
    pub after_create: Option<Vec<String>>,
    /// Also accepted here, next to the hooks it bounds.
    pub hook_timeout: Option<String>,
}

/// The per-table lifecycle settings, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lifecycle {
    /// Schema that archived partitions move to (`retention_mode = "archive"`).
    pub archive_schema: String,
    /// Table whose indexes and storage options every new partition gets.
    #[serde(serialize_with = "ser_opt_qualified")]
    pub template: Option<QualifiedName>,
    pub hooks: Hooks,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            archive_schema: DEFAULT_ARCHIVE_SCHEMA.into(),
            template: None,
            hooks: Hooks::default(),
        }
    }
}

/// Programs run around a partition's life, without a shell: `[program, arg, ...]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hooks {
    /// Before a partition is detached, archived or dropped; a failure keeps the partition.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub before_expire: Vec<String>,
    /// After a partition is created and attached.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub after_create: Vec<String>,
    /// A hook still running after this long is killed and counts as failed.
    #[serde(rename = "hook_timeout", serialize_with = "ser_duration")]
    pub timeout: Duration,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            before_expire: Vec::new(),
            after_create: Vec::new(),
            timeout: Duration::from_secs(30 * 60),
        }
    }
}

/// Validates one table's lifecycle keys; every problem goes to `p` with the key that has it.
pub fn validate(
    key: &dyn Fn(&str) -> String,
    archive_schema: Option<&str>,
    template: Option<&str>,
    hooks: Option<RawHooks>,
    hook_timeout: Option<&str>,
    p: &mut dyn FnMut(String),
) -> Lifecycle {
    let mut out = Lifecycle::default();
    if let Some(s) = archive_schema {
        match ident::parse_ident(s) {
            Ok(s) => out.archive_schema = s,
            Err(e) => p(format!(
                "{}: {e} (a schema name, e.g. archive_schema = \"archive\")",
                key("archive_schema")
            )),
        }
    }
    if let Some(t) = template {
        match ident::parse_qualified(t) {
            Ok(t) => out.template = Some(t),
            Err(e) => p(format!(
                "{}: {e} (the table whose indexes new partitions get, e.g. template = \"public.pricing_data_template\")",
                key("template")
            )),
        }
    }
    let hooks = hooks.unwrap_or_default();
    let hook_timeout = match (hook_timeout, hooks.hook_timeout.as_deref()) {
        (Some(_), Some(_)) => {
            p(format!(
                "{} is set both at the table and in [tables.hooks]; keep one",
                key("hook_timeout")
            ));
            None
        }
        (a, b) => a.or(b),
    };
    for (name, value, slot) in [
        (
            "before_expire",
            hooks.before_expire,
            &mut out.hooks.before_expire,
        ),
        (
            "after_create",
            hooks.after_create,
            &mut out.hooks.after_create,
        ),
    ] {
        let Some(argv) = value else { continue };
        match argv.first().map(|s| s.trim()) {
            None | Some("") => p(format!(
                "{} is empty; write the program and its arguments, e.g. {name} = [\"/usr/local/bin/pg-dump-partition.sh\", \"/var/backups/partitions\"] (no shell is used)",
                key(&format!("hooks.{name}"))
            )),
            Some(_) if argv.iter().any(|a| a.contains('\0')) => p(format!(
                "{} has an argument with a NUL character",
                key(&format!("hooks.{name}"))
            )),
            Some(_) => *slot = argv,
        }
    }
    if let Some(text) = hook_timeout {
        match humantime::parse_duration(text.trim()) {
            Ok(d) if !d.is_zero() => out.hooks.timeout = d,
            Ok(_) => p(format!(
                "{} = {text:?} must be longer than zero",
                key("hook_timeout")
            )),
            Err(e) => p(format!(
                "{} = {text:?} is not a duration ({e}); write e.g. \"30min\" or \"90s\"",
                key("hook_timeout")
            )),
        }
    }
    out
}

fn ser_opt_qualified<S: Serializer>(v: &Option<QualifiedName>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(q) => s.serialize_str(&q.as_written()),
        None => s.serialize_none(),
    }
}

fn ser_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        archive: Option<&str>,
        template: Option<&str>,
        hooks: Option<RawHooks>,
        timeout: Option<&str>,
    ) -> (Lifecycle, Vec<String>) {
        let mut problems = Vec::new();
        let key = |k: &str| format!("tables[0].{k}");
        let l = validate(&key, archive, template, hooks, timeout, &mut |s| {
            problems.push(s)
        });
        (l, problems)
    }

    #[test]
    fn defaults_are_the_archive_schema_and_thirty_minutes() {
        let (l, problems) = run(None, None, None, None);
        assert!(problems.is_empty());
        assert_eq!(l.archive_schema, "archive");
        assert_eq!(l.hooks.timeout, Duration::from_secs(1800));
        assert!(l.template.is_none());
    }

    #[test]
    fn each_bad_key_is_named() {
        let (_, problems) = run(
            Some("a.b"),
            Some("x.y.z"),
            Some(RawHooks {
                before_expire: Some(vec![]),
                after_create: Some(vec!["".into()]),
                hook_timeout: None,
            }),
            Some("soon"),
        );
        let all = problems.join("\n");
        for k in [
            "tables[0].archive_schema",
            "tables[0].template",
            "tables[0].hooks.before_expire",
            "tables[0].hooks.after_create",
            "tables[0].hook_timeout",
        ] {
            assert!(all.contains(k), "{k} not in {all}");
        }
    }

    #[test]
    fn names_fold_like_sql() {
        let (l, problems) = run(Some("Old"), Some("Tpl.\"My T\""), None, Some("90s"));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(l.archive_schema, "old");
        assert_eq!(l.template, Some(QualifiedName::new("tpl", "My T")));
        assert_eq!(l.hooks.timeout, Duration::from_secs(90));
    }
}

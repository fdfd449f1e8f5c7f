//! SQL identifiers: parsing names as SQL writes them (`schema.table`, `"Quoted Part"`) and quoting
//! them for DDL. This is the only place that turns a name into SQL text; values always travel as
//! bind parameters.

use std::fmt;

/// PostgreSQL truncates identifiers longer than this many bytes (NAMEDATALEN - 1).
pub const MAX_IDENT_BYTES: usize = 63;

/// Schema used when a configured name has no schema part.
pub const DEFAULT_SCHEMA: &str = "public";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentError {
    #[error("{input:?} is empty; write a name such as public.pricing_data")]
    Empty { input: String },
    #[error(
        "{input:?} is not a valid SQL name: {reason}. Write `schema.table`; double-quote a part \
         that has capitals, spaces or other characters (e.g. '\"Billing\".\"Invoice Events\"')"
    )]
    Invalid { input: String, reason: String },
    #[error("{input:?} is longer than PostgreSQL's 63-byte limit for a name part ({part:?})")]
    TooLong { input: String, part: String },
}

/// A schema-qualified relation name, stored exactly as PostgreSQL stores it (folded, unquoted).
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct QualifiedName {
    pub schema: String,
    pub name: String,
}

impl QualifiedName {
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        QualifiedName {
            schema: schema.into(),
            name: name.into(),
        }
    }

    /// `"schema"."name"`, safe to splice into SQL.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    /// A sibling relation in the same schema.
    pub fn sibling(&self, name: impl Into<String>) -> QualifiedName {
        QualifiedName::new(self.schema.clone(), name)
    }

    /// How a user would write this name in the configuration (quotes only where needed).
    pub fn as_written(&self) -> String {
        format!("{}.{}", write_part(&self.schema), write_part(&self.name))
    }
}

/// `schema.table`, unquoted: the form used in labels, logs and output.
impl fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// Always double-quotes, so keywords, capitals and odd characters are all safe.
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// A string as an SQL literal. Only for DDL, where PostgreSQL accepts no bind parameters
/// (e.g. `COMMENT ON`); everything else binds values.
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Parses `schema.table` or `table` (schema defaults to `public`).
pub fn parse_qualified(input: &str) -> Result<QualifiedName, IdentError> {
    let parts = split_parts(input)?;
    match parts.as_slice() {
        [name] => Ok(QualifiedName::new(DEFAULT_SCHEMA, name.clone())),
        [schema, name] => Ok(QualifiedName::new(schema.clone(), name.clone())),
        _ => Err(IdentError::Invalid {
            input: input.to_string(),
            reason: format!(
                "it has {} dot-separated parts; expected `schema.table`",
                parts.len()
            ),
        }),
    }
}

/// Parses a single identifier such as a column name.
pub fn parse_ident(input: &str) -> Result<String, IdentError> {
    let parts = split_parts(input)?;
    match parts.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(IdentError::Invalid {
            input: input.to_string(),
            reason: "a column name has no dots (quote it if the dot is part of the name)".into(),
        }),
    }
}

/// Whether `part` can be written without quotes and read back unchanged.
fn is_plain(part: &str) -> bool {
    let mut chars = part.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$')
}

fn write_part(part: &str) -> String {
    if is_plain(part) {
        part.to_string()
    } else {
        quote_ident(part)
    }
}

/// Splits on dots outside quotes; folds unquoted parts to lower case as PostgreSQL does.
fn split_parts(input: &str) -> Result<Vec<String>, IdentError> {
    let invalid = |reason: &str| IdentError::Invalid {
        input: input.to_string(),
        reason: reason.to_string(),
    };
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(IdentError::Empty {
            input: input.to_string(),
        });
    }
    let mut parts = Vec::new();
    let mut chars = trimmed.chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    Some('"') => break,
                    Some('\0') => return Err(invalid("a name cannot contain a NUL character")),
                    Some(c) => part.push(c),
                    None => return Err(invalid("a double quote is not closed")),
                }
            }
            if part.is_empty() {
                return Err(invalid("a quoted part is empty"));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                let ok = if part.is_empty() {
                    c.is_alphabetic() || c == '_'
                } else {
                    c.is_alphanumeric() || c == '_' || c == '$'
                };
                if !ok {
                    return Err(invalid(&format!(
                        "{c:?} is not allowed in an unquoted name"
                    )));
                }
                // PostgreSQL folds only ASCII letters.
                part.push(c.to_ascii_lowercase());
                chars.next();
            }
            if part.is_empty() {
                return Err(invalid("a name part is empty"));
            }
        }
        if part.len() > MAX_IDENT_BYTES {
            return Err(IdentError::TooLong {
                input: input.to_string(),
                part,
            });
        }
        parts.push(part);
        match chars.next() {
            None => return Ok(parts),
            Some('.') => continue,
            Some(c) => {
                return Err(invalid(&format!(
                    "{c:?} follows a quoted part; expected a dot or the end"
                )))
            }
        }
    }
}

/// `<base>_<suffix>` cut to PostgreSQL's 63-byte limit without two bases colliding: when the
/// whole name does not fit, the base is shortened (at a character boundary) and a hash of the
/// full base keeps names from different long tables apart.
pub fn derived_name(base: &str, suffix: &str) -> String {
    let full = format!("{base}_{suffix}");
    if full.len() <= MAX_IDENT_BYTES {
        return full;
    }
    let hash = format!("{:08x}", fnv1a(base.as_bytes()));
    // base' + "_" + hash + "_" + suffix
    let room = MAX_IDENT_BYTES.saturating_sub(hash.len() + suffix.len() + 2);
    let mut cut = room.min(base.len());
    while !base.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}_{hash}_{suffix}", &base[..cut])
}

/// A short stable hash of `text` (8 hex digits), for helper names derived from long names.
pub fn short_hash(text: &str) -> String {
    format!("{:08x}", fnv1a(text.as_bytes()))
}

/// FNV-1a: tiny, stable across releases and platforms (names must not change between versions).
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn unquoted_parts_fold_to_lower_case() {
        let q = parse_qualified("Public.Pricing_Data").unwrap();
        assert_eq!(q, QualifiedName::new("public", "pricing_data"));
    }

    #[test]
    fn a_bare_table_lands_in_public() {
        assert_eq!(
            parse_qualified("pricing_data").unwrap(),
            QualifiedName::new("public", "pricing_data")
        );
    }

    #[test]
    fn quoted_parts_keep_case_spaces_dots_and_quotes() {
        let q = parse_qualified(r#""Billing"."Invoice ""Events"".v2""#).unwrap();
        assert_eq!(q, QualifiedName::new("Billing", r#"Invoice "Events".v2"#));
        assert_eq!(q.quoted(), r#""Billing"."Invoice ""Events"".v2""#);
        assert_eq!(parse_qualified(&q.as_written()).unwrap(), q);
    }

    #[test]
    fn sql_in_an_unquoted_name_is_rejected() {
        for bad in [
            "public.t; DROP TABLE x",
            "t--",
            "a.b.c",
            "\"open",
            "\"\"",
            "a..b",
            "1abc",
            "",
            "  ",
        ] {
            assert!(parse_qualified(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn column_names_are_single_parts() {
        assert_eq!(parse_ident("\"createdAt\"").unwrap(), "createdAt");
        assert_eq!(parse_ident("Date").unwrap(), "date");
        assert!(parse_ident("a.b").is_err());
    }

    #[test]
    fn over_long_parts_are_rejected() {
        let long = "a".repeat(64);
        assert!(matches!(
            parse_qualified(&long),
            Err(IdentError::TooLong { .. })
        ));
        assert!(parse_qualified(&"a".repeat(63)).is_ok());
    }

    #[test]
    fn short_derived_names_are_plain() {
        assert_eq!(
            derived_name("pricing_data", "2026_11"),
            "pricing_data_2026_11"
        );
    }

    #[test]
    fn long_derived_names_fit_and_stay_apart() {
        let a = format!("{}_alpha", "x".repeat(58));
        let b = format!("{}_beta", "x".repeat(58));
        let na = derived_name(&a, "2026_11_05");
        let nb = derived_name(&b, "2026_11_05");
        assert!(na.len() <= MAX_IDENT_BYTES && nb.len() <= MAX_IDENT_BYTES);
        assert_ne!(na, nb);
        assert!(na.ends_with("_2026_11_05"));
    }

    #[test]
    fn derived_names_cut_at_character_boundaries() {
        let base = "é".repeat(40); // 80 bytes
        let n = derived_name(&base, "2026_w01");
        assert!(n.len() <= MAX_IDENT_BYTES);
        assert!(n.ends_with("_2026_w01"));
    }

    proptest! {
        #[test]
        fn quoting_round_trips(schema in "[^\u{0}]{1,20}", name in "[^\u{0}]{1,20}") {
            let q = QualifiedName::new(schema, name);
            prop_assert_eq!(parse_qualified(&q.quoted()).unwrap(), q.clone());
            prop_assert_eq!(parse_qualified(&q.as_written()).unwrap(), q);
        }

        #[test]
        fn parsing_never_panics(s in ".{0,80}") {
            let _ = parse_qualified(&s);
        }

        #[test]
        fn derived_names_never_exceed_the_limit(base in ".{1,70}", suffix in "[0-9_wq]{4,10}") {
            prop_assert!(derived_name(&base, &suffix).len() <= MAX_IDENT_BYTES);
        }
    }
}
